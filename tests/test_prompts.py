"""Prompt templates: header comments stripped, StrictUndefined, hint/candidate contract, shas.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_prompts.py
"""

from __future__ import annotations

import pytest

from curation.teacher.prompts import (
    load_prompts,
    load_questions,
    load_template,
    pick_candidates,
    pick_question,
)

BLIND = dict(question="What kind of bird is this?", super_category="bird", hint=None,
             description=None, attributes=None, candidates=None)


def test_header_comment_never_reaches_the_teacher():
    prompts = load_prompts()
    for template, variables in ((prompts.system, {"super_category": "bird"}),
                                (prompts.user, BLIND)):
        assert template.source.lstrip().startswith("{#")
        text = template.render(**variables)
        assert "Variables:" not in text and "{#" not in text
        assert text == text.strip()


def test_system_prompt_asks_for_four_parts_and_answer_tag():
    text = load_prompts().system.render(super_category="aircraft")
    for part in ("Visual analysis", "Candidate sub-categories", "Comparison", "Prediction",
                 "<think>", "<answer>"):
        assert part in text
    assert "aircraft" in text
    # a line "Candidates: ..." is the user prompt's candidate list (the teacher reads it)
    assert not any(line.strip().startswith("Candidates:") for line in text.splitlines())


def test_blind_prompt_hides_the_label_and_hinted_states_it_in_the_contract_phrase():
    user = load_prompts().user
    blind = user.render(**BLIND)
    assert "correct sub-category is" not in blind
    hinted = user.render(**{**BLIND, "hint": "Laysan Albatross",
                            "description": "a large seabird", "attributes": {"bill": "pink"}})
    assert 'the correct sub-category is "Laysan Albatross"' in hinted
    assert "a large seabird" in hinted and "bill: pink" in hinted


def test_candidate_line_format():
    text = load_prompts().user.render(**{**BLIND, "candidates": ["A b", "C", "D-e"]})
    assert "Candidates: A b; C; D-e" in text.splitlines()


def test_missing_variable_is_a_clear_error():
    with pytest.raises(ValueError, match="is undefined; pass every variable"):
        load_prompts().user.render(question="q", super_category="bird")


def test_template_sha_follows_the_source(tmp_path):
    (tmp_path / "s.jinja").write_text("{# header #}system {{ super_category }}")
    (tmp_path / "u.jinja").write_text("{# header #}user {{ question }}")
    first = load_prompts("s.jinja", "u.jinja", str(tmp_path))
    assert first.user.render(question="Q?") == "user Q?"
    load_template.cache_clear()
    (tmp_path / "u.jinja").write_text("{# header #}user, edited {{ question }}")
    second = load_prompts("s.jinja", "u.jinja", str(tmp_path))
    assert second.system.sha == first.system.sha
    assert second.user.sha != first.user.sha and second.sha != first.sha


def test_unknown_template_names_the_available_ones():
    with pytest.raises(FileNotFoundError, match="draft_user.jinja"):
        load_template("nope.jinja")


def test_question_bank_covers_domains_and_falls_back():
    bank = load_questions()
    for domain in ("bird", "aircraft", "car", "dog", "flower", "pet", "object", "generic"):
        assert bank[domain], domain
    assert "bird" in pick_question(bank, "bird", "cub/1").lower()
    assert pick_question(bank, "bird", "cub/1") == pick_question(bank, "bird", "cub/1")
    spread = {pick_question(bank, "bird", f"cub/{i}") for i in range(50)}
    assert len(spread) > 1
    assert "mushroom" in pick_question(bank, "mushroom", "m/1")


def test_candidates_include_gold_and_are_stable():
    others = [f"class {i}" for i in range(30)]
    chosen = pick_candidates("gold", others, 5, "item-1")
    assert len(chosen) == 5 and "gold" in chosen
    assert chosen == pick_candidates("gold", list(reversed(others)), 5, "item-1")
    assert pick_candidates("gold", others, 5, "item-2") != chosen


def test_prompt_candidates_are_pool_classes_of_the_same_super_category_first():
    """Held-out classes are never named to the teacher (they would leak into training
    rationales); rivals come from the gold's super-category, then the rest of the pool."""
    from curation.core.config import Recipe
    from curation.core.labels import ClassInfo, Registry
    from curation.draft.requests import Requests

    classes = [("Tern A", "tern"), ("Tern B", "tern"), ("Tern C", "tern"), ("Finch A", "finch"),
               ("Finch B", "finch"), ("Unseen Tern", "tern")]
    registry = Registry(ClassInfo(i, name, "birds", sc) for i, (name, sc) in enumerate(classes))
    pool = [{"item_id": f"{name}/{j}", "dataset": "birds", "label": name, "super_category": sc,
             "label_id": i} for i, (name, sc) in enumerate(classes[:5]) for j in range(4)]
    recipe = Recipe.model_validate({"name": "t", "prompts": {"candidates": 4}})
    requests = Requests(recipe, registry, pool)
    for row in pool:
        user = requests.messages(row, "blind", "data:,")[1]["content"][-1]["text"]
        named = [name for name, _ in classes if f"{name}" in user]
        assert "Unseen Tern" not in user and row["label"] in named and len(named) == 4
        if row["super_category"] == "tern":  # all three terns, then one finch
            assert {"Tern A", "Tern B", "Tern C"} <= set(named)
        else:
            assert {"Finch A", "Finch B"} <= set(named)
