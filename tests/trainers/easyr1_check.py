"""EasyR1's own code on a finecot EasyR1 export: run in `.venv-trainers`, never in the project venv.

    .venv-trainers/bin/python tests/trainers/easyr1_check.py --src EASYR1_SRC \
        --folder runs/demo/easyr1 --tokenizer runs/tiny --out result.json

What runs is EasyR1's (hiyouga/EasyR1, pinned in tests/third_party.py), as `python3 -m
verl.trainer.main config=config.yaml ...` would run it from the export folder:

- the config: `PPOConfig` structured merge of config.yaml and the README's command-line
  overrides, `to_object`, `deep_post_init` (an unknown key or a wrong type raises; a missing
  format prompt or reward file resolves to None, reported);
- the data: `verl.utils.dataset.RLHFDataset` over train.parquet and val.parquet with the
  config's data settings (the overlong-prompt filter included), every row read with
  `__getitem__` (chat template, processor, M-RoPE positions), and `_build_messages` reported;
- the reward: `verl.workers.reward.AutoRewardManager` loading reward.py as the config names
  it, scoring a `DataProto` of tokenised responses.

What is not EasyR1's, and why (nothing here can be installed: no GPU, no torchvision):
- `verl.workers.rollout` is imported without its `__init__` (which imports vLLM): only its
  `config` module is needed by the config classes;
- `qwen_vl_utils` (imported by the dataset module for videos only; it needs torchvision) is a
  stand-in whose `fetch_video` raises: finecot exports hold no videos;
- the processor is Qwen2.5-VL's image processor and chat template around the tiny tokenizer
  finecot trains (`finecot train tiny-model`), built without the video processor that
  torchvision would need; the overlong filter runs in this process (workers: 1, not 16).

Prints nothing on success; writes a JSON of what it saw to --out.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import types
from pathlib import Path


def _bare_package(name: str, path: Path) -> types.ModuleType:
    """A package module without running its __init__ (its submodules import normally)."""
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    sys.modules[name] = module
    return module


def _import_easyr1(src: Path) -> None:
    sys.path.insert(0, str(src))
    rollout = _bare_package("verl.workers.rollout", src / "verl" / "workers" / "rollout")
    rollout.RolloutConfig = importlib.import_module("verl.workers.rollout.config").RolloutConfig
    stand_in = types.ModuleType("qwen_vl_utils")
    vision = types.ModuleType("qwen_vl_utils.vision_process")

    def fetch_video(*args, **kwargs):
        raise RuntimeError("videos are not part of finecot exports (stand-in of qwen_vl_utils)")

    vision.fetch_video = fetch_video
    stand_in.vision_process = vision
    sys.modules["qwen_vl_utils"], sys.modules["qwen_vl_utils.vision_process"] = stand_in, vision


def _processor(tokenizer_dir: Path, min_pixels: int, max_pixels: int):
    from transformers import PreTrainedTokenizerFast, ProcessorMixin, Qwen2VLImageProcessor
    from transformers.models.qwen2_5_vl.processing_qwen2_5_vl import Qwen2_5_VLProcessor

    class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):  # noqa: N801 (Qwen's naming)
        attributes = ["image_processor", "tokenizer"]
        tokenizer_class = "PreTrainedTokenizerFast"  # the tiny byte-level BPE, Qwen's special tokens

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
            ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
            self.image_token = "<|image_pad|>"
            self.video_token = "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)

    # The tiny tokenizer's files are written by transformers 5 (class "TokenizersBackend",
    # unknown to 4.x): the same tokenizer.json, special tokens and chat template, loaded by hand.
    settings = json.loads((tokenizer_dir / "tokenizer_config.json").read_text())
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_dir / "tokenizer.json"),
        eos_token=settings["eos_token"], pad_token=settings["pad_token"],
        additional_special_tokens=settings["extra_special_tokens"],
        chat_template=(tokenizer_dir / "chat_template.jinja").read_text(),
    )
    images = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    processor = ImageOnlyQwen2_5_VLProcessor(images, tokenizer, chat_template=tokenizer.chat_template)
    return tokenizer, processor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--src", type=Path, required=True)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--override", action="append", default=[])
    parser.add_argument("--response", action="append", default=[], help="TEXT|||GOLD")
    args = parser.parse_args()
    _import_easyr1(args.src.resolve())
    os.chdir(args.folder)  # the README's command runs in the export folder

    import numpy as np
    import torch
    from omegaconf import OmegaConf
    from verl.protocol import DataProto
    from verl.trainer.config import PPOConfig
    from verl.utils.dataset import RLHFDataset
    from verl.workers.reward import AutoRewardManager

    merged = OmegaConf.merge(OmegaConf.structured(PPOConfig()), OmegaConf.load("config.yaml"),
                             OmegaConf.from_dotlist(args.override))
    config: PPOConfig = OmegaConf.to_object(merged)
    config.deep_post_init()
    data = config.data
    tokenizer, processor = _processor(args.tokenizer, data.min_pixels, data.max_pixels)
    result: dict = {
        "format_prompt": data.format_prompt,
        "reward_function": config.worker.reward.reward_function,
        "reward_function_name": config.worker.reward.reward_function_name,
        "config": config.to_dict(),
    }
    for split, files in (("train", data.train_files), ("val", data.val_files)):
        dataset = RLHFDataset(
            data_path=files, tokenizer=tokenizer, processor=processor,
            prompt_key=data.prompt_key, answer_key=data.answer_key, image_key=data.image_key,
            video_key=data.video_key, image_dir=data.image_dir, video_fps=data.video_fps,
            max_prompt_length=data.max_prompt_length, truncation="right",
            format_prompt=data.format_prompt, min_pixels=data.min_pixels,
            max_pixels=data.max_pixels, filter_overlong_prompts=data.filter_overlong_prompts,
            filter_overlong_prompts_workers=1,
        )
        rows = []
        for index in range(len(dataset)):
            raw = dataset.dataset[index]
            item = dataset[index]
            rows.append({
                "id": item["id"],
                "ground_truth": item["ground_truth"],
                "images": len(item["multi_modal_data"]["images"]),
                "image_size": list(item["multi_modal_data"]["images"][0].size),
                "extra_images": sorted(k for k in ("image_noisy", "image_aug") if k in item),
                "prompt_tokens": int(item["attention_mask"].sum()),
                "messages": dataset._build_messages(raw),
                "prompt_text": tokenizer.decode(item["raw_prompt_ids"]),
            })
        result[split] = {"rows": len(dataset), "source_rows": len(dataset.dataset), "items": rows}
        # (source_rows: after EasyR1's overlong filter, which drops rows silently)

    manager = AutoRewardManager(config.worker.reward, tokenizer)
    texts, golds = zip(*(r.split("|||") for r in args.response), strict=True)
    encoded = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    width = max(len(e) for e in encoded)
    responses = torch.full((len(encoded), width), tokenizer.pad_token_id or 0, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for i, ids in enumerate(encoded):
        responses[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
    batch = DataProto.from_dict(
        tensors={"responses": responses, "response_mask": mask},
        non_tensors={"ground_truth": np.array(golds, dtype=object)},
    )
    reward, metrics = manager.compute_reward(batch)
    result["rewards"] = {
        "overall": reward.sum(dim=-1).tolist(),
        **{k: [float(x) for x in v] for k, v in metrics.items()},
    }
    args.out.write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
