"""The reward function of an EasyR1 export, shipped as `easyr1/reward.py` (no finecot import).

EasyR1 loads it by path (`worker.reward.reward_function=./reward.py:compute_score`) and calls
`compute_score(reward_inputs)` with a batch of `{"response", "response_length",
"ground_truth"}` (REWARD_TYPE "batch"); each score is `{"overall", "format", "accuracy"}`.

It scores exactly as `finecot train tapo` does (train/rewards.py): accuracy is THE matcher
(`match` of curation/core/labels.py, shipped beside this file as `finecot_matcher.py`, with
the run's classes in `registry.json`): the last `<answer>` must name exactly one class, the
gold; format is `<think>...</think>` then `<answer>...</answer>`; overall = 0.9 accuracy +
0.1 format (the paper's weights). Nothing outside the standard library and its two sibling
files is imported, so a training machine needs no finecot install.

    compute_score([{"response": "<think>red</think><answer>Scarlet Tanager</answer>",
                    "response_length": 9, "ground_truth": "Scarlet Tanager"}])
    # -> [{"overall": 1.0, "format": 1.0, "accuracy": 1.0}]
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

REWARD_NAME = "finecot_matcher"
REWARD_TYPE = "batch"
HERE = Path(__file__).resolve().parent
FORMAT_PATTERN = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
ANSWER_PATTERN = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@lru_cache(maxsize=1)
def _matcher() -> tuple[Any, Any]:
    """(match, registry), loaded once from the files beside this one."""
    spec = importlib.util.spec_from_file_location("finecot_matcher", HERE / "finecot_matcher.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{HERE / 'finecot_matcher.py'} is missing: export again")
    module = importlib.util.module_from_spec(spec)
    sys.modules["finecot_matcher"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    rows = json.loads((HERE / "registry.json").read_text(encoding="utf-8"))
    registry = module.Registry(
        module.ClassInfo(**{**row, "aliases": tuple(row.get("aliases", ()))}) for row in rows
    )
    return module.match, registry


def score(response: str, ground_truth: str, format_weight: float = 0.1) -> dict[str, float]:
    """One response against its gold class."""
    match, registry = _matcher()
    found = ANSWER_PATTERN.findall(response)
    said = found[-1].strip() if found else None
    accuracy = 1.0 if said is not None and match(said, ground_truth, registry).correct else 0.0
    fmt = 1.0 if FORMAT_PATTERN.search(response) else 0.0
    return {
        "overall": (1 - format_weight) * accuracy + format_weight * fmt,
        "format": fmt,
        "accuracy": accuracy,
    }


def compute_score(
    reward_inputs: list[dict[str, Any]], format_weight: float = 0.1
) -> list[dict[str, float]]:
    """EasyR1's batch reward interface."""
    if not isinstance(reward_inputs, list):
        raise ValueError("this reward function is REWARD_TYPE batch: it takes a list of inputs")
    return [score(r["response"], r["ground_truth"], format_weight) for r in reward_inputs]
