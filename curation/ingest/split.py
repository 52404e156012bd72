"""Seen/unseen class split and the k-shot pool: the `split` stage.

Reads the run's items.parquet + registry.json and writes split.json (the manifest),
pool.parquet (k shots per seen class, what the teacher drafts on) and test.parquet (held-out
items of seen and unseen classes). Run it with `finecot split --run DIR [--mode fine-r1]`.

Three ways to split classes:
- "random": per dataset, classes ranked by a hash of (seed, dataset, class name); the first
  floor(seen_ratio * n) are seen (at least one). A class's rank never depends on the other
  classes, so adding a class moves at most one other class across the seen/unseen boundary.
  With the default 0.6 this floor reproduces the paper's per-dataset counts.
- "fine-r1": the paper's own lists, shipped in curation/data/fine_r1_split.json (derived from
  the Fine-R1 release, MIT License, Copyright the Fine-R1 authors; see the file's attribution).
- "compositional": for classes described by attributes (the synthetic world): every unseen
  class is a new combination of attribute values that seen classes show.

    >>> registry, lists = fine_r1_registry()
    >>> {name: len(parts["seen"]) for name, parts in lists.items()}["pet"]
    22
    >>> registry.resolve("basset hound", "pet").name
    'Basset Hound'

k-shot pool: per seen class, training items (official_split train or val) ranked by a hash of
(seed, dataset, class name, image sha256); the first k distinct images are the shots. A class
with fewer gives what it has and is listed as short. Test set: the official test items; a
dataset without any test item holds out its training items that are not in the pool (the
manifest's `test_source` says which datasets did), so those item_ids must not be trained on.

Hygiene checks (curation/ingest/hygiene.py) are reported in the manifest; they fail the stage only
with `strict`, and then nothing but split_hygiene.json is written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import pyarrow as pa

from curation.core import lineage
from curation.core.config import Recipe, SplitConfig
from curation.core.labels import ClassInfo, Registry, normalize
from curation.core.lock import run_lock
from curation.core.rundir import RunDir
from curation.core.stage import Progress
from curation.core.tables import read_table, write_json_atomic, write_parquet_atomic
from curation.ingest import hygiene

log = logging.getLogger(__name__)

FINE_R1_FILE = Path(__file__).parents[1] / "data" / "fine_r1_split.json"

# Our dataset names (the ingest source kinds) -> the paper's short names. The short names
# are accepted as dataset names too.
FINE_R1_DATASETS: dict[str, str] = {
    "cub200": "bird",
    "stanford_cars": "car",
    "fgvc_aircraft": "aircraft",
    "stanford_dogs": "dog",
    "oxford_flowers": "flower",
    "oxford_pets": "pet",
    **{short: short for short in ("bird", "car", "aircraft", "dog", "flower", "pet")},
}

TRAIN_SPLITS = ("train", "val")

# Called as progress(task, done, total) while long work runs (the CLI draws a rich bar).


class SplitHygieneError(ValueError):
    """Hygiene warnings under strict=True; the message says where the full report is."""


# -- the paper's lists ---------------------------------------------------------------------


@lru_cache(maxsize=1)
def _fine_r1_data() -> dict[str, Any]:
    return json.loads(FINE_R1_FILE.read_text(encoding="utf-8"))


def fine_r1_attribution() -> str:
    """The attribution text that must travel with the paper's lists."""
    return _fine_r1_data()["attribution"]


def fine_r1_lists() -> dict[str, dict[str, list[str]]]:
    """{paper dataset: {"seen": [names], "unseen": [names]}}, names as the paper spells them."""
    data = _fine_r1_data()["datasets"]
    return {ds: {part: list(names) for part, names in parts.items()} for ds, parts in data.items()}


def fine_r1_registry() -> tuple[Registry, dict[str, dict[str, list[str]]]]:
    """A Registry of the paper's own classes, and its seen/unseen lists.

    Class names are spelled as in the paper's eval files; dataset and super_category are the
    paper's short names (aircraft, bird, car, dog, flower, pet); label ids count seen classes
    first, then unseen, in the lists' order.
    """
    lists = fine_r1_lists()
    classes = [
        ClassInfo(label_id, name, dataset, dataset)
        for dataset, parts in lists.items()
        for label_id, name in enumerate(parts["seen"] + parts["unseen"])
    ]
    return Registry(classes), lists


