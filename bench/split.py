"""Benchmark of the split stage: image signatures (pHash + colour) and a whole split_stage.

Generates N JPEGs (500x375, like CUB photos) under a cache folder once, builds an
items.parquet + registry.json by hand (CLASSES classes, 1/3 official test), then times:
signatures in one process, then with the stage's pool of 2, the pool x test search, and
the whole stage (split + hashing + writes). Prints figures; asserts nothing.

    .venv/bin/python bench/split.py --images 5000
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from curation.core.config import parse_recipe
from curation.core.labels import ClassInfo, Registry
from curation.core.rundir import RunDir
from curation.core.tables import write_parquet_atomic
from curation.ingest import hygiene
from curation.ingest.split import split_stage


def make_images(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:06d}.jpg" for i in range(count)]
    for i, path in enumerate(paths):
        if not path.exists():
            small = np.random.default_rng(i).integers(0, 256, (6, 8, 3), dtype=np.uint8)
            Image.fromarray(small).resize((500, 375), Image.Resampling.BICUBIC).save(path, quality=85)
    return paths


def make_run(root: Path, paths: list[Path], classes: int) -> RunDir:
    run = RunDir(root)
    Registry(ClassInfo(i, f"class {i:04d}", "bench", "object") for i in range(classes)).save(run.registry)
    rows = []
    for i, path in enumerate(paths):
        label = i % classes
        rows.append({
            "item_id": f"bench/{i:06d}", "dataset": "bench", "image_path": str(path),
            "image_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "width": 500,
            "height": 375, "label": f"class {label:04d}", "label_id": label,
            "super_category": "object", "official_split": "test" if (i // classes) % 3 == 2 else "train",
        })
    write_parquet_atomic(run.items, pa.Table.from_pylist(rows))
    return run


def timed(label: str, count: int, fn):
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    print(f"{label:<38} {seconds:7.2f} s  {count / seconds:9.0f} /s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--cache", default="/tmp/finecot-bench-split")
    args = parser.parse_args()

    paths = make_images(Path(args.cache) / "images", args.images)
    sample = paths[: min(len(paths), 2000)]
    timed("signatures, 1 process", len(sample), lambda: hygiene.signatures(sample, workers=1))
    sigs = timed("signatures, pool of 2", len(paths), lambda: hygiene.signatures(paths))
    pool, test = sigs[:2000], sigs[:] * max(1, 30000 // len(sigs))
    timed(f"near-duplicate search {len(pool)} x {len(test)}", len(pool) * len(test),
          lambda: hygiene.near_duplicates(pool, test, 4))

    run = make_run(Path(args.cache) / f"run-{args.images}-{args.classes}", paths, args.classes)
    manifest = timed("split_stage (whole)", args.images,
                     lambda: split_stage(parse_recipe({"split": {"k": 4}}), run))
    counts = manifest["counts"]
    print(f"seen {counts['seen']} unseen {counts['unseen']} pool {counts['pool']} test "
          f"{counts['test']} near-duplicate pairs {manifest['hygiene']['near_duplicates_total']}")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (main process)")


if __name__ == "__main__":
    main()
