"""Human review round trip against a REAL Label Studio server (tests/labelstudio.py).

The server starts once per test run (shared by pytest-xdist workers) on 127.0.0.1 with a
fresh data dir; if it cannot start, these tests fail. Annotations are created through the
API the way a reviewer's submit does. Input tables follow the data contract
(accepted.parquet / rejected.parquet of the filter stage).

    .venv/bin/pytest -q -p no:cacheprovider tests/test_review.py
"""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from label_studio_sdk import LabelStudio
from labelstudio import free_port
from PIL import Image

from curation.core.config import parse_recipe
from curation.core.labels import ClassInfo, Registry
from curation.core.rundir import RunDir
from curation.review.apply import apply_review
from curation.review.client import ReviewError, connect
from curation.review.push_pull import (
    PROJECT_FILE,
    annotation_rows,
    open_client,
    pull,
    push,
    select_rows,
)

CLASSES = ["Red Warbler", "Blue Warbler", "Green Finch", "Grey Heron", "Black Tern"]
TRAITS = {
    "Red Warbler": "a red crown and a streaked breast",
    "Blue Warbler": "a blue back and a white belly",
    "Green Finch": "a green body and a thick pale bill",
    "Grey Heron": "long legs, a grey back and a dagger bill",
    "Black Tern": "a black head and forked tail",
}
REPO = Path(__file__).resolve().parents[1]


def rationale(label: str, answer: str | None = None) -> str:
    answer = answer or label
    other = next(c for c in CLASSES if c != answer)
    return (
        f"<think>Visual analysis: the bird in the photo shows {TRAITS[answer]}. It is perched "
        "on a thin branch in good light, and the shape of its body and the pattern of its "
        "feathers are clearly visible from the side.\n"
        f"Candidates: {answer}, {other}\n"
        f"Comparison: {TRAITS[answer]} fits the {answer} much better than the {other}, "
        "which would show a different colour on the head and the back.\n"
        f"The prediction is: {answer}</think> <answer>{answer}</answer>"
    )


# -- fixtures -------------------------------------------------------------------------------


# (the `labelstudio` and `env` fixtures are in tests/conftest.py)


def make_row(i: int, image: Path, verdict: str = "accepted", reasons=()) -> dict:
    label = CLASSES[i % len(CLASSES)]
    text = rationale(label)
    return {
        "draft_id": f"birds-{i:04d}#0#blind", "item_id": f"birds-{i:04d}", "dataset": "birds",
        "image_path": str(image), "image_sha256": hashlib.sha256(image.read_bytes()).hexdigest(),
        "width": 24, "height": 24, "label": label, "label_id": CLASSES.index(label),
        "super_category": "bird", "official_split": "train", "class_split": "seen", "shot": 0,
        "question": "What species of bird is shown in this image?", "strategy": "blind",
        "hinted": False, "teacher_model": "teacher-7b", "prompt_template": "blind",
        "prompt_sha": "ab12cd34ef56ab12cd34", "sampling": json.dumps({"temperature": 0.7}),
        "sample_index": 0, "request_key": f"key{i}", "status": "ok", "error": None,
        "response": text, "finish_reason": "stop", "prompt_tokens": 100,
        "completion_tokens": 80, "cost_usd": 0.0001, "latency_s": 0.5,
        "think": text.split("</think>")[0][7:], "answer": label,
        "visual_analysis": f"the bird shows {TRAITS[label]}.", "candidates": [label],
        "comparison": "", "prediction": label, "verdict": verdict, "reasons": list(reasons),
    }


