"""Tests of the split stage (curation/ingest/split.py): seen/unseen lists, k-shot pool, hygiene.

Fixtures build a small run directory by hand (items.parquet + registry.json + tiny Pillow
images) following the data contract, so these tests do not depend on the ingest code.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_splits.py
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from curation.cli import app
from curation.core.config import Recipe, load_recipe, parse_recipe
from curation.core.labels import ClassInfo, Registry, normalize
from curation.core.rundir import RunDir
from curation.core.tables import read_table, write_parquet_atomic
from curation.ingest import hygiene
from curation.ingest.split import (
    FINE_R1_DATASETS,
    FINE_R1_FILE,
    SplitHygieneError,
    fine_r1_registry,
    random_sides,
    split_stage,
)

PAPER_COUNTS = {
    "aircraft": (60, 40),
    "bird": (120, 80),
    "car": (117, 79),
    "dog": (72, 48),
    "flower": (61, 41),
    "pet": (22, 15),
}


def test_shipped_fine_r1_lists_have_the_paper_counts_and_attribution():
    data = json.loads(FINE_R1_FILE.read_text(encoding="utf-8"))
    counts = {ds: (len(p["seen"]), len(p["unseen"])) for ds, p in data["datasets"].items()}
    assert counts == PAPER_COUNTS
    assert "PKU-ICST-MIPL/FineR1_ICLR2026" in data["attribution"]
    assert "84cdc5c" in data["attribution"] and "MIT" in data["attribution"]
    assert "ground_truth" in data["derived_from"]
    for parts in data["datasets"].values():
        assert not set(parts["seen"]) & set(parts["unseen"])
        assert len(set(parts["seen"])) == len(parts["seen"])


def test_fine_r1_registry_holds_every_paper_class_once():
    registry, lists = fine_r1_registry()
    assert {ds: (len(p["seen"]), len(p["unseen"])) for ds, p in lists.items()} == PAPER_COUNTS
    assert len(registry) == sum(a + b for a, b in PAPER_COUNTS.values())
    assert registry.datasets == sorted(PAPER_COUNTS)
    for dataset, parts in lists.items():
        for name in parts["seen"] + parts["unseen"]:
            info = registry.resolve(name, dataset)
            assert info is not None and info.name == name
            assert info.super_category == dataset
    # The paper's own basset clash: one seen (pet), one unseen (dog).
    assert "Basset Hound" in lists["pet"]["seen"] and "Basset" in lists["dog"]["unseen"]


# -- fixtures: a hand-built run directory --------------------------------------------------


def _noise_jpeg(path: Path, seed: int, size: int = 48) -> None:
    """A distinct image per seed (smooth random blobs, so JPEG keeps its structure)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC).save(path, quality=90)


def make_run(root: Path, spec: dict[str, dict[str, dict[str, int]]],
             extra_classes: dict[str, list[str]] | None = None) -> RunDir:
    """A run with items.parquet + registry.json: spec = {dataset: {class: {split: count}}}."""
    run = RunDir(root / "run")
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    classes, rows = [], []
    counter = 0
    for dataset, by_class in spec.items():
        names = list(by_class) + list((extra_classes or {}).get(dataset, []))
        for label_id, name in enumerate(names):
            classes.append(ClassInfo(label_id, name, dataset, dataset))
            for split, count in by_class.get(name, {}).items():
                for _ in range(count):
                    counter += 1
                    path = images / f"{counter:05d}.jpg"
                    _noise_jpeg(path, counter)
                    rows.append({
                        "item_id": f"{dataset}/{counter:05d}",
                        "dataset": dataset,
                        "image_path": str(path),
                        "image_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                        "width": 48,
                        "height": 48,
                        "label": name,
                        "label_id": label_id,
                        "super_category": dataset,
                        "official_split": split,
                    })
    Registry(classes).save(run.registry)
    write_parquet_atomic(run.items, pa.Table.from_pylist(rows))
    return run


