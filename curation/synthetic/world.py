"""The synthetic fine-grained world: attributes, super-categories, class names, image folders.

Birds of three super-categories (warbler, finch, tern), told apart by body colour and
signature parts. Inside a super-category, classes are cells of a grid over two varying
attributes, so any two classes of one super-category differ in one or two attributes (that
is what makes the task fine-grained), and the other attributes are shared. Class names are
compositional and readable: they name the two varying attributes.

    >>> [c["name"] for c in world_classes(6)][:3]
    ['Crimson-crowned Golden-breasted Warbler', 'Crimson-crowned Azure-breasted Warbler', 'Azure-crowned Fork-tailed Finch']

Write a world as an ImageFolder (`OUT/<folder>/<image>.png` + classes.json + world.json):

    make_world("runs/world", classes=24, per_class=10, seed=0, size=128)
    finecot synthetic make runs/world --classes 24 --per-class 10 --seed 0 --size 128

Same arguments, same bytes. Unseen classes are new combinations of attribute values that
all appear in seen classes: `compositional_split(classes, seen_ratio, seed)`.
"""

from __future__ import annotations

import functools
import io
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from curation.core.tables import atomic_path, write_json_atomic
from curation.synthetic.draw import render
from curation.synthetic.palette import BODY_COLOURS, COLOURS

log = logging.getLogger(__name__)

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "body_colour": tuple(BODY_COLOURS),
    "crown_colour": tuple(COLOURS),
    "wing_colour": tuple(COLOURS),
    "breast_colour": tuple(COLOURS),
    "wing_bars": ("plain", "barred"),
    "tail_shape": ("rounded", "pointed", "forked"),
    "beak_shape": ("stubby", "long", "hooked"),
}

# Each super-category: its fixed attributes and its two varying ones, values in grid order.
SUPER_CATEGORIES: dict[str, dict] = {
    "warbler": {
        "fixed": {"body_colour": "olive", "wing_colour": "orange", "wing_bars": "barred",
                  "tail_shape": "rounded", "beak_shape": "long"},
        "vary": {"crown_colour": ("crimson", "emerald", "golden", "azure", "violet", "orange"),
                 "breast_colour": ("golden", "azure", "crimson", "emerald", "orange", "violet")},
    },
    "finch": {
        "fixed": {"body_colour": "chestnut", "wing_colour": "violet", "breast_colour": "golden",
                  "wing_bars": "plain", "beak_shape": "stubby"},
        "vary": {"crown_colour": ("azure", "crimson", "golden", "emerald", "orange", "violet"),
                 "tail_shape": ("forked", "rounded", "pointed")},
    },
    "tern": {
        "fixed": {"body_colour": "pearl", "crown_colour": "violet", "breast_colour": "crimson",
                  "wing_bars": "barred", "tail_shape": "forked"},
        "vary": {"wing_colour": ("azure", "emerald", "golden", "crimson", "orange", "violet"),
                 "beak_shape": ("long", "hooked", "stubby")},
    },
}

# How each attribute value reads inside a class name.
_NAME_PARTS: dict[str, Callable[[str], str]] = {
    "crown_colour": lambda v: f"{v.title()}-crowned",
    "breast_colour": lambda v: f"{v.title()}-breasted",
    "wing_colour": lambda v: f"{v.title()}-winged",
    "tail_shape": lambda v: {"rounded": "Round", "pointed": "Pointed", "forked": "Fork"}[v]
    + "-tailed",
    "beak_shape": lambda v: {"stubby": "Stubby", "long": "Long", "hooked": "Hook"}[v] + "-billed",
}
_PHRASES: dict[str, Callable[[str], str]] = {
    "body_colour": lambda v: f"{'an' if v[0] in 'aeiou' else 'a'} {v} body",
    "crown_colour": lambda v: f"{'an' if v[0] in 'aeiou' else 'a'} {v} crown",
    "wing_colour": lambda v: f"{v} wings",
    "wing_bars": lambda v: "a broad pale wing bar" if v == "barred" else "no wing bar",
    "breast_colour": lambda v: f"{'an' if v[0] in 'aeiou' else 'a'} {v} breast",
    "tail_shape": lambda v: f"a {v} tail",
    "beak_shape": lambda v: f"a {v} bill",
}


