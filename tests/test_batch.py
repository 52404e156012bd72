"""Batch mode against the scripted teacher's Files and Batches APIs (real HTTP), counted by
the server itself: build, submit, poll, collect; SIGKILLs between a provider's action and its
answer; expired, failed and cancelled batches; budgets, limits, rounds, prices, secrets.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_batch.py
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from batch_fixtures import batch_spec, comparable, counters
from draft_fixtures import drafts, make_run, pool_size, sent, spec
from typer.testing import CliRunner

from curation.cli import app
from curation.core.ledger import Ledger
from curation.draft.batch_ops import batch_status, cancel_batches, collect_batches
from curation.draft.stage import BatchPending, DraftStopped, draft_stage

ROOT = Path(__file__).resolve().parent.parent


def finecot(run, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "curation.cli", "-v", *args, "--run", str(run.root)],
        cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def wait_until(check, proc: subprocess.Popen, what: str, limit: float = 60) -> None:
    """Poll the server's counters until `check()`; the process must still be running."""
    deadline = time.monotonic() + limit
    while not check():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.02)


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)


def line_states(run) -> dict[str, int]:
    db = sqlite3.connect(run.ledger)
    try:
        return dict(db.execute("SELECT state, COUNT(*) FROM batch_lines GROUP BY state"))
    finally:
        db.close()


def every_key_settled(run) -> None:
    """Every scheduled draft is answered, or failed with a reason; the ledger is sound."""
    rows = drafts(run).values()
    assert rows and all(r["status"] != "failed" or r["error"] for r in rows)
    with Ledger(run.ledger) as ledger:
        assert ledger.problems() == []
        assert ledger.stats()["batch_lines_pending"] == 0


# -- acceptance 1: killed while submitting and while collecting -----------------------------------


def test_sigkill_during_submit_and_collect_resumes_without_paying_twice(
        tmp_path, synthetic_world, start_teacher):
    # The first upload, batch creation and download answers are held 60 s after the work is
    # done: each kill lands after the provider acted and before the client heard of it.
    server = start_teacher(batch_stall_s=60)
    run = make_run(tmp_path, synthetic_world, "batch", per_class=2)
    n = pool_size(run)
    run.save_recipe(batch_spec(run, server))
    command = ("draft", "--mode", "batch", "--wait")

    proc = finecot(run, *command)
    wait_until(lambda: counters(server)["uploads"] == 1, proc, "the upload")
    kill(proc)
    with Ledger(run.ledger) as ledger:
        (built,) = ledger.batch_files()
        assert built["upload_started"] and built["file_id"] is None and built["lines"] == n

    proc = finecot(run, *command)
    wait_until(lambda: counters(server)["batches"] == 1, proc, "the batch creation")
    kill(proc)
    with Ledger(run.ledger) as ledger:
        (uploaded,) = ledger.batch_files()
        assert uploaded["file_id"] and uploaded["create_started"] and uploaded["batch_id"] is None

    proc = finecot(run, *command)
    wait_until(lambda: counters(server)["downloads"] == 1, proc, "the download")
    kill(proc)
    with Ledger(run.ledger) as ledger:
        assert ledger.stats()["requests"] == 0  # nothing recorded before the download ends

    proc = finecot(run, *command)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    c = counters(server)
    assert c["uploads"] == 1 and c["duplicate_uploads"] == 0 and c["batches"] == 1
    assert c["lines"] == n and c["lines_repeated"] == 0, c
    assert sent(server) == 0, "batch mode sends no chat completion"
    every_key_settled(run)
    assert line_states(run) == {"answered": n}

    online = make_run(tmp_path, synthetic_world, "online", per_class=2)
    draft_stage(spec(online, start_teacher()), online)
    assert comparable(run) == comparable(online)
    again = draft_stage(batch_spec(run, server), run)  # everything cached: no API call
    assert again.cached == n and counters(server)["uploads"] == 1


