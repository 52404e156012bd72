"""What real OpenAI-compatible servers do, reproduced at the HTTP boundary by the scripted
teacher's flags, and what finecot does about each (README "Real servers"):

- reasoning moved out of `content` (LiteLLM, vLLM reasoning parsers, DeepSeek, OpenRouter):
  the same drafts are accepted as going direct, and the ledger keeps both fields;
- a wrong model name answered with HTTP 400 (LiteLLM, transformers serve): the run stops
  after a handful of requests with the server's words; nothing answered before is lost;
- every request failing, or every answer unusable: a non-zero exit with a summary;
- no usage in the response: tokens estimated and marked, budgets still stop the run;
- truncation reported as "stop" (LitServe); prompt_tokens summed over n; LiteLLM's
  llm_provider-retry-after-ms; retries counted once per HTTP request;
- a ledger from before schema 4: migrated, its possibly-lost rows found and re-asked.

The third-party servers themselves run in tests/test_real_servers.py.

    .venv/bin/pytest -q tests/test_server_quirks.py
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest
from draft_fixtures import drafts, make_run, pool_size, sent, spec
from typer.testing import CliRunner

from curation.cli import app
from curation.core.config import TeacherConfig, dump_recipe
from curation.core.ledger import Ledger
from curation.core.ledger_schema import MIGRATIONS
from curation.draft.stage import DraftStopped, draft_stage
from curation.filter.stage import filter_stage
from curation.teacher.client import REFUSE_AFTER, TeacherClient
from curation.teacher.images import image_data_url


def _accepted(run) -> set[str]:
    from curation.core.tables import read_table

    return {r["draft_id"] for r in read_table(run.path("accepted.parquet")).to_pylist()}


# -- reasoning outside content ---------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_reasoning_outside_content_is_kept_and_accepted_as_direct(tmp_path, synthetic_world,
                                                                  start_teacher, field):
    flags = {"perception_error_rate": 0.2, "format_error_rate": 0.1}
    direct, moved = start_teacher(**flags), start_teacher(**flags, reasoning_field=field)
    runs = {}
    for name, server in (("direct", direct), ("moved", moved)):
        run = runs[name] = make_run(tmp_path, synthetic_world, name, per_class=2)
        recipe = spec(run, server, draft={"min_usable_share": 0})
        draft_stage(recipe, run)
        filter_stage(recipe, run)
    assert _accepted(runs["moved"]) == _accepted(runs["direct"]) != set()
    with Ledger(runs["moved"].ledger) as ledger:
        rows = [e for e in ledger.rows() if e.status == "ok"]
    outside = [e for e in rows if e.reasoning]
    assert len(outside) > 0.8 * len(rows)  # all but the scripted format errors
    assert all("<think" not in (e.response or "") for e in outside)  # content as sent
    assert all(e.extra["reasoning_field"] == field for e in outside)
    assert all(e.text.startswith("<think>") for e in outside)  # what the filters read
    assert any("<think>" in d["response"] for d in drafts(runs["moved"]).values())


# -- misconfiguration ------------------------------------------------------------------------


def test_a_wrong_model_name_stops_the_run_with_the_servers_words(tmp_path, synthetic_world,
                                                                start_teacher):
    server = start_teacher(error_400_model="qwen-vl")
    run = make_run(tmp_path, synthetic_world, per_class=2)
    good = spec(run, server, teacher={"model": "qwen-vl", "concurrency": 4})
    draft_stage(good, run)  # answered under the right name first
    answered = len(drafts(run))
    before = sent(server)
    recipe = tmp_path / "wrong.yaml"
    wrong = spec(run, server, teacher={"model": "qwen-vl-typo", "concurrency": 4})
    recipe.write_text(dump_recipe(wrong))
    result = CliRunner().invoke(app, ["run", str(recipe), "--stages", "draft"])
    assert result.exit_code == 3, result.output
    assert "Invalid model name passed in model=qwen-vl-typo" in result.output
    assert "teacher.model" in result.output
    # the requests in flight when the first 400 came back, and barely any after
    assert sent(server) - before <= 4 + REFUSE_AFTER
    # nothing answered is lost: the right name again sends nothing and writes every draft
    draft_stage(good, run)
    assert sent(server) - before <= 4 + REFUSE_AFTER and len(drafts(run)) == answered


def test_a_teacher_that_always_fails_exits_non_zero_with_a_summary(tmp_path, synthetic_world,
                                                                   start_teacher):
    server = start_teacher(rate_500=1.0)
    run = make_run(tmp_path, synthetic_world)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(dump_recipe(spec(run, server, teacher={"max_attempts": 2})))
    result = CliRunner().invoke(app, ["run", str(recipe), "--stages", "draft"])
    assert result.exit_code == 3, result.output
    n = pool_size(run)
    assert f"0 of {n} drafts usable; failed {n} (http 500 {n})" in result.output
    assert f"{n} retries" in result.output  # one retry per request (max_attempts 2)


def test_a_usable_share_below_the_threshold_stops_with_the_counts(tmp_path, synthetic_world,
                                                                  start_teacher):
    server = start_teacher(format_error_rate=0.6)  # a third of them truncated
    run = make_run(tmp_path, synthetic_world, per_class=3)
    with pytest.raises(DraftStopped, match=r"too few usable answers: \d+ of \d+ drafts usable"):
        draft_stage(spec(run, server, draft={"min_usable_share": 0.95}), run)
    report = draft_stage(spec(run, server, draft={"min_usable_share": 0.5}), run)
    assert report.truncated > 0 and report.usable + report.truncated == report.drafts
    assert sent(server) == pool_size(run)  # the second run asked nothing again


# -- usage and truncation as servers report them ---------------------------------------------


def test_no_usage_is_estimated_marked_and_still_stops_a_budget(tmp_path, synthetic_world,
                                                              start_teacher):
    server = start_teacher(no_usage=True, latency=0.02)
    run = make_run(tmp_path, synthetic_world, per_class=2)
    prices = {"teacher": {"input_per_m": 1.0, "output_per_m": 1.0}}
    with pytest.raises(DraftStopped, match="budget reached"):
        draft_stage(spec(run, server, teacher={"prices": prices, "concurrency": 2},
                         draft={"budget_tokens": 2000}), run)
    assert 0 < sent(server) < pool_size(run)
    with Ledger(run.ledger) as ledger:
        rows = list(ledger.rows())
        stats = ledger.stats()
    assert rows and all(e.usage_estimated and e.completion_tokens > 0 for e in rows)
    assert all(e.cost_usd > 0 for e in rows) and stats["usage_estimated"] == len(rows)


def test_truncation_reported_as_stop_is_still_truncation(tmp_path, synthetic_world, start_teacher):
    server = start_teacher(finish_reason_always_stop=True)
    run = make_run(tmp_path, synthetic_world)
    draft_stage(spec(run, server, teacher={"max_tokens": 12}, draft={"min_usable_share": 0}), run)
    rows = list(drafts(run).values())
    assert rows and all(r["finish_reason"] == "stop" and r["status"] == "length" for r in rows)


def test_prompt_tokens_summed_over_n_are_counted_once(tmp_path, synthetic_world, start_teacher):
    totals = {}
    for name, flags in (("plain", {}), ("summed", {"usage_summed_over_n": True})):
        server = start_teacher(**flags)
        run = make_run(tmp_path, synthetic_world, name)
        draft_stage(spec(run, server, draft={"samples": 3}), run)
        with Ledger(run.ledger) as ledger:
            totals[name] = ledger.stats()["prompt_tokens"]
    assert totals["summed"] == totals["plain"] > 0


# -- retries ---------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["llm_provider-retry-after-ms", "llm_provider-retry-after"])
def test_litellm_retry_after_headers_are_honoured(synthetic_world, start_teacher, header, caplog):
    server = start_teacher(rate_429=1.0, retry_after=1.0, retry_after_header=header)
    image = sorted(synthetic_world.glob("*/*.png"))[0]
    messages = [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_data_url(image, 256, 256 * 256)}},
        {"type": "text", "text": "What bird?"}]}]
    cfg = TeacherConfig(base_urls=[server.base_url], max_attempts=2, backoff_s=0.01,
                        backoff_max_s=0.02)

    async def go() -> TeacherClient:
        async with TeacherClient(cfg, api_key="k") as client:
            await client.sample(messages, [0], lambda i, c: None)
        return client

    with caplog.at_level(logging.DEBUG, logger="curation.teacher.client"):
        client = asyncio.run(go())
    assert client.waited_s >= 1.0  # the server's wait, not the 0.02 s backoff
    assert any("retry 2/2 in 1.0 s after http 429" in r.message for r in caplog.records)


def test_attempts_are_counted_once_per_http_request(tmp_path, synthetic_world, start_teacher):
    server = start_teacher(rate_500=1.0)
    run = make_run(tmp_path, synthetic_world)
    with pytest.raises(DraftStopped, match="too few usable"):
        draft_stage(spec(run, server, teacher={"max_attempts": 2}, draft={"samples": 2}), run)
    with Ledger(run.ledger) as ledger:
        stats = ledger.stats()
    assert stats["requests"] == 2 * pool_size(run)  # two samples a row...
    assert stats["attempts"] == sent(server) == 2 * pool_size(run)  # ...one request, 2 tries


# -- ledgers from before schema 4 ------------------------------------------------------------


def _old_ledger(path) -> None:
    """A ledger as finecot wrote it at schema 3: content only."""
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:3]:
        db.executescript(script)
    db.execute("PRAGMA user_version = 3")
    for key, response in (("k-think", "<think>a</think><answer>A</answer>"),
                          ("k-bare", "\n<answer>A</answer>")):
        db.execute("INSERT INTO requests (key, model, status, attempts, response, created_at,"
                   " updated_at) VALUES (?, 'm', 'ok', 1, ?, 1, 1)", (key, response))
    db.commit()
    db.close()


def test_an_old_ledger_migrates_and_reparse_finds_what_may_be_lost(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    _old_ledger(run_dir / "ledger.sqlite")
    runner = CliRunner()
    told = runner.invoke(app, ["ledger", "reparse", "--run", str(run_dir)])
    assert told.exit_code == 0 and "1 answered rows" in told.output
    with Ledger(run_dir / "ledger.sqlite") as ledger:
        assert ledger.schema_version == len(MIGRATIONS)
        assert ledger.unrecoverable() == ["k-bare"]
        assert ledger.get_many(["k-bare"])["k-bare"].status == "ok"  # told, not changed
    marked = runner.invoke(app, ["ledger", "reparse", "--run", str(run_dir), "--reask"])
    assert marked.exit_code == 0 and "1 rows marked for re-asking" in marked.output
    with Ledger(run_dir / "ledger.sqlite") as ledger:
        rows = ledger.get_many(["k-bare", "k-think"])
        assert rows["k-bare"].status == "failed" and rows["k-bare"].error.startswith("reask:")
        assert rows["k-think"].status == "ok"
        assert ledger.stats()["recent_events"][0]["kind"] == "reask"


def test_the_scripted_teachers_truth_reaches_the_drafts(tmp_path, synthetic_world, start_teacher):
    """The ledger keeps what a scripted teacher says it did, per sample; drafts.parquet
    carries it as `teacher_truth`, so the filters can be measured on a pipeline run."""
    import json

    server = start_teacher(perception_error_rate=0.5)
    run = make_run(tmp_path, synthetic_world, per_class=2)
    draft_stage(spec(run, server, draft={"samples": 3}), run)
    rows = list(drafts(run).values())
    truths = [json.loads(r["teacher_truth"]) for r in rows]
    answered = [(t, r) for t, r in zip(truths, rows, strict=True) if t["format_error"] is None]
    assert answered and all(f"<answer>{t['answer']}</answer>" in r["response"]
                            for t, r in answered)  # each sample's own truth, not its neighbour's
    assert {t["misperceived"] for t in truths} == {True, False}
    assert all(t["true_class"] == r["label"] for t, r in zip(truths, rows, strict=True))
