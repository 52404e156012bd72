"""Stanford Cars (196 classes) from its official devkit `.mat` annotations.

Two official layouts are read:

    devkit layout                               all-in-one layout
      devkit/cars_meta.mat        class_names     cars_annos.mat   class_names + annotations
      devkit/cars_train_annos.mat annotations       (relative_im_path, class, test)
      cars_test_annos_withlabels.mat (or in devkit/)  car_ims/*.jpg
      cars_train/*.jpg  cars_test/*.jpg

`annotations` is a struct array with fname (or relative_im_path), class (1-based) and bbox
fields. Class names are kept as released ('AM General Hummer SUV 2000'); the test split
needs the *_withlabels file (without it, test images are not listed and a note says so).
Usage: `finecot ingest --source stanford_cars --root PATH --run DIR`.
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
)


def _annotations(path: Path) -> tuple[list[str], list[int]]:
    mat = matfile.load(path)
    records = matfile.variable(mat, "annotations", path)
    names = matfile.struct_column(records, "fname", path)
    classes = matfile.struct_column(records, "class", path)
    return [str(n) for n in names], [int(c) for c in classes]


def read(cfg) -> Layout:
    root = source_root(cfg)
    dataset = dataset_name(cfg)
    notes: list[str] = []
    rows: list[tuple[str, int, str]] = []  # (path relative to root, 1-based class, split)
    if (root / "cars_annos.mat").exists():
        path = root / "cars_annos.mat"
        mat = matfile.load(path)
        class_names = [str(n) for n in matfile.flat(matfile.variable(mat, "class_names", path))]
        records = matfile.variable(mat, "annotations", path)
        rel = matfile.struct_column(records, "relative_im_path", path)
        cls = matfile.struct_column(records, "class", path)
        test = matfile.struct_column(records, "test", path)
        rows = [(str(r), int(c), "test" if int(t) else "train") for r, c, t in zip(rel, cls, test, strict=True)]
    else:
        meta = require_file(root, "devkit/cars_meta.mat", "cars_meta.mat", what="cars_meta.mat")
        mat = matfile.load(meta)
        class_names = [str(n) for n in matfile.flat(matfile.variable(mat, "class_names", meta))]
        train = require_file(root, "devkit/cars_train_annos.mat", "cars_train_annos.mat",
                             what="cars_train_annos.mat")
        names, cls = _annotations(train)
        rows += [(f"cars_train/{n}", c, "train") for n, c in zip(names, cls, strict=True)]
        try:
            test = require_file(root, "cars_test_annos_withlabels.mat",
                                "devkit/cars_test_annos_withlabels.mat", what="test labels")
        except FileNotFoundError:
            notes.append("no cars_test_annos_withlabels.mat: test images skipped")
        else:
            names, cls = _annotations(test)
            rows += [(f"cars_test/{n}", c, "test") for n, c in zip(names, cls, strict=True)]

    classes, _ = make_classes(class_names, dataset, super_category(cfg))
    labels = {str(i + 1): i for i in range(len(classes))}

    def items() -> Iterator[RawItem]:
        for rel, cls_id, split in rows:
            yield RawItem(rel, str(root / rel), str(cls_id), split)

    return Layout(dataset, classes, labels, items(), size=len(rows), notes=notes)
