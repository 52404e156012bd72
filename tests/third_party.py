"""Where the trainers' own code lives for the tests, and how a check runs in its venv.

- `.venv-trainers` (Makefile target `trainers`, installed by `make test`): LLaMA-Factory from
  PyPI (its argument parser and dataset loader are imported, see
  tests/trainers/llamafactory_check.py) and what EasyR1's data, config and reward modules
  import, with EasyR1's own pins (transformers < 5), apart from the project venv.
- EasyR1 itself (hiyouga/EasyR1) is not published on PyPI, and this machine reaches no other
  source: its code is read from a snapshot at the pinned commit, `EASYR1_SRC` or
  `../shared/easyr1` beside the repository (make one with
  `git archive EASYR1_COMMIT verl LICENSE | tar -x -C ../shared/easyr1` in a clone). Without
  it the EasyR1 check is skipped with that instruction; the rest of the EasyR1 export
  (reward, config values, files) is still tested here.

    result = run_check("easyr1_check.py", "--src", src, "--folder", folder, ...)
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINERS_PYTHON = REPO / ".venv-trainers" / "bin" / "python"
CHECKS = Path(__file__).resolve().parent / "trainers"
EASYR1_COMMIT = "b44b311b669bf1fd1aa2fc36f2251482ba33cb16"  # 2026-07-30, verl 0.3.3.dev0
EASYR1_VERSION = '__version__ = "0.3.3.dev0"'


class CheckFailed(AssertionError):
    """A trainer's own code refused our files (its output is in the message)."""


def easyr1_source() -> Path | None:
    """The pinned EasyR1 snapshot, or None when there is none on this machine."""
    for candidate in (os.environ.get("EASYR1_SRC"), REPO.parent / "shared" / "easyr1"):
        if candidate and (Path(candidate) / "verl" / "__init__.py").is_file():
            source = Path(candidate)
            if EASYR1_VERSION not in (source / "verl" / "__init__.py").read_text():
                raise CheckFailed(f"{source} is not EasyR1 at {EASYR1_COMMIT} ({EASYR1_VERSION})")
            return source
    return None


def run_check(script: str, *args: str | Path, timeout: int = 600) -> dict:
    """Run tests/trainers/SCRIPT in .venv-trainers; its JSON result, or CheckFailed."""
    if not TRAINERS_PYTHON.exists():
        raise CheckFailed(f"{TRAINERS_PYTHON} is missing: run `make trainers` (make test does)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_DATASETS_CACHE=str(Path(tmp) / "cache"),
                   TOKENIZERS_PARALLELISM="false", RAY_USAGE_STATS_ENABLED="0")
        proc = subprocess.run([str(TRAINERS_PYTHON), str(CHECKS / script), *map(str, args),
                               "--out", str(out)], capture_output=True, text=True,
                              timeout=timeout, env=env, cwd=tmp)
        if proc.returncode != 0 or not out.exists():
            raise CheckFailed(f"{script} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
        return json.loads(out.read_text())
