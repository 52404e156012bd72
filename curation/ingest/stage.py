"""The ingest stage: every recipe source -> items.parquet + quarantine.parquet + registry.json.

    finecot ingest --source cub200 --root data/CUB_200_2011 --run runs/birds
    finecot ingest --recipe recipe.yaml --run runs/mix        # several sources, one registry

    from curation.ingest.stage import ingest_stage
    report = ingest_stage(recipe, RunDir("runs/birds"))    # IngestReport: counts by reason

Each source module (curation/ingest/sources/) lists classes and items; here every image is read,
hashed (sha256 of the file bytes), measured and fully decoded (curation/ingest/sources/images.py)
in a pool of worker processes, a bounded number of batches in flight, and rows stream into
Parquet, so memory stays flat however large the dataset. Items that cannot be used go to the
quarantine table with a reason code (REASONS) and the run goes on. The same sha256 under two
labels of one dataset is a `label_conflict`: every row of that image is quarantined, since
the data cannot say which label is right. Exact duplicates under one label stay (the split
stage's hygiene check reports them). Output order is the sources' order, then each layout's
own deterministic order: a rerun on the same inputs writes byte-identical tables.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from curation.core import lineage
from curation.core.config import Recipe, SourceConfig
from curation.core.labels import ClassInfo, Registry, normalize
from curation.core.lock import run_lock
from curation.core.rundir import RunDir
from curation.core.stage import Progress
from curation.core.tables import (
    ParquetStreamWriter,
    atomic_path,
    write_json_atomic,
    write_parquet_atomic,
)
from curation.ingest.sources import Layout, RawItem, read_source
from curation.ingest.sources.common import SPLITS, source_licence
from curation.ingest.sources.images import Inspection, inspect, inspect_many

log = logging.getLogger(__name__)

ITEM_SCHEMA = pa.schema([
    ("item_id", pa.string()),
    ("dataset", pa.string()),
    ("image_path", pa.string()),
    ("image_sha256", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("label", pa.string()),
    ("label_id", pa.int32()),
    ("super_category", pa.string()),
    ("official_split", pa.string()),
])

QUARANTINE_SCHEMA = pa.schema([
    ("dataset", pa.string()),
    ("image_path", pa.string()),
    ("label", pa.string()),
    ("reason", pa.string()),
    ("detail", pa.string()),
])

REASONS = {
    "missing_file": "the layout lists an image that is not on disk",
    "empty_file": "the file has 0 bytes",
    "unreadable": "not an image, or a read/decode error",
    "truncated": "the image data ends early",
    "unsupported_mode": "CMYK, 16/32-bit, or real transparency (see curation/ingest/sources/images.py)",
    "too_many_pixels": "width x height over the source's max_pixels (decompression bombs)",
    "unknown_label": "the label is not in the dataset's class list",
    "unknown_split": "the split is not train, val or test",
    "label_conflict": "the same image (sha256) appears under two different labels",
    "duplicate_item": "the layout lists the same file twice (the first listing is kept)",
    "worker_crashed": "decoding the image killed its worker process (the run went on)",
    "worker_hung": "decoding the image never finished (its worker was ended; the run went on)",
}

CHUNK = 64  # images per worker task
INLINE_BELOW = 256  # smaller inputs are inspected in-process (a pool costs ~0.5 s to start)
BATCH_TIMEOUT_S = 600.0  # a worker task (CHUNK images, each decoded in seconds at most) that
# runs longer is stuck: its worker is ended and the image at fault found and quarantined

# Called as progress(task, done, total) while long work runs (the CLI draws a rich bar).


@dataclass
class IngestReport:
    """What ingest did: rows written, and the quarantine counted by reason and by dataset."""

    items: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    datasets: dict[str, dict[str, int]] = field(default_factory=dict)  # dataset -> counts
    classes: int = 0
    duplicates: int = 0  # exact duplicates under one label (kept)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.reasons.items())) or "none"
        return (f"{self.items} items, {self.classes} classes, {self.quarantined} quarantined "
                f"({reasons}) in {self.seconds:.1f} s")


@dataclass
class _Pending:
    item: RawItem
    info: ClassInfo
    dataset: str


# -- classes ---------------------------------------------------------------------------------


def _load_synonyms(path: str) -> dict[str, list[str]]:
    """A YAML or JSON mapping {class name or alias: [synonym, ...]} (a single string is ok)."""
    file = Path(os.path.expanduser(path))
    if not file.exists():
        raise FileNotFoundError(f"synonyms file {file} does not exist")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"synonyms file {file} is not valid YAML/JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"synonyms file {file} must map class names to lists of synonyms")
    return {str(k): [v] if isinstance(v, str) else [str(s) for s in v] for k, v in data.items()}


def source_registry(cfg: SourceConfig, layout: Layout) -> Registry:
    """The classes of one source, with the user's synonyms added as aliases."""
    registry = Registry(layout.classes)
    if [c.label_id for c in layout.classes] != list(range(len(layout.classes))):
        raise ValueError(f"source {cfg.kind} ({cfg.root}): label ids must be 0..N-1 in order")
    if cfg.synonyms:
        registry = registry.with_aliases(_load_synonyms(cfg.synonyms))
    seen: dict[str, str] = {}
    for info in registry:
        key = normalize(info.name)
        if key in seen:
            layout.notes.append(f"{layout.dataset}: classes {seen[key]!r} and {info.name!r} have "
                                "the same normalised name: the matcher cannot tell them apart")
        seen[key] = info.name
    return registry


