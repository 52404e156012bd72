"""A Hugging Face `datasets` dataset: a save_to_disk folder, a loadable local path (a folder
of Parquet/CSV/JSON files or an imagefolder), or a hub id (only when online).

The recipe names the columns: `image_column` (a datasets Image, or a string path relative to
--root) and `label_column` (a ClassLabel: its names become the classes, in label order; or
strings: the distinct values, sorted). The official split comes from the DatasetDict split
name (train / validation / test and their usual spellings), or from `split_column` when set;
`hf_split` reads one split only. Images stored as bytes inside the dataset are written once
to `RUN/images/<dataset>/<split>/<row>.<ext>` by the ingest stage, so every item has a file
path like any other source. Usage:
`finecot ingest --source hf --root ./my_saved_dataset --run DIR --set sources.0.label_column=fine_label`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from curation.ingest.sources.common import (
    Layout,
    RawItem,
    canonical_split,
    dataset_name,
    make_classes,
    super_category,
)

_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG", ".png"), (b"GIF8", ".gif"), (b"BM", ".bmp"),
          (b"RIFF", ".webp"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


def suffix_of(data: bytes, path: str | None) -> str:
    """File suffix for encoded image bytes: from the stored file name, else the magic number."""
    if path and Path(path).suffix:
        return Path(path).suffix.lower()
    return next((ext for magic, ext in _MAGIC if data.startswith(magic)), ".img")


def _load(root: str, split: str | None):
    import datasets  # slow import: only when an HF source is read

    local = Path(os.path.expanduser(root))
    try:
        if local.is_dir() and ((local / "dataset_dict.json").exists() or (local / "state.json").exists()):
            loaded = datasets.load_from_disk(str(local))
        else:
            loaded = datasets.load_dataset(str(local) if local.exists() else root)
    except Exception as err:  # datasets raises many types; all mean "cannot open this"
        hint = "" if local.exists() else " (not a local path: hub ids need HF_HUB_OFFLINE unset and a network)"
        raise ValueError(f"cannot load HF dataset {root!r}{hint}: {err}") from None
    parts = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    if split is not None:
        if split not in parts:
            raise ValueError(f"HF dataset {root!r} has no split {split!r}; it has {sorted(parts)}")
        parts = {split: parts[split]}
    return parts


def read(cfg) -> Layout:
    import datasets

    parts = _load(cfg.root, cfg.hf_split)
    dataset = dataset_name(cfg)
    first = next(iter(parts.values()))
    for column in (cfg.image_column, cfg.label_column, cfg.split_column):
        if column and column not in first.column_names:
            raise ValueError(f"HF dataset {cfg.root!r} has no column {column!r}; columns: "
                             f"{first.column_names} (set image_column / label_column / split_column)")
    feature = first.features[cfg.label_column]
    if isinstance(feature, datasets.ClassLabel):
        raw_names = list(feature.names)
        key_of = {i: name for i, name in enumerate(raw_names)}
    else:
        values = {v for part in parts.values() for v in part[cfg.label_column] if v is not None}
        raw_names = [str(v) for v in sorted(values)]
        key_of = None
    classes, labels = make_classes(raw_names, dataset, super_category(cfg))
    base = Path(os.path.abspath(os.path.expanduser(cfg.root)))

    def items() -> Iterator[RawItem]:
        for split_name, part in parts.items():
            columns = [c for c in (cfg.image_column, cfg.label_column, cfg.split_column) if c]
            part = part.select_columns(columns)
            if isinstance(part.features[cfg.image_column], datasets.Image):
                part = part.cast_column(cfg.image_column, datasets.Image(decode=False))
            for index, row in enumerate(part):
                value, label = row[cfg.image_column], row[cfg.label_column]
                label = "" if label is None else (key_of.get(label, str(label)) if key_of else str(label))
                split = canonical_split(row[cfg.split_column] if cfg.split_column else split_name)
                key = f"{split_name}/{index:07d}"
                if isinstance(value, dict) and value.get("bytes"):
                    data = value["bytes"]
                    yield RawItem(key, key + suffix_of(data, value.get("path")), label, split, data)
                else:
                    path = value.get("path") if isinstance(value, dict) else value
                    full = base / str(path or "(no image)")
                    yield RawItem(key, os.path.abspath(full), label, split)

    size = sum(len(p) for p in parts.values())
    return Layout(dataset, classes, labels, items(), size=size)
