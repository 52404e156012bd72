"""Export: Hub folder shards + card, load_dataset offline, other formats round-trip, publish plan.

The run directory here is built directly from the data contract (tables as the earlier
stages write them), with small real image files; `make_run` is reused by test_report.py and
test_triplets.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curation.config import parse_recipe
from curation.export import ShardWriter, export_stage
from curation.labels import ClassInfo, Registry
from curation.rundir import RunDir

# class -> (super-category, colour, seen)
CLASSES = {
    "Red Warbler": ("bird", (220, 30, 30), True),
    "Crimson Warbler": ("bird", (190, 20, 50), True),
    "Blue Warbler": ("bird", (30, 60, 220), True),
    "Green Warbler": ("bird", (40, 200, 60), False),
    "Yellow Tang": ("fish", (235, 220, 40), True),
    "Orange Tang": ("fish", (240, 140, 30), False),
}
K = 2


def _image(path: Path, colour, seed: int, size=(40, 32), fmt="PNG") -> None:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-12, 12, (size[1], size[0], 3)), 0, 255)
    Image.fromarray(pixels.astype("uint8")).save(path, format=fmt)


def _response(think: str, answer: str) -> str:
    return f"<think>{think}</think><answer>{answer}</answer>"


def make_run(root: Path, recipe_overrides: dict | None = None) -> tuple[RunDir, object]:
    """A run directory holding every table the export reads, per the data contract."""
    run = RunDir(root / "run")
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    infos, items = [], []
    for label_id, (name, (sup, colour, _seen)) in enumerate(CLASSES.items()):
        infos.append(ClassInfo(label_id, name, "toy", sup))
        for i in range(6):
            fmt = "JPEG" if i % 2 else "PNG"
            path = images / f"{name.replace(' ', '_')}_{i}.{fmt.lower().replace('jpeg', 'jpg')}"
            _image(path, colour, seed=label_id * 10 + i, size=(40 + i, 32), fmt=fmt)
            items.append(
                {
                    "item_id": f"toy/{label_id}/{i}",
                    "dataset": "toy",
                    "image_path": str(path),
                    "image_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    "width": 40 + i,
                    "height": 32,
                    "label": name,
                    "label_id": label_id,
                    "super_category": sup,
                    "official_split": "test" if i >= 4 else "train",
                }
            )
    registry = Registry(infos)
    registry.save(run.registry)
    items_df = pd.DataFrame(items)
    items_df.to_parquet(run.items)
    pd.DataFrame(
        [
            {
                "dataset": "toy",
                "image_path": "/x/broken.jpg",
                "label": "Red Warbler",
                "reason": "decode_error",
                "detail": "truncated",
            }
        ]
    ).to_parquet(run.quarantine)
    seen = [n for n, v in CLASSES.items() if v[2]]
    unseen = [n for n, v in CLASSES.items() if not v[2]]
    split = {
        "mode": "random",
        "seed": 3,
        "seen_ratio": 0.6,
        "k": K,
        "datasets": {"toy": {"seen": seen, "unseen": unseen}},
        "counts": {},
        "hygiene": {"near_duplicates": 1, "test_in_pool": 0},
    }
    run.split.write_text(json.dumps(split))
    train = items_df[items_df["official_split"] == "train"]
    pool = train[train["label"].isin(seen)].groupby("label").head(K).copy()
    pool["class_split"] = "seen"
    pool["shot"] = pool.groupby("label").cumcount()
    pool.to_parquet(run.pool)
    test = items_df[items_df["official_split"] == "test"].copy()
    test["class_split"] = np.where(test["label"].isin(seen), "seen", "unseen")
    test.to_parquet(run.test)

    # drafts: two samples per pool item; the teacher confuses reds with reds
    drafts = []
    confusion = {
        "Red Warbler": "Crimson Warbler",
        "Crimson Warbler": "Red Warbler",
        "Blue Warbler": "Crimson Warbler",
        "Yellow Tang": "Orange Tang",
    }
    for row in pool.to_dict("records"):
        for s in range(2):
            wrong = s == 1 and row["shot"] == 0
            answer = confusion[row["label"]] if wrong else row["label"]
            strategy = "hinted" if (s == 1 and row["shot"] == 1) else "blind"
            think = (
                f"Visual analysis: a bird. Candidates: {row['label']}, "
                f"{confusion[row['label']]}. Comparison: close. Prediction: {answer}"
            )
            drafts.append(
                {
                    **row,
                    "draft_id": f"{row['item_id']}#{s}#{strategy}",
                    "question": "What kind of bird is this?",
                    "strategy": strategy,
                    "hinted": strategy == "hinted",
                    "teacher_model": "scripted-teacher",
                    "prompt_template": "draft_user",
                    "prompt_sha": "ab" * 32,
                    "sampling": json.dumps(
                        {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512, "seed": 0}
                    ),
                    "sample_index": s,
                    "request_key": f"key{len(drafts)}",
                    "status": "ok" if len(drafts) % 7 else "failed",
                    "error": None,
                    "response": _response(think, answer),
                    "finish_reason": "stop",
                    "prompt_tokens": 100 + s,
                    "completion_tokens": 50 + len(drafts),
                    "cost_usd": 0.001 * (1 + s),
                    "latency_s": 0.5,
                    "think": think,
                    "answer": answer,
                    "visual_analysis": "a bird",
                    "candidates": [row["label"], confusion[row["label"]]],
                    "comparison": "close",
                    "prediction": answer,
                }
            )
    frame = pd.DataFrame(drafts)
    ok = frame["status"] == "ok"
    correct = frame["answer"] == frame["label"]
    frame.drop(
        columns=["think", "answer", "visual_analysis", "candidates", "comparison", "prediction"]
    ).to_parquet(run.path("drafts.parquet"))
    judged = frame[ok].copy()
    judged["verdict"] = np.where(correct[ok], "accepted", "rejected")
    judged["reasons"] = [[] if c else ["wrong_answer"] for c in correct[ok]]
    judged.loc[judged["hinted"] & ~correct[ok], "reasons"] = pd.Series(
        [["wrong_answer", "label_leak"]] * int((judged["hinted"] & ~correct[ok]).sum()),
        index=judged.index[judged["hinted"] & ~correct[ok]],
        dtype=object,
    )
    judged[judged["verdict"] == "accepted"].to_parquet(run.path("accepted.parquet"))
    judged[judged["verdict"] == "rejected"].to_parquet(run.path("rejected.parquet"))
    data = {
        "name": "toy",
        "run_dir": str(run.root),
        "split": {"k": K, "seed": 3},
        "sources": [{"kind": "imagefolder", "root": str(images), "dataset": "toy"}],
    }
    data.update(recipe_overrides or {})
    recipe = parse_recipe(data)
    return run, recipe


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    run, recipe = make_run(
        root,
        {
            "export": {"formats": ["hf", "llamafactory", "easyr1"], "rl_image_size": 24, "seed": 5},
            "draft": {"target_per_class": 3},
        },
    )
    summary = export_stage(recipe, run)
    return run, recipe, summary


def _load(folder: Path, config: str, cache: Path):
    return datasets.load_dataset(str(folder), config, cache_dir=str(cache))


def test_every_config_loads_offline_with_images(exported, tmp_path):
    run, recipe, summary = exported
    folder = run.path("dataset")
    accepted = pd.read_parquet(run.path("accepted.parquet"))
    test = pd.read_parquet(run.test)
    pool = pd.read_parquet(run.pool)
    sft = _load(folder, "sft", tmp_path)["train"]
    assert len(sft) == len(accepted) == summary["configs"]["sft"]["rows"]
    assert isinstance(sft.features["images"].feature, datasets.Image)
    row = sft[0]
    roles = [m["role"] for m in row["messages"]]
    assert roles == ["system", "user", "assistant"]
    assert [p["type"] for p in row["messages"][1]["content"]] == ["image", "text"]
    assistant = row["messages"][2]["content"][0]["text"]
    assert re.fullmatch(r"<think>.+</think>\s*<answer>.+</answer>", assistant, re.S)
    source = accepted.set_index("draft_id").loc[row["id"]]
    assert (
        row["images"][0].tobytes()
        == Image.open(source["image_path"]).convert(row["images"][0].mode).tobytes()
    )
    assert "image_path" not in sft.column_names  # no local paths in the export
    assert {"teacher_model", "prompt_sha", "request_key", "sampling", "hinted"} <= set(
        sft.column_names
    )

    rl = _load(folder, "rl", tmp_path)["train"]
    assert len(rl) == len(pool)
    sizes = {
        img.size
        for r in rl
        for key in ("images", "positive_images", "negative_images")
        for img in r[key]
    }
    assert sizes == {(24, 24)}
    for r in rl:
        assert r["negative_label"] != r["answer"]
        assert r["prompt"][0]["content"][0]["type"] == "image"

    open_ = _load(folder, "eval_open", tmp_path)["test"]
    closed = _load(folder, "eval_closed", tmp_path)["test"]
    assert len(open_) == len(closed) == len(test)
    assert set(closed["class_split"]) == {"seen", "unseen"}
    first_positions = []
    for r in closed:
        assert len(r["options"]) == 4 and len(set(r["options"])) == 4
        assert r["options"][r["answer_index"]] == r["answer"]
        first_positions.append(r["answer_index"])
    assert len(set(first_positions)) > 1  # shuffled: the gold is not always in one place


def test_single_shard_loads_with_parquet_builder(exported, tmp_path):
    run, _, _ = exported
    shard = sorted(run.path("dataset/data/rl").glob("*.parquet"))[0]
    assert re.fullmatch(r"train-00000-of-000\d\d\.parquet", shard.name)
    ds = datasets.load_dataset("parquet", data_files=str(shard), cache_dir=str(tmp_path))["train"]
    assert isinstance(ds.features["negative_images"].feature, datasets.Image)
    assert ds[0]["negative_images"][0].size == (24, 24)


def assert_card_matches_tables(run: RunDir, recipe) -> None:
    """Recompute the card's numbers from the stage tables and find each one in the card."""
    from huggingface_hub import DatasetCard

    text = run.path("dataset/README.md").read_text()
    card = DatasetCard(text)
    configs = {c["config_name"]: c for c in card.data.to_dict()["configs"]}
    assert set(configs) == {"sft", "rl", "eval_open", "eval_closed"}
    assert configs["sft"]["data_files"][0]["path"] == "data/sft/train-*"
    infos = {i["config_name"]: i for i in card.data.to_dict()["dataset_info"]}
    curated = run.path("reviewed.parquet")
    curated = curated if curated.exists() else run.path("accepted.parquet")
    accepted = pd.read_parquet(run.path("accepted.parquet"))
    assert infos["sft"]["splits"][0]["num_examples"] == len(pd.read_parquet(curated))
    assert infos["rl"]["splits"][0]["num_examples"] == len(pd.read_parquet(run.pool))
    assert infos["eval_closed"]["splits"][0]["num_examples"] == len(pd.read_parquet(run.test))

    drafts = pd.read_parquet(run.path("drafts.parquet"))
    rejected = pd.read_parquet(run.path("rejected.parquet"))

    def table_value(step: str) -> int:
        found = re.search(rf"^\| {re.escape(step)} \| (\d+) \|$", text, re.M)
        assert found, f"card has no row for {step!r}"
        return int(found.group(1))

    assert table_value("drafts") == len(drafts)
    assert table_value("teacher answered") == int((drafts["status"] == "ok").sum())
    assert table_value("accepted") == len(accepted)
    reasons = pd.Series([r for rs in rejected["reasons"] for r in rs], dtype=object).value_counts()
    for reason, n in reasons.items():
        assert table_value(reason) == n
    assert f"{drafts['cost_usd'].sum():.4f} USD" in text
    assert f"{int(drafts['prompt_tokens'].sum())} prompt tokens" in text
    assert f"{int(drafts['completion_tokens'].sum())} completion tokens" in text
    for model, n in drafts["teacher_model"].value_counts().items():
        assert f"`{model}` ({n} drafts)" in text
    split = json.loads(run.split.read_text())
    assert f"seed: **{split['seed']}**" in text and f"k = **{split['k']}**" in text
    for dataset, sides in split["datasets"].items():
        assert (
            f"{dataset}: {len(sides['seen'])} seen classes, {len(sides['unseen'])} unseen" in text
        )
    items = pd.read_parquet(run.items)
    for dataset, group in items.groupby("dataset"):
        assert re.search(
            rf"^\| {dataset} \| \w+ \| {len(group)} \| {group['label'].nunique()} \|", text, re.M
        )
    target = recipe.draft.target_per_class or recipe.split.k
    per_class = accepted.groupby(["dataset", "label"]).size()
    short = [
        (d, c)
        for d, sides in split["datasets"].items()
        for c in sides["seen"]
        if per_class.get((d, c), 0) < target
    ]
    assert f"{len(short)} below target" in text
    for dataset, label in short:
        row = rf"^\| {re.escape(label)} \| {dataset} \| {per_class.get((dataset, label), 0)} \|$"
        assert re.search(row, text, re.M), label
    triplets = pd.read_parquet(run.path("triplets.parquet"))
    for method, n in triplets["triplet_method"].value_counts().items():
        assert f"{method}: {n}" in text
    assert run.path("dataset/assets/funnel.png").stat().st_size > 1000
    assert "2602.07605" in text


