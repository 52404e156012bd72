"""The scripted teacher in its own process, for the benchmarks: on a 2-core machine the
client being measured and the server must not share one Python process (or one GIL).

    from teacher_process import cpu_seconds, server_requests, start_teacher
    proc, root = start_teacher("--latency", "0.5")     # root: http://127.0.0.1:PORT
    ...
    proc.terminate()
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_teacher(*flags: str) -> tuple[subprocess.Popen, str]:
    """`finecot synthetic teacher FLAGS` on a free port, once it answers /health."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "curation.cli", "synthetic", "teacher",
                             "--port", str(port), *flags], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    root = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{root}/health", timeout=1):
                return proc, root
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the scripted teacher did not start")


def server_requests(root: str) -> int:
    """Requests the server has received so far (its own count, GET /stats)."""
    with urllib.request.urlopen(f"{root}/stats?log=0", timeout=30) as resp:
        return json.loads(resp.read())["counts"]["requests"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc): who the bottleneck is, whatever
    else the machine is doing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")
