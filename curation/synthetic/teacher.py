"""The scripted teacher: an aiohttp server speaking the OpenAI Chat Completions API.

It answers from the pixels it is sent (read.py), never from the prompt, except when the
prompt states the gold label (`the correct sub-category is "NAME"`): then it rationalises
toward NAME, as real teachers do. Its mistakes and faults are set by `Behaviour` flags and
are reproducible: a request with a `seed` gets the same answer every time.

    finecot synthetic teacher --port 8000 --perception-error-rate 0.1 --rate-429 0.05

    with TeacherServer(perception_error_rate=0.1) as server:   # in-process, for tests
        client = openai.OpenAI(base_url=server.base_url, api_key="none")
        server.stats()["counts"]

Endpoints: GET /v1/models (the behaviour flags ride along), POST /v1/chat/completions
(image parts as base64 data URLs or file:// URLs; n, max_tokens, temperature, seed), the
Files and Batches APIs (/v1/files, /v1/batches: batches.py, answered line by line by
`batch_answer` with the same flags), GET /stats (counts, batch counters and a bounded
request log), POST /stats/reset, GET /health.

Every response carries `finecot_truth`, one entry per choice: what the teacher perceived,
what the pixels really show, and which mistake it made, so tests can measure filters.
Usage: prompt_tokens = words and punctuation of the text parts + per image
ceil(w/28) * ceil(h/28) + 2 (Qwen2.5-VL's merged patches); completion_tokens likewise.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import re
import socket
import struct
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict

from aiohttp import web

from curation.synthetic.batches import BatchService
from curation.synthetic.script import BadRequest, Behaviour, Teacher, load_world

__all__ = ["Behaviour", "TeacherServer", "load_world", "make_app", "serve"]

log = logging.getLogger(__name__)


def _error(status: int, message: str, kind: str, headers: dict | None = None) -> web.Response:
    body = {"error": {"message": message, "type": kind, "code": str(status)}}
    return web.json_response(body, status=status, headers=headers)


def _reset(request: web.Request) -> None:
    """Close the connection with a TCP RST (SO_LINGER 0), like a crashed proxy."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _wait_headers(behaviour: Behaviour) -> dict[str, str]:
    """The wait hint of a 429/503: Retry-After and retry-after-ms, or only the header the
    flags name (LiteLLM forwards an upstream's as llm_provider-retry-after[-ms])."""
    seconds = str(max(1, math.ceil(behaviour.retry_after)))
    millis = str(int(behaviour.retry_after * 1000))
    name = behaviour.retry_after_header
    if name:
        return {name: millis if name.lower().endswith("-ms") else seconds}
    return {"Retry-After": seconds, "retry-after-ms": millis}


_THINK = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)


def as_served(result: dict, behaviour: Behaviour) -> dict:
    """The response body as the flagged server would send it: reasoning moved out of
    `content` (as LiteLLM does: the leading `<think>` block goes to `reasoning_content`),
    truncation reported as "stop", prompt_tokens summed over the choices, or no usage."""
    for choice in result["choices"]:
        message = choice["message"]
        if behaviour.reasoning_field and message.get("content"):
            found = _THINK.match(message["content"])
            if found:
                message[behaviour.reasoning_field] = found.group(1)
                message["content"] = message["content"][found.end():]
        if behaviour.finish_reason_always_stop and choice["finish_reason"] == "length":
            choice["finish_reason"] = "stop"
    usage = result["usage"]
    if behaviour.usage_summed_over_n:
        usage["prompt_tokens"] *= len(result["choices"])
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if behaviour.no_usage:
        del result["usage"]
    return result


