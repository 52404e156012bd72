"""Label-grounded filters: a parsed draft -> accepted or rejected, with every reason.

Each filter is a small function `f(draft, parsed, ctx, evidence) -> None | code | [codes]`
(None: pass). All filters run on every draft, so a rejected row keeps all its reasons; the
order of FILTERS is the order of the funnel. Settings (on/off, thresholds) come from the
recipe's `filters:` section (curation/core/config.py FilterConfig).

    format                   tags well formed, four sections, not truncated (parse codes)
    answer_correct           <answer> vs the gold with THE matcher (curation/labels.match):
                             wrong_answer | ambiguous_answer | unknown_answer | empty_answer
    prediction_consistent    the prose prediction names the class of <answer> and commits to
                             it (no "either A or B", no "cannot be determined")
    gold_in_candidates       the gold class is among the candidates
    candidates_count         between min_candidates and max_candidates candidates
    hallucinated_candidates  candidates that are not classes of the registry (counted; too
                             large a share rejects)
    label_leak               the gold named in the visual analysis, in any form a teacher
                             writes it (curation/filter/name_forms.py); references to side
                             information (the grammar of curation/filter/side_text.py)
    unseen_mention           names a class of the unseen split, in any form (flag or reject)
    off_domain               calls the object something outside its super-category
                             (curation/filter/domains.py)
    length, language         word bounds; expected language (stopword share)
    repetition               degenerate text that loops (curation/filter/repetition.py)
    duplicate                near-duplicate of an accepted rationale of the same image/class
                             (curation/filter/dedup.py)
    judge (optional, off)    a second teacher call: does the visual analysis match the image?
                             Runs in the filter stage only (curation/filter/judge.py)

Every reason code, with the filter that emits it and what it means, is in REASONS below.
Side information, unseen mentions and repetition read `<think>`, or the whole response when
the tag is missing (such a draft is rejected for format, and its evidence still counts).

The public API for the draft quota loop and review: `ctx = make_context(recipe, run)`, then
`judge(draft, ctx) -> Verdict` per draft (draft keys: response, finish_reason, label,
dataset, super_category, item_id; optional status, draft_id, image_sha256). The stage
`finecot filter --run DIR` (curation/filter/stage.py) writes accepted.parquet,
rejected.parquet and funnel.json; class names are found by curation/filter/mentions.py.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from curation.core.config import FilterConfig, Recipe, RecipeError
from curation.core.labels import ClassInfo, Registry, match
from curation.core.rundir import RunDir
from curation.filter.context import FilterContext
from curation.filter.dedup import NearDuplicates, signature
from curation.filter.domains import off_domain_phrase
from curation.filter.mentions import MentionIndex, fast_normalize, normalized_words
from curation.filter.rationale import ERROR_CODES, Rationale, parse
from curation.filter.repetition import repetition
from curation.filter.side_text import described_feature, side_information_phrase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """The outcome for one draft. `flags` are findings that do not reject (flag mode);
    `evidence` says what each filter found (names, phrases), for humans and the audit."""

    accepted: bool
    reasons: tuple[str, ...]
    parsed: Rationale
    flags: tuple[str, ...] = ()
    evidence: dict[str, list[str]] = field(default_factory=dict)


# -- context (FilterContext itself: curation/filter/context.py) -----------------------------


def build_context(
    registry: Registry,
    settings: FilterConfig | None = None,
    splits: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
) -> FilterContext:
    """A context from a registry, filter settings and {dataset: {"unseen": [names]}}."""
    settings = settings or FilterConfig()
    unknown = [name for name in settings.disabled if name not in FILTERS]
    if unknown:
        raise RecipeError(
            f"filters.disabled names unknown filter(s) {unknown}; known: {', '.join(FILTERS)}"
        )
    if settings.min_candidates > settings.max_candidates:
        raise RecipeError("filters.min_candidates must not exceed filters.max_candidates")
    if settings.language not in STOPWORDS and settings.language != "any":
        raise RecipeError(
            f"filters.language={settings.language!r}: no heuristic for it; use one of "
            f"{', '.join(STOPWORDS)} or 'any' (or disable the language filter)"
        )
    unseen: dict[str, set[ClassInfo]] = {}
    for dataset, parts in (splits or {}).items():
        for name in parts.get("unseen", ()):
            info = registry.resolve(name, dataset)
            if info is not None:
                unseen.setdefault(dataset, set()).add(info)
    return FilterContext(
        registry=registry,
        settings=settings,
        unseen=unseen,
        duplicates=NearDuplicates(settings.duplicate_threshold),
        enabled=tuple(name for name in FILTERS if name not in settings.disabled),
    )


def make_context(recipe: Recipe, run: RunDir) -> FilterContext:
    """The filter context of a run: its registry, its split manifest, the recipe's settings."""
    registry = Registry.load(run.require(run.registry, "ingest"))
    splits = None
    if run.split.exists():
        splits = json.loads(run.split.read_text(encoding="utf-8")).get("datasets", {})
    else:
        log.warning("%s missing: unseen_mention cannot check anything", run.split)
    return build_context(registry, recipe.filters, splits)


