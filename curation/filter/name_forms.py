"""The forms a class name takes in a teacher's prose: inflections, respellings, moved qualifiers.

Registries spell a class once ("Pine Grosbeak", "Staffordshire Bullterrier", "Ford Mustang
Convertible 2007"); teachers write "Pine Grosbeaks", "the Pine Grosbeak's habitat", "a
Staffordshire Bull Terrier", "a 2007 Ford Mustang Convertible", "a Chevrolet Silverado 1500
Extended Cab from 2012". `name_forms()` lists, for every class of one dataset, the other
normalised phrases that name it (curation/filter/mentions.py adds them to the name scan of
label_leak, unseen_mention, candidate resolution and the prediction check; THE matcher
keeps to the registry's own names). The rules, each checked against the other classes of
the dataset so that a form names one class only:

- plural or possessive of the last word (straight or curly apostrophes fold away in
  normalisation): "grosbeaks", "huskies", "sphynxes", "737-400s";
- a possessive inside the name, on its first word or the one before the last: "henslows
  sparrow" for "Henslow Sparrow", "le contes sparrow";
- two words joined or one compound split: "german shorthaired pointer" for "German Short
  Haired Pointer", "staffordshire bull terrier" for "Staffordshire Bullterrier" (both halves
  words of the dataset's names);
- a trailing year moved to the front or spelled "from YEAR", and the year, or the year and a
  trailing body type ("Sedan", "Extended Cab"), left out when the rest starts no other
  class's name: "2012 dodge charger", "chevrolet silverado 1500 extended cab", "the
  buick enclave"; not "dodge charger" (also the Charger SRT-8) nor "honda odyssey minivan"
  (2007 and 2012);
- the make left out when the rest holds a model number and names one class: "737 300",
  "s5 coupe", and a designation alone that no other class's name holds: "s6" (a model
  word alone, "patriot", is too often an ordinary word).

    >>> from curation.core.labels import ClassInfo
    >>> cars = [ClassInfo(0, "Dodge Charger Sedan 2012", "c", "car"),
    ...         ClassInfo(1, "Dodge Charger SRT-8 2009", "c", "car"),
    ...         ClassInfo(2, "Ford Mustang Convertible 2007", "c", "car")]
    >>> forms, shortened = name_forms({"dodge charger sedan 2012": [cars[0]],
    ...     "dodge charger srt 8 2009": [cars[1]], "ford mustang convertible 2007": [cars[2]]})
    >>> sorted(p for p, c in forms.items() if c == [cars[0]])
    ['2012 dodge charger', 'dodge charger from 2012', 'dodge charger sedan']
    >>> "dodge charger" in forms, "ford mustang convertible" in forms, "ford mustang" in forms
    (False, True, True)
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence

from curation.core.labels import ClassInfo

# Trailing words of car names that say the body, not the model: dropped with the year.
BODY_WORDS = frozenset((
    "sedan", "coupe", "convertible", "hatchback", "suv", "minivan", "wagon", "van", "cab",
    "crew", "extended", "regular", "quad", "club", "cargo", "passenger", "pickup", "roadster",
    "truck", "conv",
))
_YEAR = re.compile(r"(?:19|20)\d\d")
_SIBILANT = ("s", "x", "z", "ch", "sh")
_VOWELS = frozenset("aeiou")
_MIN_PART = 3  # letters of each half of a split compound


def plurals(word: str) -> list[str]:
    """Plural and possessive spellings of a word, normalised (the apostrophe is gone).

    >>> plurals("husky"), plurals("sphynx"), plurals("400"), plurals("grosbeak")
    (['huskies', 'huskys'], ['sphynxes', 'sphynxs'], ['400s'], ['grosbeaks'])
    """
    if word.isdigit():
        return [] if _YEAR.fullmatch(word) else [f"{word}s"]
    if len(word) > 2 and word.endswith("y") and word[-2] not in _VOWELS:
        return [f"{word[:-1]}ies", f"{word}s"]
    if word.endswith(_SIBILANT):
        return [f"{word}es", f"{word}s"]
    return [f"{word}s"]


def _spellings(words: Sequence[str], vocabulary: frozenset[str]) -> Iterator[tuple[str, ...]]:
    """The name with its last word inflected; for names without numbers (birds, breeds,
    flowers, not car or aircraft models), also its first word or the one before the last made
    possessive, two words joined, or a compound split in two."""
    last = len(words) - 1
    for plural in plurals(words[last]):
        yield (*words[:last], plural)
    if any(ch.isdigit() for w in words for ch in w):
        return
    for i, word in enumerate(words):
        if i in (0, last - 1) and word.isalpha() and len(word) >= _MIN_PART and not word.endswith("s"):
            possessive = (*words[:i], f"{word}s", *words[i + 1 :])  # "Henslow's Sparrow"
            yield possessive
            yield from ((*possessive[:last], p) for p in plurals(words[last]))  # "... Sparrows"
        if i < last and word.isalpha() and words[i + 1].isalpha():
            yield (*words[:i], word + words[i + 1], *words[i + 2 :])
        if word.isalpha() and len(word) >= 2 * _MIN_PART:
            for cut in range(_MIN_PART, len(word) - _MIN_PART + 1):
                if word[:cut] in vocabulary and word[cut:] in vocabulary:
                    yield (*words[:i], word[:cut], word[cut:], *words[i + 1 :])


def _without_body(words: Sequence[str]) -> tuple[str, ...]:
    """`words` without their trailing body-type words (all of them, or none if that leaves
    fewer than two words)."""
    end = len(words)
    while end > 0 and words[end - 1] in BODY_WORDS:
        end -= 1
    return tuple(words[:end]) if end >= 2 else tuple(words)


def _prefixes(names: Mapping[tuple[str, ...], list[ClassInfo]]) -> dict[tuple[str, ...], set[ClassInfo]]:
    """Every leading part of every name -> the classes whose name starts with it."""
    out: dict[tuple[str, ...], set[ClassInfo]] = {}
    for words, infos in names.items():
        for width in range(1, len(words) + 1):
            out.setdefault(words[:width], set()).update(infos)
    return out


def _shortenings(words: tuple[str, ...], info: ClassInfo,
                 prefixes: Mapping[tuple[str, ...], set[ClassInfo]]) -> Iterator[tuple[str, ...]]:
    """Year moved or dropped, body dropped: the forms that still start no other class."""
    if not _YEAR.fullmatch(words[-1]):
        return
    year, base = words[-1], words[:-1]
    # A year in front or after "from" needs a form of its own only where the words without
    # it start another class's name too ("2012 audi s4 sedan"); elsewhere the scan finds
    # the shortened name itself in "a 2007 Ford Mustang Convertible" (fewer forms, a faster
    # scan).
    for short in dict.fromkeys((base, _without_body(base))):
        owners = prefixes.get(short, set())
        if owners == {info}:
            yield short
        elif {c for c in owners if normalized_year(c) == year} == {info}:
            yield (year, *short)
            yield (*short, "from", year)


def normalized_year(info: ClassInfo) -> str:
    """The trailing year of a class name, or ""."""
    last = info.name.rsplit(None, 1)[-1] if info.name.strip() else ""
    return last if _YEAR.fullmatch(last) else ""


def _designation(word: str) -> bool:
    """A model designation: letters and digits in one word ("s6", "a320", "x3"), not a year."""
    return not word.isdigit() and not word.isalpha() and _YEAR.fullmatch(word) is None


def _make_dropped(words: tuple[str, ...], info: ClassInfo, makes: frozenset[str],
                  rest_prefixes: Mapping[tuple[str, ...], set[ClassInfo]],
                  designations: Mapping[str, set[ClassInfo]]) -> Iterator[tuple[str, ...]]:
    """The name without its make when the rest holds a model number and names one class;
    down to the designation alone ("s6" for Audi S6 Sedan 2011) when no other class's name
    holds it, even spelled apart ("srt8" is also the Charger's "SRT-8")."""
    if len(words) < 2 or words[0] not in makes:
        return
    rest = words[1:]
    candidates = [rest]
    if _YEAR.fullmatch(rest[-1]) and len(rest) > 1:
        candidates += [rest[:-1], _without_body(rest[:-1])]
    if _designation(rest[0]) and designations.get(rest[0]) == {info}:
        candidates.append(rest[:1])
    for short in dict.fromkeys(candidates):
        numbered = any(any(ch.isdigit() for ch in w) and not _YEAR.fullmatch(w) for w in short)
        if numbered and not (len(short) == 1 and short[0].isdigit()) \
                and rest_prefixes.get(short, set()) == {info}:
            yield short
            yield from ((*short[:-1], p) for p in plurals(short[-1]))


def is_qualifier(word: str) -> bool:
    """A body type or a year: what may follow a shortened name and change its meaning."""
    return word in BODY_WORDS or (len(word) == 4 and _YEAR.fullmatch(word) is not None)


def name_forms(
    phrases: Mapping[str, list[ClassInfo]],
) -> tuple[dict[str, list[ClassInfo]], dict[str, frozenset[str]]]:
    """The other phrases that name each class of one dataset, {phrase: classes}, none of them
    one of `phrases` (the dataset's own normalised names, {phrase: classes}); and, for the
    shortened ones among them, the words of their class's name: such a form names the class
    only when no other body type or year follows ("volkswagen beetle" for the Beetle
    Hatchback, not in "Volkswagen Beetle Convertible"; "mazda tribute" in "Mazda Tribute
    (2011)")."""
    names = {tuple(p.split()): infos for p, infos in phrases.items()}
    vocabulary = frozenset(w for words in names for w in words if len(w) >= _MIN_PART and w.isalpha())
    prefixes = _prefixes(names)
    firsts: dict[str, set[ClassInfo]] = {}
    for words, infos in names.items():
        firsts.setdefault(words[0], set()).update(infos)
    makes = frozenset(w for w, infos in firsts.items() if len(infos) > 1)
    designations: dict[str, set[ClassInfo]] = {}  # every word, and every two joined, -> classes
    for words, infos in names.items():
        for i, word in enumerate(words):
            for token in (word, word + words[i + 1]) if i + 1 < len(words) else (word,):
                designations.setdefault(token, set()).update(infos)
    rest_prefixes = _prefixes({words[1:]: infos for words, infos in names.items()
                               if len(words) > 1 and words[0] in makes})
    forms: dict[str, list[ClassInfo]] = {}
    shortened: dict[str, frozenset[str]] = {}
    for words, infos in names.items():
        if len(infos) != 1:
            continue  # a phrase several classes share stays theirs alone
        info = infos[0]
        found = list(_spellings(words, vocabulary))
        short = [*_shortenings(words, info, prefixes),
                 *_make_dropped(words, info, makes, rest_prefixes, designations)]
        for form in short:
            if len(form) < len(words) or form[0] != words[0]:
                shortened[" ".join(form)] = frozenset(words)
        for form in found + short:
            phrase = " ".join(form)
            if phrase not in phrases:
                bucket = forms.setdefault(phrase, [])
                if info not in bucket:
                    bucket.append(info)
    return forms, {p: own for p, own in shortened.items() if p in forms}
