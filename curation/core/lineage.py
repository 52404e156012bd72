"""Lineage: what each table of a run was built from (`manifest.json`), and what is stale.

Every stage, when it succeeds, records in RUN/manifest.json the fingerprints (sha256) of
the files it read, those of the files it wrote, and its recipe settings:

    {"run_id": "3f9c0a1b2d4e",
     "stages": {"filter": {"finished_at": "2026-12-07T10:00:00+00:00",
                           "inputs": {"drafts.parquet": "sha256:...", "pool.parquet": ...},
                           "outputs": {"accepted.parquet": "sha256:...", ...},
                           "settings": {"filters": {...}}}}}

From it a later stage can tell that a table it reads is older than what that table was
built from (`stale`): `export` warns when drafts.parquet changed since `filter` ran, or
accepted.parquet since `review apply`; `review apply` names the products (dataset/,
report/) its new tables make stale. A missing input is recorded as null, so a table that
appears later (reviewed.parquet after an export) counts as a change too.

`run_id` gives each run a stable identity beyond its folder name (the Label Studio project
title carries it). `in_pool` keeps only the drafts of items in the current pool, and
`archive` moves tables that no longer fit the run aside (`split --force`), never deleting.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.core.config import Recipe
from curation.core.lock import run_lock
from curation.core.rundir import RunDir
from curation.core.tables import read_json, read_table, write_json_atomic

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class StageFiles:
    """What a stage reads and writes (names in the run directory), and its recipe sections."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    settings: tuple[str, ...] = ()


REVIEWED = ("reviewed.parquet", "review_excluded.parquet", "label_corrections.parquet")

# A dict is the registry: stage (as its command is spelled) -> its files.
STAGES: dict[str, StageFiles] = {
    "ingest": StageFiles((), ("items.parquet", "quarantine.parquet", "registry.json",
                              "sources.json"), ("sources",)),
    "split": StageFiles(("items.parquet", "registry.json"),
                        ("split.json", "pool.parquet", "test.parquet"), ("split",)),
    "draft": StageFiles(("pool.parquet", "registry.json"), ("drafts.parquet",),
                        ("teacher", "prompts", "draft")),
    "filter": StageFiles(("drafts.parquet", "pool.parquet", "registry.json", "split.json"),
                         ("accepted.parquet", "rejected.parquet"), ("filters",)),
    "review apply": StageFiles(("accepted.parquet", "rejected.parquet",
                                "review_annotations.parquet", "registry.json"),
                               (*REVIEWED, "review_stats.json"), ("review",)),
    "export": StageFiles(("items.parquet", "registry.json", "sources.json", "split.json",
                          "pool.parquet", "test.parquet", "accepted.parquet", "rejected.parquet",
                          *REVIEWED),
                         ("dataset", "triplets.parquet"), ("export", "prompts")),
    "report": StageFiles(("items.parquet", "split.json", "drafts.parquet", "accepted.parquet",
                          "rejected.parquet", "funnel.json", *REVIEWED), ("report",)),
}
PRODUCTS = {"export": "dataset/", "report": "report/"}

# What the drafts made, directly or not: archived together when the pool changes under them.
FROM_DRAFTS = (
    "drafts.parquet", "draft_report.json", "accepted.parquet", "rejected.parquet", "funnel.json",
    "review_annotations.parquet", "reviewed.parquet", "reviewed.v*.parquet",
    "review_excluded.parquet", "label_corrections.parquet", "review_stats.json",
    "triplets.parquet", "export_skipped.parquet", "export.json", "dataset", "llamafactory",
    "easyr1", "report",
)


# -- fingerprints -------------------------------------------------------------------------


def fingerprint(path: Path) -> str | None:
    """sha256 of a file's bytes; of a folder, its README.md and its files' names and sizes
    (an export holds gigabytes of images: their card and listing change with them); None
    when the path does not exist."""
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            rel = file.relative_to(path).as_posix()
            if rel.startswith("."):
                continue
            digest.update(f"{rel}\0{file.stat().st_size}\n".encode())
        readme = path / "README.md"
        if readme.is_file():
            digest.update(readme.read_bytes())
        return "dir-sha256:" + digest.hexdigest()
    try:
        with open(path, "rb") as handle:
            return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()
    except FileNotFoundError:
        return None


# -- the manifest -------------------------------------------------------------------------


def load(run: RunDir) -> dict[str, Any]:
    path = run.path(MANIFEST)
    manifest = read_json(path) if path.exists() else {}
    manifest.setdefault("stages", {})
    return manifest


def run_id(run: RunDir) -> str:
    """The run's stable id (created, and saved in manifest.json, on first use)."""
    manifest = load(run)
    if not manifest.get("run_id"):
        manifest["run_id"] = uuid.uuid4().hex[:12]
        write_json_atomic(run.path(MANIFEST), manifest)
    return manifest["run_id"]