def make_run(path: Path, n_accepted: int, n_rejected: int = 0, review: dict | None = None) -> tuple:
    run = RunDir(path / "run")
    images = path / "images"
    images.mkdir()
    registry = Registry(ClassInfo(i, c, "birds", "bird") for i, c in enumerate(CLASSES))
    registry.save(run.registry)
    rows = []
    for i in range(n_accepted + n_rejected):
        image = images / f"{i}.jpg"
        Image.new("RGB", (24, 24), (i * 7 % 255, i * 13 % 255, 90)).save(image, quality=90)
        rejected = i >= n_accepted
        rows.append(make_row(i, image, "rejected" if rejected else "accepted",
                             ["answer_wrong"] if rejected else []))
    pq.write_table(pa.Table.from_pylist(rows[:n_accepted]), run.path("accepted.parquet"))
    pq.write_table(pa.Table.from_pylist(rows[n_accepted:] or rows[:0]), run.path("rejected.parquet"))
    recipe = parse_recipe({
        "name": f"t-{path.name}", "run_dir": str(run.root),
        "review": {"image_mode": "local-files", "batch_size": 10, **(review or {})},
    })
    run.save_recipe(recipe)
    return recipe, run, rows


def sdk(server) -> LabelStudio:
    return LabelStudio(base_url=server.url, api_key=server.token)


def tasks_by_draft(server, project_id: int) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    client = connect(server.url, server.token)
    for task in client.iter_tasks(project_id):
        out.setdefault(task["data"]["draft_id"], []).append(task["id"])
    return out


def annotate(ls: LabelStudio, task_id: int, decision: str, text: str | None = None,
             reasons=(), correct_label: str | None = None, note: str | None = None) -> None:
    """What the review interface submits: the (edited) text area, the choices, the flag."""
    result = [{"from_name": "decision", "to_name": "question", "type": "choices",
               "value": {"choices": [decision]}}]
    if text is not None:
        result.append({"from_name": "rationale", "to_name": "question", "type": "textarea",
                       "value": {"text": [text]}})
    if reasons:
        result.append({"from_name": "reject_reasons", "to_name": "question", "type": "choices",
                       "value": {"choices": list(reasons)}})
    if correct_label:
        result += [
            {"from_name": "label_wrong", "to_name": "question", "type": "choices",
             "value": {"choices": ["gold label is wrong"]}},
            {"from_name": "correct_label", "to_name": "question", "type": "choices",
             "value": {"choices": [correct_label]}},
        ]
    if note:
        result.append({"from_name": "note", "to_name": "question", "type": "textarea",
                       "value": {"text": [note]}})
    ls.annotations.create(task_id, result=result)


def read(run: RunDir, name: str) -> list[dict]:
    return pq.read_table(run.path(name)).to_pylist()


# -- acceptance 1, 3, 4: the round trip -------------------------------------------------------


