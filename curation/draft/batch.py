"""Batch mode of the draft stage (teacher.mode: batch): each round's requests that the ledger
cannot answer go out as JSONL batch files, and the results come back into the same ledger
under the same keys, so reruns, the quota loop, blind-then-hinted, the budget and the
filters work as online.

    finecot draft --run R --mode batch [--wait]      # build, submit, (wait,) collect
    finecot batch build --run R OUT.jsonl            # offline, for `vllm run-batch`
    finecot batch import --run R RESULTS.jsonl
    finecot batch status|collect|cancel --run R      # curation/draft/cli.py

One round (`BatchRunner.round`, one batch per round, split over files as limits require):
1. build: one line per sample, its custom_id the sample's key and its body the online
   client's (n = 1, seed + sample index; the image inlined as a data URL sized by
   image_max_side), into files under runs/NAME/batches/ within teacher.batch.max_lines and
   max_bytes. Each file and its lines enter the ledger (schema 6) as it is finished. The
   budget counts what pending lines may cost at most (prompt estimate + max_tokens at the
   batch price): lines that would pass it wait for a later round.
2. submit: upload each file and create its batch, recording both ids. The ledger notes each
   call before it is made: a process killed before it heard the answer looks the file up by
   name, or the batch by its input file, instead of uploading or paying twice.
3. poll and collect: a finished batch's output and error files are downloaded (streamed to
   disk) and every line is recorded with its line state in one transaction: answers,
   per-line errors with their reason; expired, cancelled and missing lines record nothing
   and go into the next batch (a key goes into at most teacher.max_attempts batches).
Without --wait a round returns "pending" once its batches are submitted: the same command
collects them later. Offline, build writes one file (no limits: vLLM has none) and
`import_results` records what a batch runner wrote for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from curation.core.config import Recipe
from curation.core.ledger import Entry, Ledger
from curation.core.rundir import RunDir
from curation.core.stage import Progress
from curation.teacher.answers import Completion
from curation.teacher.batch_api import FINAL, BatchAPI
from curation.teacher.batch_files import (
    BatchFileWriter,
    BuiltFile,
    ResultLine,
    interpret,
    new_name,
    read_results,
)
from curation.teacher.client import (
    RETRYABLE_STATUS,
    chat_body,
    estimate_tokens,
    public_url,
    sampling_params,
)

log = logging.getLogger(__name__)

ANSWERED = ("ok", "length", "empty")
BUILT_NAME = re.compile(r"^finecot-\d{8}-\d{6}-[0-9a-f]{12}\.jsonl$")  # batch_files.new_name
# What the lines still pending in a batch that ended this way became.
REST_OF = {"completed": "missing", "expired": "expired", "cancelled": "cancelled",
           "failed": "failed"}


def batch_cost(recipe: Recipe, model: str, prompt_tokens: float, completion_tokens: float) -> float:
    """USD of tokens at the model's batch price (teacher.prices; 0 if unlisted)."""
    price = recipe.teacher.prices.get(model)
    if price is None:
        return 0.0
    rate_in, rate_out = price.rates(batch=True)
    return (prompt_tokens * rate_in + completion_tokens * rate_out) / 1e6


def retryable(error: str | None) -> bool:
    """May a failed line succeed in another batch? Not an image or size problem, nor a
    client error the server will repeat.

    >>> retryable("http 500: busy"), retryable("http 400: bad model"), retryable("image: gone")
    (True, False, False)
    """
    error = error or ""
    if error.startswith(("image:", "too large:")):
        return False
    status = re.match(r"http (\d+)", error)
    return status is None or int(status.group(1)) in RETRYABLE_STATUS


def _summary(batch: dict[str, Any]) -> str:
    """What the ledger keeps of a provider's Batch object (no ids of other accounts)."""
    errors = batch.get("errors") or {}
    data = errors.get("data") if isinstance(errors, dict) else None
    return json.dumps({"status": batch.get("status"), "request_counts": batch.get("request_counts"),
                       "errors": data or None}, sort_keys=True)


