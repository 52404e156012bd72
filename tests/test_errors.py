"""Errors, not tracebacks: what goes wrong with the user's files is named, with what to do.

Issue 17, point 5, one test per case, each through the real command line (exit code 2, an
`error:` line that names the file or URL, no traceback), nothing lost:

- `finecot publish` when the Hub answers an HTTP error, cannot be reached, or offline mode
  is on (a local HTTP server stands in for the Hub: the protocol boundary);
- a damaged ledger.sqlite (draft, ledger stats, ledger export);
- damaged Parquet data pages (split, filter, export, draft);
- a read-only run directory: read-only commands work, the others say what is wrong
  (run as an unprivileged user when the tests run as root, who ignores permissions);
- invalid JSON (registry.json, split.json, review_project.json, manifest.json), named;
- a truncated pool.parquet, named (draft, filter, export).

    .venv/bin/pytest -q tests/test_errors.py
"""

from __future__ import annotations

import http.server
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from export_fixtures import make_run
from labelstudio import free_port
from typer.testing import CliRunner

from curation.cli import app
from curation.core.ledger import Entry, Ledger
from curation.review.push_pull import ANNOTATION_SCHEMA

REPO = Path(__file__).resolve().parents[1]


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "2000"})
    output = " ".join(result.output.split())  # (rich may wrap a long message)
    return result.exit_code, output, result


def assert_clean_error(code: int, output: str, *names: str) -> None:
    assert code == 2, output
    assert "error:" in output and "Traceback" not in output, output
    for name in names:
        assert name in output, (name, output)


def corrupt_pages(path: Path) -> None:
    """Overwrite the first data page header of a Parquet file (its footer stays valid)."""
    offset = pq.ParquetFile(path).metadata.row_group(0).column(0).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 24] = b"\xff" * 24
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def run(tmp_path):
    run, recipe = make_run(tmp_path)
    run.save_recipe(recipe)
    return run


# -- publish ---------------------------------------------------------------------------------


def _dataset(folder: Path) -> Path:
    (folder / "data" / "sft").mkdir(parents=True)
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: sft\n  data_files:\n  - split: train\n"
        "    path: data/sft/train-*\n---\n# a finecot export\n")
    pq.write_table(pa.table({"id": ["a"]}), folder / "data" / "sft" / "train-00000-of-00001.parquet")
    return folder


class _Failing(http.server.BaseHTTPRequestHandler):
    """A Hub that answers every request with HTTP 503."""

    def _answer(self):
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": "Service Unavailable"}')

    do_GET = do_POST = do_PUT = do_HEAD = _answer

    def log_message(self, *args):
        pass


def _publish(folder: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    return subprocess.run(
        [sys.executable, "-m", "curation.cli", "publish", "someone/birds-cot", "--dir", str(folder)],
        cwd=REPO, env={**clean, "HF_TOKEN": "hf_secret_token_123", "COLUMNS": "2000", **env},
        capture_output=True, text=True, timeout=120)


def test_publish_says_what_the_hub_answered_and_never_shows_a_traceback(tmp_path):
    folder = _dataset(tmp_path / "dataset")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hub = f"http://127.0.0.1:{server.server_port}"
    try:
        failing = _publish(folder, HF_ENDPOINT=hub)
    finally:
        server.shutdown()
    unreachable = _publish(folder, HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    offline = _publish(folder, HF_HUB_OFFLINE="1")
    for result, words in ((failing, [hub, "HTTP 503", "rerun"]),
                          (unreachable, ["cannot reach", "HF_ENDPOINT"]),
                          (offline, ["HF_HUB_OFFLINE"])):
        text = " ".join(result.stderr.split())
        assert_clean_error(result.returncode, text, "someone/birds-cot", *words)
        assert "hf_secret_token_123" not in result.stdout + result.stderr


# -- the ledger ------------------------------------------------------------------------------


def test_a_damaged_ledger_is_named_by_draft_ledger_stats_and_ledger_export(run, tmp_path):
    run.ledger.write_bytes(b"this is not an SQLite database, it was damaged" * 100)
    before = run.ledger.read_bytes()
    for args in (["ledger", "stats"], ["ledger", "export"],
                 ["draft", "--base-url", "http://127.0.0.1:9/v1"]):
        extra = [str(tmp_path / "out.jsonl")] if args[-1] == "export" else []
        code, output, _ = invoke(*args, "--run", str(run.root), *extra)
        assert_clean_error(code, output, str(run.ledger), "damaged")
    assert run.ledger.read_bytes() == before  # nothing was overwritten


# -- damaged Parquet pages, truncated tables ---------------------------------------------------


@pytest.mark.parametrize("command,table", [
    ("split", "items.parquet"), ("filter", "drafts.parquet"), ("export", "accepted.parquet"),
    ("draft", "pool.parquet"),
])
def test_damaged_parquet_pages_are_named_with_the_command_that_rebuilds_them(run, command, table):
    corrupt_pages(run.path(table))
    extra = ["--base-url", "http://127.0.0.1:9/v1"] if command == "draft" else []
    code, output, _ = invoke(command, "--run", str(run.root), *extra)
    producer = {"items.parquet": "ingest", "drafts.parquet": "draft",
                "accepted.parquet": "filter", "pool.parquet": "split"}[table]
    assert_clean_error(code, output, str(run.path(table)), "damaged", f"finecot {producer}")


@pytest.mark.parametrize("command", ["draft", "filter", "export"])
def test_a_truncated_pool_is_named(run, command):
    truncate(run.pool)
    extra = ["--base-url", "http://127.0.0.1:9/v1"] if command == "draft" else []
    code, output, _ = invoke(command, "--run", str(run.root), *extra)
    assert_clean_error(code, output, str(run.pool), "finecot split")


# -- invalid JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize("command,name", [
    (["split"], "registry.json"), (["filter"], "split.json"),
    (["review", "pull"], "review_project.json"), (["export"], "manifest.json"),
])
def test_invalid_json_names_its_file(run, command, name):
    run.path(name).write_text('{"datasets": {"toy": ')  # cut short
    code, output, _ = invoke(*command, "--run", str(run.root))
    assert_clean_error(code, output, str(run.path(name)))


