"""Stage 2: TAPO (Triplet-Augmented Policy Optimization, Fine-R1) as a TRL GRPOTrainer subclass.

    finecot train tapo --recipe tapo_tiny_cpu --set model_name_or_path=runs/tiny-sft --set dataset=runs/demo/dataset
    accelerate launch --config_file train/recipes/accelerate_zero3.yaml -m train.cli tapo --recipe tapo_qwen2_5_vl_3b

Reads the exported `rl` config: prompt, answer, images (anchor x), positive_images (x+, same
class), negative_images (x-, the most similar other class), all three of one size.

Exactly how TAPOTrainer differs from TRL 1.16's stock GRPOTrainer:

1. Rollout views: a group is `num_generations = 2n` rollouts of one prompt; the second half
   of every group (by global position, so multi-process runs agree) is generated from the
   positive image instead of the anchor. Log-probs, rewards and the old-policy ratio of each
   rollout use the image it was sampled from (intra-class augmentation).
2. Advantages: recomputed over the whole 2n group as (r - mean) / (std + 1e-6) (stock TRL
   adds 1e-4), from the same weighted rewards.
3. Negative image: once per generation batch, before any update, a no-grad forward pass of
   every rollout's tokens with the negative image's pixels gives logp_old(o | q, x-).
4. Loss (train/tapo_loss.py), token-level averaged over the generation window:
   DAPO clip-higher (epsilon 0.2 / epsilon_high 0.28) with dual clip c = `delta` (3) for
   negative advantages, `- tapo_gamma * k3(own || negative)` with d clamped to [-20, 20] and
   k3 to [-10, 10], `+ tapo_eta * (-logp)` (entropy minimisation), `+ beta * KL(ref)` only
   if beta > 0 (0 by default, as the released scripts).
5. Dynamic sampling: rollouts of groups whose accuracy is all 0 or all 1 are masked out of
   every loss term (the paper's DAPO-style filter; masked here rather than re-sampled, so
   the batch shape and TRL's buffering stay unchanged).
Unsupported with TAPO (refused at start): top_entropy_quantile < 1, off_policy_mask_threshold,
sequence-level importance sampling, and entropy_coef (TRL's entropy *bonus*).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather
from PIL import Image
from trl import GRPOConfig, GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing

from train.data import load_registry, load_rl
from train.rewards import REWARD_WEIGHTS, reward_functions
from train.tapo_loss import TAPOCoefficients, dynamic_sampling_keep, group_advantages, tapo_loss
from train.tiny import load_processor, save_processor

log = logging.getLogger(__name__)


@dataclass
class TAPOConfig(GRPOConfig):
    """GRPOConfig + TAPO's coefficients; every default is the paper's Stage-2 value."""

    model_name_or_path: str = field(default="", metadata={"help": "the SFT model folder or id"})
    dataset: str = field(default="", metadata={"help": "exported dataset folder, run folder, shards or Hub id"})
    dataset_split: str = "train"
    reward: str = field(default="matcher", metadata={"help": "matcher (curation.core.labels.match) or paper (substring, hackable)"})
    registry: str | None = field(default=None, metadata={"help": "registry.json (default: the run's, or built from answers)"})
    min_pixels: int | None = None
    max_pixels: int | None = None
    dtype: str = "auto"
    # TAPO's own terms
    tapo_gamma: float = field(default=0.01, metadata={"help": "weight of -k3(own || negative image)"})
    tapo_eta: float = field(default=0.03, metadata={"help": "weight of the entropy term mean(-logp)"})
    k3_log_clamp: float = 20.0
    k3_clamp: float = 10.0
    advantage_eps: float = 1e-6
    dynamic_sampling: bool = field(default=True, metadata={"help": "mask groups whose accuracy is all 0 or all 1"})
    positive_rollouts: bool = field(default=True, metadata={"help": "second half of each group sees the positive image"})
    accuracy_reward_name: str = "accuracy"
    # The paper's Stage-2 values for GRPOConfig fields
    learning_rate: float = 1e-6
    lr_scheduler_type: str = "constant"
    num_generations: int | None = 10  # 5 anchor + 5 positive rollouts
    per_device_train_batch_size: int = 10  # one prompt's group per device step
    temperature: float = 1.0
    top_p: float = 0.99
    max_completion_length: int | None = 2048
    loss_type: str = "dapo"
    epsilon: float = 0.2
    epsilon_high: float | None = 0.28
    delta: float | None = 3.0  # dual clip c
    beta: float = 0.0
    reward_weights: list[float] | None = field(default_factory=lambda: list(REWARD_WEIGHTS))

    def coefficients(self) -> TAPOCoefficients:
        return TAPOCoefficients(
            epsilon_low=self.epsilon,
            epsilon_high=self.epsilon_high if self.epsilon_high is not None else self.epsilon,
            dual_clip=self.delta,
            gamma=self.tapo_gamma,
            eta=self.tapo_eta,
            beta=self.beta,
            k3_log_clamp=self.k3_log_clamp,
            k3_clamp=self.k3_clamp,
            advantage_eps=self.advantage_eps,
        )


class TAPOTrainer(GRPOTrainer):
    """GRPOTrainer with TAPO's triplet views, negative-image term, entropy term and filter."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        cfg = self.args
        if not isinstance(cfg, TAPOConfig):
            raise TypeError("TAPOTrainer needs a TAPOConfig (it holds TAPO's coefficients)")
        if cfg.positive_rollouts and self.num_generations % 2:
            raise ValueError(f"num_generations must be even (n anchor + n positive), got {self.num_generations}")
        if cfg.top_entropy_quantile < 1.0 or cfg.off_policy_mask_threshold is not None:
            raise ValueError("TAPO does not support top_entropy_quantile < 1 or off_policy_mask_threshold")
        if cfg.importance_sampling_level != "token" or getattr(cfg, "entropy_coef", 0.0):
            raise ValueError("TAPO uses token-level importance sampling and its own entropy term (tapo_eta)")
        if cfg.dynamic_sampling and cfg.accuracy_reward_name not in self.reward_func_names:
            raise ValueError(
                f"dynamic sampling needs a reward named {cfg.accuracy_reward_name!r}; "
                f"reward functions: {self.reward_func_names}"
            )
        self.tapo_coef = cfg.coefficients()
        self._tapo_rewards: torch.Tensor | None = None

    # -- rollouts -------------------------------------------------------------------------

    def _group_size(self) -> int:
        if self.model.training:
            return self.num_generations
        return self.num_generations_eval or self.num_generations

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._tapo_rewards = rewards  # gathered over processes: what the 2n-wide advantage needs
        return rewards

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        group = self._group_size()
        offset = self.accelerator.process_index * len(inputs)
        if self.args.positive_rollouts and group % 2 == 0 and "positive_images" in inputs[0]:
            inputs = [
                {**x, "images": x["positive_images"]} if (offset + i) % group >= group // 2 else x
                for i, x in enumerate(inputs)
            ]
        output = super()._generate_and_score_completions(inputs)
        device = self.accelerator.device
        local = slice(offset, offset + len(inputs))
        mode = "train" if self.model.training else "eval"

        per_func = self._tapo_rewards
        rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
        output["advantages"] = group_advantages(rewards, group, self.tapo_coef.advantage_eps)[local].to(device)
        if self.args.dynamic_sampling:
            accuracy = per_func[:, self.reward_func_names.index(self.args.accuracy_reward_name)]
            keep = dynamic_sampling_keep(torch.nan_to_num(accuracy), group)
        else:
            keep = torch.ones(len(rewards), dtype=torch.bool, device=rewards.device)
        self._metrics[mode]["tapo/kept_fraction"].append(keep.float().mean().item())
        keep = keep[local].to(device)
        output["tapo_keep"] = keep.float()
        kept_tokens = (output["completion_mask"] * keep.unsqueeze(1)).sum()
        output["tapo_kept_tokens"] = gather(kept_tokens).sum()
        if self.tapo_coef.gamma != 0.0:
            output["negative_per_token_logps"] = self._negative_logps(inputs, output)
        return output

    def _negative_logps(self, inputs: list[dict[str, Any]], output: dict[str, Any]) -> torch.Tensor:
        """logp_old(o | q, x-): each rollout's tokens re-scored with its negative image, no grad."""
        if "negative_images" not in inputs[0]:
            raise ValueError("TAPO rows need `negative_images` (export the `rl` config with triplets)")
        negatives = []
        for x in inputs:
            own, neg = x["images"][0], x["negative_images"][0]
            if neg.size != own.size:  # one size keeps the prompt's image-token layout identical
                neg = neg.convert("RGB").resize(own.size, Image.Resampling.BICUBIC)
            negatives.append(neg)
        pixels = self.processing_class.image_processor(images=negatives, return_tensors="pt")
        kwargs: dict[str, Any] = {"pixel_values": pixels["pixel_values"].to(self.accelerator.device)}
        if "image_grid_thw" in pixels:
            kwargs["image_grid_thw"] = pixels["image_grid_thw"].to(self.accelerator.device)
            if not torch.equal(kwargs["image_grid_thw"], output["image_grid_thw"].to(kwargs["image_grid_thw"].device)):
                raise ValueError("negative and anchor images give different image grids; export them at one size")
        for key in ("mm_token_type_ids", "token_type_ids"):
            if key in output:
                kwargs[key] = output[key]
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        batch_size = self.args.per_device_train_batch_size if self.model.training else self.args.per_device_eval_batch_size
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model, ids, mask, output["completion_ids"].size(1), batch_size=batch_size,
                num_images=output.get("num_images"), **kwargs,
            )
        return logps

    # -- loss -----------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        mask = inputs["completion_mask"] if "tool_mask" not in inputs else inputs["completion_mask"] * inputs["tool_mask"]
        logps, _, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1),
            pixel_values=inputs.get("pixel_values"),
            image_grid_thw=inputs.get("image_grid_thw"),
            num_images=inputs.get("num_images"),
            pixel_attention_mask=inputs.get("pixel_attention_mask"),
            image_sizes=inputs.get("image_sizes"),
            token_type_ids=inputs.get("token_type_ids"),
            mm_token_type_ids=inputs.get("mm_token_type_ids"),
        )
        old = inputs.get("old_per_token_logps")
        old = logps.detach() if old is None else old
        negative = inputs.get("negative_per_token_logps")
        negative = logps.detach() if negative is None else negative  # gamma = 0: k3 is 0
        mode = "train" if self.model.training else "eval"
        # Like TRL's dapo: tokens of the whole generation window, per process.
        normalizer = inputs["tapo_kept_tokens"].clamp(min=1.0) / self.accelerator.num_processes
        if mode == "train":
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        weights = None
        if self.use_vllm and self.vllm_importance_sampling_correction:
            weights = inputs["importance_sampling_ratio"]
        loss, parts = tapo_loss(
            logps, old, negative, inputs["advantages"], mask,
            keep=inputs["tapo_keep"].bool(), coef=self.tapo_coef,
            logp_ref=inputs.get("ref_per_token_logps"), normalizer=normalizer, policy_weights=weights,
        )
        for name, value in parts.items():
            self._metrics[mode][f"tapo/{name}"].append(self.accelerator.gather(value).mean().item())
        return loss


