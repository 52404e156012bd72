"""Human review in Label Studio: push drafts for review, pull the reviewers' annotations.

    finecot review push  --run runs/birds          # rows -> tasks (idempotent, resumable)
    finecot review pull  --run runs/birds          # annotations -> review_annotations.parquet
    finecot review apply --run runs/birds          # -> reviewed.parquet (curation/review/apply.py)

Connection: `review.url` or env LABEL_STUDIO_URL; the token from the env var named by
`review.api_key_env` (default LABEL_STUDIO_API_KEY). The token is never written to the run
directory or a log: `review_project.json` keeps only the URL, title and project ids.

Which rows go (`review.select`): the filter's accepted rows, its rejected rows (to audit the
filters), or both; optionally only rows with one of `review.reasons`, and a seeded random
sample (`review.sample_size` or `review.sample_fraction`, `review.seed`).

Images (`review.image_mode`):
  upload       (default) each distinct image is uploaded once into a companion project
               "TITLE · images" (Label Studio's file upload accepts one data key per project),
               and tasks point at the uploaded file: works with a remote server.
  local-files  the server shares this disk: it must run with LOCAL_FILES_SERVING_ENABLED=true
               and LOCAL_FILES_DOCUMENT_ROOT=DIR (`review.document_root`, default that env
               var); images must lie under DIR. push adds a local storage to the project,
               which Label Studio requires before it serves /data/local-files.
  data-url     images inlined as base64 data URLs; only for small images (each at most
               `review.data_url_max_bytes`), since they bloat every task.

One project per run. The first push creates a project (its title names the recipe, the run's
folder and its run id; a title is only a label) and stores its id in review_project.json;
every later push and pull of the run uses that id, whatever the title says. Changing
`review.project_title` renames the project (and its image project). Another run's project is
used only when asked (`review.project_id`, `finecot review push --project ID`).

Each task carries the row id (`draft_id`) and the sha256 of the text it shows
(`response_sha256`; `finecot_key` joins both): a changed rationale is a new task, and a
verdict applies only to the very text the reviewer saw (curation/review/apply.py). Push
lists the project's tasks first and imports only keys not there yet, in batches (one
request each); after importing it lists again and deletes any duplicate of a key (keeping
the oldest task), which a push killed while a batch was in flight can leave. So pushing
twice imports nothing, and a crashed push resumes.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import mimetypes
import os
import random
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import pyarrow as pa
import pyarrow.parquet as pq

from curation.core import lineage
from curation.core.config import Recipe, ReviewConfig
from curation.core.labels import Registry
from curation.core.rundir import RunDir
from curation.core.stage import Progress
from curation.core.tables import read_json, read_table, write_json_atomic, write_parquet_atomic
from curation.review.client import Client, ReviewError, connect

log = logging.getLogger(__name__)

LABEL_CONFIG = Path(__file__).with_name("label_config.xml")
REJECT_REASONS = ("wrong_traits", "wrong_class", "leaks_label", "incoherent", "other")
LABEL_WRONG = "gold label is wrong"
MEDIA_CONFIG = '<View><Image name="image" value="$image"/></View>'
MEDIA_SUFFIX = " · images"  # the title of a run's image project: its project's + this
UPLOAD_FILES_PER_REQUEST = 100  # Django DATA_UPLOAD_MAX_NUMBER_FILES default

# Run-directory files of this stage.
PROJECT_FILE = "review_project.json"
ANNOTATIONS_FILE = "review_annotations.parquet"


@dataclass
class PushResult:
    project_id: int
    selected: int
    already: int
    imported: int
    duplicates_removed: int


# -- connection ---------------------------------------------------------------------------


def open_client(cfg: ReviewConfig) -> Client:
    """Connect with the recipe's URL (or LABEL_STUDIO_URL) and the token from the env."""
    url = cfg.url or os.environ.get("LABEL_STUDIO_URL")
    if not url:
        raise ReviewError("no Label Studio URL: set review.url in the recipe or LABEL_STUDIO_URL")
    return connect(url, os.environ.get(cfg.api_key_env, ""), cfg.timeout_s)


TITLE_MAX = 50  # Label Studio refuses longer project titles


