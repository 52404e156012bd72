"""The OpenAI Files and Batches APIs, as far as batch drafting needs them, over aiohttp.

    async with BatchAPI(recipe.teacher) as api:
        file = await api.upload(path, name)                     # POST /files (purpose batch)
        batch = await api.create(file["id"], "24h", {"finecot_file": name})   # POST /batches
        batch = await api.retrieve(batch["id"])                 # GET /batches/{id}
        await api.download(batch["output_file_id"], dest)       # GET /files/{id}/content
        await api.cancel(batch["id"])                           # POST /batches/{id}/cancel

What it reproduces (platform.openai.com/docs/api-reference/files and .../batch; served the
same by LiteLLM's proxy and other OpenAI-compatible batch providers):
- upload: multipart/form-data with `purpose=batch` and `file`; the answer is a File object
  `{"id", "object": "file", "bytes", "created_at", "filename", "purpose"}`;
- list files: `GET /files?purpose=batch&order=desc&limit=N&after=ID`, list batches
  `GET /batches?limit=N&after=ID`: `{"object": "list", "data", "has_more", "last_id"}`;
- create: `{"input_file_id", "endpoint": "/v1/chat/completions", "completion_window": "24h",
  "metadata"}`; a Batch object has `id`, `status` (validating, failed, in_progress,
  finalizing, completed, expired, cancelling, cancelled), `request_counts` {total,
  completed, failed}, `output_file_id`, `error_file_id`, `errors` {data: [{code, message}]}.

Files stream both ways (an upload is read from disk as it is sent; a download is written to
disk as it arrives): a 200 MB batch file is never held in memory. 429, 5xx and connection
errors are retried with backoff; the key never appears in an error text.

`find_file` and `find_batch` look an upload or a batch up again by name or input file: a
process killed after the provider acted but before it heard the answer finds it instead of
uploading or paying twice (curation/draft/batch.py).
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from curation.core.config import TeacherConfig
from curation.core.tables import atomic_path
from curation.teacher.client import (
    RETRYABLE_STATUS,
    Endpoint,
    resolve_api_key,
    retry_after_s,
    server_message,
)

# Batch statuses after which nothing changes (the results, if any, can be downloaded).
FINAL = ("completed", "failed", "expired", "cancelled")


class BatchAPIError(RuntimeError):
    """A Files/Batches API call that failed for good (its text never holds the key)."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class NoBatchAPI(BatchAPIError):
    """The endpoint has no Files/Batches API (404/405 on /files or /batches)."""


