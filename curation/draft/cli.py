"""`finecot draft`, `finecot batch build|import|status|collect|cancel` and `finecot ledger
stats|export|path`: the drafting commands and their bar.

    finecot draft --run runs/birds --target-per-class 4 --budget-usd 5
    finecot draft --run runs/birds --mode batch [--wait]     # through a Batch API
    finecot batch build --run runs/birds requests.jsonl       # offline: vllm run-batch
    finecot batch import --run runs/birds results.jsonl
    finecot batch status|collect|cancel --run runs/birds
    finecot ledger stats --run runs/birds
    finecot ledger export --run runs/birds ledger.parquet
    sqlite3 "$(finecot ledger path --run runs/birds)" 'select status, count(*) from requests group by 1'

Only argument parsing and display live here; the work is curation/draft/stage.py (and
batch.py, batch_ops.py). Heavy modules are imported inside the commands so `finecot --help`
stays fast. Exit codes: 0 done, 2 bad input, 3 stopped on purpose (budget, interrupt,
refused, too few usable), 4 batch results still out (rerun later to collect them).
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
from curation.core.cli import stage_progress as stage_bar
from curation.core.config import RecipeError, load_recipe

console = Console(stderr=True, soft_wrap=True)  # paths are never broken across lines

RunOption = Annotated[
    Path, typer.Option("--run", "-r", help="run directory (all files of the run live there)")
]


class RichDraftProgress:
    """The draft stage's progress bar: done/total, failed, cached, req/s, tokens, cost, ETA."""

    def __init__(self, every_s: float = 0.1):
        from curation.draft.report import DraftProgress

        self._counts = DraftProgress()
        self._every, self._last, self._started = every_s, 0.0, time.monotonic()
        # Without a terminal (a log file, CI) the bar draws nothing until the end: print a
        # progress line every `line_every_s` instead, so a killed run's log shows how far it got.
        self._line_every, self._last_line = 5.0, time.monotonic()
        self._bar = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[line]}"), TimeRemainingColumn(),
            console=console, transient=False,
        )
        self._task = self._bar.add_task("drafting", total=0, line="")
        self._tasks: dict[str, object] = {}
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

    def task(self, name: str, done: int, total: int) -> None:
        """A named piece of batch work (building, submitting, one batch's lines): a bar of
        its own under the drafting bar."""
        if name not in self._tasks:
            self._tasks[name] = self._bar.add_task(name, total=total, line="")
        self._bar.update(self._tasks[name], completed=done, total=total)

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
    mode: Annotated[str | None, typer.Option(
        help="online (chat completions) or batch (the endpoint's Files/Batches API, about "
        "half the price; teacher.mode)")] = None,
    wait: Annotated[bool, typer.Option(
        help="batch mode: wait for the batches (polling with backoff) instead of exiting "
        "with code 4 once they are submitted")] = False,
) -> None:
    """Draft rationales with the teacher for the run's k-shot pool (writes drafts.parquet).

    Every request goes through the run's ledger (ledger.sqlite): answered requests are never sent again, so rerunning the same command resumes after a crash, a Ctrl-C (which lets the requests in flight finish) or a budget stop (exit code 3).

    With --mode batch each round goes out as a batch (README, Batch mode): the command submits it and exits with code 4, and the same command run again collects the results and goes on (or waits for them with --wait). Killed at any point, it resumes without uploading or paying twice.

    The API key comes from $OPENAI_API_KEY or the variable named by teacher.api_key_env, and is never written anywhere.
    """
    spec = _draft_spec(run_dir, recipe, overrides, base_url, (
        ("draft.target_per_class", target_per_class), ("draft.samples", samples),
        ("draft.strategy", strategy), ("draft.budget_usd", budget_usd),
        ("draft.budget_tokens", budget_tokens), ("teacher.model", model),
        ("teacher.concurrency", concurrency), ("teacher.mode", mode)))
    _run_draft(spec, wait=wait)


