"""Rate limits for the teacher client: token buckets for requests and tokens per minute.

A bucket refills continuously at `rate` per second up to `capacity`. `acquire(n)` waits until
n units are there. The buckets adapt: a 429 pauses everyone until its `Retry-After` and cuts
the rate (multiplicative decrease); each success wins a little of it back (additive increase),
so a run settles just under whatever limit the endpoint really enforces.

    >>> import asyncio
    >>> limits = RateLimits(rpm=600, tpm=None)
    >>> asyncio.run(limits.acquire(tokens=100))   # a full bucket: no wait
    0.0
"""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """Continuous-refill token bucket. `amount` may exceed capacity (it then waits for a full
    bucket and goes into debt), so one huge request can never block forever."""

    def __init__(self, per_minute: float, burst_seconds: float = 1.0):
        self.nominal = per_minute / 60.0
        self.rate = self.nominal
        self.capacity = max(1.0, self.nominal * burst_seconds)
        self.level = self.capacity
        self._stamp = time.monotonic()

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_time(self, amount: float) -> float:
        """Seconds until `amount` can be taken (0: now); takes it when 0."""
        self._refill(time.monotonic())
        need = min(amount, self.capacity)
        if self.level >= need:
            self.level -= amount
            return 0.0
        return (need - self.level) / self.rate

    def settle(self, delta: float) -> None:
        """Correct an estimate after the fact (positive: more was used than taken)."""
        self.level -= delta

    def slow_down(self, factor: float = 0.7, floor: float = 0.05) -> None:
        self.rate = max(self.nominal * floor, self.rate * factor)

    def recover(self, step: float = 0.02) -> None:
        if self.rate < self.nominal:
            self.rate = min(self.nominal, self.rate + self.nominal * step)


class RateLimits:
    """Requests-per-minute and tokens-per-minute buckets plus a shared 429 pause."""

    def __init__(self, rpm: float | None, tpm: float | None):
        self.requests = TokenBucket(rpm) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None
        self.paused_until = 0.0
        self.throttled = 0  # 429s seen

    async def acquire(self, tokens: float = 0.0) -> float:
        """Wait for a request slot and `tokens` (an estimate); return the seconds waited."""
        waited = 0.0
        while True:
            delay = self.paused_until - time.monotonic()
            if delay <= 0 and self.requests is not None:
                delay = self.requests.wait_time(1.0)
            if delay <= 0 and self.tokens is not None:
                delay = self.tokens.wait_time(tokens)
                if delay > 0 and self.requests is not None:
                    self.requests.settle(-1.0)  # give the request slot back while waiting
            if delay <= 0:
                return waited
            await asyncio.sleep(delay)
            waited += delay

    def settle(self, estimated: float, actual: float) -> None:
        if self.tokens is not None and actual:
            self.tokens.settle(actual - estimated)

    def on_success(self) -> None:
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.recover()

    def on_throttle(self, retry_after: float | None) -> None:
        """A 429: everyone waits out Retry-After (or a second), and the buckets slow down."""
        self.throttled += 1
        pause = retry_after if retry_after is not None else 1.0
        self.paused_until = max(self.paused_until, time.monotonic() + pause)
        for bucket in (self.requests, self.tokens):
            if bucket is not None:
                bucket.slow_down()
