"""Benchmark: parse + every non-judge filter over many drafts, on one core.

    .venv/bin/python bench/filter_throughput.py              # 50,000 drafts
    .venv/bin/python bench/filter_throughput.py --drafts 5000 --real-share 1.0

Drafts are generated from two sources and mixed: real teacher rationales (the Fine-R1
sample in tests/fixtures, ~3,400 characters each, judged with the paper's class registry)
varied per draft (another answer, a leak phrase, a truncation, an extra observation so no
two texts are equal), and synthetic four-part rationales from templates over a 120-class
compositional bird registry (~900 characters). Prints drafts/s by wall clock and by process
CPU time (the fair figure on a shared machine), parse alone and parse + filters, and the
funnel. Target: >= 5,000 drafts/s on one core.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.core.config import FilterConfig  # noqa: E402
from curation.core.labels import ClassInfo, Registry  # noqa: E402
from curation.filter.filters import build_context, judge  # noqa: E402
from curation.filter.rationale import parse  # noqa: E402
from curation.filter.stage import Funnel  # noqa: E402
from curation.ingest.split import fine_r1_registry  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "fine_r1_stage1_sample.json"

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drafts", type=int, default=50_000)
    parser.add_argument("--real-share", type=float, default=0.5,
                        help="share of drafts varied from real teacher output (the rest synthetic)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    fr1, lists = fine_r1_registry()
    synth = synthetic_registry()
    registry = Registry([*fr1, *synth])
    splits = {**lists, "synthbirds": {"unseen": [c.name for c in synth][::5]}}
    base = real_drafts()
    classes = list(synth)
    drafts = [real_draft(rng, base, fr1, n) if rng.random() < args.real_share
              else synthetic_draft(rng, classes, n) for n in range(args.drafts)]
    chars = sum(len(d["response"]) for d in drafts) / len(drafts)
    print(f"{len(drafts)} drafts, {args.real_share:.0%} from real rationales, "
          f"{chars:.0f} characters on average")

    c0, w0 = time.process_time(), time.perf_counter()
    for d in drafts:
        parse(d["response"])
    parse_cpu, parse_wall = time.process_time() - c0, time.perf_counter() - w0

    ctx = build_context(registry, FilterConfig(), splits)
    for dataset in registry.datasets:  # build the per-dataset name indexes outside the timing
        ctx.mentions(dataset)
    funnel = Funnel(ctx.enabled)
    c0, w0 = time.process_time(), time.perf_counter()
    for d in drafts:
        funnel.add(d, judge(d, ctx))
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0

    n = len(drafts)
    print(f"parse only:        {n / parse_cpu:8.0f} drafts/s CPU  ({n / parse_wall:8.0f} wall)")
    print(f"parse + filters:   {n / cpu:8.0f} drafts/s CPU  ({n / wall:8.0f} wall), "
          f"{1e6 * cpu / n:.0f} us per draft, filters enabled: {', '.join(ctx.enabled)}")
    summary = funnel.as_dict()
    print(f"accepted {summary['accepted']} of {n}; reasons: "
          + ", ".join(f"{k} {v}" for k, v in list(summary["reasons"].items())[:10]))
    # How fast this core runs plain Python, so figures from different machines compare:
    # the same code measured ~2.5x apart on two sessions' machines (see README).
    reference = min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000
    print(f"machine reference: sum(range(1000)) takes {1e6 * reference:.1f} us")
    target = 5000
    verdict = "meets" if n / cpu >= target else "below"
    print(f"target >= {target} drafts/s on one core: {verdict} ({n / cpu:.0f} drafts/s CPU)")


if __name__ == "__main__":
    main()