# -- the filters ----------------------------------------------------------------------------

Evidence = dict[str, list[str]]
Outcome = str | list[str] | None


def check_format(draft: Mapping, r: Rationale, ctx: FilterContext, ev: Evidence) -> Outcome:
    codes: list[str] = []
    status = draft.get("status")
    if status not in (None, "ok", "length"):
        codes.append(f"draft_{status}")
    if r.truncated or draft.get("finish_reason") == "length":
        codes.append("truncated")
    codes += [c for c in r.errors if c != "think_unclosed" or not r.truncated]
    return codes or None


def check_answer(draft: Mapping, r: Rationale, ctx: FilterContext, ev: Evidence) -> Outcome:
    label, dataset = str(draft.get("label") or ""), str(draft.get("dataset") or "")
    gold = ctx.gold(label, dataset)
    result = match(r.answer, gold or label, ctx.registry, dataset or None)
    if result.status == "correct":
        return None
    if result.named:
        ev["answer_names"] = list(result.named)
    return f"{result.status}_answer"


# A prediction that declines to decide ("it is not possible to identify", "cannot be
# determined", "I am not sure"); "most likely A" is a committed prediction.
DECLINE = re.compile(
    r"\b(?:cannot|can ?not|can't|unable to|not possible to|impossible to|hard to|difficult to)"
    r"(?: be)? (?:determine|identif|tell|say|decide|distinguish|rule)[a-z]*"
    r"|\b(?:not sure|unsure|uncertain|inconclusive|undetermined)\b",
    re.IGNORECASE,
)
# Every DECLINE phrasing holds one of these words (the regex runs only when one is there).
_DECLINE_WORDS = frozenset(("not", "cannot", "cant", "unable", "impossible", "hard", "difficult",
                            "unsure", "uncertain", "inconclusive", "undetermined"))


def hedged_prediction(prediction: str, words: list[str], index: MentionIndex) -> str | None:
    """Why a prose prediction commits to no class ("It is either the A or the B"), or None.

    >>> from curation.core.labels import ClassInfo, Registry
    >>> index = MentionIndex(Registry([ClassInfo(0, "Gnat", "d", "x"), ClassInfo(1, "Bee", "d", "x")]), "d")
    >>> hedged_prediction("It is either the Gnat or the Bee.", ["it", "is", "either", "the",
    ...                   "gnat", "or", "the", "bee"], index)
    'alternatives: Gnat, Bee'
    >>> hedged_prediction("It is not possible to identify it.", ["it", "is", "not", "possible"], index)
    'not possible to identify'
    >>> hedged_prediction("It is most likely a Gnat.", ["it", "is", "most", "likely", "a", "gnat"], index)
    """
    declined = None if _DECLINE_WORDS.isdisjoint(words) else DECLINE.search(prediction)
    if declined:
        return declined.group(0)
    if "or" in words or "either" in words:
        named = index.find_words(words)
        if len(named) > 1:
            return "alternatives: " + ", ".join(c.name for c in named)
    return None