def recipe(**split) -> Recipe:
    return parse_recipe({"split": split})


def by_class(table: pa.Table) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for row in table.to_pylist():
        out.setdefault(row["label"], []).append(row["item_id"])
    return out


TOY = {"toy": {f"class {i:02d}": {"train": 5, "test": 2} for i in range(10)}}


# -- random mode ---------------------------------------------------------------------------


def test_random_split_pool_and_test_follow_the_contract(tmp_path):
    spec = {"toy": {**TOY["toy"], "rare": {"train": 2, "test": 1}, "tiny": {"val": 1}}}
    run = make_run(tmp_path, spec)
    manifest = split_stage(recipe(k=3, seen_ratio=0.5, seed=7), run)

    lists = manifest["datasets"]["toy"]
    assert len(lists["seen"]) == 6 and len(lists["unseen"]) == 6  # floor(0.5 * 12)
    assert set(lists["seen"]) | set(lists["unseen"]) == set(spec["toy"])
    assert json.loads(run.split.read_text()) == manifest
    assert {"mode", "seed", "seen_ratio", "k", "datasets", "counts", "hygiene"} <= set(manifest)

    pool = read_table(run.pool).to_pylist()
    items = {r["item_id"]: r for r in read_table(run.items).to_pylist()}
    assert all(r["class_split"] == "seen" and r["official_split"] in ("train", "val") for r in pool)
    assert {r["label"] for r in pool} <= set(lists["seen"])
    for label, ids in by_class(read_table(run.pool)).items():
        shots = [r["shot"] for r in pool if r["label"] == label]
        trainable = sum(n for split, n in spec["toy"][label].items() if split != "test")
        assert shots == list(range(len(ids))) and len(ids) == min(3, trainable)
    assert all({k: v for k, v in r.items() if k not in ("class_split", "shot")} == items[r["item_id"]] for r in pool)
    short = {s["class"]: s["available"] for s in manifest["short"]}
    assert short == {c: n for c, n in (("rare", 2), ("tiny", 1)) if c in lists["seen"]}

    test = read_table(run.test).to_pylist()
    assert manifest["test_source"] == {"toy": "official_test"}
    assert sorted(r["item_id"] for r in test) == sorted(i for i, r in items.items() if r["official_split"] == "test")
    for row in test:
        assert row["class_split"] == ("seen" if row["label"] in lists["seen"] else "unseen")
    assert manifest["counts"]["pool"] == len(pool) and manifest["counts"]["test"] == len(test)
    assert manifest["hygiene"]["warnings"] == []


def test_rerun_with_same_seed_is_byte_identical_and_seed_matters(tmp_path):
    run = make_run(tmp_path, TOY)
    split_stage(recipe(seed=3), run)
    first = {p: p.read_bytes() for p in (run.split, run.pool, run.test)}
    split_stage(recipe(seed=3), run)
    assert {p: p.read_bytes() for p in first} == first
    other = split_stage(recipe(seed=4), run)
    assert run.pool.read_bytes() != first[run.pool]
    assert other["seed"] == 4


def test_adding_classes_keeps_the_other_classes_picks(tmp_path):
    small = make_run(tmp_path / "a", TOY)
    before = split_stage(recipe(seed=1, k=2), small)
    more = {"toy": {**TOY["toy"], **{f"new {i}": {"train": 3} for i in range(5)}}}
    big = make_run(tmp_path / "b", more)  # same images for the old classes (same seeds)
    after = split_stage(recipe(seed=1, k=2), big)

    old_sides = {n: s for s in ("seen", "unseen") for n in before["datasets"]["toy"][s]}
    new_sides = {n: s for s in ("seen", "unseen") for n in after["datasets"]["toy"][s]}
    moved = [n for n in old_sides if old_sides[n] != new_sides[n]]
    assert len(moved) <= 1  # one class may cross the boundary, nobody is reshuffled
    sha = lambda run: {r["item_id"]: r["image_sha256"] for r in read_table(run.items).to_pylist()}  # noqa: E731
    picks_a = {c: sorted(sha(small)[i] for i in ids) for c, ids in by_class(read_table(small.pool)).items()}
    picks_b = {c: sorted(sha(big)[i] for i in ids) for c, ids in by_class(read_table(big.pool)).items()}
    for name in picks_a:
        if name in picks_b:
            assert picks_a[name] == picks_b[name]