class BatchAPI:
    """One OpenAI-compatible base URL's Files and Batches APIs (the first teacher.base_urls:
    a batch lives with one provider). Use as `async with BatchAPI(config) as api:`."""

    def __init__(self, config: TeacherConfig, api_key: str | None = None):
        if not config.base_urls:
            raise ValueError("teacher.base_urls is empty: list the OpenAI-compatible URL")
        self.config = config
        self._key = api_key if api_key is not None else resolve_api_key(config)
        endpoint = Endpoint(config.base_urls[0], self._key, config.timeout_s, sdk_transport=False)
        self._sdk = endpoint.client  # closed with us; only its headers are used
        self.base = str(endpoint.client.base_url).rstrip("/")
        self.label = endpoint.label  # the URL without credentials: what may be recorded
        self.headers = {k: v for k, v in endpoint.headers.items() if k.lower() != "content-type"}
        self.headers.update(config.batch.headers)  # e.g. LiteLLM's x-litellm-model routing
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> BatchAPI:
        # No total timeout (a 200 MB upload takes its time); each read and connect has one.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.config.timeout_s,
                                        sock_read=self.config.timeout_s)
        self._session = aiohttp.ClientSession(timeout=timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self._sdk.close()

    # -- the calls ------------------------------------------------------------------------

    async def upload(self, path: Path, name: str) -> dict[str, Any]:
        """Upload a batch input file (streamed from disk) under `name`; its File object."""

        handles = []

        def form() -> aiohttp.FormData:  # one per attempt: a body is read once
            handles.append(open(path, "rb"))  # noqa: SIM115 (closed below, after every attempt)
            data = aiohttp.FormData()
            data.add_field("purpose", "batch")
            data.add_field("file", handles[-1], filename=name, content_type="application/jsonl")
            return data

        started, most = time.time(), self.config.max_attempts
        try:
            for attempt in range(1, most + 1):
                try:
                    return await self._call("POST", "/files", form=form, what="upload", attempts=1)
                except NoBatchAPI:
                    raise
                except BatchAPIError as err:
                    if (err.status and err.status not in RETRYABLE_STATUS) or attempt == most:
                        raise
                # The failed attempt may have stored the file all the same: never upload twice.
                found = await self.find_file(name, path.stat().st_size, started)
                if found is not None:
                    return found
                await self._wait(attempt, None)
        finally:
            for handle in handles:
                handle.close()
        raise BatchAPIError("upload: no attempt made")  # not reached

    async def files(self) -> AsyncIterator[dict[str, Any]]:
        """The account's batch files, newest first, page after page."""
        params: dict[str, Any] = {"purpose": "batch", "order": "desc", "limit": 100}
        async for item in self._pages("/files", params):
            yield item

    async def find_file(self, name: str, size: int, since: float) -> dict[str, Any] | None:
        """The uploaded file called `name` of `size` bytes created after `since` (Unix time,
        with an hour's slack for clocks), or None."""
        async for item in self.files():
            if item.get("filename") == name and item.get("bytes") in (size, None):
                return item
            if (item.get("created_at") or 0) < since - 3600:
                return None
        return None

    async def create(self, file_id: str, window: str, metadata: dict[str, str]) -> dict[str, Any]:
        body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                "completion_window": window, "metadata": metadata}
        return await self._call("POST", "/batches", body=body, what="create the batch")

    async def batches(self) -> AsyncIterator[dict[str, Any]]:
        """The account's batches, newest first, page after page."""
        async for item in self._pages("/batches", {"limit": 100}):
            yield item

    async def find_batch(self, file_id: str, since: float) -> dict[str, Any] | None:
        """The batch made of input file `file_id`, created after `since` (an hour's slack)."""
        async for item in self.batches():
            if item.get("input_file_id") == file_id:
                return item
            if (item.get("created_at") or 0) < since - 3600:
                return None
        return None

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/batches/{batch_id}", what="read the batch")

    async def cancel(self, batch_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/batches/{batch_id}/cancel", what="cancel the batch")

    async def download(self, file_id: str, dest: Path) -> int:
        """Write a file's content to `dest` (atomically, streamed); return its size."""
        for attempt in range(1, self.config.max_attempts + 1):
            try:
                async with self._session.get(f"{self.base}/files/{file_id}/content",
                                             headers=self.headers) as response:
                    if response.status != 200:
                        raw = await response.read()
                        self._fail(response.status, raw, "download",
                                   attempt == self.config.max_attempts)
                        await self._wait(attempt, retry_after_s(response.headers))
                        continue
                    size = 0
                    with atomic_path(dest) as tmp, open(tmp, "wb") as out:
                        async for chunk in response.content.iter_chunked(1 << 20):
                            out.write(chunk)
                            size += len(chunk)
                    return size
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
                self._transport(err, "download", attempt == self.config.max_attempts)
                await self._wait(attempt, None)
        raise BatchAPIError(f"download of {file_id} failed {self.config.max_attempts} times")

    # -- plumbing -------------------------------------------------------------------------

    async def _pages(self, path: str, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        params = dict(params)
        while True:
            page = await self._call("GET", path, params=params, what="list")
            data = page.get("data") or []
            for item in data:
                yield item
            if not page.get("has_more") or not data:
                return
            params["after"] = page.get("last_id") or data[-1].get("id")

    async def _call(self, method: str, path: str, *, body: Any = None, form: Any = None,
                    params: dict[str, Any] | None = None, what: str = "",
                    attempts: int | None = None) -> dict[str, Any]:
        """One JSON call, retried on 429, 5xx and connection errors (`attempts` times at
        most, default teacher.max_attempts)."""
        most = attempts or self.config.max_attempts
        for attempt in range(1, most + 1):
            headers = dict(self.headers)
            kwargs: dict[str, Any] = {"params": params}
            if body is not None:
                headers["Content-Type"] = "application/json"
                kwargs["data"] = json.dumps(body)
            elif form is not None:
                kwargs["data"] = form()
            try:
                async with self._session.request(method, f"{self.base}{path}", headers=headers,
                                                 **kwargs) as response:
                    raw = await response.read()
                    if response.status == 200:
                        try:
                            return json.loads(raw)
                        except ValueError:
                            self._fail(502, b"not a JSON answer", what, attempt == most)
                    else:
                        self._fail(response.status, raw, what, attempt == most)
                    retry_after = retry_after_s(response.headers)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
                self._transport(err, what, attempt == most)
                retry_after = None
            await self._wait(attempt, retry_after)
        raise BatchAPIError(f"{what}: failed {most} times")  # not reached

    def _fail(self, status: int, raw: bytes, what: str, last: bool) -> None:
        """Raise for an answer that will not change (or on the last attempt); return to
        retry one that may."""
        message = self._scrub(server_message(raw))
        text = f"{what}: http {status} from {self.label}: {message}"
        if status in (404, 405) and what in ("upload", "create the batch", "list"):
            raise NoBatchAPI(
                f"{text}. This endpoint has no Files/Batches API: run the batch offline "
                "(`finecot batch build`, `vllm run-batch`, `finecot batch import`) or put "
                "LiteLLM's proxy in front of it (README, Batch mode)", status)
        if status not in RETRYABLE_STATUS or last:
            raise BatchAPIError(text, status)

    def _transport(self, err: BaseException, what: str, last: bool) -> None:
        if last:
            raise BatchAPIError(f"{what}: no answer from {self.label} "
                                f"({type(err).__name__})") from None

    async def _wait(self, attempt: int, retry_after: float | None) -> None:
        ceiling = min(self.config.backoff_max_s, self.config.backoff_s * 2 ** (attempt - 1))
        await asyncio.sleep(max(ceiling / 2 + random.uniform(0, ceiling / 2), retry_after or 0))

    def _scrub(self, text: str) -> str:
        if self._key and self._key != "EMPTY" and len(self._key) >= 4:
            text = text.replace(self._key, "***")
        return text
