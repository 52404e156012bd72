"""The two model back-ends of `finecot eval`: any OpenAI-compatible endpoint, or a local
checkpoint run with transformers. Both answer a list of `Request`s (image bytes + prompt
text) and are called only for requests the ledger does not answer yet (train/eval/evaluate.py).

    endpoint = EndpointModel(TeacherConfig(model="gpt-4o", base_urls=[URL], temperature=0))
    answers = endpoint.run(requests, gate=lambda: False, on_result=callback)

    local = LocalModel("runs/tiny/checkpoint", batch_size=8, max_new_tokens=256)
    local.run(requests, on_result=callback)          # batched greedy generation

The endpoint goes through the drafting client (curation/teacher/client.py: concurrency, rate limits,
retries, key scrubbing); the local model generates greedily, left-padded batches, bf16 on
GPU and fp32 on CPU. `model_id` is what enters the request keys: the endpoint's model name,
or the checkpoint's resolved path + its weight files' sizes and mtimes (re-saving a
checkpoint changes its results' keys; hashing gigabytes of weights would not be worth it).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps

from curation.core.config import TeacherConfig
from curation.teacher.answers import Completion
from curation.teacher.client import TeacherClient

log = logging.getLogger(__name__)


@dataclass
class Request:
    """One evaluation question: the image (encoded file bytes or a file), the user text, its key."""

    key: str
    image: bytes | Path
    text: str

    def image_bytes(self) -> bytes:
        return self.image if isinstance(self.image, bytes) else Path(self.image).read_bytes()


OnResult = Callable[[Request, Completion], None]

# -- images ----------------------------------------------------------------------------------

_PASS_THROUGH = {b"\xff\xd8\xff": "image/jpeg", b"\x89PNG\r\n\x1a\n": "image/png"}


def data_url(data: bytes, max_side: int, max_pixels: int, quality: int = 90) -> str:
    """A data URL of encoded image bytes, fitted into max_side and max_pixels.

    JPEG/PNG bytes that already fit go as they are (no decode of the pixels); anything
    else is rotated upright, resized and re-encoded as JPEG.
    """
    with Image.open(io.BytesIO(data)) as img:
        fits = max(img.size) <= max_side and img.width * img.height <= max_pixels
        upright = img.getexif().get(0x0112, 1) == 1
        mime = next((m for magic, m in _PASS_THROUGH.items() if data.startswith(magic)), None)
        if not (mime and fits and upright):
            img = ImageOps.exif_transpose(img).convert("RGB")
            scale = min(1.0, max_side / max(img.size), math.sqrt(max_pixels / (img.width * img.height)))
            if scale < 1.0:
                img = img.resize((max(1, int(img.width * scale)), max(1, int(img.height * scale))),
                                 Image.Resampling.BICUBIC)
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=quality)
            data, mime = buffer.getvalue(), "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# -- an OpenAI-compatible endpoint -------------------------------------------------------------


class EndpointModel:
    """Evaluation through the drafting client: one chat request per question, no system
    prompt (the paper's evaluation has none), the image first, then the text."""

    def __init__(self, config: TeacherConfig):
        self.config = config
        self.model_id = config.model
        self.sampling = {"temperature": config.temperature, "top_p": config.top_p,
                         "max_tokens": config.max_tokens, "seed": config.seed}
        self.image_spec = f"fit={config.image_max_side}x{config.image_max_pixels};q={config.jpeg_quality}"

    def messages(self, image_url: str, text: str) -> list[dict]:
        return [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_url}},
            {"type": "text", "text": text},
        ]}]

    def run(self, requests: Sequence[Request], on_result: OnResult,
            gate: Callable[[], bool] = lambda: False) -> int:
        """Send every request (at most `concurrency` in flight); returns how many were sent."""
        return asyncio.run(self._run(requests, on_result, gate))

    async def _run(self, requests: Sequence[Request], on_result: OnResult,
                   gate: Callable[[], bool]) -> int:
        cfg = self.config
        sent = 0
        async with TeacherClient(cfg) as client:

            async def one(request: Request) -> None:
                nonlocal sent
                try:
                    url = data_url(request.image_bytes(), cfg.image_max_side, cfg.image_max_pixels, cfg.jpeg_quality)
                except (OSError, ValueError, Image.DecompressionBombError) as err:
                    on_result(request, Completion(status="failed", error=f"image: {err}"))
                    return
                sent += await client.sample(self.messages(url, request.text), [0],
                                            lambda _, c: on_result(request, c), gate=gate)

            limit = cfg.concurrency + cfg.concurrency // 4 + 2  # keep the client's slots busy
            pending: set[asyncio.Task] = set()
            for request in requests:
                if gate() or client.refused:
                    break
                while len(pending) >= limit:
                    _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                pending.add(asyncio.create_task(one(request)))
            if pending:
                await asyncio.gather(*pending)
        if client.refused:  # a wrong URL, key or model: every other request would fail alike
            raise ConnectionError(
                f"the endpoint refused the requests ({client.refused}). Check --endpoint, "
                f"--endpoint-model ({cfg.model!r}) and the key in ${cfg.api_key_env}, then rerun: "
                "answers received so far stay in the ledger.")
        return sent


# -- a local checkpoint (transformers) ----------------------------------------------------------


