"""The ledger: migrations, upserts, totals, consistency checks, export, durability, CLI.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_ledger.py
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.core.ledger import Entry, Ledger, cost_usd
from curation.core.ledger_schema import MIGRATIONS


def entry(key: str, **fields) -> Entry:
    base = dict(model="m", status="ok", attempts=1, response=f"answer {key}",
                finish_reason="stop", prompt_tokens=100, completion_tokens=20, cost_usd=0.5)
    return Entry(key=key, **{**base, **fields})


def test_fresh_ledger_is_at_the_latest_schema(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        assert ledger.schema_version == len(MIGRATIONS)
        mode = ledger._db.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_old_ledger_is_migrated_in_order_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    db.execute("INSERT INTO requests (key, model, status, attempts, response, created_at, updated_at)"
               " VALUES ('k0', 'm', 'ok', 1, 'kept', 1.0, 1.0)")
    db.execute("PRAGMA user_version = 1")
    db.commit()
    db.close()
    with Ledger(path) as ledger:
        assert ledger.schema_version == len(MIGRATIONS)
        old = ledger.get_many(["k0"])["k0"]
        assert old.response == "kept" and old.endpoint is None and old.meta == {}
        ledger.record(entry("k1", endpoint="http://h/v1", meta={"item_id": "i"}))
        assert ledger.get_many(["k1"])["k1"].meta == {"item_id": "i"}


def test_newer_schema_is_refused_with_advice(tmp_path):
    path = tmp_path / "new.sqlite"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.commit()
    db.close()
    with pytest.raises(RuntimeError, match="upgrade finecot"):
        Ledger(path)


def test_record_get_and_retry_upsert_add_up(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.record(entry("a", status="failed", response=None, error="http 500: boom",
                            attempts=3, prompt_tokens=0, completion_tokens=0, cost_usd=0.0))
        ledger.record(entry("b"))
        first = ledger.get_many(["a"])["a"]
        ledger.record(entry("a", attempts=2))  # the failed request, sent again and answered
        found = ledger.get_many(["a", "b", "missing"])
        assert set(found) == {"a", "b"}
        a = found["a"]
        assert a.status == "ok" and a.attempts == 5 and a.error is None
        assert a.created_at == first.created_at and a.updated_at >= first.updated_at
        assert ledger.totals() == (pytest.approx(1.0), 240)
    with Ledger(tmp_path / "l.sqlite") as again:  # totals come back from the file
        assert again.totals() == (pytest.approx(1.0), 240)


def test_get_many_beyond_the_parameter_limit(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        for i in range(1200):
            ledger.record(entry(f"k{i}"))
        found = ledger.get_many([f"k{i}" for i in range(0, 2400, 2)])
        assert len(found) == 600 and "k1198" in found and "k1" not in found


def test_unknown_status_is_refused_by_the_schema(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger, pytest.raises(sqlite3.IntegrityError):
        ledger.record(entry("x", status="pending"))


def test_problems_finds_inconsistent_rows(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.record(entry("good"))
        ledger.record(entry("img", status="failed", error="image: cannot identify", attempts=0,
                            response=None))
        assert ledger.problems() == []
        ledger._db.execute("UPDATE requests SET response = NULL WHERE key = 'good'")
        ledger.record(entry("bad", status="failed", error=None, response=None))
        found = ledger.problems()
        assert any(p.startswith("answered row without response: good") for p in found)
        assert any(p.startswith("failed row without error: bad") for p in found)


def test_stats_count_statuses_reasons_and_cost(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.record(entry("a"))
        ledger.record(entry("b", status="length"))
        ledger.record(entry("c", status="failed", error="http 500: x", response=None, cost_usd=0))
        ledger.record(entry("d", status="failed", error="timeout: slow", response=None, cost_usd=0))
        ledger.record(entry("e", status="failed", error="http 500: y", response=None, cost_usd=0))
        ledger.event("budget", "3 not sent")
        stats = ledger.stats()
    assert stats["requests"] == 5
    assert stats["by_status"] == {"ok": 1, "length": 1, "empty": 0, "failed": 3}
    assert stats["failure_reasons"] == {"http 500": 2, "timeout": 1}
    assert stats["cost_usd"] == pytest.approx(1.0)
    assert stats["recent_events"][0]["kind"] == "budget"


def test_export_parquet_and_jsonl(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as ledger:
        for i in range(3):
            ledger.record(entry(f"k{i}", meta={"item_id": f"i{i}"}))
        assert ledger.export(tmp_path / "out.parquet") == 3
        assert ledger.export(tmp_path / "out.jsonl") == 3
        with pytest.raises(ValueError, match=".parquet or .jsonl"):
            ledger.export(tmp_path / "out.csv")
    table = pq.read_table(tmp_path / "out.parquet")
    assert sorted(table.column("key").to_pylist()) == ["k0", "k1", "k2"]
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["meta"]["item_id"] == "i0"  # an object in JSON lines


def test_cost_from_the_price_table():
    prices = {"big": {"input_per_m": 3.0, "output_per_m": 15.0}}
    assert cost_usd(prices, "big", 2_000_000, 100_000) == pytest.approx(7.5)
    assert cost_usd(prices, "unlisted", 10**6, 10**6) == 0.0


def test_sigkill_loses_nothing_recorded(tmp_path):
    """A process killed with SIGKILL right after record() returns: every row is there."""
    path = tmp_path / "l.sqlite"
    script = textwrap.dedent(f"""
        import sys, time
        from curation.core.ledger import Entry, Ledger
        ledger = Ledger({str(path)!r})
        for i in range(200):
            ledger.record(Entry(key=f"k{{i}}", model="m", status="ok", attempts=1, response="r"))
        print("recorded", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=os.getcwd())
    try:
        assert proc.stdout.readline().strip() == "recorded"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    with Ledger(path) as ledger:
        assert len(ledger.get_many(f"k{i}" for i in range(200))) == 200
        assert ledger.problems() == []


