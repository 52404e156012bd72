"""`finecot run`: the recipe's stages, in order, on one run directory.

Each stage reads the tables earlier stages wrote and writes its own atomically, so a run
killed anywhere restarts with the same command. Stage modules are imported when their stage
runs: `finecot --help` stays fast and a curation-only run never imports torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from curation.config import Recipe, RecipeError
from curation.rundir import RunDir

log = logging.getLogger(__name__)


class StageStopped(RuntimeError):
    """A stage stopped early on purpose (a budget, an interrupt): its message says what to
    do; rerunning the same command resumes. `finecot run` prints it and exits with code 3."""


def _ingest(recipe: Recipe, run: RunDir) -> None:
    from curation.ingest import ingest_stage

    ingest_stage(recipe, run)


def _split(recipe: Recipe, run: RunDir) -> None:
    from curation.splits import split_stage

    split_stage(recipe, run)


def _export(recipe: Recipe, run: RunDir) -> None:
    from rich.progress import Progress

    from curation.export import export_stage

    with Progress(transient=True) as bar:  # one bar per config while its shards are written
        tasks: dict = {}

        def progress(config: str, done: int, total: int) -> None:
            if config not in tasks:
                tasks[config] = bar.add_task(f"export {config}", total=total)
            bar.update(tasks[config], completed=done, total=total)

        export_stage(recipe, run, progress)


def _report(recipe: Recipe, run: RunDir) -> None:
    from curation.report import write_report

    write_report(recipe, run)


def _draft(recipe: Recipe, run: RunDir) -> None:
    from curation.draft import draft_stage
    from curation.draft_cli import RichDraftProgress

    draft_stage(recipe, run, RichDraftProgress())


def _filter(recipe: Recipe, run: RunDir) -> None:
    from curation.filter_stage import filter_stage

    filter_stage(recipe, run)


# A dict is the registry: stage name -> function(recipe, run_dir).
STAGES: dict[str, Callable[[Recipe, RunDir], None]] = {
    "ingest": _ingest,
    "split": _split,
    "draft": _draft,
    "filter": _filter,
    "export": _export,
    "report": _report,
}


def run_recipe(recipe: Recipe, stages: list[str] | None = None) -> RunDir:
    """Run `stages` (default: the recipe's own list) in order; return the run directory."""
    chosen = stages or recipe.stages
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise RecipeError(f"unknown stage(s) {unknown}; known stages: {', '.join(STAGES)}")
    run = RunDir(recipe.directory)
    run.save_recipe(recipe)
    for name in chosen:
        log.info("stage %s -> %s", name, run.root)
        STAGES[name](recipe, run)
    return run
