"""`finecot export`, `finecot publish` and `finecot report`: the run's products.

    finecot export  --run runs/birds [--format llamafactory --format easyr1]
    HF_TOKEN=hf_... finecot publish USER/birds-cot --run runs/birds
    finecot report  --run runs/birds

Only argument parsing and display live here; the work is in curation/export/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from curation.core.cli import (
    RecipeOption,
    RunOption,
    SetOption,
    console,
    errors,
    fail,
    load_spec,
    saved_recipe,
    stage_progress,
    stopped_exit,
)


def export_command(
    run_dir: RunOption,
    fmt: Annotated[
        list[str] | None,
        typer.Option("--format", help="also write llamafactory and/or easyr1 (repeatable)"),
    ] = None,
    fine_r1_eval: Annotated[
        Path | None,
        typer.Option(help="Fine-R1 release eval/ folder: use the paper's closed-world options"),
    ] = None,
    triplet_model: Annotated[
        Path | None, typer.Option(help="local transformers image/CLIP model for hard negatives")
    ] = None,
    recipe: RecipeOption = None,
    overrides: SetOption = None,
) -> None:
    """Write RUN/dataset, a Hub dataset folder: Parquet shards of the sft, rl, eval_open and
    eval_closed configs (images embedded) + README.md, the dataset card with the run's numbers.

    sft rows come from reviewed.parquet (after review) or accepted.parquet; rl rows are TAPO
    triplets over the k-shot pool; eval_* hold the test images of seen and unseen classes.
    Hard negatives (rl, closed-world options): --triplet-model, else the teacher's own
    confusions, else a model-free image embedding, else the super-category. With --format,
    RUN/llamafactory and/or RUN/easyr1 too. The previous export stays until the new one is
    complete."""
    from curation.core.rundir import RunDir
    from curation.export.stage import export_stage

    sets = list(overrides or [])
    if fmt:
        sets.append(f"export.formats={['hf', *fmt]}")
    if fine_r1_eval:
        sets.append(f"export.fine_r1_eval={fine_r1_eval}")
    if triplet_model:
        sets.append(f"export.triplet_model={triplet_model}")
    spec = load_spec(recipe or saved_recipe(run_dir), sets + [f"run_dir={run_dir}"])
    run = RunDir(spec.directory)
    with stopped_exit(), errors(run.root), stage_progress() as progress:
        summary = export_stage(spec, run, progress)
    table = Table(title=f"export: {run.root / 'dataset'}")
    for name in ("config", "split", "rows", "shards", "MB"):
        table.add_column(name, justify="left" if name in ("config", "split") else "right")
    for name, c in summary["configs"].items():
        table.add_row(name, c["split"], str(c["rows"]), str(c["shards"]), f"{c['bytes'] / 1e6:.1f}")
    console.print(table)
    if summary["skipped"]:
        console.print(f"[yellow]{len(summary['skipped'])} rows skipped[/yellow] "
                      "(unreadable images: see export_skipped.parquet)")
    for extra in ("llamafactory", "easyr1"):
        if extra in summary:
            console.print(f"{extra}: {summary[extra]}")
    console.print(f"[green]done[/green]: dataset {run.root / 'dataset'}, card "
                  f"{run.root / 'dataset' / 'README.md'}")


def publish_command(
    repo_id: Annotated[str, typer.Argument(help="Hub dataset repo, OWNER/NAME")],
    run_dir: Annotated[Path | None, typer.Option("--run", "-r", help="run directory")] = None,
    folder: Annotated[
        Path | None, typer.Option("--dir", help="export folder (default: RUN/dataset)")
    ] = None,
    public: Annotated[bool, typer.Option(help="make the repo public (default: private)")] = False,
    dry_run: Annotated[bool, typer.Option(help="check and list, upload nothing")] = False,
) -> None:
    """Push an exported dataset folder to the Hugging Face Hub (token from HF_TOKEN).

    One commit for ordinary sizes; above 5 GB a resumable upload (re-run to continue)."""
    from curation.export.publish import hf_token, plan_publish, upload

    target = folder or (run_dir / "dataset" if run_dir else None)
    if target is None:
        raise fail("give --run RUN (publishes RUN/dataset) or --dir FOLDER")
    with errors(run_dir):
        plan = plan_publish(target, repo_id, private=not public)
        console.print(f"{len(plan.files)} files, {plan.total_bytes / 1e6:.1f} MB -> {repo_id} "
                      f"({'private' if plan.private else 'public'}"
                      f"{', resumable' if plan.resumable else ', one commit'})")
        if dry_run:
            return
        url = upload(plan, hf_token())
    console.print(f"[green]published[/green]: {url}")


def report_command(run_dir: RunOption, recipe: RecipeOption = None, overrides: SetOption = None) -> None:
    """Write RUN/report/index.html (self-contained) + PNG plots: funnel, rejection reasons,
    per-class coverage, rationale length, teacher accuracy, cost over time."""
    from curation.core.rundir import RunDir
    from curation.export.report import write_report

    spec = load_spec(recipe or saved_recipe(run_dir), list(overrides or []) + [f"run_dir={run_dir}"])
    with errors(run_dir):
        index = write_report(spec, RunDir(spec.directory))
    console.print(f"[green]done[/green]: report {index}")
