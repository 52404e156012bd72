"""Evaluation metrics (train/eval/metrics.py): hand-computed cases, no model, no server.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_eval_metrics.py

The relative similarity is checked against a hand computation with an embedder that is a
lookup table of unit vectors (cosines chosen by hand), and against plain numpy with the
model-free hashed n-gram embedder. No text model is loaded here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from curation.core.labels import ClassInfo, Registry
from train.eval import metrics as m
from train.eval.report import PAPER_FILE, compare, markdown_table, paper_results

FIXTURES = Path(__file__).parent / "fixtures" / "fine_r1_eval"

# -- relative semantic similarity ------------------------------------------------------------

# Unit vectors with hand-picked cosines to the gold (1, 0, 0): the coarse word at 0.5.
TABLE = {
    "Laysan Albatross": (1.0, 0.0, 0.0),
    "bird": (0.5, math.sqrt(0.75), 0.0),
    "albatross": (0.8, 0.6, 0.0),
    "seabird": (0.5, 0.0, math.sqrt(0.75)),
    "gull": (0.2, 0.0, math.sqrt(0.96)),
    "object": (0.0, 1.0, 0.0),
}


def table_embed(texts):
    return np.array([TABLE[t] for t in texts], dtype=np.float64)


@pytest.mark.parametrize(
    ("pred", "coarse", "expected"),
    [
        ("Laysan Albatross", "bird", 1.0),  # exact: (1 - .5) / (1 - .5)
        ("albatross", "bird", 0.6),  # (0.8 - 0.5) / (1 - 0.5)
        ("seabird", "bird", 0.0),  # as close as the coarse word: no credit
        ("gull", "bird", 0.0),  # (0.2 - 0.5) / 0.5 < 0 -> clipped to 0
        ("albatross", "object", 0.8),  # cos(object, gold) = 0: the raw cosine
        ("gull", "object", 0.2),
    ],
)
def test_relative_similarity_matches_the_hand_computation(pred, coarse, expected):
    assert m.relative_similarity(pred, "Laysan Albatross", coarse, table_embed) == pytest.approx(expected)


def test_relative_similarity_with_the_hashed_embedder_equals_numpy():
    texts = ["Black Footed Albatross", "Black-footed albatross", "Sooty Albatross", "bird", "object"]
    e = m.hashed_ngram_embed(texts)
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0)
    gold, coarse = e[0], e[3]
    for i, pred in enumerate(texts[1:3], start=1):
        by_hand = max(0.0, (e[i] @ gold - coarse @ gold) / (1 - coarse @ gold))
        assert m.relative_similarity(pred, texts[0], "bird", m.hashed_ngram_embed) == pytest.approx(by_hand)
    # spelling variants of the gold score 1, a sibling species less
    assert m.relative_similarity(texts[1], texts[0], "bird", m.hashed_ngram_embed) == pytest.approx(1.0)
    assert m.relative_similarity(texts[2], texts[0], "bird", m.hashed_ngram_embed) < 0.9


def test_coarse_word_default_and_paper_compat():
    right = {short: m.coarse_word(short, None) for short in m.COARSE}
    assert right == {s: s for s in m.COARSE}
    compat = {short: m.coarse_word(short, None, paper_compat=True) for short in m.COARSE}
    assert compat == {"aircraft": "aircraft", "bird": "object", "car": "car", "dog": "object",
                      "flower": "flower", "pet": "object"}
    assert m.coarse_word(None, "mushroom", paper_compat=True) == "mushroom"  # not a paper dataset


def test_paper_compat_reads_the_paper_image_paths():
    """The paper's own files: its path rule gives 'object' exactly for birds, dogs and pets."""
    words = {}
    for file in sorted(FIXTURES.glob("*.jsonl")):
        for line in file.read_text().splitlines():
            path = json.loads(line)["image_path"]
            words.setdefault(file.name.split("_")[0], set()).add(m.paper_coarse_word(path))
    assert words == {"aircraft": {"aircraft"}, "bird": {"object"}, "car": {"car"},
                     "dog": {"object"}, "flower": {"flower"}, "pet": {"object"}}


# -- the single-answer rule --------------------------------------------------------------------


@pytest.fixture(scope="module")
def birds() -> Registry:
    names = ["Laysan Albatross", "Sooty Albatross", "Black Footed Albatross", "Heermann Gull",
             "Pomarine Jaeger"]
    return Registry(ClassInfo(i, n, "bird", "bird", aliases=("Diomedea immutabilis",) if i == 0 else ())
                    for i, n in enumerate(names))


