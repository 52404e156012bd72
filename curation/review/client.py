"""The Label Studio connection used by curation/review/push_pull.py: connect, projects, tasks, export.

Most calls go through label-studio-sdk; two go straight over HTTP with the same token,
because the SDK has no call for them or is slow at them: multipart image uploads, and the
compact task listing (`include=id,data`) that push uses to find rows already imported.

Every failure becomes a `ReviewError` that says what to check (URL, token, server version);
the token itself is never put in a message, a log line or a file.

    client = connect("http://localhost:8080", os.environ["LABEL_STUDIO_API_KEY"])
    project_id = client.ensure_project("finecot birds", label_config)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

log = logging.getLogger(__name__)
T = TypeVar("T")


class ReviewError(RuntimeError):
    """Review round trip cannot go on; the message says what to fix."""


class Client:
    """A checked connection to one Label Studio server."""

    def __init__(self, url: str, token: str, timeout_s: float = 120):
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Token {token}"}
        self.sdk = LabelStudio(base_url=self.url, api_key=token, timeout=timeout_s)
        self.http = httpx.Client(base_url=self.url, headers=self._headers, timeout=timeout_s)

    def __repr__(self) -> str:  # never show the token
        return f"Client({self.url!r})"

    # -- error mapping ------------------------------------------------------------------

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one SDK/HTTP call; turn transport and API errors into clear ReviewErrors."""
        try:
            return fn(*args, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            raise ReviewError(
                f"cannot reach Label Studio at {self.url} ({what}): {type(err).__name__}. "
                "Check review.url or LABEL_STUDIO_URL, and that the server is running."
            ) from None
        except httpx.TimeoutException:
            raise ReviewError(
                f"Label Studio at {self.url} timed out ({what}); raise review.timeout_s or "
                "lower review.batch_size"
            ) from None
        except ApiError as err:
            raise _api_error(self.url, what, err.status_code, err.body) from None
        except httpx.HTTPStatusError as err:
            raise _api_error(self.url, what, err.response.status_code, err.response.text) from None

    def _get(self, path: str, **params: Any) -> Any:
        resp = self.http.get(path, params=params)
        resp.raise_for_status()
        return resp.json()

    # -- projects -------------------------------------------------------------------------

    def ensure_project(
        self, title: str, label_config: str, project_id: int | None = None, overlap: int = 1
    ) -> int:
        """The project `project_id`, or a new project titled `title` when it is None.

        Titles are labels, never looked up: two runs of one recipe must not share a project.
        A reused project gets `title` (a rename) and the current label config (new classes,
        fixed wording); a project id the server does not have is a ReviewError.
        """
        if project_id is not None:
            try:
                current = self.sdk.projects.get(project_id)
            except ApiError as err:
                if err.status_code != 404:
                    raise _api_error(self.url, f"read project {project_id}", err.status_code,
                                     err.body) from None
                raise ReviewError(
                    f"Label Studio at {self.url} has no project {project_id} (deleted?). Give "
                    "another with --project ID, or remove review_project.json from the run "
                    "directory to start a new project") from None
            except (httpx.HTTPError, OSError):
                current = self.call(f"read project {project_id}", self.sdk.projects.get, project_id)
            if current.title != title:
                log.info("renaming Label Studio project %s: %r -> %r", project_id, current.title,
                         title)
        if project_id is None:
            project = self.call(
                "create project", self.sdk.projects.create, title=title, label_config=label_config,
                maximum_annotations=overlap, show_skip_button=False,
                description="finecot review: accept, fix or reject each teacher rationale",
            )
            log.info("created Label Studio project %s (%r)", project.id, title)
            return int(project.id)
        self.call(
            f"update project {project_id}", self.sdk.projects.update, project_id,
            title=title, label_config=label_config, maximum_annotations=overlap,
        )
        return int(project_id)

    def ensure_local_storage(self, project_id: int, folder: Path) -> None:
        """Label Studio serves /data/local-files only under a local storage of the project."""
        existing = self.call(
            "list local storages", lambda: list(self.sdk.import_storage.local.list(project=project_id))
        )
        if any(str(folder).startswith(str(s.path).rstrip("/")) for s in existing):
            return
        self.call(
            "create local storage", self.sdk.import_storage.local.create,
            project=project_id, path=str(folder), title="finecot images", use_blob_urls=False,
        )

    # -- tasks ----------------------------------------------------------------------------

    def iter_tasks(
        self, project_id: int, page_size: int = 500, ids: Sequence[int] | None = None
    ) -> Iterator[dict]:
        """Every task of the project (or those `ids`) as {"id", "data"}: compact, paged."""
        extra = {}
        if ids is not None:
            extra["query"] = json.dumps({"selectedItems": {"all": False, "included": list(ids)}})
        page = 1
        while True:
            try:
                body = self.call(
                    "list tasks", self._get, "/api/tasks", project=project_id,
                    include="id,data", page=page, page_size=page_size, **extra,
                )
            except ReviewError as err:
                if "404" in str(err) and page > 1:  # past the last page
                    return
                raise
            tasks = body.get("tasks", []) if isinstance(body, dict) else body
            yield from tasks
            total = body.get("total", 0) if isinstance(body, dict) else 0
            if not tasks or page * page_size >= total:
                return
            page += 1

    def tasks_by_id(self, project_id: int, ids: Sequence[int]) -> list[dict]:
        return list(self.iter_tasks(project_id, ids=ids)) if ids else []

    def import_tasks(self, project_id: int, tasks: Sequence[dict]) -> list[int]:
        """Import one batch (one request, one transaction on the server); return the ids."""
        resp = self.call(
            "import tasks", self.sdk.projects.import_tasks, project_id, request=list(tasks),
            return_task_ids=True,
        )
        return list(resp.task_ids or [])

    def delete_task(self, task_id: int) -> None:
        self.call(f"delete task {task_id}", self.sdk.tasks.delete, str(task_id))

    def upload_images(self, project_id: int, files: Sequence[tuple[str, bytes]]) -> list[int]:
        """Upload image files into a single-image media project; return the new task ids."""

        def post() -> list[int]:
            parts = {f"file{i}": (name, data) for i, (name, data) in enumerate(files)}
            resp = self.http.post(
                f"/api/projects/{project_id}/import", params={"return_task_ids": "true"}, files=parts
            )
            resp.raise_for_status()
            return list(resp.json().get("task_ids") or [])

        return self.call("upload images", post)

    def export(self, project_id: int) -> list[dict]:
        """Every annotated task of the project with its annotations (JSON export)."""

        def download() -> list[dict]:
            chunks = self.sdk.projects.exports.download_sync(
                project_id, export_type="JSON", download_all_tasks=False
            )
            return json.loads(b"".join(chunks) or b"[]")

        return self.call(f"export project {project_id}", download)

    def users(self) -> dict[int, str]:
        """user id -> email (or username): the reviewer column of the reviewed table."""
        found = self.call("list users", lambda: list(self.sdk.users.list()))
        return {int(u.id): (u.email or u.username or str(u.id)) for u in found}


def _api_error(url: str, what: str, status: int | None, body: Any) -> ReviewError:
    detail = str(body)[:300]
    if status == 401:
        return ReviewError(
            f"Label Studio at {url} refused the API token ({what}: 401). Set a valid token in "
            "the env var named by review.api_key_env (default LABEL_STUDIO_API_KEY); legacy "
            "tokens need LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true on the server."
        )
    if status == 403:
        return ReviewError(f"Label Studio at {url} forbids {what} for this user (403): {detail}")
    if status in (404, 405):
        return ReviewError(
            f"Label Studio at {url} has no endpoint for {what} ({status}). Is the URL the "
            "server's root, and is the server Label Studio 1.20 or newer?"
        )
    return ReviewError(f"Label Studio at {url} failed to {what} ({status}): {detail}")


def connect(url: str, token: str, timeout_s: float = 120) -> Client:
    """A client whose URL, server version and token are checked with two cheap requests."""
    if not token:
        raise ReviewError(
            "no Label Studio API token: set LABEL_STUDIO_API_KEY (or the env var named by "
            "review.api_key_env) to your token from Account & Settings"
        )
    client = Client(url, token, timeout_s)
    version = client.call("read the server version (/api/version)", client._get, "/api/version")
    if not isinstance(version, dict) or "release" not in version:
        raise ReviewError(f"{url}/api/version did not answer like Label Studio: {str(version)[:200]}")
    client.call("check the token (/api/current-user/whoami)", client._get, "/api/current-user/whoami")
    log.info("connected to Label Studio %s at %s", version.get("release"), client.url)
    return client
