"""Benchmark: the draft stage against the scripted teacher, in a separate process.

    .venv/bin/python bench/draft_throughput.py                     # the issue's figures
    .venv/bin/python bench/draft_throughput.py --requests 500 --concurrency 64 --rss-items 0

Prints, for each concurrency C: achieved requests/s over the whole `draft_stage` call (keys,
ledger, requests, verdicts, drafts.parquet), the ideal C / latency, their ratio (targets:
>= 0.9 at 16 and 64, >= 0.8 at 256) and the client's CPU per request; then the cached
rerun speed (rows/s, target 5,000) and the peak RSS of a child process drafting
--rss-items items (target under 1 GB).

Images: a synthetic world of 224 px JPEGs (curation/synthetic, cached in --workdir). The
10,000-item run reuses them with a distinct JPEG comment per copy: distinct bytes and keys,
same pixels. The server runs in its own process (the machine has 2 cores); a warm-up pass
first lets it cache what it reads from each image, so the timed runs measure the client,
not the scripted teacher's perception code (--cold to skip it). The machine is shared:
rerun when the load average is high, and read the CPU-per-request column first.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from teacher_process import cpu_seconds, server_requests, start_teacher  # noqa: E402

from curation.core.config import parse_recipe  # noqa: E402
from curation.core.labels import ClassInfo, Registry  # noqa: E402
from curation.core.rundir import RunDir  # noqa: E402
from curation.draft.stage import draft_stage  # noqa: E402

DATASET = "synthetic"


def make_images(workdir: Path, count: int) -> tuple[list[Path], list[dict]]:
    """`count` 224 px JPEGs of the synthetic world (made once, reused) and its classes."""
    from curation.synthetic.world import make_world

    per_class = -(-count // 24)
    world = workdir / f"world-24x{per_class}"
    if not (world / "classes.json").exists():
        print(f"making {24 * per_class} synthetic 224 px JPEGs in {world} (once) ...", flush=True)
        make_world(world, classes=24, per_class=per_class, seed=0, size=224, image_format="jpg")
    classes = json.loads((world / "classes.json").read_text())
    return sorted(world.glob("*/*.jpg"))[:count], classes


def with_comment(data: bytes, text: str) -> bytes:
    """The same JPEG with a COM segment after SOI: other bytes, same pixels."""
    payload = text.encode()
    return data[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + data[2:]


def make_run(root: Path, images: list[Path], classes: list[dict], items: int) -> Path:
    """A run directory with registry.json, split.json and a pool.parquet of `items` items."""
    root.mkdir(parents=True, exist_ok=True)
    by_folder = {c["folder"]: (i, c) for i, c in enumerate(classes)}
    Registry(ClassInfo(i, c["name"], DATASET, c["super_category"], tuple(c["aliases"]),
                       description=c["description"], attributes=c["attributes"])
             for i, c in enumerate(classes)).save(root / "registry.json")
    (root / "split.json").write_text(json.dumps({"datasets": {DATASET: {
        "seen": [c["name"] for c in classes], "unseen": []}}}))
    copies = root / "images"
    rows = []
    for n in range(items):
        source = images[n % len(images)]
        if n < len(images):
            path, data = source, source.read_bytes()
        else:  # a distinct copy: same pixels, other bytes
            copies.mkdir(exist_ok=True)
            path = copies / f"{n}.jpg"
            data = with_comment(source.read_bytes(), f"copy {n}")
            path.write_bytes(data)
        label_id, info = by_folder[source.parent.name]
        rows.append({"item_id": f"{DATASET}/{n}", "dataset": DATASET, "image_path": str(path),
                     "image_sha256": hashlib.sha256(data).hexdigest(), "width": 224,
                     "height": 224, "label": info["name"], "label_id": label_id,
                     "super_category": info["super_category"], "official_split": "train",
                     "class_split": "seen", "shot": 0})
    pq.write_table(pa.Table.from_pylist(rows), root / "pool.parquet")
    return root










def recipe(run: Path, root: str, concurrency: int, transport: str, model: str = "teacher"):
    return parse_recipe({"run_dir": str(run), "teacher": {
        "base_urls": [f"{root}/v1"], "concurrency": concurrency, "transport": transport,
        "model": model, "timeout_s": 60, "max_tokens": 1024}})


def timed_draft(spec) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    report = draft_stage(spec, RunDir(spec.directory))
    return time.perf_counter() - wall, time.process_time() - cpu, report


def child_rss(run: Path, root: str, concurrency: int) -> None:
    """--child: draft one run in this fresh process, print JSON with the peak RSS."""
    wall, cpu, report = timed_draft(recipe(run, root, concurrency, "aiohttp"))
    print(json.dumps({"drafts": report.drafts, "sent": report.sent, "wall_s": wall,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--transport", nargs="+", default=["aiohttp"], choices=["aiohttp", "sdk"])
    parser.add_argument("--rss-items", type=int, default=10_000)
    parser.add_argument("--cold", action="store_true", help="no warm-up pass for the server")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "finecot-bench-draft")
    parser.add_argument("--child", nargs=3, metavar=("RUN", "ROOT", "C"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("OPENAI_API_KEY", "bench-key")
    if args.child:
        child_rss(Path(args.child[0]), args.child[1], int(args.child[2]))
        return

    images, classes = make_images(args.workdir, args.requests)
    stamp = f"{os.getpid()}-{int(time.time())}"
    proc, root = start_teacher("--latency", str(args.latency))
    try:
        print(f"scripted teacher at {root}, latency {args.latency}s; {len(images)} images; "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        base = make_run(args.workdir / f"pool-{stamp}", images, classes, args.requests)
        if not args.cold:
            draft_stage(recipe(base, root, 256, "aiohttp", model="warm-up"), RunDir(base))
        print(f"{'transport':>9} {'C':>4} {'sent':>5} {'wall s':>7} {'req/s':>7} {'ideal':>6} "
              f"{'ratio':>6} {'client cpu ms/req':>17} {'server cpu ms/req':>17}")
        last = None
        for transport in args.transport:
            for c in args.concurrency:
                run = args.workdir / f"run-{stamp}-{transport}-{c}"
                run.mkdir(parents=True)
                for name in ("pool.parquet", "registry.json", "split.json"):
                    (run / name).write_bytes((base / name).read_bytes())
                before, server_cpu = server_requests(root), cpu_seconds(proc.pid)
                wall, cpu, report = timed_draft(recipe(run, root, c, transport))
                sent = server_requests(root) - before
                server_cpu = cpu_seconds(proc.pid) - server_cpu
                ideal = c / args.latency
                print(f"{transport:>9} {c:>4} {sent:>5} {wall:>7.2f} {sent / wall:>7.1f} "
                      f"{ideal:>6.0f} {sent / wall / ideal:>6.2f} {cpu / max(sent, 1) * 1000:>17.2f} "
                      f"{server_cpu / max(sent, 1) * 1000:>17.2f}", flush=True)
                last = (run, transport, c)
        run, transport, c = last
        before = server_requests(root)
        wall, _, report = timed_draft(recipe(run, root, c, transport))
        print(f"cached rerun of {report.drafts} rows: {wall:.2f}s, {report.drafts / wall:,.0f} rows/s, "
              f"{server_requests(root) - before} requests", flush=True)

        if args.rss_items:
            big = make_run(args.workdir / f"big-{stamp}", images, classes, args.rss_items)
            for label in ("first run", "cached rerun"):
                out = subprocess.run([sys.executable, __file__, "--child", str(big), root, "256"],
                                     capture_output=True, text=True, check=True)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{args.rss_items:,} items, {label}: {result['drafts']:,} drafts, "
                      f"{result['sent']:,} sent, {result['wall_s']:.1f}s "
                      f"({result['drafts'] / result['wall_s']:,.0f} rows/s), "
                      f"peak RSS {result['peak_rss_mb']:.0f} MB", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)
        for path in args.workdir.glob(f"*-{stamp}*"):  # the runs; the world images stay
            shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    main()
