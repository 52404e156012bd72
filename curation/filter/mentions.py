"""Class names in free text, fast: the name scanner of the filters (and the audit).

Same normalisation as THE matcher (curation/labels.normalize) and the same rule as
Registry.find_mentions (longest name first, left to right; a name inside a longer one does
not count), built for scanning whole rationales many thousand times a second:

    >>> from curation.core.labels import ClassInfo, Registry
    >>> reg = Registry([ClassInfo(0, "Basset", "dogs", "dog"),
    ...                 ClassInfo(1, "Basset Hound", "dogs", "dog"),
    ...                 ClassInfo(2, "Hyundai Veracruz SUV 2012", "dogs", "dog")])
    >>> index = MentionIndex(reg, "dogs")
    >>> [c.name for c in index.find("A basset hound, not a Basset.")]
    ['Basset Hound', 'Basset']
    >>> [c.name for c in index.find("a Hyundai Veracruz", "loose")]
    ['Hyundai Veracruz SUV 2012']
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from collections.abc import Set as AbstractSet
from itertools import compress

from curation.core.labels import ClassInfo, Registry, normalize
from curation.filter.domains import excluded_nouns
from curation.filter.name_forms import is_qualifier, name_forms

# A fast labels.normalize: lower case, apostrophes dropped, every other non-alphanumeric
# byte a space (bytes.translate runs in C, where a regex sub or a per-character generator
# does not keep up; the table lower-cases A-Z too, which saves bytes.lower its own pass).
# The few non-ASCII characters of a text are mapped one by one first, each the way
# labels.normalize maps it (learnt once per character by asking it).
_ASCII_TABLE = bytes(
    ord(chr(c).lower()) if chr(c).isascii() and chr(c).isalnum() else ord(" ") for c in range(256)
)
_ASCII_BYTES = bytes(range(128))
_NON_ASCII_CHAR = re.compile(r"[^\x00-\x7f]")
_char_map: dict[str, str] = {}


def _ascii_for(ch: str) -> str:
    out = _char_map.get(ch)
    if out is None:
        # normalize works character by character (casefold, NFKD, combining marks and
        # apostrophes dropped, transliteration): between two letters, `ch` becomes
        # "" (dropped), " " (a separator) or letters ("ß" -> "ss").
        probe = normalize(f"a{ch}b")
        out = probe[1:-1] if probe[:1] == "a" and probe[-1:] == "b" else " "
        _char_map[ch] = out
    return out


def _map_non_ascii(text: str) -> str:
    """`text` with each non-ASCII character replaced the way labels.normalize maps it."""
    # Its distinct non-ASCII characters, found in C: the UTF-8 form without its ASCII bytes
    # holds just them (a regex over a whole rationale costs ~9 us for one or two "’").
    rest = text.encode("utf-8", "surrogatepass").translate(None, _ASCII_BYTES)
    mapped = [(ch, _ascii_for(ch)) for ch in set(rest.decode("utf-8", "surrogatepass"))]
    if all(out.isascii() for _, out in mapped):  # (else one replacement could feed the next)
        for ch, out in mapped:
            text = text.replace(ch, out)
        return text
    return _NON_ASCII_CHAR.sub(lambda m: _ascii_for(m.group(0)), text)


def normalized_words(text: str) -> list[str]:
    """The words of labels.normalize(text), computed fast (the filters' hot path).

    >>> text = "Brewer’s_Blackbird & Bohémien Straße"
    >>> normalized_words(text) == normalize(text).split()
    True
    """
    if not text.isascii():
        text = _map_non_ascii(text)
    if "&" in text:
        text = text.replace("&", " and ")
    return text.encode().translate(_ASCII_TABLE, b"'`").decode().split()


def fast_normalize(text: str) -> str:
    """labels.normalize(text), with the ASCII fast path of normalized_words."""
    return " ".join(normalized_words(text))


class MentionIndex:
    """Class names of one dataset, found in free text like Registry.find_mentions.

    Same rule (longest phrase first, left to right, a name inside a longer one does not
    count), over the registry's names and the other forms of them teachers write (plurals,
    possessives, moved years: curation/filter/name_forms.py), and a word that starts no class
    name costs one dict lookup, so scanning a whole rationale stays cheap. Mode "loose" also accepts a unique leading part of a class name
    of at least two words ("Hyundai Veracruz" for "Hyundai Veracruz SUV 2012", not "Boeing
    747" which starts several classes): teachers shorten names in candidate lists and prose.
    It is used for candidates; <answer> is judged by the strict matcher of curation/core/labels.py.
    """

    def __init__(self, registry: Registry, dataset: str):
        names: dict[str, list[ClassInfo]] = {}
        for info in registry:
            if info.dataset != dataset:
                continue
            for name in info.all_names:
                phrase = normalize(name)
                if phrase:
                    bucket = names.setdefault(phrase, [])
                    if info not in bucket:
                        bucket.append(info)
        prefixes: dict[str, list[ClassInfo]] = {}
        for phrase, infos in names.items():
            words = phrase.split()
            for width in range(2, len(words)):
                bucket = prefixes.setdefault(" ".join(words[:width]), [])
                bucket.extend(c for c in infos if c not in bucket)
        # The registry's names, then the other forms that name one class each (plurals,
        # possessives, joined or split words, moved or dropped years: name_forms.py).
        forms, shortened = name_forms(names)
        self.phrases: dict[str, list[ClassInfo]] = {**forms, **names}
        # Shortened forms -> the words of their class: in prose ("exact"), such a form does not
        # count when another body type or year follows; candidate lists keep loose prefixes.
        self.shortened = {"exact": shortened, "loose": {}, "cover": {}}
        # mode -> phrase -> classes: names and their forms; + unique leading parts of the
        # names; + every leading part
        self.modes: dict[str, dict[str, list[ClassInfo]]] = {
            "exact": self.phrases,
            "loose": {**{p: c for p, c in prefixes.items() if len(c) == 1}, **self.phrases},
            "cover": {**prefixes, **self.phrases},
        }
        self.forms: dict[ClassInfo, list[str]] = {}  # class -> every phrase that names it
        for phrase, infos in self.phrases.items():
            for info in infos:
                self.forms.setdefault(info, []).append(phrase)
        self.starts = {mode: _starts(phrases) for mode, phrases in self.modes.items()}
        self.seconds = {mode: _seconds(phrases) for mode, phrases in self.modes.items()}
        self.excluded_nouns = excluded_nouns(names)  # for the off_domain filter

    def find(self, text: str, mode: str = "exact") -> list[ClassInfo]:
        """Classes named in `text`: "exact" names, "loose" (+ unique leading parts) or
        "cover" (+ any leading part of two words or more: "Boeing 747" covers every 747)."""
        return self.find_words(normalized_words(text), mode)

    def find_words(
        self, words: list[str], mode: str = "exact", word_set: AbstractSet[str] | None = None
    ) -> list[ClassInfo]:
        """find() on a text already split into normalised words. `word_set`, if known: a set
        holding (at least) every word of `words` that starts a name of this mode."""
        # Classes by id, in order found: the registry holds one object per class (a second
        # with the same dataset and label_id is refused), so `is` is `==` here, without the
        # dataclass __eq__ that comparing two classes in a list calls.
        found: dict[int, ClassInfo] = {}
        for hit in self._scan(words, mode, word_set):
            for info in hit:
                found.setdefault(id(info), info)
        return list(found.values())

    def names_class(
        self, words: list[str], info: ClassInfo, mode: str = "exact",
        word_set: AbstractSet[str] | None = None,
    ) -> bool:
        """Whether find_words(words, mode, word_set) holds `info`; the scan stops there."""
        return any(info in hit for hit in self._scan(words, mode, word_set))

    def _scan(
        self, words: list[str], mode: str, word_set: AbstractSet[str] | None
    ) -> Iterator[list[ClassInfo]]:
        """The classes of each name found, left to right, longest name first."""
        starts, seconds, phrases = self.starts[mode], self.seconds[mode], self.modes[mode]
        if len(words) <= _SHORT:  # (answers, names: cheaper than the set and list.index below)
            positions = [i for i, word in enumerate(words) if word in starts]
        else:
            # (keys & list looks each word up in the dict: no set of every word is built)
            hits = starts.keys() & (word_set if word_set is not None else words)
            if not hits:
                return
            positions = _positions(words, hits)
        n = len(words)
        last = n - 1
        shortened = self.shortened[mode]
        resume = 0  # words before this index are part of a name already found
        for i in positions:
            if i < resume:
                continue
            word = words[i]
            # A longer name needs its second word next: most first words ("black" in "black
            # wings") start none here, and a set lookup is cheaper than joining each width.
            if i < last and words[i + 1] in seconds[word]:
                widths = starts[word]
            elif word in phrases:
                widths = _ONE
            else:
                continue
            for width in widths:
                if i + width <= n:
                    phrase = " ".join(words[i : i + width])
                    hit = phrases.get(phrase)
                    if hit is not None:
                        if shortened and i + width < n and phrase in shortened and \
                                is_qualifier(words[i + width]) and words[i + width] not in shortened[phrase]:
                            continue  # "Volkswagen Beetle Convertible" is not the Beetle Hatchback
                        yield hit
                        resume = i + width
                        break

    def find_name(self, name: str) -> list[ClassInfo]:
        return self.find(name, "loose")


def _positions(words: list[str], wanted: AbstractSet[str]) -> list[int]:
    """Sorted indexes of the `wanted` words in `words`.

    A few wanted words in a long text: list.index runs in C, a Python loop over every word
    does not (the filters' hot path). Past two wanted words, one pass of compress/map (also
    in C) is cheaper than a list.index scan per word.

    >>> _positions(["a", "b", "a", "c"], {"a", "c"}), _positions(["a", "b", "c"], {"a", "b", "c"})
    ([0, 2, 3], [0, 1, 2])
    """
    if len(wanted) > 2:  # (one pass in C over all words beats a list.index scan per word)
        return list(compress(range(len(words)), map(wanted.__contains__, words)))
    found: list[int] = []
    for word in wanted:
        at = -1
        try:
            while True:
                at = words.index(word, at + 1)
                found.append(at)
        except ValueError:
            pass
    found.sort()
    return found


_SHORT = 64  # words: a text this short is scanned word by word
_ONE = [1]  # the widths to try when only a one-word name can start here


def _seconds(phrases: Mapping[str, object]) -> dict[str, frozenset[str]]:
    """First word -> the second words of the phrases of two words or more it starts."""
    seconds: dict[str, set[str]] = {}
    for phrase in phrases:
        words = phrase.split()
        seconds.setdefault(words[0], set()).update(words[1:2])
    return {w: frozenset(s) for w, s in seconds.items()}


def _starts(phrases: Mapping[str, object]) -> dict[str, list[int]]:
    """First word -> widths (in words) of the phrases it starts, longest first."""
    widths: dict[str, set[int]] = {}
    for phrase in phrases:
        words = phrase.split()
        widths.setdefault(words[0], set()).add(len(words))
    return {w: sorted(ws, reverse=True) for w, ws in widths.items()}
