"""Benchmark: `finecot export` throughput and peak memory vs row count.

    .venv/bin/python bench/export.py                      # 10,000 and 40,000 sft rows
    .venv/bin/python bench/export.py --rows 2000 --shard-mb 50

For each row count, builds a run directory (in --workdir) whose accepted.parquet holds that
many rationales (~1.5 kB of text each) over 224x224 JPEG images (a fixed set of distinct
files, so disk use stays small), with a 100-class pool and test set; then runs the whole
export stage in a fresh child process and prints rows/s (sft rows over the stage's wall
time) and the child's peak RSS. Peak RSS should not grow with the row count (streaming
shards, one row group in memory).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

CLASSES = 100
FILES = 600
THINK = ("Visual analysis: the bird has a crimson crown, a golden breast and barred wings. " * 18)[
    :1500
]


def make_images(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(FILES):
        path = folder / f"img_{i:04d}.jpg"
        if not path.exists():
            base = rng.integers(0, 255, 3)
            noise = rng.normal(0, 40, (224, 224, 3))
            pixels = np.clip(base + noise, 0, 255).astype("uint8")
            Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def make_run(root: Path, rows: int, images: list[Path]) -> Path:
    from curation.core.labels import ClassInfo, Registry
    from curation.core.rundir import RunDir

    run = RunDir(root)
    Registry([ClassInfo(i, f"Class {i}", "bench", "bird") for i in range(CLASSES)]).save(
        run.registry
    )
    sha = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in images}
    items = []
    for i in range(CLASSES * 6):
        path = images[i % len(images)]
        items.append(
            {
                "item_id": f"b/{i}",
                "dataset": "bench",
                "image_path": str(path),
                "image_sha256": sha[path],
                "width": 224,
                "height": 224,
                "label": f"Class {i % CLASSES}",
                "label_id": i % CLASSES,
                "super_category": "bird",
                "official_split": "test" if i >= CLASSES * 4 else "train",
            }
        )
    table = pa.Table.from_pylist(items)
    pq.write_table(table, run.items)
    seen = [f"Class {i}" for i in range(CLASSES)]
    run.split.write_text(
        json.dumps(
            {
                "mode": "random",
                "seed": 0,
                "seen_ratio": 1.0,
                "k": 4,
                "datasets": {"bench": {"seen": seen, "unseen": []}},
                "counts": {},
                "hygiene": {},
            }
        )
    )
    pool = [
        dict(r, class_split="seen", shot=i // CLASSES) for i, r in enumerate(items[: CLASSES * 4])
    ]
    pq.write_table(pa.Table.from_pylist(pool), run.pool)
    test = [dict(r, class_split="seen") for r in items[CLASSES * 4 :]]
    pq.write_table(pa.Table.from_pylist(test), run.test)
    schema, writer = None, None
    for start in range(0, rows, 5000):
        batch = []
        for i in range(start, min(rows, start + 5000)):
            item = pool[i % len(pool)]
            batch.append(
                {
                    **item,
                    "draft_id": f"{item['item_id']}#{i}#blind",
                    "question": "What bird is this?",
                    "strategy": "blind",
                    "hinted": False,
                    "teacher_model": "bench",
                    "prompt_template": "draft_user",
                    "prompt_sha": "0" * 64,
                    "sampling": "{}",
                    "sample_index": i,
                    "request_key": f"k{i}",
                    "status": "ok",
                    "response": f"<think>{THINK}</think><answer>{item['label']}</answer>",
                    "finish_reason": "stop",
                    "prompt_tokens": 300,
                    "completion_tokens": 400,
                    "cost_usd": 0.0004,
                    "latency_s": 1.0,
                    "think": THINK,
                    "answer": item["label"],
                    "candidates": [item["label"]],
                    "verdict": "accepted",
                    "reasons": [],
                }
            )
        table = pa.Table.from_pylist(batch, schema=schema)
        schema = table.schema
        writer = writer or pq.ParquetWriter(run.path("accepted.parquet"), schema)
        writer.write_table(table)
    writer.close()
    return root


def child(root: Path, shard_mb: int) -> None:
    """Run the export stage once; print one JSON line with the figures."""
    from curation.core.config import parse_recipe
    from curation.core.rundir import RunDir
    from curation.export.stage import export_stage

    recipe = parse_recipe(
        {
            "name": "bench",
            "run_dir": str(root),
            "export": {"shard_mb": shard_mb, "rl_image_size": 224},
        }
    )
    spans: dict[str, list[float]] = {}

    def progress(config: str, done: int, total: int) -> None:
        now = time.perf_counter()
        spans.setdefault(config, [now, now])[1] = now

    start = time.perf_counter()
    summary = export_stage(recipe, RunDir(root), progress)
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    sft = summary["configs"]["sft"]
    sft_s = spans["sft"][1] - spans["sft"][0]
    print(
        json.dumps(
            {
                "rows": sft["rows"],
                "shards": sft["shards"],
                "mb": sft["bytes"] / 1e6,
                "wall_s": wall,
                "sft_s": sft_s,
                "rl_s": spans["rl"][1] - spans["rl"][0],
                "peak_rss_mb": peak_kb / 1024,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 40_000])
    parser.add_argument("--shard-mb", type=int, default=500)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.shard_mb)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="finecot-bench-export-"))
    images = make_images(work / "images")
    print(
        f"{'sft rows':>8} {'shards':>6} {'MB':>8} {'stage s':>8} {'sft s':>7} {'sft rows/s':>10} "
        f"{'rl rows/s':>9} {'peak RSS MB':>12}"
    )
    try:
        for rows in args.rows:
            root = make_run(work / f"run{rows}", rows, images)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(root), "--shard-mb", str(args.shard_mb)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(
                f"{r['rows']:>8} {r['shards']:>6} {r['mb']:>8.1f} {r['wall_s']:>8.1f} "
                f"{r['sft_s']:>7.1f} {r['rows'] / r['sft_s']:>10.0f} "
                f"{CLASSES * 4 / max(r['rl_s'], 1e-9):>9.0f} {r['peak_rss_mb']:>12.0f}"
            )
            shutil.rmtree(root, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
