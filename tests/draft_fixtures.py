"""A run directory ready to draft (registry, split, pool over the synthetic world), the recipe
that points it at scripted teachers, and what the tests read back: the drafts and the
server's own request count.

    from draft_fixtures import make_run, spec, drafts, sent, pool_size
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation.core.config import parse_recipe
from curation.core.labels import ClassInfo, Registry
from curation.core.rundir import RunDir
from curation.synthetic.world import compositional_split

DATASET = "synthetic"


def make_run(tmp_path: Path, world: Path, name: str = "run", per_class: int = 1,
             broken: int = 0) -> RunDir:
    """A run dir as ingest + split leave it: registry.json, split.json, pool.parquet."""
    run = RunDir(tmp_path / name)
    classes = json.loads((world / "classes.json").read_text())
    Registry(ClassInfo(i, c["name"], DATASET, c["super_category"], tuple(c["aliases"]),
                       description=c["description"], attributes=c["attributes"])
             for i, c in enumerate(classes)).save(run.registry)
    seen, unseen = compositional_split(classes, 0.75, 0)
    run.split.write_text(json.dumps({"datasets": {DATASET: {"seen": seen, "unseen": unseen}}}))
    rows = []
    for label_id, info in enumerate(classes):
        if info["name"] not in seen:
            continue
        for shot, path in enumerate(sorted((world / info["folder"]).iterdir())[:per_class]):
            rows.append({"item_id": f"{DATASET}/{path.stem}", "dataset": DATASET,
                         "image_path": str(path), "image_sha256": _sha(path), "width": 96,
                         "height": 96, "label": info["name"], "label_id": label_id,
                         "super_category": info["super_category"], "official_split": "train",
                         "class_split": "seen", "shot": shot})
    for i in range(broken):
        bad = run.root / f"broken{i}.jpg"
        bad.write_bytes(b"this is not an image")
        rows.append({**rows[i], "item_id": f"{DATASET}/broken{i}", "image_path": str(bad),
                     "image_sha256": _sha(bad)})
    pq.write_table(pa.Table.from_pylist(rows), run.pool)
    return run


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def spec(run: RunDir, *servers, **sections):
    """A recipe for `run` against `servers`, with fast retries; sections override."""
    teacher = {"base_urls": [s.base_url for s in servers], "concurrency": 8, "backoff_s": 0.01,
               "backoff_max_s": 0.05, "timeout_s": 10, "max_attempts": 4,
               **sections.pop("teacher", {})}
    return parse_recipe({"run_dir": str(run.root), "teacher": teacher, **sections})


def sent(server) -> int:
    return server.stats(log=False)["counts"]["requests"]


def drafts(run: RunDir) -> dict[str, dict]:
    rows = pq.read_table(run.path("drafts.parquet")).to_pylist()
    return {r["draft_id"]: r for r in rows}


def pool_size(run: RunDir) -> int:
    return pq.read_metadata(run.pool).num_rows
