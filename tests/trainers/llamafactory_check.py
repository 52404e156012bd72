"""LLaMA-Factory's own code on a finecot LLaMA-Factory export: run in `.venv-trainers` only.

    .venv-trainers/bin/python tests/trainers/llamafactory_check.py \
        --folder runs/demo/llamafactory --out result.json

What runs is LLaMA-Factory's (the PyPI release pinned in the Makefile), as `llamafactory-cli
train train_sft.yaml` would run it, up to the tokenizer:

- the YAML: `llamafactory.hparams.get_train_args` (its argument classes refuse an unknown
  key; its checks refuse settings that do not go together);
- the data: `llamafactory.data.loader._get_merged_dataset` for `dataset` and, when asked,
  `eval_dataset`: `dataset_info.json` read by its parser, the JSON loaded, every row converted
  by its ShareGPT converter (roles in order, one `<image>` per image, paths under media_dir).

What is not LLaMA-Factory's, and why: `llamafactory.data` is imported without its
`__init__`, which imports the collator and templates, whose multimodal plugin needs
torchaudio (not installable here next to a CPU torch); the loader and converter themselves
do not. `deepspeed` is removed from the YAML before parsing (it needs the deepspeed package
and GPUs); it is reported. `use_cpu` is set (there is no GPU here, and transformers
refuses `bf16: true` on a machine without one), and one preprocessing worker. Writes a JSON of what it saw to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--with-eval", action="store_true", help="uncomment eval_dataset")
    args = parser.parse_args()

    import yaml

    config_text = (args.folder / "train_sft.yaml").read_text(encoding="utf-8")
    if args.with_eval:
        config_text = config_text.replace("# eval_dataset:", "eval_dataset:")
        config_text = config_text.replace("# eval_strategy:", "eval_strategy:")
    config = yaml.safe_load(config_text)
    deepspeed = config.pop("deepspeed", None)
    config["output_dir"] = str(args.output_dir)
    config["preprocessing_num_workers"] = 1  # two shared cores here; the YAML says 16
    config["use_cpu"] = True  # no GPU here: transformers refuses bf16 without one otherwise

    import llamafactory
    from llamafactory.hparams import get_train_args

    package = types.ModuleType("llamafactory.data")
    package.__path__ = [str(Path(llamafactory.__file__).parent / "data")]
    sys.modules["llamafactory.data"] = package
    from llamafactory.data.loader import _get_merged_dataset

    model_args, data_args, training_args, finetuning_args, _ = get_train_args(config)
    result: dict = {
        "deepspeed": deepspeed,
        "args": {
            "learning_rate": training_args.learning_rate,
            "lr_scheduler_type": str(training_args.lr_scheduler_type),
            "num_train_epochs": training_args.num_train_epochs,
            "per_device_train_batch_size": training_args.per_device_train_batch_size,
            "gradient_accumulation_steps": training_args.gradient_accumulation_steps,
            "warmup_steps": training_args.warmup_steps,
            "weight_decay": training_args.weight_decay,
            "bf16": training_args.bf16,
            "freeze_vision_tower": finetuning_args.freeze_vision_tower,
            "freeze_multi_modal_projector": finetuning_args.freeze_multi_modal_projector,
            "finetuning_type": finetuning_args.finetuning_type,
            "image_max_pixels": model_args.image_max_pixels,
            "template": data_args.template,
            "cutoff_len": data_args.cutoff_len,
        },
    }
    names = {"train": data_args.dataset, "eval": data_args.eval_dataset}
    for split, dataset_names in names.items():
        if not dataset_names:
            continue
        merged = _get_merged_dataset(dataset_names, model_args, data_args, training_args, "sft")
        rows = [merged[i] for i in range(len(merged))]
        result[split] = {
            "rows": len(rows),
            "missing_images": [p for r in rows for p in r["_images"] or () if not Path(p).is_file()],
            "images_per_row": sorted({len(r["_images"] or ()) for r in rows}),
            "first": rows[0],
        }
    args.out.write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
