"""Judge many drafts over worker processes, with the same verdicts as one process.

    for verdict in judge_all(drafts, ctx, workers=4):   # in input order
        ...

`finecot filter` and `finecot audit` (`--workers`, default: the cores this process may use)
call this. Parsing and every filter but `duplicate` run in the workers (filters.assess), in
chunks; the duplicate filter compares a draft with the drafts accepted before it, so it runs
here, in input order (filters.conclude), on the MinHash signatures the workers computed. The
verdicts are therefore the same, byte for byte, whatever the number of workers.

`workers` processes judge the drafts: this one and `workers - 1` forked ones, which start
with the context (registry, name indexes, settings) and the drafts already in memory. Each
process takes the next chunk number from a shared counter (one that gets more CPU judges
more chunks; this one takes a chunk whenever the next one it must conclude has not come
yet). A forked worker sends back, over a pipe of its own, the assessments of its chunk, its
texts as bounds in the draft's response wherever they are part of it: this process holds
the responses, so the bulk of the text never crosses back. (Not a multiprocessing.Pool: a
pool's workers leave this process idle, or competing with them for the cores when the
caller has work of its own, and its worker-handler thread spins on every result pending in
the pipe.) Where fork is not available, a spawn Pool gets each chunk of drafts sent along.
Few drafts (under MIN_PER_WORKER per worker) are judged in process: starting workers would
cost more than it saves.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import traceback
from collections.abc import Iterator, Mapping, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np

from curation.filter.filters import Assessment, FilterContext, Verdict, assess, conclude
from curation.filter.rationale import Rationale

CHUNK = 128  # drafts per message: large enough that the round trip is a small share
MIN_PER_WORKER = 256

# What a forked worker inherits: set just before the workers start, cleared after.
_JOB: tuple[Sequence[Mapping], FilterContext] | None = None


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not on every platform)
        return os.cpu_count() or 1


Packed = tuple  # an Assessment as plain values: pickled and unpickled several times faster
Text = str | tuple[int, int] | None  # a parsed text, or the bounds of an equal part of the response

_SHORT_TEXT = 64  # characters: a text this short travels as it is


def _where(section: str | None, response: str) -> Text:
    """`section`, or the bounds of an equal part of `response` (the think and most sections
    are parts of it; which occurrence does not matter, the text is the same)."""
    if section is None or len(section) < _SHORT_TEXT:
        return section
    # Where its first characters are, then a comparison: half the cost of a search for the
    # whole section (a few us for a think of thousands of characters).
    head = section[:_SHORT_TEXT]
    at = response.find(head)
    while at >= 0 and not response.startswith(section, at):
        at = response.find(head, at + 1)
    return section if at < 0 else (at, at + len(section))


def _text(packed: Text, response: str) -> str | None:
    return response[packed[0] : packed[1]] if type(packed) is tuple else packed


def _pack(a: Assessment, response: object) -> Packed:
    r = a.parsed
    text = response if isinstance(response, str) else ""
    return (_where(r.think, text), r.answer, _where(r.visual_analysis, text), r.candidates,
            _where(r.comparison, text), _where(r.prediction, text), r.truncated, r.errors,
            a.failed, a.evidence, None if a.signature is None else a.signature.tobytes())


def _unpack(p: Packed, response: object) -> Assessment:
    text = response if isinstance(response, str) else ""
    sig = None if p[10] is None else np.frombuffer(p[10], dtype=np.uint64)
    parsed = Rationale(_text(p[0], text), p[1], _text(p[2], text), p[3], _text(p[4], text),
                       _text(p[5], text), p[6], p[7])
    return Assessment(parsed, p[8], p[9], signature=sig)


def _assess_packed(drafts: Sequence[Mapping], ctx: FilterContext) -> list[Packed]:
    return [_pack(assess(draft, ctx, signature_now=True), draft.get("response")) for draft in drafts]


def _work(tickets: Any, chunks: int, out: Connection) -> None:
    """A forked worker: judge the next chunk of the inherited job until none is left,
    sending (chunk number, packed assessments) for each; (-1, traceback) if one fails."""
    if _JOB is None:
        raise RuntimeError("_work runs in a worker forked by judge_all")
    drafts, ctx = _JOB
    try:
        while True:
            with tickets.get_lock():
                number = tickets.value
                tickets.value = number + 1
            if number >= chunks:
                return
            start = number * CHUNK
            out.send((number, _assess_packed(drafts[start : start + CHUNK], ctx)))
    except Exception:  # noqa: BLE001 - handed to the parent, which raises it
        out.send((-1, traceback.format_exc()))
    finally:
        out.close()


def _collect(readers: list[Connection], arrived: dict[int, tuple[bool, list]],
             timeout: float | None) -> None:
    """Read what the workers sent (waiting up to `timeout` for it) into `arrived`; a worker
    whose pipe ended leaves `readers`."""
    for reader in wait(readers, timeout):
        try:
            got, packed = reader.recv()
        except EOFError:
            readers.remove(reader)
            continue
        if got < 0:
            raise RuntimeError(f"a filter worker failed:\n{packed}")
        arrived[got] = (True, packed)


def _forked(drafts: Sequence[Mapping], ctx: FilterContext, workers: int) -> Iterator[Verdict]:
    """judge_all over this process and `workers - 1` forked ones (see the module docstring)."""
    global _JOB
    fork = multiprocessing.get_context("fork")
    chunks = -(-len(drafts) // CHUNK)
    tickets = fork.Value("q", 0)
    processes, readers = [], []
    finished = False
    _JOB = (drafts, ctx)
    # Objects made so far (the drafts, the name indexes) leave the collector's view: a
    # collection in a worker would otherwise touch every one of them and copy the memory
    # pages the worker shares with this process (the gc module's advice for fork).
    gc.freeze()
    try:
        for _ in range(workers - 1):
            reader, writer = fork.Pipe(duplex=False)
            process = fork.Process(target=_work, args=(tickets, chunks, writer), daemon=True)
            process.start()
            writer.close()  # (the worker's copy is the last: its exit ends the pipe)
            processes.append(process)
            readers.append(reader)
        # chunk number -> (packed by a worker?, its assessments)
        arrived: dict[int, tuple[bool, list]] = {}
        open_readers = list(readers)
        for number in range(chunks):
            while number not in arrived:
                if open_readers:
                    _collect(open_readers, arrived, 0)
                    if number in arrived:
                        break
                with tickets.get_lock():  # this process takes a chunk too, while any is left
                    mine = tickets.value
                    tickets.value = mine + 1
                if mine < chunks:
                    start = mine * CHUNK
                    arrived[mine] = (False, [assess(d, ctx) for d in drafts[start : start + CHUNK]])
                elif open_readers:
                    _collect(open_readers, arrived, None)
                else:
                    raise RuntimeError("a filter worker stopped before sending its results")
            packed, assessments = arrived.pop(number)
            for i, a in enumerate(assessments, number * CHUNK):
                yield conclude(drafts[i], ctx, _unpack(a, drafts[i].get("response")) if packed else a)
        finished = True
    finally:
        _JOB = None
        gc.unfreeze()
        for process in processes:
            if not finished:  # (the caller stopped early, or a worker failed)
                process.terminate()
            process.join()
        for reader in readers:
            reader.close()


_SPAWNED: FilterContext | None = None  # a spawned worker's own context


def _start_spawned(ctx: FilterContext) -> None:
    global _SPAWNED
    _SPAWNED = ctx


def _assess_chunk(chunk: list[Mapping]) -> list[Packed]:
    """A spawned worker: assess a chunk of drafts sent to it."""
    if _SPAWNED is None:
        raise RuntimeError("_assess_chunk runs in a worker started by judge_all")
    return _assess_packed(chunk, _SPAWNED)


def judge_all(
    drafts: Sequence[Mapping], ctx: FilterContext, workers: int | None = None,
    min_per_worker: int = MIN_PER_WORKER,
) -> Iterator[Verdict]:
    """The verdict of every draft, in input order (see the module docstring). `workers`:
    processes that judge them, this one included (None: default_workers(); 1: this process
    only), no more than one per `min_per_worker` drafts."""
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    workers = min(workers, len(drafts) // max(min_per_worker, 1))
    if workers <= 1:
        for draft in drafts:
            yield conclude(draft, ctx, assess(draft, ctx))
        return
    for dataset in dict.fromkeys(str(draft.get("dataset") or "") for draft in drafts):
        ctx.mentions(dataset)  # build the name indexes once, before the workers start
    if "fork" in multiprocessing.get_all_start_methods():
        yield from _forked(drafts, ctx, workers)
        return
    starts = range(0, len(drafts), CHUNK)
    with multiprocessing.get_context("spawn").Pool(workers, _start_spawned, (ctx,)) as pool:
        chunks = (list(drafts[start : start + CHUNK]) for start in starts)
        for start, chunk in zip(starts, pool.imap(_assess_chunk, chunks), strict=True):
            for i, packed in enumerate(chunk, start):
                yield conclude(drafts[i], ctx, _unpack(packed, drafts[i].get("response")))
