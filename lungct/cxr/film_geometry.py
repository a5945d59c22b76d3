"""The geometric part of film augmentation: crop, AP look, rotation, scale and shift, in one resampling.

Why: portable films are tilted, off-centre, AP supine (upper fields compressed, heart magnified) and
often cut off at an apex, a base or a costophrenic angle. The image, mask and valid region must move
together, so every step is composed into one map from output to source pixels and applied once with a
PIL mesh transform: the image bilinearly, the labels and the film's extent by nearest neighbour.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from lungct.cxr.field_geometry import MIN_FIELD_PIXELS, bounding_box, mediastinal_column

if TYPE_CHECKING:
    from lungct.cxr.film import FilmParams


def _crop(rng, params: FilmParams, lungs: np.ndarray, has_lungs: bool, lung_box, valid: np.ndarray,
          window: list, shape: tuple):
    """The film's edge moved into the lung: top, bottom, one side (by part of a field's width), or a
    diagonal edge through one costophrenic angle; what lies beyond leaves `valid`. Returns valid and
    `window` (the film's first/last row, first/last column), narrowed to a moved straight edge."""
    fraction = rng.uniform(*params.crop_fraction)
    kind = rng.choice(["top", "bottom", "side", "corner"], p=[.3, .2, .25, .25])
    low = rng.random() < 0.5  # viewer's left (small columns) or right
    lr0, lr1, lc0, lc1 = lung_box
    lungs_height, field_width = lr1 - lr0, 0.4 * (lc1 - lc0)  # one field is ~0.4 of both fields' width
    rr, cc = np.arange(shape[0])[:, None], np.arange(shape[1])[None, :]
    cut = False
    if kind != "corner":  # top, bottom or one side: that edge of the film moves into the lung
        edges = (lr0 + fraction * lungs_height, lr1 - fraction * lungs_height,
                 lc0 + fraction * field_width, lc1 - fraction * field_width)
        side = {"top": 0, "bottom": 1, "side": 2 if low else 3}[kind]
        if side in (0, 2):
            window[side] = max(window[side], edges[side])
        else:
            window[side] = min(window[side], edges[side])
    else:  # the edge through the lung's lowest-lateral point, moved in: one costophrenic angle off
        dy = fraction * lungs_height * rng.uniform(0.8, 1.6)
        dx = fraction * field_width * rng.uniform(1.0, 2.0) * (-1 if low else 1)
        score = rr / dy + cc / dx
        corner = score[lungs].max() if has_lungs else lr1 / dy + (lc0 if low else lc1) / dx
        cut = score > corner - 1
    valid = valid & ~cut & (rr >= window[0]) & (rr <= window[1]) & (cc >= window[2]) & (cc <= window[3])
    return valid, window


def _mesh(source_rows: np.ndarray, source_cols: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> list:
    """PIL MESH data: for each output quad (between grid lines ys, xs), its source corners as (x, y) in
    PIL's order (upper left, lower left, lower right, upper right)."""
    quads = []
    for i in range(len(ys) - 1):
        for j in range(len(xs) - 1):
            box = (int(xs[j]), int(ys[i]), int(xs[j + 1]), int(ys[i + 1]))
            corners = ((i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1))
            quad = tuple(v for ii, jj in corners for v in (source_cols[ii, jj], source_rows[ii, jj]))
            quads.append((box, quad))
    return quads


def _resample(array: np.ndarray, size: tuple, mesh: list, resample) -> np.ndarray:
    """The array through the mesh, into an image of `size` (columns, rows)."""
    picture = Image.fromarray(array).transform(size, Image.Transform.MESH, mesh, resample=resample)
    return np.asarray(picture)


def warp_film(image: np.ndarray, mask: np.ndarray, valid: np.ndarray, rng, params: FilmParams, crop: bool,
              ap: bool, rotate: bool, scale: bool, shift: bool):
    """The moves that were drawn (crop, AP look, rotation, scale, shift) as one PIL mesh resampling; mask
    and valid by nearest neighbour. The input arrays themselves when nothing moves."""
    if not (crop or ap or rotate or scale or shift):
        return image, mask, valid
    height, width = image.shape
    cy, cx, lungs = (height - 1) / 2, (width - 1) / 2, mask > 0
    has_lungs = lungs.sum() >= MIN_FIELD_PIXELS
    if has_lungs:
        lung_box = bounding_box(lungs)
    else:
        lung_box = (height // 4, 3 * height // 4, width // 4, 3 * width // 4)
    window = list(bounding_box(valid)) if valid.any() else [0, height - 1, 0, width - 1]
    if crop:  # the film edge runs across the lung: the part beyond it is gone from image, mask and valid
        valid, window = _crop(rng, params, lungs, has_lungs, lung_box, valid, window, image.shape)
        # the rest of the film fills the frame
        fit = min(height / (window[1] - window[0] + 1), width / (window[3] - window[2] + 1))
        wy, wx = (window[0] + window[1]) / 2, (window[2] + window[3]) / 2
    else:
        fit, (wy, wx) = 1.0, (cy, cx)
    theta = 0.0
    if rotate:
        theta = np.deg2rad(rng.triangular(-params.max_rotation_deg, 0, params.max_rotation_deg))
    zoom, aspect = 1.0, 1.0
    if scale:
        zoom = rng.uniform(*params.scale_range)
        aspect = rng.uniform(*params.aspect_range)
    ty, tx = 0.0, 0.0
    if shift:
        ty, tx = rng.uniform(-1, 1, 2) * params.max_shift * np.array([height, width])
    compress, widen = 0.0, 0.0
    if ap:
        compress = rng.uniform(*params.ap_compress)
        widen = rng.uniform(*params.ap_widen)
    mid = ((mediastinal_column(lungs) if has_lungs else cx) - wx) * fit + cx

    def source(r, c):  # output pixel -> source pixel (row, col): every step inverted, last first
        y, x = r - cy - ty, c - cx - tx
        r = (np.cos(theta) * y + np.sin(theta) * x) / (zoom * np.sqrt(aspect)) + cy
        c = (np.cos(theta) * x - np.sin(theta) * y) * np.sqrt(aspect) / zoom + cx
        down = np.clip(r / (height - 1), 0, 1)
        # AP look: slope 1 + compress at the top (the upper field shrinks); the heart magnified
        r = r + compress * (height - 1) * np.sin(np.pi * down) / np.pi
        c = c - widen * (c - mid) * np.exp(-((c - mid) / (0.18 * width)) ** 2) * (0.5 + 0.5 * down)
        return (r - cy) / fit + wy, (c - cx) / fit + wx

    n = 6 if ap else 1  # an affine map is exact on one quad; the AP warp is piecewise bilinear on 6 x 6
    ys = np.linspace(0, height, n + 1).round().astype(int)
    xs = np.linspace(0, width, n + 1).round().astype(int)
    # PIL puts pixel centres at +0.5
    source_rows, source_cols = (q + 0.5 for q in source(ys[:, None] - 0.5, xs[None, :] - 0.5))
    mesh = _mesh(source_rows, source_cols, ys, xs)
    labels = np.where(valid, mask.astype(np.uint8) + 8, 0).astype(np.uint8)  # label + 8 on the film, 0 off it
    code = _resample(labels, (width, height), mesh, Image.Resampling.NEAREST)
    film = np.where(valid, image, 0).astype(np.float32)
    moved = _resample(film, (width, height), mesh, Image.Resampling.BILINEAR)
    on_film = code >= 8
    moved_mask = np.where(on_film, code - 8, 0).astype(mask.dtype)
    return np.where(on_film, moved, 0).astype(np.float32), moved_mask, on_film