def _draft_spec(run_dir: Path, recipe: Path | None, overrides: list[str] | None,
                base_url: list[str] | None, options=()):
    """The run's recipe (or --recipe) with the options and --set overrides applied."""
    sets = list(overrides or [])
    sets += [f"{key}={value}" for key, value in options if value is not None]
    saved = run_dir / "recipe.yaml"
    try:
        spec = load_recipe(recipe or (saved if saved.exists() else None),
                           sets + [f"run_dir={run_dir}"])
    except RecipeError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    if base_url:  # the listed URLs replace the recipe's, not merge with them by position
        spec.teacher.base_urls = list(base_url)
    return spec


def _run_draft(spec, wait: bool = False, batch_out: Path | None = None) -> None:
    from curation.core import lineage
    from curation.core.rundir import RunDir
    from curation.draft.stage import BatchPending, DraftStopped, draft_stage

    run = RunDir(spec.directory)
    with errors(run.root):
        check_pool(run)
    progress = RichDraftProgress()
    try:
        with errors(run.root):  # duck-typed DraftProgress
            report = draft_stage(spec, run, progress, wait=wait, batch_out=batch_out)
    except BatchPending as err:
        console.print(f"[yellow]pending:[/yellow] {err}")
        raise typer.Exit(4) from None
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
    for name, count in report.batch.items():
        table.add_row(f"batch lines {name}", f"{count:,}")
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
    for mode, m in stats["by_mode"].items():
        table.add_row(f"{mode}", f"{m['requests']:,} req, {m['tokens']:,} tok, ${m['cost_usd']:.4f}")
    if stats["batch_files"]:
        files = ", ".join(f"{state} {n}" for state, n in stats["batch_files"].items())
        table.add_row("batch files", files)
        table.add_row("batch lines waiting", f"{stats['batch_lines_pending']:,}")
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


# -- finecot batch ----------------------------------------------------------------------------

