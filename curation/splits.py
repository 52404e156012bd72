"""Seen/unseen class split and the k-shot pool: the `split` stage.

Reads the run's items.parquet + registry.json and writes split.json (the manifest),
pool.parquet (k shots per seen class, what the teacher drafts on) and test.parquet (held-out
items of seen and unseen classes). Run it with `finecot split --run DIR [--mode fine-r1]`.

Two ways to split classes:
- "random": per dataset, classes ranked by a hash of (seed, dataset, class name); the first
  floor(seen_ratio * n) are seen (at least one). A class's rank never depends on the other
  classes, so adding a class moves at most one other class across the seen/unseen boundary.
  With the default 0.6 this floor reproduces the paper's per-dataset counts.
- "fine-r1": the paper's own lists, shipped in curation/data/fine_r1_split.json (derived from
  the Fine-R1 release, MIT License, Copyright the Fine-R1 authors; see the file's attribution).

    >>> registry, lists = fine_r1_registry()
    >>> {name: len(parts["seen"]) for name, parts in lists.items()}["pet"]
    22
    >>> registry.resolve("basset hound", "pet").name
    'Basset Hound'

k-shot pool: per seen class, training items (official_split train or val) ranked by a hash of
(seed, dataset, class name, image sha256); the first k distinct images are the shots. A class
with fewer gives what it has and is listed as short. Test set: the official test items; a
dataset without any test item holds out its training items that are not in the pool (the
manifest's `test_source` says which datasets did), so those item_ids must not be trained on.

Hygiene checks (curation/hygiene.py) are reported in the manifest; they fail the stage only
with `strict`, and then nothing but split_hygiene.json is written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from curation.labels import ClassInfo, Registry

log = logging.getLogger(__name__)

FINE_R1_FILE = Path(__file__).parent / "data" / "fine_r1_split.json"

# Our dataset names (the ingest source kinds) -> the paper's short names. The short names
# are accepted as dataset names too.
FINE_R1_DATASETS: dict[str, str] = {
    "cub200": "bird",
    "stanford_cars": "car",
    "fgvc_aircraft": "aircraft",
    "stanford_dogs": "dog",
    "oxford_flowers": "flower",
    "oxford_pets": "pet",
    **{short: short for short in ("bird", "car", "aircraft", "dog", "flower", "pet")},
}

TRAIN_SPLITS = ("train", "val")

# Called as progress(task, done, total) while long work runs (the CLI draws a rich bar).
Progress = Callable[[str, int, int], None]


class SplitHygieneError(ValueError):
    """Hygiene warnings under strict=True; the message says where the full report is."""


# -- the paper's lists ---------------------------------------------------------------------


@lru_cache(maxsize=1)
def _fine_r1_data() -> dict[str, Any]:
    return json.loads(FINE_R1_FILE.read_text(encoding="utf-8"))


def fine_r1_attribution() -> str:
    """The attribution text that must travel with the paper's lists."""
    return _fine_r1_data()["attribution"]


def fine_r1_lists() -> dict[str, dict[str, list[str]]]:
    """{paper dataset: {"seen": [names], "unseen": [names]}}, names as the paper spells them."""
    data = _fine_r1_data()["datasets"]
    return {ds: {part: list(names) for part, names in parts.items()} for ds, parts in data.items()}


def fine_r1_registry() -> tuple[Registry, dict[str, dict[str, list[str]]]]:
    """A Registry of the paper's own classes, and its seen/unseen lists.

    Class names are spelled as in the paper's eval files; dataset and super_category are the
    paper's short names (aircraft, bird, car, dog, flower, pet); label ids count seen classes
    first, then unseen, in the lists' order.
    """
    lists = fine_r1_lists()
    classes = [
        ClassInfo(label_id, name, dataset, dataset)
        for dataset, parts in lists.items()
        for label_id, name in enumerate(parts["seen"] + parts["unseen"])
    ]
    return Registry(classes), lists
