"""`finecot train ...`: the trainers' commands (a typer sub-app mounted by curation/cli.py).

    finecot train tiny-model runs/tiny --dataset runs/demo/dataset
    finecot train sft --recipe sft_tiny_cpu --model runs/tiny --dataset runs/demo/dataset --output runs/tiny-sft
    finecot train tapo --recipe tapo_tiny_cpu --model runs/tiny-sft --dataset runs/demo/dataset --output runs/tiny-tapo
    finecot train tiny-loop --dataset runs/demo/dataset --out runs/demo/train   # all three, minutes
    finecot train recipes

On GPUs, the same commands under accelerate (DeepSpeed ZeRO-3 config shipped):

    accelerate launch --config_file train/recipes/accelerate_zero3.yaml -m train.cli sft --recipe sft_qwen2_5_vl_3b
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

app = typer.Typer(
    name="train",
    help="Train on an exported finecot dataset: CoT SFT (stage 1), then TAPO (stage 2), with TRL. "
    "Recipes are YAML files of TRL config fields (train/recipes/); --set overrides any field.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True, soft_wrap=True)  # paths are never broken across lines

RecipeOpt = Annotated[str | None, typer.Option("--recipe", help="recipe YAML, or a shipped recipe name (see `finecot train recipes`)")]
ModelOpt = Annotated[str | None, typer.Option("--model", help="model folder or Hub id (recipe field model_name_or_path)")]
DatasetOpt = Annotated[str | None, typer.Option("--dataset", help="exported dataset folder, run folder, Parquet shards or Hub id")]
OutputOpt = Annotated[str | None, typer.Option("--output", help="where the trained model is saved (output_dir)")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override a config field, e.g. --set learning_rate=1e-6 (repeatable)")]


def rich_progress(label: str):
    """A TrainerCallback drawing a rich progress bar over optimizer steps, with loss and reward."""
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        def __init__(self):
            self.progress: Progress | None = None
            self.task = None

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.progress = Progress(
                    TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                )
                self.progress.start()
                self.task = self.progress.add_task(label, total=state.max_steps, info="")

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.progress is not None and logs:
                shown = [f"{k.split('/')[-2] if '/' in k else k} {logs[k]:.4g}"
                         for k in ("loss", "reward", "rewards/accuracy/mean") if k in logs]
                self.progress.update(self.task, info="  ".join(shown))

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.stop()

    return RichProgress()


def _overrides(model: str | None, dataset: str | None, output: str | None, sets: list[str] | None) -> list[str]:
    items = list(sets or [])
    for key, value in (("model_name_or_path", model), ("dataset", dataset), ("output_dir", output)):
        if value is not None:
            items.append(f"{key}={value}")
    return items + ["disable_tqdm=true"]


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}")
    return typer.Exit(code=2)


@app.command("tiny-model")
def tiny_model(
    out: Annotated[Path, typer.Argument(help="folder to write the model + processor to")],
    dataset: DatasetOpt = None,
    hidden: Annotated[int, typer.Option(help="hidden size of the language model")] = 64,
    layers: Annotated[int, typer.Option(help="decoder layers")] = 2,
    image_pixels: Annotated[int, typer.Option(help="pixels per image after resizing (56*56 = 4 image tokens)")] = 56 * 56,
    seed: Annotated[int, typer.Option(help="random seed of the weights")] = 0,
) -> None:
    """Build a tiny random-init Qwen2.5-VL + a tokenizer trained on the dataset's text (seconds, offline)."""
    from train.data import text_corpus
    from train.tiny import build_tiny_model

    try:
        texts = text_corpus(dataset) if dataset else []
        path = build_tiny_model(out, texts, hidden=hidden, layers=layers, image_pixels=image_pixels, seed=seed)
    except (ValueError, OSError) as err:  # OSError: a model or file that cannot be loaded
        raise _fail(str(err)) from None
    console.print(f"[green]tiny model[/green]: {path}")


