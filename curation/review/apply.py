"""Apply the reviewers' verdicts: a new version of the curated table, with provenance.

    finecot review apply --run runs/birds [--rule latest|majority|any_reject]

Reads accepted.parquet (the filter's curated rows), rejected.parquet (only rows that were
pushed for audit and reviewed), review_annotations.parquet (`finecot review pull`) and
writes:

  reviewed.parquet         the new curated table: every accepted row not rejected by a
                           reviewer, each with review_status (unreviewed | accepted | fixed),
                           reviewer, reviewed_at, original_rationale (when edited),
                           review_reasons, review_note, original_label (when corrected).
                           The previous version is kept as reviewed.vN.parquet.
  review_excluded.parquet  rows kept out: rejected by the reviewer (review_reasons = the
                           reviewer's reasons), or flagged: a fix, label correction or audit
                           row whose final text the filters still reject (review_reasons =
                           the filter's reason codes). An edit that breaks the format or
                           names another class is flagged, never silently accepted.
  label_corrections.parquet  every gold label a reviewer corrected (item, from, to, who, when);
                           the corrected class is applied to the row's label and label_id.
  review_stats.json        reviewed / accepted / fixed / flagged / rejected (by reason), label
                           corrections, teacher-vs-reviewer and inter-reviewer agreement;
                           also copied under "review" into funnel.json for the card/report.

Fixed texts are re-parsed and re-judged with the filter stage's own `judge()`
(curation/filter/filters.py), against the corrected label when there is one.

A verdict applies only to the text its reviewer saw: annotations are matched to rows by
draft_id AND the sha256 of the response (`response_sha256`, recorded at push). A draft
whose text changed since (a new draft run, another run's task in a shared project) is
unreviewed, and the annotations that matched nothing are counted (`unmatched_annotations`).

A label correction is about the item: every other row of the item takes the corrected class
too and is re-judged against it (its text most likely argued for the old class: then it is
flagged, `label_corrected`). `finecot export` applies the corrections to the item in every
config (curation/export/corrections.py). After writing, the stats name the products made
from the old tables (dataset/, report/) and the command that refreshes each (`stale`).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from itertools import combinations
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.core import lineage
from curation.core.config import Recipe
from curation.core.labels import Registry, match
from curation.core.rundir import RunDir
from curation.core.tables import (
    atomic_path,
    read_json,
    read_table,
    write_json_atomic,
    write_parquet_atomic,
)
from curation.review.client import ReviewError
from curation.review.push_pull import read_annotations, text_sha256

log = logging.getLogger(__name__)

RULES = ("latest", "majority", "any_reject")
DECISIONS = ("accept", "fix", "reject")
# On a majority tie the more cautious verdict wins.
CAUTION = {"reject": 2, "fix": 1, "accept": 0}
PARSED = ("think", "answer", "visual_analysis", "candidates", "comparison", "prediction")

REVIEW_FIELDS = [
    ("review_status", pa.string()),
    ("reviewer", pa.string()),
    ("reviewed_at", pa.string()),
    ("original_rationale", pa.string()),
    ("review_reasons", pa.list_(pa.string())),
    ("review_note", pa.string()),
    ("original_label", pa.string()),
    ("review_annotations", pa.int64()),
]
CORRECTION_SCHEMA = pa.schema([
    ("draft_id", pa.string()), ("item_id", pa.string()), ("dataset", pa.string()),
    ("from_label", pa.string()), ("to_label", pa.string()), ("to_label_id", pa.int64()),
    ("reviewer", pa.string()), ("reviewed_at", pa.string()),
])


# -- several annotations on one task ---------------------------------------------------------


def decision_of(ann: dict, original: str | None) -> str:
    """The annotation's verdict, made consistent with what the reviewer actually did to the
    teacher's text `original`: an edit is a fix, a "fix" without an edit is an accept.

    >>> decision_of({"decision": "accept", "rationale": "new"}, "old")
    'fix'
    >>> decision_of({"decision": "fix", "rationale": "same "}, "same")
    'accept'
    """
    decision = ann.get("decision")
    text = ann.get("rationale")
    edited = text is not None and text.strip() != (original or "").strip()
    if decision == "reject":
        return "reject"
    return "fix" if edited else "accept"


def _latest(anns: Sequence[dict]) -> dict:
    return max(anns, key=lambda a: (a.get("updated_at") or "", a["annotation_id"]))


def combine(anns: Sequence[dict], rule: str, original: str | None = None) -> dict:
    """One verdict from several annotations: latest, majority (ties: most cautious), any_reject.

    The winner is the latest annotation with the winning decision; a reject carries the
    reasons of every annotation that rejected.

    >>> a = [{"annotation_id": 1, "updated_at": "1", "decision": "reject", "reject_reasons": ["other"]},
    ...      {"annotation_id": 2, "updated_at": "2", "decision": "accept", "reject_reasons": []}]
    >>> combine(a, "latest")["decision"], combine(a, "any_reject")["decision"]
    ('accept', 'reject')
    >>> combine(a, "majority")["decision"]   # 1-1 tie: the cautious verdict
    'reject'
    """
    if rule not in RULES:
        raise ValueError(f"unknown review rule {rule!r}; choose one of {', '.join(RULES)}")
    votes = [(decision_of(a, original), a) for a in anns]
    if rule == "latest":
        winner = decision_of(_latest(anns), original)
    elif rule == "any_reject":
        winner = "reject" if any(d == "reject" for d, _ in votes) else decision_of(_latest(anns), original)
    else:
        counts = Counter(d for d, _ in votes)
        winner = max(counts, key=lambda d: (counts[d], CAUTION[d]))
    chosen = dict(_latest([a for d, a in votes if d == winner]))
    chosen["decision"] = winner
    if winner == "reject":
        reasons = [r for d, a in votes if d == "reject" for r in (a.get("reject_reasons") or ())]
        chosen["reject_reasons"] = list(dict.fromkeys(reasons)) or ["unspecified"]
    return chosen


def agreement(groups: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Inter-reviewer agreement on decisions over tasks with 2+ annotations.

    Pairwise percent agreement, and Fleiss' kappa (the variable-raters form).

    >>> agreement([["accept", "accept"], ["reject", "accept"]])["pairwise_agreement"]
    0.5
    """
    multi = [g for g in groups if len(g) >= 2]
    if not multi:
        return {"tasks_with_overlap": 0, "pairwise_agreement": None, "fleiss_kappa": None}
    pairs = [a == b for g in multi for a, b in combinations(g, 2)]
    per_task, totals = [], Counter()
    for g in multi:
        counts = Counter(g)
        totals.update(counts)
        n = len(g)
        per_task.append((sum(c * c for c in counts.values()) - n) / (n * (n - 1)))
    p_bar = sum(per_task) / len(per_task)
    n_all = sum(totals.values())
    p_e = sum((c / n_all) ** 2 for c in totals.values())
    kappa = 1.0 if p_e == 1 else (p_bar - p_e) / (1 - p_e)
    return {
        "tasks_with_overlap": len(multi),
        "pairwise_agreement": round(sum(pairs) / len(pairs), 4),
        "fleiss_kappa": round(kappa, 4),
    }


