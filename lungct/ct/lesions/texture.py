"""Correlated noise for lesion texture and outlines, and the texture a painted lesion is filled with."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def smooth_noise(shape, sigma_mm: float, spacing, rng: np.random.Generator) -> np.ndarray:
    """Unit-sd noise correlated over `sigma_mm` (a gaussian's sigma); an axis one voxel long stays white.

    Wide fields are drawn on a grid coarser by up to sigma / 2 and interpolated back: filtering the full
    grid with a wide gaussian costs far more and looks the same.
    """
    sigma = np.array([sigma_mm / step if n > 1 else 0.0 for step, n in zip(spacing, shape)])
    factor = np.maximum(1, sigma // 2).astype(int)
    # ceil(n / k) samples, and one more when coarser so that the last sample lies beyond the grid's end
    coarse_shape = tuple(-(-n // k) + (k > 1) for n, k in zip(shape, factor))
    white = rng.standard_normal(coarse_shape, dtype=np.float32)
    field = upsample(ndimage.gaussian_filter(white, sigma / factor, truncate=3.0), shape)
    return (field - field.mean()) / (field.std() + 1e-6)


def upsample(array: np.ndarray, shape) -> np.ndarray:
    """Linear interpolation onto `shape`, corners aligned, an axis at a time (ndimage.zoom is far slower)."""
    for axis, n in enumerate(shape):
        if array.shape[axis] == n:
            continue
        length = array.shape[axis]
        position = np.linspace(0, length - 1, n)
        below = np.minimum(position.astype(int), max(length - 2, 0))
        weight_shape = [-1 if other == axis else 1 for other in range(array.ndim)]
        weight = (position - below).reshape(weight_shape).astype(np.float32)
        above = np.minimum(below + 1, length - 1)
        array = np.take(array, below, axis) * (1 - weight) + np.take(array, above, axis) * weight
    return array


def tissue_texture(shape, mean_hu: float, sd_hu: float, correlation_mm: float, spacing, scan_noise_hu: float,
                   rng: np.random.Generator) -> np.ndarray:
    """HU of painted tissue: `mean_hu` plus correlated texture plus grain like the scan's own noise, whose
    sds add up to `sd_hu` (the texture keeps at least 4 HU), so a lesion is no smoother than its scan."""
    texture_sd = np.sqrt(max(sd_hu ** 2 - scan_noise_hu ** 2, 16.0))
    texture = smooth_noise(shape, correlation_mm, spacing, rng)
    grain = smooth_noise(shape, 0.4 * spacing[:2].min(), spacing, rng)
    return mean_hu + texture_sd * texture + scan_noise_hu * grain
