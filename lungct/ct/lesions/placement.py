"""Where on a lung's surface a lesion goes: the surface by placement (PLACEMENTS: chest wall, mediastinum,
spine, diaphragm) and a random point on it, on the full grid."""
from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

from lungct.ct.lesions.params import PLACEMENTS

if TYPE_CHECKING:
    from lungct.ct.lesions.scene import Scene

CHEST_WALL, MEDIASTINUM, SPINE, DIAPHRAGM = range(len(PLACEMENTS))  # indices into PLACEMENTS


class Surface(NamedTuple):
    """A lung's surface voxels on the analysis grid."""
    positions: np.ndarray  # (n, 3) mm
    normals: np.ndarray  # (n, 3) unit, outwards
    placements: np.ndarray  # (n,) index into PLACEMENTS


def classify_surface(scene: Scene, side: int) -> Surface:
    """Surface voxels of lung `side` with their outward normals and placements.

    Near the vertebra on its slice: spine; near the lungs' axial convex hull: chest wall; deeper, facing
    or near the midline: mediastinum, else chest wall again. Diaphragm: in 3D the lower lung's surface
    facing the feet, on a slice what is deep in the hull and lateral (the dome cut across).
    """
    params, grid_mm, frame = scene.params, scene.analysis_spacing, scene.frame
    # holes (vessels) are no pleura, nor is where the scan's field of view cuts the lung
    lung = ndimage.binary_fill_holes(scene.analysis_labels == side, scene.connectivity)
    edge = lung & ~ndimage.binary_erosion(lung, scene.connectivity, border_value=1)
    index = np.argwhere(edge)
    axes = np.flatnonzero(np.array(lung.shape) > 1)
    normals = np.zeros((len(index), 3))
    smooth = ndimage.gaussian_filter(lung * np.float32(1), [1.0 * (n > 1) for n in lung.shape])
    gradients = np.gradient(smooth, *grid_mm[axes], axis=tuple(axes))
    normals[:, axes] = -np.stack([gradient[tuple(index.T)] for gradient in gradients], 1)
    positions = index * grid_mm
    normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-9)

    from_spine = (positions - frame.spine[index[:, 2] * scene.stride[2]]) * [1, 1, 0]  # in-plane
    spine = ((np.linalg.norm(from_spine, axis=1) < params.paravertebral_mm)
             & (from_spine @ frame.posterior > -0.7 * params.paravertebral_mm))
    costal = hull_depth(scene, positions) < params.hull_mm
    towards_midline = frame.left_right if side == 1 else -frame.left_right
    lung_offset = abs((frame.lung_centres.get(side, frame.midline) - frame.midline) @ frame.left_right)
    # facing the midline, or nearer to it than the lung's centre
    medial = ((normals @ towards_midline > 0)
              | (np.abs((positions - frame.midline) @ frame.left_right) < lung_offset))
    if scene.flat:
        diaphragm = ~costal & ~medial
    else:
        towards_feet = positions @ frame.inferior
        # the lowest 40 % of the surface (a hilar vessel's underside is no diaphragm)
        low = towards_feet >= np.quantile(towards_feet, 0.6) if len(positions) else 0
        diaphragm = (normals @ frame.inferior > params.diaphragm_cos) & low
    placements = np.where(diaphragm, DIAPHRAGM, np.where(spine, SPINE, np.where(
        costal | ~medial, CHEST_WALL, MEDIASTINUM)))
    return Surface(positions, normals, placements)


def hull_depth(scene: Scene, positions: np.ndarray) -> np.ndarray:
    """How deep (mm) inside the convex hull of both lungs on its axial slice each position lies."""
    slices = np.round(positions[:, 2] / scene.analysis_spacing[2]).astype(int)
    depth = np.zeros(len(positions))
    for k in np.unique(slices):
        lungs = scene.analysis_labels[:, :, k] > 0
        rows = np.flatnonzero(lungs.any(1))  # the hull of each row's two ends is the hull of the lungs
        first = np.stack([rows, lungs[rows].argmax(1)], 1)
        last = np.stack([rows, lungs.shape[1] - 1 - lungs[rows, ::-1].argmax(1)], 1)
        ends = np.concatenate([first, last]) * scene.analysis_spacing[:2]
        if np.linalg.matrix_rank(ends - ends[0]) > 1:
            planes = ConvexHull(ends).equations  # (normal x, normal y, offset): outward normals, inside < 0
        else:
            planes = np.zeros((1, 3))
        on_slice = slices == k
        depth[on_slice] = np.min(-(positions[on_slice, :2] @ planes[:, :2].T + planes[:, 2]), axis=1)
    return depth


def surface_point(scene: Scene, side: int, rng: np.random.Generator, placements, pick=None):
    """(A random point of lung `side`'s surface among `placements` (indices), outward normal), or None.

    `pick`, if given, takes the surface positions and says which may be chosen. The point found on the
    analysis grid is moved along its normal onto the last lung voxel of the full grid.
    """
    surface = scene.surface(side)
    allowed = np.isin(surface.placements, placements) & (True if pick is None else pick(surface.positions))
    candidates = np.flatnonzero(allowed)
    if not len(candidates):
        return None
    steps = np.arange(-8, 9)[:, None] / 4 * scene.analysis_spacing.max()  # +-2 analysis voxels, mm
    for i in rng.choice(candidates, size=min(5, len(candidates)), replace=False):
        line = surface.positions[i] + steps * surface.normals[i]
        voxels = np.round(line / scene.spacing).astype(int)
        clipped = np.clip(voxels, 0, np.array(scene.labels.shape) - 1)
        inside = np.append(scene.labels[tuple(clipped.T)] == side, False)
        if inside.any():  # the last lung voxel of the first run along the normal
            first = np.argmax(inside)
            last = first + np.argmax(~inside[first:]) - 1
            return voxels[last] * scene.spacing, surface.normals[i]
    return None