OPTIONS = ["Sooty Albatross", "Laysan Albatross", "Heermann Gull", "Black Footed Albatross"]


@pytest.mark.parametrize(
    ("answer", "status", "picked"),
    [
        ("<answer>Laysan Albatross</answer>", "correct", 1),
        ("<answer>Diomedea immutabilis</answer>", "correct", 1),  # an alias names the option
        ("<answer>Sooty Albatross</answer>", "wrong", 0),
        ("<answer>Laysan Albatross or Sooty Albatross</answer>", "ambiguous", -2),
        ("<answer>Pomarine Jaeger</answer>", "unknown", -1),  # a class, but not an option
        ("<think>no tags closed", "unknown", -1),
        ("", "empty", -1),
    ],
)
def test_closed_world_names_exactly_one_option(birds, answer, status, picked):
    _, got_status, got_picked = m.judge_closed(answer, OPTIONS, 1, birds, "bird")
    assert (got_status, got_picked) == (status, picked)


def test_paper_compat_closed_world_needs_the_answer_tag(birds):
    # the release's eval/evaluation.py: extract_answer() is None without <answer> -> wrong
    assert m.judge_closed("Laysan Albatross", OPTIONS, 1, birds, "bird")[1:] == ("correct", 1)
    assert m.judge_closed("Laysan Albatross", OPTIONS, 1, birds, "bird", require_tag=True)[1:] == ("empty", -1)
    assert m.judge_closed("<answer>Laysan Albatross</answer>", OPTIONS, 1, birds, "bird",
                          require_tag=True)[1:] == ("correct", 1)


def test_open_world_uses_the_matcher(birds):
    assert m.judge_open("<answer>a laysan albatross</answer>", "Laysan Albatross", birds, "bird")[1:] == (
        "correct", "Laysan Albatross")
    assert m.judge_open("<answer>Laysan or Sooty Albatross</answer>", "Laysan Albatross", birds,
                        "bird")[1] == "wrong"  # only the full name "Sooty Albatross" is named
    assert m.judge_open("<answer>Laysan Albatross, Heermann Gull</answer>", "Laysan Albatross",
                        birds, "bird")[1] == "ambiguous"


def test_hierarchy_levels():
    def plane(i, name, maker, family):
        return ClassInfo(i, name, "air", "aircraft",
                         levels={"manufacturer": maker, "family": family, "variant": name})

    reg = Registry([plane(0, "Boeing 737-300", "Boeing", "Boeing 737"),
                    plane(1, "Boeing 737-400", "Boeing", "Boeing 737"),
                    plane(2, "Boeing 747-400", "Boeing", "Boeing 747"),
                    plane(3, "Airbus A320", "Airbus", "A320")])
    gold = reg.get("air", 0)
    assert m.level_hits("Boeing 737-400", gold, reg) == {"manufacturer": True, "family": True}
    assert m.level_hits("a Boeing 747-400", gold, reg) == {"manufacturer": True, "family": False}
    assert m.level_hits("some Boeing 737", gold, reg) == {"manufacturer": True, "family": True}
    assert m.level_hits("Airbus A320", gold, reg) == {"manufacturer": False, "family": False}
    assert m.level_hits("Boeing 737-300 or Airbus A320", gold, reg)["manufacturer"] is False
    assert m.level_hits("Boeing 737-300", reg.get("air", 0), Registry([ClassInfo(0, "x", "y", "z")])) == {
        "manufacturer": False, "family": False}


# -- aggregation -------------------------------------------------------------------------------


def test_position_stats_of_a_first_option_model():
    rows = [{"gold_index": g, "picked": 0, "correct": g == 0} for g in (0, 1, 2, 3, 0, 0, 0, 1)]
    stats = m.position_stats(rows)
    assert stats["accuracy"] == pytest.approx(4 / 8)  # gold sits first half the time here
    assert stats["debiased_accuracy"] == pytest.approx(0.25)  # 1, 0, 0, 0 over the positions
    assert stats["picked"] == {"0": 1.0, "1": 0.0, "2": 0.0, "3": 0.0, "none": 0.0, "several": 0.0}
    assert stats["gold"]["0"] == pytest.approx(0.5)


