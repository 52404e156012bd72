"""Qwen2.5-VL's processor without its video processor: images and text only.

Saved beside every checkpoint finecot writes (train/tiny.py `save_processor`) and named in
its processor_config.json `auto_map`, so a stock server loads it with no finecot installed:

    transformers serve --trust-remote-code MODEL_DIR      # where torchvision is missing
    AutoProcessor.from_pretrained(MODEL_DIR, trust_remote_code=True)

Why: the standard Qwen2/2.5-VL processors load a video processor, and that needs
torchvision. Where torchvision is installed (vLLM, GPU machines), the same folder loads
the standard `Qwen2_5_VLProcessor` without any flag. This file imports only transformers.
"""

from transformers import Qwen2_5_VLProcessor


class FinecotQwenVLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor without the video processor (no torchvision needed)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)
