"""The teacher client: OpenAI-compatible chat completions, as fast as the endpoint allows.

Built on `openai.AsyncOpenAI` (any base URL; key from the environment), which owns the
configuration: base URL, auth and default headers, and, with transport "sdk", the HTTP call
itself (`client.post(..., cast_to=httpx2.Response)`). The default transport "aiohttp" sends
the same pre-built body with those same headers over one aiohttp session: at high
concurrency the client's CPU per request sets the pace, and the SDK's per-call work (option
copies, request building) about doubles it (bench/draft_throughput.py measures both).

What it does around each request:
- 401/403/404 (a wrong key, URL or model) set `refused`: the caller stops sending; so do
  the same client error (400, 405, 413, 422: a model name the server does not serve, an
  image over its limit) on `REFUSE_AFTER` requests in a row, and a connection error that
  outlives its retries before any endpoint has ever answered;
- a concurrency limit (a semaphore held only while a request is on the wire, not while
  it waits to be retried) and RPM/TPM token buckets that adapt to 429 + Retry-After;
- retries with exponential backoff and jitter for 429, 408/409/5xx, timeouts, connection
  errors and malformed bodies; after max attempts a failed Completion carries the reason
  (nothing is raised into the caller's loop); other 4xx fail at once;
- the answer read as real servers send it (curation/teacher/answers.py: reasoning outside
  `content`, usage, truncation); usage counted once when a server sums prompt_tokens over
  the `n` choices (learned from one request split in two, see `sample`);
- several base URLs: each request goes to the least busy healthy one;
- `n` samples in one request where the server honours `n`; a server that answers with
  fewer choices is detected and the missing samples go as separate requests.

API keys stay in memory: error texts are scrubbed of the key before anyone sees them.

    client = TeacherClient(recipe.teacher)
    async with client:
        await client.sample(messages, [0, 1, 2], on_result=lambda index, completion: ...)
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import openai

from curation.core.config import TeacherConfig
from curation.teacher.answers import Completion, parse_completion, server_message, split_usage
from curation.teacher.ratelimit import RateLimits

log = logging.getLogger(__name__)

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
REFUSED_STATUS = {401, 403, 404}  # wrong key, no access, wrong URL or model: stop, do not burn
# Client errors that mean a misconfiguration when every request gets the same one (real
# servers answer a wrong model name with 400: LiteLLM "Invalid model name passed in model=",
# transformers serve "Server is pinned to ...").
CLIENT_ERROR_STATUS = {400, 405, 413, 422}
REFUSE_AFTER = 3  # identical client errors in a row, with no success between, stop the run
_DATA_URL = re.compile(r'"data:[^"]*"')


# -- endpoints --------------------------------------------------------------------------------


def public_url(url: str) -> str:
    """The URL without credentials or query (what may be logged and recorded).

    >>> public_url("https://user:secret@api.example.com/v1?key=abc")
    'https://api.example.com/v1'
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


class Endpoint:
    """One base URL: its SDK client, headers, requests in flight and recent failures."""

    def __init__(self, base_url: str, api_key: str, timeout_s: float, sdk_transport: bool):
        # transport "sdk" sends through the SDK, on its aiohttp backend (the faster of its two)
        http_client = openai.DefaultAioHttpClient() if sdk_transport else None
        self.client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0,
            http_client=http_client,
        )
        self.url = str(self.client.base_url).rstrip("/") + "/chat/completions"
        self.label = public_url(base_url)
        headers = {**self.client.default_headers, **self.client.auth_headers}
        self.headers = {k: v for k, v in headers.items() if isinstance(v, str)}
        self.inflight = 0
        self.failures = 0


def resolve_api_key(config: TeacherConfig) -> str:
    """The key from the variable named by teacher.api_key_env (default OPENAI_API_KEY), and
    only from it: a key meant for one provider must not travel to another's URL. "EMPTY"
    when unset (local servers need none)."""
    key = os.environ.get(config.api_key_env)
    if not key:
        log.warning("no API key in $%s: sending none (fine for local servers)", config.api_key_env)
        return "EMPTY"
    return key


