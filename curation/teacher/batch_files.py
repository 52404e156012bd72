"""Batch files: the JSONL that OpenAI's Batch API, LiteLLM's batches and `vllm run-batch` read,
and the result lines they write back, written and read one line at a time.

    writer = BatchFileWriter(folder, max_lines=50_000, max_bytes=200 << 20, on_file=record)
    writer.add(key, body_text, info)       # `record(BuiltFile)` when a file is full
    writer.close()                         # ... and for the last one
    for result in read_results(path):      # one ResultLine per line, never the whole file
        outcome = interpret(result, model="gpt-4o", max_tokens=1024, prompt_estimate=900.0)

The formats reproduced (each line one JSON object):

- input, OpenAI's "request input object" (platform.openai.com/docs/api-reference/batch/
  request-input; vLLM's `BatchRequestInput`, entrypoints/openai/protocol.py):
  `{"custom_id": KEY, "method": "POST", "url": "/v1/chat/completions", "body": {...}}`.
  The custom_id is finecot's request key; the body is the exact text the online client
  sends (curation/teacher/client.py `chat_body`), images inlined as data URLs.
- output and error files, OpenAI's "request output object" (its `BatchRequestOutput`):
  `{"id", "custom_id", "response": {"status_code", "request_id", "body"}, "error"}`, with
  `body` a chat.completion and `error` null on success; per-line errors as
  `{"code", "message"}` (`batch_expired`: not run before the completion window ended,
  `batch_cancelled`: the batch was cancelled first) or a non-200 `status_code` with an
  error body. `vllm run-batch` writes the same lines; its errors are a plain string with
  `status_code` 400 and no body.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.teacher.answers import Completion, parse_completion, server_message

ENDPOINT = "/v1/chat/completions"
# Line states that leave nothing recorded: the key goes into the next batch.
EXPIRED, CANCELLED = "batch_expired", "batch_cancelled"


def request_line(key: str, body: str) -> bytes:
    """One input line: `body` is embedded as it is (already JSON), so the server reads the
    same bytes the online client would have sent.

    >>> request_line("k1", '{"model":"m"}')
    b'{"custom_id":"k1","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}\\n'
    """
    return (f'{{"custom_id":{json.dumps(key)},"method":"POST","url":"{ENDPOINT}",'
            f'"body":{body}}}\n').encode()


def new_name(prefix: str = "finecot") -> str:
    """A batch file name unique across runs and machines (it is also the file's name on the
    provider, where a resumed run looks for it): prefix, UTC time, 48 random bits."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(6)}.jsonl"


@dataclass
class BuiltFile:
    """A finished batch file: where it is, and one (key, line number, info) per line."""

    name: str
    path: Path
    lines: list[tuple[str, int, Any]] = field(default_factory=list)
    bytes: int = 0


class BatchFileWriter:
    """Writes request lines into files of at most `max_lines` lines and `max_bytes` bytes,
    each under a temporary name until it is complete, then renamed and handed to
    `on_file`. Only the open file's line list (keys and small infos) stays in memory."""

    def __init__(self, folder: str | Path, max_lines: int, max_bytes: int,
                 on_file: Callable[[BuiltFile], None], name: Callable[[], str] = new_name):
        self.folder, self.max_lines, self.max_bytes = Path(folder), max_lines, max_bytes
        self.on_file, self._name = on_file, name
        self.folder.mkdir(parents=True, exist_ok=True)
        self._current: BuiltFile | None = None
        self._handle: Any = None
        self.files = 0

    def fits(self, line: bytes) -> bool:
        """Can this line go into any file at all (is it under max_bytes alone)?"""
        return len(line) <= self.max_bytes

    def add(self, key: str, body: str, info: Any = None) -> int:
        """Write one request; return its size in bytes. Raises ValueError for a line larger
        than max_bytes (check `fits` first)."""
        line = request_line(key, body)
        if not self.fits(line):
            raise ValueError(f"a request of {len(line):,} bytes is over the batch file limit "
                             f"of {self.max_bytes:,} bytes (teacher.batch.max_bytes)")
        current = self._current
        if current is not None and (len(current.lines) >= self.max_lines
                                    or current.bytes + len(line) > self.max_bytes):
            self._finish()
            current = None
        if current is None:
            name = self._name()
            current = self._current = BuiltFile(name, self.folder / name)
            self._handle = open(self._part(current), "wb")  # noqa: SIM115 (closed in _finish)
        self._handle.write(line)
        current.lines.append((key, len(current.lines), info))
        current.bytes += len(line)
        return len(line)

    def _part(self, built: BuiltFile) -> Path:
        return built.path.with_name(f".{built.name}.part")

    def _finish(self) -> None:
        built, self._current = self._current, None
        if built is None:
            return
        self._handle.flush()
        os.fsync(self._handle.fileno())  # the ledger will say this file exists: make it so
        self._handle.close()
        os.replace(self._part(built), built.path)
        self.files += 1
        self.on_file(built)

    def close(self) -> None:
        """Finish the open file (if any line went into it)."""
        self._finish()

    def abort(self) -> None:
        """Drop the open file: nothing was recorded for it."""
        if self._current is not None:
            self._handle.close()
            self._part(self._current).unlink(missing_ok=True)
            self._current = None


