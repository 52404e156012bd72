"""The run lock: one command at a time writes a run's tables.

    with run_lock(run, "split"):
        ...   # write split.json, pool.parquet, test.parquet

Two commands writing the same tables at once corrupt them silently: a `split` while a `draft`
runs left a drafts.parquet of one pool drafted against another. Every stage that writes
tables (ingest, split, filter, review apply, export) holds this lock while it works; the
draft stage holds the same file (`.draft.lock`, the name it has always used), so a second
command is refused at once with the first one's pid, and nothing is written.

An flock dies with its process: a SIGKILLed command never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from curation.core.rundir import RunDir
from curation.core.stage import StageStopped

LOCK_FILE = ".draft.lock"  # shared with curation/draft/stage.py, which locks it itself


class RunBusy(StageStopped):
    """Another finecot command holds the run lock; the message names its pid."""


@contextmanager
def run_lock(run: RunDir, command: str) -> Iterator[None]:
    """Hold the run's lock for `command`, or raise RunBusy naming the holder's pid. The run
    directory must exist (a mistyped --run is named, not created)."""
    if not run.root.is_dir():
        raise FileNotFoundError(f"run directory {run.root} does not exist: check --run, or "
                                f"start the run with `finecot ingest --run {run.root}`")
    with open(run.path(LOCK_FILE), "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise RunBusy(
                f"another finecot command (pid {holder}) is working on {run.root}: "
                f"`finecot {command}` would change tables it is using. Wait for it to finish "
                "(or stop it), then rerun"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