# -- seen/unseen ---------------------------------------------------------------------------

Sides = dict[str, dict[str, str]]  # dataset -> canonical class name -> "seen" | "unseen"


def _rank(*parts: object) -> bytes:
    """A stable pseudo-random sort key: the same parts give the same key on every machine."""
    return hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()


def _classes_of(registry: Registry, dataset: str) -> list[ClassInfo]:
    return [c for c in registry if c.dataset == dataset]


def random_sides(registry: Registry, seed: int, seen_ratio: float) -> Sides:
    """Per dataset, the floor(seen_ratio * n) classes (at least one) of lowest hash rank are seen.

    >>> reg = Registry(ClassInfo(i, f"class {i}", "toy", "toy") for i in range(10))
    >>> sides = random_sides(reg, seed=0, seen_ratio=0.6)["toy"]
    >>> sorted(sides.values()).count("seen")
    6
    """
    sides: Sides = {}
    for dataset in registry.datasets:
        classes = _classes_of(registry, dataset)
        ranked = sorted(classes, key=lambda c: (_rank(seed, dataset, normalize(c.name)), c.label_id))
        n_seen = min(len(ranked), max(1, math.floor(seen_ratio * len(ranked) + 1e-9)))
        seen = {c.name for c in ranked[:n_seen]}
        sides[dataset] = {c.name: "seen" if c.name in seen else "unseen" for c in classes}
    return sides


def compositional_sides(registry: Registry, seed: int, seen_ratio: float) -> Sides:
    """Per dataset, unseen classes are new combinations of attribute values that seen classes
    of the same super-category all show (curation/synthetic/world.py's compositional_split).
    Needs each class's `attributes` (the synthetic world's classes.json carries them)."""
    from curation.synthetic.world import compositional_split

    sides: Sides = {}
    for dataset in registry.datasets:
        classes = _classes_of(registry, dataset)
        bare = [c.name for c in classes if not c.attributes]
        if bare:
            raise ValueError(
                f"mode compositional needs class attributes, but {len(bare)} class(es) of "
                f"{dataset!r} have none (e.g. {bare[0]!r}): use --mode random, or give the "
                "classes attributes (an ImageFolder's classes.json)"
            )
        seen, _ = compositional_split(
            [{"name": c.name, "super_category": c.super_category, "attributes": c.attributes}
             for c in classes],
            seen_ratio, seed,
        )
        seen_names = set(seen)
        sides[dataset] = {c.name: "seen" if c.name in seen_names else "unseen" for c in classes}
    return sides


def _paper_phrases(info: ClassInfo) -> set[str]:
    """Normalised names a class may carry in the paper: its names and aliases, and for
    aircraft also each prefixed with the manufacturer ('737-200' -> 'Boeing 737-200')."""
    maker = info.levels.get("manufacturer", "")
    names = [*info.all_names, *(f"{maker} {n}" for n in info.all_names if maker)]
    return {normalize(n) for n in names}


