"""The `finecot` command line. Commands only parse arguments and call stage functions.

    finecot --help
    finecot run RECIPE.yaml [--set key=value ...]
    finecot ingest --source cub200 --root PATH --run runs/birds
    finecot split --run runs/birds --k 4 --seed 0
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from curation import pipeline
from curation.config import RecipeError, load_recipe
from curation.draft_cli import draft_command, ledger_app
from curation.filter_cli import audit_command, filter_command
from curation.review_cli import review_app
from curation.synthetic.cli import app as synthetic_app
from train.cli import app as train_app
from train.eval_cli import app as eval_app

app = typer.Typer(
    name="finecot",
    help="Build, curate and train on Chain-of-Thought datasets for fine-grained visual "
    "recognition (after Fine-R1). Each command is one stage over a run directory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)  # paths are never broken across lines
app.add_typer(review_app, name="review")
app.command("draft")(draft_command)
app.add_typer(ledger_app, name="ledger")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(synthetic_app, name="synthetic")
app.command("filter")(filter_command)
app.command("audit")(audit_command)

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
    except pipeline.StageStopped as err:
        console.print(f"[yellow]stopped:[/yellow] {err}")
        raise typer.Exit(3) from None
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
    spec = _recipe(recipe, sets + [f"run_dir={run_dir}"])
    if not spec.sources:
        raise _fail("nothing to ingest: give --source and --root, or a recipe with sources")
    from curation.ingest import ingest_stage
    from curation.rundir import RunDir

    run = RunDir(spec.directory)
    try:
        with _stage_progress() as progress:
            report = ingest_stage(spec, run, progress)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, ValueError) as err:
        raise _fail(str(err)) from None
    run.save_recipe(spec)
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


@app.command()
def split(
    run_dir: RunOption,
    mode: Annotated[str | None, typer.Option(help="random (seeded ratio), fine-r1 (the paper's lists) or compositional (attribute classes, e.g. the synthetic world)")] = None,
    k: Annotated[int | None, typer.Option(help="shots per seen class")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    seen_ratio: Annotated[float | None, typer.Option(help="fraction of classes seen")] = None,
    strict: Annotated[bool | None, typer.Option(
        "--strict/--no-strict", help="fail on hygiene warnings (default: the recipe's, else no)")] = None,
    recipe: RecipeOption = None,
    overrides: SetOption = None,
) -> None:
    """Split classes into seen/unseen and sample the k-shot pool of seen classes.

    Reads items.parquet + registry.json of the run; writes split.json (lists, counts,
    hygiene), pool.parquet (k shots per seen class) and test.parquet (official test items of
    seen and unseen classes; datasets without a test split hold out their non-pool items).
    Same seed, same files. Hygiene (a class name seen in one dataset and unseen in another,
    near-duplicate images between pool and test) is reported; --strict makes it fatal.
    """
    sets = list(overrides or [])
    for key, value in (("mode", mode), ("k", k), ("seed", seed), ("seen_ratio", seen_ratio)):
        if value is not None:
            sets.append(f"split.{key}={value}")
    if strict is not None:
        sets.append(f"split.strict={str(strict).lower()}")
    spec = _recipe(recipe or _saved_recipe(run_dir), sets + [f"run_dir={run_dir}"])
    from curation.rundir import RunDir
    from curation.splits import split_stage

    run = RunDir(spec.directory)
    try:
        with _stage_progress() as progress:
            manifest = split_stage(spec, run, progress)
    except (FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from None
    run.save_recipe(spec)
    _print_split_summary(manifest, run.root)


@contextmanager
def _stage_progress() -> Iterator[Callable[[str, int, int], None]]:
    """A transient rich progress bar, driven by a stage's progress(task, done, total) calls."""
    tasks: dict[str, TaskID] = {}
    with Progress(console=console, transient=True) as bar:

        def update(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total)
            bar.update(tasks[name], completed=done, total=total)

        yield update


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
    console.print(f"[green]done[/green]: {root / 'split.json'}, pool.parquet, test.parquet")


