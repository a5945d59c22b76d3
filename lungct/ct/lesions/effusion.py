"""Pleural effusion: fluid layering against the posterior chest wall, replacing the dependent lung, which
turns background (fluid is outside the lung)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from lungct.ct.lesions.params import Lesion
from lungct.ct.lesions.scene import Scene
from lungct.ct.lesions.texture import tissue_texture


def paint_effusion(scene: Scene, side: int, rng: np.random.Generator) -> None:
    """Replace the posterior part of lung `side` (one with voxels) by fluid and unlabel it.

    The fluid's level follows the posterior wall (its most posterior lung, smoothed along it), rises up
    the walls as a meniscus and swallows the small dark islands by it (lung the labels missed). Nothing is
    painted if it would take no voxel or over 60 % of the lung.
    """
    params, spacing, frame = scene.params, scene.spacing, scene.frame
    index = np.argwhere(scene.labels == side)
    positions = index * spacing
    depth = positions @ frame.posterior  # larger is more dependent
    lateral = positions @ frame.left_right
    # anterior-posterior lines: one per lateral position (a voxel apart) and slice
    lines = np.round((lateral - lateral.min()) / spacing[:2].min()).astype(int), index[:, 2]
    wall = np.full((lines[0].max() + 1, scene.labels.shape[2]), -np.inf)
    np.maximum.at(wall, lines, depth)  # the most posterior lung on each line, then smoothed along the wall
    known, sigma = np.isfinite(wall), [3 / spacing[:2].min(), 3 / spacing[2] * (not scene.flat)]
    weights = ndimage.gaussian_filter(known + 1e-9, sigma)  # lines without lung do not count
    wall = (ndimage.gaussian_filter(np.where(known, wall, 0), sigma) / weights)[lines]
    thickness = min(rng.uniform(*params.effusion_thickness_mm), 0.4 * np.ptp(depth))
    # from `thickness` in from the wall (meniscus 0: a crescent up the walls) to a flat gravity level (1)
    level = wall - thickness + rng.uniform(*params.effusion_meniscus) * (depth.max() - wall)
    ramp = np.sqrt(((frame.posterior * spacing) ** 2).sum())  # a voxel's extent along posterior
    wetness = np.clip((depth - level) / ramp + 0.5, 0, 1)

    wet = index[wetness > 0]  # never empty: the most dependent voxel lies beyond the level
    box_centre = (wet.min(0) + wet.max(0)) * spacing / 2
    box = scene.crop(box_centre, (np.ptp(wet, 0) / 2 + 4) * spacing)[0]  # room for the wall's partial volume
    alpha = np.zeros(scene.labels[box].shape, np.float32)
    alpha[tuple((wet - [part.start for part in box]).T)] = wetness[wetness > 0]
    fluid = alpha >= 0.5
    if not fluid.any() or fluid.sum() > 0.6 * len(index):
        return

    labels, image = scene.labels[box], scene.image[box]  # views: painted in place
    dark, count = ndimage.label((image < -100) & ((labels == 0) | (labels == side) & ~fluid))
    reach = max(1, round(3.0 / spacing[:2].min()))  # 3 mm
    near = np.unique(dark[ndimage.binary_dilation(fluid, scene.connectivity, iterations=reach)])
    sizes = np.bincount(dark.ravel(), minlength=count + 1)
    near = near[(near > 0) & (sizes[near] < 0.2 * fluid.sum())]
    swallowed = np.isin(dark, near)
    alpha[swallowed] = 1.0
    fluid = fluid | swallowed & (labels == side)
    mean_hu = rng.uniform(*params.effusion_hu)
    target = tissue_texture(alpha.shape, mean_hu, max(scene.noise_hu, 6.0), 3.0, spacing, scene.noise_hu, rng)
    image += alpha * (target - image)
    labels[fluid] = 0
    centre = positions[wetness >= 0.5].mean(0)
    scene.records.append(Lesion("effusion", side, "posterior", centre, thickness, box, alpha, fluid))
