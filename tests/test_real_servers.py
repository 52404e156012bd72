"""finecot against OpenAI-compatible servers nobody here wrote, started for real:

- `transformers serve` (transformers 5.x, the `serve` extra) serving the tiny model that
  `finecot train tiny-model` saves, in a process that never imports finecot: the image
  reaches the model, `n` (which it ignores) is detected, a wrong model name stops the run
  with the server's own words;
- the LiteLLM proxy (its own venv, `make litellm`) in front of the scripted teacher: it
  moves each answer's `<think>` into `reasoning_content`, and every draft is still
  accepted; a model name it does not route is a 400 that stops the run.

    .venv/bin/pytest -q tests/test_real_servers.py
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from draft_fixtures import drafts, make_run, pool_size, spec
from PIL import Image

from curation.core.ledger import Ledger
from curation.draft.stage import DraftStopped, draft_stage
from curation.filter.stage import filter_stage
from curation.synthetic.teacher import TeacherServer
from curation.teacher.client import REFUSE_AFTER

REPO = Path(__file__).resolve().parents[1]
TRANSFORMERS_BIN = Path(sys.executable).with_name("transformers")
LITELLM_BIN = REPO / ".venv-litellm" / "bin" / "litellm"
START_TIMEOUT_S = 240  # imports on 2 busy cores


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise RuntimeError(f"the server did not answer {url} in {START_TIMEOUT_S} s: "
                       f"{log.read_text()[-2000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment of a third-party server: no PYTHONPATH, offline."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def _post(base_url: str, body: dict, key: str = "none") -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{base_url}/chat/completions", json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


# -- transformers serve with the tiny model --------------------------------------------------


@pytest.fixture(scope="module")
def served_tiny(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(base_url, model id) of a stock `transformers serve` on a fresh tiny model."""
    from train.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("served-tiny")
    model = build_tiny_model(root / "tiny", ["a crimson crowned warbler with a golden breast"])
    shipped = [p.read_text() for p in model.glob("*.py")]
    assert shipped and not any("curation" in s or "import train" in s for s in shipped)
    port = _free_port()
    log = root / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(TRANSFORMERS_BIN), "serve", "--port", str(port), "--device", "cpu",
             "--trust-remote-code", str(model)],
            cwd=root, env=_clean_env(), stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_up(f"http://127.0.0.1:{port}/health", proc, log)
        yield f"http://127.0.0.1:{port}/v1", str(model)
    finally:
        _stop(proc)


def _png_url() -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (112, 112), (205, 24, 52)).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_the_tiny_model_served_by_transformers_serve_receives_the_image(served_tiny):
    base_url, model = served_tiny
    text = {"type": "text", "text": "What bird is this?"}
    tokens = {}
    for name, content in (("text", [text]),
                          ("image", [{"type": "image_url", "image_url": {"url": _png_url()}}, text])):
        status, body = _post(base_url, {"model": model, "max_tokens": 4,
                                        "messages": [{"role": "user", "content": content}]})
        assert status == 200, body
        tokens[name] = body["usage"]["prompt_tokens"]
    # 56x56 pixels -> 4 image tokens, plus <|vision_start|> and <|vision_end|>
    assert tokens["image"] == tokens["text"] + 6


def test_drafts_through_transformers_serve_detect_the_ignored_n(tmp_path, synthetic_world,
                                                                served_tiny):
    base_url, model = served_tiny
    server = type("Endpoint", (), {"base_url": base_url})()
    run = make_run(tmp_path, synthetic_world)
    recipe = spec(run, server, teacher={"model": model, "max_tokens": 8, "concurrency": 2},
                  draft={"samples": 2, "min_usable_share": 0})
    report = draft_stage(recipe, run)  # a random tiny model: answers, not rationales
    rows = list(drafts(run).values())
    assert len(rows) == 2 * pool_size(run) == report.drafts
    assert all(r["status"] in ("ok", "length") for r in rows)
    with Ledger(run.ledger) as ledger:
        entries = list(ledger.rows())
    # the server ignores n: every sample was asked alone and answered alone
    assert all(e.shared == 1 and e.attempts == 1 for e in entries)
    assert all(e.prompt_tokens > 0 and not e.usage_estimated for e in entries)


