"""The draft stage: k-shot pool items -> teacher requests -> drafts.parquet.

    finecot draft --run runs/birds [--target-per-class 4] [--budget-usd 5]
    draft_stage(recipe, run)                      # what `finecot run` calls

Every request has a key (sha256 of model, messages with the image as its sha256, sampling
params, sample index and template sha); the ledger answers known keys, so a rerun, a resume
after a crash, or a run with one template changed sends only what is new.

Rounds. Round one drafts `draft.samples` samples per item with the recipe's strategy:
blind (the teacher is not told the label), hinted (it is), or blind-then-hinted (blind first,
then hinted samples for the items none of whose blind drafts was accepted). With
`draft.target_per_class K`, later rounds draft new sample indices (new keys) for the classes
with fewer than K accepted drafts, until each has K, or `draft.max_per_class` samples, or
the budget is spent; the report names the classes that fell short. Acceptance is the filter's
`judge()` (curation/filter/filters.py), else a fallback (curation/draft/requests.py); verdicts are
computed only when the quota loop or blind-then-hinted acts on them.

The budget (USD or tokens, over the whole ledger) stops new requests, lets those in flight
finish, writes what is answered and raises DraftStopped with what to do; so do SIGINT and
an endpoint that refuses the requests (401/403/404).

With teacher.mode batch (or an offline build) each round goes through a batch instead
(curation/draft/batch.py): the same keys, the same ledger; a round whose batch is still out
ends the run with BatchPending (rerun to collect; `wait=True` polls until it is in).
Items stream through the loop with bounded memory: a request body (with its encoded image)
exists only while its request is in flight.
"""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import json
import logging
import math
import os
import signal
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation.core.config import Recipe, RecipeError
from curation.core.ledger import Entry, Ledger, cost_usd
from curation.core.rundir import RunDir
from curation.core.stage import StageStopped
from curation.core.tables import ParquetStreamWriter, write_json_atomic
from curation.draft.batch import BatchRunner
from curation.draft.report import DraftProgress, DraftReport, failure_reason
from curation.draft.requests import ImageCache, Requests, make_accept, pool_registry
from curation.teacher.answers import Completion
from curation.teacher.batch_api import BatchAPIError
from curation.teacher.client import TeacherClient

log = logging.getLogger(__name__)

DRAFT_FIELDS = [
    ("question", pa.string()), ("strategy", pa.string()), ("hinted", pa.bool_()),
    ("teacher_model", pa.string()), ("prompt_template", pa.string()), ("prompt_sha", pa.string()),
    ("sampling", pa.string()), ("sample_index", pa.int64()), ("request_key", pa.string()),
    ("status", pa.string()), ("error", pa.string()), ("response", pa.string()),
    ("finish_reason", pa.string()), ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()), ("cost_usd", pa.float64()), ("latency_s", pa.float64()),
    ("teacher_truth", pa.string()),  # JSON: what a scripted teacher says it did (else null)
]


class DraftStopped(StageStopped):
    """The stage stopped early on purpose (budget, interrupt, refused); rerun to resume."""


class BatchPending(DraftStopped):
    """Batch mode: requests are out in a batch (or in an offline file) whose results are
    not in yet; rerun the same command later to collect them and go on."""


@dataclass(slots=True)
class Sample:
    """One scheduled draft: pool row, sample index, strategy, its key, and its verdict."""

    row: int
    index: int
    strategy: str
    key: str = ""
    accepted: bool = False


def draft_stage(recipe: Recipe, run: RunDir, progress: DraftProgress | None = None, *,
                wait: bool = False, batch_out: Path | None = None) -> DraftReport:
    """Draft rationales for run.pool into run.path("drafts.parquet"); see the module doc.

    Batch mode: `wait` polls submitted batches until their results are in; `batch_out`
    builds the next batch offline into that file (for `vllm run-batch`)."""
    progress = progress or DraftProgress()
    try:
        return asyncio.run(Drafter(recipe, run, progress, wait=wait, batch_out=batch_out).run())
    finally:
        progress.close()


