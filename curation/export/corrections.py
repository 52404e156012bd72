"""The reviewers' word on items, applied to every exported config (curation/export/stage.py).

`finecot review apply` writes label_corrections.parquet (a reviewer said an item's gold
label is wrong and named the right class) and review_excluded.parquet (rows a reviewer
rejected, or whose edit the filters rejected). Here they become facts about items:

- `item_corrections`: the corrected class of each item (the latest correction wins), so
  that the item carries it in every config: sft, rl (`answer`; triplets are built on the
  corrected pool, so the positive is of the new class and the negative of another), the
  eval configs if the item is there, and the LLaMA-Factory and EasyR1 files made from them;
  with `original_label` and the reviewer's name (`label_corrected_by`).
- `relabel`: a table's rows of corrected items with the new label, label_id and
  super-category.
- `excluded_items`: items a reviewer kept out (a row excluded, none of its rows accepted or
  fixed by a reviewer): they are never TAPO anchors, positives or negatives.
- `unseen_classes`: the classes of split.json's unseen side: an item corrected into one of
  them is an image of a held-out class and leaves the training configs.

    corrections = item_corrections(run, registry)
    pool = relabel(pd.read_parquet(run.pool), corrections)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd
import pyarrow.parquet as pq

from curation.core.labels import Registry
from curation.core.rundir import RunDir
from curation.core.tables import read_json, read_table

log = logging.getLogger(__name__)

CORRECTIONS = "label_corrections.parquet"
EXCLUDED = "review_excluded.parquet"
REVIEWED = "reviewed.parquet"
KEPT_BY_REVIEWER = ("accepted", "fixed")


@dataclass(frozen=True)
class Correction:
    """The class a reviewer gave an item, and who did."""

    item_id: str
    from_label: str
    label: str
    label_id: int
    super_category: str | None
    reviewer: str | None


def item_corrections(run: RunDir, registry: Registry) -> dict[str, Correction]:
    """item_id -> its correction, from label_corrections.parquet (empty without one). Two
    reviewers who corrected one item differently: the latest correction wins (logged)."""
    path = run.path(CORRECTIONS)
    if not path.exists():
        return {}
    rows = sorted(read_table(path).to_pylist(), key=lambda r: str(r.get("reviewed_at") or ""))
    out: dict[str, Correction] = {}
    for row in rows:
        info = registry.resolve(row["to_label"], row.get("dataset"))
        if info is None:  # a class no longer in the registry: the correction cannot apply
            log.warning("label correction of %s names %r, which registry.json does not know: "
                        "left out", row["item_id"], row["to_label"])
            continue
        previous = out.get(row["item_id"])
        if previous and previous.label != info.name:
            log.warning("item %s was corrected to %r and to %r: the latest (%r) is used",
                        row["item_id"], previous.label, info.name, info.name)
        out[row["item_id"]] = Correction(
            row["item_id"], row["from_label"], info.name, info.label_id, info.super_category,
            row.get("reviewer"))
    return out


def relabel(frame: pd.DataFrame, corrections: dict[str, Correction]) -> pd.DataFrame:
    """A copy of `frame` (with item_id, label, label_id, super_category) whose corrected
    items carry their new class, plus `original_label` and `label_corrected_by` columns."""
    frame = frame.copy()
    frame["original_label"] = None
    frame["label_corrected_by"] = None
    if not corrections or frame.empty:
        return frame
    hit = frame["item_id"].isin(corrections)
    for index in frame.index[hit]:
        fix = corrections[frame.at[index, "item_id"]]
        frame.at[index, "original_label"] = frame.at[index, "label"]
        frame.at[index, "label"] = fix.label
        frame.at[index, "label_id"] = fix.label_id
        if "super_category" in frame and fix.super_category:
            frame.at[index, "super_category"] = fix.super_category
        frame.at[index, "label_corrected_by"] = fix.reviewer
    return frame


def relabel_record(record: dict, corrections: dict[str, Correction]) -> dict:
    """One row's dict with its item's correction applied (the same as `relabel`)."""
    fix = corrections.get(record.get("item_id"))
    if fix is None or record.get("label") == fix.label:
        return record
    return {**record, "original_label": record.get("label"), "label": fix.label,
            "label_id": fix.label_id,
            "super_category": fix.super_category or record.get("super_category")}


def excluded_items(run: RunDir) -> set[str]:
    """Items a reviewer kept out: a row in review_excluded.parquet, and no row of the item
    that a reviewer accepted or fixed."""
    path = run.path(EXCLUDED)
    if not path.exists() or "item_id" not in pq.read_schema(path).names:
        return set()
    excluded = set(read_table(path, columns=["item_id"]).column(0).to_pylist())
    reviewed = run.path(REVIEWED)
    if excluded and reviewed.exists() and {"item_id", "review_status"} <= set(
            pq.read_schema(reviewed).names):
        table = read_table(reviewed, columns=["item_id", "review_status"]).to_pylist()
        excluded -= {r["item_id"] for r in table if r["review_status"] in KEPT_BY_REVIEWER}
    return excluded


def unseen_classes(run: RunDir) -> set[tuple[str, str]]:
    """(dataset, class) of every unseen class in split.json (empty without it)."""
    if not run.split.exists():
        return set()
    datasets = read_json(run.split).get("datasets", {})
    return {(dataset, name) for dataset, sides in datasets.items()
            for name in sides.get("unseen", [])}
