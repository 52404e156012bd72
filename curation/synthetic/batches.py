"""The scripted teacher's Files and Batches APIs: batches processed in the background with
the same behaviour flags as its chat completions (teacher.py wires them in).

    POST /v1/files (multipart: purpose, file)      GET /v1/files[?purpose&order&limit&after]
    GET /v1/files/{id}   GET /v1/files/{id}/content   DELETE /v1/files/{id}
    POST /v1/batches {input_file_id, endpoint, completion_window, metadata}
    GET /v1/batches[?limit&after]   GET /v1/batches/{id}   POST /v1/batches/{id}/cancel

Objects and lines follow OpenAI's API reference (Files: the File object; Batch: the Batch
object, its statuses validating -> in_progress -> finalizing -> completed, or failed
(validation), expired, cancelling -> cancelled; request input and output lines, per-line
errors `batch_expired` and `batch_cancelled` in the error file). Lists are newest first with
`has_more`/`last_id` paging.

What the flags add (script.py Behaviour): every chat fault happens to lines instead
(429/500/503 as a line's status_code, a hang as `request_timeout`, malformed as a truncated
output line); `batch_fail_first` batches fail validation, `batch_expire_first` batches
expire `batch_expire_at` of the way through; the first batch holds at `batch_hold_at` of its
lines until it is cancelled; `batch_max_lines` refuses larger files like
OpenAI's limit; `batch_stall_s` holds the first answer to an upload, a batch creation and a
download that long after the work is done (a reply lost on the way: tests kill the client
then); `batch_line_delay` paces the lines. `/stats` shows the counters under "batch":
uploads, duplicate_uploads (the same bytes uploaded again), batches, lines (processed),
lines_repeated (custom_ids processed more than once), downloads.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from curation.synthetic.script import Behaviour

FINAL = ("completed", "failed", "expired", "cancelled")


def _error(status: int, message: str, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": str(status)}},
                             status=status)


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def card(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data),
                "created_at": self.created_at, "filename": self.filename,
                "purpose": self.purpose, "status": "processed"}


def raw_body(line: str, body: Any) -> bytes:
    """The bytes of a request line's `body` as the client wrote them (so a batch line is
    answered exactly like the same body sent online, whose answer seeds from its bytes);
    re-encoded when they cannot be found."""
    start = line.find('"body":')
    if start >= 0:
        start += len('"body":')
        while start < len(line) and line[start] in " \t":
            start += 1
        try:
            value, end = json.JSONDecoder().raw_decode(line, start)
            if value == body:
                return line[start:end].encode()
        except ValueError:
            pass
    return json.dumps(body, separators=(",", ":")).encode()


class BatchService:
    """Files and batches held in memory; `answer(body) -> (line fields, outcome)` answers
    one request body as the chat endpoint would (teacher.py's `batch_answer`)."""

    def __init__(self, behaviour: Behaviour,
                 answer: Callable[[bytes], tuple[dict[str, Any], str]]):
        self.behaviour, self.answer = behaviour, answer
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._cancel: set[str] = set()
        self._shas: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._stalled: set[str] = set()
        self.reset()

    def reset(self) -> None:
        self.counts: Counter[str] = Counter(uploads=0, duplicate_uploads=0, batches=0, lines=0,
                                            lines_repeated=0, downloads=0, cancels=0)
        self.seen: Counter[str] = Counter()

    def stats(self) -> dict[str, Any]:
        return dict(self.counts)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files", self.list_files)
        app.router.add_get("/v1/files/{id}", self.get_file)
        app.router.add_get("/v1/files/{id}/content", self.content)
        app.router.add_delete("/v1/files/{id}", self.delete_file)
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches", self.list_batches)
        app.router.add_get("/v1/batches/{id}", self.get_batch)
        app.router.add_post("/v1/batches/{id}/cancel", self.cancel)

    async def _stall(self, what: str) -> None:
        """Hold the first answer of each kind: the work is done, the reply is late."""
        if self.behaviour.batch_stall_s > 0 and what not in self._stalled:
            self._stalled.add(what)
            await asyncio.sleep(self.behaviour.batch_stall_s)

    # -- files ------------------------------------------------------------------------------

    async def upload(self, request: web.Request) -> web.Response:
        if not request.content_type.startswith("multipart/"):
            return _error(400, "upload a file as multipart/form-data (fields purpose, file)")
        purpose, name, data = None, None, None
        reader = await request.multipart()
        async for part in reader:
            if part.name == "purpose":
                purpose = (await part.text()).strip()
            elif part.name == "file":
                name, data = part.filename or "upload", bytes(await part.read())
        if purpose is None or data is None:
            return _error(400, "missing field: purpose and file are both required")
        sha = hashlib.sha256(data).hexdigest()
        self.counts["uploads"] += 1
        self.counts["duplicate_uploads"] += sha in self._shas
        self._shas.add(sha)
        stored = StoredFile(f"file-{uuid.uuid4().hex[:24]}", name, purpose, data, int(time.time()))
        self.files[stored.id] = stored
        await self._stall("upload")
        return web.json_response(stored.card())

    async def list_files(self, request: web.Request) -> web.Response:
        purpose = request.query.get("purpose")
        items = [f.card() for f in self.files.values() if purpose in (None, f.purpose)]
        if request.query.get("order", "desc") == "desc":
            items.reverse()  # insertion order is creation order
        return self._page(request, items, 10_000)

    def _page(self, request: web.Request, items: list[dict], most: int) -> web.Response:
        try:
            limit = min(most, max(1, int(request.query.get("limit", 20))))
        except ValueError:
            return _error(400, "limit must be an integer")
        after = request.query.get("after")
        if after is not None:
            ids = [i["id"] for i in items]
            items = items[ids.index(after) + 1:] if after in ids else []
        page = items[:limit]
        return web.json_response({"object": "list", "data": page,
                                  "first_id": page[0]["id"] if page else None,
                                  "last_id": page[-1]["id"] if page else None,
                                  "has_more": len(items) > limit})

    def _file(self, request: web.Request) -> StoredFile | None:
        return self.files.get(request.match_info["id"])

    async def get_file(self, request: web.Request) -> web.Response:
        stored = self._file(request)
        return web.json_response(stored.card()) if stored else _error(404, "No such File object")

    async def content(self, request: web.Request) -> web.StreamResponse:
        stored = self._file(request)
        if stored is None:
            return _error(404, "No such File object")
        self.counts["downloads"] += 1
        await self._stall("download")
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def delete_file(self, request: web.Request) -> web.Response:
        stored = self.files.pop(request.match_info["id"], None)
        if stored is None:
            return _error(404, "No such File object")
        return web.json_response({"id": stored.id, "object": "file", "deleted": True})

    # -- batches ----------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        try:
            req = await request.json()
        except ValueError:
            return _error(400, "invalid JSON body")
        if not isinstance(req, dict):
            return _error(400, "the body must be a JSON object")
        stored = self.files.get(str(req.get("input_file_id")))
        if stored is None:
            return _error(400, f"input_file_id {req.get('input_file_id')!r}: no such file")
        if req.get("endpoint") != "/v1/chat/completions":
            return _error(400, "endpoint must be /v1/chat/completions")
        if req.get("completion_window") != "24h":
            return _error(400, "completion_window must be 24h")
        now = int(time.time())
        batch = {
            "id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch",
            "endpoint": req["endpoint"], "errors": None, "input_file_id": stored.id,
            "completion_window": "24h", "status": "validating", "output_file_id": None,
            "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + 86_400, "finalizing_at": None, "completed_at": None,
            "failed_at": None, "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": req.get("metadata") or None,
        }
        self.batches[batch["id"]] = batch
        self.counts["batches"] += 1
        task = asyncio.get_running_loop().create_task(self._run(batch, self.counts["batches"]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        await self._stall("create")
        return web.json_response(batch)

    async def list_batches(self, request: web.Request) -> web.Response:
        return self._page(request, list(reversed(list(self.batches.values()))), 100)

    async def get_batch(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        return web.json_response(batch) if batch else _error(404, "No such Batch object")

    async def cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "No such Batch object")
        if batch["status"] in FINAL:
            return _error(400, f"Cannot cancel a batch with status {batch['status']}.")
        self.counts["cancels"] += 1
        if batch["status"] != "cancelling":
            batch["status"], batch["cancelling_at"] = "cancelling", int(time.time())
        self._cancel.add(batch["id"])
        return web.json_response(batch)

    # -- the worker -------------------------------------------------------------------------

    def _validate(self, data: bytes) -> tuple[list[tuple[str, bytes]], dict | None]:
        """(custom_id, body bytes) per line, or the validation error of the whole file."""
        requests, ids = [], set()
        for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except ValueError:
                return [], {"code": "invalid_json_line", "message": "This line is not JSON.",
                            "line": number}
            custom_id = line.get("custom_id") if isinstance(line, dict) else None
            if not isinstance(custom_id, str) or not isinstance(line.get("body"), dict):
                return [], {"code": "invalid_request", "line": number,
                            "message": "Each line needs a custom_id and a body object."}
            if line.get("method") != "POST" or line.get("url") != "/v1/chat/completions":
                return [], {"code": "invalid_url", "line": number,
                            "message": "method must be POST and url /v1/chat/completions."}
            if custom_id in ids:
                return [], {"code": "duplicate_custom_id", "line": number,
                            "message": f"The custom_id {custom_id!r} is not unique."}
            ids.add(custom_id)
            requests.append((custom_id, raw_body(raw, line["body"])))
        if len(requests) > self.behaviour.batch_max_lines:
            return [], {"code": "too_many_requests", "line": None, "message":
                        f"The file has {len(requests)} requests; at most "
                        f"{self.behaviour.batch_max_lines} are allowed."}
        if not requests:
            return [], {"code": "empty_file", "line": None, "message": "The file has no request."}
        return requests, None

    def _store(self, lines: list[bytes], filename: str) -> str | None:
        if not lines:
            return None
        stored = StoredFile(f"file-{uuid.uuid4().hex[:24]}", filename, "batch_output",
                            b"".join(lines), int(time.time()))
        self.files[stored.id] = stored
        return stored.id

    async def _run(self, batch: dict[str, Any], ordinal: int) -> None:
        b = self.behaviour
        await asyncio.sleep(0)  # answer the create first: a batch starts as "validating"
        requests, invalid = self._validate(self.files[batch["input_file_id"]].data)
        if invalid is None and ordinal <= b.batch_fail_first:
            invalid = {"code": "invalid_request", "line": None,
                       "message": "Validation failed (scripted: batch_fail_first)."}
        now = int(time.time())
        if invalid is not None:
            invalid["param"] = None
            batch.update(status="failed", failed_at=now,
                         errors={"object": "list", "data": [invalid]})
            return
        counts = batch["request_counts"]
        counts["total"] = len(requests)
        if batch["status"] == "validating":  # (a cancel may have come first)
            batch.update(status="in_progress", in_progress_at=now)
        expire_at = (int(len(requests) * b.batch_expire_at)
                     if ordinal <= b.batch_expire_first else None)
        hold_at = (int(len(requests) * b.batch_hold_at)
                   if ordinal == 1 and b.batch_hold_at is not None else None)
        output, errors = [], []
        for done, (custom_id, body) in enumerate(requests):
            while done == hold_at and batch["id"] not in self._cancel:
                await asyncio.sleep(0.02)  # held until cancelled
            stop = ("cancelled" if batch["id"] in self._cancel
                    else "expired" if expire_at is not None and done >= expire_at else None)
            if stop:
                code = "batch_cancelled" if stop == "cancelled" else "batch_expired"
                message = ("The batch was cancelled before this request ran." if stop ==
                           "cancelled" else "This request could not be executed before the "
                           "completion window expired.")
                for rest_id, _ in requests[done:]:
                    errors.append(self._line(rest_id, None, {"code": code, "message": message}))
                batch["status"] = stop
                batch[f"{stop}_at"] = int(time.time())
                break
            fields, outcome = self.answer(body)
            self.counts["lines"] += 1
            self.seen[custom_id] += 1
            self.counts["lines_repeated"] += self.seen[custom_id] == 2
            line = self._line(custom_id, fields.get("response"), fields.get("error"))
            if outcome == "malformed":  # the output line itself is cut short
                line = line[: max(10, len(line) // 3)] + b"\n"
            ok = fields.get("error") is None and fields["response"]["status_code"] == 200
            (output if ok or outcome == "malformed" else errors).append(line)
            counts["completed" if ok else "failed"] += 1
            await asyncio.sleep(b.batch_line_delay)
        else:
            batch.update(status="finalizing", finalizing_at=int(time.time()))
            await asyncio.sleep(0)
            batch.update(status="completed", completed_at=int(time.time()))
        batch["output_file_id"] = self._store(output, f"{batch['id']}_output.jsonl")
        batch["error_file_id"] = self._store(errors, f"{batch['id']}_error.jsonl")
        self._cancel.discard(batch["id"])

    @staticmethod
    def _line(custom_id: str, response: dict | None, error: dict | None) -> bytes:
        line = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": custom_id,
                "response": response, "error": error}
        return (json.dumps(line) + "\n").encode()
