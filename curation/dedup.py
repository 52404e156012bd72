"""Near-duplicate rationales: MinHash over word 3-shingles, numpy only.

The duplicate filter (curation/filters.py) asks whether a new rationale is a near copy of
one already accepted for the same image (or class); copies add no diversity to a dataset.
A signature is 64 minima of multiply-shift hashes of the shingles; the share of equal
minima estimates the Jaccard similarity of the two shingle sets. 256 bytes per rationale.

    >>> seen = NearDuplicates(threshold=0.8)
    >>> words = "the bird has a red crown and a streaked breast with two white wing bars".split()
    >>> seen.add("image:1", "a#0", words)
    >>> seen.find("image:1", "a#1", words + ["today"])
    'a#0'
    >>> seen.find("image:1", "a#2", "a plain grey bird with a long tail and a hooked beak".split())
    >>> seen.find("image:2", "b#0", words) is None   # another image: not compared
    True
"""

from __future__ import annotations

import zlib

import numpy as np

NUM_HASHES = 64
SHINGLE = 3
_rng = np.random.default_rng(0x5EED)
_A = _rng.integers(1, 2**63, size=(NUM_HASHES, 1), dtype=np.uint64) | np.uint64(1)
_B = _rng.integers(0, 2**63, size=(NUM_HASHES, 1), dtype=np.uint64)
_P1, _P2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)
_word_ids: dict[str, int] = {}
_MAX_WORDS_CACHED = 1_000_000


def _ids(words: list[str]) -> np.ndarray:
    if len(_word_ids) > _MAX_WORDS_CACHED:
        _word_ids.clear()
    get = _word_ids.get
    out = []
    for w in words:
        h = get(w)
        if h is None:
            h = _word_ids[w] = zlib.crc32(w.encode())
        out.append(h)
    return np.array(out, dtype=np.uint64)


def signature(words: list[str]) -> np.ndarray | None:
    """MinHash signature (uint32[NUM_HASHES]) of a text's normalised words; None if empty."""
    if not words:
        return None
    ids = _ids(words)
    # a shingle hash combines three word ids; a text shorter than a shingle is its words
    shingles = ids[:-2] * _P1 + ids[1:-1] * _P2 + ids[2:] if len(ids) >= SHINGLE else ids
    return ((_A * np.unique(shingles)[None, :] + _B) >> np.uint64(32)).min(axis=1).astype(np.uint32)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of the shingle sets behind two signatures."""
    return float(np.count_nonzero(a == b)) / NUM_HASHES


class NearDuplicates:
    """Signatures of accepted rationales, grouped by a bucket key (an image or a class)."""

    def __init__(self, threshold: float = 0.85):
        self.threshold = threshold
        self._buckets: dict[str, list[tuple[str, np.ndarray]]] = {}
        self._last: tuple[list[str] | None, np.ndarray | None] = (None, None)  # find, add: hash once

    def _signature(self, words: list[str]) -> np.ndarray | None:
        if self._last[0] is not words:
            self._last = (words, signature(words))
        return self._last[1]

    def find(self, bucket: str, key: str, words: list[str]) -> str | None:
        """The key of an accepted near-duplicate in `bucket` (not `key` itself), or None."""
        entries = self._buckets.get(bucket)
        if not entries:
            return None
        sig = self._signature(words)
        if sig is None:
            return None
        for other, other_sig in entries:
            if other != key and similarity(sig, other_sig) >= self.threshold:
                return other
        return None

    def add(self, bucket: str, key: str, words: list[str]) -> None:
        """Remember an accepted rationale (replacing an earlier version under the same key)."""
        sig = self._signature(words)
        if sig is None:
            return
        entries = self._buckets.setdefault(bucket, [])
        entries[:] = [(k, s) for k, s in entries if k != key]
        entries.append((key, sig))

    def __len__(self) -> int:
        return sum(len(e) for e in self._buckets.values())
