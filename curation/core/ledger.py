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

Schema changes go through MIGRATIONS (applied in order, tracked by PRAGMA user_version).
`finecot ledger stats|export|path --run DIR` reads it from the command line.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from curation.core.tables import ParquetStreamWriter, atomic_path

log = logging.getLogger(__name__)

STATUSES = ("ok", "length", "empty", "failed")

# Ordered migrations: index i brings the schema from user_version i to i + 1. Append only.
MIGRATIONS: list[str] = [
    # 1: one row per request key
    """
    CREATE TABLE requests (
        key TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('ok', 'length', 'empty', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        response TEXT,
        finish_reason TEXT,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        completion_tokens INTEGER NOT NULL DEFAULT 0,
        latency_s REAL,
        cost_usd REAL NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    """,
    # 2: provenance (which endpoint answered; item/sample/strategy/template the key stands for)
    """
    ALTER TABLE requests ADD COLUMN endpoint TEXT;
    ALTER TABLE requests ADD COLUMN meta TEXT;
    CREATE INDEX requests_status ON requests (status);
    """,
    # 3: run events: budget stops, interrupts, resumes
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT
    );
    """,
]

COLUMNS = (
    "key", "model", "status", "attempts", "error", "response", "finish_reason",
    "prompt_tokens", "completion_tokens", "latency_s", "cost_usd", "created_at",
    "updated_at", "endpoint", "meta",
)


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

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


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
    """A read-only connection; `immutable` when the folder is not writable, since SQLite
    cannot create the WAL index (-shm) there (what is only in a leftover -wal is not read)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    if not os.access(path.parent, os.W_OK):
        uri += "&immutable=1"
    return sqlite3.connect(uri, uri=True, isolation_level=None)


class Ledger:
    """The SQLite ledger of one run. Not thread-safe: one event loop writes to it."""

    def __init__(self, path: str | Path, readonly: bool = False):
        """Open (or create) the ledger; readonly=True only reads, and works in a read-only
        run directory. A file that is not a readable ledger raises LedgerError."""
        self.path = Path(path)
        try:
            if readonly:
                self._db = _open_readonly(self.path)
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across kills
                self._db.execute("PRAGMA busy_timeout=30000")
                self._migrate()
            cost, tokens = self._db.execute(
                "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(prompt_tokens + completion_tokens), 0)"
                " FROM requests"
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
        """Counts by status and model, tokens, cost, attempts, latency, top errors, events."""
        db = self._db
        by_status = dict(db.execute("SELECT status, COUNT(*) FROM requests GROUP BY status"))
        by_model = {
            model: {"requests": n, "cost_usd": cost, "tokens": tokens}
            for model, n, cost, tokens in db.execute(
                "SELECT model, COUNT(*), SUM(cost_usd), SUM(prompt_tokens + completion_tokens)"
                " FROM requests GROUP BY model"
            )
        }
        n, attempts, prompt, completion, cost, latency = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(attempts), 0), COALESCE(SUM(prompt_tokens), 0),"
            " COALESCE(SUM(completion_tokens), 0), COALESCE(SUM(cost_usd), 0), AVG(latency_s)"
            " FROM requests"
        ).fetchone()
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
            "attempts": attempts,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "cost_usd": cost,
            "mean_latency_s": latency,
            "failure_reasons": errors,
            "recent_events": events,
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
        its attempts.
        """
        now = time.time()
        self._db.execute(
            """
            INSERT INTO requests (key, model, status, attempts, error, response, finish_reason,
                prompt_tokens, completion_tokens, latency_s, cost_usd, created_at, updated_at,
                endpoint, meta)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (key) DO UPDATE SET
                model = excluded.model, status = excluded.status,
                attempts = requests.attempts + excluded.attempts, error = excluded.error,
                response = excluded.response, finish_reason = excluded.finish_reason,
                prompt_tokens = requests.prompt_tokens + excluded.prompt_tokens,
                completion_tokens = requests.completion_tokens + excluded.completion_tokens,
                latency_s = excluded.latency_s, cost_usd = requests.cost_usd + excluded.cost_usd,
                updated_at = excluded.updated_at, endpoint = excluded.endpoint,
                meta = excluded.meta
            """,
            (
                entry.key, entry.model, entry.status, entry.attempts, entry.error, entry.response,
                entry.finish_reason, entry.prompt_tokens, entry.completion_tokens,
                entry.latency_s, entry.cost_usd, now, now, entry.endpoint,
                json.dumps(entry.meta, sort_keys=True) if entry.meta else None,
            ),
        )  # autocommit mode: the statement is its own transaction
        self._cost += entry.cost_usd
        self._tokens += entry.tokens

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
                out.write(row)
            count = out.count
        return count


EXPORT_SCHEMA = pa.schema([
    ("key", pa.string()), ("model", pa.string()), ("status", pa.string()),
    ("attempts", pa.int64()), ("error", pa.string()), ("response", pa.string()),
    ("finish_reason", pa.string()), ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()), ("latency_s", pa.float64()), ("cost_usd", pa.float64()),
    ("endpoint", pa.string()), ("meta", pa.string()), ("created_at", pa.float64()),
    ("updated_at", pa.float64()),
])


def _entry(row: tuple, meta: bool = True) -> Entry:
    values = dict(zip(COLUMNS, row, strict=True))
    values["meta"] = json.loads(values["meta"]) if meta and values["meta"] else {}
    return Entry(**values)
