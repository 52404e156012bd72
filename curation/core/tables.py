"""Atomic writes of the run directory's files, and small Arrow helpers.

A run can be killed at any moment: every table and manifest is written to a temporary
sibling and renamed into place, so a reader sees the old file or the new one, never half.
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


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def read_table(path: str | Path) -> pa.Table:
    return pq.read_table(path)