def check_prediction(draft: Mapping, r: Rationale, ctx: FilterContext, ev: Evidence) -> Outcome:
    if not r.prediction or not r.answer:
        return None  # format reports the missing part
    index = ctx.mentions(str(draft.get("dataset") or ""))
    answer, prediction = ctx.words(r.answer), ctx.words(r.prediction)
    hedge = hedged_prediction(r.prediction, prediction, index)
    if hedge:
        ev["prediction_hedged"] = [hedge]
        return "prediction_hedged"
    answered = index.find_words(answer)
    if len(answered) == 1:  # a less specific prediction ("Boeing 747") does not contradict
        ok = index.names_class(prediction, answered[0], "cover")
    else:  # the answer names no single class: compare the words themselves
        ok = f" {' '.join(answer)} " in f" {' '.join(prediction)} "
    return None if ok else "prediction_inconsistent"


def _candidate_classes(draft: Mapping, r: Rationale, ctx: FilterContext) -> list[list[ClassInfo]]:
    dataset = str(draft.get("dataset") or "")
    return [ctx.name_classes(dataset, name) for name in r.candidates]


def check_gold_in_candidates(
    draft: Mapping, r: Rationale, ctx: FilterContext, ev: Evidence
) -> Outcome:
    if not r.candidates:
        return None  # format and candidates_count report it
    label = str(draft.get("label") or "")
    gold = ctx.gold(label, str(draft.get("dataset") or ""))
    if gold is not None:
        ok = any(gold in found for found in _candidate_classes(draft, r, ctx))
    else:
        phrase = f" {fast_normalize(label)} "
        ok = any(phrase in f" {fast_normalize(name)} " for name in r.candidates)
    return None if ok else "gold_not_in_candidates"


def check_candidates_count(
    draft: Mapping, r: Rationale, ctx: FilterContext, ev: Evidence
) -> Outcome:
    n = len(r.candidates)
    if n < ctx.settings.min_candidates:
        return "too_few_candidates"
    if n > ctx.settings.max_candidates:
        return "too_many_candidates"
    return None


def check_hallucinated(draft: Mapping, r: Rationale, ctx: FilterContext, ev: Evidence) -> Outcome:
    unknown = [
        name for name, found in zip(r.candidates, _candidate_classes(draft, r, ctx), strict=True)
        if not found
    ]
    if unknown:
        ev["hallucinated"] = unknown
    if not r.candidates:
        return None
    too_many = len(unknown) > ctx.settings.max_hallucinated_share * len(r.candidates)
    return "hallucinated_candidates" if too_many else None


def _reasoning(draft: Mapping, r: Rationale) -> str:
    """The text a check of the reasoning reads: <think>, or the whole response without it
    (a draft that lost its tags is rejected for format, but its evidence still counts)."""
    if r.think is not None:
        return r.think
    response = draft.get("response")
    return response if isinstance(response, str) else ""


def check_label_leak(draft: Mapping, r: Rationale, ctx: FilterContext, ev: Evidence) -> Outcome:
    codes: list[str] = []
    label, dataset = str(draft.get("label") or ""), str(draft.get("dataset") or "")
    gold = ctx.gold(label, dataset)
    if r.visual_analysis:
        visual = ctx.words(r.visual_analysis)
        joined = f" {' '.join(visual)} "
        if gold is not None:  # a substring test first; the scan settles "Basset" in "Basset Hound"
            index = ctx.mentions(dataset)
            leaked = any(f" {form} " in joined for form in index.forms.get(gold, ())) and \
                index.names_class(visual, gold)
        else:
            leaked = f" {fast_normalize(label)} " in joined
        if leaked:
            codes.append("label_leak")
            ev["label_leak"] = [gold.name if gold else label]
    text = _reasoning(draft, r)
    side = side_information_phrase(text, ctx.key_words(text, dataset))
    if side is None and r.visual_analysis:
        side = described_feature(r.visual_analysis)
        if side and ctx.mentions(dataset).find(side):
            side = None  # "the description of a Saint Bernard's coat": class knowledge
    if side:
        codes.append("side_information")
        ev["side_information"] = [side]
    return codes or None


