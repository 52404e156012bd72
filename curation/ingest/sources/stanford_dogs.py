"""Stanford Dogs (120 breeds) from its official `lists/*.mat` files.

    Images/n02085620-Chihuahua/n02085620_10074.jpg
    lists/train_list.mat   file_list (cell of 'n02085620-Chihuahua/n02085620_10074.jpg'),
    lists/test_list.mat    annotation_list, labels (1-based)
    lists/file_list.mat    all images (used for the class list when present)

Classes are the synset folders in label order; 'n02085936-Maltese_dog' -> 'Maltese Dog'
(the Fine-R1 spelling), the folder name kept as an alias. Usage:
`finecot ingest --source stanford_dogs --root PATH --run DIR`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from curation.ingest.sources import matfile
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


def _list(path: Path) -> list[tuple[str, int]]:
    mat = matfile.load(path)
    files = [str(f) for f in matfile.flat(matfile.variable(mat, "file_list", path))]
    labels = [int(v) for v in matfile.flat(matfile.variable(mat, "labels", path))]
    if len(files) != len(labels):
        raise ValueError(f"{path}: {len(files)} files but {len(labels)} labels")
    return list(zip(files, labels, strict=True))


def read(cfg) -> Layout:
    root = source_root(cfg)
    dataset = dataset_name(cfg)
    train = _list(require_file(root, "lists/train_list.mat", "train_list.mat", what="train_list.mat"))
    test = _list(require_file(root, "lists/test_list.mat", "test_list.mat", what="test_list.mat"))
    everything = train + test
    for name in ("lists/file_list.mat", "file_list.mat"):
        if (root / name).exists():
            everything = _list(root / name) + everything
            break

    folder_of: dict[int, str] = {}
    for rel, label in everything:
        folder = rel.split("/", 1)[0]
        if folder_of.setdefault(label, folder) != folder:
            raise ValueError(f"{root}/lists: label {label} names two folders, "
                             f"{folder_of[label]!r} and {folder!r}")
    expected = list(range(1, len(folder_of) + 1))
    if sorted(folder_of) != expected:
        raise ValueError(f"{root}/lists: labels are not 1..{len(folder_of)}: {sorted(folder_of)[:10]}...")
    classes, by_raw = make_classes([folder_of[i] for i in expected], dataset, super_category(cfg),
                                   canonical=title_words)
    labels = {str(i): by_raw[folder_of[i]] for i in expected}
    images = root / "Images"

    def items() -> Iterator[RawItem]:
        for split, rows in (("train", train), ("test", test)):
            for rel, label in rows:
                yield RawItem(f"Images/{rel}", str(images / rel), str(label), split)

    return Layout(dataset, classes, labels, items(), size=len(train) + len(test))
