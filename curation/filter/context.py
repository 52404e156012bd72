"""What the filters share for a run (or an audit): the registry, settings, split, name
indexes, and the per-draft caches of normalised words.

Built by curation/filter/filters.py build_context() / make_context(); every filter function
of filters.py takes it as `ctx`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from curation.core.config import FilterConfig
from curation.core.labels import ClassInfo, Registry
from curation.filter.dedup import NearDuplicates
from curation.filter.mentions import MentionIndex, normalized_words
from curation.filter.side_text import TRIGGERS


@dataclass
class FilterContext:
    """Everything the filters need, built once per run (or audit)."""

    registry: Registry
    settings: FilterConfig
    unseen: dict[str, set[ClassInfo]]  # dataset -> classes of the unseen split
    duplicates: NearDuplicates
    enabled: tuple[str, ...]
    _mentions: dict[str, MentionIndex] = field(default_factory=dict)
    _gold: dict[tuple[str, str], ClassInfo | None] = field(default_factory=dict)
    _names: dict[tuple[str, str], list[ClassInfo]] = field(default_factory=dict)
    _words: dict[str, list[str]] = field(default_factory=dict)  # of the draft being judged
    _key_words: dict[tuple[str, str], frozenset[str]] = field(default_factory=dict)
    _unseen_names: dict[str, list[frozenset[str]]] = field(default_factory=dict)
    _unseen_gates: dict[str, dict[str, list[frozenset[str]]]] = field(default_factory=dict)
    _vocabularies: dict[str, frozenset[str]] = field(default_factory=dict)

    def begin_draft(self) -> None:
        """Forget the previous draft's texts (the per-draft caches below)."""
        self._words.clear()
        self._key_words.clear()

    def words(self, text: str) -> list[str]:
        """normalized_words(text), computed once per draft (several filters read a text)."""
        found = self._words.get(text)
        if found is None:
            found = self._words[text] = normalized_words(text)
        return found

    def key_words(self, text: str, dataset: str) -> frozenset[str]:
        """The words of `text` that the word gates look for: side-information triggers,
        first words of the dataset's class names, words of its unseen names. Same as
        set(self.words(text)) for those words, at half the cost (no set of every word of a
        long rationale is built); computed once per draft."""
        key = (text, dataset)
        found = self._key_words.get(key)
        if found is None:
            vocabulary = self._vocabularies.get(dataset)
            if vocabulary is None:
                vocabulary = self._vocabularies[dataset] = TRIGGERS.union(
                    self.mentions(dataset).starts["exact"], *self.unseen_names(dataset)
                )
            found = self._key_words[key] = vocabulary.intersection(self.words(text))
        return found

    def mentions(self, dataset: str) -> MentionIndex:
        index = self._mentions.get(dataset)
        if index is None:
            index = self._mentions[dataset] = MentionIndex(self.registry, dataset)
        return index

    def unseen_names(self, dataset: str) -> list[frozenset[str]]:
        """The words of each name of an unseen class (its normalised phrases): a text can
        name an unseen class only where it holds all the words of one of these."""
        found = self._unseen_names.get(dataset)
        if found is None:
            unseen = self.unseen.get(dataset, set())
            found = self._unseen_names[dataset] = [
                frozenset(phrase.split())
                for phrase, classes in self.mentions(dataset).phrases.items()
                if not unseen.isdisjoint(classes)
            ]
        return found

    def unseen_gate(self, dataset: str) -> dict[str, list[frozenset[str]]]:
        """unseen_names(dataset) by a word of each (its least common among them): a text
        holds all the words of one only if it holds the word it is filed under."""
        found = self._unseen_gates.get(dataset)
        if found is None:
            names = self.unseen_names(dataset)
            counts = Counter(word for words in names for word in words)
            found = self._unseen_gates[dataset] = {}
            for words in names:
                key = min(sorted(words), key=counts.__getitem__)
                found.setdefault(key, []).append(words)
        return found

    def name_classes(self, dataset: str, name: str) -> list[ClassInfo]:
        """Classes a short name (a candidate) refers to; memoised, names repeat a lot."""
        key = (dataset, name)
        found = self._names.get(key)
        if found is None:
            if len(self._names) > 200_000:
                self._names.clear()
            found = self._names[key] = self.mentions(dataset).find_name(name)
        return found

    def gold(self, label: str, dataset: str) -> ClassInfo | None:
        key = (label, dataset)
        if key not in self._gold:
            self._gold[key] = self.registry.resolve(label, dataset or None)
        return self._gold[key]
