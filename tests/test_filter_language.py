"""The filters on the teacher language of issue 16: each quoted example gets its verdict.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_filter_language.py

Judged with the paper's own registry and split (Fine-R1), as `finecot audit --split
fine-r1` does. The matcher's examples are in tests/test_labels.py.
"""

from __future__ import annotations

import pytest

from curation.core.config import FilterConfig
from curation.filter.filters import build_context, judge
from curation.filter.mentions import MentionIndex
from curation.ingest.split import fine_r1_registry


@pytest.fixture(scope="module")
def ctx():
    registry, lists = fine_r1_registry()
    return build_context(registry, FilterConfig(min_words=20), lists)


def rationale(visual: str, candidates: str, prediction: str, answer: str,
              comparison: str = "The first candidate matches every feature noted above; the others "
                                "differ in colour, size and shape as the comparison shows.") -> str:
    return (f"<think>Visual analysis:\n{visual}\n\nCandidate sub-categories:\n{candidates}\n\n"
            f"Comparison:\n{comparison}\n\nThe prediction is: {prediction}</think>\n"
            f"<answer>{answer}</answer>")


def draft(response: str, label: str, dataset: str) -> dict:
    return {"response": response, "label": label, "dataset": dataset, "super_category": dataset,
            "item_id": "x", "finish_reason": "stop"}


DOG = "A large dog with a dense coat, erect ears and a long bushy tail carried low behind it."
CANDIDATES = {
    "German Shepherd": "1. German Shepherd\n2. Malinois\n3. Groenendael",
    "Welsh Springer Spaniel": "1. Welsh Springer Spaniel\n2. English Springer\n3. Sussex Spaniel",
    "sunflower": "1. sunflower\n2. marigold\n3. buttercup",
    "Pine Grosbeak": "1. Pine Grosbeak\n2. Evening Grosbeak\n3. Blue Grosbeak",
    "Chevrolet Silverado 1500 Extended Cab 2012": "1. Chevrolet Silverado 1500 Extended Cab 2012\n"
                                                  "2. GMC Canyon Extended Cab 2012\n3. Ford F-150 Regular Cab 2012",
    "Ford Mustang Convertible 2007": "1. Ford Mustang Convertible 2007\n2. Chevrolet Camaro Convertible 2012\n"
                                     "3. Chrysler Crossfire Convertible 2008",
}
DATASET = {"German Shepherd": "dog", "Welsh Springer Spaniel": "dog", "sunflower": "flower",
           "Pine Grosbeak": "bird", "Chevrolet Silverado 1500 Extended Cab 2012": "car",
           "Ford Mustang Convertible 2007": "car"}


@pytest.mark.parametrize(("label", "phrase"), [
    ("German Shepherd", "The saddle is typical for German Shepherds."),
    ("Welsh Springer Spaniel", "The red patches are a hallmark of Welsh Springer Spaniels."),
    ("sunflower", "The broad brown disc is typical of sunflowers."),
    ("Pine Grosbeak", "The conifer is the Pine Grosbeak's habitat."),
    ("Pine Grosbeak", "The conifer is the Pine Grosbeak\u2019s habitat."),
    ("Chevrolet Silverado 1500 Extended Cab 2012",
     "It is a Chevrolet Silverado 1500 Extended Cab from 2012."),
    ("Ford Mustang Convertible 2007", "It is a 2007 Ford Mustang Convertible with the top down."),
])
def test_label_leak_finds_inflected_and_reordered_names(ctx, label, phrase):
    v = judge(draft(rationale(f"{DOG} {phrase}", CANDIDATES[label], label, label), label,
                    DATASET[label]), ctx)
    assert "label_leak" in v.reasons, v.reasons


@pytest.mark.parametrize(("label", "phrase"), [
    ("German Shepherd", "Shepherd dogs and herding breeds share the saddle."),
    ("Chevrolet Silverado 1500 Extended Cab 2012", "The grille resembles other Chevrolet Silverado trucks."),
    ("Ford Mustang Convertible 2007", "The badge is a galloping horse on a long hood."),
])
def test_label_leak_leaves_family_and_partial_names_alone(ctx, label, phrase):
    v = judge(draft(rationale(f"{DOG} {phrase}", CANDIDATES[label], label, label), label,
                    DATASET[label]), ctx)
    assert "label_leak" not in v.reasons, v.evidence


