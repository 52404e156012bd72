"""What the commands share: the console, the error exit, the common options, the bars.

Only command-line modules (each stage folder's cli.py) import this file; the library reports
through curation/core/stage.py and never draws.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, TaskID

from curation.core.config import Recipe, RecipeError, load_recipe

console = Console(stderr=True, soft_wrap=True)  # paths are never broken across lines

RunOption = Annotated[
    Path, typer.Option("--run", "-r", help="run directory (all files of the run live there)")
]
RecipeOption = Annotated[
    Path | None, typer.Option("--recipe", help="recipe YAML (its settings, then --set, apply)")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="override a recipe field, e.g. --set split.k=8 (repeatable)"),
]


def fail(message: str) -> typer.Exit:
    """Print `error: message` and return the exit (code 2) for the caller to raise."""
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def load_spec(recipe: Path | None, overrides: list[str] | None) -> Recipe:
    """The recipe with its overrides, or a clean exit that names the bad field."""
    try:
        return load_recipe(recipe, overrides)
    except RecipeError as err:
        raise fail(str(err)) from None


def saved_recipe(run_dir: Path) -> Path | None:
    """A run directory remembers its recipe: later stages start from it."""
    saved = run_dir / "recipe.yaml"
    return saved if saved.exists() else None


@contextmanager
def stage_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A transient rich progress bar, driven by a stage's progress(task, done, total) calls.
    It appears with the first call: a stage that reports nothing leaves no blank line."""
    tasks: dict[str, TaskID] = {}
    bar = Progress(console=console, transient=True)

    def update(name: str, done: int, total: int) -> None:
        if not tasks:
            bar.start()
        if name not in tasks:
            tasks[name] = bar.add_task(name, total=total)
        bar.update(tasks[name], completed=done, total=total)

    try:
        yield update
    finally:
        if tasks:
            bar.stop()
