"""The ledger: a SQLite record of every teacher request (the cache, the resume log, the bill).

One row per request key (sha256 of the canonical request: model, messages with images as
their sha256, sampling params, sample index, template sha). A key already answered is served
from here and never sent again. Every answer is committed as it lands (WAL,
synchronous=NORMAL), so a run killed with SIGKILL loses nothing that was answered.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "ledger.sqlite")
    >>> with Ledger(path) as ledger:
    ...     ledger.record(Entry(key="k1", model="m", status="ok", attempts=1, response="hi",
    ...                         prompt_tokens=10, completion_tokens=5, cost_usd=0.001))
    ...     ledger.get_many(["k1", "k2"])["k1"].response, ledger.totals()
    ('hi', (0.001, 15))

Schema changes go through MIGRATIONS (curation/core/ledger_schema.py: applied in order,
tracked by PRAGMA user_version).
Batch mode's files and lines (schema 6) live here too, next to the requests they answer, so
a result and the line it closes are written in one transaction.
`finecot ledger stats|export|path --run DIR` reads it from the command line.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curation.core.ledger_schema import (
    BATCH_FILE_COLUMNS,
    COLUMNS,
    EXPORT_SCHEMA,
    LINE_STATES,
    MIGRATIONS,
    STATUSES,
    UPSERT,
)
from curation.core.tables import ParquetStreamWriter, atomic_path

log = logging.getLogger(__name__)

def compose_answer(content: str | None, reasoning: str | None) -> str | None:
    """The text the filters read: the reasoning a server returned outside `content`
    (reasoning_content, reasoning) put back in `<think>` before the content, unless the
    content has its own `<think>` already.

    >>> compose_answer("<answer>Ani</answer>", "Black bill, long tail.")
    '<think>\\nBlack bill, long tail.\\n</think>\\n<answer>Ani</answer>'
    >>> compose_answer("<think>x</think><answer>Ani</answer>", "x")
    '<think>x</think><answer>Ani</answer>'
    >>> compose_answer("plain", None)
    'plain'
    """
    if not reasoning or not reasoning.strip():
        return content
    if content and "<think" in content.lower():
        return content
    return f"<think>\n{reasoning.strip()}\n</think>\n{(content or '').lstrip()}"


@dataclass
class Entry:
    """One request's outcome, as recorded. `meta` is provenance only (never secrets)."""

    key: str
    model: str
    status: str
    attempts: int = 0
    error: str | None = None
    response: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float | None = None
    cost_usd: float = 0.0
    endpoint: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    reasoning: str | None = None  # what the server returned beside `response` (the content)
    extra: dict[str, Any] = field(default_factory=dict)  # reasoning_field, truth, ...
    usage_estimated: bool = False
    shared: int = 1  # samples answered by the same HTTP request
    raw_fields: bool = True  # False: a row from before content and reasoning were kept apart

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def text(self) -> str | None:
        """The answer as the filters, the judge and the evaluator read it."""
        return compose_answer(self.response, self.reasoning)


