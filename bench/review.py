"""Benchmark the Label Studio round trip: push N rows (small images), pull them back.

    .venv/bin/python bench/review.py                  # 5,000 rows, image_mode upload
    .venv/bin/python bench/review.py --rows 500 --image-mode local-files

Starts a fresh real Label Studio server (tests/labelstudio.py, `make labelstudio` first) in
a temporary folder, writes an accepted.parquet of N synthetic rows with 32 px JPEGs, then
times: push (project, image uploads, batched imports), a second push (nothing to import:
the idempotency check), the reviewers' work (the Data Manager action that turns every
prediction into an annotation, i.e. "accept all"; not our code, not timed as ours), pull
(export + mapping to rows) and apply. Prints tasks/s for each.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from labelstudio import start, stop_pid  # noqa: E402

from curation.core.config import parse_recipe  # noqa: E402
from curation.core.labels import ClassInfo, Registry  # noqa: E402
from curation.core.rundir import RunDir  # noqa: E402
from curation.review.apply import apply_review  # noqa: E402
from curation.review.push_pull import open_client, pull, push  # noqa: E402

CLASSES = [f"Warbler {i}" for i in range(50)]


def make_rows(folder: Path, n: int) -> list[dict]:
    images = folder / "images"
    images.mkdir(parents=True)
    rows = []
    for i in range(n):
        path = images / f"{i}.jpg"
        Image.new("RGB", (32, 32), (i % 251, (i * 7) % 253, (i * 13) % 255)).save(path, quality=85)
        label = CLASSES[i % len(CLASSES)]
        text = (f"<think>Visual analysis: streaks.\nCandidates: {label}\nComparison: fits.\n"
                f"The prediction is: {label}</think> <answer>{label}</answer>")
        rows.append({
            "draft_id": f"b-{i:06d}#0#blind", "item_id": f"b-{i:06d}", "dataset": "birds",
            "image_path": str(path), "image_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "label": label, "label_id": CLASSES.index(label), "super_category": "bird",
            "question": "Which bird species is this?", "teacher_model": "teacher",
            "prompt_sha": "0123456789abcdef", "response": text, "finish_reason": "stop",
            "answer": label, "verdict": "accepted", "reasons": [],
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--image-mode", default="upload", choices=["upload", "local-files", "data-url"])
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-review-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        server = start(root / "ls-data", document_root=root)
        print(f"server start: {time.perf_counter() - t0:.1f} s (fresh data dir, migrations)")
        os.environ.update(LABEL_STUDIO_URL=server.url, LABEL_STUDIO_API_KEY=server.token,
                          LOCAL_FILES_DOCUMENT_ROOT=str(root))
        try:
            run = RunDir(root / "run")
            rows = make_rows(root, args.rows)
            Registry(ClassInfo(i, c, "birds", "bird") for i, c in enumerate(CLASSES)).save(run.registry)
            pq.write_table(pa.Table.from_pylist(rows), run.path("accepted.parquet"))
            recipe = parse_recipe({"name": "bench", "run_dir": str(run.root), "review": {
                "image_mode": args.image_mode, "batch_size": args.batch_size}})

            t = time.perf_counter()
            result = push(recipe, run)
            push_s = time.perf_counter() - t
            t = time.perf_counter()
            again = push(recipe, run)
            again_s = time.perf_counter() - t
            assert again.imported == 0, again

            client = open_client(recipe.review)
            t = time.perf_counter()
            client.sdk.actions.create(id="predictions_to_annotations", project=result.project_id,
                                      selected_items={"all": True, "excluded": []})
            annotate_s = time.perf_counter() - t

            t = time.perf_counter()
            pull(recipe, run)
            pull_s = time.perf_counter() - t
            t = time.perf_counter()
            stats = apply_review(recipe, run)
            apply_s = time.perf_counter() - t
        finally:
            stop_pid(server.pid)

    n = args.rows
    print(json.dumps({"rows": n, "image_mode": args.image_mode, "batch_size": args.batch_size,
                      "reviewed": stats["reviewed"]}))
    print(f"push      {push_s:7.1f} s  {n / push_s:8.1f} tasks/s  (images + tasks + predictions)")
    print(f"re-push   {again_s:7.1f} s  {n / again_s:8.1f} tasks/s  (nothing new: listing only)")
    print(f"annotate  {annotate_s:7.1f} s  (server-side action, not finecot)")
    print(f"pull      {pull_s:7.1f} s  {n / pull_s:8.1f} tasks/s  (export + mapping)")
    print(f"apply     {apply_s:7.1f} s  {n / apply_s:8.1f} rows/s")


if __name__ == "__main__":
    main()
