"""Degenerate text: a rationale that loops instead of reasoning.

Teachers sometimes fall into a loop: one sentence written 250 times, a paragraph again and
again, a candidate list that restarts until max_tokens. Length bounds do not catch a loop of
a few hundred words, and a dataset that teaches looping is worse than a short one. Three
measures of `<think>`, each cheap (C-level set and bytes operations, no per-word Python):

- repeated sentences: the share of its characters in sentences that already appeared
  (compared by their last characters, so a counter in front does not hide a copy);
- repeated chunks, when a "sentence" runs past 1,000 characters (a loop without full stops:
  "Golden Retriever Golden Retriever ..."): the share of its 4-word chunks (consecutive, not
  overlapping, so a loop of any period repeats them) seen before in the text;
- a run: one sentence more than `max_run` times in a row ("It is a sedan." x 5).

Real rationales stay far from the defaults (filters.max_repeated_share 0.3, max_repeated_run
3): on Fine-R1's 404 Stage-1 rationales, whose "Final Answer" recaps restate the analysis,
the largest shares are 0.15 (sentences) and 0.10 (chunks), and no sentence repeats in a row.

    >>> loop = "The bird has a red head and grey flanks. " * 30
    >>> repetition(loop, loop.lower().replace(".", "").split())
    '97% of its sentences repeat'
    >>> runs = ("A compact sports sedan with a single-frame grille, LED daytime running lights "
    ...         "and silver mirror caps on a dark body. " + "It is a sedan. " * 5)
    >>> repetition(runs, runs.lower().replace(".", "").split())
    'a sentence 5 times in a row'
    >>> recap = "Only the Pine Grosbeak has a rosy head and grey flanks. "
    >>> text = (recap + "The Evening Grosbeak is yellow, with a huge pale bill and a white wing "
    ...         "patch. The Rose Breasted Grosbeak is black and white with a red bib. " + recap)
    >>> repetition(text, text.lower().replace(".", "").split()) is None
    True
    >>> text = ("Visual analysis: a chestnut body, a golden crown, violet wings, a golden "
    ...     "breast, plain wings without bars, a forked tail and a short, stubby bill; the "
    ...     "candidates are the Azure-crowned, Crimson-crowned and Golden-crowned Finch, and the "
    ...     "comparison goes: " + "".join(f"The {c}-crowned Finch would have a {c.lower()} "
    ...     "crown, whereas this bird has a golden crown. " for c in ("Azure", "Crimson"))
    ...     + "Only the Golden-crowned Finch matches every observed feature.")
    >>> repetition(text, text.lower().split()) is None   # parallel comparisons, not a loop
    True
"""

from __future__ import annotations

from operator import eq

CHUNK = 4  # words per chunk
_MIN_CHUNKS = 25  # shorter texts: the chunk share is not measured (too few to tell)
_MIN_CHARS = 400  # shorter texts: nor the sentence share
_LONG_UNIT = 1000  # characters: a "sentence" this long may have lost its full stops (a loop)
# Sentences are compared whole, without their digits: a counter ("Observation 12: the head
# is green") or a list marker ("Boeing 737-400\n5") does not make copies distinct, while
# parallel comparisons that differ only in the class they name ("The Pine Grosbeak would have
# a rosy head, whereas this bird has ...", then the same for the Evening Grosbeak) do. They
# are compared as UTF-8 bytes: bytes.translate deletes digits ~10x faster than str.translate,
# and two sentences are equal without digits exactly when their encodings are.
_DIGITS = b"0123456789"


def chunk_share(words: list[str]) -> float:
    """The share of non-overlapping CHUNK-word chunks of `words` that repeat an earlier one.

    >>> chunk_share(("a b c d " * 30).split()), chunk_share([f"w{i}" for i in range(200)])
    (0.9666666666666667, 0.0)
    """
    n = len(words) // CHUNK
    if n < _MIN_CHUNKS:
        return 0.0
    chunks = zip(*(words[i::CHUNK] for i in range(CHUNK)), strict=False)  # (stops at the shortest)
    return 1 - len(set(chunks)) / n


def repeated_run(units: list[str], max_run: int) -> int:
    """How many times in a row the first sentence of `units` that occurs more than
    `max_run` times in a row does so (0: none does)."""
    same = bytes(map(eq, units, units[1:]))  # 1 where a unit equals the next one
    pattern = b"\x01" * max_run
    at = same.find(pattern)
    while at != -1:
        if len(units[at].strip()) > 3:  # (blank lines and bullets repeat legitimately)
            end = at
            while end < len(same) and same[end]:
                end += 1
            return end - at + 1
        at = same.find(pattern, at + 1)
    return 0


def repetition(text: str, words: list[str], max_share: float = 0.3, max_run: int = 3) -> str | None:
    """What makes `text` degenerate (for the evidence), or None. `words`: its normalised
    words (curation/filter/mentions.normalized_words), read only when a sentence has lost
    its full stops."""
    # Sentences, roughly (enough to find copies; lists stay together). ". " is ASCII, so the
    # UTF-8 bytes split at the same places as the text.
    parts = text.encode("utf-8", "surrogatepass").split(b". ")
    lengths = list(map(len, parts if text.isascii() else text.split(". ")))  # in characters
    total = sum(lengths)
    keys = [part.translate(None, _DIGITS) for part in parts]
    distinct = len(set(keys))
    if total >= _MIN_CHARS:
        repeated = 0
        if distinct < len(keys):
            last = dict(zip(keys, lengths, strict=True))  # (copies: one entry, the last one's length)
            repeated = total - sum(last.values())
        if repeated / total > max_share:
            return f"{repeated / total:.0%} of its sentences repeat"
        if max(lengths) > _LONG_UNIT:
            share = chunk_share(words)
            if share > max_share:
                return f"{share:.0%} of its {CHUNK}-word chunks repeat"
    if distinct > len(keys) - max_run:
        return None  # fewer copies than a run needs
    count = repeated_run(text.split(". "), max_run)
    return f"a sentence {count} times in a row" if count else None