@pytest.mark.parametrize("phrase", [
    "Given the visual features and the context provided, it is a herding dog.",
    "Given the description and visual features, it is a herding dog.",
    "Based on the description and the image, it is a herding dog.",
    "The question specifies the year as 2012.",
    "The coat is dense, as mentioned in the context.",
])
def test_side_information_phrasings(ctx, phrase):
    label = "German Shepherd"
    v = judge(draft(rationale(f"{DOG} {phrase}", CANDIDATES[label], label, label), label, "dog"), ctx)
    assert "side_information" in v.reasons, v.evidence


@pytest.mark.parametrize("phrase", [
    "The dog closely matches the description of a Saint Bernard in size only.",
    "As described above, the ears are erect.",
    "The image provided shows the dog in profile; the question asks for its breed.",
])
def test_class_knowledge_is_not_side_information(ctx, phrase):
    label = "German Shepherd"
    v = judge(draft(rationale(f"{DOG} {phrase}", CANDIDATES[label], label, label), label, "dog"), ctx)
    assert "side_information" not in v.reasons, v.evidence


def test_one_sentence_repeated_250_times_is_degenerate(ctx):
    label = "German Shepherd"
    loop = "The dog has erect ears and a black saddle. " * 250  # ~2,000 words
    v = judge(draft(rationale(DOG + " " + loop, CANDIDATES[label], label, label), label, "dog"),
              build_context(ctx.registry, FilterConfig(min_words=20, max_words=5000),
                            {"dog": {"unseen": []}}))
    assert v.reasons == ("repetition",), v.reasons
    assert "250 times in a row" in v.evidence["repetition"][0] or "repeat" in v.evidence["repetition"][0]


def test_a_hedged_prediction_is_rejected_even_with_a_clean_answer(ctx):
    label = "German Shepherd"
    response = rationale(DOG, CANDIDATES[label], "It is either the German Shepherd or the Malinois.",
                         label)
    v = judge(draft(response, label, "dog"), ctx)
    assert "prediction_hedged" in v.reasons
    assert v.evidence["prediction_hedged"] == ["alternatives: German Shepherd, Malinois"]
    committed = rationale(DOG, CANDIDATES[label], "It is most likely a German Shepherd.", label)
    assert judge(draft(committed, label, "dog"), ctx).accepted


def test_plural_candidates_resolve(ctx):
    label = "Bobolink"
    response = rationale(
        "A blackbird-sized bird with a black face and underparts, a buff nape and white wing "
        "patches on the back, perched on a tall weed stem in a meadow.",
        "- Bobolinks (Dolichonyx oryzivorus)\n- Red Winged Blackbirds\n- Yellow Headed Blackbirds",
        "Bobolink", label)
    v = judge(draft(response, label, "bird"), ctx)
    assert "gold_not_in_candidates" not in v.reasons and "hallucinated" not in v.evidence, v.evidence


def test_checks_read_the_whole_response_without_think(ctx):
    label = "German Shepherd"
    bare = rationale(f"{DOG} As described, the saddle is black.",
                     "1. German Shepherd\n2. Malinois\n3. Kelpie", label, label)
    bare = bare.replace("<think>", "").replace("</think>", "")
    v = judge(draft(bare, label, "dog"), ctx)
    assert "no_think_tag" in v.reasons
    assert {"side_information", "unseen_mention"} <= set(v.reasons), v.reasons  # Kelpie: unseen


def test_name_forms_scan(ctx):
    index = MentionIndex(ctx.registry, "car")
    found = index.find("a 2012 Dodge Charger next to a Volkswagen Beetle Convertible")
    assert [c.name for c in found] == ["Dodge Charger Sedan 2012"]  # no Beetle Hatchback
    assert [c.name for c in index.find("the Dodge Charger")] == []  # Sedan 2012 or SRT-8 2009
    birds = MentionIndex(ctx.registry, "bird")
    assert [c.name for c in birds.find("Henslow's Sparrows and a Bewick\u2019s Wren")] == [
        "Henslow Sparrow", "Bewick Wren"]
