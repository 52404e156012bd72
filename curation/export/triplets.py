"""Which classes look alike: hard negatives for TAPO triplets and closed-world options.

For each class, a ranking of the other classes of its dataset, most confusable first, made
by the first method of a chain that has something to say about that class:

- `model`: cosine similarity of class-mean embeddings from a local transformers image/CLIP
  model (curation/export/embed.py `ModelEmbedder`), when the user names one;
- `confusions`: the teacher's own confusions: how often another class appears among the
  candidates or as the answer in this class's drafts (measured, and free);
- `pixels`: class-mean model-free embeddings (colour histogram + thumbnail);
- `super_category`: a seeded shuffle of the classes of the same super-category (fallback).

The method that produced each class's head is recorded per row and in the card.

`build_triplets(pool, rankings, seed)` then picks, for each anchor of the k-shot pool, a
positive (another pool image of its class) and a negative (a pool image of the top-ranked
other class), all seeded. `closed_options` makes the closed-world options (gold + the 3
top-ranked classes, shuffled per item); `load_fine_r1_options` / `paper_options` read the
paper's own option lists from its release's eval/*.jsonl when the user points at them (they
are not shipped: MIT-licensed, but 35k lines that only matter with the paper's images).
`class_rankings(recipe, run, ...)` does all of it for a run directory (export stage).

    >>> pool = pd.DataFrame({"item_id": ["a1", "a2", "b1", "c1"], "dataset": ["d"] * 4,
    ...                      "label": ["A", "A", "B", "C"], "label_id": [0, 0, 1, 2]})
    >>> rankings = {("d", "A"): Ranking(["B", "C"], "pixels"),
    ...             ("d", "B"): Ranking(["A", "C"], "pixels"),
    ...             ("d", "C"): Ranking(["B", "A"], "pixels")}
    >>> t = build_triplets(pool, rankings, seed=0).set_index("item_id")
    >>> t.loc["a1", ["positive_item_id", "negative_item_id", "negative_label"]].tolist()
    ['a2', 'b1', 'B']
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from curation.core.config import Recipe
from curation.core.labels import Registry, normalize
from curation.core.rundir import RunDir
from curation.export.embed import Embedder, ModelEmbedder, class_means, pixel_embed

log = logging.getLogger(__name__)

ClassKey = tuple[str, str]  # (dataset, canonical label)
METHODS = ("model", "confusions", "pixels", "super_category")


@dataclass
class Ranking:
    """Other classes of the same dataset, most similar first, and the method of the head."""

    labels: list[str]
    method: str


def seeded_rng(seed: int, *parts: Any) -> random.Random:
    """A random generator that depends only on the seed and the parts (stable across runs)."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def method_chain(method: str, have_model: bool) -> list[str]:
    """The methods tried in order; every chain ends with the super-category fallback.

    >>> method_chain("auto", have_model=False)
    ['confusions', 'pixels', 'super_category']
    >>> method_chain("pixels", have_model=True)
    ['pixels', 'super_category']
    """
    if method == "auto":
        return (["model"] if have_model else []) + ["confusions", "pixels", "super_category"]
    if method not in METHODS:
        raise ValueError(f"unknown triplet method {method!r}; choose auto or one of {METHODS}")
    if method == "model" and not have_model:
        raise ValueError("triplet method 'model' needs export.triplet_model (a local folder)")
    return [method] if method == "super_category" else [method, "super_category"]


def confusion_counts(parsed: pd.DataFrame, registry: Registry) -> dict[ClassKey, Counter]:
    """For each gold class, how often each other class was a candidate or the answer.

    `parsed` holds the filter stage's rows (accepted + rejected): dataset, label, candidates
    (list of strings) and answer. Names are resolved with the registry's matcher index, so
    aliases and spelling variants count for their class.
    """
    counts: dict[ClassKey, Counter] = {}
    for dataset, label, candidates, answer in zip(
        parsed["dataset"], parsed["label"], parsed["candidates"], parsed["answer"], strict=True
    ):
        texts = [*(list(candidates) if candidates is not None else []), answer or ""]
        named = set()
        for text in texts:
            named.update(info.name for info in registry.find_mentions(str(text), dataset))
        named.discard(label)
        counter = counts.setdefault((dataset, label), Counter())
        counter.update(named)  # once per draft: one verbose rationale must not dominate
    return counts


def _by_similarity(key: ClassKey, others: Sequence[str], means: Mapping[ClassKey, np.ndarray]):
    anchor = means.get(key)
    scored = [(float(anchor @ means[(key[0], o)]), o) for o in others if (key[0], o) in means]
    return [o for _, o in sorted(scored, key=lambda t: (-t[0], t[1]))] if anchor is not None else []