def check_unseen(draft: Mapping, r: Rationale, ctx: FilterContext, ev: Evidence) -> Outcome:
    dataset = str(draft.get("dataset") or "")
    unseen = ctx.unseen.get(dataset)
    if not unseen:
        return None
    index = ctx.mentions(dataset)
    think = _reasoning(draft, r)
    key_words = ctx.key_words(think, dataset)
    found: list[ClassInfo] = []
    # The full scan (longest name first) only where an unseen name may be in the text: most
    # rationales hold no unseen name, and the word test costs a few lookups per name (only
    # names filed under a word of the text are tested).
    gate = ctx.unseen_gate(dataset)
    if any(words <= key_words for word in gate.keys() & key_words for words in gate[word]):
        found = index.find_words(ctx.words(think), word_set=key_words)
    found += index.find_words(ctx.words(r.answer or ""))
    named = list(dict.fromkeys(c.name for c in found if c in unseen))
    if not named:
        return None
    ev["unseen_mention"] = named
    return "unseen_mention"


def check_off_domain(draft: Mapping, r: Rationale, ctx: FilterContext, ev: Evidence) -> Outcome:
    super_category = str(draft.get("super_category") or "")
    domain = ctx.settings.off_domain_aliases.get(super_category, super_category)
    dataset = str(draft.get("dataset") or "")
    words = ctx.words(r.visual_analysis) + ctx.words(r.prediction)
    phrase = off_domain_phrase(
        f"{r.visual_analysis}\n{r.prediction}", domain, ctx.mentions(dataset).excluded_nouns, words
    )
    if phrase is None:
        return None
    ev["off_domain"] = [phrase]
    return "off_domain"


def check_length(draft: Mapping, r: Rationale, ctx: FilterContext, ev: Evidence) -> Outcome:
    words = len(ctx.words(r.think or ""))  # normalised words: "737-300" counts two
    if words < ctx.settings.min_words:
        return "too_short"
    if words > ctx.settings.max_words:
        return "too_long"
    return None


def check_repetition(draft: Mapping, r: Rationale, ctx: FilterContext, ev: Evidence) -> Outcome:
    text = _reasoning(draft, r)
    found = repetition(text, ctx.words(text), ctx.settings.max_repeated_share,
                       ctx.settings.max_repeated_run)
    if found is None:
        return None
    ev["repetition"] = [found]
    return "repetition"


STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset((
        "the", "a", "an", "of", "and", "or", "to", "in", "on", "with", "is", "are", "was",
        "were", "be", "been", "it", "its", "this", "that", "these", "those", "as", "by", "for",
        "from", "at", "which", "not", "but", "has", "have", "had", "than", "more", "most",
        "also", "while", "their", "there", "they", "into", "each", "both",
    )),
}


def _non_ascii(text: str) -> int:
    """How many characters of `text` are not ASCII (encode drops each: no regex match object
    per character).

    >>> _non_ascii("Straße – ok")
    2
    """
    return len(text) - len(text.encode("ascii", "ignore"))


_LANGUAGE_SAMPLE = 200  # words; enough for a stable share, cheap on long rationales


def check_language(draft: Mapping, r: Rationale, ctx: FilterContext, ev: Evidence) -> Outcome:
    language = ctx.settings.language
    text = r.think or ""
    if language == "any" or not text or text.isspace():
        return None
    if language == "en" and not text.isascii() and _non_ascii(text) > 0.1 * len(text):
        return "wrong_language"
    words = ctx.words(text)[:_LANGUAGE_SAMPLE]
    if not words:  # nothing in Latin letters at all
        return "wrong_language"
    common = STOPWORDS[language]
    share = sum(map(common.__contains__, words)) / len(words)
    return "wrong_language" if share < ctx.settings.min_stopword_share else None