def grid_order(rows: int, cols: int) -> list[tuple[int, int]]:
    """Grid cells in growing square shells: every cell but (0, 0) has a one-attribute
    neighbour earlier in the order, so any world prefix keeps confusable pairs.

    >>> grid_order(3, 3)[:5]
    [(0, 0), (0, 1), (1, 1), (1, 0), (0, 2)]
    """
    cells = [(i, j) for i in range(rows) for j in range(cols)]
    return sorted(cells, key=lambda c: (max(c), c[1] < c[0], c))


def class_name(super_category: str, attributes: dict[str, str]) -> str:
    """'Crimson-crowned Golden-breasted Warbler': the two varying attributes, then the kind."""
    parts = [_NAME_PARTS[a](attributes[a]) for a in SUPER_CATEGORIES[super_category]["vary"]]
    return " ".join([*parts, super_category.title()])


def describe(super_category: str, attributes: dict[str, str]) -> str:
    """One sentence listing every attribute of a class."""
    phrases = [_PHRASES[a](attributes[a]) for a in ATTRIBUTES]
    return f"A {super_category} with {', '.join(phrases[:-1])} and {phrases[-1]}."


def super_category_classes(super_category: str) -> list[dict]:
    """Every possible class of a super-category, in grid order (the world takes a prefix)."""
    spec = SUPER_CATEGORIES[super_category]
    (a1, v1), (a2, v2) = spec["vary"].items()
    out = []
    for i, j in grid_order(len(v1), len(v2)):
        attrs = {**spec["fixed"], a1: v1[i], a2: v2[j]}
        attrs = {a: attrs[a] for a in ATTRIBUTES}
        out.append({
            "name": class_name(super_category, attrs),
            "super_category": super_category,
            "description": describe(super_category, attrs),
            "attributes": attrs,
            "aliases": [],
            "grid": [i, j],
        })
    return out


MAX_CLASSES = sum(len(super_category_classes(s)) for s in SUPER_CATEGORIES)


def world_classes(classes: int = 24) -> list[dict]:
    """The first `classes` classes of the world, spread evenly over the super-categories."""
    kinds = list(SUPER_CATEGORIES)
    if not len(kinds) * 2 <= classes <= MAX_CLASSES:
        raise ValueError(
            f"--classes must be between {len(kinds) * 2} and {MAX_CLASSES} (got {classes}); "
            f"24 or more gives every super-category at least 8 sub-categories"
        )
    pools = {k: super_category_classes(k) for k in kinds}
    counts = dict.fromkeys(kinds, 0)
    for _ in range(classes):  # water-fill: the emptiest super-category that still has room
        room = [k for k in kinds if counts[k] < len(pools[k])]
        counts[min(room, key=lambda k: (counts[k], kinds.index(k)))] += 1
    chosen = [c for k in kinds for c in pools[k][: counts[k]]]
    for index, info in enumerate(chosen):
        info["folder"] = f"{index:03d}." + info["name"].replace(" ", "_")
    return chosen


@functools.cache
def all_classes() -> dict[str, dict]:
    """Every class any world can hold, by name: what the teacher can recognise (shared: do
    not modify it)."""
    return {c["name"]: c for k in SUPER_CATEGORIES for c in super_category_classes(k)}


