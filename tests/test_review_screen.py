"""The review screen as a reviewer sees it, in a REAL Label Studio opened by headless Chromium,
and what the review commands print to a log.

- a rationale of ~3,300 characters shows most of itself in the editor (at least 12 lines);
- the filter's verdict, its reasons (with their meanings) and the hinted flag are on the task;
- unseen classes come last in the correction dropdown, marked, and a correction to one reads
  back as the class name;
- `review push` / `pull` with stderr not a terminal print progress lines, not one line per
  HTTP request.

    .venv/bin/pytest tests/test_review_screen.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from chromium import CHROMIUM, Browser
from labelstudio import login_cookies
from test_review import REPO, annotate, make_run, sdk, tasks_by_draft

from curation.review.push_pull import UNSEEN_MARK, pull, push

UNSEEN = "Black Tern"
SENTENCE = (" The wing bars are broad and pale, the tail is rounded and the bill is long and "
            "slender, which fits this candidate better than the others.")


def long_rationale(label: str, size: int = 3300) -> str:
    think = (f"Visual analysis: the bird in the photo shows a red crown and a streaked breast."
             f"\nCandidates: {label}, Blue Warbler\nComparison:")
    while len(think) < size - 60:
        think += SENTENCE
    return f"<think>{think}\nThe prediction is: {label}</think> <answer>{label}</answer>"


@pytest.fixture
def screen_run(env, tmp_path):
    """3 accepted + 1 rejected rows; row 0 with a 3,300-character rationale, row 3 hinted
    and rejected by two filters; Black Tern is an unseen class of the split."""
    recipe, run, rows = make_run(tmp_path, 3, 1, review={"select": "all"})
    rows[0]["response"] = long_rationale(rows[0]["label"])
    rows[3].update(hinted=True, reasons=["wrong_answer", "label_leak"], verdict="rejected")
    pq.write_table(pa.Table.from_pylist(rows[:3]), run.path("accepted.parquet"))
    pq.write_table(pa.Table.from_pylist(rows[3:]), run.path("rejected.parquet"))
    seen = sorted({r["label"] for r in rows} - {UNSEEN})
    run.split.write_text(json.dumps({"datasets": {"birds": {"seen": seen, "unseen": [UNSEEN]}}}))
    return recipe, run, rows


def test_unseen_classes_are_marked_last_and_read_back_as_the_class(env, screen_run):
    recipe, run, rows = screen_run
    result = push(recipe, run)
    config = sdk(env).projects.get(result.project_id).label_config
    choices = config[config.index('name="correct_label"'):]
    marked = f'value="{UNSEEN}{UNSEEN_MARK}" alias="{UNSEEN}"'
    assert marked in choices and "UNSEEN class" in UNSEEN_MARK
    positions = [choices.index(f'value="{name}"') for name in ("Red Warbler", "Grey Heron")]
    assert max(positions) < choices.index(marked)  # seen classes first
    task = tasks_by_draft(env, result.project_id)[rows[1]["draft_id"]][0]
    annotate(sdk(env), task, "fix", rows[1]["response"], correct_label=UNSEEN)
    pull(recipe, run)
    annotation = pq.read_table(run.path("review_annotations.parquet")).to_pylist()[0]
    assert annotation["corrected_label"] == UNSEEN


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make test installs it)")
def test_the_editor_shows_a_long_rationale_and_the_filter_findings(env, screen_run, tmp_path):
    recipe, run, rows = screen_run
    result = push(recipe, run)
    ids = tasks_by_draft(env, result.project_id)
    with Browser(tmp_path / "profile", 1280, 1000) as browser:
        for name, value in login_cookies(env).items():
            browser.set_cookie(name, value, env.url)
        browser.goto(f"{env.url}/projects/{result.project_id}/data?task={ids[rows[0]['draft_id']][0]}")
        # Label Studio mounts the editor more than once while the task loads: the box is
        # measured in the same call that finds it, until a laid-out one is there.
        long_box = """(() => {
            const t = [...document.querySelectorAll('textarea')].find(t => t.value.length > 3000);
            return t && t.clientHeight > 0 ? {visible: t.clientHeight, full: t.scrollHeight,
                chars: t.value.length, line: parseFloat(getComputedStyle(t).lineHeight)} : null;
        })()"""
        for _attempt in range(10):  # (remounted between the two calls: measure the new one)
            browser.wait_for(long_box, 180)
            box = browser.evaluate(long_box)
            if box is not None:
                break
        assert box is not None, "the long rationale's editor never stayed on the page"
        shot = browser.screenshot(tmp_path / "review-long.png")
        assert box["chars"] == len(rows[0]["response"]) >= 3300
        assert box["visible"] >= 12 * box["line"], box  # at least 12 lines in view
        assert box["visible"] >= 0.6 * box["full"], box  # most of the text without scrolling
        assert shot.stat().st_size > 10_000

        browser.goto("about:blank")  # a fresh page: nothing of the first task's screen stays
        browser.wait_for("location.href === 'about:blank'", 30)
        browser.goto(f"{env.url}/projects/{result.project_id}/data?task={ids[rows[3]['draft_id']][0]}")
        browser.wait_for("document.body.innerText.includes('Teacher saw the label') && "
                         "document.body.innerText.includes('Filter verdict')", 180)
        text = browser.evaluate("document.body.innerText")
        keep = os.environ.get("FINECOT_SCREENSHOTS")  # a folder to keep the pictures in, for people
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            (Path(keep) / "review-long.png").write_bytes(shot.read_bytes())
            browser.screenshot(Path(keep) / "review-rejected.png")
    assert "Filter verdict" in text and "rejected" in text
    assert "wrong_answer: <answer> names one class, not the gold" in text
    assert "label_leak: the gold (or an alias) is named in the visual analysis" in text
    assert "Teacher saw the label" in text and "yes: the prompt named the gold label" in text


def test_push_and_pull_print_progress_lines_not_requests(env, tmp_path):
    recipe, run, rows = make_run(tmp_path, 30, review={"batch_size": 5})
    environment = {**os.environ, "COLUMNS": "200"}
    for command in ("push", "pull"):
        proc = subprocess.run([sys.executable, "-m", "curation.cli", "review", command, "--run",
                               str(run.root)], cwd=REPO, capture_output=True, text=True,
                              timeout=300, env=environment)
        assert proc.returncode == 0, proc.stderr
        log = proc.stdout + proc.stderr
        assert "HTTP Request" not in log, log  # no line per request
        if command == "push":
            assert "push: import tasks: 30/30 (100%)" in log, log
        else:
            assert "pull: export annotations: 1/1 (100%)" in log, log
    assert Path(run.path("review_annotations.parquet")).exists()
