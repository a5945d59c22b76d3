"""What lies at and under the lung bases, synthesised for radiograph training: the field ends at the diaphragm.

Why: the shipped model took the gastric air bubble under the left hemidiaphragm into the left field on a
few films, and ran below the reference's base where a white base hid the diaphragm. Two syntheses teach
the Montgomery/Shenzhen convention there:
- `add_gastric_bubble`: air under the left dome (and bowel gas below it), dark as lung but separated from
  it by the diaphragm; the label stays background there;
- `add_pleural_fluid`: fluid at the base of a field with a meniscus rising laterally, as bright as soft
  tissue so the dome vanishes under it; the fluid leaves the label (the field keeps the lung above it,
  consolidated or not, and leaves the pleural fluid out).
Arrays as after ResizePadd (like lungct.cxr.augment): image float32 in [0, 1], brighter = denser; mask
uint8, non-zero for lung; the patient's left lung on the viewer's right. All randomness from `rng`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from lungct.cxr.audit import two_fields
from lungct.cxr.augment import soft_tissue_level


@dataclass
class GastricParams:
    width: tuple = (0.25, 0.55)  # of the left field's width
    height: tuple = (0.35, 0.8)  # of the bubble's width
    diaphragm_px: tuple = (2.0, 6.0)  # soft tissue left between the field's base and the air (256 px image)
    centre: tuple = (0.2, 0.65)  # of the field's width from its medial edge: under the medial and middle dome
    darkness: tuple = (0.3, 0.75)  # fraction of the way from the abdomen's brightness down to the lung's
    p_fluid_level: float = 0.4  # erect films: a flat lower edge (air over gastric fluid)
    p_bowel: float = 0.4  # a few smaller gas pockets further down (colon, splenic flexure)


@dataclass
class PleuralFluidParams:
    p_bilateral: float = 0.3
    level: tuple = (0.08, 0.35)  # fluid height at the medial end, as a share of the field's height
    meniscus: tuple = (0.05, 0.25)  # how much higher it climbs at the lateral edge
    strength: tuple = (0.85, 1.0)  # fraction of the way to the brightness under the dome (the abdomen)
    edge_px: float = 2.0  # the meniscus is sharp on erect films: a few pixels of blur
    keep_detail: float = 0.15  # share of fine detail (ribs) still seen through the fluid


def _dome(field: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(columns, base rows) of a field's dome: the columns whose lowest field row lies in the field's
    bottom quarter (elsewhere the lowest row is the heart's border); plus the field's top and height."""
    rows, cols = np.nonzero(field)
    top, height = int(rows.min()), int(rows.max() - rows.min())
    columns = np.unique(cols)
    bases = np.array([rows[cols == c].max() for c in columns])
    dome = bases >= top + 0.75 * height
    return columns[dome], bases[dome], top, height


def _darken(image: np.ndarray, region: np.ndarray, protect: np.ndarray, target: float, rng,
            texture_sd: float = 0.02) -> np.ndarray:
    """Move the image towards `target` (never brighter) inside a soft-edged region, keeping fine detail;
    the `protect`ed pixels (the lung and a pixel around it: the diaphragm's edge) stay as they are."""
    alpha = np.clip(ndi.gaussian_filter(region.astype(np.float32), 1.2), 0, 1)
    alpha[protect] = 0
    detail = image - ndi.gaussian_filter(image, 2.0)
    mottle = ndi.gaussian_filter(rng.standard_normal(image.shape).astype(np.float32), 2.5) * texture_sd * 2.5
    darker = np.minimum(image, target + 0.4 * detail + mottle)
    return (1 - alpha) * image + alpha * darker