@settings(max_examples=60, deadline=None)
@given(
    names=st.lists(st.text("abcdefgh ", min_size=1, max_size=12).filter(str.strip),
                   min_size=1, max_size=40, unique_by=normalize),
    extra=st.integers(0, 30), ratio=st.floats(0.05, 1.0), seed=st.integers(0, 2**32),
)
def test_random_sides_count_and_stability(names, extra, ratio, seed):
    def sides(all_names):
        reg = Registry(ClassInfo(i, n, "d", "d") for i, n in enumerate(all_names))
        return random_sides(reg, seed, ratio)["d"]

    before = sides(names)
    assert list(before.values()).count("seen") == max(1, math.floor(ratio * len(names) + 1e-9))
    more = names + [f"zz extra {i}" for i in range(extra)]  # 'z' is not in the names' alphabet
    after = sides(more)
    old_seen = {n for n in names if before[n] == "seen"}
    new_seen = {n for n in names if after[n] == "seen"}
    assert old_seen <= new_seen or new_seen <= old_seen  # classes keep their order: no reshuffle
    if len(more) == len(names) + 1:
        assert len(old_seen ^ new_seen) <= 1


def test_pool_does_not_depend_on_item_order(tmp_path):
    run = make_run(tmp_path, TOY)
    split_stage(recipe(seed=2), run)
    pool = sorted(read_table(run.pool).column("item_id").to_pylist())
    items = read_table(run.items)
    write_parquet_atomic(run.items, items.take(pa.array(list(range(items.num_rows))[::-1])))
    split_stage(recipe(seed=2), run)
    assert sorted(read_table(run.pool).column("item_id").to_pylist()) == pool


def test_dataset_without_test_split_holds_out_non_pool_items(tmp_path):
    spec = {"folder": {f"c{i}": {"train": 6} for i in range(5)}}
    run = make_run(tmp_path, spec)
    manifest = split_stage(recipe(k=4), run)
    pool = set(read_table(run.pool).column("item_id").to_pylist())
    test = read_table(run.test).to_pylist()
    assert manifest["test_source"] == {"folder": "held_out_train"}
    assert len(pool) == 4 * len(manifest["datasets"]["folder"]["seen"])
    assert not pool & {r["item_id"] for r in test}
    assert len(pool) + len(test) == 30
    assert {r["class_split"] for r in test} == {"seen", "unseen"}


def test_exact_duplicates_count_once_in_a_class_pool(tmp_path):
    run = make_run(tmp_path, {"toy": {"only": {"train": 3}}})
    rows = read_table(run.items).to_pylist()
    rows.append({**rows[0], "item_id": "toy/copy"})  # same file, same sha256, second row
    write_parquet_atomic(run.items, pa.Table.from_pylist(rows))
    manifest = split_stage(recipe(k=4), run)
    shas = read_table(run.pool).column("image_sha256").to_pylist()
    assert len(shas) == len(set(shas)) == 3
    assert manifest["short"] == [{"dataset": "toy", "class": "only", "available": 3, "k": 4}]


