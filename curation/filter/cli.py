"""`finecot filter` and `finecot audit`: the commands of curation/filter/filters.py and curation/filter/audit.py.

    finecot filter --run runs/birds
    finecot audit ../shared/fine-r1/stage1/Fine-R1-Stage1-data.json --split fine-r1
    finecot audit runs/birds/accepted.parquet --run runs/birds --out verdicts.parquet

Registered in curation/cli.py; output goes through rich (tables, a progress bar).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from curation.core.cli import errors, stage_progress, stopped_exit
from curation.core.config import RecipeError, load_recipe

console = Console(stderr=True, soft_wrap=True)  # paths are never broken across lines


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=console, transient=True)


def _bar(bar: Progress):
    tasks: dict[str, Any] = {}

    def update(name: str, done: int, total: int) -> None:
        if name not in tasks:
            tasks[name] = bar.add_task(name, total=total)
        bar.update(tasks[name], completed=done, total=total)

    return update


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


def filter_command(
    run_dir: Annotated[Path, typer.Option("--run", "-r", help="run directory (holds drafts.parquet)")],
    recipe: Annotated[Path | None, typer.Option(help="recipe YAML (default: the run's recipe.yaml)")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="override a setting, e.g. --set filters.max_candidates=8 (repeatable)")] = None,
) -> None:
    """Parse and filter every draft: write accepted.parquet, rejected.parquet (every reason
    kept) and funnel.json (drafts -> each filter -> accepted).

    Filters: format, answer_correct, prediction_consistent, gold_in_candidates,
    candidates_count, hallucinated_candidates, label_leak, unseen_mention, off_domain, length,
    language, duplicate. Settings live in the recipe's `filters:` section.
    """
    from curation.core.rundir import RunDir
    from curation.filter.stage import filter_stage

    saved = run_dir / "recipe.yaml"
    with stopped_exit(), errors(run_dir):
        spec = load_recipe(recipe or (saved if saved.exists() else None),
                           list(overrides or []) + [f"run_dir={run_dir}"])
        with stage_progress() as progress:  # a bar, or log lines when stderr is no terminal
            summary = filter_stage(spec, RunDir(spec.directory), progress)
    _print_funnel(summary)
    console.print(f"[green]done[/green]: {run_dir / 'accepted.parquet'}, rejected.parquet, funnel.json")


def audit_command(
    corpus: Annotated[Path, typer.Argument(help="ShareGPT JSON, JSONL, or a Parquet table with `response`")],
    split: Annotated[str | None, typer.Option(
        help="class registry + seen/unseen lists: 'fine-r1' (the paper's own)")] = None,
    run_dir: Annotated[Path | None, typer.Option(
        "--run", "-r", help="take registry.json, split.json and filter settings from a run")] = None,
    out: Annotated[Path | None, typer.Option(
        help="per-row verdicts Parquet (default: ./CORPUS_NAME.verdicts.parquet)")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="override a filter setting, e.g. --set filters.unseen_mention=flag")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON on stdout")] = False,
) -> None:
    """Audit an existing CoT corpus: parse rate, section detection rates, label-leak,
    unseen-mention and off-domain rates (the off-domain rows listed), the filter funnel;
    writes one verdict row per input row.

    Without a gold column, the <answer> is the claimed label, resolved with the registry
    (dataset from the question's domain word, or the dataset that knows the answer).
    """
    from curation.core.labels import Registry
    from curation.filter.audit import audit_file

    if (split is None) == (run_dir is None):
        raise _fail("give exactly one of --split fine-r1 or --run DIR (the class registry to judge with)")
    try:
        if split is not None:
            if split != "fine-r1":
                raise ValueError(f"--split {split!r}: only 'fine-r1' is built in; use --run DIR otherwise")
            from curation.ingest.split import fine_r1_registry

            registry, lists = fine_r1_registry()
            spec = load_recipe(None, list(overrides or []))
        else:
            saved = run_dir / "recipe.yaml"
            spec = load_recipe(saved if saved.exists() else None, list(overrides or []))
            registry = Registry.load(run_dir / "registry.json") if (run_dir / "registry.json").exists() \
                else None
            if registry is None:
                raise FileNotFoundError(f"{run_dir / 'registry.json'} missing: run `finecot ingest` first")
            split_file = run_dir / "split.json"
            lists = json.loads(split_file.read_text())["datasets"] if split_file.exists() else None
        target = out or Path(f"{corpus.stem}.verdicts.parquet")
        with _progress() as bar:
            summary = audit_file(corpus, registry, lists, spec.filters, target, _bar(bar))
    except (RecipeError, FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from None
    if as_json:
        typer.echo(json.dumps({k: v for k, v in summary.items() if k != "funnel"} |
                              {"funnel": {k: v for k, v in summary["funnel"].items() if k != "per_class"}},
                              indent=1))
    _print_audit(summary)
    console.print(f"[green]done[/green]: verdicts in {summary['verdicts']}")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _print_funnel(summary: dict[str, Any]) -> None:
    funnel = summary.get("funnel", summary)
    table = Table(title=f"filter funnel: {funnel['drafts']} drafts -> {funnel['accepted']} accepted")
    table.add_column("after filter")
    table.add_column("remaining", justify="right")
    table.add_column("rejected by it", justify="right")
    for step in funnel["cascade"]:
        name = step["filter"]
        table.add_row(name, str(step["remaining"]), str(funnel["failed_by_filter"].get(name, "")))
    console.print(table)
    reasons = Table(title="reason codes")
    reasons.add_column("reason")
    reasons.add_column("drafts", justify="right")
    for code, n in funnel["reasons"].items():
        reasons.add_row(code, str(n))
    for code, n in funnel.get("flags", {}).items():
        reasons.add_row(f"{code} (flag)", str(n))
    console.print(reasons)


def _print_audit(summary: dict[str, Any]) -> None:
    n = summary["rows"]
    table = Table(title=f"audit: {n} rows")
    table.add_column("measure")
    table.add_column("rate", justify="right")
    table.add_row("parse rate (<think>..</think><answer>..</answer>)", _pct(summary["parse_rate"]))
    for name, rate in summary["section_rates"].items():
        table.add_row(f"section found: {name}", _pct(rate))
    table.add_row("all four sections", _pct(summary["all_sections_rate"]))
    for name, rate in summary["rates"].items():
        table.add_row(name.replace("_", " "), _pct(rate))
    table.add_row("accepted by every filter", _pct(summary["accepted_rate"]))
    table.add_row("answers no class resolves", str(summary["unresolved_answers"]))
    console.print(table)
    if summary["off_domain_rows"]:
        off = Table(title="off-domain rows")
        for col in ("row", "dataset", "answer", "phrase"):
            off.add_column(col)
        for r in summary["off_domain_rows"]:
            off.add_row(str(r["row"]), r["dataset"], str(r["answer"]), r["phrase"])
        console.print(off)
    _print_funnel(summary)
