"""Clean-up of a network's label map: main components per label, per-slice holes, optional lung ROI,
gas outside the lungs.

Networks leave specks (a bowel loop, air under the couch) and pinholes (vessels); a lung is one solid
object per side. Every step works inside the label's bounding box, so it costs little on a full scan.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from lungct.geometry import voxel_spacing
from lungct.morphology import bounding_box, dilate_mm, fill_holes_2d

FULL_3D = ndi.generate_binary_structure(3, 3)
DEFAULT_GAS: dict = {}  # gas_outside_lungs with its own defaults (never mutated)


def keep_main_components(labels: np.ndarray, values, min_fraction: float = 0.1) -> tuple[np.ndarray, dict]:
    """Per label, the largest connected component plus any other at least `min_fraction` of its size;
    and how many components each label keeps (more than one or two is worth a look).

    A lung split in two by a tumour or a fissure-like gap keeps both parts; specks are dropped.
    """
    out, kept = labels.copy(), {}
    for value in values:
        mask = labels == value
        box = bounding_box(mask)
        kept[int(value)] = 0
        if not mask[box].any():
            continue
        components, count = ndi.label(mask[box], structure=FULL_3D)
        kept[int(value)] = count
        if count <= 1:
            continue
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        drop = sizes < min_fraction * sizes.max()
        drop[0] = False
        kept[int(value)] = int(count - drop[1:].sum())
        region = out[box]
        region[drop[components]] = 0
    return out, kept


def fill_holes(labels: np.ndarray, values) -> np.ndarray:
    """Fill background holes inside each label, slice by slice (axial = last axis); other labels stay."""
    out = labels.copy()
    for value in values:
        mask = out == value
        box = bounding_box(mask, margin=1)
        if not mask[box].any():
            continue
        region = out[box]
        filled = fill_holes_2d(mask[box])
        region[filled & (region == 0)] = value
    return out


def restrict_to_roi(labels: np.ndarray, roi: np.ndarray) -> np.ndarray:
    """Labels outside the preprocessing's lung region of interest become background."""
    out = labels.copy()
    out[~(np.asarray(roi) > 0)] = 0
    return out


def gas_outside_lungs(labels: np.ndarray, values, hu: np.ndarray, affine: np.ndarray, air_hu: float = -700.0,
                      gas_hu: float = -950.0, min_ml: float = 5.0, rim_mm: float = 3.0) -> np.ndarray:
    """Voxels of a lung label that are gas beyond the lung (bool): the stomach's or the colon's under a
    diaphragm dome. A 2D network labels a slice of fundus gas under the left lung as lung
    (imlab-id002: 38 mL), and the mirrored ROI covers it. Per label, the air (below `air_hu`) apart from its
    largest connected part, when a part holds `min_ml`, is pure gas (median below `gas_hu`: no vessels or
    parenchyma) and lies mostly outside the largest part's outline in its slices (airways and bullae lie
    inside it); and the label's tissue within `rim_mm` of it. Never on a single slice: nothing there shows
    where the air connects."""
    out = np.zeros(labels.shape, bool)
    if labels.shape[2] == 1:
        return out
    spacing = voxel_spacing(affine)
    voxel_ml = float(np.prod(spacing)) / 1000
    for value in values:
        box = bounding_box(labels == value)
        air = (labels[box] == value) & (hu[box] < air_hu)
        parts, count = ndi.label(air)
        if count < 2:
            continue
        sizes = np.bincount(parts.ravel())
        sizes[0] = 0
        largest = int(np.argmax(sizes))
        outline = fill_holes_2d(parts == largest)
        gas = np.zeros(air.shape, bool)
        for part in np.flatnonzero(sizes * voxel_ml >= min_ml):
            inside = parts == part
            if part != largest and np.median(hu[box][inside]) < gas_hu and (~outline[inside]).mean() > 0.5:
                gas |= inside
        if gas.any():
            out[box] |= dilate_mm(gas, rim_mm, spacing) & (labels[box] == value) & ~(air & ~gas)
    return out


def postprocess(labels: np.ndarray, values, roi: np.ndarray | None = None, min_fraction: float | None = 0.1,
                hu: np.ndarray | None = None, affine: np.ndarray | None = None,
                gas: dict | None = DEFAULT_GAS, holes: bool = True) -> tuple[np.ndarray, dict]:
    """The whole clean-up in order: ROI restriction, gas outside the lungs (with `hu` on the labels' grid
    and the step's parameters `gas`, None: not run), main components (None: every part kept), then hole
    filling (when `holes`); returns the labels and the number of components each label keeps."""
    if roi is not None:
        labels = restrict_to_roi(labels, roi)
    gas = gas_outside_lungs(labels, values, hu, affine, **gas) if hu is not None and gas is not None else None
    if gas is not None and gas.any():
        labels = np.where(gas, 0, labels).astype(labels.dtype)
    labels, kept = keep_main_components(labels, values, 0.0 if min_fraction is None else min_fraction)
    if holes:
        labels = fill_holes(labels, values)
    if gas is not None and gas.any():  # not a hole of the lung, even where the lung wraps round it in a slice
        labels[gas] = 0
    return labels, kept
