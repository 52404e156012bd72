"""The scripted teacher's rationale: four sections in `<think>`, the class in `<answer>`.

    <think>
    1. Visual analysis: ... (the attributes the teacher perceived)
    2. Candidate sub-categories: 2-6 names of the same super-category, the prediction included
    3. Comparison: what sets each candidate apart from what was seen
    4. Prediction: prose naming the class
    </think>
    <answer>NAME</answer>

Heading style and phrasing vary from sample to sample (numbered, markdown, bold), as real
teachers' do. Scripted mistakes: `format_error` (missing_section, missing_tags, truncated)
and `leak` (label_in_analysis, as_described). Token counts use `count_tokens`: one token per
word or punctuation mark, a documented stand-in for a real tokenizer.

    >>> import random
    >>> from curation.synthetic.world import world_classes
    >>> c = world_classes(24)[0]
    >>> text = write(c["attributes"], c["name"], [c["name"]], random.Random(0))
    >>> text.startswith("<think>") and text.endswith(f"<answer>{c['name']}</answer>")
    True
"""

from __future__ import annotations

import random
import re

from curation.synthetic.world import ATTRIBUTES, all_classes

FORMAT_ERRORS = ("missing_section", "missing_tags", "truncated")
LEAKS = ("label_in_analysis", "as_described")
_TOKEN = re.compile(r"\w+|[^\w\s]")

_HEADINGS = {
    "numbered": ("1. Visual analysis:", "2. Candidate sub-categories:", "3. Comparison:",
                 "4. Prediction:"),
    "markdown": ("### Visual Analysis", "### Candidate Sub-categories", "### Comparison",
                 "### Prediction"),
    "bold": ("**1. Visual analysis:**", "**2. Candidate sub-categories:**",
             "**3. Comparison:**", "**4. Prediction:**"),
}


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


_PHRASE = {
    "body_colour": lambda v: f"{_a(v)} body",
    "crown_colour": lambda v: f"{_a(v)} crown",
    "wing_colour": lambda v: f"{v} wings",
    "wing_bars": lambda v: "a broad pale bar across each wing" if v == "barred" else "plain wings without bars",
    "breast_colour": lambda v: f"{_a(v)} breast",
    "tail_shape": lambda v: f"a {v} tail",
    "beak_shape": lambda v: {"stubby": "a short, stubby bill", "long": "a long, slender bill",
                             "hooked": "a bill with a hooked tip"}[v],
}
_OPENINGS = (
    "The bird shows {features}.",
    "I can see a small bird with {features}.",
    "Looking at the plumage and shape: {features}.",
    "The image shows a perched bird; it has {features}.",
)


def count_tokens(text: str) -> int:
    """Words and punctuation marks: a tokenizer-free estimate used for usage and max_tokens.

    >>> count_tokens("<answer>Crimson-crowned Warbler</answer>")
    11
    """
    return len(_TOKEN.findall(text))


def truncate_tokens(text: str, max_tokens: int) -> str:
    """The longest prefix of `text` holding at most `max_tokens` tokens."""
    if max_tokens <= 0:
        return ""
    for k, m in enumerate(_TOKEN.finditer(text)):
        if k == max_tokens:
            return text[: m.start()].rstrip()
    return text


def _features(attributes: dict[str, str]) -> str:
    parts = [_PHRASE[a](attributes[a]) for a in ATTRIBUTES if a in attributes]
    if len(parts) < 2:
        return "no clear field marks, only a vague outline"
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def visual_analysis(attributes: dict[str, str], rng: random.Random) -> str:
    """The teacher's visual-analysis sentence: one of its openings, then every attribute.

    >>> visual_analysis({"body_colour": "olive", "beak_shape": "hooked"}, random.Random(0))
    'The image shows a perched bird; it has an olive body and a bill with a hooked tip.'
    """
    return rng.choice(_OPENINGS).format(features=_features(attributes))


def _comparison(seen: dict[str, str], predicted: str, candidates: list[str]) -> str:
    known = all_classes()
    sentences = []
    for name in candidates:
        if name == predicted:
            continue
        other = known.get(name)
        if other is None:
            sentences.append(f"The {name} is not a bird of this kind and does not fit.")
            continue
        diff = [a for a in ATTRIBUTES if other["attributes"][a] != seen.get(a)]
        if not diff:
            sentences.append(f"The {name} would look the same, so it remains possible.")
            continue
        a = diff[0]
        sentences.append(f"The {name} would have {_PHRASE[a](other['attributes'][a])}, "
                         f"whereas this bird has {_PHRASE[a](seen[a])}.")
    sentences.append(f"Only the {predicted} matches every observed feature.")
    return " ".join(sentences)


def write(
    seen: dict[str, str],
    predicted: str,
    candidates: list[str],
    rng: random.Random,
    *,
    format_error: str | None = None,
    leak: str | None = None,
) -> str:
    """A rationale for a bird with attributes `seen`, predicting `predicted`."""
    style = rng.choice(list(_HEADINGS))
    analysis = visual_analysis(seen, rng)
    if leak == "label_in_analysis":
        analysis += f" These are the field marks of the {predicted}."
    elif leak == "as_described":
        analysis = rng.choice(("As described, the bird has ",
                               "Consistent with the description provided, the bird has ")) \
            + _features(seen) + "."
    if rng.random() < 0.5:
        listing = "; ".join(candidates)
    else:
        listing = "\n" + "\n".join(f"- {c}" for c in candidates)
    prediction = rng.choice((
        f"The bird is {_a(predicted)}.",
        f"Based on these features, this is the {predicted}.",
        f"All the evidence points to the {predicted}.",
    ))
    sections = [analysis, listing, _comparison(seen, predicted, candidates), prediction]
    return _assemble(sections, predicted, style, rng, format_error)


def write_unknown(reason: str, rng: random.Random) -> str:
    """The honest answer for an image that shows no bird of the known kinds."""
    style = rng.choice(list(_HEADINGS))
    sections = [
        f"I cannot make out a bird with identifiable field marks: {reason}.",
        "none can be proposed from this image.",
        "Without visible diagnostic features, no sub-category can be compared.",
        "I cannot identify the sub-category from this image.",
    ]
    return _assemble(sections, "unknown", style, rng, None)


def _assemble(sections: list[str], answer: str, style: str, rng: random.Random,
              format_error: str | None) -> str:
    heads = _HEADINGS[style]
    blocks = []
    for head, body in zip(heads, sections, strict=True):
        if body.startswith("\n"):  # a bulleted list goes under its heading
            blocks.append(f"{head}{body}")
        else:
            blocks.append(f"{head}\n{body}" if style == "markdown" else f"{head} {body}")
    if format_error == "missing_section":
        del blocks[rng.randrange(len(blocks))]
    think = "\n\n".join(blocks)
    if format_error == "missing_tags":
        if rng.random() < 0.5:
            return f"{think}\n\n<answer>{answer}</answer>"
        return f"<think>\n{think}\n</think>\nThe answer is {answer}."
    text = f"<think>\n{think}\n</think>\n<answer>{answer}</answer>"
    if format_error == "truncated":
        n = count_tokens(text)
        return truncate_tokens(text, int(n * rng.uniform(0.35, 0.85)))
    return text