class Drafter:
    """One draft run: the schedule of samples, the ledger, the client and the quota loop."""

    def __init__(self, recipe: Recipe, run: RunDir, progress: DraftProgress, *,
                 wait: bool = False, batch_out: Path | None = None):
        self.recipe, self.run_dir, self.progress = recipe, run, progress
        self.batch_mode = recipe.teacher.mode == "batch" or batch_out is not None
        self.wait, self.batch_out = wait, batch_out
        self.batcher: BatchRunner | None = None
        self.batch_stop: str | None = None  # pending, budget, cancelled, stopped, refused
        self.batch_error = ""
        pool_file = pq.ParquetFile(run.require(run.pool, "split"))  # (read_table imports pandas)
        self.pool: list[dict] = pool_file.read().to_pylist()
        self.registry = pool_registry(run, self.pool)
        self.requests = Requests(recipe, self.registry, self.pool)
        draft = recipe.draft
        _check_prices(recipe)
        # Only the quota loop and blind-then-hinted act on verdicts; otherwise the filter
        # stage judges, and a plain (or cached) draft run does not pay for it twice.
        self.report = DraftReport(
            judged=draft.target_per_class is not None or draft.strategy == "blind-then-hinted")
        self.accept = make_accept(recipe, run, self.registry) if self.report.judged else None
        self.images = ImageCache(recipe)
        self.schedule: list[Sample] = []
        self.next_index: dict[tuple[int, str], int] = defaultdict(int)
        self.interrupted = False
        self.ledger: Ledger | None = None
        self.client: TeacherClient | None = None

    # -- stopping ---------------------------------------------------------------------------

    def stop_reason(self) -> str | None:
        if self.interrupted:
            return "interrupted"
        if self.batch_stop == "stopped":
            return "interrupted"
        if self.batch_stop:
            return self.batch_stop
        if self.client is not None and self.client.refused:
            return "refused"
        spent, tokens = self.ledger.totals()
        draft = self.recipe.draft
        if draft.budget_usd is not None and spent >= draft.budget_usd:
            return "budget"
        if draft.budget_tokens is not None and tokens >= draft.budget_tokens:
            return "budget"
        return None

    def _on_sigint(self) -> None:
        if self.interrupted:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now (answered requests are kept)
        self.interrupted = True
        log.warning("interrupted: finishing the requests in flight, then stopping "
                    "(Ctrl-C again to stop at once)")

    # -- the run ----------------------------------------------------------------------------

    async def run(self) -> DraftReport:
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, self._on_sigint)
            handled = True
        except (RuntimeError, ValueError, NotImplementedError):  # not the main thread
            handled = False
        try:
            with _exclusive(self.run_dir.path(".draft.lock")), Ledger(self.run_dir.ledger) as ledger:
                self.ledger = ledger
                if self.batch_mode:
                    self.batcher = BatchRunner(
                        self.recipe, self.run_dir, ledger, report=self.progress.task,
                        on_result=self.progress.on_result, pool=self.pool,
                        requests=self.requests, images=self.images, wait=self.wait,
                        offline_out=self.batch_out, should_stop=lambda: self.interrupted)
                try:
                    await self._rounds()
                finally:
                    if self.client is not None:
                        await self.client.aclose()
                    if self.batcher is not None:
                        await self.batcher.aclose()
                self._finish()
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGINT)
        return self.report

    async def _rounds(self) -> None:
        draft = self.recipe.draft
        first = "hinted" if draft.strategy == "hinted" else "blind"
        batch = self._add([(row, first) for row in range(len(self.pool))], draft.samples)
        while batch:
            self.report.rounds += 1
            await (self._send_batch(batch) if self.batch_mode else self._send(batch))
            self.requests.forget()
            if self.report.judged:
                self._judge(batch)
            if self.stop_reason():
                return
            batch = self._next_round()

    def _add(self, wanted: Iterable[tuple[int, str]], count: int) -> list[Sample]:
        """Schedule `count` new sample indices for each (row, strategy); keys come in _send."""
        added = []
        for row, strategy in wanted:
            start = self.next_index[(row, strategy)]
            self.next_index[(row, strategy)] = start + count
            added += [Sample(row, i, strategy) for i in range(start, start + count)]
        self.schedule += added
        self.progress.add_total(len(added))
        return added

    def _next_round(self) -> list[Sample]:
        draft = self.recipe.draft
        rows_blind_ok: set[int] = {s.row for s in self.schedule if s.accepted and s.strategy == "blind"}
        if draft.strategy == "blind-then-hinted" and self.report.rounds == 1:
            wanted = [(r, "hinted") for r in range(len(self.pool)) if r not in rows_blind_ok]
            added = self._add(wanted, draft.samples)
            if added:
                return added
        if draft.target_per_class is None:
            return []
        return self._quota_round(rows_blind_ok)

    def _quota_round(self, rows_blind_ok: set[int]) -> list[Sample]:
        """New samples for classes short of target_per_class, spread over their items."""
        draft = self.recipe.draft
        target = draft.target_per_class
        accepted, scheduled = self._class_counts()
        rows_of: dict[str, list[int]] = defaultdict(list)
        for row, item in enumerate(self.pool):
            rows_of[_class_name(item)].append(row)
        wanted: list[tuple[int, str]] = []
        for name, rows in rows_of.items():
            need = target - accepted[name]
            room = draft.max_per_class - scheduled[name]
            if need <= 0 or room <= 0:
                continue
            rate = accepted[name] / scheduled[name] if accepted[name] else 0.25
            count = min(room, math.ceil(need / max(rate, 0.25)))
            for i in range(count):
                row = rows[i % len(rows)]
                hinted = draft.strategy == "hinted" or (
                    draft.strategy == "blind-then-hinted" and row not in rows_blind_ok)
                wanted.append((row, "hinted" if hinted else "blind"))
        added: list[Sample] = []
        for row_strategy in sorted(wanted):  # an item's new samples side by side: one request
            added += self._add([row_strategy], 1)
        return added

    def _class_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        accepted: dict[str, int] = defaultdict(int)
        scheduled: dict[str, int] = defaultdict(int)
        for s in self.schedule:
            name = _class_name(self.pool[s.row])
            scheduled[name] += 1
            accepted[name] += s.accepted
        return accepted, scheduled

    # -- sending ----------------------------------------------------------------------------

    async def _send(self, batch: list[Sample]) -> None:
        """Key each item's samples, send what the ledger does not answer, `concurrency`-ish
        jobs at a time. Keys are computed as the loop goes, so the first requests leave at
        once and overlap with the keying of the rest."""
        limit = self.recipe.teacher.concurrency + self.recipe.teacher.concurrency // 4 + 2
        pending: set[asyncio.Task] = set()
        for count, ((row, strategy), group) in enumerate(
                itertools.groupby(batch, key=lambda s: (s.row, s.strategy))):
            todo = self._not_answered(row, strategy, list(group))
            if not todo or self.stop_reason():  # stopped: keep keying, so cached rows count
                self.requests.release(row, strategy)
                continue
            if self.client is None:  # a fully cached run never opens a connection
                self.client = await TeacherClient(self.recipe.teacher).__aenter__()
            while len(pending) >= limit:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            pending.add(asyncio.create_task(self._job(row, strategy, todo)))
            if count % 32 == 0:
                await asyncio.sleep(0)  # let the first requests leave while keying goes on
        if pending:
            await asyncio.gather(*pending)

    def _not_answered(self, row: int, strategy: str, samples: list[Sample]) -> list[Sample]:
        """Key the samples of one item and strategy; return those the ledger does not answer
        (failed ones too, with draft.retry_failed) and count the rest as cached."""
        keys = self.requests.keys(row, strategy, [s.index for s in samples])
        for sample, key in zip(samples, keys, strict=True):
            sample.key = key
        known = self.ledger.statuses(keys)
        retry = self.recipe.draft.retry_failed
        todo = [s for s in samples if known.get(s.key) is None
                or (retry and known[s.key] == "failed")]
        if len(todo) < len(samples):
            self.report.cached += len(samples) - len(todo)
            self.progress.on_cached(len(samples) - len(todo))
        return todo

    async def _send_batch(self, batch: list[Sample]) -> None:
        """Batch mode: key the round's samples (the same keys as online), leave out what the
        ledger answers, and let the BatchRunner get the rest through one batch."""
        groups: list[tuple[int, str, list[Sample]]] = []
        for (row, strategy), group in itertools.groupby(batch, key=lambda s: (s.row, s.strategy)):
            todo = self._not_answered(row, strategy, list(group))
            self.requests.release(row, strategy)  # rebuilt when its file is written
            if todo:
                groups.append((row, strategy, todo))
        if not groups or self.interrupted:
            return
        try:  # (even past the budget: batches already out are paid and must be collected)
            state = await self.batcher.round(groups)
        except BatchAPIError as err:
            self.batch_stop, self.batch_error = "refused", str(err)
            return
        self.report.sent = self.batcher.counts["built"]
        if state != "done":
            self.batch_stop = state

    async def _job(self, row: int, strategy: str, samples: list[Sample]) -> None:
        item = self.pool[row]
        by_index = {s.index: s for s in samples}
        meta = {"item_id": str(item["item_id"]), "strategy": strategy,
                "template": self.requests.prompts.name}
        try:
            url = await self.images.get(item["image_path"], item.get("width"), item.get("height"))
        except (OSError, ValueError, Image.DecompressionBombError) as err:
            for s in samples:
                self._record(s, meta, Completion(status="failed", error=f"image: {err}"))
            return
        messages = self.requests.for_send(row, strategy, url)
        sent = await self.client.sample(messages, list(by_index),
                                   lambda index, c: self._record(by_index[index], meta, c),
                                   gate=lambda: self.stop_reason() is not None)
        self.report.sent += sent

    def _record(self, sample: Sample, meta: dict, c: Completion) -> None:
        teacher = self.recipe.teacher
        cost = cost_usd(teacher.prices, teacher.model, c.prompt_tokens, c.completion_tokens)
        self.ledger.record(c.entry(sample.key, teacher.model, cost,
                                   {**meta, "sample_index": sample.index}))
        self.progress.on_result(c.status, c.prompt_tokens + c.completion_tokens, cost)

    # -- verdicts and the table -------------------------------------------------------------

    def _drafts(self, samples: list[Sample]) -> Iterable[tuple[Sample, dict]]:
        """(sample, draft row) for the samples the ledger answers, in chunks of 1,000."""
        samples = [s for s in samples if s.key]  # no key: never reached (interrupted)
        for start in range(0, len(samples), 1000):
            chunk = samples[start : start + 1000]
            known = self.ledger.get_many((s.key for s in chunk), meta=False)
            for s in chunk:
                entry = known.get(s.key)
                if entry is not None:
                    yield s, self._row(s, entry)

    def _judge(self, batch: list[Sample]) -> None:
        for sample, row in self._drafts(batch):
            sample.accepted = row["status"] != "failed" and bool(self.accept(row))

    def _row(self, s: Sample, e: Entry) -> dict:
        item = self.pool[s.row]
        return {
            "draft_id": f"{item['item_id']}#{s.index}#{s.strategy}", **item,
            "question": self.requests.question(item), "strategy": s.strategy,
            "hinted": s.strategy == "hinted", "teacher_model": self.recipe.teacher.model,
            "prompt_template": self.requests.prompts.name, "prompt_sha": self.requests.prompts.sha,
            "sampling": self.requests.sampling_json, "sample_index": s.index,
            "request_key": s.key, "status": e.status, "error": e.error, "response": e.text,
            "finish_reason": e.finish_reason, "prompt_tokens": e.prompt_tokens,
            "completion_tokens": e.completion_tokens, "cost_usd": e.cost_usd,
            "latency_s": e.latency_s, "_usage_estimated": e.usage_estimated,
            "teacher_truth": (json.dumps(e.extra["truth"], sort_keys=True)
                              if "truth" in e.extra else None),
        }

    def _finish(self) -> None:
        """Write drafts.parquet (schedule order) and draft_report.json; raise if stopped."""
        pool_schema = pq.read_schema(self.run_dir.pool)
        pool_schema = pa.schema([f for f in pool_schema if not f.name.startswith("__")])
        schema = pa.schema([pa.field("draft_id", pa.string()), *pool_schema,
                            *(pa.field(n, t) for n, t in DRAFT_FIELDS)])
        report = self.report
        statuses: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        with ParquetStreamWriter(self.run_dir.path("drafts.parquet"), schema) as out:
            for _, row in self._drafts(self.schedule):
                report.usage_estimated += row.pop("_usage_estimated")
                out.write(row)
                statuses[row["status"]] += 1
                if row["status"] == "failed":
                    reasons[failure_reason(row["error"])] += 1
        report.drafts = out.count
        report.not_sent = len(self.schedule) - out.count
        report.usable, report.failed = statuses["ok"], statuses["failed"]
        report.truncated, report.empty = statuses["length"], statuses["empty"]
        report.failed_reasons = dict(reasons.most_common())
        if self.client is not None:
            report.retries, report.waited_s = self.client.counts["retried"], self.client.waited_s
        report.cost_usd, report.tokens = self.ledger.totals()
        report.stopped = self.stop_reason()
        if self.batcher is not None:
            report.batch = {**self.batcher.counts,
                            **{f"refused: {r}": n for r, n in self.batcher.refused.items()}}
        if report.judged:
            accepted, _ = self._class_counts()
            report.accepted_per_class = dict(sorted(accepted.items()))
        target = self.recipe.draft.target_per_class
        if target is not None:
            report.short_classes = {c: n for c, n in report.accepted_per_class.items() if n < target}
        write_json_atomic(self.run_dir.path("draft_report.json"), report.__dict__)
        if report.stopped:
            self.ledger.event(report.stopped, f"{report.not_sent} scheduled requests not sent")
            if report.stopped == "pending":
                raise BatchPending(self._stop_message())
            raise DraftStopped(self._stop_message())
        share = self.recipe.draft.min_usable_share
        if share > 0 and report.drafts and (
                report.usable == 0 or report.usable < share * report.drafts):
            self.ledger.event("unusable", report.summary())
            raise DraftStopped(
                f"too few usable answers: {report.summary()} (draft.min_usable_share "
                f"{share:.0%}). The answers are in the ledger and drafts.parquet (columns status, "
                "error, finish_reason): check teacher.max_tokens for truncation, the model "
                "for empty answers, `finecot ledger stats` for the failures; rerun to retry "
                "the failed ones.")
        if report.short_classes:
            log.warning("%d class(es) below %d accepted drafts: %s", len(report.short_classes),
                        target, ", ".join(f"{c} ({n})" for c, n in report.short_classes.items()))

    def _stop_message(self) -> str:
        r, d = self.report, self.recipe.draft
        done = f"{r.drafts} drafts written, {r.not_sent} scheduled requests not sent"
        if self.batch_stop:
            return self._batch_message(f"{r.drafts} drafts written, {r.not_sent} scheduled "
                                       "requests not answered yet")
        if r.stopped == "interrupted":
            return f"interrupted: {done}. Rerun the same command to resume."
        if r.stopped == "refused":
            t = self.recipe.teacher
            return (f"the teacher refused the requests ({self.client.refused}); {done}. Check "
                    f"the model name (teacher.model = {t.model!r}: the server's /v1/models "
                    f"lists what it serves), the API key in ${t.api_key_env}, "
                    f"teacher.base_urls, and the image size the server accepts "
                    f"(teacher.image_max_side, teacher.image_max_pixels); then rerun the same "
                    "command.")
        limit = (f"${d.budget_usd:.4f}" if d.budget_usd is not None
                 and r.cost_usd >= d.budget_usd else f"{d.budget_tokens} tokens")
        return (f"budget reached: spent ${r.cost_usd:.4f} and {r.tokens} tokens (limit {limit}); "
                f"{done}. Raise draft.budget_usd / draft.budget_tokens (--budget-usd, "
                "--budget-tokens) and rerun the same command: answered requests are not paid again.")


    def _batch_message(self, done: str) -> str:
        r, run, t = self.report, self.run_dir.root, self.recipe.teacher
        where = self.batcher.message if self.batcher is not None else ""
        rerun = f"`finecot draft --run {run} --mode batch`"
        if self.batch_stop == "pending" and self.batch_out is not None:
            return (f"{done}. Waiting for results: {where}. Run the file through a batch runner, "
                    f"e.g. `vllm run-batch -i {self.batch_out} -o results.jsonl --model "
                    f"{t.model}`, then `finecot batch import --run {run} results.jsonl`, and "
                    f"`finecot batch build --run {run} OUT.jsonl` again for the next round.")
        if self.batch_stop == "pending":
            return (f"{done}. Batches are out: {where}. Rerun {rerun} to collect them (add "
                    f"--wait to wait for them); `finecot batch status --run {run}` shows them, "
                    f"`finecot batch cancel --run {run}` cancels them.")
        if self.batch_stop == "cancelled":
            return (f"a batch was cancelled: {done}; {where or 'nothing is waiting'}. Its "
                    f"answered lines are recorded; rerun {rerun} to send the rest again.")
        if self.batch_stop == "stopped":
            return (f"interrupted: {done}; {where}. The batches go on at the provider: rerun "
                    f"{rerun} to collect them.")
        if self.batch_stop == "refused":
            return (f"the batch API refused: {self.batch_error}; {done}. Check the API key in "
                    f"${t.api_key_env}, teacher.base_urls and teacher.model, then rerun {rerun}.")
        return (f"budget reached: spent ${r.cost_usd:.4f} and {r.tokens} tokens, and the next "
                "requests could cost more than what is left once the batches out are paid (each "
                "is counted at its worst: prompt estimate + max_tokens at the batch price); "
                f"{done}. Raise draft.budget_usd / draft.budget_tokens, or rerun once the "
                "batches out are collected: their real cost is lower.")


def _check_prices(recipe: Recipe) -> None:
    """A USD budget needs the model's price: without one every cost is $0 and the budget
    never stops anything."""
    teacher, budget = recipe.teacher, recipe.draft.budget_usd
    if budget is not None and teacher.model not in teacher.prices:
        raise RecipeError(
            f"draft.budget_usd is {budget} but teacher.prices has no price for the model "
            f"{teacher.model!r}, so every request would cost $0 and the budget would never "
            f"stop the run. Add its price in USD per million tokens, e.g. --set "
            f"'teacher.prices={{\"{teacher.model}\": {{input_per_m: 2.5, output_per_m: 10}}}}' "
            "(0 and 0 for a free local model), or budget tokens instead (draft.budget_tokens).")


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """One draft process per run directory: two would send (and pay for) the same requests.
    The file is the run lock (curation/core/lock.py) that split, filter and export take too.
    An flock dies with its process, so a SIGKILLed run never leaves a stale lock."""
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise DraftStopped(
                f"another finecot command (pid {handle.read().strip() or '?'}) is working on "
                f"{path.parent}; wait for it to finish or stop it, then rerun") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield


def _class_name(item: Mapping[str, Any]) -> str:
    return f"{item['dataset']}/{item['label']}"
