"""`finecot draft` and `finecot ledger stats|export|path`: the drafting commands and their bar.

    finecot draft --run runs/birds --target-per-class 4 --budget-usd 5
    finecot ledger stats --run runs/birds
    finecot ledger export --run runs/birds ledger.parquet
    sqlite3 "$(finecot ledger path --run runs/birds)" 'select status, count(*) from requests group by 1'

Only argument parsing and display live here; the work is curation/draft/stage.py. Heavy modules
are imported inside the commands so `finecot --help` stays fast.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from curation.core.cli import errors
from curation.core.config import RecipeError, load_recipe

console = Console(stderr=True, soft_wrap=True)  # paths are never broken across lines

RunOption = Annotated[
    Path, typer.Option("--run", "-r", help="run directory (all files of the run live there)")
]


class RichDraftProgress:
    """The draft stage's progress bar: done/total, failed, cached, req/s, tokens, cost, ETA."""

    def __init__(self, every_s: float = 0.1):
        from curation.draft.stage import DraftProgress

        self._counts = DraftProgress()
        self._every, self._last, self._started = every_s, 0.0, time.monotonic()
        # Without a terminal (a log file, CI) the bar draws nothing until the end: print a
        # progress line every `line_every_s` instead, so a killed run's log shows how far it got.
        self._line_every, self._last_line = 5.0, time.monotonic()
        self._bar = Progress(
            TextColumn("drafting"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[line]}"), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self._task = self._bar.add_task("draft", total=0, line="")
        self._bar.start()
        # Log lines go above the bar: point stderr log handlers at rich's redirected stderr.
        # (setStream returns None when the stream is unchanged: keep the old one ourselves.)
        self._handlers = [(h, h.stream) for h in logging.getLogger().handlers
                          if type(h) is logging.StreamHandler and h.stream is sys.__stderr__]
        for handler, _ in self._handlers:
            handler.setStream(sys.stderr)

    def __getattr__(self, name: str):
        return getattr(self._counts, name)

    def add_total(self, count: int) -> None:
        self._counts.add_total(count)
        self.refresh(force=True)

    def on_cached(self, count: int) -> None:
        self._counts.on_cached(count)
        self.refresh(force=True)

    def on_result(self, status: str, tokens: int, cost: float) -> None:
        self._counts.on_result(status, tokens, cost)
        self.refresh()

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self._every:
            return  # redraw at most every `every_s`: results can land 500 times a second
        self._last = now
        c = self._counts
        rate = (c.answered + c.failed) / max(now - self._started, 1e-6)
        line = (f"usable {c.usable}  truncated {c.truncated}  empty {c.empty}  failed "
                f"{c.failed}  cached {c.cached}  {rate:.1f} req/s  {c.tokens:,} tok  "
                f"${c.cost_usd:.4f}")
        done = c.answered + c.failed + c.cached
        self._bar.update(self._task, total=c.total, line=line, completed=done)
        if not console.is_terminal and now - self._last_line >= self._line_every:
            self._last_line = now
            console.print(f"drafting {done}/{c.total}  {line}", highlight=False)

    def close(self) -> None:
        self.refresh(force=True)
        self._bar.stop()
        for handler, stream in self._handlers:
            handler.setStream(stream)
        self._handlers = []


def draft_command(
    run_dir: RunOption,
    target_per_class: Annotated[int | None, typer.Option(
        help="keep drafting new samples for classes with fewer accepted drafts than this")] = None,
    samples: Annotated[int | None, typer.Option(help="samples per item in the first round")] = None,
    strategy: Annotated[str | None, typer.Option(
        help="blind (label hidden), hinted (label given) or blind-then-hinted")] = None,
    budget_usd: Annotated[float | None, typer.Option(
        help="stop sending new requests once the ledger's total cost reaches this")] = None,
    budget_tokens: Annotated[int | None, typer.Option(help="or its total tokens")] = None,
    base_url: Annotated[list[str] | None, typer.Option(
        help="OpenAI-compatible base URL (repeat for several endpoints)")] = None,
    model: Annotated[str | None, typer.Option(help="teacher model name")] = None,
    concurrency: Annotated[int | None, typer.Option(help="requests in flight at most")] = None,
    recipe: Annotated[Path | None, typer.Option(help="recipe YAML (default: the run's)")] = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="override a recipe field, e.g. --set teacher.rpm=500 (repeatable)")] = None,
) -> None:
    """Draft rationales with the teacher for the run's k-shot pool (writes drafts.parquet).

    Every request goes through the run's ledger (ledger.sqlite): answered requests are never sent again, so rerunning the same command resumes after a crash, a Ctrl-C (which lets the requests in flight finish) or a budget stop (exit code 3).

    The API key comes from $OPENAI_API_KEY or the variable named by teacher.api_key_env, and is never written anywhere.
    """
    sets = list(overrides or [])
    for key, value in (("draft.target_per_class", target_per_class), ("draft.samples", samples),
                       ("draft.strategy", strategy), ("draft.budget_usd", budget_usd),
                       ("draft.budget_tokens", budget_tokens), ("teacher.model", model),
                       ("teacher.concurrency", concurrency)):
        if value is not None:
            sets.append(f"{key}={value}")
    saved = run_dir / "recipe.yaml"
    try:
        spec = load_recipe(recipe or (saved if saved.exists() else None),
                           sets + [f"run_dir={run_dir}"])
    except RecipeError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    if base_url:  # the listed URLs replace the recipe's, not merge with them by position
        spec.teacher.base_urls = list(base_url)

    from curation.core import lineage
    from curation.core.rundir import RunDir
    from curation.draft.stage import DraftStopped, draft_stage

    run = RunDir(spec.directory)
    with errors(run.root):
        check_pool(run)
    progress = RichDraftProgress()
    try:
        with errors(run.root):
            report = draft_stage(spec, run, progress)  # duck-typed DraftProgress
    except DraftStopped as err:
        console.print(f"[yellow]stopped:[/yellow] {err}")
        raise typer.Exit(3) from None
    except KeyboardInterrupt:  # a second Ctrl-C
        console.print("[yellow]stopped at once[/yellow]: every answered request is in the "
                      "ledger; rerun the same command to resume")
        raise typer.Exit(130) from None
    # Only now: recipe.yaml describes drafts.parquet, and a failed run changed neither.
    with errors(run.root):
        run.save_recipe(spec)
        lineage.record(run, "draft", spec)
    _print_report(report, run.root)


