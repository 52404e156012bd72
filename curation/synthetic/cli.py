"""`finecot synthetic`: make the built-in synthetic world, or serve its scripted teacher.

    finecot synthetic make runs/world --classes 24 --per-class 10 --seed 0 --size 128
    finecot synthetic teacher --port 8000 --perception-error-rate 0.1 --rate-429 0.05

Then ingest the world like any ImageFolder (`finecot ingest --source imagefolder --root
runs/world`) and point the recipe's teacher at http://127.0.0.1:8000/v1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

app = typer.Typer(
    help="The built-in synthetic fine-grained world (procedural birds) and its scripted "
    "OpenAI-compatible teacher: a demo, tests and benchmarks without GPU, API key or download. "
    "Not a substitute for a real teacher model.",
    no_args_is_help=True,
)
console = Console(stderr=True, soft_wrap=True)  # paths are never broken across lines


@app.command()
def make(
    out: Annotated[Path, typer.Argument(help="output folder (an ImageFolder + classes.json + world.json)")],
    classes: Annotated[int, typer.Option(help="number of classes (6-72; 24+ gives every super-category 8+)")] = 24,
    per_class: Annotated[int, typer.Option(help="images per class")] = 10,
    seed: Annotated[int, typer.Option(help="random seed: same seed and settings, same bytes")] = 0,
    size: Annotated[int, typer.Option(help="image side in pixels (>= 32)")] = 128,
    unseen_fraction: Annotated[float, typer.Option(
        help="share of classes the proposed compositional split (world.json) keeps unseen")] = 0.25,
    image_format: Annotated[str, typer.Option("--format", help="png or jpg")] = "png",
) -> None:
    """Draw the synthetic bird world: 3 super-categories (warbler, finch, tern) whose classes differ in one or two attributes, with nuisance pose, background and lighting per image."""
    from curation.synthetic.world import make_world

    columns = (TextColumn("drawing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("draw", total=None)
        try:
            rows = make_world(out, classes=classes, per_class=per_class, seed=seed, size=size,
                              unseen_fraction=unseen_fraction, image_format=image_format,
                              progress=lambda done, total: bar.update(task, completed=done, total=total))
        except ValueError as err:
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(code=2) from None
    kinds = sorted({r["super_category"] for r in rows})
    console.print(f"[green]wrote[/green] {len(rows)} classes x {per_class} images "
                  f"({', '.join(kinds)}) to {out}")


@app.command()
def teacher(
    port: Annotated[int, typer.Option(help="TCP port (0: any free port)")] = 8000,
    host: Annotated[str, typer.Option(help="interface to bind (keep 127.0.0.1 unless needed)")] = "127.0.0.1",
    model: Annotated[str, typer.Option(help="model id listed by /v1/models")] = "finecot-synthetic-teacher",
    world: Annotated[Path | None, typer.Option(help="a world folder or classes.json: answer only with its classes")] = None,
    perception_error_rate: Annotated[float, typer.Option(help="share of blind answers that misread one attribute (a confusable wrong class)")] = 0.0,
    format_error_rate: Annotated[float, typer.Option(help="share of answers with a missing section, missing tags or truncated")] = 0.0,
    leak_rate: Annotated[float, typer.Option(help="share of hinted answers that name the label in the analysis or say 'as described'")] = 0.0,
    latency: Annotated[float, typer.Option(help="fixed seconds before each answer")] = 0.0,
    latency_median: Annotated[float, typer.Option(help="lognormal latency: median seconds (overrides --latency)")] = 0.0,
    latency_p99: Annotated[float, typer.Option(help="lognormal latency: 99th percentile seconds")] = 0.0,
    max_concurrency: Annotated[int, typer.Option(help="requests served at once, the rest queue (0: unlimited)")] = 0,
    rate_429: Annotated[float, typer.Option(help="share of requests answered 429 with Retry-After")] = 0.0,
    retry_after: Annotated[float, typer.Option(help="seconds sent in Retry-After / retry-after-ms")] = 1.0,
    rate_500: Annotated[float, typer.Option(help="share answered 500")] = 0.0,
    rate_503: Annotated[float, typer.Option(help="share answered 503")] = 0.0,
    rate_hang: Annotated[float, typer.Option(help="share never answered (until the client times out)")] = 0.0,
    hang_seconds: Annotated[float, typer.Option(help="how long a hung request hangs before a 504")] = 600.0,
    rate_reset: Annotated[float, typer.Option(help="share whose connection is reset")] = 0.0,
    rate_malformed: Annotated[float, typer.Option(help="share answered 200 with an invalid JSON body")] = 0.0,
    honour_n: Annotated[bool, typer.Option(help="--no-honour-n: ignore n > 1 and return one choice")] = True,
    reasoning_field: Annotated[str | None, typer.Option(help="move each answer's <think> block into message.reasoning_content or message.reasoning (as LiteLLM and vLLM reasoning parsers do)")] = None,
    error_400_model: Annotated[str | None, typer.Option(help="serve only this model name: any other gets HTTP 400 'Invalid model name' (as LiteLLM does)")] = None,
    finish_reason_always_stop: Annotated[bool, typer.Option(help="report finish_reason 'stop' for answers cut at max_tokens")] = False,
    usage_summed_over_n: Annotated[bool, typer.Option(help="report prompt_tokens once per choice (summed over n)")] = False,
    no_usage: Annotated[bool, typer.Option(help="send no usage in the response")] = False,
    retry_after_header: Annotated[str | None, typer.Option(help="send the 429/503 wait only in this header, e.g. llm_provider-retry-after-ms")] = None,
    batch_fail_first: Annotated[int, typer.Option(help="Batches API: the first N batches fail validation")] = 0,
    batch_expire_first: Annotated[int, typer.Option(help="Batches API: the first N batches expire part done")] = 0,
    batch_expire_at: Annotated[float, typer.Option(help="... this share of the way through their lines")] = 0.5,
    batch_hold_at: Annotated[float | None, typer.Option(help="Batches API: the first batch holds at this share of its lines until cancelled")] = None,
    batch_max_lines: Annotated[int, typer.Option(help="Batches API: larger input files fail validation")] = 50_000,
    batch_stall_s: Annotated[float, typer.Option(help="Batches API: the first upload, create and download answers come this many seconds late")] = 0.0,
    batch_line_delay: Annotated[float, typer.Option(help="Batches API: seconds per batch line")] = 0.0,
) -> None:
    """Serve the scripted teacher: OpenAI Chat Completions on http://HOST:PORT/v1.

    It reads the bird's attributes from the image pixels and answers with a four-part rationale; mistakes and faults come at the rates given. It serves the Files and Batches APIs too (batch mode), with the same flags and the --batch-* ones. GET /stats counts requests; GET /v1/models lists the flags so a run can record them. Stop with Ctrl-C."""
    from curation.synthetic.teacher import Behaviour, serve

    try:
        behaviour = Behaviour(
            model=model, world=str(world) if world else None,
            perception_error_rate=perception_error_rate, format_error_rate=format_error_rate,
            leak_rate=leak_rate, latency=latency, latency_median=latency_median,
            latency_p99=latency_p99, max_concurrency=max_concurrency, rate_429=rate_429,
            retry_after=retry_after, rate_500=rate_500, rate_503=rate_503, rate_hang=rate_hang,
            hang_seconds=hang_seconds,
            rate_reset=rate_reset, rate_malformed=rate_malformed, honour_n=honour_n,
            reasoning_field=reasoning_field, error_400_model=error_400_model,
            finish_reason_always_stop=finish_reason_always_stop,
            usage_summed_over_n=usage_summed_over_n, no_usage=no_usage,
            retry_after_header=retry_after_header, batch_fail_first=batch_fail_first,
            batch_expire_first=batch_expire_first, batch_expire_at=batch_expire_at,
            batch_hold_at=batch_hold_at, batch_max_lines=batch_max_lines,
            batch_stall_s=batch_stall_s, batch_line_delay=batch_line_delay)
    except (ValueError, FileNotFoundError) as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(code=2) from None
    def ready(bound: int) -> None:
        console.print(f"scripted teacher: [bold]http://{host}:{bound}/v1[/bold] (Ctrl-C to stop)")

    try:
        serve(behaviour, host, port, on_ready=ready)
    except KeyboardInterrupt:
        pass
    except OSError as err:
        console.print(f"[red]error:[/red] cannot bind {host}:{port}: {err}")
        raise typer.Exit(code=2) from None