# -- apply ------------------------------------------------------------------------------------


def _filters(recipe: Recipe, run: RunDir):
    """The filter stage's own context and judge: fixed texts pass the same gate."""
    from curation.filter.filters import judge, make_context

    return make_context(recipe, run), judge


def _rejudge(row: dict, text: str, label: str, ctx: Any, judge: Any) -> tuple[bool, list[str], dict]:
    draft = {**row, "response": text, "finish_reason": "stop", "label": label}
    verdict = judge(draft, ctx)
    parsed = verdict.parsed
    sections = {name: getattr(parsed, name) for name in PARSED}
    sections["candidates"] = list(sections["candidates"] or [])
    return bool(verdict.accepted), list(verdict.reasons), sections


def _correct_label(row: dict, chosen: dict, registry: Registry | None) -> tuple[dict | None, str | None]:
    """(correction record, error code) for a 'gold label is wrong' flag."""
    if not chosen.get("label_wrong"):
        return None, None
    name = chosen.get("corrected_label")
    info = registry.resolve(name, row.get("dataset")) if (registry and name) else None
    if info is None:
        return None, "label_correction_unknown_class" if name else "label_correction_missing"
    if info.name == row.get("label"):
        return None, None
    return {
        "draft_id": row["draft_id"], "item_id": row.get("item_id"), "dataset": row.get("dataset"),
        "from_label": row.get("label"), "to_label": info.name, "to_label_id": info.label_id,
        "reviewer": chosen.get("reviewer"), "reviewed_at": chosen.get("updated_at"),
    }, None