# -- a read-only run directory ---------------------------------------------------------------


def _as_reader(args: list[str]) -> subprocess.CompletedProcess:
    """`finecot ARGS` as a user who may read the run but not write it: root ignores
    permission bits, so as root the command runs without the capabilities that let it."""
    prefix = []
    if os.geteuid() == 0:
        assert shutil.which("setpriv"), "setpriv (util-linux) is needed to test as root"
        caps = "-dac_override,-dac_read_search"
        prefix = ["setpriv", "--bounding-set", caps, "--inh-caps", caps]
    return subprocess.run([*prefix, sys.executable, "-m", "curation.cli", *args], cwd=REPO,
                          env={**os.environ, "COLUMNS": "2000"}, capture_output=True, text=True,
                          timeout=300)


def test_a_read_only_run_directory(tmp_path):
    run, recipe = make_run(tmp_path)
    run.save_recipe(recipe)
    pq.write_table(pa.Table.from_pylist([], schema=ANNOTATION_SCHEMA),
                   run.path("review_annotations.parquet"))
    with Ledger(run.ledger) as ledger:
        ledger.record(Entry(key="k", model="m", status="ok", attempts=1, response="hi",
                            prompt_tokens=3, completion_tokens=2, cost_usd=0.5))
    for path in [run.root, *run.root.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    files = {p: p.read_bytes() for p in run.root.rglob("*") if p.is_file()}
    try:
        stats = _as_reader(["ledger", "stats", "--run", str(run.root)])
        assert stats.returncode == 0, stats.stderr
        assert "$0.5000" in stats.stdout
        exported = _as_reader(["ledger", "export", "--run", str(run.root), str(tmp_path / "l.jsonl")])
        assert exported.returncode == 0, exported.stderr
        assert (tmp_path / "l.jsonl").read_text().count("\n") == 1

        for command in (["split"], ["filter"], ["export"], ["report"], ["review", "apply"], ["draft"]):
            result = _as_reader([*command, "--run", str(run.root)])
            text = " ".join(result.stderr.split())
            assert_clean_error(result.returncode, text, "read-only", str(run.root))
        assert {p: p.read_bytes() for p in run.root.rglob("*") if p.is_file()} == files
    finally:
        for path in [run.root, *run.root.rglob("*")]:
            path.chmod(stat.S_IRWXU if path.is_dir() else 0o644)


def test_a_read_only_run_directory_with_a_leftover_write_ahead_log(tmp_path):
    # a draft killed mid-run leaves its last rows in ledger.sqlite-wal (checkpointed by the
    # next writer): a reader of the read-only copy must see them or refuse, never miss them
    run, recipe = make_run(tmp_path)
    run.save_recipe(recipe)
    killed = subprocess.run([sys.executable, "-c", (
        "import os, sys; from curation.core.ledger import Entry, Ledger\n"
        "ledger = Ledger(sys.argv[1])\n"
        "ledger.record(Entry(key='k', model='m', status='ok', attempts=1, response='hi',"
        " prompt_tokens=3, completion_tokens=2, cost_usd=0.5))\n"
        "os._exit(0)  # no close, no checkpoint: as a killed run\n"), str(run.ledger)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert killed.returncode == 0, killed.stderr
    wal = run.ledger.with_name(run.ledger.name + "-wal")
    assert wal.stat().st_size > 0
    for path in [run.root, *run.root.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:  # with the WAL index (-shm) left beside it, SQLite reads the log: the row is there
        stats = _as_reader(["ledger", "stats", "--run", str(run.root)])
        assert stats.returncode == 0 and "$0.5000" in stats.stdout, stats.stdout + stats.stderr
        run.root.chmod(stat.S_IRWXU)
        run.ledger.with_name(run.ledger.name + "-shm").unlink()
        run.root.chmod(0o555)
        # without it, SQLite cannot read the log in a read-only folder: refused, not skipped
        stats = _as_reader(["ledger", "stats", "--run", str(run.root)])
        assert_clean_error(stats.returncode, " ".join(stats.stderr.split()), wal.name, "writable")
    finally:
        for path in [run.root, *run.root.rglob("*")]:
            path.chmod(stat.S_IRWXU if path.is_dir() else 0o644)
