"""TAPOConfig: TRL's GRPOConfig plus TAPO's coefficients, dynamic sampling and format guard.

Every default is the Fine-R1 release's Stage-2 value (PKU-ICST-MIPL/FineR1_ICLR2026 at
84cdc5c: TAPO/examples/tapo/tapo_3b.sh and TAPO/examples/configs/config_tapo.yaml); the
recipes in train/recipes/ name the source of each.

The release counts its batches in prompts, for the whole job: 128 prompts per optimizer
update (`worker.actor.global_batch_size`), 384 per rollout batch (`data.rollout_batch_size`),
so one generation serves 3 updates, the 2nd and 3rd off-policy. TRL counts rollouts per device
and per micro-step. `prompts_per_update` and `rollout_batch_prompts` say it the release's way
and set TRL's `gradient_accumulation_steps` and `steps_per_generation` from the number of
processes (`WORLD_SIZE`, as `accelerate launch` and `torchrun` set it):

    >>> from train.tapo_config import batch_layout
    >>> batch_layout(prompts_per_update=128, rollout_batch_prompts=384, num_generations=10,
    ...              per_device_batch=10, world_size=8)
    (16, 48)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from trl import GRPOConfig

from train.format_guard import ACTIONS
from train.rewards import REWARD_WEIGHTS
from train.tapo_loss import TAPOCoefficients


def batch_layout(prompts_per_update: int, rollout_batch_prompts: int | None, num_generations: int,
                 per_device_batch: int, world_size: int) -> tuple[int, int]:
    """(gradient_accumulation_steps, steps_per_generation) for the release's prompt counts."""
    per_micro_step = per_device_batch * world_size  # rollouts
    rollouts = prompts_per_update * num_generations
    if rollouts % per_micro_step:
        raise ValueError(
            f"prompts_per_update={prompts_per_update} x num_generations={num_generations} = {rollouts} "
            f"rollouts per update do not split into micro-steps of per_device_train_batch_size="
            f"{per_device_batch} x {world_size} process(es); change per_device_train_batch_size"
        )
    accumulation = rollouts // per_micro_step
    rollout_batch_prompts = rollout_batch_prompts or prompts_per_update
    if rollout_batch_prompts % prompts_per_update:
        raise ValueError(f"rollout_batch_prompts={rollout_batch_prompts} must be a multiple of "
                         f"prompts_per_update={prompts_per_update} (whole updates per generation)")
    return accumulation, accumulation * (rollout_batch_prompts // prompts_per_update)


@dataclass
class TAPOConfig(GRPOConfig):
    """GRPOConfig + TAPO's coefficients; every default is the release's Stage-2 value."""

    model_name_or_path: str = field(default="", metadata={"help": "the SFT model folder or id"})
    dataset: str = field(default="", metadata={"help": "exported dataset folder, run folder, shards or Hub id"})
    dataset_split: str = "train"
    reward: str = field(default="matcher", metadata={"help": "matcher (curation.core.labels.match) or paper (the release's cls_thinking.py rule, hackable)"})
    registry: str | None = field(default=None, metadata={"help": "registry.json (default: the run's, or built from answers)"})
    min_pixels: int | None = None
    max_pixels: int | None = None
    dtype: str = "auto"
    # The release's batch sizes, in prompts (see the module docstring); None: TRL's own fields
    prompts_per_update: int | None = field(default=None, metadata={"help": "prompts per optimizer update (sets gradient_accumulation_steps)"})
    rollout_batch_prompts: int | None = field(default=None, metadata={"help": "prompts per generation (sets steps_per_generation: several updates per generation)"})
    # TAPO's own terms
    tapo_gamma: float = field(default=0.01, metadata={"help": "weight of -k3(own || negative image)"})
    tapo_eta: float = field(default=0.03, metadata={"help": "weight of the entropy term mean(-logp)"})
    k3_log_clamp: float = 20.0
    k3_clamp: float = 10.0
    advantage_eps: float = 1e-6
    positive_rollouts: bool = field(default=True, metadata={"help": "second half of each group sees the positive image"})
    accuracy_reward_name: str = "accuracy"
    format_reward_name: str = "format"
    # Dynamic sampling with refill (the release's online_filtering)
    dynamic_sampling: bool = field(default=True, metadata={"help": "train only on groups whose mean accuracy is within (low, high), generating more until the batch is full"})
    dynamic_sampling_low: float = 0.01
    dynamic_sampling_high: float = 0.99
    max_generation_rounds: int = field(default=10, metadata={"help": "generation rounds per batch at most (the release: no limit); then train on what was kept, warn"})
    # Format guard (train/format_guard.py)
    format_guard: str = field(default="warn", metadata={"help": "off, warn, stop or lower_gamma when the format reward stays low"})
    format_guard_threshold: float = 0.5
    format_guard_window: int = 5
    format_guard_patience: int = 5
    format_guard_gamma_factor: float = 0.5
    # The release's Stage-2 values for GRPOConfig / TrainingArguments fields
    learning_rate: float = 1e-6
    lr_scheduler_type: str = "constant"
    weight_decay: float = 1e-2
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
    vllm_importance_sampling_correction: bool = False  # the release has none; TRL's default is on
    reward_weights: list[float] | None = field(default_factory=lambda: list(REWARD_WEIGHTS))

    def __post_init__(self) -> None:
        if self.format_guard is False:  # YAML 1.1 reads a bare `off` as false
            self.format_guard = "off"
        if self.format_guard not in ACTIONS:
            raise ValueError(f"format_guard must be one of {ACTIONS}, got {self.format_guard!r}")
        if self.rollout_batch_prompts is not None and self.prompts_per_update is None:
            raise ValueError("rollout_batch_prompts needs prompts_per_update (prompts per optimizer update)")
        if self.prompts_per_update is not None:
            if self.steps_per_generation is not None or self.generation_batch_size is not None:
                raise ValueError("set either prompts_per_update / rollout_batch_prompts or TRL's "
                                 "steps_per_generation / generation_batch_size, not both")
            accumulation, self.steps_per_generation = batch_layout(
                self.prompts_per_update, self.rollout_batch_prompts, self.num_generations,
                self.per_device_train_batch_size, int(os.environ.get("WORLD_SIZE", "1")),
            )
            if self.gradient_accumulation_steps not in (1, accumulation):  # 1: TRL's default
                raise ValueError(
                    f"prompts_per_update={self.prompts_per_update} sets gradient_accumulation_steps "
                    f"to {accumulation}, but gradient_accumulation_steps="
                    f"{self.gradient_accumulation_steps} was also given: set one of them")
            self.gradient_accumulation_steps = accumulation
        super().__post_init__()

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
