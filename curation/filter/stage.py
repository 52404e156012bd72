"""The filter stage: drafts.parquet -> accepted.parquet, rejected.parquet, funnel.json.

    finecot filter --run runs/birds          (or the stage "filter" of `finecot run`)

Every draft is judged by curation/filter/filters.py (all filters run, every reason kept). The
accepted and rejected tables are the drafts' columns plus the parsed sections (think,
answer, visual_analysis, candidates, comparison, prediction), verdict, reasons, flags and
evidence (JSON). funnel.json: drafts -> each filter in order -> accepted, the count each
filter rejects, every reason code's count, flags, per-class drafts/accepted, the settings.
Drafts are judged in draft_id order, so the duplicate filter keeps the same first copy on
every run; all files are written atomically.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import pyarrow as pa

from curation.core import lineage
from curation.core.config import Recipe
from curation.core.rundir import RunDir
from curation.core.stage import Progress
from curation.core.tables import ParquetStreamWriter, read_table, write_json_atomic
from curation.filter.filters import Verdict, filter_of, judge, make_context

log = logging.getLogger(__name__)


PARSED_FIELDS = [
    pa.field("think", pa.string()),
    pa.field("answer", pa.string()),
    pa.field("visual_analysis", pa.string()),
    pa.field("candidates", pa.list_(pa.string())),
    pa.field("comparison", pa.string()),
    pa.field("prediction", pa.string()),
    pa.field("verdict", pa.string()),
    pa.field("reasons", pa.list_(pa.string())),
    pa.field("flags", pa.list_(pa.string())),
    pa.field("evidence", pa.string()),  # JSON {filter: [what it found]}
]


def verdict_columns(v: Verdict) -> dict[str, Any]:
    """The parsed sections and verdict of one draft, as table columns."""
    r = v.parsed
    return {
        "think": r.think, "answer": r.answer, "visual_analysis": r.visual_analysis,
        "candidates": list(r.candidates), "comparison": r.comparison, "prediction": r.prediction,
        "verdict": "accepted" if v.accepted else "rejected", "reasons": list(v.reasons),
        "flags": list(v.flags), "evidence": json.dumps(v.evidence, ensure_ascii=False),
    }


class Funnel:
    """Counts for funnel.json: drafts -> each filter (in order) -> accepted."""

    def __init__(self, enabled: Sequence[str]):
        self.enabled = list(enabled)
        self.drafts = 0
        self.accepted = 0
        self.failed = dict.fromkeys(self.enabled, 0)
        self.reasons: dict[str, int] = {}
        self.flags: dict[str, int] = {}
        self.cascade = dict.fromkeys(self.enabled, 0)  # drafts still alive after each filter
        self.hallucinated_names = 0
        self.per_class: dict[str, dict[str, int]] = {}

    def add(self, draft: Mapping, v: Verdict) -> None:
        self.drafts += 1
        self.accepted += v.accepted
        failed_filters = {filter_of(code) for code in v.reasons}
        for code in v.reasons:
            self.reasons[code] = self.reasons.get(code, 0) + 1
        for code in v.flags:
            self.flags[code] = self.flags.get(code, 0) + 1
        alive = True
        for name in self.enabled:
            if name in failed_filters:
                self.failed[name] += 1
                alive = False
            self.cascade[name] += alive
        self.hallucinated_names += len(v.evidence.get("hallucinated", ()))
        key = f"{draft.get('dataset')}/{draft.get('label')}"
        counts = self.per_class.setdefault(key, {"drafts": 0, "accepted": 0})
        counts["drafts"] += 1
        counts["accepted"] += v.accepted

    def as_dict(self) -> dict[str, Any]:
        return {
            "drafts": self.drafts,
            "accepted": self.accepted,
            "rejected": self.drafts - self.accepted,
            "cascade": [{"filter": "drafts", "remaining": self.drafts}]
            + [{"filter": n, "remaining": self.cascade[n]} for n in self.enabled],
            "failed_by_filter": self.failed,
            "reasons": dict(sorted(self.reasons.items(), key=lambda kv: -kv[1])),
            "flags": self.flags,
            "hallucinated_candidate_names": self.hallucinated_names,
            "per_class": self.per_class,
        }


@lineage.recorded("filter")  # the run lock, and manifest.json's record of what it read
def filter_stage(recipe: Recipe, run: RunDir, progress: Progress | None = None) -> dict[str, Any]:
    """drafts.parquet -> accepted.parquet, rejected.parquet, funnel.json (all atomic).

    With filters.judge on, the drafts that pass every local filter wait (in memory) for the
    judge's second teacher call (curation/filter/judge.py) before they are written.
    """
    ctx = make_context(recipe, run)
    drafts = lineage.in_pool(run, read_table(run.require(run.path("drafts.parquet"), "draft")))
    if "draft_id" in drafts.column_names:  # a fixed order: the duplicate filter keeps the first
        drafts = drafts.sort_by("draft_id")
    schema = pa.schema(
        [f for f in drafts.schema if f.name not in {p.name for p in PARSED_FIELDS}] + PARSED_FIELDS
    )
    use_judge = recipe.filters.judge
    missing = {"draft_id", "image_path", "image_sha256"} - set(drafts.column_names)
    if use_judge and missing:
        raise ValueError(f"filters.judge needs drafts with {sorted(missing)}: run `finecot draft`")
    funnel = Funnel([*ctx.enabled, "judge"] if use_judge else ctx.enabled)
    total = drafts.num_rows
    waiting: list[tuple[dict, Verdict]] = []  # accepted so far, for the judge
    with ParquetStreamWriter(run.path("accepted.parquet"), schema) as accepted, \
            ParquetStreamWriter(run.path("rejected.parquet"), schema) as rejected:
        done = 0
        for batch in drafts.to_batches(max_chunksize=2048):
            for row in batch.to_pylist():
                v = judge(row, ctx)
                if use_judge and v.accepted:
                    waiting.append((row, v))
                    continue
                funnel.add(row, v)
                (accepted if v.accepted else rejected).write({**row, **verdict_columns(v)})
            done += batch.num_rows
            if progress:
                progress("filter", done, total)
        if waiting:
            from curation.filter.judge import judge_rows  # the network, only when asked for

            rows = [{**row, "visual_analysis": v.parsed.visual_analysis} for row, v in waiting]
            outcome = judge_rows(recipe, run, rows, progress)
            for row, v in waiting:
                reason = outcome.get(row["draft_id"], "judge_failed")
                if reason is not None:
                    v = replace(v, accepted=False, reasons=(reason,))
                funnel.add(row, v)
                (accepted if v.accepted else rejected).write({**row, **verdict_columns(v)})
    summary = {**funnel.as_dict(), "settings": recipe.filters.model_dump()}
    write_json_atomic(run.path("funnel.json"), summary)
    log.info("filter: %d drafts, %d accepted", funnel.drafts, funnel.accepted)
    return summary
