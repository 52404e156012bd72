"""Judge many drafts over worker processes, with the same verdicts as one process.

    for verdict in judge_all(drafts, ctx, workers=4):   # in input order
        ...

`finecot filter` and `finecot audit` (`--workers`, default: the cores this process may use)
call this. Parsing and every filter but `duplicate` run in the workers (filters.assess), in
chunks; the duplicate filter compares a draft with the drafts accepted before it, so it runs
here, in input order (filters.conclude), on the MinHash signatures the workers computed. The
verdicts are therefore the same, byte for byte, whatever the number of workers.

Workers are forked, so they start with the context (registry, name indexes, settings) and
the drafts already in memory: nothing but chunk bounds goes to them, and only the
assessments come back. Where fork is not available, each chunk of drafts is sent along.
Few drafts (under MIN_PER_WORKER per worker) are judged in process: starting workers would
cost more than it saves.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from curation.filter.filters import Assessment, FilterContext, Verdict, assess, conclude
from curation.filter.rationale import Rationale

CHUNK = 128  # drafts per task: large enough that the round trip is a small share
MIN_PER_WORKER = 256

# What a forked worker inherits: set just before the pool starts, cleared after.
_JOB: tuple[Sequence[Mapping], FilterContext] | None = None


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # (not on every platform)
        return os.cpu_count() or 1


Packed = tuple  # an Assessment as plain values: pickled and unpickled several times faster


def _pack(a: Assessment) -> Packed:
    r = a.parsed
    return (r.think, r.answer, r.visual_analysis, r.candidates, r.comparison, r.prediction,
            r.truncated, r.errors, a.failed, a.evidence,
            None if a.signature is None else a.signature.tobytes())


def _unpack(p: Packed) -> Assessment:
    sig = None if p[10] is None else np.frombuffer(p[10], dtype=np.uint64)
    return Assessment(Rationale(*p[:8]), p[8], p[9], signature=sig)


def _assess_range(bounds: tuple[int, int]) -> list[Packed]:
    """A forked worker: assess drafts[start:end] of the inherited job."""
    if _JOB is None:
        raise RuntimeError("_assess_range runs in a worker forked by judge_all")
    drafts, ctx = _JOB
    start, end = bounds
    return [_pack(assess(drafts[i], ctx, signature_now=True)) for i in range(start, end)]


_SPAWNED: FilterContext | None = None  # a spawned worker's own context


def _start_spawned(ctx: FilterContext) -> None:
    global _SPAWNED
    _SPAWNED = ctx


def _assess_chunk(chunk: list[Mapping]) -> list[Packed]:
    """A spawned worker: assess a chunk of drafts sent to it."""
    if _SPAWNED is None:
        raise RuntimeError("_assess_chunk runs in a worker started by judge_all")
    return [_pack(assess(draft, _SPAWNED, signature_now=True)) for draft in chunk]


def judge_all(
    drafts: Sequence[Mapping], ctx: FilterContext, workers: int | None = None,
    min_per_worker: int = MIN_PER_WORKER,
) -> Iterator[Verdict]:
    """The verdict of every draft, in input order (see the module docstring). `workers`:
    processes to use (None: default_workers(); 1: this process only), no more than one per
    `min_per_worker` drafts."""
    global _JOB
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    workers = min(workers, len(drafts) // max(min_per_worker, 1))
    if workers <= 1:
        for draft in drafts:
            yield conclude(draft, ctx, assess(draft, ctx))
        return
    for draft in drafts:  # build the name indexes once, before the workers start
        ctx.mentions(str(draft.get("dataset") or ""))
    bounds = [(i, min(i + CHUNK, len(drafts))) for i in range(0, len(drafts), CHUNK)]
    if "fork" in multiprocessing.get_all_start_methods():
        _JOB = (drafts, ctx)
        # Objects made so far (the drafts, the name indexes) leave the collector's view: a
        # collection in a worker would otherwise touch every one of them and copy the
        # memory pages the worker shares with this process (the gc module's advice for fork).
        gc.freeze()
        try:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for (start, _), chunk in zip(bounds, pool.imap(_assess_range, bounds), strict=True):
                    for i, packed in enumerate(chunk, start):
                        yield conclude(drafts[i], ctx, _unpack(packed))
        finally:
            _JOB = None
            gc.unfreeze()
        return
    with multiprocessing.get_context("spawn").Pool(workers, _start_spawned, (ctx,)) as pool:
        chunks = (list(drafts[start:end]) for start, end in bounds)
        for (start, _), chunk in zip(bounds, pool.imap(_assess_chunk, chunks), strict=True):
            for i, packed in enumerate(chunk, start):
                yield conclude(drafts[i], ctx, _unpack(packed))