def batch_answer(teacher: Teacher, behaviour: Behaviour, body: bytes) -> tuple[dict, str]:
    """The `response` and `error` of one batch output line for a request body, and its
    outcome: the same body gets the same answer, fault and flags as it would online (a
    fault becomes the line's status_code; a hang, OpenAI's `request_timeout` line error)."""
    key = hashlib.blake2b(body, digest_size=16).hexdigest()
    occurrence = teacher.attempt(key)
    rng = random.Random(f"{key}:{occurrence}:server")
    fault = behaviour.fault(rng.random())
    request_id = f"req_{key[:24]}"

    def failed(status: int, message: str, kind: str, outcome: str) -> tuple[dict, str]:
        error = {"error": {"message": message, "type": kind, "code": str(status)}}
        return {"response": {"status_code": status, "request_id": request_id, "body": error},
                "error": None}, outcome

    outcome = fault or "ok"
    if fault in ("429", "503", "500", "reset"):
        status = 500 if fault == "reset" else int(fault)
        result = failed(status, f"scripted {fault} on a batch line", "server_error", outcome)
    elif fault == "hang":
        result = {"response": None, "error": {"code": "request_timeout", "message":
                  "The request timed out (scripted)."}}, outcome
    else:
        try:
            req = json.loads(body)
            if not isinstance(req, dict):
                raise BadRequest("the body must be a JSON object")
            pinned = behaviour.error_400_model
            if pinned is not None and req.get("model") != pinned:
                raise BadRequest(f"Invalid model name passed in model={req.get('model')}.")
            answer = teacher.complete(req, key, occurrence)
        except (BadRequest, ValueError) as err:
            result = failed(400, str(err), "invalid_request_error", "bad_request")
        else:
            if any(c["finish_reason"] == "length" for c in answer["choices"]) and not fault:
                outcome = "length"
            result = {"response": {"status_code": 200, "request_id": request_id,
                                   "body": as_served(answer, behaviour)}, "error": None}, outcome
    teacher.outcomes[result[1]] = teacher.outcomes.get(result[1], 0) + 1
    teacher.log.append({"t": time.time(), "key": key, "attempt": occurrence, "batch": True,
                        "outcome": result[1]})
    return result


TEACHER = web.AppKey("teacher", Teacher)
BATCHES = web.AppKey("batches", BatchService)


def make_app(behaviour: Behaviour) -> web.Application:
    """The aiohttp application of a scripted teacher with these flags."""
    app = web.Application(client_max_size=256 * 1024 * 1024)
    teacher = Teacher(behaviour)
    app[TEACHER] = teacher
    limit = asyncio.Semaphore(behaviour.max_concurrency) if behaviour.max_concurrency else None

    async def chat(request: web.Request) -> web.StreamResponse:
        t0 = time.perf_counter()
        body = await request.read()
        key = hashlib.blake2b(body, digest_size=16).hexdigest()
        teacher.in_flight += 1
        teacher.counts["requests"] += 1
        teacher.counts["max_in_flight"] = max(teacher.counts["max_in_flight"], teacher.in_flight)
        occurrence = teacher.attempt(key)
        rng = random.Random(f"{key}:{occurrence}:server")
        fault = behaviour.fault(rng.random())
        entry = {"t": time.time(), "key": key, "attempt": occurrence, "outcome": fault or "ok"}
        try:
            wait = _wait_headers(behaviour)
            if fault == "429":
                return _error(429, "rate limit reached (scripted)", "rate_limit_error", wait)
            if fault == "503":
                return _error(503, "server overloaded (scripted)", "server_error", wait)
            try:
                req = json.loads(body)
                if not isinstance(req, dict):
                    raise ValueError("the body must be a JSON object")
            except ValueError as err:
                entry["outcome"] = "bad_request"
                return _error(400, f"invalid JSON body: {err}", "invalid_request_error")
            entry.update(model=req.get("model"), n=req.get("n"), seed=req.get("seed"))
            pinned = behaviour.error_400_model
            if pinned is not None and req.get("model") != pinned:
                entry["outcome"] = "bad_request"
                return _error(400, f"Invalid model name passed in model={req.get('model')}. "
                              "Call `/v1/models` to view available models for your key.",
                              "invalid_request_error")
            if limit is not None:
                await limit.acquire()
            teacher.active += 1
            teacher.counts["max_active"] = max(teacher.counts["max_active"], teacher.active)
            try:
                delay = behaviour.delay(rng)
                if delay > 0:
                    await asyncio.sleep(delay)
                if fault == "hang":
                    await asyncio.sleep(behaviour.hang_seconds)
                    return _error(504, "hung request gave up (scripted)", "server_error")
                if fault == "reset":
                    _reset(request)
                    return web.Response(status=500)  # never sent: the socket is gone
                if fault == "500":
                    return _error(500, "internal error (scripted)", "server_error")
                try:
                    result = teacher.complete(req, key, occurrence)
                except BadRequest as err:
                    entry["outcome"] = "bad_request"
                    return _error(400, str(err), "invalid_request_error")
            finally:
                teacher.active -= 1
                if limit is not None:
                    limit.release()
            entry["truth"] = result["finecot_truth"]
            entry["usage"] = result["usage"]
            if fault == "malformed":
                return web.Response(status=200, content_type="application/json",
                                    text=json.dumps(result)[: 60] + ' "truncated": ')
            if any(c["finish_reason"] == "length" for c in result["choices"]):
                entry["outcome"] = "length"
            return web.Response(status=200, content_type="application/json",
                                text=json.dumps(as_served(result, behaviour)))
        finally:
            teacher.in_flight -= 1
            entry["latency_s"] = round(time.perf_counter() - t0, 6)
            teacher.outcomes[entry["outcome"]] = teacher.outcomes.get(entry["outcome"], 0) + 1
            teacher.log.append(entry)

    card = {"id": behaviour.model, "object": "model", "created": 0, "owned_by": "finecot",
            "finecot_behaviour": asdict(behaviour)}

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [card]})

    async def model(request: web.Request) -> web.Response:
        return web.json_response({**card, "id": request.match_info["name"]})

    async def stats(request: web.Request) -> web.Response:
        try:
            last = int(request.query.get("log", behaviour.log_size))
        except ValueError:
            return _error(400, "log must be an integer (how many log entries to return)",
                          "invalid_request_error")
        entries = list(teacher.log)[-last:] if last > 0 else []
        return web.json_response({"behaviour": asdict(behaviour),
                                  "counts": {**teacher.counts, "in_flight": teacher.in_flight},
                                  "outcomes": dict(teacher.outcomes), "log": entries,
                                  "batch": batches.stats()})

    async def reset(request: web.Request) -> web.Response:
        teacher.reset()
        batches.reset()
        return web.json_response({"reset": True})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    batches = BatchService(behaviour, lambda body: batch_answer(teacher, behaviour, body))
    app[BATCHES] = batches
    batches.routes(app)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{name:.+}", model)
    app.router.add_get("/stats", stats)
    app.router.add_post("/stats/reset", reset)
    app.router.add_get("/health", health)
    return app