def test_item_labels_resolve_through_aliases_and_unknown_labels_are_counted(tmp_path):
    run = make_run(tmp_path, {"cub": {"Laysan Albatross": {"train": 2}}})
    Registry([ClassInfo(0, "Laysan Albatross", "cub", "bird", aliases=("002.Laysan_Albatross",))]).save(run.registry)
    rows = read_table(run.items).to_pylist()
    rows[0]["label"] = "002.Laysan_Albatross"
    rows[1]["label"] = "Sooty Albatross"
    write_parquet_atomic(run.items, pa.Table.from_pylist(rows))
    manifest = split_stage(recipe(k=4), run)
    assert read_table(run.pool).column("item_id").to_pylist() == [rows[0]["item_id"]]
    assert manifest["hygiene"]["unknown_label_items"] == 1
    assert any("labels the registry does not know" in w for w in manifest["hygiene"]["warnings"])


# -- hygiene -------------------------------------------------------------------------------


def test_near_duplicate_between_pool_and_test_is_reported_and_strict_fails(tmp_path):
    run = make_run(tmp_path, {"toy": {"a": {"train": 2, "test": 1}, "b": {"train": 2, "test": 1}}})
    split_stage(recipe(k=1, seen_ratio=1.0), run)
    shot = read_table(run.pool).to_pylist()[0]
    rows = read_table(run.items).to_pylist()
    copy = tmp_path / "copy.jpg"  # the shot re-encoded smaller and lower quality
    with Image.open(shot["image_path"]) as im:
        im.resize((40, 40)).save(copy, quality=60)
    rows.append({**shot, "item_id": "toy/leak", "image_path": str(copy),
                 "image_sha256": hashlib.sha256(copy.read_bytes()).hexdigest(), "official_split": "test"})
    write_parquet_atomic(run.items, pa.Table.from_pylist(rows))

    manifest = split_stage(recipe(k=1, seen_ratio=1.0), run)
    pairs = manifest["hygiene"]["near_duplicates"]
    assert [(p["pool"]["item_id"], p["test"]["item_id"]) for p in pairs] == [(shot["item_id"], "toy/leak")]
    assert any("near-duplicate" in w for w in manifest["hygiene"]["warnings"])

    before = run.split.read_bytes()
    with pytest.raises(SplitHygieneError, match="near-duplicate"):
        split_stage(recipe(k=1, seen_ratio=1.0, strict=True), run)
    assert run.split.read_bytes() == before  # a failed strict run leaves the old split alone
    report = json.loads(run.path("split_hygiene.json").read_text())
    assert report["near_duplicates_total"] == 1
    split_stage(recipe(k=1, seen_ratio=1.0), run)
    assert not run.path("split_hygiene.json").exists()


def test_unreadable_image_is_reported_not_fatal(tmp_path):
    run = make_run(tmp_path, {"toy": {"a": {"train": 2, "test": 2}}})
    broken = read_table(run.items).to_pylist()[-1]["image_path"]  # a test item of "a"
    Path(broken).write_bytes(b"not a jpeg")
    manifest = split_stage(recipe(k=1), run)
    assert manifest["hygiene"]["unreadable_images"] == [broken]
    assert read_table(run.test).num_rows == 2


def test_signatures_pair_reencoded_copies_not_other_images_or_colours(tmp_path):
    _noise_jpeg(tmp_path / "a.jpg", 1, size=256)
    _noise_jpeg(tmp_path / "b.jpg", 2, size=256)
    with Image.open(tmp_path / "a.jpg") as im:
        im.resize((120, 120)).save(tmp_path / "a_copy.jpg", quality=60)
    for name, colour, side in (("red", (200, 30, 30), 64), ("red_small", (203, 30, 28), 40),
                               ("blue", (30, 30, 200), 64)):
        Image.new("RGB", (side, side), colour).save(tmp_path / f"{name}.png")
    names = ["a.jpg", "red.png", "b.jpg", "a_copy.jpg", "blue.png", "red_small.png"]
    sigs = hygiene.signatures([tmp_path / n for n in names])
    pairs, total = hygiene.near_duplicates(sigs[:2], sigs[2:], max_distance=4)
    assert [(names[i], names[2 + j]) for i, j, _, _ in pairs] == [
        ("a.jpg", "a_copy.jpg"), ("red.png", "red_small.png")]
    assert total == 2
    # flat images share a pHash whatever their colour: the colour thumbnail tells them apart
    assert sigs[1][0] == sigs[4][0] and hygiene.hamming(sigs[0][0], sigs[2][0]) > 4
    assert hygiene.phash(tmp_path / "missing.jpg") is None
    assert hygiene.near_duplicates(sigs[:2], sigs[2:], 4, limit=1) == (pairs[:1], 2)
    many = [tmp_path / n for n in names] * 50  # long enough for the pool of 2 processes
    assert hygiene.signatures(many) == sigs * 50


