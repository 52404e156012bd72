"""Benchmark: seconds per optimizer step of TAPO vs TRL's plain GRPO, side by side in one run.

Same tiny Qwen2.5-VL (after a short SFT), same data, same settings (DAPO clip-higher, dual
clip, group size, batch), and rollouts of one fixed length (min_new_tokens = max), so both
trainers generate exactly as many tokens. Rounds alternate GRPO and TAPO so that load from
other processes on the machine hits both alike. The first step of each run is warm-up and
is not counted. Prints figures; asserts nothing. TAPO's extra work: one no-grad forward
pass per rollout with the negative image, and the k3/entropy terms.

    .venv/bin/python bench/tapo_overhead.py --rounds 3 --steps 4
    .venv/bin/python bench/tapo_overhead.py --device cuda --hidden 256 --layers 4
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from train_fixtures import build_dataset  # noqa: E402
from transformers import PrinterCallback, TrainerCallback  # noqa: E402

from train.data import text_corpus  # noqa: E402
from train.recipe import load_train_config  # noqa: E402
from train.sft import SFTRecipe, run_sft  # noqa: E402
from train.tapo import TAPOConfig, build_trainer  # noqa: E402
from train.tiny import build_tiny_model  # noqa: E402


class StepTimer(TrainerCallback):
    """Time of each optimizer step (generation, scoring, forward, backward, update).

    Wall time, and this process's CPU time: on a CPU shared with other jobs the CPU time is
    the steadier figure (it does not count time spent waiting for a core).
    """

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self._start = (0.0, 0.0)

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = (time.perf_counter(), time.process_time())

    def on_step_end(self, args, state, control, **kwargs):
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])


def device_settings(device: str) -> list[str]:
    if device == "cpu":
        return ["use_cpu=true", "bf16=false", "dtype=float32"]
    import torch

    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return ["use_cpu=false", f"bf16={str(bf16).lower()}", f"dtype={'bfloat16' if bf16 else 'float32'}"]


def prepare(root: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    data = build_dataset(root / "dataset", classes=6, per_class=4, size=56)
    tiny = build_tiny_model(root / "tiny", text_corpus(data), hidden=args.hidden, layers=args.layers)
    sft = load_train_config(SFTRecipe, "sft_tiny_cpu", [
        f"model_name_or_path={tiny}", f"dataset={data}", f"output_dir={root / 'sft'}",
        f"num_train_epochs={args.sft_epochs}", "disable_tqdm=true", *device_settings(args.device),
    ])
    run_sft(sft)
    return data, root / "sft"


def time_run(plain: bool, data: Path, model: Path, out: Path, args: argparse.Namespace) -> StepTimer:
    cfg = load_train_config(TAPOConfig, "tapo_tiny_cpu", [
        f"model_name_or_path={model}", f"dataset={data}", f"output_dir={out}",
        f"max_steps={args.steps + 1}", f"num_generations={args.group}",
        f"per_device_train_batch_size={args.batch}", f"max_completion_length={args.length}",
        "dynamic_sampling=false", "format_guard=off", "disable_tqdm=true", "logging_steps=1000",
        *device_settings(args.device),
    ])
    cfg.generation_kwargs = {"min_new_tokens": args.length}
    timer = StepTimer()
    trainer = build_trainer(cfg, plain_grpo=plain, callbacks=[timer])
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    timer.wall, timer.cpu = timer.wall[1:], timer.cpu[1:]  # the first step warms up
    return timer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="GRPO/TAPO run pairs, alternated")
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps per run (+1 warm-up)")
    parser.add_argument("--group", type=int, default=4, help="rollouts per prompt (TAPO: half anchor, half positive)")
    parser.add_argument("--batch", type=int, default=8, help="rollouts per optimizer step")
    parser.add_argument("--length", type=int, default=32, help="completion tokens per rollout (fixed)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--sft-epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared CPU)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.device == "cpu":
        import torch

        torch.set_num_threads(args.threads)

    root = args.workdir or Path(tempfile.mkdtemp(prefix="tapo-bench-"))
    data, model = prepare(root, args)
    wall: dict[str, list[float]] = {"GRPO": [], "TAPO": []}
    cpu: dict[str, list[float]] = {"GRPO": [], "TAPO": []}
    for r in range(args.rounds):
        for name in ("GRPO", "TAPO"):
            timer = time_run(name == "GRPO", data, model, root / f"{name}-{r}", args)
            wall[name] += timer.wall
            cpu[name] += timer.cpu
    print(f"device {args.device}; tiny Qwen2.5-VL hidden {args.hidden} x {args.layers} layers; "
          f"{args.batch} rollouts/step (groups of {args.group}), {args.length} tokens each; "
          f"{args.rounds} rounds x {args.steps} timed steps; {args.threads} CPU thread(s)")
    print(f"{'trainer':8} {'clock':6} {'median s/step':>14} {'mean':>8} {'min':>8} {'max':>8}")
    for clock, table in (("wall", wall), ("cpu", cpu)):
        for name, values in table.items():
            print(f"{name:8} {clock:6} {statistics.median(values):14.3f} {statistics.mean(values):8.3f} "
                  f"{min(values):8.3f} {max(values):8.3f}")
    for clock, table in (("wall", wall), ("cpu", cpu)):
        ratio = statistics.median(table["TAPO"]) / statistics.median(table["GRPO"])
        best = min(table["TAPO"]) / min(table["GRPO"])
        print(f"TAPO / GRPO ({clock}): median {ratio:.2f}, best-of-run {best:.2f}   (target <= 1.6)")

if __name__ == "__main__":
    main()
