"""`finecot run`: the recipe's stages, in order, on one run directory.

Each stage reads the tables earlier stages wrote and writes its own atomically, so a run
killed anywhere restarts with the same command. Stage modules are imported when their stage
runs: `finecot --help` stays fast and a curation-only run never imports torch.

Progress goes to a `display`: `display(stage)` is a context manager entered around each stage
that yields what the stage reports to (a `Progress` callback; a `DraftProgress` for the draft
stage; None for nothing). The command line passes rich bars; the library draws nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from curation.core.config import Recipe, RecipeError
from curation.core.rundir import RunDir

log = logging.getLogger(__name__)

Display = Callable[[str], AbstractContextManager[Any]]


def _ingest(recipe: Recipe, run: RunDir, progress: Any) -> None:
    from curation.ingest.stage import ingest_stage

    ingest_stage(recipe, run, progress)


def _split(recipe: Recipe, run: RunDir, progress: Any) -> None:
    from curation.ingest.split import split_stage

    split_stage(recipe, run, progress)


def _draft(recipe: Recipe, run: RunDir, progress: Any) -> None:
    from curation.core import lineage
    from curation.draft.stage import draft_stage

    draft_stage(recipe, run, progress)
    lineage.record(run, "draft", recipe)  # (the other stages record themselves)


def _filter(recipe: Recipe, run: RunDir, progress: Any) -> None:
    from curation.filter.stage import filter_stage

    filter_stage(recipe, run, progress)


def _export(recipe: Recipe, run: RunDir, progress: Any) -> None:
    from curation.export.stage import export_stage

    export_stage(recipe, run, progress)


def _report(recipe: Recipe, run: RunDir, progress: Any) -> None:
    from curation.export.report import write_report

    write_report(recipe, run)


# A dict is the registry: stage name -> function(recipe, run_dir, progress).
STAGES: dict[str, Callable[[Recipe, RunDir, Any], None]] = {
    "ingest": _ingest,
    "split": _split,
    "draft": _draft,
    "filter": _filter,
    "export": _export,
    "report": _report,
}


def _no_display(stage: str) -> AbstractContextManager[None]:
    return nullcontext()


def run_recipe(
    recipe: Recipe, stages: list[str] | None = None, display: Display | None = None
) -> RunDir:
    """Run `stages` (default: the recipe's own list) in order; return the run directory."""
    chosen = stages or recipe.stages
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise RecipeError(f"unknown stage(s) {unknown}; known stages: {', '.join(STAGES)}")
    run = RunDir(recipe.directory)
    for name in chosen:
        log.info("stage %s -> %s", name, run.root)
        with (display or _no_display)(name) as progress:
            STAGES[name](recipe, run, progress)
        # Saved once a stage succeeded: a failed stage never leaves recipe.yaml describing
        # settings that produced nothing (manifest.json records each stage's own settings).
        run.save_recipe(recipe)
    return run
