"""Every source layout, from a miniature copy of its official files to the item table and
registry (tests/layouts.py builds them); plus the `finecot ingest` command and its reruns."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import layouts
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.core.config import Recipe, SourceConfig
from curation.core.labels import Registry, match
from curation.core.rundir import RunDir
from curation.ingest.stage import ITEM_SCHEMA, QUARANTINE_SCHEMA, ingest_stage


def ingest(tmp_path: Path, workers: int = 0, **source) -> tuple[list[dict], Registry, RunDir]:
    run = RunDir(tmp_path / "run")
    report = ingest_stage(Recipe(sources=[SourceConfig(**source)]), run, workers=workers)
    items = pq.read_table(run.items)
    assert items.schema == ITEM_SCHEMA
    assert pq.read_table(run.quarantine).schema == QUARANTINE_SCHEMA
    assert report.items == items.num_rows
    return items.to_pylist(), Registry.load(run.registry), run


def check_items(rows: list[dict], expected: list[layouts.Expected], dataset: str, category: str) -> None:
    """Every field of every row, against what the layout builder wrote."""
    assert len(rows) == len(expected)
    for row, exp in zip(rows, expected, strict=True):
        assert row["item_id"] == f"{dataset}/{exp.key}"
        assert row["dataset"] == dataset
        assert Path(row["image_path"]).is_absolute()
        assert Path(row["image_path"]).samefile(exp.path)
        assert row["image_sha256"] == hashlib.sha256(exp.path.read_bytes()).hexdigest()
        assert (row["width"], row["height"]) == exp.size
        assert (row["label"], row["label_id"]) == (exp.name, exp.label_id)
        assert row["super_category"] == category
        assert row["official_split"] == exp.split


def test_cub200(tmp_path):
    root, expected = layouts.make_cub(tmp_path / "data")
    rows, registry, _ = ingest(tmp_path, kind="cub200", root=str(root))
    check_items(rows, expected, "cub200", "bird")
    assert [c.name for c in registry] == [name for _, name in layouts.CUB_CLASSES]
    ani = registry.get("cub200", 2)
    assert ani.aliases == ("004.Groove_billed_Ani",) and ani.super_category == "bird"
    assert match("a groove-billed ani", "Groove Billed Ani", registry).correct


def test_stanford_cars_devkit(tmp_path):
    root, expected = layouts.make_cars(tmp_path / "cars")
    rows, registry, _ = ingest(tmp_path, kind="stanford_cars", root=str(root), dataset="cars")
    check_items(rows, expected, "cars", "car")
    assert [c.name for c in registry] == layouts.CAR_CLASSES  # kept as released
    assert {r["official_split"] for r in rows} == {"train", "test"}


@pytest.mark.parametrize("level", ["variant", "family", "manufacturer"])
def test_fgvc_aircraft_levels(tmp_path, level):
    root, expected = layouts.make_aircraft(tmp_path, level)
    rows, registry, _ = ingest(tmp_path, kind="fgvc_aircraft", root=str(root), aircraft_level=level)
    check_items(rows, expected, "fgvc_aircraft", "aircraft")
    boeing = registry.get("fgvc_aircraft", 1)
    if level == "variant":
        assert boeing.name == "Boeing 727-200" and "727-200" in boeing.aliases
        assert boeing.levels == {"manufacturer": "Boeing", "family": "Boeing 727",
                                 "variant": "Boeing 727-200"}
        assert registry.get("fgvc_aircraft", 2).levels["family"] == "Airbus A310"
        assert registry.get("fgvc_aircraft", 3).name == "MD-80"
    elif level == "family":
        assert boeing.levels == {"manufacturer": "Boeing", "family": "Boeing 727"}
        assert registry.get("fgvc_aircraft", 2).name == "Airbus A310"
    else:
        assert [c.name for c in registry] == ["Boeing", "Airbus", "McDonnell Douglas"]
    assert {r["official_split"] for r in rows} == {"train", "val", "test"}


def test_stanford_dogs(tmp_path):
    root, expected = layouts.make_dogs(tmp_path / "dogs")
    rows, registry, _ = ingest(tmp_path, kind="stanford_dogs", root=str(root))
    check_items(rows, expected, "stanford_dogs", "dog")
    maltese = registry.get("stanford_dogs", 1)
    assert (maltese.name, maltese.aliases) == ("Maltese Dog", ("n02085936-Maltese_dog",))


def test_oxford_flowers_standard_names(tmp_path):
    root, expected = layouts.make_flowers(tmp_path / "flowers")
    rows, registry, _ = ingest(tmp_path, kind="oxford_flowers", root=str(root))
    check_items(rows, expected, "oxford_flowers", "flower")
    assert len(registry) == 102
    assert registry.get("oxford_flowers", 0).name == "pink primrose"
    assert registry.get("oxford_flowers", 101).name == "blackberry lily"
    assert registry.resolve("ball moss", "oxford_flowers").name == "air plant"


def test_oxford_pets(tmp_path):
    root, expected = layouts.make_pets(tmp_path / "pets")
    rows, registry, _ = ingest(tmp_path, kind="oxford_pets", root=str(root))
    check_items(rows, expected, "oxford_pets", "pet")
    assert [c.attributes["species"] for c in registry] == ["cat", "dog", "dog"]
    assert registry.get("oxford_pets", 2).aliases == ("german_shorthaired",)


def test_imagefolder_with_class_file_and_splits(tmp_path):
    root, expected = layouts.make_imagefolder(tmp_path / "folder")
    rows, registry, _ = ingest(tmp_path, kind="imagefolder", root=str(root), dataset="birds")
    warbler = registry.get("birds", 0)
    # Items come in sorted folder order; classes in classes.json order.
    assert [r["item_id"] for r in rows] == sorted(f"birds/{e.key}" for e in expected)
    rows.sort(key=lambda r: r["label_id"])
    check_items(rows[:3], expected[:3], "birds", "warbler")  # super_category from classes.json
    check_items(rows[3:], expected[3:], "birds", "object")  # the default for a user dataset
    assert warbler.description == "red crown" and warbler.attributes == {"crown": "crimson"}
    assert warbler.aliases == ("crimson_warbler", "red warbler")
    assert registry.get("birds", 1).name == "azure finch"
    assert match("a red warbler", "Crimson-crowned Warbler", registry).correct


def test_imagefolder_plain(tmp_path):
    root, expected = layouts.make_imagefolder(tmp_path / "folder", class_file=False, split_file=False)
    rows, registry, _ = ingest(tmp_path, kind="imagefolder", root=str(root), super_category="bird")
    check_items(sorted(rows, key=lambda r: r["label_id"]), sorted(expected, key=lambda e: e.label_id),
                "imagefolder", "bird")
    assert [c.name for c in registry] == ["azure finch", "crimson warbler"]  # sorted folders


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_manifest(tmp_path, fmt):
    path, expected = layouts.make_manifest(tmp_path / "m", fmt)
    rows, registry, _ = ingest(tmp_path, kind="manifest", root=str(path))
    check_items(rows, expected, "manifest", "object")
    assert [c.name for c in registry] == ["Barn Owl", "Snowy Owl"]


def test_hf_save_to_disk(tmp_path):
    root, expected = layouts.make_hf(tmp_path / "hf")
    rows, registry, run = ingest(tmp_path, kind="hf", root=str(root), label_column="fine_label",
                                 dataset="hfbirds", super_category="bird")
    assert [c.name for c in registry] == ["Black footed Albatross", "Laysan Albatross"]  # case kept
    assert len(rows) == len(expected)
    for row, exp in zip(rows, expected, strict=True):
        path = Path(row["image_path"])
        assert path.is_relative_to(run.root.resolve() / "images" / "hfbirds")
        assert path.read_bytes() == exp["bytes"] and path.suffix == ".png"
        assert row["item_id"] == f"hfbirds/{exp['key']}"
        assert row["image_sha256"] == hashlib.sha256(exp["bytes"]).hexdigest()
        assert (row["width"], row["height"]) == exp["size"]
        assert row["label_id"] == exp["label_id"] and row["official_split"] == exp["split"]
        assert row["label"] == registry.get("hfbirds", exp["label_id"]).name


def test_synonyms_and_several_sources_share_one_registry(tmp_path):
    cub, _ = layouts.make_cub(tmp_path / "cub")
    dogs, _ = layouts.make_dogs(tmp_path / "dogs")
    synonyms = tmp_path / "syn.yaml"
    synonyms.write_text("Laysan Albatross: [moli]\n'Black Footed Albatross': blackfoot\n")
    recipe = Recipe(sources=[SourceConfig(kind="cub200", root=str(cub), synonyms=str(synonyms)),
                             SourceConfig(kind="stanford_dogs", root=str(dogs))])
    run = RunDir(tmp_path / "run")
    report = ingest_stage(recipe, run, workers=2)  # the process pool path
    registry = Registry.load(run.registry)
    assert registry.datasets == ["cub200", "stanford_dogs"] and report.classes == 6
    assert registry.resolve("moli").name == "Laysan Albatross"
    assert registry.resolve("blackfoot").name == "Black Footed Albatross"
    table = pq.read_table(run.items).to_pylist()
    assert report.datasets == {"cub200": {"items": 9}, "stanford_dogs": {"items": 9}}
    assert len({r["item_id"] for r in table}) == 18


def test_two_sources_with_one_dataset_name_is_an_error(tmp_path):
    cub, _ = layouts.make_cub(tmp_path / "cub")
    recipe = Recipe(sources=[SourceConfig(kind="cub200", root=str(cub)),
                             SourceConfig(kind="cub200", root=str(cub))])
    with pytest.raises(ValueError, match="own `dataset` name"):
        ingest_stage(recipe, RunDir(tmp_path / "run"))


def test_wrong_root_says_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="CUB images.txt not found"):
        ingest_stage(Recipe(sources=[SourceConfig(kind="cub200", root=str(tmp_path))]),
                     RunDir(tmp_path / "run"))


def test_cli_ingest_and_identical_rerun(tmp_path):
    root, expected = layouts.make_cub(tmp_path / "data")
    runner = CliRunner()
    args = ["ingest", "--source", "cub200", "--root", str(root), "--run", str(tmp_path / "run")]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert "9 items" in first.output
    files = ("items.parquet", "quarantine.parquet", "registry.json", "recipe.yaml")
    before = {f: (tmp_path / "run" / f).read_bytes() for f in files}
    second = runner.invoke(app, args)
    assert second.exit_code == 0, second.output
    assert {f: (tmp_path / "run" / f).read_bytes() for f in files} == before
    rows = pq.read_table(tmp_path / "run" / "items.parquet").to_pylist()
    check_items(rows, expected, "cub200", "bird")
    assert json.loads(before["registry.json"])[0]["name"] == "Black Footed Albatross"
    assert not list((tmp_path / "run").glob("*.tmp"))  # no leftovers; the run lock stays
    assert [p.name for p in (tmp_path / "run").glob(".*")] == [".draft.lock"]


@pytest.mark.parametrize("kind", sorted(layouts.BUILDERS))
def test_cli_every_source_and_identical_rerun(tmp_path, kind):
    root, expected = layouts.BUILDERS[kind](tmp_path / "data")
    args = ["ingest", "--source", kind, "--root", str(root), "--run", str(tmp_path / "run"),
            *(["--set", "sources.0.label_column=fine_label"] if kind == "hf" else [])]
    runner = CliRunner()
    results = []
    for _ in range(2):
        outcome = runner.invoke(app, args)
        assert outcome.exit_code == 0, outcome.output
        results.append({f: (tmp_path / "run" / f).read_bytes()
                        for f in ("items.parquet", "quarantine.parquet", "registry.json")})
    assert results[0] == results[1]
    assert pq.read_table(tmp_path / "run" / "items.parquet").num_rows == len(expected) > 0


def test_cli_wrong_root_is_a_clear_error(tmp_path):
    outcome = CliRunner().invoke(app, ["ingest", "--source", "stanford_dogs", "--root",
                                       str(tmp_path), "--run", str(tmp_path / "run")])
    assert outcome.exit_code == 2
    assert "train_list.mat not found" in outcome.output


def test_hf_parquet_folder_with_string_labels_and_paths(tmp_path):
    """A loadable local path (Parquet files per split), labels as strings, images as paths."""
    import datasets

    data = tmp_path / "pq"
    for split, labels in (("train", ["wren", "robin", "wren"]), ("test", ["robin"])):
        paths = []
        for i, _ in enumerate(labels):
            layouts.write_image(data / "img" / f"{split}_{i}.jpg")
            paths.append(f"img/{split}_{i}.jpg")
        datasets.Dataset.from_dict({"file": paths, "species": labels}).to_parquet(
            str(data / "data" / f"{split}-00000-of-00001.parquet"))
    rows, registry, _ = ingest(tmp_path, kind="hf", root=str(data), image_column="file",
                               label_column="species")
    assert [c.name for c in registry] == ["robin", "wren"]
    assert [(r["label"], r["label_id"], r["official_split"]) for r in rows] == [
        ("wren", 1, "train"), ("robin", 0, "train"), ("wren", 1, "train"), ("robin", 0, "test")]
    assert [Path(r["image_path"]) for r in rows] == [
        data / "img" / n for n in ("train_0.jpg", "train_1.jpg", "train_2.jpg", "test_0.jpg")]
    assert rows[0]["item_id"] == "hf/train/0000000"


def test_hf_missing_column_names_the_columns(tmp_path):
    root, _ = layouts.make_hf(tmp_path / "hf")
    with pytest.raises(ValueError, match=r"no column 'label'.*fine_label"):
        ingest(tmp_path, kind="hf", root=str(root))


def test_an_empty_dataset_is_an_error_and_writes_nothing(tmp_path):
    (tmp_path / "folder" / "only_class").mkdir(parents=True)
    with pytest.raises(ValueError, match="lists no images"):
        ingest(tmp_path, kind="imagefolder", root=str(tmp_path / "folder"))
    assert not (tmp_path / "run" / "items.parquet").exists()
