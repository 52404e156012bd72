"""Report: numbers from the tables, PNG plots, and a self-contained page that a real
(headless) Chromium renders with every plot shown."""

from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest
from export_fixtures import make_run
from PIL import Image

from curation.export.report import run_stats, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    run, recipe = make_run(tmp_path_factory.mktemp("report"))
    return run, recipe, write_report(recipe, run)


def test_stats_match_tables(reported):
    run, recipe, _ = reported
    stats = run_stats(recipe, run)
    drafts = pd.read_parquet(run.path("drafts.parquet"))
    accepted = pd.read_parquet(run.path("accepted.parquet"))
    rejected = pd.read_parquet(run.path("rejected.parquet"))
    assert dict(stats["funnel"])["drafts"] == len(drafts)
    assert dict(stats["funnel"])["accepted"] == len(accepted)
    assert stats["cost_usd"] == pytest.approx(drafts["cost_usd"].sum())
    blind = pd.concat([accepted, rejected])
    blind = blind[blind["strategy"] == "blind"]
    expected = (blind["answer"] == blind["label"]).groupby(blind["super_category"]).mean()
    got = {r["super_category"]: r["accuracy"] for r in stats["accuracy_super"]}
    assert got == pytest.approx(expected.to_dict())
    coverage = {r["label"]: r["accepted"] for r in stats["coverage"]}
    assert coverage == accepted.groupby("label").size().to_dict()


def test_page_is_self_contained_with_every_plot(reported):
    run, _, index = reported
    page = index.read_text()
    assert 'src="data:image/png;base64,' in page
    assert not re.search(r"src=\"(?!data:)", page)  # nothing fetched from elsewhere
    pngs = sorted(run.path("report").glob("*.png"))
    assert len(pngs) == page.count("<img") == 7
    for png in pngs:
        with Image.open(png) as image:
            assert image.format == "PNG" and image.width > 300


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make test installs it)")
def test_headless_chromium_shows_the_plots(reported, tmp_path):
    _, _, index = reported
    flags = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    dom = subprocess.run(
        [*flags, "--dump-dom", index.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    found = re.search(r'data-images-ok="(\d+)"', dom)
    assert found, "the page's load handler did not run"
    assert int(found.group(1)) == 7  # every plot decoded with a non-zero width
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*flags, "--window-size=1000,3000", f"--screenshot={shot}", index.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50  # plots drawn, not a blank page


def test_report_before_drafting_still_renders(tmp_path):
    run, recipe = make_run(tmp_path)
    for name in ("drafts.parquet", "accepted.parquet", "rejected.parquet"):
        run.path(name).unlink()
    stats = run_stats(recipe, run)
    assert stats["drafts"] == 0 and stats["accepted"] == 0
    assert len(stats["short_classes"]) == len(stats["coverage"]) > 0  # every seen class is short
    page = write_report(recipe, run).read_text()
    assert page.count("data:image/png;base64,") == 7
