"""The filters measured on real rationales labelled by reading (tests/fixtures/labelled_rationales).

    .venv/bin/python tests/labelled_set.py          # the table: precision and recall per defect

Each labelled row is judged like a draft with the paper's class registry and split (the
same context `finecot audit --split fine-r1` uses); a defect counts as found when the
verdict carries one of its reason codes (DEFECTS below). tests/test_labelled_set.py holds
the bar (>= 0.95 each) and the agreement of the two labelling passes.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.core.config import FilterConfig  # noqa: E402
from curation.filter.filters import build_context, judge  # noqa: E402
from curation.ingest.split import fine_r1_registry  # noqa: E402

FOLDER = Path(__file__).parent / "fixtures" / "labelled_rationales"
LABELS = ("leak", "side_information", "unseen_mention", "hedge", "off_domain", "degenerate")

# Defect -> the reason (or flag) codes that report it.
DEFECTS: dict[str, frozenset[str]] = {
    "leak": frozenset({"label_leak"}),
    "side_information": frozenset({"side_information"}),
    "unseen_mention": frozenset({"unseen_mention"}),
    "hedge": frozenset({"ambiguous_answer", "prediction_hedged"}),
    "off_domain": frozenset({"off_domain"}),
    "degenerate": frozenset({"repetition"}),
}


def load(name: str = "labels.jsonl") -> list[dict]:
    """The labelled rows of one file of the fixture folder."""
    lines = (FOLDER / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def found(rows: Iterable[dict]) -> dict[str, set[str]]:
    """{row id: the defects the filters report} for labelled rows."""
    registry, lists = fine_r1_registry()
    ctx = build_context(registry, FilterConfig(), lists)
    out = {}
    for row in rows:
        draft = {"response": row["response"], "label": row["label"], "dataset": row["dataset"],
                 "super_category": row["dataset"], "item_id": row["id"], "draft_id": row["id"],
                 "finish_reason": "stop"}
        v = judge(draft, ctx)
        codes = set(v.reasons) | set(v.flags)
        out[row["id"]] = {name for name, wanted in DEFECTS.items() if codes & wanted}
    return out


@dataclass(frozen=True)
class Score:
    labelled: int  # rows labelled with the defect
    reported: int  # rows the filters report it for
    both: int

    @property
    def precision(self) -> float:
        return self.both / self.reported if self.reported else 1.0

    @property
    def recall(self) -> float:
        return self.both / self.labelled if self.labelled else 1.0


def score(rows: list[dict], reported: dict[str, set[str]]) -> dict[str, Score]:
    """Precision and recall of each defect over `rows` (labels vs what the filters report)."""
    out = {}
    for name in LABELS:
        truth = {r["id"] for r in rows if name in r["labels"]}
        said = {r["id"] for r in rows if name in reported[r["id"]]}
        out[name] = Score(len(truth), len(said), len(truth & said))
    return out


def misses(rows: list[dict], reported: dict[str, set[str]], name: str) -> dict[str, list[str]]:
    """The row ids a defect is missed for and wrongly reported for."""
    truth = {r["id"] for r in rows if name in r["labels"]}
    said = {r["id"] for r in rows if name in reported[r["id"]]}
    return {"missed": sorted(truth - said), "false": sorted(said - truth)}


def table(scores: dict[str, Score]) -> str:
    lines = [f"{'defect':<18}{'labelled':>9}{'reported':>9}{'precision':>10}{'recall':>8}"]
    for name, s in scores.items():
        lines.append(f"{name:<18}{s.labelled:>9}{s.reported:>9}{s.precision:>10.3f}{s.recall:>8.3f}")
    return "\n".join(lines)


def kappa(a: list[bool], b: list[bool]) -> float:
    """Cohen's kappa of two yes/no labellings of the same rows.

    >>> kappa([True, False, True, False], [True, False, False, False])
    0.5
    """
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pa, pb = sum(a) / n, sum(b) / n
    expected = pa * pb + (1 - pa) * (1 - pb)
    return 1.0 if expected == 1 else round((observed - expected) / (1 - expected), 4)


if __name__ == "__main__":
    rows = load()
    reported = found(rows)
    print(f"{len(rows)} labelled rows ({sum(r['source'] != 'handwritten' for r in rows)} Fine-R1)")
    print(table(score(rows, reported)))
    for name in LABELS:
        wrong = misses(rows, reported, name)
        if wrong["missed"] or wrong["false"]:
            print(f"{name}: missed {wrong['missed']}, wrongly reported {wrong['false']}")
