"""Export: the curated run as a Hugging Face dataset repo folder (Parquet shards + card).

    finecot export --run runs/birds [--format llamafactory --format easyr1]

writes `runs/birds/dataset/`:

    data/sft/train-00000-of-00001.parquet          TRL conversational SFT rows + provenance
    data/rl/train-00000-of-00001.parquet           TAPO triplets (prompt, answer, 3 images)
    data/eval_open/test-00000-of-00001.parquet     held-out seen + unseen test images
    data/eval_closed/test-00000-of-00001.parquet   the same with 4 shuffled options
    README.md                                      the dataset card (YAML header + numbers)
    assets/*.png                                   key plots shown by the card

Shards are size-bounded (`export.shard_mb`) and written streaming, row group by row group,
so memory stays flat whatever the row count. Images are embedded as bytes under the
`datasets` Image feature (the schema carries the features metadata), so both
`load_dataset(folder, "sft")` and `load_dataset("parquet", data_files=one_shard)` decode them.
The folder is built beside the old one and swapped in at the end: an interrupted export
leaves the previous dataset untouched. Rows whose image cannot be read are left out and
listed in `export_skipped.parquet` with a reason code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from curation.core import lineage
from curation.core.config import Recipe
from curation.core.labels import Registry
from curation.core.rundir import RunDir
from curation.core.stage import Progress
from curation.core.tables import write_parquet_atomic, write_text_atomic
from curation.export import corrections as fix
from curation.export import overlap
from curation.export import triplets as tri
from curation.export.prompts import (  # noqa: F401 (FORMAT_INSTRUCTION, RL_PROMPT_SEPARATOR: re-exported)
    FINE_R1_SYSTEM,
    FORMAT_INSTRUCTION,
    RL_PROMPT_SEPARATOR,
    closed_prompt_text,
    rl_prompt_text,
)
from curation.export.shards import ShardWriter, image_cell, resized_cell

log = logging.getLogger(__name__)


CONFIG_SPLITS = {"sft": "train", "rl": "train", "eval_open": "test", "eval_closed": "test"}
DROPPED = {"image_path"}  # absolute local paths say nothing to users and leak their disks

TEXT = datasets.Value("string")
IMAGES = datasets.List(datasets.Image())
PART = {"type": TEXT, "text": TEXT}  # one content part: {"type": "image"} or text
MESSAGES = datasets.List({"role": TEXT, "content": datasets.List(PART)})


# -- reading the stage tables ----------------------------------------------------------------


def curated_table(run: RunDir) -> Path:
    """The table SFT rows come from: reviewed.parquet once review ran, else accepted.parquet."""
    reviewed = run.path("reviewed.parquet")
    if reviewed.exists():
        return reviewed
    return run.require(run.path("accepted.parquet"), "filter")


def check_columns(path: Path, columns: set[str], stage: str) -> None:
    """A clear error when a stage table lacks columns of the data contract."""
    missing = sorted(columns - set(pq.read_schema(path).names))
    if missing:
        raise ValueError(
            f"{path} lacks columns {missing} of the data contract: rerun `finecot {stage}`"
        )


POOL_COLUMNS = {
    "item_id",
    "dataset",
    "image_path",
    "image_sha256",
    "label",
    "label_id",
    "super_category",
}


def _iter_records(path: Path, batch_rows: int = 256) -> Iterator[dict[str, Any]]:
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        yield from batch.to_pylist()


def _provenance_features(schema: pa.Schema, exclude: set[str]) -> datasets.Features:
    fields = []
    for field in schema:
        if field.name in exclude or field.name in DROPPED:
            continue
        kind = pa.string() if pa.types.is_null(field.type) else field.type
        fields.append(pa.field(field.name, kind))
    return datasets.Features.from_arrow_schema(pa.schema(fields))


def _kept(record: dict[str, Any]) -> bool:
    """Reviewed tables may carry rows a reviewer rejected: they do not ship."""
    status = record.get("review_status")
    return status is None or str(status).lower() not in {"rejected", "reject"}


# -- the four configs ------------------------------------------------------------------------


def sft_features(source: pa.Schema) -> datasets.Features:
    provenance = _provenance_features(source, {"id", "messages", "images"})
    return datasets.Features({"id": TEXT, "messages": MESSAGES, "images": IMAGES, **provenance})


def sft_row(record: dict[str, Any], system_prompt: str) -> dict[str, Any]:
    """One TRL conversational row: system, user (image + question), assistant (think+answer)."""
    think = (record.get("think") or "").strip()
    assistant = f"<think>\n{think}\n</think>\n<answer>{record['label']}</answer>"
    row = {k: v for k, v in record.items() if k not in DROPPED}
    row["id"] = record.get("draft_id") or record["item_id"]
    row["messages"] = [
        {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
        {
            "role": "user",
            "content": [
                {"type": "image", "text": None},
                {"type": "text", "text": record["question"]},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": assistant}]},
    ]
    row["images"] = [image_cell(record["image_path"])]
    return row


RL_FEATURES = datasets.Features(
    {
        "id": TEXT,
        "prompt": datasets.List({"role": TEXT, "content": datasets.List(PART)}),
        "answer": TEXT,
        "images": IMAGES,
        "positive_images": IMAGES,
        "negative_images": IMAGES,
        "negative_label": TEXT,
        "negative_label_id": datasets.Value("int64"),
        "triplet_method": TEXT,
        "positive_item_id": TEXT,
        "negative_item_id": TEXT,
        "question": TEXT,
        "dataset": TEXT,
        "label": TEXT,
        "label_id": datasets.Value("int64"),
        "super_category": TEXT,
        "image_sha256": TEXT,
        "original_label": TEXT,  # the label before a reviewer's correction (else null)
        "label_corrected_by": TEXT,  # that reviewer
    }
)

EVAL_COLUMNS = {
    "id": TEXT,
    "question": TEXT,
    "answer": TEXT,
    "images": IMAGES,
    "class_split": TEXT,
    "dataset": TEXT,
    "label": TEXT,
    "label_id": datasets.Value("int64"),
    "super_category": TEXT,
    "image_sha256": TEXT,
}
EVAL_OPEN_FEATURES = datasets.Features(EVAL_COLUMNS)
EVAL_CLOSED_FEATURES = datasets.Features(
    {
        **EVAL_COLUMNS,
        "options": datasets.List(TEXT),
        "answer_index": datasets.Value("int64"),
        "prompt": TEXT,  # the closed-world prompt, options listed (curation/export/prompts.py)
        "options_method": TEXT,
        "options_seed": datasets.Value("int64"),
    }
)


def _question(record: dict[str, Any], bank: str | None) -> str:
    from curation.teacher.prompts import load_questions, pick_question

    # the same phrasing the drafting stage picks for this item (stable by item_id)
    return pick_question(load_questions(bank), record["super_category"], record["item_id"])


# -- the stage -------------------------------------------------------------------------------


@lineage.recorded("export")  # the run lock, and manifest.json's record of what it read
def export_stage(recipe: Recipe, run: RunDir, progress: Progress | None = None) -> dict[str, Any]:
    """Write run/dataset (four configs + card) and the other formats; return the summary.

    Only drafts of items in the current pool are exported; reviewers' label corrections
    reach every config (curation/export/corrections.py); review-excluded items are never
    TAPO images; an evaluation image that is also a training image refuses the export (or
    is dropped, export.eval_overlap) before anything is written (curation/export/overlap.py).
    """
    cfg = recipe.export
    for line in lineage.stale_warnings(run, ("split", "filter", "review apply")):
        log.warning("export: %s", line)
    registry = Registry.load(run.require(run.registry, "ingest"))
    check_columns(run.require(run.pool, "split"), POOL_COLUMNS, "split")
    check_columns(run.require(run.test, "split"), POOL_COLUMNS | {"class_split"}, "split")
    check_columns(curated_table(run), POOL_COLUMNS | {"draft_id", "question", "think"}, "filter")
    corrections = fix.item_corrections(run, registry)
    items = fix.relabel(pd.read_parquet(
        run.require(run.items, "ingest"),
        columns=["item_id", "dataset", "image_path", "label", "label_id", "super_category",
                 "official_split"],
    ), corrections)
    triplet_rank, option_rank = tri.class_rankings(recipe, run, items, registry)
    pool = fix.relabel(pd.read_parquet(run.pool), corrections)
    # Items that never train TAPO: a reviewer kept them out, or corrected them into a class
    # held out as unseen (then they leave sft too).
    unseen = fix.unseen_classes(run)
    to_unseen = {i for i, d, label in zip(pool["item_id"], pool["dataset"], pool["label"], strict=True)
                 if (d, label) in unseen}
    not_rl = fix.excluded_items(run) | to_unseen
    triplets = tri.build_triplets(pool[~pool["item_id"].isin(not_rl)], triplet_rank, cfg.seed)
    test = fix.relabel(pd.read_parquet(run.test), corrections)
    source = curated_table(run)
    sft_images = _sft_images(source, set(pool["item_id"]) - to_unseen)
    overlapping = overlap.check(recipe, run.root, pool, triplets, sft_images, test, progress)
    write_parquet_atomic(
        run.path("triplets.parquet"), pa.Table.from_pandas(triplets, preserve_index=False)
    )

    paper = None
    if cfg.fine_r1_eval:
        paper = tri.load_fine_r1_options(cfg.fine_r1_eval)
    elif recipe.split.mode == "fine-r1":
        log.warning(
            "split mode fine-r1 without export.fine_r1_eval: closed-world options are mined"
        )

    staging = run.path(".dataset.partial")
    shutil.rmtree(staging, ignore_errors=True)
    skipped: list[dict[str, str]] = [
        {
            "config": "rl",
            "id": item,
            "image_path": "",
            **(
                {"reason": "corrected_to_unseen_class",
                 "detail": "a reviewer corrected its label to a class held out as unseen"}
                if item in to_unseen else
                {"reason": "review_excluded", "detail": "a reviewer kept its drafts out"}
                if item in not_rl else
                {"reason": "no_negative_class", "detail": "the only seen class of its dataset"}
            ),
        }
        for item in sorted(set(pool["item_id"]) - set(triplets["item_id"]))
    ]
    max_bytes = cfg.shard_mb * 1_000_000
    summary: dict[str, Any] = {"configs": {}, "skipped": skipped}

    def write_config(name: str, features, rows: Iterator[dict], total: int) -> None:
        writer = ShardWriter(staging / "data" / name, CONFIG_SPLITS[name], features, max_bytes)
        for done, row in enumerate(rows, 1):
            writer.write(row)
            if progress:
                progress(name, done, total)
        shards = writer.close()
        summary["configs"][name] = {
            "split": CONFIG_SPLITS[name],
            "rows": writer.rows,
            "bytes": writer.bytes,
            "shards": len(shards),
        }

    def guarded(config: str, records, make):
        for record in records:
            try:
                yield make(record)
            except OSError as err:  # missing or unreadable image: skip the row, say why
                reason = (
                    "image_missing" if isinstance(err, FileNotFoundError) else "image_unreadable"
                )
                skipped.append(
                    {
                        "config": config,
                        "id": str(record.get("draft_id") or record["item_id"]),
                        "image_path": str(record.get("image_path")),
                        "reason": reason,
                        "detail": str(err)[:200],
                    }
                )

    # sft: kept rows of items in the current pool, with their item's corrected label
    system_prompt = cfg.system_prompt or FINE_R1_SYSTEM
    sft_total = pq.ParquetFile(source).metadata.num_rows
    records = _sft_records(source, set(sft_images["item_id"]), corrections, skipped)
    write_config(
        "sft",
        sft_features(pq.read_schema(source)),
        guarded("sft", records, lambda r: sft_row(r, system_prompt)),
        sft_total,
    )

    # rl (on the corrected pool: the anchor's answer is its corrected class)
    by_id = pool.set_index("item_id")
    size, fit = cfg.rl_image_size, cfg.rl_image_fit

    def rl_row(t: dict[str, Any]) -> dict[str, Any]:
        anchor = by_id.loc[t["item_id"]]
        record = {"item_id": t["item_id"], "super_category": anchor["super_category"]}
        question = _question(record, recipe.prompts.questions)
        return {
            "id": t["item_id"],
            "prompt": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "text": None},
                        {"type": "text", "text": rl_prompt_text(question)},
                    ],
                }
            ],
            "answer": anchor["label"],
            "images": [resized_cell(anchor["image_path"], size, fit)],
            "positive_images": [resized_cell(by_id.loc[t["positive_item_id"], "image_path"], size, fit)],
            "negative_images": [resized_cell(by_id.loc[t["negative_item_id"], "image_path"], size, fit)],
            **{
                k: t[k]
                for k in (
                    "negative_label",
                    "negative_label_id",
                    "triplet_method",
                    "positive_item_id",
                    "negative_item_id",
                )
            },
            "question": question,
            "dataset": anchor["dataset"],
            "label": anchor["label"],
            "label_id": int(anchor["label_id"]),
            "super_category": anchor["super_category"],
            "image_sha256": anchor["image_sha256"],
            "original_label": anchor["original_label"],
            "label_corrected_by": anchor["label_corrected_by"],
        }

    rl_records = (
        {**t, "image_path": by_id.loc[t["item_id"], "image_path"]}
        for t in triplets.to_dict("records")
    )
    write_config("rl", RL_FEATURES, guarded("rl", rl_records, rl_row), len(triplets))

    # eval_open / eval_closed (rows showing a training image were refused above, or dropped)
    test_total = len(test)
    summary["eval_in_train"] = len(overlapping)
    for item in sorted(overlapping):
        for config in ("eval_open", "eval_closed"):
            skipped.append({"config": config, "id": item, "image_path": "",
                            "reason": "train_eval_overlap",
                            "detail": "the same image (or a near-duplicate) is a training image"})
    test = test[~test["item_id"].isin(overlapping)]

    def eval_row(record: dict[str, Any]) -> dict[str, Any]:
        row = {k: record[k] for k in EVAL_COLUMNS if k in record and k != "images"}
        row.update(
            id=record["item_id"],
            question=_question(record, recipe.prompts.questions),
            answer=record["label"],
            label_id=int(record["label_id"]),
            images=[image_cell(record["image_path"])],
        )
        return row

    def closed_row(record: dict[str, Any]) -> dict[str, Any]:
        row = eval_row(record)
        options = tri.paper_options(record, paper, registry) if paper else None
        if options is not None:
            shuffled, index = tri.shuffled_options(
                options, record["label"], cfg.seed, record["item_id"]
            )
            method = "fine-r1"
        else:
            ranking = option_rank[(record["dataset"], record["label"])]
            shuffled, index = tri.closed_options(
                record["label"], ranking, cfg.seed, record["item_id"]
            )
            method = ranking.method
        row.update(
            options=shuffled, answer_index=index, options_method=method, options_seed=cfg.seed,
            prompt=closed_prompt_text(row["question"], shuffled),
        )
        return row

    write_config(
        "eval_open",
        EVAL_OPEN_FEATURES,
        guarded("eval_open", test.to_dict("records"), eval_row),
        test_total,
    )
    write_config(
        "eval_closed",
        EVAL_CLOSED_FEATURES,
        guarded("eval_closed", test.to_dict("records"), closed_row),
        test_total,
    )

    from curation.export.card import write_card

    write_card(recipe, run, staging, summary, triplets)
    _swap_in(staging, run.path("dataset"))
    skipped_table = pd.DataFrame(
        skipped, columns=["config", "id", "image_path", "reason", "detail"]
    )
    write_parquet_atomic(run.path("export_skipped.parquet"), pa.Table.from_pandas(skipped_table))
    write_text_atomic(
        run.path("export.json"),
        json.dumps(
            {k: v for k, v in summary.items() if k != "skipped"} | {"skipped": len(skipped)},
            indent=1,
        ),
    )
    if skipped:
        log.warning("export: %d rows skipped (see export_skipped.parquet)", len(skipped))

    from curation.export.easyr1 import write_easyr1
    from curation.export.formats import write_llamafactory

    dataset = run.path("dataset")
    writers = {  # a dict is the registry: format name -> its writer
        "llamafactory": lambda: write_llamafactory(dataset, run.path("llamafactory"), system_prompt),
        "easyr1": lambda: write_easyr1(dataset, run.path("easyr1"), run.registry, cfg.seed),
    }
    for fmt in cfg.formats:
        if fmt != "hf":
            summary[fmt] = str(writers[fmt]())
    return summary


def _sft_images(source: Path, pool_items: set[str]) -> pd.DataFrame:
    """item_id, image_sha256, image_path of the curated rows that can ship (kept by review,
    item in the current pool): the sft config's images, read without the texts."""
    columns = ["item_id", "image_sha256", "image_path"]
    have = set(pq.read_schema(source).names)
    frame = pd.read_parquet(source, columns=columns + (["review_status"] if "review_status" in have else []))
    keep = frame["item_id"].isin(pool_items)
    if "review_status" in frame:
        keep &= ~frame["review_status"].astype(str).str.lower().isin(["rejected", "reject"])
    return frame.loc[keep, columns].drop_duplicates("item_id")


def _sft_records(source: Path, items: set[str], corrections: dict, skipped: list[dict]):
    """The curated rows that ship as sft, with their item's corrected label. A row of a
    corrected item that still names the old class was never re-judged against the new one
    (reviewed.parquet predates the correction): it is left out, and listed."""
    for record in _iter_records(source):
        if not _kept(record):
            continue
        if record["item_id"] not in items:
            skipped.append({"config": "sft", "id": str(record.get("draft_id")), "image_path": "",
                            "reason": "not_in_pool", "detail": "drafted for an earlier split"})
            continue
        fixed = corrections.get(record["item_id"])
        if fixed is not None and record["label"] != fixed.label:
            skipped.append({"config": "sft", "id": str(record.get("draft_id")), "image_path": "",
                            "reason": "label_corrected",
                            "detail": f"its item is now {fixed.label!r}: rerun `finecot review apply`"})
            continue
        yield record


def _swap_in(staging: Path, target: Path) -> None:
    """Replace `target` by `staging` with renames only (the old folder goes last)."""
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)
