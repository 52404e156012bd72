"""Read a synthetic bird's attributes back from pixels: what the scripted teacher "sees".

Background model from the image border (a plane per channel, so gradients and lighting
cancel), bird mask = pixels far from it, pose from the mask's moments (centroid, principal
axis, area), then the canonical frame of draw.py is sampled: part colours by chromaticity
(robust to lighting and JPEG), tail and bill shapes by template agreement. Anything that does
not look like a synthetic bird (photos, noise, blank images) reads as None.

    >>> import io, numpy as np
    >>> from curation.synthetic.draw import render
    >>> from curation.synthetic.world import world_classes
    >>> info = world_classes(24)[5]
    >>> buf = io.BytesIO(); render(info["attributes"], np.random.default_rng(1), 96).save(buf, "PNG")
    >>> read_image(buf.getvalue()).attributes == info["attributes"]
    True
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass, field
from itertools import product

import numpy as np
from matplotlib.path import Path as _Path
from PIL import Image

from curation.synthetic.draw import BEAKS, TAILS, silhouette
from curation.synthetic.world import (
    BAR_COLOUR,
    BEAK_COLOUR,
    BODY_COLOURS,
    COLOURS,
    SUPER_CATEGORIES,
)

# Canonical sample points of each coloured part, inside it and away from its edges.
POINTS = {
    "body": [(-0.55, 0.28), (-0.3, 0.38), (-0.75, 0.12), (0.9, -0.28), (0.82, -0.36)],
    "crown": [(1.0, -0.76), (0.86, -0.7), (1.14, -0.7), (1.0, -0.66), (0.93, -0.8)],
    "breast": [(0.5, 0.3), (0.35, 0.38), (0.7, 0.2), (0.6, 0.3), (0.45, 0.22)],
    "wing": [(-0.72, -0.1), (0.1, -0.1), (0.0, -0.2), (-0.65, -0.02), (0.05, -0.02)],
    "bar": [(-0.32, -0.1), (-0.32, -0.2), (-0.32, 0.0), (-0.26, -0.1), (-0.38, -0.1)],
}
_STEP = 0.06
COMBOS = list(product(TAILS, BEAKS))


def _inside(poly, pts: np.ndarray) -> np.ndarray:
    return _Path(np.asarray(poly)).contains_points(pts)


def _grid(x0: float, x1: float, y0: float, y1: float, step: float = _STEP) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(x0, x1, step), np.arange(y0, y1, step))
    return np.stack([xs.ravel(), ys.ravel()], 1)


def _silhouettes() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per (tail, beak) combination: area, centroid and principal-axis angle of the canonical
    silhouette, and its inside/outside flags on a grid around the bird."""
    fine = _grid(-2.2, 2.4, -1.2, 1.0, 0.02)
    # A coarse grid around the bird, plus a fine one where the silhouettes differ.
    dense = _grid(-2.3, 2.5, -1.25, 1.05, 0.05)
    flags = np.array([np.any([_inside(poly, dense) for poly in silhouette(t, b)], 0)
                      for t, b in COMBOS])
    coarse = _grid(-2.3, 2.5, -1.25, 1.05, 0.2)
    pts = np.concatenate([coarse, dense[flags.any(0) & ~flags.all(0)]]).astype(np.float32)
    areas, centres, thetas, flags = [], [], [], []
    for tail, beak in COMBOS:
        polys = silhouette(tail, beak)
        inside = np.zeros(len(fine), bool)
        for poly in polys:
            inside |= _inside(poly, fine)
        p = fine[inside]
        c = p.mean(0)
        d = p - c
        areas.append(inside.sum() * 0.02**2)
        centres.append(c)
        thetas.append(0.5 * math.atan2(2 * (d[:, 0] * d[:, 1]).mean(),
                                       (d[:, 0] ** 2 - d[:, 1] ** 2).mean()))
        coarse = np.zeros(len(pts), bool)
        for poly in polys:
            coarse |= _inside(poly, pts)
        flags.append(coarse)
    return (np.array(areas), np.array(centres, np.float32), np.array(thetas), pts,
            np.array(flags))