def test_card_header_and_numbers_match_tables(exported):
    run, recipe, _ = exported
    assert recipe.draft.target_per_class == 3  # above what most classes got: a short list
    assert_card_matches_tables(run, recipe)
    assert "| short class | dataset | accepted |" in run.path("dataset/README.md").read_text()


def test_llamafactory_round_trip(exported, tmp_path):
    run, _, _ = exported
    folder = run.path("llamafactory")
    info = json.loads((folder / "dataset_info.json").read_text())
    entry = info["finecot_sft"]
    assert entry["formatting"] == "sharegpt"
    rows = json.loads((folder / entry["file_name"]).read_text())
    sft = _load(run.path("dataset"), "sft", tmp_path)["train"]
    assert len(rows) == len(sft)
    by_id = {r["id"]: r for r in sft}
    tags = entry["tags"]
    for row in rows:
        messages = row[entry["columns"]["messages"]]
        original = by_id[row["id"]]
        # LLaMA-Factory's reading: an optional system turn first, then user/assistant turns,
        # as many <image> tokens in the text as paths in `images`, paths relative to dataset_dir
        assert messages[0][tags["role_tag"]] == tags["system_tag"]
        assert [m["role"] for m in messages[1:]] == [tags["user_tag"], tags["assistant_tag"]]
        assert sum(m["content"].count("<image>") for m in messages) == len(row["images"]) == 1
        assert messages[1]["content"] == "<image>" + original["question"]
        assert messages[2]["content"] == original["messages"][2]["content"][0]["text"]
        image = Image.open(folder / row["images"][0])
        assert image.tobytes() == original["images"][0].tobytes()


