"""The filters on real rationales labelled by reading: precision and recall per defect.

    .venv/bin/pytest -q -p no:cacheprovider -s tests/test_labelled_set.py   # prints the tables
    .venv/bin/python tests/labelled_set.py                                # the same, no pytest

The labels (tests/fixtures/labelled_rationales/) were written by reading each rationale,
never from the filters' verdicts; the bar is 0.95 precision and recall for each defect the
filters must catch. The second labelling pass (a 40-row sample, labelled later from the text
alone) gives the labels' own reliability.
"""

from __future__ import annotations

import pytest
from labelled_set import LABELS, found, kappa, load, misses, score, table

BAR = 0.95
MEASURED = ("leak", "side_information", "unseen_mention", "hedge", "degenerate", "off_domain")


@pytest.fixture(scope="module")
def labelled():
    rows = load()
    return rows, found(rows)


def test_the_labelled_set_is_what_it_says(labelled):
    rows, _ = labelled
    assert len(rows) >= 150
    assert len({r["id"] for r in rows}) == len(rows)
    assert sum(r["source"].startswith("Fine-R1") for r in rows) >= 100
    for row in rows:
        assert set(row["labels"]) <= set(LABELS), row["id"]
        assert row["response"] and row["label"] and row["dataset"], row["id"]
    for name in MEASURED:  # every defect has positives and negatives to measure on
        positives = sum(name in r["labels"] for r in rows)
        assert 5 <= positives < len(rows) - 5, name


@pytest.mark.parametrize("name", MEASURED)
def test_precision_and_recall_on_real_rationales(labelled, name):
    rows, reported = labelled
    s = score(rows, reported)[name]
    wrong = misses(rows, reported, name)
    assert s.precision >= BAR and s.recall >= BAR, (name, s, wrong)


def test_print_the_table(labelled, capsys):
    rows, reported = labelled
    with capsys.disabled():
        print(f"\n{len(rows)} labelled rationales ({sum(r['source'] != 'handwritten' for r in rows)} "
              f"from Fine-R1 Stage-1):\n{table(score(rows, reported))}")
    assert set(score(rows, reported)) == set(LABELS)
def test_two_labelling_passes_agree(capsys):
    first = {r["id"]: set(r["labels"]) for r in load()}
    second = {r["id"]: set(r["labels"]) for r in load("second_pass.jsonl")}
    assert len(second) >= 40 and set(second) <= set(first)
    ids = sorted(second)
    lines = [f"two labelling passes on {len(ids)} rows:",
             f"{'defect':<18}{'pass 1':>7}{'pass 2':>7}{'agree':>7}{'kappa':>7}"]
    for name in LABELS:
        a = [name in first[i] for i in ids]
        b = [name in second[i] for i in ids]
        agree = sum(x == y for x, y in zip(a, b, strict=True)) / len(ids)
        lines.append(f"{name:<18}{sum(a):>7}{sum(b):>7}{agree:>7.2f}{kappa(a, b):>7.2f}")
        assert agree >= 0.8, (name, agree)
    with capsys.disabled():
        print("\n" + "\n".join(lines))
