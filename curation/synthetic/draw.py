"""The canonical synthetic bird and its rendering with nuisance variation (Pillow + numpy).

The bird lives in a canonical frame (x to the right, y down, unit = half the body length,
body centred at the origin, facing right). `parts(attributes)` returns its polygons back to
front; `render(attributes, rng, size)` places them in an image with a random position,
scale, small rotation, background colour, gradient, lighting and noise. read.py samples the
same canonical frame to read the attributes back.

    >>> import numpy as np
    >>> from curation.synthetic.world import world_classes
    >>> render(world_classes(6)[0]["attributes"], np.random.default_rng(0), 64).size
    (64, 64)
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
from PIL import Image, ImageDraw

from curation.synthetic.palette import BAR_COLOUR, BEAK_COLOUR, BODY_COLOURS, COLOURS

HEAD = (1.0, -0.5, 0.45)  # centre x, centre y, radius
WING = (-0.25, -0.1, 0.62, 0.27)  # centre x, centre y, radius x, radius y
BAR_X = (-0.48, -0.16)  # the wing bar spans these x
TAILS: dict[str, list[tuple[float, float]]] = {
    "rounded": [(-0.8, -0.25), (-1.45, -0.5), (-1.72, -0.28), (-1.8, 0.0), (-1.72, 0.28),
                (-1.45, 0.5), (-0.8, 0.25)],
    "pointed": [(-0.8, -0.3), (-1.9, 0.0), (-0.8, 0.3)],
    "forked": [(-0.8, -0.22), (-1.85, -0.55), (-1.4, 0.0), (-1.85, 0.55), (-0.8, 0.22)],
}
BEAKS: dict[str, list[tuple[float, float]]] = {
    "stubby": [(1.34, -0.78), (1.78, -0.5), (1.34, -0.22)],
    "long": [(1.38, -0.66), (2.3, -0.58), (2.3, -0.42), (1.38, -0.34)],
    "hooked": [(1.38, -0.66), (1.85, -0.64), (2.02, -0.45), (1.98, -0.08), (1.82, -0.2),
               (1.76, -0.42), (1.38, -0.36)],
}


def ellipse(cx: float, cy: float, rx: float, ry: float, a0: float = 0, a1: float = 360,
            steps: int = 48) -> list[tuple[float, float]]:
    angles = np.radians(np.linspace(a0, a1, steps))
    return list(zip(cx + rx * np.cos(angles), cy + ry * np.sin(angles), strict=True))


def _wing_bar() -> list[tuple[float, float]]:
    cx, cy, rx, ry = WING
    xs = np.linspace(*BAR_X, 12)
    half = ry * np.sqrt(np.clip(1 - ((xs - cx) / rx) ** 2, 0, 1))
    return list(zip(xs, cy - half, strict=True)) + list(zip(xs[::-1], (cy + half)[::-1],
                                                            strict=True))


def parts(attributes: dict[str, str]) -> list[tuple[list[tuple[float, float]], tuple]]:
    """The bird's polygons in the canonical frame with their RGB colours, back to front."""
    body = BODY_COLOURS[attributes["body_colour"]]
    hx, hy, hr = HEAD
    shapes = [
        (TAILS[attributes["tail_shape"]], body),
        (ellipse(0, 0, 1.0, 0.55), body),
        ([(0.08, 0.06), *ellipse(0, 0, 1.0, 0.55, 8, 105, 24)], COLOURS[attributes["breast_colour"]]),
        (ellipse(*WING), COLOURS[attributes["wing_colour"]]),
    ]
    if attributes["wing_bars"] == "barred":
        shapes.append((_wing_bar(), BAR_COLOUR))
    shapes += [
        (ellipse(hx, hy, hr, hr), body),
        (ellipse(hx, hy, hr, hr, 180, 360, 24), COLOURS[attributes["crown_colour"]]),
        (BEAKS[attributes["beak_shape"]], BEAK_COLOUR),
        (ellipse(hx + 0.18, hy + 0.1, 0.07, 0.07, steps=12), BEAK_COLOUR),
    ]
    return shapes


def silhouette(tail: str, beak: str) -> list[list[tuple[float, float]]]:
    """The outline polygons of a bird (for reading: what is bird, what is background)."""
    hx, hy, hr = HEAD
    return [TAILS[tail], ellipse(0, 0, 1.0, 0.55), ellipse(hx, hy, hr, hr), BEAKS[beak]]


def background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A muted sky/water-toned field with a linear gradient (float32 H x W x 3, 0..255)."""
    hue = rng.uniform(170, 260) / 360
    rgb = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.1, 0.3), rng.uniform(0.4, 0.62))) * 255
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    angle = rng.uniform(0, 2 * math.pi)
    ramp = 1 + rng.uniform(0.0, 0.16) * (xx * math.cos(angle) + yy * math.sin(angle))
    return (rgb[None, None, :] * ramp[..., None]).astype(np.float32)


def render(attributes: dict[str, str], rng: np.random.Generator, size: int) -> Image.Image:
    """One image of a class: the bird with random pose over a random background."""
    scale = size * rng.uniform(0.16, 0.19)
    theta = math.radians(rng.uniform(-12, 12))
    cos, sin = math.cos(theta), math.sin(theta)
    shapes = parts(attributes)
    pts = np.array([p for poly, _ in shapes for p in poly])
    rot = np.stack([pts[:, 0] * cos - pts[:, 1] * sin, pts[:, 0] * sin + pts[:, 1] * cos], 1)
    rot *= scale
    margin = 0.04 * size
    lo, hi = rot.min(0), rot.max(0)
    room = np.maximum(size - 2 * margin - (hi - lo), 0)
    offset = margin - lo + rng.uniform(0, 1, 2) * room

    ss = 3  # supersampling for smooth edges
    layer = Image.new("RGBA", (size * ss, size * ss), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for poly, colour in shapes:
        p = np.asarray(poly)
        xy = np.stack([p[:, 0] * cos - p[:, 1] * sin, p[:, 0] * sin + p[:, 1] * cos], 1)
        xy = (xy * scale + offset) * ss
        draw.polygon([tuple(q) for q in xy.tolist()], fill=(*colour, 255))
    layer = layer.resize((size, size), Image.Resampling.BOX)

    bird = np.asarray(layer, dtype=np.float32)
    alpha = bird[..., 3:4] / 255
    img = background(rng, size) * (1 - alpha) + bird[..., :3] * alpha
    gain = rng.uniform(0.86, 1.14) * rng.uniform(0.96, 1.04, 3)  # lighting and colour cast
    img = img * gain[None, None, :] + rng.normal(0, rng.uniform(1.5, 6.0), img.shape)
    return Image.fromarray(np.clip(img + 0.5, 0, 255).astype(np.uint8), "RGB")
