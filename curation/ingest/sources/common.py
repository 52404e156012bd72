"""What every source layout returns, and the small helpers the layouts share.

A source module turns one dataset on disk into a `Layout`: the class list (ClassInfo,
label_id 0..N-1 in the dataset's official order) and a stream of `RawItem`s (image path,
raw label key, official split). The ingest stage (curation/ingest/stage.py) inspects the images,
joins each item's raw label to its class and writes the item table.

    >>> title_words("black-and-tan_coonhound")
    'Black-and-tan Coonhound'
    >>> canonical_split("Validation")
    'val'
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.core.labels import ClassInfo, readable_name

SPLITS = ("train", "val", "test")

# Spellings of the three official splits found in manifests and HF datasets.
_SPLIT_NAMES = {
    "train": "train", "training": "train", "trainval": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "tst": "test",
}

# Default super-category per source kind; a recipe's `super_category` overrides it.
SUPER_CATEGORY = {
    "cub200": "bird",
    "stanford_cars": "car",
    "fgvc_aircraft": "aircraft",
    "stanford_dogs": "dog",
    "oxford_flowers": "flower",
    "oxford_pets": "pet",
}

# What the images of each source layout may be used for: computed at ingest from the source
# as it was read (and stored in the run's sources.json), so the dataset card says the same
# whichever folder `finecot export` runs from.
SOURCE_LICENSES = {
    "cub200": "CUB-200-2011: research use; images from Flickr under their owners' terms",
    "stanford_cars": "Stanford Cars: non-commercial research use",
    "fgvc_aircraft": "FGVC-Aircraft: non-commercial research purposes only",
    "stanford_dogs": "Stanford Dogs: ImageNet terms (non-commercial research)",
    "oxford_flowers": "Oxford 102 Flowers: research use, no explicit license",
    "oxford_pets": "Oxford-IIIT Pet: CC BY-SA 4.0",
}
USER_DATA = "the user's own data: check its terms before publishing"
SYNTHETIC = "rendered by finecot's synthetic world generator: no third-party rights"


def source_licence(kind: str, root: str | os.PathLike) -> str:
    """The licence line of a source: the synthetic world (its world.json), a known layout's
    terms, or a reminder that the user's own data has its own terms."""
    if (Path(root) / "world.json").is_file():  # made by curation/synthetic/world.py make_world
        return SYNTHETIC
    return SOURCE_LICENSES.get(kind, USER_DATA)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")


@dataclass(frozen=True)
class RawItem:
    """One image as the layout lists it, before anything is read from the image itself.

    key: the item's id inside its dataset (a path relative to the root, posix style).
    path: absolute path of the image file (for HF sources: where ingest writes `data`).
    label: the raw label key, looked up in Layout.labels; an absent key is `unknown_label`.
    split: train | val | test, or anything else for `unknown_split`.
    data: the encoded image bytes, for sources that hold images inside a table (HF).
    """

    key: str
    path: str
    label: str
    split: str
    data: bytes | None = None


@dataclass
class Layout:
    """A dataset read from disk: its classes and its items (an iterator: it streams)."""

    dataset: str
    classes: list[ClassInfo]
    labels: dict[str, int]  # raw label key -> label_id
    items: Iterable[RawItem]
    size: int | None = None  # number of items, when known up front (for progress)
    notes: list[str] = field(default_factory=list)


def dataset_name(cfg: Any) -> str:
    return cfg.dataset or cfg.kind


def super_category(cfg: Any) -> str:
    return cfg.super_category or SUPER_CATEGORY.get(cfg.kind, "object")


def title_words(text: str) -> str:
    """Upper-case the first letter of each space-separated word; the rest is kept."""
    text = readable_name(text)
    return " ".join(w[:1].upper() + w[1:] for w in text.split(" "))


def canonical_split(value: Any) -> str:
    """train/val/test from the usual spellings; anything else comes back unchanged."""
    text = str(value).strip()
    return _SPLIT_NAMES.get(text.lower(), text)


def require_file(root: Path, *candidates: str, what: str) -> Path:
    """The first of `candidates` (relative to root) that exists, or a clear error."""
    for name in candidates:
        path = root / name
        if path.exists():
            return path
    tried = ", ".join(str(root / c) for c in candidates)
    raise FileNotFoundError(f"{what} not found (looked for {tried}); is --root the dataset folder?")


def source_root(cfg: Any) -> Path:
    root = Path(os.path.abspath(os.path.expanduser(cfg.root)))
    if not root.exists():
        raise FileNotFoundError(f"source root {root} does not exist")
    return root


def make_classes(
    raw_names: Iterable[str],
    dataset: str,
    category: str,
    canonical=readable_name,
) -> tuple[list[ClassInfo], dict[str, int]]:
    """ClassInfo per raw name (label_id = position), the raw string kept as an alias."""
    classes, labels = [], {}
    for label_id, raw in enumerate(raw_names):
        name = canonical(raw)
        aliases = (raw,) if raw != name else ()
        classes.append(ClassInfo(label_id, name, dataset, category, aliases))
        labels[raw] = label_id
    return classes, labels


def read_class_file(path: Path, dataset: str, category: str) -> tuple[list[ClassInfo], dict[str, int]]:
    """A classes.json: a list of {"folder" (or "label"), "name", "super_category",
    "description", "attributes", "aliases"}; only the folder/label key is required.

    The file's order is the label order. Each folder/label string is the raw label key and
    becomes an alias when it differs from the readable name.
    """
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable JSON list of classes ({err})") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: expected a JSON list of class objects, got {type(rows).__name__}")
    classes, labels = [], {}
    for i, row in enumerate(rows):
        if isinstance(row, str):
            row = {"folder": row}
        raw = row.get("folder", row.get("label")) if isinstance(row, dict) else None
        if not isinstance(raw, str) or not raw:
            raise ValueError(f"{path}: entry {i} needs a 'folder' (or 'label') string: {row!r}")
        if raw in labels:
            raise ValueError(f"{path}: folder {raw!r} is listed twice")
        name = row.get("name") or readable_name(raw)
        aliases = [raw] if raw != name else []
        aliases += [a for a in row.get("aliases", []) if a not in aliases and a != name]
        classes.append(
            ClassInfo(
                label_id=len(classes),
                name=name,
                dataset=dataset,
                super_category=row.get("super_category") or category,
                aliases=tuple(aliases),
                levels=dict(row.get("levels", {})),
                description=row.get("description", ""),
                attributes=dict(row.get("attributes", {})),
            )
        )
        labels[raw] = len(classes) - 1
    return classes, labels


def walk_images(folder: Path) -> Iterator[Path]:
    """Image files under `folder`, recursively, in sorted (deterministic) order."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith("."):
                yield Path(dirpath) / name
