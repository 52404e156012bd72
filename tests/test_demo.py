"""`finecot demo`: the whole pipeline on the synthetic world, as a new user first runs it.

It must end by printing where the dataset, card and report are; the card's numbers must be
the stage tables' numbers; the teacher's behaviour is recorded; a rerun pays for nothing.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from export_fixtures import assert_card_matches_tables
from typer.testing import CliRunner

from curation.cli import app
from curation.core.config import load_recipe
from curation.core.rundir import RunDir


def test_demo_prints_its_products_and_the_card_tells_the_truth(tmp_path):
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert result.exit_code == 0, result.output
    printed = dict(re.findall(r"^\s*(dataset|card|report): (\S+)$", result.output, re.M))
    assert set(printed) == {"dataset", "card", "report"}, result.output
    assert Path(printed["card"]).is_file() and Path(printed["report"]).is_file()
    assert (Path(printed["dataset"]) / "data" / "sft").is_dir()

    run = RunDir(out)
    recipe = load_recipe(run.path("recipe.yaml"))
    assert_card_matches_tables(run, recipe)
    funnel = json.loads(run.path("funnel.json").read_text())
    assert re.search(rf"drafts {funnel['drafts']} -> accepted {funnel['accepted']}\b", result.output)
    assert 0 < funnel["accepted"] < funnel["drafts"]  # the teacher errs at its set rates

    behaviour = json.loads(run.path("teacher_behaviour.json").read_text())
    assert behaviour["perception_error_rate"] > 0 and behaviour["leak_rate"] > 0

    def requests() -> int:
        with sqlite3.connect(run.ledger) as db:
            return db.execute("select count(*) from requests").fetchone()[0]

    before = requests()
    again = CliRunner().invoke(app, ["demo", "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert requests() == before  # everything answered is served from the ledger
