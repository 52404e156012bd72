"""The EasyR1 and LLaMA-Factory exports of the demo run, read by those tools' own code.

`finecot demo` (the whole pipeline on the synthetic world) exports with `--format easyr1
--format llamafactory`; the folders are then handed to EasyR1's config, dataset and reward
code and to LLaMA-Factory's argument parser and dataset loader, each in `.venv-trainers`
(tests/third_party.py says what runs there and what cannot). A file that does not fit makes
their code raise, and the check fails with its output.

    .venv/bin/pytest tests/test_trainer_exports.py
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from third_party import CheckFailed, easyr1_source, run_check

from curation.core.labels import Registry
from curation.export.prompts import FINE_R1_SYSTEM, rl_prompt_text
from train.rewards import REWARD_WEIGHTS, format_reward, make_accuracy_reward

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from curation.demo import run_demo
    from curation.export.formats import iter_config
    from train.tiny import build_tiny_model

    out = tmp_path_factory.mktemp("demo") / "run"
    run_demo(out, overrides=["export.formats=[hf,llamafactory,easyr1]"])
    texts = [r["question"] for r in iter_config(out / "dataset", "rl")]
    tiny = build_tiny_model(out.parent / "tiny", texts)
    return out, Path(tiny)


def rows(folder: Path, config: str) -> list[dict]:
    from curation.export.formats import iter_config

    return list(iter_config(folder / "dataset", config))


def responses(run: Path) -> list[tuple[str, str, float]]:
    """(response, gold, expected overall reward): right, wrong class, hedge, no format."""
    registry = Registry.load(run / "registry.json")
    names = [c.name for c in registry]
    gold, other = names[0], names[1]
    think = "<think>Visual analysis: a small bird with a crimson crown.</think>"
    return [
        (f"{think}<answer>{gold}</answer>", gold, 1.0),
        (f"{think}\n<answer>{other}</answer>", gold, 0.1),
        (f"{think}<answer>{gold} or {other}</answer>", gold, 0.1),  # a hedge earns no accuracy
        (f"It is a {gold}.", gold, 0.0),
    ]


# -- the EasyR1 folder -------------------------------------------------------------------------


def test_easyr1_folder_is_complete_and_matches_the_recipes(demo):
    run, _ = demo
    folder = run / "easyr1"
    names = {p.name for p in folder.iterdir()}
    assert names == {"train.parquet", "val.parquet", "format_prompt.jinja", "reward.py",
                     "finecot_matcher.py", "registry.json", "config.yaml", "README.md"}
    # THE matcher, shipped as it is (no copy that could drift), and the reward file as written
    assert (folder / "finecot_matcher.py").read_bytes() == (REPO / "curation/core/labels.py").read_bytes()
    assert (folder / "reward.py").read_bytes() == (REPO / "curation/export/easyr1_reward.py").read_bytes()
    train = pq.read_table(folder / "train.parquet").to_pylist()
    val = pq.read_table(folder / "val.parquet").to_pylist()
    rl, eval_open = rows(run, "rl"), rows(run, "eval_open")
    assert len(train) == len(rl) and len(val) == len(eval_open) > 0
    by_id = {r["id"]: r for r in rl}
    for row in train:
        source = by_id[row["id"]]
        assert row["problem"] == "<image>" + source["question"] and row["answer"] == source["answer"]
        assert row["image_noisy"] == source["positive_images"] and row["image_aug"] == source["negative_images"]
    assert {r["class_split"] for r in val} == {"seen", "unseen"}
    # the release's values, read from the shipped TAPO recipe (not typed again)
    tapo = yaml.safe_load((REPO / "train/recipes/tapo_qwen2_5_vl_3b.yaml").read_text())
    config = yaml.safe_load((folder / "config.yaml").read_text())
    assert config["worker"]["actor"]["optim"]["lr"] == tapo["learning_rate"] == 1e-6
    assert config["worker"]["rollout"]["n"] * 2 == tapo["num_generations"] == 10
    assert (config["worker"]["rollout"]["temperature"], config["worker"]["rollout"]["top_p"]) == (1.0, 0.99)
    assert (config["worker"]["actor"]["clip_ratio_low"], config["worker"]["actor"]["clip_ratio_high"]) == (0.2, 0.28)
    assert config["algorithm"]["filter_low"] == 0.01 and config["algorithm"]["filter_high"] == 0.99
    assert config["algorithm"]["disable_kl"] is True and config["trainer"]["total_epochs"] == 10
    assert config["data"]["rollout_batch_size"] == 384 and config["worker"]["actor"]["global_batch_size"] == 128
    readme = (folder / "README.md").read_text()
    assert "python3 -m verl.trainer.main config=config.yaml" in readme
    assert "worker.actor.is_noisy=true" in readme and "algorithm.kl_prcp_coef=0.01" in readme


def test_easyr1_reward_runs_without_finecot_and_agrees_with_training(demo, tmp_path):
    """reward.py loaded the way EasyR1 loads it, by a Python that cannot import finecot."""
    run, _ = demo
    cases = responses(run)
    script = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('custom_reward_fn', {str(run / 'easyr1/reward.py')!r})\n"
        "module = importlib.util.module_from_spec(spec); sys.modules['custom_reward_fn'] = module\n"
        "spec.loader.exec_module(module)\n"
        f"scores = module.compute_score([{{'response': r, 'response_length': 1, 'ground_truth': g}} for r, g in {[(r, g) for r, g, _ in cases]!r}])\n"
        "print(json.dumps({'scores': scores, 'type': module.REWARD_TYPE,\n"
        "                  'finecot': sorted(m for m in sys.modules if m.split('.')[0] in ('curation', 'train'))}))\n"
    )
    proc = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["type"] == "batch" and out["finecot"] == []
    assert [s["overall"] for s in out["scores"]] == pytest.approx([e for _, _, e in cases])
    # the same numbers finecot's own TAPO reward gives (train/rewards.py, THE matcher)
    registry = Registry.load(run / "registry.json")
    texts, golds = [r for r, _, _ in cases], [g for _, g, _ in cases]
    accuracy = make_accuracy_reward(registry)(None, texts, answer=golds)
    fmt = format_reward(None, texts)
    expected = [REWARD_WEIGHTS[0] * a + REWARD_WEIGHTS[1] * f for a, f in zip(accuracy, fmt, strict=True)]
    assert [s["overall"] for s in out["scores"]] == pytest.approx(expected)


def test_easyr1_reads_the_export_with_its_own_code(demo):
    """EasyR1's PPOConfig, RLHFDataset and AutoRewardManager on the folder, as its README runs it."""
    source = easyr1_source()
    if source is None:
        pytest.skip("EasyR1 is not on PyPI: set EASYR1_SRC or put a snapshot in ../shared/easyr1 "
                    "(tests/third_party.py)")
    run, tiny = demo
    cases = responses(run)
    args = ["--src", source, "--folder", run / "easyr1", "--tokenizer", tiny,
            "--override", f"worker.actor.model.model_path={tiny}",
            *[a for r, g, _ in cases for a in ("--response", f"{r}|||{g}")]]
    result = run_check("easyr1_check.py", *args)
    assert result["format_prompt"] == str(run / "easyr1" / "format_prompt.jinja")
    assert result["reward_function"] == str(run / "easyr1" / "reward.py")
    assert result["reward_function_name"] == "compute_score"
    config = result["config"]
    assert config["worker"]["actor"]["optim"]["lr"] == 1e-6 and config["worker"]["rollout"]["n"] == 5
    assert config["algorithm"]["online_filtering"] is True

    rl = {r["id"]: r for r in rows(run, "rl")}
    train = result["train"]
    assert train["rows"] == train["source_rows"] == len(rl) > 0  # none dropped by its filter
    for item in train["items"]:
        source_row = rl[item["id"]]
        assert item["ground_truth"] == source_row["answer"] and item["images"] == 1
        assert item["extra_images"] == ["image_aug", "image_noisy"]  # the fork's TAPO columns
        # EasyR1's prompt is exactly the one `finecot train tapo` trains with (one prompt)
        ours = source_row["prompt"][0]["content"]
        assert [p["type"] for p in ours] == ["image", "text"]
        assert item["messages"] == [{"role": "user", "content": [
            {"type": "image"}, {"type": "text", "text": ours[1]["text"]}]}]
        assert ours[1]["text"] == rl_prompt_text(source_row["question"])
        assert "<|image_pad|>" in item["prompt_text"] and item["prompt_text"].count("<|vision_start|>") == 1
    val = result["val"]
    assert val["rows"] == val["source_rows"] == len(rows(run, "eval_open"))
    assert result["rewards"]["overall"] == pytest.approx([e for _, _, e in cases])
    assert result["rewards"]["accuracy"] == [1.0, 0.0, 0.0, 0.0]


