"""The filter stage on real run directories, the optional judge, and the filters measured
against the scripted teacher's ground truth (acceptance of issue 5).

    .venv/bin/pytest -q -p no:cacheprovider tests/test_filter_stage.py
"""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from test_filters import REASON_FILTER, REGISTRY, SPLITS, VISUAL, draft, rationale

from curation.core.config import FilterConfig, Recipe
from curation.core.labels import ClassInfo, Registry
from curation.core.rundir import RunDir
from curation.core.tables import read_table, write_json_atomic, write_parquet_atomic
from curation.filter.filters import build_context, judge, make_context
from curation.filter.stage import filter_stage

# -- the stage -----------------------------------------------------------------------------


def make_run(tmp_path, rows: list[dict]) -> tuple[Recipe, RunDir]:
    run = RunDir(tmp_path / "run")
    REGISTRY.save(run.registry)
    write_json_atomic(run.split, {"mode": "random", "seed": 0, "datasets": SPLITS})
    write_parquet_atomic(run.path("drafts.parquet"), pa.Table.from_pylist(rows))
    recipe = Recipe(run_dir=str(run.root), filters=FilterConfig(min_words=20))
    return recipe, run


def stage_rows() -> list[dict]:
    rows = []
    for i in range(6):
        answer = "Boeing 737-300" if i % 3 else "Airbus A320"
        row = draft(rationale(answer=answer, prediction=f"The prediction is: {answer}",
                              visual=f"Photo {i}. " + VISUAL),
                    item_id=f"img{i}", draft_id=f"img{i}#0#blind", sample_index=0, cost_usd=0.01)
        rows.append(row)
    rows.append(draft(rationale(), item_id="img1", draft_id="img1#1#blind", sample_index=1,
                      cost_usd=0.01))  # duplicate of img1#0
    rows.append(draft(rationale(), item_id="img7", draft_id="img7#0#blind", sample_index=0,
                      finish_reason="length", cost_usd=0.01))
    return rows


def test_filter_stage_writes_tables_and_funnel(tmp_path):
    recipe, run = make_run(tmp_path, stage_rows())
    summary = filter_stage(recipe, run)
    accepted = read_table(run.path("accepted.parquet")).to_pylist()
    rejected = read_table(run.path("rejected.parquet")).to_pylist()
    funnel = json.loads(run.path("funnel.json").read_text())
    assert funnel == json.loads(json.dumps(summary))
    assert funnel["drafts"] == 8 == len(accepted) + len(rejected)
    assert {r["draft_id"] for r in accepted} == {"img1#0#blind", "img2#0#blind", "img4#0#blind",
                                                 "img5#0#blind"}
    assert all(r["verdict"] == "accepted" and r["reasons"] == [] for r in accepted)
    by_id = {r["draft_id"]: r for r in rejected}
    assert by_id["img0#0#blind"]["reasons"] == ["wrong_answer"]
    assert by_id["img1#1#blind"]["reasons"] == ["near_duplicate"]
    assert "truncated" in by_id["img7#0#blind"]["reasons"]
    # drafts columns are kept, parsed sections added
    assert accepted[0]["cost_usd"] == 0.01 and accepted[0]["candidates"][0] == "Boeing 737-300"
    assert json.loads(by_id["img1#1#blind"]["evidence"])["duplicate_of"] == ["img1#0#blind"]
    cascade = [step["remaining"] for step in funnel["cascade"]]
    assert cascade[0] == 8 and cascade[-1] == funnel["accepted"] == 4
    assert cascade == sorted(cascade, reverse=True)
    assert funnel["failed_by_filter"]["answer_correct"] == 2
    assert funnel["per_class"]["aircraft/Boeing 737-300"] == {"drafts": 8, "accepted": 4}


def test_filter_stage_is_repeatable(tmp_path):
    recipe, run = make_run(tmp_path, stage_rows())
    filter_stage(recipe, run)
    first = read_table(run.path("rejected.parquet")).to_pylist()
    filter_stage(recipe, run)
    assert read_table(run.path("rejected.parquet")).to_pylist() == first
    assert not [p for p in run.root.iterdir() if p.name.endswith(".tmp")]


def test_filter_is_a_pipeline_stage(tmp_path):
    from curation.pipeline import run_recipe

    recipe, run = make_run(tmp_path, stage_rows())
    run_recipe(recipe, ["filter"])
    assert json.loads(run.path("funnel.json").read_text())["drafts"] == 8