async def _start(behaviour: Behaviour, host: str, port: int) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(make_app(behaviour), access_log=None, handler_cancellation=True,
                           shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # port 0: the OS picked a free one
    return runner, bound


def serve(behaviour: Behaviour, host: str = "127.0.0.1", port: int = 8000,
          on_ready: Callable[[int], None] | None = None) -> None:
    """Run the teacher in the foreground until interrupted (the CLI command); `on_ready`
    gets the bound port (the OS picks one for port 0)."""

    async def main() -> None:
        runner, bound = await _start(behaviour, host, port)
        log.info("scripted teacher on http://%s:%d/v1 (model %s)", host, bound, behaviour.model)
        if on_ready is not None:
            on_ready(bound)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())


class TeacherServer:
    """A scripted teacher in a background thread with its own event loop (tests, benchmarks).

    `TeacherServer(**flags).start()` binds a free port on 127.0.0.1; use it as a context
    manager or call `.stop()`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **flags):
        self.host, self.port, self.flags = host, port, flags
        self.behaviour = Behaviour(**flags)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> TeacherServer:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._runner, self.port = self._loop.run_until_complete(
                    _start(self.behaviour, self.host, self.port))
            except BaseException as err:  # report bind errors to the caller
                failure.append(err)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            self._loop.close()

        self._thread = threading.Thread(target=run, name="scripted-teacher", daemon=True)
        self._thread.start()
        ready.wait(30)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = self._thread = None

    def stats(self, log: bool = True) -> dict:
        """GET /stats: counts, outcomes, behaviour and (optionally) the request log."""
        url = f"{self.root_url}/stats" + ("" if log else "?log=0")
        with urllib.request.urlopen(url, timeout=30) as resp:
            return json.loads(resp.read())

    def reset_stats(self) -> None:
        req = urllib.request.Request(f"{self.root_url}/stats/reset", method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()

    def __enter__(self) -> TeacherServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
