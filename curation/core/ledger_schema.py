"""The ledger's SQLite schema (curation/core/ledger.py): ordered migrations, the running
totals kept by triggers, batch mode's tables, and the statements every write uses.

Append only: MIGRATIONS[i] brings a ledger from PRAGMA user_version i to i + 1, each in one
transaction, so a ledger written by any earlier finecot opens with the current one (and a
newer ledger is refused rather than misread).
"""

from __future__ import annotations

import pyarrow as pa

STATUSES = ("ok", "length", "empty", "failed")

# What one request adds to the running totals of its (model, status) (migration 5); {r} is
# NEW or OLD in the triggers. Attempts are per HTTP request: n samples of one request share it.
_TOTALS = {
    "requests": "1",
    "attempts": "{r}.attempts * 1.0 / MAX({r}.shared, 1)",
    "prompt_tokens": "{r}.prompt_tokens",
    "completion_tokens": "{r}.completion_tokens",
    "cost_usd": "{r}.cost_usd",
    "latency_sum": "COALESCE({r}.latency_s, 0)",
    "latency_n": "{r}.latency_s IS NOT NULL",
    "usage_estimated": "{r}.usage_estimated",
    "with_reasoning": "{r}.reasoning IS NOT NULL",
    "old_rows": "{r}.raw_fields = 0",
}


def _totals_migration() -> str:
    """The totals table, filled once from the requests, and the triggers that keep it."""
    names = ", ".join(_TOTALS)

    def of(row: str) -> list[str]:
        return [e.format(r=row) for e in _TOTALS.values()]

    kinds = {c: "REAL" if c in ("attempts", "cost_usd", "latency_sum") else "INTEGER"
             for c in _TOTALS}
    table = ", ".join(f"{c} {kinds[c]} NOT NULL DEFAULT 0" for c in _TOTALS)
    fill = ", ".join(f"SUM({e})" for e in of("requests"))
    added = ", ".join(f"{c} = {c} + excluded.{c}" for c in _TOTALS)
    add = (f"INSERT INTO totals (model, status, {names}) VALUES (NEW.model, NEW.status, "
           f"{', '.join(of('NEW'))}) ON CONFLICT (model, status) DO UPDATE SET {added};")
    taken = ", ".join(f"{c} = {c} - ({e})" for c, e in zip(_TOTALS, of("OLD"), strict=True))
    remove = f"UPDATE totals SET {taken} WHERE model = OLD.model AND status = OLD.status;"
    return f"""
    CREATE TABLE totals (model TEXT NOT NULL, status TEXT NOT NULL, {table},
                         PRIMARY KEY (model, status));
    INSERT INTO totals (model, status, {names})
        SELECT model, status, {fill} FROM requests GROUP BY model, status;
    CREATE TRIGGER totals_on_insert AFTER INSERT ON requests BEGIN {add} END;
    CREATE TRIGGER totals_on_update AFTER UPDATE ON requests BEGIN {remove} {add} END;
    CREATE TRIGGER totals_on_delete AFTER DELETE ON requests BEGIN {remove} END;
    """


# What a batch-mode row adds to the batch totals of its model (migration 6); {r} as above.
# Batch rows are those whose endpoint starts with "batch:" (curation/draft/batch.py).
_BATCH_TOTALS = {
    "requests": "1",
    "prompt_tokens": "{r}.prompt_tokens",
    "completion_tokens": "{r}.completion_tokens",
    "cost_usd": "{r}.cost_usd",
}