def test_easyr1_round_trip(exported, tmp_path):
    run, _, _ = exported
    ds = datasets.load_dataset(
        "parquet", data_files=str(run.path("easyr1/train.parquet")), cache_dir=str(tmp_path)
    )["train"]
    rl = {r["id"]: r for r in _load(run.path("dataset"), "rl", tmp_path)["train"]}
    assert len(ds) == len(rl)
    for row in ds:
        original = rl[row["id"]]
        # EasyR1 splits `problem` on "<image>" and inserts one image per placeholder
        assert row["problem"].count("<image>") == len(row["images"]) == 1
        assert row["answer"] == original["answer"]
        for ours, theirs in (
            ("images", "images"),
            ("image_noisy", "positive_images"),
            ("image_aug", "negative_images"),
        ):
            assert row[ours][0].tobytes() == original[theirs][0].tobytes()


def test_shards_are_size_bounded_and_named(tmp_path):
    features = datasets.Features(
        {"id": datasets.Value("string"), "images": datasets.List(datasets.Image())}
    )
    blob = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype="uint8")).save(
        blob, "PNG"
    )
    data = blob.getvalue()
    writer = ShardWriter(tmp_path / "c", "train", features, max_bytes=len(data) * 25, group_rows=10)
    for i in range(100):
        writer.write({"id": str(i), "images": [{"bytes": data, "path": f"{i}.png"}]})
    shards = writer.close()
    assert len(shards) >= 4
    assert [s.name for s in shards] == [
        f"train-{i:05d}-of-{len(shards):05d}.parquet" for i in range(len(shards))
    ]
    assert all(s.stat().st_size < len(data) * 25 * 1.2 for s in shards)
    ids = [i for s in shards for i in pq.read_table(s, columns=["id"])["id"].to_pylist()]
    assert ids == [str(i) for i in range(100)]
    assert not list((tmp_path / "c").glob(".*"))


