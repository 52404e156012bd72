"""Side information: a rationale that cites text it was given beside the image.

A teacher shown the label, a description or a caption writes "as described", "the
description mentions ...", "given the visual features and the context provided". Such a
rationale was not reasoned from the pixels, and a model trained on it learns to cite text it
will not have. The grammar below names every phrasing the label_leak filter reports as
`side_information`, one rule each (SIDE_RULES); a SOURCE is the kind of text a teacher may
be given:

    SOURCE      description(s) | caption | context | prompt | label | hint | annotation |
                metadata | details | information | (initial | accompanying) text
    provided    (provided | given | supplied | accompanying | attached | initial) SOURCE
                "the provided description", "the given details", "the provided image and
                description"; "the provided X" for any X but the image or its features
                ("the provided weight range")
    source_of   SOURCE (provided | given | supplied) -- "the context provided"
    source_says (the | this) [provided] SOURCE (says | states | mentions | notes | lists |
                specifies | indicates | reads | describes | suggests | confirms | names |
                identifies) -- "the description mentions", "the metadata lists"
    question    the question (specifies | states | says | mentions | notes | indicates |
                gives | provides) -- "the question specifies the year as 2012"
    as_told     as (described | stated | mentioned | specified | given), unless the rationale
                points at itself (above, below, earlier, previously, in the analysis ...)
    told_in     (described | mentioned | stated | specified | given | noted) in the
                (prompt | description | question | text | caption | context | hint | ...)
    according   according to the SOURCE
    in_source   (in | from) the (description | caption | prompt | hint | metadata | label |
                initial text | context), not followed by "of" ("in the context of")
    based_on    (based on | given | considering | using) the (description | context | caption |
                prompt | hint | metadata | details | information) -- "Given the description and
                visual features", "Based on the description and the image"
    is_told     (is | are | was | were) (described | mentioned) (as | but | in) -- "the bird is
                described as medium-sized", "heated mirrors are mentioned but not visible"
    told_range  (range | weight | size | height | length | year) (mentioned | provided |
                stated | specified) -- "the weight range mentioned (80-115 pounds)", "based on
                the year mentioned"
    gold        the (ground truth | correct) (label | answer) (is | was)

In the visual analysis only (the filter passes it separately, see described_feature): the
description of a feature -- "(the) description of" followed, within four words, by a
feature (size, build, coat, colour options, paws, weight, inches ...) or by being /
standing / having / weighing / measuring: "aligns with the description of webbed paws",
"consistent with the description of being approximately 12-14 inches". Before the
candidates there is no description of the rationale's own to point back to; "the
description of a Saint Bernard's coat" names a class and is knowledge (the filter checks).

Not side information (class knowledge and self-reference, by the labelling guide in
tests/fixtures/labelled_rationales/GUIDE.md): "closely matches the description of a Saint
Bernard", "consistent with the description", "as described above", "the image provided
shows", "the visual features provided", "the question asks".

    >>> side_information_phrase("Given the visual features and the context provided, a jet.")
    'context provided'
    >>> side_information_phrase("The question specifies the year as 2012.")
    'The question specifies'
    >>> side_information_phrase("It closely matches the description of a Saint Bernard.") is None
    True
    >>> side_information_phrase("As described above, the tail is long.") is None
    True
"""

from __future__ import annotations

import re

_SOURCE = (r"(?:descriptions?|caption|context|prompt|label|hint|annotations?|metadata|details|"
           r"information|(?:initial|accompanying) text)")
_NOT_SELF = (r"(?! (?:above|below|earlier|previously|before|here|in (?:the |this |my )?"
             r"(?:visual|analysis|image|step|section|features|observations|previous|first)))")

SIDE_RULES: dict[str, str] = {
    "provided": rf"\b(?:provided|given|supplied|accompanying|attached|initial) (?:image and |"
                rf"(?:visual )?features and )?{_SOURCE}\b"
                r"|\bthe provided (?!image|photo|picture|view|visual|features?\b)[a-z]+",
    "source_of": rf"\b{_SOURCE} (?:provided|given|supplied)\b",
    "source_says": rf"\b(?:the|this) (?:provided |given |accompanying |attached |initial )?"
                   rf"{_SOURCE} (?:says|states|mentions|notes|lists|specifies|indicates|"
                   r"reads|describes|suggests|confirms|names|identifies)\b",
    "question": r"\bthe question (?:specifies|states|says|mentions|notes|indicates|gives|provides)\b",
    "as_told": rf"\bas (?:described|stated|mentioned|specified|given)\b{_NOT_SELF}",
    "told_in": r"\b(?:described|mentioned|stated|specified|given|noted) in the (?:prompt|"
               r"description|question|text|caption|context|hint|metadata|initial text|label)\b",
    "according": rf"\baccording to the {_SOURCE}\b",
    "in_source": r"\b(?:in|from) the (?:description|caption|prompt|hint|metadata|label|initial text|"
                 r"context)\b(?! of)",
    "based_on": r"\b(?:based on|given|considering|using) the (?:description|context|caption|prompt|"
                r"hint|metadata|details|information)\b(?! of)",
    "is_told": r"\b(?:is|are|was|were) (?:described|mentioned) (?:as|but|in)\b",
    "told_range": r"\b(?:range|weight|size|height|length|year) (?:mentioned|provided|stated|specified)\b",
    "gold": r"\bthe (?:ground[- ]truth|correct) (?:label|answer) (?:is|was)\b",
}
SIDE_INFORMATION = re.compile("|".join(f"(?:{p})" for p in SIDE_RULES.values()), re.IGNORECASE)

