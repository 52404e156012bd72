"""Image embeddings for measuring which classes look alike (triplet negatives, closed-world options).

Two embedders, one shape: a function from image paths to an (n, d) float32 array of
L2-normalised rows, so cosine similarity is a dot product.

- `pixel_embed`: model-free. A colour histogram (HSV, 12x4x4 bins, square-rooted so that the
  dot product is the Bhattacharyya coefficient) of the foreground (pixels weighted by how
  far they are from the border's median colour), next to a 12x12 RGB thumbnail of the
  foreground's box (shape at a glance). Fast, no weights, good enough to rank "which class
  looks like this" on object-centric photos.
- `ModelEmbedder(path)`: any `transformers` image model or CLIP-like model saved in a LOCAL
  folder (never downloaded): CLIP-like models use `get_image_features`, others the pooled
  output or the mean of the last hidden state.

    >>> from PIL import Image
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> for name, colour in (("red1", (250, 0, 0)), ("red2", (230, 20, 10)), ("blue", (0, 0, 250))):
    ...     Image.new("RGB", (32, 32), colour).save(os.path.join(d, name + ".png"))
    >>> e = pixel_embed([os.path.join(d, n + ".png") for n in ("red1", "red2", "blue")])
    >>> bool(e[0] @ e[1] > e[0] @ e[2])
    True
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)

Embedder = Callable[[Sequence[str]], np.ndarray]

THUMB = 12
HIST_BINS = (12, 4, 4)  # hue, saturation, value
HIST_WEIGHT = 0.7  # the histogram carries most of the similarity; the thumbnail breaks ties
SIDE = 64


def _foreground(rgb: np.ndarray) -> np.ndarray:
    """Per-pixel weight of "object, not background" (0..1), for object-centric photos.

    The background colour is the median of the border pixels; a pixel counts as much as it
    differs from it. Cheap, and it keeps a sky or a wall from dominating the histogram.
    """
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    distance = np.linalg.norm(rgb - np.median(border, axis=0), axis=-1)
    return np.clip(distance / 60.0, 0.0, 1.0)


def pixel_features(image: Image.Image) -> np.ndarray:
    """The model-free embedding of one image (not yet normalised across the batch).

    A foreground-weighted HSV histogram (square-rooted) next to a thumbnail of the
    foreground's bounding box (so the object's place in the frame does not matter).
    """
    image.draft("RGB", (SIDE * 2, SIDE * 2))  # JPEG: decode at reduced size, much faster
    small = image.convert("RGB").resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    rgb = np.asarray(small, dtype=np.float64)
    weight = _foreground(rgb)
    if weight.sum() < 1e-6:  # a flat image: everything is foreground
        weight = np.ones_like(weight)
    hsv = np.asarray(small.convert("HSV"), dtype=np.int32)
    h = hsv[..., 0] * HIST_BINS[0] // 256
    s = hsv[..., 1] * HIST_BINS[1] // 256
    v = hsv[..., 2] * HIST_BINS[2] // 256
    index = (h * HIST_BINS[1] + s) * HIST_BINS[2] + v
    hist = np.bincount(index.ravel(), weights=weight.ravel(), minlength=int(np.prod(HIST_BINS)))
    hist = np.sqrt(hist / hist.sum())
    rows = np.flatnonzero(weight.max(axis=1) > 0.5)
    cols = np.flatnonzero(weight.max(axis=0) > 0.5)
    box = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1) if len(rows) and len(cols) else None
    thumb = np.asarray(small.resize((THUMB, THUMB), Image.Resampling.BOX, box=box), np.float64)
    thumb = thumb.ravel() / 255.0
    thumb = thumb / max(np.linalg.norm(thumb), 1e-12)
    return np.concatenate([HIST_WEIGHT * hist, (1 - HIST_WEIGHT) * thumb])


def _normalise(rows: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return (rows / np.maximum(norms, 1e-12)).astype(np.float32)


def pixel_embed(paths: Sequence[str]) -> np.ndarray:
    """Model-free embeddings of image files, one L2-normalised row per path."""
    rows = []
    for path in paths:
        with Image.open(path) as image:
            rows.append(pixel_features(image))
    return _normalise(np.stack(rows)) if rows else np.zeros((0, 1), np.float32)


class ModelEmbedder:
    """Image embeddings from a transformers model in a local folder (no downloads).

    Imports torch/transformers only when built, so model-free runs never pay for them.
    """

    def __init__(self, path: str | Path, batch_size: int = 16):
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(
                f"triplet model {path} is not a local folder: save the model with "
                "save_pretrained() (weights + config + image processor) and pass that folder"
            )
        import torch
        from transformers import AutoImageProcessor, AutoModel

        self.torch = torch
        self.processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval()
        self.batch_size = batch_size
        self.name = path.name

    def _features(self, pixel_values):
        model = self.model
        if hasattr(model, "get_image_features"):  # CLIP, SigLIP and friends
            out = model.get_image_features(pixel_values=pixel_values)
            return out if isinstance(out, self.torch.Tensor) else out.pooler_output
        out = model(pixel_values=pixel_values)
        pooled = getattr(out, "pooler_output", None)
        if pooled is not None and pooled.ndim == 2:
            return pooled
        hidden = out.last_hidden_state
        return hidden.mean(dim=1) if hidden.ndim == 3 else hidden.flatten(1)

    def __call__(self, paths: Sequence[str]) -> np.ndarray:
        rows = []
        with self.torch.no_grad():
            for start in range(0, len(paths), self.batch_size):
                images = []
                for path in paths[start : start + self.batch_size]:
                    with Image.open(path) as image:
                        images.append(image.convert("RGB"))
                batch = self.processor(images=images, return_tensors="pt")
                rows.append(self._features(batch["pixel_values"]).float().numpy())
        return _normalise(np.concatenate(rows)) if rows else np.zeros((0, 1), np.float32)


def class_means(
    paths_by_class: Mapping[Hashable, Sequence[str]], embed: Embedder
) -> dict[Hashable, np.ndarray]:
    """The mean embedding of each class (re-normalised), from one batched embedding pass.

    Unreadable images are skipped with a warning; a class with none left is left out.
    """
    keys, paths = [], []
    for key, class_paths in paths_by_class.items():
        for path in class_paths:
            if Path(path).is_file():
                keys.append(key)
                paths.append(str(path))
            else:
                log.warning("embedding: image %s is missing; skipped", path)
    if not paths:
        return {}
    vectors = embed(paths)
    grouped: dict[Hashable, list[np.ndarray]] = {}
    for key, vector in zip(keys, vectors, strict=True):
        grouped.setdefault(key, []).append(vector)
    return {key: _normalise(np.mean(v, axis=0, keepdims=True))[0] for key, v in grouped.items()}
