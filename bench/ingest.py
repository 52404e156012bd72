"""Ingest benchmark: a generated ImageFolder of small JPEGs through the ingest stage.

    .venv/bin/python bench/ingest.py                      # 20,000 images in a temp dir
    .venv/bin/python bench/ingest.py --images 2000 --workers 2 --dir /tmp/ingest-bench

Generates N distinct JPEGs (64-128 px, 100 classes, with a classes.json) unless the folder
already holds them, runs `ingest_stage` on it (sha256 + full decode of every image in worker
processes, rows streamed to Parquet) and prints items/s and peak resident memory of the
main process and of the largest worker. Targets (issue 2): >= 500 images/s, peak < 1 GB.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageDraw

from curation.core.config import Recipe, SourceConfig
from curation.core.rundir import RunDir
from curation.ingest.stage import ingest_stage

CLASSES = 100


def generate(root: Path, count: int, seed: int = 0) -> float:
    """Write `count` distinct JPEGs under root/<class>/; returns seconds (0 if already there)."""
    marker = root / f".generated-{count}"
    if marker.exists():
        return 0.0
    started = time.perf_counter()
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps(
        [{"folder": f"class_{c:03d}", "name": f"Synthetic Class {c}"} for c in range(CLASSES)]))
    for i in range(count):
        folder = root / f"class_{i % CLASSES:03d}"
        folder.mkdir(exist_ok=True)
        size = (rng.randint(64, 128), rng.randint(64, 128))
        # The background colour encodes i, so no two images are byte-identical.
        image = Image.new("RGB", size, (i % 256, (i // 256) % 256, (i * 7) % 256))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y = rng.randrange(size[0]), rng.randrange(size[1])
            draw.rectangle((x, y, x + rng.randint(5, 40), y + rng.randint(5, 40)),
                           fill=(rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        image.save(folder / f"img_{i:06d}.jpg", quality=85)
    marker.touch()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=None, help="default: one per CPU")
    parser.add_argument("--dir", type=Path, default=None, help="keep the images here (default: temp)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = args.dir or Path(tmp)
        images = base / "images"
        gen_s = generate(images, args.images)
        print(f"generated {args.images} images in {gen_s:.1f} s ({images})")
        recipe = Recipe(sources=[SourceConfig(kind="imagefolder", root=str(images), dataset="bench")])
        run = RunDir(Path(tmp) / "run")
        started = time.perf_counter()
        report = ingest_stage(recipe, run, workers=args.workers)
        seconds = time.perf_counter() - started
        main_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"ingested {report.items} items ({report.quarantined} quarantined) in {seconds:.2f} s: "
              f"{report.items / seconds:.0f} items/s")
        print(f"peak RSS: main {main_mb:.0f} MB, largest worker {child_mb:.0f} MB")
        print(f"items.parquet {run.items.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
