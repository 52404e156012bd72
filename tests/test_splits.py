"""Tests of the split stage (curation/splits.py): seen/unseen lists, k-shot pool, hygiene.

Fixtures build a small run directory by hand (items.parquet + registry.json + tiny Pillow
images) following the data contract, so these tests do not depend on the ingest code.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_splits.py
"""

from __future__ import annotations

import json

from curation.splits import FINE_R1_FILE, fine_r1_registry

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