def review_row(
    row: dict, anns: Sequence[dict], rule: str, registry: Registry | None, gate: Any
) -> tuple[dict, dict | None]:
    """One row after review: (row with review fields, label correction or None)."""
    out = {**row, "review_status": "unreviewed", "reviewer": None, "reviewed_at": None,
           "original_rationale": None, "review_reasons": [], "review_note": None,
           "original_label": None, "review_annotations": len(anns)}
    if not anns:
        return out, None
    chosen = combine(anns, rule, row.get("response"))
    out.update(reviewer=chosen.get("reviewer"), reviewed_at=chosen.get("updated_at"),
               review_note=chosen.get("note"))
    if chosen["decision"] == "reject":
        out.update(review_status="rejected", review_reasons=list(chosen["reject_reasons"]))
        return out, None

    correction, label_error = _correct_label(row, chosen, registry)
    if label_error:
        out.update(review_status="flagged", review_reasons=[label_error])
        return out, None
    if correction:
        info = registry.resolve(correction["to_label"], row.get("dataset"))
        out.update(original_label=row.get("label"), label=info.name, label_id=info.label_id,
                   super_category=info.super_category)

    fixed = chosen["decision"] == "fix"
    text = chosen["rationale"] if fixed else row.get("response") or ""
    if fixed or correction or row.get("verdict") != "accepted":
        ctx, judge = gate()
        ok, reasons, sections = _rejudge(row, text, out["label"], ctx, judge)
        out.update(sections)
        out.update(verdict="accepted" if ok else "rejected", reasons=reasons)
        if fixed:
            out.update(original_rationale=row.get("response"), response=text)
        if not ok:
            out.update(review_status="flagged", review_reasons=reasons or ["filter_rejected"])
            return out, correction
    out["review_status"] = "fixed" if fixed else "accepted"
    return out, correction


def _widen(field: pa.Field) -> pa.Field:
    """An all-null column of the input (type null) must still hold review edits."""
    if pa.types.is_null(field.type):
        return field.with_type(pa.string())
    if pa.types.is_list(field.type) and pa.types.is_null(field.type.value_type):
        return field.with_type(pa.list_(pa.string()))
    return field


def _schema(base: pa.Schema) -> pa.Schema:
    fields = [_widen(f) for f in base if f.name not in dict(REVIEW_FIELDS)]
    return pa.schema(fields + [pa.field(n, t) for n, t in REVIEW_FIELDS])


def write_version(run: RunDir, table: pa.Table) -> tuple[int, str | None]:
    """Write reviewed.parquet; keep the previous one as reviewed.vN.parquet. Return (N+1, kept)."""
    path = run.path("reviewed.parquet")
    versions = sorted(int(p.stem.split(".v")[-1]) for p in run.root.glob("reviewed.v*.parquet"))
    version = (versions[-1] if versions else 0) + 1
    kept = None
    if path.exists():
        kept = run.path(f"reviewed.v{version}.parquet")
        try:  # the old version stays under its own name; then the new one swaps in atomically
            os.link(path, kept)
        except OSError:
            shutil.copy2(path, kept)
        version += 1
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return version, str(kept.name) if kept else None


