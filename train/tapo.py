"""Stage 2: TAPO (Triplet-Augmented Policy Optimization, Fine-R1) as a TRL GRPOTrainer subclass.

    finecot train tapo --recipe tapo_tiny_cpu --set model_name_or_path=runs/tiny-sft --set dataset=runs/demo/dataset
    accelerate launch --config_file train/recipes/accelerate_zero3.yaml -m train.cli tapo --recipe tapo_qwen2_5_vl_3b

Reads the exported `rl` config: prompt, answer, images (anchor x), positive_images (x+, same
class), negative_images (x-, the most similar other class), all three of one size. The
config (train/tapo_config.py) holds the release's values.

Exactly how TAPOTrainer differs from TRL 1.16's stock GRPOTrainer:

1. Rollout views: a group is `num_generations = 2n` rollouts of one prompt; the second half
   of every group (by global position, so multi-process runs agree) is generated from the
   positive image instead of the anchor. Log-probs, rewards and the old-policy ratio of each
   rollout use the image it was sampled from (intra-class augmentation).
2. Advantages: recomputed over the whole 2n group as (r - mean) / (std + 1e-6) (stock TRL
   adds 1e-4), from the same weighted rewards.
3. Dynamic sampling with refill (train/refill.py): a group is kept when its mean accuracy is
   within (0.01, 0.99); while a process holds fewer kept groups than its generation batch,
   more groups are generated (at most `max_generation_rounds` rounds, then a warning and
   the batch is completed with masked groups). A generation batch with no kept group at all
   makes no parameter change: its micro-steps run no forward and no backward, so no gradient
   exists and the optimizer moves nothing (no momentum, no weight decay).
4. Negative image: once per generation batch, before any update, a no-grad forward pass of
   every kept rollout's tokens with the negative image's pixels gives logp_old(o | q, x-).
5. Loss (train/tapo_loss.py), token-level averaged over the generation window:
   DAPO clip-higher (epsilon 0.2 / epsilon_high 0.28) with dual clip c = `delta` (3) for
   negative advantages, `- tapo_gamma * k3(own || negative)` with d clamped to [-20, 20] and
   k3 to [-10, 10], `+ tapo_eta * (-logp)` (entropy minimisation), `+ beta * KL(ref)` only
   if beta > 0 (0 by default, as the released scripts).
6. Format guard (train/format_guard.py): warns, stops or lowers tapo_gamma when the format
   reward's moving average stays low.
Refused at start: vllm_mode "server" with positive rollouts (TRL's server client generates
from the first rollout of each group only), top_entropy_quantile < 1,
off_policy_mask_threshold, sequence-level importance sampling, and entropy_coef (TRL's
entropy *bonus*).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import gather
from PIL import Image
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

from train.data import load_registry, load_rl
from train.format_guard import FormatGuard
from train.refill import join, round_size, take
from train.rewards import reward_functions
from train.tapo_config import TAPOConfig
from train.tapo_loss import dynamic_sampling_keep, group_advantages, tapo_loss
from train.tiny import load_processor, save_processor

log = logging.getLogger(__name__)

__all__ = ["TAPOConfig", "TAPOTrainer", "build_trainer", "run_tapo"]


def refuse_unsupported(cfg: TAPOConfig) -> None:
    """Settings TAPO cannot honour, refused before TRL starts anything (vLLM, models)."""
    if cfg.use_vllm and cfg.vllm_mode == "server" and cfg.positive_rollouts:
        raise ValueError(
            "vllm_mode='server' cannot run TAPO: TRL's server client generates every rollout of "
            "a group from the group's first prompt, so the positive half would be sampled from the "
            "anchor image and scored under the positive one. Use vllm_mode='colocate' (the "
            "recipes' choice), use_vllm=false, or positive_rollouts=false."
        )
    if cfg.top_entropy_quantile < 1.0 or cfg.off_policy_mask_threshold is not None:
        raise ValueError("TAPO does not support top_entropy_quantile < 1 or off_policy_mask_threshold")
    if cfg.importance_sampling_level != "token" or getattr(cfg, "entropy_coef", 0.0):
        raise ValueError("TAPO uses token-level importance sampling and its own entropy term (tapo_eta)")


class TAPOTrainer(GRPOTrainer):
    """GRPOTrainer with TAPO's triplet views, refilled dynamic sampling, negative-image and
    entropy terms, and the format guard."""

    def __init__(self, *args: Any, **kwargs: Any):
        cfg = kwargs.get("args", args[2] if len(args) > 2 else None)
        if not isinstance(cfg, TAPOConfig):
            raise TypeError("TAPOTrainer needs a TAPOConfig (it holds TAPO's coefficients)")
        refuse_unsupported(cfg)
        super().__init__(*args, **kwargs)
        if cfg.positive_rollouts and self.num_generations % 2:
            raise ValueError(f"num_generations must be even (n anchor + n positive), got {self.num_generations}")
        if cfg.dynamic_sampling:
            if cfg.accuracy_reward_name not in self.reward_func_names:
                raise ValueError(
                    f"dynamic sampling needs a reward named {cfg.accuracy_reward_name!r}; "
                    f"reward functions: {self.reward_func_names}"
                )
            local = cfg.per_device_train_batch_size * cfg.steps_per_generation
            if local % self.num_generations:
                raise ValueError(
                    f"dynamic sampling refills whole groups per process: per_device_train_batch_size x "
                    f"steps_per_generation = {local} must be a multiple of num_generations={self.num_generations}"
                )
        if cfg.max_generation_rounds < 1:
            raise ValueError(f"max_generation_rounds must be >= 1, got {cfg.max_generation_rounds}")
        self.tapo_coef = cfg.coefficients()
        self.format_guard = FormatGuard(cfg.format_guard_threshold, cfg.format_guard_window, cfg.format_guard_patience)
        self._tapo_rewards: torch.Tensor | None = None
        self._refill_order: list[int] = []  # dataset indices still to serve to refill rounds
        self._refill_epoch = 0
        self._prepared_at, self._prepared = -1, None  # the micro-step whose rows are prepared

    # -- rollouts -------------------------------------------------------------------------

    def _group_size(self) -> int:
        if self.model.training:
            return self.num_generations
        return self.num_generations_eval or self.num_generations

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._tapo_rewards = rewards  # gathered over processes: what the 2n-wide advantage needs
        return rewards

    def _round(self, inputs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any], torch.Tensor]:
        """Generate and score one round: (inputs with their views, TRL's output, global rewards
        per function). Advantages are TAPO's, over each whole 2n group."""
        group = self._group_size()
        offset = self.accelerator.process_index * len(inputs)
        if self.args.positive_rollouts and group % 2 == 0 and "positive_images" in inputs[0]:
            inputs = [
                {**x, "images": x["positive_images"]} if (offset + i) % group >= group // 2 else x
                for i, x in enumerate(inputs)
            ]
        output = super()._generate_and_score_completions(inputs)
        per_func = self._tapo_rewards
        rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
        local = slice(offset, offset + len(inputs))
        output["advantages"] = group_advantages(rewards, group, self.tapo_coef.advantage_eps)[local].to(
            self.accelerator.device)
        return inputs, output, per_func

    def _keep(self, per_func: torch.Tensor) -> torch.Tensor:
        """Global keep flag per rollout (all True without dynamic sampling)."""
        if not self.args.dynamic_sampling:
            return torch.ones(per_func.size(0), dtype=torch.bool, device=per_func.device)
        accuracy = torch.nan_to_num(per_func[:, self.reward_func_names.index(self.args.accuracy_reward_name)])
        return dynamic_sampling_keep(accuracy, self._group_size(), self.args.dynamic_sampling_low,
                                     self.args.dynamic_sampling_high)

    def _refill_inputs(self, groups: int) -> list[dict[str, Any]]:
        """This process's rows for `groups` more prompts, each repeated num_generations times.

        Every process draws the same seeded permutation of the dataset and takes its own slice,
        as TRL's RepeatSampler does for the main batches; a second stream, so the main epoch
        order is untouched."""
        world = self.accelerator.num_processes
        while len(self._refill_order) < groups * world:
            generator = torch.Generator().manual_seed(self.args.seed + 1 + self._refill_epoch)
            self._refill_order += torch.randperm(len(self.train_dataset), generator=generator).tolist()
            self._refill_epoch += 1
        drawn, self._refill_order = self._refill_order[: groups * world], self._refill_order[groups * world:]
        rank = self.accelerator.process_index
        rows = [self.train_dataset[i] for i in drawn[rank * groups:(rank + 1) * groups]]
        return [dict(row) for row in rows for _ in range(self.num_generations)]

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        mode = "train" if self.model.training else "eval"
        group = self._group_size()
        inputs, output, per_func = self._round(inputs)
        keep = self._keep(per_func)
        quota = len(inputs) // group  # groups per process in this batch
        refill = mode == "train" and self.args.dynamic_sampling and quota * group == len(inputs)
        rounds, generated, kept_total, format_scores = 1, keep.numel() // group, int(keep.sum()) // group, [per_func]
        if refill:
            rank = self.accelerator.process_index
            parts = [(inputs, split_pixel_values_by_grid(output), self._local(keep, len(inputs), rank))]
            while True:
                have = sum(int(k.sum()) for _, _, k in parts) // group
                missing = int(gather(torch.tensor([max(0, quota - have)], device=self.accelerator.device)).max())
                if missing == 0:
                    break
                if rounds >= self.args.max_generation_rounds:
                    log.warning(
                        "dynamic sampling: %d of %d groups kept after %d generation rounds "
                        "(max_generation_rounds); the rest of the batch is masked. If this repeats, the "
                        "data is too easy or too hard for the model, or raise max_generation_rounds.",
                        have, quota, rounds)
                    break
                size = round_size(missing, kept_total, generated, quota)
                more, out, more_func = self._round(self._refill_inputs(size))
                more_keep = self._keep(more_func)
                parts.append((more, split_pixel_values_by_grid(out), self._local(more_keep, len(more), rank)))
                rounds += 1
                generated += more_keep.numel() // group
                kept_total += int(more_keep.sum()) // group
                format_scores.append(more_func)
            inputs, output, local_keep = self._assemble(parts, quota, group)
        else:
            local_keep = self._local(keep, len(inputs), self.accelerator.process_index)
        device = self.accelerator.device
        output["tapo_keep"] = local_keep.float().to(device)
        mask = output["completion_mask"] if "tool_mask" not in output else output["completion_mask"] * output["tool_mask"]
        output["num_items_in_batch"] = gather(mask.sum()).sum()
        output["tapo_kept_tokens"] = gather((mask * output["tapo_keep"].unsqueeze(1)).sum()).sum()
        metrics = self._metrics[mode]
        metrics["tapo/kept_fraction"].append(kept_total / max(generated, 1))
        metrics["tapo/generation_rounds"].append(float(rounds))
        metrics["tapo/batch_fill"].append(gather(output["tapo_keep"]).mean().item())
        if mode == "train":
            self._watch_format(torch.cat(format_scores))
        if self.tapo_coef.gamma != 0.0:
            output["negative_per_token_logps"] = self._negative_logps(inputs, output)
        return output

    @staticmethod
    def _local(keep: torch.Tensor, rows: int, rank: int) -> torch.Tensor:
        return keep[rank * rows:(rank + 1) * rows]

    def _assemble(self, parts: list, quota: int, group: int) -> tuple[list[dict[str, Any]], dict[str, Any], torch.Tensor]:
        """The first `quota` kept groups over the rounds, in order; short of that (round cap
        reached), the first dropped groups of the first round, masked, fill the batch."""
        chosen: list[tuple[int, int]] = []  # (round, first row of the group)
        for r, (_, _, keep) in enumerate(parts):
            chosen += [(r, g) for g in range(0, len(keep), group) if keep[g]]
        chosen = chosen[:quota]
        first_keep = parts[0][2]
        chosen += [(0, g) for g in range(0, len(first_keep), group) if not first_keep[g]][: quota - len(chosen)]
        rows_by_round: dict[int, list[int]] = {}
        for r, g in chosen:
            rows_by_round.setdefault(r, []).extend(range(g, g + group))
        inputs, pieces, keep = [], [], []
        for r, rows in rows_by_round.items():
            round_inputs, round_output, round_keep = parts[r]
            inputs += [round_inputs[i] for i in rows]
            pieces.append(take(round_output, rows))
            keep.append(round_keep[torch.tensor(rows, device=round_keep.device)])
        output = unsplit_pixel_values_by_grid(join(pieces, self._tokenizer.pad_token_id))
        return inputs, output, torch.cat(keep)

    def _watch_format(self, per_func: torch.Tensor) -> None:
        """Feed the format guard this batch's mean format reward; act when it fires."""
        cfg = self.args
        if cfg.format_guard == "off" or cfg.format_reward_name not in self.reward_func_names:
            return
        score = torch.nanmean(per_func[:, self.reward_func_names.index(cfg.format_reward_name)]).item()
        fired = self.format_guard.update(score)
        metrics = self._metrics["train"]
        metrics["tapo/format_average"].append(self.format_guard.average)
        metrics["tapo/gamma"].append(self.tapo_coef.gamma)
        if not fired:
            return
        metrics["tapo/format_guard_fired"].append(float(self.format_guard.fired))
        message = (f"format guard: the format reward's average over {cfg.format_guard_window} batches "
                   f"({self.format_guard.average:.3f}) stayed below {cfg.format_guard_threshold} for "
                   f"{cfg.format_guard_patience} batches")
        if cfg.format_guard == "stop":
            log.warning("%s: stopping the run after this step (format_guard=stop)", message)
            self.control.should_training_stop = True
        elif cfg.format_guard == "lower_gamma":
            gamma = self.tapo_coef.gamma * cfg.format_guard_gamma_factor
            log.warning("%s: tapo_gamma %.3g -> %.3g (format_guard=lower_gamma)", message, self.tapo_coef.gamma, gamma)
            self.tapo_coef = dataclasses.replace(self.tapo_coef, gamma=gamma)
        else:
            log.warning("%s (format_guard=warn; `stop` or `lower_gamma` act on it)", message)

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

    def _prepare_inputs(self, generation_batch):
        # training_step below prepares a micro-step's rows before Trainer.training_step asks for
        # them again: the second call must not generate a second time.
        if self.model.training and self._prepared_at == self._step:
            return self._prepared
        prepared = super()._prepare_inputs(generation_batch)
        if self.model.training:
            self._prepared_at, self._prepared = self._step, prepared
        return prepared

    def training_step(self, model, inputs, num_items_in_batch=None):
        model.train()
        prepared = self._prepare_inputs(inputs)  # generates when a new generation batch is due
        if float(prepared["tapo_kept_tokens"]) == 0.0:
            # No kept group in the whole generation batch, on any process: no forward and no
            # backward. No gradient exists, so torch's optimizers leave every weight and moment
            # as it is, and under DeepSpeed (whose optimizer steps inside backward) no step runs.
            self._step += 1  # GRPOTrainer counts micro-steps here to know when to generate again
            return torch.zeros((), device=self.accelerator.device)
        return super().training_step(model, inputs, num_items_in_batch)

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
