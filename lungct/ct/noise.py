"""Image noise in HU, measured where a chest CT is most uniform at small scale: inside the aerated lung.

A noisy scan (low dose, a thin-slice sharp kernel, a broken reconstruction) makes every boundary and every
density figure less certain, yet the network may still be confident; the QC page flags it (lungct.qcflags).
The estimate is robust to the vessels and airway walls inside the lung: the median absolute deviation of
each voxel from its in-plane 3x3 median, scaled to a standard deviation, on a few slices spread over the
lungs (a full volume would cost seconds; eight slices cost milliseconds and vary by a few HU).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from lungct.morphology import bounding_box

MAD_TO_SD = 1.4826  # median absolute deviation -> standard deviation of a normal distribution
# The residual to a 3x3 median is 0.885 times the noise for white Gaussian noise (tests/test_noise.py):
# dividing by it reports that noise's SD. CT noise is correlated, so on scans this is an index, not an SD.
RESIDUAL_TO_NOISE = 1 / 0.885
SLICES = 8
EROSION = 3  # pixels: stay clear of the pleura and the mask's own edge
MIN_VOXELS = 200


def lung_noise_hu(stored: np.ndarray, lungs: np.ndarray, slope: float = 1.0) -> float | None:
    """Noise SD (HU) of `stored` (x, y, z; HU = stored * slope + intercept) inside the (aerated) `lungs`,
    or None when the lungs are too small to measure it."""
    z = np.flatnonzero(lungs.any(axis=(0, 1)))
    if len(z) == 0:
        return None
    residuals = []
    for k in np.unique(z[np.linspace(0, len(z) - 1, min(SLICES, len(z))).round().astype(int)]):
        mask = lungs[:, :, k] > 0
        box = bounding_box(mask, margin=1)
        inner = ndi.binary_erosion(mask[box], iterations=EROSION)
        if inner.any():
            image = stored[box[0], box[1], k].astype(np.float32)
            residuals.append((image - ndi.median_filter(image, 3))[inner])
    values = np.concatenate(residuals) if residuals else np.zeros(0)
    if values.size < MIN_VOXELS:
        return None
    mad = float(np.median(np.abs(values - np.median(values))))
    return round(MAD_TO_SD * RESIDUAL_TO_NOISE * mad * abs(slope), 1)