# -- the item stream -------------------------------------------------------------------------


def _materialise(item: RawItem, run: RunDir, dataset: str) -> RawItem:
    """Images held as bytes (HF datasets) become files under RUN/images/<dataset>/."""
    if item.data is None:
        return item
    target = run.root / "images" / dataset / item.path
    if not (target.exists() and target.read_bytes() == item.data):  # rerun: keep, unless changed
        with atomic_path(target) as tmp:
            tmp.write_bytes(item.data)
    return RawItem(item.key, str(target.resolve()), item.label, item.split)


class _Inspectors:
    """The worker pool, replaced when a worker dies or hangs (a decoder crash takes its
    process down, and with it the pool; a decoder stuck on a malicious file never returns):
    batches that were in flight run again on the new pool, and the one that failed is split
    in halves until the image at fault is found and quarantined (`worker_crashed`,
    `worker_hung`). Everything else comes through."""

    def __init__(self, workers: int, timeout_s: float):
        self.workers, self.timeout_s = workers, timeout_s
        self.pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))
        pool.submit(int).result()  # a worker is up before any task is timed: starting is not decoding
        return pool

    def submit(self, paths: list[str], max_pixels: int) -> tuple[ProcessPoolExecutor, Future]:
        return self.pool, self.pool.submit(inspect_many, paths, max_pixels)

    def results(self, submitted: tuple[ProcessPoolExecutor, Future], paths: list[str],
                max_pixels: int) -> list[Inspection]:
        pool, future = submitted
        try:
            return future.result(timeout=self.timeout_s)
        except (BrokenProcessPool, TimeoutError):
            if pool is self.pool:  # the first news of this failure: a fresh pool for the rest
                self._replace()
            return self._isolate(paths, max_pixels)

    def _isolate(self, paths: list[str], max_pixels: int) -> list[Inspection]:
        try:
            return self.pool.submit(inspect_many, paths, max_pixels).result(timeout=self.timeout_s)
        except BrokenProcessPool:
            failure = Inspection("worker_crashed", "the image decoder crashed its process "
                                 "(a malformed file, or a bug in a decoder library)")
        except TimeoutError:
            failure = Inspection("worker_hung", f"decoding took over {self.timeout_s:g} s "
                                 "(a decoder stuck on a malformed file)")
        self._replace()
        if len(paths) == 1:
            log.warning("%s reading %s: quarantined", failure.reason, paths[0])
            return [failure]
        half = len(paths) // 2
        return self._isolate(paths[:half], max_pixels) + self._isolate(paths[half:], max_pixels)

    def _replace(self) -> None:
        # A hung worker never returns and shutdown() does not stop it: end the old pool's
        # processes (the executor offers no public way), then start afresh.
        for process in list((getattr(self.pool, "_processes", None) or {}).values()):
            process.kill()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _inspected(
    pending: Iterator[_Pending], max_pixels: dict[str, int], workers: int,
    timeout_s: float = BATCH_TIMEOUT_S,
) -> Iterator[tuple[_Pending, Inspection]]:
    """(item, inspection) in input order; a pool of `workers` processes, or inline for 0."""
    if workers <= 0:
        for p in pending:
            yield p, inspect(p.item.path, max_pixels[p.dataset])
        return
    in_flight: deque[tuple[list[_Pending], list[str], int, tuple]] = deque()
    inspectors = _Inspectors(workers, timeout_s)

    def submit(batch: list[_Pending]) -> None:
        # One max_pixels per task: a batch never mixes datasets with different limits.
        paths, limit = [p.item.path for p in batch], max_pixels[batch[0].dataset]
        in_flight.append((batch, paths, limit, inspectors.submit(paths, limit)))

    def done(batch: list[_Pending], paths: list[str], limit: int, submitted: tuple) -> Iterator:
        return zip(batch, inspectors.results(submitted, paths, limit), strict=True)

    try:
        chunk: list[_Pending] = []
        for p in pending:
            if chunk and (len(chunk) >= CHUNK or chunk[0].dataset != p.dataset):
                submit(chunk)
                chunk = []
                while len(in_flight) > 3 * workers:  # bounded: memory stays flat
                    yield from done(*in_flight.popleft())
            chunk.append(p)
        if chunk:
            submit(chunk)
        while in_flight:
            yield from done(*in_flight.popleft())
    finally:
        inspectors.close()


