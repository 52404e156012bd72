"""The tiny offline Qwen2.5-VL (train/tiny.py): builds, saves, reloads with the Auto classes.

    .venv/bin/pytest -q -p no:cacheprovider tests/test_tiny_model.py
"""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from train.tiny import build_tiny_model, load_processor

TEXTS = ["<think>red crown, black wings</think><answer>Scarlet Tanager</answer>"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), TEXTS)


def _inputs(processor, colour=(200, 30, 30)):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which bird?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(images=[Image.new("RGB", (64, 48), colour)], text=[text], return_tensors="pt")


def test_auto_classes_load_what_was_saved(tiny):
    """The folder names the standard processor (servers with torchvision load it as is) and
    ships the video-free one as remote code (what loads here, without torchvision)."""
    config = json.loads((tiny / "processor_config.json").read_text())
    assert config["processor_class"] == "Qwen2_5_VLProcessor"
    assert config["auto_map"] == {"AutoProcessor": "video_free_processor.FinecotQwenVLProcessor"}
    assert (tiny / "video_free_processor.py").exists()
    assert (tiny / "video_preprocessor_config.json").exists()
    with pytest.raises((ImportError, OSError, ValueError), match="(?i)torchvision|video"):
        AutoProcessor.from_pretrained(tiny)  # the standard class needs torchvision: loud
    processor = AutoProcessor.from_pretrained(tiny, trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(tiny)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert type(processor).__name__ == "FinecotQwenVLProcessor"
    inputs = _inputs(processor)
    # 56*56 pixels per image: a 4x4 grid of 14 px patches, merged 2x2 -> 4 image tokens
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 4]]
    assert (inputs["input_ids"] == model.config.image_token_id).sum().item() == 4
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], len(processor.tokenizer))
    assert torch.isfinite(logits).all()


def test_the_image_changes_the_output(tiny):
    processor = load_processor(tiny)
    model = AutoModelForImageTextToText.from_pretrained(tiny).eval()
    with torch.no_grad():
        red = model(**_inputs(processor, (200, 30, 30))).logits[0, -1]
        blue = model(**_inputs(processor, (30, 30, 200))).logits[0, -1]
    assert not torch.allclose(red, blue)


def test_tokenizer_round_trips_and_knows_the_chat_format(tiny):
    tok = load_processor(tiny).tokenizer
    text = "<think>a Boeing 737-300's winglets</think><answer>Boeing 737-300</answer>"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.convert_tokens_to_ids("<|im_end|>") == tok.eos_token_id
    assert tok.pad_token == "<|endoftext|>"
    # words of the training text became single merged tokens
    assert len(tok("Scarlet Tanager")["input_ids"]) < len("Scarlet Tanager")


def test_pixel_limits_are_configurable(tiny):
    processor = load_processor(tiny, min_pixels=112 * 112, max_pixels=112 * 112)
    grid = _inputs(processor)["image_grid_thw"][0]
    assert 8 * 8 <= grid.prod().item() <= 8 * 10  # about 112*112 pixels, 14 px patches
    assert load_processor(tiny)  # the saved limits are untouched
    assert _inputs(load_processor(tiny))["image_grid_thw"].tolist() == [[1, 4, 4]]


def test_generation_runs_and_is_seeded(tiny):
    processor = load_processor(tiny)
    model = AutoModelForImageTextToText.from_pretrained(tiny).eval()
    inputs = _inputs(processor)
    outs = []
    for _ in range(2):
        torch.manual_seed(3)
        outs.append(model.generate(**inputs, max_new_tokens=8, do_sample=True)[0].tolist())
    assert outs[0] == outs[1] and len(outs[0]) > inputs["input_ids"].shape[1]


def test_too_small_images_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 784"):
        build_tiny_model(tmp_path, TEXTS, image_pixels=100)