@app.command()
def export(
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
    from curation.export import export_stage
    from curation.rundir import RunDir

    sets = list(overrides or [])
    if fmt:
        sets.append(f"export.formats={['hf', *fmt]}")
    if fine_r1_eval:
        sets.append(f"export.fine_r1_eval={fine_r1_eval}")
    if triplet_model:
        sets.append(f"export.triplet_model={triplet_model}")
    spec = _recipe(recipe or _saved_recipe(run_dir), sets + [f"run_dir={run_dir}"])
    run = RunDir(spec.directory)
    try:
        with _stage_progress() as progress:
            summary = export_stage(spec, run, progress)
    except (FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from None
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


@app.command()
def publish(
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
    from curation.publish import hf_token, plan_publish, upload

    target = folder or (run_dir / "dataset" if run_dir else None)
    if target is None:
        raise _fail("give --run RUN (publishes RUN/dataset) or --dir FOLDER")
    try:
        plan = plan_publish(target, repo_id, private=not public)
        console.print(f"{len(plan.files)} files, {plan.total_bytes / 1e6:.1f} MB -> {repo_id} "
                      f"({'private' if plan.private else 'public'}"
                      f"{', resumable' if plan.resumable else ', one commit'})")
        if dry_run:
            return
        url = upload(plan, hf_token())
    except (FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from None
    console.print(f"[green]published[/green]: {url}")


@app.command()
def report(run_dir: RunOption, recipe: RecipeOption = None, overrides: SetOption = None) -> None:
    """Write RUN/report/index.html (self-contained) + PNG plots: funnel, rejection reasons,
    per-class coverage, rationale length, teacher accuracy, cost over time."""
    from curation.report import write_report
    from curation.rundir import RunDir

    spec = _recipe(recipe or _saved_recipe(run_dir), list(overrides or []) + [f"run_dir={run_dir}"])
    try:
        index = write_report(spec, RunDir(spec.directory))
    except (FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from None
    console.print(f"[green]done[/green]: report {index}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="run directory of the demo")] = Path("runs/demo"),
    train: Annotated[bool, typer.Option(help="also train the tiny model (minutes on CPU)")] = False,
    overrides: SetOption = None,
) -> None:
    """The whole pipeline on the built-in synthetic world with the scripted teacher.

    No GPU, no API key, no download: a world of synthetic birds is drawn, a scripted
    OpenAI-compatible teacher (with recorded error rates) drafts rationales, and the run goes
    through ingest, split, draft, filter, export and report. Rerun to resume.
    """
    from curation.demo import run_demo

    try:
        result = run_demo(out, train=train, overrides=overrides)
    except (RecipeError, FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from None
    funnel = result["funnel"]
    if funnel:
        console.print(
            f"drafts [bold]{funnel.get('drafts')}[/bold] -> accepted "
            f"[bold]{funnel.get('accepted')}[/bold] (rejections by reason in funnel.json)"
        )
    for what in ("dataset", "card", "report"):
        console.print(f"{what:>8}: {result[what]}")
    if "train" in result:
        from train.loop import describe

        console.print(f"   model: {result['train']['tapo']['output_dir']}")
        console.print(f"   train: {describe(result['train'])}")


def _saved_recipe(run_dir: Path) -> Path | None:
    """A run directory remembers its recipe: later stages start from it."""
    saved = run_dir / "recipe.yaml"
    return saved if saved.exists() else None


def _reflowed(doc: str) -> str:
    r"""`doc` with each paragraph's wrapped lines joined: Typer's help keeps a docstring's
    line breaks (at 100 columns) and the terminal wraps again at its width, which broke
    sentences mid-line. Indented lines (examples) and list items keep their own lines.

    >>> _reflowed("One\nsentence.\n\n    finecot x\n    finecot y\n- a\n- b")
    'One sentence.\n\n    finecot x\n    finecot y\n- a\n- b'
    """
    paragraphs = []
    for paragraph in doc.split("\n\n"):
        lines: list[str] = []
        for line in paragraph.split("\n"):
            if lines and not line.startswith((" ", "-", "*", "•")) and not lines[-1].startswith(" "):
                lines[-1] = f"{lines[-1]} {line}"
            else:
                lines.append(line)
        paragraphs.append("\n".join(lines))
    return "\n\n".join(paragraphs)


def _tidy_help(typer_app: typer.Typer) -> None:
    """Every command's help reflowed (_reflowed), and command lists showing the first
    paragraph of each on one line."""
    for command in typer_app.registered_commands:
        doc = inspect.getdoc(command.callback) or ""
        if command.help is None and doc:
            command.help = _reflowed(doc)
        if command.short_help is None and doc:
            command.short_help = " ".join(doc.split("\n\n")[0].split())
    for group in typer_app.registered_groups:
        _tidy_help(group.typer_instance)


_tidy_help(app)

if __name__ == "__main__":
    app()