def test_submit_exits_4_then_the_same_command_collects(tmp_path, synthetic_world, start_teacher):
    server = start_teacher()
    run = make_run(tmp_path, synthetic_world)
    run.save_recipe(batch_spec(run, server))
    first = CliRunner().invoke(app, ["draft", "--run", str(run.root), "--mode", "batch"])
    assert first.exit_code == 4 and "Batches are out" in first.output, first.output
    assert counters(server)["batches"] == 1 and drafts(run) == {}
    with Ledger(run.ledger) as ledger:
        (row,) = ledger.batch_files()
    collected = CliRunner().invoke(app, ["batch", "collect", "--run", str(run.root), "--wait"])
    assert collected.exit_code == 0 and f"answered {pool_size(run)}" in collected.output
    shown = CliRunner().invoke(app, ["batch", "status", "--run", str(run.root), "--json"])
    rows = json.loads(shown.stdout)
    assert rows[0]["state"] == "collected" and rows[0]["batch_id"] == row["batch_id"]
    assert rows[0]["line_states"] == {"answered": pool_size(run)}
    second = CliRunner().invoke(app, ["draft", "--run", str(run.root), "--mode", "batch"])
    assert second.exit_code == 0, second.output
    assert len(drafts(run)) == pool_size(run) and counters(server)["batches"] == 1


# -- acceptance 3: expired, failed, cancelled -----------------------------------------------------


def test_expired_lines_go_into_the_next_batch(tmp_path, synthetic_world, start_teacher):
    server = start_teacher(batch_expire_first=1, batch_expire_at=0.5)
    run = make_run(tmp_path, synthetic_world, per_class=2)
    n = pool_size(run)
    report = draft_stage(batch_spec(run, server), run, wait=True)
    c = counters(server)
    assert c["batches"] == 2 and c["lines"] == n and c["lines_repeated"] == 0, c
    assert line_states(run) == {"answered": n, "expired": n - n // 2}
    assert report.batch["expired"] == n - n // 2 and report.usable == n
    every_key_settled(run)


def test_failed_validation_and_failed_lines_are_requeued(tmp_path, synthetic_world, start_teacher):
    server = start_teacher(batch_fail_first=1, rate_500=0.15)
    run = make_run(tmp_path, synthetic_world, per_class=2)
    n = pool_size(run)
    draft_stage(batch_spec(run, server, teacher={"max_attempts": 6}), run, wait=True)
    c = counters(server)
    assert c["batches"] >= 3, c  # failed validation, then lines failing with 500, then the rest
    assert server.stats(log=False)["outcomes"]["500"] > 0
    states = line_states(run)
    assert states["failed"] >= n  # the whole first batch, and each 500
    rows = drafts(run).values()
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows if r["error"]]
    with Ledger(run.ledger) as ledger:
        assert ledger.problems() == []
        assert all(e.attempts >= 2 for e in ledger.rows())  # the failed validation counted


def test_cut_lines_timeouts_and_429_lines_are_requeued(tmp_path, synthetic_world, start_teacher):
    server = start_teacher(rate_malformed=0.1, rate_hang=0.1, rate_429=0.1)
    run = make_run(tmp_path, synthetic_world, per_class=2)
    n = pool_size(run)
    report = draft_stage(batch_spec(run, server, teacher={"max_attempts": 8}), run, wait=True)
    outcomes = server.stats(log=False)["outcomes"]
    assert all(outcomes.get(fault, 0) > 0 for fault in ("malformed", "hang", "429")), outcomes
    states = line_states(run)
    # a cut output line cannot be read: its request is asked again; timeouts and 429s fail
    # with their reason and are asked again too
    assert states["missing"] == outcomes["malformed"] and states["answered"] == n
    assert states["failed"] == outcomes["hang"] + outcomes["429"]
    assert report.batch["refused: not JSON"] == outcomes["malformed"]
    every_key_settled(run)
    assert all(r["status"] == "ok" for r in drafts(run).values())


def test_a_line_failing_every_time_ends_failed_with_its_reason(tmp_path, synthetic_world,
                                                               start_teacher):
    server = start_teacher(error_400_model="another-model")  # every line: HTTP 400
    run = make_run(tmp_path, synthetic_world)
    with pytest.raises(DraftStopped, match="too few usable answers"):
        draft_stage(batch_spec(run, server), run, wait=True)
    rows = drafts(run).values()
    assert rows and all(r["error"].startswith("http 400: Invalid model name") for r in rows)
    assert counters(server)["batches"] == 1, "a client error is not sent again in the same run"
    with pytest.raises(DraftStopped):
        draft_stage(batch_spec(run, server), run, wait=True)  # a rerun tries once more
    assert counters(server)["batches"] == 2