def add_gastric_bubble(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                       params: GastricParams = GastricParams()) -> np.ndarray:
    """An air bubble under the left dome, following its curve a few pixels below the field's base, and
    sometimes bowel gas further down; the mask is not changed (the air is not lung). The image unchanged
    when there are not two fields or no dome."""
    p, img = params, np.asarray(image, np.float32)
    fields = two_fields(mask)
    if fields is None:
        return img.copy()
    left = fields[1]  # the patient's left lung, on the viewer's right
    columns, bases, top, height = _dome(left)
    if len(columns) < 4:
        return img.copy()
    lung = np.asarray(mask) > 0
    field_cols = np.nonzero(left.any(0))[0]
    medial, width = field_cols.min(), field_cols.max() - field_cols.min()
    bubble_width = rng.uniform(*p.width) * width
    centre = medial + rng.uniform(*p.centre) * width
    bubble_height = rng.uniform(*p.height) * bubble_width
    gap = rng.uniform(*p.diaphragm_px)
    level = np.inf if rng.random() >= p.p_fluid_level else rng.uniform(0.5, 0.9)
    rows_index = np.arange(img.shape[0], dtype=np.float32)[:, None]
    cols_index = np.arange(img.shape[1], dtype=np.float32)[None, :]
    across = (cols_index - centre) / (bubble_width / 2)  # -1 .. 1 under the bubble
    base = np.interp(cols_index, columns, bases)  # the dome continues medially under the heart
    depth = bubble_height * np.sqrt(np.clip(1 - across ** 2, 0, 1))
    below = rows_index - (base + gap)
    region = (below >= 0) & (below <= np.minimum(depth, level * bubble_height)) & (np.abs(across) < 1)
    abdomen = soft_tissue_level(img, mask)
    air = float(np.median(img[left]))
    target = abdomen - rng.uniform(*p.darkness) * (abdomen - air)
    if rng.random() < p.p_bowel:
        for _ in range(int(rng.integers(1, 4))):
            row = base.max() + rng.uniform(0.12, 0.4) * height
            col = medial + rng.uniform(-0.2, 0.9) * width
            radii = rng.uniform(0.03, 0.08, 2) * height
            region |= ((rows_index - row) / radii[0]) ** 2 + ((cols_index - col) / radii[1]) ** 2 <= 1
    region &= ~ndi.binary_dilation(lung, iterations=3)
    if not region.any():
        return img.copy()
    protect = ndi.binary_dilation(lung, iterations=1)
    return np.clip(_darken(img, region, protect, target, rng), 0, 1).astype(np.float32)


def add_pleural_fluid(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                      params: PleuralFluidParams = PleuralFluidParams()) -> tuple[np.ndarray, np.ndarray]:
    """Pleural fluid at the base of one field (or both): brighter to soft tissue below a meniscus that
    rises laterally, the dome hidden under it; the fluid's pixels leave the mask. (image, mask) unchanged
    when there are not two fields."""
    p, img, out_mask = params, np.asarray(image, np.float32), np.asarray(mask).copy()
    fields = two_fields(mask)
    if fields is None:
        return img.copy(), out_mask
    chosen = list(fields) if rng.random() < p.p_bilateral else [fields[int(rng.integers(2))]]
    rows_index = np.arange(img.shape[0], dtype=np.float32)[:, None]
    alpha = np.zeros(img.shape, np.float32)
    for field, lateral_on_left in ((f, f is fields[0]) for f in chosen):
        rows, cols = np.nonzero(field)
        bottom, height = rows.max(), rows.max() - rows.min()
        lo, hi = cols.min(), cols.max()
        lateral = (hi - np.arange(img.shape[1])) / max(hi - lo, 1) if lateral_on_left else \
            (np.arange(img.shape[1]) - lo) / max(hi - lo, 1)
        lateral = np.clip(lateral, 0, 1)[None, :].astype(np.float32)
        surface = bottom - height * (rng.uniform(*p.level) + rng.uniform(*p.meniscus) * lateral ** 2)
        fluid = (rows_index >= surface) & ndi.binary_dilation(field, iterations=3)
        alpha = np.maximum(alpha, rng.uniform(*p.strength) * fluid)
        out_mask[(rows_index >= surface) & field] = 0
    alpha = ndi.gaussian_filter(alpha, p.edge_px)
    smooth = ndi.gaussian_filter(img, 1.5)
    fluid_brightness = np.maximum(_under_the_domes(smooth, np.asarray(mask) > 0), soft_tissue_level(img, mask) * 0.9)
    out = (1 - alpha) * img + alpha * (fluid_brightness + p.keep_detail * (img - smooth))
    return np.clip(np.maximum(out, img), 0, 1).astype(np.float32), out_mask


def _under_the_domes(smooth: np.ndarray, lungs: np.ndarray, depth: int = 12) -> np.ndarray:
    """(1, cols) brightness of the abdomen just under the fields' base in each column, smoothed across
    columns: fluid as bright as what lies under the diaphragm hides the dome."""
    columns = np.nonzero(lungs.any(0))[0]
    values = np.full(lungs.shape[1], np.nan, np.float32)
    for col in columns:
        base = np.nonzero(lungs[:, col])[0].max()
        below = smooth[base + 3:base + 3 + depth, col]
        if len(below):
            values[col] = np.median(below)
    known = ~np.isnan(values)
    if not known.any():
        return np.full((1, lungs.shape[1]), float(np.percentile(smooth, 90)), np.float32)
    filled = np.interp(np.arange(lungs.shape[1]), np.nonzero(known)[0], values[known])
    return ndi.uniform_filter1d(filled, 15)[None, :].astype(np.float32)
