"""A tiny random-init Qwen2.5-VL model with a tokenizer trained here, for CPU runs and tests.

Same architecture family as the paper's Qwen2.5-VL-3B/7B (vision tower + merger + M-RoPE
decoder), a few hundred thousand parameters instead of billions, and a byte-level BPE
tokenizer trained in milliseconds on the dataset's own text. Nothing is downloaded.

    finecot train tiny-model runs/tiny --dataset runs/demo/dataset

    >>> import tempfile
    >>> out = build_tiny_model(tempfile.mkdtemp(), ["a Scarlet Tanager has red plumage"])
    >>> processor = load_processor(out)
    >>> processor.tokenizer.decode(processor.tokenizer("red plumage")["input_ids"])
    'red plumage'

The Qwen2/2.5-VL processors insist on a video processor, whose loading needs torchvision
(never installed here: the reachable builds are CUDA-linked). `FinecotQwenVLProcessor`
(train/video_free_processor.py) is the same processor without the video part;
`load_processor` falls back to it. `save_processor` writes a folder that servers nobody
here wrote load as a vision-language model without importing finecot: processor_class is
the standard `Qwen2_5_VLProcessor` (with a video processor config, for machines that have
torchvision, such as vLLM's), and `auto_map` names the video-free class shipped in the
folder (`--trust-remote-code` where torchvision is missing, e.g. `transformers serve`
here). A server that loads the folder as text only drops every image without an error.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from pathlib import Path

from transformers import (
    AutoProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from trl.chat_template_utils import qwen2_5_vl_chat_template

from train import video_free_processor
from train.video_free_processor import FinecotQwenVLProcessor

log = logging.getLogger(__name__)

# Qwen2.5-VL's own special tokens, so the chat template and the processor work unchanged.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
PATCH = 14  # Qwen2.5-VL patch size; one image token covers (2*14)^2 pixels after the merger


AutoProcessor.register(Qwen2_5_VLConfig, FinecotQwenVLProcessor, exist_ok=True)

REMOTE_CODE = Path(video_free_processor.__file__)


def save_processor(processor, out: str | Path) -> None:
    """Save `processor` so that stock servers load it with its images (see the module doc)."""
    out = Path(out)
    processor.save_pretrained(out)
    if not isinstance(processor, FinecotQwenVLProcessor):
        return  # a standard processor saved itself as such
    shutil.copyfile(REMOTE_CODE, out / REMOTE_CODE.name)
    auto_map = {"AutoProcessor": f"{REMOTE_CODE.stem}.{FinecotQwenVLProcessor.__name__}"}
    config_file = out / "processor_config.json"
    config = json.loads(config_file.read_text())
    config.update(processor_class="Qwen2_5_VLProcessor", auto_map=auto_map)
    config_file.write_text(json.dumps(config, indent=2) + "\n")
    tokenizer_file = out / "tokenizer_config.json"
    if tokenizer_file.exists():
        tokenizer_config = json.loads(tokenizer_file.read_text())
        tokenizer_config["processor_class"] = "Qwen2_5_VLProcessor"
        tokenizer_file.write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    image = {k: v for k, v in config.get("image_processor", {}).items()
             if k != "image_processor_type"}
    video = {**image, "video_processor_type": "Qwen2VLVideoProcessor",
             "processor_class": "Qwen2_5_VLProcessor"}
    (out / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2) + "\n")


def default_corpus() -> list[str]:
    """Text the tokenizer always learns: the answer format and the paper's instruction."""
    return [
        "<think>visual analysis, candidate sub-categories, comparison, prediction</think>"
        "<answer>class</answer>",
        "You first think through the reasoning process as an internal monologue, enclosed "
        "within <think> </think> tags. Then, provide your final answer enclosed within "
        "<answer> </answer> tags.",
        "What is the specific sub-category of the object in this image?",
        "You are a helpful assistant.",
    ]