def test_name_conflicts_use_whole_words_across_datasets_and_sides():
    entries = [
        ("dogs", "Basset", ("Basset",), "unseen"),
        ("pets", "Basset Hound", ("Basset Hound",), "seen"),
        ("cars", "Ram Van", ("Ram Van",), "seen"),
        ("words", "Ramble", ("Ramble",), "unseen"),       # "ram" is not a whole word of it
        ("dogs", "Basset Hound Mix", ("Basset Hound Mix",), "seen"),  # same dataset: fine
        ("birds", "Beagle", ("Beagle", "Snoopy"), "seen"),
        ("pets", "Snoopy", ("snoopy",), "unseen"),
        ("cats", "Beagle", ("Beagle",), "seen"),          # same side: fine
    ]
    found = {(c["seen"]["class"], c["unseen"]["class"], c["relation"])
             for c in hygiene.name_conflicts(entries)}
    assert found == {("Basset Hound", "Basset", "contains"), ("Beagle", "Snoopy", "same")}


# -- fine-r1 mode --------------------------------------------------------------------------


def _fine_r1_run(tmp_path, extra=None, drop=()) -> RunDir:
    """All six datasets under our names, spelled differently from the paper (case, '_')."""
    ours = {v: k for k, v in FINE_R1_DATASETS.items() if k != v}
    _, lists = fine_r1_registry()
    spec = {}
    for paper, parts in lists.items():
        names = [n for n in parts["seen"] + parts["unseen"] if n not in drop]
        spec[ours[paper]] = {n.lower().replace(" ", "_"): {} for n in names}
        first_seen, first_unseen = parts["seen"][0].lower().replace(" ", "_"), parts["unseen"][0].lower().replace(" ", "_")
        spec[ours[paper]][first_seen] = {"train": 2, "test": 1}
        spec[ours[paper]][first_unseen] = {"test": 1}
    return make_run(tmp_path, spec, extra)


def test_fine_r1_mode_reproduces_the_paper_counts_and_reports_hygiene(tmp_path):
    run = _fine_r1_run(tmp_path)
    manifest = split_stage(recipe(mode="fine-r1", k=2), run)
    counts = {FINE_R1_DATASETS[d]: (c["seen"], c["unseen"]) for d, c in manifest["counts"]["datasets"].items()}
    assert counts == PAPER_COUNTS
    assert manifest["counts"]["seen"] == 452
    assert manifest["fine_r1"]["datasets"]["cub200"] == "bird"
    assert "MIT" in manifest["fine_r1"]["attribution"]
    assert "black_footed_albatross" in manifest["datasets"]["cub200"]["seen"]
    assert read_table(run.pool).num_rows == 12 and read_table(run.test).num_rows == 12
    conflicts = manifest["hygiene"]["name_conflicts"]
    assert [(c["seen"]["dataset"], c["unseen"]["dataset"]) for c in conflicts] == [("oxford_pets", "stanford_dogs")]
    assert manifest["hygiene"]["fine_r1"]["unmatched_registry"] == {}
    with pytest.raises(SplitHygieneError, match="seen in one dataset and unseen in another"):
        split_stage(recipe(mode="fine-r1", strict=True), run)