# -- results ---------------------------------------------------------------------------------


@dataclass
class ResultLine:
    """One line of an output or error file as read: `problem` says why it cannot be used."""

    number: int
    sha256: str
    custom_id: str | None = None
    status_code: int | None = None
    body: Any = None
    error: Any = None
    problem: str | None = None


def read_results(path: str | Path) -> Iterator[ResultLine]:
    """Each non-blank line of a results file, in order, parsed alone: a bad line is reported
    (its `problem`), never fatal to the lines after it."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            yield parse_result(raw, number)


def parse_result(raw: bytes, number: int = 1) -> ResultLine:
    """One result line.

    >>> parse_result(b'{"custom_id": "k", "response": {"status_code": 200, "body": {}}}').custom_id
    'k'
    >>> parse_result(b'{"custom_id": "k", "respo', 7).problem.split(" (")[0]
    'line 7: not JSON'
    """
    result = ResultLine(number, hashlib.sha256(raw.strip()).hexdigest())
    try:
        data = json.loads(raw)
    except ValueError as err:
        result.problem = f"line {number}: not JSON ({err})"
        return result
    if not isinstance(data, dict):
        result.problem = f"line {number}: not a JSON object"
        return result
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        result.problem = f"line {number}: no custom_id"
        return result
    result.custom_id = custom_id
    response = data.get("response")
    if isinstance(response, dict):
        code = response.get("status_code")
        result.status_code = code if isinstance(code, int) else None
        result.body = response.get("body")
    result.error = data.get("error")
    if result.error is None and result.body is None:
        result.problem = f"line {number}: neither a response body nor an error"
    return result


@dataclass
class Outcome:
    """What a result line means for its key. kind: answer (completion), failed (error), or
    expired / cancelled (not run: nothing to record, ask again), or refused (`reason`:
    the line does not belong to this request, nothing is recorded)."""

    kind: str
    completion: Completion | None = None
    error: str | None = None
    reason: str | None = None


def _error_text(error: Any) -> tuple[str | None, str]:
    """(code, message) of a line's error: OpenAI's {"code", "message"}, an error body
    {"error": {...}} or a plain string (vLLM)."""
    if isinstance(error, dict) and isinstance(error.get("error"), dict):
        error = error["error"]
    if isinstance(error, dict):
        code = error.get("code")
        message = error.get("message") or error.get("detail") or json.dumps(error)[:300]
        return (str(code) if code is not None else None), str(message)[:300]
    return None, str(error)[:300]


def model_matches(asked: str, answered: Any) -> bool:
    """Does a response's `model` belong to the request's? Providers answer with a dated
    snapshot of an alias (gpt-4o -> gpt-4o-2024-08-06) and proxies may add or drop a route
    prefix (hosted_vllm/...): those match, another model does not.

    >>> model_matches("gpt-4o", "gpt-4o-2024-08-06"), model_matches("m", "hosted_vllm/m")
    (True, True)
    >>> model_matches("teacher-a", "teacher-b"), model_matches("m", None)
    (False, True)
    """
    if not isinstance(answered, str) or not answered or answered == asked:
        return True
    return (answered.startswith(asked + "-") or answered.endswith("/" + asked)
            or asked.endswith("/" + answered))


def interpret(result: ResultLine, model: str, max_tokens: int | None,
              prompt_estimate: float) -> Outcome:
    """The outcome of one readable result line for a request to `model` (one sample)."""
    if result.problem:
        return Outcome("refused", reason=result.problem)
    where = f"line {result.number}"
    if result.error is not None or (result.status_code not in (None, 200)):
        code, message = _error_text(result.error if result.error is not None else result.body)
        if code == EXPIRED:
            return Outcome("expired", error=f"{code}: {message}")
        if code == CANCELLED:
            return Outcome("cancelled", error=f"{code}: {message}")
        if result.status_code not in (None, 200):
            text = message if result.error is not None else server_message(
                json.dumps(result.body).encode())
            return Outcome("failed", error=f"http {result.status_code}: {text}")
        return Outcome("failed", error=f"batch {code or 'error'}: {message}")
    body = result.body
    if not isinstance(body, dict):
        return Outcome("failed", error="malformed: the response body is not a JSON object")
    if body.get("object") not in (None, "chat.completion"):
        return Outcome("refused", reason=f"{where}: the body is a {body.get('object')!r}, not "
                       "a chat.completion")
    if not model_matches(model, body.get("model")):
        return Outcome("refused", reason=f"{where}: the body does not match its request: "
                       f"model {body.get('model')!r} answered, {model!r} was asked")
    choices = body.get("choices")
    if isinstance(choices, list) and len(choices) > 1:
        return Outcome("refused", reason=f"{where}: the body does not match its request: "
                       f"{len(choices)} choices, one was asked")
    try:
        completion = parse_completion(body, max_tokens, lambda: prompt_estimate)[0]
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        return Outcome("failed", error=f"malformed: {err}")
    completion.attempts = 1
    return Outcome("answer", completion=completion)
