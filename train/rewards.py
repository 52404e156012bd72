"""Reward functions for TAPO/GRPO, in TRL's signature `f(prompts, completions, **columns)`.

Accuracy uses THE matcher of curation/core/labels.py, the one the filter and the evaluator use:
the text inside `<answer>...</answer>` must name exactly one class of the registry and it
must be the gold (`answer` column). An answer that names several classes (hedging) earns 0.
The registry is bound once with `make_accuracy_reward(registry)`; `registry_from_names`
builds one from the dataset's own class names when no registry.json is at hand.

    >>> reg = registry_from_names(["Scarlet Tanager", "Summer Tanager"])
    >>> acc = make_accuracy_reward(reg)
    >>> acc(None, ["<think>red</think><answer>Scarlet Tanager</answer>",
    ...            "<think>red</think><answer>Scarlet or Summer Tanager</answer>",
    ...            "<think>red</think><answer>Scarlet Tanager or Summer Tanager</answer>"],
    ...     answer=["Scarlet Tanager"] * 3)
    [1.0, 0.0, 0.0]
    >>> format_reward(None, ["<think>x</think> <answer>y</answer>", "<answer>y</answer>"])
    [1.0, 0.0]

`--reward paper` is the released Fine-R1 rule (TAPO/examples/reward_function/cls_thinking.py
of PKU-ICST-MIPL/FineR1_ICLR2026), kept for faithful reproduction only: whitespace around
every `<`, `>` and `/` of the response is removed first; accuracy is 1 iff the lower-cased
gold is a substring of the FIRST `<answer>...</answer>`; format is 1 iff the whole response
is `<think>...</think>\\s*<answer>...</answer>` and nothing else. It is hackable: listing
every class wins.

    >>> paper_accuracy_reward(None, ["<answer>scarlet tanager, summer tanager</answer>"],
    ...                       answer=["Summer Tanager"])
    [1.0]

Default weights are the paper's: 0.9 * accuracy + 0.1 * format (`REWARD_WEIGHTS`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from curation.core.labels import ClassInfo, Registry, match

FORMAT_PATTERN = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
ANSWER_PATTERN = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
PAPER_SPACES = re.compile(r"\s*(<|>|/)\s*")  # the release's whitespace step (cls_thinking.py)
REWARD_WEIGHTS = (0.9, 0.1)  # accuracy, format (the paper)

RewardFunc = Callable[..., list[float]]


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or TRL's conversational [{"role", "content"}].

    >>> completion_text([{"role": "assistant", "content": "hi"}])
    'hi'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        content = completion[-1].get("content", "")
        if isinstance(content, list):  # structured content parts
            return "".join(p.get("text") or "" for p in content if isinstance(p, dict))
        return content or ""
    return ""


def extract_answer(text: str) -> str | None:
    """The content of the last `<answer>...</answer>`, or None when there is none.

    >>> extract_answer("<think>a</think><answer> Boeing 737-300 </answer>")
    'Boeing 737-300'
    >>> extract_answer("no tags") is None
    True
    """
    found = ANSWER_PATTERN.findall(text)
    return found[-1].strip() if found else None


def registry_from_names(names: Iterable[str], dataset: str = "data") -> Registry:
    """A registry of plain class names (one dataset), for datasets shipped without one.

    >>> len(registry_from_names(["b", "a", "b"]))
    2
    """
    unique = sorted({n for n in names if n})
    return Registry(ClassInfo(i, name, dataset, dataset) for i, name in enumerate(unique))


def make_accuracy_reward(registry: Registry, dataset: str | None = None) -> RewardFunc:
    """accuracy = 1.0 iff the `<answer>` names exactly the gold class (curation.core.labels.match).

    A `dataset` column in the rows, if present, scopes the match to that dataset's classes.
    """

    def accuracy(
        prompts: Sequence[Any] | None,
        completions: Sequence[Any],
        completion_ids: Any = None,
        *,
        answer: Sequence[str],
        **columns: Any,
    ) -> list[float]:
        scopes = columns.get("dataset") or [dataset] * len(completions)
        rewards = []
        for completion, gold, scope in zip(completions, answer, scopes, strict=True):
            said = extract_answer(completion_text(completion))
            ok = said is not None and match(said, gold, registry, scope).correct
            rewards.append(1.0 if ok else 0.0)
        return rewards

    accuracy.__name__ = "accuracy"  # TRL logs rewards under the function's name
    return accuracy


def paper_text(text: str) -> str:
    """The release's whitespace step: no whitespace around any `<`, `>` or `/`.

    >>> paper_text("<think> a </think>\\n <answer> Boeing 737 / 400 </answer>")
    '<think>a</think><answer>Boeing 737/400</answer>'
    """
    return PAPER_SPACES.sub(r"\1", text)


def paper_accuracy_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    completion_ids: Any = None,
    *,
    answer: Sequence[str],
    **columns: Any,
) -> list[float]:
    """The released Fine-R1 accuracy: lower-cased gold in the first `<answer>` (hackable).

    No `<answer>` tag: 0. Only the first tag counts; text after it is not read.

    >>> paper_accuracy_reward(None, ["<answer>Beagle</answer><answer>Basset</answer>",
    ...                              "Basset", "< answer > basset hound </ answer >"],
    ...                       answer=["Basset"] * 3)
    [0.0, 0.0, 1.0]
    """
    rewards = []
    for completion, gold in zip(completions, answer, strict=True):
        found = ANSWER_PATTERN.search(paper_text(completion_text(completion)))
        said = found.group(1).strip() if found else None
        rewards.append(1.0 if said is not None and gold.lower() in said.lower() else 0.0)
    return rewards


paper_accuracy_reward.__name__ = "accuracy"


def format_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    completion_ids: Any = None,
    **columns: Any,
) -> list[float]:
    """format = 1.0 iff the response matches `<think>.*?</think>\\s*<answer>.*?</answer>`."""
    return [1.0 if FORMAT_PATTERN.search(completion_text(c)) else 0.0 for c in completions]


format_reward.__name__ = "format"


def paper_format_reward(
    prompts: Sequence[Any] | None,
    completions: Sequence[Any],
    completion_ids: Any = None,
    **columns: Any,
) -> list[float]:
    """The released Fine-R1 format: after the whitespace step the WHOLE response is
    `<think>...</think>\\s*<answer>...</answer>` (`re.fullmatch`: nothing before or after).

    >>> paper_format_reward(None, ["<think>a</think>\\n<answer>b</answer>",
    ...                            "<think>a</think><answer>b</answer> so b"])
    [1.0, 0.0]
    """
    return [1.0 if FORMAT_PATTERN.fullmatch(paper_text(completion_text(c))) else 0.0 for c in completions]


paper_format_reward.__name__ = "format"


def reward_functions(kind: str, registry: Registry | None) -> list[RewardFunc]:
    """[accuracy, format] for `kind` "matcher" (default) or "paper" (the release's own rule for
    both); weights: REWARD_WEIGHTS.

    >>> [f.__name__ for f in reward_functions("paper", None)]
    ['accuracy', 'format']
    """
    if kind == "paper":
        return [paper_accuracy_reward, paper_format_reward]
    if kind == "matcher":
        if registry is None:
            raise ValueError("the matcher reward needs a class registry (registry.json or the dataset's answers)")
        return [make_accuracy_reward(registry), format_reward]
    raise ValueError(f"unknown reward {kind!r}; choose 'matcher' (default) or 'paper'")


def combined_reward(
    completions: Sequence[Any],
    answer: Sequence[str],
    registry: Registry,
    weights: tuple[float, float] = REWARD_WEIGHTS,
) -> list[float]:
    """0.9 * accuracy + 0.1 * format, for evaluation scripts that want one number.

    >>> combined_reward(["<think>.</think><answer>a</answer>"], ["a"], registry_from_names("ab"))
    [1.0]
    """
    acc = make_accuracy_reward(registry)(None, completions, answer=answer)
    fmt = format_reward(None, completions)
    return [round(weights[0] * a + weights[1] * f, 10) for a, f in zip(acc, fmt, strict=True)]
