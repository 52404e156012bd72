"""Experiment: can a CPU-sized model tell TAPO from GRPO, and CoT SFT from direct answers?

One command, on the synthetic world (24 compositional classes: 18 seen, 6 unseen that are new
combinations of seen attribute values), with the same data and budget for every variant:

1. data (bench/tapo_data.py): the world through the curation pipeline with the scripted
   teacher; CoT SFT rows are its accepted rationales, direct rows the same without them;
2. the base model (bench/tapo_runs.py), once: a tiny Qwen2.5-VL (train/tiny.py) from scratch,
   its vision tower first trained to name the birds' attributes, then, with that tower
   frozen, the model trained to describe birds, so that it sees before it learns any class
   name;
3. per seed, from the base: SFT on direct answers vs CoT SFT; from the CoT SFT checkpoint:
   GRPO (TRL stock), TAPO (the paper's coefficients), TAPO without its two extra terms,
   same rollouts, steps and learning rate;
4. `finecot eval run` on every model: open and closed world, seen and unseen, THE matcher.

Prints the table of means with 95% confidence intervals over seeds and the paired differences
(* = the interval excludes 0); writes WORKDIR/results.json (every per-seed number, timings,
machine load) and WORKDIR/results.md. Every step is cached in WORKDIR: rerun the same command
to resume, or with more --seeds to add seeds (a rerun that changes any other setting is refused:
WORKDIR/settings.json records what its cached models were built with). docs/tapo_experiment.md records a run.

    .venv/bin/python bench/tapo_experiment.py --workdir runs/tapo-exp --seeds 0 1 2 3 4
    .venv/bin/python bench/tapo_experiment.py --quick --workdir runs/tapo-quick   # minutes
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tapo_stats  # noqa: E402
from tapo_data import base_set, build_cot, describe, training_sets  # noqa: E402
from tapo_runs import MODELS, VARIANTS, Settings, pretrain_vision, run_model, train_base  # noqa: E402

from train.data import text_corpus  # noqa: E402
from train.tiny import build_tiny_model  # noqa: E402

# --quick: ~5 minutes on 2 cores (the test suite runs it): a smaller world and base, one
# seed (its two SFT runs in parallel), two RL steps; the numbers are noise except that SFT
# beats chance, but the chain is the full one.
QUICK = {"world_per_class": 24, "test_per_class": 4, "base_per_class": 32, "vision_steps": 200,
         "base_steps": 500, "sft_epochs": 6.0, "rl_steps": 2, "prompts_per_step": 2, "seeds": [0]}
# What the table compares (a - b, paired by seed).
PAIRS = [("sft-cot", "sft-direct"), ("grpo", "sft-cot"), ("tapo", "sft-cot"),
         ("tapo-no-terms", "sft-cot"), ("tapo", "grpo"), ("tapo", "tapo-no-terms")]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", type=Path, default=Path("runs/tapo-exp"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--jobs", type=int, default=2, help="seeds trained at once (one CPU thread each)")
    p.add_argument("--quick", action="store_true", help="a small world, one seed, few steps (minutes)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    g = p.add_argument_group("data")
    g.add_argument("--world-per-class", type=int, default=72, help="images drawn per class")
    g.add_argument("--test-per-class", type=int, default=8, help="of which held out for evaluation")
    g.add_argument("--base-per-class", type=int, default=100, help="images per class describing birds")
    g = p.add_argument_group("model (train/tiny.py)")
    g.add_argument("--hidden", type=int, default=128)
    g.add_argument("--layers", type=int, default=4)
    g.add_argument("--vision-hidden", type=int, default=64)
    g.add_argument("--vision-depth", type=int, default=2)
    g.add_argument("--patch", type=int, default=14)
    g.add_argument("--image-size", type=int, default=140, help="pixels per side the processor resizes to")
    g = p.add_argument_group("training")
    g.add_argument("--vision-steps", type=int, default=1600,
                   help="steps of training the vision tower to name attributes, before the base")
    g.add_argument("--base-steps", type=int, default=2000)
    g.add_argument("--base-lr", type=float, default=1e-3)
    g.add_argument("--sft-epochs", type=float, default=10.0)
    g.add_argument("--sft-lr", type=float, default=3e-3)
    g.add_argument("--rl-steps", type=int, default=20)
    g.add_argument("--rl-lr", type=float, default=1e-4)
    g.add_argument("--group", type=int, default=8, help="rollouts per prompt (TAPO: half anchor, half positive)")
    g.add_argument("--prompts-per-step", type=int, default=2)
    g.add_argument("--length", type=int, default=192, help="new tokens per rollout and per answer")
    args = p.parse_args(argv)
    if args.quick:
        explicit = {a.dest for a in p._actions if any(f in (argv or sys.argv[1:]) for f in a.option_strings)}
        for key, value in QUICK.items():
            if key not in explicit:
                setattr(args, key, value)
    return args


def prepare(args: argparse.Namespace) -> Settings:
    """Data, tiny model and base model (each built once); the settings every seed shares."""
    root = args.workdir
    export = build_cot(root / "run", args.world_per_class, args.test_per_class)
    sets = training_sets(export, root / "data")
    base_data = base_set(root / "run" / "world", root / "data" / "base", args.base_per_class)
    tiny = root / "tiny"
    if not (tiny / "model.safetensors").exists():
        build_tiny_model(
            tiny, [*text_corpus(sets["cot"]), *text_corpus(base_data)], vocab_size=2000,
            hidden=args.hidden, layers=args.layers, vision_hidden=args.vision_hidden,
            vision_depth=args.vision_depth, patch=args.patch, window=args.image_size,
            image_pixels=args.image_size ** 2,
        )
    import torch

    torch.set_num_threads(os.cpu_count() or 1)  # the base trains alone: every core
    seeing = pretrain_vision(tiny, root / "run" / "world", root / "vision", args.vision_steps,
                             per_class=args.base_per_class)
    base = train_base(seeing, base_data, root / "base", args.base_steps, args.base_lr)
    return Settings(
        workdir=str(root), cot=str(sets["cot"]), direct=str(sets["direct"]), base=str(base),
        sft_epochs=args.sft_epochs, sft_lr=args.sft_lr, rl_steps=args.rl_steps, rl_lr=args.rl_lr,
        group=args.group, prompts_per_step=args.prompts_per_step, length=args.length,
        variants=args.variants,
    )


def _quiet() -> None:
    logging.basicConfig(level=logging.WARNING)
    for name in ("transformers", "datasets", "trl", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ["TQDM_DISABLE"] = "1"


def run_seeds(seeds: list[int], settings: Settings, jobs: int) -> dict[int, dict]:
    """Every model of every seed, `jobs` at a time in worker processes (one thread each).

    The unit of work is one model of one seed (train + `finecot eval`), not a whole seed: the
    RL variants of a seed start as soon as its CoT SFT is done, so the workers stay busy to
    the end whatever the number of seeds. CoT SFT models go first (the RL runs wait on them).
    """
    per_seed: dict[int, dict] = {s: {"seed": s, "metrics": {}, "seconds": {}} for s in seeds}

    def record(unit: dict) -> None:
        entry = per_seed[unit["seed"]]
        entry["metrics"][unit["model"]] = unit["metrics"]
        entry["seconds"].update(unit["seconds"])
        print(f"seed {unit['seed']} {unit['model']}: " + ", ".join(
            f"{k} {v:.3f}" for k, v in unit["metrics"].items()), flush=True)

    first = [(s, "sft-cot") for s in seeds] + [(s, "sft-direct") for s in seeds]
    if jobs <= 1:
        for seed, name in first + [(s, v) for s in seeds for v in settings.variants]:
            record(run_model(seed, name, settings))
        return per_seed
    with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"), initializer=_quiet) as pool:
        pending = {pool.submit(run_model, seed, name, settings): (seed, name) for seed, name in first}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                seed, name = pending.pop(future)
                record(future.result())
                if name == "sft-cot":
                    for variant in settings.variants:
                        pending[pool.submit(run_model, seed, variant, settings)] = (seed, variant)
    return per_seed


def report(args: argparse.Namespace, settings: Settings, results: dict[int, dict],
           timing: dict) -> str:
    per_model = {m: {s: r["metrics"][m] for s, r in results.items() if m in r["metrics"]} for m in MODELS}
    order = [m for m in MODELS if per_model[m]]
    diff_text, diff_rows = tapo_stats.differences(per_model, PAIRS)
    text = "\n\n".join([
        f"Seeds {sorted(results)}; means with 95% t-intervals over seeds (finecot eval accuracy, "
        "THE matcher; format = open-world answers in the think/answer format).",
        tapo_stats.table(per_model, order),
        "Paired differences (a - b, same seed); * = the 95% interval excludes 0.",
        diff_text,
    ])
    summaries = {m: {k: tapo_stats.summary([r[k] for r in per_model[m].values()])
                     for k in tapo_stats.METRICS} for m in order}
    (args.workdir / "results.json").write_text(json.dumps({
        "command": " ".join(sys.argv), "args": {k: str(v) if isinstance(v, Path) else v
                                                  for k, v in vars(args).items()},
        "settings": settings.to_json(), "data": describe(settings.cot), "timing": timing,
        "per_seed": {str(s): r for s, r in sorted(results.items())},
        "summary": summaries, "differences": diff_rows,
    }, indent=1))
    (args.workdir / "results.md").write_text(text + "\n")
    return text


# What the cached steps in WORKDIR were built with: seeds, jobs and variants may change
# between runs of one WORKDIR (they add work), nothing else may.
RESUMABLE = {"workdir", "seeds", "jobs", "variants", "quick"}


def check_workdir(args: argparse.Namespace) -> None:
    """Record the settings in WORKDIR/settings.json, or refuse a rerun that changes them:
    its cached data and models would be reused under settings they were not built with."""
    wanted = {k: v for k, v in sorted(vars(args).items()) if k not in RESUMABLE}
    path = args.workdir / "settings.json"
    if path.exists():
        built = json.loads(path.read_text())
        changed = {k: (built.get(k), v) for k, v in wanted.items() if built.get(k) != v}
        if changed:
            what = ", ".join(f"{k} {old} -> {new}" for k, (old, new) in changed.items())
            raise SystemExit(f"error: {args.workdir} was built with other settings ({what}); "
                             "its cached models would not match them. Use another --workdir, "
                             "or the settings it was built with.")
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    _quiet()
    check_workdir(args)
    start, cpu = time.perf_counter(), time.process_time()
    load_before = os.getloadavg()
    settings = prepare(args)
    prepared = time.perf_counter() - start
    print(f"data and base model ready in {prepared:.0f} s", flush=True)
    results = run_seeds(args.seeds, settings, args.jobs)
    timing = {
        "wall_s": round(time.perf_counter() - start, 1), "prepare_wall_s": round(prepared, 1),
        "main_process_cpu_s": round(time.process_time() - cpu, 1), "jobs": args.jobs,
        "cores": os.cpu_count(), "load_before": load_before, "load_after": os.getloadavg(),
    }
    print("\n" + report(args, settings, results, timing))
    print(f"\nwall {timing['wall_s']:.0f} s on {timing['cores']} cores, load average "
          f"{load_before[0]:.1f} before, {timing['load_after'][0]:.1f} / "
          f"{timing['load_after'][2]:.1f} (1 / 15 min) after; {args.workdir / 'results.json'}")


if __name__ == "__main__":
    main()
