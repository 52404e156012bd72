"""Triplets and hard negatives: measured similarity beats chance on the synthetic world,
every method is recorded, model embeddings come from a local folder, and the paper's own
closed-world options are used when given."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from export_fixtures import make_run

from curation.export import triplets as tri
from curation.export.embed import ModelEmbedder, pixel_embed
from curation.export.stage import export_stage
from curation.synthetic.world import make_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The synthetic world (it knows every class's attributes) as an items table."""
    root = tmp_path_factory.mktemp("world")
    classes = make_world(root, classes=24, per_class=4, seed=0, size=64)
    items = []
    for label_id, info in enumerate(classes):
        for path in sorted((root / info["folder"]).iterdir()):
            items.append(
                {
                    "item_id": path.stem,
                    "dataset": "world",
                    "image_path": str(path),
                    "label": info["name"],
                    "label_id": label_id,
                    "super_category": info["super_category"],
                    "official_split": "train",
                }
            )
    return pd.DataFrame(items), {c["name"]: c for c in classes}


def shared(a: dict, b: dict) -> int:
    return sum(a["attributes"][k] == b["attributes"][k] for k in a["attributes"])


def random_same_super(classes: dict, name: str) -> float:
    """Expected shared attributes with a uniformly random other class of the super-category."""
    sup = classes[name]["super_category"]
    others = [c for n, c in classes.items() if n != name and c["super_category"] == sup]
    return float(np.mean([shared(classes[name], o) for o in others]))


def negatives_vs_random(rankings: dict, classes: dict) -> tuple[float, float]:
    chosen = [shared(classes[label], classes[r.labels[0]]) for (_, label), r in rankings.items()]
    chance = [random_same_super(classes, label) for (_, label) in rankings]
    return float(np.mean(chosen)), float(np.mean(chance))


def test_pixel_negatives_share_more_attributes_than_random(world):
    items, classes = world
    means = tri.similarity_means(items, pixel_embed, per_class=4, seed=0)
    keys = sorted(means)
    super_of = {(d, n): classes[n]["super_category"] for d, n in keys}
    rankings = tri.rank_classes(keys, keys, ["pixels"], super_of=super_of, pixel_means=means)
    assert {r.method for r in rankings.values()} == {"pixels"}
    chosen, chance = negatives_vs_random(rankings, classes)
    assert chosen > chance, (chosen, chance)


def test_confusion_negatives_share_more_attributes_than_random(world):
    """The teacher's confusions: candidates it lists for a class and its wrong answers.

    A teacher that misreads one attribute at a time (what a real one does on a fine-grained
    class) names neighbours of the gold; counting them ranks the neighbours first.
    """
    items, classes = world
    from curation.core.labels import ClassInfo, Registry

    registry = Registry(
        ClassInfo(i, n, "world", c["super_category"]) for i, (n, c) in enumerate(classes.items())
    )
    rng = random.Random(0)
    rows = []
    for name, info in classes.items():
        same = [
            n
            for n, c in classes.items()
            if n != name and c["super_category"] == info["super_category"]
        ]
        near = [n for n in same if shared(info, classes[n]) == len(info["attributes"]) - 1]
        for _ in range(4):
            candidates = [name, *rng.sample(near, min(2, len(near))), rng.choice(same)]
            answer = rng.choice(near) if rng.random() < 0.3 else name
            rows.append(
                {"dataset": "world", "label": name, "candidates": candidates, "answer": answer}
            )
    counts = tri.confusion_counts(pd.DataFrame(rows), registry)
    keys = [("world", n) for n in classes]
    super_of = {k: classes[k[1]]["super_category"] for k in keys}
    rankings = tri.rank_classes(
        keys, keys, ["confusions", "super_category"], super_of=super_of, confusions=counts
    )
    assert {r.method for r in rankings.values()} == {"confusions"}
    chosen, chance = negatives_vs_random(rankings, classes)
    assert chosen > chance, (chosen, chance)


def test_chain_falls_back_and_records_method():
    keys = [("d", "A"), ("d", "B"), ("d", "C"), ("e", "X")]
    super_of = {("d", "A"): "s", ("d", "B"): "t", ("d", "C"): "s", ("e", "X"): "s"}
    counts = {("d", "A"): Counter({"B": 2})}
    rankings = tri.rank_classes(
        keys, keys, ["confusions", "super_category"], super_of=super_of, confusions=counts
    )
    assert rankings[("d", "A")].method == "confusions" and rankings[("d", "A")].labels == ["B", "C"]
    assert rankings[("d", "B")].method == "super_category"
    assert rankings[("d", "C")].labels[0] == "A"  # same super-category first
    assert rankings[("e", "X")].labels == [] and rankings[("e", "X")].method == "none"
    with pytest.raises(ValueError, match="triplet_model"):
        tri.method_chain("model", have_model=False)


