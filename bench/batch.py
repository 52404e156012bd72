"""Benchmark: batch mode's build and import for 100,000 requests of 224 px images (issue 20).

    .venv/bin/python bench/batch.py                       # 100,000 requests
    .venv/bin/python bench/batch.py --requests 10000      # a quicker look

A pool of `--requests` items, each its own 224 px JPEG file of the synthetic world (distinct
bytes), drafted once each (blind). Each phase runs in a fresh process, so its peak RSS is
its own:
- build: the offline build (`finecot batch build`: draft_stage with batch_out) keys every
  request, inlines each image as a data URL and writes one JSONL file, recording each line
  in the ledger;
- import: `finecot batch import` of a results file in OpenAI's output format (one
  chat.completion of ~1.3 KB per line, written by this script beforehand, not timed);
- import again: the same file, every line a duplicate (nothing changes).
Prints lines/s, MB/s and peak RSS of each phase, and a machine reference (sum(range(1000))
in microseconds): the figures follow one core's plain-Python speed. This machine is shared
with other work: rerun in a quiet window before comparing numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
import timeit
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from draft_throughput import make_images, make_run  # noqa: E402

from curation.core.config import parse_recipe  # noqa: E402
from curation.core.rundir import RunDir  # noqa: E402

RATIONALE = ("<think>\n1. Visual analysis: " + "The crown is crimson, the breast azure. " * 14
             + "\n2. Candidates: A; B; C\n3. Comparison: A fits best.\n4. Prediction: A\n"
             "</think>\n<answer>A</answer>")


def recipe(run: Path):
    return parse_recipe({"run_dir": str(run), "teacher": {
        "base_urls": ["http://127.0.0.1:9/v1"], "model": "teacher", "mode": "batch",
        "max_tokens": 1024, "image_max_side": 768}})


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(phase: str, run: Path, path: Path) -> None:
    """--child PHASE: one phase in this fresh process; print its figures as JSON."""
    from curation.draft.batch_ops import import_results
    from curation.draft.stage import BatchPending, draft_stage

    started = time.perf_counter()
    if phase == "build":
        with contextlib.suppress(BatchPending):  # the expected end: the file waits for results
            draft_stage(recipe(run), RunDir(run), batch_out=path)
        with open(path, "rb") as handle:
            lines = sum(1 for _ in handle)
        counts = {"lines": lines}
    else:
        counts = import_results(recipe(run), RunDir(run), path)
        counts.pop("refused_reasons")
    wall = time.perf_counter() - started
    print(json.dumps({**counts, "wall_s": wall, "bytes": path.stat().st_size,
                      "peak_rss_mb": peak_rss_mb()}))


def write_results(requests: Path, results: Path) -> int:
    """An OpenAI-format output line for every request line (streamed both ways)."""
    count = 0
    with open(requests, "rb") as lines, open(results, "w", encoding="utf-8") as out:
        for raw in lines:
            start = raw.index(b'"custom_id":"') + 13
            custom_id = raw[start : raw.index(b'"', start)].decode()
            body = {"id": f"chatcmpl-{count}", "object": "chat.completion", "model": "teacher",
                    "choices": [{"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": RATIONALE}}],
                    "usage": {"prompt_tokens": 180, "completion_tokens": 260}}
            out.write(json.dumps({"id": f"batch_req_{uuid.uuid4().hex[:24]}",
                                  "custom_id": custom_id, "response": {
                                      "status_code": 200, "request_id": f"req_{count}",
                                      "body": body}, "error": None}) + "\n")
            count += 1
    return count


def run_child(phase: str, run: Path, path: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", phase, str(run), str(path)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--workdir", type=Path,
                        default=Path(tempfile.gettempdir()) / "finecot-batch-bench")
    parser.add_argument("--child", nargs=3, metavar=("PHASE", "RUN", "PATH"))
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), Path(args.child[2]))
        return
    reference_us = min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6
    print(f"machine reference: sum(range(1000)) = {reference_us:.1f} us "
          "(a shared machine: rerun in a quiet window before comparing)")
    args.workdir.mkdir(parents=True, exist_ok=True)
    images, classes = make_images(args.workdir, min(args.requests, 240))
    pool = args.workdir / f"pool-{args.requests}"
    if not (pool / "pool.parquet").exists():
        print(f"making a pool of {args.requests:,} distinct 224 px JPEGs (once) ...", flush=True)
        make_run(pool, images, classes, args.requests)
    run = args.workdir / f"run-{args.requests}"
    if run.exists():
        import shutil

        shutil.rmtree(run)
    run.mkdir()
    for name in ("pool.parquet", "registry.json", "split.json"):
        (run / name).write_bytes((pool / name).read_bytes())
    requests, results = args.workdir / "requests.jsonl", args.workdir / "results.jsonl"

    build = run_child("build", run, requests)
    print(f"build:  {build['lines']:,} lines in {build['wall_s']:.1f} s = "
          f"{build['lines'] / build['wall_s']:,.0f} lines/s, "
          f"{build['bytes'] / 1e6 / build['wall_s']:.0f} MB/s ({build['bytes'] / 1e9:.2f} GB), "
          f"peak RSS {build['peak_rss_mb']:.0f} MB", flush=True)
    write_results(requests, results)
    first = run_child("import", run, results)
    print(f"import: {first['lines']:,} lines ({first.get('answered', 0):,} answered) in "
          f"{first['wall_s']:.1f} s = {first['lines'] / first['wall_s']:,.0f} lines/s, "
          f"{first['bytes'] / 1e6 / first['wall_s']:.0f} MB/s, peak RSS "
          f"{first['peak_rss_mb']:.0f} MB", flush=True)
    again = run_child("import", run, results)
    print(f"import again (all duplicates): {again.get('duplicate', 0):,} lines in "
          f"{again['wall_s']:.1f} s = {again['lines'] / again['wall_s']:,.0f} lines/s, "
          f"peak RSS {again['peak_rss_mb']:.0f} MB")
    print(f"(machine reference {reference_us:.1f} us; 2 cores shared with other work)")


if __name__ == "__main__":
    main()
