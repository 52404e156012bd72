"""`finecot ingest` and `finecot split`: datasets -> items and registry -> seen/unseen split.

    finecot ingest --source cub200 --root data/CUB_200_2011 --run runs/birds
    finecot split --run runs/birds --k 4 --seed 0

Only argument parsing and display live here; the work is curation/ingest/stage.py and
curation/ingest/split.py.
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


def ingest_command(
    run_dir: RunOption,
    source: Annotated[
        str | None, typer.Option(help="layout: cub200, stanford_cars, fgvc_aircraft, stanford_dogs, "
        "oxford_flowers, oxford_pets, imagefolder, manifest, hf")
    ] = None,
    root: Annotated[str | None, typer.Option(help="dataset folder, manifest file or HF dataset")] = None,
    dataset: Annotated[str | None, typer.Option(help="dataset name in the tables (default: the layout)")] = None,
    recipe: RecipeOption = None,
    overrides: SetOption = None,
) -> None:
    """Read datasets into the item table, the class registry and the quarantine table.

    Every image is hashed (sha256), measured and fully decoded by worker processes; rows stream into RUN/items.parquet.

    Images that cannot be used (missing, empty, unreadable, truncated, CMYK/16-bit/transparent, over max_pixels, unknown label, the same image under two labels) go to RUN/quarantine.parquet with a reason code, and the run goes on.

    RUN/registry.json holds the classes (readable names, aliases, super-category, aircraft levels). A rerun on the same inputs writes identical files. Several sources, synonyms files, max_pixels: use a recipe (sources: [{kind, root, dataset, synonyms, ...}]).
    """
    sets = list(overrides or [])
    if source:
        sets += [f"sources.0.kind={source}", f"sources.0.root={root or '.'}"]
        if dataset:
            sets.append(f"sources.0.dataset={dataset}")
    spec = load_spec(recipe, sets + [f"run_dir={run_dir}"])
    if not spec.sources:
        raise fail("nothing to ingest: give --source and --root, or a recipe with sources")
    from curation.core.rundir import RunDir
    from curation.ingest.stage import ingest_stage

    run = RunDir(spec.directory)
    with stopped_exit(), errors(run.root):
        with stage_progress() as progress:
            report = ingest_stage(spec, run, progress)
        run.save_recipe(spec)  # only now: a failed ingest leaves recipe.yaml as it was
    _print_ingest_summary(report, run.root)


def _print_ingest_summary(report, root: Path) -> None:
    """Items and quarantine counts per dataset, then notes about the layouts."""
    reasons = sorted(report.reasons)
    console.print(f"ingest: {report.items} items, {report.classes} classes, "
                  f"{report.quarantined} quarantined ({report.seconds:.1f} s)")
    table = Table()
    table.add_column("dataset")
    table.add_column("items", justify="right")
    for reason in reasons:
        table.add_column(reason, justify="right")
    for name, counts in report.datasets.items():
        table.add_row(name, str(counts.get("items", 0)), *(str(counts.get(r, 0)) for r in reasons))
    console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note:[/yellow] {note}")
    if report.quarantined:
        console.print(f"quarantined images and reasons: {root / 'quarantine.parquet'}")
    console.print(f"[green]done[/green]: {root / 'items.parquet'}, registry.json")


def split_command(
    run_dir: RunOption,
    mode: Annotated[str | None, typer.Option(help="random (seeded ratio), fine-r1 (the paper's lists) or compositional (attribute classes, e.g. the synthetic world)")] = None,
    k: Annotated[int | None, typer.Option(help="shots per seen class")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    seen_ratio: Annotated[float | None, typer.Option(help="fraction of classes seen")] = None,
    strict: Annotated[bool | None, typer.Option(
        "--strict/--no-strict", help="fail on hygiene warnings (default: the recipe's, else no)")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="split even though drafts exist for items the new pool drops: their "
        "drafts and every table made from them move to RUN/archive/")] = False,
    recipe: RecipeOption = None,
    overrides: SetOption = None,
) -> None:
    """Split classes into seen/unseen and sample the k-shot pool of seen classes.

    Reads items.parquet + registry.json of the run; writes split.json (lists, counts,
    hygiene), pool.parquet (k shots per seen class) and test.parquet (official test items of
    seen and unseen classes; datasets without a test split hold out their non-pool items).
    Same seed, same files. Hygiene (a class name seen in one dataset and unseen in another,
    near-duplicate images between pool and test) is reported; --strict makes it fatal.

    On a run whose drafts were made for another pool, split refuses (their items could become test images); --force archives drafts.parquet and every table made from it under RUN/archive/ (the ledger keeps every paid answer, so drafting again re-pays only new items).
    """
    sets = list(overrides or [])
    for key, value in (("mode", mode), ("k", k), ("seed", seed), ("seen_ratio", seen_ratio)):
        if value is not None:
            sets.append(f"split.{key}={value}")
    if strict is not None:
        sets.append(f"split.strict={str(strict).lower()}")
    spec = load_spec(recipe or saved_recipe(run_dir), sets + [f"run_dir={run_dir}"])
    from curation.core.rundir import RunDir
    from curation.ingest.split import split_stage

    run = RunDir(spec.directory)
    with stopped_exit(), errors(run.root):
        with stage_progress() as progress:
            manifest = split_stage(spec, run, progress, force=force)
        run.save_recipe(spec)  # only now: a refused or failed split leaves it as it was
    _print_split_summary(manifest, run.root)


def _print_split_summary(manifest: dict, root: Path) -> None:
    """Seen/unseen counts per dataset, pool and test sizes, then hygiene warnings."""
    title = f"split: mode {manifest['mode']}, seed {manifest['seed']}, k {manifest['k']}"
    table = Table(title=title)
    table.add_column("dataset")
    for name in ("seen", "unseen", "pool", "test"):
        table.add_column(name, justify="right")
    table.add_column("test from")
    for dataset, c in manifest["counts"]["datasets"].items():
        table.add_row(dataset, *(str(c[k]) for k in ("seen", "unseen", "pool", "test")),
                      manifest["test_source"][dataset])
    total = manifest["counts"]
    table.add_row("total", *(str(total[k]) for k in ("seen", "unseen", "pool", "test")), "")
    console.print(table)
    if manifest["short"]:
        console.print(f"[yellow]{len(manifest['short'])} seen class(es) have fewer than "
                      f"{manifest['k']} training images[/yellow] (see 'short' in split.json)")
    for warning in manifest["hygiene"]["warnings"]:
        console.print(f"[yellow]hygiene:[/yellow] {warning}")
    if manifest.get("archived"):
        console.print(f"[yellow]archived[/yellow] the drafts of the previous pool and the tables "
                      f"made from them: {manifest['archived']}")
    console.print(f"[green]done[/green]: {root / 'split.json'}, pool.parquet, test.parquet")
