"""`finecot review push|pull|apply`: the human-review round trip with Label Studio.

    export LABEL_STUDIO_URL=http://localhost:8080 LABEL_STUDIO_API_KEY=...   # never in a recipe
    finecot review push  --run runs/birds --select accepted --sample-size 200
    finecot review pull  --run runs/birds
    finecot review apply --run runs/birds --rule majority

Mounted on the main app by curation/cli.py. Settings come from the run's recipe (section
`review`, see curation/core/config.py ReviewConfig), then --set, then these options.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from curation.core.cli import errors, stage_progress, stopped_exit
from curation.core.config import RecipeError, load_recipe

review_app = typer.Typer(
    name="review",
    help="Human review in Label Studio: push rows as tasks, pull the annotations, apply the "
    "verdicts and edits to a new version of the curated table (reviewed.parquet). "
    "URL from review.url or LABEL_STUDIO_URL; token from LABEL_STUDIO_API_KEY (or the env var "
    "named by review.api_key_env).",
    no_args_is_help=True,
)
console = Console(stderr=True, soft_wrap=True)  # paths are never broken across lines

RunOption = Annotated[Path, typer.Option("--run", "-r", help="run directory")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="override a recipe field, e.g. review.seed=1")
]
UrlOption = Annotated[str | None, typer.Option(help="Label Studio URL (default: LABEL_STUDIO_URL)")]


def _spec(run_dir: Path, sets: list[str]):
    saved = run_dir / "recipe.yaml"
    try:
        return load_recipe(saved if saved.exists() else None, sets + [f"run_dir={run_dir}"])
    except RecipeError as err:
        raise _fail(str(err)) from None


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def _quiet_http() -> None:
    """httpx logs every request at INFO: one line per task page and upload. Progress is the
    bar (or the periodic lines); the requests show with -v."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def _errors(run_dir: Path) -> Iterator[None]:
    """Label Studio's errors (ReviewError: what to check) and those about the run's files."""
    from curation.review.client import ReviewError

    try:
        with errors(run_dir):
            yield
    except ReviewError as err:
        raise _fail(str(err)) from None


@review_app.command()
def push(
    run_dir: RunOption,
    select: Annotated[str | None, typer.Option(help="accepted | rejected (audit the filters) | all")] = None,
    reason: Annotated[list[str] | None, typer.Option(help="only rows with this reason code (repeatable)")] = None,
    sample_size: Annotated[int | None, typer.Option(help="seeded random sample of N rows")] = None,
    sample_fraction: Annotated[float | None, typer.Option(help="or this fraction of the rows")] = None,
    image_mode: Annotated[str | None, typer.Option(help="upload | local-files | data-url")] = None,
    project: Annotated[int | None, typer.Option(
        "--project", help="use this existing project (e.g. another run's); verdicts still apply "
        "only to identical texts")] = None,
    url: UrlOption = None,
    overrides: SetOption = None,
) -> None:
    """Import the selected rows as tasks into the run's own review project (created by the first push; its id is kept in RUN/review_project.json).

    Idempotent and resumable: rows already in the project (same draft, same text) are skipped, a changed rationale becomes a new task, and duplicates left by an interrupted push are removed. The teacher's rationale pre-fills an editable text area (model_version = teacher model + template sha). Shows progress bars (a line every few seconds when stderr is not a terminal).
    """
    sets = list(overrides or [])
    for key, value in (("select", select), ("sample_size", sample_size),
                       ("sample_fraction", sample_fraction), ("image_mode", image_mode), ("url", url),
                       ("project_id", project)):
        if value is not None:
            sets.append(f"review.{key}={value}")
    if reason:
        sets.append(f"review.reasons=[{','.join(reason)}]")
    spec = _spec(run_dir, sets)
    from curation.core.rundir import RunDir
    from curation.review.push_pull import push as do_push

    _quiet_http()
    with _errors(run_dir), stage_progress() as progress:  # a bar, or a line every few seconds
        result = do_push(spec, RunDir(spec.directory), progress)
    console.print(
        f"[green]pushed[/green] project {result.project_id}: {result.selected} selected, "
        f"{result.already} already there, {result.imported} imported"
        + (f", {result.duplicates_removed} duplicates removed" if result.duplicates_removed else "")
    )


@review_app.command()
def pull(run_dir: RunOption, url: UrlOption = None, overrides: SetOption = None) -> None:
    """Export the project's annotations into review_annotations.parquet (mapped by draft_id)."""
    spec = _spec(run_dir, list(overrides or []) + ([f"review.url={url}"] if url else []))
    from curation.core.rundir import RunDir
    from curation.review.push_pull import pull as do_pull

    _quiet_http()
    with _errors(run_dir), stage_progress() as progress:
        path = do_pull(spec, RunDir(spec.directory), progress)
    console.print(f"[green]pulled[/green] {path}")


@review_app.command()
def apply(
    run_dir: RunOption,
    rule: Annotated[str | None, typer.Option(help="several annotations: latest | majority | any_reject")] = None,
    overrides: SetOption = None,
) -> None:
    """Write reviewed.parquet (previous kept as reviewed.vN.parquet), review_excluded.parquet,
    label_corrections.parquet and review_stats.json. Fixed rationales are re-parsed and
    re-filtered; an edit that breaks the format or names another class is flagged."""
    spec = _spec(run_dir, list(overrides or []))
    from curation.core.rundir import RunDir
    from curation.review.apply import apply_review

    with stopped_exit(), _errors(run_dir):
        stats = apply_review(spec, RunDir(spec.directory), rule)
    console.print(
        f"[green]reviewed[/green] v{stats['version']}: {stats['reviewed']} reviewed, "
        f"{stats['accepted']} accepted, {stats['fixed']} fixed, {stats['flagged']} flagged, "
        f"{stats['rejected']} rejected, {stats['label_corrections']} label corrections"
    )
    if stats["unmatched_annotations"]:
        console.print(f"[yellow]{stats['unmatched_annotations']} annotation(s) not applied[/yellow]:"
                      " they are about texts this run no longer has (push again to review the "
                      "current ones)")
    for stale in stats["stale"]:
        console.print(f"[yellow]now stale:[/yellow] {stale['product']} was made from the "
                      f"previous review: refresh it with `{stale['command']}`")
    if not stats["stale"]:
        console.print("next: `finecot export` (and `finecot report`) to use the reviewed table")
