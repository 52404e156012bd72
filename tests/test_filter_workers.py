"""`finecot filter` and `finecot audit` over worker processes: the same bytes as one process,
the duplicate filter in input order; the funnel's columns agree; vacuous checks are named.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_filter_workers.py
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from labelled_set import load
from typer.testing import CliRunner

from curation.cli import app
from curation.core.config import FilterConfig, Recipe
from curation.core.rundir import RunDir
from curation.core.tables import read_table, write_json_atomic, write_parquet_atomic
from curation.filter.audit import audit_rows, write_verdicts
from curation.filter.filters import build_context
from curation.filter.parallel import judge_all
from curation.filter.stage import filter_stage, verdict_columns
from curation.ingest.split import fine_r1_registry


@pytest.fixture(scope="module")
def fine_r1():
    return fine_r1_registry()


def drafts() -> list[dict]:
    """Real rationales, each three times (two images share them: near-duplicates), 513 in all:
    enough that two workers start (judge_all keeps a small job in process)."""
    rows = []
    for copy in range(3):
        for row in load():
            rows.append({"response": row["response"], "label": row["label"],
                         "dataset": row["dataset"], "super_category": row["dataset"],
                         "item_id": f"{row['id']}/{copy % 2}", "image_sha256": f"{row['id']}/{copy % 2}",
                         "draft_id": f"{row['id']}#{copy}", "finish_reason": "stop", "status": "ok"})
    return rows


def test_workers_give_the_verdicts_of_one_process(fine_r1):
    registry, lists = fine_r1
    rows = drafts()
    outputs = {}
    for workers in (1, 2, 3):
        ctx = build_context(registry, FilterConfig(), lists)
        verdicts = list(judge_all(rows, ctx, workers, min_per_worker=1))
        outputs[workers] = [json.dumps(verdict_columns(v)) for v in verdicts]
    assert outputs[1] == outputs[2] == outputs[3]
    reasons = [json.loads(o)["reasons"] for o in outputs[1]]
    assert sum("near_duplicate" in r for r in reasons) > 0  # the duplicate filter did work
    with pytest.raises(ValueError, match="at least 1"):
        list(judge_all(rows, build_context(registry, FilterConfig(), lists), 0))


def test_filter_stage_with_workers_writes_the_same_tables(tmp_path, fine_r1):
    registry, lists = fine_r1
    tables = {}
    for workers in (1, 2):
        run = RunDir(tmp_path / f"run{workers}")
        registry.save(run.registry)
        write_json_atomic(run.split, {"mode": "fine-r1", "seed": 0, "datasets": lists})
        write_parquet_atomic(run.path("drafts.parquet"), pa.Table.from_pylist(drafts()))
        summary = filter_stage(Recipe(run_dir=str(run.root)), run, workers=workers)
        tables[workers] = (read_table(run.path("accepted.parquet")), read_table(run.path("rejected.parquet")),
                           run.path("funnel.json").read_text())
        funnel = summary
        remaining = [step["remaining"] for step in funnel["cascade"]]
        first = funnel["first_rejected_by_filter"]
        names = [step["filter"] for step in funnel["cascade"][1:]]
        # one consistent cascade: each filter's first rejections are the drop in remaining
        assert [a - b for a, b in zip(remaining, remaining[1:], strict=False)] == [first[n] for n in names]
        assert remaining[-1] == funnel["accepted"]
        assert all(funnel["failed_by_filter"][n] >= first[n] for n in names)
    assert tables[1][0].equals(tables[2][0]) and tables[1][1].equals(tables[2][1])
    assert tables[1][2] == tables[2][2]


def test_audit_names_the_checks_that_cannot_reject(tmp_path, fine_r1):
    registry, lists = fine_r1
    rows = [{"row": i, "question": "", "response": r["response"], "image": r["id"]}
            for i, r in enumerate(load())]  # no label: the gold is each row's own answer
    summary, out = audit_rows(rows, build_context(registry, FilterConfig(), lists), workers=1)
    assert "answer_correct" in summary["vacuous"] and "duplicate" in summary["vacuous"]
    assert "unseen_mention" not in summary["vacuous"]
    assert summary["accepted"] == summary["funnel"]["accepted"] == sum(o["verdict"] == "accepted" for o in out)
    no_split, _ = audit_rows(rows[:5], build_context(registry, FilterConfig(), None), workers=1)
    assert "unseen_mention" in no_split["vacuous"]
    write_verdicts(tmp_path / "v.parquet", out)
    assert read_table(tmp_path / "v.parquet").num_rows == len(rows)


def test_cli_audit_workers_and_funnel_columns(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps({"response": r["response"]}) for r in load()[:40]))
    result = CliRunner().invoke(app, ["audit", str(corpus), "--split", "fine-r1", "--workers", "2",
                                      "--out", str(tmp_path / "v.parquet")])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.replace("│", " ").replace("┃", " ").split())  # cells, joined
    assert "rejects first remaining note" in text
    assert "a wrong class cannot show" in text  # answer_correct is vacuous without a gold
    bad = CliRunner().invoke(app, ["audit", str(corpus), "--split", "fine-r1", "--workers", "0"])
    assert bad.exit_code != 0


def test_funnel_keeps_the_teacher_truth_with_the_reasons(fine_r1):
    """The hook for precision and recall against the scripted teacher's truth: drafts with a
    `teacher_truth` column are paired with their reasons, in input order."""
    from curation.filter.stage import Funnel

    registry, lists = fine_r1
    rows = drafts()[:20]
    for i, row in enumerate(rows):
        row["teacher_truth"] = json.dumps({"index": i, "leak": False}) if i % 2 else None
    ctx = build_context(registry, FilterConfig(), lists)
    funnel = Funnel(ctx.enabled)
    for row, v in zip(rows, judge_all(rows, ctx, 1), strict=True):
        funnel.add(row, v)
    assert [t["index"] for t, _ in funnel.truth] == list(range(1, 20, 2))
    assert all(isinstance(reasons, tuple) for _, reasons in funnel.truth)
