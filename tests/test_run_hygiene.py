"""The smaller integrity points of issue 17 (point 6), through the real stages and commands:

- an empty source folder is an error at ingest (nothing written);
- files are written with the user's umask (0644 under 022, 0640 under 027; the card too),
  not mkstemp's 0600;
- a long stage prints a progress line when stderr is not a terminal (a log keeps it);
- `review apply` names the products it made stale and the command that refreshes each,
  and `report` warns (log and page) about tables older than their inputs;
- the card's licence line comes from sources.json, written at ingest, whatever folder
  `finecot export` runs from.

    .venv/bin/pytest -q tests/test_run_hygiene.py
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from export_fixtures import make_run
from typer.testing import CliRunner

from curation.cli import app
from curation.core.config import parse_recipe
from curation.core.rundir import RunDir
from curation.core.tables import write_json_atomic
from curation.export.stage import export_stage
from curation.ingest.sources.common import SYNTHETIC
from curation.ingest.stage import ingest_stage
from curation.review.apply import apply_review
from curation.review.push_pull import ANNOTATION_SCHEMA

REPO = Path(__file__).resolve().parents[1]


def test_an_empty_source_folder_is_an_error_and_writes_nothing(tmp_path):
    empty = tmp_path / "photos"
    empty.mkdir()
    run = tmp_path / "run"
    result = CliRunner().invoke(app, ["ingest", "--run", str(run), "--source", "imagefolder",
                                      "--root", str(empty)], env={"COLUMNS": "2000"})
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert f"source imagefolder at {empty} lists no images" in output
    assert not (run / "items.parquet").exists() and not (run / "recipe.yaml").exists()


def test_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        os.umask(0o027)
        write_json_atomic(tmp_path / "b.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o640


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_stage_outputs_follow_the_umask(tmp_path, umask, mode):
    """Readable by others under 022; private under 027 (the card was once forced to 0644:
    a world-readable README.md beside group-only data)."""
    old = os.umask(umask)
    try:
        run, recipe = make_run(tmp_path)
        export_stage(recipe, run)
    finally:
        os.umask(old)
    for name in ("triplets.parquet", "export.json", "manifest.json", "dataset/README.md"):
        assert stat.S_IMODE(run.path(name).stat().st_mode) == mode, name


def test_a_stage_logs_progress_lines_when_stderr_is_not_a_terminal(tmp_path):
    run, recipe = make_run(tmp_path)
    run.save_recipe(recipe)
    result = subprocess.run([sys.executable, "-m", "curation.cli", "filter", "--run", str(run.root)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    drafts = pq.read_metadata(run.path("drafts.parquet")).num_rows
    assert f"filter: {drafts}/{drafts} (100%)" in result.stderr


def test_review_apply_names_the_stale_products_and_report_warns(tmp_path, caplog):
    run, recipe = make_run(tmp_path)
    run.save_recipe(recipe)
    export_stage(recipe, run)
    runner = CliRunner()
    assert runner.invoke(app, ["report", "--run", str(run.root)]).exit_code == 0
    pq.write_table(pa.Table.from_pylist([], schema=ANNOTATION_SCHEMA),
                   run.path("review_annotations.parquet"))
    result = runner.invoke(app, ["review", "apply", "--run", str(run.root)],
                           env={"COLUMNS": "2000"})
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert f"now stale: dataset/ was made from the previous review: refresh it with `finecot export --run {run.root}`" in output
    assert f"`finecot report --run {run.root}`" in output

    stats = apply_review(recipe, run)
    assert {s["product"] for s in stats["stale"]} == {"dataset/", "report/"}
    report = runner.invoke(app, ["report", "--run", str(run.root)])
    assert report.exit_code == 0
    page = run.path("report/index.html").read_text()
    assert "stale: dataset/ (export) predate changes to reviewed.parquet" in page
    export_stage(recipe, run)  # the same review applied again changes no table export reads
    assert "dataset/" not in {s["product"] for s in apply_review(recipe, run)["stale"]}


def test_the_card_licence_comes_from_ingest_not_from_the_current_folder(tmp_path, monkeypatch,
                                                                           synthetic_world):
    monkeypatch.chdir(synthetic_world.parent)  # a relative root, as a user types it
    recipe = parse_recipe({"name": "lic", "run_dir": str(tmp_path / "run"),
                           "sources": [{"kind": "imagefolder", "root": synthetic_world.name}]})
    run = RunDir(recipe.directory)
    ingest_stage(recipe, run, workers=0)
    sources = json.loads(run.path("sources.json").read_text())
    assert sources[0]["license"] == SYNTHETIC and sources[0]["root"] == str(synthetic_world)
    monkeypatch.chdir(tmp_path)  # export runs elsewhere: the relative root means nothing here
    from curation.export.report import run_stats

    stats = run_stats(recipe, run)
    assert stats["sources"][0]["license"] == SYNTHETIC
