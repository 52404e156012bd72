"""Other trainers' formats, written from the exported Hub folder (curation/export/stage.py).

    finecot export --run runs/birds --format llamafactory --format easyr1

- `llamafactory`: `runs/birds/llamafactory/` with `finecot_sft.json` (ShareGPT form:
  `messages` with system/user/assistant, `<image>` in the user turn, `images` = relative
  paths), the image files under `images/` (named by content hash, written once each), and
  `dataset_info.json` holding the entry LLaMA-Factory needs. Use it with
  `dataset_dir: runs/birds/llamafactory` and `dataset: finecot_sft`.
- `easyr1`: `runs/birds/easyr1/train.parquet` with the columns Fine-R1's TAPO code (an EasyR1
  fork) reads: `problem` ("<image>" + question; EasyR1's format prompt adds the answer
  format), `answer`, `images` (anchor), `image_noisy` (the positive), `image_aug` (the
  negative), plus `negative_label` and `id`. Images stay embedded as bytes.

Both stream the shards row group by row group (bounded memory).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

from curation.core.tables import write_text_atomic

LLAMAFACTORY_NAME = "finecot_sft"


def iter_config(dataset_dir: Path, config: str) -> Iterator[dict[str, Any]]:
    """Rows of one exported config, shard after shard, one row group at a time."""
    if not (Path(dataset_dir) / "README.md").is_file():
        raise FileNotFoundError(f"{dataset_dir} is not an export: run `finecot export`")
    shards = sorted((Path(dataset_dir) / "data" / config).glob("*.parquet"))  # none: 0 rows
    for shard in shards:
        file = pq.ParquetFile(shard)
        for index in range(file.num_row_groups):
            yield from file.read_row_group(index).to_pylist()


def _text(content: list[dict[str, Any]]) -> str:
    """A content-part list as LLaMA-Factory text: each image part becomes `<image>`."""
    return "".join("<image>" if p["type"] == "image" else (p["text"] or "") for p in content)


def write_llamafactory(dataset_dir: Path, out: Path) -> Path:
    """ShareGPT JSON + images + dataset_info.json from the `sft` config; returns `out`."""
    out = Path(out)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    # The JSON is one array: write it element by element so memory holds one row.
    with (staging / f"{LLAMAFACTORY_NAME}.json").open("w", encoding="utf-8") as handle:
        handle.write("[\n")
        for count, row in enumerate(iter_config(dataset_dir, "sft")):
            paths = []
            for image in row["images"]:
                data = image["bytes"]
                suffix = Path(image.get("path") or "").suffix.lower() or ".jpg"
                name = f"images/{hashlib.sha256(data).hexdigest()[:24]}{suffix}"
                target = staging / name
                if not target.exists():
                    target.write_bytes(data)
                paths.append(name)
            record = {
                "id": row["id"],
                "messages": [
                    {"role": m["role"], "content": _text(m["content"])} for m in row["messages"]
                ],
                "images": paths,
            }
            handle.write((",\n" if count else "") + json.dumps(record, ensure_ascii=False))
        handle.write("\n]\n")
    info = {
        LLAMAFACTORY_NAME: {
            "file_name": f"{LLAMAFACTORY_NAME}.json",
            "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {
                "role_tag": "role",
                "content_tag": "content",
                "user_tag": "user",
                "assistant_tag": "assistant",
                "system_tag": "system",
            },
        }
    }
    write_text_atomic(staging / "dataset_info.json", json.dumps(info, indent=2) + "\n")
    _replace_dir(staging, out)
    return out


EASYR1_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "problem": datasets.Value("string"),
        "answer": datasets.Value("string"),
        "images": datasets.List(datasets.Image()),
        "image_noisy": datasets.List(datasets.Image()),
        "image_aug": datasets.List(datasets.Image()),
        "negative_label": datasets.Value("string"),
    }
)


def write_easyr1(dataset_dir: Path, out: Path, group_rows: int = 100) -> Path:
    """Fine-R1/EasyR1 TAPO Parquet from the `rl` config; returns `out`."""
    out = Path(out)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    schema = EASYR1_FEATURES.arrow_schema
    rows: list[dict[str, Any]] = []
    with pq.ParquetWriter(staging / "train.parquet", schema) as writer:
        for row in iter_config(dataset_dir, "rl"):
            rows.append(
                {
                    "id": row["id"],
                    "problem": "<image>" + row["question"],
                    "answer": row["answer"],
                    "images": row["images"],
                    "image_noisy": row["positive_images"],
                    "image_aug": row["negative_images"],
                    "negative_label": row["negative_label"],
                }
            )
            if len(rows) >= group_rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows = []
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    _replace_dir(staging, out)
    return out


def _replace_dir(staging: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


# A dict is the registry: format name -> writer(dataset folder, output folder).
FORMATS: dict[str, Callable[[Path, Path], Path]] = {
    "llamafactory": write_llamafactory,
    "easyr1": write_easyr1,
}
