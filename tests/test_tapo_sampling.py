"""TAPO's training around the objective, with real TRL training of the tiny model: dynamic
sampling with refill, a batch with no kept group, rows joined across rounds, the vLLM server
refusal, and the format guard.

Rewards here are plain functions that decide by the gold class (and, for one test, by the
step), so which groups are kept is known in advance whatever the random model writes.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_tapo_sampling.py
"""

from __future__ import annotations

import copy
import logging

import pytest
import torch
from train_fixtures import build_dataset
from transformers import TrainerCallback
from trl.trainer.utils import split_pixel_values_by_grid, unsplit_pixel_values_by_grid

from train.data import load_rl
from train.recipe import load_train_config
from train.refill import join, take
from train.tapo import TAPOConfig, TAPOTrainer
from train.tiny import build_tiny_model, load_processor


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tapo-sampling")
    data = build_dataset(root / "dataset", classes=6, per_class=3, size=56)
    model = build_tiny_model(root / "tiny", ["<think>x</think><answer>y</answer>"])
    classes = sorted(set(load_rl(data)["answer"]))
    return data, model, classes


def trainer_for(tiny, out, reward_funcs, weights, **overrides) -> TAPOTrainer:
    data, model, _ = tiny
    cfg = load_train_config(TAPOConfig, "tapo_tiny_cpu", [
        f"model_name_or_path={model}", f"dataset={data}", f"output_dir={out}", "disable_tqdm=true",
        "max_completion_length=4", "logging_steps=1", *(f"{k}={v}" for k, v in overrides.items()),
    ])
    cfg.reward_weights = weights
    return TAPOTrainer(model=str(model), reward_funcs=reward_funcs, args=cfg,
                       train_dataset=load_rl(data), processing_class=load_processor(model))


def format_reward(prompts, completions, completion_ids=None, **_):
    return [1.0] * len(completions)


format_reward.__name__ = "format"


class BatchRecorder(TrainerCallback):
    """After each optimizer step: the rows the step trained on (TRL's buffered generation batch)."""

    def __init__(self):
        self.trainer: TAPOTrainer | None = None
        self.batches: list[dict] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.batches.append({k: v for k, v in self.trainer._buffered_inputs[0].items()
                             if k in ("advantages", "tapo_keep", "completion_ids")})


def test_every_step_trains_on_a_full_batch_of_kept_groups(tiny, tmp_path):
    _, _, classes = tiny
    mixed = set(classes[:2])  # 2 of 6 classes: their groups mix right and wrong, all others are all right
    calls: list[int] = []

    def accuracy(prompts, completions, completion_ids=None, *, answer, **_):
        calls.append(len(completions))
        return [0.0 if a in mixed and i % 2 else 1.0 for i, a in enumerate(answer)]

    recorder = BatchRecorder()
    trainer = trainer_for(tiny, tmp_path, [accuracy, format_reward], [0.9, 0.1], max_steps=3,
                          max_generation_rounds=30)
    recorder.trainer = trainer
    trainer.add_callback(recorder)
    trainer.train()
    assert len(recorder.batches) == 3
    group = trainer.num_generations
    for batch in recorder.batches:
        assert len(batch["advantages"]) == trainer.args.per_device_train_batch_size  # full
        assert batch["tapo_keep"].tolist() == [1.0] * len(batch["tapo_keep"])
        # every row is from a mixed group: an all-right group has advantage 0 on every row
        assert (batch["advantages"].abs() > 0.1).all()
    assert len(calls) > 3  # refill rounds happened: more reward calls than steps
    assert sum(calls) % group == 0
    logged = [e for e in trainer.state.log_history if "tapo/generation_rounds" in e]
    assert max(e["tapo/generation_rounds"] for e in logged) > 1
    assert all(e["tapo/batch_fill"] == 1.0 for e in logged)
    assert all(0 < e["tapo/kept_fraction"] < 1 for e in logged if e["tapo/generation_rounds"] > 1)


