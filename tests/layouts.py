"""Miniature copies of the official dataset layouts, for tests (never downloads anything).

Each `make_*` function writes a few tiny, all-different JPEGs per class plus the dataset's
REAL annotation files (text files as released; `.mat` files written with scipy.io.savemat in
the devkit structures) under a folder, and returns (root, expected): `expected` lists one
`Expected` per image the layout lists, so a test can check every field ingest writes.

    root, expected = make_cub(tmp_path / "cub")
    # finecot ingest --source cub200 --root {root} --run ...
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


@dataclass(frozen=True)
class Expected:
    key: str  # path relative to the root (the item_id is "<dataset>/<key>")
    path: Path
    name: str  # canonical class name
    label_id: int
    split: str
    size: tuple[int, int]


_counter = iter(range(10**9))


def write_image(path: Path, size: tuple[int, int] | None = None, fmt: str = "JPEG") -> tuple[int, int]:
    """A small image no other call writes (its colour comes from a global counter)."""
    n = next(_counter)
    size = size or (16 + n % 7, 12 + n % 5)
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (n % 251, (n * 7) % 253, (n * 13) % 241)
    Image.new("RGB", size, colour).save(path, fmt)
    return size


def _cell(values: list, column: bool = False) -> np.ndarray:
    out = np.empty((len(values), 1) if column else (1, len(values)), dtype=object)
    for i, v in enumerate(values):
        out[(i, 0) if column else (0, i)] = v
    return out


def _struct(rows: list[dict]) -> np.ndarray:
    fields = list(rows[0])
    out = np.zeros((1, len(rows)), dtype=[(f, "O") for f in fields])
    for i, row in enumerate(rows):
        out[0, i] = tuple(np.array([[v]]) if isinstance(v, int) else v for v in row.values())
    return out


# -- CUB-200-2011 ------------------------------------------------------------------------------

CUB_CLASSES = [("001.Black_footed_Albatross", "Black Footed Albatross"),
               ("002.Laysan_Albatross", "Laysan Albatross"),
               ("004.Groove_billed_Ani", "Groove Billed Ani")]


def make_cub(base: Path, per_class: int = 3) -> tuple[Path, list[Expected]]:
    root = base / "CUB_200_2011"
    images, labels, splits, expected = [], [], [], []
    for cid, (raw, name) in enumerate(CUB_CLASSES, 1):
        for j in range(per_class):
            image_id = len(images) + 1
            rel = f"{raw}/{raw.split('.', 1)[1]}_{j:04d}_{image_id}.jpg"
            size = write_image(root / "images" / rel)
            train = j != per_class - 1  # the last image of each class is test
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {cid}")
            splits.append(f"{image_id} {int(train)}")
            expected.append(Expected(rel, root / "images" / rel, name, cid - 1,
                                     "train" if train else "test", size))
    (root / "images.txt").write_text("\n".join(images) + "\n")
    (root / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (root / "train_test_split.txt").write_text("\n".join(splits) + "\n")
    (root / "classes.txt").write_text("".join(f"{i} {raw}\n" for i, (raw, _) in enumerate(CUB_CLASSES, 1)))
    return base, expected


# -- Stanford Cars (devkit) --------------------------------------------------------------------

CAR_CLASSES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "smart fortwo Convertible 2012"]


def make_cars(root: Path, per_class: int = 2) -> tuple[Path, list[Expected]]:
    (root / "devkit").mkdir(parents=True, exist_ok=True)
    expected = []
    for split, folder, annos in (("train", "cars_train", "devkit/cars_train_annos.mat"),
                                 ("test", "cars_test", "cars_test_annos_withlabels.mat")):
        rows = []
        for cid, name in enumerate(CAR_CLASSES, 1):
            for _ in range(per_class):
                fname = f"{len(rows) + 1:05d}.jpg"
                size = write_image(root / folder / fname)
                rows.append({"bbox_x1": 1, "bbox_y1": 1, "bbox_x2": size[0], "bbox_y2": size[1],
                             "class": cid, "fname": fname})
                expected.append(Expected(f"{folder}/{fname}", root / folder / fname, name,
                                         cid - 1, split, size))
        scipy.io.savemat(root / annos, {"annotations": _struct(rows)})
    scipy.io.savemat(root / "devkit" / "cars_meta.mat", {"class_names": _cell(CAR_CLASSES)})
    return root, expected


# -- FGVC-Aircraft -----------------------------------------------------------------------------

AIRCRAFT = [("707-320", "Boeing 707", "Boeing"), ("727-200", "Boeing 727", "Boeing"),
            ("A310", "A310", "Airbus"), ("MD-80", "MD-80", "McDonnell Douglas")]


def aircraft_name(variant: str, level: str) -> str:
    row = next(r for r in AIRCRAFT if r[0] == variant)
    raw = dict(zip(("variant", "family", "manufacturer"), row, strict=True))[level]
    if level != "manufacturer" and row[2] in ("Boeing", "Airbus") and not raw.startswith(row[2]):
        return f"{row[2]} {raw}"
    return raw


def make_aircraft(base: Path, level: str = "variant") -> tuple[Path, list[Expected]]:
    root = base / "fgvc-aircraft-2013b" / "data"
    (root / "images").mkdir(parents=True)
    column = {"variant": 0, "family": 1, "manufacturer": 2}[level]
    names = list(dict.fromkeys(r[column] for r in AIRCRAFT))
    for lv, i in (("variant", 0), ("family", 1), ("manufacturer", 2)):
        (root / f"{lv}s.txt").write_text("".join(f"{n}\n" for n in dict.fromkeys(r[i] for r in AIRCRAFT)))
    expected, n = [], 1000000
    for split in ("train", "val", "test"):
        lines = {"variant": [], "family": [], "manufacturer": []}
        for row in AIRCRAFT:
            n += 1
            size = write_image(root / "images" / f"{n:07d}.jpg")
            for lv, i in (("variant", 0), ("family", 1), ("manufacturer", 2)):
                lines[lv].append(f"{n:07d} {row[i]}")
            expected.append(Expected(f"images/{n:07d}.jpg", root / "images" / f"{n:07d}.jpg",
                                     aircraft_name(row[0], level), names.index(row[column]),
                                     split, size))
        for lv, rows in lines.items():
            (root / f"images_{lv}_{split}.txt").write_text("\n".join(rows) + "\n")
    return base / "fgvc-aircraft-2013b", expected


# -- Stanford Dogs -----------------------------------------------------------------------------

DOG_CLASSES = [("n02085620-Chihuahua", "Chihuahua"), ("n02085936-Maltese_dog", "Maltese Dog"),
               ("n02088238-basset", "Basset")]


def make_dogs(root: Path, per_class: int = 3) -> tuple[Path, list[Expected]]:
    (root / "lists").mkdir(parents=True)
    train, test, expected = [], [], []
    for cid, (folder, name) in enumerate(DOG_CLASSES, 1):
        for j in range(per_class):
            rel = f"{folder}/{folder.split('-')[0]}_{100 + j}.jpg"
            size = write_image(root / "Images" / rel)
            split = "test" if j == 0 else "train"
            (test if split == "test" else train).append((rel, cid))
            expected.append(Expected(f"Images/{rel}", root / "Images" / rel, name, cid - 1, split, size))
    expected.sort(key=lambda e: e.split != "train")  # the layout lists train, then test
    for name, rows in (("train_list", train), ("test_list", test), ("file_list", train + test)):
        scipy.io.savemat(root / "lists" / f"{name}.mat", {
            "file_list": _cell([r for r, _ in rows], column=True),
            "annotation_list": _cell([r.removesuffix(".jpg") for r, _ in rows], column=True),
            "labels": np.array([[float(c)] for _, c in rows]),
        })
    return root, expected


# -- Oxford 102 Flowers ------------------------------------------------------------------------


def make_flowers(root: Path, labels: tuple[int, ...] = (1, 2, 102, 1, 2, 102, 60, 93, 93)) -> tuple[Path, list[Expected]]:
    from curation.ingest.sources.oxford_flowers import FLOWER_NAMES

    (root / "jpg").mkdir(parents=True)
    sizes = {n: write_image(root / "jpg" / f"image_{n:05d}.jpg") for n in range(1, len(labels) + 1)}
    ids = {"train": [1, 4, 9], "val": [2, 5], "test": [3, 6, 7, 8]}
    scipy.io.savemat(root / "imagelabels.mat", {"labels": np.array([labels], dtype=np.uint8)})
    scipy.io.savemat(root / "setid.mat", {"trnid": np.array([ids["train"]]),
                                          "valid": np.array([ids["val"]]),
                                          "tstid": np.array([ids["test"]])})
    expected = [
        Expected(f"jpg/image_{n:05d}.jpg", root / "jpg" / f"image_{n:05d}.jpg",
                 FLOWER_NAMES[labels[n - 1] - 1], labels[n - 1] - 1, split, sizes[n])
        for split, numbers in ids.items() for n in numbers
    ]
    return root, expected


# -- Oxford-IIIT Pet ---------------------------------------------------------------------------

PET_CLASSES = [("Abyssinian", "Abyssinian", 1), ("american_bulldog", "American Bulldog", 2),
               ("german_shorthaired", "German Shorthaired", 2)]


def make_pets(root: Path, per_class: int = 3) -> tuple[Path, list[Expected]]:
    (root / "annotations").mkdir(parents=True)
    lines = {"trainval": ["#Image CLASS-ID SPECIES BREED ID"], "test": []}
    expected = []
    for split, file in (("train", "trainval"), ("test", "test")):
        for cid, (raw, name, species) in enumerate(PET_CLASSES, 1):
            for j in range(per_class if split == "train" else 1):
                image = f"{raw}_{len(expected) + 1}"
                size = write_image(root / "images" / f"{image}.jpg")
                lines[file].append(f"{image} {cid} {species} {j + 1}")
                expected.append(Expected(f"images/{image}.jpg", root / "images" / f"{image}.jpg",
                                         name, cid - 1, split, size))
    for file, rows in lines.items():
        (root / "annotations" / f"{file}.txt").write_text("\n".join(rows) + "\n")
    return root, expected


# -- ImageFolder, manifest, HF -----------------------------------------------------------------

FOLDER_CLASSES = [
    {"folder": "crimson_warbler", "name": "Crimson-crowned Warbler", "super_category": "warbler",
     "description": "red crown", "attributes": {"crown": "crimson"}, "aliases": ["red warbler"]},
    {"folder": "azure_finch"},
]


def make_imagefolder(root: Path, per_class: int = 3, class_file: bool = True,
                     split_file: bool = True) -> tuple[Path, list[Expected]]:
    expected = []
    folders = [e["folder"] for e in FOLDER_CLASSES]
    for cid, entry in enumerate(FOLDER_CLASSES):
        cid = cid if class_file else sorted(folders).index(entry["folder"])  # sorted folders
        for j in range(per_class):
            rel = f"{entry['folder']}/img_{j}.jpg"
            size = write_image(root / rel)
            split = "test" if (split_file and j == 0) else "train"
            name = entry.get("name") if class_file and "name" in entry else entry["folder"].replace("_", " ")
            expected.append(Expected(rel, root / rel, name, cid, split, size))
    if class_file:
        (root / "classes.json").write_text(json.dumps(FOLDER_CLASSES))
    if split_file:
        with (root / "splits.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "split"])
            writer.writerows([e.key, e.split] for e in expected if e.split != "train")
    return root, expected


def make_manifest(root: Path, fmt: str = "csv") -> tuple[Path, list[Expected]]:
    labels = ["Snowy Owl", "Barn Owl", "Snowy Owl", "Barn Owl"]
    splits = ["train", "validation", "test", ""]
    order = sorted(set(labels))
    rows, expected = [], []
    for i, (label, split) in enumerate(zip(labels, splits, strict=True)):
        rel = f"img/{i}.jpg"
        size = write_image(root / rel)
        rows.append({"path": rel, "label": label, "split": split})
        expected.append(Expected(rel, root / rel, label, order.index(label),
                                 {"validation": "val", "": "train"}.get(split, split), size))
    path = root / f"manifest.{fmt}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, ["path", "label", "split"])
            writer.writeheader()
            writer.writerows(rows)
    return path, expected


def make_hf(root: Path) -> tuple[Path, list[dict]]:
    """A save_to_disk DatasetDict (train/test) with an embedded Image column and a ClassLabel."""
    import io

    import datasets

    names = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    parts, expected = {}, []
    for split, count in (("train", 3), ("test", 2)):
        images, labels = [], []
        tmp = root.parent / "hf_tmp.png"
        for i in range(count):
            buf = io.BytesIO()
            size = write_image(tmp, fmt="PNG")
            buf.write(tmp.read_bytes())
            images.append({"bytes": buf.getvalue(), "path": None})
            labels.append(i % 2)
            expected.append({"key": f"{split}/{i:07d}", "label_id": i % 2, "split": split,
                             "size": size, "bytes": buf.getvalue()})
        features = datasets.Features({"image": datasets.Image(),
                                      "fine_label": datasets.ClassLabel(names=names)})
        parts[split] = datasets.Dataset.from_dict({"image": images, "fine_label": labels},
                                                  features=features)
    tmp.unlink()
    datasets.DatasetDict(parts).save_to_disk(str(root))
    return root, expected


BUILDERS = {
    "cub200": make_cub,
    "stanford_cars": make_cars,
    "fgvc_aircraft": make_aircraft,
    "stanford_dogs": make_dogs,
    "oxford_flowers": make_flowers,
    "oxford_pets": make_pets,
    "imagefolder": make_imagefolder,
    "manifest": make_manifest,
    "hf": make_hf,
}


if __name__ == "__main__":
    # Write every miniature layout under OUT, to try the CLI by hand:
    #   python tests/layouts.py /tmp/mini && finecot ingest --source cub200 --root /tmp/mini/cub200 --run runs/mini
    import sys

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "mini_layouts")
    for kind, make in BUILDERS.items():
        root, listed = make(out / kind)
        print(f"{kind:15} {len(listed):3} images  --root {root}")
