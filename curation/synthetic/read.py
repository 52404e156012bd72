"""Read a synthetic bird's attributes back from pixels: what the scripted teacher "sees".

Background model from the image border (a plane per channel, so gradients and lighting
cancel), bird mask = pixels far from it, pose from the mask's moments (centroid, principal
axis, area; the scale then corrected by template agreement, as blur inflates the area), then
the canonical frame of draw.py is sampled: part colours by chromaticity (robust to lighting
and JPEG), tail and bill shapes by template agreement. Anything that does not look like a
synthetic bird (photos, noise, blank images) reads as None.

Speed matters (the scripted teacher reads every new image it is sent; a 64 px image takes
about 0.2 ms in a loop, plus 0.1 ms decoding): a few dozen numpy calls on whole arrays, all
that depends only on the image size cached, the template grid pre-placed in each
silhouette's moment frame.

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
from curation.synthetic.palette import BAR_COLOUR, BEAK_COLOUR, BODY_COLOURS, COLOURS
from curation.synthetic.world import SUPER_CATEGORIES

# Canonical sample points of each coloured part, inside it and away from its edges.
POINTS = {
    "body": [(-0.55, 0.28), (-0.3, 0.38), (-0.75, 0.12), (0.9, -0.28), (0.82, -0.36)],
    "crown": [(1.0, -0.76), (0.86, -0.7), (1.14, -0.7), (1.0, -0.66), (0.93, -0.8)],
    "breast": [(0.5, 0.3), (0.35, 0.38), (0.7, 0.2), (0.6, 0.3), (0.45, 0.22)],
    "wing": [(-0.72, -0.1), (0.1, -0.1), (0.0, -0.2), (-0.65, -0.02), (0.05, -0.02)],
    "bar": [(-0.32, -0.1), (-0.32, -0.2), (-0.32, 0.0), (-0.26, -0.1), (-0.38, -0.1)],
}
_STEP = 0.06
COMBOS = list(product(TAILS, BEAKS))  # tail-major: one tail's combinations are adjacent


def _inside(poly, pts: np.ndarray) -> np.ndarray:
    return _Path(np.asarray(poly)).contains_points(pts)


def _grid(x0: float, x1: float, y0: float, y1: float, step: float = _STEP) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(x0, x1, step), np.arange(y0, y1, step))
    return np.stack([xs.ravel(), ys.ravel()], 1)


def _silhouettes() -> tuple[np.ndarray, ...]:
    """Per (tail, beak) combination: area, centroid and principal-axis angle of the canonical
    silhouette, and its inside/outside flags on a grid around the bird (sorted by x), with the
    flags of the grid's coarse points."""
    fine = _grid(-2.2, 2.4, -1.2, 1.0, 0.02)
    # A coarse grid around the bird, plus a fine one where the silhouettes differ.
    dense = _grid(-2.3, 2.5, -1.25, 1.05, 0.05)
    flags = np.array([np.any([_inside(poly, dense) for poly in silhouette(t, b)], 0)
                      for t, b in COMBOS])
    coarse = _grid(-2.3, 2.5, -1.25, 1.05, 0.2)
    pts = np.concatenate([coarse, dense[flags.any(0) & ~flags.all(0)]]).astype(np.float32)
    order = np.argsort(pts[:, 0], kind="stable")
    pts, is_coarse = pts[order], (np.arange(len(pts)) < len(coarse))[order]
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
            np.array(flags), is_coarse)


AREAS, CENTRES, THETAS, GRID, GRID_INSIDE, COARSE = _silhouettes()
TAIL_ZONE = GRID[:, 0] < -0.75
BEAK = slice(int((GRID[:, 0] <= 1.3).sum()), len(GRID))  # GRID is sorted by x: a slice
# Point counts per row as one product: columns = the tail zone, the coarse grid (the shape).
ZONES = np.stack([TAIL_ZONE, COARSE], 1).astype(np.float32)