@lineage.recorded("review apply")  # the run lock, and manifest.json's record
def apply_review(recipe: Recipe, run: RunDir, rule: str | None = None) -> dict[str, Any]:
    """Apply the pulled annotations to the curated table; return the review stats."""
    rule = rule or recipe.review.rule
    if rule not in RULES:
        raise ReviewError(f"unknown review rule {rule!r}; choose one of {', '.join(RULES)}")
    by_key: dict[tuple[str, str | None], list[dict]] = defaultdict(list)
    for ann in read_annotations(run):
        by_key[(ann["draft_id"], ann.get("response_sha256"))].append(ann)
    accepted = read_table(run.require(run.path("accepted.parquet"), "filter"))
    rows = accepted.to_pylist()
    audit_path = run.path("rejected.parquet")
    reviewed_ids = {draft_id for draft_id, _ in by_key}
    if audit_path.exists():
        rows += [r for r in read_table(audit_path).to_pylist() if r["draft_id"] in reviewed_ids]
    registry = Registry.load(run.registry) if run.registry.exists() else None
    by_draft = {r["draft_id"]: by_key.get((r["draft_id"], text_sha256(r.get("response"))), [])
                for r in rows}
    unmatched = sum(len(a) for a in by_key.values()) - sum(len(a) for a in by_draft.values())
    if unmatched:
        log.warning("review apply: %d annotation(s) are about texts the run no longer has (the "
                    "draft changed, or the task came from another run or an older finecot): "
                    "not applied; `finecot review push` sends the current texts", unmatched)

    cache: list = []

    def gate():  # the filter context is built once, and only when something is re-judged
        if not cache:
            cache.append(_filters(recipe, run))
        return cache[0]

    outs, corrections = [], []
    for row in rows:
        out, correction = review_row(row, by_draft.get(row["draft_id"], []), rule, registry, gate)
        if correction:
            corrections.append(correction)
        outs.append(out)
    outs = relabel_items(outs, corrections, registry, gate)
    kept = [o for o in outs if o["review_status"] in KEPT]
    excluded = [o for o in outs if o["review_status"] not in KEPT]

    schema = _schema(accepted.schema)
    version, previous = write_version(run, pa.Table.from_pylist(kept, schema=schema))
    write_parquet_atomic(run.path("review_excluded.parquet"), pa.Table.from_pylist(excluded, schema=schema))
    write_parquet_atomic(run.path("label_corrections.parquet"),
                         pa.Table.from_pylist(corrections, schema=CORRECTION_SCHEMA))
    stats = review_stats(rows, kept + excluded, by_draft, registry, rule)
    stats.update(version=version, previous_version=previous, unmatched_annotations=unmatched,
                 created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_json_atomic(run.path("review_stats.json"), stats)
    funnel = run.path("funnel.json")
    if funnel.exists():
        data = read_json(funnel)
        data["review"] = stats
        write_json_atomic(funnel, data)
    log.info("review apply (%s): %d kept, %d excluded, %d label correction(s) -> version %d",
             rule, len(kept), len(excluded), len(corrections), version)
    # (not saved: a later export makes it untrue) what this apply made stale, and the fix
    stats["stale"] = [{"product": product, "command": command}
                      for product, command in lineage.stale_products(run)]
    return stats


KEPT = ("unreviewed", "accepted", "fixed")


def relabel_items(outs: list[dict], corrections: Sequence[dict], registry: Registry | None,
                  gate: Any) -> list[dict]:
    """Every kept row of a corrected item takes the corrected class, and is re-judged
    against it: a text that argued for the old class is flagged (`label_corrected`)."""
    fixes = {c["item_id"]: c for c in sorted(corrections, key=lambda c: str(c["reviewed_at"] or ""))}
    if not fixes or registry is None:
        return outs
    result = []
    for out in outs:
        fix = fixes.get(out.get("item_id"))
        if fix is None or out["label"] == fix["to_label"] or out["review_status"] not in KEPT:
            result.append(out)
            continue
        info = registry.resolve(fix["to_label"], out.get("dataset"))
        if info is None:  # (the correction named a class of another dataset: cannot apply)
            result.append(out)
            continue
        out = {**out, "original_label": out["label"], "label": info.name,
               "label_id": info.label_id, "super_category": info.super_category}
        ctx, judge = gate()
        ok, reasons, sections = _rejudge(out, out.get("response") or "", info.name, ctx, judge)
        out.update(sections, verdict="accepted" if ok else "rejected", reasons=reasons)
        if not ok:
            out.update(review_status="flagged", review_reasons=["label_corrected", *reasons])
        result.append(out)
    return result


def review_stats(
    before: Sequence[dict], after: Sequence[dict], by_draft: dict[str, list[dict]],
    registry: Registry | None, rule: str,
) -> dict[str, Any]:
    """The numbers the card and report show about the human review."""
    reviewed = [r for r in after if r["review_status"] != "unreviewed"]
    status = Counter(r["review_status"] for r in after)
    rejected_by = Counter(x for r in after if r["review_status"] == "rejected" for x in r["review_reasons"])
    flagged_by = Counter(x for r in after if r["review_status"] == "flagged" for x in r["review_reasons"])
    filter_verdict = {r["draft_id"]: r.get("verdict") for r in before}
    # Teacher vs reviewer: did the reviewer keep what the filter kept (and drop what it dropped),
    # and does the teacher's answer name the final (possibly corrected) label?
    verdict_agree = [
        (filter_verdict[r["draft_id"]] == "accepted") == (r["review_status"] != "rejected")
        for r in reviewed
    ]
    answer_agree = [
        match(r.get("answer"), r["label"], registry, r.get("dataset")).correct
        for r in reviewed if registry is not None and r["review_status"] != "rejected"
    ]
    original = {r["draft_id"]: r.get("response") for r in before}
    decisions = [[decision_of(a, original.get(k)) for a in anns] for k, anns in by_draft.items()]
    return {
        "rule": rule,
        "rows": len(after),
        "reviewed": len(reviewed),
        "unreviewed": status["unreviewed"],
        "accepted": status["accepted"],
        "fixed": status["fixed"],
        "flagged": status["flagged"],
        "rejected": status["rejected"],
        "rejected_by_reason": dict(rejected_by.most_common()),
        "flagged_by_reason": dict(flagged_by.most_common()),
        "label_corrections": sum(1 for r in after if r.get("original_label")),
        "kept": status["unreviewed"] + status["accepted"] + status["fixed"],
        "annotations": sum(len(a) for a in by_draft.values()),
        "teacher_vs_reviewer": {
            "verdict_agreement": round(sum(verdict_agree) / len(verdict_agree), 4) if verdict_agree else None,
            "answer_agreement": round(sum(answer_agree) / len(answer_agree), 4) if answer_agree else None,
            "edit_rate": round(status["fixed"] / len(reviewed), 4) if reviewed else None,
        },
        "inter_reviewer": agreement(decisions),
    }
