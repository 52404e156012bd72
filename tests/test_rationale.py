"""Rationale parser: tags, headings in many styles, candidate lists, real teacher output.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_rationale.py
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.filter.rationale import SECTIONS, Rationale, parse, parse_candidates

FIXTURE = Path(__file__).parent / "fixtures" / "fine_r1_stage1_sample.json"

FOUR_PARTS = """<think>
{v}
The bird has a crimson crown, a streaked breast and a short conical beak.

{c}
- Crimson-crowned Warbler: red crown, streaks
- Azure-crowned Warbler
- Crimson-crowned Plain Warbler

{m}
Only the Crimson-crowned Warbler combines the red crown with streaks.

{p}
</think>
<answer>Crimson-crowned Warbler</answer>"""

HEADING_STYLES = {
    "plain colon": ("Visual analysis:", "Candidate Subcategories:", "Comparison Process:",
                    "The prediction is: Crimson-crowned Warbler"),
    "numbered": ("1. Visual analysis:", "2. Candidate sub-categories:", "3. Comparison:",
                 "4. Prediction: Crimson-crowned Warbler"),
    "markdown": ("### Visual Analysis", "### Candidate Subcategories", "### Comparison",
                 "### Final Prediction\nCrimson-crowned Warbler"),
    "bold": ("**Visual Analysis**", "**Candidate Subcategories**", "**Comparison Process**",
             "**Final Prediction:** Crimson-crowned Warbler"),
    "fine-r1": (" Analysis of Visual Features:", " Candidate Subcategories", " Comparison Process",
                " Final Prediction\nThe bird is a Crimson-crowned Warbler."),
    "steps": ("Step 1: Visual analysis", "Step 2: Candidates", "Step 3: Comparison of the candidates",
              "Step 4: Conclusion - Crimson-crowned Warbler"),
    "bird's": ("Analysis of the Bird's Visible Features", "Possible species:",
               "Now, let's compare these candidates based on the observed features:",
               "Final Prediction: Crimson-crowned Warbler"),
    "markdown 2": ("## Visual Analysis", "## Candidate Sub-categories", "## Comparison",
                   "## Prediction\n**Crimson-crowned Warbler**"),
    "dashed steps": ("Step 1 – Visual analysis:", "Step 2 – Candidates (same super-category):",
                     "Step 3 – Comparison:", "Step 4 – Prediction: Crimson-crowned Warbler."),
    "bold colon": ("**Visual analysis**:", "**Candidates**:", "**Comparison**:",
                   "**Prediction**: The bird is a **Crimson-crowned Warbler**."),
    "parenthesis": ("1) Visual analysis", "2) Candidate sub-categories", "3) Comparison",
                    "4) Final prediction\nCrimson-crowned Warbler"),
    "plain words": ("Observations:", "Possible species:", "Reasoning:",
                    "Conclusion: Crimson-crowned Warbler."),
}


@pytest.mark.parametrize("style", sorted(HEADING_STYLES))
def test_heading_styles_find_all_four_sections(style):
    v, c, m, p = HEADING_STYLES[style]
    r = parse(FOUR_PARTS.format(v=v, c=c, m=m, p=p))
    assert r.errors == (), r
    assert "crimson crown" in r.visual_analysis
    assert r.candidates == ["Crimson-crowned Warbler", "Azure-crowned Warbler",
                            "Crimson-crowned Plain Warbler"]
    assert "combines the red crown" in r.comparison
    assert "Crimson-crowned Warbler" in r.prediction
    assert r.answer == "Crimson-crowned Warbler"
    assert not r.truncated


def test_tags_tolerate_case_and_whitespace():
    r = parse("< THINK >Visual analysis: grey.\nCandidates: A, B\nComparison: A fits.\n"
              "Prediction: A</ think >\n<Answer > A </ANSWER>")
    assert r.answer == "A"
    assert r.think.startswith("Visual analysis")
    assert r.errors == ()


@pytest.mark.parametrize(
    ("text", "truncated", "code"),
    [
        ("<think>Visual analysis: the wings are", True, "think_unclosed"),
        ("<think>Visual analysis: grey.</think><answer>Boeing 7", True, "answer_unclosed"),
        ("<think>Visual analysis: grey.<answer>A</answer>", False, "think_unclosed"),
        ("Visual analysis: grey. Prediction: A", False, "no_think_tag"),
        ("<think>x</think>", False, "no_answer_tag"),
        ("<think>x</think><answer> </answer>", False, "empty_answer"),
        ("<think>x</think><answer>A</answer><answer>B</answer>", False, "multiple_answer_tags"),
        ("Sure! <think>x</think><answer>A</answer>", False, "text_outside_tags"),
        ("<think>x</think><answer>A</answer> Hope this helps", False, "text_outside_tags"),
        ("<think>x < y</think><answer> </answer>", False, "empty_answer"),
        ("", False, "empty_text"),
    ],
)
def test_tag_errors(text, truncated, code):
    r = parse(text)
    assert r.truncated is truncated
    assert code in r.errors


def test_tidy_tags_read_like_the_tag_regex():
    """The str.find path for tidy texts agrees with the regex path it short-cuts."""
    from curation.filter.rationale import _find_tags, _tidy_tags

    texts = ["<think>Visual analysis: red.</think>\n<answer> A </answer>\n",
             " <think>x</think><answer>\\boxed{B}</answer>", "<think></think><answer></answer>",
             "<think>a</think>b<answer>c</answer>d", "<answer>A</answer><think>x</think>"]
    assert sum(_tidy_tags(text) is not None for text in texts) == 4
    for text in texts:
        tidy = _tidy_tags(text)
        assert tidy is None or tidy == _find_tags(text)
    assert _tidy_tags(texts[0]) == ("Visual analysis: red.", "A", "Visual analysis: red.", False, [])
    assert _tidy_tags(texts[-1]) is None  # (out of order: the regex path reports it)


def test_boxed_answer_is_unwrapped():
    assert parse("<think>x</think><answer>\\boxed{Saab 340}</answer>").answer == "Saab 340"


def test_missing_sections_are_reported():
    r = parse("<think>The plane has a T-tail.\nThe prediction is: Saab 340</think>"
              "<answer>Saab 340</answer>")
    assert "missing_candidates" in r.errors and "missing_comparison" in r.errors
    assert "missing_visual_analysis" not in r.errors and "missing_prediction" not in r.errors
    assert r.prediction == "Saab 340"


def test_one_paragraph_rationale_is_split_at_inline_headings():
    r = parse("<think>Visual analysis: a red crown. Candidates: Red Warbler, Blue Warbler. "
              "Comparison: only one is red. Prediction: Red Warbler.</think>"
              "<answer>Red Warbler</answer>")
    assert r.errors == ()
    assert r.candidates == ["Red Warbler", "Blue Warbler"]
    assert r.visual_analysis == "a red crown."


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("1. Boeing 737-300\n2. Boeing 737-400\n3. Airbus A320", ["Boeing 737-300", "Boeing 737-400", "Airbus A320"]),
        ("- **Eurofighter Typhoon**: a delta-wing fighter\n- Dassault Rafale - French",
         ["Eurofighter Typhoon", "Dassault Rafale"]),
        ("Beagle; Basset Hound; Harrier", ["Beagle", "Basset Hound", "Harrier"]),
        ("The candidates are: Beagle, Basset Hound, or Harrier.", ["Beagle", "Basset Hound", "Harrier"]),
        ("1. Palm Warbler (Setophaga palmarum):\n   - yellow\n2. Pine Warbler (a plainer bird with wing bars)",
         ["Palm Warbler (Setophaga palmarum)", "Pine Warbler"]),
        ("There are no candidates because the image shows a train.", []),
    ],
)
def test_candidate_lists(text, names):
    assert parse_candidates(text) == names


def test_candidate_list_stops_at_the_comparison_bullets():
    text = ("1. ATR-42\n2. Saab 340\n\n- ATR-42: high wing, matches.\n- Saab 340: smaller.\n")
    assert parse_candidates(text) == ["ATR-42", "Saab 340"]


@given(st.text(max_size=400))
@settings(max_examples=300, deadline=None)
def test_parse_never_raises(text):
    r = parse(text)
    assert isinstance(r, Rationale)
    assert isinstance(r.candidates, list)


@given(st.lists(st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "< THINK >",
                                 "Candidates:", "- A", "1. B", "Prediction:", "\n", "x y. "]),
                max_size=30))
@settings(max_examples=300, deadline=None)
def test_parse_never_raises_on_tag_soup(parts):
    assert isinstance(parse("".join(parts)), Rationale)


# -- real teacher output (Fine-R1 Stage-1, see fixtures/ATTRIBUTION.md) ----------------------


@pytest.fixture(scope="module")
def corpus():
    rows = json.loads(FIXTURE.read_text(encoding="utf-8"))
    return [parse(row["messages"][2]["content"]) for row in rows]


def test_real_corpus_tags_and_answers(corpus):
    assert len(corpus) == 37
    for r in corpus:
        assert r.answer, r
        assert r.think and not r.truncated
        assert not {"no_think_tag", "no_answer_tag", "think_unclosed"} & set(r.errors)


def test_real_corpus_sections(corpus):
    found = {s: sum(bool(getattr(r, s)) for r in corpus) for s in SECTIONS}
    assert found["visual_analysis"] == 37 and found["prediction"] == 37
    # Positions 5 and 15 are the "audio equipment" and "tornado" rationales: no candidates.
    assert found["candidates"] == 35 and found["comparison"] == 35
    assert not corpus[5].candidates and not corpus[15].candidates
    assert corpus[0].candidates[0] == "Eurofighter Typhoon"
    assert corpus[2].candidates == ["ATR-42/72 Series", "Dash 8/Q-Series (Bombardier)",
                                    "Saab 340", "Fokker 50"]
    assert corpus[9].prediction == "Metroliner"  # not the paragraph after it
    for r in corpus:
        assert 2 <= len(r.candidates) <= 6 or not r.candidates
        assert all(len(name.split()) <= 12 for name in r.candidates)


def test_numbered_bold_headings_are_not_split_at_their_number():
    r = parse("<think>\n**2. Candidate sub-categories:**\n- Red Warbler\n- Blue Warbler\n\n"
              "**3. Comparison:** Only the Red Warbler is red.\n\n**4. Prediction:** Red Warbler.\n"
              "</think>\n<answer>Red Warbler</answer>")
    assert r.errors == ("missing_visual_analysis",)
    assert r.comparison == "Only the Red Warbler is red."