def test_fine_r1_mode_reports_unmatched_classes_on_both_sides(tmp_path):
    run = _fine_r1_run(tmp_path, extra={"cub200": ["Mystery Bird"]}, drop=("Sooty Albatross",))
    manifest = split_stage(recipe(mode="fine-r1"), run)
    fine = manifest["hygiene"]["fine_r1"]
    assert fine["unmatched_registry"] == {"cub200": ["Mystery Bird"]}
    assert fine["missing_from_registry"] == {"cub200": ["Sooty Albatross"]}
    lists = manifest["datasets"]["cub200"]
    assert "Mystery Bird" not in lists["seen"] + lists["unseen"]
    assert (len(lists["seen"]), len(lists["unseen"])) == (119, 80)


def test_fine_r1_mode_refuses_datasets_the_paper_does_not_cover(tmp_path):
    run = make_run(tmp_path, {"my_parts": {"bolt": {"train": 1}}})
    with pytest.raises(ValueError, match="my_parts.*--mode random"):
        split_stage(recipe(mode="fine-r1"), run)
    run = make_run(tmp_path / "b", {"fgvc_aircraft": {"Boeing": {"train": 1}}})
    with pytest.raises(ValueError, match="no class of dataset 'fgvc_aircraft'"):
        split_stage(recipe(mode="fine-r1"), run)


def _aircraft_run(tmp_path, classes: list[ClassInfo]) -> RunDir:
    run = RunDir(tmp_path / "air")
    Registry(classes).save(run.registry)
    write_parquet_atomic(run.items, pa.Table.from_pylist([], schema=pa.schema(
        [(c, pa.string()) for c in ("item_id", "dataset", "image_path", "image_sha256", "label",
                                    "official_split")])))
    return run


def test_fine_r1_aircraft_matches_variants_with_or_without_the_maker(tmp_path):
    boeing = {"manufacturer": "Boeing", "family": "Boeing 737", "variant": "737-200"}
    run = _aircraft_run(tmp_path, [
        ClassInfo(0, "737-200", "fgvc_aircraft", "aircraft", levels=boeing),  # paper: Boeing 737-200
        ClassInfo(1, "Boeing 737-300", "fgvc_aircraft", "aircraft"),
        ClassInfo(2, "MD-80", "fgvc_aircraft", "aircraft",
                  levels={"manufacturer": "McDonnell Douglas", "variant": "MD-80"}),
    ])
    manifest = split_stage(recipe(mode="fine-r1"), run)
    assert manifest["datasets"]["fgvc_aircraft"] == {
        "seen": ["737-200", "MD-80"], "unseen": ["Boeing 737-300"]}
    assert len(manifest["hygiene"]["fine_r1"]["missing_from_registry"]["fgvc_aircraft"]) == 97
    assert manifest["counts"]["pool"] == manifest["counts"]["test"] == 0

    family = _aircraft_run(tmp_path / "f", [ClassInfo(
        0, "Boeing 737", "fgvc_aircraft", "aircraft",
        levels={"manufacturer": "Boeing", "family": "Boeing 737"})])
    with pytest.raises(ValueError, match="aircraft_level=variant"):
        split_stage(recipe(mode="fine-r1"), family)


# -- compositional mode (the synthetic world's classes) --------------------------------------