def test_missing_image_is_skipped_with_reason(tmp_path):
    run, recipe = make_run(tmp_path)
    accepted = pd.read_parquet(run.path("accepted.parquet"))
    victim = accepted.iloc[0]["image_path"]
    test = pd.read_parquet(run.test)
    assert victim not in set(test["image_path"])
    Path(victim).unlink()
    summary = export_stage(recipe, run)
    skipped = pd.read_parquet(run.path("export_skipped.parquet"))
    assert set(skipped["reason"]) == {"image_missing"}
    n_victim = int((accepted["image_path"] == victim).sum())
    assert summary["configs"]["sft"]["rows"] == len(accepted) - n_victim
    assert (skipped["config"] == "sft").sum() == n_victim
    assert (skipped["config"] == "rl").sum() >= 1  # the anchor is in the pool
    assert run.path("dataset/README.md").exists()


def test_failed_export_keeps_previous_dataset(tmp_path):
    run, recipe = make_run(tmp_path)
    export_stage(recipe, run)
    before = run.path("dataset/README.md").read_text()
    pq.write_table(pa.table({"item_id": ["x"]}), run.pool)  # a pool without the contract columns
    with pytest.raises(ValueError, match="lacks columns"):
        export_stage(recipe, run)
    assert run.path("dataset/README.md").read_text() == before