class BatchRunner:
    """Builds, submits, watches and collects a run's batches (see the module doc).

    `report(task, done, total)` shows progress; `on_result(status, tokens, cost)` is called
    for every recorded line. Building needs the draft stage's pool, Requests and
    ImageCache; collecting, importing and cancelling need only the ledger."""

    def __init__(self, recipe: Recipe, run: RunDir, ledger: Ledger, *,
                 report: Progress | None = None,
                 on_result: Callable[[str, int, float], None] | None = None,
                 pool: Sequence[dict] | None = None, requests: Any = None, images: Any = None,
                 wait: bool = False, offline_out: Path | None = None,
                 should_stop: Callable[[], bool] = lambda: False):
        self.recipe, self.run, self.ledger = recipe, run, ledger
        self.report = report or (lambda task, done, total: None)
        self.on_result = on_result or (lambda status, tokens, cost: None)
        self.pool, self.requests, self.images = pool, requests, images
        self.wait, self.offline_out, self.should_stop = wait, offline_out, should_stop
        self.folder = run.path("batches")
        self.label = public_url(recipe.teacher.base_urls[0]) if recipe.teacher.base_urls else ""
        self.api: BatchAPI | None = None
        self.built_now: set[str] = set()  # keys that went into a file in this process
        self.counts: Counter[str] = Counter()  # built, answered, failed, expired, refused...
        self.refused: Counter[str] = Counter()  # reason -> lines
        self.budget_cut = 0  # lines the budget kept out of the last build
        self.cancelled_now = 0  # batches cancelled while this process watched them running
        self.seen_running: set[str] = set()
        self.message = ""  # what is pending, for the stop message
        self._files: dict[str, dict[str, Any]] = {}

    async def aclose(self) -> None:
        if self.api is not None:
            await self.api.__aexit__(None, None, None)
            self.api = None

    async def connect(self) -> BatchAPI:
        if self.api is None:
            self.api = await BatchAPI(self.recipe.teacher).__aenter__()
        return self.api

    # -- one round --------------------------------------------------------------------------

    async def round(self, groups: list[tuple[int, str, list[Any]]]) -> str:
        """Get answers for the samples of `groups` ((row, strategy, samples with .key and
        .index)). Returns done, pending (results still out: rerun), budget (some requests
        wait for budget), cancelled (a batch was cancelled), or stopped (interrupted)."""
        keys = [s.key for _, _, samples in groups for s in samples]
        if not keys:
            return "done"
        delay = self.recipe.teacher.batch.poll_s
        while True:
            if self.offline_out is None:
                await self.refresh()
                if self.cancelled_now:
                    self.message = self._pending_text(keys)
                    return "cancelled"
            todo = self._todo(groups)
            if todo and not self.should_stop():
                await self._build(todo)
                if self.offline_out is None and not self.should_stop():
                    await self.submit_all()
            pending = self.ledger.pending_lines(keys)
            if not pending:
                return "budget" if self.budget_cut else "done"
            self.message = self._pending_text(keys)
            if self.should_stop():
                return "stopped"
            if self.offline_out is not None or not self.wait or not any(
                    self._file(name)["kind"] == "api" for name in set(pending.values())):
                return "pending"
            await self.pause(delay)
            delay = min(delay * 2, self.recipe.teacher.batch.poll_max_s)

    async def pause(self, seconds: float) -> None:
        """Wait between two polls; an interrupt cuts it short."""
        end = time.monotonic() + seconds
        while time.monotonic() < end and not self.should_stop():
            await asyncio.sleep(min(0.25, max(0.0, end - time.monotonic())))

    def _todo(self, groups: list[tuple[int, str, list[Any]]]) -> list[tuple[int, str, list[Any]]]:
        """The samples to put in a new batch: not answered, not waiting in a batch, asked in
        fewer than teacher.max_attempts batches; a failure from this process only when it
        may pass another time (retryable)."""
        keys = [s.key for _, _, samples in groups for s in samples]
        status = self.ledger.statuses(keys)
        pending = self.ledger.pending_lines(keys)
        tries = self.ledger.batch_tries(keys)
        failed_now = [k for k in keys if status.get(k) == "failed" and k in self.built_now]
        errors = {k: e.error for k, e in self.ledger.get_many(failed_now, meta=False).items()}
        most, retry = self.recipe.teacher.max_attempts, self.recipe.draft.retry_failed
        todo = []
        for row, strategy, samples in groups:
            chosen = []
            for s in samples:
                state = status.get(s.key)
                if s.key in pending or state in ANSWERED:
                    continue
                if tries.get(s.key, 0) >= most:
                    if state is None:
                        self._give_up(row, strategy, s, tries[s.key])
                    continue
                if state == "failed" and (not retry or (
                        s.key in self.built_now and not retryable(errors.get(s.key)))):
                    continue
                chosen.append(s)
            if chosen:
                todo.append((row, strategy, chosen))
        return todo

    def _meta(self, row: int, strategy: str, index: int) -> dict[str, Any]:
        item = self.pool[row]
        return {"item_id": str(item["item_id"]), "strategy": strategy,
                "template": self.requests.prompts.name, "sample_index": index}

    def _give_up(self, row: int, strategy: str, sample: Any, tries: int) -> None:
        """A key no batch answered in teacher.max_attempts tries: failed, with that reason."""
        error = (f"batch: not answered in {tries} batches (expired or missing each time; "
                 "teacher.max_attempts)")
        self._record(Entry(key=sample.key, model=self.recipe.teacher.model, status="failed",
                           attempts=tries, error=error, endpoint=f"batch:{self.label}",
                           meta=self._meta(row, strategy, sample.index)))

    def _record(self, entry: Entry) -> None:
        self.ledger.record(entry)
        self.counts[entry.status if entry.status == "failed" else "answered"] += 1
        self.on_result(entry.status, entry.tokens, entry.cost_usd)

    # -- build ------------------------------------------------------------------------------

    def _room(self) -> tuple[float, float]:
        """(USD, tokens) the budget leaves for new lines: what is spent and what pending
        lines may still cost are taken off."""
        draft = self.recipe.draft
        spent, tokens = self.ledger.totals()
        committed_cost, committed_tokens = self.ledger.batch_committed()
        usd = math.inf if draft.budget_usd is None else draft.budget_usd - spent - committed_cost
        toks = (math.inf if draft.budget_tokens is None
                else draft.budget_tokens - tokens - committed_tokens)
        return usd, toks

    async def _build(self, todo: list[tuple[int, str, list[Any]]]) -> None:
        teacher = self.recipe.teacher
        offline = self.offline_out is not None
        self.budget_cut = 0
        room_usd, room_tokens = self._room()
        if offline:  # one file at the path asked for: vLLM's run-batch has no limits
            for f in self.ledger.batch_files(open_only=True):
                if Path(f["path"]) == self.offline_out:
                    raise ValueError(
                        f"{self.offline_out} holds {f['lines']} requests still waiting for "
                        "their results: import them (`finecot batch import`), drop them "
                        "(`finecot batch cancel`), or write the next batch to another file")
            writer = BatchFileWriter(self.offline_out.parent, sys.maxsize, sys.maxsize,
                                     self._record_file, name=lambda: self.offline_out.name)
        else:
            self._clean()
            writer = BatchFileWriter(self.folder, teacher.batch.max_lines, teacher.batch.max_bytes,
                                     self._record_file)
        params = sampling_params(teacher)
        total, done = sum(len(samples) for _, _, samples in todo), 0
        try:
            for row, strategy, samples in todo:
                if self.should_stop():  # Ctrl-C: finish the file so far, submit nothing
                    break
                item = self.pool[row]
                try:
                    url = await self.images.get(item["image_path"], item.get("width"),
                                                item.get("height"))
                except (OSError, ValueError, Image.DecompressionBombError) as err:
                    for s in samples:
                        self.built_now.add(s.key)
                        self._record(Completion(status="failed", error=f"image: {err}").entry(
                            s.key, teacher.model, 0.0, self._meta(row, strategy, s.index)))
                    continue
                messages = self.requests.for_send(row, strategy, url)
                prompt = estimate_tokens(teacher, messages, 0)
                est_tokens = prompt + teacher.max_tokens
                est_cost = batch_cost(self.recipe, teacher.model, prompt, teacher.max_tokens)
                for s in samples:
                    done += 1
                    if est_cost > room_usd or est_tokens > room_tokens:
                        self.budget_cut += 1
                        continue
                    body = chat_body(params, teacher.seed, messages, 1, s.index)
                    meta = json.dumps(self._meta(row, strategy, s.index), sort_keys=True)
                    self.built_now.add(s.key)
                    try:
                        writer.add(s.key, body, (meta, prompt, est_tokens, est_cost))
                    except ValueError as err:  # the image makes the line too big
                        self._record(Completion(status="failed", error=f"image: {err}").entry(
                            s.key, teacher.model, 0.0, json.loads(meta)))
                        continue
                    room_usd -= est_cost
                    room_tokens -= est_tokens
                    self.counts["built"] += 1
                    if done % 256 == 0:
                        self.report("building batch files", done, total)
                        await asyncio.sleep(0)  # let a Ctrl-C in
            writer.close()
        except BaseException:
            writer.abort()
            raise
        self.report("building batch files", total, total)
        if self.budget_cut:
            log.warning("budget: %d requests wait (the pending ones may cost up to the rest "
                        "of draft.budget_usd / budget_tokens at the batch price)", self.budget_cut)

    def _record_file(self, built: BuiltFile) -> None:
        offline = self.offline_out is not None
        name = f"offline-{new_name()}" if offline else built.name
        self.ledger.add_batch_file(
            {"name": name, "kind": "offline" if offline else "api",
             "model": self.recipe.teacher.model, "endpoint": None if offline else self.label,
             "path": str(built.path), "lines": len(built.lines), "bytes": built.bytes,
             "state": "built", "max_tokens": self.recipe.teacher.max_tokens},
            ((key, line, *info) for key, line, info in built.lines))
        log.info("batch file %s: %d requests, %.1f MB", built.path, len(built.lines),
                 built.bytes / 1e6)

    def _clean(self) -> None:
        """Drop batch files no ledger row knows (a build killed before it recorded them)."""
        if not self.folder.is_dir():
            return
        known = {Path(f["path"]).name for f in self.ledger.batch_files()}
        for path in self.folder.glob("finecot-*.jsonl"):
            if BUILT_NAME.match(path.name) and path.name not in known:  # (not the results)
                path.unlink(missing_ok=True)
        for path in self.folder.glob(".finecot-*.part"):
            path.unlink(missing_ok=True)

    def _file(self, name: str) -> dict[str, Any]:
        if name not in self._files:
            for f in self.ledger.batch_files():
                self._files[f["name"]] = f
        return self._files[name]

    # -- submit, poll, collect --------------------------------------------------------------

    async def submit_all(self) -> None:
        """Upload and create the batches of every built file (resuming half-done ones)."""
        todo = [f for f in self.ledger.batch_files(open_only=True)
                if f["kind"] == "api" and f["batch_id"] is None and f["endpoint"] == self.label]
        for i, f in enumerate(todo):
            self.report("submitting batches", i, len(todo))
            await self._submit(f)
        if todo:
            self.report("submitting batches", len(todo), len(todo))

    async def _submit(self, f: dict[str, Any]) -> None:
        name, path = f["name"], Path(f["path"])
        file_id = f["file_id"]
        api = await self.connect()
        if file_id is None:
            found = (await api.find_file(name, f["bytes"], f["upload_started"])
                     if f["upload_started"] else None)
            if found is None:
                if not path.exists():  # deleted by hand: its lines go into the next batch
                    with self.ledger.transaction():
                        self.ledger.close_pending(name, "missing")
                        self.ledger.update_batch_file(name, state="collected",
                                                      detail=json.dumps({"status": "file lost"}))
                    return
                self.ledger.update_batch_file(name, upload_started=time.time())
                found = await api.upload(path, name)
            else:
                log.info("%s was uploaded before this process was stopped: %s", name, found["id"])
            file_id = found["id"]
            self.ledger.update_batch_file(name, file_id=file_id, state="uploaded")
        found = (await api.find_batch(file_id, f["create_started"])
                 if f["create_started"] else None)
        if found is None:
            self.ledger.update_batch_file(name, create_started=time.time())
            found = await api.create(file_id, self.recipe.teacher.batch.completion_window,
                                     {"finecot_file": name})
        else:
            log.info("the batch of %s was created before this process was stopped: %s",
                     name, found["id"])
        self.ledger.update_batch_file(name, batch_id=found["id"],
                                      state=found.get("status") or "validating",
                                      detail=_summary(found))
        self.counts["submitted"] += 1

    async def refresh(self, collect: bool = True, submit: bool = True) -> list[dict[str, Any]]:
        """Submit what was built but not submitted, read every open batch's status, and
        collect the finished ones (collect=False: only read). Returns the batch objects."""
        if submit:
            await self.submit_all()
        seen = []
        for f in self.ledger.batch_files(open_only=True):
            if f["kind"] != "api" or f["batch_id"] is None:
                continue
            if f["endpoint"] != self.label:
                log.warning("batch %s lives at %s, not at teacher.base_urls[0] (%s): set it "
                            "back to collect it", f["batch_id"], f["endpoint"], self.label)
                continue
            api = await self.connect()
            batch = await api.retrieve(f["batch_id"])
            seen.append(batch)
            if batch.get("status") not in (*FINAL, "cancelling"):
                self.seen_running.add(f["batch_id"])
            self.ledger.update_batch_file(f["name"], state=batch.get("status") or "unknown",
                                          detail=_summary(batch))
            counts = batch.get("request_counts") or {}
            self.report(f"batch {f['name'][:30]}", (counts.get("completed") or 0)
                        + (counts.get("failed") or 0), counts.get("total") or f["lines"])
            if collect and batch.get("status") in FINAL:
                await self._collect(f, batch)
        return seen

    async def _collect(self, f: dict[str, Any], batch: dict[str, Any]) -> None:
        """Download a finished batch's results and record them with the line states, all in
        one transaction."""
        name, status = f["name"], batch["status"]
        refused_before = sum(self.refused.values())
        api = await self.connect()
        paths = []
        for field, suffix in (("output_file_id", "output"), ("error_file_id", "errors")):
            if batch.get(field):
                path = self.folder / f"{Path(name).stem}.{suffix}.jsonl"
                await api.download(batch[field], path)
                paths.append(path)
        with self.ledger.transaction():
            for path in paths:
                for result in read_results(path):
                    self.apply(result, only=name)
            if status == "failed":
                self._fail_pending(f, batch)
            rest = self.ledger.close_pending(name, REST_OF.get(status, "missing"))
            self.ledger.update_batch_file(name, state="collected", detail=_summary(batch))
        refused = sum(self.refused.values()) - refused_before
        if refused:
            log.warning("batch %s: %d result lines could not be used (%s); their requests go "
                        "into the next batch", name, refused, "; ".join(self.refused))
        if status == "cancelled" and batch.get("id") in self.seen_running:
            self.cancelled_now += 1  # cancelled at the provider while we waited: stop there
        if rest and status != "failed":
            self.counts[REST_OF.get(status, "missing")] += rest
            log.warning("batch %s %s: %d requests not run go into the next batch", name,
                        status, rest)

    def _fail_pending(self, f: dict[str, Any], batch: dict[str, Any]) -> None:
        """A batch that failed validation ran nothing: each line fails with its reason."""
        errors = (batch.get("errors") or {}).get("data") or [{}]
        first = errors[0]
        reason = (f"batch failed validation: {first.get('code') or 'error'}: "
                  f"{first.get('message') or 'no reason given'}")
        endpoint = f"batch:{f['endpoint'] or 'offline'}"
        for key, meta in self.ledger.pending_meta(f["name"]):
            entry = Completion(status="failed", error=reason, attempts=1).entry(
                key, f["model"], 0.0, meta)
            entry.endpoint = endpoint
            self._record(entry)
            self.ledger.close_line(f["name"], key, "failed")
        log.warning("batch %s failed validation: %s", batch.get("id"), reason)

    def apply(self, result: ResultLine, only: str | None = None) -> str:
        """Record one result line (inside the caller's transaction); return what it was:
        answered, failed, expired, cancelled, duplicate, or refused (reason counted)."""
        if result.problem:
            return self._refuse(result.problem)
        if self.ledger.result_seen(result.sha256):
            self.counts["duplicate"] += 1
            return "duplicate"
        found = self.ledger.pending_line(result.custom_id)
        if found is None or (only is not None and found[0] != only):
            where = "this batch" if only else "any batch file of this run"
            return self._refuse(f"line {result.number}: custom_id {result.custom_id[:16]}... is "
                                f"not a request waiting in {where} (unknown, or recorded before)")
        name, meta, prompt_estimate = found
        f = self._file(name)
        outcome = interpret(result, f["model"], f["max_tokens"], prompt_estimate)
        if outcome.kind == "refused":
            return self._refuse(outcome.reason)
        if outcome.kind in ("expired", "cancelled"):
            self.ledger.close_line(name, result.custom_id, outcome.kind, result.sha256)
            self.counts[outcome.kind] += 1
            return outcome.kind
        completion = outcome.completion or Completion(status="failed", error=outcome.error,
                                                      attempts=1)
        cost = batch_cost(self.recipe, f["model"], completion.prompt_tokens,
                          completion.completion_tokens)
        entry = completion.entry(result.custom_id, f["model"], cost, meta)
        entry.endpoint = f"batch:{f['endpoint'] or 'offline'}"
        entry.latency_s = None  # a line has no latency of its own (stats leave it out)
        entry.extra["batch_file"] = name
        self._record(entry)
        state = "failed" if completion.status == "failed" else "answered"
        self.ledger.close_line(name, result.custom_id, state, result.sha256)
        return state

    def _refuse(self, reason: str) -> str:
        self.counts["refused"] += 1
        kind = re.sub(r"^line \d+: ", "", reason)
        kind = re.sub(r"custom_id \S+ ", "custom_id ", kind)
        kind = re.sub(r"\(.*\)$", "", kind).strip()
        self.refused[kind] += 1
        return "refused"

    def _pending_text(self, keys: list[str]) -> str:
        """Where the pending keys wait: '12 in batch batch_abc (in_progress); 3 in OUT...'."""
        by_file = Counter(self.ledger.pending_lines(keys).values())
        files = {f["name"]: f for f in self.ledger.batch_files(open_only=True)}
        parts = []
        for name, count in by_file.items():
            f = files.get(name) or self._file(name)
            if f["kind"] == "offline":
                parts.append(f"{count} in {f['path']} (offline: results to import)")
            else:
                parts.append(f"{count} in batch {f['batch_id'] or name} ({f['state']})")
        return "; ".join(parts)
