"""CUB-200-2011 in its official layout (Caltech-UCSD Birds, 200 classes, 11,788 images).

    CUB_200_2011/
      images.txt               "<image id> <class folder>/<file>.jpg"
      classes.txt              "<class id> 001.Black_footed_Albatross"
      image_class_labels.txt   "<image id> <class id>"
      train_test_split.txt     "<image id> <1 = train | 0 = test>"
      images/<class folder>/<file>.jpg

--root may be the CUB_200_2011 folder or the folder that holds it. Class names:
'001.Black_footed_Albatross' -> 'Black Footed Albatross' (the Fine-R1 spelling), raw string
kept as an alias. Usage: `finecot ingest --source cub200 --root PATH --run DIR`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from curation.ingest.sources.common import (
    Layout,
    RawItem,
    dataset_name,
    make_classes,
    require_file,
    source_root,
    super_category,
    title_words,
)


def _pairs(path: Path) -> list[tuple[str, str]]:
    """'<id> <value>' lines (value may contain spaces); blank lines skipped."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.strip().partition(" ")
        if not sep:
            raise ValueError(f"{path}:{n}: expected '<id> <value>', got {line!r}")
        rows.append((key, value.strip()))
    return rows


def read(cfg) -> Layout:
    root = source_root(cfg)
    if not (root / "images.txt").exists() and (root / "CUB_200_2011" / "images.txt").exists():
        root = root / "CUB_200_2011"
    images = _pairs(require_file(root, "images.txt", what="CUB images.txt"))
    class_rows = _pairs(require_file(root, "classes.txt", what="CUB classes.txt"))
    labels_of = dict(_pairs(require_file(root, "image_class_labels.txt", what="CUB labels")))
    train_of = dict(_pairs(require_file(root, "train_test_split.txt", what="CUB split file")))

    dataset = dataset_name(cfg)
    # Official order: by class id, which is the order of classes.txt in the release.
    class_rows.sort(key=lambda kv: int(kv[0]))
    classes, by_raw = make_classes([raw for _, raw in class_rows], dataset,
                                   super_category(cfg), canonical=title_words)
    labels = {cid: by_raw[raw] for cid, raw in class_rows}

    def items() -> Iterator[RawItem]:
        for image_id, rel in images:
            flag = train_of.get(image_id, "")
            split = {"1": "train", "0": "test"}.get(flag, f"missing split ({flag!r})")
            yield RawItem(
                key=rel,
                path=str(root / "images" / rel),
                label=labels_of.get(image_id, ""),
                split=split,
            )

    return Layout(dataset, classes, labels, items(), size=len(images))
