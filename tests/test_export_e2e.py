"""Acceptance, end to end: ingest -> split -> draft -> filter -> export on the synthetic world
with the scripted teacher (a real aiohttp server), then every config loaded offline, the
card's numbers recomputed from the tables, and the teacher's confusions measured against
the world's known class attributes."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import datasets
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from export_fixtures import assert_card_matches_tables, load_config

from curation.core.config import parse_recipe


@pytest.fixture(scope="module")
def e2e(synthetic_world, tmp_path_factory):
    """ingest -> split -> draft -> filter -> export on the synthetic world, real teacher server."""
    import os

    from curation.pipeline import run_recipe
    from curation.synthetic.teacher import TeacherServer

    root = tmp_path_factory.mktemp("e2e")
    os.environ.setdefault("OPENAI_API_KEY", "none")  # the scripted teacher ignores it
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
        name: load_config(folder, name, tmp_path)
        for name in ("sft", "rl", "eval_open", "eval_closed")
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
    drafted = dict(
        zip(
            pd.read_parquet(run.path("drafts.parquet"))["item_id"],
            pd.read_parquet(run.path("drafts.parquet"))["question"],
            strict=True,
        )
    )
    assert all(drafted[r["id"]] == r["question"] for r in rl)  # the drafting stage's phrasing
    seen = set(pool["label"])
    assert set(rl["negative_label"]) <= seen  # negatives are training classes, never unseen ones

    closed = loaded["eval_closed"]["test"]
    positions = Counter(closed["answer_index"])
    assert len(positions) >= 3  # shuffled
    for r in closed:
        assert len(set(r["options"])) == 4 and r["options"][r["answer_index"]] == r["answer"]
    # what the card promises: no evaluation image is in the training configs
    train_sha = set(sft["image_sha256"]) | set(rl["image_sha256"])
    assert not train_sha & set(loaded["eval_open"]["test"]["image_sha256"])
    card = " ".join(run.path("dataset/README.md").read_text().split())
    assert "no test image is an image of `sft` or `rl`" in card and "were left out" not in card
    assert_card_matches_tables(run, recipe)


def test_end_to_end_teacher_confusions_beat_random_negatives(e2e, synthetic_world):
    """Acceptance 3 with the teacher's own drafts: the classes it confuses with the gold share
    more attributes with it than a random other class of the same super-category."""
    from curation.core.labels import Registry
    from curation.export.triplets import confusion_counts, method_chain, rank_classes

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


def test_end_to_end_report_reads_the_ledger_clock(e2e):
    import sqlite3

    from curation.export.report import run_stats, write_report

    run, recipe = e2e
    index = write_report(recipe, run)
    stats = run_stats(recipe, run)
    with sqlite3.connect(run.ledger) as conn:
        requests = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    curve = stats["cost_curve"]
    # a test run drafts in seconds: the clock is shown in seconds (minutes, hours for long runs)
    assert curve["x_label"] == "seconds since first request" and len(curve["x"]) == requests
    assert 0 < curve["x"][-1] <= 120
    assert curve["x"] == sorted(curve["x"])
    assert index.read_text().count("data:image/png;base64,") == 7
    card = run.path("dataset/README.md").read_text()
    assert "synthetic | imagefolder" in card and "no third-party rights" in card