def test_round_trip_push_annotate_pull_apply(env, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    recipe, run, rows = make_run(tmp_path, 50)
    result = push(recipe, run)
    assert (result.selected, result.imported, result.already) == (50, 50, 0)
    ids = tasks_by_draft(env, result.project_id)
    assert sorted(ids) == sorted(r["draft_id"] for r in rows) and all(len(v) == 1 for v in ids.values())

    ls = sdk(env)
    preds = [p.model_dump() for p in ls.predictions.list(task=ids[rows[0]["draft_id"]][0])]
    assert len(preds) == 1, preds
    assert preds[0]["model_version"] == "teacher-7b@ab12cd34ef56"
    assert preds[0]["result"][0]["value"]["text"] == [rows[0]["response"]]

    by_id = {r["draft_id"]: r for r in rows}
    d = [r["draft_id"] for r in rows]
    tid = {k: v[0] for k, v in ids.items()}
    for k in d[0:10]:  # accept as is (the submitted text area still holds the prediction)
        annotate(ls, tid[k], "accept", by_id[k]["response"])
    fixed_text = {}
    for k in d[10:20]:  # fix: a better visual analysis, same answer
        fixed_text[k] = by_id[k]["response"].replace("Visual analysis:", "Visual analysis: clearly,")
        annotate(ls, tid[k], "fix", fixed_text[k])
    for k in d[20:25]:
        annotate(ls, tid[k], "reject", by_id[k]["response"], reasons=["wrong_traits", "incoherent"])
    # label corrections: the gold was wrong, the reviewer rewrites the answer to the true class
    for k in d[25:28]:
        true = next(c for c in CLASSES if c != by_id[k]["label"])
        annotate(ls, tid[k], "fix", rationale(true), correct_label=true, note="mislabelled")
    no_answer = by_id[d[28]]["response"].split("<answer>")[0]
    annotate(ls, tid[d[28]], "fix", no_answer)  # edit drops <answer>: flagged
    other = next(c for c in CLASSES if c != by_id[d[29]]["label"])
    annotate(ls, tid[d[29]], "fix", rationale(by_id[d[29]]["label"], answer=other))  # names another class

    pull(recipe, run)
    anns = read(run, "review_annotations.parquet")
    assert len(anns) == 30 and {a["reviewer"] for a in anns} == {env.username}
    stats = apply_review(recipe, run)

    kept = {r["draft_id"]: r for r in read(run, "reviewed.parquet")}
    excluded = {r["draft_id"]: r for r in read(run, "review_excluded.parquet")}
    assert set(kept) == set(d[0:20]) | set(d[25:28]) | set(d[30:])
    assert set(excluded) == set(d[20:25]) | {d[28], d[29]}
    for k in d[0:10]:
        assert kept[k]["review_status"] == "accepted" and kept[k]["original_rationale"] is None
        assert kept[k]["reviewer"] == env.username and kept[k]["reviewed_at"]
    for k in d[10:20]:
        assert kept[k]["review_status"] == "fixed" and kept[k]["response"] == fixed_text[k]
        assert kept[k]["original_rationale"] == by_id[k]["response"]
        assert "clearly" in kept[k]["visual_analysis"] and kept[k]["verdict"] == "accepted"
    for k in d[20:25]:
        assert excluded[k]["review_status"] == "rejected"
        assert excluded[k]["review_reasons"] == ["wrong_traits", "incoherent"]
    for k in d[25:28]:
        row = kept[k]
        assert row["review_status"] == "fixed" and row["original_label"] == by_id[k]["label"]
        assert row["label"] != by_id[k]["label"] and row["label_id"] == CLASSES.index(row["label"])
        assert row["review_note"] == "mislabelled"
    for k in (d[28], d[29]):
        assert excluded[k]["review_status"] == "flagged" and excluded[k]["review_reasons"]
        assert excluded[k]["original_rationale"] == by_id[k]["response"]
    for k in d[30:]:
        assert kept[k]["review_status"] == "unreviewed" and kept[k]["reviewer"] is None

    corrections = read(run, "label_corrections.parquet")
    assert sorted(c["draft_id"] for c in corrections) == sorted(d[25:28])
    assert stats["reviewed"] == 30 and stats["accepted"] == 10 and stats["fixed"] == 13
    assert stats["rejected"] == 5 and stats["flagged"] == 2 and stats["label_corrections"] == 3
    assert stats["rejected_by_reason"] == {"wrong_traits": 5, "incoherent": 5}
    assert json.loads(run.path("review_stats.json").read_text())["kept"] == len(kept)

    # acceptance 4: the token is nowhere in the run directory or the logs
    token = env.token.encode()
    for path in run.root.rglob("*"):
        if path.is_file():
            assert token not in path.read_bytes(), path
    assert env.token not in caplog.text
    assert env.token not in repr(open_client(recipe.review))


def test_apply_keeps_previous_version_and_majority_rule(env, tmp_path):
    recipe, run, rows = make_run(tmp_path, 4)
    result = push(recipe, run)
    tid = {k: v[0] for k, v in tasks_by_draft(env, result.project_id).items()}
    ls = sdk(env)
    d = [r["draft_id"] for r in rows]
    # task 0: accept, accept, reject -> majority accept, any_reject reject
    for decision in ("accept", "reject", "accept"):
        annotate(ls, tid[d[0]], decision, rows[0]["response"], reasons=["other"] if decision == "reject" else ())
    # task 1: reject, accept -> tie: majority takes the cautious reject
    annotate(ls, tid[d[1]], "reject", rows[1]["response"], reasons=["leaks_label"])
    annotate(ls, tid[d[1]], "accept", rows[1]["response"])
    pull(recipe, run)

    majority = apply_review(recipe, run, "majority")
    kept = {r["draft_id"]: r["review_status"] for r in read(run, "reviewed.parquet")}
    assert kept == {d[0]: "accepted", d[2]: "unreviewed", d[3]: "unreviewed"}
    assert majority["inter_reviewer"]["tasks_with_overlap"] == 2
    assert majority["inter_reviewer"]["pairwise_agreement"] == pytest.approx(1 / 4)

    strict = apply_review(recipe, run, "any_reject")
    assert {r["draft_id"] for r in read(run, "reviewed.parquet")} == {d[2], d[3]}
    assert strict["version"] == 2 and strict["previous_version"] == "reviewed.v1.parquet"
    previous = {r["draft_id"] for r in read(run, "reviewed.v1.parquet")}
    assert previous == {d[0], d[2], d[3]}
    latest = apply_review(recipe, run, "latest")  # task 1: the accept came last
    assert latest["version"] == 3 and d[1] in {r["draft_id"] for r in read(run, "reviewed.parquet")}


def test_audit_rows_of_the_filter(env, tmp_path):
    recipe, run, rows = make_run(tmp_path, 3, 3, review={"select": "rejected"})
    result = push(recipe, run)
    ids = tasks_by_draft(env, result.project_id)
    assert sorted(ids) == sorted(r["draft_id"] for r in rows[3:])
    ls = sdk(env)
    annotate(ls, ids[rows[3]["draft_id"]][0], "accept", rows[3]["response"])
    annotate(ls, ids[rows[4]["draft_id"]][0], "reject", rows[4]["response"], reasons=["wrong_class"])
    pull(recipe, run)
    stats = apply_review(recipe, run)
    excluded = {r["draft_id"]: r for r in read(run, "review_excluded.parquet")}
    # the fixture rows were "rejected" by fiat; the real filters accept their text, so the
    # reviewer's accept brings the row back after re-validation
    assert {r["draft_id"] for r in read(run, "reviewed.parquet")} == {r["draft_id"] for r in rows[:4]}
    assert excluded[rows[4]["draft_id"]]["review_status"] == "rejected"
    assert stats["teacher_vs_reviewer"]["verdict_agreement"] == 0.5


# -- acceptance 2: idempotent, resumable ------------------------------------------------------


def test_push_twice_imports_nothing_new(env, tmp_path):
    recipe, run, rows = make_run(tmp_path, 12)
    first = push(recipe, run)
    second = push(recipe, run)
    assert first.imported == 12 and second.imported == 0 and second.already == 12
    assert second.project_id == first.project_id
    ids = tasks_by_draft(env, first.project_id)
    assert len(ids) == 12 and all(len(v) == 1 for v in ids.values())


def test_push_removes_duplicates_left_in_flight(env, tmp_path):
    recipe, run, rows = make_run(tmp_path, 6, review={"batch_size": 3})
    first = push(recipe, run)
    client = open_client(recipe.review)
    task = next(client.iter_tasks(first.project_id))
    client.import_tasks(first.project_id, [{"data": task["data"]}])  # a batch landed twice
    more = [make_row(99, Path(rows[0]["image_path"]))]
    pq.write_table(pa.Table.from_pylist(rows + more), run.path("accepted.parquet"))
    again = push(recipe, run)
    assert again.imported == 1 and again.duplicates_removed == 1
    ids = tasks_by_draft(env, first.project_id)
    assert len(ids) == 7 and all(len(v) == 1 for v in ids.values())


def test_push_killed_halfway_resumes_without_duplicates(env, tmp_path):
    recipe, run, rows = make_run(tmp_path, 150, review={"batch_size": 5, "image_mode": "data-url"})
    cmd = [sys.executable, "-m", "curation.cli", "review", "push", "--run", str(run.root)]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    client = open_client(recipe.review)
    count, deadline = 0, time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        state = run.path(PROJECT_FILE)
        if state.exists():
            project_id = json.loads(state.read_text())["project_id"]
            count = client._get("/api/tasks", project=project_id, include="id", page_size=1)["total"]
            if count > 0:
                proc.kill()
                break
        time.sleep(0.02)
    output = proc.communicate()[0].decode()
    assert 0 < count < 150, f"push was not caught halfway ({count} tasks): {output}"

    rerun = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    ids = tasks_by_draft(env, project_id)
    assert sorted(ids) == sorted(r["draft_id"] for r in rows)
    assert all(len(v) == 1 for v in ids.values())
    assert env.token not in output + rerun.stdout + rerun.stderr


# -- images -------------------------------------------------------------------------------


def test_upload_mode_serves_images_from_the_server(env, tmp_path):
    recipe, run, rows = make_run(tmp_path, 3, review={"image_mode": "upload"})
    result = push(recipe, run)
    client = open_client(recipe.review)
    for task in client.iter_tasks(result.project_id):
        url = task["data"]["image"]
        assert url.startswith("/data/upload/")
        resp = client.http.get(url)
        row = next(r for r in rows if r["draft_id"] == task["data"]["draft_id"])
        assert resp.status_code == 200 and resp.content == Path(row["image_path"]).read_bytes()
    # pushing more rows with the same images uploads nothing twice
    state = json.loads(run.path(PROJECT_FILE).read_text())
    media = list(client.iter_tasks(state["media_project_id"]))
    assert len(media) == 3


def test_local_files_mode_is_served(env, tmp_path):
    recipe, run, rows = make_run(tmp_path, 2)
    result = push(recipe, run)
    client = open_client(recipe.review)
    task = next(client.iter_tasks(result.project_id))
    resp = client.http.get(task["data"]["image"])
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("image/")


def test_data_url_refuses_large_images(env, tmp_path):
    recipe, run, rows = make_run(tmp_path, 2, review={"image_mode": "data-url", "data_url_max_bytes": 10})
    with pytest.raises(ReviewError, match="data_url_max_bytes"):
        push(recipe, run)


# -- clear errors -------------------------------------------------------------------------


def test_wrong_url_bad_token_missing_endpoint(env):
    with pytest.raises(ReviewError, match="cannot reach Label Studio"):
        connect(f"http://127.0.0.1:{free_port()}", env.token, timeout_s=5)
    with pytest.raises(ReviewError, match="refused the API token") as err:
        connect(env.url, "0" * 40)
    assert "0" * 40 not in str(err.value)
    with pytest.raises(ReviewError, match="no Label Studio API token"):
        connect(env.url, "")

    class NotLabelStudio(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotLabelStudio)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ReviewError, match="has no endpoint"):
            connect(f"http://127.0.0.1:{server.server_port}", env.token)
    finally:
        server.shutdown()


