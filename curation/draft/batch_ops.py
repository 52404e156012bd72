"""The batch commands outside a draft run: import a batch runner's results, read the state of
a run's batches, collect the finished ones, cancel them.

    import_results(recipe, run, Path("results.jsonl"))     # finecot batch import
    asyncio.run(batch_status(recipe, run))                # finecot batch status
    asyncio.run(collect_batches(recipe, run, wait=True))  # finecot batch collect
    asyncio.run(cancel_batches(recipe, run))              # finecot batch cancel

Each but status holds the run lock (curation/core/lock.py) and works through the same
BatchRunner as the draft stage (curation/draft/batch.py), so a line is recorded the same way
whichever command brings it in. Building a batch is the draft stage's job
(`draft_stage(..., batch_out=PATH)`): it needs the round's schedule.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from curation.core.config import Recipe
from curation.core.ledger import Ledger
from curation.core.lock import run_lock
from curation.core.rundir import RunDir
from curation.core.stage import Progress
from curation.draft.batch import BatchRunner
from curation.teacher.batch_api import FINAL, BatchAPI, BatchAPIError
from curation.teacher.batch_files import read_results
from curation.teacher.client import public_url


def import_results(recipe: Recipe, run: RunDir, path: Path,
                   report: Progress | None = None) -> dict[str, Any]:
    """Record the results file of an offline batch (what `vllm run-batch` or another runner
    wrote for a `finecot batch build` file), in one transaction.

    Each line is recorded under its custom_id when that key waits in a batch file of this
    run; a line already imported is skipped (importing twice changes nothing); a line that
    cannot be read, whose key is unknown or whose body does not match its request (another
    model, several choices, not a chat.completion) is refused with its reason, and nothing
    else changes. Returns the counts by outcome and the refusal reasons."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no results file at {path}")
    report = report or (lambda task, done, total: None)
    with open(path, "rb") as handle:
        total = sum(1 for line in handle if line.strip())
    run.require(run.ledger, "batch build")
    with run_lock(run, "batch import"), Ledger(run.ledger) as ledger:
        runner = BatchRunner(recipe, run, ledger, report=report)
        outcomes: Counter[str] = Counter()
        with ledger.transaction():
            for done, result in enumerate(read_results(path), start=1):
                outcomes[runner.apply(result)] += 1
                if done % 1000 == 0:
                    report("importing results", done, total)
            for f in ledger.batch_files(open_only=True):
                if f["kind"] == "offline" and not ledger.line_states(f["name"]).get("pending"):
                    ledger.update_batch_file(f["name"], state="collected")
            ledger.event("batch import", f"{path.name}: {dict(outcomes)}")
        report("importing results", total, total)
        waiting = ledger.stats()["batch_lines_pending"]
    return {"lines": total, **outcomes, "refused_reasons": dict(runner.refused),
            "still_waiting": waiting}


async def batch_status(recipe: Recipe, run: RunDir) -> list[dict[str, Any]]:
    """Every batch file of the run, the open API batches read afresh from the provider.
    Read-only (nothing is downloaded, recorded or locked): it works while a `finecot draft
    --wait` holds the run."""
    run.require(run.ledger, "draft")
    with Ledger(run.ledger) as ledger:
        rows = ledger.batch_files()
        for row in rows:
            row["line_states"] = ledger.line_states(row["name"])
    label = public_url(recipe.teacher.base_urls[0]) if recipe.teacher.base_urls else ""
    todo = [r for r in rows if r["kind"] == "api" and r["batch_id"]
            and r["state"] not in ("collected", *FINAL) and r["endpoint"] == label]
    if todo:
        async with BatchAPI(recipe.teacher) as api:
            for row in todo:
                batch = await api.retrieve(row["batch_id"])
                row["state"] = batch.get("status") or row["state"]
                row["request_counts"] = batch.get("request_counts")
    return rows


async def collect_batches(recipe: Recipe, run: RunDir, report: Progress | None = None,
                          wait: bool = False) -> dict[str, Any]:
    """Read the run's open API batches and record the results of the finished ones; with
    `wait`, poll (doubling from teacher.batch.poll_s to poll_max_s) until none is open.
    Nothing new is submitted. Returns the line counts and the batches still open."""
    run.require(run.ledger, "draft")
    with run_lock(run, "batch collect"), Ledger(run.ledger) as ledger:
        runner = BatchRunner(recipe, run, ledger, report=report)
        delay = recipe.teacher.batch.poll_s
        try:
            while True:
                await runner.refresh(submit=False)
                ours = [f for f in ledger.batch_files(open_only=True)
                        if f["kind"] == "api" and f["endpoint"] == runner.label]
                still = [f for f in ours if f["batch_id"]]  # (built only: the draft submits)
                if not wait or not still:
                    break
                await runner.pause(delay)
                delay = min(delay * 2, recipe.teacher.batch.poll_max_s)
        finally:
            await runner.aclose()
    return {**runner.counts, "refused_reasons": dict(runner.refused),
            "open": [f["batch_id"] for f in still],
            "not_submitted": [f["name"] for f in ours if not f["batch_id"]]}


async def cancel_batches(recipe: Recipe, run: RunDir) -> list[tuple[str, str]]:
    """Cancel every open batch of the run: API batches at the provider (their answered
    lines still come back with `finecot batch collect` or the next draft), files not yet
    submitted and offline files here. Their unanswered requests go into the next batch of
    `finecot draft --mode batch`. Returns (file, what happened) pairs."""
    run.require(run.ledger, "draft")
    done: list[tuple[str, str]] = []
    with run_lock(run, "batch cancel"), Ledger(run.ledger) as ledger:
        runner = BatchRunner(recipe, run, ledger)
        try:
            for f in ledger.batch_files(open_only=True):
                name = f["name"]
                batch_id = f["batch_id"]
                if batch_id is None and f["kind"] == "api" and f["file_id"] and f["create_started"]:
                    api = await runner.connect()  # a create may have reached the provider
                    found = await api.find_batch(f["file_id"], f["create_started"])
                    batch_id = found["id"] if found else None
                    if batch_id:
                        ledger.update_batch_file(name, batch_id=batch_id)
                if batch_id is None:
                    with ledger.transaction():
                        closed = ledger.close_pending(name, "cancelled")
                        ledger.update_batch_file(name, state="collected", detail=json.dumps(
                            {"status": "cancelled before submission"}))
                    done.append((name, f"dropped ({closed} requests, never submitted)"))
                    continue
                api = await runner.connect()
                try:
                    batch = await api.cancel(batch_id)
                except BatchAPIError as err:
                    batch = await api.retrieve(batch_id)
                    if batch.get("status") not in FINAL:
                        raise
                    done.append((name, f"already {batch.get('status')} ({err})"))
                    continue
                ledger.update_batch_file(name, state=batch.get("status") or "cancelling")
                done.append((name, f"{batch_id}: {batch.get('status')}"))
            ledger.event("batch cancel", "; ".join(f"{n}: {w}" for n, w in done))
        finally:
            await runner.aclose()
    return done
