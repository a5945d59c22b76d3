"""Gantry tilt: a series whose slices advance along a direction that is not their normal.

With the gantry tilted by t degrees each slice image lies in the plane ImageOrientationPatient gives, but
ImagePositionPatient moves in-plane by tan(t) mm for every mm along the normal. Stacking the slices
along their normal would move every slice but the first by up to the scan's length times tan(t) (84 mm
for a 15 degree tilt over 300 mm). The grid that holds every slice where its header puts it is exact with
a sheared affine, whose slice column is the step from one slice to the next; lungct reads the series on
that grid. The input chain resamples it onto a regular grid for the network (as any oblique grid), and
the labels come back onto the tilted slices.
"""
from __future__ import annotations

import numpy as np

from lungct.errors import LungctError

# In-plane drift over the whole series (fraction of a pixel) below which there is no tilt: DICOM decimal
# strings round positions to ~1e-5 mm, and untilted series read here drift by 0 (the shared ones).
DRIFT_TOLERANCE = 0.01
# In-plane offsets further than this (fraction of a pixel) off one straight line are not a tilt: no single
# grid holds such slices where their headers put them.
SCATTER_TOLERANCE = 0.5


def slice_shear(positions: np.ndarray, along: np.ndarray, normal: np.ndarray, pixel_mm: float, where) -> np.ndarray:
    """The in-plane shift of the slices per mm along the normal (zero without tilt), from slice positions
    (LPS mm) sorted along the normal and their distances `along` it; refused when they scatter."""
    steps = along - along[0]
    drift = (positions - positions[0]) - np.outer(steps, normal)  # where each slice is, off the normal line
    if len(steps) < 2 or steps[-1] <= 0 or np.linalg.norm(drift, axis=1).max() <= DRIFT_TOLERANCE * pixel_mm:
        return np.zeros(3)
    shear = (steps @ drift) / (steps @ steps)  # least squares: drift = steps * shear
    scatter = float(np.linalg.norm(drift - np.outer(steps, shear), axis=1).max())
    if scatter > SCATTER_TOLERANCE * pixel_mm:
        raise LungctError(where, f"slice positions (ImagePositionPatient) scatter in-plane by up to {scatter:.2f} mm "
                                 "around a straight line: no grid holds the slices where their headers put them")
    return shear


def tilt_degrees(shear: np.ndarray) -> float:
    return float(np.degrees(np.arctan(np.linalg.norm(shear))))


def tilt_warning(shear: np.ndarray) -> str:
    return (f"gantry tilt of {tilt_degrees(shear):.1f} degrees: the network saw the series resampled onto a regular "
            "grid; the mask lies on the tilted slices (a sheared affine)")