def test_a_wrong_model_name_at_transformers_serve_stops_the_run(tmp_path, synthetic_world,
                                                                served_tiny):
    base_url, _ = served_tiny
    server = type("Endpoint", (), {"base_url": base_url})()
    run = make_run(tmp_path, synthetic_world)
    with pytest.raises(DraftStopped, match="Server is pinned to"):
        draft_stage(spec(run, server, teacher={"model": "Qwen/Qwen2.5-VL-7B-Instruct",
                                               "concurrency": 2}), run)
    assert len(drafts(run)) <= 2 + REFUSE_AFTER


# -- the LiteLLM proxy in front of the scripted teacher --------------------------------------


@pytest.fixture(scope="module")
def litellm(synthetic_world, tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(base_url, master key) of a LiteLLM proxy routing model "teacher" to a scripted
    teacher that never errs."""
    if not LITELLM_BIN.exists():
        pytest.fail(f"{LITELLM_BIN} is missing: run `make litellm` (litellm[proxy] in its own venv)")
    root = tmp_path_factory.mktemp("litellm")
    teacher = TeacherServer(world=str(synthetic_world)).start()
    config = {"model_list": [{"model_name": "teacher", "litellm_params": {
        "model": "openai/finecot-synthetic-teacher", "api_base": teacher.base_url,
        "api_key": "none"}}]}
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    key = "sk-finecot-test-master-key"
    port = _free_port()
    log = root / "litellm.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(LITELLM_BIN), "--config", str(root / "config.yaml"), "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=root, env=_clean_env(LITELLM_MASTER_KEY=key, LITELLM_LOG="ERROR"),
            stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_up(f"http://127.0.0.1:{port}/health/liveliness", proc, log)
        yield f"http://127.0.0.1:{port}/v1", key
    finally:
        _stop(proc)
        teacher.stop()


def test_behind_litellm_every_draft_keeps_its_reasoning_and_is_accepted(
        tmp_path, synthetic_world, litellm, monkeypatch):
    base_url, key = litellm
    monkeypatch.setenv("OPENAI_API_KEY", key)
    proxy = type("Endpoint", (), {"base_url": base_url})()
    run = make_run(tmp_path, synthetic_world, per_class=2)
    # model "teacher" is LiteLLM's route; candidates drawn from seen classes (as the demo
    # does) keep unseen names out, so a teacher that never errs is accepted every time
    recipe = spec(run, proxy, teacher={"concurrency": 4}, prompts={"candidates": 4})
    draft_stage(recipe, run)
    funnel = filter_stage(recipe, run)
    assert funnel["drafts"] == pool_size(run) and funnel["accepted"] == funnel["drafts"]
    with Ledger(run.ledger) as ledger:
        entries = list(ledger.rows())
    assert entries and all(e.extra.get("reasoning_field") == "reasoning_content"
                           and "<think" not in e.response for e in entries)
    assert key not in run.ledger.read_bytes().decode("utf-8", "replace")


def test_behind_litellm_an_unknown_model_stops_the_run(tmp_path, synthetic_world, litellm,
                                                       monkeypatch):
    base_url, key = litellm
    monkeypatch.setenv("OPENAI_API_KEY", key)
    proxy = type("Endpoint", (), {"base_url": base_url})()
    run = make_run(tmp_path, synthetic_world)
    with pytest.raises(DraftStopped, match="Invalid model name passed in model=gpt-teacher"):
        draft_stage(spec(run, proxy, teacher={"model": "gpt-teacher", "concurrency": 2}), run)
    assert len(drafts(run)) <= 2 + REFUSE_AFTER
