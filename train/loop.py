"""The whole training loop on a tiny model, CPU-sized: tiny model -> CoT SFT -> TAPO.

What `finecot train tiny-loop` and the demo's optional last step run (minutes on a laptop):

    from train.loop import run_tiny_loop
    run_tiny_loop("runs/demo/dataset", "runs/demo/train", tapo_steps=4)

Writes OUT/tiny, OUT/sft and OUT/tapo (each a model folder that AutoModelForImageTextToText
and train.tiny.load_processor load) and returns the SFT losses and TAPO history.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from train.data import text_corpus
from train.recipe import load_train_config
from train.sft import SFTRecipe, run_sft
from train.tapo import TAPOConfig, run_tapo
from train.tiny import build_tiny_model

log = logging.getLogger(__name__)


def run_tiny_loop(
    dataset: str | Path,
    out: str | Path,
    sft_epochs: int = 20,
    tapo_steps: int = 4,
    overrides: list[str] | None = None,
    callbacks: list | None = None,
) -> dict[str, Any]:
    """Build the tiny model from `dataset`'s text, then SFT (sft_tiny_cpu) and TAPO (tapo_tiny_cpu).

    `overrides` (`key=value`) apply to both recipes' shared fields (e.g. `seed=1`).
    """
    out = Path(out)
    tiny = build_tiny_model(out / "tiny", text_corpus(dataset))
    common = [f"dataset={dataset}", "disable_tqdm=true", *(overrides or [])]
    sft = load_train_config(SFTRecipe, "sft_tiny_cpu", [
        f"model_name_or_path={tiny}", f"output_dir={out / 'sft'}", f"num_train_epochs={sft_epochs}", *common,
    ])
    sft_result = run_sft(sft, callbacks=callbacks)
    tapo = load_train_config(TAPOConfig, "tapo_tiny_cpu", [
        f"model_name_or_path={out / 'sft'}", f"output_dir={out / 'tapo'}", f"max_steps={tapo_steps}", *common,
    ])
    tapo_result = run_tapo(tapo, callbacks=callbacks)
    log.info("tiny loop done: %s", out)
    return {"tiny": str(tiny), "sft": sft_result, "tapo": tapo_result}


def describe(result: dict[str, Any]) -> str:
    """One honest line about a tiny loop: what SFT and TAPO did.

    >>> describe({"sft": {"losses": [4.0, 1.5]}, "tapo": {"steps": 2, "history": [
    ...     {"reward": 0.0, "tapo/kept_fraction": 0.0}, {"reward": 0.2, "tapo/kept_fraction": 0.5}]}})
    'SFT loss 4.000 -> 1.500; TAPO 2 steps, mean reward 0.100, groups kept 25%'
    >>> describe({"sft": {"losses": [4.0, 3.0]}, "tapo": {"steps": 1, "history": [{"reward": 0.0}]}})
    'SFT loss 4.000 -> 3.000; TAPO 1 steps, mean reward 0.000, groups kept 0% (no group mixed right and wrong rollouts: TAPO had nothing to learn from)'
    """
    losses = result["sft"]["losses"]
    history = [h for h in result["tapo"]["history"] if "reward" in h]
    rewards = [h["reward"] for h in history]
    kept = [h.get("tapo/kept_fraction", 0.0) for h in history]
    line = f"SFT loss {losses[0]:.3f} -> {losses[-1]:.3f}; TAPO {result['tapo']['steps']} steps"
    if history:
        line += (f", mean reward {sum(rewards) / len(rewards):.3f}, "
                 f"groups kept {100 * sum(kept) / len(kept):.0f}%")
    if history and not any(kept):
        line += " (no group mixed right and wrong rollouts: TAPO had nothing to learn from)"
    return line
