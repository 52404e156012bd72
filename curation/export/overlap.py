"""No evaluation image may be a training image: the export's last check before it writes.

The training images of an export are those of its `sft` rows and of its `rl` triplets
(anchors, positives and negatives); the evaluation images are the `eval_open` /
`eval_closed` rows (test.parquet). `find_overlap` pairs them by identical bytes (sha256)
and by near-duplicate (the split's perceptual hash + colour signature within
`split.phash_distance` bits, curation/ingest/hygiene.py): a re-encoded or resized copy of
a training image is as much a leak as the file itself.

What the export does with a pair is `export.eval_overlap`: `refuse` (default; nothing is
written, the message names the rows) or `drop` (the eval rows are left out and listed in
export_skipped.parquet with reason `train_eval_overlap`).

    pairs = find_overlap(train, test, max_distance=4)   # frames: item_id, image_sha256, image_path
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from curation.core.config import Recipe
from curation.ingest import hygiene

log = logging.getLogger(__name__)

LISTED = 10  # pairs named in the error message (all are counted)


class TrainEvalOverlap(ValueError):
    """Training and evaluation configs share images; the message names the rows."""


def find_overlap(
    train: pd.DataFrame, test: pd.DataFrame, max_distance: int,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[dict]:
    """(eval row, training row) pairs that show the same image: one dict per pair with
    eval_id, train_id, train_config, how ("sha256" or "near-duplicate") and distance."""
    if train.empty or test.empty:
        return []
    first_train = train.drop_duplicates("image_sha256").set_index("image_sha256")
    pairs = []
    exact = test[test["image_sha256"].isin(first_train.index)]
    for record in exact.to_dict("records"):
        match = first_train.loc[record["image_sha256"]]
        pairs.append({"eval_id": record["item_id"], "train_id": match["item_id"],
                      "train_config": match["config"], "how": "sha256", "distance": 0})
    rest = test[~test["image_sha256"].isin(first_train.index)].drop_duplicates("image_sha256")
    if rest.empty:
        return pairs
    paths = [*first_train["image_path"], *rest["image_path"]]
    tick = (lambda done, total: progress("checking train/eval overlap", done, total)) \
        if progress else None
    sigs = hygiene.signatures(paths, tick)
    left = [(i, s) for i, s in enumerate(sigs[: len(first_train)]) if s is not None]
    right = [(j, s) for j, s in enumerate(sigs[len(first_train):]) if s is not None]
    near, _ = hygiene.near_duplicates([s for _, s in left], [s for _, s in right], max_distance)
    eval_rows = rest.to_dict("records")
    train_rows = first_train.reset_index().to_dict("records")
    eval_ids_by_sha = test.groupby("image_sha256")["item_id"].apply(list).to_dict()
    for i, j, distance, _ in near:
        match, record = train_rows[left[i][0]], eval_rows[right[j][0]]
        for eval_id in eval_ids_by_sha[record["image_sha256"]]:
            pairs.append({"eval_id": eval_id, "train_id": match["item_id"],
                          "train_config": match["config"], "how": "near-duplicate",
                          "distance": distance})
    return pairs


def check(recipe: Recipe, run_root: Path, pool: pd.DataFrame, triplets: pd.DataFrame,
             sft_images: pd.DataFrame, test: pd.DataFrame, progress: Callable[[str, int, int], None] | None) -> set[str]:
    """The export's check: eval item_ids that show a training image (sft rows' images, and
    every rl anchor, positive and negative) are refused (TrainEvalOverlap) or, under
    export.eval_overlap=drop, returned to be left out."""
    rl_ids = set(triplets["item_id"]) | set(triplets["positive_item_id"]) | set(
        triplets["negative_item_id"])
    columns = ["item_id", "image_sha256", "image_path"]
    train = pd.concat([sft_images[columns].assign(config="sft"),
                       pool.loc[pool["item_id"].isin(rl_ids), columns].assign(config="rl")],
                      ignore_index=True)
    distance = recipe.split.phash_distance
    pairs = find_overlap(train, test[columns], distance, progress)
    if pairs and recipe.export.eval_overlap == "refuse":
        raise TrainEvalOverlap(overlap_message(pairs, run_root, distance))
    if pairs:
        log.warning("export: %d eval row(s) show a training image and are left out "
                    "(export.eval_overlap=drop)", len({p["eval_id"] for p in pairs}))
    return {p["eval_id"] for p in pairs}


def overlap_message(pairs: list[dict], run_root: Path, max_distance: int) -> str:
    """The refusal: which eval rows show which training images, and the ways out."""
    shown = "; ".join(
        f"{p['eval_id']} = {p['train_config']} {p['train_id']} ({p['how']}"
        + (f", {p['distance']} bits" if p["how"] != "sha256" else "") + ")"
        for p in pairs[:LISTED])
    more = f" and {len(pairs) - LISTED} more" if len(pairs) > LISTED else ""
    eval_rows = len({p["eval_id"] for p in pairs})
    return (
        f"{eval_rows} evaluation image(s) of {run_root} are also training images (sha256, or "
        f"pHash within {max_distance} bits): {shown}{more}. Nothing was written. Rerun "
        "`finecot split` so that the pool and the test set do not share images, or set "
        "export.eval_overlap=drop (--set export.eval_overlap=drop) to leave those eval rows out"
    )
