"""Shared fixtures: the scripted teacher server and a small synthetic world.

    def test_x(teacher_server):             # one default teacher for the whole session
        client = openai.OpenAI(base_url=teacher_server.base_url, api_key="none")
        teacher_server.stats()["counts"]["requests"]

    def test_y(start_teacher):              # a fresh teacher with its own flags
        server = start_teacher(rate_429=0.2, latency=0.05)   # stopped after the test

    def test_z(synthetic_world):            # Path of a 24-class world (4 images each, 96 px)
        classes = json.loads((synthetic_world / "classes.json").read_text())

    def test_r(env):                        # a REAL Label Studio server (tests/labelstudio.py),
        env.url, env.token                  # LABEL_STUDIO_URL/_API_KEY set for the test

The servers are real aiohttp servers on free 127.0.0.1 ports, each in a background thread
(curation/synthetic/teacher.py: TeacherServer). Flags are Behaviour's fields.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from curation.synthetic.teacher import TeacherServer
from curation.synthetic.world import make_world


@pytest.fixture(scope="session")
def teacher_server() -> Iterator[TeacherServer]:
    """A scripted teacher with default flags (no errors, no faults, no latency). Shared by
    every test of the session: call `.reset_stats()` before counting requests."""
    with TeacherServer() as server:
        yield server


@pytest.fixture
def start_teacher() -> Iterator[Callable[..., TeacherServer]]:
    """Factory: `start_teacher(**flags)` starts a teacher with these Behaviour flags."""
    servers: list[TeacherServer] = []

    def start(**flags) -> TeacherServer:
        server = TeacherServer(**flags).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def synthetic_world(tmp_path_factory) -> Path:
    """A 24-class synthetic world (3 super-categories x 8), 4 images per class, 96 px PNG."""
    root = tmp_path_factory.mktemp("synthetic-world")
    make_world(root, classes=24, per_class=4, seed=0, size=96)
    return root


def _shared_root(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def labelstudio(tmp_path_factory):
    """The Label Studio server, started once per test run and shared by the xdist workers."""
    from labelstudio import shared_server

    root = _shared_root(tmp_path_factory)
    with shared_server(root / "labelstudio", document_root=root) as server:
        yield server


@pytest.fixture
def env(labelstudio, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    monkeypatch.setenv("LOCAL_FILES_DOCUMENT_ROOT", labelstudio.document_root)
    return labelstudio
