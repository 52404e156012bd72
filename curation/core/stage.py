"""What every stage shares: how it reports progress, and how it stops early on purpose.

The library never draws. A stage calls `progress(task, done, total)` as it works; the command
line (curation/core/cli.py) turns those calls into rich bars, a notebook may print them, and
None shows nothing. The draft stage reports richer counters (curation/draft/stage.py
`DraftProgress`), built on the same idea.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]  # progress(task, done, total)


class StageStopped(RuntimeError):
    """A stage stopped early on purpose (a budget, an interrupt): its message says what to
    do; rerunning the same command resumes. `finecot run` prints it and exits with code 3."""
