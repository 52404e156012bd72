"""Rewards (train/rewards.py): the matcher-based accuracy, the format rule, the paper's rule.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_rewards.py
"""

from __future__ import annotations

import pytest

from curation.core.labels import ClassInfo, Registry
from train.rewards import (
    REWARD_WEIGHTS,
    combined_reward,
    format_reward,
    make_accuracy_reward,
    paper_accuracy_reward,
    registry_from_names,
    reward_functions,
)

NAMES = ["Boeing 737-300", "Boeing 737-400", "Scarlet Tanager", "Summer Tanager"]


def wrap(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


@pytest.fixture
def accuracy():
    return make_accuracy_reward(registry_from_names(NAMES))


def test_accuracy_follows_the_single_answer_rule(accuracy):
    completions = [
        "<think>red body, black wings</think><answer>Scarlet Tanager</answer>",
        "<think>...</think><answer>scarlet  tanager.</answer>",  # normalised
        "<think>...</think><answer>Summer Tanager</answer>",  # wrong class
        "<think>...</think><answer>Scarlet Tanager or Summer Tanager</answer>",  # hedge
        "<think>...</think><answer>a tanager</answer>",  # names no class
        "Scarlet Tanager",  # no answer tag
        "<think>Summer Tanager?</think><answer>Scarlet Tanager</answer>",  # think is not judged
    ]
    got = accuracy(None, [wrap(c) for c in completions], answer=["Scarlet Tanager"] * len(completions))
    assert got == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_paper_rule_is_hackable_where_the_matcher_is_not(accuracy):
    hedge = "<think>.</think><answer>Boeing 737-300, Boeing 737-400</answer>"
    gold = ["Boeing 737-400"]
    assert paper_accuracy_reward(None, [hedge], answer=gold) == [1.0]
    assert accuracy(None, [hedge], answer=gold) == [0.0]


def test_paper_rule_is_a_lowercase_substring_test():
    got = paper_accuracy_reward(
        None,
        ["<answer>It is a SUMMER TANAGER</answer>", "<answer>Tanager</answer>", "summer tanager no tags"],
        answer=["Summer Tanager"] * 3,
    )
    assert got == [1.0, 0.0, 1.0]


def test_dataset_column_scopes_the_match():
    reg = Registry([
        ClassInfo(0, "Basset", "dogs", "dog"), ClassInfo(1, "Beagle", "dogs", "dog"),
        ClassInfo(0, "Beagle", "pets", "pet"), ClassInfo(1, "Bengal", "pets", "pet"),
    ])
    acc = make_accuracy_reward(reg)
    completions = ["<think>.</think><answer>Beagle, Basset</answer>"] * 2
    # dogs knows both names: two classes. pets knows only Beagle: one class named, the gold.
    assert acc(None, completions, answer=["Beagle", "Beagle"], dataset=["dogs", "pets"]) == [0.0, 1.0]


def test_format_reward_pattern():
    got = format_reward(
        None,
        [
            wrap("<think>a\nb</think>\n <answer>x</answer>"),
            wrap("<think>a</think>text<answer>x</answer>"),
            wrap("<answer>x</answer><think>a</think>"),
            wrap("<think>a</think><answer>x"),
        ],
    )
    assert got == [1.0, 0.0, 0.0, 0.0]


def test_combined_default_weights():
    reg = registry_from_names(NAMES)
    got = combined_reward(
        ["<think>.</think><answer>Summer Tanager</answer>", "<answer>Summer Tanager</answer>",
         "<think>.</think><answer>Scarlet Tanager</answer>"],
        ["Summer Tanager"] * 3,
        reg,
    )
    assert REWARD_WEIGHTS == (0.9, 0.1)
    assert got == [pytest.approx(1.0), pytest.approx(0.9), pytest.approx(0.1)]


def test_reward_functions_choice_and_errors():
    assert [f.__name__ for f in reward_functions("matcher", registry_from_names(NAMES))] == ["accuracy", "format"]
    with pytest.raises(ValueError, match="registry"):
        reward_functions("matcher", None)
    with pytest.raises(ValueError, match="unknown reward"):
        reward_functions("substring", None)