def test_easyr1_check_fails_on_a_key_easyr1_does_not_know(demo):
    """The check is strict: a config key EasyR1 does not have makes its own code raise."""
    source = easyr1_source()
    if source is None:
        pytest.skip("EasyR1 is not on PyPI: set EASYR1_SRC or put a snapshot in ../shared/easyr1")
    run, tiny = demo
    with pytest.raises(CheckFailed, match="tapo_gamma"):
        run_check("easyr1_check.py", "--src", source, "--folder", run / "easyr1", "--tokenizer",
                  tiny, "--override", "algorithm.tapo_gamma=0.01", "--response", "x|||y")


# -- the LLaMA-Factory folder --------------------------------------------------------------------


def test_llamafactory_reads_the_export_with_its_own_loader(demo, tmp_path):
    run, _ = demo
    folder = run / "llamafactory"
    result = run_check("llamafactory_check.py", "--folder", folder, "--output-dir",
                       tmp_path / "out", "--with-eval")
    # the paper's Stage-1 values, as LLaMA-Factory's own argument classes read them
    args = result["args"]
    assert args["learning_rate"] == 5e-6 and args["lr_scheduler_type"].endswith("COSINE")
    assert args["num_train_epochs"] == 10 and args["bf16"] is True
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] * 4 == 64
    assert args["freeze_vision_tower"] is True and args["freeze_multi_modal_projector"] is True
    assert (args["finetuning_type"], args["template"], args["cutoff_len"]) == ("full", "qwen2_vl", 4096)
    assert result["deepspeed"] == "examples/deepspeed/ds_z3_config.json"
    sft, eval_open = rows(run, "sft"), rows(run, "eval_open")
    train = result["train"]
    assert train["rows"] == len(sft) > 0 and train["missing_images"] == []
    assert train["images_per_row"] == [1]
    first = train["first"]
    assert first["_system"] == FINE_R1_SYSTEM
    assert first["_prompt"][0]["content"].startswith("<image>")
    assert first["_response"][0]["content"].startswith("<think>")
    evals = result["eval"]
    assert evals["rows"] == len(eval_open) and evals["missing_images"] == []
    assert evals["first"]["_response"][0]["content"].startswith("<answer>")


