"""Rationale parser: raw teacher text -> think, answer and the four sections. Never raises.

The teacher is asked for a `<think>` block with four parts (visual analysis, candidate
sub-categories, comparison, prediction) and the class alone in `<answer>`. Real teachers
write those parts in many ways: "1. Visual analysis:", "### Visual Analysis", "**Candidate
Subcategories**", "Analysis of the Bird's Visible Features", "Comparison Process:", "Final
Prediction", "The prediction is: ...". This file finds them by their headings, tolerates
sloppy tags (`< THINK >`, a missing closing tag when the text was cut at max_tokens) and
records what it could not find as error codes; the filters decide what is fatal.

    >>> r = parse('''<think>Visual analysis: a red crown and a streaked breast.
    ... Candidates: Red Warbler, Blue Warbler
    ... Comparison: only the Red Warbler has a red crown.
    ... The prediction is: Red Warbler</think> <answer>Red Warbler</answer>''')
    >>> r.candidates, r.prediction, r.answer, r.errors
    (['Red Warbler', 'Blue Warbler'], 'Red Warbler', 'Red Warbler', ())
    >>> parse("<think>Visual analysis: grey wings").truncated
    True

Run it over a corpus with `finecot audit FILE`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from itertools import compress

SECTIONS = ("visual_analysis", "candidates", "comparison", "prediction")


@dataclass(frozen=True)
class Rationale:
    """The parsed parts of one teacher response.

    think/answer are None when their tag is absent; the sections are "" (candidates: [])
    when not found. `errors` lists parse-error codes (see ERROR_CODES); `truncated` is True
    when the text stops inside <think> or <answer> (the typical max_tokens cut).
    """

    think: str | None = None
    answer: str | None = None
    visual_analysis: str = ""
    candidates: list[str] = field(default_factory=list)
    comparison: str = ""
    prediction: str = ""
    truncated: bool = False
    errors: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors


ERROR_CODES = {
    "empty_text": "the response is empty",
    "unparseable": "the parser failed on this text (a bug: please report it)",
    "no_think_tag": "no <think> tag",
    "think_unclosed": "<think> is never closed (truncated, or </think> missing)",
    "no_answer_tag": "no <answer> tag",
    "answer_unclosed": "<answer> is never closed",
    "multiple_answer_tags": "more than one <answer> block",
    "answer_before_think": "<answer> comes before <think>",
    "text_outside_tags": "text before <think> or after </answer>",
    "empty_answer": "<answer></answer> holds nothing",
    "missing_visual_analysis": "no visual-analysis section",
    "missing_candidates": "no candidate sub-categories could be read",
    "missing_comparison": "no comparison section",
    "missing_prediction": "no prediction",
}

# -- tags ---------------------------------------------------------------------------------

_TAG = re.compile(r"<\s*(/?)\s*(think|answer)\s*>", re.IGNORECASE)
_BOXED = re.compile(r"^\\?boxed\{(.*)\}$", re.DOTALL)


def _split_tags(text: str) -> tuple[str | None, str | None, str, bool, list[str]]:
    """(think, answer, body to read sections from, truncated, errors)."""
    tidy = _tidy_tags(text)
    return tidy if tidy is not None else _find_tags(text)


def _find_tags(text: str) -> tuple[str | None, str | None, str, bool, list[str]]:
    """_split_tags for any text: every tag found by the regex, however written."""
    errors: list[str] = []
    tags = [(m.group(2).lower(), bool(m.group(1)), m.start(), m.end()) for m in _TAG.finditer(text)]
    opens = {name: [t for t in tags if t[0] == name and not t[1]] for name in ("think", "answer")}
    closes = {name: [t for t in tags if t[0] == name and t[1]] for name in ("think", "answer")}
    truncated = False

    think: str | None = None
    think_end = 0
    if opens["think"]:
        start = opens["think"][0][3]
        close = next((c for c in closes["think"] if c[2] >= start), None)
        answer_open = next((a for a in opens["answer"] if a[2] >= start), None)
        if close is not None:
            think, think_end = text[start : close[2]], close[3]
        elif answer_open is not None:
            errors.append("think_unclosed")
            think, think_end = text[start : answer_open[2]], answer_open[2]
        else:
            errors.append("think_unclosed")
            think, think_end, truncated = text[start:], len(text), True
        if text[: opens["think"][0][2]].strip():
            errors.append("text_outside_tags")
    else:
        errors.append("no_think_tag")
        # A close tag alone (template put <think> in the prompt): what precedes it is the think.
        if closes["think"]:
            think, think_end = text[: closes["think"][0][2]], closes["think"][0][3]

    answer: str | None = None
    if opens["answer"]:
        if len(opens["answer"]) > 1:
            errors.append("multiple_answer_tags")
        first = opens["answer"][-1] if opens["answer"][-1][2] >= think_end else opens["answer"][0]
        if opens["think"] and first[2] < opens["think"][0][2]:
            errors.append("answer_before_think")
        close = next((c for c in closes["answer"] if c[2] >= first[3]), None)
        if close is None:
            errors.append("answer_unclosed")
            answer, truncated = text[first[3] :], True
        else:
            answer = text[first[3] : close[2]]
            if text[close[3] :].strip():
                errors.append("text_outside_tags")
        answer = answer.strip()
        boxed = _BOXED.match(answer)
        if boxed:
            answer = boxed.group(1).strip()
        if not answer and not truncated:
            errors.append("empty_answer")
    else:
        errors.append("no_answer_tag")

    # No think tag at all: read the sections from the text before any answer tag.
    body = think if think is not None else text[: opens["answer"][0][2]] if opens["answer"] else text
    if "<" in body:  # (no tag without one: the regex would scan the whole body for nothing)
        body = _TAG.sub("\n", body)
    return think.strip() if think is not None else None, answer, body, truncated, errors


def _tidy_tags(text: str) -> tuple[str | None, str | None, str, bool, list[str]] | None:
    """_split_tags for the usual text: `<think>…</think>` then `<answer>…</answer>`, each
    once, written exactly so, and no other "<" (a few str.find in C instead of a regex scan
    and its tag tuples); None for anything else."""
    if text.count("<") != 4:
        return None
    think_open, think_close = text.find("<think>"), text.find("</think>")
    answer_open, answer_close = text.find("<answer>"), text.find("</answer>")
    if not -1 < think_open < think_close < answer_open < answer_close:
        return None
    errors = []
    if think_open and not text[:think_open].isspace():
        errors.append("text_outside_tags")
    body = text[think_open + len("<think>") : think_close]
    answer = text[answer_open + len("<answer>") : answer_close].strip()
    rest = text[answer_close + len("</answer>") :]
    if rest and not rest.isspace():
        errors.append("text_outside_tags")
    boxed = _BOXED.match(answer)
    if boxed:
        answer = boxed.group(1).strip()
    if not answer:
        errors.append("empty_answer")
    return body.strip(), answer, body, False, errors


# -- section headings -----------------------------------------------------------------------

# Decoration in front of a heading: markdown '#', bold/italic, numbering ("1.", "Step 2:",
# "II."), a bullet. Then the heading phrase, then a colon, a dash or the end of the line.
# The group is atomic: the engine keeps the greedy decoration and does not retry every
# phrase after each other split of "   - **" (a line that is no heading failed ~4x slower).
# No match is lost: a phrase starts with a letter or digit, and the only ones the decoration
# can eat belong to a numbering ("Step 2", "1.", "iv)") that no phrase starts with.
_DECOR = r"(?>[ \t]*(?:>[ \t]*)?(?:#{1,6}[ \t]*)?(?:[-*•][ \t]+)?(?:\*\*|__|\*)?[ \t]*" \
    r"(?:(?:step|part|section|stage)[ \t]*\d+[ \t]*[:.)\-–—]?[ \t]*|\d{1,2}[ \t]*[.)][ \t]*|" \
    r"[ivx]{1,4}[.)][ \t]+)?(?:\*\*|__|\*)?[ \t]*)"

_PHRASES = {
    # order matters: "analysis of candidate subcategories" is a candidates heading
    "candidates": r"(?:the[ \t]+)?(?:analysis[ \t]+of[ \t]+(?:the[ \t]+)?)?"
    r"(?:(?:potential|possible|plausible|likely|top|main|relevant|\d|two|three|four|five|six)[ \t]+)?"
    r"candidates?(?:[ \t]+(?:sub-?[ \t]?categor(?:y|ies)|classes|species|breeds|models|types|"
    r"varieties|list|options))?(?:[ \t]+(?:considered|include|are))?"
    r"|(?:possible|potential|plausible|likely)[ \t]+(?:sub-?[ \t]?categor(?:y|ies)|classes|species|breeds|models)",
    "comparison": r"(?:detailed[ \t]+|the[ \t]+)?comparison(?:[ \t]+(?:process|of[ \t]+[^:\n]{0,60}|"
    r"between[ \t]+[^:\n]{0,60}|with[ \t]+[^:\n]{0,60}|and[ \t]+[^:\n]{0,40}))?"
    r"|comparing[ \t]+[^:\n]{0,60}|(?:now,?[ \t]+)?let[’']?s[ \t]+compare[^:\n]{0,80}"
    r"|(?:key[ \t]+)?differences?(?:[ \t]+between[ \t]+[^:\n]{0,40})?|contrast(?:ing)?[^:\n]{0,40}"
    r"|differential[ \t]+(?:analysis|diagnosis)|elimination(?:[ \t]+(?:process|of[ \t]+[^:\n]{0,40}))?"
    r"|(?:candidate[ \t]+)?evaluation(?:[ \t]+of[ \t]+(?:the[ \t]+)?candidates)?|reasoning|discussion",
    "strong_prediction": r"(?:the[ \t]+)?(?:final[ \t]+)?prediction[ \t]+is|predicted[ \t]+"
    r"(?:sub-?[ \t]?category|class|species|breed|model|variant|label)",
    "prediction": r"(?:final[ \t]+)?prediction|conclusion|final[ \t]+(?:decision|identification|"
    r"classification|verdict)|(?:final[ \t]+)?(?:identification|classification)[ \t]+result",
    "summary": r"final[ \t]+answer|summary(?:[ \t]+of[ \t]+[^:\n]{0,40})?",
    "visual_analysis": r"(?:the[ \t]+)?(?:visual|image|feature)[ \t]+(?:analysis|features?|traits|"
    r"characteristics|observations?|evidence|description|inspection)(?:[ \t]+(?:process|observed))?"
    r"|analy[sz](?:is|ing)[ \t]+(?:of[ \t]+)?[^:\n]{0,80}|(?:key[ \t]+|detailed[ \t]+)?observations?"
    r"(?:[ \t]+from[ \t]+the[ \t]+image)?|observed[ \t]+(?:features|traits|characteristics)"
    r"|(?:key[ \t]+|distinctive[ \t]+|discriminative[ \t]+)?(?:visual[ \t]+)?(?:features|traits)[ \t]+observed",
}
_KIND_ORDER = tuple(_PHRASES)

# A heading: decoration, phrase, optional "(...)" or closing bold, then ':'/dash + inline text,
# or end of line. Without a colon the line must be the heading alone.
_HEADING = re.compile(
    _DECOR + r"(?:" + "|".join(f"(?P<{k}>{p})" for k, p in _PHRASES.items()) + r")"
    r"[ \t]*(?:\([^)\n]{0,60}\))?[ \t]*(?:\*\*|__|\*|#+)?[ \t]*"
    r"(?:(?:[:：]|[ \t]+[-–—][ \t]+|\*\*:|(?<=\bis)[ \t])[ \t]*(?:\*\*)?[ \t]*(?P<inline>[^\n]*)|(?<![.!?,;])(?P<eol>))[ \t]*$",
    re.IGNORECASE,
)
# The same regex without IGNORECASE, for ASCII lines lower-cased first: on ASCII the two agree
# (its only capital is the P of "(?P<name>"), and a line that is no heading fails twice as fast.
_HEADING_LOWER = re.compile(_HEADING.pattern)
# One-paragraph rationales: "… red crown. Candidates: A, B. Comparison: …" gets line breaks.
_INLINE_HINT = re.compile(
    r"[.!?)][ \t]+(?:\*\*)?(?:visual|candidate|comparison|the prediction|final prediction|prediction|"
    r"conclusion)", re.IGNORECASE,
)
_INLINE_BREAK = re.compile(
    r"(?:(?<=[^\W\d_][.!?])|(?<=\)))[ \t]+(?=(?:\*\*)?(?:visual analysis|candidates?(?: sub-?categories)?|comparison|"
    r"(?:the |final )?prediction(?: is)?|conclusion)(?:\*\*)?[ \t]*:)",
    re.IGNORECASE,
)
_PARAGRAPH_CHARS = 160  # mean line length above which a text may hide inline headings
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_RULE = re.compile(r"[ \t]*(?:[-*_=]{3,}|#+)[ \t]*")
# A line break and the whole line after it, where that line is a rule (_RULE): the literal
# "\n" in front lets the regex engine jump from one line break to the next.
_RULE_LINE = re.compile(r"\n[ \t]*(?:[-*_=]{3,}|#+)[ \t]*(?=\n|\Z)")


# Cheap gate before the heading regex: after decoration, a heading starts with one of these.
_DECOR_CHARS = " \t>#*_-•0123456789.)("
_HEADING_STARTS = (  # compared with the first 14 characters, lower-cased
    "the analy", "the candid", "the predic", "the final", "the compar", "the visual",
    "the image anal", "the image feat", "the possib", "the poten", "the likely", "the key",
    "the detailed", "the observ", "the main", "the top", "the relevant", "the feature",
    "analy", "candidat", "potential", "possible", "plausible", "likely", "top", "main",
    "relevant", "two", "three", "four", "five", "six", "compar", "detailed", "now", "let",
    "key", "differen", "contrast", "elimination", "evaluation", "reasoning", "discussion",
    "final", "predict", "conclusion", "identification", "classification", "summary",
    "visual", "image", "feature", "observ", "distinctive", "discriminative", "traits",
    "step", "part", "section", "stage", "i.", "ii", "iii", "iv", "v.", "i)", "v)",
)


def _trie(words: list[str]) -> str:
    """A regex that matches where one of `words` (none empty) starts, built as a trie: the
    engine tries alternatives one by one, so sharing first characters makes a miss cheap.
    (A word that extends a shorter one is left out: the shorter one matches there already.)

    >>> [bool(re.match(_trie(["top", "two", "the key"]), w)) for w in ("tops", "the key", "to")]
    [True, True, False]
    """
    groups: dict[str, list[str]] = {}
    for word in words:
        groups.setdefault(word[0], []).append(word[1:])
    alternatives = []
    for first, rests in sorted(groups.items()):
        if "" in rests:
            alternatives.append(re.escape(first))
        elif len(rests) == 1:
            alternatives.append(re.escape(first + rests[0]))
        else:
            alternatives.append(re.escape(first) + _trie(rests))
    return alternatives[0] if len(alternatives) == 1 else f"(?:{'|'.join(alternatives)})"


# The same gate as one regex over the lower-cased body: each match is the start of a line
# that passes it. The regex engine jumps from one "\n" to the next in C, where a Python loop
# over every line costs ~0.3 us a line (real rationales have ~50 lines, ~6 pass). Every start
# begins with a letter, so backtracking into the decoration cannot add a match.
# The same pass notes lines that may be horizontal rules (whitespace of any kind around
# them: a section's first and last lines lose theirs to strip()).
_HEADING_LINE = re.compile(
    rf"\n(?:(?P<rule>[^\S\n]*(?:[-*_=]{{3,}}|#+)[^\S\n]*(?=\n|\Z))"
    rf"|[{re.escape(_DECOR_CHARS)}]*{_trie(list(_HEADING_STARTS))})"
)


def _heading_lines(body: str) -> tuple[list[tuple[int, int]], bool]:
    """(start, end) of the lines of `body` that may be headings: after the decoration, the
    line starts with one of _HEADING_STARTS (case-insensitively), in order; and whether a
    line of `body` may be a horizontal rule (False: none is)."""
    lowered = body.lower()
    if len(lowered) == len(body):  # one character for one: offsets in `lowered` are offsets in `body`
        out, rules = [], False
        for m in _HEADING_LINE.finditer(f"\n{lowered}"):
            if m.start("rule") >= 0:
                rules = True
                continue
            end = body.find("\n", m.start())
            out.append((m.start(), len(body) if end == -1 else end))
        return out, rules
    # ("İ".lower() is two characters): the same test line by line
    out, pos = [], 0
    for line in body.split("\n"):
        if line.lstrip(_DECOR_CHARS)[:14].lower().startswith(_HEADING_STARTS):
            out.append((pos, pos + len(line)))
        pos += len(line) + 1
    return out, True


def _blocks(body: str) -> list[tuple[str, str, bool]]:
    """(kind, text, heading_had_inline_text) for each section of `body`, in order.

    Text before the first heading is a "preamble" block.
    """
    # Inline headings live in long paragraphs: text with short lines is not searched.
    if body.count("\n") * _PARAGRAPH_CHARS < len(body) and _INLINE_HINT.search(body):
        body = _INLINE_BREAK.sub("\n", body)
    out: list[tuple[str, str, bool]] = []
    kind, inline, start = "preamble", "", 0
    lines, rules = _heading_lines(body)
    for line_start, line_end in lines:
        line = body[line_start:line_end]
        m = _HEADING_LOWER.match(line.lower()) if line.isascii() else _HEADING.match(line)
        if m is None:
            continue
        out.append((kind, f"{inline}\n{body[start:line_start]}".strip(), bool(inline)))
        kind = next(compress(_KIND_ORDER, m.groups()))  # (the one phrase group that matched)
        inline = line[m.start("inline") : m.end("inline")] if m.start("inline") >= 0 else ""
        inline = inline.strip().strip("*_").strip()
        rules = rules or _RULE.fullmatch(inline) is not None  # (a section's first line)
        start = line_end + 1
    out.append((kind, f"{inline}\n{body[start:]}".strip(), bool(inline)))
    if not rules:  # no line of any section is a rule: _without_rules would change nothing
        return out
    return [(k, _without_rules(t), i) for k, t, i in out]


def _without_rules(text: str) -> str:
    """`text` without horizontal rules ("---", "***") and bare "#" lines."""
    if not ("---" in text or "***" in text or "___" in text or "===" in text or "\n#" in text
            or "#\n" in text):  # no line is a rule (each test runs in C: faster than a regex)
        return text
    # "\n" + each line, without the rule lines: "\n" + the lines that _RULE does not
    # fullmatch, joined by "\n" (or "" if none is left), which strip() makes the same
    return _RULE_LINE.sub("", f"\n{text}").strip()


# -- candidate lists ------------------------------------------------------------------------

_ITEM = re.compile(
    r"^(?P<indent>[ \t]*)(?P<marker>[-*•+▪◦]|\d{1,2}[.)]|\(\d{1,2}\)|[a-h][.)])[ \t]+(?P<text>\S[^\n]*)$",
    re.MULTILINE,
)
_MARKUP = re.compile(r"\*\*|__|`|\*")
_DESCRIPTION = re.compile(r"[ \t]*(?::[ \t]|:$|[ \t][-–—][ \t]|[–—]).*$")
_LIST_SPLIT = re.compile(r"[ \t]*(?:[,;]|\band\b|\bor\b)[ \t]*(?:and\b|or\b)?[ \t]*", re.IGNORECASE)
_LEAD = re.compile(r"^(?:the[ \t]+)?(?:candidates?|options?|possibilities)[^:\n]{0,60}:[ \t]*", re.I)
_REMARK = re.compile(r"[ \t]*\((?:e\.g\.|[^()\s]+(?:\s+[^()\s]+){2,})[^()]*\)")  # "(3+ words)"
_MAX_NAME_WORDS = 12
_MIN_IMPLICIT_COMPARISON_WORDS = 12


def _clean_name(raw: str) -> str:
    name = raw
    if "*" in name or "_" in name or "`" in name:  # (each regex only where it can apply)
        name = _MARKUP.sub("", name)
    if ":" in name or " -" in name or "\t-" in name or "–" in name or "—" in name:
        name = _DESCRIPTION.sub("", name.strip())  # (a hyphen inside a name is no dash)
    if "(" in name:
        name = _REMARK.sub("", name.strip())
    return name.strip().strip(" \t.,;:!?\"'“”").strip()


def parse_candidates(text: str) -> list[str]:
    """Candidate names from a section: a (numbered) bullet list, else an inline list.

    Only the first list counts, and only its outermost level (nested bullets describe the
    candidates). Trailing descriptions ("A: a delta-wing ...") are cut.

    >>> parse_candidates("Here are four:\\n- Eurofighter Typhoon: a delta-wing fighter\\n"
    ...                  "  - canards\\n- Dassault Rafale\\n\\nThe Typhoon fits best.\\n- delta wing")
    ['Eurofighter Typhoon', 'Dassault Rafale']
    >>> parse_candidates("Candidates: Basset Hound, Beagle and Bloodhound.")
    ['Basset Hound', 'Beagle', 'Bloodhound']
    """
    return _candidate_list(text)[0]


def _candidate_list(text: str) -> tuple[list[str], int]:
    """(names, offset in `text` where the list ends)."""
    names: list[str] = []
    end = 0
    first = _ITEM.search(text)
    if first is not None:
        top = len(first.group("indent").expandtabs(4))
        numbered = first.group("marker")[0].isalnum() or first.group("marker")[0] == "("
        pos = first.start()
        for line in text[first.start() :].splitlines(keepends=True):
            item = _ITEM.match(line.rstrip("\r\n"))
            if item is not None:
                indent, marker, rest = item.group("indent", "marker", "text")
                if names and numbered and marker.strip("().") == "1":
                    break  # numbering restarts: the comparison walks through the candidates
                if len(indent.expandtabs(4)) == top:
                    if (marker[0].isalnum() or marker[0] == "(") != numbered:
                        break  # another list starts (the comparison's bullets)
                    name = _clean_name(rest)
                    if name and len(name.split()) <= _MAX_NAME_WORDS:
                        names.append(name)
                    pos += len(line)
                    end = pos
                    continue
            if line.strip() and len(line) - len(line.lstrip(" \t")) <= top:
                break  # a paragraph at the list's level ends the list
            pos += len(line)
            end = pos
    if not names:
        # An inline list: the first line that reads like one ("A, B and C", or after a colon).
        pos = 0
        for line in text.splitlines(keepends=True):
            pos += len(line)
            body = line.strip()
            if "," not in body and ";" not in body and " and " not in body and " or " not in body:
                continue  # not a list (cheap test first: most lines are prose)
            body = _LEAD.sub("", body)
            if ":" in body:
                body = body.rsplit(":", 1)[1]
            raw = _LIST_SPLIT.split(_REMARK.sub("", body).rstrip(". "))
            if len(raw) < 2 or any(len(p.split()) > 8 for p in raw):
                continue
            parts = [p for p in map(_clean_name, raw) if p]
            if len(parts) >= 2 and all(len(p.split()) <= 6 for p in parts):
                names, end = parts, pos
                break
    seen: set[str] = set()
    unique = []
    for name in names:
        key = name.casefold()
        if key not in seen:
            seen.add(key)
            unique.append(name)
    return unique, end


# -- the parser -----------------------------------------------------------------------------


def parse(text: str | None) -> Rationale:
    """Parse one response; never raises (anything unreadable becomes an error code)."""
    try:
        return _parse(text if isinstance(text, str) else "")
    except Exception:  # noqa: BLE001 - the contract is "never raises"; keep the row, flag it
        return Rationale(errors=("unparseable",))


def _parse(text: str) -> Rationale:
    if not text or text.isspace():  # (strip() would copy the whole text to tell)
        return Rationale(errors=("empty_text",), truncated=False)
    think, answer, body, truncated, errors = _split_tags(text)
    blocks = _blocks(body)

    # Visual analysis: the preamble and visual blocks before the first other section.
    visual_parts: list[str] = []
    for kind, block, _ in blocks:
        if kind in ("preamble", "visual_analysis"):
            if block:
                visual_parts.append(block)
        else:
            break
    if not visual_parts:
        visual_parts = [b for k, b, _ in blocks if k == "visual_analysis" and b][:1]
    visual = "\n\n".join(visual_parts)

    candidates: list[str] = []
    after_list = ""  # text after the candidate list: an unheaded comparison, often
    for kind, block, _ in blocks:
        if kind == "candidates":
            candidates, end = _candidate_list(block)
            if candidates:
                after_list = block[end:].strip()
                break

    comparison_parts: list[str] = []
    for i, (kind, block, _) in enumerate(blocks):
        if kind == "comparison" and block:
            comparison_parts.append(block)
            if i + 1 < len(blocks) and blocks[i + 1][0] != "comparison":
                break  # the first run of comparison blocks; later ones are the summary's
    comparison = "\n\n".join(comparison_parts)
    if not comparison and len(after_list.split()) >= _MIN_IMPLICIT_COMPARISON_WORDS:
        comparison = after_list

    strong = [b for k, b, _ in blocks if k == "strong_prediction" and b]
    weak = [b for k, b, _ in blocks if k == "prediction" and b]
    summary = [b for k, b, inline in blocks if k == "summary" and inline and b]
    prediction = strong[-1] if strong else weak[0] if weak else summary[-1] if summary else ""
    # The statement, not the paragraphs after it; "... the predicted subcategory is:" takes
    # the next paragraph along.
    paragraphs = _PARAGRAPH.split(prediction, 2)
    prediction = paragraphs[0].strip()
    if prediction.endswith(":") and len(paragraphs) > 1:
        prediction = f"{prediction} {paragraphs[1].strip()}"

    if not visual:
        errors.append("missing_visual_analysis")
    if not candidates:
        errors.append("missing_candidates")
    if not comparison:
        errors.append("missing_comparison")
    if not prediction:
        errors.append("missing_prediction")
    return Rationale(
        think=think,
        answer=answer,
        visual_analysis=visual,
        candidates=candidates,
        comparison=comparison,
        prediction=prediction,
        truncated=truncated,
        errors=tuple(dict.fromkeys(errors)),
    )
