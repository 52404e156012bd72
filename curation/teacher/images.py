"""Images as the teacher receives them: data URLs, fitted into the recipe's size limits.

    url = image_data_url("bird.jpg", max_side=1024, max_pixels=1024 * 1024)

A JPEG/PNG/WebP that already fits (and needs no EXIF rotation) is sent byte for byte: no
decode, no re-encode. Anything else is rotated upright, resized and sent as JPEG.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path

from PIL import Image, ImageOps

_PASS_THROUGH = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


def image_data_url(path: str | Path, max_side: int, max_pixels: int, quality: int = 90) -> str:
    """A data URL of the image, fitted into max_side x max_side and max_pixels.

    A JPEG/PNG/WebP that already fits (and needs no EXIF rotation) is sent byte for byte:
    no decode, no re-encode. Anything else is rotated upright, resized and sent as JPEG.
    """
    with Image.open(path) as img:
        width, height = img.size
        upright = img.getexif().get(0x0112, 1) == 1
        fits = max(width, height) <= max_side and width * height <= max_pixels
        mime = _PASS_THROUGH.get(img.format or "")
        if mime and fits and upright:
            data = Path(path).read_bytes()
        else:
            img = ImageOps.exif_transpose(img).convert("RGB")
            scale = min(1.0, max_side / max(img.size), math.sqrt(max_pixels / (img.width * img.height)))
            if scale < 1.0:
                size = (max(1, int(img.width * scale)), max(1, int(img.height * scale)))
                img = img.resize(size, Image.Resampling.BICUBIC)
            buffer = io.BytesIO()
            img.save(buffer, format="JPEG", quality=quality)
            data, mime = buffer.getvalue(), "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