def cost_usd(prices: Mapping[str, Any], model: str, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for one request from a {model: {input_per_m, output_per_m}} table (0 if unlisted).

    >>> cost_usd({"m": {"input_per_m": 2.0, "output_per_m": 8.0}}, "m", 1_000_000, 500_000)
    6.0
    """
    price = prices.get(model)
    if price is None:
        return 0.0
    if not isinstance(price, Mapping):
        price = price.model_dump()
    return (prompt_tokens * price["input_per_m"] + completion_tokens * price["output_per_m"]) / 1e6


class LedgerError(ValueError):
    """The ledger file cannot be opened or read; the message names it and what to do."""


def _unreadable(path: Path, err: sqlite3.DatabaseError) -> str:
    text = str(err)
    if "unable to open" in text or "readonly" in text or "read-only" in text:
        return (f"cannot open the ledger {path} for writing ({text}): is the run directory "
                "read-only? Make it writable, or copy the run somewhere writable; "
                "`finecot ledger stats` and `ledger export` read it as it is")
    return (f"{path} is not a readable finecot ledger ({text}): the file is damaged. Restore "
            "it from a backup, or move it aside and rerun: a new ledger starts, and the requests "
            f"it held are sent (and paid for) again (`sqlite3 {path} .recover` may save them)")


def _open_readonly(path: Path) -> sqlite3.Connection:
    """A read-only connection, in a read-only folder too.

    SQLite reads a WAL database only where it can create the WAL index (-shm), or where both
    -wal and -shm are left (a killed run). Else the file is opened `immutable`, which is right
    only when no -wal holds rows: a leftover one in a read-only folder is refused, since
    reading around it would show the run without its last requests."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    if os.access(path.parent, os.W_OK):
        return sqlite3.connect(uri, uri=True, isolation_level=None)
    wal = path.with_name(f"{path.name}-wal")
    if not (wal.is_file() and wal.stat().st_size > 0):
        return sqlite3.connect(f"{uri}&immutable=1", uri=True, isolation_level=None)
    db = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError as err:
        db.close()
        raise LedgerError(
            f"{path}: its last writes are still in {wal.name} (the run that wrote them was "
            f"stopped before it closed the ledger), and SQLite cannot read them in a read-only "
            f"directory ({err}). Make the run directory writable, or copy the run with its "
            "-wal file somewhere writable, and run the command again") from None


class Ledger:
    """The SQLite ledger of one run. Not thread-safe: one event loop writes to it."""

    def __init__(self, path: str | Path, readonly: bool = False):
        """Open (or create) the ledger; readonly=True only reads, and works in a read-only
        run directory. A file that is not a readable ledger raises LedgerError."""
        self.path = Path(path)
        try:
            if readonly:
                self._db = _open_readonly(self.path)
                if self.schema_version < len(MIGRATIONS):
                    raise LedgerError(
                        f"{self.path} was written by an older finecot (schema "
                        f"{self.schema_version}, this one reads {len(MIGRATIONS)}) and the run "
                        "directory is read-only, so it cannot be migrated: copy the run somewhere "
                        "writable, or make it writable, and run the command again")
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across kills
                self._db.execute("PRAGMA busy_timeout=30000")
                self._migrate()
            cost, tokens = self._db.execute(  # the running totals: no scan of the requests
                "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(prompt_tokens + completion_tokens), 0)"
                " FROM totals"
            ).fetchone()
        except sqlite3.DatabaseError as err:
            raise LedgerError(_unreadable(self.path, err)) from None
        self._cost, self._tokens = float(cost), int(tokens)

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this finecot knows "
                f"({len(MIGRATIONS)}): upgrade finecot"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            # executescript commits first; BEGIN/COMMIT make each migration all-or-nothing
            self._db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
            log.debug("ledger %s migrated to schema version %d", self.path, number)

    @property
    def schema_version(self) -> int:
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads ------------------------------------------------------------------------------

    def _select(self, columns: str, keys: Iterable[str]) -> Iterable[tuple]:
        keys = list(keys)
        for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            yield from self._db.execute(
                f"SELECT {columns} FROM requests WHERE key IN ({marks})", chunk)

    def get_many(self, keys: Iterable[str], meta: bool = True) -> dict[str, Entry]:
        """Entries of the keys the ledger holds (missing keys are absent from the result).
        meta=False skips decoding the provenance JSON (hot paths that do not need it)."""
        found: dict[str, Entry] = {}
        for row in self._select(", ".join(COLUMNS), keys):
            entry = _entry(row, meta)
            found[entry.key] = entry
        return found

    def statuses(self, keys: Iterable[str]) -> dict[str, str]:
        """{key: status} of the keys the ledger holds: the cache check, without the texts."""
        return dict(self._select("key, status", keys))

    def totals(self) -> tuple[float, int]:
        """(USD, tokens) spent so far over the whole ledger: what budgets are checked against."""
        return self._cost, self._tokens

    def rows(self) -> Iterable[Entry]:
        for row in self._db.execute(f"SELECT {', '.join(COLUMNS)} FROM requests ORDER BY created_at"):
            yield _entry(row)

    def stats(self) -> dict[str, Any]:
        """Counts by status and model, tokens, cost, attempts, latency, top errors, events.
        Read from the running totals: the same cost at any ledger size."""
        db = self._db
        by_status = dict(db.execute("SELECT status, SUM(requests) FROM totals GROUP BY status"))
        by_model = {
            model: {"requests": n, "cost_usd": cost, "tokens": tokens}
            for model, n, cost, tokens in db.execute(
                "SELECT model, SUM(requests), SUM(cost_usd), SUM(prompt_tokens + completion_tokens)"
                " FROM totals GROUP BY model"
            )
        }
        # attempts are per HTTP request: a request answering n samples is on n rows
        n, attempts, prompt, completion, cost, latency_sum, latency_n, estimated, outside, old = (
            db.execute(
                "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(attempts), 0),"
                " COALESCE(SUM(prompt_tokens), 0), COALESCE(SUM(completion_tokens), 0),"
                " COALESCE(SUM(cost_usd), 0), COALESCE(SUM(latency_sum), 0),"
                " COALESCE(SUM(latency_n), 0), COALESCE(SUM(usage_estimated), 0),"
                " COALESCE(SUM(with_reasoning), 0), COALESCE(SUM(old_rows), 0) FROM totals"
            ).fetchone())
        batch_n, batch_tokens, batch_cost = db.execute(
            "SELECT COALESCE(SUM(requests), 0), COALESCE(SUM(prompt_tokens + completion_tokens), 0),"
            " COALESCE(SUM(cost_usd), 0) FROM batch_totals").fetchone()
        by_mode = {
            "online": {"requests": n - batch_n, "tokens": prompt + completion - batch_tokens,
                       "cost_usd": cost - batch_cost},
            "batch": {"requests": batch_n, "tokens": batch_tokens, "cost_usd": batch_cost},
        }
        files = dict(db.execute("SELECT state, COUNT(*) FROM batch_files GROUP BY state"))
        pending = db.execute("SELECT COUNT(*) FROM batch_lines WHERE state = 'pending'").fetchone()[0]
        errors = dict(db.execute(
            "SELECT substr(error, 1, instr(error || ':', ':') - 1) AS reason, COUNT(*) FROM requests"
            " WHERE status = 'failed' GROUP BY reason ORDER BY COUNT(*) DESC LIMIT 10"
        ))
        events = [
            {"at": at, "kind": kind, "detail": detail}
            for at, kind, detail in db.execute(
                "SELECT at, kind, detail FROM events ORDER BY id DESC LIMIT 10"
            )
        ]
        return {
            "path": str(self.path),
            "schema_version": self.schema_version,
            "requests": n,
            "by_status": {s: by_status.get(s, 0) for s in STATUSES},
            "by_model": by_model,
            "attempts": round(attempts),
            "usage_estimated": estimated,
            "reasoning_outside_content": outside,
            "stored_before_raw_fields": old,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost_usd": cost,
            "mean_latency_s": latency_sum / latency_n if latency_n else None,
            "failure_reasons": errors,
            "recent_events": events,
            "by_mode": by_mode,
            "batch_files": files,
            "batch_lines_pending": pending,
        }

    def problems(self) -> list[str]:
        """Rows that break the ledger's invariants (empty list: consistent)."""
        checks = {
            "answered row without response": "status IN ('ok', 'length') AND response IS NULL",
            "failed row without error": "status = 'failed' AND (error IS NULL OR error = '')",
            # an unreadable image fails before any request: attempts 0, error "image: ..."
            "row without attempts": "attempts < 1 AND NOT (status = 'failed' AND error LIKE 'image:%')",
            "negative usage": "prompt_tokens < 0 OR completion_tokens < 0 OR cost_usd < 0",
            "updated before created": "updated_at < created_at",
        }
        found = []
        for what, where in checks.items():
            for (key,) in self._db.execute(f"SELECT key FROM requests WHERE {where}"):
                found.append(f"{what}: {key}")
        found += [f"integrity: {r}" for (r,) in self._db.execute("PRAGMA integrity_check")
                  if r != "ok"]
        return found

    # -- writes -----------------------------------------------------------------------------

    def record(self, entry: Entry) -> None:
        """Insert or update one request's outcome and commit it (durable when this returns).

        A key recorded before (a failed request sent again) keeps its created_at and adds up
        its attempts, tokens and cost.
        """
        self._db.execute(UPSERT, _values(entry, time.time()))  # autocommit: its own transaction
        self._cost += entry.cost_usd
        self._tokens += entry.tokens

    def record_many(self, entries: Iterable[Entry]) -> int:
        """`record` for many entries in one transaction (imports, benchmarks): all or none."""
        count = 0
        with self.transaction():
            for entry in entries:
                self.record(entry)
                count += 1
        return count

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Every write inside the block (record, batch updates) commits together or not at
        all: a process killed halfway leaves the ledger as it was before the block."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            cost, tokens = self._db.execute(
                "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(prompt_tokens + completion_tokens),"
                " 0) FROM totals").fetchone()
            self._cost, self._tokens = float(cost), int(tokens)
            raise
        self._db.execute("COMMIT")

    def unrecoverable(self) -> list[str]:
        """Keys of answered rows stored before the ledger kept reasoning apart (raw_fields 0)
        whose text has no `<think>`: if their server returned the reasoning outside `content`,
        it was dropped then and cannot be rebuilt. Rows with their `<think>` are complete."""
        return [key for (key,) in self._db.execute(
            "SELECT key FROM requests WHERE raw_fields = 0 AND status IN ('ok', 'length')"
            " AND (response IS NULL OR instr(lower(response), '<think') = 0) ORDER BY created_at")]

    def mark_for_reask(self, keys: Iterable[str], reason: str) -> int:
        """Mark answered rows as failed with `reason`: the next draft (draft.retry_failed)
        asks them again. Their cost stays in the totals: it was paid."""
        keys = list(keys)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            self._db.execute(
                f"UPDATE requests SET status = 'failed', error = ?, updated_at = ? "
                f"WHERE key IN ({','.join('?' * len(chunk))})", (reason, time.time(), *chunk))
        if keys:
            self.event("reask", f"{len(keys)} rows marked: {reason}")
        return len(keys)

    # -- batch mode (schema 6; curation/draft/batch.py) --------------------------------------

    def add_batch_file(self, file: Mapping[str, Any], lines: Iterable[tuple]) -> int:
        """Record a built batch file (BATCH_FILE_COLUMNS) and its request lines, each
        (key, line number, meta JSON, prompt estimate, estimated tokens, estimated cost), in
        one transaction; return the line count."""
        now, count = time.time(), 0
        names = [c for c in BATCH_FILE_COLUMNS if c in file]
        with self.transaction():
            self._db.execute(
                f"INSERT INTO batch_files ({', '.join(names)}, created_at, updated_at) VALUES "
                f"({', '.join('?' * len(names))}, ?, ?)", [file[c] for c in names] + [now, now])
            for line in lines:
                self._db.execute(
                    "INSERT INTO batch_lines (file, key, line, meta, prompt_estimate, est_tokens,"
                    " est_cost) VALUES (?, ?, ?, ?, ?, ?, ?)", (file["name"], *line))
                count += 1
        return count

    def batch_files(self, open_only: bool = False) -> list[dict[str, Any]]:
        """The run's batch files, oldest first; open_only: those whose results are not in."""
        where = " WHERE state NOT IN ('collected', 'dropped')" if open_only else ""
        cursor = self._db.execute(f"SELECT * FROM batch_files{where} ORDER BY created_at, name")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    def update_batch_file(self, name: str, **fields: Any) -> None:
        unknown = set(fields) - set(BATCH_FILE_COLUMNS)
        if unknown:
            raise ValueError(f"unknown batch_files columns: {sorted(unknown)}")
        sets = ", ".join(f"{c} = ?" for c in fields)
        self._db.execute(f"UPDATE batch_files SET {sets}, updated_at = ? WHERE name = ?",
                         (*fields.values(), time.time(), name))

    def pending_lines(self, keys: Iterable[str]) -> dict[str, str]:
        """{key: batch file} of the keys waiting in a batch whose results are not in."""
        found: dict[str, str] = {}
        keys = list(keys)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            found.update(self._db.execute(  # by key: the pending index would scan them all
                f"SELECT key, file FROM batch_lines INDEXED BY batch_lines_key WHERE key IN "
                f"({','.join('?' * len(chunk))}) AND state = 'pending'", chunk))
        return found

    def batch_tries(self, keys: Iterable[str]) -> dict[str, int]:
        """{key: batches it went into that did not answer it} (failed, expired, missing)."""
        found: dict[str, int] = {}
        keys = list(keys)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            found.update(self._db.execute(
                f"SELECT key, COUNT(*) FROM batch_lines INDEXED BY batch_lines_key WHERE key IN "
                f"({','.join('?' * len(chunk))}) AND state IN ('failed', 'expired', 'missing')"
                " GROUP BY key", chunk))
        return found

    def batch_committed(self) -> tuple[float, float]:
        """(USD, tokens) the pending lines may still cost at most: the budget counts them as
        spent until their results come in."""
        cost, tokens = self._db.execute(
            "SELECT COALESCE(SUM(est_cost), 0), COALESCE(SUM(est_tokens), 0) FROM batch_lines"
            " WHERE state = 'pending'").fetchone()
        return float(cost), float(tokens)

    def pending_line(self, key: str) -> tuple[str, dict[str, Any], float] | None:
        """(file, meta, prompt estimate) of a key waiting in a batch, or None."""
        row = self._db.execute(
            "SELECT file, meta, prompt_estimate FROM batch_lines INDEXED BY batch_lines_key"
            " WHERE key = ? AND state = 'pending' ORDER BY rowid LIMIT 1", (key,)).fetchone()
        if row is None:
            return None
        return row[0], json.loads(row[1]) if row[1] else {}, row[2]

    def pending_meta(self, file: str) -> list[tuple[str, dict[str, Any]]]:
        """(key, meta) of the lines of `file` still pending."""
        return [(key, json.loads(meta) if meta else {}) for key, meta in self._db.execute(
            "SELECT key, meta FROM batch_lines WHERE file = ? AND state = 'pending'", (file,))]

    def result_seen(self, result_sha: str) -> bool:
        """Was a result line with this sha256 recorded before (an import run twice)?"""
        return self._db.execute("SELECT 1 FROM batch_lines WHERE result_sha = ? LIMIT 1",
                                (result_sha,)).fetchone() is not None

    def close_line(self, file: str, key: str, state: str, result_sha: str | None = None) -> None:
        if state not in LINE_STATES:
            raise ValueError(f"unknown batch line state {state!r}")
        self._db.execute("UPDATE batch_lines SET state = ?, result_sha = ? WHERE file = ? AND"
                         " key = ?", (state, result_sha, file, key))

    def close_pending(self, file: str, state: str) -> int:
        """Close every line of `file` still pending with `state`; return how many."""
        return self._db.execute("UPDATE batch_lines SET state = ? WHERE file = ? AND state = "
                                "'pending'", (state, file)).rowcount

    def line_states(self, file: str) -> dict[str, int]:
        return dict(self._db.execute(
            "SELECT state, COUNT(*) FROM batch_lines WHERE file = ? GROUP BY state", (file,)))

    def event(self, kind: str, detail: str = "") -> None:
        self._db.execute(
            "INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)", (time.time(), kind, detail)
        )

    def export(self, path: str | Path) -> int:
        """Stream every row to Parquet (.parquet) or JSON lines (.jsonl), atomically; return
        the row count. Memory stays flat however large the ledger."""
        path = Path(path)
        if path.suffix not in (".parquet", ".jsonl"):
            raise ValueError(f"ledger export: unknown format {path.suffix!r}; use .parquet or .jsonl")
        count = 0
        if path.suffix == ".jsonl":
            with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as out:
                for entry in self.rows():
                    out.write(json.dumps(asdict(entry), ensure_ascii=False) + "\n")
                    count += 1
            return count
        with ParquetStreamWriter(path, EXPORT_SCHEMA) as out:
            for entry in self.rows():
                row = asdict(entry)
                row["meta"] = json.dumps(row["meta"], sort_keys=True)
                row["extra"] = json.dumps(row["extra"], sort_keys=True)
                out.write(row)
            count = out.count
        return count


def _values(entry: Entry, now: float) -> tuple:
    return (
        entry.key, entry.model, entry.status, entry.attempts, entry.error, entry.response,
        entry.finish_reason, entry.prompt_tokens, entry.completion_tokens, entry.latency_s,
        entry.cost_usd, now, now, entry.endpoint,
        json.dumps(entry.meta, sort_keys=True) if entry.meta else None, entry.reasoning,
        json.dumps(entry.extra, sort_keys=True) if entry.extra else None,
        int(entry.usage_estimated), max(1, entry.shared), int(entry.raw_fields),
    )


def _entry(row: tuple, meta: bool = True) -> Entry:
    values = dict(zip(COLUMNS, row, strict=True))
    values["meta"] = json.loads(values["meta"]) if meta and values["meta"] else {}
    values["extra"] = json.loads(values["extra"]) if values["extra"] else {}
    values["usage_estimated"] = bool(values["usage_estimated"])
    values["raw_fields"] = bool(values["raw_fields"])
    return Entry(**values)