# Every rule holds one of these words: the regex runs only on windows around them (most
# texts have none or a few; one regex over a whole text costs 3x more).
TRIGGERS = frozenset((
    "described", "description", "descriptions", "stated", "mentioned", "specified", "given",
    "caption", "label", "prompt", "hint", "annotation", "annotations", "metadata", "provided",
    "accompanying", "initial", "ground", "correct", "details", "information", "context",
    "question", "noted",
))
_WINDOW = 80


def _rules_with(word: str, flags: int = 0) -> re.Pattern:
    """The rules that hold `word` (or its singular), as one regex: a window around the word
    is searched for these only (smaller alternations run faster)."""
    stem = word[:-1] if word.endswith("s") else word
    return re.compile("|".join(f"(?:{p})" for p in SIDE_RULES.values() if stem in p), flags)


# Per trigger, the regex of its rules: IGNORECASE for any text, and without it for ASCII
# windows of the lower-cased text (twice as fast; on ASCII the two agree, as the pattern's
# letters are all lower case).
_BY_TRIGGER = {w: (_rules_with(w, re.IGNORECASE), _rules_with(w)) for w in TRIGGERS}


_FEATURES = (
    "size|sizes|build|body|structure|coat|fur|colou?rs?|colou?ration|options|paws|feet|tail|"
    "ears|weight|height|length|inches|pounds|cm|kg|trunk|seats|interior|behaviou?r|habitat|"
    "temperament|markings|plumage|stance|proportions"
)
DESCRIBED_FEATURE = re.compile(
    r"\bthe description of (?:(?:being|standing|having|weighing|measuring)\b"
    rf"|(?:[\w\"'\u201c\u2018-]+ ){{0,3}}?[\"'\u201c\u2018]?(?:{_FEATURES})\b)",
    re.IGNORECASE,
)


def described_feature(visual_analysis: str) -> str | None:
    """The first "description of <a feature>" phrase of a visual analysis, or None; the
    caller makes sure it names no class ("the description of a Saint Bernard's coat").

    >>> described_feature("The paws are large, which aligns with the description of webbed paws.")
    'the description of webbed paws'
    >>> described_feature("It fits the description of a compact sedan.") is None
    True
    """
    if "escription of" not in visual_analysis:  # (no copy of the text: "D" or "d")
        return None
    hit = DESCRIBED_FEATURE.search(visual_analysis)
    return hit.group(0) if hit else None


def side_information_phrase(text: str, words: frozenset[str] | None = None) -> str | None:
    """The first side-information phrase of `text`, as written, or None. `words`: the
    normalised words of `text` (at least those in TRIGGERS), when already known.

    >>> side_information_phrase("Wings. As Described, a jet.", frozenset({"described", "jet"}))
    'As Described'
    >>> SIDE_INFORMATION.pattern == SIDE_INFORMATION.pattern.lower()  # (what _BY_TRIGGER relies on)
    True
    >>> all(any(w in p or w[:-1] in p for w in TRIGGERS) for p in SIDE_RULES.values())  # each rule
    True
    """
    if words is None:
        words = frozenset(re.findall(r"[a-z]+", text.lower()))
    present = words & TRIGGERS
    if not present:
        return None
    lowered = text.lower()
    aligned = len(lowered) == len(text)  # (else some character lowers to two)
    starts = []
    for word in present:
        at = lowered.find(word)
        while at != -1:
            starts.append((at, word))
            at = lowered.find(word, at + len(word))
    last: dict[str, int] = {}
    for at, word in sorted(starts):
        if at < last.get(word, -_WINDOW) + _WINDOW // 2:
            continue  # inside the window searched last time for the same word
        last[word] = at
        start, end = max(0, at - _WINDOW), at + _WINDOW
        any_case, lower = _BY_TRIGGER[word]
        if aligned and text[max(0, start - 1) : end].isascii():  # (\b looks one back)
            hit = lower.search(lowered, start, end)
        else:
            hit = any_case.search(text, start, end)
        if hit:
            return text[hit.start() : hit.end()]
    return None
