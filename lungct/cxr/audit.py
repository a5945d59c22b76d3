"""Measured checks of radiograph lung fields against the Montgomery/Shenzhen convention.

The convention (../shared/data/README.md): each field ends at the diaphragm and at the heart's border;
the lung behind the heart is left out. Three things were found to break it, each measured here:
- a reference drawn through the heart shadow (`heart_shadow_excess`): the left field's lower medial part
  is as bright as the mediastinum, where a conventional field holds aerated lung;
- a film with a visible gastric bubble (`gastric_bubble_share`): air under the left dome that a model
  may take for lung;
- a predicted field running below the reference's lowest row (`beyond_base`): into the abdomen.
Arrays are (rows, cols) as displayed, the patient's right on the viewer's left; images in any grey scale
(brighter = denser), masks non-zero for lung.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from lungct.cxr.field_geometry import mediastinal_column

HEART_SHADOW_THRESHOLD = 0.4  # flags 20 of the 21 masks found by eye, no validation mask (cxr-references.md)
GASTRIC_BUBBLE_THRESHOLD = 0.004  # share of the image: a bubble of about 18 px across on a 256 px film
BEYOND_BASE_LIMIT = 0.03  # share of the image height a field may run below the reference's lowest row


def two_fields(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The two largest parts of a mask as (viewer's left, viewer's right), or None when there is one."""
    labels, count = ndi.label(np.asarray(mask) > 0)
    if count < 2:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    parts = [labels == index + 1 for index in np.argsort(sizes)[::-1][:2]]
    parts.sort(key=lambda part: np.nonzero(part)[1].mean())
    return parts[0], parts[1]


def _lower_medial_half(field: np.ndarray, medial_on_right: bool) -> np.ndarray:
    """The medial half (by each row's extent) of a field's lower half: where the heart lies beside it."""
    rows, cols = np.nonzero(field)
    top, bottom = rows.min(), rows.max()
    out = np.zeros_like(field)
    for row in range(int(top + 0.5 * (bottom - top)), bottom + 1):
        in_row = cols[rows == row]
        if not len(in_row):
            continue
        middle = in_row.min() + (in_row.max() - in_row.min()) // 2
        span = slice(middle, in_row.max() + 1) if medial_on_right else slice(in_row.min(), middle + 1)
        out[row, span] = field[row, span]
    return out


def heart_shadow_excess(image: np.ndarray, mask: np.ndarray) -> float | None:
    """How much more of the left field's lower medial half than of the right's is as bright as the heart.

    Bright: above the midpoint between the fields' median and the mediastinum's median (the gap between
    the fields, in the rows of their lower halves). A conventional left field stops at the heart's border,
    so its lower medial half is aerated lung like the right's (excess near 0); a field drawn through the
    heart shadow holds the heart there (excess 0.45-0.9). None without two fields."""
    fields = two_fields(mask)
    if fields is None:
        return None
    right, left = fields  # the patient's right lung is on the viewer's left
    image = np.asarray(image, np.float32)
    right_part, left_part = _lower_medial_half(right, True), _lower_medial_half(left, False)
    gap = []
    for row in np.nonzero(right_part.any(1) & left_part.any(1))[0]:
        inner_right, inner_left = np.nonzero(right[row])[0].max(), np.nonzero(left[row])[0].min()
        if inner_left - inner_right > 4:
            gap.append(image[row, inner_right + 2:inner_left - 1])
    mediastinum = np.concatenate(gap) if gap else image[~(right | left)]
    bright = (float(np.median(mediastinum)) + float(np.median(image[right | left]))) / 2
    return float((image[left_part] > bright).mean() - (image[right_part] > bright).mean())


def gastric_bubble_share(image: np.ndarray, mask: np.ndarray, depth: float = 0.3, darkness: float = 0.4) -> float:
    """Share of the image taken by the largest dark region under the left dome (0 when there is none).

    Searched: below the left field's base (columns whose lowest field row lies in the field's bottom
    quarter, the medial 80 % of its width: the lateral chest wall is dark too), from 3 px under the base
    down to `depth` of the field's height. Dark: below the abdomen's brightness (under the right dome)
    moved `darkness` of the way towards the lung fields' median."""
    fields = two_fields(mask)
    if fields is None:
        return 0.0
    right, left = fields
    image, lungs = np.asarray(image, np.float32), np.asarray(mask) > 0
    rows, cols = np.nonzero(left)
    top, height = rows.min(), rows.max() - rows.min()
    search = np.zeros_like(lungs)
    for col in range(cols.min(), int(cols.min() + 0.8 * (cols.max() - cols.min())) + 1):
        base = np.nonzero(left[:, col])[0].max()
        if base >= top + 0.75 * height:  # the dome, not the heart's border
            search[base + 3:base + int(depth * height), col] = True
    right_rows, right_cols = np.nonzero(right)
    row_index, col_index = np.mgrid[:lungs.shape[0], :lungs.shape[1]]
    liver = ~lungs & (row_index > right_rows.max() + 3) & (col_index > np.percentile(right_cols, 20)) \
        & (col_index < np.percentile(right_cols, 70))
    abdomen = float(np.median(image[liver])) if liver.sum() > 50 else float(np.percentile(image, 75))
    dark = search & ~lungs & (image < abdomen - darkness * (abdomen - float(np.median(image[left]))))
    regions, count = ndi.label(ndi.binary_opening(dark))
    if not count:
        return 0.0
    return float(np.bincount(regions.ravel())[1:].max() / lungs.size)


def beyond_base(prediction: np.ndarray, reference: np.ndarray) -> dict:
    """How far the predicted fields run below the reference's lowest row, side by side (the sides split
    at the reference's midline): `rows` the furthest, as a share of the image height, and `area` the
    predicted pixels below, as a share of the reference's area."""
    prediction, reference = np.asarray(prediction) > 0, np.asarray(reference) > 0
    if not reference.any():
        return {"rows": 0.0, "area": 0.0}
    midline = mediastinal_column(reference)
    furthest, area = 0, 0
    for side in (slice(0, midline), slice(midline, reference.shape[1])):
        ref_rows = np.nonzero(reference[:, side].any(1))[0]
        pred_rows = np.nonzero(prediction[:, side].any(1))[0]
        if not len(ref_rows) or not len(pred_rows):
            continue
        furthest = max(furthest, int(pred_rows[-1] - ref_rows[-1]))
        area += int(prediction[ref_rows[-1] + 1:, side].sum())
    return {"rows": furthest / reference.shape[0], "area": area / int(reference.sum())}
