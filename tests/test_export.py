"""Export: Hub folder shards + card, load_dataset offline, other formats round-trip, publish plan.

The run directory comes from tests/export_fixtures.py (built from the data contract); the
whole pipeline on the synthetic world is in tests/test_export_e2e.py.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from export_fixtures import assert_card_matches_tables, load_config, make_run
from PIL import Image

from curation.export.shards import ShardWriter
from curation.export.stage import export_stage


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


def test_every_config_loads_offline_with_images(exported, tmp_path):
    run, recipe, summary = exported
    folder = run.path("dataset")
    accepted = pd.read_parquet(run.path("accepted.parquet"))
    test = pd.read_parquet(run.test)
    pool = pd.read_parquet(run.pool)
    sft = load_config(folder, "sft", tmp_path)["train"]
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

    rl = load_config(folder, "rl", tmp_path)["train"]
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

    open_ = load_config(folder, "eval_open", tmp_path)["test"]
    closed = load_config(folder, "eval_closed", tmp_path)["test"]
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
    sft = load_config(run.path("dataset"), "sft", tmp_path)["train"]
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
    rl = {r["id"]: r for r in load_config(run.path("dataset"), "rl", tmp_path)["train"]}
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
    assert "1 fixed (edited, then filtered" in text
    assert f"**{len(reviewed)} were reviewed**" in text and "**0 were not**" in text
    # with review apply's numbers (review_stats.json): every count as it wrote them
    stats = {"rows": 9, "reviewed": 4, "unreviewed": 5, "accepted": 2, "fixed": 1, "rejected": 1,
             "flagged": 0, "label_corrections": 1, "rejected_by_reason": {"wrong_traits": 1}}
    run.path("review_stats.json").write_text(json.dumps(stats))
    export_stage(recipe, run)
    text = run.path("dataset/README.md").read_text()
    assert "4 of the 9 curated\nrationales were then reviewed by people (5 were not)" in text
    assert "Of the 9 rationales the filters accepted, **4 were reviewed**" in text
    assert "**5 were not**" in text and "2 accepted as written, 1 fixed" in text
    assert "**1 excluded** (1 rejected by a reviewer,\n0 flagged" in text
    assert "**1 gold labels corrected**" in text and "wrong_traits: 1." in text


def test_card_passes_the_hub_metadata_checks_and_names_every_licence(exported):
    from curation.export.card import check_card

    run, _, _ = exported
    text = run.path("dataset/README.md").read_text()
    data = check_card(text).data
    assert (data.license, data.license_name, data.license_link) == ("other", "finecot-mixed-sources", "LICENSE.md")
    terms = run.path("dataset/LICENSE.md").read_text()
    drafts = pd.read_parquet(run.path("drafts.parquet"))
    for model in drafts["teacher_model"].unique():  # the rationales' terms are the teacher's
        assert f"`{model}`" in terms and f"`{model}`" in text.split("**The rationales**")[1][:300]
    assert "terms of use" in text and "finecot\nclaims no rights" in text
    for name in ("license_name: finecot-mixed-sources\n", "license_link: LICENSE.md\n"):
        with pytest.raises(ValueError, match="license_name and license_link"):
            check_card(text.replace(name, ""))  # `other` alone is what the Hub refuses
    with pytest.raises(ValueError, match="lower-case"):
        check_card(text.replace("license_name: finecot-mixed-sources", "license_name: Mixed Sources"))
    with pytest.raises(ValueError):  # datasets' own reader of the configs field
        check_card(text.replace("    path: data/sft/train-*", "    pattern: data/sft/train-*", 1))


def test_publish_plan_checks_the_folder_and_token(exported, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    from curation.export.publish import hf_token, plan_publish, upload_call

    run, _, _ = exported
    folder = run.path("dataset")
    plan = plan_publish(folder, "someone/toy-cot")
    assert plan.private and not plan.resumable
    names = {p.relative_to(folder).as_posix() for p in plan.files}
    assert "README.md" in names and "assets/funnel.png" in names
    assert sum(n.startswith("data/") for n in names) == 4
    assert plan.total_bytes == sum(p.stat().st_size for p in plan.files)
    large = plan_publish(folder, "someone/toy-cot", large_bytes=1000)
    assert large.resumable
    for p in (plan, large):  # the method the upload will call exists in this huggingface_hub
        assert callable(getattr(HfApi, upload_call(p)))

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
    rl = load_config(run.path("dataset"), "rl", tmp_path)["train"]
    assert len(rl) == len(pd.read_parquet(run.pool))


def test_evaluation_images_identical_to_training_ones_refuse_or_are_dropped(tmp_path):
    from curation.core.config import parse_recipe
    from curation.export.overlap import TrainEvalOverlap

    run, recipe = make_run(tmp_path)
    pool = pd.read_parquet(run.pool)
    test = pd.read_parquet(run.test)
    test.loc[test.index[:2], "image_sha256"] = pool["image_sha256"].iloc[:2].to_numpy()  # a leak
    test.to_parquet(run.test)
    with pytest.raises(TrainEvalOverlap, match="2 evaluation image") as err:
        export_stage(recipe, run)
    assert all(item in str(err.value) for item in test["item_id"].iloc[:2])
    assert not run.path("dataset").exists()  # nothing written

    dropping = parse_recipe({**recipe.model_dump(), "export": {"eval_overlap": "drop"}})
    summary = export_stage(dropping, run)
    assert summary["eval_in_train"] == 2
    assert summary["configs"]["eval_open"]["rows"] == len(test) - 2
    assert "**2 test images that showed a training image were left out**" in (
        run.path("dataset/README.md").read_text().replace("\n", " "))


@pytest.mark.parametrize("fit", ["letterbox", "stretch"])
def test_triplet_images_keep_their_proportions_unless_stretched(tmp_path, fit):
    from curation.export.shards import LETTERBOX_GREY, resized_cell

    wide = tmp_path / "wide.png"
    Image.new("RGB", (200, 100), (200, 30, 30)).save(wide)  # a 2:1 red image
    cell = resized_cell(str(wide), 64, fit)
    pixels = np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB")).astype(int)
    assert pixels.shape == (64, 64, 3)
    red = (np.abs(pixels - (200, 30, 30)).sum(axis=2) < 30).all(axis=1)  # rows that are all red
    if fit == "stretch":
        assert red.all()
    else:  # 64 x 32 of red in the middle, grey above and below: the 2:1 shape survives
        assert red.sum() in range(30, 35) and red[16:48].all()
        assert (np.abs(pixels[:14] - LETTERBOX_GREY).sum(axis=2) < 30).all()