def _normalised(points: np.ndarray) -> np.ndarray:
    """Canonical points (n x 2) in each silhouette's moment frame: (combos, x/y, n) relative
    to its centroid, rotated by minus its principal-axis angle, divided by the root of its
    area. One 2 x 2 matrix then places them in an image for every combination at once: the
    root of the mask's area times the rotation by the mask's principal axis."""
    cos, sin = np.cos(THETAS)[:, None, None], np.sin(THETAS)[:, None, None]
    d = (points[None] - CENTRES[:, None]).transpose(0, 2, 1)  # (combos, x/y, n)
    rotated = np.concatenate([cos * d[:, :1] + sin * d[:, 1:], cos * d[:, 1:] - sin * d[:, :1]], 1)
    return np.ascontiguousarray(rotated / np.sqrt(AREAS)[:, None, None], np.float32)


GRID_FRAME = _normalised(GRID)


def _bill_weights(inside: np.ndarray) -> np.ndarray:
    """Per combination, weights over the beak zone whose product with the darkness there is
    the mean darkness inside the bill minus the mean darkness around it. Balanced: a thin
    bill counts as much as the background around it (points off the image are not dark)."""
    return (inside / inside.sum(1, keepdims=True)
            - ~inside / (~inside).sum(1, keepdims=True)).astype(np.float32)


BEAK_FRAME = np.ascontiguousarray(GRID_FRAME[:, :, BEAK])
BEAK_WEIGHTS = _bill_weights(GRID_INSIDE[:, BEAK])
BEAK_LUM = sum(BEAK_COLOUR) / 3
THIRDS = np.full(3, 1 / 3, np.float32)  # mean over the channels as a product (fast)
OUT = 2  # the padded mask's value off the image: neither bird (1) nor background (0)


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
            if im.mode != "RGB":  # convert() copies even when the mode already fits
                im = im.convert("RGB")
            factor = min(im.size) // 100
            if factor > 1:
                im = im.reduce(factor)
            return np.asarray(im).astype(np.float32), width, height
    except Exception as err:  # Pillow raises many types for bad bytes
        raise ValueError(f"not a readable image: {err}") from None


def _chroma(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float32)
    return rgb[..., :2] / (rgb.sum(-1, keepdims=True) + 1e-3)


def _palette(colours: dict[str, tuple[int, int, int]]) -> dict[str, list[float]]:
    return dict(zip(colours, _chroma(np.array(list(colours.values()))).tolist(), strict=True))


def _nearest(chroma: list[float], palette: dict[str, list[float]]) -> tuple[str, float]:
    """The palette colour nearest in chromaticity, and its distance (plain Python: a handful
    of numbers, where numpy's per-call overhead would dominate)."""
    distance, name = min((math.dist(chroma, ref), name) for name, ref in palette.items())
    return name, distance


PART_CHROMA, BODY_CHROMA = _palette(COLOURS), _palette(BODY_COLOURS)
BAR_CHROMA = _chroma(np.array(BAR_COLOUR)).tolist()
PART_POINTS = np.array([p for points in POINTS.values() for p in points], np.float32)
PART_FRAME = _normalised(PART_POINTS)


@dataclass(frozen=True)
class _Frame:
    """What depends only on the image size (cached): the background fit on the border, the
    plane's design over the whole image, and the mask's moment weights."""

    border: np.ndarray  # flat indices of the border pixels
    design: np.ndarray  # (border pixels, 3): x, y, 1
    fit: np.ndarray  # the design's pseudo-inverse: plane coefficients = fit @ border values
    plane: np.ndarray  # (h * w, 3): x, y, 1 for every pixel
    moments: np.ndarray  # (6, h * w): 1, u, v, u^2, v^2, uv (u, v: pixel centres - image centre)


