"""What a draft run tells: the live counters a display draws (DraftProgress) and the final
report (DraftReport, also draft_report.json) with its one-line summary.

    report.summary()   # '93 of 97 drafts usable; failed 0, empty 0, truncated 4; 2 retries, 1.0 s waiting'
"""

from __future__ import annotations

from dataclasses import dataclass, field


class DraftProgress:
    """Counters the stage keeps up to date; the CLI's rich bar (curation/draft/cli.py) shows
    them. `usable` counts answers the filters can read (not empty, not truncated)."""

    def __init__(self) -> None:
        self.total = self.usable = self.truncated = self.empty = self.failed = 0
        self.cached = self.tokens = 0
        self.cost_usd = 0.0

    @property
    def answered(self) -> int:
        return self.usable + self.truncated + self.empty

    def add_total(self, count: int) -> None:
        self.total += count
        self.refresh()

    def on_cached(self, count: int) -> None:
        self.cached += count
        self.refresh()

    def on_result(self, status: str, tokens: int, cost: float) -> None:
        if status == "failed":
            self.failed += 1
        elif status == "length":
            self.truncated += 1
        elif status == "empty":
            self.empty += 1
        else:
            self.usable += 1
        self.tokens += tokens
        self.cost_usd += cost
        self.refresh()

    def task(self, name: str, done: int, total: int) -> None:
        """Hook for displays: a named piece of batch work (building files, submitting, one
        batch's lines done)."""

    def refresh(self) -> None:
        """Hook for displays."""

    def close(self) -> None:
        """Hook for displays."""


@dataclass
class DraftReport:
    drafts: int = 0
    sent: int = 0
    cached: int = 0
    failed: int = 0
    not_sent: int = 0
    rounds: int = 0
    cost_usd: float = 0.0
    tokens: int = 0
    judged: bool = False  # verdicts are needed only by the quota loop and blind-then-hinted
    accepted_per_class: dict[str, int] = field(default_factory=dict)
    short_classes: dict[str, int] = field(default_factory=dict)
    stopped: str | None = None
    usable: int = 0  # drafts the filters can read: answered, not empty, not truncated
    truncated: int = 0
    empty: int = 0
    failed_reasons: dict[str, int] = field(default_factory=dict)
    usage_estimated: int = 0  # drafts whose server reported no usage: tokens estimated
    retries: int = 0  # HTTP retries this run
    waited_s: float = 0.0  # time spent backing off before them
    batch: dict[str, int] = field(default_factory=dict)  # batch mode: lines built, answered...

    def summary(self) -> str:
        """One line: usable, failed by reason, empty, truncated, retries."""
        reasons = ", ".join(f"{r} {n}" for r, n in self.failed_reasons.items())
        return (f"{self.usable} of {self.drafts} drafts usable; failed {self.failed}"
                f"{f' ({reasons})' if reasons else ''}, empty {self.empty}, truncated "
                f"{self.truncated}; {self.retries} retries, {self.waited_s:.1f} s waiting")


# -- the stage -------------------------------------------------------------------------------


def failure_reason(error: str | None) -> str:
    """The kind of a failure, for the summary: 'http 400', 'timeout', 'image'...

    >>> failure_reason("http 400: Invalid model name"), failure_reason("timeout: no answer")
    ('http 400', 'timeout')
    """
    return (error or "unknown").split(":", 1)[0].strip() or "unknown"