@dataclass
class _Reply:
    status: int = 0
    raw: bytes = b""
    retry_after: float | None = None
    error: str | None = None  # transport-level failure (timeout, connection)


def retry_after_s(headers: Any) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI's, precise) or `Retry-After` (seconds
    or an HTTP date), or their `llm_provider-` forms (LiteLLM passes the upstream's hints
    under that prefix); None when none is there.

    >>> retry_after_s({"llm_provider-retry-after-ms": "1500"})
    1.5
    >>> retry_after_s({"Retry-After": "2"}), retry_after_s({})
    (2.0, None)
    """
    for name in ("retry-after-ms", "llm_provider-retry-after-ms"):
        millis = headers.get(name)
        if millis:
            try:
                return max(0.0, float(millis) / 1000)
            except ValueError:
                pass
    value = headers.get("Retry-After") or headers.get("llm_provider-retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


class TeacherClient:
    """Sends chat completions for the drafting loop. Use as `async with TeacherClient(cfg):`."""

    def __init__(self, config: TeacherConfig, api_key: str | None = None):
        if not config.base_urls:
            raise ValueError("teacher.base_urls is empty: list at least one OpenAI-compatible URL")
        self.config = config
        self._key = api_key if api_key is not None else resolve_api_key(config)
        sdk = config.transport == "sdk"
        self.endpoints = [Endpoint(u, self._key, config.timeout_s, sdk) for u in config.base_urls]
        self.limits = RateLimits(config.rpm, config.tpm)
        self._slots = asyncio.Semaphore(config.concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_s)
        self._turn = 0
        self.n_supported: bool | None = None if config.use_n else False
        self.counts: Counter[str] = Counter()  # sent, retried, failed, reasons...
        self.waited_s = 0.0  # time spent backing off before retries
        self.refused: str | None = None  # set on 401/403/404: the caller should stop sending
        self._answered = False  # any endpoint ever answered (else a connection error is fatal)
        self._same_error: tuple[str, int] = ("", 0)  # client error text, requests in a row
        # Does the server sum prompt_tokens over the n choices? Learned once (see sample).
        self.usage_summed: bool | None = None if self.n_supported is not False else False
        self._probe: asyncio.Future | None = None
        self._reasoning_seen: str | None = None
        self._params = sampling_params(config)

    async def __aenter__(self) -> TeacherClient:
        if self.config.transport == "aiohttp":
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
                timeout=self._timeout,
            )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        for endpoint in self.endpoints:
            await endpoint.client.close()

    # -- the public call ----------------------------------------------------------------------

    async def sample(
        self,
        messages: Sequence[dict] | str,
        indices: Sequence[int],
        on_result: Callable[[int, Completion], None],
        gate: Callable[[], bool] | None = None,
    ) -> int:
        """Draw one completion per sample index; `on_result(index, completion)` as each lands.

        `messages`: the chat messages, or their JSON text (the drafting loop builds it once).

        `gate()` returning True means "send nothing new" (budget, interrupt): it is checked
        just before each first attempt. Returns how many indices got a result.
        """
        encoded = messages if isinstance(messages, str) else json.dumps(
            list(messages), ensure_ascii=False, separators=(",", ":"))
        estimate = self._estimate_tokens(encoded, len(indices)) if self.limits.tokens else 0.0
        done = 0
        rest = list(indices)
        if len(rest) > 2 and self.usage_summed is None and self.n_supported is not False:
            if self._probe is None:
                return await self._probe_usage(encoded, rest, estimate, on_result, gate)
            await asyncio.shield(self._probe)  # a few requests wait one round trip, once
        if len(rest) > 1 and self.n_supported is not False:
            completions = await self._chat(encoded, len(rest), rest[0], estimate, gate)
            if completions is None:
                return 0
            for index, completion in zip(rest, completions, strict=False):  # extra choices: ignored
                on_result(index, completion)
            done = min(len(completions), len(rest))
            if completions[0].status != "failed":
                if done < len(rest) and self.n_supported is not False:
                    log.info("the teacher answered n=%d with %d choice(s): sending samples "
                             "separately from now on", len(rest), done)
                self.n_supported = done >= len(rest)
            rest = rest[done:]
        if len(rest) == 1:  # the common case: no task, no gather
            done += await self._one(encoded, rest[0], estimate, on_result, gate)
        elif rest:
            single = estimate / max(1, len(indices))
            outcomes = await asyncio.gather(
                *(self._one(encoded, index, single, on_result, gate) for index in rest)
            )
            done += sum(outcomes)
        return done

    async def _probe_usage(self, encoded: str, indices: list[int], estimate: float,
                           on_result: Callable[[int, Completion], None],
                           gate: Callable[[], bool] | None) -> int:
        """The first request of 3+ samples goes as 1 + (n - 1): the same messages' prompt
        tokens, reported once for one choice and once for n - 1 choices, tell whether the
        server sums prompt_tokens over the choices. No extra sample is paid for."""
        self._probe = asyncio.get_running_loop().create_future()
        single: list[Completion] = []
        try:
            single_estimate = estimate / len(indices)

            def first(index: int, completion: Completion) -> None:
                single.append(completion)
                on_result(index, completion)

            done = await self._one(encoded, indices[0], single_estimate, first, gate)
            many = await self._chat(encoded, len(indices) - 1, indices[1], estimate, gate,
                                    learn_usage=single[0].prompt_tokens if single else None)
            if many is None:
                return done
            for index, completion in zip(indices[1:], many, strict=False):
                on_result(index, completion)
            done += min(len(many), len(indices) - 1)
            if many[0].status != "failed":
                self.n_supported = len(many) >= len(indices) - 1
            missing = indices[1 + len(many):] if many[0].status != "failed" else []
            for index in missing:  # the server ignored n: the rest one by one
                done += await self._one(encoded, index, single_estimate, on_result, gate)
            return done
        finally:
            if self.usage_summed is None and (self.n_supported is False or self.refused):
                self.usage_summed = False  # nothing to learn: n is not used
            self._probe.set_result(None)
            if self.usage_summed is None:
                self._probe = None  # the probe failed: the next request of 3+ samples tries

    async def _one(self, encoded: str, index: int, estimate: float,
                   on_result: Callable[[int, Completion], None], gate: Callable[[], bool] | None) -> int:
        completions = await self._chat(encoded, 1, index, estimate, gate)
        if completions is None:
            return 0
        on_result(index, completions[0])
        return 1

    # -- one logical request, with retries ----------------------------------------------------

    async def _chat(self, encoded: str, n: int, first_index: int, estimate: float,
                    gate: Callable[[], bool] | None,
                    learn_usage: int | None = None) -> list[Completion] | None:
        payload = chat_body(self._params, self.config.seed, encoded, n, first_index).encode()
        cfg = self.config
        attempts, error, started = 0, "not sent", time.monotonic()
        while attempts < cfg.max_attempts:
            async with self._slots:
                if attempts == 0 and gate is not None and gate():
                    return None
                await self.limits.acquire(estimate)
                endpoint = self._pick()
                attempts += 1
                self.counts["sent"] += 1
                began = time.monotonic()
                reply = await self._send(endpoint, payload)
                latency = time.monotonic() - began
            completions, error, retry = self._interpret(reply, encoded)
            if completions is not None:
                self._answered = True
                self._same_error = ("", 0)
                endpoint.failures = 0
                self.limits.on_success()
                self._settle_usage(completions, learn_usage)
                used = sum(c.prompt_tokens + c.completion_tokens for c in completions)
                self.limits.settle(estimate, used)
                for c in completions:
                    c.latency_s, c.attempts, c.endpoint = latency, attempts, endpoint.label
                    c.shared = len(completions)
                return completions
            endpoint.failures += 1
            self.counts[f"error {error.split(':')[0]}"] += 1
            if reply.status == 429:
                self.limits.on_throttle(reply.retry_after)
            if reply.status in REFUSED_STATUS and self.refused is None:
                self.refused = self._scrub(error)  # every request would fail the same way
            elif reply.status in CLIENT_ERROR_STATUS:
                self._count_client_error(error)
            if not retry:
                break
            if attempts < cfg.max_attempts:
                self.counts["retried"] += 1
                wait = self._backoff(attempts, reply.retry_after)
                self.waited_s += wait
                log.debug("retry %d/%d in %.1f s after %s", attempts + 1, cfg.max_attempts,
                          wait, self._scrub(error)[:200])
                await asyncio.sleep(wait)
        self.counts["failed"] += 1
        error, elapsed = self._scrub(error), time.monotonic() - started
        if (error.startswith("connection:") and not self._answered and self.refused is None
                and all(e.failures for e in self.endpoints)):
            # No endpoint has ever answered and every one failed: no server is there (a wrong
            # URL or port, a server not started). Every other request would fail the same way.
            urls = ", ".join(e.url for e in self.endpoints)
            self.refused = f"nothing answers at {urls}: {error}"
        return [Completion(status="failed", error=error, attempts=attempts, latency_s=elapsed,
                           shared=n) for _ in range(n)]

    def _count_client_error(self, error: str) -> None:
        """The same client error on REFUSE_AFTER requests in a row (no success between) is
        a misconfiguration, not a bad item: stop with the server's words."""
        text = self._scrub(error)
        same, count = self._same_error
        count = count + 1 if text == same else 1
        self._same_error = (text, count)
        if count >= REFUSE_AFTER and self.refused is None:
            self.refused = f"{count} requests in a row answered {text}"

    def _settle_usage(self, completions: list[Completion], learn_usage: int | None) -> None:
        """Correct usage for a server that sums prompt_tokens over the choices; log, once,
        where the server puts its reasoning."""
        count = len(completions)
        if learn_usage is not None and count > 1 and self.usage_summed is None and learn_usage > 0:
            reported = sum(c.prompt_tokens for c in completions)
            self.usage_summed = reported >= 1.5 * learn_usage
            if self.usage_summed:
                log.warning("the teacher reports prompt_tokens summed over the n choices (%d "
                            "for %d choices, %d for one): counting them once", reported,
                            count, learn_usage)
        if self.usage_summed and count > 1 and not completions[0].usage_estimated:
            once = sum(c.prompt_tokens for c in completions) // count
            split_usage(once, [1] * count, completions, "prompt_tokens")
        field = completions[0].reasoning_field
        if field and self._reasoning_seen is None:
            self._reasoning_seen = field
            log.info("the teacher returns its reasoning in message.%s: kept in the ledger and "
                     "put back as <think>...</think> before the content", field)

    def _backoff(self, attempts: int, retry_after: float | None) -> float:
        ceiling = min(self.config.backoff_max_s, self.config.backoff_s * 2 ** (attempts - 1))
        delay = ceiling / 2 + random.uniform(0, ceiling / 2)  # "equal jitter"
        return max(delay, retry_after or 0.0)

    def _pick(self) -> Endpoint:
        """The endpoint with the least work in flight, penalising recent failures."""
        if len(self.endpoints) == 1:
            return self.endpoints[0]
        self._turn += 1
        count = len(self.endpoints)
        order = [self.endpoints[(self._turn + i) % count] for i in range(count)]
        return min(order, key=lambda e: e.inflight + 4 * min(e.failures, 16))

    async def _send(self, endpoint: Endpoint, payload: bytes) -> _Reply:
        endpoint.inflight += 1
        try:
            if self._session is not None:
                async with self._session.post(endpoint.url, data=payload,
                                              headers=endpoint.headers) as response:
                    raw = await response.read()
                    return _Reply(response.status, raw, retry_after_s(response.headers))
            return await self._send_sdk(endpoint, payload)
        except (TimeoutError, asyncio.TimeoutError):  # distinct classes before 3.11
            return _Reply(error="timeout: no answer within teacher.timeout_s")
        except (aiohttp.ClientError, OSError) as err:
            return _Reply(error=f"connection: {type(err).__name__}")
        finally:
            endpoint.inflight -= 1

    async def _send_sdk(self, endpoint: Endpoint, payload: bytes) -> _Reply:
        import httpx2  # the SDK's HTTP layer; imported here, used by the sdk transport only

        try:
            response = await endpoint.client.post(
                "/chat/completions", cast_to=httpx2.Response, content=payload,
                options={"max_retries": 0},
            )
            return _Reply(response.status_code, response.content)
        except openai.APIStatusError as err:
            return _Reply(err.status_code, err.response.content, retry_after_s(err.response.headers))
        except openai.APITimeoutError:
            return _Reply(error="timeout: no answer within teacher.timeout_s")
        except openai.APIConnectionError as err:
            return _Reply(error=f"connection: {type(err.__cause__ or err).__name__}")

    def _interpret(self, reply: _Reply, encoded: str) -> tuple[list[Completion] | None, str, bool]:
        """(completions, error, retryable): completions is None when the attempt failed."""
        if reply.error:
            return None, reply.error, True
        if reply.status != 200:
            return (None, f"http {reply.status}: {server_message(reply.raw)}",
                    reply.status in RETRYABLE_STATUS)
        try:
            return parse_completion(json.loads(reply.raw), self.config.max_tokens,
                                  lambda: self._estimate_tokens(encoded, 0)), "", False
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            return None, f"malformed: {err}", True

    def _scrub(self, text: str) -> str:
        if self._key and self._key != "EMPTY" and len(self._key) >= 4:
            text = text.replace(self._key, "***")
        return text

    def _estimate_tokens(self, encoded: str, n: int) -> float:
        return estimate_tokens(self.config, encoded, n)