def test_reviewed_table_is_the_sft_source_once_review_ran(tmp_path):
    run, recipe = make_run(tmp_path)
    accepted = pd.read_parquet(run.path("accepted.parquet"))
    reviewed = accepted.iloc[1:].copy()  # the reviewer excluded the first row
    reviewed["review_status"] = ["fixed"] + ["accepted"] * (len(reviewed) - 1)
    reviewed.loc[reviewed.index[0], "think"] = "Edited by a reviewer: crimson crown, golden breast."
    reviewed.to_parquet(run.path("reviewed.parquet"))
    summary = export_stage(recipe, run)
    assert summary["configs"]["sft"]["rows"] == len(reviewed)
    sft = pd.read_parquet(next(run.path("dataset/data/sft").glob("*.parquet")))
    assert accepted.iloc[0]["draft_id"] not in set(sft["id"])
    edited = sft.set_index("id").loc[reviewed.iloc[0]["draft_id"]]
    assert "Edited by a reviewer" in edited["messages"][2]["content"][0]["text"]
    assert edited["review_status"] == "fixed"
    text = run.path("dataset/README.md").read_text()
    assert f"| kept after review | {len(reviewed)} |" in text
    assert "fixed: 1" in text


def test_publish_plan_checks_the_folder_and_token(exported, tmp_path, monkeypatch):
    from curation.publish import hf_token, plan_publish

    run, _, _ = exported
    folder = run.path("dataset")
    plan = plan_publish(folder, "someone/toy-cot")
    assert plan.private and not plan.resumable
    names = {p.relative_to(folder).as_posix() for p in plan.files}
    assert "README.md" in names and "assets/funnel.png" in names
    assert sum(n.startswith("data/") for n in names) == 4
    assert plan.total_bytes == sum(p.stat().st_size for p in plan.files)
    assert plan_publish(folder, "someone/toy-cot", large_bytes=1000).resumable

    with pytest.raises(ValueError, match="OWNER/NAME"):
        plan_publish(folder, "no-owner")
    with pytest.raises(FileNotFoundError, match="finecot export"):
        plan_publish(tmp_path, "someone/x")
    broken = tmp_path / "broken"
    (broken / "data").mkdir(parents=True)
    (broken / "README.md").write_text((folder / "README.md").read_text())
    with pytest.raises(FileNotFoundError, match="no file matches"):
        plan_publish(broken, "someone/x")

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    with pytest.raises(ValueError, match="HF_TOKEN"):
        hf_token()
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    assert hf_token() == "hf_secret_value"
    assert "hf_secret_value" not in (folder / "README.md").read_text()


