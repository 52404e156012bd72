"""A CSV or JSONL manifest: one image per row with its path, label and (optionally) split.

    path,label,split                      {"path": "img/a.jpg", "label": "Barn Owl", "split": "test"}
    img/a.jpg,Barn Owl,test

--root is the manifest file (.csv, .tsv or .jsonl). Paths are relative to the manifest's
folder (absolute paths work too). Columns: the path in `path` (or the recipe's
`image_column`), the label in the recipe's `label_column` (default `label`), the split in
`split_column` (default `split`, optional: rows without one are "train"; values
train/val/test and their usual spellings).

Classes: a `classes.json` beside the manifest (same format as for ImageFolder, keyed by
"label" or "folder") is the class list, and rows with other labels are quarantined as
`unknown_label`; without it the classes are the distinct labels, sorted. Usage:
`finecot ingest --source manifest --root data/manifest.csv --run DIR`.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path

from curation.ingest.sources.common import (
    Layout,
    RawItem,
    canonical_split,
    dataset_name,
    make_classes,
    read_class_file,
    source_root,
    super_category,
)


def _rows(path: Path) -> list[dict]:
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as err:
                    raise ValueError(f"{path}:{n}: not a JSON object ({err})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{path}:{n}: expected a JSON object, got {line[:80]!r}")
                rows.append(row)
        return rows
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ","))


def read(cfg) -> Layout:
    path = source_root(cfg)
    if path.is_dir():
        raise IsADirectoryError(f"manifest source: --root must be the manifest file, got folder {path}")
    base = path.parent
    dataset = dataset_name(cfg)
    rows = _rows(path)
    columns = set(rows[0]) if rows else set()
    path_col = "path" if "path" in columns else cfg.image_column
    split_col = cfg.split_column or "split"
    if rows and (path_col not in columns or cfg.label_column not in columns):
        raise ValueError(f"{path}: needs columns {path_col!r} and {cfg.label_column!r}; "
                         f"found {sorted(columns)} (set image_column / label_column)")

    def label_of(row: dict) -> str:
        value = row.get(cfg.label_column)
        return "" if value is None else str(value).strip()

    if (base / "classes.json").exists():
        classes, labels = read_class_file(base / "classes.json", dataset, super_category(cfg))
    else:
        names = sorted({label_of(r) for r in rows} - {""})
        classes, labels = make_classes(names, dataset, super_category(cfg))

    def items() -> Iterator[RawItem]:
        for row in rows:
            raw = str(row.get(path_col) or "").strip()
            full = Path(os.path.abspath(base / raw)) if raw else base / "(empty path)"
            try:
                key = full.relative_to(base).as_posix()
            except ValueError:
                key = full.as_posix()
            split = row.get(split_col)
            yield RawItem(key, str(full), label_of(row),
                          canonical_split(split) if split not in (None, "") else "train")

    return Layout(dataset, classes, labels, items(), size=len(rows))