def test_make_context_needs_the_registry(tmp_path):
    with pytest.raises(FileNotFoundError, match="finecot ingest"):
        make_context(Recipe(), RunDir(tmp_path / "empty"))


# -- against the scripted teacher's ground truth -------------------------------------------


def _precision_recall(pairs: list[tuple[bool, bool]]) -> tuple[float, float, int]:
    """(precision, recall, positives) of (truth, flagged) pairs."""
    tp = sum(t and f for t, f in pairs)
    flagged = sum(f for _, f in pairs)
    positives = sum(t for t, _ in pairs)
    return tp / max(flagged, 1), tp / max(positives, 1), positives


def test_precision_and_recall_against_the_scripted_teacher(start_teacher, synthetic_world):
    """Blind and hinted drafts over the synthetic world from a teacher that misperceives,
    breaks the format and leaks at known rates; its `finecot_truth` says which drafts are
    wrong, malformed or leaky, and the filters must find them (acceptance of issue 5)."""
    import base64

    import openai

    from curation.teacher.prompts import load_prompts

    server = start_teacher(perception_error_rate=0.25, format_error_rate=0.25, leak_rate=0.5)
    classes = json.loads((synthetic_world / "classes.json").read_text())
    registry = Registry(ClassInfo(i, c["name"], "synthetic", c["super_category"],
                                  aliases=tuple(c.get("aliases", ())))
                        for i, c in enumerate(classes))
    context = build_context(registry, FilterConfig(min_words=20, disabled=["duplicate"]))
    prompts = load_prompts()
    client = openai.OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    wrong, malformed, leaky = [], [], []
    n_drafts = 0
    for c in classes:
        for k, image in enumerate(sorted((synthetic_world / c["folder"]).iterdir())):
            url = "data:image/png;base64," + base64.b64encode(image.read_bytes()).decode()
            hinted = k % 2 == 1
            user = prompts.user.render(
                question="What kind of bird is this?", super_category=c["super_category"],
                hint=c["name"] if hinted else None, description=None, attributes=None,
                candidates=None)
            # The user turn only: the scripted teacher reads a "Candidates: ..." line anywhere
            # in the prompt as a candidate list, the system prompt's format example included.
            response = client.chat.completions.create(
                model="teacher", n=4, seed=k, max_tokens=2000,
                messages=[{"role": "user", "content": [
                    {"type": "text", "text": user},
                    {"type": "image_url", "image_url": {"url": url}}]}])
            truths = response.model_extra["finecot_truth"]
            for choice, truth in zip(response.choices, truths, strict=True):
                n_drafts += 1
                v = judge({"response": choice.message.content,
                           "finish_reason": choice.finish_reason, "label": c["name"],
                           "dataset": "synthetic", "super_category": c["super_category"],
                           "item_id": image.name, "draft_id": f"{image.name}#{n_drafts}"}, context)
                codes = set(v.reasons)
                format_codes = {code for code in codes if code not in REASON_FILTER}
                malformed.append((truth["format_error"] is not None, bool(format_codes)))
                if truth["format_error"] is None:  # a broken draft has no answer/analysis to judge
                    wrong.append((truth["answer"] != truth["true_class"],
                                  bool(codes & {"wrong_answer", "ambiguous_answer",
                                                "unknown_answer", "empty_answer"})))
                    leaky.append((truth["leak"] is not None,
                                  bool(codes & {"label_leak", "side_information"})))
    assert n_drafts == len(classes) * 4 * 4
    for name, pairs, floor in (("wrong answers", wrong, 0.95), ("format errors", malformed, 0.95),
                               ("leaks", leaky, 0.9)):
        precision, recall, positives = _precision_recall(pairs)
        assert positives >= 20, (name, positives)  # enough cases for the figure to mean much
        print(f"{name}: precision {precision:.3f} recall {recall:.3f} ({positives} cases)")
        assert precision >= floor and recall >= floor, (name, precision, recall, positives)
    # and the rates are the teacher's own: nothing was flagged that it did not do
    assert server.stats()["counts"]["choices"] == n_drafts


# -- the optional judge (a second teacher call) --------------------------------------------


