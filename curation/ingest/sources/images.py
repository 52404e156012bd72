"""The image inspector of the ingest stage: sha256, size, and a full decode, per file.

    >>> inspect("/no/such/file.jpg", max_pixels=10_000).reason
    'missing_file'

`inspect(path, max_pixels)` never raises: a usable image comes back with reason "" and its
sha256 (of the file bytes), width and height (as stored, before any EXIF rotation); anything
else with a reason code and a detail. It runs in the worker processes of curation/ingest/stage.py,
so this module imports nothing heavy.

What later stages need, and so what is accepted: 8-bit images that `Image.convert("RGB")`
turns into what a person sees — modes 1, L, P, RGB, and alpha modes (RGBA, LA, PA, P with
transparency) whose every pixel is opaque. Converting is left to those stages; ingest keeps
the file untouched. Refused, with reason `unsupported_mode`:
- CMYK (and YCbCr, LAB, HSV): convert("RGB") ignores the colour profile, colours come out wrong;
- 16/32-bit samples (I;16*, I, F): convert("RGB") clips them, most images turn white;
- real transparency (RGBA/LA with alpha < 255, palette with a transparent index in use):
  flattening shows whatever colour hides under the transparent pixels, so the teacher and
  the model would see a different picture than the user did.

Other reason codes: missing_file, empty_file, unreadable (not an image, or a read error),
truncated (decoding stops early), too_many_pixels (width x height over `max_pixels`, found
from the header before anything is decoded: a decompression bomb is never expanded).
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

IN_MEMORY_BYTES = 32 << 20  # larger files are hashed in chunks and decoded from disk
SUPPORTED_MODES = frozenset({"1", "L", "P", "RGB", "RGBA", "LA", "PA"})
ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})

_MODE_WHY = {
    "CMYK": "CMYK: converting to RGB ignores the colour profile",
    "YCbCr": "YCbCr image: later stages expect RGB/L",
    "LAB": "LAB image: later stages expect RGB/L",
    "HSV": "HSV image: later stages expect RGB/L",
    "I": "32-bit integer samples: later stages expect 8-bit",
    "F": "32-bit float samples: later stages expect 8-bit",
}


@dataclass(frozen=True)
class Inspection:
    reason: str = ""  # "" when the image is usable
    detail: str = ""
    sha256: str = ""
    width: int = 0
    height: int = 0

    @property
    def ok(self) -> bool:
        return not self.reason


def _mode_problem(mode: str) -> str:
    if mode in SUPPORTED_MODES:
        return ""
    if mode.startswith("I;16"):
        return f"16-bit samples ({mode}): later stages expect 8-bit"
    return _MODE_WHY.get(mode, f"mode {mode}: later stages expect RGB, L or P")


def _transparent(image: Image.Image) -> bool:
    """Does any pixel have alpha < 255 (the image is already decoded)?"""
    if image.mode in ALPHA_MODES:
        return image.getchannel("A").getextrema()[0] < 255
    if image.mode == "P" and "transparency" in image.info:
        return image.convert("RGBA").getchannel("A").getextrema()[0] < 255
    return False


def inspect(path: str, max_pixels: int) -> Inspection:
    """Read, hash and fully decode one image file; never raises."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # open() on a pipe would wait forever
            return Inspection("unreadable", "not a regular file (a folder, pipe or device)")
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size <= IN_MEMORY_BYTES:  # the usual case: one read serves hash and decoder
                data = f.read()
                source: io.BytesIO | str = io.BytesIO(data)
                digest = hashlib.sha256(data)
            else:  # a huge file is hashed in chunks, never held in memory whole
                digest = hashlib.sha256()
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
                source = path
    except FileNotFoundError:
        return Inspection("missing_file", "no such file")
    except OSError as err:
        return Inspection("unreadable", f"cannot read the file: {err.strerror or err}")
    if not size:
        return Inspection("empty_file", "the file has 0 bytes")
    sha256 = digest.hexdigest()

    def bad(reason: str, detail: str, width: int = 0, height: int = 0) -> Inspection:
        return Inspection(reason, detail, sha256, width, height)

    # PIL's own bomb guard (a module global) is set to our limit while we open the header;
    # we check the limit ourselves too, so PIL's warning band below 2x the limit is covered.
    saved = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = max_pixels
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(source)
    except Image.DecompressionBombError as err:
        return bad("too_many_pixels", f"header refused before decoding: {err}")
    except UnidentifiedImageError:
        return bad("unreadable", "not an image file PIL can identify")
    except Exception as err:  # any decoder error on a header means the file is unusable
        reason = "truncated" if "truncat" in str(err).lower() else "unreadable"
        return bad(reason, f"{type(err).__name__}: {err}")
    finally:
        Image.MAX_IMAGE_PIXELS = saved

    with image:
        width, height = image.size
        if width * height > max_pixels:
            return bad("too_many_pixels", f"{width}x{height} = {width * height} pixels "
                       f"> max_pixels {max_pixels}", width, height)
        problem = _mode_problem(image.mode)
        if problem:
            return bad("unsupported_mode", problem, width, height)
        try:
            image.load()
        except EOFError as err:
            return bad("truncated", f"decoding stopped early: {err or 'end of file'}", width, height)
        except Exception as err:  # PIL reports truncation and corruption as OSError & co
            text = str(err)
            reason = "truncated" if "truncat" in text.lower() else "unreadable"
            return bad(reason, f"{type(err).__name__}: {text}", width, height)
        if _transparent(image):
            return bad("unsupported_mode", f"{image.mode} image with transparent pixels: "
                       "flattening to RGB would show hidden colours", width, height)
    return Inspection("", "", sha256, width, height)


def inspect_many(paths: list[str], max_pixels: int) -> list[Inspection]:
    """A batch for one worker task (fewer, larger tasks keep the process pool cheap)."""
    return [inspect(p, max_pixels) for p in paths]
