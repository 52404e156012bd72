"""Report: numbers from the tables, PNG plots, and a self-contained page that a real
(headless) Chromium renders with every plot shown."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

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


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (make test installs it)")
def test_report_shows_the_filter_cascade_the_review_and_a_stale_export(tmp_path):
    """The demo (the whole pipeline), then a review applied (so its export is now stale), then
    the report: the page, rendered by headless Chromium, shows the filter cascade, the exported
    rows, the review and the warning."""
    import json
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq
    from chromium import Browser

    from curation.core.config import load_recipe
    from curation.core.rundir import RunDir
    from curation.demo import run_demo
    from curation.review.apply import apply_review
    from curation.review.push_pull import ANNOTATION_SCHEMA, text_sha256

    run_demo(tmp_path / "demo")
    run = RunDir(tmp_path / "demo")
    recipe = load_recipe(run.path("recipe.yaml"))
    funnel = json.loads(run.path("funnel.json").read_text())
    accepted = pq.read_table(run.path("accepted.parquet")).to_pylist()
    assert len(accepted) >= 3
    annotations = [
        {"draft_id": row["draft_id"], "response_sha256": text_sha256(row["response"]),
         "task_id": i, "annotation_id": i, "reviewer": "ann@example.org",
         "created_at": "2026-12-01T10:00:00", "updated_at": "2026-12-01T10:00:00",
         "decision": decision, "reject_reasons": reasons, "rationale": row["response"],
         "label_wrong": False, "corrected_label": None, "note": None}
        for i, (row, decision, reasons) in enumerate(
            [(accepted[0], "reject", ["wrong_traits"]), (accepted[1], "accept", [])])
    ]
    pq.write_table(pa.Table.from_pylist(annotations, schema=ANNOTATION_SCHEMA),
                   run.path("review_annotations.parquet"))
    review = apply_review(recipe, run)
    index = write_report(recipe, run)

    with Browser(tmp_path / "profile", 1000, 1200) as browser:
        browser.goto(index.as_uri())
        browser.wait_for("document.body && document.body.hasAttribute('data-images-ok')")
        page = browser.evaluate("""(() => {
            const rows = id => [...document.querySelectorAll(`#${id} tr`)].map(
                tr => [...tr.children].map(c => c.innerText));
            const stale = document.getElementById('stale');
            return {filters: rows('filters'), review: rows('review'), exported: rows('exported'),
                    summary: rows('summary'), images: document.body.getAttribute('data-images-ok'),
                    stale: stale ? stale.innerText : null,
                    staleHeight: stale ? stale.getBoundingClientRect().height : 0,
                    funnel: document.querySelector('#funnel img').naturalWidth};
        })()""")
        shot = browser.screenshot(tmp_path / "report.png", full_page=True)
    keep = os.environ.get("FINECOT_SCREENSHOTS")  # a folder to keep the picture in, for people
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "report.png").write_bytes(shot.read_bytes())
    assert int(page["images"]) == 7 and page["funnel"] > 300
    # the cascade: one row per filter in the order it runs, with its drafts left (funnel.json)
    cascade = [(c["filter"], c["remaining"]) for c in funnel["cascade"][1:]]
    assert [(r[0], int(r[-1])) for r in page["filters"][1:]] == cascade
    length = next(r for r in page["filters"] if r[0] == "length")
    fmt = next(r for r in page["filters"] if r[0] == "format")
    assert "<think>" in fmt[1] and "`" not in fmt[1]  # the card's markdown spans, as code here
    assert "min_words=" in length[2] and "max_words=" in length[2]
    summary = dict((r[0], r[1]) for r in page["summary"])
    assert "cut at max_tokens (rejected by the format filter)" in summary
    exported = dict((r[0], int(r[1])) for r in page["exported"][1:])
    assert set(exported) == {"sft", "rl", "eval_open", "eval_closed"} and exported["sft"] == len(accepted)
    numbers = dict((r[0], r[1]) for r in page["review"][1:])
    assert numbers["reviewed"] == "2" and numbers["excluded"] == "1"
    assert int(numbers["unreviewed"]) == review["unreviewed"] == len(accepted) - 2
    assert numbers["rejected: wrong_traits"] == "1"
    # the export predates the review: said at the top, in a box a reader cannot miss
    assert page["stale"] and "dataset/" in page["stale"] and page["staleHeight"] > 30
    assert json.loads(run.path("review_stats.json").read_text())["reviewed"] == 2