def test_a_cancelled_batch_leaves_the_run_resumable(tmp_path, synthetic_world, start_teacher):
    server = start_teacher(batch_hold_at=0.5)  # the first batch waits half done
    run = make_run(tmp_path, synthetic_world, per_class=2)
    n = pool_size(run)
    recipe = batch_spec(run, server)
    with pytest.raises(BatchPending):
        draft_stage(recipe, run)
    deadline = time.monotonic() + 30
    while counters(server)["lines"] < n // 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    done = asyncio.run(cancel_batches(recipe, run))
    assert len(done) == 1 and "cancelling" in done[0][1]
    draft_stage(recipe, run, wait=True)  # collects the half answered, sends the rest again
    c = counters(server)
    assert c["cancels"] == 1 and c["batches"] == 2 and c["lines"] == n
    assert c["lines_repeated"] == 0, "an answered line is never asked again"
    assert line_states(run) == {"answered": n, "cancelled": n - n // 2}
    every_key_settled(run)


def test_a_batch_cancelled_while_waiting_stops_the_run(tmp_path, synthetic_world, start_teacher):
    server = start_teacher(batch_hold_at=0.0)
    run = make_run(tmp_path, synthetic_world)
    run.save_recipe(batch_spec(run, server))
    proc = finecot(run, "draft", "--mode", "batch", "--wait")
    wait_until(lambda: counters(server)["batches"] == 1, proc, "the batch")
    with Ledger(run.ledger) as ledger:
        wait_until(lambda: ledger.batch_files()[0]["state"] == "in_progress", proc, "the poll")
        batch_id = ledger.batch_files()[0]["batch_id"]
    (row,) = asyncio.run(batch_status(batch_spec(run, server), run))  # read-only: no lock
    assert row["state"] == "in_progress" and row["request_counts"]["completed"] == 0
    cancel = urllib.request.Request(f"{server.base_url}/batches/{batch_id}/cancel", method="POST")
    urllib.request.urlopen(cancel, timeout=10).read()  # at the provider, as from its dashboard
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3 and "a batch was cancelled" in err, err
    assert counters(server)["batches"] == 1, "a cancelled batch is not sent again in that run"
    draft_stage(batch_spec(run, server), run, wait=True)  # the rerun resumes
    assert counters(server)["batches"] == 2 and all(
        r["status"] == "ok" for r in drafts(run).values())


def test_ctrl_c_while_waiting_leaves_the_batch_out_and_a_rerun_collects_it(
        tmp_path, synthetic_world, start_teacher):
    server = start_teacher(batch_hold_at=0.5)
    run = make_run(tmp_path, synthetic_world)
    n = pool_size(run)
    run.save_recipe(batch_spec(run, server))
    proc = finecot(run, "draft", "--mode", "batch", "--wait")
    wait_until(lambda: counters(server)["lines"] == n // 2, proc, "half the lines")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 3 and "The batches go on at the provider" in err, err
    assert counters(server)["cancels"] == 0 and line_states(run) == {"pending": n}
    cancelled = CliRunner().invoke(app, ["batch", "cancel", "--run", str(run.root)])
    assert cancelled.exit_code == 0 and "cancelling" in cancelled.output, cancelled.output
    draft_stage(batch_spec(run, server), run, wait=True)
    assert counters(server)["lines"] == n and counters(server)["lines_repeated"] == 0
    every_key_settled(run)


# -- budgets, prices, rounds, limits --------------------------------------------------------------

PRICES = {"teacher": {"input_per_m": 1.0, "output_per_m": 1.0}}  # online USD = tokens / 1e6


def test_batch_costs_half_and_stats_tell_online_from_batch(tmp_path, synthetic_world,
                                                           start_teacher):
    server = start_teacher()
    run = make_run(tmp_path, synthetic_world)
    n = pool_size(run)
    draft_stage(spec(run, server, teacher={"prices": PRICES}), run)  # sample 0 online
    draft_stage(batch_spec(run, server, teacher={"prices": PRICES}, draft={"samples": 2}), run,
                wait=True)  # sample 1 through a batch
    with Ledger(run.ledger) as ledger:
        stats = ledger.stats()
    online, batch = stats["by_mode"]["online"], stats["by_mode"]["batch"]
    assert online["requests"] == batch["requests"] == n
    assert online["cost_usd"] == pytest.approx(online["tokens"] / 1e6)
    assert batch["cost_usd"] == pytest.approx(batch["tokens"] / 2e6)
    shown = CliRunner().invoke(app, ["ledger", "stats", "--run", str(run.root)])
    assert shown.exit_code == 0 and "batch" in shown.output and "online" in shown.output
    explicit = {"teacher": {**PRICES["teacher"], "batch_input_per_m": 0.1,
                            "batch_output_per_m": 0.3}}
    other = make_run(tmp_path, synthetic_world, "explicit")
    report = draft_stage(batch_spec(other, server, teacher={"prices": explicit}), other, wait=True)
    rows = drafts(other).values()
    assert report.cost_usd == pytest.approx(sum(
        (r["prompt_tokens"] * 0.1 + r["completion_tokens"] * 0.3) / 1e6 for r in rows))


def test_budget_cuts_the_batch_to_fit_and_the_rest_waits(tmp_path, synthetic_world,
                                                         start_teacher):
    server = start_teacher()
    probe = make_run(tmp_path, synthetic_world, "probe", per_class=2)
    n = pool_size(probe)
    total = draft_stage(batch_spec(probe, server, teacher={"prices": PRICES}), probe,
                        wait=True).cost_usd
    db = sqlite3.connect(probe.ledger)
    worst = db.execute("SELECT MAX(est_cost) FROM batch_lines").fetchone()[0]
    db.close()
    budget = total / 2
    assert worst < budget < n * worst  # a line's worst case is far above its real cost

    run = make_run(tmp_path, synthetic_world, "budget", per_class=2)
    recipe = batch_spec(run, server, teacher={"prices": PRICES}, draft={"budget_usd": budget})
    before = counters(server)["lines"]
    with pytest.raises(DraftStopped, match="budget reached"):
        draft_stage(recipe, run, wait=True)
    with Ledger(run.ledger) as ledger:
        spent, _ = ledger.totals()
        files = ledger.batch_files()
    assert spent <= budget, "a batch never spends past the budget"
    db = sqlite3.connect(run.ledger)
    first_worst = db.execute("SELECT SUM(est_cost) FROM batch_lines WHERE file = ?",
                             (files[0]["name"],)).fetchone()[0]
    db.close()
    assert first_worst <= budget and files[0]["lines"] < n  # the first batch was cut to fit
    assert len(files) >= 2  # what was left waited for the real cost of the first
    answered = len(drafts(run))
    assert answered < n and counters(server)["lines"] - before == answered
    draft_stage(batch_spec(run, server, teacher={"prices": PRICES}), run, wait=True)
    assert counters(server)["lines"] - before == n and len(drafts(run)) == n
    assert counters(server)["lines_repeated"] == n  # the probe's lines, once each again


def test_quota_loop_and_blind_then_hinted_go_one_batch_a_round(tmp_path, synthetic_world,
                                                               start_teacher):
    from curation.filter.filters import judge, make_context

    server = start_teacher(perception_error_rate=0.5)
    run = make_run(tmp_path, synthetic_world)
    recipe = batch_spec(run, server, draft={"strategy": "blind-then-hinted",
                                            "target_per_class": 2, "max_per_class": 6})
    report = draft_stage(recipe, run, wait=True)
    assert report.rounds > 2 and counters(server)["batches"] == report.rounds
    rows = list(drafts(run).values())
    context = make_context(recipe, run)
    verdict = {r["draft_id"]: judge(r, context).accepted for r in rows}
    first_blind = [r for r in rows if r["strategy"] == "blind" and r["sample_index"] == 0]
    blind_ok = {r["item_id"] for r in first_blind if verdict[r["draft_id"]]}
    first_hinted = {r["item_id"] for r in rows if r["strategy"] == "hinted"
                    and r["sample_index"] == 0}
    assert blind_ok and first_hinted == {r["item_id"] for r in first_blind} - blind_ok
    per_class: dict[str, list[bool]] = {}
    for r in rows:
        per_class.setdefault(f"{r['dataset']}/{r['label']}", []).append(verdict[r["draft_id"]])
    for name, verdicts in per_class.items():
        assert sum(verdicts) >= 2 or len(verdicts) >= 6, (name, verdicts)
    assert {k: v for k, v in report.accepted_per_class.items()} == {
        k: sum(v) for k, v in per_class.items()}
    again = draft_stage(recipe, run, wait=True)  # rerun: the same rounds, all from the ledger
    assert again.rounds == report.rounds and counters(server)["batches"] == report.rounds


def test_files_respect_the_limits_and_a_server_limit_is_a_clear_failure(
        tmp_path, synthetic_world, start_teacher):
    server = start_teacher()
    run = make_run(tmp_path, synthetic_world, per_class=2)
    n = pool_size(run)
    draft_stage(batch_spec(run, server, teacher={"batch": {"max_lines": 5, "poll_s": 0.02}}),
                run, wait=True)
    with Ledger(run.ledger) as ledger:
        files = ledger.batch_files()
    assert len(files) == math.ceil(n / 5) == counters(server)["batches"]
    assert all(f["lines"] <= 5 for f in files) and sum(f["lines"] for f in files) == n
    small = make_run(tmp_path, synthetic_world, "small", per_class=2)
    strict = start_teacher(batch_max_lines=5)
    with pytest.raises(DraftStopped, match="too few usable"):
        draft_stage(batch_spec(small, strict, teacher={"max_attempts": 2}), small, wait=True)
    errors = {r["error"] for r in drafts(small).values()}
    assert errors == {f"batch failed validation: too_many_requests: The file has {n} "
                      "requests; at most 5 are allowed."}


def test_an_endpoint_without_files_api_stops_with_the_offline_way(tmp_path, synthetic_world,
                                                                  start_teacher):
    server = start_teacher()
    run = make_run(tmp_path, synthetic_world)
    plain = type("Plain", (), {"base_url": server.root_url + "/no-batches/v1"})()
    with pytest.raises(DraftStopped, match=r"no Files/Batches API.*finecot batch build"):
        draft_stage(batch_spec(run, plain), run)
    with Ledger(run.ledger) as ledger:
        (built,) = ledger.batch_files()
    assert built["file_id"] is None and Path(built["path"]).exists()
    collected = asyncio.run(collect_batches(batch_spec(run, plain), run, wait=True))
    assert collected["open"] == [] and collected["not_submitted"] == [built["name"]]


# -- secrets and flags ----------------------------------------------------------------------------


def test_api_key_never_reaches_batch_files(tmp_path, synthetic_world, start_teacher):
    key = "sk-finecot-batch-SECRET-0123456789abcdef"
    server = start_teacher(rate_500=0.2)
    run = make_run(tmp_path, synthetic_world)
    run.save_recipe(batch_spec(run, server, teacher={"api_key_env": "FINECOT_TEST_KEY"}))
    proc = finecot(run, "draft", "--mode", "batch", "--wait", env={"FINECOT_TEST_KEY": key})
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    files = [p for p in run.root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".jsonl" for p in files)
    for path in files:
        assert key.encode() not in path.read_bytes(), path
    assert key not in out and key not in err
    with Ledger(run.ledger) as ledger:
        file_id = ledger.batch_files()[0]["file_id"]
    with urllib.request.urlopen(f"{server.base_url}/files/{file_id}/content") as uploaded:
        assert key.encode() not in uploaded.read()


@pytest.mark.parametrize("flags", [{"reasoning_field": "reasoning_content"},
                                   {"finish_reason_always_stop": True}, {"no_usage": True}])
def test_server_quirks_read_the_same_in_batch_lines(tmp_path, synthetic_world, start_teacher,
                                                    flags):
    run_online, run_batch = (make_run(tmp_path, synthetic_world, name) for name in ("o", "b"))
    sections = {"teacher": {"max_tokens": 120}, "draft": {"min_usable_share": 0}}
    draft_stage(spec(run_online, start_teacher(**flags), **sections), run_online)
    draft_stage(batch_spec(run_batch, start_teacher(**flags), **sections), run_batch, wait=True)
    assert comparable(run_batch) == comparable(run_online)
    rows = drafts(run_batch).values()
    if not flags.get("no_usage"):  # truncation seen whatever finish_reason says
        assert any(r["status"] == "length" for r in rows)
    if "reasoning_field" in flags:
        assert all("<think>" in r["response"] for r in rows if r["status"] == "ok")
    with Ledger(run_batch.ledger) as ledger:
        extra = [json.loads(json.dumps(e.extra)) for e in ledger.rows()]
        estimated = ledger.stats()["usage_estimated"]
    assert all(e.get("batch_file") for e in extra)
    assert (estimated == len(rows)) == bool(flags.get("no_usage"))
