"""The TAPO experiment's training and evaluation steps (bench/tapo_experiment.py runs them).

- `pretrain_vision` then `train_base`: the base model, once: the tiny Qwen2.5-VL
  (train/tiny.py) from scratch, its vision tower first trained to name the birds' attributes,
  then the model trained to describe birds (bench/tapo_data.py `base_set`) with that tower
  frozen, so that it sees before it is taught any class name, as the paper's Qwen2.5-VL did;
- `run_model`: one model of one seed, from the base: SFT on direct answers or CoT SFT on
  the rationales (`sft_tiny_cpu`, vision tower frozen), or, from that seed's CoT SFT
  checkpoint, an RL variant (`tapo_tiny_cpu`: TRL's stock GRPOTrainer, TAPOTrainer with the
  paper's coefficients, TAPOTrainer without its two extra terms), each with the same
  rollouts, steps and learning rate; then `finecot eval run` on it (open and closed world,
  seen and unseen, THE matcher), exactly as a user runs it. `run_seed` runs every model of
  a seed in turn.

Every step writes its folder under a temporary name and renames it when done, so a killed
run resumes with the same command and redoes only the step it was in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from transformers import PrinterCallback

from train.recipe import load_train_config
from train.sft import SFTRecipe
from train.sft import build_trainer as build_sft
from train.tapo import TAPOConfig
from train.tapo import build_trainer as build_rl
from train.tiny import save_processor

log = logging.getLogger(__name__)

CPU = ["use_cpu=true", "bf16=false", "dtype=float32", "disable_tqdm=true", "report_to=none"]
# RL variants from the CoT SFT checkpoint: name -> (plain GRPO?, overrides of tapo_tiny_cpu)
VARIANTS: dict[str, tuple[bool, list[str]]] = {
    "grpo": (True, []),  # TRL's stock GRPOTrainer, 2n anchor rollouts per group
    "tapo": (False, []),  # the paper's coefficients: gamma 0.01, eta 0.03
    # TAPO's grouping (n anchor + n positive rollouts) and dynamic sampling without the
    # negative-image (gamma) and entropy (eta) terms: what the two terms add on their own
    "tapo-no-terms": (False, ["tapo_gamma=0", "tapo_eta=0"]),
}
MODELS = ["sft-direct", "sft-cot", *VARIANTS]  # the table's rows, in order


@dataclass
class Settings:
    """Everything a seed needs (plain values: sent to worker processes)."""

    workdir: str
    cot: str  # the CoT training set (also the evaluation data)
    direct: str
    base: str  # the base model folder
    sft_epochs: float = 10.0
    sft_lr: float = 3e-3
    rl_steps: int = 20
    rl_lr: float = 1e-4
    group: int = 8  # rollouts per prompt (TAPO: half anchor, half positive)
    prompts_per_step: int = 2
    length: int = 192  # new tokens per rollout and per evaluation answer
    variants: list[str] = field(default_factory=lambda: list(VARIANTS))
    eval_batch: int = 64

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def done(folder: Path) -> bool:
    return (folder / "model.safetensors").exists()


def _finish(trainer, partial: Path, out: Path) -> None:
    """Save the model servable (train/tiny.py save_processor) and move it into place."""
    trainer.save_model(str(partial))
    save_processor(trainer.processing_class, partial)
    trainer.state.save_to_json(str(partial / "trainer_state.json"))
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)


def sft(model: str | Path, dataset: str | Path, out: Path, seed: int, overrides: list[str]) -> Path:
    """`sft_tiny_cpu` from `model` on `dataset`, saved to `out` (skipped when it exists)."""
    if done(out):
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cfg = load_train_config(SFTRecipe, "sft_tiny_cpu", [
        f"model_name_or_path={model}", f"dataset={dataset}", f"output_dir={partial}", f"seed={seed}",
        "logging_steps=10", *CPU, *overrides,
    ])
    trainer = build_sft(cfg)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    _finish(trainer, partial, out)
    return out


def pretrain_vision(tiny: Path, world: Path, out: Path, steps: int, lr: float = 1e-3,
                    batch: int = 16, per_class: int = 100, seed: int = 0) -> Path:
    """The vision tower (and merger) of `tiny`, trained to name every attribute of newly drawn
    birds of the world's classes (one linear head per attribute over the max of the image's
    tokens, heads dropped afterwards); the whole model saved to `out`.

    The stand-in for the image-text pretraining a real VLM's vision tower gets before it is
    joined to a language model. Through the caption loss alone the tower never learned the
    terns' bills (one word in ~45; still at chance after 2,500 steps, whatever the tower's
    width, depth or image size), while trained on them directly it reads them in a few hundred
    steps (docs/tapo_experiment.md). No class name is involved. The `per_class` images of
    every class are drawn once (drawing each batch anew cost half of the time).
    """
    if done(out):
        return out
    import numpy as np
    import torch
    from tapo_data import IMAGE_SIZE
    from transformers import AutoModelForImageTextToText

    from curation.synthetic.draw import render
    from curation.synthetic.world import ATTRIBUTES
    from train.tiny import load_processor

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(str(tiny))
    processor = load_processor(tiny)
    vision = model.model.visual
    classes = [c["attributes"] for c in json.loads((world / "classes.json").read_text(encoding="utf-8"))]
    rng = np.random.default_rng([seed, 2])  # a stream neither the world nor base_set draws from
    pool = [(attributes, render(attributes, rng, IMAGE_SIZE)) for attributes in classes for _ in range(per_class)]
    labels = {a: torch.tensor([values.index(attributes[a]) for attributes, _ in pool])
              for a, values in ATTRIBUTES.items()}
    width = model.config.text_config.hidden_size
    heads = torch.nn.ModuleDict({a: torch.nn.Linear(width, len(v)) for a, v in ATTRIBUTES.items()})
    optimiser = torch.optim.AdamW([*vision.parameters(), *heads.parameters()], lr=lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, lr, total_steps=steps, pct_start=0.05)
    vision.train()
    for step in range(steps):
        picked = rng.integers(0, len(pool), batch)
        encoded = processor.image_processor(images=[pool[i][1] for i in picked], return_tensors="pt")
        tokens = vision(encoded["pixel_values"], grid_thw=encoded["image_grid_thw"]).pooler_output
        pooled = tokens.reshape(batch, -1, width).max(dim=1).values
        loss = sum(torch.nn.functional.cross_entropy(heads[a](pooled), labels[a][picked]) for a in ATTRIBUTES)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 100 == 0:
            log.info("vision pretraining step %d: loss %.3f", step, loss.item())
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(str(partial))
    save_processor(processor, partial)
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    return out


def train_base(tiny: Path, base_set: Path, out: Path, steps: int, lr: float) -> Path:
    """The base model: `steps` of describing birds, from the tiny model whose vision tower
    `pretrain_vision` trained. The tower stays frozen: the caption loss would wear away the
    bills it learned (tern bills read right 0.87 with it frozen, 0.45 trained along)."""
    return sft(tiny, base_set, out, seed=0, overrides=[
        f"max_steps={steps}", f"learning_rate={lr}", "per_device_train_batch_size=16",
        "lr_scheduler_type=cosine", "warmup_steps=50", "rl_prompt=false", "freeze_vision=true", "bf16=true",
    ])


def rl(variant: str, seed: int, sft_dir: Path, out: Path, s: Settings) -> Path:
    """One RL variant from the CoT SFT checkpoint. Dynamic sampling generates no extra
    rounds (`max_generation_rounds=1`): every variant samples the same rollouts per step;
    TAPO masks the groups it does not keep."""
    if done(out):
        return out
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    plain, overrides = VARIANTS[variant]
    cfg = load_train_config(TAPOConfig, "tapo_tiny_cpu", [
        f"model_name_or_path={sft_dir}", f"dataset={s.cot}", f"output_dir={partial}", f"seed={seed}",
        f"max_steps={s.rl_steps}", f"learning_rate={s.rl_lr}", f"num_generations={s.group}",
        f"per_device_train_batch_size={s.group * s.prompts_per_step}",
        f"max_completion_length={s.length}", "max_generation_rounds=1", "logging_steps=1",
        *CPU, *overrides,
    ])
    trainer = build_rl(cfg, plain_grpo=plain)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    _finish(trainer, partial, out)
    return out


def evaluate(model: Path, data: str, out: Path, s: Settings) -> dict[str, float]:
    """`finecot eval run` on `model` (the command users run, in this process; its output goes
    to OUT/cli.log); returns the table's numbers from its metrics.json."""
    from curation.cli import app

    metrics_file = out / "metrics.json"
    if not metrics_file.exists():
        out.mkdir(parents=True, exist_ok=True)
        args = ["eval", "run", "--data", data, "--model", str(model), "--out", str(out),
                "--batch-size", str(s.eval_batch), "--max-new-tokens", str(s.length), "--device", "cpu"]
        with (out / "cli.log").open("w") as sink, contextlib.redirect_stdout(sink), \
                contextlib.redirect_stderr(sink):
            code = app(args, standalone_mode=False)
        if code or not metrics_file.exists():
            raise RuntimeError(f"finecot {' '.join(args)} failed (exit {code}); see {out / 'cli.log'}")
    return table_numbers(json.loads(metrics_file.read_text()))