def rank_classes(
    anchors: Iterable[ClassKey],
    candidates: Iterable[ClassKey],
    chain: Sequence[str],
    *,
    super_of: Mapping[ClassKey, str],
    confusions: Mapping[ClassKey, Counter] | None = None,
    model_means: Mapping[ClassKey, np.ndarray] | None = None,
    pixel_means: Mapping[ClassKey, np.ndarray] | None = None,
    seed: int = 0,
) -> dict[ClassKey, Ranking]:
    """Rank, for each anchor class, the candidate classes of its dataset (itself excluded).

    Each method of `chain` appends the classes it can rank that are not yet listed; the
    method that produced the first entry names the ranking.
    """
    by_dataset: dict[str, list[str]] = {}
    for dataset, label in candidates:
        by_dataset.setdefault(dataset, []).append(label)
    out: dict[ClassKey, Ranking] = {}
    for key in anchors:
        others = sorted(set(by_dataset.get(key[0], [])) - {key[1]})
        ranked: list[str] = []
        head = ""
        for method in chain:
            if method == "confusions":
                counter = (confusions or {}).get(key, Counter())
                found = [o for o in others if counter.get(o)]
                # ties broken by pixel similarity when known, else by name
                order = {o: i for i, o in enumerate(_by_similarity(key, found, pixel_means or {}))}
                found.sort(key=lambda o: (-counter[o], order.get(o, len(order)), o))
            elif method == "model":
                found = _by_similarity(key, others, model_means or {})
            elif method == "pixels":
                found = _by_similarity(key, others, pixel_means or {})
            else:
                same = [o for o in others if super_of.get((key[0], o)) == super_of.get(key)]
                rest = [o for o in others if o not in same]
                rng = seeded_rng(seed, "super_category", key)
                rng.shuffle(same)
                rng.shuffle(rest)
                found = same + rest
            new = [o for o in found if o not in ranked]
            if new and not ranked:
                head = method
            ranked.extend(new)
        out[key] = Ranking(ranked, head or "none")
    return out


def build_triplets(
    pool: pd.DataFrame, rankings: Mapping[ClassKey, Ranking], seed: int
) -> pd.DataFrame:
    """One row per pool anchor: item_id, positive_item_id, negative_item_id, negative_label,
    negative_label_id, triplet_method.

    The negative class is the top-ranked class that has pool images (negatives never come
    from unseen classes: they are training data); an anchor whose dataset has no other seen
    class gets no row (logged). With k = 1 there is no other image of the class, so the
    positive is the anchor itself (logged).
    """
    members: dict[ClassKey, list[tuple[str, int]]] = {}
    for item_id, dataset, label, label_id in zip(
        pool["item_id"], pool["dataset"], pool["label"], pool["label_id"], strict=True
    ):
        members.setdefault((dataset, label), []).append((item_id, int(label_id)))
    rows, lonely = [], 0
    for item_id, dataset, label in zip(
        pool["item_id"], pool["dataset"], pool["label"], strict=True
    ):
        key = (dataset, label)
        rng = seeded_rng(seed, "triplet", item_id)
        others = [m for m, _ in members[key] if m != item_id]
        if not others:
            lonely += 1
        positive = rng.choice(sorted(others)) if others else item_id
        ranking = rankings.get(key, Ranking([], "none"))
        negative_label = next((o for o in ranking.labels if (dataset, o) in members), None)
        if negative_label is None:  # a dataset with one seen class: no triplet for it
            log.warning(
                "no negative class for %r in dataset %r: anchor %s left out of rl",
                label,
                dataset,
                item_id,
            )
            continue
        negative_item, negative_id = rng.choice(sorted(members[(dataset, negative_label)]))
        rows.append(
            {
                "item_id": item_id,
                "positive_item_id": positive,
                "negative_item_id": negative_item,
                "negative_label": negative_label,
                "negative_label_id": negative_id,
                "triplet_method": ranking.method,
            }
        )
    if lonely:
        log.warning("%d pool anchors have no other image of their class: positive = anchor", lonely)
    columns = [
        "item_id",
        "positive_item_id",
        "negative_item_id",
        "negative_label",
        "negative_label_id",
        "triplet_method",
    ]
    return pd.DataFrame(rows, columns=columns)


def closed_options(
    label: str, ranking: Ranking, seed: int, item_id: str, n_options: int = 4
) -> tuple[list[str], int]:
    """Gold + the (n-1) most similar classes, shuffled by a generator seeded per item.

    >>> closed_options("A", Ranking(["B", "C", "D", "E"], "pixels"), 0, "x")[0] != ["A", "B", "C", "D"]
    True
    >>> sorted(closed_options("A", Ranking(["B", "C", "D", "E"], "pixels"), 0, "x")[0])
    ['A', 'B', 'C', 'D']
    """
    options = [label, *ranking.labels[: n_options - 1]]
    return shuffled_options(options, label, seed, item_id)


def shuffled_options(
    options: Sequence[str], gold: str, seed: int, item_id: str
) -> tuple[list[str], int]:
    """Options shuffled with a per-item seeded generator; returns (options, index of gold)."""
    shuffled = list(options)
    seeded_rng(seed, "options", item_id).shuffle(shuffled)
    return shuffled, shuffled.index(gold)