def check_duplicate(draft: Mapping, r: Rationale, ctx: FilterContext, ev: Evidence) -> Outcome:
    """The duplicate filter's place in FILTERS (funnel order, settings); it depends on the
    drafts accepted before, so conclude() runs it, in input order."""
    raise RuntimeError("the duplicate filter runs in conclude(), not with the other filters")


def dedup_key(draft: Mapping, ctx: FilterContext) -> str:
    """The bucket the duplicate filter compares a draft in: its image, or its class."""
    if ctx.settings.duplicate_scope == "class":
        return f"class:{draft.get('dataset')}:{draft.get('label')}"
    return f"image:{draft.get('image_sha256') or draft.get('item_id')}"


def _draft_key(draft: Mapping) -> str:
    return str(draft.get("draft_id") or f"{draft.get('item_id')}#{draft.get('sample_index', '')}")


# A dict is the registry: filter name -> function, in funnel order.
FILTERS: dict[str, Callable[[Mapping, Rationale, FilterContext, Evidence], Outcome]] = {
    "format": check_format,
    "answer_correct": check_answer,
    "prediction_consistent": check_prediction,
    "gold_in_candidates": check_gold_in_candidates,
    "candidates_count": check_candidates_count,
    "hallucinated_candidates": check_hallucinated,
    "label_leak": check_label_leak,
    "unseen_mention": check_unseen,
    "off_domain": check_off_domain,
    "length": check_length,
    "repetition": check_repetition,
    "language": check_language,
    "duplicate": check_duplicate,
}


@dataclass(slots=True)  # (not frozen: built once per draft, a frozen one costs ~2 us more)
class Assessment:
    """A draft parsed and judged by every filter but `duplicate`, which depends on the drafts
    accepted before it and so runs in input order (conclude). `words` (in process) or
    `signature` (from a worker process: curation/filter/parallel.py) is what the duplicate
    filter compares."""

    parsed: Rationale
    failed: dict[str, list[str]]  # filter name -> reason codes, for the filters that failed
    evidence: Evidence
    words: list[str] | None = None
    signature: np.ndarray | None = None


def assess(draft: Mapping, ctx: FilterContext, signature_now: bool = False) -> Assessment:
    """Parse one draft and run every enabled filter except `duplicate` (all of them run, every
    reason is kept). `signature_now`: compute the duplicate filter's MinHash signature here
    (a worker process) rather than keep the words (the signature is only needed when the
    draft's image already has an accepted rationale, or the draft is accepted)."""
    r = parse(draft.get("response"))
    evidence: Evidence = {}
    failed: dict[str, list[str]] = {}
    ctx.begin_draft()
    for name in ctx.enabled:
        if name == "duplicate":
            continue
        outcome = FILTERS[name](draft, r, ctx, evidence)
        if outcome:
            failed[name] = [outcome] if isinstance(outcome, str) else list(outcome)
    if "duplicate" not in ctx.enabled:
        return Assessment(r, failed, evidence)
    if not signature_now:
        return Assessment(r, failed, evidence, words=ctx.words(r.think or ""))
    # A worker: the signature of a draft every other filter let through (it will be
    # remembered, or compared); for a rejected one, conclude() computes it only if its image
    # already has an accepted rationale (most have none).
    flagged = ctx.settings.unseen_mention == "flag"
    if all(name == "unseen_mention" and flagged for name in failed):
        return Assessment(r, failed, evidence, signature=signature(ctx.words(r.think or "")))
    return Assessment(r, failed, evidence)