@functools.lru_cache(maxsize=8)  # a 200 x 200 image's frame takes 1.4 MB
def _frame(h: int, w: int) -> _Frame:
    """The _Frame of an h x w image, computed once per size."""
    b = max(1, min(h, w) // 40)
    border = np.zeros((h, w), bool)
    border[:b], border[-b:], border[:, :b], border[:, -b:] = True, True, True, True
    ys, xs = np.mgrid[0:h, 0:w]
    plane = np.stack([xs.ravel() / w, ys.ravel() / h, np.ones(h * w)], 1).astype(np.float32)
    index = np.flatnonzero(border)
    u, v = xs.ravel() + 0.5 - w / 2, ys.ravel() + 0.5 - h / 2  # centred: float32 sums are exact enough
    moments = np.stack([np.ones(h * w), u, v, u * u, v * v, u * v]).astype(np.float32)
    return _Frame(index, plane[index], np.linalg.pinv(plane[index]), plane, moments)


def _background(img: np.ndarray, frame: _Frame) -> tuple[np.ndarray, float]:
    """A plane per channel fitted to the image border, and the border's residual noise."""
    values = img.reshape(-1, 3)[frame.border]
    coef = frame.fit @ values
    residual = values - frame.design @ coef  # zero mean (the fit has an offset): rms = std
    noise = math.sqrt(float(np.vdot(residual, residual)) / residual.size)
    return (frame.plane @ coef).reshape(img.shape), noise


def _pad(a: np.ndarray, value: float, side: int) -> np.ndarray:
    """a (h x w) inside a side x side square filled with value (flat), shifted by one pixel:
    projected points off the image are clipped onto that frame."""
    out = np.full((side, side), value, a.dtype)
    out[1 : a.shape[0] + 1, 1 : a.shape[1] + 1] = a
    return out.ravel()


def _project(pose: np.ndarray, cx: float, cy: float, frame: np.ndarray, side: int) -> np.ndarray:
    """Points in moment frames (rows x 2 x n) placed in the image by the pose matrix (2 x 2,
    or one per row) around (cx, cy): flat indices into a square of `side` padded by _pad."""
    # +1: the padding. Clipped onto the frame, then truncated: flooring, as all are >= 0.
    xy = np.clip(pose @ frame + np.array([[cx + 1], [cy + 1]], np.float32), 0, side - 1)
    xy = xy.astype(np.int32)
    return xy[..., 1, :] * side + xy[..., 0, :]


# Scale factors tried around the moments' scale, nearest to 1 first (ties keep it).
_SCALES = np.array([1, 0.97, 1.03, 0.94, 1.06, 0.91, 1.09], np.float32)


def _rescale(padded: np.ndarray, combo: int, pose: np.ndarray, cx: float, cy: float,
             side: int) -> float:
    """The scale factor whose silhouette agrees best with the mask (padded). The mask's area
    overestimates the bird when JPEG halos or resizing blur its edges; centroid and axis
    are not biased that way (searching them too costs 9x and reads worse)."""
    flat = _project(_SCALES[:, None, None] * pose, cx, cy, GRID_FRAME[combo], side)
    hits = (padded.take(flat) == GRID_INSIDE[combo]).sum(1)
    return float(_SCALES[int(hits.argmax())])


def _median(rgb: np.ndarray) -> np.ndarray:
    """Median over axis 1 of an odd count (np.median's overhead dominates tiny arrays)."""
    return np.sort(rgb, axis=1)[:, rgb.shape[1] // 2]


def read_image(data: bytes | np.ndarray) -> Reading | None:
    """The bird's super-category and attributes, or None when the image shows no synthetic bird."""
    img = decode(data)[0] if isinstance(data, bytes | bytearray) else np.asarray(data, np.float32)
    if img.ndim != 3 or min(img.shape[:2]) < 24:
        return None
    h, w = img.shape[:2]
    frame = _frame(h, w)
    bg, noise = _background(img, frame)
    if noise > 20:
        return None  # a textured border: a photo or noise, not our plain background
    change = img - bg
    diff = np.abs(change)
    # max over the channels without a (slow) reduction over a length-3 axis
    mask = np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2]) > max(30.0, 5 * noise)
    n, su, sv, suu, svv, suv = (float(m) for m in frame.moments @ mask.ravel())
    frac = n / (h * w)
    if not 0.03 < frac < 0.6:
        return None

    # Pose from the mask's moments: centroid, principal axis, root of the area; one matrix
    # places every (tail, beak) silhouette (GRID_FRAME is in their moment frames). The
    # silhouette that explains the mask best gives the tail and bill shapes and the frame.
    u, v = su / n, sv / n
    theta = 0.5 * math.atan2(2 * (suv / n - u * v), suu / n - u * u - (svv / n - v * v))
    cx, cy = u + w / 2, v + h / 2  # Python floats: the pose math stays float32
    cos, sin = math.cos(theta) * math.sqrt(n), math.sin(theta) * math.sqrt(n)
    pose = np.array([[cos, -sin], [sin, cos]], np.float32)
    side = max(h, w) + 2
    padded = _pad(mask.view(np.uint8), OUT, side)
    seen = padded.take(_project(pose, cx, cy, GRID_FRAME, side))  # take(): fast for int32
    hits = (seen == GRID_INSIDE) @ ZONES  # per combination: tail zone, coarse grid
    valid = (seen != OUT) @ ZONES
    top = int((hits[:, 0] / np.maximum(valid[:, 0], 1)).argmax())
    tail = COMBOS[top][0]
    first = top - top % len(BEAKS)
    rows = slice(first, first + len(BEAKS))  # this tail's combinations (COMBOS is tail-major)
    guess = rows.start + int(hits[rows, 1].argmax())  # the best-shaped of them
    shape = float(hits[guess, 1] / max(valid[guess, 1], 1))
    if shape < 0.9:
        return None  # the mask is not bird-shaped

    # Correct the scale, then judge the bill under it.
    pose *= _rescale(padded, guess, pose, cx, cy, side)
    zone = _project(pose, cx, cy, BEAK_FRAME[rows], side)
    # Judged by darkness, not by the mask (JPEG halos around a dark bill widen the mask):
    # how far from the background toward the bill's colour (0..1), by luminance; the
    # background's luminance at the centroid sets the span (the bill is close by).
    lum_change = _pad(change @ THIRDS, 0, side)
    span = max(float(bg[int(cy), int(cx)] @ THIRDS) - BEAK_LUM, 1)
    dark = np.clip(lum_change.take(zone) / -span, 0, 1)
    best = rows.start + int((dark * BEAK_WEIGHTS[rows]).sum(1).argmax())
    beak = COMBOS[best][1]

    # Every part's sample points in one batch (clamped to the image); each part's median colour.
    xy = pose @ PART_FRAME[best] + np.array([[cx], [cy]], np.float32)
    x, y = np.clip(xy, 0, [[w - 1], [h - 1]]).astype(np.int32)  # truncated: floored, as >= 0
    rgb = img.reshape(-1, 3)[y * w + x].reshape(len(POINTS), -1, 3)
    chroma = dict(zip(POINTS, _chroma(_median(rgb)).tolist(), strict=True))
    body, d_body = _nearest(chroma["body"], BODY_CHROMA)
    kinds = [k for k, spec in SUPER_CATEGORIES.items() if spec["fixed"]["body_colour"] == body]
    crown, d_crown = _nearest(chroma["crown"], PART_CHROMA)
    breast, d_breast = _nearest(chroma["breast"], PART_CHROMA)
    wing, d_wing = _nearest(chroma["wing"], PART_CHROMA)
    barred = math.dist(chroma["bar"], BAR_CHROMA) < math.dist(chroma["bar"], chroma["wing"])
    distance = max(d_body, d_crown, d_breast, d_wing)
    if distance > 0.2 or not kinds:
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
    evidence = {"silhouette_agreement": shape, "mask_fraction": frac,
                "background_noise": noise, "colour_distance": distance}
    return Reading(kinds[0], attributes, evidence)
