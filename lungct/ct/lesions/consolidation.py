"""Consolidation and atelectasis: dense lung along the pleura, a dependent crescent or a peripheral wedge,
maybe with air bronchograms."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from lungct.ct.lesions.placement import CHEST_WALL, DIAPHRAGM, SPINE, surface_point
from lungct.ct.lesions.scene import Scene
from lungct.ct.lesions.shapes import radial_distance, random_direction, segment_distance
from lungct.ct.lesions.texture import smooth_noise, tissue_texture, upsample

AIR_HU = -900.0  # in the bronchi
BRONCHUS_GENERATIONS = 3  # forks of a bronchogram's tree


def paint_consolidation(scene: Scene, side: int, rng: np.random.Generator) -> None:
    """Paint consolidation into lung `side` from a point on its costal, paravertebral or diaphragmatic pleura:
    a dependent crescent (atelectasis, at the back: thinner and longer) or a peripheral wedge (pneumonia)."""
    params = scene.params
    dependent = rng.random() < params.dependent_prob
    pick = _posterior_quarter(scene.frame.posterior) if dependent else None
    found = surface_point(scene, side, rng, [CHEST_WALL, SPINE, DIAPHRAGM], pick)
    if found is None:
        return
    pleura, normal = found
    depth = rng.uniform(*params.consolidation_depth_mm)
    extent = rng.uniform(*params.consolidation_extent_mm)
    if dependent:
        depth, extent, taper = depth * 0.6, extent * 1.3, 0.0
    else:
        taper = rng.uniform(0.3, 0.8)  # a wedge narrows inwards
    inward = 1.3 * depth + (1.3 * extent) ** 2 / 300  # deepest point: depth plus the sag of a curved wall
    # the box: half of `inward` along the normal about its middle, the extent across
    reach = np.abs(normal) * inward / 2 + np.sqrt(1 - normal ** 2) * extent * 1.3 + 5
    box, grid = scene.crop(pleura - normal * inward / 2, reach)
    grid = [axis_mm - n * inward / 2 for axis_mm, n in zip(grid, normal)]  # offsets from the pleural point
    weight, inside = scene.weights(box, side)
    if weight is None:
        return
    below = _depth_under_pleura(inside, scene)
    wavy = 1 + 0.3 * np.clip(smooth_noise(inside.shape, 12.0, scene.spacing, rng), -1.5, 1)  # undulating
    # depth under the pleura, and distance from the pleural point, in units of the lesion's size
    relative_depth = below / (depth * wavy)
    half_width = extent * wavy * (1 - taper * np.minimum(relative_depth, 1))
    relative_size = np.maximum(relative_depth, radial_distance(grid) / half_width)  # 1 on the margin
    edge_mm = rng.uniform(*params.consolidation_edge_mm)
    alpha = np.clip((1 - relative_size) * depth / edge_mm + 0.5, 0, 1) * weight
    mean_hu = rng.uniform(*params.consolidation_hu)
    sd_hu = rng.uniform(*params.consolidation_sd_hu)
    target = tissue_texture(alpha.shape, mean_hu, sd_hu, 2.5, scene.spacing, scene.noise_hu, rng)
    target = np.maximum(target, scene.image[box])  # vessels stay visible through it
    if rng.random() < params.bronchogram_prob and depth > 8:
        air = _bronchial_tree(scene, grid, alpha, normal, depth, extent, rng)
        # only well inside the consolidation, and short of the pleura
        air *= np.clip((alpha - 0.6) / 0.4, 0, 1) * np.clip((below - 4) / 3, 0, 1)
        air_hu = AIR_HU + scene.noise_hu * smooth_noise(alpha.shape, 0.5, scene.spacing, rng)
        target += air * (air_hu - target)
    if ((alpha >= 0.5) & inside).sum() >= 10:
        placement = "dependent" if dependent else "peripheral"
        scene.paint("consolidation", side, placement, pleura, 2 * extent, box, alpha, target)


def _posterior_quarter(posterior):
    """A surface_point `pick`: the most posterior quarter of the surface (the dependent lung)."""
    def pick(positions):
        return positions @ posterior >= np.quantile(positions @ posterior, 0.75)
    return pick


def _depth_under_pleura(inside: np.ndarray, scene: Scene) -> np.ndarray:
    """Distance (mm) from each lung voxel of a box to the lung's edge; in 3D a box's axes longer than 40
    voxels are taken at every second voxel (the distance transform is the cost) and interpolated back."""
    factor = np.where((np.array(inside.shape) > 40) & (not scene.flat), 2, 1)
    coarse = inside[tuple(slice(None, None, step) for step in factor)]
    return upsample(ndimage.distance_transform_edt(coarse, sampling=scene.spacing * factor), inside.shape)


def _bronchial_tree(scene: Scene, grid, alpha, normal, depth: float, extent: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Air weight over the box (an array like `alpha`): a tree of tubes from deep in the consolidation,
    obliquely towards the pleura, forking BRONCHUS_GENERATIONS times, each branch thinner by a quarter."""
    air = np.zeros_like(alpha)
    across = [0, 0, 1] if scene.flat else random_direction(rng)
    first = normal + 2 * np.cross(normal, across)
    start = -normal * depth * rng.uniform(0.6, 0.9)  # from deep, relative to the pleural point
    stack = [(start, first / np.linalg.norm(first), rng.uniform(*scene.params.bronchus_radius_mm), 0)]
    while stack:
        start, direction, radius, generation = stack.pop()
        end = start + direction * rng.uniform(0.4, 0.8) * max(depth, extent)
        sub, distance, _ = segment_distance(grid, start, end, radius + 4)
        air[sub] = np.maximum(air[sub], np.clip(0.5 - (distance - radius) / scene.spacing[:2].min(), 0, 1))
        for _ in range(2 if generation < BRONCHUS_GENERATIONS else 0):
            # on a slice the branches stay in its plane
            bent = direction + rng.uniform(0.3, 0.6) * random_direction(rng, scene.flat, 0)
            stack.append((end, bent / np.linalg.norm(bent), radius * 0.75, generation + 1))
    return air
