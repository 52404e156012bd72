"""The shipped training recipes against the Fine-R1 release, value by value.

Every expected value below is written here with the file of the release it comes from
(PKU-ICST-MIPL/FineR1_ICLR2026 at commit 84cdc5c), not read from our own code:

    S3 = TAPO/examples/tapo/tapo_3b.sh        S7 = TAPO/examples/tapo/tapo_7b.sh
    C  = TAPO/examples/configs/config_tapo.yaml
    J  = TAPO/examples/format_prompt/cls_thinking.jinja
    L3 = LLaMA-Factory/cot_sft_3b.sh           L7 = LLaMA-Factory/cot_sft_7b.sh
    M  = LLaMA-Factory/src/llamafactory/hparams/model_args.py (defaults the SFT scripts keep)
    E  = eval/eval_closed.sh, eval/eval_open.sh

    .venv/bin/pytest -q -p no:cacheprovider tests/test_train_recipes.py
"""

from __future__ import annotations

import pytest
import yaml

from train.recipe import RECIPES, load_train_config
from train.sft import SFTRecipe
from train.tapo import TAPOConfig
from train.tapo_config import batch_layout

CPU = ["bf16=false", "use_cpu=true"]

TAPO_RELEASE = {
    # recipe: (epochs, prompts per update, prompts per rollout batch) from S3 / S7
    "tapo_qwen2_5_vl_3b": (10, 128, 384),  # S3: TOTAL_EPOCHES=10 GLOBAL_BATCH_SIZE=128 ROLLOUT_BATCH_SIZE=384
    "tapo_qwen2_5_vl_7b": (5, 64, 192),  # S7: TOTAL_EPOCHES=5 GLOBAL_BATCH_SIZE=64 ROLLOUT_BATCH_SIZE=192
}
RELEASE_GPUS = 4  # S3 / S7: N_GPU=4


@pytest.mark.parametrize("name", sorted(TAPO_RELEASE))
def test_tapo_recipes_train_as_the_release(name):
    epochs, per_update, per_rollout = TAPO_RELEASE[name]
    cfg = load_train_config(TAPOConfig, name, [*CPU, "use_vllm=false"])  # one process here
    assert cfg.num_train_epochs == epochs
    group = cfg.num_generations
    assert group == 2 * 5  # C: rollout.n 5, for the anchor and for the positive image (S: is_noisy=true)
    rollouts_per_update = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * 1
    assert rollouts_per_update // group == per_update
    assert cfg.generation_batch_size // group == per_rollout
    # updates per rollout batch: 3, the 2nd and 3rd on rollouts of the pre-update policy
    assert cfg.steps_per_generation // cfg.gradient_accumulation_steps == per_rollout // per_update == 3
    # on the release's 4 GPUs (WORLD_SIZE=4 under accelerate launch) the same prompts per update
    accumulation, steps = batch_layout(cfg.prompts_per_update, cfg.rollout_batch_prompts, group,
                                       cfg.per_device_train_batch_size, RELEASE_GPUS)
    assert cfg.per_device_train_batch_size * accumulation * RELEASE_GPUS // group == per_update
    assert steps // accumulation == 3
    # dynamic sampling: S: online_filtering=true filter_key=accuracy filter_low=0.01 filter_high=0.99,
    # regenerating until the batch is full (refill rounds allowed)
    assert cfg.dynamic_sampling and (cfg.dynamic_sampling_low, cfg.dynamic_sampling_high) == (0.01, 0.99)
    assert cfg.accuracy_reward_name == "accuracy" and cfg.max_generation_rounds > 1
    assert cfg.vllm_importance_sampling_correction is False  # the release has no such correction
    assert cfg.weight_decay == 1e-2  # C: optim.weight_decay 1.0e-2
    assert (cfg.learning_rate, cfg.lr_scheduler_type.value, cfg.warmup_steps) == (1e-6, "constant", 0)  # C: lr, lr_warmup_ratio 0
    assert (cfg.min_pixels, cfg.max_pixels) == (200704, 1003520)  # C: data.min_pixels, data.max_pixels
    assert (cfg.temperature, cfg.top_p, cfg.max_completion_length) == (1.0, 0.99, 2048)  # C: rollout, max_response_length
    assert (cfg.epsilon, cfg.epsilon_high, cfg.delta, cfg.beta) == (0.2, 0.28, 3.0, 0.0)  # S: clip 0.2/0.28, disable_kl
    assert (cfg.tapo_gamma, cfg.tapo_eta) == (0.01, 0.03)  # S: KL_PRCP_COEF, *_ENTROPY_LOSS_COEF
    assert cfg.max_grad_norm == 1.0 and cfg.seed == 1  # C: actor.max_grad_norm, data.seed
    assert cfg.use_vllm is False  # overridden above; the recipe file itself colocates vLLM:
    raw = yaml.safe_load((RECIPES / f"{name}.yaml").read_text())
    assert raw["use_vllm"] is True and raw["vllm_mode"] == "colocate"


