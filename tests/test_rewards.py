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
    paper_format_reward,
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
    assert got == [1.0, 0.0, 0.0]  # no <answer> tag: 0 in the release (no whole-text fallback)


# The release's rule, TAPO/examples/reward_function/cls_thinking.py (PKU-ICST-MIPL/FineR1_ICLR2026
# at 84cdc5c), as written there:
#   response = re.sub(r"\s*(<|>|/)\s*", r"\1", response)
#   format   = re.fullmatch(re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL), response)
#   answer   = re.search(r'<answer>(.*?)</answer>', response, re.DOTALL).group(1).strip()  (None -> 0)
#   accuracy = ground_truth.lower() in answer.lower()
# Each expected (accuracy, format) below is that rule worked by hand on the case.
PAPER_CASES = [
    # two answer tags: only the first is read; the format regex's lazy .*? still spans both
    ("<think>t</think><answer>Summer Tanager</answer><answer>Scarlet Tanager</answer>", 1.0, 1.0),
    ("<think>t</think><answer>Scarlet Tanager</answer><answer>Summer Tanager</answer>", 0.0, 1.0),
    # no tags at all: accuracy 0 even though the gold is in the text, format 0
    ("It is a Summer Tanager.", 0.0, 0.0),
    ("<think>a Summer Tanager</think>", 0.0, 0.0),
    # spaced tags: the whitespace step joins "< answer >" into "<answer>"
    ("< think > red </ think >\n\n< answer > Summer Tanager </ answer >", 1.0, 1.0),
    ("<think>red</think> <answer>\n summer tanager \n</answer>\n", 1.0, 1.0),
    # text after </answer>: accuracy still read, format fails the full match
    ("<think>red</think><answer>Summer Tanager</answer> I am sure.", 1.0, 0.0),
    # text before <think>: format fails
    ("Sure! <think>red</think><answer>Summer Tanager</answer>", 1.0, 0.0),
    # the whitespace step also rewrites the answer: "/" loses its spaces
    ("<think>.</think><answer>Summer / Tanager</answer>", 0.0, 1.0),
    # a hedge names the gold: the release pays it (the hack the matcher closes)
    ("<think>.</think><answer>Scarlet Tanager or Summer Tanager</answer>", 1.0, 1.0),
]


@pytest.mark.parametrize(("text", "accuracy", "fmt"), PAPER_CASES)
def test_paper_reward_is_the_release_rule(text, accuracy, fmt):
    gold = ["Summer Tanager"]
    assert paper_accuracy_reward(None, [wrap(text)], answer=gold) == [accuracy]
    assert paper_format_reward(None, [wrap(text)]) == [fmt]
    assert [f.__name__ for f in reward_functions("paper", None)] == ["accuracy", "format"]
    assert reward_functions("paper", None)[1] is paper_format_reward


def test_the_matcher_and_its_format_differ_from_the_paper_rule_where_documented(accuracy):
    # the default format rule accepts text after </answer>; the release's full match does not
    tail = "<think>red</think><answer>Summer Tanager</answer> I am sure."
    assert format_reward(None, [wrap(tail)]) == [1.0]
    assert paper_format_reward(None, [wrap(tail)]) == [0.0]
    # the matcher reads the last <answer>, the release the first
    two = "<think>t</think><answer>Summer Tanager</answer><answer>Scarlet Tanager</answer>"
    assert accuracy(None, [wrap(two)], answer=["Summer Tanager"]) == [0.0]
    assert paper_accuracy_reward(None, [wrap(two)], answer=["Summer Tanager"]) == [1.0]


def test_dataset_column_scopes_the_match():
    reg = Registry([
        ClassInfo(0, "Basset", "dogs", "dog"), ClassInfo(1, "Beagle", "dogs", "dog"),
        ClassInfo(0, "Beagle", "pets", "pet"), ClassInfo(1, "Bengal", "pets", "pet"),
    ])
    acc = make_accuracy_reward(reg)
    completions = ["<think>.</think><answer>Beagle or Basset</answer>"] * 2
    # dogs knows both names: a hedge. pets knows only Beagle: one class named, the gold.
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
