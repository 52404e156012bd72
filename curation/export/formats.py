"""The LLaMA-Factory export, and what every other-format writer shares (reading the shards).

    finecot export --run runs/birds --format llamafactory
    cd LLaMA-Factory && FORCE_TORCHRUN=1 llamafactory-cli train runs/birds/llamafactory/train_sft.yaml

writes `runs/birds/llamafactory/`:

    finecot_sft.json        the `sft` config in ShareGPT form: `messages` (system, user with
                            `<image>`, assistant), `images` (paths relative to this folder)
    finecot_eval_open.json  the `eval_open` config the same way (assistant: `<answer>GOLD</answer>`),
                            for `eval_dataset` / `do_predict`
    images/                 the image files, named by content hash, written once each
    dataset_info.json       the two entries LLaMA-Factory's loader reads
    train_sft.yaml          the Fine-R1 release's Stage-1 run (lr 5e-6 cosine, 10 epochs, global
                            batch 64 = 4 GPUs x 4 x 4, bf16, ZeRO-3, vision tower and projector
                            frozen), its values taken from train/recipes/sft_qwen2_5_vl_3b.yaml

The EasyR1 export is curation/export/easyr1.py. Both stream the shards row group by row group
(bounded memory) and build their folder beside the old one, then swap it in.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from curation.core.tables import write_text_atomic

LLAMAFACTORY_NAME = "finecot_sft"
LLAMAFACTORY_EVAL = "finecot_eval_open"


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


def _sharegpt(staging: Path, rows: Iterator[dict[str, Any]], out_file: Path,
              assistant: Callable[[dict[str, Any]], list[dict[str, str]]]) -> int:
    """Write rows as one ShareGPT JSON array, element by element (memory holds one row)."""
    count = 0
    with out_file.open("w", encoding="utf-8") as handle:
        handle.write("[\n")
        for row in rows:
            paths = []
            for image in row["images"]:
                data = image["bytes"]
                suffix = Path(image.get("path") or "").suffix.lower() or ".jpg"
                name = f"images/{hashlib.sha256(data).hexdigest()[:24]}{suffix}"
                target = staging / name
                if not target.exists():
                    target.write_bytes(data)
                paths.append(name)
            record = {"id": row["id"], "messages": assistant(row), "images": paths}
            handle.write((",\n" if count else "") + json.dumps(record, ensure_ascii=False))
            count += 1
        handle.write("\n]\n")
    return count


def _sft_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": _text(m["content"])} for m in row["messages"]]


def _eval_messages(system: str) -> Callable[[dict[str, Any]], list[dict[str, str]]]:
    def messages(row: dict[str, Any]) -> list[dict[str, str]]:
        return [{"role": "system", "content": system},
                {"role": "user", "content": "<image>" + row["question"]},
                {"role": "assistant", "content": f"<answer>{row['answer']}</answer>"}]
    return messages


def _entry(file_name: str) -> dict[str, Any]:
    return {
        "file_name": file_name,
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


LLAMAFACTORY_GPUS = 4  # the release's Stage-1 run: 4 GPUs x 4 per device x 4 accumulation = 64
LLAMAFACTORY_YAML = """\
# LLaMA-Factory config of a finecot export: the Fine-R1 release's Stage-1 (CoT SFT) run.
# Values from finecot's train/recipes/{recipe} (each with its source there: the release's
# LLaMA-Factory/cot_sft_3b.sh and LLaMA-Factory's defaults it keeps).
#   cd LLaMA-Factory && FORCE_TORCHRUN=1 llamafactory-cli train {folder}/train_sft.yaml
### model
model_name_or_path: {model}
image_max_pixels: {max_pixels}
trust_remote_code: true
### method
stage: sft
do_train: true
finetuning_type: full
freeze_vision_tower: true
freeze_multi_modal_projector: true
deepspeed: examples/deepspeed/ds_z3_config.json   # LLaMA-Factory's own ZeRO-3 file (run from its checkout)
### dataset
dataset: {name}
dataset_dir: {folder}
media_dir: {folder}
template: qwen2_vl
cutoff_len: 4096
preprocessing_num_workers: 16
# eval_dataset: {eval_name}   # held-out test images (seen and unseen classes)
# eval_strategy: epoch         # the release does not evaluate during Stage 1
### output
output_dir: saves/finecot-sft
logging_steps: {logging_steps}
save_steps: 1000
### train
per_device_train_batch_size: {per_device}
gradient_accumulation_steps: {accumulation}   # global batch {global_batch} on {gpus} GPUs: change with your GPU count
learning_rate: {lr}
num_train_epochs: {epochs}
lr_scheduler_type: {scheduler}
warmup_steps: {warmup}
weight_decay: {weight_decay}
bf16: {bf16}
ddp_timeout: 9000
seed: {seed}
report_to: none
"""
SFT_RECIPE = "sft_qwen2_5_vl_3b.yaml"


def llamafactory_yaml(folder: Path) -> str:
    """train_sft.yaml for `folder`, with the shipped Stage-1 recipe's values."""
    from importlib import resources

    import yaml

    text = resources.files("train").joinpath("recipes", SFT_RECIPE).read_text(encoding="utf-8")
    sft = yaml.safe_load(text)
    global_batch = 64  # the paper's and the release's Stage-1 global batch
    per_device = sft["per_device_train_batch_size"]
    def number(value: Any) -> str:  # YAML 1.1 reads 5e-06 as a string, 5.0e-06 as a float
        return yaml.safe_dump(value).splitlines()[0]

    return LLAMAFACTORY_YAML.format(
        recipe=SFT_RECIPE, folder=folder, model=sft["model_name_or_path"],
        max_pixels=sft["max_pixels"], name=LLAMAFACTORY_NAME, eval_name=LLAMAFACTORY_EVAL,
        logging_steps=sft["logging_steps"], per_device=per_device,
        accumulation=global_batch // (per_device * LLAMAFACTORY_GPUS), global_batch=global_batch,
        gpus=LLAMAFACTORY_GPUS, lr=number(float(sft["learning_rate"])), epochs=sft["num_train_epochs"],
        scheduler=sft["lr_scheduler_type"], warmup=sft["warmup_steps"],
        weight_decay=number(float(sft["weight_decay"])), bf16=str(sft["bf16"]).lower(), seed=sft["seed"],
    )


def write_llamafactory(dataset_dir: Path, out: Path, system_prompt: str) -> Path:
    """ShareGPT JSON (sft, eval_open) + images + dataset_info.json + train_sft.yaml; returns
    `out`. `system_prompt`: the eval entry's system turn (the sft rows carry their own)."""
    out = Path(out)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)
    _sharegpt(staging, iter_config(dataset_dir, "sft"), staging / f"{LLAMAFACTORY_NAME}.json",
              _sft_messages)
    info = {LLAMAFACTORY_NAME: _entry(f"{LLAMAFACTORY_NAME}.json")}
    evals = _sharegpt(staging, iter_config(dataset_dir, "eval_open"),
                      staging / f"{LLAMAFACTORY_EVAL}.json", _eval_messages(system_prompt))
    if evals:
        info[LLAMAFACTORY_EVAL] = _entry(f"{LLAMAFACTORY_EVAL}.json")
    else:
        (staging / f"{LLAMAFACTORY_EVAL}.json").unlink()
    write_text_atomic(staging / "dataset_info.json", json.dumps(info, indent=2) + "\n")
    write_text_atomic(staging / "train_sft.yaml", llamafactory_yaml(out.resolve()))
    replace_dir(staging, out)
    return out


def replace_dir(staging: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)