def test_the_layout_follows_the_number_of_gpus():
    for world, accumulation in ((1, 128), (4, 32), (8, 16)):
        assert batch_layout(128, 384, 10, 10, world) == (accumulation, 3 * accumulation)
    with pytest.raises(ValueError, match="per_device_train_batch_size"):
        batch_layout(128, 384, 10, 10, 3)
    with pytest.raises(ValueError, match="multiple of prompts_per_update"):
        batch_layout(128, 200, 10, 10, 1)


def test_prompts_per_update_and_an_explicit_accumulation_are_refused_together():
    # one knob says how many prompts an update sees: a second, different one is not overridden
    with pytest.raises(ValueError, match="set one of them"):
        load_train_config(TAPOConfig, "tapo_qwen2_5_vl_3b",
                          [*CPU, "use_vllm=false", "gradient_accumulation_steps=4"])
    cfg = load_train_config(TAPOConfig, "tapo_qwen2_5_vl_3b",
                            [*CPU, "use_vllm=false", "gradient_accumulation_steps=128"])
    assert cfg.gradient_accumulation_steps == 128  # the same value: no conflict


SFT_RELEASE = {"sft_qwen2_5_vl_3b": "Qwen/Qwen2.5-VL-3B-Instruct",  # L3: --model_name_or_path
               "sft_qwen2_5_vl_7b": "Qwen/Qwen2.5-VL-7B-Instruct"}  # L7


@pytest.mark.parametrize("name", sorted(SFT_RELEASE))
def test_sft_recipes_train_as_the_release(name):
    cfg = load_train_config(SFTRecipe, name, CPU)
    assert cfg.model_name_or_path == SFT_RELEASE[name]
    assert cfg.weight_decay == 0.1  # L3/L7: --weight_decay 0.1
    assert cfg.warmup_steps == 6  # L3/L7: --warmup_steps 6
    assert (cfg.learning_rate, cfg.lr_scheduler_type.value, cfg.num_train_epochs) == (5e-6, "cosine", 10)  # L3/L7
    assert cfg.max_pixels == 768 * 768 == 589824  # M: image_max_pixels default, kept by L3/L7
    # global batch 64 = L3/L7: 4 GPUs x --per_device_train_batch_size 4 x --gradient_accumulation_steps 4;
    # the recipe is written for accelerate_zero3.yaml's 8 processes
    processes = yaml.safe_load((RECIPES / "accelerate_zero3.yaml").read_text())["num_processes"]
    assert cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * processes == 64
    assert cfg.assistant_only_loss and cfg.freeze_vision and not cfg.rl_prompt


def test_prompt_separator_and_instruction_are_the_releases():
    from curation.export.stage import FORMAT_INSTRUCTION, rl_prompt_text

    # J: "{{ content | trim }}\n\nYou first think through ..." (a blank line, then the instruction)
    jinja_instruction = ("You first think through the reasoning process as an internal monologue, enclosed "
                         "within <think> </think> tags. Then, provide your final answer enclosed within "
                         "<answer> </answer> tags.")
    assert jinja_instruction == FORMAT_INSTRUCTION
    assert rl_prompt_text(" What bird is this? ") == "What bird is this?\n\n" + jinja_instruction


def test_reward_paper_and_eval_paper_compat_are_the_releases():
    from train.eval.evaluate import PAPER_MAX_NEW_TOKENS
    from train.rewards import paper_accuracy_reward, paper_format_reward, reward_functions

    assert reward_functions("paper", None) == [paper_accuracy_reward, paper_format_reward]
    assert PAPER_MAX_NEW_TOKENS == 2048  # E: MAX_NEW_TOKENS=2048


def test_every_shipped_recipe_loads_and_a_missing_one_is_named():
    for path in sorted(RECIPES.glob("*.yaml")):
        if path.stem.startswith("sft_"):
            assert load_train_config(SFTRecipe, path.stem, CPU).output_dir
        elif path.stem.startswith("tapo_"):
            assert load_train_config(TAPOConfig, path.stem, [*CPU, "use_vllm=false"]).output_dir
    defaults = TAPOConfig(output_dir="unused", use_cpu=True, bf16=False).coefficients()
    assert (defaults.gamma, defaults.eta, defaults.dual_clip, defaults.beta) == (0.01, 0.03, 3.0, 0.0)
    assert (defaults.epsilon_low, defaults.epsilon_high, defaults.advantage_eps) == (0.2, 0.28, 1e-6)
    assert (RECIPES / "accelerate_zero3.yaml").exists()
    with pytest.raises(FileNotFoundError, match="sft_tiny_cpu"):
        load_train_config(SFTRecipe, "no_such_recipe")


def test_format_guard_takes_a_bare_off_and_refuses_a_typo():
    assert load_train_config(TAPOConfig, "tapo_tiny_cpu", ["format_guard=off"]).format_guard == "off"
    assert load_train_config(TAPOConfig, "tapo_qwen2_5_vl_3b", [*CPU, "use_vllm=false"]).format_guard == "warn"
    with pytest.raises(ValueError, match="format_guard must be one of"):
        load_train_config(TAPOConfig, "tapo_tiny_cpu", ["format_guard=loud"])
