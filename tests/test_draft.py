"""The draft stage against the scripted teacher (real HTTP), counted by the server itself.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_draft.py

Issue 4's acceptance: reruns send nothing; a SIGKILLed run resumes with exactly the rest and
ends with the same drafts; a template/model change re-requests only what changed; 20% mixed
faults end answered or failed-with-reason; the budget stops within one in-flight batch and
resumes; the API key is never written. Plus n detection, endpoints, the quota loop, SIGINT.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from draft_fixtures import drafts, make_run, pool_size, sent, spec

from curation.core.ledger import Ledger
from curation.core.rundir import RunDir
from curation.draft.stage import DRAFT_FIELDS, DraftStopped, draft_stage
from curation.filter.filters import judge, make_context
from curation.teacher.prompts import PROMPTS_DIR

ROOT = Path(__file__).resolve().parent.parent


def ledger_rows(run: RunDir) -> int:
    db = sqlite3.connect(run.ledger)
    try:
        return db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        db.close()


def cli(run: RunDir, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "curation.cli", "-v", "draft", "--run", str(run.root), *args],
        cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)


def wait_for_rows(run: RunDir, count: int, proc: subprocess.Popen, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while ledger_rows(run) < count:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the draft run made no progress"
        time.sleep(0.02)


# -- acceptance 1: cache, resume, changes --------------------------------------------------------


def test_rerun_sends_nothing_and_drafts_follow_the_contract(tmp_path, synthetic_world, start_teacher):
    server = start_teacher()
    run = make_run(tmp_path, synthetic_world)
    n = pool_size(run)
    report = draft_stage(spec(run, server), run)
    assert sent(server) == n and report.sent == n and report.cached == 0
    first = drafts(run)
    assert len(first) == n and all(r["status"] == "ok" for r in first.values())
    row = next(iter(first.values()))
    for name, _ in DRAFT_FIELDS:
        assert name in row
    assert row["draft_id"] == f"{row['item_id']}#0#blind" and row["hinted"] is False
    assert json.loads(row["sampling"])["seed"] == 0 and len(row["request_key"]) == 64

    again = draft_stage(spec(run, server), run)
    assert sent(server) == n, "a rerun must not send anything"
    assert again.cached == n and drafts(run) == first


def test_sigkill_midway_resumes_with_exactly_the_rest(tmp_path, synthetic_world, start_teacher):
    server = start_teacher(latency=0.15)
    run = make_run(tmp_path, synthetic_world, "killed", per_class=2)
    n = pool_size(run)
    run.save_recipe(spec(run, server, teacher={"concurrency": 4}))
    proc = cli(run)
    wait_for_rows(run, n // 2, proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    kept = ledger_rows(run)
    assert n // 2 <= kept < n
    before = sent(server)
    draft_stage(spec(run, server, teacher={"concurrency": 4}), run)
    assert sent(server) - before == n - kept, "exactly the unanswered requests are sent again"

    whole = make_run(tmp_path, synthetic_world, "whole", per_class=2)
    draft_stage(spec(whole, server, teacher={"concurrency": 4}), whole)
    resumed, uninterrupted = drafts(run), drafts(whole)
    assert resumed.keys() == uninterrupted.keys()
    assert all(resumed[k]["response"] == uninterrupted[k]["response"] for k in resumed)
    assert all(resumed[k]["request_key"] == uninterrupted[k]["request_key"] for k in resumed)


def test_changes_rerequest_only_what_changed(tmp_path, synthetic_world, start_teacher):
    server = start_teacher()
    run = make_run(tmp_path, synthetic_world)
    n = pool_size(run)
    draft_stage(spec(run, server), run)
    assert sent(server) == n

    draft_stage(spec(run, server, draft={"samples": 2}), run)  # one more sample per item
    assert sent(server) == 2 * n

    draft_stage(spec(run, server, teacher={"model": "another-teacher"}), run)
    assert sent(server) == 3 * n
    assert {r["teacher_model"] for r in drafts(run).values()} == {"another-teacher"}
    draft_stage(spec(run, server), run)  # back to the first model: all in the ledger
    assert sent(server) == 3 * n

    templates = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, templates)
    user = templates / "draft_user.jinja"
    user.write_text(user.read_text().replace("Answer in the required format",
                                             "Answer strictly in the required format"))
    draft_stage(spec(run, server, prompts={"directory": str(templates)}), run)
    assert sent(server) == 4 * n
    edited_sha = {r["prompt_sha"] for r in drafts(run).values()}
    draft_stage(spec(run, server), run)
    assert sent(server) == 4 * n
    assert {r["prompt_sha"] for r in drafts(run).values()}.isdisjoint(edited_sha)

    full = {k: r["prompt_tokens"] for k, r in drafts(run).items()}
    draft_stage(spec(run, server, teacher={"image_max_side": 48}), run)  # resized: new images
    assert sent(server) == 5 * n
    assert all(r["prompt_tokens"] < full[k] for k, r in drafts(run).items())


# -- acceptance 2: faults -------------------------------------------------------------------------


def test_mixed_faults_end_answered_or_failed_with_reason(tmp_path, synthetic_world, start_teacher):
    server = start_teacher(rate_429=0.04, rate_500=0.04, rate_hang=0.04, rate_reset=0.04,
                           rate_malformed=0.04, retry_after=0.05, hang_seconds=30)
    run = make_run(tmp_path, synthetic_world, per_class=4)
    n = 2 * pool_size(run)  # two samples per item: ~150 requests, ~30 of them faulty
    report = draft_stage(spec(run, server, teacher={"timeout_s": 1.0, "max_attempts": 3,
                                                    "concurrency": 16, "use_n": False},
                              draft={"samples": 2}), run)
    rows = drafts(run)
    assert len(rows) == n and report.drafts == n
    reasons = ("http 429", "http 500", "timeout", "connection", "malformed")
    for row in rows.values():
        assert row["status"] in ("ok", "length", "empty", "failed")
        if row["status"] == "failed":
            assert row["error"].startswith(reasons), row["error"]
        else:
            assert row["response"] and row["error"] is None
    with Ledger(run.ledger) as ledger:
        assert ledger.problems() == []
        entries = list(ledger.rows())
    outcomes = server.stats(log=False)["outcomes"]
    for fault in ("429", "500", "hang", "reset", "malformed"):
        assert outcomes.get(fault, 0) > 0, outcomes
    # every attempt the client made reached the server, and each was counted once
    assert sum(e.attempts for e in entries) == sent(server)
    assert any(e.attempts > 1 and e.status == "ok" for e in entries), "faults are retried"


def test_length_empty_and_unreadable_images_are_recorded_not_raised(
        tmp_path, synthetic_world, start_teacher):
    server = start_teacher()
    run = make_run(tmp_path, synthetic_world, broken=1)
    n = pool_size(run)
    # every answer cut at 12 tokens: nothing usable, so the stage says so (exit 3 on the
    # command line), after writing every row
    with pytest.raises(DraftStopped, match=r"too few usable answers: 0 of \d+ drafts usable; "
                       r"failed 1 \(image 1\), empty 0, truncated \d+"):
        draft_stage(spec(run, server, teacher={"max_tokens": 12}), run)
    rows = drafts(run).values()
    broken = [r for r in rows if r["item_id"].endswith("broken0")]
    assert len(broken) == 1 and broken[0]["status"] == "failed"
    assert broken[0]["error"].startswith("image:")
    assert sent(server) == n - 1, "no request for an unreadable image"
    others = [r for r in rows if r not in broken]
    assert {r["status"] for r in others} == {"length"}
    assert all(r["finish_reason"] == "length" for r in others)


# -- acceptance 3: budget -------------------------------------------------------------------------


def test_budget_stops_within_one_batch_and_resumes(tmp_path, synthetic_world, start_teacher):
    server = start_teacher(latency=0.02)
    prices = {"teacher": {"input_per_m": 1.0, "output_per_m": 1.0}}  # USD = tokens / 1e6
    probe = make_run(tmp_path, synthetic_world, "probe", per_class=2)
    total = draft_stage(spec(probe, server, teacher={"prices": prices}), probe).cost_usd
    n = pool_size(probe)

    run = make_run(tmp_path, synthetic_world, "budget", per_class=2)
    budget = total / 3
    concurrency = 4
    before = sent(server)
    with pytest.raises(DraftStopped, match="budget reached.*rerun the same command"):
        draft_stage(spec(run, server, teacher={"prices": prices, "concurrency": concurrency},
                         draft={"budget_usd": budget}), run)
    stopped_at = sent(server) - before
    with Ledger(run.ledger) as ledger:
        spent, _ = ledger.totals()
        costs = [e.cost_usd for e in sorted(ledger.rows(), key=lambda e: e.updated_at)]
    assert spent >= budget and len(costs) == stopped_at < n
    reached = next(i for i in range(len(costs)) if sum(costs[: i + 1]) >= budget)
    assert len(costs) - (reached + 1) <= concurrency - 1, "only requests in flight may finish"
    assert len(drafts(run)) == stopped_at  # what was answered is written

    draft_stage(spec(run, server, teacher={"prices": prices},
                     draft={"budget_usd": total * 2}), run)
    assert sent(server) - before == n, "resuming pays only for what was not answered"
    assert len(drafts(run)) == n


# -- acceptance 4: secrets ------------------------------------------------------------------------


def test_api_key_never_reaches_disk_or_logs(tmp_path, synthetic_world, start_teacher):
    key = "sk-finecot-test-SECRET-0123456789abcdef"
    server = start_teacher(rate_500=0.3, rate_429=0.2, retry_after=0.01)
    run = make_run(tmp_path, synthetic_world)
    run.save_recipe(spec(run, server, teacher={"api_key_env": "FINECOT_TEST_KEY",
                                               "max_attempts": 2}))
    proc = cli(run, env={"FINECOT_TEST_KEY": key})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert sent(server) >= pool_size(run)
    export = subprocess.run([sys.executable, "-m", "curation.cli", "ledger", "export", "--run",
                             str(run.root), str(run.root / "ledger.jsonl")], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    files = [p for p in run.root.rglob("*") if p.is_file()]
    assert any(p.name == "ledger.sqlite" for p in files) and (run.root / "ledger.jsonl").exists()
    for path in files:
        assert key.encode() not in path.read_bytes(), path
    for text in (out, err, export.stdout, export.stderr):
        assert key not in text
    assert "FINECOT_TEST_KEY" in run.recipe.read_text()  # the variable's name, not its value


# -- n, endpoints, quota, strategies, SIGINT ------------------------------------------------------


@pytest.mark.parametrize("honour_n", [True, False])
def test_n_samples_in_one_request_or_detected_and_split(tmp_path, synthetic_world, start_teacher,
                                                        honour_n):
    server = start_teacher(honour_n=honour_n)
    run = make_run(tmp_path, synthetic_world)
    n = pool_size(run)
    draft_stage(spec(run, server, draft={"samples": 3}), run)
    rows = drafts(run)
    assert len(rows) == 3 * n and all(r["status"] == "ok" for r in rows.values())
    # honoured: one request per item, but the first goes as 1 + 2 to learn how the server
    # counts usage over n; ignored: detected on the first item, then three requests per item
    assert sent(server) == (n + 1 if honour_n else 3 * n)
    assert {r["sample_index"] for r in rows.values()} == {0, 1, 2}


def test_load_spreads_over_endpoints_and_survives_a_dead_one(tmp_path, synthetic_world,
                                                             start_teacher):
    first, second, dead = start_teacher(), start_teacher(), start_teacher()
    dead.stop()
    run = make_run(tmp_path, synthetic_world, per_class=2)
    n = pool_size(run)
    draft_stage(spec(run, first, second, dead, teacher={"max_attempts": 5}), run)
    assert sent(first) > 0 and sent(second) > 0 and sent(first) + sent(second) == n
    rows = drafts(run).values()
    assert all(r["status"] == "ok" for r in rows)


def _accepted_per_class(run: RunDir, recipe) -> dict[str, int]:
    context = make_context(recipe, run)
    counts: dict[str, int] = {}
    for row in drafts(run).values():
        name = f"{row['dataset']}/{row['label']}"
        counts[name] = counts.get(name, 0) + judge(row, context).accepted
    return counts


def test_quota_loop_drafts_until_target_or_limit(tmp_path, synthetic_world, start_teacher):
    server = start_teacher(perception_error_rate=0.5)
    run = make_run(tmp_path, synthetic_world)
    recipe = spec(run, server, draft={"target_per_class": 2, "max_per_class": 8})
    report = draft_stage(recipe, run)
    rows = drafts(run)
    counts = server.stats(log=False)["counts"]  # new samples of one item share a request (n)
    assert counts["choices"] == len(rows) > pool_size(run) and report.rounds > 1
    accepted = _accepted_per_class(run, recipe)
    assert accepted == report.accepted_per_class
    per_class: dict[str, int] = {}
    for row in rows.values():
        name = f"{row['dataset']}/{row['label']}"
        per_class[name] = per_class.get(name, 0) + 1
    for name, count in accepted.items():
        assert count >= 2 or per_class[name] == 8, (name, count, per_class[name])
        assert (name in report.short_classes) == (count < 2)

    strict = make_run(tmp_path, synthetic_world, "strict")
    server_bad = start_teacher(perception_error_rate=1.0)
    short = draft_stage(spec(strict, server_bad, draft={"target_per_class": 1,
                                                        "max_per_class": 2}), strict)
    assert short.short_classes and set(short.short_classes) <= set(short.accepted_per_class)
    saved = json.loads(strict.path("draft_report.json").read_text())
    assert saved["short_classes"] == short.short_classes


def test_blind_then_hinted_hints_only_failed_items(tmp_path, synthetic_world, start_teacher):
    server = start_teacher(perception_error_rate=0.5)
    run = make_run(tmp_path, synthetic_world)
    recipe = spec(run, server, draft={"strategy": "blind-then-hinted"})
    draft_stage(recipe, run)
    rows = list(drafts(run).values())
    context = make_context(recipe, run)
    blind_ok = {r["item_id"] for r in rows
                if r["strategy"] == "blind" and judge(r, context).accepted}
    hinted = {r["item_id"] for r in rows if r["strategy"] == "hinted"}
    assert blind_ok and hinted
    assert hinted == {r["item_id"] for r in rows} - blind_ok
    assert all(r["hinted"] == (r["strategy"] == "hinted") for r in rows)
    assert server.stats(log=False)["counts"]["hinted"] == len(hinted)


def test_sigint_finishes_in_flight_and_exits_cleanly(tmp_path, synthetic_world, start_teacher):
    server = start_teacher(latency=0.3)
    run = make_run(tmp_path, synthetic_world, per_class=2)
    n = pool_size(run)
    run.save_recipe(spec(run, server, teacher={"concurrency": 4}))
    proc = cli(run)
    wait_for_rows(run, 4, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3 and "interrupted" in err
    kept = ledger_rows(run)
    assert kept < n and sent(server) == kept, "every request sent was answered and recorded"
    with Ledger(run.ledger) as ledger:
        assert ledger.problems() == []
    draft_stage(spec(run, server, teacher={"concurrency": 4}), run)
    assert sent(server) == n and len(drafts(run)) == n


def test_a_refusing_endpoint_stops_the_run_instead_of_failing_every_item(
        tmp_path, synthetic_world, start_teacher):
    server = start_teacher()
    run = make_run(tmp_path, synthetic_world, per_class=2)
    wrong = type("Wrong", (), {"base_url": server.root_url + "/no-such-api/v1"})()  # 404s
    with pytest.raises(DraftStopped, match=r"refused the requests \(http 404.*teacher.base_urls"):
        draft_stage(spec(run, wrong, teacher={"concurrency": 4}), run)
    rows = drafts(run)
    assert 0 < len(rows) <= 4 and all(r["error"].startswith("http 404") for r in rows.values())
    assert len(rows) < pool_size(run)


def test_no_server_at_the_url_stops_the_run_with_the_reason(tmp_path, synthetic_world, start_teacher):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    nowhere = type("Nowhere", (), {"base_url": f"http://127.0.0.1:{port}/v1"})()
    run = make_run(tmp_path, synthetic_world, per_class=2)
    with pytest.raises(DraftStopped, match=rf"nothing answers at http://127.0.0.1:{port}/v1"):
        draft_stage(spec(run, nowhere, teacher={"concurrency": 2, "max_attempts": 2}), run)
    assert len(drafts(run)) < pool_size(run)  # it stopped, not failed every item
    server = start_teacher()  # the server is up now: the rerun drafts everything
    draft_stage(spec(run, server), run)
    assert all(r["status"] == "ok" for r in drafts(run).values())


def test_finecot_run_stage_draft_and_its_budget_exit_code(tmp_path, synthetic_world, start_teacher):
    from typer.testing import CliRunner

    from curation.cli import app
    from curation.core.config import dump_recipe

    server = start_teacher()
    run = make_run(tmp_path, synthetic_world)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(dump_recipe(spec(run, server, draft={"budget_usd": 0.0})))
    refused = CliRunner().invoke(app, ["run", str(recipe), "--stages", "draft"])
    assert refused.exit_code == 2 and "no price for the model 'teacher'" in refused.output
    assert "teacher.prices" in refused.output and sent(server) == 0
    priced = ["--set", "teacher.prices={teacher: {input_per_m: 1, output_per_m: 1}}"]
    stopped = CliRunner().invoke(app, ["run", str(recipe), "--stages", "draft", *priced])
    assert stopped.exit_code == 3 and "budget reached" in stopped.output
    assert sent(server) == 0
    done = CliRunner().invoke(app, ["run", str(recipe), "--stages", "draft",
                                    "--set", "draft.budget_usd=null"])
    assert done.exit_code == 0, done.output
    assert sent(server) == pool_size(run) == len(drafts(run))


def test_without_registry_the_fallback_judges_the_quota(tmp_path, synthetic_world, start_teacher):
    server = start_teacher(perception_error_rate=0.5)
    run = make_run(tmp_path, synthetic_world)
    run.registry.unlink()  # a hand-made pool: no ingest, no registry.json -> fallback verdicts
    report = draft_stage(spec(run, server, draft={"target_per_class": 1, "max_per_class": 6}), run)
    expected: dict[str, int] = {}
    for row in drafts(run).values():
        answer = row["response"].rsplit("<answer>", 1)[-1].split("</answer>")[0].strip()
        name = f"{row['dataset']}/{row['label']}"
        expected[name] = expected.get(name, 0) + (answer == row["label"])
    assert report.judged and report.accepted_per_class == expected
    assert all(n >= 1 for n in expected.values()) or report.short_classes


def test_a_second_draft_on_the_same_run_is_refused(tmp_path, synthetic_world, start_teacher):
    import fcntl

    server = start_teacher()
    run = make_run(tmp_path, synthetic_world)
    with open(run.path(".draft.lock"), "a+") as held:  # as a running `finecot draft` holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write("4242")
        held.flush()
        with pytest.raises(DraftStopped, match=r"another finecot command \(pid 4242\)"):
            draft_stage(spec(run, server), run)
    assert sent(server) == 0
    draft_stage(spec(run, server), run)  # released: the run goes on
    assert sent(server) == pool_size(run)
