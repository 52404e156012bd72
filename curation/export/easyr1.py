"""The EasyR1 export: a folder EasyR1 (hiyouga/EasyR1) trains from as it is.

    finecot export --run runs/birds --format easyr1
    cd runs/birds/easyr1 && python3 -m verl.trainer.main config=config.yaml \
        worker.actor.model.model_path=runs/birds-sft-3b     # (see the folder's README.md)

writes `runs/birds/easyr1/`:

    train.parquet         the `rl` config: problem ("<image>" + question), answer, images, and
                          the TAPO columns Fine-R1's EasyR1 fork reads: image_noisy (the
                          positive), image_aug (the negative); images embedded as bytes
    val.parquet           `eval_open` (seen + unseen test images), or, with no eval rows, a
                          seeded held-out share of `rl` (those rows leave train.parquet)
    format_prompt.jinja   the question, a blank line, the answer-format instruction: the text
                          `finecot train tapo` and `finecot eval` ask (rl_prompt_text)
    reward.py             EasyR1's batch reward interface scoring with THE matcher
                          (curation/export/easyr1_reward.py), with finecot_matcher.py (a copy
                          of curation/core/labels.py) and registry.json: no finecot install
    config.yaml           EasyR1 settings with the release's TAPO/GRPO values, taken from
                          train/recipes/tapo_qwen2_5_vl_3b.yaml (each with its source there)
    README.md             the command lines (upstream EasyR1, and Fine-R1's TAPO fork)

EasyR1 reads a data *folder* by the suffix of its first file, so the config names the two
Parquet files, never the folder. Everything is written beside the old folder and swapped in.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from curation.core import labels
from curation.core.tables import write_text_atomic
from curation.export.formats import iter_config, replace_dir
from curation.export.prompts import FORMAT_INSTRUCTION, RL_PROMPT_SEPARATOR

IMAGE = datasets.List(datasets.Image())
TEXT = datasets.Value("string")
TRAIN_FEATURES = datasets.Features(
    {
        "id": TEXT,
        "problem": TEXT,
        "answer": TEXT,
        "images": IMAGE,
        "image_noisy": IMAGE,  # the positive (Fine-R1's fork: worker.actor.is_noisy)
        "image_aug": IMAGE,  # the negative (the fork's inter-class KL term)
        "negative_label": TEXT,
    }
)
VAL_FEATURES = datasets.Features(
    {"id": TEXT, "problem": TEXT, "answer": TEXT, "images": IMAGE, "class_split": TEXT}
)
VAL_SHARE = 0.1  # held out of rl when the export has no eval rows
TAPO_RECIPE = "tapo_qwen2_5_vl_3b.yaml"
FORMAT_PROMPT = (
    "{#- finecot: the answer-format prompt of an EasyR1 export. EasyR1 renders it with the row's\n"
    "    problem as `content`. The instruction is the Fine-R1 release's\n"
    "    (TAPO/examples/format_prompt/cls_thinking.jinja, MIT License, Copyright the Fine-R1\n"
    "    authors): the same words `finecot train tapo` and `finecot eval` use. -#}\n"
    "{{ content | trim }}" + RL_PROMPT_SEPARATOR + FORMAT_INSTRUCTION + "\n"
)


def _tapo_values() -> dict[str, Any]:
    """The shipped TAPO recipe (the release's values; sources in its comments)."""
    text = resources.files("train").joinpath("recipes", TAPO_RECIPE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def easyr1_config(tapo: dict[str, Any]) -> dict[str, Any]:
    """EasyR1's config (verl/trainer/config.py PPOConfig) with the release's values.

    Only keys upstream EasyR1 knows: TAPO's own terms (Fine-R1's fork) are command-line
    overrides in the folder's README, so this file loads in both."""
    return {
        "data": {
            "train_files": "train.parquet",
            "val_files": "val.parquet",
            "prompt_key": "problem",
            "answer_key": "answer",
            "image_key": "images",
            "max_prompt_length": 4096,  # the release's data.max_prompt_length
            "max_response_length": tapo["max_completion_length"],
            "rollout_batch_size": tapo["rollout_batch_prompts"],  # prompts per generation
            "mini_rollout_batch_size": tapo["prompts_per_update"],
            "format_prompt": "./format_prompt.jinja",
            "shuffle": True,
            "seed": tapo["seed"],
            "min_pixels": tapo["min_pixels"],
            "max_pixels": tapo["max_pixels"],
            "filter_overlong_prompts": True,
        },
        "algorithm": {
            "adv_estimator": "grpo",  # group-normalised advantages; DAPO = this + the lines below
            "disable_kl": tapo["beta"] == 0,  # no reference model
            "online_filtering": bool(tapo["dynamic_sampling"]),
            "filter_key": "accuracy",
            "filter_low": tapo["dynamic_sampling_low"],
            "filter_high": tapo["dynamic_sampling_high"],
        },
        "worker": {
            "actor": {
                "global_batch_size": tapo["prompts_per_update"],
                "max_grad_norm": tapo["max_grad_norm"],
                "clip_ratio_low": tapo["epsilon"],
                "clip_ratio_high": tapo["epsilon_high"],
                "clip_ratio_dual": tapo["delta"],
                "loss_avg_mode": "token",
                "model": {
                    "model_path": tapo["model_name_or_path"],
                    "enable_gradient_checkpointing": tapo["gradient_checkpointing"],
                    "freeze_vision_tower": False,
                },
                "optim": {
                    "lr": tapo["learning_rate"],
                    "weight_decay": tapo["weight_decay"],
                    "strategy": "adamw_bf16",
                    "lr_warmup_ratio": 0.0,
                },
            },
            "rollout": {
                "n": tapo["num_generations"] // 2,  # per image: anchor and positive in TAPO
                "temperature": tapo["temperature"],
                "top_p": tapo["top_p"],
                "gpu_memory_utilization": 0.6,
            },
            "reward": {"reward_function": "./reward.py:compute_score"},
        },
        "trainer": {
            "total_epochs": tapo["num_train_epochs"],
            "max_try_make_batch": -1,  # regenerate until the batch is full, as the release
            "logger": ["console"],
            "val_freq": -1,
            "val_before_train": False,
            "save_freq": 5,
            "save_limit": 3,
            "project_name": "finecot",
            "experiment_name": "tapo",
        },
    }


README = """\
# EasyR1 export of a finecot run

Train with [EasyR1](https://github.com/hiyouga/EasyR1) from this folder (EasyR1 installed,
e.g. `pip install -e EasyR1`; paths in `config.yaml` are relative to this folder):

```bash
cd {folder}
python3 -m verl.trainer.main config=config.yaml \\
    worker.actor.model.model_path=YOUR_STAGE1_MODEL \\
    trainer.n_gpus_per_node=4 worker.rollout.tensor_parallel_size=1
```

That is GRPO with the Fine-R1 release's Stage-2 values (clip-higher 0.2/0.28, no reference
model, groups kept when 0.01 < accuracy < 0.99, rollouts of {n} per image, lr {lr}); the
reward is `reward.py` (THE matcher of finecot: the last `<answer>` must name exactly one
class, the gold; 0.9 accuracy + 0.1 format). TAPO itself runs in the Fine-R1 release's EasyR1
fork (PKU-ICST-MIPL/FineR1_ICLR2026, `TAPO/`), which reads `image_noisy` (the positive) and
`image_aug` (the negative) from `train.parquet`; add its settings (as its
`examples/tapo/tapo_3b.sh` sets them):

```bash
    worker.actor.is_noisy=true algorithm.use_kl_prcp=true algorithm.kl_prcp_coef={gamma} \\
    algorithm.use_aug_entropy_loss=true algorithm.aug_entropy_loss_coef={eta} \\
    algorithm.use_ori_entropy_loss=true algorithm.ori_entropy_loss_coef={eta}
```

Files: `train.parquet` ({train} rows), `val.parquet` ({val} rows, {val_source}),
`format_prompt.jinja`, `reward.py` + `finecot_matcher.py` + `registry.json`, `config.yaml`.
"""


def _held_out(ids: list[str], seed: int) -> set[str]:
    """A seeded VAL_SHARE of the ids (at least one, never all)."""
    if len(ids) < 2:
        return set()
    ranked = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    return set(ranked[: max(1, round(VAL_SHARE * len(ids)))])


def _write(path: Path, features: datasets.Features, rows: Iterator[dict], group: int = 100) -> int:
    schema = features.arrow_schema
    count, chunk = 0, []
    with pq.ParquetWriter(path, schema) as writer:
        for row in rows:
            chunk.append(row)
            count += 1
            if len(chunk) >= group:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                chunk = []
        if chunk or not count:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
    return count


def write_easyr1(dataset_dir: Path, out: Path, registry: Path, seed: int = 0) -> Path:
    """The EasyR1 folder from the exported `rl` and `eval_open` configs; returns `out`."""
    out = Path(out)
    staging = out.with_name(f".{out.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    has_eval = any(True for _ in iter_config(dataset_dir, "eval_open"))
    rl_ids = [] if has_eval else [r["id"] for r in iter_config(dataset_dir, "rl")]
    held = _held_out(rl_ids, seed)

    def rl_rows(keep: bool) -> Iterator[dict]:
        for row in iter_config(dataset_dir, "rl"):
            if (row["id"] in held) != keep:
                continue
            yield {
                "id": row["id"],
                "problem": "<image>" + row["question"],
                "answer": row["answer"],
                "images": row["images"],
                "image_noisy": row["positive_images"],
                "image_aug": row["negative_images"],
                "negative_label": row["negative_label"],
            }

    def val_rows() -> Iterator[dict]:
        if has_eval:
            for row in iter_config(dataset_dir, "eval_open"):
                yield {"id": row["id"], "problem": "<image>" + row["question"],
                       "answer": row["answer"], "images": row["images"],
                       "class_split": row["class_split"]}
        else:
            for row in rl_rows(keep=True):
                yield {**{k: row[k] for k in ("id", "problem", "answer", "images")},
                       "class_split": "seen"}

    n_train = _write(staging / "train.parquet", TRAIN_FEATURES, rl_rows(keep=False))
    n_val = _write(staging / "val.parquet", VAL_FEATURES, val_rows())
    write_text_atomic(staging / "format_prompt.jinja", FORMAT_PROMPT)
    shutil.copyfile(Path(__file__).with_name("easyr1_reward.py"), staging / "reward.py")
    shutil.copyfile(labels.__file__, staging / "finecot_matcher.py")
    shutil.copyfile(registry, staging / "registry.json")
    tapo = _tapo_values()
    config = easyr1_config(tapo)
    header = ("# EasyR1 config of a finecot export: the Fine-R1 release's Stage-2 values, from\n"
              f"# finecot's train/recipes/{TAPO_RECIPE} (each value's source is there).\n")
    write_text_atomic(staging / "config.yaml", header + yaml.safe_dump(config, sort_keys=False))
    write_text_atomic(staging / "README.md", README.format(
        folder=out, n=config["worker"]["rollout"]["n"], lr=tapo["learning_rate"],
        gamma=tapo["tapo_gamma"], eta=tapo["tapo_eta"], train=n_train, val=n_val,
        val_source="the eval_open config: seen and unseen test images" if has_eval
        else f"a seeded {VAL_SHARE:.0%} of rl held out of train.parquet (no eval rows)"))
    replace_dir(staging, out)
    return out
