"""The synthetic world: deterministic files, fine-grained classes, nuisance variation, a
compositional split, and a pixel reader that recovers every attribute.

    .venv/bin/pytest -q tests/test_synthetic_world.py
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from curation.cli import app
from curation.core.config import load_recipe
from curation.core.labels import Registry
from curation.core.tables import read_table
from curation.pipeline import run_recipe
from curation.synthetic.draw import render
from curation.synthetic.read import read_image
from curation.synthetic.world import (
    ATTRIBUTES,
    MAX_CLASSES,
    compositional_split,
    make_world,
    world_classes,
)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = make_world(tmp_path / "a", classes=9, per_class=3, seed=7, size=48)
    make_world(tmp_path / "b", classes=9, per_class=3, seed=7, size=48)
    make_world(tmp_path / "c", classes=9, per_class=3, seed=8, size=48)
    da, db, dc = _digests(tmp_path / "a"), _digests(tmp_path / "b"), _digests(tmp_path / "c")
    assert da == db
    assert len(da) == 9 * 3 + 2  # images + classes.json + world.json
    images = [k for k in da if k.endswith(".png")]
    assert all(da[k] != dc[k] for k in images)  # a new seed draws new images
    assert [c["name"] for c in a] == [c["name"] for c in world_classes(9)]


def test_class_list_contract(synthetic_world):
    classes = json.loads((synthetic_world / "classes.json").read_text())
    world = json.loads((synthetic_world / "world.json").read_text())
    assert world["seed"] == 0 and world["classes"] == len(classes) == 24
    for info in classes:
        assert set(info) == {"folder", "name", "super_category", "description", "attributes", "aliases"}
        assert (synthetic_world / info["folder"]).is_dir()
        assert len(list((synthetic_world / info["folder"]).glob("*.png"))) == 4
        assert set(info["attributes"]) == set(ATTRIBUTES) and len(ATTRIBUTES) >= 5
        for value in info["attributes"].values():  # the description lists every attribute
            assert value.replace("barred", "bar").replace("plain", "no wing bar") in info["description"]
        assert info["name"].endswith(info["super_category"].title())
    kinds = {c["super_category"] for c in classes}
    assert len(kinds) >= 3
    assert all(sum(c["super_category"] == k for c in classes) >= 8 for k in kinds)
    assert len({c["name"] for c in classes}) == len(classes)
    split = world["proposed_split"]
    assert len(split["unseen"]) == 6 and set(split["seen"]) | set(split["unseen"]) == {c["name"] for c in classes}


@pytest.mark.parametrize("count", [24, 40, MAX_CLASSES])
def test_classes_of_a_super_category_differ_in_one_or_two_attributes(count):
    classes = world_classes(count)
    for a, b in itertools.combinations(classes, 2):
        diff = sum(a["attributes"][k] != b["attributes"][k] for k in ATTRIBUTES)
        if a["super_category"] == b["super_category"]:
            assert 1 <= diff <= 2, (a["name"], b["name"])
        else:
            assert diff >= 2  # other super-categories differ in body colour and signature parts


def test_no_two_images_of_a_class_are_identical(synthetic_world):
    for folder in sorted(p for p in synthetic_world.iterdir() if p.is_dir()):
        arrays = [np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]
        for x, y in itertools.combinations(arrays, 2):
            assert np.abs(x.astype(int) - y.astype(int)).mean() > 2  # pose, background, light


def test_compositional_split_hides_only_new_combinations():
    classes = world_classes(36)
    seen, unseen = compositional_split(classes, seen_ratio=0.7, seed=3)
    assert len(unseen) == 36 - round(0.7 * 36) and not set(seen) & set(unseen)
    shown = {(c["super_category"], a, v) for c in classes if c["name"] in seen
             for a, v in c["attributes"].items()}
    for c in classes:
        if c["name"] in unseen:
            assert all((c["super_category"], a, v) in shown for a, v in c["attributes"].items())
    assert compositional_split(classes, 0.7, 3) == (seen, unseen)
    assert compositional_split(classes, 0.7, 4) != (seen, unseen)
    with pytest.raises(ValueError, match="seen_ratio"):
        compositional_split(classes, 1.5, 0)


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="--classes must be between"):
        world_classes(MAX_CLASSES + 1)
    with pytest.raises(ValueError, match="--size"):
        make_world(tmp_path, classes=6, per_class=1, size=8)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_reader_recovers_every_attribute_of_every_class():
    for k, info in enumerate(world_classes(MAX_CLASSES)):
        for j in range(2):
            image = render(info["attributes"], np.random.default_rng([k, j, 11]), 128)
            reading = read_image(_png(image))
            assert reading is not None, info["name"]
            assert reading.super_category == info["super_category"]
            assert reading.attributes == info["attributes"], info["name"]


def test_reader_refuses_images_that_show_no_synthetic_bird():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    blank = np.full((96, 96, 3), 128, np.uint8)
    blobs = np.asarray(Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
                       .resize((96, 96), Image.Resampling.BICUBIC))  # a smooth "photo"
    for array in (noise, blank, blobs):
        assert read_image(_png(Image.fromarray(array))) is None
    with pytest.raises(ValueError, match="not a readable image"):
        read_image(b"not an image")


def test_cli_make_writes_the_world_and_refuses_bad_sizes(tmp_path):
    runner = CliRunner()
    out = tmp_path / "world"
    result = runner.invoke(app, ["synthetic", "make", str(out), "--classes", "6", "--per-class",
                                 "2", "--seed", "1", "--size", "48", "--format", "jpg"])
    assert result.exit_code == 0, result.output
    assert len(list(out.rglob("*.jpg"))) == 12
    assert len(json.loads((out / "classes.json").read_text())) == 6
    result = runner.invoke(app, ["synthetic", "make", str(tmp_path / "x"), "--classes", "500"])
    assert result.exit_code == 2 and "--classes must be between" in result.output


def test_the_world_goes_through_the_normal_ingest_path(synthetic_world, tmp_path):
    recipe = load_recipe(None, ["sources.0.kind=imagefolder", f"sources.0.root={synthetic_world}",
                                "sources.0.dataset=synthetic", f"run_dir={tmp_path / 'run'}"])
    run = run_recipe(recipe, ["ingest"])
    classes = json.loads((synthetic_world / "classes.json").read_text())
    registry = Registry.load(run.registry)
    assert [c.name for c in registry] == [c["name"] for c in classes]
    assert [c.attributes for c in registry] == [c["attributes"] for c in classes]
    assert {c.super_category for c in registry} == {"warbler", "finch", "tern"}
    items = read_table(run.items).to_pylist()
    assert len(items) == 24 * 4 and all(i["width"] == 96 for i in items)
    assert read_table(run.quarantine).num_rows == 0