AREAS, CENTRES, THETAS, GRID, GRID_INSIDE = _silhouettes()
N_COARSE = len(_grid(-2.3, 2.5, -1.25, 1.05, 0.2))  # GRID's first points: the coarse grid
TAIL_ZONE, BEAK_ZONE = GRID[:, 0] < -0.75, GRID[:, 0] > 1.3
BEAK_LUM = sum(BEAK_COLOUR) / 3
THIRDS = np.full(3, 1 / 3, np.float32)  # mean over the channels as a product (fast)
OFF_X = (GRID[None, :, 0] - CENTRES[:, None, 0]).astype(np.float32)  # (combos, points)
OFF_Y = (GRID[None, :, 1] - CENTRES[:, None, 1]).astype(np.float32)


@dataclass
class Reading:
    """What the reader saw: the super-category and every attribute, with the evidence."""

    super_category: str
    attributes: dict[str, str]
    evidence: dict[str, float] = field(default_factory=dict)


def decode(data: bytes) -> tuple[np.ndarray, int, int]:
    """Image bytes (PNG, JPEG, WebP, ...) -> (float32 RGB array, width, height); large images
    are box-reduced to about 100-200 px (reading needs no more). ValueError if unreadable."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            im.draft("RGB", (160, 160))  # JPEG: decode at a reduced scale (fast)
            im = im.convert("RGB")
            factor = min(im.size) // 100
            if factor > 1:
                im = im.reduce(factor)
            return np.asarray(im, dtype=np.float32), width, height
    except Exception as err:  # Pillow raises many types for bad bytes
        raise ValueError(f"not a readable image: {err}") from None


def _chroma(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float32)
    return rgb[..., :2] / (rgb.sum(-1, keepdims=True) + 1e-3)


def _nearest(chroma: np.ndarray, palette: tuple[list[str], np.ndarray]) -> tuple[str, float]:
    names, table = palette
    dist = np.sqrt(((table - chroma) ** 2).sum(1))
    k = int(dist.argmin())
    return names[k], float(dist[k])


PART_CHROMA = (list(COLOURS), _chroma(np.array(list(COLOURS.values()))))
BODY_CHROMA = (list(BODY_COLOURS), _chroma(np.array(list(BODY_COLOURS.values()))))
BAR_CHROMA = _chroma(np.array(BAR_COLOUR))
PART_POINTS = np.array([p for points in POINTS.values() for p in points], np.float32)


@functools.lru_cache(maxsize=64)
def _border(h: int, w: int) -> tuple[np.ndarray, ...]:
    """For an h x w image: border pixel indices, the plane's design matrix on them, its
    pseudo-inverse (float32), and the x and y ramps that span the plane over the image."""
    b = max(1, min(h, w) // 40)
    border = np.zeros((h, w), bool)
    border[:b], border[-b:], border[:, :b], border[:, -b:] = True, True, True, True
    ys, xs = np.nonzero(border)
    design = np.stack([xs / w, ys / h, np.ones(len(xs))], 1).astype(np.float32)
    ramp_x = (np.arange(w, dtype=np.float32) / w)[None, :, None]
    ramp_y = (np.arange(h, dtype=np.float32) / h)[:, None, None]
    return np.flatnonzero(border), design, np.linalg.pinv(design), ramp_x, ramp_y


def _background(img: np.ndarray) -> tuple[np.ndarray, float]:
    """A plane per channel fitted to the image border, and the border's residual noise."""
    h, w = img.shape[:2]
    index, design, pinv, ramp_x, ramp_y = _border(h, w)
    values = img.reshape(-1, 3)[index]
    coef = pinv @ values
    noise = float((values - design @ coef).std())
    return ramp_x * coef[0] + ramp_y * coef[1] + coef[2], noise


