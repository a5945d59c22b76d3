"""The body: the largest connected soft-tissue object, filled slice by slice; the couch falls outside it.

The couch, the rim of the reconstruction circle and blankets touch the body only through thin bridges,
which an in-plane opening cuts before the largest component is taken. Air inside or under the couch is
therefore outside the body and can never become lung. Nothing here needs to know where "posterior" is,
so a scan with a wrong or flipped header still loses its couch.
"""
from __future__ import annotations

import numpy as np

from lungct.morphology import (analysis_strides, dilate_mm, erode_mm, fill_holes_2d, largest_component,
                               upsample_nearest)
from lungct.keyed import KeyedTransform, register_transform
from lungct.ct.transforms.common import case_info, hu_to_stored, put_like, spacing_of, volume_of


def body_mask(array: np.ndarray, spacing, threshold: float = -500.0, opening_radius_mm: float = 4.0,
              analysis_spacing_mm: float = 2.0) -> np.ndarray:
    """Filled body mask on the array's grid; `threshold` is in the array's units."""
    strides = analysis_strides(spacing, analysis_spacing_mm, array.shape)
    coarse_spacing = [s * st for s, st in zip(spacing, strides)]
    tissue = array[:: strides[0], :: strides[1], :: strides[2]] > threshold
    opened = dilate_mm(erode_mm(tissue, opening_radius_mm, coarse_spacing, in_plane=True), opening_radius_mm,
                       coarse_spacing, in_plane=True) & tissue
    body = largest_component(opened)
    if not body.any():
        return np.zeros(array.shape, bool)
    # Slices where the opening found nothing keep no body; elsewhere fill lungs and airways in-plane.
    body = fill_holes_2d(body)
    return upsample_nearest(body, strides, array.shape)


@register_transform
class BodyMaskd(KeyedTransform):
    """Add "body" (uint8) to the dict: the filled body, couch and outside air excluded."""

    roi_step = True
    def __init__(self, keys="image", output_key: str = "body", threshold_hu: float = -500.0,
                 opening_radius_mm: float = 4.0, analysis_spacing_mm: float = 2.0, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.output_key = output_key
        self.threshold_hu = threshold_hu
        self.opening_radius_mm = opening_radius_mm
        self.analysis_spacing_mm = analysis_spacing_mm

    def __call__(self, data):
        d = dict(data)
        key = self.keys[0]
        array = volume_of(d, key)
        spacing = spacing_of(d, key)
        body = body_mask(array, spacing, hu_to_stored(d, self.threshold_hu), self.opening_radius_mm,
                         self.analysis_spacing_mm)
        info = case_info(d)
        info["body_volume_ml"] = round(float(np.count_nonzero(body) * np.prod(spacing) / 1000.0), 1)
        if not body.any():
            info["warnings"].append("no body found (nothing above the soft-tissue threshold)")
        put_like(d, self.output_key, body.view(np.uint8), key)  # bool as 0/1, no copy
        return d
