"""The `finecot` command line: wiring only. Each stage's commands live in its folder's cli.py.

    finecot --help
    finecot run RECIPE.yaml [--set key=value ...]      # the stages in order (curation/pipeline.py)
    finecot demo                                       # the pipeline on the synthetic world

Commands only parse arguments and call library functions; the library draws nothing, so the
bars come from here (`stage_display`) and from curation/core/cli.py.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from curation import pipeline
from curation.core.cli import SetOption, console, errors, load_spec, stage_progress
from curation.core.stage import StageStopped
from curation.draft.cli import RichDraftProgress, batch_app, draft_command, ledger_app
from curation.export.cli import export_command, publish_command, report_command
from curation.filter.cli import audit_command, filter_command
from curation.ingest.cli import ingest_command, split_command
from curation.review.cli import review_app
from curation.synthetic.cli import app as synthetic_app
from train.cli import app as train_app
from train.eval.cli import app as eval_app

app = typer.Typer(
    name="finecot",
    help="Build, curate and train on Chain-of-Thought datasets for fine-grained visual "
    "recognition (after Fine-R1). Each command is one stage over a run directory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(review_app, name="review")
app.command("draft")(draft_command)
app.add_typer(ledger_app, name="ledger")
app.add_typer(batch_app, name="batch")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")
app.add_typer(synthetic_app, name="synthetic")
app.command("filter")(filter_command)
app.command("audit")(audit_command)
app.command("ingest")(ingest_command)
app.command("split")(split_command)
app.command("export")(export_command)
app.command("publish")(publish_command)
app.command("report")(report_command)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )


@contextmanager
def stage_display(stage: str) -> Iterator[Any]:
    """What `pipeline.run_recipe` shows around each stage: the draft bar while drafting (the
    stage closes it), a transient bar per task for the others."""
    if stage == "draft":
        yield RichDraftProgress()
    else:
        with stage_progress() as progress:
            yield progress


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML file")],
    overrides: SetOption = None,
    stages: Annotated[
        str | None, typer.Option(help="comma-separated stages to run (default: the recipe's)")
    ] = None,
) -> None:
    """Run a recipe's stages in order on its run directory (restartable: rerun to resume)."""
    spec = load_spec(recipe, overrides)
    chosen = stages.split(",") if stages else None
    try:
        with errors(spec.directory):
            pipeline.run_recipe(spec, chosen, stage_display)
    except StageStopped as err:
        console.print(f"[yellow]stopped:[/yellow] {err}")
        raise typer.Exit(3) from None
    console.print(f"[green]done[/green]: {spec.directory}")


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
        with errors(out):
            result = run_demo(out, train=train, overrides=overrides, display=stage_display)
    except StageStopped as err:
        console.print(f"[yellow]stopped:[/yellow] {err}")
        raise typer.Exit(3) from None
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