def check_pool(run) -> None:
    """The pool exists, can be read to its last page, and holds items: a damaged or empty
    pool is refused by name before any request is sent."""
    import pyarrow.parquet as pq

    from curation.core.tables import check_readable

    pool = run.require(run.pool, "split")
    check_readable(pool)
    if pq.read_metadata(pool).num_rows == 0:
        raise ValueError(f"{pool} has no items, so there is nothing to draft: check the "
                         f"sources (`finecot ingest`) and rerun `finecot split --run {run.root}`")


def _print_report(report, root: Path) -> None:
    table = Table(title=f"draft: {root}")
    for name in ("drafts", "usable", "truncated", "empty", "failed", "sent", "cached",
                 "retries", "rounds", "tokens"):
        table.add_row(name, f"{getattr(report, name):,}")
    table.add_row("waiting before retries", f"{report.waited_s:.1f} s")
    estimated = " (estimated: the server reported no usage)" if report.usage_estimated else ""
    table.add_row("cost (ledger total)", f"${report.cost_usd:.4f}{estimated}")
    console.print(table)
    console.print(report.summary(), highlight=False)
    if report.short_classes:
        shown = ", ".join(f"{c} ({n})" for c, n in list(report.short_classes.items())[:20])
        more = len(report.short_classes) - 20
        console.print(f"[yellow]{len(report.short_classes)} class(es) short of the target:"
                      f"[/yellow] {shown}{f' and {more} more' if more > 0 else ''}")
    console.print(f"[green]done[/green]: {root / 'drafts.parquet'}")


# -- finecot ledger ---------------------------------------------------------------------------

ledger_app = typer.Typer(
    help="Inspect a run's teacher ledger (ledger.sqlite): every request, its status and cost.",
    no_args_is_help=True,
)


def _ledger_path(run_dir: Path) -> Path:
    path = run_dir / "ledger.sqlite"
    if not path.exists():
        console.print(f"[red]error:[/red] {path} does not exist: run `finecot draft --run {run_dir}`")
        raise typer.Exit(2)
    return path