def fine_r1_sides(registry: Registry) -> tuple[Sides, dict[str, Any]]:
    """The paper's split applied to the registry, and a report of what did not match.

    A registry class takes the side of the paper class whose name equals one of its names or
    aliases after `normalize`. A registry class in neither list, or matching both, is left
    out of the split; a paper class that no registry class matches is listed as missing.
    """
    uncovered = [d for d in registry.datasets if d not in FINE_R1_DATASETS]
    if uncovered:
        raise ValueError(
            f"mode fine-r1 covers only the paper's datasets ({', '.join(FINE_R1_DATASETS)}); "
            f"{', '.join(map(repr, uncovered))} is not one of them: use --mode random, or "
            "give the source one of these dataset names"
        )
    lists = fine_r1_lists()
    sides: Sides = {}
    report: dict[str, Any] = {
        "datasets": {}, "unmatched_registry": {}, "missing_from_registry": {}, "ambiguous": [],
    }
    for dataset in registry.datasets:
        paper = FINE_R1_DATASETS[dataset]
        report["datasets"][dataset] = paper
        classes = _classes_of(registry, dataset)
        coarse = [c.name for c in classes if c.levels and "variant" not in c.levels]
        if paper == "aircraft" and coarse:
            raise ValueError(
                f"the paper's aircraft lists are variants, but {dataset!r} has classes at a "
                f"coarser level (e.g. {coarse[0]!r}): ingest it with aircraft_level=variant"
            )
        index = {normalize(n): (n, side) for side in ("seen", "unseen") for n in lists[paper][side]}
        sides[dataset] = {}
        unmatched, claimed = [], set()
        for info in classes:
            got = sorted({index[p] for p in _paper_phrases(info) if p in index})
            claimed.update(name for name, _ in got)
            found_sides = {side for _, side in got}
            if len(found_sides) == 1:
                sides[dataset][info.name] = found_sides.pop()
            elif not got:
                unmatched.append(info.name)
            else:
                report["ambiguous"].append(
                    {"dataset": dataset, "class": info.name, "paper_names": [n for n, _ in got]}
                )
        if not claimed:
            raise ValueError(
                f"no class of dataset {dataset!r} matches the paper's {paper} list (registry has "
                f"e.g. {classes[0].name!r}, the paper e.g. {lists[paper]['seen'][0]!r}): ingest it "
                "at the paper's label level or add aliases with a synonyms file"
            )
        missing = [n for side in ("seen", "unseen") for n in lists[paper][side] if n not in claimed]
        if unmatched:
            report["unmatched_registry"][dataset] = unmatched
        if missing:
            report["missing_from_registry"][dataset] = missing
    return sides, report


# -- pool and test -------------------------------------------------------------------------

ITEM_COLUMNS = ("item_id", "dataset", "image_path", "image_sha256", "label", "official_split")


def _rows_by_class(
    cols: dict[str, list], registry: Registry, sides: Sides
) -> tuple[dict[tuple[str, str], list[int]], int]:
    """Item rows grouped by (dataset, canonical class name); count of rows of unknown labels."""
    known = {(c.dataset, c.name) for c in registry}
    canonical: dict[tuple[str, str], tuple[str, str] | None] = {}
    groups: dict[tuple[str, str], list[int]] = {}
    unknown = 0
    for row, key in enumerate(zip(cols["dataset"], cols["label"], strict=True)):
        if key in known:
            canonical[key] = key
        elif key not in canonical:  # an alias or another spelling: resolve it once
            info = registry.resolve(key[1], key[0])
            canonical[key] = (info.dataset, info.name) if info else None
        target = canonical[key]
        if target is None:
            unknown += 1
        elif target[1] in sides.get(target[0], {}):
            groups.setdefault(target, []).append(row)
    return groups, unknown


def sample_pool(
    cols: dict[str, list], groups: dict[tuple[str, str], list[int]], sides: Sides,
    k: int, seed: int,
) -> tuple[list[int], list[int], list[dict]]:
    """Rows of the k-shot pool, their shot numbers, and the seen classes short of k.

    A class's picks depend only on (seed, dataset, class name) and its own images' sha256,
    so adding classes (or reordering the item table) never changes another class's shots.
    Exact duplicate images (same sha256) count once.
    """
    rows: list[int] = []
    shots: list[int] = []
    short: list[dict] = []
    for dataset in sorted(sides):
        for name, side in sides[dataset].items():
            if side != "seen":
                continue
            train = [r for r in groups.get((dataset, name), []) if cols["official_split"][r] in TRAIN_SPLITS]
            key = normalize(name)
            train.sort(key=lambda r: (_rank(seed, dataset, key, cols["image_sha256"][r]), cols["item_id"][r]))
            picked: list[int] = []
            shas: set[str] = set()
            for r in train:
                if len(picked) == k:
                    break
                if cols["image_sha256"][r] not in shas:
                    shas.add(cols["image_sha256"][r])
                    picked.append(r)
            if len(picked) < k:
                short.append({"dataset": dataset, "class": name, "available": len(picked), "k": k})
            rows += picked
            shots += range(len(picked))
    return rows, shots, short