def test_a_batch_with_no_kept_group_changes_no_parameter_and_no_optimizer_state(tiny, tmp_path, caplog):
    _, _, classes = tiny

    def accuracy(prompts, completions, completion_ids=None, *, answer, trainer_state, **_):
        if trainer_state.global_step == 0:  # step 1: every group mixed, Adam builds its moments
            return [float(i % 2) for i in range(len(completions))]
        return [0.0] * len(completions)  # step 2: every group all wrong, in every round

    snapshots: dict[str, dict] = {}

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
            snapshots[f"step{state.global_step}"] = {
                "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "optimizer": copy.deepcopy(optimizer.state_dict()),
            }

    trainer = trainer_for(tiny, tmp_path, [accuracy, format_reward], [0.9, 0.1], max_steps=2,
                          max_generation_rounds=2, weight_decay=0.01)
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.add_callback(Snapshot())
    with caplog.at_level(logging.WARNING, logger="train.tapo"):
        trainer.train()
    one, two = snapshots["step1"], snapshots["step2"]
    assert any(not torch.equal(before[k], one["params"][k]) for k in before)  # step 1 did train
    assert one["optimizer"]["state"]  # and left Adam moments behind
    assert all(torch.equal(one["params"][k], two["params"][k]) for k in before)
    assert one["optimizer"]["state"].keys() == two["optimizer"]["state"].keys()
    for index, state in one["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(two["optimizer"]["state"][index][name])), name
    assert "0 of 2 groups kept after 2 generation rounds" in caplog.text
    logged = [e for e in trainer.state.log_history if "tapo/kept_fraction" in e]
    assert logged[-1]["tapo/kept_fraction"] == 0.0 and logged[-1]["tapo/generation_rounds"] == 2.0


def test_rows_keep_their_log_probs_when_joined_across_rounds(tiny, tmp_path):
    data, _, _ = tiny
    trainer = trainer_for(tiny, tmp_path, [format_reward], [1.0], dynamic_sampling="false",
                          per_device_train_batch_size=4)
    trainer.model.train()
    rows = load_rl(data)
    long = dict(rows[1])  # a longer question: its round has a wider (left-padded) prompt
    long["prompt"] = [{**m, "content": [{**p, "text": p["text"] and "Look closely. " * 6 + p["text"]}
                                        for p in m["content"]]} for m in long["prompt"]]
    _, first, _ = trainer._round([dict(rows[0]) for _ in range(4)])
    _, second, _ = trainer._round([dict(long) for _ in range(4)])
    assert first["prompt_ids"].size(1) < second["prompt_ids"].size(1)
    joined = unsplit_pixel_values_by_grid(join(
        [take(split_pixel_values_by_grid(first), [1, 3]), take(split_pixel_values_by_grid(second), [0, 2])],
        trainer._tokenizer.pad_token_id))

    def logps(batch):
        ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
        mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
        with torch.no_grad():
            out, _, _ = trainer._get_per_token_logps_and_entropies(
                trainer.model, ids, mask, batch["completion_ids"].size(1), batch_size=4,
                pixel_values=batch["pixel_values"], image_grid_thw=batch["image_grid_thw"],
                num_images=batch["num_images"], mm_token_type_ids=batch.get("mm_token_type_ids"))
        return out * batch["completion_mask"]

    width = joined["completion_ids"].size(1)
    expected = torch.cat([torch.nn.functional.pad(logps(first)[[1, 3]], (0, width - first["completion_ids"].size(1))),
                          torch.nn.functional.pad(logps(second)[[0, 2]], (0, width - second["completion_ids"].size(1)))])
    assert torch.allclose(logps(joined), expected, atol=1e-5)
    assert joined["advantages"].tolist() == [*first["advantages"][[1, 3]].tolist(), *second["advantages"][[0, 2]].tolist()]


def test_vllm_server_mode_is_refused_with_the_reason(tiny, tmp_path):
    with pytest.raises(ValueError, match="vllm_mode='server' cannot run TAPO.*colocate"):
        trainer_for(tiny, tmp_path, [format_reward], [1.0], use_vllm="true", vllm_mode="server")


@pytest.mark.parametrize("action", ["lower_gamma", "stop"])
def test_format_guard_lowers_gamma_or_stops(tiny, tmp_path, action, caplog):
    def accuracy(prompts, completions, completion_ids=None, **_):
        return [float(i % 2) for i in range(len(completions))]

    def no_format(prompts, completions, completion_ids=None, **_):
        return [0.0] * len(completions)

    no_format.__name__ = "format"
    trainer = trainer_for(tiny, tmp_path, [accuracy, no_format], [0.9, 0.1], max_steps=3,
                          format_guard=action, format_guard_window=1, format_guard_patience=1)
    with caplog.at_level(logging.WARNING, logger="train.tapo"):
        trainer.train()
    assert "format guard" in caplog.text
    gammas = [e["tapo/gamma"] for e in trainer.state.log_history if "tapo/gamma" in e]
    if action == "lower_gamma":
        assert trainer.state.global_step == 3
        assert gammas == pytest.approx([0.01, 0.005, 0.0025])  # logged before each step's halving
        assert trainer.tapo_coef.gamma == pytest.approx(0.00125)
    else:
        assert trainer.state.global_step == 1  # the first step fired the guard: no second step


def test_one_generation_serves_several_updates_as_the_release(tiny, tmp_path):
    """prompts_per_update / rollout_batch_prompts: 2 prompts per update, 6 per generation ->
    3 optimizer updates per generation, the 2nd and 3rd scored against the old policy."""
    calls: list[int] = []

    def accuracy(prompts, completions, completion_ids=None, **_):
        calls.append(len(completions))
        return [float(i % 2) for i in range(len(completions))]  # every group mixed: all kept

    changed: list[bool] = []

    class Watch(TrainerCallback):
        last = None

        def on_step_end(self, args, state, control, model=None, **kwargs):
            now = torch.cat([p.detach().flatten() for p in model.parameters()])
            changed.append(self.last is None or not torch.equal(now, self.last))
            self.last = now.clone()

    trainer = trainer_for(tiny, tmp_path, [accuracy, format_reward], [0.9, 0.1], max_steps=3,
                          prompts_per_update=2, rollout_batch_prompts=6)
    assert (trainer.args.gradient_accumulation_steps, trainer.args.steps_per_generation) == (1, 3)
    trainer.add_callback(Watch())
    trainer.train()
    assert calls == [6 * trainer.num_generations]  # one generation for the three updates
    assert changed == [True, True, True]
    assert all("old_per_token_logps" in chunk for chunk in trainer._buffered_inputs)
