"""Test fixtures for the export, triplet and report tests: a run directory built from the data
contract (tables as the earlier stages write them, small real image files), and checks that
recompute the dataset card's numbers from the stage tables.

    from export_fixtures import make_run, assert_card_matches_tables, load_config
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from PIL import Image

from curation.core.config import parse_recipe
from curation.core.labels import ClassInfo, Registry
from curation.core.rundir import RunDir

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


def load_config(folder: Path, config: str, cache: Path):
    return datasets.load_dataset(str(folder), config, cache_dir=str(cache))


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
        found = re.search(rf"^\| {re.escape(step)} \| (\d+) \|( [^|\n]+ \|)?$", text, re.M)
        assert found, f"card has no row for {step!r}"
        return int(found.group(1))

    assert table_value("drafts") == len(drafts)
    assert table_value("teacher answered in full") == int((drafts["status"] == "ok").sum())
    assert table_value("cut at max_tokens") == int((drafts["status"] == "length").sum())
    funnel = json.loads(run.path("funnel.json").read_text()) if run.path("funnel.json").exists() else {}
    for step in funnel.get("cascade", [])[1:]:  # every filter, with its drafts left and settings
        assert table_value(f"after {step['filter']}") == step["remaining"]
        row = re.search(rf"^\| {step['filter']} \| [^|]+ \| ([^|]+) \| (\d+) \| (\d+) \|$", text, re.M)
        assert row, f"card has no filter row for {step['filter']}"
        assert int(row.group(2)) == funnel["failed_by_filter"][step["filter"]]
        assert int(row.group(3)) == step["remaining"]
    for key in ("min_words", "max_candidates", "duplicate_threshold", "unseen_mention"):
        if key in funnel.get("settings", {}):
            assert f"{key}={funnel['settings'][key]}" in text
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
