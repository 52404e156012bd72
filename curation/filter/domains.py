"""Off-domain detection: a rationale that calls the object something outside its super-category.

Real teachers, shown an image that does not match the question, sometimes still write a
"rationale" and keep a class-looking answer: Fine-R1's released corpus has an aircraft
called "a piece of audio equipment", one called "a train" and one called "a tornado". Two
signals, read in the visual analysis and the prediction:

1. denial of the own domain: "the image is not of an airplane", "there is no plane in the
   image", "does not depict an aircraft";
2. naming another domain as what the image is: "shows a train", "rather a piece of audio
   equipment", "depicts a tornado" (a depiction verb, an article, up to two modifiers, then
   a noun of DOMAINS outside the own domain). Similes ("like a bird") do not count.

Super-categories known here: aircraft, car, bird (and bird families such as warbler, finch,
tern), dog, cat, pet (dog or cat), flower. Others are not checked unless mapped with the recipe's `filters.off_domain_aliases`
(e.g. {warbler: bird}). A noun inside a class name of the dataset (the "Tornado" aircraft, the
"bird of paradise" flower) never counts as another domain.

    >>> off_domain_phrase("The image shows a train with a pointed nose.", "aircraft")
    'shows a train'
    >>> off_domain_phrase("The provided image is not of a plane.", "aircraft")
    'not of a plane'
    >>> off_domain_phrase("The wings are swept like a bird's.", "aircraft") is None
    True
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

from curation.core.labels import normalize

# Nouns of each domain. Words that also name parts or colours elsewhere ("jet black",
# "logo", "building" in the background) are left out on purpose.
DOMAINS: dict[str, tuple[str, ...]] = {
    "aircraft": ("aircraft", "airplane", "aeroplane", "plane", "airliner", "jetliner", "biplane",
                 "helicopter", "glider", "fighter jet", "business jet", "airship"),
    "car": ("car", "automobile", "sedan", "suv", "coupe", "hatchback", "minivan", "pickup truck",
            "convertible", "sports car"),
    "bird": ("bird", "songbird", "seabird", "waterfowl", "shorebird"),
    "dog": ("dog", "puppy", "canine"),
    "cat": ("cat", "kitten", "feline"),
    "flower": ("flower", "blossom", "wildflower", "flowering plant", "bouquet"),
    "train": ("train", "locomotive", "railcar", "tram", "streetcar", "rail car", "subway car"),
    "boat": ("boat", "ship", "vessel", "yacht", "ferry", "submarine", "sailboat"),
    "audio": ("piece of audio equipment", "audio equipment", "audio interface", "mixer",
              "amplifier", "loudspeaker", "speaker", "microphone", "synthesizer", "turntable"),
    "weather": ("tornado", "hurricane", "thunderstorm", "cloud formation"),
    "insect": ("butterfly", "moth", "insect", "beetle", "dragonfly"),
    "document": ("screenshot", "document", "diagram", "chart", "map"),
}

# Super-category -> the domains it belongs to.
OWN: dict[str, tuple[str, ...]] = {
    "aircraft": ("aircraft",), "airplane": ("aircraft",), "plane": ("aircraft",),
    "car": ("car",), "vehicle": ("car",), "automobile": ("car",),
    "bird": ("bird",), "dog": ("dog",), "cat": ("cat",), "pet": ("dog", "cat"),
    "flower": ("flower",), "plant": ("flower",),
    # bird families used as super-categories (the synthetic world's among them)
    **{family: ("bird",) for family in ("warbler", "finch", "tern", "sparrow", "gull", "wren",
                                        "songbird", "seabird", "waterfowl", "raptor")},
}

_VERB = r"(?:is|are|was|shows?|showing|depicts?|depicting|features|contains?|displays?|" \
    r"image of|picture of|photo of|photograph of|rather|actually|instead)"
_MODIFIERS = r"(?:[\w-]+\s+){0,2}"
_END = r"s?(?![-\w])"
_CLAUSE_END = r"(?=\s*(?:[.,;:!?)]|$|\s+(?:in|is|was|present|visible|but|here|shown|depicted|at|to)\b))"


def _alternation(nouns: list[str]) -> str:
    return "|".join(re.escape(n).replace(r"\ ", r"\s+") for n in sorted(nouns, key=len, reverse=True))


_NEGATIONS = frozenset(("not", "no", "without", "rather", "isnt", "doesnt", "dont", "arent",
                        "wasnt"))


def _first_words(nouns: list[str]) -> frozenset[str]:
    firsts = {normalize(n).split()[0] for n in nouns}
    return frozenset(firsts | {w + "s" for w in firsts})


@lru_cache(maxsize=64)
def _patterns(domain: str, excluded: frozenset[str]):
    own_domains = OWN.get(domain.lower())
    if not own_domains:
        return None
    own = [n for d in own_domains for n in DOMAINS[d]]
    other = [n for d, nouns in DOMAINS.items() if d not in own_domains for n in nouns
             if n not in excluded]
    if domain.lower() == "aircraft":  # aircraft are vehicles too; "car" alone stays foreign
        other = [n for n in other if n not in ("convertible",)]
    naming = re.compile(
        rf"\b{_VERB}\s+(?:(?:an?|the|just)\s+)?(?:piece\s+of\s+)?{_MODIFIERS}(?:{_alternation(other)}){_END}",
        re.IGNORECASE,
    )
    denial = re.compile(
        rf"\b(?:(?:not|no|isn[’']t|without|rather\s+than)\s+(?:of\s+)?(?:an?\s+|any\s+|the\s+)?"
        rf"|(?:not|n[’']t)\s+(?:depict|show|contain|include|feature|resemble)s?\s+(?:an?|any|the)\s+)"
        rf"(?:{_alternation(own)}){_END}{_CLAUSE_END}",
        re.IGNORECASE,
    )
    other_words, own_words = _first_words(other), _first_words(own)
    # every word the gates of off_domain_phrase look for
    gate_words = _NEGATIONS | other_words | own_words
    return naming, denial, other_words, own_words, gate_words


_NEAR = 120  # characters before a noun where its pattern can start


def _search_near(pattern: re.Pattern, text: str, nouns: set[str]) -> re.Match | None:
    """pattern.search(text), run only on windows ending at the given nouns (fast); the
    noun that comes first in the text is tried first (the same phrase in every process)."""
    lowered = text.lower()
    firsts = sorted((lowered.find(noun), noun) for noun in nouns)
    for at, noun in firsts:
        while at != -1:
            hit = pattern.search(text, max(0, at - _NEAR), at + len(noun) + 40)
            if hit:
                return hit
            at = lowered.find(noun, at + len(noun))
    return None


def _negated(words: list[str], negations: set[str], nouns: frozenset[str]) -> bool:
    """Whether one of `negations` is followed within four words by one of `nouns`.

    (list.index finds the few negations in C; a Python loop over every word does not.)

    >>> _negated("it is not really a plane".split(), {"not"}, frozenset({"plane"}))
    True
    >>> _negated("not the tail of a large plane".split(), {"not"}, frozenset({"plane"}))
    False
    """
    for negation in negations:
        at = -1
        try:
            while True:
                at = words.index(negation, at + 1)
                if not nouns.isdisjoint(words[at + 1 : at + 5]):
                    return True
        except ValueError:
            pass
    return False


def excluded_nouns(class_phrases: Iterable[str]) -> frozenset[str]:
    """Domain nouns that occur inside a class name of the dataset ("tornado" in the Tornado
    aircraft, "bird" in the bird of paradise flower): they never count as another domain.

    >>> sorted(excluded_nouns(["bird of paradise", "rose"]))
    ['bird']
    """
    padded = [f" {p} " for p in class_phrases]
    return frozenset(
        n for nouns in DOMAINS.values() for n in nouns
        if any(f" {normalize(n)} " in p for p in padded)
    )


def off_domain_phrase(
    text: str, domain: str, excluded: frozenset[str] = frozenset(), words: list[str] | None = None
) -> str | None:
    """The first phrase of `text` that puts the object outside `domain`, or None.

    `words`: the text's normalised words when the caller has them (labels.normalize).
    """
    patterns = _patterns(domain, excluded)
    if patterns is None or not text:
        return None
    naming, denial, other_words, own_words, gate_words = patterns
    # Word gates first (the regexes are slow): a negation shortly before an own-domain noun,
    # or any noun of another domain.
    if words is None:
        words = normalize(text).split()
    present = gate_words.intersection(words)  # (no set of every word is built)
    hit = None
    negations = present & _NEGATIONS
    if negations and present & own_words and _negated(words, negations, own_words):
        hit = _search_near(denial, text, own_words & present)
    if hit is None and present & other_words:
        hit = _search_near(naming, text, other_words & present)
    return re.sub(r"\s+", " ", hit.group(0)).strip() if hit else None
