"""Benchmark: parse + every non-judge filter over many drafts, one worker or several.

    .venv/bin/python bench/filter_throughput.py                  # 50,000 drafts, one worker
    .venv/bin/python bench/filter_throughput.py --drafts 5000 --real-share 1.0 --workers 2
    .venv/bin/python bench/filter_throughput.py --compare 76c9c7a    # the issue-16 check

Drafts are generated from two sources and mixed: real teacher rationales (the Fine-R1
sample in tests/fixtures, ~3,400 characters each, judged with the paper's class registry)
varied per draft (another answer, a leak phrase, a truncation, an extra observation so no
two texts are equal), and synthetic four-part rationales from templates over a 120-class
compositional bird registry (~900 characters). Prints drafts/s by wall clock and by process
CPU time (the fair figure on a shared machine), parse alone and parse + filters, and the
funnel. Target: >= 5,000 drafts/s on one core.

--compare REF measures another commit's filters beside this checkout's, in ONE run: it
checks REF out into a temporary git worktree (removed afterwards), then, round after round,
runs the same harness (this file) on each checkout in a subprocess: REF with one worker, this
checkout with one worker and with two. It prints the CPU cost per draft of each (the least
over the rounds: the least disturbed by other load), the ratio of this checkout's one-worker
cost to REF's (the issue's bar: within 15%), the wall-clock throughput of two workers over
one (bar: >= 1.7x on 2 cores), and the CPU all processes spent per draft with two workers
(what the speed-up on an idle machine is bounded by). It prints the machine reference and
the load average, because a loaded machine cannot show a 2-worker speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # the code measured: this checkout, or --code-root's
    _root = sys.argv[sys.argv.index("--code-root") + 1] if "--code-root" in sys.argv else str(ROOT)
    sys.path.insert(0, _root)

from curation.core.config import FilterConfig  # noqa: E402
from curation.core.labels import ClassInfo, Registry  # noqa: E402
from curation.filter.filters import build_context, judge  # noqa: E402
from curation.filter.rationale import parse  # noqa: E402
from curation.filter.stage import Funnel  # noqa: E402
from curation.ingest.split import fine_r1_registry  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "fine_r1_stage1_sample.json"

CROWNS = ["Crimson", "Azure", "Golden", "Slate", "Olive", "Ivory"]
BREASTS = ["Streaked", "Spotted", "Plain", "Barred", "Scaled"]
KINDS = ["Warbler", "Finch", "Sparrow", "Tanager"]
TRAITS = ["a {c} crown", "a {b} breast", "white wing bars", "a short conical beak",
          "a notched tail", "a pale eye ring", "dark legs", "an olive back"]
OBS = ["The bird perches on a thin branch.", "Light falls from the left.",
       "The background is a blurred green.", "Feathers on the nape are slightly raised.",
       "The tail is partly hidden by a leaf.", "The image is slightly overexposed."]


def synthetic_registry() -> Registry:
    classes = [ClassInfo(i, f"{c}-crowned {b} {k}", "synthbirds", "bird")
               for i, (c, b, k) in enumerate((c, b, k) for k in KINDS for c in CROWNS for b in BREASTS)]
    return Registry(classes)


def synthetic_draft(rng: random.Random, classes: list[ClassInfo], n: int) -> dict:
    gold = rng.choice(classes)
    crown, breast = gold.name.split("-crowned ")[0], gold.name.split()[1]
    others = rng.sample([c for c in classes if c != gold], rng.randint(1, 4))
    traits = ", ".join(t.format(c=crown.lower(), b=breast.lower()) for t in rng.sample(TRAITS, 5))
    answer = gold.name if rng.random() > 0.1 else others[0].name
    visual = f"The bird shows {traits}. {rng.choice(OBS)} Observation {n}."
    if rng.random() < 0.08:
        visual += f" As described, it is a {gold.name}."
    cands = "\n".join(f"{i + 1}. {c.name}" for i, c in enumerate([gold, *others]))
    text = (f"<think>Visual analysis:\n{visual}\n\nCandidate sub-categories:\n{cands}\n\n"
            f"Comparison:\nOnly the {gold.name} combines a {crown.lower()} crown with a "
            f"{breast.lower()} breast; {others[0].name} differs in "
            f"{'crown' if others[0].name.split('-')[0] != crown else 'breast'} pattern.\n\n"
            f"The prediction is: {answer}</think>\n<answer>{answer}</answer>")
    finish = "stop"
    if rng.random() < 0.05:
        text, finish = text[: rng.randint(100, len(text) - 20)], "length"
    return {"response": text, "finish_reason": finish, "label": gold.name, "dataset": "synthbirds",
            "super_category": "bird", "item_id": f"s{rng.randrange(20000)}", "draft_id": f"s#{n}"}


def real_drafts() -> list[dict]:
    registry, _ = fine_r1_registry()
    rows = json.loads(FIXTURE.read_text(encoding="utf-8"))
    out = []
    for row in rows:
        text = row["messages"][2]["content"]
        answer = parse(text).answer or ""
        info = next((c for d in registry.datasets if (c := registry.resolve(answer, d))), None)
        if info is not None:
            out.append({"response": text, "label": info.name, "dataset": info.dataset,
                        "super_category": info.super_category})
    return out


def real_draft(rng: random.Random, base: list[dict], registry: Registry, n: int) -> dict:
    row = dict(rng.choice(base))
    text = row["response"].replace("\n\n", f"\n\n{rng.choice(OBS)} (view {n})\n\n", 1)
    finish = "stop"
    roll = rng.random()
    if roll < 0.1:  # another answer of the same dataset
        other = rng.choice([c for c in registry if c.dataset == row["dataset"]])
        head, _, _ = text.rpartition("<answer>")
        text = f"{head}<answer>{other.name}</answer>"
    elif roll < 0.15:
        text, finish = text[: rng.randint(200, len(text) - 50)], "length"
    return {**row, "response": text, "finish_reason": finish, "item_id": f"r{rng.randrange(20000)}",
            "draft_id": f"r#{n}"}


def make_drafts(n: int, real_share: float, seed: int) -> tuple[Registry, dict, list[dict]]:
    """(registry, splits, drafts): the same drafts for the same arguments, in any checkout."""
    rng = random.Random(seed)
    fr1, lists = fine_r1_registry()
    synth = synthetic_registry()
    registry = Registry([*fr1, *synth])
    splits = {**lists, "synthbirds": {"unseen": [c.name for c in synth][::5]}}
    base = real_drafts()
    classes = list(synth)
    drafts = [real_draft(rng, base, fr1, i) if rng.random() < real_share
              else synthetic_draft(rng, classes, i) for i in range(n)]
    return registry, splits, drafts


def machine_reference() -> float:
    """How fast this core runs plain Python (us for sum(range(1000))): figures from
    different machines compare only through it (the same code measured ~2.5x apart)."""
    return 1e6 * min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000


def measure(n: int, real_share: float, seed: int, workers: int) -> dict:
    """Judge the drafts once: CPU per draft (this process, and its workers), wall drafts/s."""
    registry, splits, drafts = make_drafts(n, real_share, seed)
    ctx = build_context(registry, FilterConfig(), splits)
    for dataset in registry.datasets:  # build the per-dataset name indexes outside the timing
        ctx.mentions(dataset)
    funnel = Funnel(ctx.enabled)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0, w0 = time.process_time(), time.perf_counter()
    if workers == 1:  # the API every checkout has
        for d in drafts:
            funnel.add(d, judge(d, ctx))
    else:
        from curation.filter.parallel import judge_all

        for d, v in zip(drafts, judge_all(drafts, ctx, workers, min_per_worker=1), strict=True):
            funnel.add(d, v)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (after.ru_utime + after.ru_stime) - (children.ru_utime + children.ru_stime)
    return {"drafts": n, "workers": workers, "cpu_us": 1e6 * cpu / n,
            "all_cpu_us": 1e6 * (cpu + child_cpu) / n, "wall_per_s": n / wall,
            "accepted": funnel.as_dict()["accepted"], "reference_us": machine_reference()}


def _run(code_root: Path, args: argparse.Namespace, workers: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--measure", "--code-root", str(code_root),
               "--drafts", str(args.drafts), "--real-share", str(args.real_share), "--seed",
               str(args.seed), "--workers", str(workers)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(args: argparse.Namespace) -> None:
    """--compare REF: REF's filters beside this checkout's, side by side (module docstring)."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.compare],
                            capture_output=True, text=True, check=True).stdout.strip()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="finecot-bench-") as tmp:
        other = Path(tmp) / "checkout"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(other), commit],
                       capture_output=True, text=True, check=True)
        try:
            runs: dict[str, list[dict]] = {"ref": [], "one": [], "two": []}
            for i in range(args.rounds):
                runs["ref"].append(_run(other, args, 1))
                runs["one"].append(_run(ROOT, args, 1))
                runs["two"].append(_run(ROOT, args, 2))
                print(f"round {i + 1}/{args.rounds}: CPU us/draft {commit} "
                      f"{runs['ref'][-1]['cpu_us']:.0f}, {head} {runs['one'][-1]['cpu_us']:.0f}; "
                      f"wall drafts/s {head} 1 worker {runs['one'][-1]['wall_per_s']:.0f}, "
                      f"2 workers {runs['two'][-1]['wall_per_s']:.0f}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)],
                           capture_output=True, text=True, check=False)
    ref_cpu = min(r["cpu_us"] for r in runs["ref"])
    one_cpu = min(r["cpu_us"] for r in runs["one"])
    two_all = min(r["all_cpu_us"] for r in runs["two"])
    one_wall = max(r["wall_per_s"] for r in runs["one"])
    two_wall = max(r["wall_per_s"] for r in runs["two"])
    speedup = [t["wall_per_s"] / o["wall_per_s"] for o, t in zip(runs["one"], runs["two"], strict=True)]
    reference = statistics.median(r["reference_us"] for rs in runs.values() for r in rs)
    print(f"\n{args.drafts} drafts, {args.real_share:.0%} real, {args.rounds} rounds; "
          f"{os.cpu_count()} cores, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"machine reference: sum(range(1000)) takes {reference:.1f} us (median over the runs)")
    print(f"one worker, CPU per draft: {commit} {ref_cpu:.0f} us, {head} {one_cpu:.0f} us -> "
          f"ratio {one_cpu / ref_cpu:.3f} (bar: <= 1.15)")
    print(f"two workers, wall throughput: {two_wall:.0f} vs one worker {one_wall:.0f} drafts/s -> "
          f"{two_wall / one_wall:.2f}x best, per round {', '.join(f'{x:.2f}' for x in speedup)} "
          f"(bar: >= 1.7x on 2 idle cores)")
    print(f"two workers, CPU of all processes per draft: {two_all:.0f} us -> at most "
          f"{2 * one_cpu / two_all:.2f}x on 2 idle cores")
    print(f"accepted: {commit} {runs['ref'][0]['accepted']}, {head} {runs['one'][0]['accepted']} "
          f"(one worker) = {runs['two'][0]['accepted']} (two workers)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drafts", type=int, default=50_000)
    parser.add_argument("--real-share", type=float, default=0.5,
                        help="share of drafts varied from real teacher output (the rest synthetic)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes to judge over")
    parser.add_argument("--compare", metavar="REF", help="measure commit REF beside this checkout")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the --compare runs")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)  # one JSON line
    parser.add_argument("--code-root", help=argparse.SUPPRESS)  # (read before the imports above)
    args = parser.parse_args()
    if args.compare:
        compare(args)
        return
    if args.measure:
        print(json.dumps(measure(args.drafts, args.real_share, args.seed, args.workers)))
        return

    registry, splits, drafts = make_drafts(args.drafts, args.real_share, args.seed)
    chars = sum(len(d["response"]) for d in drafts) / len(drafts)
    print(f"{len(drafts)} drafts, {args.real_share:.0%} from real rationales, "
          f"{chars:.0f} characters on average")

    c0, w0 = time.process_time(), time.perf_counter()
    for d in drafts:
        parse(d["response"])
    parse_cpu, parse_wall = time.process_time() - c0, time.perf_counter() - w0
    n = len(drafts)
    print(f"parse only:        {n / parse_cpu:8.0f} drafts/s CPU  ({n / parse_wall:8.0f} wall)")
    result = measure(args.drafts, args.real_share, args.seed, args.workers)
    cpu = result["all_cpu_us"]  # (with workers: this process and theirs)
    print(f"parse + filters:   {1e6 / cpu:8.0f} drafts/s CPU  ({result['wall_per_s']:8.0f} wall), "
          f"{cpu:.0f} us CPU per draft, {args.workers} worker(s)")
    print(f"accepted {result['accepted']} of {n}")
    print(f"machine reference: sum(range(1000)) takes {result['reference_us']:.1f} us")
    target = 5000
    verdict = "meets" if 1e6 / cpu >= target else "below"
    print(f"target >= {target} drafts/s on one core: {verdict} ({1e6 / cpu:.0f} drafts/s CPU)")


if __name__ == "__main__":
    main()
