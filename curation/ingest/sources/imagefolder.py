"""ImageFolder: `root/<class folder>/<image>` (images may sit in sub-folders of a class folder).

Optional files in root:
- classes.json: a list of {"folder", "name", "super_category", "description", "attributes",
  "aliases", "levels"}; only "folder" is required. When present it IS the class list: its
  order is the label order, "name" the readable class name (default: the folder name made
  readable), and images in folders it does not list are quarantined as `unknown_label`.
  Without it, every sub-folder is a class, in sorted order. (`finecot synthetic make`
  writes this file.)
- splits.csv: `path,split` rows (path relative to root, split train/val/test); images it
  does not list are "train". Without it every image is "train" (the split stage then holds
  out test items itself).

Usage: `finecot ingest --source imagefolder --root PATH --run DIR`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from curation.ingest.sources.common import (
    IMAGE_SUFFIXES,
    Layout,
    RawItem,
    canonical_split,
    dataset_name,
    make_classes,
    read_class_file,
    source_root,
    super_category,
    walk_images,
)


def read_splits(path: Path) -> dict[str, str]:
    """splits.csv -> {relative path: split}."""
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "split"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: needs a header with 'path' and 'split' columns")
        return {row["path"].strip().removeprefix("./"): canonical_split(row["split"]) for row in reader}


def read(cfg) -> Layout:
    root = source_root(cfg)
    if not root.is_dir():
        raise NotADirectoryError(f"imagefolder root {root} is not a folder")
    dataset = dataset_name(cfg)
    category = super_category(cfg)
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    notes = []
    if (root / "classes.json").exists():
        classes, labels = read_class_file(root / "classes.json", dataset, category)
        missing = [f for f in labels if f not in folders]
        if missing:
            notes.append(f"{len(missing)} class(es) of classes.json have no folder: {missing[:5]}")
    else:
        classes, labels = make_classes(folders, dataset, category)
    splits = read_splits(root / "splits.csv") if (root / "splits.csv").exists() else {}

    paths = [p for folder in folders for p in walk_images(root / folder)]
    loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        notes.append(f"{len(loose)} image(s) directly in {root} (not in a class folder) skipped")

    def items() -> Iterator[RawItem]:
        for path in paths:
            rel = path.relative_to(root).as_posix()
            yield RawItem(rel, str(path), rel.split("/", 1)[0], splits.get(rel, "train"))

    return Layout(dataset, classes, labels, items(), size=len(paths), notes=notes)
