"""Oxford-IIIT Pet (37 breeds: 12 cats, 25 dogs) in its official layout.

    images/Abyssinian_100.jpg  american_bulldog_10.jpg ...
    annotations/trainval.txt   "<image name> <class id 1..37> <species 1=cat 2=dog> <breed id>"
    annotations/test.txt       same columns; lines starting with '#' are comments

The breed is the image name without its trailing number: 'american_bulldog' -> class
'American Bulldog' (the Fine-R1 spelling; the raw breed string is an alias), in class-id
order. trainval is the official training split (there is no separate val). The species is
recorded as the class attribute {"species": "cat" | "dog"}. Usage:
`finecot ingest --source oxford_pets --root PATH --run DIR`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from curation.core.labels import ClassInfo
from curation.ingest.sources.common import (
    Layout,
    RawItem,
    dataset_name,
    require_file,
    source_root,
    super_category,
    title_words,
)

_SPECIES = {"1": "cat", "2": "dog"}


def _rows(path: Path) -> list[tuple[str, str, str]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) < 2:
            raise ValueError(f"{path}:{n}: expected '<image> <class id> ...', got {line!r}")
        rows.append((parts[0], parts[1], parts[2] if len(parts) > 2 else ""))
    return rows


def read(cfg) -> Layout:
    root = source_root(cfg)
    dataset = dataset_name(cfg)
    category = super_category(cfg)
    trainval = _rows(require_file(root, "annotations/trainval.txt", what="annotations/trainval.txt"))
    test = _rows(require_file(root, "annotations/test.txt", what="annotations/test.txt"))

    breeds: dict[int, tuple[str, str]] = {}  # class id -> (raw breed, species)
    for image, class_id, species in trainval + test:
        breed = image.rsplit("_", 1)[0]
        if not class_id.isdigit():
            continue  # quarantined as unknown_label below
        known = breeds.setdefault(int(class_id), (breed, _SPECIES.get(species, "")))
        if known[0] != breed:
            raise ValueError(f"{root}/annotations: class id {class_id} names two breeds, "
                             f"{known[0]!r} and {breed!r}")
    ids = sorted(breeds)
    if ids != list(range(1, len(ids) + 1)):
        raise ValueError(f"{root}/annotations: class ids are not 1..{len(ids)}")
    classes = []
    for class_id in ids:
        raw, species = breeds[class_id]
        name = title_words(raw)
        classes.append(ClassInfo(class_id - 1, name, dataset, category,
                                 aliases=(raw,) if raw != name else (),
                                 attributes={"species": species} if species else {}))
    labels = {str(i): i - 1 for i in ids}

    def items() -> Iterator[RawItem]:
        for split, rows in (("train", trainval), ("test", test)):
            for image, class_id, _ in rows:
                rel = f"images/{image}.jpg"
                yield RawItem(rel, str(root / rel), class_id, split)

    return Layout(dataset, classes, labels, items(), size=len(trainval) + len(test))
