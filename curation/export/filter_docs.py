"""What each filter checks, in one line, and which recipe settings (`filters.*`) it reads: the
text the dataset card and the report show beside the filter funnel (funnel.json).

The filters themselves are curation/filter/filters.py; a filter this table does not know is
shown by the meanings of its reason codes (REASONS there), so a new filter never goes unnamed.

    >>> settings_text("length", {"min_words": 40, "max_words": 2000})
    'min_words=40, max_words=2000'
"""

from __future__ import annotations

from typing import Any

FILTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "format": ("`<think>` and `<answer>` present and the four sections found; a reply cut at "
               "max_tokens fails here", ()),
    "answer_correct": ("`<answer>` names exactly one class, the gold (THE matcher: a hedge "
                       "naming two classes fails)", ()),
    "prediction_consistent": ("the prose prediction names the class `<answer>` names", ()),
    "gold_in_candidates": ("the gold is among the candidate sub-categories", ()),
    "candidates_count": ("the number of candidate sub-categories is within bounds",
                         ("min_candidates", "max_candidates")),
    "hallucinated_candidates": ("at most this share of the candidates are not known classes",
                                ("max_hallucinated_share",)),
    "label_leak": ("the visual analysis neither names the gold (or an alias) nor cites text "
                   "given beside the image (\"as described\")", ()),
    "unseen_mention": ("no class of the unseen split is named (reject, or only flag)",
                       ("unseen_mention",)),
    "off_domain": ("the object is not called something outside its super-category",
                   ("off_domain_aliases",)),
    "length": ("words in `<think>` within bounds", ("min_words", "max_words")),
    "language": ("`<think>` is in the expected language (share of its common words)",
                 ("language", "min_stopword_share")),
    "duplicate": ("not a near copy (MinHash Jaccard at or above the threshold) of an accepted "
                  "rationale of the same image or class", ("duplicate_threshold", "duplicate_scope")),
    "judge": ("a second teacher call finds the visual analysis true to the image", ("judge",)),
}


def definition(name: str) -> str:
    """One line on what filter `name` checks."""
    if name in FILTERS:
        return FILTERS[name][0]
    from curation.filter.filters import REASONS

    meanings = [text for _code, (owner, text) in REASONS.items() if owner == name]
    return "; ".join(meanings) or "(no description)"


def settings_text(name: str, settings: dict[str, Any]) -> str:
    """`key=value` for the settings filter `name` ran with (funnel.json's), or ''."""
    keys = FILTERS.get(name, ("", ()))[1]
    return ", ".join(f"{k}={settings[k]}" for k in keys if k in settings)