def test_table_averages_are_arithmetic_over_datasets():
    rows = []
    for dataset, seen, unseen in (("a", [1, 1, 0, 0], [1, 0]), ("b", [1], [0, 0, 0])):
        rows += [{"dataset": dataset, "class_split": "seen", "correct": v} for v in seen]
        rows += [{"dataset": dataset, "class_split": "unseen", "correct": v} for v in unseen]
    t = m.table(rows, ["correct"])
    assert t["cells"]["a"]["seen"] == {"n": 4, "correct": 0.5}
    s, u = (0.5 + 1.0) / 2, (0.5 + 0.0) / 2
    assert t["averages"]["correct"] == {"S-Avg": s, "U-Avg": u, "Avg": (s + u) / 2}


def test_per_class_and_confusions():
    rows = [{"dataset": "d", "label": "A", "class_split": "seen", "correct": 0.0, "status": "wrong", "predicted": "B"},
            {"dataset": "d", "label": "A", "class_split": "seen", "correct": 0.0, "status": "wrong", "predicted": "B"},
            {"dataset": "d", "label": "A", "class_split": "seen", "correct": 1.0, "status": "correct", "predicted": "A"},
            {"dataset": "d", "label": "B", "class_split": "unseen", "correct": 0.0, "status": "ambiguous", "predicted": ""}]
    assert [(r["label"], r["accuracy"]) for r in m.per_class(rows)] == [("B", 0.0), ("A", 1 / 3)]
    assert m.confusions(rows) == [{"dataset": "d", "gold": "A", "predicted": "B", "count": 2}]


# -- the paper's published rows ----------------------------------------------------------------


def test_paper_rows_are_consistent_and_attributed():
    """Each transcribed average equals the mean of its cells (catches a misread figure)."""
    data = paper_results()
    assert "2602.07605" in data["attribution"] and "84cdc5c" in data["attribution"]
    for mode, published in data["tables"].items():
        assert {"Fine-R1-7B", "Fine-R1-3B", "Qwen2.5-VL-7B", "Qwen2.5-VL-3B", "DeepPerception-7B"} <= set(
            published["rows"]), mode
        for name, row in published["rows"].items():
            assert list(row["seen"]) == data["datasets"] == list(row["unseen"])
            s = sum(row["seen"].values()) / 6
            u = sum(row["unseen"].values()) / 6
            assert abs(s - row["S-Avg"]) < 0.011 and abs(u - row["U-Avg"]) < 0.011, (mode, name)
            assert abs((row["S-Avg"] + row["U-Avg"]) / 2 - row["Avg"]) < 0.011, (mode, name)
    assert "SigLIP-L" in data["tables"]["closed"]["rows"]
    assert PAPER_FILE.exists()


def test_markdown_table_layout():
    row = {"seen": {"bird": 0.5}, "unseen": {"bird": 0.25}, "S-Avg": 0.5, "U-Avg": 0.25, "Avg": 0.375}
    text = markdown_table({"run": row}, ["bird", "car"])
    assert text.splitlines()[0] == "| Model | bird (S) | car (S) | S-Avg | bird (U) | car (U) | U-Avg | Avg |"
    assert text.splitlines()[2] == "| run | 50.00 | — | 50.00 | 25.00 | — | 25.00 | 37.50 |"


def test_compare_of_nothing_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="finecot eval run"):
        compare([tmp_path / "missing"])


def test_a_local_text_model_embeds_for_the_relative_similarity(tmp_path):
    """A tiny random BERT saved locally (the loader refuses anything but a local folder):
    rows are unit vectors, identical texts embed identically, and the score is the formula."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from train.eval.models import load_text_embedder

    words = ["laysan albatross", "sooty albatross", "bird", "object", "gull"]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(words, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(tmp_path)
    BertModel(BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_hidden_layers=1,
                         num_attention_heads=2, intermediate_size=32)).save_pretrained(tmp_path)
    embed = load_text_embedder(str(tmp_path))
    e = embed(words + ["laysan albatross"])
    assert e.shape == (6, 16) and np.allclose(np.linalg.norm(e, axis=1), 1.0)
    assert np.allclose(e[0], e[5], atol=1e-6)
    gold, coarse, pred = e[0], e[2], e[1]
    by_hand = max(0.0, (pred @ gold - coarse @ gold) / (1 - coarse @ gold))
    assert m.relative_similarity(words[1], words[0], "bird", embed) == pytest.approx(by_hand, abs=1e-6)
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        load_text_embedder("google/siglip-base-patch16-256")