def sampling_params(config: TeacherConfig) -> dict[str, Any]:
    """The body fields every request of this teacher carries besides messages, seed and n."""
    return {"model": config.model, "temperature": config.temperature, "top_p": config.top_p,
            "max_tokens": config.max_tokens}


def chat_body(params: dict[str, Any], seed: int | None, encoded: str, n: int = 1,
              first_index: int = 0) -> str:
    """The chat.completions request body: `params` (sampling_params), the seed of the first
    sample (seed + first_index), n, and the messages' JSON text. The same text goes online
    and into a batch file's `body` (curation/teacher/batch_files.py), so a server answers
    both alike.

    >>> chat_body({"model": "m"}, 0, '[{"role":"user","content":"hi"}]', 2, 3)
    '{"model":"m","seed":3,"n":2,"messages":[{"role":"user","content":"hi"}]}'
    """
    params = dict(params)
    if seed is not None:
        params["seed"] = seed + first_index
    if n > 1:
        params["n"] = n
    head = json.dumps(params, separators=(",", ":"))
    return f'{head[:-1]},"messages":{encoded}}}'


def estimate_tokens(config: TeacherConfig, encoded: str, n: int) -> float:
    """Rough tokens of one request (messages JSON `encoded`, n samples) for the TPM bucket
    and batch budgets (settled with the real usage later); with n = 0, of its prompt alone
    (the usage of a server that reports none)."""
    images = len(_DATA_URL.findall(encoded))
    text = len(_DATA_URL.sub('""', encoded))
    image_tokens = config.image_max_pixels / 784 + 85
    return text / 4 + images * image_tokens + config.max_tokens * n