def record(run: RunDir, stage: str, recipe: Recipe | None = None,
           extra_outputs: Sequence[str] = ()) -> None:
    """Record that `stage` just succeeded on `run`: the fingerprints of what it read and
    wrote, and its recipe settings."""
    files = STAGES[stage]
    manifest = load(run)
    manifest.setdefault("run_id", uuid.uuid4().hex[:12])
    settings = {}
    if recipe is not None:
        dumped = recipe.model_dump(mode="json")
        settings = {section: dumped.get(section) for section in files.settings}
    manifest["stages"][stage] = {
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "inputs": {name: fingerprint(run.path(name)) for name in files.inputs},
        "outputs": {name: fingerprint(run.path(name))
                    for name in (*files.outputs, *extra_outputs) if run.path(name).exists()},
        "settings": settings,
    }
    write_json_atomic(run.path(MANIFEST), manifest)


def recorded(stage: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator for a stage function `f(recipe, run, ...)`: it runs holding the run lock
    (curation/core/lock.py), and its success is recorded in the manifest.

        @recorded("filter")
        def filter_stage(recipe, run, progress=None): ...
    """

    def wrap(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run_stage(recipe: Recipe, run: RunDir, *args: Any, **kwargs: Any) -> Any:
            with run_lock(run, stage):
                result = function(recipe, run, *args, **kwargs)
                record(run, stage, recipe)
            return result

        return run_stage

    return wrap


def stale(run: RunDir, stage: str) -> list[str]:
    """Inputs of `stage` that changed (appeared, vanished, or differ) since it last ran;
    empty when it never ran (nothing recorded) or nothing changed."""
    entry = load(run)["stages"].get(stage)
    if not entry:
        return []
    return [name for name, recorded in entry.get("inputs", {}).items()
            if fingerprint(run.path(name)) != recorded]


def stale_warnings(run: RunDir, stages: Iterable[str]) -> list[str]:
    """One line per stage in `stages` whose outputs are older than one of their inputs."""
    lines = []
    for stage in stages:
        changed = stale(run, stage)
        if changed:
            made = PRODUCTS.get(stage) or ", ".join(n for n in STAGES[stage].outputs
                                                    if run.path(n).exists())
            lines.append(f"{made or 'its tables'} ({stage}) predate changes to "
                         f"{', '.join(changed)}: rerun `finecot {stage} --run {run.root}`")
    return lines


def stale_products(run: RunDir) -> list[tuple[str, str]]:
    """(product, command that refreshes it) for each export/report now older than its inputs."""
    return [(PRODUCTS[stage], f"finecot {stage} --run {run.root}")
            for stage in PRODUCTS if run.path(PRODUCTS[stage].rstrip("/")).exists()
            and stale(run, stage)]


# -- drafts of the current pool -----------------------------------------------------------


def pool_items(run: RunDir) -> set[str] | None:
    """item_ids of the current pool (None when the run has no pool.parquet)."""
    if not run.pool.exists():
        return None
    return set(read_table(run.pool, columns=["item_id"]).column(0).to_pylist())


def in_pool(run: RunDir, table: pa.Table, what: str = "drafts") -> pa.Table:
    """`table` without the rows whose item is not in the current pool, with a warning.

    Drafts of a pool that a later `split` replaced must never reach training data: their
    items may now be test images. (Without pool.parquet, as in hand-made tables, the table
    is returned as it is.)
    """
    items = pool_items(run)
    if items is None or "item_id" not in table.column_names:
        return table
    keep = pc.is_in(table.column("item_id"), value_set=pa.array(sorted(items), pa.string()))
    kept = table.filter(keep)
    left_out = table.num_rows - kept.num_rows
    if left_out:
        log.warning("%d %s of items not in the current pool (%s) were left out: they were made "
                    "for an earlier split; rerun `finecot draft --run %s` for the new pool",
                    left_out, what, run.pool, run.root)
    return kept


def drafted_items(run: RunDir) -> set[str]:
    """item_ids that drafts.parquet holds drafts of (empty without drafts)."""
    path = run.path("drafts.parquet")
    if not path.exists() or "item_id" not in pq.read_schema(path).names:
        return set()
    return set(read_table(path, columns=["item_id"]).column(0).to_pylist())


def archive(run: RunDir, names: Iterable[str], reason: str) -> Path | None:
    """Move the run's files matching `names` (globs) into RUN/archive/REASON-STAMP/ with the
    current manifest; return that folder (None when nothing matched). Renames only."""
    found = sorted({p for name in names for p in run.root.glob(name)})
    if not found:
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    target = run.path("archive") / f"{reason}-{stamp}"
    suffix = 1
    while target.exists():
        suffix += 1
        target = run.path("archive") / f"{reason}-{stamp}-{suffix}"
    target.mkdir(parents=True)
    manifest = load(run)
    write_json_atomic(target / MANIFEST, manifest)
    for path in found:
        os.replace(path, target / path.name)
    moved = {p.name for p in found}
    for stage, files in STAGES.items():  # their records went with them
        if any(name in moved for name in files.outputs):
            manifest["stages"].pop(stage, None)
    write_json_atomic(run.path(MANIFEST), manifest)
    return target