def test_compositional_mode_hides_only_new_combinations_of_seen_attributes(tmp_path):
    colours, patterns = ("red", "blue", "green"), ("plain", "barred", "spotted")
    grid = [(c, p) for c in colours for p in patterns]
    run = make_run(tmp_path, {"world": {f"{c} {p} bird": {"train": 1, "test": 1} for c, p in grid}})
    registry = Registry(
        ClassInfo(i, f"{c} {p} bird", "world", "bird", attributes={"colour": c, "pattern": p})
        for i, (c, p) in enumerate(grid)
    )
    registry.save(run.registry)
    manifest = split_stage(recipe(mode="compositional", seen_ratio=0.6, k=1), run)
    lists = manifest["datasets"]["world"]
    assert lists["unseen"] and len(lists["seen"]) + len(lists["unseen"]) == 9
    shown = {(a, v) for c in registry if c.name in lists["seen"] for a, v in c.attributes.items()}
    for name in lists["unseen"]:
        info = registry.resolve(name, "world")
        assert set(info.attributes.items()) <= shown
    assert manifest["seen_ratio"] == 0.6 and manifest["counts"]["pool"] == len(lists["seen"])

    bare = make_run(tmp_path / "bare", TOY)
    with pytest.raises(ValueError, match="needs class attributes"):
        split_stage(recipe(mode="compositional"), bare)


# -- errors and CLI ------------------------------------------------------------------------


def test_missing_inputs_say_which_stage_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="finecot ingest"):
        split_stage(recipe(), RunDir(tmp_path / "empty"))


def test_cli_split_prints_a_summary_and_fails_cleanly_when_strict(tmp_path):
    run = make_run(tmp_path, {"toy": {"a": {"train": 2, "test": 1}, "b": {"train": 2, "test": 1}}})
    runner = CliRunner()
    result = runner.invoke(app, ["split", "--run", str(run.root), "--k", "1", "--seed", "5",
                                 "--seen-ratio", "0.5"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(run.split.read_text())
    assert (manifest["k"], manifest["seed"], manifest["seen_ratio"]) == (1, 5, 0.5)
    assert "toy" in result.output and "total" in result.output and "official_test" in result.output
    assert load_recipe(run.recipe).split.seed == 5  # the run remembers the settings used

    run2 = _fine_r1_run(tmp_path / "fr")
    result = runner.invoke(app, ["split", "--run", str(run2.root), "--mode", "fine-r1", "--strict"])
    assert result.exit_code == 2
    assert "split_hygiene.json" in result.output.replace("\n", "")  # rich wraps long lines
    assert not run2.split.exists()

    run2.save_recipe(recipe(mode="fine-r1", strict=True))  # --no-strict overrides the recipe's
    result = runner.invoke(app, ["split", "--run", str(run2.root), "--no-strict"])
    assert result.exit_code == 0, result.output
    assert "hygiene:" in result.output and run2.split.exists()
    assert "basset" in result.output.lower()

    result = runner.invoke(app, ["split", "--help"])
    assert result.exit_code == 0 and "--strict" in result.output and "pool.parquet" in result.output


def test_a_resplit_takes_image_signatures_from_the_runs_cache(tmp_path):
    """The first split hashes every pool and test image into the run's image cache; the
    next split of the same items reads them from it: it gives the same split.json even when
    the image files have gone, while a cache of another hash version is not trusted."""
    import shutil
    import sqlite3

    from curation.core.image_cache import FILE
    from curation.ingest.hygiene import SIGNATURE_KIND

    run = make_run(tmp_path, TOY)
    split_stage(recipe(k=2, seed=3), run)
    first = run.split.read_bytes()
    db = sqlite3.connect(run.path(FILE))
    cached = db.execute("SELECT COUNT(*) FROM derived WHERE kind = ?", (SIGNATURE_KIND,)).fetchone()[0]
    hashed = read_table(run.pool).num_rows + read_table(run.test).num_rows
    assert cached == hashed > 20
    shutil.move(tmp_path / "images", tmp_path / "elsewhere")  # nothing left to hash
    split_stage(recipe(k=2, seed=3), run)
    assert run.split.read_bytes() == first
    db.execute("UPDATE derived SET kind = 'signature-v0'")  # another version of the hash
    db.commit()
    db.close()
    manifest = split_stage(recipe(k=2, seed=3), run)
    assert len(manifest["hygiene"]["unreadable_images"]) == hashed  # recomputed, not read