def test_cli_export_report_publish_dry_run(tmp_path):
    from typer.testing import CliRunner

    from curation.cli import app

    run, recipe = make_run(tmp_path)
    run.save_recipe(recipe)  # later stages start from the run's saved recipe
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--run", str(run.root), "--format", "easyr1"])
    assert result.exit_code == 0, result.output
    output = result.output.replace("\n", "")  # rich wraps long paths
    assert str(run.path("dataset/README.md")) in output
    assert run.path("easyr1/train.parquet").exists()
    result = runner.invoke(app, ["report", "--run", str(run.root)])
    assert result.exit_code == 0 and run.path("report/index.html").exists()
    result = runner.invoke(app, ["publish", "me/toy", "--run", str(run.root), "--dry-run"])
    assert result.exit_code == 0 and "private" in result.output
    result = runner.invoke(app, ["export", "--run", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "finecot" in result.output  # names the stage to run first


def test_empty_config_is_left_out_of_the_header(tmp_path):
    from huggingface_hub import DatasetCard

    run, recipe = make_run(tmp_path)
    accepted = pq.read_table(run.path("accepted.parquet"))
    pq.write_table(accepted.slice(0, 0), run.path("accepted.parquet"))  # nothing accepted
    summary = export_stage(recipe, run)
    assert summary["configs"]["sft"] == {"split": "train", "rows": 0, "bytes": 0, "shards": 0}
    card = DatasetCard(run.path("dataset/README.md").read_text())
    assert {c["config_name"] for c in card.data.to_dict()["configs"]} == {
        "rl",
        "eval_open",
        "eval_closed",
    }
    assert "(empty: not declared" in card.text
    rl = _load(run.path("dataset"), "rl", tmp_path)["train"]
    assert len(rl) == len(pd.read_parquet(run.pool))


# -- acceptance: the whole pipeline on the synthetic world with the scripted teacher -------


@pytest.fixture(scope="module")
def e2e(synthetic_world, tmp_path_factory):
    """ingest -> split -> draft -> filter -> export on the synthetic world, real teacher server."""
    import os
    import shutil

    from curation.pipeline import run_recipe
    from curation.synthetic.teacher import TeacherServer

    root = tmp_path_factory.mktemp("e2e")
    os.environ.setdefault("OPENAI_API_KEY", "none")  # the scripted teacher ignores it
    # The scripted teacher takes the first "Candidates: ..." line of the prompt as the list to
    # choose from, and the system template's format example is such a line ("..."); until the
    # two agree, draft with a copy of the templates whose example line says it differently.
    prompts = root / "prompts"
    shutil.copytree(Path(__file__).resolve().parents[1] / "prompts", prompts)
    system = prompts / "draft_system.jinja"
    system.write_text(
        system.read_text().replace("\nCandidates: ...\n", "\nCandidates (a list): ...\n")
    )
    with TeacherServer(perception_error_rate=0.3, world=str(synthetic_world)) as server:
        recipe = parse_recipe(
            {
                "name": "synthetic-e2e",
                "run_dir": str(root / "run"),
                "stages": ["ingest", "split", "draft", "filter", "export"],
                "sources": [
                    {"kind": "imagefolder", "root": str(synthetic_world), "dataset": "synthetic"}
                ],
                "split": {"mode": "compositional", "k": 2, "seed": 0, "seen_ratio": 0.75},
                "teacher": {
                    "base_urls": [server.base_url],
                    "model": "finecot-synthetic-teacher",
                    "concurrency": 8,
                    "max_attempts": 2,
                    "backoff_s": 0,
                },
                "draft": {"samples": 3},
                "prompts": {"directory": str(prompts)},
                "export": {"rl_image_size": 64, "formats": ["hf", "llamafactory", "easyr1"]},
            }
        )
        run = run_recipe(recipe)
    return run, recipe


def test_end_to_end_every_config_loads_and_matches_the_tables(e2e, tmp_path):
    run, recipe = e2e
    folder = run.path("dataset")
    accepted = pd.read_parquet(run.path("accepted.parquet"))
    pool = pd.read_parquet(run.pool)
    test = pd.read_parquet(run.test)
    assert len(accepted) > 0 and len(pool) > 0 and set(test["class_split"]) == {"seen", "unseen"}
    loaded = {
        name: _load(folder, name, tmp_path) for name in ("sft", "rl", "eval_open", "eval_closed")
    }
    assert len(loaded["sft"]["train"]) == len(accepted)
    assert len(loaded["rl"]["train"]) == len(pool)
    assert len(loaded["eval_open"]["test"]) == len(loaded["eval_closed"]["test"]) == len(test)

    sha_of = dict(zip(accepted["draft_id"], accepted["image_sha256"], strict=True))
    table = pq.read_table(sorted(folder.glob("data/sft/*.parquet"))[0], columns=["id", "images"])
    for row in table.to_pylist():  # the embedded bytes are the ingested file, unchanged
        assert hashlib.sha256(row["images"][0]["bytes"]).hexdigest() == sha_of[row["id"]]
    sft = loaded["sft"]["train"]
    assert isinstance(sft.features["images"].feature, datasets.Image)
    assert sft[0]["images"][0].size == (96, 96)
    assert {"prompt_sha", "teacher_model", "request_key", "verdict", "reasons"} <= set(
        sft.column_names
    )

    rl = loaded["rl"]["train"]
    sizes = {
        im.size for r in rl for k in ("images", "positive_images", "negative_images") for im in r[k]
    }
    assert sizes == {(64, 64)}
    seen = set(pool["label"])
    assert set(rl["negative_label"]) <= seen  # negatives are training classes, never unseen ones

    closed = loaded["eval_closed"]["test"]
    positions = Counter(closed["answer_index"])
    assert len(positions) >= 3  # shuffled
    for r in closed:
        assert len(set(r["options"])) == 4 and r["options"][r["answer_index"]] == r["answer"]
    assert_card_matches_tables(run, recipe)


def test_end_to_end_teacher_confusions_beat_random_negatives(e2e, synthetic_world):
    """Acceptance 3 with the teacher's own drafts: the classes it confuses with the gold share
    more attributes with it than a random other class of the same super-category."""
    from curation.labels import Registry
    from curation.triplets import confusion_counts, method_chain, rank_classes

    run, _ = e2e
    classes = {c["name"]: c for c in json.loads((synthetic_world / "classes.json").read_text())}
    judged = pd.concat(
        [pd.read_parquet(run.path(n)) for n in ("accepted.parquet", "rejected.parquet")]
    )
    counts = confusion_counts(judged, Registry.load(run.registry))
    keys = sorted(k for k, c in counts.items() if c)
    assert len(keys) >= 6
    every = [("synthetic", n) for n in classes]
    rankings = rank_classes(
        keys,
        every,
        ["confusions"],
        super_of={k: classes[k[1]]["super_category"] for k in every},
        confusions=counts,
    )

    def shared(a: str, b: str) -> int:
        return sum(
            classes[a]["attributes"][k] == classes[b]["attributes"][k]
            for k in classes[a]["attributes"]
        )

    chosen = np.mean([shared(k[1], rankings[k].labels[0]) for k in keys])
    chance = np.mean(
        [
            np.mean(
                [
                    shared(k[1], o)
                    for o in classes
                    if o != k[1] and classes[o]["super_category"] == classes[k[1]]["super_category"]
                ]
            )
            for k in keys
        ]
    )
    assert chosen > chance, (chosen, chance)
    assert method_chain("auto", have_model=False)[0] == "confusions"
