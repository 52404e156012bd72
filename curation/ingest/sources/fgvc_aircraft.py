"""FGVC-Aircraft (2013b) in its official layout: 100 variants, 70 families, 30 manufacturers.

    fgvc-aircraft-2013b/data/
      variants.txt  families.txt  manufacturers.txt        one name per line (official order)
      images_variant_{train,val,test}.txt                  "<image id> <variant>"
      images_family_{train,val,test}.txt                   "<image id> <family>"
      images_manufacturer_{train,val,test}.txt             "<image id> <manufacturer>"
      images/<image id>.jpg

--root may be the `data` folder or the folder above it. The recipe's `aircraft_level`
(variant | family | manufacturer) chooses which level is the class; every class records
the levels above it in `levels`. Names: Boeing and Airbus variants and families are
released without the maker ('727-200', 'A310'); the class name adds it ('Boeing 727-200',
'Airbus A310'), as the Fine-R1 evaluation files spell them, and keeps the bare string as an
alias. Other names are kept as released ('MD-80', 'Cessna 172').

The released images carry a 20-pixel copyright banner at the bottom; ingest keeps the
file as it is (crop it in a later stage if wanted).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from curation.core.labels import ClassInfo
from curation.ingest.sources.common import (
    SPLITS,
    Layout,
    RawItem,
    dataset_name,
    require_file,
    source_root,
    super_category,
)

LEVELS = ("manufacturer", "family", "variant")
_MAKER_PREFIXED = ("Boeing", "Airbus")  # makers whose model numbers are released bare


def _names(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _labels(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        image_id, _, name = line.strip().partition(" ")
        if image_id:
            rows.append((image_id, name.strip()))
    return rows


def display_name(name: str, maker: str) -> str:
    """'727-200' of Boeing -> 'Boeing 727-200'; 'MD-80' stays.

    >>> display_name("A310", "Airbus"), display_name("Boeing 717", "Boeing")
    ('Airbus A310', 'Boeing 717')
    """
    if maker in _MAKER_PREFIXED and not name.startswith(maker):
        return f"{maker} {name}"
    return name


def read(cfg) -> Layout:
    root = source_root(cfg)
    if not (root / "variants.txt").exists() and (root / "data" / "variants.txt").exists():
        root = root / "data"
    level = cfg.aircraft_level
    dataset = dataset_name(cfg)
    category = super_category(cfg)
    names = _names(require_file(root, f"{level}s.txt", what=f"FGVC-Aircraft {level}s.txt"))

    # Per split, each image's name at every level (the level files list the same images).
    rows: list[tuple[str, str, dict[str, str]]] = []  # (image id, split, {level: name})
    parents: dict[str, dict[str, str]] = {}  # class (at `level`) -> its levels
    for split in SPLITS:
        per_level = {}
        for lv in LEVELS:
            path = root / f"images_{lv}_{split}.txt"
            if path.exists():
                per_level[lv] = dict(_labels(path))
        if level not in per_level:
            continue
        for image_id, name in _labels(root / f"images_{level}_{split}.txt"):
            found = {lv: per_level[lv][image_id] for lv in LEVELS if image_id in per_level.get(lv, {})}
            rows.append((image_id, split, found))
            parents.setdefault(name, {})
            parents[name].update(found)
    if not rows:
        raise FileNotFoundError(f"no images_{level}_{{train,val,test}}.txt under {root}")

    classes, labels = [], {}
    depth = LEVELS.index(level) + 1
    for label_id, raw in enumerate(names):
        levels = {lv: v for lv, v in parents.get(raw, {}).items() if lv in LEVELS[:depth]}
        levels[level] = raw
        maker = levels.get("manufacturer", "")
        shown = {lv: display_name(v, maker) if lv != "manufacturer" else v for lv, v in levels.items()}
        name = shown[level]
        classes.append(ClassInfo(label_id, name, dataset, category,
                                 aliases=(raw,) if raw != name else (), levels=shown))
        labels[raw] = label_id

    def items() -> Iterator[RawItem]:
        for image_id, split, found in rows:
            rel = f"images/{image_id}.jpg"
            yield RawItem(rel, str(root / rel), found.get(level, ""), split)

    return Layout(dataset, classes, labels, items(), size=len(rows))
