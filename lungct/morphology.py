"""Binary morphology that stays cheap on a full chest CT (DESIGN.md §7: full-grid balls are the trap).

Radii are in millimetres. Hole filling works per axial slice through one labelling pass; dilation
uses a distance transform, which gives exact radii on anisotropic grids and costs the same for any radius.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

IN_PLANE = np.zeros((3, 3, 3), bool)
IN_PLANE[:, :, 1] = ndi.generate_binary_structure(2, 1)


def fill_holes_2d(mask: np.ndarray) -> np.ndarray:
    """Fill holes in every axial slice (z = last axis): background not connected to the slice border."""
    background, _ = ndi.label(~mask, structure=IN_PLANE)
    border = np.unique(np.concatenate([background[0].ravel(), background[-1].ravel(),
                                       background[:, 0].ravel(), background[:, -1].ravel()]))
    return mask | ~np.isin(background, border[border > 0]) & (background > 0)


def largest_component(mask: np.ndarray, structure=None) -> np.ndarray:
    labels, count = ndi.label(mask, structure=structure)
    if count <= 1:
        return mask.copy() if count else np.zeros_like(mask)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def dilate_mm(mask: np.ndarray, radius_mm: float, spacing, in_plane: bool = False) -> np.ndarray:
    """Dilation by a ball (or an axial disc when `in_plane`) of radius_mm, via a distance transform."""
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    box = bounding_box(mask, margin=[int(np.ceil(radius_mm / s)) + 1 for s in spacing])
    sampling = list(spacing)
    if in_plane:
        sampling[2] = 1e6  # neighbours in other slices are never nearer than the radius
    out = np.zeros_like(mask)
    out[box] = ndi.distance_transform_edt(~mask[box], sampling=sampling) <= radius_mm
    return out


def erode_mm(mask: np.ndarray, radius_mm: float, spacing, in_plane: bool = False) -> np.ndarray:
    if radius_mm <= 0 or not mask.any():
        return mask.copy()
    box = bounding_box(mask, margin=1)
    sampling = list(spacing)
    if in_plane:
        sampling[2] = 1e6
    out = np.zeros_like(mask)
    padded = np.pad(mask[box], 1)
    out[box] = (ndi.distance_transform_edt(padded, sampling=sampling) > radius_mm)[1:-1, 1:-1, 1:-1]
    return out


def close_mm(mask: np.ndarray, radius_mm: float, spacing, in_plane: bool = False) -> np.ndarray:
    return erode_mm(dilate_mm(mask, radius_mm, spacing, in_plane), radius_mm, spacing, in_plane) | mask


def bounding_box(mask: np.ndarray, margin=0) -> tuple[slice, ...]:
    """Slices of the smallest box holding the mask, grown by `margin` voxels (per axis or one number)."""
    margins = np.broadcast_to(np.asarray(margin, dtype=int), (mask.ndim,))
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        if len(hits) == 0:
            return tuple(slice(0, 0) for _ in range(mask.ndim))
        box.append(slice(max(0, hits[0] - margins[axis]), min(mask.shape[axis], hits[-1] + margins[axis] + 1)))
    return tuple(box)


def analysis_strides(spacing, analysis_spacing_mm: float, shape) -> tuple[int, int, int]:
    """Integer strides that bring a grid near `analysis_spacing_mm` (single-slice axes stay 1)."""
    return tuple(1 if n == 1 else max(1, int(round(analysis_spacing_mm / s))) for s, n in zip(spacing, shape))


def upsample_nearest(coarse: np.ndarray, strides, shape) -> np.ndarray:
    """Each fine voxel takes the value of the coarse voxel whose sample it was nearest to."""
    index = [np.minimum((np.arange(n) + st // 2) // st, c - 1) for n, st, c in zip(shape, strides, coarse.shape)]
    return coarse[np.ix_(*index)]
