"""Separating air objects that touch through thin necks: the two lungs at a junction line, a lung and
stomach gas through a partial-volume diaphragm. Seeds are the objects eroded by a few mm; every voxel
joins its nearest seed within its own connected component (a seeded region growing)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from lungct.morphology import bounding_box, erode_mm


def split_objects(mask: np.ndarray, spacing, radius_mm: float, core: np.ndarray | None = None):
    """(label map, count, seed map) cutting the mask at necks narrower than 2 x radius_mm.

    Seeds are the `core` voxels (default: the mask) eroded by radius_mm; every voxel of the mask joins
    its nearest seed inside its own connected component; parts with no seed keep a label of their own.
    A stricter `core` threshold cuts what partial volume glues together, such as lung and stomach gas
    through a diaphragm averaged into a thick slice.
    """
    out = np.zeros(mask.shape, np.int32)
    seed_map = np.zeros(mask.shape, bool)
    box = bounding_box(mask)
    if not mask.any():
        return out, 0, seed_map
    sub = mask[box]
    components, _ = ndi.label(sub)
    # Farther than radius_mm from the outside (the box's border counts as outside): an erosion.
    seeds, n_seeds = ndi.label(erode_mm(sub if core is None else sub & core[box], radius_mm, spacing))
    seed_map[box] = seeds > 0
    labels = np.zeros(sub.shape, np.int32)
    if n_seeds:
        nearest = ndi.distance_transform_edt(seeds == 0, sampling=spacing, return_distances=False,
                                             return_indices=True)
        nearest = tuple(nearest[:, sub])  # only the mask's voxels are labelled
        owner = seeds[nearest]
        labels[sub] = np.where(components[nearest] == components[sub], owner, 0)
        del nearest, owner
    leftover = sub & (labels == 0)
    rest, n_rest = ndi.label(leftover)
    labels[leftover] = rest[leftover] + n_seeds
    out[box] = labels
    return out, n_seeds + n_rest, seed_map


def _depth_mm(mask: np.ndarray, spacing, single_slice: bool) -> np.ndarray:
    """Distance (mm) from each voxel to the outside of `mask`; the box's border counts as outside.

    In a single-slice image the slice's two faces are not a border: depth is measured in-plane, else
    every voxel lies within one slice thickness of the outside and no erosion ever leaves a seed.
    """
    pad = [(1, 1), (1, 1), (0, 0) if single_slice else (1, 1)]
    inner = tuple(slice(before, before + n) for (before, _), n in zip(pad, mask.shape))
    return ndi.distance_transform_edt(np.pad(mask, pad), sampling=spacing)[inner]


def split_in_two(obj: np.ndarray, spacing, start_mm: float, stop_mm: float, step_mm: float = 2.0,
                 min_fraction: float = 0.1) -> np.ndarray | None:
    """Labels 1/2 for an object eroded until it falls into two big parts, or None if it never does."""
    box = bounding_box(obj)
    sub = obj[box]
    distance = _depth_mm(sub, spacing, single_slice=obj.shape[2] == 1)
    radius = start_mm
    while radius <= stop_mm:
        seeds, count = ndi.label(distance > radius)
        if count >= 2:
            sizes = np.bincount(seeds.ravel())
            sizes[0] = 0
            first, second = np.argsort(sizes)[::-1][:2]
            if sizes[second] >= min_fraction * sizes[first]:
                two = np.where(seeds == first, 1, np.where(seeds == second, 2, 0))
                nearest = ndi.distance_transform_edt(two == 0, sampling=spacing, return_distances=False,
                                                     return_indices=True)
                out = np.zeros(obj.shape, np.uint8)
                out[box] = np.where(sub, two[tuple(nearest)], 0)
                return out
        radius += step_mm
    return None
