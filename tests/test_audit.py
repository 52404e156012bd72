"""`finecot audit` on real teacher output (Fine-R1 sample), JSONL and Parquet; `finecot filter`.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_audit.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.core.config import FilterConfig
from curation.core.labels import ClassInfo, Registry
from curation.core.rundir import RunDir
from curation.core.tables import read_table, write_json_atomic, write_parquet_atomic
from curation.filter.audit import audit_file, load_corpus, resolve_gold
from curation.ingest.split import fine_r1_registry

FIXTURE = Path(__file__).parent / "fixtures" / "fine_r1_stage1_sample.json"
# Positions in the fixture of the original rows 16 (audio equipment), 26 (train), 54 (tornado).
NONSENSE = {5: "audio", 9: "train", 15: "tornado"}


@pytest.fixture(scope="module")
def fine_r1():
    return fine_r1_registry()


@pytest.fixture(scope="module")
def audited(fine_r1, tmp_path_factory):
    out = tmp_path_factory.mktemp("audit") / "verdicts.parquet"
    registry, lists = fine_r1
    return audit_file(FIXTURE, registry, lists, FilterConfig(), out), out


def test_audit_of_real_teacher_output(audited):
    summary, _ = audited
    assert summary["rows"] == 37
    assert summary["parse_rate"] == 1.0
    assert summary["section_rates"]["visual_analysis"] == 1.0
    assert summary["section_rates"]["candidates"] == pytest.approx(35 / 37, abs=1e-4)
    assert summary["unresolved_answers"] == 0
    # the sample was chosen to hold leaks and unseen mentions (see fixtures/ATTRIBUTION.md)
    assert summary["rates"]["label_leak"] > 0.2
    assert summary["rates"]["side_information"] > 0.1
    assert summary["rates"]["unseen_mention"] > 0.1


def test_audit_flags_the_nonsense_aircraft_rationales(audited):
    summary, _ = audited
    flagged = {r["row"]: r for r in summary["off_domain_rows"]}
    assert set(NONSENSE) <= set(flagged)
    assert {flagged[row]["dataset"] for row in NONSENSE} == {"aircraft"}
    assert flagged[5]["answer"] == "DR-400"
    # Position 23 (original row 209) is a real mismatch too: the teacher was told of "a
    # Cairn, which is a type of stone structure, not a dog". Nothing else is off-domain.
    assert set(flagged) == set(NONSENSE) | {23}


def test_audit_writes_one_verdict_per_row(audited):
    summary, out = audited
    rows = read_table(out).to_pylist()
    assert [r["row"] for r in rows] == list(range(37))
    assert sum(r["verdict"] == "accepted" for r in rows) == summary["funnel"]["accepted"]
    by_row = {r["row"]: r for r in rows}
    assert "off_domain" in by_row[9]["reasons"]
    assert by_row[9]["label_source"] == "answer" and by_row[9]["label"] == "Metroliner"
    assert by_row[0]["candidates"][0] == "Eurofighter Typhoon"
    assert json.loads(by_row[5]["evidence"])["off_domain"]


def test_gold_from_the_answer_and_the_question(fine_r1):
    registry, _ = fine_r1
    domains = {c.dataset: c.super_category for c in registry}

    def gold(question, answer):
        return resolve_gold({"question": question, "response": f"<answer>{answer}</answer>"},
                            registry, domains)

    assert gold("What is the dogs name?", "English Setter")["dataset"] == "dog"
    assert gold("Which pet is this?", "English Setter")["dataset"] == "pet"
    assert gold("What species is this?", "Boeing 737-400")["dataset"] == "aircraft"
    unknown = gold("What airplane is this?", "Flying Saucer 9000")
    assert unknown == {"label": "Flying Saucer 9000", "dataset": "aircraft",
                       "super_category": "aircraft", "label_source": "answer", "resolved": False}


# -- other corpus formats ------------------------------------------------------------------

REGISTRY = Registry([ClassInfo(0, "Red Warbler", "birds", "bird"),
                     ClassInfo(1, "Blue Warbler", "birds", "bird"),
                     ClassInfo(2, "Green Warbler", "birds", "bird")])
GOOD = ("<think>Visual analysis: the bird has a red crown, a streaked breast, white wing bars, a "
        "short conical beak and a notched tail; the back is olive and the eye ring is pale.\n"
        "Candidates:\n- Red Warbler\n- Blue Warbler\nComparison: only the Red Warbler has a red "
        "crown; the Blue Warbler has a blue one and no streaks on the breast at all.\n"
        "The prediction is: Red Warbler</think><answer>Red Warbler</answer>")


def test_jsonl_flat_rows_and_sharegpt_conversations(tmp_path):
    path = tmp_path / "corpus.jsonl"
    lines = [
        {"response": GOOD, "label": "Red Warbler", "dataset": "birds"},
        {"response": GOOD, "label": "Blue Warbler", "dataset": "birds", "image_path": "b.jpg"},
        {"conversations": [{"from": "human", "value": "<image>Which bird is this?"},
                           {"from": "gpt", "value": GOOD.replace("Red Warbler", "Green Warbler")}],
         "images": ["c.jpg"]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    summary = audit_file(path, REGISTRY, {"birds": {"unseen": ["Green Warbler"]}},
                         FilterConfig(min_words=10))
    assert summary["rows"] == 3 and summary["parse_rate"] == 1.0
    reasons = summary["funnel"]["reasons"]
    assert reasons["wrong_answer"] == 1  # the second row's gold is Blue Warbler
    assert reasons["unseen_mention"] == 1  # the third names an unseen class
    assert summary["funnel"]["accepted"] == 1


def test_parquet_drafts_with_a_run_directory(tmp_path):
    run = RunDir(tmp_path / "run")
    REGISTRY.save(run.registry)
    write_json_atomic(run.split, {"datasets": {"birds": {"seen": ["Red Warbler"], "unseen": []}}})
    table = pa.Table.from_pylist([
        {"draft_id": "a#0", "response": GOOD, "label": "Red Warbler", "dataset": "birds",
         "super_category": "bird", "item_id": "a", "finish_reason": "stop"},
        {"draft_id": "a#1", "response": GOOD[:200], "label": "Red Warbler", "dataset": "birds",
         "super_category": "bird", "item_id": "a", "finish_reason": "length"},
    ])
    write_parquet_atomic(run.path("drafts.parquet"), table)
    out = tmp_path / "v.parquet"
    result = CliRunner().invoke(app, ["audit", str(run.path("drafts.parquet")), "--run",
                                      str(run.root), "--out", str(out), "--json",
                                      "--set", "filters.min_words=10"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 2 and summary["funnel"]["accepted"] == 1
    assert summary["funnel"]["reasons"]["truncated"] == 1
    assert len(read_table(out)) == 2


def test_cli_audit_fine_r1_sample(tmp_path):
    out = tmp_path / "v.parquet"
    result = CliRunner().invoke(app, ["audit", str(FIXTURE), "--split", "fine-r1", "--out",
                                      str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert {r["row"] for r in summary["off_domain_rows"]} >= set(NONSENSE)
    assert "section found: candidates" in result.stderr and "off-domain rows" in result.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["audit", "missing.json", "--split", "fine-r1"], "corpus not found"),
    (["audit", str(FIXTURE)], "exactly one of --split"),
    (["audit", str(FIXTURE), "--split", "cub"], "only 'fine-r1'"),
    (["audit", str(FIXTURE), "--split", "fine-r1", "--set", "filters.disabled=[nope]"],
     "unknown filter"),
])
def test_cli_audit_errors_are_clear(tmp_path, args, message):
    result = CliRunner().invoke(app, args + (["--out", str(tmp_path / "v.parquet")]
                                             if "--out" not in args else []))
    assert result.exit_code == 2
    assert message in result.stderr


def test_bad_json_corpus_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"messages": [')
    with pytest.raises(ValueError, match="not JSON"):
        load_corpus(bad)
    wrong = tmp_path / "wrong.parquet"
    write_parquet_atomic(wrong, pa.Table.from_pylist([{"text": "x"}]))
    with pytest.raises(ValueError, match="response"):
        load_corpus(wrong)


def test_cli_filter_stage(tmp_path):
    run = RunDir(tmp_path / "run")
    REGISTRY.save(run.registry)
    rows = [{"draft_id": f"{i}#0", "response": GOOD, "label": "Red Warbler", "dataset": "birds",
             "super_category": "bird", "item_id": str(i), "finish_reason": "stop"} for i in range(3)]
    write_parquet_atomic(run.path("drafts.parquet"), pa.Table.from_pylist(rows))
    result = CliRunner().invoke(app, ["filter", "--run", str(run.root), "--set",
                                      "filters.min_words=10"])
    assert result.exit_code == 0, result.output
    assert len(read_table(run.path("accepted.parquet"))) == 3
    funnel = json.loads(run.path("funnel.json").read_text())
    assert funnel["accepted"] == 3 and funnel["settings"]["min_words"] == 10
    missing = CliRunner().invoke(app, ["filter", "--run", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "finecot ingest" in missing.stderr


def test_parquet_in_trl_conversational_form(tmp_path):
    """Our own SFT export: messages with content parts, the image as a part, a label column."""
    def part(text):
        return [{"type": "text", "text": text}]

    rows = [{"messages": [{"role": "system", "content": part("You identify birds.")},
                          {"role": "user", "content": [{"type": "image", "text": None},
                                                       {"type": "text", "text": "Which bird?"}]},
                          {"role": "assistant", "content": part(GOOD)}],
             "label": label, "dataset": "birds"} for label in ("Red Warbler", "Blue Warbler")]
    path = tmp_path / "train-00000-of-00001.parquet"
    write_parquet_atomic(path, pa.Table.from_pylist(rows))
    corpus = load_corpus(path)
    assert corpus[0]["question"] == "Which bird?" and corpus[0]["response"] == GOOD
    summary = audit_file(path, REGISTRY, None, FilterConfig(min_words=10))
    assert summary["parse_rate"] == 1.0
    assert summary["funnel"]["accepted"] == 1 and summary["funnel"]["reasons"] == {"wrong_answer": 1}