def table_numbers(metrics: dict) -> dict[str, float]:
    """open/closed x seen/unseen accuracy and the open-world format rate of a metrics.json.

    >>> block = {"averages": {"accuracy": {"S-Avg": 0.9, "U-Avg": 0.1, "Avg": 0.5},
    ...                       "format": {"S-Avg": 1.0, "U-Avg": 1.0, "Avg": 1.0}}}
    >>> table_numbers({"results": {"open": block, "closed": block}})["open_unseen"]
    0.1
    """
    out = {}
    for mode in ("open", "closed"):
        averages = metrics["results"][mode]["averages"]
        out[f"{mode}_seen"] = averages["accuracy"]["S-Avg"]
        out[f"{mode}_unseen"] = averages["accuracy"]["U-Avg"]
    out["format"] = metrics["results"]["open"]["averages"]["format"]["Avg"]
    return out


def sft_overrides(s: Settings) -> list[str]:
    """The SFT settings both SFT models share (direct and CoT: same steps per epoch count)."""
    # The vision tower stays as the base trained it (as the paper freezes Qwen2.5-VL's): SFT
    # at this learning rate would otherwise wear away what the base learned to see. bf16
    # autocast (fp32 weights): 0.67 s per CoT step instead of 0.83 on this CPU.
    return [f"num_train_epochs={s.sft_epochs}", f"learning_rate={s.sft_lr}",
            "per_device_train_batch_size=16", "lr_scheduler_type=cosine", "warmup_steps=20",
            "freeze_vision=true", "bf16=true"]