def hold_out_test(
    cols: dict[str, list], groups: dict[tuple[str, str], list[int]], sides: Sides,
    pool_rows: Sequence[int],
) -> tuple[list[int], list[str], dict[str, str]]:
    """Rows of the test set (item table order), their class_split, and each dataset's source.

    A dataset with official test items uses exactly those; one without (an ImageFolder with
    no split) holds out every training item that is not in the k-shot pool.
    """
    in_pool = set(pool_rows)
    chosen: list[tuple[int, str]] = []
    source: dict[str, str] = {}
    for dataset in sorted(sides):
        rows = [(r, side) for name, side in sides[dataset].items() for r in groups.get((dataset, name), [])]
        official = [(r, side) for r, side in rows if cols["official_split"][r] == "test"]
        source[dataset] = "official_test" if official else "held_out_train"
        chosen += official if official else [(r, s) for r, s in rows if r not in in_pool]
    chosen.sort()
    return [r for r, _ in chosen], [s for _, s in chosen], source


# -- the stage -----------------------------------------------------------------------------


def make_split(
    items: pa.Table, registry: Registry, cfg: SplitConfig, progress: Progress | None = None
) -> tuple[dict[str, Any], pa.Table, pa.Table]:
    """The split manifest, the pool table and the test table (nothing is written)."""
    missing = [c for c in ITEM_COLUMNS if c not in items.column_names]
    if missing:
        raise ValueError(f"items table lacks column(s) {missing}: rerun `finecot ingest`")
    fine = None
    if cfg.mode == "fine-r1":
        sides, fine = fine_r1_sides(registry)
    elif cfg.mode == "compositional":
        sides = compositional_sides(registry, cfg.seed, cfg.seen_ratio)
    else:
        sides = random_sides(registry, cfg.seed, cfg.seen_ratio)

    cols = items.select(list(ITEM_COLUMNS)).to_pydict()
    groups, unknown = _rows_by_class(cols, registry, sides)
    pool_rows, shots, short = sample_pool(cols, groups, sides, cfg.k, cfg.seed)
    test_rows, test_sides, test_source = hold_out_test(cols, groups, sides, pool_rows)

    pool = items.take(pa.array(pool_rows, pa.int64()))
    pool = pool.append_column("class_split", pa.array(["seen"] * len(pool_rows), pa.string()))
    pool = pool.append_column("shot", pa.array(shots, pa.int64()))
    test = items.take(pa.array(test_rows, pa.int64()))
    test = test.append_column("class_split", pa.array(test_sides, pa.string()))

    entries = [
        (c.dataset, c.name, c.all_names, sides[c.dataset][c.name])
        for c in registry if c.name in sides.get(c.dataset, {})
    ]
    near, near_total, unreadable = hygiene.pool_test_duplicates(
        cols, pool_rows, test_rows, cfg.phash_distance, progress
    )
    hyg: dict[str, Any] = {
        "name_conflicts": hygiene.name_conflicts(entries),
        "near_duplicates": near,
        "near_duplicates_total": near_total,
        "unreadable_images": unreadable,
        "unknown_label_items": unknown,
    }
    if fine:
        hyg["fine_r1"] = fine
    hyg["warnings"] = hygiene.warning_lines(hyg, cfg.phash_distance)

    in_pool = Counter(cols["dataset"][r] for r in pool_rows)
    in_test = Counter(cols["dataset"][r] for r in test_rows)

    def per_dataset(dataset: str) -> dict[str, int]:
        parts = list(sides[dataset].values())
        return {
            "classes": len(_classes_of(registry, dataset)),
            "seen": parts.count("seen"),
            "unseen": parts.count("unseen"),
            "pool": in_pool[dataset],
            "test": in_test[dataset],
        }

    counts = {d: per_dataset(d) for d in sorted(sides)}
    manifest: dict[str, Any] = {
        "mode": cfg.mode,
        "seed": cfg.seed,
        "seen_ratio": None if cfg.mode == "fine-r1" else cfg.seen_ratio,  # fine-r1: the lists
        "k": cfg.k,
        "phash_distance": cfg.phash_distance,
        "datasets": {
            d: {part: [n for n, s in sides[d].items() if s == part] for part in ("seen", "unseen")}
            for d in sorted(sides)
        },
        "counts": {
            **{key: sum(c[key] for c in counts.values()) for key in ("seen", "unseen", "pool", "test")},
            "datasets": counts,
        },
        "test_source": test_source,
        "short": short,
        "hygiene": hyg,
    }
    if fine:
        manifest["fine_r1"] = {"attribution": fine_r1_attribution(), "datasets": fine["datasets"]}
    return manifest, pool, test