def _batch_migration() -> str:
    """Batch mode: the files and batches of a run, each request line of them, and the
    running totals of the rows answered through a batch (so `ledger stats` tells online and
    batch apart at no cost)."""
    names = ", ".join(_BATCH_TOTALS)

    def of(row: str) -> list[str]:
        return [e.format(r=row) for e in _BATCH_TOTALS.values()]

    table = ", ".join(f"{c} {'REAL' if c == 'cost_usd' else 'INTEGER'} NOT NULL DEFAULT 0"
                      for c in _BATCH_TOTALS)
    added = ", ".join(f"{c} = {c} + excluded.{c}" for c in _BATCH_TOTALS)
    add = (f"INSERT INTO batch_totals (model, {names}) VALUES (NEW.model, {', '.join(of('NEW'))})"
           f" ON CONFLICT (model) DO UPDATE SET {added};")
    taken = ", ".join(f"{c} = {c} - ({e})" for c, e in zip(_BATCH_TOTALS, of("OLD"), strict=True))
    remove = f"UPDATE batch_totals SET {taken} WHERE model = OLD.model;"
    is_new, is_old = "NEW.endpoint LIKE 'batch:%'", "OLD.endpoint LIKE 'batch:%'"
    return f"""
    CREATE TABLE batch_files (
        name TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('api', 'offline')),
        model TEXT NOT NULL,
        endpoint TEXT,
        path TEXT NOT NULL,
        lines INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        max_tokens INTEGER,
        state TEXT NOT NULL,
        file_id TEXT,
        batch_id TEXT,
        output_file_id TEXT,
        error_file_id TEXT,
        upload_started REAL,
        create_started REAL,
        detail TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE batch_lines (
        file TEXT NOT NULL REFERENCES batch_files (name),
        key TEXT NOT NULL,
        line INTEGER NOT NULL,
        meta TEXT,
        prompt_estimate REAL NOT NULL DEFAULT 0,
        est_tokens REAL NOT NULL DEFAULT 0,
        est_cost REAL NOT NULL DEFAULT 0,
        state TEXT NOT NULL DEFAULT 'pending',
        result_sha TEXT,
        PRIMARY KEY (file, key)
    );
    CREATE INDEX batch_lines_key ON batch_lines (key);
    CREATE INDEX batch_lines_pending ON batch_lines (state) WHERE state = 'pending';
    CREATE INDEX batch_lines_result ON batch_lines (result_sha) WHERE result_sha IS NOT NULL;
    CREATE TABLE batch_totals (model TEXT PRIMARY KEY, {table});
    INSERT INTO batch_totals (model, {names})
        SELECT model, {", ".join(f"SUM({e})" for e in of("requests"))} FROM requests
        WHERE endpoint LIKE 'batch:%' GROUP BY model;
    CREATE TRIGGER batch_totals_on_insert AFTER INSERT ON requests WHEN {is_new}
        BEGIN {add} END;
    CREATE TRIGGER batch_totals_on_update_old AFTER UPDATE ON requests WHEN {is_old}
        BEGIN {remove} END;
    CREATE TRIGGER batch_totals_on_update_new AFTER UPDATE ON requests WHEN {is_new}
        BEGIN {add} END;
    CREATE TRIGGER batch_totals_on_delete AFTER DELETE ON requests WHEN {is_old}
        BEGIN {remove} END;
    """


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
    # 4: the raw answer as the server sent it: `response` is the message content alone and
    # `reasoning` what the server put beside it (reasoning_content, reasoning...), so the text
    # can be rebuilt later without paying again. Rows from before have raw_fields = 0: their
    # `response` is all that was kept (`finecot ledger reparse` tells which may have lost a
    # reasoning). `shared`: samples answered by the same HTTP request (attempts are counted
    # once per request); `usage_estimated`: the server reported no usage, the tokens are ours.
    """
    ALTER TABLE requests ADD COLUMN reasoning TEXT;
    ALTER TABLE requests ADD COLUMN extra TEXT;
    ALTER TABLE requests ADD COLUMN usage_estimated INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE requests ADD COLUMN shared INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE requests ADD COLUMN raw_fields INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: running totals per (model, status), kept by triggers in the same transaction as each
    # write, so opening a ledger, its budget check and `ledger stats` cost the same at ten
    # rows or ten million (they read this table, not every request).
    _totals_migration(),
    # 6: batch mode (curation/draft/batch.py): batch_files (one per JSONL file: its provider
    # file and batch ids, state, and when an upload or a create was attempted, so a process
    # killed before it heard the answer finds the file or batch again instead of paying
    # twice), batch_lines (one per request line: its key, provenance, budget estimate and
    # outcome), and batch_totals (rows answered through a batch, per model).
    _batch_migration(),
]

# The states of a batch line. pending: in a file whose results are not in yet; answered /
# failed: its result is recorded in `requests`; expired, cancelled, missing (no result line
# came back): nothing recorded, the key is asked again in the next batch.
LINE_STATES = ("pending", "answered", "failed", "expired", "cancelled", "missing")

BATCH_FILE_COLUMNS = (
    "name", "kind", "model", "endpoint", "path", "lines", "bytes", "max_tokens", "state", "file_id",
    "batch_id", "output_file_id", "error_file_id", "upload_started", "create_started", "detail",
)

COLUMNS = (
    "key", "model", "status", "attempts", "error", "response", "finish_reason",
    "prompt_tokens", "completion_tokens", "latency_s", "cost_usd", "created_at",
    "updated_at", "endpoint", "meta", "reasoning", "extra", "usage_estimated", "shared",
    "raw_fields",
)


# A key recorded before (a failed request sent again) keeps its created_at and adds up its
# attempts, tokens and cost: every attempt that was paid for stays on the bill.
UPSERT = """
    INSERT INTO requests (key, model, status, attempts, error, response, finish_reason,
        prompt_tokens, completion_tokens, latency_s, cost_usd, created_at, updated_at,
        endpoint, meta, reasoning, extra, usage_estimated, shared, raw_fields)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET
        model = excluded.model, status = excluded.status,
        attempts = requests.attempts + excluded.attempts, error = excluded.error,
        response = excluded.response, finish_reason = excluded.finish_reason,
        prompt_tokens = requests.prompt_tokens + excluded.prompt_tokens,
        completion_tokens = requests.completion_tokens + excluded.completion_tokens,
        latency_s = excluded.latency_s, cost_usd = requests.cost_usd + excluded.cost_usd,
        updated_at = excluded.updated_at, endpoint = excluded.endpoint,
        meta = excluded.meta, reasoning = excluded.reasoning, extra = excluded.extra,
        usage_estimated = MAX(requests.usage_estimated, excluded.usage_estimated),
        shared = excluded.shared, raw_fields = excluded.raw_fields
"""


EXPORT_SCHEMA = pa.schema([
    ("key", pa.string()), ("model", pa.string()), ("status", pa.string()),
    ("attempts", pa.int64()), ("error", pa.string()), ("response", pa.string()),
    ("finish_reason", pa.string()), ("prompt_tokens", pa.int64()),
    ("completion_tokens", pa.int64()), ("latency_s", pa.float64()), ("cost_usd", pa.float64()),
    ("endpoint", pa.string()), ("meta", pa.string()), ("created_at", pa.float64()),
    ("updated_at", pa.float64()), ("reasoning", pa.string()), ("extra", pa.string()),
    ("usage_estimated", pa.bool_()), ("shared", pa.int64()), ("raw_fields", pa.bool_()),
])