def test_triplets_positive_same_class_negative_other_seen_class(tmp_path):
    run, recipe = make_run(tmp_path)
    export_stage(recipe, run)
    pool = pd.read_parquet(run.pool).set_index("item_id")
    triplets = pd.read_parquet(run.path("triplets.parquet"))
    assert len(triplets) == len(pool)
    for t in triplets.itertuples():
        assert t.positive_item_id != t.item_id
        assert pool.loc[t.positive_item_id, "label"] == pool.loc[t.item_id, "label"]
        assert (
            pool.loc[t.negative_item_id, "label"]
            == t.negative_label
            != pool.loc[t.item_id, "label"]
        )
    # the scripted confusions of make_run: red warblers are mistaken for each other
    red = triplets[pool.loc[triplets["item_id"], "label"].to_numpy() == "Red Warbler"]
    assert set(red["negative_label"]) == {"Crimson Warbler"} and set(red["triplet_method"]) == {
        "confusions"
    }


def _tiny_vision_model(folder: Path, kind: str) -> Path:
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        ViTConfig,
        ViTImageProcessor,
        ViTModel,
    )

    if kind == "vit":
        ViTModel(
            ViTConfig(
                image_size=32,
                patch_size=8,
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=64,
            )
        ).save_pretrained(folder)
        ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    else:
        vision = dict(
            image_size=32,
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        )
        text = dict(
            vocab_size=100,
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=16,
        )
        CLIPModel(
            CLIPConfig(vision_config=vision, text_config=text, projection_dim=16)
        ).save_pretrained(folder)
        CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kind", ["vit", "clip"])
def test_model_method_from_a_local_folder(tmp_path, kind):
    model = _tiny_vision_model(tmp_path / kind, kind)
    run, recipe = make_run(tmp_path, {"export": {"triplet_model": str(model)}})
    embedder = ModelEmbedder(model)
    items = pd.read_parquet(run.items)
    vectors = embedder(items["image_path"].tolist()[:3])
    assert vectors.shape[0] == 3 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    export_stage(recipe, run)
    triplets = pd.read_parquet(run.path("triplets.parquet"))
    assert set(triplets["triplet_method"]) == {"model"}
    assert "model: " in run.path("dataset/README.md").read_text()
    with pytest.raises(FileNotFoundError, match="local folder"):
        ModelEmbedder(tmp_path / "nowhere")


def test_fine_r1_options_are_used_and_shuffled(tmp_path):
    run, recipe = make_run(tmp_path)
    test = pd.read_parquet(run.test)
    evald = tmp_path / "fine_r1_eval"
    evald.mkdir()
    lines = []
    for row in test.itertuples():
        parts = Path(row.image_path).parts[-2:]
        others = [
            c
            for c in ["Red Warbler", "Blue Warbler", "Yellow Tang", "Green Warbler"]
            if c != row.label
        ][:3]
        lines.append(
            json.dumps(
                {
                    "image_path": f"root/{parts[0]}/{parts[1]}",
                    "question": "q?",
                    "options": [row.label.upper(), *others],
                    "ground_truth": row.label.upper(),
                }
            )
        )
    # the last image is not in the files; the one before has another gold (a file-name clash)
    clash = json.loads(lines[-2])
    other = "Blue Warbler" if clash["ground_truth"] != "BLUE WARBLER" else "Red Warbler"
    clash["ground_truth"] = clash["options"][0] = other
    lines[-2] = json.dumps(clash)
    (evald / "toy_seen.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    recipe.export.fine_r1_eval = str(evald)
    export_stage(recipe, run)
    closed = pd.read_parquet(next(run.path("dataset/data/eval_closed").glob("*.parquet")))
    methods = closed["options_method"].value_counts().to_dict()
    assert methods.get("fine-r1") == len(test) - 2 and sum(methods.values()) == len(test)
    paper = closed[closed["options_method"] == "fine-r1"]
    for row in paper.itertuples():
        assert row.options[row.answer_index] == row.answer  # gold mapped to the canonical name
        assert set(row.options) - {row.answer} <= {
            "Red Warbler",
            "Blue Warbler",
            "Yellow Tang",
            "Green Warbler",
        }
    assert (paper["answer_index"] != 0).any()  # shuffled: the paper's files always put gold first
    assert "Fine-R1 release, MIT license" in run.path("dataset/README.md").read_text()


def test_dataset_with_one_seen_class_gets_no_triplets_and_says_why():
    pool = pd.DataFrame(
        {
            "item_id": ["a1", "a2", "b1", "b2", "z1"],
            "dataset": ["d"] * 4 + ["solo"],
            "label": ["A", "A", "B", "B", "Z"],
            "label_id": [0, 0, 1, 1, 0],
        }
    )
    keys = [("d", "A"), ("d", "B"), ("solo", "Z")]
    rankings = tri.rank_classes(keys, keys, ["super_category"], super_of=dict.fromkeys(keys, "s"))
    triplets = tri.build_triplets(pool, rankings, seed=0)
    assert sorted(triplets["item_id"]) == ["a1", "a2", "b1", "b2"]
    assert set(triplets.loc[triplets["item_id"].isin(["a1", "a2"]), "negative_label"]) == {"B"}