@app.command()
def sft(
    recipe: RecipeOpt = None, model: ModelOpt = None, dataset: DatasetOpt = None,
    output: OutputOpt = None, overrides: SetOpt = None,
) -> None:
    """Stage 1: CoT SFT (TRL SFTTrainer) on the `sft` config; assistant-only loss, vision frozen."""
    from train.recipe import load_train_config
    from train.sft import SFTRecipe, run_sft

    try:
        cfg = load_train_config(SFTRecipe, recipe, _overrides(model, dataset, output, overrides))
        result = run_sft(cfg, callbacks=[rich_progress("SFT")])
    except (ValueError, OSError) as err:  # OSError: a model or file that cannot be loaded
        raise _fail(str(err)) from None
    losses = result["losses"]
    console.print(f"[green]SFT done[/green]: {result['steps']} steps, loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
                  f"saved to {result['output_dir']}")


@app.command()
def tapo(
    recipe: RecipeOpt = None, model: ModelOpt = None, dataset: DatasetOpt = None,
    output: OutputOpt = None, overrides: SetOpt = None,
    reward: Annotated[str | None, typer.Option(help="matcher (default: THE label matcher) or paper (the release's cls_thinking.py rule: substring of the first <answer>, hackable)")] = None,
    plain_grpo: Annotated[bool, typer.Option("--plain-grpo", help="run TRL's stock GRPO with the same settings (baseline)")] = False,
) -> None:
    """Stage 2: TAPO (GRPO + triplets) on the `rl` config; --plain-grpo for the baseline."""
    from train.recipe import load_train_config
    from train.tapo import TAPOConfig, run_tapo

    sets = _overrides(model, dataset, output, overrides) + ([f"reward={reward}"] if reward else [])
    try:
        cfg = load_train_config(TAPOConfig, recipe, sets)
        result = run_tapo(cfg, plain_grpo=plain_grpo, callbacks=[rich_progress("GRPO" if plain_grpo else "TAPO")])
    except (ValueError, OSError) as err:  # OSError: a model or file that cannot be loaded
        raise _fail(str(err)) from None
    last = result["history"][-1] if result["history"] else {}
    console.print(f"[green]{'GRPO' if plain_grpo else 'TAPO'} done[/green]: {result['steps']} steps, "
                  f"last reward {last.get('reward', float('nan')):.3f}, saved to {result['output_dir']}")


@app.command("tiny-loop")
def tiny_loop(
    dataset: Annotated[str, typer.Option("--dataset", help="exported dataset folder or run folder")],
    out: Annotated[Path, typer.Option("--out", help="folder for tiny/, sft/ and tapo/")],
    sft_epochs: Annotated[int, typer.Option(help="SFT epochs")] = 20,
    tapo_steps: Annotated[int, typer.Option(help="TAPO optimizer steps")] = 4,
    overrides: SetOpt = None,
) -> None:
    """The whole loop on CPU in minutes: tiny model -> SFT -> TAPO (the demo's last step)."""
    from train.loop import describe, run_tiny_loop

    try:
        result = run_tiny_loop(dataset, out, sft_epochs, tapo_steps, overrides,
                               callbacks=[rich_progress("train")])
    except (ValueError, OSError) as err:  # OSError: a model or file that cannot be loaded
        raise _fail(str(err)) from None
    console.print(f"[green]done[/green]: {describe(result)}; models under {out}")


@app.command()
def recipes() -> None:
    """List the shipped training recipes (train/recipes/*.yaml) with their first comment line."""
    from train.recipe import RECIPES

    for path in sorted(RECIPES.glob("*.yaml")):
        first = next((ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if ln.startswith("#")), "")
        console.print(f"[bold]{path.stem}[/bold]  {first}")


if __name__ == "__main__":  # accelerate launch -m train.cli sft|tapo ...
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app()