def _worker_count(workers: int | None, total: int) -> int:
    if workers is not None:
        return workers
    return 0 if total < INLINE_BELOW else min(os.cpu_count() or 1, 8)


# -- the stage -------------------------------------------------------------------------------


def ingest_stage(
    recipe: Recipe,
    run: RunDir,
    progress: Progress | None = None,
    workers: int | None = None,
    batch_timeout_s: float = BATCH_TIMEOUT_S,
) -> IngestReport:
    """Ingest every source of `recipe` into `run`; return the report (also logged).

    workers: inspector processes (None: one per CPU, or in-process for small inputs; 0:
    always in-process). batch_timeout_s: a worker task running longer is stuck (see
    BATCH_TIMEOUT_S).
    """
    if not recipe.sources:
        raise ValueError("the recipe has no sources: add `sources:` (kind, root) or use "
                         "`finecot ingest --source KIND --root PATH`")
    started = time.perf_counter()
    report = IngestReport()
    layouts: list[tuple[SourceConfig, Layout]] = []
    registries: list[Registry] = []
    for cfg in recipe.sources:
        layout = read_source(cfg)
        if any(layout.dataset == other.dataset for _, other in layouts):
            raise ValueError(f"two sources are both called dataset {layout.dataset!r}: give each "
                             "source its own `dataset` name in the recipe")
        registries.append(source_registry(cfg, layout))
        layouts.append((cfg, layout))
        report.notes += layout.notes
    registry = Registry(c for r in registries for c in r)
    report.classes = len(registry)
    run.root.mkdir(parents=True, exist_ok=True)  # the sources are readable: the run begins
    with run_lock(run, "ingest"):
        _ingest(run, layouts, registries, registry, report, progress, workers, batch_timeout_s)
        write_json_atomic(run.path("sources.json"), [
            {"dataset": layout.dataset, "kind": cfg.kind, "root": _absolute(cfg.root),
             "license": source_licence(cfg.kind, _absolute(cfg.root))}
            for cfg, layout in layouts
        ])
        lineage.record(run, "ingest", recipe)
    report.seconds = time.perf_counter() - started
    log.info("ingest: %s", report.summary())
    for note in report.notes:
        log.warning("ingest: %s", note)
    return report


def _absolute(root: str) -> str:
    """A source root as an absolute path (an HF hub id, which is no path, stays as it is)."""
    path = Path(os.path.expanduser(root))
    return str(path.resolve()) if path.exists() else root


