"""The lung fields as radiograph augmentation sees them, and the smooth maps painted on them.

Why: an opacity's shape depends on where it sits in a field (consolidation low and peripheral, effusion
at the base, a white-out below a fissure), so each field gets its own window with coordinates running
apex to base and medial to lateral. Film augmentation places tubes, crops and collimation by the same
boxes and the mediastinal gap. Arrays as after ResizePadd: image float32 in [0, 1] (brighter = denser),
mask uint8 (0/1, or 1 = right, 2 = left). All randomness from `rng`; no BLAS (its threads stall on a
busy machine), so the texture is upsampled by explicit sums, not matrix products.
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np
from scipy import ndimage as ndi

MIN_FIELD_PIXELS = 30  # fewer lung pixels than this: no field to paint on or to place things by


def blur(array: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur in float32; the edge extended, so the film's border does not darken."""
    return ndi.gaussian_filter(np.asarray(array, np.float32), float(sigma), mode="nearest", truncate=3.0)


@lru_cache(maxsize=256)
def _interpolation(n_out: int, n_in: int):
    """For each of n_out output positions, the 4 nearest of n_in coarse nodes and their Gaussian weights
    (sd 0.7 nodes, float32, summing to 1); cached, as the same sizes come back for every sample."""
    position = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    nodes = np.floor(position).astype(np.intp)[:, None] + np.arange(-1, 3)[None, :]
    inside = (nodes >= 0) & (nodes < n_in)
    weights = np.exp(-0.5 * ((position[:, None] - nodes) / 0.7) ** 2) * inside
    return np.clip(nodes, 0, n_in - 1), (weights / weights.sum(1, keepdims=True)).astype(np.float32)


def smooth_texture(rng, shape, cells=(4, 9, 20, 40), weights=(1.0, 0.7, 0.45, 0.25)) -> np.ndarray:
    """Smooth random field (zero mean, unit sd): coarse noise grids (`cells` across 256 px) upsampled with
    Gaussian weights give lobe-sized swells, patches and fine mottling, without bilinear creases."""
    out = np.zeros(shape, np.float32)
    for n_cells, weight in zip(cells, weights):
        grid = (max(2, round(n_cells * shape[0] / 256)), max(2, round(n_cells * shape[1] / 256)))
        coarse = rng.standard_normal(grid, np.float32)
        row_nodes, row_weights = _interpolation(shape[0], grid[0])
        col_nodes, col_weights = _interpolation(shape[1], grid[1])
        rows_done = (coarse[row_nodes] * row_weights[:, :, None]).sum(1)  # (shape[0], grid[1])
        out += weight * (rows_done[:, col_nodes] * col_weights[None]).sum(2)
    return (out - out.mean()) / (out.std() + 1e-6)


def smoothstep(x):
    """0 below 0, 1 above 1, an S-curve between with flat ends: a soft edge without a visible rim."""
    return np.clip(x, 0.0, 1.0) ** 2 * (3 - 2 * np.clip(x, 0.0, 1.0))


def bounding_box(region: np.ndarray) -> tuple[int, int, int, int]:
    """(first row, last row, first column, last column), inclusive, of a non-empty boolean region."""
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])


def mediastinal_column(lungs: np.ndarray) -> int:
    """The mediastinal gap: the emptiest column in the middle half of the lungs' bounding box."""
    _, _, c0, c1 = bounding_box(lungs)
    lo, hi = c0 + (c1 - c0) // 4, c1 - (c1 - c0) // 4
    counts = lungs[:, lo:hi + 1].sum(0)
    return lo + int(np.median(np.flatnonzero(counts == counts.min())))


