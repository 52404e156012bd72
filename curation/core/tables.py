"""Atomic writes of the run directory's files, and small Arrow helpers.

A run can be killed at any moment: every table and manifest is written to a temporary
sibling and renamed into place, so a reader sees the old file or the new one, never half.
Files get the user's umask (0644 under the usual 022), like any file a program creates:
another user or a container reading the run sees them.

Reads name the file when it cannot be read (`read_table`, `read_json`): pyarrow's and json's
own messages do not, and "Parquet magic bytes not found" says nothing about which table is
broken or how to rebuild it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# Which command writes each file of a run: what an error about a damaged file tells the user
# to rerun. (docs/architecture.md has the same map.)
PRODUCERS = {
    "items.parquet": "ingest", "quarantine.parquet": "ingest", "registry.json": "ingest",
    "sources.json": "ingest", "split.json": "split", "pool.parquet": "split",
    "test.parquet": "split", "drafts.parquet": "draft", "draft_report.json": "draft",
    "accepted.parquet": "filter", "rejected.parquet": "filter", "funnel.json": "filter",
    "review_annotations.parquet": "review pull",
    "reviewed.parquet": "review apply", "review_excluded.parquet": "review apply",
    "label_corrections.parquet": "review apply", "review_stats.json": "review apply",
    "triplets.parquet": "export", "export_skipped.parquet": "export", "export.json": "export",
}


class DamagedFileError(ValueError):
    """A run file that exists but cannot be read; the message names it and what to do."""


def umask() -> int:
    """The process umask, read without changing it (os.umask can only set it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)  # no /proc: set and restore (a moment's race, at worst)
    os.umask(current)
    return current


def damaged(path: str | Path, err: BaseException) -> DamagedFileError:
    """The error for a file that exists but cannot be read: which file, and how to rebuild it."""
    path = Path(path)
    detail = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
    producer = PRODUCERS.get(path.name)
    if path.name.startswith("reviewed.v"):
        producer = "review apply"
    fix = (f"rerun `finecot {producer} --run {path.parent}` to rebuild it, or restore it from "
           "a backup" if producer else "restore it from a backup or rebuild it")
    if path.name == "review_project.json":  # (a new push would start a new project)
        fix = ("fix it by hand (it holds the url, title and project_id of the run's Label "
               "Studio project), or delete it: the next `finecot review push` then starts a new "
               "project")
    if path.name == "manifest.json":
        fix = ("delete it: each stage records itself again when it next runs (until then, "
               "no warnings about stale tables)")
    return DamagedFileError(f"{path} is damaged and cannot be read ({detail}): {fix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~umask())  # mkstemp makes 0600; a file should get the umask's mode
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False, default=str) + "\n")


def write_parquet_atomic(path: str | Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


class ParquetStreamWriter:
    """Write record batches to a Parquet file as they come; rename into place on close.

    Bounded memory for stages that stream (ingest of a large folder); nothing visible under
    the final name until the whole table is written.
    """

    def __init__(self, path: str | Path, schema: pa.Schema, batch_rows: int = 2048):
        self._path = Path(path)
        self._schema = schema
        self._batch_rows = batch_rows
        self._rows: list[dict] = []
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self._path.with_name(f".{self._path.name}.{os.getpid()}.tmp")
        self._writer = pq.ParquetWriter(self._tmp, schema)
        self.count = 0

    def write(self, row: dict) -> None:
        self._rows.append(row)
        self.count += 1
        if len(self._rows) >= self._batch_rows:
            self._flush()

    def write_many(self, rows: Iterable[dict]) -> None:
        for row in rows:
            self.write(row)

    def _flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self._schema))
            self._rows = []

    def close(self) -> None:
        self._flush()
        self._writer.close()
        os.replace(self._tmp, self._path)

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> ParquetStreamWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_table(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """A Parquet table; a damaged file is named (DamagedFileError), a missing one is not
    caught here (callers say which stage makes it)."""
    try:
        return pq.read_table(path, columns=columns)
    except (FileNotFoundError, PermissionError):
        raise
    except (pa.ArrowException, OSError) as err:
        raise damaged(path, err) from None


def read_json(path: str | Path) -> Any:
    """A JSON file of the run; invalid JSON is named (DamagedFileError)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise damaged(path, err) from None
    except json.JSONDecodeError as err:
        raise damaged(path, err) from None


def check_readable(path: str | Path) -> None:
    """Read every page of a Parquet file (or parse a JSON file); DamagedFileError if one
    cannot be. For files a stage reads with its own code (the error paths name them)."""
    path = Path(path)
    if path.suffix == ".json":
        read_json(path)
        return
    try:
        file = pq.ParquetFile(path)
        for index in range(file.num_row_groups):
            file.read_row_group(index)
    except (FileNotFoundError, PermissionError):
        raise
    except (pa.ArrowException, OSError) as err:
        raise damaged(path, err) from None


def damaged_files(root: str | Path) -> list[DamagedFileError]:
    """The run's top-level Parquet and JSON files that cannot be read (a full read of each).

    Called only when a command failed with a decoding error that did not say which file it
    came from: the user learns which file is broken and which command rebuilds it.
    """
    found = []
    for path in sorted(Path(root).glob("*")):
        if path.is_file() and path.suffix in (".parquet", ".json") and not path.name.startswith("."):
            try:
                check_readable(path)
            except DamagedFileError as err:
                found.append(err)
            except OSError:
                continue
    return found
