"""Benchmark: `finecot eval` throughput over an endpoint and with the tiny local model.

    .venv/bin/python bench/eval.py                              # the issue's figures
    .venv/bin/python bench/eval.py --items 500 --concurrency 64 --local-items 0

Endpoint: the scripted teacher in its own process answering after --latency seconds; for
each concurrency C, items/s of a whole open-world `evaluate()` call (keys, ledger lookups,
image encoding, requests, scoring, responses parquet, report) vs the ideal C / latency, and
our process's CPU per item (the whole call: encoding, client, ledger, scoring, report), then
the cached rerun (zero requests). Images are 224 px JPEGs of the synthetic world, one
distinct image per item. A warm-up pass under another model name lets the server cache its
pixel readings, so the timed runs measure our side, not the scripted teacher.

Local: a tiny random-init Qwen2.5-VL (train/tiny.py), fp32 on CPU, greedy, a fixed number of
new tokens; items/s at batch sizes 1, 4, 16. The machine is shared: rerun when loaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from teacher_process import server_requests, start_teacher  # noqa: E402

from curation.core.config import TeacherConfig  # noqa: E402
from curation.core.labels import ClassInfo, Registry  # noqa: E402
from train.eval import evaluate as ev  # noqa: E402
from train.eval.models import EndpointModel, LocalModel  # noqa: E402


def make_items(workdir: Path, count: int) -> tuple[list[ev.Item], Registry]:
    from curation.synthetic.world import make_world

    per_class = -(-count // 24)
    world = workdir / f"world-24x{per_class}"
    if not (world / "classes.json").exists():
        print(f"making {24 * per_class} synthetic 224 px JPEGs (once) ...", flush=True)
        make_world(world, classes=24, per_class=per_class, seed=0, size=224, image_format="jpg")
    classes = json.loads((world / "classes.json").read_text())
    registry = Registry(ClassInfo(i, c["name"], "synthetic", c["super_category"]) for i, c in enumerate(classes))
    items = []
    for i, c in enumerate(classes):
        for path in sorted((world / c["folder"]).glob("*.jpg")):
            items.append(ev.Item(id=f"{c['folder']}/{path.name}", dataset="synthetic", label=c["name"],
                                 class_split="seen" if i % 3 else "unseen",
                                 question="What bird is this?", image=path.read_bytes(),
                                 super_category=c["super_category"]))
    items.sort(key=lambda item: item.id.split("/")[1])  # classes interleaved
    return items[:count], registry








def endpoint_bench(args, items, registry, workdir: Path) -> None:
    proc, root = start_teacher("--latency", str(args.latency))
    try:
        print(f"scripted teacher at {root}, latency {args.latency}s, {len(items)} items (open-world)")
        warm = EndpointModel(TeacherConfig(model="warm-up", base_urls=[f"{root}/v1"], temperature=0,
                                           concurrency=64))
        ev.evaluate({"open": items}, registry, warm, workdir / "warm", ev.Settings())
        print(f"{'C':>5} {'items/s':>9} {'ideal':>7} {'ratio':>6} {'cpu ms/item':>12} "
              f"{'cached rerun items/s':>22}")
        for c in args.concurrency:
            backend = EndpointModel(TeacherConfig(model=f"bench-c{c}", base_urls=[f"{root}/v1"],
                                                  temperature=0, concurrency=c))
            out = workdir / f"c{c}"
            before = server_requests(root)
            began, cpu = time.perf_counter(), time.process_time()
            ev.evaluate({"open": items}, registry, backend, out, ev.Settings())
            took, cpu = time.perf_counter() - began, time.process_time() - cpu
            sent = server_requests(root) - before
            began = time.perf_counter()
            ev.evaluate({"open": items}, registry, backend, out, ev.Settings())
            cached = time.perf_counter() - began
            rate, ideal = len(items) / took, c / args.latency
            print(f"{c:>5} {rate:>9.1f} {ideal:>7.1f} {rate / ideal:>6.2f} {1000 * cpu / len(items):>12.2f} "
                  f"{len(items) / cached:>22.0f}"
                  f"   ({sent} requests)", flush=True)
    finally:
        proc.terminate()
        proc.wait(10)


def local_bench(args, items, registry, workdir: Path) -> None:
    from train.tiny import build_tiny_model

    tiny = build_tiny_model(workdir / "tiny", [c.name for c in registry])
    subset = items[: args.local_items]
    print(f"tiny Qwen2.5-VL (random init), fp32 CPU, greedy, {args.new_tokens} new tokens, "
          f"{len(subset)} items (open-world)")
    print(f"{'batch':>5} {'items/s':>9} {'s/item':>7}")
    for batch in args.batch_sizes:
        backend = LocalModel(tiny, batch_size=batch, max_new_tokens=args.new_tokens)
        backend.model.generation_config.eos_token_id = None  # every item generates new_tokens
        out = workdir / f"local-b{batch}"
        began = time.perf_counter()
        ev.evaluate({"open": subset}, registry, backend, out, ev.Settings())
        took = time.perf_counter() - began
        print(f"{batch:>5} {len(subset) / took:>9.2f} {took / len(subset):>7.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=1000, help="endpoint items per run")
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--local-items", type=int, default=32, help="0 skips the local model")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "finecot-bench-eval")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.workdir.mkdir(parents=True, exist_ok=True)
    items, registry = make_items(args.workdir, max(args.items, args.local_items))
    with tempfile.TemporaryDirectory(dir=args.workdir) as scratch:
        if args.items:
            endpoint_bench(args, items[: args.items], registry, Path(scratch))
        if args.local_items:
            local_bench(args, items, registry, Path(scratch))


if __name__ == "__main__":
    main()