def _ingest(
    run: RunDir, layouts: list[tuple[SourceConfig, Layout]], registries: list[Registry],
    registry: Registry, report: IngestReport, progress: Progress | None, workers: int | None,
    batch_timeout_s: float,
) -> None:
    """Inspect every listed image, stream the usable ones into items.parquet, write the
    quarantine and the registry; fill `report`. A source that lists no image, or a run with
    no usable image, is refused before anything is written."""
    quarantine: list[dict] = []
    reasons: Counter[str] = Counter()
    per_dataset: dict[str, Counter[str]] = {layout.dataset: Counter() for _, layout in layouts}
    first_label: dict[tuple[str, bytes], int] = {}
    conflicts: set[tuple[str, bytes]] = set()
    max_pixels = {layout.dataset: cfg.max_pixels for cfg, layout in layouts}
    total = sum(layout.size or 0 for _, layout in layouts)
    done = 0

    def reject(dataset: str, path: str, label: str, reason: str, detail: str) -> None:
        quarantine.append({"dataset": dataset, "image_path": path, "label": label,
                           "reason": reason, "detail": detail})
        reasons[reason] += 1
        per_dataset[dataset][reason] += 1

    def pending() -> Iterator[_Pending]:
        nonlocal done
        for (_, layout), reg in zip(layouts, registries, strict=True):
            listed: dict[str, str] = {}  # item key -> raw label: item_ids must be unique
            for item in layout.items:
                item = _materialise(item, run, layout.dataset)
                label_id = layout.labels.get(item.label)
                if item.key in listed:
                    done += 1
                    reject(layout.dataset, item.path, item.label, "duplicate_item",
                           f"listed again (first with label {listed[item.key]!r})")
                    continue
                listed[item.key] = item.label
                if label_id is None:
                    done += 1
                    reject(layout.dataset, item.path, item.label, "unknown_label",
                           f"label {item.label!r} is not in the class list")
                elif item.split not in SPLITS:
                    done += 1
                    reject(layout.dataset, item.path, reg.get(layout.dataset, label_id).name,
                           "unknown_split", f"split {item.split!r} is not train, val or test")
                else:
                    yield _Pending(item, reg.get(layout.dataset, label_id), layout.dataset)

    partial = run.path("items.partial.parquet")
    for stale in run.root.glob(".items.partial.parquet.*.tmp"):  # left by a killed run
        stale.unlink(missing_ok=True)
    with ParquetStreamWriter(partial, ITEM_SCHEMA) as writer:
        for p, result in _inspected(pending(), max_pixels, _worker_count(workers, total),
                                    batch_timeout_s):
            done += 1
            if progress and done % 256 == 0:
                progress("ingest", done, total)
            if not result.ok:
                reject(p.dataset, p.item.path, p.info.name, result.reason, result.detail)
                continue
            key = (p.dataset, bytes.fromhex(result.sha256))
            known = first_label.get(key)
            if known is None:
                first_label[key] = p.info.label_id
            elif known != p.info.label_id:
                conflicts.add(key)
            else:
                report.duplicates += 1
            writer.write({
                "item_id": f"{p.dataset}/{p.item.key}",
                "dataset": p.dataset,
                "image_path": p.item.path,
                "image_sha256": result.sha256,
                "width": result.width,
                "height": result.height,
                "label": p.info.name,
                "label_id": p.info.label_id,
                "super_category": p.info.super_category,
                "official_split": p.item.split,
            })
            per_dataset[p.dataset]["items"] += 1
    if progress:
        progress("ingest", done, total)
    _refuse_empty(layouts, per_dataset, writer.count - len(conflicts), reasons, partial)
    report.items = writer.count - _drop_conflicts(partial, run.items, conflicts, reject)
    for dataset, counts in per_dataset.items():
        counts["items"] -= counts.get("label_conflict", 0)
        report.datasets[dataset] = dict(sorted(counts.items()))

    quarantine.sort(key=lambda r: (r["dataset"], r["image_path"], r["reason"], r["label"]))
    write_parquet_atomic(run.quarantine, pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA))
    registry.save(run.registry)
    report.quarantined = len(quarantine)
    report.reasons = dict(sorted(reasons.items()))


def _refuse_empty(layouts: list[tuple[SourceConfig, Layout]], per_dataset: dict[str, Counter],
                  usable: int, reasons: Counter, partial: Path) -> None:
    """An empty source folder (a typo in --root, a wrong layout) is an error, not an empty
    run that split and draft would carry on with; so is a run whose every image failed."""
    empty = [(cfg, layout) for cfg, layout in layouts if not sum(per_dataset[layout.dataset].values())]
    if not empty and usable > 0:
        return
    partial.unlink(missing_ok=True)
    if empty:
        cfg, layout = empty[0]
        raise ValueError(
            f"source {cfg.kind} at {_absolute(cfg.root)} lists no images (dataset "
            f"{layout.dataset!r}): check --root and --source (the layout); nothing was written")
    counts = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
    raise ValueError(f"no usable image in any source: every listed image was quarantined "
                     f"({counts}); nothing was written. Check the sources' files and labels")


def _drop_conflicts(
    partial: Path,
    final: Path,
    conflicts: set[tuple[str, bytes]],
    reject: Callable[[str, str, str, str, str], None],
) -> int:
    """Move the partial table onto `final`, without the rows of conflicting images (which are
    quarantined, each naming every label its image carries). Returns the rows dropped."""
    if not conflicts:
        os.replace(partial, final)
        return 0
    dropped: list[dict] = []
    source = pq.ParquetFile(partial)
    with ParquetStreamWriter(final, ITEM_SCHEMA) as writer:
        for batch in source.iter_batches(batch_size=8192):
            for row in batch.to_pylist():
                if (row["dataset"], bytes.fromhex(row["image_sha256"])) in conflicts:
                    dropped.append(row)
                else:
                    writer.write(row)
    labels: dict[tuple[str, str], list[str]] = {}
    for row in dropped:
        names = labels.setdefault((row["dataset"], row["image_sha256"]), [])
        if row["label"] not in names:
            names.append(row["label"])
    for row in dropped:
        names = labels[(row["dataset"], row["image_sha256"])]
        reject(row["dataset"], row["image_path"], row["label"], "label_conflict",
               f"sha256 {row['image_sha256'][:12]} is labelled {json.dumps(names)}")
    partial.unlink(missing_ok=True)
    return len(dropped)