@ledger_app.command("stats")
def ledger_stats(
    run_dir: RunOption,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON to stdout")] = False,
) -> None:
    """Requests by status and model, attempts, tokens, cost, latency, top failure reasons."""
    from curation.core.ledger import Ledger

    with errors(run_dir), Ledger(_ledger_path(run_dir), readonly=True) as ledger:
        stats = ledger.stats()
    if as_json:
        typer.echo(json.dumps(stats, indent=1, default=str))
        return
    table = Table(title=f"ledger: {stats['path']} (schema v{stats['schema_version']})")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("requests", f"{stats['requests']:,}")
    for status, count in stats["by_status"].items():
        table.add_row(f"  {status}", f"{count:,}")
    table.add_row("HTTP attempts", f"{stats['attempts']:,}")
    table.add_row("reasoning outside content", f"{stats['reasoning_outside_content']:,}")
    if stats["usage_estimated"]:
        table.add_row("usage estimated (none reported)", f"{stats['usage_estimated']:,}")
    if stats["stored_before_raw_fields"]:
        table.add_row("rows from before reasoning was kept", f"{stats['stored_before_raw_fields']:,}")
    table.add_row("prompt tokens", f"{stats['prompt_tokens']:,}")
    table.add_row("completion tokens", f"{stats['completion_tokens']:,}")
    table.add_row("cost", f"${stats['cost_usd']:.4f}")
    if stats["mean_latency_s"] is not None:
        table.add_row("mean latency", f"{stats['mean_latency_s']:.2f} s")
    for model, m in stats["by_model"].items():
        table.add_row(f"model {model}", f"{m['requests']:,} req, ${m['cost_usd']:.4f}")
    for reason, count in stats["failure_reasons"].items():
        table.add_row(f"failed: {reason}", f"{count:,}")
    Console().print(table)


@ledger_app.command("reparse")
def ledger_reparse(
    run_dir: RunOption,
    reask: Annotated[bool, typer.Option(
        help="mark the rows whose reasoning may be lost as failed, so the next draft asks "
        "them again (paid again)")] = False,
) -> None:
    """Rebuild the drafts from what the ledger kept, and find answers that lost their reasoning.

    Since ledger schema 4, each answer keeps the message content and the reasoning a server returned beside it (reasoning_content, reasoning) apart, and the drafts are rebuilt from both: rerun `finecot draft --run RUN` (no request is sent for answered rows) and the filter reads `<think>` + content again.

    Rows stored before schema 4 kept only the content. Those with a `<think>` are complete. Those without one may have lost a reasoning the server returned outside the content (LiteLLM, vLLM reasoning parsers, DeepSeek); nothing can rebuild them. This command counts them; with --reask it marks them failed so that the next `finecot draft` asks them again.
    """
    from curation.core.ledger import Ledger

    with Ledger(_ledger_path(run_dir)) as ledger:
        keys = ledger.unrecoverable()
        if reask and keys:
            ledger.mark_for_reask(keys, "reask: stored before the ledger kept reasoning apart; "
                                        "its reasoning may have been dropped")
    if not keys:
        console.print("every answer is complete: rerun `finecot draft --run "
                      f"{run_dir}` to rebuild drafts.parquet from the ledger (nothing is sent)")
        return
    if reask:
        console.print(f"[yellow]{len(keys):,} rows marked for re-asking[/yellow]: run `finecot "
                      f"draft --run {run_dir}` to ask them again and rebuild drafts.parquet")
    else:
        console.print(f"[yellow]{len(keys):,} answered rows[/yellow] were stored before the "
                      "ledger kept reasoning apart and have no <think>: if the teacher returned "
                      "its reasoning outside the content, it is lost. `finecot ledger reparse "
                      f"--run {run_dir} --reask` marks them to be asked again (paid again).")


@ledger_app.command("export")
def ledger_export(
    run_dir: RunOption,
    out: Annotated[Path, typer.Argument(help="output file: .parquet or .jsonl")],
) -> None:
    """Write every ledger row (no secrets are ever in it) to Parquet or JSON lines."""
    from curation.core.ledger import Ledger

    with errors(run_dir), Ledger(_ledger_path(run_dir), readonly=True) as ledger:
        count = ledger.export(out)
    console.print(f"[green]exported[/green] {count:,} rows to {out}")


@ledger_app.command("path")
def ledger_path(run_dir: RunOption) -> None:
    """Print the ledger's path (for sqlite3 and other tools)."""
    typer.echo(str(_ledger_path(run_dir).resolve()))
