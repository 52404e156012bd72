"""Offline batch mode: `finecot batch build` writes the file `vllm run-batch` reads, a script
standing in for it writes vLLM's results format (answers from the scripted teacher's chat
endpoint), `finecot batch import` records them; then filter and export give the online
run's rows. Importing twice, foreign keys, mismatched bodies and malformed lines change
nothing but are named.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_batch_offline.py
"""

from __future__ import annotations

import glob
import json
import os
import sqlite3

import pyarrow.parquet as pq
import pytest
from batch_fixtures import VARYING, comparable, counters, vllm_run_batch
from draft_fixtures import make_run, pool_size, sent, spec
from typer.testing import CliRunner

from curation.cli import app
from curation.core.config import parse_recipe
from curation.core.ledger import Ledger
from curation.core.rundir import RunDir
from curation.draft.batch_ops import import_results
from curation.draft.stage import BatchPending, draft_stage


def finecot(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _pipeline(root, world, server, name: str) -> tuple[RunDir, object]:
    """ingest and split the synthetic world into runs/NAME (recipe saved in the run)."""
    from curation.pipeline import run_recipe

    recipe = parse_recipe({
        "name": name, "run_dir": str(root / name), "stages": ["ingest", "split"],
        "sources": [{"kind": "imagefolder", "root": str(world), "dataset": "synthetic"}],
        "split": {"mode": "compositional", "k": 2, "seed": 0, "seen_ratio": 0.75},
        "teacher": {"base_urls": [server.base_url], "model": "finecot-synthetic-teacher",
                    "max_attempts": 2, "backoff_s": 0},
        "export": {"rl_image_size": 32},
    })
    run = run_recipe(recipe)
    run.save_recipe(recipe)
    return run, recipe


def _rows(path_glob: str) -> set[str]:
    """A Parquet table as a set of JSON rows, without images and the columns that differ
    between an online and a batch answer by nature (latency, price)."""
    rows = set()
    for path in sorted(glob.glob(path_glob)):
        for row in pq.read_table(path).to_pylist():
            kept = {k: v for k, v in row.items() if k not in VARYING and "image" not in k}
            rows.add(json.dumps(kept, sort_keys=True, default=str))
    return rows


def test_build_run_batch_import_then_filter_and_export_match_online(tmp_path, synthetic_world,
                                                                    start_teacher):
    from curation.pipeline import run_recipe

    os.environ.setdefault("OPENAI_API_KEY", "none")
    flags = {"perception_error_rate": 0.3, "format_error_rate": 0.1}
    online_server, offline_server = start_teacher(**flags), start_teacher(**flags)
    online, recipe_online = _pipeline(tmp_path, synthetic_world, online_server, "online")
    offline, recipe_offline = _pipeline(tmp_path, synthetic_world, offline_server, "offline")
    run_recipe(recipe_online.model_copy(update={"stages": ["draft"]}))
    n = pool_size(offline)

    requests = tmp_path / "requests.jsonl"
    built = finecot("batch", "build", "--run", offline.root, requests)
    assert built.exit_code == 4 and "vllm run-batch -i" in built.output, built.output
    lines = [json.loads(line) for line in requests.read_text().splitlines()]
    assert len(lines) == n and {line["method"] for line in lines} == {"POST"}
    assert {line["url"] for line in lines} == {"/v1/chat/completions"}
    assert all(line["body"]["messages"][1]["content"][0]["image_url"]["url"].startswith(
        "data:image/png;base64,") for line in lines)
    assert sent(offline_server) == 0 and counters(offline_server)["uploads"] == 0

    results = tmp_path / "results.jsonl"
    vllm_run_batch(requests, results, offline_server)
    imported = finecot("batch", "import", "--run", offline.root, results)
    assert imported.exit_code == 0 and f"answered {n}" in imported.output, imported.output
    done = finecot("batch", "build", "--run", offline.root, tmp_path / "next.jsonl")
    assert done.exit_code == 0 and "nothing left to ask" in done.output, done.output
    assert not (tmp_path / "next.jsonl").exists()
    assert comparable(offline) == comparable(online)

    for recipe in (recipe_online, recipe_offline):
        run_recipe(recipe.model_copy(update={"stages": ["filter", "export"]}))
    accepted = _rows(str(offline.path("accepted.parquet")))
    assert accepted and accepted == _rows(str(online.path("accepted.parquet")))
    sft = _rows(str(offline.path("dataset/data/sft/*.parquet")))
    assert sft and sft == _rows(str(online.path("dataset/data/sft/*.parquet")))


def test_importing_twice_foreign_keys_and_bad_lines_change_nothing(tmp_path, synthetic_world,
                                                                   start_teacher):
    server = start_teacher()
    run = make_run(tmp_path, synthetic_world)
    recipe = spec(run, server)
    n = pool_size(run)
    requests, results = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    with pytest.raises(BatchPending, match="vllm run-batch"):
        draft_stage(recipe, run, batch_out=requests)
    keys = [json.loads(line)["custom_id"] for line in requests.read_text().splitlines()]
    vllm_run_batch(requests, results, server, fail={keys[0]})
    good = results.read_text().splitlines()

    # A file with a foreign key, a body of another model, two choices, a cut line and a
    # line that is no JSON, around half of the good lines.
    other = json.loads(good[1])
    other["custom_id"] = "f" * 64
    wrong_model = json.loads(good[2])
    wrong_model["response"]["body"]["model"] = "somebody-else"
    two = json.loads(good[3])
    two["response"]["body"]["choices"] *= 2
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join([good[0], json.dumps(other), json.dumps(wrong_model), good[4],
                                json.dumps(two), good[5][:40], "not json", good[6]]) + "\n")
    outcome = finecot("batch", "import", "--run", run.root, mixed)
    assert outcome.exit_code == 3, outcome.output
    text = " ".join(outcome.output.split())
    assert "answered 2" in text and "failed 1" in text and "refused 5" in text
    for reason in ("is not a request waiting in any batch file of this run",
                   "model 'somebody-else' answered, 'teacher' was asked",
                   "2 choices, one was asked", "not JSON"):
        assert reason in text, outcome.output
    with Ledger(run.ledger) as ledger:
        after_mixed = {e.key: (e.status, e.error) for e in ledger.rows()}
        assert ledger.problems() == []
    assert after_mixed[keys[0]] == ("failed", "http 400: The model `x` does not exist.")
    assert set(after_mixed) == {keys[0], keys[4], keys[6]}

    again = import_results(recipe, run, mixed)  # the same file: nothing changes
    assert again["duplicate"] == 3 and again["refused"] == 5 and "answered" not in again
    whole = import_results(recipe, run, results)  # the full results: the rest comes in
    assert whole["duplicate"] == 3 and whole["answered"] == n - 3
    with Ledger(run.ledger) as ledger:
        rows = {e.key: e for e in ledger.rows()}
        assert ledger.stats()["batch_lines_pending"] == 0 and ledger.problems() == []
    assert len(rows) == n and rows[keys[0]].status == "failed"
    assert all(rows[k].endpoint == "batch:offline" for k in keys)
    once = import_results(recipe, run, results)
    assert once["duplicate"] == n and set(once) >= {"lines", "duplicate"}
    with Ledger(run.ledger) as ledger:
        assert {e.key: (e.status, e.attempts) for e in ledger.rows()} == {
            k: (rows[k].status, rows[k].attempts) for k in rows}
    db = sqlite3.connect(run.ledger)
    assert db.execute("SELECT state FROM batch_files").fetchall() == [("collected",)]
    db.close()


