"""The class registry and THE label matcher.

Filters (curation/filter/filters.py), rewards (train/rewards.py) and the evaluator all call
`match()` from this file, so the filter that accepts a rationale, the reward that trains the
model and the metric that scores it can never disagree about what "correct" means. The rule
itself (one class named, no hedge) is documented, with examples, on `match()`.

    >>> reg = Registry([ClassInfo(0, "Basset", "dog", "dog"),
    ...                 ClassInfo(1, "Basset Hound", "pet", "pet")])
    >>> match("a basset hound", "Basset", reg).status    # scoped to the gold's dataset
    'correct'
    >>> match("Either a Basset or a Beagle", "Basset", reg).status   # offers an alternative
    'ambiguous'
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

_APOSTROPHES = re.compile(r"[\u0027\u2019\u2018\u02bc`´]")
_NON_WORD = re.compile(r"[^0-9a-z]+")


# Letters with no decomposition to ASCII: the usual transliterations.
_TRANSLIT = {"ø": "o", "đ": "d", "ł": "l", "æ": "ae", "œ": "oe", "þ": "th", "ð": "d", "ß": "ss"}


@lru_cache(maxsize=4096)
def _ascii_letter(ch: str) -> str:
    """`ch` if ASCII; else its transliteration, or the ASCII its upper case decomposes to
    (dotless ı -> I -> i), so that case never changes what survives; else nothing."""
    if ch.isascii():
        return ch
    if ch in _TRANSLIT:
        return _TRANSLIT[ch]
    upper = unicodedata.normalize("NFKD", ch.upper())
    stripped = "".join(c for c in upper if not unicodedata.combining(c))
    return stripped.casefold() if stripped.isascii() else " "


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """Case, diacritics, punctuation, underscores, hyphens and whitespace folded away.

    >>> normalize("  Brewer's_Blackbird ")
    'brewers blackbird'
    >>> normalize("Boeing 737-300") == normalize("boeing 737 300")
    True
    >>> normalize("Bohémien Águila")
    'bohemien aguila'
    """
    text = _APOSTROPHES.sub("", unicodedata.normalize("NFKD", text.casefold()))
    text = "".join(_ascii_letter(ch) for ch in text if not unicodedata.combining(ch))
    text = text.replace("&", " and ")
    return _NON_WORD.sub(" ", text).strip()


def readable_name(raw: str) -> str:
    """A dataset's raw class string made readable: '004.Groove_billed_Ani' -> 'Groove-billed Ani'.

    Only the numeric prefix and underscores are touched; case is kept, because names such as
    'Audi TT RS Coupe 2012' carry meaning in it.

    >>> readable_name("004.Groove_billed_Ani")
    'Groove billed Ani'
    >>> readable_name("n02088238-basset")
    'basset'
    """
    raw = re.sub(r"^\d+\.", "", raw.strip())
    raw = re.sub(r"^n\d{8}-", "", raw)  # ImageNet synset prefix (Stanford Dogs)
    return re.sub(r"\s+", " ", raw.replace("_", " ")).strip()


@dataclass(frozen=True)
class ClassInfo:
    """One class: a canonical readable name plus everything that can identify it."""

    label_id: int
    name: str
    dataset: str
    super_category: str
    aliases: tuple[str, ...] = ()
    levels: dict[str, str] = field(default_factory=dict)  # e.g. manufacturer/family/variant
    description: str = ""
    attributes: dict[str, str] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.dataset, self.label_id))

    @property
    def all_names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


MatchStatus = Literal["correct", "wrong", "ambiguous", "unknown", "empty"]


@dataclass(frozen=True)
class MatchResult:
    """What an answer names, judged against the gold class.

    status: correct (names exactly the gold, no hedge), wrong (names exactly one other class,
    no hedge), ambiguous (names two or more different classes, or hedges: see match()),
    unknown (names no class of the registry), empty (nothing to judge).
    """

    status: MatchStatus
    named: tuple[str, ...] = ()  # canonical names of the classes found, in order of appearance

    @property
    def correct(self) -> bool:
        return self.status == "correct"


class Registry:
    """Classes of one or more datasets, indexed by every normalised name and alias."""

    def __init__(self, classes: Iterable[ClassInfo]):
        self.classes: list[ClassInfo] = list(classes)
        self._by_key: dict[tuple[str, int], ClassInfo] = {}
        self._by_name: dict[str, dict[str, list[ClassInfo]]] = {}  # dataset -> phrase -> classes
        self._max_words: dict[str, int] = {}
        for info in self.classes:
            key = (info.dataset, info.label_id)
            if key in self._by_key:
                raise ValueError(f"duplicate label_id {info.label_id} in dataset {info.dataset!r}")
            self._by_key[key] = info
            index = self._by_name.setdefault(info.dataset, {})
            for name in info.all_names:
                phrase = normalize(name)
                if not phrase:
                    continue
                bucket = index.setdefault(phrase, [])
                if info not in bucket:
                    bucket.append(info)
                words = phrase.count(" ") + 1
                self._max_words[info.dataset] = max(self._max_words.get(info.dataset, 1), words)

    def __len__(self) -> int:
        return len(self.classes)

    def __iter__(self):
        return iter(self.classes)

    @property
    def datasets(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, dataset: str, label_id: int) -> ClassInfo:
        return self._by_key[(dataset, label_id)]

    def lookup(self, name: str, dataset: str | None = None) -> list[ClassInfo]:
        """Classes whose name or alias equals `name` after normalisation."""
        phrase = normalize(name)
        datasets = [dataset] if dataset else self.datasets
        return [c for d in datasets for c in self._by_name.get(d, {}).get(phrase, [])]

    def resolve(self, name: str, dataset: str | None = None) -> ClassInfo | None:
        """The one class called `name`, or None when no class or several are."""
        found = self.lookup(name, dataset)
        return found[0] if len(found) == 1 else None

    def find_mentions(self, text: str, dataset: str) -> list[ClassInfo]:
        """Classes of `dataset` named in free text, longest phrase first, left to right.

        A name inside a longer name does not count twice: in "basset hound", "basset" is
        part of the longer phrase when the registry knows both.
        """
        found: list[ClassInfo] = []
        for _, _, hit in self.name_spans(normalize(text).split(), dataset):
            found.extend(info for info in hit if info not in found)
        return found

    def name_spans(self, words: Sequence[str], dataset: str) -> list[tuple[int, int, list[ClassInfo]]]:
        """(start, end, classes) of each class name in normalised `words`, left to right,
        longest phrase first (the scan behind find_mentions)."""
        index = self._by_name.get(dataset)
        if not index:
            return []
        max_words = self._max_words.get(dataset, 1)
        spans = []
        i = 0
        while i < len(words):
            for width in range(min(max_words, len(words) - i), 0, -1):
                hit = index.get(" ".join(words[i : i + width]))
                if hit is not None:
                    spans.append((i, i + width, hit))
                    i += width
                    break
            else:
                i += 1
        return spans

    # -- persistence: a JSON list a user can read and edit (aliases, descriptions) --

    def save(self, path: str | Path) -> None:
        # imported here: the module itself needs only the standard library, so the EasyR1
        # export can ship this very file beside its reward function (curation/export/easyr1.py)
        from curation.core.tables import write_text_atomic

        rows = [{**asdict(c), "aliases": list(c.aliases)} for c in self.classes]
        write_text_atomic(path, json.dumps(rows, indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Registry:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(
            ClassInfo(**{**row, "aliases": tuple(row.get("aliases", ()))}) for row in rows
        )

    def with_aliases(self, synonyms: dict[str, Sequence[str]]) -> Registry:
        """A copy with user synonyms added: {canonical or alias name: [synonym, ...]}."""
        extra: dict[tuple[str, int], list[str]] = {}
        for name, more in synonyms.items():
            targets = self.lookup(name)
            if not targets:
                raise ValueError(f"synonyms file names an unknown class: {name!r}")
            for info in targets:
                extra.setdefault((info.dataset, info.label_id), []).extend(more)
        return Registry(
            _with_more_aliases(c, extra.get((c.dataset, c.label_id), [])) for c in self.classes
        )


def _with_more_aliases(info: ClassInfo, more: Sequence[str]) -> ClassInfo:
    if not more:
        return info
    aliases = tuple(dict.fromkeys((*info.aliases, *more)))
    return ClassInfo(**{**asdict(info), "aliases": aliases})


# Words that, outside every class name of an answer, make it a hedge rather than a claim:
# alternatives ("or", "another warbler"), negation ("not a ..."), doubt ("maybe", "likely").
# Words inside a class name never count ("Cape May Warbler", "Black and Tan Coonhound").
HEDGE_WORDS = frozenset((
    "or", "either", "nor", "vs", "versus", "alternatively", "another", "other", "others",
    "not", "no", "non", "isnt", "arent", "wasnt", "cannot", "cant", "neither", "rather",
    "maybe", "perhaps", "possibly", "possible", "probably", "probable", "likely", "unlikely",
    "presumably", "apparently", "seemingly", "seems", "appears", "looks", "like", "resembles",
    "resembling", "similar", "could", "might", "may", "unsure", "uncertain", "unclear",
    "guess", "undetermined", "unidentified", "unknown",
))


def hedge_words(words: Sequence[str], spans: Sequence[tuple[int, int, object]]) -> list[str]:
    """The HEDGE_WORDS of an answer's normalised `words` outside the class-name `spans`.

    >>> hedge_words("not a cape may warbler".split(), [(2, 5, None)])
    ['not']
    """
    inside = {i for start, end, _ in spans for i in range(start, end)}
    return [w for i, w in enumerate(words) if i not in inside and w in HEDGE_WORDS]


def _slash_alternatives(answer: str, registry: Registry, scope: str | None) -> bool:
    """Whether a "/" in `answer` separates alternatives: a side of it names a class by itself
    ("Beagle/Basset Hound", "Boeing 737-400/737-500"), not a "/" inside a name ("F/A-18")."""
    if "/" not in answer or scope is None:
        return False
    parts = [p for p in answer.split("/") if normalize(p)]
    return len(parts) > 1 and any(registry.find_mentions(p, scope) for p in parts)


def match(
    answer: str | None | float,
    gold: str | ClassInfo,
    registry: Registry,
    dataset: str | None = None,
) -> MatchResult:
    """Judge `answer` against `gold` with the single-answer rule.

    The answer is scanned for every class of the gold's dataset (names and aliases, longest
    phrase first). It is **correct** only when it names exactly one class, the gold, and
    commits to it; **wrong** when it names exactly one other class and commits to it. An
    answer that hedges is **ambiguous** whatever it names, never correct, since hedging must
    not be rewarded: it names two or more classes, or, outside the class names, it

    - offers an alternative: "A or B", "A or <a shortened B>", "A/B", "A, possibly B",
      "A or another X", "either ... or";
    - negates: "not A", "not a A but B", "no A";
    - doubts: "maybe", "possibly", "probably", "likely", "I am not sure", "could be",
      "looks like", a question mark (the words are HEDGE_WORDS).

    An answer that names no class is **unknown** (hedged or not); nothing at all is
    **empty**. Words inside a class name never count as a hedge ("Cape May Warbler"). A gold
    that the registry does not know is matched by its normalised name alone.

    >>> reg = Registry([ClassInfo(0, "Boeing 737-300", "aircraft", "aircraft"),
    ...                 ClassInfo(1, "Boeing 737-400", "aircraft", "aircraft"),
    ...                 ClassInfo(0, "Golden Retriever", "dog", "dog"),
    ...                 ClassInfo(1, "Labrador Retriever", "dog", "dog"),
    ...                 ClassInfo(0, "Scarlet Tanager", "bird", "bird"),
    ...                 ClassInfo(1, "Blue Jay", "bird", "bird"),
    ...                 ClassInfo(2, "Cape May Warbler", "bird", "bird")])
    >>> match("boeing 737 300", "Boeing 737-300", reg).status
    'correct'
    >>> match("Boeing 737-400", "Boeing 737-300", reg).status
    'wrong'
    >>> match("737-300 or 737-400", "Boeing 737-300", reg).status  # no full name: unknown
    'unknown'
    >>> [match(a, "Boeing 737-300", reg).status for a in (
    ...     "Boeing 737-300 or Boeing 737-400", "Boeing 737-300 or 737-400",
    ...     "Boeing 737-300/737-400", "Boeing 737-300, possibly a 737-400")]
    ['ambiguous', 'ambiguous', 'ambiguous', 'ambiguous']
    >>> match("Golden Retriever or Labrador", "Golden Retriever", reg).status
    'ambiguous'
    >>> [match(a, "Scarlet Tanager", reg).status for a in (
    ...     "Not a Scarlet Tanager", "I am not sure; maybe Scarlet Tanager",
    ...     "likely a Scarlet Tanager", "Scarlet Tanager or a Blue Jay",
    ...     "Scarlet Tanager or some other warbler", "Scarlet Tanager?")]
    ['ambiguous', 'ambiguous', 'ambiguous', 'ambiguous', 'ambiguous', 'ambiguous']
    >>> match("Not a Blue Jay but a Scarlet Tanager", "Scarlet Tanager", reg).status
    'ambiguous'
    >>> match("Cape May Warbler", "Cape May Warbler", reg).status   # "May" is in the name
    'correct'
    """
    if not isinstance(answer, str) or not normalize(answer):  # None, NaN from pandas, ...
        return MatchResult("empty")
    if isinstance(gold, ClassInfo):
        gold_info: ClassInfo | None = gold
    else:
        gold_info = registry.resolve(gold, dataset)
    scope = dataset or (gold_info.dataset if gold_info else None)
    phrase = normalize(answer)
    if gold_info is not None and "?" not in answer and "/" not in answer:
        # The usual answer: exactly one class's name, nothing around it (nothing to hedge).
        exact = registry._by_name.get(gold_info.dataset, {}).get(phrase, ())
        if len(exact) == 1:
            return MatchResult("correct" if exact[0] == gold_info else "wrong", (exact[0].name,))
    words = phrase.split()
    spans = registry.name_spans(words, gold_info.dataset if gold_info else scope or "")
    hedged = bool(hedge_words(words, spans)) or "?" in answer or \
        _slash_alternatives(answer, registry, gold_info.dataset if gold_info else scope)
    found: list[ClassInfo] = []
    for _, _, hit in spans:
        found.extend(info for info in hit if info not in found)
    named = tuple(c.name for c in found)

    if gold_info is None:
        # An unregistered gold: whole-phrase match only, still refusing answers that also
        # name a registered class of the scope, or hedge.
        phrase = normalize(str(gold)).split()
        n = len(phrase)
        at = next((i for i in range(len(words) - n + 1) if words[i : i + n] == phrase), None)
        if at is not None:
            outside = [s for s in spans if s[1] <= at or s[0] >= at + n]
            hedged = bool(hedge_words(words, [*outside, (at, at + n, None)])) or "?" in answer
            if not outside and not hedged:
                return MatchResult("correct", (str(gold),))
            return MatchResult("ambiguous", (str(gold), *named))
        if len(found) == 1 and not hedged:
            return MatchResult("wrong", named)
        return MatchResult("ambiguous" if found else "unknown", named)

    if not found:
        return MatchResult("unknown")
    if len(found) > 1 or hedged:
        return MatchResult("ambiguous", named)
    return MatchResult("correct" if found[0] == gold_info else "wrong", named)