# -- no server needed -----------------------------------------------------------------------


def test_select_rows_reasons_and_seeded_sample(tmp_path):
    recipe, run, rows = make_run(tmp_path, 20, 10, review={"select": "all"})
    cfg = recipe.review
    assert len(select_rows(run, cfg)) == 30
    cfg.reasons = ["answer_wrong"]
    assert {r["draft_id"] for r in select_rows(run, cfg)} == {r["draft_id"] for r in rows[20:]}
    cfg.reasons, cfg.sample_size = [], 7
    first = [r["draft_id"] for r in select_rows(run, cfg)]
    assert len(first) == 7 and first == [r["draft_id"] for r in select_rows(run, cfg)]
    cfg.seed = 1
    assert first != [r["draft_id"] for r in select_rows(run, cfg)]
    cfg.sample_size, cfg.sample_fraction = None, 0.5
    assert len(select_rows(run, cfg)) == 15


def test_annotation_rows_skip_cancelled_and_map_reviewers():
    tasks = [{"id": 7, "data": {"draft_id": "x#0#blind"}, "predictions": [1],
              "annotations": [
                  {"id": 1, "completed_by": 3, "was_cancelled": True, "result": []},
                  {"id": 2, "completed_by": {"id": 3}, "updated_at": "t",
                   "result": [{"from_name": "decision", "value": {"choices": ["fix"]}},
                              {"from_name": "rationale", "value": {"text": ["new"]}}]},
              ]}]
    rows = annotation_rows(tasks, {3: "ann@example.org"})
    assert len(rows) == 1 and rows[0]["reviewer"] == "ann@example.org"
    assert (rows[0]["decision"], rows[0]["rationale"], rows[0]["label_wrong"]) == ("fix", "new", False)