def test_llamafactory_loader_refuses_a_broken_dataset_info(demo, tmp_path):
    """The loader is LLaMA-Factory's: an entry naming a missing file fails there, loudly."""
    run, _ = demo
    broken = tmp_path / "llamafactory"
    subprocess.run(["cp", "-r", str(run / "llamafactory"), str(broken)], check=True)
    info = json.loads((broken / "dataset_info.json").read_text())
    info["finecot_sft"]["file_name"] = "nowhere.json"
    (broken / "dataset_info.json").write_text(json.dumps(info))
    (broken / "train_sft.yaml").write_text(
        (broken / "train_sft.yaml").read_text().replace(str((run / "llamafactory").resolve()), str(broken)))
    with pytest.raises(CheckFailed, match="nowhere.json"):
        run_check("llamafactory_check.py", "--folder", broken, "--output-dir", tmp_path / "out")


def test_reward_module_is_importable_by_path_only():
    """The shipped reward file imports nothing of finecot (it must load on a training box)."""
    spec = importlib.util.find_spec("curation.export.easyr1_reward")
    text = Path(spec.origin).read_text()
    assert "import curation" not in text and "from curation" not in text and "from train" not in text


# -- evaluation on the demo ------------------------------------------------------------------------


def test_eval_limit_samples_seen_and_unseen_classes(demo, tmp_path):
    """`finecot eval run --limit 12` on the demo: a seeded sample over seen and unseen classes,
    never the first 12 rows (one class); the closed-world rows carry their ready prompt."""
    import pandas as pd

    run, tiny = demo
    closed = rows(run, "eval_closed")
    first = {r["label"] for r in closed[:12]}
    assert len(first) < 3  # the export's order: the first rows are one or two classes
    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, "-m", "curation.cli", "eval", "run", "--data",
                           str(run / "dataset"), "--model", str(tiny), "--limit", "12",
                           "--max-new-tokens", "4", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for mode in ("open", "closed"):
        answered = pd.read_parquet(out / f"responses_{mode}.parquet")
        assert len(answered) == 12
        assert set(answered["class_split"]) == {"seen", "unseen"}
        assert answered["label"].nunique() == 12  # one item of each of 12 classes
    from train.eval.evaluate import load_exported, prompt

    for item in load_exported(run / "dataset", "eval_closed", limit=12):
        row = next(r for r in closed if r["id"] == item.id)
        assert row["prompt"] == prompt(item, "closed")  # what `finecot eval` asks, ready to use
        assert all(option in row["prompt"] for option in row["options"])