def compositional_split(
    classes: Sequence[dict], seen_ratio: float, seed: int
) -> tuple[list[str], list[str]]:
    """Seen and unseen class names, where every unseen class is a new combination of
    attribute values that all appear in seen classes of its super-category.

    Classes are tried in seeded order; one becomes unseen when the seen classes left still
    show every attribute value of every unseen class. Returns fewer unseen classes than
    asked for when no more can be hidden that way (say so in the log).

    >>> seen, unseen = compositional_split(world_classes(24), seen_ratio=0.75, seed=0)
    >>> len(seen), len(unseen)
    (18, 6)
    """
    if not 0 < seen_ratio <= 1:
        raise ValueError(f"seen_ratio must be in (0, 1], got {seen_ratio}")
    names = [c["name"] for c in classes]
    if len(set(names)) != len(names):
        raise ValueError("compositional_split: class names must be unique")
    want = len(classes) - max(1, round(seen_ratio * len(classes)))
    order = list(classes)
    random.Random(seed).shuffle(order)
    unseen: list[dict] = []

    def covered(candidate_unseen: list[dict]) -> bool:
        hidden = {c["name"] for c in candidate_unseen}
        shown: set[tuple[str, str, str]] = set()
        for c in classes:
            if c["name"] not in hidden:
                shown.update((c["super_category"], a, v) for a, v in c["attributes"].items())
        return all(
            (c["super_category"], a, v) in shown
            for c in candidate_unseen for a, v in c["attributes"].items()
        )

    for info in order:
        if len(unseen) >= want:
            break
        if covered([*unseen, info]):
            unseen.append(info)
    if len(unseen) < want:
        log.warning("compositional split: only %d of %d classes can be unseen", len(unseen), want)
    hidden = {c["name"] for c in unseen}
    return [n for n in names if n not in hidden], [n for n in names if n in hidden]


def make_world(
    out: str | Path,
    classes: int = 24,
    per_class: int = 10,
    seed: int = 0,
    size: int = 128,
    unseen_fraction: float = 0.25,
    image_format: str = "png",
    progress: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Write the world as an ImageFolder under `out`; return its class list.

    `out/<folder>/<image>.png|jpg`, `out/classes.json` (folder, name, super_category,
    description, attributes, aliases) and `out/world.json` (seed, settings and a proposed
    compositional seen/unseen split). Deterministic: same arguments, same bytes.
    """
    if per_class < 1:
        raise ValueError(f"--per-class must be at least 1 (got {per_class})")
    if size < 32:
        raise ValueError(f"--size must be at least 32 pixels (got {size})")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image format must be png or jpg (got {image_format!r})")
    if not 0 <= unseen_fraction < 1:
        raise ValueError(f"--unseen-fraction must be in [0, 1) (got {unseen_fraction})")
    out = Path(out)
    infos = world_classes(classes)
    total = len(infos) * per_class
    for ci, info in enumerate(infos):
        folder = out / info["folder"]
        for j in range(per_class):
            rng = np.random.default_rng([seed, ci, j])
            image = render(info["attributes"], rng, size)
            with atomic_path(folder / f"{ci:03d}_{j:04d}.{image_format}") as tmp:
                buf = io.BytesIO()
                if image_format == "png":
                    image.save(buf, format="PNG", optimize=False)
                else:
                    image.save(buf, format="JPEG", quality=90)
                tmp.write_bytes(buf.getvalue())
            if progress:
                progress(ci * per_class + j + 1, total)
    rows = [{k: c[k] for k in ("folder", "name", "super_category", "description",
                               "attributes", "aliases")} for c in infos]
    seen, unseen = compositional_split(rows, 1 - unseen_fraction, seed) if unseen_fraction else (
        [c["name"] for c in rows], [])
    write_json_atomic(out / "classes.json", rows)
    write_json_atomic(out / "world.json", {
        "generator": "finecot.synthetic",
        "seed": seed, "classes": len(rows), "per_class": per_class, "size": size,
        "image_format": image_format, "unseen_fraction": unseen_fraction,
        "super_categories": {k: sum(c["super_category"] == k for c in rows)
                             for k in SUPER_CATEGORIES},
        "proposed_split": {"seen": seen, "unseen": unseen},
    })
    log.info("synthetic world: %d classes x %d images -> %s", len(rows), per_class, out)
    return rows
