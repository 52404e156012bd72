"""Reviews stay with their run: two runs of one recipe on one REAL Label Studio server.

Issue 17, point 2: the project used to be found by title (`finecot <recipe name>`) and
tasks matched by draft_id alone, so a second run of the same images got the first run's
verdicts and edits. Now each run gets its own project (its id kept in the run directory),
tasks carry the hash of the text they show, and a verdict lands only on that very text,
even when a project is shared on purpose (`review.project_id`). Renaming the project works.

The server and the helpers are those of tests/test_review.py (tests/labelstudio.py).

    .venv/bin/pytest -q tests/test_review_runs.py
"""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
from test_review import annotate, make_run, read, sdk, tasks_by_draft

from curation.core.config import parse_recipe
from curation.review.apply import apply_review
from curation.review.push_pull import PROJECT_FILE, pull, push

EXTRA = " The tail feathers are also visible."


def two_runs(tmp_path, names: str, rows: int) -> list[tuple]:
    """Runs under tmp_path/NAME/run (make_run of tests/test_review.py), one per letter."""
    made = []
    for name in names:
        (tmp_path / name).mkdir()
        made.append(make_run(tmp_path / name, rows))
    return made


def one_recipe(recipe, run, **review):
    """The same recipe name for every run (as every `finecot demo` is "demo")."""
    data = recipe.model_dump()
    data["name"] = "demo"
    data["review"] = {**data["review"], **review}
    again = parse_recipe(data)
    run.save_recipe(again)
    return again


def changed_texts(run, count: int) -> None:
    """The first `count` accepted rows get another rationale (another draft run)."""
    table = pq.read_table(run.path("accepted.parquet")).to_pylist()
    for row in table[:count]:
        row["response"] = row["response"].replace("</think>", f"{EXTRA}</think>")
    pq.write_table(pa.Table.from_pylist(table), run.path("accepted.parquet"))


def test_two_runs_of_one_recipe_get_their_own_projects_and_verdicts(env, tmp_path):
    (recipe_a, run_a, rows), (recipe_b, run_b, _) = two_runs(tmp_path, "ab", 8)  # same draft_ids
    recipe_a, recipe_b = one_recipe(recipe_a, run_a), one_recipe(recipe_b, run_b)
    changed_texts(run_b, 4)
    assert run_a.root.name == run_b.root.name  # even the folder names are equal

    pushed_a = push(recipe_a, run_a)
    ls = sdk(env)
    tid = {k: v[0] for k, v in tasks_by_draft(env, pushed_a.project_id).items()}
    d = [r["draft_id"] for r in rows]
    for k in d[:2]:
        annotate(ls, tid[k], "reject", rows[0]["response"], reasons=["wrong_traits"])
    edited = rows[2]["response"].replace("Visual analysis:", "Visual analysis: clearly,")
    annotate(ls, tid[d[2]], "fix", edited)
    for k in d[3:]:
        annotate(ls, tid[k], "accept")

    pushed_b = push(recipe_b, run_b)
    assert pushed_b.project_id != pushed_a.project_id
    assert (pushed_b.selected, pushed_b.already, pushed_b.imported) == (8, 0, 8)
    titles = {p.id: p.title for p in ls.projects.list()}
    assert titles[pushed_a.project_id] != titles[pushed_b.project_id]
    assert all("finecot demo" in titles[p] for p in (pushed_a.project_id, pushed_b.project_id))

    pull(recipe_b, run_b)
    stats_b = apply_review(recipe_b, run_b)
    assert stats_b["reviewed"] == 0  # nobody reviewed B
    reviewed_b = {r["draft_id"]: r for r in read(run_b, "reviewed.parquet")}
    assert len(reviewed_b) == 8 and all(r["review_status"] == "unreviewed" for r in reviewed_b.values())
    assert all(EXTRA in reviewed_b[k]["response"] for k in d[:4])  # B's own texts

    pull(recipe_a, run_a)
    stats_a = apply_review(recipe_a, run_a)
    assert (stats_a["reviewed"], stats_a["rejected"], stats_a["fixed"]) == (8, 2, 1)
    state = json.loads(run_a.path(PROJECT_FILE).read_text())
    assert state["project_id"] == pushed_a.project_id and state["run_id"]


def test_a_shared_project_applies_verdicts_only_to_identical_texts(env, tmp_path):
    (recipe_a, run_a, rows), (recipe_c, run_c, _) = two_runs(tmp_path, "ac", 6)
    recipe_a = one_recipe(recipe_a, run_a)
    pushed_a = push(recipe_a, run_a)
    ls = sdk(env)
    tid = {k: v[0] for k, v in tasks_by_draft(env, pushed_a.project_id).items()}
    d = [r["draft_id"] for r in rows]
    annotate(ls, tid[d[0]], "reject", rows[0]["response"], reasons=["incoherent"])
    annotate(ls, tid[d[1]], "fix", rows[1]["response"].replace("Visual analysis:", "Visual analysis: plainly,"))
    for k in d[2:]:
        annotate(ls, tid[k], "reject", rows[0]["response"], reasons=["leaks_label"])

    recipe_c = one_recipe(recipe_c, run_c, project_id=pushed_a.project_id)  # asked for
    changed_texts(run_c, 2)  # rows 0 and 1: other texts than the ones A's reviewer saw
    pushed_c = push(recipe_c, run_c)
    assert pushed_c.project_id == pushed_a.project_id
    assert (pushed_c.already, pushed_c.imported) == (4, 2)  # a changed text is a new task
    assert sorted(len(v) for v in tasks_by_draft(env, pushed_a.project_id).values()) == [1, 1, 1, 1, 2, 2]

    pull(recipe_c, run_c)
    stats = apply_review(recipe_c, run_c)
    kept = {r["draft_id"]: r for r in read(run_c, "reviewed.parquet")}
    excluded = {r["draft_id"] for r in read(run_c, "review_excluded.parquet")}
    assert kept[d[0]]["review_status"] == "unreviewed" and EXTRA in kept[d[0]]["response"]
    assert kept[d[1]]["review_status"] == "unreviewed" and "plainly" not in kept[d[1]]["response"]
    assert excluded == set(d[2:])  # identical texts: A's verdicts apply
    assert stats["unmatched_annotations"] == 2


def test_renaming_the_project_renames_it_instead_of_making_new_ones(env, tmp_path):
    recipe, run, _ = make_run(tmp_path, 3, review={"image_mode": "upload"})
    first = push(recipe, run)
    state = json.loads(run.path(PROJECT_FILE).read_text())
    assert state["run_id"][:8] in state["title"]

    renamed = parse_recipe({**recipe.model_dump(), "review": {
        **recipe.review.model_dump(), "project_title": "Birds, second look"}})
    again = push(renamed, run)
    assert again.project_id == first.project_id and again.imported == 0
    titles = {p.id: p.title for p in sdk(env).projects.list()}
    ours = {i for i, t in titles.items() if "Birds, second look" in t or state["run_id"][:8] in t}
    assert ours == {first.project_id, state["media_project_id"]}  # no new "… · images" project
    assert titles[first.project_id] == "Birds, second look"
    assert titles[state["media_project_id"]] == "Birds, second look · images"
    saved = json.loads(run.path(PROJECT_FILE).read_text())
    assert saved["title"] == "Birds, second look"
    assert saved["media_project_id"] == state["media_project_id"]