def test_a_pending_offline_file_is_not_overwritten_nor_sent_twice(tmp_path, synthetic_world,
                                                                 start_teacher):
    server = start_teacher()
    run = make_run(tmp_path, synthetic_world)
    requests = tmp_path / "requests.jsonl"
    with pytest.raises(BatchPending):
        draft_stage(spec(run, server), run, batch_out=requests)
    before = requests.read_bytes()
    with pytest.raises(ValueError, match="still waiting for their results"):
        draft_stage(spec(run, server, draft={"samples": 2}), run, batch_out=requests)
    assert requests.read_bytes() == before
    with pytest.raises(BatchPending, match=r"\d+ in .*requests.jsonl \(offline"):
        draft_stage(spec(run, server), run, batch_out=tmp_path / "other.jsonl")
    assert not (tmp_path / "other.jsonl").exists()  # nothing new to ask: all are waiting
    dropped = finecot("batch", "cancel", "--run", run.root)
    assert dropped.exit_code == 0 and "dropped" in dropped.output, dropped.output
    with pytest.raises(BatchPending):  # dropped: the requests go into a new file
        draft_stage(spec(run, server), run, batch_out=tmp_path / "other.jsonl")
    assert len((tmp_path / "other.jsonl").read_text().splitlines()) == pool_size(run)