def test_ledger_commands(tmp_path):
    run = tmp_path / "run"
    runner = CliRunner()
    missing = runner.invoke(app, ["ledger", "stats", "--run", str(run)])
    assert missing.exit_code == 2 and "finecot draft" in missing.output
    with Ledger(run / "ledger.sqlite") as ledger:
        ledger.record(entry("a"))
        ledger.record(entry("b", status="failed", error="http 503: busy", response=None))
    stats = runner.invoke(app, ["ledger", "stats", "--run", str(run), "--json"])
    assert stats.exit_code == 0, stats.output
    assert json.loads(stats.stdout)["by_status"]["failed"] == 1
    path = runner.invoke(app, ["ledger", "path", "--run", str(run)])
    assert path.stdout.strip() == str((run / "ledger.sqlite").resolve())
    out = tmp_path / "x.parquet"
    exported = runner.invoke(app, ["ledger", "export", "--run", str(run), str(out)])
    assert exported.exit_code == 0 and pq.read_table(out).num_rows == 2


# -- running totals (issue 22): the same cost at any ledger size -----------------------------


def _aggregates(db: sqlite3.Connection) -> dict:
    """What the totals must equal: the aggregates over every request, computed the slow way."""
    row = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
        " ROUND(COALESCE(SUM(cost_usd), 0), 9), ROUND(COALESCE(SUM(attempts * 1.0 / shared), 0), 6),"
        " COUNT(reasoning), COALESCE(SUM(usage_estimated), 0) FROM requests").fetchone()
    by_status = dict(db.execute("SELECT status, COUNT(*) FROM requests GROUP BY status"))
    return {"row": row, "by_status": by_status}


def _from_stats(stats: dict) -> dict:
    row = (stats["requests"], stats["prompt_tokens"], stats["completion_tokens"],
           round(stats["cost_usd"], 9), None, stats["reasoning_outside_content"],
           stats["usage_estimated"])
    return {"row": row, "by_status": {k: v for k, v in stats["by_status"].items() if v}}