def split_stage(
    recipe: Recipe, run: RunDir, progress: Progress | None = None, force: bool = False
) -> dict[str, Any]:
    """Read items + registry of `run`, write split.json, pool.parquet and test.parquet.

    With recipe.split.strict and any hygiene warning, only split_hygiene.json is written
    (earlier split files stay as they were) and SplitHygieneError says why. When the run
    holds drafts of items the new pool does not have, PoolChangedError refuses unless
    `force`, which archives those drafts and every table made from them (`lineage.archive`);
    the returned manifest then names the archive under "archived". Holds the run lock.
    """
    cfg = recipe.split
    registry = Registry.load(run.require(run.registry, "ingest"))
    items_path = run.require(run.items, "ingest")
    with run_lock(run, "split"):
        items = read_table(items_path)
        manifest, pool, test = make_split(items, registry, cfg, progress)
        if pool.num_rows == 0:  # `finecot draft` refuses an empty pool; say so now
            log.warning("the split of %s leaves an empty k-shot pool (%d items, %d seen "
                        "classes): nothing can be drafted. Check the sources (`finecot "
                        "ingest`) and the split settings (mode, seen_ratio)", items_path,
                        items.num_rows, manifest["counts"]["seen"])
        report = run.path("split_hygiene.json")
        warnings = manifest["hygiene"]["warnings"]
        if cfg.strict and warnings:
            write_json_atomic(report, manifest["hygiene"])
            raise SplitHygieneError(
                "split hygiene failed (strict):\n  - " + "\n  - ".join(warnings)
                + f"\nfull report: {report}; no split files were written (drop --strict to accept)"
            )
        archived = _drafts_of_another_pool(run, pool, force)
        write_parquet_atomic(run.pool, pool)
        write_parquet_atomic(run.test, test)
        write_json_atomic(run.split, manifest)
        report.unlink(missing_ok=True)  # a stale strict report would contradict split.json
        lineage.record(run, "split", recipe)
    for warning in warnings:
        log.warning("split hygiene: %s", warning)
    log.info("split: %d seen / %d unseen classes, pool %d, test %d", manifest["counts"]["seen"],
             manifest["counts"]["unseen"], manifest["counts"]["pool"], manifest["counts"]["test"])
    return {**manifest, "archived": str(archived)} if archived else manifest


class PoolChangedError(ValueError):
    """The new pool drops items the run has drafts of; the message says what --force does."""


def _drafts_of_another_pool(run: RunDir, pool: pa.Table, force: bool) -> Path | None:
    """Refuse (or, with force, archive) drafts of items the new pool does not hold.

    Drafts of items still in the pool stay valid: adding classes, or splitting again with
    the same settings, changes nothing. Returns the archive folder when one was made.
    """
    drafted = lineage.drafted_items(run)
    dropped = sorted(drafted - set(pool.column("item_id").to_pylist()))
    if not dropped:
        return None
    drafts = run.path("drafts.parquet")
    if not force:
        raise PoolChangedError(
            f"{drafts} holds drafts of {len(dropped)} item(s) that the new pool does not have "
            f"(e.g. {', '.join(dropped[:3])}); with this split some of them could become test "
            "images. Nothing was written. Keep the current split (same --seed, --k, --mode), or "
            f"run `finecot split --run {run.root} --force` with the new settings: "
            "drafts.parquet and every table made from it (accepted, "
            "reviewed, dataset/, ...) move to RUN/archive/, and the ledger keeps every paid "
            "answer, so drafting the new pool re-pays only its new items"
        )
    target = lineage.archive(run, lineage.FROM_DRAFTS, "split")
    log.warning("split --force: the drafts of the previous pool and the tables made from them "
                "moved to %s", target)
    return target