def project_title(recipe: Recipe, run: RunDir) -> str:
    """The project's label: the recipe's title, else the recipe name, the run's folder and
    its run id (two runs of one recipe never look alike), within Label Studio's 50 characters."""
    title = recipe.review.project_title
    if title is not None:
        if len(title) > TITLE_MAX - len(MEDIA_SUFFIX):
            raise ReviewError(
                f"review.project_title {title!r} has {len(title)} characters: Label Studio "
                f"allows {TITLE_MAX}, and the image project adds {len(MEDIA_SUFFIX)}; use at "
                f"most {TITLE_MAX - len(MEDIA_SUFFIX)}")
        return title
    suffix = f" · {lineage.run_id(run)[:8]}"
    head = f"finecot {recipe.name} · {run.root.name}"
    return head[: TITLE_MAX - len(MEDIA_SUFFIX) - len(suffix)] + suffix


def text_sha256(text: str | None) -> str:
    """The sha256 (hex) of a rationale: what a task showed, and what a verdict is about."""
    return hashlib.sha256((text or "").encode("utf-8")).hexdigest()


def task_key(draft_id: str, text: str | None) -> str:
    """A task's identity: the row and the exact text shown."""
    return f"{draft_id}@{text_sha256(text)[:16]}"


def _key_of(data: dict) -> str:
    """The key of a task in the project; tasks pushed by an older finecot carry only the
    draft_id (their text is unknown: they are never matched to a verdict on new text)."""
    return data.get("finecot_key") or f"{data.get('draft_id')}@unknown-text"


UNSEEN_MARK = " (UNSEEN class: choosing it keeps the item out of training)"


def label_config(registry: Registry | None, datasets: Sequence[str] = (), labels: Sequence[str] = (),
                 unseen: set[str] | frozenset[str] = frozenset()) -> str:
    """The shipped review interface with the classes (registry + row labels) as choices:
    seen classes first, then the `unseen` ones, marked (the shown text says so; the stored
    value, Label Studio's `alias`, is the class name alone)."""
    names: list[str] = []
    for info in registry or ():
        if not datasets or info.dataset in datasets:
            names.append(info.name)
    names += [n for n in labels if n]
    names = list(dict.fromkeys(names)) or ["(no classes)"]  # Label Studio refuses an empty <Choices>
    ordered = [n for n in names if n not in unseen] + [n for n in names if n in unseen]
    choices = "\n".join(
        f"      <Choice value={quoteattr(n + UNSEEN_MARK)} alias={quoteattr(n)}/>" if n in unseen
        else f"      <Choice value={quoteattr(n)}/>" for n in ordered)
    return LABEL_CONFIG.read_text(encoding="utf-8").replace("<!-- CLASS_CHOICES -->", choices)


def unseen_classes(run: RunDir, datasets: Sequence[str]) -> set[str]:
    """Names of the unseen-split classes of `datasets` (split.json; none without a split)."""
    if not run.split.exists():
        return set()
    split = read_json(run.split).get("datasets", {})
    return {name for d, sides in split.items() if not datasets or d in datasets
            for name in sides.get("unseen", [])}


# -- which rows go ------------------------------------------------------------------------


def select_rows(run: RunDir, cfg: ReviewConfig) -> list[dict]:
    """Rows to review, per `select`, `reasons` and the seeded sample; ordered by draft_id."""
    names = {"accepted": ["accepted"], "rejected": ["rejected"], "all": ["accepted", "rejected"]}
    rows: list[dict] = []
    for name in names[cfg.select]:
        path = run.require(run.path(f"{name}.parquet"), "filter")
        rows.extend(read_table(path).to_pylist())
    if cfg.reasons:
        wanted = set(cfg.reasons)
        rows = [r for r in rows if wanted & set(r.get("reasons") or ())]
    rows.sort(key=lambda r: r["draft_id"])
    size = cfg.sample_size
    if size is None and cfg.sample_fraction is not None:
        size = max(1, round(cfg.sample_fraction * len(rows)))
    if size is not None and size < len(rows):
        rows = random.Random(cfg.seed).sample(rows, size)
        rows.sort(key=lambda r: r["draft_id"])
    return rows


# -- images -------------------------------------------------------------------------------


