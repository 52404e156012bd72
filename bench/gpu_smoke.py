"""GPU check in one short run: SFT and TAPO steps of a Qwen2.5-VL at the real 3B configuration.

A randomly initialised model at Qwen2.5-VL-3B-Instruct's configuration (no download; bf16 on
the GPU) runs a few steps of each stage through finecot's own code (train/sft.py's recipe,
train/tapo.py's TAPOTrainer with refill) on synthetic images at the recipes' largest pixel
bound, with the recipes' lengths: an SFT answer of about a released Stage-1 rationale's length
(~800 tokens) and TAPO rollouts of `max_completion_length` 2048 (a random model never stops
early). Generation is TRL's HF path: vLLM is not assumed. Prints, per stage: seconds per step,
tokens per second, peak GPU memory; for TAPO also generation and the negative-image pass as
shares of the time, and the refill rounds (the first generation is made to need one refill).

Needs torch, transformers, accelerate, peft, pyarrow, plus trl and datasets: on a GPU machine
without network, install the wheels that `bench/gpu_wheels.sh` downloads (README, "The GPU
check"). `--device cpu --small` runs the same code on a tiny model anywhere (a test runs it).

    python bench/gpu_smoke.py --json $OUT/gpu_smoke.json     # one GPU; sized for one 10-minute run
    python bench/gpu_smoke.py --device cpu --small           # CPU, under a minute
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's packages, installed or not
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import torch  # noqa: E402
from transformers import (  # noqa: E402
    PrinterCallback,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    TrainerCallback,
)

SFT_ANSWER_TOKENS = 800  # a released Stage-1 rationale: median 3,475 characters (shared/fine-r1/stage1)
QUESTION = "What is the specific sub-category of the bird in this image?"


def qwen2_5_vl_3b_config(ids: dict[str, int]) -> Qwen2_5_VLConfig:
    """Qwen/Qwen2.5-VL-3B-Instruct's published config.json (3.75 B parameters), with the special
    token ids of the tokenizer trained here (`ids`: token -> id)."""
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008,
            "num_hidden_layers": 36, "num_attention_heads": 16, "num_key_value_heads": 2,
            "max_position_embeddings": 128000, "rms_norm_eps": 1e-6, "hidden_act": "silu",
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
            "bos_token_id": ids["<|endoftext|>"], "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": 32, "hidden_size": 1280, "intermediate_size": 3420, "num_heads": 16,
            "in_chans": 3, "out_hidden_size": 2048, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "window_size": 112, "fullatt_block_indexes": [7, 15, 23, 31],
            "hidden_act": "silu", "tokens_per_second": 2,
        },
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


# -- synthetic data at the recipes' sizes ---------------------------------------------------------


def image_of(pixels: int, seed: int):
    """A noisy picture with a coloured disc, of about `pixels` pixels (4:3)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    height = int((pixels * 3 / 4) ** 0.5)
    width = pixels // height
    noise = torch.randint(60, 200, (height, width, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    image = Image.fromarray(noise.numpy(), "RGB")
    r = min(width, height) // 3
    ImageDraw.Draw(image).ellipse((width // 2 - r, height // 2 - r, width // 2 + r, height // 2 + r),
                                  fill=tuple(rng.randrange(256) for _ in range(3)))
    return image


def rationale(tokenizer, tokens: int, seed: int) -> str:
    """A think/answer text of about `tokens` tokens of `tokenizer`."""
    rng = random.Random(seed)
    words = ["crown", "wing", "bar", "eye", "ring", "breast", "streak", "tail", "bill", "olive", "rufous",
             "buff", "slate", "nape", "rump", "mantle", "covert", "edge", "pale", "dark"]
    text = ""
    while len(tokenizer(text)["input_ids"]) < tokens:
        text += " ".join(rng.choice(words) for _ in range(40)) + f" {rng.randrange(1000)}. "
    return f"<think>\n{text.strip()}\n</think>\n<answer>Class {seed % 4}</answer>"


def build_data(out: Path, tokenizer, rows: int, sft_pixels: int, rl_pixels: int, answer_tokens: int) -> Path:
    """An exported dataset folder (sft + rl configs) as `finecot export` lays it out."""
    import datasets

    from curation.export.stage import FINE_R1_SYSTEM, IMAGES, MESSAGES, RL_FEATURES, rl_prompt_text

    def cell(image) -> dict:
        import io

        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    sft, rl = [], []
    for i in range(rows):
        sft.append({"messages": [
            {"role": "system", "content": [{"type": "text", "text": FINE_R1_SYSTEM}]},
            {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": QUESTION}]},
            {"role": "assistant", "content": [{"type": "text", "text": rationale(tokenizer, answer_tokens, i)}]},
        ], "images": [cell(image_of(sft_pixels, i))]})
        anchor, positive, negative = (cell(image_of(rl_pixels, 3 * i + k)) for k in range(3))
        rl.append({"id": str(i), "prompt": [{"role": "user", "content": [
            {"type": "image", "text": None}, {"type": "text", "text": rl_prompt_text(QUESTION)}]}],
            "answer": f"Class {i % 4}", "images": [anchor], "positive_images": [positive],
            "negative_images": [negative], "negative_label": f"Class {(i + 1) % 4}"})
    sft_features = datasets.Features({"messages": MESSAGES, "images": IMAGES})
    rl_features = datasets.Features({k: RL_FEATURES[k] for k in rl[0]})
    for config, data, features in (("sft", sft, sft_features), ("rl", rl, rl_features)):
        target = out / "data" / config / "train-00000-of-00001.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_list(data, features=features).to_parquet(str(target))
    return out


# -- timing ----------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class StepClock(TrainerCallback):
    """Wall seconds and trained tokens of each optimizer step (the GPU drained at both ends)."""

    def __init__(self, device: str, trainer=None):
        self.device, self.trainer = device, trainer
        self.seconds: list[float] = []
        self.tokens: list[int] = []
        self._start = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        sync(self.device)
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        sync(self.device)
        self.seconds.append(time.perf_counter() - self._start)
        trainer = self.trainer
        if trainer is not None and getattr(trainer, "_buffered_inputs", None):  # TAPO: this step's micro-batches
            steps = range(trainer._step - args.gradient_accumulation_steps, trainer._step)
            chunks = [trainer._buffered_inputs[k % args.steps_per_generation] for k in steps]
            self.tokens.append(sum(int(c["prompt_mask"].sum() + c["completion_mask"].sum()) for c in chunks))


def peak(device: str) -> str:
    if device == "cuda":
        return f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB GPU (max allocated)"
    import resource

    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB RSS (process peak)"


def summary(name: str, clock: StepClock, tokens: list[int], device: str) -> dict:
    later = clock.seconds[1:] or clock.seconds
    figures = {"steps": len(clock.seconds), "first_step_s": round(clock.seconds[0], 3),
               "median_step_s": round(statistics.median(later), 3),
               "tokens_per_s": round(sum(tokens) / sum(clock.seconds), 1), "peak": peak(device)}
    print(f"{name}: {figures['steps']} steps, median {figures['median_step_s']:.3f} s/step (first "
          f"{figures['first_step_s']:.3f} s), {figures['tokens_per_s']:.0f} tokens/s trained, peak {figures['peak']}")
    return figures


# -- the two stages --------------------------------------------------------------------------------


def run_sft(model, processor, data: Path, out: Path, args: argparse.Namespace) -> dict:
    from trl import SFTTrainer

    from train.data import load_sft
    from train.recipe import load_train_config
    from train.sft import SFTRecipe, freeze_vision

    recipe = load_train_config(SFTRecipe, "sft_qwen2_5_vl_3b", [
        f"dataset={data}", f"output_dir={out}", f"max_steps={args.sft_steps}", "per_device_train_batch_size=4",
        "gradient_accumulation_steps=1", "save_strategy=\"no\"", "logging_steps=1", "disable_tqdm=true",
        *settings(args.device),
    ])
    rows = load_sft(data)
    freeze_vision(model)  # the recipe's freeze_vision (build_trainer does it for a model path)
    trainer = SFTTrainer(model=model, args=recipe, train_dataset=rows, processing_class=processor)
    clock = StepClock(args.device)
    trainer.add_callback(clock)
    trainer.remove_callback(PrinterCallback)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    # tokens per row: what the collator feeds the model (image tokens included)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(recipe.per_device_train_batch_size)])
    per_step = int(batch["attention_mask"].sum())
    figures = summary("SFT ", clock, [per_step] * len(clock.seconds), args.device)
    figures["tokens_per_step"] = per_step
    for p in model.parameters():
        p.requires_grad_(True)
    del trainer
    return figures


def run_tapo(model, processor, data: Path, out: Path, args: argparse.Namespace) -> dict:
    from train.data import load_rl
    from train.recipe import load_train_config
    from train.rewards import format_reward
    from train.tapo import TAPOConfig, TAPOTrainer

    class TimedTAPO(TAPOTrainer):
        """TAPOTrainer timing its generation rounds and its negative-image pass."""

        seconds = {"generation": 0.0, "negative": 0.0}

        def _round(self, inputs):
            sync(args.device)
            start = time.perf_counter()
            result = super()._round(inputs)
            sync(args.device)
            self.seconds["generation"] += time.perf_counter() - start
            return result

        def _negative_logps(self, inputs, output):
            sync(args.device)
            start = time.perf_counter()
            result = super()._negative_logps(inputs, output)
            sync(args.device)
            self.seconds["negative"] += time.perf_counter() - start
            return result

    calls = {"n": 0}

    def accuracy(prompts, completions, completion_ids=None, **_):
        """Every group mixed, except the first group of the first round: one refill round."""
        calls["n"] += 1
        scores = [float(i % 2) for i in range(len(completions))]
        if calls["n"] == 1:
            scores[: cfg.num_generations] = [1.0] * cfg.num_generations
        return scores

    cfg = load_train_config(TAPOConfig, "tapo_qwen2_5_vl_3b", [
        f"dataset={data}", f"output_dir={out}", f"max_steps={args.tapo_steps}", "use_vllm=false",
        "prompts_per_update=1", f"rollout_batch_prompts={args.updates_per_generation}",
        f"per_device_train_batch_size={args.micro_batch}",
        f"max_completion_length={args.completion_tokens}", "save_strategy=\"no\"", "logging_steps=1",
        "disable_tqdm=true", *settings(args.device),
    ])
    cfg.generation_kwargs = {"min_new_tokens": args.completion_tokens}  # every rollout at full length
    trainer = TimedTAPO(model=model, reward_funcs=[accuracy, format_reward], args=cfg,
                        train_dataset=load_rl(data), processing_class=processor)
    clock = StepClock(args.device, trainer)
    trainer.add_callback(clock)
    trainer.remove_callback(PrinterCallback)
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    figures = summary("TAPO", clock, clock.tokens, args.device)
    total = sum(clock.seconds)
    rounds = [e["tapo/generation_rounds"] for e in trainer.state.log_history if "tapo/generation_rounds" in e]
    figures.update(
        generation_share=round(trainer.seconds["generation"] / total, 3),
        negative_pass_share=round(trainer.seconds["negative"] / total, 3),
        negative_pass_s=round(trainer.seconds["negative"], 3), generation_rounds=rounds,
        rollouts_per_generation=cfg.generation_batch_size, completion_tokens=args.completion_tokens,
    )
    print(f"TAPO: {cfg.generation_batch_size} rollouts x {args.completion_tokens} tokens per generation, "
          f"{args.updates_per_generation} update(s) per generation; generation rounds {rounds}; of the "
          f"{total:.1f} s: generation {100 * figures['generation_share']:.0f}%, negative-image pass "
          f"{100 * figures['negative_pass_share']:.1f}% ({figures['negative_pass_s']:.2f} s)")
    del trainer
    return figures


def pixel_bounds(processor, low: int, high: int) -> None:
    from transformers.image_utils import SizeDict

    processor.image_processor.size = SizeDict(shortest_edge=low, longest_edge=high)


def settings(device: str) -> list[str]:
    if device == "cpu":
        return ["use_cpu=true", "bf16=false", "dtype=float32", "gradient_checkpointing=false"]
    return ["use_cpu=false", "bf16=true", "dtype=bfloat16"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--small", action="store_true", help="a tiny model, small images, short texts (any CPU)")
    parser.add_argument("--sft-steps", type=int, default=4)
    parser.add_argument("--tapo-steps", type=int, default=3)
    parser.add_argument("--updates-per-generation", type=int, default=3, help="the recipes' 3 (384 / 128 prompts)")
    parser.add_argument("--micro-batch", type=int, default=10, help="TAPO rollouts per micro-step: the recipe's 10 "
                        "(one group); 5 halves the activation memory (2 micro-steps per update)")
    parser.add_argument("--completion-tokens", type=int, default=None, help="default: the recipe's 2048 (--small: 8)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device here: `--device cpu --small` checks the code path on a CPU")
    args.completion_tokens = args.completion_tokens or (8 if args.small else 2048)
    import datasets

    datasets.disable_progress_bars()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="gpu-smoke-"))

    from train.tiny import SPECIAL_TOKENS, FinecotQwenVLProcessor, build_tokenizer, tiny_config

    start = time.perf_counter()
    tokenizer = build_tokenizer([QUESTION, "crown wing bar eye ring breast streak tail bill olive"])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = tiny_config(tokenizer) if args.small else qwen2_5_vl_3b_config(ids)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    torch.manual_seed(0)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    with torch.device(args.device):
        model = Qwen2_5_VLForConditionalGeneration(config)
    torch.set_default_dtype(default_dtype)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from trl.chat_template_utils import qwen2_5_vl_chat_template

    processor = FinecotQwenVLProcessor(image_processor=Qwen2VLImageProcessorPil(patch_size=14, merge_size=2),
                                       tokenizer=tokenizer, chat_template=qwen2_5_vl_chat_template)
    # the recipes' largest images: SFT max_pixels 589,824 (768 x 768), TAPO max_pixels 1,003,520
    sft_pixels, rl_pixels = (56 * 56, 56 * 56) if args.small else (589824, 1003520)
    data = build_data(root / "dataset", tokenizer, rows=16, sft_pixels=sft_pixels, rl_pixels=rl_pixels,
                      answer_tokens=24 if args.small else SFT_ANSWER_TOKENS)
    # the recipes' pixel bounds (the processor applies them): SFT max 589,824, min the processor's 3,136
    pixel_bounds(processor, 3136, 3136 if args.small else 589824)
    n_params = sum(p.numel() for p in model.parameters())
    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"device {where}; Qwen2.5-VL {'tiny' if args.small else '3B configuration'}, random weights, "
          f"{n_params:,} parameters, {dtype}; setup {time.perf_counter() - start:.1f} s")
    figures = {"device": where, "parameters": n_params, "dtype": str(dtype)}
    figures["sft"] = run_sft(model, processor, data, root / "sft", args)
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()
    if not args.small:
        pixel_bounds(processor, 200704, 1003520)  # TAPO recipe: min_pixels, max_pixels
    figures["tapo"] = run_tapo(model, processor, data, root / "tapo", args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
