"""The filters measured against what the teacher says it did: precision and recall per defect.

A scripted teacher (curation/synthetic) attaches its own account to each answer
(`finecot_truth`: did it misperceive, break the format, leak the label?). The draft stage
keeps it per sample (drafts.parquet `teacher_truth`), and the filter stage measures its
verdicts against it, so every pipeline run on the synthetic world says how well the filters
find each defect (funnel.json `against_truth`, printed by `finecot filter`). Real teachers
send no such account: the measure is then absent, not zero.

    >>> truths = [({"format_error": None, "answer": "A", "true_class": "A", "leak": None}, ()),
    ...           ({"format_error": None, "answer": "B", "true_class": "A", "leak": None},
    ...            ("wrong_answer",)),
    ...           ({"format_error": "truncated", "answer": "A", "true_class": "A", "leak": None},
    ...            ("truncated",))]
    >>> measure(truths)["wrong_answer"]
    {'cases': 1, 'flagged': 1, 'precision': 1.0, 'recall': 1.0}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from curation.filter.filters import REASON_FILTER

# Reason codes that count as finding each defect the teacher reports.
WRONG_CODES = frozenset({"wrong_answer", "ambiguous_answer", "unknown_answer", "empty_answer"})
LEAK_CODES = frozenset({"label_leak", "side_information"})


def _defects(truth: Mapping[str, Any], reasons: Sequence[str]) -> dict[str, tuple[bool, bool]]:
    """{defect: (the teacher says so, the filters say so)} for one draft. The answer and the
    analysis of a draft whose format is broken are not judged: there is nothing to judge."""
    codes = set(reasons)
    out = {"format_error": (truth.get("format_error") is not None,
                            any(code not in REASON_FILTER for code in codes))}
    if truth.get("format_error") is None:
        out["wrong_answer"] = (truth.get("answer") != truth.get("true_class"),
                               bool(codes & WRONG_CODES))
        out["leak"] = (truth.get("leak") is not None, bool(codes & LEAK_CODES))
    return out


def measure(drafts: Iterable[tuple[Mapping[str, Any], Sequence[str]]]) -> dict[str, dict[str, Any]]:
    """{defect: cases, flagged, precision, recall} over (truth, reasons) pairs; a defect with
    no case and nothing flagged is left out (its figures would mean nothing)."""
    counts: dict[str, list[int]] = {}  # defect -> [true positives, flagged, cases]
    for truth, reasons in drafts:
        for defect, (actual, flagged) in _defects(truth, reasons).items():
            tally = counts.setdefault(defect, [0, 0, 0])
            tally[0] += actual and flagged
            tally[1] += flagged
            tally[2] += actual
    return {defect: {"cases": cases, "flagged": flagged,
                     "precision": round(hits / flagged, 4) if flagged else 1.0,
                     "recall": round(hits / cases, 4) if cases else 1.0}
            for defect, (hits, flagged, cases) in sorted(counts.items()) if cases or flagged}
