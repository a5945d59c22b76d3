"""Lesion geometry: random directions, tubes along a segment (spicules, bronchi) and a tumour's outline.

Shapes are measured on a box's grid: three broadcastable arrays (x, y, z) of offsets in mm from a centre,
as Scene.crop gives them.
"""
from __future__ import annotations

import numpy as np

from lungct.ct.lesions.params import LesionParams
from lungct.ct.lesions.texture import smooth_noise


def random_direction(rng: np.random.Generator, flat: bool = False, z_scale: float = 1.0) -> np.ndarray:
    """A random unit vector; on a slice (`flat`) its z part is scaled by `z_scale` first, so that a
    direction meant to show on the slice stays near its plane."""
    direction = rng.standard_normal(3) * (1, 1, z_scale if flat else 1)
    return direction / np.linalg.norm(direction)


def radial_distance(grid) -> np.ndarray:
    """Distance (mm) from the grid's origin."""
    return np.sqrt(sum(axis_mm ** 2 for axis_mm in grid))


def segment_distance(grid, start, end, reach: float):
    """Distance (mm) to the segment start-end and the position along it (0 at start, 1 at end), on the part
    of `grid` within `reach` mm of the segment's bounding box: (that sub-box's slices, distance, position)."""
    sub = []
    for i, axis_mm in enumerate(grid):
        low, high = min(start[i], end[i]) - reach, max(start[i], end[i]) + reach
        sub.append(slice(*np.searchsorted(axis_mm.ravel(), [low, high])))
    sub = tuple(sub)
    offsets = []  # from the start, on the sub-box, each along its own axis
    for i, axis_mm in enumerate(grid):
        index = tuple(part if j == i else slice(None) for j, part in enumerate(sub))
        offsets.append(axis_mm[index] - start[i])
    step = end - start
    position = np.clip(sum(o * s for o, s in zip(offsets, step)) / (step @ step), 0.0, 1.0)
    distance = np.sqrt(sum((o - position * s) ** 2 for o, s in zip(offsets, step)))
    return sub, distance, position


def tumour_outline(grid, radius_mm: float, spacing, params: LesionParams, rng: np.random.Generator):
    """A lobulated, rough outline about the grid's origin.

    Returns the distance from the origin, the outline's radius along each voxel's direction (lobes only),
    the signed distance to the rough outline (negative inside) and the partial-volume ramp: the extent of a
    voxel along the radius, over which the outline blends into its surroundings (all mm).
    """
    x, y, z = grid
    distance = np.maximum(np.sqrt(x ** 2 + y ** 2 + z ** 2), 1e-3)
    radius = np.ones_like(distance)  # in units of radius_mm
    for _ in range(rng.integers(params.lobes[0], params.lobes[1] + 1)):  # von Mises bumps on the sphere
        axis = random_direction(rng)
        kappa = rng.uniform(*params.lobe_sharpness)
        amplitude = rng.uniform(*params.lobe_amplitude)
        sign = rng.choice([-1, 1])
        cosine = (x * axis[0] + y * axis[1] + z * axis[2]) / distance
        radius += amplitude * sign * np.exp(kappa * (cosine - 1))
    coarse = smooth_noise(distance.shape, max(radius_mm / 4, 1.5), spacing, rng)
    fine = smooth_noise(distance.shape, max(radius_mm / 10, 1.0), spacing, rng)
    roughness = (coarse + 0.6 * fine) * params.roughness * radius_mm  # two octaves
    voxel_mm = np.sqrt((x * spacing[0]) ** 2 + (y * spacing[1]) ** 2 + (z * spacing[2]) ** 2) / distance
    ramp = np.maximum(voxel_mm, spacing.min())
    radius = radius_mm * np.clip(radius, 0.5, 1.4)
    return distance, radius, distance - radius - roughness, ramp
