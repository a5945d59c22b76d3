"""Clean-up of a network's label map: main components per label, per-slice holes, optional lung ROI.

Networks leave specks (a bowel loop, air under the couch) and pinholes (vessels); a lung is one solid
object per side. Every step works inside the label's bounding box, so it costs little on a full scan.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from lungct.morphology import bounding_box, fill_holes_2d

FULL_3D = ndi.generate_binary_structure(3, 3)


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


def postprocess(labels: np.ndarray, values, roi: np.ndarray | None = None,
                min_fraction: float = 0.1) -> tuple[np.ndarray, dict]:
    """The whole clean-up in order: ROI restriction, main components, then hole filling; returns the
    labels and the number of components each label keeps."""
    if roi is not None:
        labels = restrict_to_roi(labels, roi)
    labels, kept = keep_main_components(labels, values, min_fraction)
    return fill_holes(labels, values), kept