class Field:
    """One lung field in its own window (its box plus a margin: work on ~15 % of the image).

    vertical: 0 at the apex to 1 at the base (a column); lateral: 0 medial to 1 lateral (a row);
    support: the field blurred by spill_sigma, 1 inside and 0 a few pixels out, so opacities fade out
    just beyond the field's edge instead of stopping at it."""

    def __init__(self, part: np.ndarray, lateral_on_left: bool, spill_sigma: float):
        r0, r1, c0, c1 = bounding_box(part)
        pad = int(np.ceil(3 * spill_sigma)) + 2
        self.window = (slice(max(r0 - pad, 0), r1 + pad + 1), slice(max(c0 - pad, 0), c1 + pad + 1))
        self.part = part[self.window]
        self.top, self.bottom, c0, c1 = bounding_box(self.part)
        self.height, self.width = max(self.bottom - self.top, 1), max(c1 - c0, 1)
        self.rows = np.arange(self.part.shape[0], dtype=np.float32)[:, None]
        self.cols = np.arange(self.part.shape[1], dtype=np.float32)[None, :]
        self.vertical = (self.rows - self.top) / self.height
        if lateral_on_left:  # the viewer's left field: its lateral edge at the small columns
            self.lateral = np.clip((c1 - self.cols) / self.width, 0, 1)
        else:
            self.lateral = np.clip((self.cols - c0) / self.width, 0, 1)
        self.support = np.clip(2 * blur(self.part, spill_sigma), 0, 1)


def lung_fields(mask: np.ndarray, spill_sigma: float) -> list[Field]:
    """The fields: labels 1 and 2 if both are there, else the lungs split at the mediastinal gap (one
    field if lung crosses it); none if the lungs, or a field, have under MIN_FIELD_PIXELS."""
    lungs = mask > 0
    if lungs.sum() < MIN_FIELD_PIXELS:
        return []
    split, cols = mediastinal_column(lungs), np.arange(lungs.shape[1])
    if (mask == 1).any() and (mask == 2).any():
        parts = [mask == 1, mask == 2]
    elif lungs[:, split].any():
        parts = [lungs]
    else:
        parts = [lungs & (cols < split), lungs & (cols >= split)]
    parts = [part for part in parts if part.sum() >= MIN_FIELD_PIXELS]
    centre = split if len(parts) > 1 else lungs.shape[1] / 2
    fields = []
    for part in parts:
        centroid = float((part.sum(0) * cols).sum() / part.sum())
        fields.append(Field(part, centroid < centre, spill_sigma))
    return fields


def soft_tissue_level(image: np.ndarray, mask: np.ndarray) -> float:
    """The brightness opacities tend to (water density, like fluid or consolidation): the median of the
    non-lung pixels inside the lungs' bounding box (mediastinum, heart, diaphragm domes)."""
    lungs = np.asarray(mask) > 0
    if not lungs.any():
        return float(np.percentile(image, 90))
    r0, r1, c0, c1 = bounding_box(lungs)
    others = image[r0:r1 + 1, c0:c1 + 1][~lungs[r0:r1 + 1, c0:c1 + 1]]
    level = float(np.median(others)) if others.size > 20 else float(np.percentile(image, 90))
    return max(level, float(np.median(image[lungs])))


class Landmarks(NamedTuple):
    """Where the lungs are on a film, to place devices, arrows and collimation by: the lungs' bounding
    box (inclusive rows and columns) and the mediastinal column."""
    top: int
    bottom: int
    left: int
    right: int
    midline: int


def lung_landmarks(lungs: np.ndarray, film_box) -> Landmarks:
    """The lungs' landmarks; with under MIN_FIELD_PIXELS of lung, where lungs usually sit on the film
    (`film_box`: first row, last row, first column, last column of the film)."""
    if lungs.sum() >= MIN_FIELD_PIXELS:
        return Landmarks(*bounding_box(lungs), mediastinal_column(lungs))
    r0, r1, c0, c1 = film_box
    return Landmarks((4 * r0 + r1) // 5, (r0 + 4 * r1) // 5, (5 * c0 + c1) // 6, (c0 + 5 * c1) // 6,
                     (c0 + c1) // 2)
