"""Split hygiene: class names that leak across the seen/unseen line, near-duplicate images.

Used by the split stage (curation/ingest/split.py); both checks only report, the stage decides.

- `name_conflicts`: a class seen in one dataset whose name (or alias) equals, or contains as
  whole words, the name of a class unseen in another dataset. The paper's own lists have one:
  pet "Basset Hound" is seen while dog "Basset" is unseen, so a model trained on the first is
  not really zero-shot on the second.
- `signature` / `signatures` / `near_duplicates`: a 64-bit DCT perceptual hash plus a 4x4
  colour thumbnail per image, and the pairs within a Hamming distance whose colours also
  agree, to catch test images that are (near) copies of the k-shot pool's. JPEGs are
  decoded at reduced scale (`Image.draft`), so hashing costs well under a millisecond per
  image; large lists are hashed by a pool of 2 processes.
- `pool_test_duplicates` / `warning_lines`: the split stage's use of the above (which pairs
  of its pool and test rows collide) and the one-line warnings --strict fails on.

    >>> conflicts = name_conflicts([("pet", "Basset Hound", ("Basset Hound",), "seen"),
    ...                             ("dog", "Basset", ("Basset",), "unseen")])
    >>> conflicts[0]["relation"], conflicts[0]["unseen"]["class"]
    ('contains', 'Basset')
    >>> hamming(0b1011, 0b0001)
    2
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.fft import dctn

from curation.core.image_cache import ImageCache
from curation.core.labels import normalize

log = logging.getLogger(__name__)

HASH_SIDE = 32  # the DCT runs on a 32x32 grayscale thumbnail; its 8x8 lowest frequencies vote
COLOUR_SIDE = 4  # plus a 4x4 RGB thumbnail: pHash alone is blind to colour
# Near-duplicates must also agree in colour within this (0..255, per thumbnail cell). pHash
# alone pairs flat images of any two colours, and same-pose renders of classes that differ
# only in colour (measured on the synthetic world: such pairs differ by 26+, while
# re-encoded/resized copies differ by 4 or less).
COLOUR_TOLERANCE = 16
WORKERS = 2
IN_PROCESS_BELOW = 256  # fewer images than this: a process pool costs more than it saves
CHUNK = 64

# (dataset, canonical name, all names incl. aliases, "seen" | "unseen")
ClassEntry = tuple[str, str, Sequence[str], str]
Signature = tuple[int, bytes]  # (64-bit pHash of the luminance, 4x4 RGB thumbnail)


# -- names ---------------------------------------------------------------------------------


def name_conflicts(classes: Iterable[ClassEntry]) -> list[dict]:
    """Pairs (seen class, unseen class) of different datasets whose names collide.

    Two names collide when they are equal after `normalize` ("same") or when one is a run of
    whole words inside the other ("contains": "basset" in "basset hound", not "ram" in
    "ramble"). Each name's word n-grams are looked up among all full names, so the cost
    grows with the number of classes, not its square.
    """
    entries = list(classes)
    by_phrase: dict[str, list[int]] = {}
    for index, (_, _, names, _) in enumerate(entries):
        for name in names:
            phrase = normalize(name)
            if phrase and index not in by_phrase.setdefault(phrase, []):
                by_phrase[phrase].append(index)

    found: dict[tuple[int, int], dict] = {}
    for index, (dataset, _, names, side) in enumerate(entries):
        for name in names:
            words = normalize(name).split()
            for start in range(len(words)):
                for stop in range(start + 1, len(words) + 1):
                    for other in by_phrase.get(" ".join(words[start:stop]), ()):
                        o_dataset, _, o_names, o_side = entries[other]
                        if o_dataset == dataset or o_side == side:
                            continue
                        inner = next(n for n in o_names if normalize(n) == " ".join(words[start:stop]))
                        relation = "same" if stop - start == len(words) else "contains"
                        pair = (index, other) if side == "seen" else (other, index)
                        names_pair = (name, inner) if side == "seen" else (inner, name)
                        if pair not in found or relation == "same":
                            found[pair] = _conflict(entries, pair, names_pair, relation)
    return [found[pair] for pair in sorted(found)]


def _conflict(entries: list[ClassEntry], pair: tuple[int, int], names: tuple[str, str],
              relation: str) -> dict:
    seen, unseen = (entries[i] for i in pair)
    return {
        "seen": {"dataset": seen[0], "class": seen[1], "name": names[0]},
        "unseen": {"dataset": unseen[0], "class": unseen[1], "name": names[1]},
        "relation": relation,
    }


# -- images --------------------------------------------------------------------------------


def signature(path: str | os.PathLike) -> Signature | None:
    """(pHash, colour) of an image file, or None when it cannot be read.

    pHash: 32x32 grayscale thumbnail -> 2-D DCT -> the 8x8 lowest frequencies -> one bit
    each, set when the coefficient is above their median (the DC term left out of it).
    Colour: a 4x4 RGB thumbnail (48 bytes).
    """
    try:
        with Image.open(path) as image:
            image.draft("RGB", (HASH_SIDE, HASH_SIDE))  # JPEG: decode at 1/2..1/8 scale
            small = image.convert("RGB").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BILINEAR)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        log.debug("cannot hash %s: %s", path, err)
        return None
    pixels = np.asarray(small.convert("L"), dtype=np.float64)
    low = dctn(pixels, norm="ortho")[:8, :8].ravel()
    bits = low > np.median(low[1:])
    colour = small.resize((COLOUR_SIDE, COLOUR_SIDE), Image.Resampling.BOX).tobytes()
    return int.from_bytes(np.packbits(bits).tobytes(), "big"), colour


def phash(path: str | os.PathLike) -> int | None:
    """The 64-bit DCT perceptual hash of an image file (see `signature`), or None."""
    sig = signature(path)
    return sig[0] if sig else None


def signatures(
    paths: Sequence[str | os.PathLike],
    progress: Callable[[int, int], None] | None = None,
    workers: int = WORKERS,
) -> list[Signature | None]:
    """`signature` of each path, in order; a process pool of `workers` for long lists."""
    total = len(paths)
    out: list[Signature | None] = []
    if total < IN_PROCESS_BELOW or workers <= 1:
        results: Iterable[Signature | None] = map(signature, paths)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(signature, [str(Path(p)) for p in paths], chunksize=CHUNK)
    try:
        for value in results:
            out.append(value)
            if progress and (len(out) % CHUNK == 0 or len(out) == total):
                progress(len(out), total)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return out


SIGNATURE_KIND = "signature-v1"  # the image cache's name for `signature`: bump with any change


def signatures_by_sha(
    paths: Mapping[str, str | os.PathLike], cache: ImageCache | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Signature | None]:
    """{sha256: signature} of images given as {sha256: path}: from the run's image cache
    where it holds them, computed (and stored) otherwise. Unreadable images are not cached:
    a file made readable later is hashed then."""
    known: dict[str, Signature | None] = {}
    if cache is not None:
        for sha, packed in cache.get_many(SIGNATURE_KIND, paths).items():
            known[sha] = (int.from_bytes(packed[:8], "big"), packed[8:])
    todo = [sha for sha in paths if sha not in known]
    computed = dict(zip(todo, signatures([paths[sha] for sha in todo], progress), strict=True))
    if cache is not None:
        cache.put_many(SIGNATURE_KIND, {sha: sig[0].to_bytes(8, "big") + sig[1]
                                        for sha, sig in computed.items() if sig is not None})
    return {sha: known[sha] if sha in known else computed[sha] for sha in paths}


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def near_duplicates(
    left: Sequence[Signature], right: Sequence[Signature], max_distance: int,
    tolerance: int = COLOUR_TOLERANCE, limit: int | None = None, block: int = 262_144,
) -> tuple[list[tuple[int, int, int, int]], int]:
    """Pairs left[i], right[j] within `max_distance` pHash bits and `tolerance` of colour.

    Returns ([(i, j, bits, colour difference), ...] up to `limit`, number of pairs). XOR +
    popcount run vectorised over blocks of rows, so a pool of thousands against a test set of
    tens of thousands takes about a second in bounded memory, however many pairs match.

    >>> grey, red = bytes([128] * 48), bytes([200, 0, 0] * 16)
    >>> near_duplicates([(0b1111, grey), (0, red)], [(0b0111, grey), (0, grey)], max_distance=1)
    ([(0, 0, 1, 0)], 1)
    """
    if not left or not right:
        return [], 0
    a = np.array([h for h, _ in left], dtype=np.uint64)
    b = np.array([h for h, _ in right], dtype=np.uint64)
    a_colour = np.frombuffer(b"".join(c for _, c in left), np.uint8).reshape(len(left), -1)
    b_colour = np.frombuffer(b"".join(c for _, c in right), np.uint8).reshape(len(right), -1)
    rows = max(1, block // len(b))
    pairs: list[tuple[int, int, int, int]] = []
    total = 0
    for start in range(0, len(a), rows):
        dist = np.bitwise_count(a[start : start + rows, None] ^ b[None, :])
        i, j = np.nonzero(dist <= max_distance)
        colour = np.abs(a_colour[start + i].astype(np.int16) - b_colour[j]).max(axis=1, initial=0)
        keep = colour <= tolerance
        total += int(keep.sum())
        room = len(i) if limit is None else max(0, limit - len(pairs))
        for ii, jj, cc in list(zip(i[keep], j[keep], colour[keep], strict=True))[:room]:
            pairs.append((start + int(ii), int(jj), int(dist[ii, jj]), int(cc)))
    return pairs, total


# -- the split stage's report -------------------------------------------------------------------------------

MAX_LISTED = 1000  # the manifest lists at most this many near-duplicate pairs (all are counted)


def pool_test_duplicates(
    cols: dict[str, list], pool_rows: Sequence[int], test_rows: Sequence[int],
    max_distance: int, progress: Callable[[str, int, int], None] | None,
    cache: ImageCache | None = None,
) -> tuple[list[dict], int, list[str]]:
    """Near-duplicate (pool, test) pairs (pHash within `max_distance` bits and colours within
    COLOUR_TOLERANCE), their total, and the paths of images that could not be read.

    `cols` holds the item table's columns as lists; rows index into them. Signatures come
    from `cache` where it has them (a re-split hashes nothing it hashed before).
    """
    paths: dict[str, str] = {}  # sha256 -> one path: identical files are hashed once
    for r in (*pool_rows, *test_rows):
        paths.setdefault(cols["image_sha256"][r], cols["image_path"][r])
    tick = (lambda done, total: progress("hashing images", done, total)) if progress else None
    sigs = signatures_by_sha(paths, cache, tick)
    unreadable = sorted(paths[sha] for sha, sig in sigs.items() if sig is None)

    def hashed(rows: Sequence[int]) -> list[tuple[int, Signature]]:
        found = ((r, sigs[cols["image_sha256"][r]]) for r in rows)
        return [(r, sig) for r, sig in found if sig is not None]

    pool, test = hashed(pool_rows), hashed(test_rows)
    pairs, total = near_duplicates(
        [sig for _, sig in pool], [sig for _, sig in test], max_distance, limit=MAX_LISTED
    )

    def item(r: int) -> dict:
        return {"item_id": cols["item_id"][r], "dataset": cols["dataset"][r], "label": cols["label"][r]}

    listed = [
        {"pool": item(pool[i][0]), "test": item(test[j][0]), "distance": d, "colour_difference": c}
        for i, j, d, c in pairs
    ]
    return listed, total, unreadable


def warning_lines(hyg: dict[str, Any], distance: int) -> list[str]:
    """One readable line per kind of problem found (what --strict fails on)."""
    out = []
    if hyg["name_conflicts"]:
        c = hyg["name_conflicts"][0]
        out.append(
            f"{len(hyg['name_conflicts'])} class name(s) seen in one dataset and unseen in another, "
            f"e.g. {c['seen']['dataset']}:{c['seen']['class']!r} (seen) vs "
            f"{c['unseen']['dataset']}:{c['unseen']['class']!r} (unseen)"
        )
    if hyg["near_duplicates_total"]:
        p = hyg["near_duplicates"][0]
        out.append(
            f"{hyg['near_duplicates_total']} near-duplicate image pair(s) between the k-shot pool "
            f"and the test set (pHash distance <= {distance}), e.g. {p['pool']['item_id']} ~ "
            f"{p['test']['item_id']}"
        )
    if hyg["unreadable_images"]:
        out.append(f"{len(hyg['unreadable_images'])} image(s) could not be read for hashing, "
                   f"e.g. {hyg['unreadable_images'][0]}")
    if hyg["unknown_label_items"]:
        out.append(f"{hyg['unknown_label_items']} item(s) have labels the registry does not know "
                   "and were left out")
    fine = hyg.get("fine_r1")
    if fine:
        for dataset, names in fine["unmatched_registry"].items():
            out.append(f"{len(names)} class(es) of {dataset} are in neither Fine-R1 list and were "
                       f"left out, e.g. {names[0]!r}")
        for dataset, names in fine["missing_from_registry"].items():
            out.append(f"{len(names)} Fine-R1 class(es) of {fine['datasets'][dataset]} are not in "
                       f"the registry of {dataset}, e.g. {names[0]!r}")
        for amb in fine["ambiguous"]:
            out.append(f"{amb['dataset']}:{amb['class']!r} matches Fine-R1 classes on both "
                       f"sides ({', '.join(amb['paper_names'])}) and was left out")
    return out
