"""Near-duplicate rationales: one-permutation MinHash over word 3-shingles, numpy only.

The duplicate filter (curation/filter/filters.py) asks whether a new rationale is a near copy of
one already accepted for the same image (or class); copies add no diversity to a dataset.
Each shingle (three consecutive normalised words) gets one well-mixed 64-bit hash; its top
6 bits pick one of 64 bins and each bin keeps its smallest hash. The share of equal bins
estimates the Jaccard similarity of the two shingle sets (one-permutation hashing: the
estimator of classic MinHash at the cost of one hash per shingle, not 64). 512 bytes per
rationale; word hashes are crc32, so signatures are the same in every process.

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

BINS = 64
SHINGLE = 3
_BIN_SHIFT = np.uint64(64 - 6)  # the top 6 bits: 64 bins
_LOW = np.uint64((1 << 58) - 1)
_EMPTY = np.uint64(np.iinfo(np.uint64).max)  # a bin no shingle fell into
_P1, _P2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)
_M1, _M2 = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)
_word_ids: dict[str, int] = {}
_MAX_WORDS_CACHED = 1_000_000


def _ids(words: list[str]) -> np.ndarray:
    table = _word_ids
    try:
        return np.fromiter(map(table.__getitem__, words), dtype=np.uint64, count=len(words))
    except KeyError:  # new words: hash them once (crc32 is stable across processes)
        if len(table) > _MAX_WORDS_CACHED:
            table.clear()
        for w in words:
            if w not in table:
                table[w] = zlib.crc32(w.encode())
        return np.fromiter(map(table.__getitem__, words), dtype=np.uint64, count=len(words))


def _mix(h: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser: every input bit reaches the top bits (the bin)."""
    h ^= h >> _S33
    h *= _M1
    h ^= h >> _S33
    h *= _M2
    h ^= h >> _S33
    return h


def signature(words: list[str]) -> np.ndarray | None:
    """The signature (uint64[BINS]) of a text's normalised words; None when it is empty."""
    if not words:
        return None
    ids = _ids(words)
    # a shingle combines three word ids; a text shorter than a shingle is its words
    shingles = ids[:-2] * _P1 + ids[1:-1] * _P2 + ids[2:] if len(ids) >= SHINGLE else ids.copy()
    h = _mix(shingles)
    sig = np.full(BINS, _EMPTY, dtype=np.uint64)
    np.minimum.at(sig, (h >> _BIN_SHIFT).astype(np.intp), h & _LOW)
    return sig


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Estimated Jaccard similarity of the shingle sets behind two signatures."""
    filled = (a != _EMPTY) | (b != _EMPTY)
    n = int(np.count_nonzero(filled))
    return float(np.count_nonzero((a == b) & filled)) / n if n else 1.0


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

    def has(self, bucket: str) -> bool:
        """Whether `bucket` holds an accepted rationale."""
        return bool(self._buckets.get(bucket))

    def find(self, bucket: str, key: str, words: list[str] | None,
             sig: np.ndarray | None = None) -> str | None:
        """The key of an accepted near-duplicate in `bucket` (not `key` itself), or None.
        `sig`: the signature of `words` when already computed (then `words` may be None)."""
        entries = self._buckets.get(bucket)
        if not entries:
            return None
        if sig is None:
            sig = self._signature(words or [])
        if sig is None:
            return None
        for other, other_sig in entries:
            if other != key and similarity(sig, other_sig) >= self.threshold:
                return other
        return None

    def add(self, bucket: str, key: str, words: list[str] | None,
            sig: np.ndarray | None = None) -> None:
        """Remember an accepted rationale (replacing an earlier version under the same key)."""
        if sig is None:
            sig = self._signature(words or [])
        if sig is None:
            return
        entries = self._buckets.setdefault(bucket, [])
        entries[:] = [(k, s) for k, s in entries if k != key]
        entries.append((key, sig))

    def __len__(self) -> int:
        return sum(len(e) for e in self._buckets.values())
