"""The CLI as a user meets it: every command's help shows each paragraph of its docstring
whole (Typer keeps a docstring's line breaks, which once broke sentences mid-line), and a
mistyped --run is named as such and leaves no folder behind."""

from __future__ import annotations

import inspect

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from curation.cli import app


def _commands(command, path: tuple[str, ...] = ()):
    children = getattr(command, "commands", None)
    if not children:
        yield path, command
        return
    for name, child in children.items():
        yield from _commands(child, (*path, name))


COMMANDS = list(_commands(get_command(app)))


def _prose(doc: str) -> list[str]:
    """The docstring's plain paragraphs (no example block, no list), each as one line."""
    return [" ".join(p.split()) for p in doc.split("\n\n")
            if p.strip() and not any(line.startswith((" ", "-", "*")) for line in p.split("\n"))]


def test_every_command_is_listed():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"draft", "filter", "audit", "eval run", "train sft", "review push"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_keeps_each_paragraph_whole(path, command):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "2000"})
    assert result.exit_code == 0, result.output
    doc = inspect.getdoc(command.callback) or ""
    assert doc, f"finecot {' '.join(path)} has no docstring to explain it"
    for paragraph in _prose(doc):
        assert paragraph in result.output, paragraph


@pytest.mark.parametrize("command", [["filter"], ["export"], ["draft"], ["review", "apply"]])
def test_a_mistyped_run_directory_is_named_and_not_created(tmp_path, command):
    typo = tmp_path / "runs" / "brids"
    result = CliRunner().invoke(app, [*command, "--run", str(typo)], env={"COLUMNS": "2000"})
    assert result.exit_code == 2, result.output
    assert f"run directory {typo} does not exist" in result.output
    assert not typo.exists() and not typo.parent.exists()