def checkpoint_id(path: str | Path) -> str:
    """The local model's identity in request keys: resolved path + weight files' size/mtime."""
    root = Path(path).resolve()
    weights = sorted(p for p in root.glob("*") if p.suffix in {".safetensors", ".bin", ".pt"})
    stamp = ";".join(f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in weights)
    return f"local:{root}#{hashlib.sha256(stamp.encode()).hexdigest()[:16]}"


class LocalModel:
    """A transformers image-text-to-text checkpoint, batched greedy generation."""

    def __init__(self, path: str | Path, batch_size: int = 8, max_new_tokens: int = 512,
                 device: str | None = None, max_pixels: int | None = None):
        import torch
        from transformers import AutoModelForImageTextToText

        from train.tiny import load_processor

        if not Path(path).is_dir():
            raise FileNotFoundError(f"no local checkpoint folder at {path} (--model takes a LOCAL path)")
        self.path, self.batch_size, self.max_new_tokens = Path(path), batch_size, max_new_tokens
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.processor = load_processor(path, max_pixels=max_pixels)
        self.processor.tokenizer.padding_side = "left"  # batched generation appends on the right
        self.model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=dtype).to(self.device).eval()
        self.model_id = checkpoint_id(path)
        self.sampling = {"do_sample": False, "max_new_tokens": max_new_tokens}
        self.image_spec = f"processor={max_pixels or 'saved'}"

    def run(self, requests: Sequence[Request], on_result: OnResult,
            gate: Callable[[], bool] = lambda: False) -> int:
        """Answer every request in batches of `batch_size`; returns how many were answered."""
        done = 0
        for start in range(0, len(requests), self.batch_size):
            if gate():
                break
            batch, images = [], []
            for request in requests[start:start + self.batch_size]:
                try:  # an unreadable image fails its own item, not the batch
                    with Image.open(io.BytesIO(request.image_bytes())) as img:
                        images.append(ImageOps.exif_transpose(img).convert("RGB"))
                    batch.append(request)
                except (OSError, ValueError, Image.DecompressionBombError) as err:
                    on_result(request, Completion(status="failed", error=f"image: {err}"))
            if batch:
                for request, completion in zip(batch, self.generate(batch, images), strict=True):
                    on_result(request, completion)
            done += len(batch)
        return done

    def generate(self, batch: Sequence[Request], images: Sequence[Image.Image]) -> list[Completion]:
        """Greedy answers of one batch (the images already decoded, RGB)."""
        import time

        import torch

        texts = []
        for request in batch:
            messages = [{"role": "user", "content": [{"type": "image"},
                                                      {"type": "text", "text": request.text}]}]
            texts.append(self.processor.apply_chat_template(messages, add_generation_prompt=True))
        inputs = self.processor(images=images, text=texts, padding=True, return_tensors="pt").to(self.device)
        began = time.monotonic()
        with torch.inference_mode():
            out = self.model.generate(**inputs, do_sample=False, max_new_tokens=self.max_new_tokens,
                                      temperature=None, top_p=None, top_k=None)
        latency = time.monotonic() - began
        width = inputs["input_ids"].shape[1]
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos])
        completions = []
        for row, ids in enumerate(out[:, width:].tolist()):
            text = self.processor.tokenizer.decode(ids, skip_special_tokens=True)
            finished = any(t in eos for t in ids)
            status = "empty" if not text.strip() else ("ok" if finished else "length")
            prompt_tokens = int(inputs["attention_mask"][row].sum())
            completion_tokens = next((i + 1 for i, t in enumerate(ids) if t in eos), len(ids))
            completions.append(Completion(
                status=status, content=text or None, finish_reason="stop" if finished else "length",
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                latency_s=latency / len(batch), attempts=1, endpoint=str(self.path)))
        return completions


# -- text embedders for the relative semantic similarity ----------------------------------------


def load_text_embedder(spec: str, batch_size: int = 64):
    """"hashed" (model-free character n-grams), or a LOCAL folder of a transformers text or
    CLIP/SigLIP model (texts padded to 64 tokens like the paper's SigLIP scorer; models
    without `get_text_features` are mean-pooled). Returns texts -> L2-normalised rows."""
    if spec == "hashed":
        from train.eval.metrics import hashed_ngram_embed

        return hashed_ngram_embed
    if not Path(spec).is_dir():
        raise FileNotFoundError(
            f"text embedder {spec!r}: not 'hashed' and no such local folder (a SigLIP/CLIP or "
            "text model saved with save_pretrained; nothing is downloaded)")
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(spec, local_files_only=True)
    model = AutoModel.from_pretrained(spec, local_files_only=True).eval()

    def embed(texts):
        rows = []
        for start in range(0, len(texts), batch_size):
            chunk = [t or " " for t in texts[start:start + batch_size]]
            inputs = tokenizer(chunk, padding="max_length", truncation=True, max_length=64,
                               return_tensors="pt")
            with torch.inference_mode():
                if hasattr(model, "get_text_features"):
                    features = model.get_text_features(**inputs)
                    features = getattr(features, "pooler_output", features)
                else:
                    hidden = model(**inputs).last_hidden_state
                    mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    features = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            rows.append(torch.nn.functional.normalize(features.float(), dim=-1).numpy())
        return np.concatenate(rows).astype(np.float64)

    return embed
