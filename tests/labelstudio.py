"""Start a REAL Label Studio server for the tests (and bench/review.py), once per test run.

The server lives in its own virtual environment, `.venv-labelstudio` (its pins conflict with
ours; `make labelstudio` builds it). It runs on SQLite in a fresh data dir, bound to
127.0.0.1 on a free port, with a user and a legacy API token given through environment
variables, and local-files serving enabled under a document root.

With pytest-xdist several workers may need it at once: `shared_server(root)` serialises on a
file lock in `root` (the pytest basetemp's parent, common to all workers), starts the server
if nobody has, counts its users, and the last user out stops it.

    with shared_server(Path("/tmp/ls")) as ls:
        print(ls.url, ls.token)

If the server cannot start, `LabelStudioError` is raised with the tail of its log: tests fail
loudly, they never skip.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LS_BIN = REPO / ".venv-labelstudio" / "bin" / "label-studio"
START_TIMEOUT_S = 300  # first start runs every migration (~65 s on 2 cores; slower when busy)


class LabelStudioError(RuntimeError):
    """The test server could not be started."""


@dataclass
class Server:
    url: str
    token: str
    username: str
    pid: int
    data_dir: str
    document_root: str
    log: str
    password: str = ""  # the reviewer's, for tests that log in with a browser


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start(
    data_dir: Path, document_root: Path, token: str | None = None, port: int | None = None,
    password: str | None = None,
) -> Server:
    """Start a server in a new session (its own process group); wait for /health.

    A restart on the same data dir must pass the same `token`: the user exists already.
    """
    if not LS_BIN.exists():
        raise LabelStudioError(
            f"{LS_BIN} is missing: run `make labelstudio` (installs label-studio 1.23.x)"
        )
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    username, token = "reviewer@finecot.test", token or secrets.token_hex(20)
    password = password or secrets.token_hex(12)
    env = {
        **os.environ,
        "LABEL_STUDIO_USERNAME": username,
        "LABEL_STUDIO_PASSWORD": password,
        "LABEL_STUDIO_USER_TOKEN": token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LOCAL_FILES_SERVING_ENABLED": "true",
        "LOCAL_FILES_DOCUMENT_ROOT": str(document_root),
        "DJANGO_DB": "sqlite",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
    }
    env.pop("VIRTUAL_ENV", None)
    log = data_dir / "server.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [str(LS_BIN), "start", "--no-browser", "--internal-host", "127.0.0.1",
             "--port", str(port), "--data-dir", str(data_dir)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=data_dir, start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_pid(proc.pid)
            tail = log.read_text(errors="replace")[-3000:]
            raise LabelStudioError(f"Label Studio did not become healthy at {url}:\n{tail}")
        time.sleep(1)
    return Server(url, token, username, proc.pid, str(data_dir), str(document_root), str(log),
                  password)


def stop_pid(pid: int) -> None:
    """Stop the server's process group: SIGINT (its Ctrl-C path), SIGKILL after 10 s."""
    try:
        os.killpg(pid, signal.SIGINT)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    with suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def shared_server(root: Path, document_root: Path | None = None) -> Iterator[Server]:
    """One server for every process that enters with the same `root`; the last one stops it."""
    root.mkdir(parents=True, exist_ok=True)
    state, lock = root / "labelstudio.json", root / "labelstudio.lock"
    with _locked(lock):
        info = json.loads(state.read_text()) if state.exists() else None
        if info is None or not healthy(info["server"]["url"]):
            token_file = root / "labelstudio.token"  # test-only credentials of a throwaway server
            password_file = root / "labelstudio.password"
            for file, size in ((token_file, 20), (password_file, 12)):
                if not file.exists():
                    file.write_text(secrets.token_hex(size))
            server = start(root / "labelstudio-data", document_root or root, token_file.read_text(),
                           password=password_file.read_text())
            info = {"server": asdict(server), "users": 0}
        info["users"] += 1
        state.write_text(json.dumps(info))
    try:
        yield Server(**info["server"])
    finally:
        with _locked(lock):
            info = json.loads(state.read_text())
            info["users"] -= 1
            if info["users"] <= 0:
                stop_pid(info["server"]["pid"])
                state.unlink()
            else:
                state.write_text(json.dumps(info))


def login_cookies(server: Server) -> dict[str, str]:
    """Session cookies of the reviewer, logged in through Label Studio's own login form (what
    a browser needs to open the labeling screen; the API token does not open pages)."""
    import re

    import httpx

    with httpx.Client(base_url=server.url, follow_redirects=True, timeout=60) as client:
        page = client.get("/user/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
        if token is None:
            raise LabelStudioError(f"no login form at {server.url}/user/login/")
        client.post("/user/login/", data={"email": server.username, "password": server.password,
                                          "csrfmiddlewaretoken": token.group(1)},
                    headers={"Referer": f"{server.url}/user/login/"})
        if "sessionid" not in client.cookies:
            raise LabelStudioError(f"login as {server.username} at {server.url} failed")
        return dict(client.cookies.items())