def build_trainer(config: TAPOConfig, plain_grpo: bool = False, callbacks: list | None = None) -> GRPOTrainer:
    """A TAPOTrainer for `config` (or TRL's stock GRPOTrainer with the same settings)."""
    if not config.dataset:
        raise ValueError("no dataset: set `dataset` in the recipe or pass --dataset")
    if not config.model_name_or_path:
        raise ValueError("no model: set `model_name_or_path` (the SFT output folder)")
    rows = load_rl(config.dataset, config.dataset_split)
    registry = None
    if config.reward == "matcher":
        from curation.core.labels import Registry

        registry = Registry.load(config.registry) if config.registry else load_registry(config.dataset, rows)
    processor = load_processor(config.model_name_or_path, config.min_pixels, config.max_pixels)
    if config.model_init_kwargs is None:
        config.model_init_kwargs = {}
    config.model_init_kwargs.setdefault("dtype", config.dtype)
    cls = GRPOTrainer if plain_grpo else TAPOTrainer
    return cls(
        model=config.model_name_or_path,
        reward_funcs=reward_functions(config.reward, registry),
        args=config,
        train_dataset=rows,
        processing_class=processor,
        callbacks=callbacks,
    )


def run_tapo(config: TAPOConfig, plain_grpo: bool = False, callbacks: list | None = None) -> dict[str, Any]:
    """Train, save model + processor to `output_dir`; return the logged history."""
    trainer = build_trainer(config, plain_grpo, callbacks)
    result = trainer.train()
    trainer.save_model(config.output_dir)
    save_processor(trainer.processing_class, config.output_dir)
    trainer.state.save_to_json(str(Path(config.output_dir) / "trainer_state.json"))  # the loss log
    history = [e for e in trainer.state.log_history if "loss" in e]
    log.info("%s done: %d steps, saved to %s", "GRPO" if plain_grpo else "TAPO", result.global_step, config.output_dir)
    return {"output_dir": str(Path(config.output_dir)), "history": history, "steps": result.global_step}