def build_tokenizer(texts: Iterable[str], vocab_size: int = 600) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` (+ the default corpus), Qwen special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([*default_corpus(), *texts], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        chat_template=qwen2_5_vl_chat_template,
    )


def tiny_config(
    tokenizer: PreTrainedTokenizerFast,
    hidden: int = 64,
    layers: int = 2,
    *,
    heads: int = 4,
    vision_hidden: int = 32,
    vision_depth: int = 2,
    patch: int = PATCH,
    window: int = 56,
) -> Qwen2_5_VLConfig:
    """Qwen2.5-VL config shrunk to CPU size; token ids taken from `tokenizer`.

    `patch` is the vision tower's patch side in pixels (Qwen2.5-VL: 14); 2x2 patches merge
    into one image token. `window` is the windowed-attention side in pixels (the last vision
    block always attends to the whole image).
    """
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    half_head = hidden // heads // 2
    # M-RoPE splits each head's rotary half into (time, height, width) sections.
    mrope = [half_head - 2 * (half_head // 3), half_head // 3, half_head // 3]
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": hidden,
            "intermediate_size": hidden * 2,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "num_key_value_heads": max(1, heads // 2),
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config={
            "depth": vision_depth,
            "hidden_size": vision_hidden,
            "intermediate_size": vision_hidden * 2,
            "num_heads": 2,
            "out_hidden_size": hidden,
            "patch_size": patch,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": window,
            "fullatt_block_indexes": [vision_depth - 1],
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_tiny_model(
    out: str | Path,
    texts: Iterable[str] = (),
    *,
    hidden: int = 64,
    layers: int = 2,
    image_pixels: int = 56 * 56,
    seed: int = 0,
    heads: int = 4,
    vision_hidden: int = 32,
    vision_depth: int = 2,
    patch: int = PATCH,
    window: int = 56,
    vocab_size: int = 600,
) -> Path:
    """Build, save and return the folder of a tiny Qwen2.5-VL model + processor.

    `image_pixels` fixes the processor's image size (min = max): every image becomes
    `image_pixels / (2 * patch)**2` image tokens, so 56*56 with 14 px patches gives 4 tokens
    per image. The defaults are the smallest model the tests need; bench/tapo_experiment.py
    measures a shape that sees the synthetic world (hidden, layers, vision width and depth,
    patch, image size); `window` is the vision tower's attention window in pixels.
    """
    import torch

    if patch < 1 or image_pixels < (2 * patch) ** 2:
        raise ValueError(f"image_pixels must be at least {(2 * patch) ** 2} (one merged patch of "
                         f"{2 * patch}x{2 * patch} pixels)")
    out = Path(out)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(texts, vocab_size)
    config = tiny_config(tokenizer, hidden=hidden, layers=layers, heads=heads,
                         vision_hidden=vision_hidden, vision_depth=vision_depth, patch=patch,
                         window=window)
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.do_sample = True
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=image_pixels, max_pixels=image_pixels, patch_size=patch, merge_size=2
    )
    processor = FinecotQwenVLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=qwen2_5_vl_chat_template
    )
    model.save_pretrained(out)
    save_processor(processor, out)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("tiny Qwen2.5-VL (%d parameters, vocab %d) saved to %s", n_params, len(tokenizer), out)
    return out


def load_processor(path: str | Path, min_pixels: int | None = None, max_pixels: int | None = None):
    """AutoProcessor for `path`; Qwen-VL models fall back to the video-free processor.

    `min_pixels`/`max_pixels` override the image processor's limits (the paper's knobs for
    how many visual tokens an image costs).
    """
    try:
        processor = AutoProcessor.from_pretrained(str(path))
    except (ImportError, ValueError, OSError, TypeError) as err:
        if "video" not in str(err).lower() and "torchvision" not in str(err).lower():
            raise
        log.info("loading %s without its video processor (%s)", path, err)
        processor = FinecotQwenVLProcessor.from_pretrained(str(path))
    if min_pixels is not None or max_pixels is not None:
        from transformers.image_utils import SizeDict

        size = processor.image_processor.size
        processor.image_processor.size = SizeDict(
            shortest_edge=min_pixels or size.shortest_edge, longest_edge=max_pixels or size.longest_edge
        )
    return processor
