"""Benchmark: costs that must not grow with a run's history (issue 22).

    .venv/bin/python bench/scale.py          # ledgers of 10,000 and 1,000,000 rows; 100,000 images
    .venv/bin/python bench/scale.py --big 200000 --items 500 --images 10000   # a quicker look

Builds one run of `--items` pool items drafted once against the scripted teacher (its own
process), then two copies of its ledger padded through the ledger's own API (record_many:
the real schema, triggers and indexes) to `--small` and `--big` rows of history. Times,
side by side and alternating (the machine is shared): a cached draft rerun of the items,
`ledger stats`, and the budget check (opening the ledger and reading its totals). Prints
each figure, the big/small ratio (targets: cached rerun <= 1.3x; stats under 2 s) and a
machine reference (sum(range(1000)) in microseconds) beside them. Then `--images` small
JPEGs (made once under --workdir) are split twice on one run directory: the first split
hashes every pool and test image, the second reads the run's image cache (target: >= 5x
faster, the same split.json).
"""

from __future__ import annotations

import argparse
import logging
import shutil
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from draft_throughput import make_images, make_run, recipe  # noqa: E402
from teacher_process import start_teacher  # noqa: E402

from curation.core.config import parse_recipe  # noqa: E402
from curation.core.ledger import Entry, Ledger  # noqa: E402
from curation.core.rundir import RunDir  # noqa: E402
from curation.draft.stage import draft_stage  # noqa: E402
from curation.ingest.split import split_stage  # noqa: E402

FILLER = "<think>" + "A padded answer of the history. " * 16 + "</think><answer>x</answer>"


def pad(ledger_path: Path, rows: int) -> float:
    """Add history rows (other models' answers) until the ledger holds `rows`; seconds taken."""
    started = time.perf_counter()
    with Ledger(ledger_path) as ledger:
        have = ledger.stats()["requests"]
        batch = 50_000
        for start in range(have, rows, batch):
            ledger.record_many(
                Entry(key=f"history-{i:09d}", model=f"old-teacher-{i % 3}", status="ok",
                      attempts=1, response=FILLER, finish_reason="stop", prompt_tokens=900,
                      completion_tokens=180, cost_usd=0.0012, latency_s=1.5,
                      meta={"item_id": f"old/{i}"})
                for i in range(start, min(rows, start + batch)))
    return time.perf_counter() - started


def timed(fn, repeat: int) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def split_twice(workdir: Path, count: int) -> None:
    """Split a run of `count` small images twice (cold, then from the image cache)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import numpy as np
    from PIL import Image
    from split import make_run as make_split_run

    folder = workdir / f"images-{count}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:06d}.jpg" for i in range(count)]
    started = time.perf_counter()
    for i, path in enumerate(paths):
        if not path.exists():
            blobs = np.random.default_rng(i).integers(0, 256, (4, 4, 3), dtype=np.uint8)
            Image.fromarray(blobs).resize((64, 64), Image.Resampling.BICUBIC).save(path, quality=85)
    print(f"\n{count:,} images of 64 px ready in {time.perf_counter() - started:.1f} s")
    root = workdir / "split-run"
    shutil.rmtree(root, ignore_errors=True)
    run = make_split_run(root, paths, classes=max(10, count // 50))
    spec = parse_recipe({"run_dir": str(root), "split": {"k": 4, "seed": 0}})
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        split_stage(spec, run)
        seconds.append(time.perf_counter() - started)
        if len(seconds) == 1:
            first = run.split.read_bytes()
    same = run.split.read_bytes() == first
    print(f"split of {count:,} images: first {seconds[0]:.2f} s, again (image cache) "
          f"{seconds[1]:.2f} s: {seconds[0] / seconds[1]:.1f}x faster; same split.json: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--images", type=int, default=100_000, help="0: skip the split part")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "finecot-scale")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    reference_us = min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6
    print(f"machine reference: sum(range(1000)) = {reference_us:.1f} us")

    images, classes = make_images(args.workdir, min(args.items, 240))
    base = args.workdir / "base"
    shutil.rmtree(base, ignore_errors=True)
    make_run(base, images, classes, args.items)
    proc, root = start_teacher()
    try:
        started = time.perf_counter()
        draft_stage(recipe(base, root, 64, "aiohttp"), RunDir(base))
        print(f"drafted {args.items} items once in {time.perf_counter() - started:.1f} s")
    finally:
        proc.terminate()

    runs = {}
    for name, rows in (("small", args.small), ("big", args.big)):
        run = args.workdir / name
        shutil.rmtree(run, ignore_errors=True)
        shutil.copytree(base, run)
        seconds = pad(run / "ledger.sqlite", rows)
        size = (run / "ledger.sqlite").stat().st_size / 1e9
        print(f"{name}: ledger padded to {rows:,} rows in {seconds:.1f} s ({size:.2f} GB)")
        runs[name] = run

    # the teacher is gone: a rerun that sent anything would fail, not pass unnoticed
    figures: dict[str, dict[str, float]] = {name: {} for name in runs}
    for _ in range(args.repeat):  # alternate, so both sides see the same machine
        for name, run in runs.items():
            spec = recipe(run, "http://127.0.0.1:9", 64, "aiohttp")
            figures[name].setdefault("rerun", [])
            report = None

            def rerun(spec=spec, run=run):
                nonlocal report
                report = draft_stage(spec, RunDir(run))

            figures[name]["rerun"].append(timed(rerun, 1))
            assert report.sent == 0 and report.cached == args.items, report

            def stats(run=run):
                with Ledger(run / "ledger.sqlite") as ledger:
                    ledger.stats()

            def budget(run=run):
                with Ledger(run / "ledger.sqlite") as ledger:
                    ledger.totals()

            figures[name].setdefault("stats", []).append(timed(stats, 1))
            figures[name].setdefault("budget", []).append(timed(budget, 1))

    print(f"\n{'':28}{'small':>12}{'big':>12}{'big/small':>11}")
    for what, label in (("rerun", f"cached rerun of {args.items}"), ("stats", "ledger stats"),
                        ("budget", "budget check (open+totals)")):
        small = statistics.median(figures["small"][what])
        big = statistics.median(figures["big"][what])
        print(f"{label:28}{small:>11.3f}s{big:>11.3f}s{big / small:>10.2f}x")
    print(f"(ledgers: {args.small:,} and {args.big:,} rows; medians of {args.repeat}; "
          f"machine reference {reference_us:.1f} us)")
    if args.images:
        split_twice(args.workdir, args.images)


if __name__ == "__main__":
    main()
