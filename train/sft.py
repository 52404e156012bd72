"""Stage 1: CoT supervised fine-tuning on the exported `sft` config, with TRL's SFTTrainer.

    finecot train sft --recipe sft_tiny_cpu --set model_name_or_path=runs/tiny --set dataset=runs/demo/dataset
    accelerate launch --config_file train/recipes/accelerate_zero3.yaml -m train.cli sft --recipe sft_qwen2_5_vl_3b

The paper's Stage 1 (Fine-R1, Qwen2.5-VL-3B/7B): lr 5e-6 with a cosine schedule, 10 epochs,
global batch 64, bf16, DeepSpeed ZeRO-3, loss on the assistant turn only, vision tower
frozen. Those are the defaults of `SFTRecipe` (batch and precision are hardware settings:
see the recipes). LoRA (peft) is optional.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from trl import SFTConfig, SFTTrainer

from train.data import load_sft, text_length
from train.tiny import load_processor, save_processor

log = logging.getLogger(__name__)


@dataclass
class SFTRecipe(SFTConfig):
    """TRL's SFTConfig with the paper's Stage-1 defaults and finecot's model/data fields."""

    model_name_or_path: str = field(default="Qwen/Qwen2.5-VL-3B-Instruct", metadata={"help": "model id or folder"})
    dataset: str = field(default="", metadata={"help": "exported dataset folder, run folder, shards or Hub id"})
    dataset_split: str = "train"
    freeze_vision: bool = field(default=True, metadata={"help": "freeze the vision tower and merger (the paper)"})
    lora: bool = False
    lora_r: int = 64
    lora_alpha: int = 128
    lora_dropout: float = 0.05
    min_pixels: int | None = field(default=None, metadata={"help": "processor image limit (pixels)"})
    max_pixels: int | None = field(default=None, metadata={"help": "processor image limit (pixels)"})
    dtype: str = field(default="auto", metadata={"help": "model weights dtype: auto, bfloat16, float32"})
    rl_prompt: bool = field(default=False, metadata={"help": "ask as the rl config does (no system "
                            "prompt, format instruction after the question): for tiny models"})
    # The release's Stage-1 values (LLaMA-Factory/cot_sft_3b.sh and cot_sft_7b.sh):
    learning_rate: float = 5e-6
    lr_scheduler_type: str = "cosine"
    num_train_epochs: float = 10.0
    weight_decay: float = 0.1
    warmup_steps: float = 6
    assistant_only_loss: bool = True
    max_length: int | None = None  # never cut image tokens or the answer
    full_logits_loss: bool = field(default=False, metadata={"help": "loss from the model's whole "
                                   "logits instead of TRL's chunked kernel: faster for tiny vocabularies "
                                   "on a CPU (one process only)"})


class FullLogitsSFTTrainer(SFTTrainer):
    """SFTTrainer with the loss computed from the whole logits, as transformers computes it.

    TRL scores tokens with a chunked kernel that never holds the [tokens, vocabulary] logits:
    right for a 150k-token vocabulary, but with the tiny model's ~800 tokens on a CPU it costs
    ~10% of every step (0.83 vs 0.93 s per step of 16 CoT rows; the same losses).
    The loss is the same: summed over the assistant tokens, divided by the batch's count of
    them. TRL's entropy and token-accuracy logs are not kept.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs["labels"][:, 1:]
        outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False)
        logits = outputs.logits[:, :-1].float()
        tokens = (labels != -100).sum() if num_items_in_batch is None else num_items_in_batch
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100, reduction="sum"
        ) / torch.as_tensor(tokens).clamp(min=1)
        return (loss, outputs) if return_outputs else loss


def lora_config(recipe: SFTRecipe):
    """LoRA on the language model's projections only (the vision tower stays as it is)."""
    from peft import LoraConfig

    return LoraConfig(
        r=recipe.lora_r,
        lora_alpha=recipe.lora_alpha,
        lora_dropout=recipe.lora_dropout,
        target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)",
        task_type="CAUSAL_LM",
    )


def freeze_vision(model: Any) -> int:
    """Stop gradients into the vision tower and its merger; return how many tensors froze."""
    frozen = 0
    for name, param in model.named_parameters():
        if ".visual." in f".{name}":
            param.requires_grad_(False)
            frozen += 1
    return frozen


def build_trainer(recipe: SFTRecipe, callbacks: list | None = None) -> SFTTrainer:
    """The SFTTrainer for `recipe` (model loaded, data loaded, vision frozen as asked)."""
    if not recipe.dataset:
        raise ValueError("no dataset: set `dataset` in the recipe or pass --dataset")
    if recipe.full_logits_loss and recipe.world_size > 1:
        # refused before any model loads: its loss is not averaged across processes
        raise ValueError(f"full_logits_loss is for one process (the tiny CPU runs), not "
                         f"{recipe.world_size}: drop it (--set full_logits_loss=false)")
    processor = load_processor(recipe.model_name_or_path, recipe.min_pixels, recipe.max_pixels)
    if recipe.model_init_kwargs is None:
        recipe.model_init_kwargs = {}
    recipe.model_init_kwargs.setdefault("dtype", recipe.dtype)
    rows = load_sft(recipe.dataset, recipe.dataset_split, recipe.rl_prompt)
    if recipe.train_sampling_strategy == "group_by_length" and recipe.length_column_name not in rows.column_names:
        # Conversational rows have no input_ids to measure until the collator runs: batch by text
        # length, a column the trainer must not drop as unused (load_sft kept only what it needs)
        rows = rows.add_column(recipe.length_column_name, [text_length(m) for m in rows["messages"]])
        recipe.remove_unused_columns = False
    trainer_class = FullLogitsSFTTrainer if recipe.full_logits_loss else SFTTrainer
    trainer = trainer_class(
        model=recipe.model_name_or_path,
        args=recipe,
        train_dataset=rows,
        processing_class=processor,
        peft_config=lora_config(recipe) if recipe.lora else None,
        callbacks=callbacks,
    )
    if recipe.freeze_vision and not recipe.lora:
        log.info("vision tower frozen (%d tensors)", freeze_vision(trainer.model))
    return trainer


def run_sft(recipe: SFTRecipe, callbacks: list | None = None) -> dict[str, Any]:
    """Train, save model + processor to `output_dir`; return losses and the output folder."""
    trainer = build_trainer(recipe, callbacks)
    result = trainer.train()
    trainer.save_model(recipe.output_dir)
    save_processor(trainer.processing_class, recipe.output_dir)
    trainer.state.save_to_json(str(Path(recipe.output_dir) / "trainer_state.json"))  # the loss log
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    log.info("SFT done: %d steps, loss %s -> %s, saved to %s", result.global_step,
             losses[:1], losses[-1:], recipe.output_dir)
    return {"output_dir": str(Path(recipe.output_dir)), "losses": losses, "steps": result.global_step}