def embedding_paths(items: pd.DataFrame, per_class: int, seed: int) -> dict[ClassKey, list[str]]:
    """Up to `per_class` images per class for class means, non-test images first (seeded)."""
    out: dict[ClassKey, list[str]] = {}
    order = items.assign(_test=items["official_split"].eq("test"))
    for key, group in order.groupby(["dataset", "label"], sort=True):
        paths = sorted(group.loc[~group["_test"], "image_path"])
        seeded_rng(seed, "embed", key).shuffle(paths)
        if len(paths) < per_class:
            rest = sorted(group.loc[group["_test"], "image_path"])
            seeded_rng(seed, "embed-test", key).shuffle(rest)
            paths += rest
        out[key] = paths[:per_class]
    return out


def similarity_means(
    items: pd.DataFrame, embed: Embedder, per_class: int, seed: int
) -> dict[ClassKey, np.ndarray]:
    """Class-mean embeddings of every class in `items` (see `embedding_paths`)."""
    return class_means(embedding_paths(items, per_class, seed), embed)


# -- a run's rankings ---------------------------------------------------------------------


def _parsed_drafts(run: RunDir) -> pd.DataFrame:
    """Filter-stage rows (accepted + rejected) with the parsed candidates and answer."""
    frames = []
    for name in ("accepted.parquet", "rejected.parquet"):
        path = run.path(name)
        if path.exists():
            columns = set(pq.read_schema(path).names)
            if {"dataset", "label", "candidates", "answer"} <= columns:
                frames.append(
                    pd.read_parquet(path, columns=["dataset", "label", "candidates", "answer"])
                )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def class_rankings(
    recipe: Recipe, run: RunDir, items: pd.DataFrame, registry: Registry
) -> tuple[dict, dict]:
    """(triplet rankings over pool classes, option rankings over all classes), see triplets.py."""
    cfg = recipe.export
    chain = method_chain(cfg.triplet_method, cfg.triplet_model is not None)
    super_of = dict(
        zip(
            zip(items["dataset"], items["label"], strict=True), items["super_category"], strict=True
        )
    )
    confusions = model_means = pixel_means = None
    if "confusions" in chain:
        parsed = _parsed_drafts(run)
        confusions = confusion_counts(parsed, registry) if len(parsed) else {}
    if "pixels" in chain or "confusions" in chain:  # pixels also break confusion ties
        pixel_means = similarity_means(items, pixel_embed, cfg.images_per_class, cfg.seed)
    if "model" in chain:
        embedder = ModelEmbedder(cfg.triplet_model)
        model_means = similarity_means(items, embedder, cfg.images_per_class, cfg.seed)
    pool = pd.read_parquet(run.require(run.pool, "split"), columns=["dataset", "label"])
    test = pd.read_parquet(run.require(run.test, "split"), columns=["dataset", "label"])
    pool_classes = sorted(set(zip(pool["dataset"], pool["label"], strict=True)))
    all_classes = sorted(super_of)
    test_classes = sorted(set(zip(test["dataset"], test["label"], strict=True)))
    common = dict(
        super_of=super_of,
        confusions=confusions,
        model_means=model_means,
        pixel_means=pixel_means,
        seed=cfg.seed,
    )
    triplet_rank = rank_classes(pool_classes, pool_classes, chain, **common)
    option_rank = rank_classes(test_classes, all_classes, chain, **common)
    return triplet_rank, option_rank


# -- Fine-R1's own closed-world options ------------------------------------------------------


def path_key(path: str) -> str:
    """The last two path parts, lower case: how an image is found in the paper's eval files.

    >>> path_key("/data/CUB_200_2011/images/001.Black_footed_Albatross/B_0046_18.jpg")
    '001.black_footed_albatross/b_0046_18.jpg'
    """
    return "/".join(Path(path).parts[-2:]).lower()


def load_fine_r1_options(folder: str | Path) -> dict[str, tuple[list[str], str]]:
    """{path_key: (options, ground_truth)} from Fine-R1's eval/*.jsonl (gold is option 0)."""
    files = sorted(Path(folder).glob("*.jsonl"))
    if not files:
        raise FileNotFoundError(
            f"no *.jsonl in {folder}: pass the `eval` folder of the Fine-R1 release "
            "(files like bird_seen.jsonl with image_path/options/ground_truth)"
        )
    out = {}
    for file in files:
        for line in file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                out[path_key(row["image_path"])] = (list(row["options"]), row["ground_truth"])
    return out


def paper_options(
    record: dict[str, Any], paper: dict[str, tuple[list[str], str]], registry: Registry
) -> list[str] | None:
    """The paper's 4 options for this test image, in canonical names; None when the image is
    not in the paper's files or the paper's gold is not this item's class (another image
    that happens to share the file name)."""
    found = paper.get(path_key(record["image_path"]))
    if found is None:
        return None
    options, truth = found
    gold = registry.resolve(truth, record["dataset"])
    if (gold.name if gold else normalize(truth)) != (
        record["label"] if gold else normalize(record["label"])
    ):
        return None
    canonical = []
    for name in options:
        info = registry.resolve(name, record["dataset"])
        canonical.append(record["label"] if name == truth else (info.name if info else name))
    return canonical if len(set(canonical)) == len(canonical) else None