class JudgeServer:
    """A real HTTP server speaking chat completions (the protocol boundary): it says "no"
    when the description to check mentions purple, else "yes", and counts requests."""

    def __init__(self):
        import http.server
        import threading

        owner = self
        self.requests = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests += 1
                text = " ".join(p.get("text", "") for m in body["messages"]
                                if isinstance(m["content"], list) for p in m["content"])
                answer = "no" if "purple" in text else "yes"
                reply = json.dumps({"id": "x", "object": "chat.completion", "choices": [
                    {"index": 0, "finish_reason": "stop", "message": {
                        "role": "assistant", "content": f"<think>ok</think><answer>{answer}</answer>"}}],
                    "usage": {"prompt_tokens": 100, "completion_tokens": 10}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def judge_server():
    server = JudgeServer()
    yield server
    server.stop()


def judge_run(tmp_path, server, **draft_settings) -> tuple[Recipe, RunDir]:
    from PIL import Image

    rows = []
    for i, visual in enumerate([VISUAL, VISUAL + " The tail is painted purple.",
                                "The image shows a train with a pointed nose. " + VISUAL]):
        image = tmp_path / f"img{i}.png"
        Image.new("RGB", (32, 32), (40 * i, 90, 160)).save(image)
        rows.append(draft(rationale(visual=visual), item_id=f"img{i}", draft_id=f"img{i}#0",
                          image_path=str(image), image_sha256=f"sha{i}"))
    recipe, run = make_run(tmp_path, rows)
    recipe = Recipe.model_validate({
        **recipe.model_dump(), "filters": {"min_words": 20, "judge": True},
        "teacher": {"base_urls": [server.base_url], "model": "judge", "concurrency": 1},
        "draft": draft_settings})
    return recipe, run


def test_judge_rejects_what_the_second_call_disputes(tmp_path, judge_server):
    recipe, run = judge_run(tmp_path, judge_server)
    funnel = filter_stage(recipe, run)
    accepted = {r["draft_id"] for r in read_table(run.path("accepted.parquet")).to_pylist()}
    rejected = {r["draft_id"]: r["reasons"] for r in read_table(run.path("rejected.parquet")).to_pylist()}
    assert accepted == {"img0#0"}
    assert rejected == {"img1#0": ["judge_mismatch"], "img2#0": ["off_domain"]}
    assert judge_server.requests == 2  # the off-domain draft never reached the judge
    assert funnel["cascade"][-1] == {"filter": "judge", "remaining": 1}
    assert funnel["failed_by_filter"]["judge"] == 1
    filter_stage(recipe, run)  # a rerun asks the ledger, not the teacher
    assert judge_server.requests == 2
    assert {r["draft_id"] for r in read_table(run.path("accepted.parquet")).to_pylist()} == accepted


def test_judge_stops_at_the_budget(tmp_path, judge_server):
    recipe, run = judge_run(tmp_path, judge_server, budget_tokens=50)
    filter_stage(recipe, run)
    rejected = {r["draft_id"]: r["reasons"] for r in read_table(run.path("rejected.parquet")).to_pylist()}
    assert judge_server.requests == 1  # the first judgement spent the budget (110 tokens)
    assert rejected["img1#0"] == ["judge_failed"]


def test_a_pipeline_run_measures_its_filters_against_the_teachers_account(
        tmp_path, synthetic_world, start_teacher):
    """Draft -> filter on the synthetic world: the teacher's per-sample account travels
    through the ledger and drafts.parquet, and `finecot filter` prints (and funnel.json
    keeps) precision and recall for each defect it reports."""
    from draft_fixtures import make_run, spec
    from typer.testing import CliRunner

    from curation.cli import app
    from curation.core.config import dump_recipe
    from curation.draft.stage import draft_stage

    server = start_teacher(perception_error_rate=0.4, format_error_rate=0.2, leak_rate=0.8)
    run = make_run(tmp_path, synthetic_world, per_class=4)
    recipe = spec(run, server, draft={"strategy": "blind-then-hinted", "samples": 2,
                                      "min_usable_share": 0},
                  prompts={"candidates": 4}, filters={"min_words": 20})
    draft_stage(recipe, run)
    run.recipe.write_text(dump_recipe(recipe))
    result = CliRunner().invoke(app, ["filter", "--run", str(run.root), "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "against the teacher's own account" in result.output
    truth = json.loads(run.path("funnel.json").read_text())["against_truth"]
    assert set(truth) == {"format_error", "wrong_answer", "leak"}
    for defect, m in truth.items():
        assert m["cases"] >= 10, (defect, m)  # enough cases for the figure to mean much
        assert m["precision"] >= 0.99 and m["recall"] >= 0.99, (defect, m)


def test_without_a_teachers_account_there_is_no_measure(tmp_path):
    recipe, run = make_run(tmp_path, stage_rows())
    assert filter_stage(recipe, run)["against_truth"] is None