batch_app = typer.Typer(
    help="Batch mode by hand: build a batch file for `vllm run-batch` (or any OpenAI batch "
    "runner) and import its results; see, collect or cancel a run's batches.",
    no_args_is_help=True,
)
RecipeOpt = Annotated[Path | None, typer.Option("--recipe", help="recipe YAML (default: the run's)")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", help="override a recipe field, e.g. --set teacher.model=M (repeatable)")]


@batch_app.command("build")
def batch_build(
    run_dir: RunOption,
    out: Annotated[Path, typer.Argument(help="the batch file to write (JSONL)")],
    recipe: RecipeOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Write the requests of the run's next round that the ledger cannot answer into OUT, for `vllm run-batch -i OUT -o RESULTS --model M` or any runner of the OpenAI batch format.

    One line per request: custom_id (its ledger key), method, url, and the body the online client would send (image inlined). Then `finecot batch import --run RUN RESULTS` records the answers, and `finecot batch build` again writes the next round (quota loop, blind-then-hinted) or, when nothing is left to ask, says so. drafts.parquet is written each time from what the ledger holds. Exit code 4: OUT holds requests to run.
    """
    spec = _draft_spec(run_dir, recipe, overrides, None)
    out = out.resolve()
    _run_draft(spec, batch_out=out)
    console.print("nothing left to ask: every request of the run is answered or failed with "
                  "its reason (drafts.parquet)")


def _batch_spec(run_dir: Path, recipe: Path | None, overrides: list[str] | None):
    from curation.core.rundir import RunDir

    spec = _draft_spec(run_dir, recipe, overrides, None)
    return spec, RunDir(spec.directory)


@batch_app.command("import")
def batch_import(
    run_dir: RunOption,
    results: Annotated[Path, typer.Argument(help="the results JSONL a batch runner wrote")],
    recipe: RecipeOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Record a batch runner's results (`vllm run-batch -o RESULTS`) in the run's ledger.

    Lines are matched to requests by custom_id. A line already imported is skipped (importing twice changes nothing); a line that is not JSON, whose custom_id is not waiting in a batch file of this run, or whose body does not match its request is refused with its reason (exit code 3), and every other line is recorded. Then run `finecot batch build` (next round) or `finecot draft --mode batch`.
    """
    from curation.core.stage import StageStopped
    from curation.draft.batch_ops import import_results

    spec, run = _batch_spec(run_dir, recipe, overrides)
    try:
        with stage_bar() as progress:
            counts = import_results(spec, run, results, progress)
    except (FileNotFoundError, ValueError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    except StageStopped as err:
        console.print(f"[yellow]stopped:[/yellow] {err}")
        raise typer.Exit(3) from None
    reasons = counts.pop("refused_reasons")
    console.print(", ".join(f"{k} {v:,}" for k, v in counts.items()), highlight=False)
    for reason, count in reasons.items():
        console.print(f"[yellow]refused {count:,}:[/yellow] {reason}", highlight=False)
    if reasons:
        console.print("[yellow]the refused lines changed nothing; every other line is "
                      "recorded[/yellow]")
        raise typer.Exit(3)


@batch_app.command("status")
def batch_status_command(
    run_dir: RunOption,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON to stdout")] = False,
    recipe: RecipeOpt = None,
    overrides: SetOpt = None,
) -> None:
    """The run's batch files and batches: state at the provider, request counts, lines waiting."""
    import asyncio

    from curation.core.stage import StageStopped
    from curation.draft.batch_ops import batch_status
    from curation.teacher.batch_api import BatchAPIError

    spec, run = _batch_spec(run_dir, recipe, overrides)
    try:
        rows = asyncio.run(batch_status(spec, run))
    except (FileNotFoundError, BatchAPIError, StageStopped) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(rows, indent=1, default=str))
        return
    table = Table(title=f"batches: {run.root}")
    for column in ("file", "kind", "batch", "state", "lines", "line states"):
        table.add_column(column)
    for row in rows:
        states = ", ".join(f"{k} {v}" for k, v in row["line_states"].items())
        counts = row.get("request_counts")
        if counts:  # the provider's progress of a batch still out
            states += f" (provider: {counts.get('completed', 0)} done, {counts.get('failed', 0)} failed)"
        table.add_row(row["name"], row["kind"], row["batch_id"] or "-", row["state"],
                      f"{row['lines']:,}", states)
    Console().print(table)


@batch_app.command("collect")
def batch_collect(
    run_dir: RunOption,
    wait: Annotated[bool, typer.Option(help="wait until every batch is finished")] = False,
    recipe: RecipeOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Record the results of the run's finished batches (nothing new is submitted); then `finecot draft --mode batch` writes drafts.parquet and goes on."""
    import asyncio

    from curation.core.stage import StageStopped
    from curation.draft.batch_ops import collect_batches
    from curation.teacher.batch_api import BatchAPIError

    spec, run = _batch_spec(run_dir, recipe, overrides)
    try:
        with stage_bar() as progress:
            counts = asyncio.run(collect_batches(spec, run, progress, wait=wait))
    except (FileNotFoundError, BatchAPIError, StageStopped) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    still = counts.pop("open")
    unsent = counts.pop("not_submitted")
    reasons = counts.pop("refused_reasons")
    console.print(", ".join(f"{k} {v:,}" for k, v in counts.items()) or "nothing finished yet",
                  highlight=False)
    for reason, count in reasons.items():
        console.print(f"[yellow]refused {count:,}:[/yellow] {reason}", highlight=False)
    if unsent:
        console.print(f"[yellow]built, not submitted:[/yellow] {', '.join(unsent)} (`finecot "
                      f"draft --run {run_dir} --mode batch` submits them)")
    if still:
        console.print(f"[yellow]still running:[/yellow] {', '.join(still)}")
        raise typer.Exit(4)


@batch_app.command("cancel")
def batch_cancel(
    run_dir: RunOption,
    recipe: RecipeOpt = None,
    overrides: SetOpt = None,
) -> None:
    """Cancel the run's open batches (and drop batch files not yet submitted or imported).

    Lines a batch answered before it stopped are still recorded by `finecot batch collect` or the next `finecot draft --mode batch`, which sends the rest again in a new batch.
    """
    import asyncio

    from curation.core.stage import StageStopped
    from curation.draft.batch_ops import cancel_batches
    from curation.teacher.batch_api import BatchAPIError

    spec, run = _batch_spec(run_dir, recipe, overrides)
    try:
        done = asyncio.run(cancel_batches(spec, run))
    except (FileNotFoundError, BatchAPIError, StageStopped) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None
    for name, what in done:
        console.print(f"{name}: {what}", highlight=False)
    if not done:
        console.print("no open batch")