def conclude(draft: Mapping, ctx: FilterContext, a: Assessment) -> Verdict:
    """The verdict of an assessed draft: the duplicate filter against the drafts accepted so
    far (so call this in input order), flags apart from reasons; an accepted draft is
    remembered for the duplicate filter."""
    failed, evidence = a.failed, a.evidence
    if "duplicate" in ctx.enabled:
        bucket, key = dedup_key(draft, ctx), _draft_key(draft)
        words = a.words
        if words is None and a.signature is None:  # (from a worker, rejected: words if needed)
            words = normalized_words(a.parsed.think or "") if ctx.duplicates.has(bucket) else []
        twin = ctx.duplicates.find(bucket, key, words, a.signature)
        if twin is not None:
            failed = {**failed, "duplicate": ["near_duplicate"]}
            evidence["duplicate_of"] = [twin]
    reasons: list[str] = []
    flags: list[str] = []
    for name, codes in failed.items():
        if name == "unseen_mention" and ctx.settings.unseen_mention == "flag":
            flags += codes
        else:
            reasons += codes
    accepted = not reasons
    if accepted and "duplicate" in ctx.enabled:
        ctx.duplicates.add(bucket, key, words, a.signature)
    return Verdict(accepted, tuple(dict.fromkeys(reasons)), a.parsed, tuple(flags), evidence)


def judge(draft: Mapping, ctx: FilterContext) -> Verdict:
    """Parse and filter one draft. An accepted draft is remembered for the duplicate filter.

    Local filters only: the optional second-call judge (filters.judge) needs the network
    and runs in the filter stage (curation/filter/stage.py, curation/filter/judge.py). Many
    drafts over worker processes: curation/filter/parallel.py (the same verdicts).
    """
    return conclude(draft, ctx, assess(draft, ctx))


# Every reason code a verdict can carry: code -> (filter, what it means). The parse-error
# codes of curation/filter/rationale.py (ERROR_CODES) belong to `format`.
REASONS: dict[str, tuple[str, str]] = {
    **{code: ("format", text) for code, text in ERROR_CODES.items()},
    "truncated": ("format", "cut at max_tokens (finish_reason length) or inside a tag"),
    "draft_failed": ("format", "the teacher request failed (no response)"),
    "draft_empty": ("format", "the teacher returned no text"),
    "wrong_answer": ("answer_correct", "<answer> names one class, not the gold"),
    "ambiguous_answer": ("answer_correct", "<answer> names two or more classes (a hedge)"),
    "unknown_answer": ("answer_correct", "<answer> names no class of the registry"),
    "empty_answer": ("answer_correct", "<answer> is missing or empty"),
    "prediction_inconsistent": ("prediction_consistent", "the prose prediction names another class"),
    "prediction_hedged": ("prediction_consistent", "the prose prediction commits to no class "
                          "(\"either A or B\", \"cannot be determined\")"),
    "gold_not_in_candidates": ("gold_in_candidates", "the gold class is not among the candidates"),
    "too_few_candidates": ("candidates_count", "fewer than filters.min_candidates candidates"),
    "too_many_candidates": ("candidates_count", "more than filters.max_candidates candidates"),
    "hallucinated_candidates": ("hallucinated_candidates", "more than filters."
                                "max_hallucinated_share of the candidates are not classes"),
    "label_leak": ("label_leak", "the gold (or an alias) is named in the visual analysis"),
    "side_information": ("label_leak", "refers to text given beside the image (\"as described\")"),
    "unseen_mention": ("unseen_mention", "names a class of the unseen split"),
    "off_domain": ("off_domain", "calls the object something outside its super-category"),
    "too_short": ("length", "fewer than filters.min_words words in <think>"),
    "too_long": ("length", "more than filters.max_words words in <think>"),
    "repetition": ("repetition", "degenerate text: <think> loops (filters.max_repeated_share, "
                   "filters.max_repeated_run)"),
    "wrong_language": ("language", "not in filters.language"),
    "near_duplicate": ("duplicate", "a near copy of an accepted rationale (same image/class)"),
    "judge_mismatch": ("judge", "the judge (a second teacher call) says the visual analysis "
                       "does not match the image"),
    "judge_failed": ("judge", "the judgement failed, was unreadable or was not sent (budget)"),
}
REASON_FILTER = {code: name for code, (name, _) in REASONS.items() if name != "format"}


def filter_of(code: str) -> str:
    """The filter that emits a reason code (for funnels and reports).

    >>> filter_of("side_information"), filter_of("think_unclosed")
    ('label_leak', 'format')
    """
    return REASONS.get(code, ("format", ""))[0]