def _mime(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "image/jpeg"


class Images:
    """Turns a row's image into the URL a task shows, per `image_mode`."""

    def __init__(self, client: Client, cfg: ReviewConfig, project_id: int, title: str,
                 media_id: int | None = None):
        self.client, self.cfg, self.project_id = client, cfg, project_id
        self.urls: dict[str, str] = {}  # image_sha256 -> URL (upload mode)
        self.media_id: int | None = None
        if cfg.image_mode == "upload":  # the run's own image project: by id once it exists
            self.media_id = client.ensure_project(f"{title}{MEDIA_SUFFIX}", MEDIA_CONFIG, media_id)
            for task in client.iter_tasks(self.media_id):
                url = task["data"].get("image", "")
                sha = Path(url).stem.split("-", 1)[-1]
                self.urls.setdefault(sha, url)
        if cfg.image_mode == "local-files":
            root = cfg.document_root or os.environ.get("LOCAL_FILES_DOCUMENT_ROOT")
            if not root:
                raise ReviewError(
                    "image_mode local-files needs review.document_root (or env "
                    "LOCAL_FILES_DOCUMENT_ROOT): the server's LOCAL_FILES_DOCUMENT_ROOT"
                )
            self.root = Path(root).resolve()

    def prepare(self, rows: Sequence[dict], progress: Progress | None = None) -> None:
        """Make every image of `rows` reachable (upload what is missing; add local storage)."""
        if self.cfg.image_mode == "upload":
            self._upload(rows, progress)
        elif self.cfg.image_mode == "local-files" and rows:
            folders = [str(Path(r["image_path"]).resolve().parent) for r in rows]
            folder = Path(os.path.commonpath(folders))
            self._relative(folder)
            self.client.ensure_local_storage(self.project_id, folder)

    def _relative(self, path: Path) -> str:
        try:
            return path.resolve().relative_to(self.root).as_posix()
        except ValueError:
            raise ReviewError(
                f"image {path} is outside the document root {self.root}: serve it with "
                "image_mode upload, or set LOCAL_FILES_DOCUMENT_ROOT to a parent folder"
            ) from None

    def _upload(self, rows: Sequence[dict], progress: Progress | None = None) -> None:
        missing = {r["image_sha256"]: r["image_path"] for r in rows if r["image_sha256"] not in self.urls}
        todo = list(missing.items())
        for start in range(0, len(todo), UPLOAD_FILES_PER_REQUEST):
            if progress:
                progress("push: upload images", start, len(todo))
            chunk = todo[start : start + UPLOAD_FILES_PER_REQUEST]
            files = [(f"{sha}{Path(p).suffix.lower() or '.jpg'}", _read(p)) for sha, p in chunk]
            ids = self.client.upload_images(self.media_id, files)
            for task in self.client.tasks_by_id(self.media_id, ids):
                url = task["data"]["image"]
                self.urls[Path(url).stem.split("-", 1)[-1]] = url
        if progress and todo:
            progress("push: upload images", len(todo), len(todo))

    def url(self, row: dict) -> str:
        mode = self.cfg.image_mode
        if mode == "upload":
            return self.urls[row["image_sha256"]]
        if mode == "local-files":
            return "/data/local-files/?d=" + urllib.parse.quote(self._relative(Path(row["image_path"])))
        data = _read(row["image_path"])
        if len(data) > self.cfg.data_url_max_bytes:
            raise ReviewError(
                f"image {row['image_path']} is {len(data)} bytes, over review.data_url_max_bytes "
                f"({self.cfg.data_url_max_bytes}): use image_mode upload or local-files"
            )
        return f"data:{_mime(row['image_path'])};base64,{base64.b64encode(data).decode()}"


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ReviewError(f"cannot read image {path}: {err.strerror}") from None


# -- push ---------------------------------------------------------------------------------


def model_version(row: dict) -> str:
    """Teacher model + template sha: what produced the pre-filled rationale."""
    return f"{row.get('teacher_model') or 'teacher'}@{(row.get('prompt_sha') or '')[:12]}"


def make_task(row: dict, image_url: str) -> dict:
    """One Label Studio task: the data the interface shows + the rationale as a prediction."""
    answer = row.get("answer") or row.get("prediction") or ""
    data = {
        "draft_id": row["draft_id"],
        "finecot_key": task_key(row["draft_id"], row.get("response")),
        "response_sha256": text_sha256(row.get("response")),
        "item_id": row.get("item_id"),
        "dataset": row.get("dataset"),
        "image": image_url,
        "question": row.get("question") or "",
        "teacher_answer": answer,
        "label": row.get("label") or "",
        "filter_verdict": row.get("verdict") or "(not filtered)",
        "filter_reasons": _reasons_text(row),
        "hinted": "yes: the prompt named the gold label" if row.get("hinted") else "no",
    }
    rationale = {
        "from_name": "rationale", "to_name": "question", "type": "textarea",
        "value": {"text": [row.get("response") or ""]},
    }
    return {"data": data, "predictions": [{"model_version": model_version(row), "result": [rationale]}]}


def _reasons_text(row: dict) -> str:
    """The filter's reasons and flags, each with its meaning (curation/filter/filters.py)."""
    from curation.filter.filters import REASONS

    parts = [f"{code}: {REASONS[code][1]}" if code in REASONS else code
             for code in row.get("reasons") or ()]
    parts += [f"flag {code}: {REASONS[code][1]}" if code in REASONS else f"flag {code}"
              for code in row.get("flags") or ()]
    return "; ".join(parts) or "none"


def _registry(run: RunDir) -> Registry | None:
    return Registry.load(run.registry) if run.registry.exists() else None


def _project_state(run: RunDir) -> dict:
    path = run.path(PROJECT_FILE)
    return read_json(path) if path.exists() else {}


def push(recipe: Recipe, run: RunDir, progress: Progress | None = None) -> PushResult:
    """Create (first push) or reuse the run's project, and import the selected rows whose
    key (row + text) is not in it yet (batched)."""
    cfg = recipe.review
    rows = select_rows(run, cfg)
    client = open_client(cfg)
    title = project_title(recipe, run)
    state = _project_state(run)
    ours = state.get("url") == client.url  # the state of another server names other ids
    known = cfg.project_id or (state.get("project_id") if ours else None)
    media = state.get("media_project_id") if ours and known == state.get("project_id") else None
    datasets = sorted({r["dataset"] for r in rows if r.get("dataset")})
    xml = label_config(_registry(run), datasets, sorted({r.get("label") or "" for r in rows}),
                       unseen_classes(run, datasets))
    project_id = client.ensure_project(title, xml, known, cfg.overlap)
    images = Images(client, cfg, project_id, title, media)
    write_json_atomic(run.path(PROJECT_FILE), {
        "url": client.url, "title": title, "project_id": project_id,
        "media_project_id": images.media_id or state.get("media_project_id"),
        "image_mode": cfg.image_mode, "run_id": lineage.run_id(run),
    })

    existing = {_key_of(t["data"]) for t in client.iter_tasks(project_id)}
    legacy = {k.split("@", 1)[0] for k in existing if k.endswith("@unknown-text")}
    todo = [r for r in rows if task_key(r["draft_id"], r.get("response")) not in existing
            and r["draft_id"] not in legacy]  # (an old task's row is not pushed twice)
    log.info("review push: %d selected, %d already in project %d, %d to import",
             len(rows), len(rows) - len(todo), project_id, len(todo))
    if cfg.image_mode == "upload":  # every missing image first: one bar, then the tasks
        images.prepare(todo, progress)
    for start in range(0, len(todo), cfg.batch_size):
        batch = todo[start : start + cfg.batch_size]
        images.prepare(batch)
        client.import_tasks(project_id, [make_task(r, images.url(r)) for r in batch])
        if progress:
            progress("push: import tasks", start + len(batch), len(todo))
    removed = remove_duplicates(client, project_id) if todo else 0
    return PushResult(project_id, len(rows), len(rows) - len(todo), len(todo), removed)


def remove_duplicates(client: Client, project_id: int) -> int:
    """Delete all but the oldest task of each key; return how many were deleted."""
    seen: dict[str, int] = {}
    extra: list[int] = []
    for task in sorted(client.iter_tasks(project_id), key=lambda t: t["id"]):
        key = _key_of(task["data"])
        if key in seen:
            extra.append(task["id"])
        else:
            seen[key] = task["id"]
    for task_id in extra:
        client.delete_task(task_id)
    if extra:
        log.warning("review push: removed %d duplicate task(s) left by an interrupted push", len(extra))
    return len(extra)


# -- pull ---------------------------------------------------------------------------------

ANNOTATION_SCHEMA = pa.schema([
    ("draft_id", pa.string()),
    ("response_sha256", pa.string()),  # the text the task showed (null: unknown, never applied)
    ("task_id", pa.int64()),
    ("annotation_id", pa.int64()),
    ("reviewer", pa.string()),
    ("created_at", pa.string()),
    ("updated_at", pa.string()),
    ("decision", pa.string()),
    ("reject_reasons", pa.list_(pa.string())),
    ("rationale", pa.string()),
    ("label_wrong", pa.bool_()),
    ("corrected_label", pa.string()),
    ("note", pa.string()),
])


def _choices(result: list[dict], name: str) -> list[str]:
    return [c for r in result if r.get("from_name") == name for c in r.get("value", {}).get("choices", [])]


def _class_name(choice: str | None) -> str | None:
    """The class a correction names (the alias is stored; a value shown with the unseen mark
    is read back as the class too)."""
    return choice.removesuffix(UNSEEN_MARK) if choice else choice


def _text(result: list[dict], name: str) -> str | None:
    parts = [t for r in result if r.get("from_name") == name for t in r.get("value", {}).get("text", [])]
    return "\n".join(parts) if parts else None


def _shown_sha(task: dict) -> str | None:
    """sha256 of the text a task showed: recorded at push; for a task pushed by an older
    finecot, the text of its prediction when the export carries it; else unknown (None)."""
    if task["data"].get("response_sha256"):
        return task["data"]["response_sha256"]
    for prediction in task.get("predictions") or ():
        text = _text(prediction.get("result") or [], "rationale") if isinstance(prediction, dict) else None
        if text is not None:
            return text_sha256(text)
    return None


def annotation_rows(tasks: list[dict], users: dict[int, str]) -> list[dict]:
    """Flatten an export: one row per submitted (not cancelled) annotation."""
    rows = []
    for task in tasks:
        for ann in task.get("annotations") or ():
            if ann.get("was_cancelled"):
                continue
            result = ann.get("result") or []
            who = ann.get("completed_by")
            who_id = who.get("id") if isinstance(who, dict) else who
            decision = (_choices(result, "decision") or [None])[0]
            rows.append({
                "draft_id": task["data"].get("draft_id"),
                "response_sha256": _shown_sha(task),
                "task_id": int(task["id"]),
                "annotation_id": int(ann["id"]),
                "reviewer": users.get(who_id, str(who_id)) if who_id is not None else None,
                "created_at": ann.get("created_at"),
                "updated_at": ann.get("updated_at") or ann.get("created_at"),
                "decision": decision,
                "reject_reasons": _choices(result, "reject_reasons"),
                "rationale": _text(result, "rationale"),
                "label_wrong": LABEL_WRONG in _choices(result, "label_wrong"),
                "corrected_label": _class_name((_choices(result, "correct_label") or [None])[0]),
                "note": _text(result, "note"),
            })
    return rows


def pull(recipe: Recipe, run: RunDir, progress: Progress | None = None) -> Path:
    """Export the project's annotations into review_annotations.parquet (a full snapshot)."""
    state = _project_state(run)
    project_id = recipe.review.project_id or state.get("project_id")
    if project_id is None:
        raise ReviewError(f"no review project for {run.root}: run `finecot review push` first")
    client = open_client(recipe.review)
    if progress:
        progress("pull: export annotations", 0, 1)
    rows = annotation_rows(client.export(int(project_id)), client.users())
    if progress:
        progress("pull: export annotations", 1, 1)
    path = run.path(ANNOTATIONS_FILE)
    write_parquet_atomic(path, pa.Table.from_pylist(rows, schema=ANNOTATION_SCHEMA))
    log.info("review pull: %d annotation(s) from project %s -> %s", len(rows), project_id, path)
    return path


def read_annotations(run: RunDir) -> list[dict[str, Any]]:
    path = run.require(run.path(ANNOTATIONS_FILE), "review pull")
    return pq.read_table(path).to_pylist()
