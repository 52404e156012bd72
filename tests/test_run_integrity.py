"""Run integrity between stages: every stage knows what it was built from.

The scenarios of issue 17 (points 1, 3 and 4), on a run directory built from the data
contract (tests/export_fixtures.py) and the real stages and command line:

- split again after drafting: refused (drafts of items the new pool drops), --force
  archives; split while a draft holds the run: refused by the lock;
- filter and export use only the drafts of items in the current pool; an evaluation image
  that is also a training image (same bytes, or a re-encoded copy) refuses the export;
- a reviewer's label correction reaches sft, rl, triplets, EasyR1 and LLaMA-Factory, and
  review-excluded items are never TAPO images;
- a failed draft leaves recipe.yaml byte-identical; manifest.json records each stage.

    .venv/bin/pytest -q tests/test_run_integrity.py
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from export_fixtures import make_run
from PIL import Image
from typer.testing import CliRunner

from curation.cli import app
from curation.core import lineage
from curation.core.config import dump_recipe, parse_recipe
from curation.core.labels import Registry
from curation.core.rundir import RunDir
from curation.export.stage import export_stage
from curation.filter.stage import filter_stage
from curation.ingest.split import make_split
from curation.review.apply import apply_review
from curation.review.push_pull import ANNOTATION_SCHEMA, text_sha256

RED, CRIMSON = "Red Warbler", "Crimson Warbler"


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "2000"})


def rows(folder: Path) -> list[dict]:
    """Every row of an exported config (all its shards), read with pyarrow."""
    return [r for shard in sorted(folder.glob("*.parquet")) for r in pq.read_table(shard).to_pylist()]


def other_pool_seed(run: RunDir, recipe) -> int:
    """A split seed whose pool drops some drafted item (the scenario), found, not assumed."""
    drafted = set(pd.read_parquet(run.path("drafts.parquet"))["item_id"])
    registry = Registry.load(run.registry)
    items = pq.read_table(run.items)
    for seed in range(1, 100):
        cfg = recipe.split.model_copy(update={"seed": seed, "mode": "random"})
        _, pool, _ = make_split(items, registry, cfg)
        if drafted - set(pool.column("item_id").to_pylist()):
            return seed
    raise AssertionError("no seed changes the pool")


# -- point 1: re-splitting after drafts ------------------------------------------------------


def test_split_again_after_drafts_is_refused_and_force_archives(tmp_path):
    run, recipe = make_run(tmp_path)
    run.save_recipe(recipe)
    seed = other_pool_seed(run, recipe)
    before = {n: run.path(n).read_bytes() for n in
              ("drafts.parquet", "accepted.parquet", "pool.parquet", "recipe.yaml")}

    refused = invoke("split", "--run", str(run.root), "--seed", str(seed))
    assert refused.exit_code == 2, refused.output
    assert "drafts.parquet holds drafts of" in refused.output and "--force" in refused.output
    assert "Traceback" not in refused.output
    assert {n: run.path(n).read_bytes() for n in before} == before  # nothing written

    forced = invoke("split", "--run", str(run.root), "--seed", str(seed), "--force")
    assert forced.exit_code == 0, forced.output
    archives = list(run.path("archive").iterdir())
    assert len(archives) == 1 and str(archives[0]) in forced.output.replace("\n", "")
    for name in ("drafts.parquet", "accepted.parquet", "rejected.parquet"):
        assert (archives[0] / name).is_file() and not run.path(name).exists()
    for name in ("drafts.parquet", "accepted.parquet"):
        assert (archives[0] / name).read_bytes() == before[name]  # moved as they were
    assert run.path("pool.parquet").read_bytes() != before["pool.parquet"]
    manifest = json.loads(run.path("manifest.json").read_text())
    assert manifest["stages"]["split"]["settings"]["split"]["seed"] == seed
    assert "filter" not in manifest["stages"]

    again = invoke("split", "--run", str(run.root), "--seed", str(seed))  # no drafts: no refusal
    assert again.exit_code == 0, again.output


def test_split_with_the_same_settings_keeps_the_drafts(tmp_path):
    run, recipe = make_run(tmp_path)
    items = pq.read_table(run.items)
    _, pool, _ = make_split(items, Registry.load(run.registry), recipe.split)
    pool.to_pandas().to_parquet(run.pool)  # the pool the split stage itself makes
    drafts = pd.read_parquet(run.path("drafts.parquet"))
    drafts = drafts[drafts["item_id"].isin(set(pool.column("item_id").to_pylist()))]
    drafts.to_parquet(run.path("drafts.parquet"))
    run.save_recipe(recipe)
    result = invoke("split", "--run", str(run.root))
    assert result.exit_code == 0, result.output
    assert run.path("drafts.parquet").exists() and not run.path("archive").exists()


def test_split_while_a_draft_holds_the_run_is_refused(tmp_path):
    run, recipe = make_run(tmp_path)
    run.save_recipe(recipe)
    pool = run.pool.read_bytes()
    with open(run.path(".draft.lock"), "a+") as held:  # as a running `finecot draft` holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        result = invoke("split", "--run", str(run.root), "--seed", "7")
        filtered = invoke("filter", "--run", str(run.root))
    assert result.exit_code == 3, result.output
    assert "another finecot command (pid 4242)" in result.output
    assert run.pool.read_bytes() == pool and not run.path("archive").exists()
    assert filtered.exit_code == 3 and "pid 4242" in filtered.output


# -- point 1: only the current pool's drafts; no eval image in training ----------------------


def _plant_draft_of(run: RunDir, item: dict, into: str) -> str:
    """A draft row (copied from the table) for `item`, appended to `into`."""
    table = pd.read_parquet(run.path(into))
    row = table.iloc[0].copy()
    for key in ("item_id", "image_path", "image_sha256", "label", "label_id", "super_category"):
        row[key] = item[key]
    row["draft_id"] = f"{item['item_id']}#0#blind"
    pd.concat([table, row.to_frame().T], ignore_index=True).astype(table.dtypes.to_dict()) \
        .to_parquet(run.path(into))
    return row["draft_id"]


def test_filter_and_export_use_only_drafts_of_the_current_pool(tmp_path, caplog):
    run, recipe = make_run(tmp_path)
    test_item = pd.read_parquet(run.test).iloc[0].to_dict()  # an eval image
    planted = _plant_draft_of(run, test_item, "drafts.parquet")
    drafts = len(pd.read_parquet(run.path("drafts.parquet")))

    funnel = filter_stage(recipe, run)
    judged = pd.concat([pd.read_parquet(run.path(n)) for n in ("accepted.parquet", "rejected.parquet")])
    assert planted not in set(judged["draft_id"]) and funnel["drafts"] == drafts - 1
    assert "1 drafts of items not in the current pool" in caplog.text

    # an accepted table from before the pool changed: the export leaves the row out too
    run2, recipe2 = make_run(tmp_path / "two")
    planted2 = _plant_draft_of(run2, pd.read_parquet(run2.test).iloc[0].to_dict(), "accepted.parquet")
    summary = export_stage(recipe2, run2)
    assert planted2 not in {r["id"] for r in rows(run2.path("dataset/data/sft"))}
    assert summary["configs"]["sft"]["rows"] == len(pd.read_parquet(run2.path("accepted.parquet"))) - 1
    skipped = pd.read_parquet(run2.path("export_skipped.parquet"))
    assert planted2 in set(skipped.loc[skipped["reason"] == "not_in_pool", "id"])


def test_export_refuses_an_eval_image_that_is_a_reencoded_training_image(tmp_path):
    # (the fixture's images are flat colour + pixel noise, whose pHash moves more under a
    # resize than a photo's: a wider threshold than the default 4 bits)
    run, recipe = make_run(tmp_path, {"split": {"phash_distance": 8}})
    run.save_recipe(recipe)
    pool = pd.read_parquet(run.pool)
    test = pd.read_parquet(run.test)
    copy = tmp_path / "copy.jpg"  # the first pool image, re-encoded and resized: other bytes
    Image.open(pool["image_path"].iloc[0]).convert("RGB").resize((44, 35)).save(copy, quality=85)
    planted = test.index[0]
    test.loc[planted, "image_path"] = str(copy)
    test.loc[planted, "image_sha256"] = hashlib.sha256(copy.read_bytes()).hexdigest()
    test.to_parquet(run.test)
    with pytest.raises(ValueError, match="also training images") as err:
        export_stage(recipe, run)
    assert test.loc[planted, "item_id"] in str(err.value)
    assert pool["item_id"].iloc[0] in str(err.value) and "near-duplicate" in str(err.value)
    assert not run.path("dataset").exists()

    result = invoke("export", "--run", str(run.root), "--set", "export.eval_overlap=drop")
    assert result.exit_code == 0, result.output
    assert test.loc[planted, "item_id"] not in {r["id"] for r in rows(run.path("dataset/data/eval_open"))}


# -- point 3: corrections everywhere ---------------------------------------------------------

CORRECTED = (
    "<think>Visual analysis: the bird in the photo shows a deep red crown, a dark red breast and "
    "darker wings. It is perched on a thin branch in good light, and the shape of its body and "
    "the pattern of its feathers are clearly visible from the side.\n"
    f"Candidates: {CRIMSON}, {RED}\n"
    f"Comparison: the dark red breast and the darker wings fit the {CRIMSON} much better than the "
    f"{RED}, which would show a brighter red on the head and on the back.\n"
    f"The prediction is: {CRIMSON}</think> <answer>{CRIMSON}</answer>"
)


def _annotation(row: dict, task: int, **fields) -> dict:
    return {"draft_id": row["draft_id"], "response_sha256": text_sha256(row["response"]),
            "task_id": task, "annotation_id": task, "reviewer": "ann@example.org",
            "created_at": "2026-12-07T10:00:00", "updated_at": "2026-12-07T10:00:00",
            "decision": "accept", "reject_reasons": [], "rationale": row["response"],
            "label_wrong": False, "corrected_label": None, "note": None, **fields}


def test_a_label_correction_reaches_every_export_and_excluded_items_are_never_anchors(tmp_path):
    from curation.filter.filters import judge, make_context

    run, recipe = make_run(tmp_path, {"export": {"formats": ["hf", "llamafactory", "easyr1"],
                                                  "rl_image_size": 24}})
    run.save_recipe(recipe)
    accepted = pd.read_parquet(run.path("accepted.parquet")).to_dict("records")
    fixed = next(r for r in accepted if r["label"] == RED)  # the gold was wrong: it is Crimson
    item = fixed["item_id"]
    dropped = next(r for r in accepted if r["label"] == "Blue Warbler")  # a reviewer rejects it
    assert judge({**fixed, "response": CORRECTED, "label": CRIMSON}, make_context(recipe, run)).accepted
    annotations = [
        _annotation(fixed, 1, decision="fix", rationale=CORRECTED, label_wrong=True,
                    corrected_label=CRIMSON),
        _annotation(dropped, 2, decision="reject", reject_reasons=["wrong_class"]),
    ]
    pq.write_table(pa.Table.from_pylist(annotations, schema=ANNOTATION_SCHEMA),
                   run.path("review_annotations.parquet"))
    stats = apply_review(recipe, run)
    assert stats["label_corrections"] >= 1
    export_stage(recipe, run)
    data = run.path("dataset/data")

    sft = [r for r in rows(data / "sft") if r["item_id"] == item]
    assert [r["id"] for r in sft] == [fixed["draft_id"]]  # its other drafts named the old class
    assert sft[0]["label"] == CRIMSON and sft[0]["original_label"] == RED
    assert sft[0]["messages"][2]["content"][0]["text"].endswith(f"<answer>{CRIMSON}</answer>")

    rl = {r["id"]: r for r in rows(data / "rl")}
    assert rl[item]["answer"] == CRIMSON and rl[item]["label"] == CRIMSON
    assert rl[item]["original_label"] == RED and rl[item]["label_corrected_by"] == "ann@example.org"
    pool = pd.read_parquet(run.pool).set_index("item_id")
    label = {i: (CRIMSON if i == item else pool.loc[i, "label"]) for i in pool.index}
    triplets = pd.read_parquet(run.path("triplets.parquet")).set_index("item_id")
    assert label[triplets.loc[item, "positive_item_id"]] == CRIMSON
    assert label[triplets.loc[item, "negative_item_id"]] != CRIMSON
    for anchor, t in triplets.iterrows():  # every triplet follows the corrected classes
        assert label[t["positive_item_id"]] == label[anchor] != label[t["negative_item_id"]]

    excluded = dropped["item_id"]
    assert excluded not in rl and excluded not in set(triplets["positive_item_id"]) | set(
        triplets["negative_item_id"])

    easyr1 = {r["id"]: r for r in pq.read_table(run.path("easyr1/train.parquet")).to_pylist()}
    assert easyr1[item]["answer"] == CRIMSON
    llamafactory = json.loads(run.path("llamafactory/finecot_sft.json").read_text())
    ours = [r for r in llamafactory if r["id"] == fixed["draft_id"]]
    assert ours and ours[0]["messages"][2]["content"].endswith(f"<answer>{CRIMSON}</answer>")
    assert all(not r["id"].startswith(f"{item}#") or r["id"] == fixed["draft_id"] for r in llamafactory)


# -- point 4: recipe.yaml is saved only after the stage succeeds -----------------------------


def test_a_failed_draft_leaves_recipe_yaml_byte_identical(tmp_path):
    run, recipe = make_run(tmp_path)
    run.save_recipe(recipe)
    saved = run.recipe.read_bytes()
    data = run.pool.read_bytes()
    run.pool.write_bytes(data[: len(data) // 2])  # a bad pool: truncated
    result = invoke("draft", "--run", str(run.root), "--model", "other-model",
                    "--base-url", "http://127.0.0.1:9/v1", "--set", "teacher.temperature=0.1")
    assert result.exit_code == 2, result.output
    assert str(run.pool) in result.output and "Traceback" not in result.output
    assert run.recipe.read_bytes() == saved

    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(dump_recipe(parse_recipe({**recipe.model_dump(), "teacher": {
        "model": "other-model", "base_urls": ["http://127.0.0.1:9/v1"]}})))
    result = invoke("run", str(recipe_file), "--stages", "draft")
    assert result.exit_code == 2, result.output
    assert run.recipe.read_bytes() == saved


def test_each_stage_records_what_it_read_and_export_warns_about_stale_tables(tmp_path, caplog):
    run, recipe = make_run(tmp_path)
    filter_stage(recipe, run)
    manifest = lineage.load(run)
    recorded = manifest["stages"]["filter"]
    assert recorded["inputs"]["drafts.parquet"] == lineage.fingerprint(run.path("drafts.parquet"))
    assert recorded["settings"]["filters"]["min_words"] == recipe.filters.min_words
    assert manifest["run_id"]
    shutil.copy(run.path("drafts.parquet"), tmp_path / "keep.parquet")
    drafts = pd.read_parquet(run.path("drafts.parquet"))
    drafts.iloc[:-1].to_parquet(run.path("drafts.parquet"))  # drafts changed after the filter
    export_stage(recipe, run)
    assert "rerun `finecot filter" in caplog.text and "drafts.parquet" in caplog.text
