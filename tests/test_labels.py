"""THE matcher: normalisation invariants (hypothesis) and tricky names (tables)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from curation.core.labels import ClassInfo, Registry, match, normalize, readable_name

names = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "Zs", "Pd")), max_size=40
)


@given(names)
def test_normalize_is_idempotent(text):
    assert normalize(normalize(text)) == normalize(text)


@given(names)
def test_normalize_ignores_case_and_separators(text):
    assert normalize(text.upper()) == normalize(text.lower())
    assert normalize(text.replace(" ", "_")) == normalize(text)
    assert normalize(text.replace(" ", "-")) == normalize(text)
    assert normalize(f"  {text}\t\n") == normalize(text)


@given(names)
def test_normalize_output_is_plain_words(text):
    out = normalize(text)
    assert out == out.strip()
    assert "  " not in out
    assert all(ch.isascii() and (ch.isalnum() or ch == " ") for ch in out)


def test_normalize_folds_diacritics_and_apostrophes():
    assert normalize("Brewer’s Blackbird") == normalize("Brewers Blackbird")
    assert normalize("Pokémon Señor") == "pokemon senor"


@pytest.mark.parametrize(
    ("raw", "readable"),
    [
        ("004.Groove_billed_Ani", "Groove billed Ani"),
        ("n02088238-basset", "basset"),
        ("Audi_TT_RS_Coupe_2012", "Audi TT RS Coupe 2012"),
        ("  Boeing 737-300 ", "Boeing 737-300"),
    ],
)
def test_readable_name(raw, readable):
    assert readable_name(raw) == readable


def _registry() -> Registry:
    classes = [
        ClassInfo(0, "Boeing 737-300", "aircraft", "aircraft"),
        ClassInfo(1, "Boeing 737-400", "aircraft", "aircraft"),
        ClassInfo(2, "Boeing 737-400F", "aircraft", "aircraft"),
        ClassInfo(0, "Audi S4 Sedan 2012", "car", "car"),
        ClassInfo(1, "Audi S4 Sedan 2007", "car", "car"),
        ClassInfo(2, "Audi S5 Coupe 2012", "car", "car"),
        ClassInfo(0, "basset", "dog", "dog", aliases=("basset hound",)),
        ClassInfo(1, "beagle", "dog", "dog"),
        ClassInfo(0, "Basset Hound", "pet", "pet"),
        ClassInfo(1, "Beagle", "pet", "pet"),
        ClassInfo(0, "Groove-billed Ani", "bird", "bird", aliases=("004.Groove_billed_Ani",)),
        ClassInfo(1, "Brewer's Blackbird", "bird", "bird"),
        ClassInfo(2, "Red-winged Blackbird", "bird", "bird"),
    ]
    return Registry(classes)


@pytest.mark.parametrize(
    ("answer", "gold", "dataset", "status"),
    [
        # aircraft variants differ by one digit or one letter
        ("Boeing 737-300", "Boeing 737-300", "aircraft", "correct"),
        ("boeing 737 300", "Boeing 737-300", "aircraft", "correct"),
        ("Boeing 737-400", "Boeing 737-300", "aircraft", "wrong"),
        ("Boeing 737-400F", "Boeing 737-400", "aircraft", "wrong"),
        ("Boeing 737-300 or Boeing 737-400", "Boeing 737-300", "aircraft", "ambiguous"),
        ("a Boeing 737", "Boeing 737-300", "aircraft", "unknown"),
        # car years are part of the class
        ("Audi S4 Sedan 2012", "Audi S4 Sedan 2012", "car", "correct"),
        ("Audi S4 Sedan 2007", "Audi S4 Sedan 2012", "car", "wrong"),
        ("Audi S4 Sedan", "Audi S4 Sedan 2012", "car", "unknown"),
        # Basset Hound is the dog dataset's basset (alias), the pet dataset's own class
        ("Basset Hound", "basset", "dog", "correct"),
        ("basset", "basset", "dog", "correct"),
        ("Basset Hound", "Basset Hound", "pet", "correct"),
        ("a beagle, or maybe a basset", "basset", "dog", "ambiguous"),
        # punctuation, case, raw dataset strings
        ("GROOVE BILLED ANI.", "Groove-billed Ani", "bird", "correct"),
        ("004.Groove_billed_Ani", "Groove-billed Ani", "bird", "correct"),
        ("Brewers blackbird", "Brewer's Blackbird", "bird", "correct"),
        ("Red-winged Blackbird", "Brewer's Blackbird", "bird", "wrong"),
        ("", "Brewer's Blackbird", "bird", "empty"),
        ("   ", "Brewer's Blackbird", "bird", "empty"),
    ],
)
def test_match_table(answer, gold, dataset, status):
    assert match(answer, gold, _registry(), dataset=dataset).status == status


def test_match_names_found_in_order():
    result = match("Boeing 737-400 then Boeing 737-300", "Boeing 737-300", _registry(), "aircraft")
    assert result.named == ("Boeing 737-400", "Boeing 737-300")
    assert not result.correct


def test_unregistered_gold_matches_by_phrase_but_refuses_hedges():
    reg = _registry()
    assert match("It is a Sooty Albatross", "Sooty Albatross", reg, "bird").status == "correct"
    hedge = match("Sooty Albatross or Brewer's Blackbird", "Sooty Albatross", reg, "bird")
    assert hedge.status == "ambiguous"
    assert match("Brewer's Blackbird", "Sooty Albatross", reg, "bird").status == "wrong"


def test_alias_shared_by_two_classes_is_ambiguous():
    reg = Registry(
        [
            ClassInfo(0, "Common Tern", "bird", "bird", aliases=("tern",)),
            ClassInfo(1, "Arctic Tern", "bird", "bird", aliases=("tern",)),
        ]
    )
    assert match("a tern", "Common Tern", reg).status == "ambiguous"


def test_registry_round_trip_and_synonyms(tmp_path):
    reg = _registry().with_aliases({"Groove-billed Ani": ["ani"]})
    path = tmp_path / "registry.json"
    reg.save(path)
    back = Registry.load(path)
    assert [c.name for c in back] == [c.name for c in reg]
    assert match("an ani", "Groove-billed Ani", back).status == "correct"
    with pytest.raises(ValueError, match="unknown class"):
        reg.with_aliases({"Dodo": ["dodo bird"]})


def test_duplicate_label_ids_are_refused():
    with pytest.raises(ValueError, match="duplicate label_id"):
        Registry([ClassInfo(0, "A", "d", "x"), ClassInfo(0, "B", "d", "x")])


@pytest.mark.parametrize("missing", [None, float("nan"), 3])
def test_match_treats_missing_answers_as_empty(missing):
    assert match(missing, "Brewer's Blackbird", _registry(), "bird").status == "empty"


def _hedge_registry() -> Registry:
    return Registry([
        ClassInfo(0, "Boeing 737-300", "aircraft", "aircraft"),
        ClassInfo(1, "Boeing 737-400", "aircraft", "aircraft"),
        ClassInfo(2, "F/A-18", "aircraft", "aircraft"),
        ClassInfo(0, "Golden Retriever", "dog", "dog"),
        ClassInfo(1, "Labrador Retriever", "dog", "dog"),
        ClassInfo(2, "Black and Tan Coonhound", "dog", "dog"),
        ClassInfo(0, "Scarlet Tanager", "bird", "bird"),
        ClassInfo(1, "Blue Jay", "bird", "bird"),
        ClassInfo(2, "Cape May Warbler", "bird", "bird"),
    ])


@pytest.mark.parametrize(("answer", "gold"), [
    # the examples: alternatives in any form, negation, doubt
    ("Boeing 737-300 or 737-400", "Boeing 737-300"),
    ("Golden Retriever or Labrador", "Golden Retriever"),
    ("Not a Scarlet Tanager", "Scarlet Tanager"),
    ("I am not sure; maybe Scarlet Tanager", "Scarlet Tanager"),
    ("Scarlet Tanager or a Blue Jay", "Scarlet Tanager"),
    ("Scarlet Tanager or some other warbler", "Scarlet Tanager"),
    ("Boeing 737-300/737-400", "Boeing 737-300"),
    ("Golden Retriever/Labrador Retriever", "Golden Retriever"),
    ("Boeing 737-300, possibly a 737-400", "Boeing 737-300"),
    ("Golden Retriever or another retriever", "Golden Retriever"),
    ("not a Blue Jay but a Scarlet Tanager", "Scarlet Tanager"),
    ("likely a Scarlet Tanager", "Scarlet Tanager"),
    ("Possibly the Boeing 737-300", "Boeing 737-300"),
    ("probably Golden Retriever", "Golden Retriever"),
    ("It could be a Scarlet Tanager", "Scarlet Tanager"),
    ("Scarlet Tanager?", "Scarlet Tanager"),
    ("Either the Boeing 737-300 or something similar", "Boeing 737-300"),
])
def test_hedged_answers_are_never_correct(answer, gold):
    result = match(answer, gold, _hedge_registry())
    assert result.status in ("ambiguous", "unknown"), result


@pytest.mark.parametrize(("answer", "gold", "status"), [
    ("Cape May Warbler", "Cape May Warbler", "correct"),  # "may" inside the name
    ("Black and Tan Coonhound", "Black and Tan Coonhound", "correct"),
    ("F/A-18", "F/A-18", "correct"),  # a "/" inside the name
    ("The F/A-18 Hornet", "F/A-18", "correct"),
    ("It is a Golden Retriever.", "Golden Retriever", "correct"),
    ("Blue Jay", "Scarlet Tanager", "wrong"),
    ("maybe a warbler", "Scarlet Tanager", "unknown"),  # hedged, and names no class
])
def test_committed_answers_keep_their_status(answer, gold, status):
    assert match(answer, gold, _hedge_registry()).status == status


def test_hedges_name_what_they_name():
    result = match("maybe Scarlet Tanager", "Scarlet Tanager", _hedge_registry())
    assert (result.status, result.named) == ("ambiguous", ("Scarlet Tanager",))
    unregistered = match("maybe a Summer Tanager", "Summer Tanager", _hedge_registry(), "bird")
    assert unregistered.status == "ambiguous"
