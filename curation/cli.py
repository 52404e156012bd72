"""The `finecot` command line. Commands only parse arguments and call stage functions.

    finecot --help
    finecot run RECIPE.yaml [--set key=value ...]
    finecot ingest --source cub200 --root PATH --run runs/birds
    finecot split --run runs/birds --k 4 --seed 0
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from curation import pipeline
from curation.config import RecipeError, load_recipe

app = typer.Typer(
    name="finecot",
    help="Build, curate and train on Chain-of-Thought datasets for fine-grained visual "
    "recognition (after Fine-R1). Each command is one stage over a run directory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

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


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def _recipe(recipe: Path | None, overrides: list[str] | None):
    try:
        return load_recipe(recipe, overrides)
    except RecipeError as err:
        raise _fail(str(err)) from None


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML file")],
    overrides: SetOption = None,
    stages: Annotated[
        str | None, typer.Option(help="comma-separated stages to run (default: the recipe's)")
    ] = None,
) -> None:
    """Run a recipe's stages in order on its run directory (restartable: rerun to resume)."""
    spec = _recipe(recipe, overrides)
    chosen = stages.split(",") if stages else None
    try:
        pipeline.run_recipe(spec, chosen)
    except (RecipeError, FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from None
    console.print(f"[green]done[/green]: {spec.directory}")


@app.command()
def ingest(
    run_dir: RunOption,
    source: Annotated[
        str | None, typer.Option(help="layout: cub200, stanford_cars, fgvc_aircraft, stanford_dogs, "
        "oxford_flowers, oxford_pets, imagefolder, manifest, hf")
    ] = None,
    root: Annotated[str | None, typer.Option(help="dataset folder, manifest file or HF dataset")] = None,
    recipe: RecipeOption = None,
    overrides: SetOption = None,
) -> None:
    """Read datasets into the item table, the class registry and the quarantine table."""
    sets = list(overrides or [])
    if source:
        sets += [f"sources.0.kind={source}", f"sources.0.root={root or '.'}"]
    spec = _recipe(recipe, sets + [f"run_dir={run_dir}"])
    if not spec.sources:
        raise _fail("nothing to ingest: give --source and --root, or a recipe with sources")
    try:
        pipeline.run_recipe(spec, ["ingest"])
    except (FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from None


@app.command()
def split(
    run_dir: RunOption,
    mode: Annotated[str | None, typer.Option(help="random (seeded ratio) or fine-r1 (the paper's lists)")] = None,
    k: Annotated[int | None, typer.Option(help="shots per seen class")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    seen_ratio: Annotated[float | None, typer.Option(help="fraction of classes seen")] = None,
    strict: Annotated[bool, typer.Option(help="fail on hygiene warnings")] = False,
    recipe: RecipeOption = None,
    overrides: SetOption = None,
) -> None:
    """Split classes into seen/unseen and sample the k-shot pool of seen classes."""
    sets = list(overrides or [])
    for key, value in (("mode", mode), ("k", k), ("seed", seed), ("seen_ratio", seen_ratio)):
        if value is not None:
            sets.append(f"split.{key}={value}")
    if strict:
        sets.append("split.strict=true")
    spec = _recipe(recipe or _saved_recipe(run_dir), sets + [f"run_dir={run_dir}"])
    try:
        pipeline.run_recipe(spec, ["split"])
    except (FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from None


def _saved_recipe(run_dir: Path) -> Path | None:
    """A run directory remembers its recipe: later stages start from it."""
    saved = run_dir / "recipe.yaml"
    return saved if saved.exists() else None


if __name__ == "__main__":
    app()
