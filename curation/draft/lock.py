"""One draft process per run directory: two would send (and pay for) the same requests, or
record the same batch results twice.

    with exclusive(run.path(".draft.lock")):
        ...   # the draft stage, `finecot batch collect|import|cancel`

An flock dies with its process, so a SIGKILLed run never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from curation.core.stage import StageStopped


class RunBusy(StageStopped):
    """Another finecot process holds the run's draft lock."""


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """Hold the run's draft lock for the block, or raise RunBusy naming the holder's pid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise RunBusy(
                f"another `finecot draft` (pid {handle.read().strip() or '?'}) is working on "
                f"{path.parent}; wait for it to finish or stop it, then rerun") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        yield
