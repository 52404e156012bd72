"""GPU smoke run: a few SFT and TAPO steps of a tiny Qwen2.5-VL on CUDA; step times, peak memory.

The same code as the CPU path (train/sft.py, train/tapo.py): only the device settings
change (CUDA placement by accelerate, bf16 where the GPU supports it, vLLM generation with
--vllm when vLLM is installed). CI never runs this; `--device cpu` checks it runs anywhere.

    .venv/bin/python bench/gpu_smoke.py                       # CUDA
    .venv/bin/python bench/gpu_smoke.py --device cpu --hidden 64 --layers 2
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from tapo_overhead import StepTimer, device_settings, prepare  # bench/ is on sys.path
from transformers import PrinterCallback

from train.recipe import load_train_config
from train.sft import SFTRecipe
from train.sft import build_trainer as build_sft
from train.tapo import TAPOConfig
from train.tapo import build_trainer as build_tapo


def peak_memory(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB GPU (max allocated)"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB RSS (process peak)"


def run(trainer, device: str) -> tuple[list[float], str]:
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.remove_callback(PrinterCallback)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    return timer.wall, peak_memory(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--sft-steps", type=int, default=6)
    parser.add_argument("--tapo-steps", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--vllm", action="store_true", help="generate with vLLM (colocate), if installed")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: run with --device cpu to check the code path on a CPU")

    root = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-smoke-"))
    args.sft_epochs = 1
    start = time.perf_counter()
    data, sft_model = prepare(root, args)
    print(f"setup (dataset, tiny model, 1 SFT epoch): {time.perf_counter() - start:.1f} s")
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    settings = device_settings(args.device)
    print(f"device: {where}; settings: {' '.join(settings)}; model hidden {args.hidden} x {args.layers}")

    sft_cfg = load_train_config(SFTRecipe, "sft_tiny_cpu", [
        f"model_name_or_path={sft_model}", f"dataset={data}", f"output_dir={root / 'smoke-sft'}",
        f"max_steps={args.sft_steps}", "disable_tqdm=true", *settings,
    ])
    sft_trainer = build_sft(sft_cfg)
    times, memory = run(sft_trainer, args.device)
    sft_trainer.save_model(str(root / "smoke-sft"))
    sft_trainer.processing_class.save_pretrained(str(root / "smoke-sft"))
    print(f"SFT : {len(times)} steps, median {statistics.median(times[1:] or times):.3f} s/step "
          f"(first {times[0]:.3f} s), peak {memory}")

    tapo_cfg = load_train_config(TAPOConfig, "tapo_tiny_cpu", [
        f"model_name_or_path={root / 'smoke-sft'}", f"dataset={data}", f"output_dir={root / 'smoke-tapo'}",
        f"max_steps={args.tapo_steps}", f"num_generations={args.group}",
        f"per_device_train_batch_size={args.batch}", f"max_completion_length={args.length}",
        "dynamic_sampling=false", "disable_tqdm=true", *settings,
        *(["use_vllm=true", "vllm_mode=colocate", "vllm_gpu_memory_utilization=0.3"] if args.vllm else []),
    ])
    times, memory = run(build_tapo(tapo_cfg), args.device)
    print(f"TAPO: {len(times)} steps, median {statistics.median(times[1:] or times):.3f} s/step "
          f"(first {times[0]:.3f} s), peak {memory}")


if __name__ == "__main__":
    main()
