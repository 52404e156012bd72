"""Recipes: validation messages, overrides, the CLI's run command."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from curation.cli import app
from curation.core.config import RecipeError, apply_overrides, load_recipe, parse_recipe


def test_unknown_field_names_field_and_allowed_ones():
    with pytest.raises(RecipeError) as err:
        parse_recipe({"sources": [{"kind": "cub200", "root": "x", "rott": "y"}]})
    message = str(err.value)
    assert "sources.0.rott" in message
    assert "root" in message and "kind" in message


def test_bad_value_names_field():
    with pytest.raises(RecipeError, match=r"split\.k"):
        parse_recipe({"split": {"k": 0}})
    with pytest.raises(RecipeError, match=r"sources\.0\.kind"):
        parse_recipe({"sources": [{"kind": "cub2000", "root": "x"}]})


def test_overrides_parse_yaml_scalars():
    data = apply_overrides({}, ["split.k=8", "split.strict=true", "name=birds", "stages=[ingest]"])
    recipe = parse_recipe(data)
    assert recipe.split.k == 8 and recipe.split.strict is True
    assert recipe.name == "birds" and recipe.stages == ["ingest"]
    with pytest.raises(RecipeError, match="key=value"):
        apply_overrides({}, ["split.k"])


def test_load_recipe_file_and_errors(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("name: demo\nsplit:\n  k: 2\n")
    recipe = load_recipe(path, ["split.seed=7"])
    assert (recipe.split.k, recipe.split.seed) == (2, 7)
    assert str(recipe.directory) == "runs/demo"
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")
    path.write_text("- a list\n")
    with pytest.raises(RecipeError, match="mapping"):
        load_recipe(path)


def test_cli_run_reports_recipe_errors_without_traceback(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("split:\n  seen_ration: 0.5\n")
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert "split.seen_ration" in result.output
    assert "Traceback" not in result.output


def test_cli_run_refuses_unknown_stage(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(f"run_dir: {tmp_path / 'run'}\nstages: [ingest, drafft]\n")
    result = CliRunner().invoke(app, ["run", str(path)])
    assert result.exit_code == 2
    assert "drafft" in result.output and "known stages" in result.output


def test_the_readme_recipe_is_valid(tmp_path):
    """The recipe shown in the README parses (a README that lies is worse than none)."""
    import re

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    assert blocks
    for i, block in enumerate(blocks):
        path = tmp_path / f"readme{i}.yaml"
        path.write_text(block)
        recipe = load_recipe(path)
        assert recipe.sources and recipe.stages[-1] == "report"
