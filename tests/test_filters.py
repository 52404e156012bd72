"""Filters: each with passing and failing drafts; the filter stage on a real run directory.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_filters.py
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.core.config import FilterConfig, RecipeError
from curation.core.labels import ClassInfo, Registry, normalize
from curation.filter.filters import (
    FILTERS,
    REASON_FILTER,
    REASONS,
    build_context,
    judge,
)
from curation.filter.mentions import fast_normalize

AIRCRAFT = ["Boeing 737-300", "Boeing 737-400", "Airbus A320", "Tornado", "Hawk T1",
            "Saab 340", "Fokker 100"]
REGISTRY = Registry(
    [ClassInfo(i, name, "aircraft", "aircraft", aliases=("B733",) if name == "Boeing 737-300" else ())
     for i, name in enumerate(AIRCRAFT)]
    + [ClassInfo(0, "Crimson-crowned Warbler", "birds", "bird"),
       ClassInfo(1, "Azure-crowned Warbler", "birds", "bird"),
       ClassInfo(2, "Crimson-crowned Plain Warbler", "birds", "bird")]
)
SPLITS = {"aircraft": {"seen": AIRCRAFT[:5], "unseen": ["Saab 340", "Fokker 100"]}}

VISUAL = ("The aircraft is a narrow-body twin-engine jet with engines mounted under the wings, "
          "a short fuselage with a flattened lower engine nacelle, a conventional tail and "
          "small winglets at the tips of the swept wings.")


def rationale(
    visual: str = VISUAL,
    candidates: str = "- Boeing 737-300\n- Boeing 737-400\n- Airbus A320",
    comparison: str = ("The 737-400 is longer with more windows behind the wing; the A320 has "
                       "round nacelles. The short fuselage and flat nacelles fit the 737-300 best."),
    prediction: str = "The prediction is: Boeing 737-300",
    answer: str = "Boeing 737-300",
) -> str:
    return (f"<think>Visual analysis:\n{visual}\n\nCandidate Subcategories:\n{candidates}\n\n"
            f"Comparison Process:\n{comparison}\n\n{prediction}</think>\n<answer>{answer}</answer>")


def draft(response: str | None = None, **extra) -> dict:
    row = {"response": rationale() if response is None else response, "finish_reason": "stop",
           "label": "Boeing 737-300", "dataset": "aircraft", "super_category": "aircraft",
           "item_id": "img1", "status": "ok"}
    row.update(extra)
    return row


@pytest.fixture
def ctx():
    return build_context(REGISTRY, FilterConfig(min_words=20), SPLITS)


def reasons(row: dict, context) -> tuple[str, ...]:
    return judge(row, context).reasons


def test_a_good_draft_passes_every_filter(ctx):
    v = judge(draft(), ctx)
    assert v.accepted and v.reasons == () and v.flags == ()
    assert v.parsed.candidates == ["Boeing 737-300", "Boeing 737-400", "Airbus A320"]


def test_every_reason_code_belongs_to_a_filter(ctx):
    known = {*FILTERS, "judge"}  # the judge runs in the filter stage, not in judge()
    assert set(REASON_FILTER.values()) <= known
    assert {name for name, _ in REASONS.values()} <= known
    bad = [draft(rationale(visual="As described, a Boeing 737-300 shows a train.",
                           candidates="- Saab 340", answer="Boeing 737-300 or Airbus A320")),
           draft(""), draft("<think>x", finish_reason="length", status="failed"),
           draft(rationale(candidates="\n".join(f"- {n} X" for n in AIRCRAFT), answer="Hawk T1"))]
    codes = {code for row in bad for code in judge(row, ctx).reasons}
    assert len(codes) >= 12
    assert codes <= set(REASONS), codes - set(REASONS)


# -- format -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "code"),
    [
        (draft(finish_reason="length"), "truncated"),
        (draft(rationale().split("<answer>")[0] + "<answer>Boeing 7"), "truncated"),
        (draft(rationale().replace("</think>", "")), "think_unclosed"),
        (draft(rationale().replace("<answer>", "").replace("</answer>", "")), "no_answer_tag"),
        (draft(rationale().replace("Comparison Process:\n", "")
               .replace("The 737-400 is longer", "\nThe 737-400 is longer")), None),
        (draft(rationale(candidates="")), "missing_candidates"),
        (draft(rationale(prediction="")), "missing_prediction"),
        (draft("", status="failed"), "draft_failed"),
    ],
)
def test_format(ctx, row, code):
    got = reasons(row, ctx)
    if code is None:  # a comparison written without its heading is still found
        assert not {c for c in got if c.startswith("missing")}, got
    else:
        assert code in got


# -- answer_correct ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        ("Boeing 737-300", None),
        ("boeing 737 300", None),
        ("B733", None),  # an alias
        ("Boeing 737-400", "wrong_answer"),
        ("either Boeing 737-300 or Boeing 737-400", "ambiguous_answer"),
        ("Boeing 737-300 / Airbus A320", "ambiguous_answer"),
        ("a Boeing jet", "unknown_answer"),
        ("", "empty_answer"),
    ],
)
def test_answer_correct(ctx, answer, code):
    got = reasons(draft(rationale(answer=answer, prediction=f"The prediction is: {answer}")), ctx)
    answer_codes = [c for c in got if REASON_FILTER.get(c) == "answer_correct"]
    assert answer_codes == ([code] if code else [])


def test_answer_of_an_unregistered_gold_is_matched_by_name(ctx):
    row = draft(rationale(answer="Boeing 737-500", prediction="The prediction is: Boeing 737-500"),
                label="Boeing 737-500")
    assert "wrong_answer" not in reasons(row, ctx)


# -- prediction / candidates ---------------------------------------------------------------


def test_prediction_consistent(ctx):
    bad = draft(rationale(prediction="The prediction is: Airbus A320"))
    assert "prediction_inconsistent" in reasons(bad, ctx)
    prose = draft(rationale(prediction="Final Prediction:\nThe aircraft is most likely a B733."))
    assert "prediction_inconsistent" not in reasons(prose, ctx)


def test_short_names_count_when_they_start_exactly_one_class():
    reg = Registry([ClassInfo(0, "Hyundai Veracruz SUV 2012", "cars", "car"),
                    ClassInfo(1, "Hyundai Santa Fe SUV 2012", "cars", "car"),
                    ClassInfo(2, "BMW X5 SUV 2007", "cars", "car"),
                    ClassInfo(3, "BMW X5 SUV 2012", "cars", "car")])
    context = build_context(reg, FilterConfig(min_words=20))
    row = draft(rationale(candidates="1. Hyundai Veracruz\n2. Hyundai Santa Fe\n3. BMW X5 SUV",
                          prediction="The prediction is: a Hyundai Veracruz.",
                          answer="Hyundai Veracruz SUV 2012"),
                label="Hyundai Veracruz SUV 2012", dataset="cars", super_category="car")
    v = judge(row, context)
    assert "gold_not_in_candidates" not in v.reasons
    assert "prediction_inconsistent" not in v.reasons
    assert v.evidence["hallucinated"] == ["BMW X5 SUV"]  # starts two classes: not a name


@pytest.mark.parametrize(
    ("candidates", "code"),
    [
        ("- Boeing 737-400\n- Airbus A320", "gold_not_in_candidates"),
        ("- Boeing 737-300", "too_few_candidates"),
        ("\n".join(f"- {n}" for n in AIRCRAFT), "too_many_candidates"),
        ("- Boeing 737-300\n- Boeing 737-350 Super\n- Airbus A999", "hallucinated_candidates"),
        ("Boeing 737-300, Boeing 737-400 and Airbus A320", None),
    ],
)
def test_candidate_filters(ctx, candidates, code):
    got = reasons(draft(rationale(candidates=candidates)), ctx)
    cand = [c for c in got if REASON_FILTER.get(c) in
            ("gold_in_candidates", "candidates_count", "hallucinated_candidates")]
    assert cand == ([code] if code else [])


def test_hallucination_threshold_and_count():
    row = draft(rationale(candidates="- Boeing 737-300\n- Boeing 737-400\n- Boeing 737-350 Super"))
    lenient = judge(row, build_context(REGISTRY, FilterConfig(min_words=20), SPLITS))
    assert "hallucinated_candidates" not in lenient.reasons  # 1 of 3 <= the default share 0.5
    assert lenient.evidence["hallucinated"] == ["Boeing 737-350 Super"]
    strict = FilterConfig(min_words=20, max_hallucinated_share=0)
    assert "hallucinated_candidates" in judge(row, build_context(REGISTRY, strict, SPLITS)).reasons


# -- label leak ----------------------------------------------------------------------------


@pytest.mark.parametrize("visual", [
    VISUAL + " It is a Boeing 737-300.",
    VISUAL + " The B733 shape is clear.",  # alias
    "Boeing 737 300 with " + VISUAL,
])
def test_label_in_visual_analysis_leaks(ctx, visual):
    v = judge(draft(rationale(visual=visual)), ctx)
    assert "label_leak" in v.reasons
    assert v.evidence["label_leak"] == ["Boeing 737-300"]


@pytest.mark.parametrize("phrase", [
    "As described, the jet has winglets.",
    "The description provided mentions winglets.",
    "The label says it is a jet.",
    "Given label aside, the wings are swept.",
    "The given label fits.",
    "As stated, the tail is conventional.",
    "According to the caption, this is a jet.",
    "The details provided point to a narrow-body jet.",
    "As mentioned in the description, the nacelles are flat.",
])
def test_side_information_phrasings_leak(ctx, phrase):
    assert "side_information" in reasons(draft(rationale(visual=VISUAL + " " + phrase)), ctx)


@pytest.mark.parametrize("phrase", [
    "As described above, the nacelles are flat.",
    "The features are as indicated by the shape of the tail.",
    "The description of the wings is consistent.",
])
def test_self_references_are_not_side_information(ctx, phrase):
    assert "side_information" not in reasons(draft(rationale(visual=VISUAL + " " + phrase)), ctx)


def test_gold_named_after_the_visual_analysis_is_not_a_leak(ctx):
    assert judge(draft(), ctx).accepted  # the gold is in candidates, comparison, prediction


# -- unseen / off-domain -------------------------------------------------------------------


def test_unseen_mention_reject_and_flag():
    row = draft(rationale(comparison="Unlike the Saab 340 turboprop, the jet has flat nacelles "
                                     "and a short fuselage, so the 737-300 fits best."))
    rejecting = build_context(REGISTRY, FilterConfig(min_words=20), SPLITS)
    v = judge(row, rejecting)
    assert "unseen_mention" in v.reasons and v.evidence["unseen_mention"] == ["Saab 340"]
    flagging = build_context(REGISTRY, FilterConfig(min_words=20, unseen_mention="flag"), SPLITS)
    v = judge(row, flagging)
    assert v.accepted and v.flags == ("unseen_mention",)


@pytest.mark.parametrize(("visual", "off"), [
    ("The image shows a train with a pointed nose and two-tone paint.", True),
    ("The image is not of an airplane but rather a piece of audio equipment with jacks.", True),
    ("The provided image is not of a plane; it depicts a tornado over a field.", True),
    ("There is no aircraft in the image, only a high-speed train.", True),
    ("It depicts a fritillary butterfly resting on a leaf.", True),
    (VISUAL + " The swept wings look like a bird's.", False),
    (VISUAL + " There are no aircraft markings visible on the tail.", False),
    (VISUAL + " The jet is a Tornado-like strike aircraft? No: it is an airliner.", False),
])
def test_off_domain(ctx, visual, off):
    v = judge(draft(rationale(visual=visual)), ctx)
    assert ("off_domain" in v.reasons) is off, v.evidence


def test_off_domain_ignores_nouns_inside_class_names(ctx):
    row = draft(rationale(visual=VISUAL.replace("The aircraft is", "The image shows a Tornado,")),
                label="Tornado")
    assert "off_domain" not in reasons(row, ctx)


def test_off_domain_unknown_super_category_needs_an_alias():
    row = draft(rationale(visual="The image shows a train with a pointed nose. " + VISUAL),
                super_category="jets")
    assert "off_domain" not in reasons(row, build_context(REGISTRY, FilterConfig(min_words=20)))
    mapped = FilterConfig(min_words=20, off_domain_aliases={"jets": "aircraft"})
    assert "off_domain" in reasons(row, build_context(REGISTRY, mapped))


# -- length / language / duplicate ---------------------------------------------------------


def test_length_bounds():
    short = build_context(REGISTRY, FilterConfig(min_words=500), SPLITS)
    assert "too_short" in reasons(draft(), short)
    long = build_context(REGISTRY, FilterConfig(min_words=1, max_words=30), SPLITS)
    assert "too_long" in reasons(draft(), long)


def test_language(ctx):
    german = ("Das Flugzeug hat zwei Triebwerke unter den Flügeln, einen kurzen Rumpf und kleine "
              "Winglets an den Spitzen der gepfeilten Flügel, die Gondeln sind unten abgeflacht.")
    row = draft(rationale(visual=german, comparison="Die 737-400 ist länger; die A320 hat runde "
                          "Gondeln. Der kurze Rumpf passt am besten zur 737-300."))
    assert "wrong_language" in reasons(row, ctx)
    chinese = draft(rationale(visual="这架飞机有两个发动机，机身较短，翼尖有小翼。" * 5))
    assert "wrong_language" in reasons(chinese, ctx)
    assert "wrong_language" not in reasons(draft(), ctx)


def test_duplicates_of_an_accepted_draft_are_rejected(ctx):
    first = judge(draft(draft_id="img1#0"), ctx)
    again = judge(draft(draft_id="img1#1"), ctx)
    other_image = judge(draft(draft_id="img2#0", item_id="img2"), ctx)
    assert first.accepted and not again.accepted
    assert again.reasons == ("near_duplicate",) and again.evidence["duplicate_of"] == ["img1#0"]
    assert other_image.accepted
    # Re-judging the accepted draft itself (review re-validation) is not a duplicate.
    assert judge(draft(draft_id="img1#0"), ctx).accepted
    different = draft(rationale(comparison="Only the 737-300 combines the short body with the "
                                "flattened nacelles; the 737-400 is stretched by two plugs."),
                      draft_id="img1#2")
    assert judge(different, ctx).accepted


def test_minhash_estimates_jaccard_of_shingles():
    import random

    from curation.filter.dedup import signature, similarity

    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)]
    errors = []
    for _ in range(200):
        a = [rng.choice(vocab) for _ in range(300)]
        b = list(a)
        for _ in range(rng.randint(0, 80)):
            b[rng.randrange(300)] = rng.choice(vocab)
        sa, sb = ({tuple(x[i:i + 3]) for i in range(298)} for x in (a, b))
        exact = len(sa & sb) / len(sa | sb)
        errors.append(abs(similarity(signature(a), signature(b)) - exact))
    assert sum(errors) / len(errors) < 0.06 and max(errors) < 0.25
    assert similarity(signature(a), signature(list(a))) == 1.0
    assert signature([]) is None


def test_duplicate_scope_class():
    context = build_context(REGISTRY, FilterConfig(min_words=20, duplicate_scope="class"), SPLITS)
    assert judge(draft(draft_id="a#0", item_id="a"), context).accepted
    assert not judge(draft(draft_id="b#0", item_id="b"), context).accepted


def test_rejected_drafts_are_not_remembered_as_duplicates(ctx):
    assert not judge(draft(finish_reason="length", draft_id="img1#0"), ctx).accepted
    assert judge(draft(draft_id="img1#1"), ctx).accepted


# -- several reasons at once, settings -----------------------------------------------------


def test_a_draft_keeps_all_its_reasons(ctx):
    row = draft(rationale(visual=VISUAL + " As described, it is a Boeing 737-300.",
                          candidates="- Airbus A320", answer="Boeing 737-400",
                          prediction="The prediction is: Boeing 737-400"), finish_reason="length")
    got = set(reasons(row, ctx))
    assert {"truncated", "wrong_answer", "gold_not_in_candidates", "too_few_candidates",
            "label_leak", "side_information"} <= got


def test_disabled_filters_do_not_run():
    context = build_context(REGISTRY, FilterConfig(min_words=20, disabled=["answer_correct"]))
    wrong = draft(rationale(answer="Airbus A320", prediction="The prediction is: Airbus A320"))
    assert judge(wrong, context).accepted
    assert "answer_correct" not in context.enabled


@pytest.mark.parametrize(("config", "words"), [
    (FilterConfig(disabled=["formatt"]), "unknown filter"),
    (FilterConfig(language="xx"), "language"),
    (FilterConfig(min_candidates=5, max_candidates=3), "min_candidates"),
])
def test_bad_settings_are_clear_errors(config, words):
    with pytest.raises(RecipeError, match=words):
        build_context(REGISTRY, config)


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=200))
@settings(max_examples=300, deadline=None)
def test_fast_normalize_equals_the_matchers_normalize(text):
    assert fast_normalize(text) == normalize(text)


@given(st.text(max_size=200))
@settings(max_examples=500, deadline=None)
def test_fast_normalize_equals_normalize_on_any_unicode(text):
    assert fast_normalize(text) == normalize(text)


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_judge_never_raises(text):
    context = build_context(REGISTRY, FilterConfig(), SPLITS)
    v = judge(draft(text), context)
    assert v.accepted is (not v.reasons)


def test_judge_survives_drafts_with_missing_or_odd_fields(ctx):
    for row in ({}, {"response": None, "label": None, "dataset": None},
                {"response": 123, "label": 5, "dataset": "nope", "super_category": None}):
        v = judge(row, ctx)
        assert not v.accepted and "empty_text" in v.reasons


def test_off_domain_evidence_is_the_first_phrase_in_every_process():
    """The evidence does not depend on set order (string hashes differ per process)."""
    import os
    import subprocess
    import sys

    code = ("from curation.filter.domains import off_domain_phrase; print(off_domain_phrase("
            "'It depicts a tornado. ' + 'The wings are long and thin. ' * 8 + "
            "'Or rather a train. ' * 4 + 'It is a speaker. ' * 9 + 'It is a mixer.', "
            "'aircraft'))")
    seen = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip()
        for seed in range(6)
    }
    assert seen == {"depicts a tornado"}