def run_model(seed: int, name: str, s: Settings) -> dict[str, Any]:
    """Train one model of one seed (`sft-direct`, `sft-cot`, or an RL variant from that seed's
    `sft-cot`, which must exist) and evaluate it; {"seed", "model", "metrics", "seconds":
    {step: [wall, cpu]}}. Cached: WORKDIR/seedN/eval/NAME/ holds metrics.json and timing.json
    (a step found done is not re-timed)."""
    import torch

    torch.set_num_threads(1)  # one thread per run: several small runs beat one spinning pool
    root = Path(s.workdir) / f"seed{seed}"
    folder, out = root / name, root / "eval" / name
    out.mkdir(parents=True, exist_ok=True)
    timing_file = out / "timing.json"
    seconds: dict[str, list[float]] = json.loads(timing_file.read_text()) if timing_file.exists() else {}

    def timed(step: str, cached: bool, fn, *args):
        wall, cpu = time.perf_counter(), time.process_time()
        value = fn(*args)
        if not cached:
            seconds[step] = [round(time.perf_counter() - wall, 1), round(time.process_time() - cpu, 1)]
            timing_file.write_text(json.dumps(seconds, indent=1))
        return value

    if name in ("sft-direct", "sft-cot"):
        data = s.direct if name == "sft-direct" else s.cot
        timed(name, done(folder), sft, s.base, data, folder, seed, sft_overrides(s))
    elif name in VARIANTS:
        if not done(root / "sft-cot"):
            raise RuntimeError(f"{name} seed {seed}: train sft-cot of this seed first")
        timed(name, done(folder), rl, name, seed, root / "sft-cot", folder, s)
    else:
        raise ValueError(f"unknown model {name!r}; one of {MODELS}")
    metrics = timed(f"eval {name}", (out / "metrics.json").exists(), evaluate, folder, s.cot, out, s)
    return {"seed": seed, "model": name, "metrics": metrics, "seconds": seconds}


def run_seed(seed: int, s: Settings) -> dict[str, Any]:
    """Every model of one seed, one after the other: {"seed", "metrics": {model: numbers},
    "seconds": {step: [wall, cpu]}}."""
    metrics, seconds = {}, {}
    for name in ["sft-direct", "sft-cot", *s.variants]:
        done_model = run_model(seed, name, s)
        metrics[name] = done_model["metrics"]
        seconds.update(done_model["seconds"])
    return {"seed": seed, "metrics": metrics, "seconds": seconds}