def test_totals_follow_inserts_retries_reasks_and_deletes(tmp_path):
    import random

    rng = random.Random(0)
    path = tmp_path / "l.sqlite"
    with Ledger(path) as ledger:
        for _ in range(300):
            key = f"k{rng.randrange(120)}"  # repeats: the upsert path (a failed row re-sent)
            ledger.record(entry(key, model=rng.choice(["a", "b"]),
                                status=rng.choice(["ok", "failed", "length", "empty"]),
                                attempts=rng.randint(1, 3), shared=rng.choice([1, 1, 3]),
                                prompt_tokens=rng.randint(0, 900), cost_usd=rng.random() / 7,
                                reasoning=rng.choice([None, "why"]),
                                usage_estimated=rng.random() < 0.2))
        ledger.record_many(entry(f"bulk{i}", model="c") for i in range(50))
        ledger.mark_for_reask([f"k{i}" for i in range(0, 120, 7)], "reask: test")
        ledger._db.execute("DELETE FROM requests WHERE key IN ('k3', 'k5', 'bulk7')")
        stats = ledger.stats()
    db = sqlite3.connect(path)
    want = _aggregates(db)
    got = _from_stats(stats)
    assert got["by_status"] == want["by_status"]
    assert got["row"][:4] == want["row"][:4] and got["row"][5:] == want["row"][5:]
    assert stats["attempts"] == round(want["row"][4])
    with Ledger(path) as reopened:  # what the next process reads, without a scan
        assert reopened.totals() == pytest.approx((want["row"][3], want["row"][1] + want["row"][2]))


def test_a_ledger_of_the_previous_release_migrates_in_place_with_its_totals(tmp_path):
    """A schema-4 ledger (what the previous release wrote) gains the totals table, filled
    from its rows; the rows themselves are untouched."""
    path = tmp_path / "v4.sqlite"
    db = sqlite3.connect(path)
    for script in MIGRATIONS[:4]:
        db.executescript(script)
    db.execute("PRAGMA user_version = 4")
    for i in range(40):
        db.execute("INSERT INTO requests (key, model, status, attempts, response, prompt_tokens,"
                   " completion_tokens, cost_usd, shared, created_at, updated_at, raw_fields)"
                   " VALUES (?, ?, ?, 2, 'x', 10, 5, 0.25, ?, 1, 1, 1)",
                   (f"k{i}", "m" if i % 2 else "n", "ok" if i % 5 else "failed", 1 + i % 2))
    db.commit()
    want = _aggregates(db)
    db.close()
    with Ledger(path) as ledger:
        assert ledger.schema_version == len(MIGRATIONS)
        assert ledger.totals() == pytest.approx((10.0, 600))
        stats = ledger.stats()
    assert _from_stats(stats)["by_status"] == want["by_status"]
    assert stats["attempts"] == round(want["row"][4]) == 60  # 2 attempts, shared by 1 or 2


def test_what_a_stage_asks_the_ledger_uses_an_index(tmp_path):
    """Every statement a draft, filter or eval run sends on each invocation (open, cache
    check, lookups, record, event, budget, stats) reads by key, by index or the small totals
    table: none scans the requests."""
    with Ledger(tmp_path / "l.sqlite") as ledger:
        ledger.record_many(entry(f"k{i}", status="failed" if i % 9 == 0 else "ok",
                                 error="http 500: x" if i % 9 == 0 else None) for i in range(200))
        statements: list[str] = []
        ledger._db.set_trace_callback(statements.append)
        ledger.statuses([f"k{i}" for i in range(50)])
        ledger.get_many([f"k{i}" for i in range(50)], meta=False)
        ledger.record(entry("new"))
        ledger.record(entry("k1", attempts=1))
        ledger.event("resume", "test")
        ledger.totals()
        ledger.stats()
        ledger._db.set_trace_callback(None)
        reads = [s for s in statements if s.lstrip().upper().startswith(("SELECT", "INSERT",
                                                                          "UPDATE"))]
        assert len(reads) >= 8
        plans = {s: " | ".join(r[-1] for r in ledger._db.execute(f"EXPLAIN QUERY PLAN {s}"))
                 for s in reads if "?" not in s}
    scans = {s: plan for s, plan in plans.items() if "SCAN requests" in plan}
    assert plans and scans == {}
