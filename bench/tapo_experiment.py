"""Experiment: tiny model on the synthetic world, SFT vs SFT+TAPO vs SFT+plain GRPO (same budget).

1. an exported-layout dataset from the synthetic world (tests/train_fixtures.py): seen classes
   with SFT rationales and TAPO triplets, unseen classes only in the test split;
2. a tiny Qwen2.5-VL, CoT SFT on the seen classes;
3. from the same SFT checkpoint: TAPO (n anchor + n positive rollouts, negative-image term)
   and plain GRPO (TRL's stock trainer, 2n anchor rollouts), same steps, rollouts per step,
   learning rate, lengths and seeds; `--variants tapo-no-terms` adds TAPO without its
   negative-image and entropy terms (an ablation);
4. greedy decoding on the held-out test images, accuracy with THE matcher
   (curation.core.labels.match: the <answer> must name exactly the gold class), seen and unseen
   separately, plus the format rate. Repeated over --seeds (the RL runs' seeds).

One prompt (system + question + format instruction) serves SFT, RL and evaluation: a
0.3M-parameter model cannot bridge the exported configs' different prompts (see the
fixture's `uniform_prompt`).

Prints a table; docs/tapo_experiment.md records a run. Steps are cached in --workdir.

    .venv/bin/python bench/tapo_experiment.py --workdir runs/tapo-exp60 --rl-steps 60 \
        --seeds 0 1 2 3 --variants grpo tapo tapo-no-terms
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import torch  # noqa: E402
from train_fixtures import build_dataset  # noqa: E402
from transformers import AutoModelForImageTextToText, PrinterCallback  # noqa: E402

from curation.export.stage import FINE_R1_SYSTEM  # noqa: E402
from train.data import load_config, text_corpus  # noqa: E402
from train.recipe import load_train_config  # noqa: E402
from train.rewards import extract_answer, format_reward, make_accuracy_reward, registry_from_names  # noqa: E402
from train.sft import SFTRecipe  # noqa: E402
from train.sft import build_trainer as build_sft  # noqa: E402
from train.tapo import TAPOConfig  # noqa: E402
from train.tapo import build_trainer as build_rl  # noqa: E402
from train.tiny import build_tiny_model, load_processor  # noqa: E402

CPU = ["use_cpu=true", "bf16=false", "dtype=float32", "disable_tqdm=true"]
# RL runs from the SFT checkpoint: name -> overrides of the tapo_tiny_cpu recipe.
VARIANTS = {
    "grpo": [],  # TRL's stock GRPOTrainer (build_rl(plain_grpo=True))
    "tapo": [],  # the paper's coefficients
    # TAPO's grouping (anchor + positive rollouts) and dynamic sampling, without the
    # negative-image (gamma) and entropy (eta) terms: what the two terms add on their own.
    "tapo-no-terms": ["tapo_gamma=0", "tapo_eta=0"],
}


def evaluate(model_dir: Path, data: Path, max_new_tokens: int, batch: int = 16) -> dict[str, float]:
    """Greedy answers on eval_open; accuracy (matcher) per class_split and the format rate."""
    rows = load_config(data, "eval_open", "test")
    registry = registry_from_names(rows["answer"], dataset="synthetic")
    accuracy = make_accuracy_reward(registry)
    processor = load_processor(model_dir)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(model_dir).eval()
    texts, golds, splits, outputs = [], [], [], []
    for row in rows:
        messages = [
            {"role": "system", "content": [{"type": "text", "text": FINE_R1_SYSTEM}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": row["question"]}]},
        ]
        texts.append(processor.apply_chat_template(messages, add_generation_prompt=True))
        golds.append(row["answer"])
        splits.append(row["class_split"])
    for start in range(0, len(rows), batch):
        images = [r["images"] for r in rows.select(range(start, min(start + batch, len(rows))))]
        inputs = processor(images=images, text=texts[start:start + batch], return_tensors="pt", padding=True)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        outputs += processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    acc = accuracy(None, outputs, answer=golds, dataset=["synthetic"] * len(golds))
    fmt = format_reward(None, outputs)
    result = {}
    for split in ("seen", "unseen"):
        picked = [a for a, s in zip(acc, splits, strict=True) if s == split]
        if picked:
            result[f"acc_{split}"] = sum(picked) / len(picked)
    result["format"] = sum(fmt) / len(fmt)
    result["answered"] = sum(extract_answer(o) is not None for o in outputs) / len(outputs)
    return result


def train_sft(root: Path, data: Path, tiny: Path, args: argparse.Namespace) -> Path:
    out = root / "sft"
    if (out / "model.safetensors").exists():
        return out
    cfg = load_train_config(SFTRecipe, "sft_tiny_cpu", [
        f"model_name_or_path={tiny}", f"dataset={data}", f"output_dir={out}",
        f"num_train_epochs={args.sft_epochs}", f"learning_rate={args.sft_lr}", "logging_steps=20",
        "rl_prompt=false", *CPU,  # the fixture's prompts are uniform already (system prompt kept)
    ])
    trainer = build_sft(cfg)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    trainer.save_model(str(out))
    trainer.processing_class.save_pretrained(str(out))
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    print(f"SFT: {trainer.state.global_step} steps, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    return out


def train_rl(kind: str, seed: int, root: Path, data: Path, sft: Path, args: argparse.Namespace) -> Path:
    out = root / f"{kind}-seed{seed}"
    if (out / "model.safetensors").exists():
        return out
    cfg = load_train_config(TAPOConfig, "tapo_tiny_cpu", [
        f"model_name_or_path={sft}", f"dataset={data}", f"output_dir={out}", f"seed={seed}",
        f"max_steps={args.rl_steps}", f"learning_rate={args.rl_lr}", f"num_generations={args.group}",
        f"per_device_train_batch_size={args.batch}", f"max_completion_length={args.length}",
        "logging_steps=1", *CPU, *VARIANTS[kind],
    ])
    trainer = build_rl(cfg, plain_grpo=(kind == "grpo"))
    trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    trainer.train()
    trainer.save_model(str(out))
    trainer.processing_class.save_pretrained(str(out))
    history = [e for e in trainer.state.log_history if "reward" in e]
    rewards = [e["reward"] for e in history]
    third = max(1, len(rewards) // 3)
    kept = [e.get("tapo/kept_fraction") for e in history if "tapo/kept_fraction" in e]
    print(f"{kind} seed {seed}: {len(history)} steps in {time.perf_counter() - start:.0f} s, "
          f"train reward first third {statistics.mean(rewards[:third]):.3f} -> last third "
          f"{statistics.mean(rewards[-third:]):.3f}" + (f", kept groups {statistics.mean(kept):.2f}" if kept else ""))
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path("runs/tapo-exp"))
    parser.add_argument("--classes", type=int, default=9)
    parser.add_argument("--unseen", type=int, default=3, help="classes kept out of training")
    parser.add_argument("--per-class", type=int, default=8)
    parser.add_argument("--test-per-class", type=int, default=6)
    parser.add_argument("--image-pixels", type=int, default=56 * 56)
    parser.add_argument("--hidden", type=int, default=96)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--sft-epochs", type=int, default=25)
    parser.add_argument("--sft-lr", type=float, default=2e-3)
    parser.add_argument("--rl-steps", type=int, default=30)
    parser.add_argument("--rl-lr", type=float, default=2e-4)
    parser.add_argument("--group", type=int, default=8, help="rollouts per prompt (TAPO: 4 anchor + 4 positive)")
    parser.add_argument("--batch", type=int, default=16, help="rollouts per step")
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["grpo", "tapo"], choices=list(VARIANTS),
                        help="RL runs from the SFT checkpoint, each over --seeds")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    root = args.workdir
    data = root / "dataset"
    if not (data / "data").exists():
        build_dataset(data, classes=args.classes, per_class=args.per_class, unseen=args.unseen,
                      test_per_class=args.test_per_class, size=56, uniform_prompt=True)
    tiny = root / "tiny"
    if not (tiny / "model.safetensors").exists():
        build_tiny_model(tiny, text_corpus(data), hidden=args.hidden, layers=args.layers,
                         image_pixels=args.image_pixels)
    sft = train_sft(root, data, tiny, args)
    results: dict[str, list[dict[str, float]]] = {"SFT": [evaluate(sft, data, args.length)]}
    for seed in args.seeds:
        for kind in args.variants:
            model = train_rl(kind, seed, root, data, sft, args)
            results.setdefault(f"SFT+{kind.upper()}", []).append(evaluate(model, data, args.length))

    print(f"\n{'model':18} {'runs':>4} {'acc seen':>9} {'acc unseen':>11} {'format':>7}")
    for name, runs in results.items():
        def mean(key: str, runs=runs) -> str:
            values = [r[key] for r in runs if key in r]
            return f"{statistics.mean(values):.3f}" if values else "-"
        print(f"{name:18} {len(runs):4d} {mean('acc_seen'):>9} {mean('acc_unseen'):>11} {mean('format'):>7}")
    (root / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
