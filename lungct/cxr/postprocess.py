"""After the network: two lung fields without fragments or holes, right/left labels, areas in cm².

A standard PA (or AP) radiograph is displayed as if facing the patient, so the patient's right lung is on
the viewer's left: label 1 (right lung) is the field with the smaller column centroid, unless the
radiograph says it is mirrored (Radiograph.patient_right_on_image_left).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from lungct.cxr.transforms import to_original
from lungct.labels import BINARY_LABELS, LUNG_LABELS, measure
from lungct.labels import LEFT_LUNG as LEFT
from lungct.labels import RIGHT_LUNG as RIGHT

FOUR_CONNECTED = ndi.generate_binary_structure(2, 1)


def lung_mask(prob_or_labels: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """bool (rows, cols) lung from a probability map (float in [0, 1]), logits/scores (C, rows, cols:
    argmax != 0) or labels (any non-zero integer)."""
    array = np.asarray(prob_or_labels)
    if array.ndim == 3:
        if array.shape[0] == 1:
            array = array[0]
        else:
            return np.argmax(array, axis=0) != 0
    if array.dtype.kind == "f" and array.size and float(array.max()) <= 1.0 and float(array.min()) >= 0.0 \
            and not np.array_equal(array, np.round(array)):
        return array >= threshold
    return array != 0


def postprocess_cxr(prob_or_labels: np.ndarray, threshold: float = 0.5, min_fraction: float = 0.05,
                    fill_holes: bool = True, max_overlap: float = 0.5) -> np.ndarray:
    """uint8 0/1 mask with one field per side, holes filled: the largest component, and the largest other
    one beside it (column ranges overlapping by at most `max_overlap` of the narrower) when at least
    `min_fraction` of its size. A piece above or below a field (the gastric bubble under the left
    hemidiaphragm, a fragment) is not a second lung; nor is a speck."""
    mask = lung_mask(prob_or_labels, threshold)
    labels, count = ndi.label(mask, structure=FOUR_CONNECTED)
    if count == 0:
        return np.zeros(mask.shape, np.uint8)
    sizes = np.bincount(labels.ravel())[1:]
    order = np.argsort(sizes)[::-1]
    boxes = ndi.find_objects(labels)
    first = boxes[order[0]][1]

    def beside(index: int) -> bool:
        cols = boxes[index][1]
        overlap = min(first.stop, cols.stop) - max(first.start, cols.start)
        return overlap <= max_overlap * min(first.stop - first.start, cols.stop - cols.start)

    second = next((int(i) for i in order[1:] if sizes[i] >= min_fraction * sizes[order[0]] and beside(i)), None)
    keep = [int(order[0]) + 1] + ([second + 1] if second is not None else [])
    out = np.zeros(mask.shape, bool)
    for value in keep:
        component = labels == value
        out |= ndi.binary_fill_holes(component) if fill_holes else component
    return out.astype(np.uint8)


def split_fields(mask: np.ndarray, patient_right_on_image_left: bool = True, min_fraction: float = 0.05,
                 max_overlap: float = 0.5) -> np.ndarray | None:
    """Labels 1 = right lung, 2 = left lung when the mask holds two separable fields, else None.

    Separable: two components (after dropping fragments below `min_fraction` of the largest) side by
    side, their column ranges overlapping by at most `max_overlap` of the narrower one; one fused field,
    or two stacked pieces of one lung, are not split.
    """
    labels, count = ndi.label(np.asarray(mask) != 0, structure=FOUR_CONNECTED)
    if count < 2:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    big = [i + 1 for i in np.argsort(sizes)[::-1] if sizes[i] >= min_fraction * sizes.max()]
    if len(big) != 2:
        return None
    spans, centres = [], []
    for value in big:
        cols = np.nonzero(labels == value)[1]
        spans.append((cols.min(), cols.max()))
        centres.append(cols.mean())
    overlap = min(spans[0][1], spans[1][1]) - max(spans[0][0], spans[1][0]) + 1
    narrower = min(s[1] - s[0] + 1 for s in spans)
    if overlap > max_overlap * narrower:
        return None
    viewer_left, viewer_right = (big[0], big[1]) if centres[0] < centres[1] else (big[1], big[0])
    if not patient_right_on_image_left:
        viewer_left, viewer_right = viewer_right, viewer_left
    out = np.zeros(labels.shape, np.uint8)
    out[labels == viewer_left] = RIGHT
    out[labels == viewer_right] = LEFT
    return out


def field_areas_cm2(mask: np.ndarray, spacing_mm) -> dict | None:
    """Areas in cm² per label (right_lung/left_lung for split labels, lungs for a binary mask, and total),
    or None when the pixel spacing is unknown. `mask` must be at the radiograph's own resolution."""
    if spacing_mm is None:
        return None
    row_mm, col_mm = (float(spacing_mm), float(spacing_mm)) if np.isscalar(spacing_mm) else map(float, spacing_mm)
    split = LEFT in np.asarray(mask)
    return measure(mask, LUNG_LABELS if split else BINARY_LABELS, row_mm * col_mm / 100.0)


@dataclass
class CxrResult:
    """A radiograph's lung fields at its own resolution: `mask` 0/1, `labels` 1 = right 2 = left or None."""

    mask: np.ndarray
    labels: np.ndarray | None
    areas_cm2: dict | None
    warnings: list[str] = field(default_factory=list)

    @property
    def output(self) -> np.ndarray:
        """What to write: right/left labels when the fields were separable, else the binary mask."""
        return self.labels if self.labels is not None else self.mask


def finish_cxr(lung_probability: np.ndarray, record: dict, threshold: float = 0.5, min_fraction: float = 0.05,
               fill_holes: bool = True, split: bool = True) -> CxrResult:
    """From the lung probability on the chain's 256 x 256 grid to the post-processed mask on the
    radiograph's own pixels, with right/left labels and areas."""
    native = to_original(np.asarray(lung_probability, dtype=np.float32), record, nearest=False)
    mask = postprocess_cxr(np.clip(native, 0, 1), threshold, min_fraction, fill_holes)
    warnings = []
    labels = split_fields(mask, record.get("patient_right_on_image_left", True), min_fraction) if split else None
    if split and labels is None and mask.any():
        warnings.append("the lung fields are not separable into right and left; one lung label written")
    if not mask.any():
        warnings.append("no lung field found")
    areas = field_areas_cm2(labels if labels is not None else mask, record.get("spacing_mm"))
    return CxrResult(mask, labels, areas, warnings)