def _project(cx: float, cy: float, thetas: np.ndarray, scales: np.ndarray, h: int,
             w: int) -> tuple[np.ndarray, np.ndarray]:
    """GRID placed in the image under each combination's pose: (inside image, flat pixel index)."""
    sc, ss = (scales * np.cos(thetas))[:, None], (scales * np.sin(thetas))[:, None]
    xi = (cx + sc * OFF_X - ss * OFF_Y).astype(np.int32)
    yi = (cy + ss * OFF_X + sc * OFF_Y).astype(np.int32)
    ok = (xi.view(np.uint32) < w) & (yi.view(np.uint32) < h)  # negatives wrap: out
    return ok, np.where(ok, yi * w + xi, 0)


def _beak_scores(img: np.ndarray, bg: np.ndarray, ok: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """How well each combination's bill explains the dark pixels in front of the head.

    By darkness, not by the mask: JPEG halos around a dark bill widen the mask. Balanced: a
    thin bill counts as much as the background around it."""
    zone = flat[:, BEAK_ZONE]
    lum, bg_lum = img.reshape(-1, 3)[zone] @ THIRDS, bg.reshape(-1, 3)[zone] @ THIRDS
    dark = np.clip((bg_lum - lum) / np.maximum(bg_lum - BEAK_LUM, 1), 0, 1)
    expect, valid = GRID_INSIDE[:, BEAK_ZONE], ok[:, BEAK_ZONE]
    inside, outside = expect & valid, ~expect & valid
    return ((dark * inside).sum(1) / np.maximum(inside.sum(1), 1)
            - (dark * outside).sum(1) / np.maximum(outside.sum(1), 1))


_STEPS = np.array([(dx, dy, dt, ds) for dx in (-0.7, 0, 0.7) for dy in (-0.7, 0, 0.7)
                   for dt in (-0.06, 0, 0.06) for ds in (0.95, 1, 1.05)], np.float32)


def _refine(mask: np.ndarray, combo: int, cx: float, cy: float, theta: float,
            scale: float) -> tuple[float, float, float, float]:
    """The pose nudge (sub-pixel shift, a few degrees, a few percent) whose silhouette agrees
    best with the mask: moments alone drift when JPEG or resizing blurs the edges."""
    h, w = mask.shape
    t = theta + _STEPS[:, 2:3]
    s = scale * _STEPS[:, 3:4]
    ox, oy = OFF_X[combo][None, :], OFF_Y[combo][None, :]
    xi = (cx + _STEPS[:, 0:1] + s * (np.cos(t) * ox - np.sin(t) * oy)).astype(np.int32)
    yi = (cy + _STEPS[:, 1:2] + s * (np.sin(t) * ox + np.cos(t) * oy)).astype(np.int32)
    ok = (xi.view(np.uint32) < w) & (yi.view(np.uint32) < h)
    hits = ((mask.ravel()[np.where(ok, yi * w + xi, 0)] == GRID_INSIDE[combo]) & ok).sum(1)
    dx, dy, dt, ds = _STEPS[int(hits.argmax())]
    return float(dx), float(dy), float(dt), float(ds)


def read_image(data: bytes | np.ndarray) -> Reading | None:
    """The bird's super-category and attributes, or None when the image shows no synthetic bird."""
    img = decode(data)[0] if isinstance(data, bytes | bytearray) else np.asarray(data, np.float32)
    if img.ndim != 3 or min(img.shape[:2]) < 24:
        return None
    h, w = img.shape[:2]
    bg, noise = _background(img)
    if noise > 20:
        return None  # a textured border: a photo or noise, not our plain background
    diff = np.abs(img - bg)
    # max over the channels without a (slow) reduction over a length-3 axis
    mask = np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2]) > max(30.0, 5 * noise)
    frac = float(mask.mean())
    if not 0.03 < frac < 0.6:
        return None

    # Pose from the mask's moments, once per (tail, beak) silhouette; the silhouette whose
    # pose explains the mask best gives the tail and bill shapes and the frame to sample.
    my, mx = np.nonzero(mask)
    cx, cy = mx.mean() + 0.5, my.mean() + 0.5
    dx, dy = mx + 0.5 - cx, my + 0.5 - cy
    theta_img = 0.5 * math.atan2(2 * (dx * dy).mean(), (dx**2 - dy**2).mean())
    thetas = theta_img - THETAS  # (combos,)
    scales = np.sqrt(len(mx) / AREAS)
    ok, flat = _project(cx, cy, thetas, scales, h, w)
    hits = (mask.ravel()[flat] == GRID_INSIDE) & ok
    tail_score = hits[:, TAIL_ZONE].sum(1) / np.maximum(ok[:, TAIL_ZONE].sum(1), 1)
    tail = COMBOS[int(tail_score.argmax())][0]
    same_tail = [k for k, c in enumerate(COMBOS) if c[0] == tail]
    first_look = _beak_scores(img, bg, ok, flat)
    guess = max(same_tail, key=lambda k: first_look[k])
    shape = hits[guess, :N_COARSE].sum() / max(ok[guess, :N_COARSE].sum(), 1)
    if shape < 0.9:
        return None  # the mask is not bird-shaped

    # Nudge the pose, then judge the bill again under it.
    dx, dy, dt, ds = _refine(mask, guess, cx, cy, float(thetas[guess]), float(scales[guess]))
    cx, cy, thetas, scales = cx + dx, cy + dy, thetas + dt, scales * ds
    ok, flat = _project(cx, cy, thetas, scales, h, w)
    beak_score = _beak_scores(img, bg, ok, flat)
    best = max(same_tail, key=lambda k: beak_score[k])
    beak = COMBOS[best][1]
    theta, scale = float(thetas[best]), float(scales[best])

    # Every part's sample points in one batch; the median colour of each part.
    q = PART_POINTS - CENTRES[best]
    cos1, sin1 = math.cos(theta), math.sin(theta)
    px = np.floor(cx + scale * (q[:, 0] * cos1 - q[:, 1] * sin1)).astype(int)
    py = np.floor(cy + scale * (q[:, 0] * sin1 + q[:, 1] * cos1)).astype(int)
    rgb = img[np.clip(py, 0, h - 1), np.clip(px, 0, w - 1)].reshape(len(POINTS), -1, 3)
    colours = dict(zip(POINTS, np.median(rgb, axis=1), strict=True))
    chroma = {part: _chroma(c) for part, c in colours.items()}
    body, d_body = _nearest(chroma["body"], BODY_CHROMA)
    kinds = [k for k, spec in SUPER_CATEGORIES.items() if spec["fixed"]["body_colour"] == body]
    crown, d_crown = _nearest(chroma["crown"], PART_CHROMA)
    breast, d_breast = _nearest(chroma["breast"], PART_CHROMA)
    wing, d_wing = _nearest(chroma["wing"], PART_CHROMA)
    barred = np.linalg.norm(chroma["bar"] - BAR_CHROMA) < np.linalg.norm(chroma["bar"] - chroma["wing"])
    if max(d_body, d_crown, d_breast, d_wing) > 0.2 or not kinds:
        return None  # colours of no part of any synthetic bird

    attributes = {
        "body_colour": body,
        "crown_colour": crown,
        "wing_colour": wing,
        "breast_colour": breast,
        "wing_bars": "barred" if barred else "plain",
        "tail_shape": tail,
        "beak_shape": beak,
    }
    evidence = {"silhouette_agreement": float(shape), "mask_fraction": frac,
                "background_noise": noise, "colour_distance": max(d_body, d_crown, d_breast, d_wing)}
    return Reading(kinds[0], attributes, evidence)
