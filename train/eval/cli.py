"""`finecot eval run|compare`: evaluate a model on seen and unseen classes, compare runs.

    finecot eval run --data runs/birds --model runs/birds/tapo --out runs/birds/eval/tapo
    finecot eval run --data runs/birds --endpoint http://127.0.0.1:8000/v1 --endpoint-model qwen \
        --out runs/birds/eval/qwen --budget-usd 2
    finecot eval run --fine-r1 ../shared/fine-r1/eval --fine-r1-root bird=/data/fine-r1 \
        --fine-r1-root car=/data/fine-r1 --model Qwen2.5-VL-7B-local --out runs/paper-eval
    finecot eval compare runs/birds/eval/qwen runs/birds/eval/tapo --paper

Only argument parsing and display live here; the work is train/eval/evaluate.py. Heavy modules are
imported inside the commands so `finecot --help` stays fast.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

app = typer.Typer(
    name="eval",
    help="Open- and closed-world accuracy on seen and unseen classes, for a local checkpoint "
    "(transformers) or any OpenAI-compatible endpoint, with the paper's tables.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)  # paths are never broken across lines


class RichEvalProgress:
    """A rich bar per mode: answered / total (cached ones count as done at once)."""

    def __init__(self):
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn(), console=console)
        self.task = None
        self.bar.start()

    def start(self, mode: str, total: int | None) -> None:
        self.task = self.bar.add_task(f"{mode}-world", total=total)

    def advance(self, count: int = 1) -> None:
        self.bar.advance(self.task, count)

    def close(self) -> None:
        self.bar.stop()


def _roots(values: list[str]) -> dict[str, Path]:
    roots = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise typer.BadParameter(f"--fine-r1-root expects DATASET=FOLDER, got {value!r}")
        roots[name.strip()] = Path(folder)
    return roots


@app.command("run")
def run_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="folder for metrics.json, report.md, plot.png, responses_*.parquet")],
    data: Annotated[str | None, typer.Option("--data", help="exported dataset (or its run folder) with eval_open/eval_closed")] = None,
    fine_r1: Annotated[Path | None, typer.Option("--fine-r1", help="the Fine-R1 release's eval/ folder (*_seen/unseen.jsonl)")] = None,
    fine_r1_root: Annotated[list[str] | None, typer.Option("--fine-r1-root", help="DATASET=FOLDER holding the paper's image_path layout (repeatable; only these datasets run)")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="LOCAL checkpoint folder (transformers, batched greedy)")] = None,
    endpoint: Annotated[list[str] | None, typer.Option("--endpoint", help="OpenAI-compatible base URL …/v1 (repeatable)")] = None,
    endpoint_model: Annotated[str, typer.Option("--endpoint-model", help="model name sent to the endpoint")] = "teacher",
    api_key_env: Annotated[str, typer.Option("--api-key-env", help="env var holding the endpoint's API key")] = "OPENAI_API_KEY",
    mode: Annotated[str, typer.Option("--mode", help="open, closed or both")] = "both",
    paper_compat: Annotated[bool, typer.Option("--paper-compat", help="the paper's exact prompts (no appended format instruction), closed-world answers without <answer> tags wrong, 2048 new tokens, and its coarse word 'object' for birds, dogs, pets")] = False,
    keep_order: Annotated[bool, typer.Option("--keep-order", help="Fine-R1 lists: keep the paper's option order (gold first) instead of shuffling")] = False,
    seed: Annotated[int, typer.Option("--seed", help="option shuffle seed (recorded in metrics.json)")] = 0,
    embedder: Annotated[str, typer.Option("--embedder", help="text embedder for relative similarity: LOCAL SigLIP/CLIP/text model folder, or 'hashed' (model-free n-grams)")] = "hashed",
    limit: Annotated[int | None, typer.Option("--limit", help="at most this many items per config (per Fine-R1 file); from an export, a sample spread over seen and unseen classes (seeded by --seed)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="local model: images per generate() call")] = 8,
    max_new_tokens: Annotated[int | None, typer.Option("--max-new-tokens", help="answer length cap (default 1024; with --paper-compat 2048, the release's eval/evaluation.py)")] = None,
    max_pixels: Annotated[int | None, typer.Option("--max-pixels", help="local model: image pixel cap for the processor")] = None,
    device: Annotated[str | None, typer.Option("--device", help="local model: cuda, cuda:1, cpu (default: cuda when available; bf16 on GPU, fp32 on CPU)")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", help="endpoint: requests in flight")] = 64,
    temperature: Annotated[float, typer.Option("--temperature", help="endpoint sampling temperature (0: greedy)")] = 0.0,
    budget_usd: Annotated[float | None, typer.Option("--budget-usd", help="stop sending at this total ledger cost")] = None,
    budget_tokens: Annotated[int | None, typer.Option("--budget-tokens", help="or at this many total tokens")] = None,
    price_in: Annotated[float | None, typer.Option("--price-in", help="endpoint USD per 1M prompt tokens (cost accounting; needed by --budget-usd, 0 for a free server)")] = None,
    price_out: Annotated[float | None, typer.Option("--price-out", help="endpoint USD per 1M completion tokens")] = None,
    ledger: Annotated[Path | None, typer.Option("--ledger", help="ledger file (default OUT/ledger.sqlite; a run's ledger.sqlite works)")] = None,
) -> None:
    """Evaluate one model. Answers are cached in the ledger: a rerun sends nothing already answered.

    Closed-world: 4 options (shuffled with a recorded seed); correct = the answer names exactly one option, the gold. Open-world: the matcher's accuracy, the paper's relative semantic similarity, and per-level accuracy where the registry has levels.

    Writes metrics.json, report.md, plot.png and responses_{open,closed}.parquet to --out.
    """
    from curation.core.config import Price, TeacherConfig
    from curation.ingest.split import fine_r1_registry
    from train.eval import evaluate as ev
    from train.eval.evaluate import PAPER_MAX_NEW_TOKENS
    from train.eval.models import EndpointModel, LocalModel

    if (model is None) == (not endpoint):
        raise typer.BadParameter("give either --model (a local checkpoint) or --endpoint (a URL)")
    if (data is None) == (fine_r1 is None):
        raise typer.BadParameter("give either --data (an exported dataset) or --fine-r1 (the paper's lists)")
    if max_new_tokens is None:
        max_new_tokens = PAPER_MAX_NEW_TOKENS if paper_compat else 1024
    modes = ["open", "closed"] if mode == "both" else [mode]
    if any(m not in ev.MODES for m in modes):
        raise typer.BadParameter(f"--mode must be open, closed or both (got {mode!r})")
    try:  # what a user can fix is an error message, not a traceback
        skipped: list[dict] = []
        totals = None
        if fine_r1 is not None:
            roots = _roots(fine_r1_root or [])
            if not roots:
                raise typer.BadParameter("--fine-r1 needs at least one --fine-r1-root DATASET=FOLDER")
            opens, closeds, skipped = ev.load_fine_r1(fine_r1, roots, seed, not keep_order, limit)
            items = {"open": opens, "closed": closeds}
            registry, _ = fine_r1_registry()
            source = str(fine_r1)
        else:
            # streamed: only a chunk of images is in memory at a time
            items = {m: ev.iter_exported(data, f"eval_{m}", limit, seed) for m in modes}
            totals = {m: ev.count_exported(data, f"eval_{m}", limit) for m in modes}
            registry = ev.exported_registry(data, [f"eval_{m}" for m in modes])
            source = str(data)
        items = {m: items[m] for m in modes}
        if model is not None:
            backend = LocalModel(model, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                 device=device, max_pixels=max_pixels)
        else:
            if api_key_env not in os.environ:
                console.print(f"[yellow]no ${api_key_env}: sending no API key (fine for local servers)")
            backend = EndpointModel(TeacherConfig(
                model=endpoint_model, base_urls=list(endpoint), api_key_env=api_key_env,
                concurrency=concurrency, temperature=temperature, top_p=1.0,
                max_tokens=max_new_tokens, seed=seed))
        if budget_usd is not None and model is None and (price_in is None or price_out is None):
            raise ValueError(  # without a price every answer costs $0: the budget never stops
                f"--budget-usd needs the price of {endpoint_model!r}: give --price-in and "
                "--price-out (USD per million prompt / completion tokens; 0 for a free local "
                "server), or budget tokens with --budget-tokens")
        settings = ev.Settings(
            paper_compat=paper_compat, embedder=embedder, budget_usd=budget_usd,
            budget_tokens=budget_tokens,
            prices={backend.model_id: Price(input_per_m=price_in or 0.0,
                                            output_per_m=price_out or 0.0)},
        )
        metrics = ev.evaluate(items, registry, backend, out, settings, ledger_path=ledger,
                              progress=RichEvalProgress(), source=source, skipped=skipped,
                              totals=totals)
        _print_summary(metrics, out)
    except (FileNotFoundError, ValueError, ConnectionError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(code=2) from None


def _print_summary(metrics: dict, out: Path) -> None:
    out_console = Console()
    for mode, block in metrics["results"].items():
        table = Table(title=f"{mode}-world: {metrics['model']}")
        table.add_column("metric")
        for column in ("S-Avg", "U-Avg", "Avg"):
            table.add_column(column, justify="right")
        for metric in block["metrics"]:
            avg = block["averages"][metric]
            table.add_row(metric, *("—" if avg[c] is None else f"{100 * avg[c]:.2f}"
                                    for c in ("S-Avg", "U-Avg", "Avg")))
        out_console.print(table)
        if block["not_answered"]:
            console.print(f"[yellow]{block['not_answered']} {mode}-world item(s) not answered "
                          "(budget, unreadable image or endpoint failure; see responses_*.parquet): rerun the "
                          "same command to finish")
    console.print(f"new requests: {metrics['ledger']['new_keys']}; report: {out / 'report.md'}")


@app.command("compare")
def compare_command(
    runs: Annotated[list[Path], typer.Argument(help="eval output folders (or their metrics.json)")],
    paper: Annotated[bool, typer.Option("--paper", help="add the paper's published rows (with attribution)")] = False,
    paper_model: Annotated[list[str] | None, typer.Option("--paper-model", help="only these paper rows, e.g. Fine-R1-7B (repeatable)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="also write the comparison as Markdown here")] = None,
) -> None:
    """Put runs side by side in the paper's layout (S-Avg, U-Avg, Avg), optionally with the paper's own rows.

    The paper's rows are closed-world accuracy and open-world relative similarity (Fine-R1, arXiv 2602.07605).
    """
    from curation.core.tables import write_text_atomic
    from train.eval.report import compare

    try:
        text = compare(runs, paper=paper, paper_models=paper_model)
    except FileNotFoundError as err:
        raise typer.BadParameter(str(err)) from None
    Console().print(Markdown(text))
    if out is not None:
        write_text_atomic(out, text + "\n")
        console.print(f"written to {out}")
