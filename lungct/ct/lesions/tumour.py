"""Tumours: lobulated, rough, maybe spiculated soft-tissue masses, most against the pleura (chest wall,
mediastinum, spine or diaphragm) where a model trained on aerated lung carves them out worst."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from lungct.ct.lesions.params import PLACEMENTS
from lungct.ct.lesions.placement import surface_point
from lungct.ct.lesions.scene import Scene
from lungct.ct.lesions.shapes import radial_distance, random_direction, segment_distance, tumour_outline
from lungct.ct.lesions.texture import tissue_texture

ATTEMPTS = 12  # places tried before giving up on a tumour
INTRAPULMONARY = "intrapulmonary"  # the placement of a tumour surrounded by lung


def paint_tumour(scene: Scene, side: int, rng: np.random.Generator) -> None:
    """Paint a tumour into lung `side`, if one fits within ATTEMPTS tries.

    A juxtapleural tumour overlaps the pleura by a share of its radius and is clipped flat by it (paint
    stops at the lung's partial-volume rim); an intrapulmonary one must be surrounded by lung. On a slice
    the tumour is the cut through a sphere, off its centre.
    """
    params = scene.params
    juxtapleural = rng.random() < params.juxtapleural_prob
    radius = float(np.exp(rng.uniform(*np.log(np.asarray(params.diameter_mm) / 2))))  # log-uniform
    placement = None
    if juxtapleural:
        shown = np.isin(np.arange(len(PLACEMENTS)), scene.surface(side).placements)
        if not shown.any():
            return
        weights = np.multiply(params.placement_probs, shown)
        placement = int(rng.choice(len(PLACEMENTS), p=weights / weights.sum()))
    for attempt in range(ATTEMPTS):
        cut = rng.uniform(-0.7, 0.7) * radius * scene.flat  # the slice's distance from the centre (3D: 0)
        cut_radius = np.sqrt(radius * radius - cut ** 2)
        if juxtapleural:
            found = surface_point(scene, side, rng, [placement])
            if found is None:
                continue
            pleura, normal = found
            beyond = max(1.0, rng.uniform(*params.pleural_overlap) * cut_radius)  # mm past the pleura
            centre = pleura - normal * (cut_radius - beyond) + [0, 0, cut]
        else:  # anywhere in a lung voxel of the analysis grid
            voxel = rng.choice(np.argwhere(scene.analysis_labels == side))
            centre = scene.analysis_spacing * (voxel + rng.random(3) * (scene.stride > 1)) + [0, 0, cut]
        spicules = 0
        if rng.random() < params.spiculated_prob:
            spicules = rng.integers(params.spicules[0], params.spicules[1] + 1)
        # room for the lobes (up to 1.4 radii) and the rough edge, and for spicules
        reach = radius * 1.64 + (params.spicule_length_mm[1] + radius * 0.2) * (spicules > 0) + 3
        box, grid = scene.crop(centre, reach)
        weight, inside = scene.weights(box, side)
        crowded = weight is None or not juxtapleural and (radial_distance(grid) < 1.1 * radius)[~inside].any()
        if crowded:  # no room here: look elsewhere, shrink now and then
            if attempt % 3 == 2:
                radius *= 0.85
            continue
        distance, outline, signed_distance, ramp = tumour_outline(grid, radius, scene.spacing, params, rng)
        if not juxtapleural and (signed_distance < ramp / 2)[~inside].any():
            continue
        alpha = np.clip(0.5 - signed_distance / ramp, 0, 1)
        mean_hu = rng.uniform(*params.tumour_hu)
        sd_hu = rng.uniform(*params.texture_sd_hu)
        correlation_mm = rng.uniform(*params.texture_mm)
        target = tissue_texture(distance.shape, mean_hu, sd_hu, correlation_mm,
                                scene.spacing, scene.noise_hu, rng)
        _add_spicules(scene, alpha, grid, ramp, spicules, radius, cut_radius, cut, rng)
        if rng.random() < params.necrosis_prob:  # a low-density core
            drop_hu = rng.uniform(*params.necrosis_drop_hu)
            core = outline * rng.uniform(0.3, 0.6)
            target -= drop_hu * np.clip((core - distance) / 3 + 0.5, 0, 1)
        alpha = alpha * weight
        expected = np.pi * cut_radius * cut_radius if scene.flat else 4 / 3 * np.pi * radius ** 3
        lesion = (alpha >= 0.5) & inside
        painted = lesion.sum() * np.prod(scene.spacing[:3 - scene.flat])  # mm2 on a slice, mm3 in 3D
        if painted < expected / 4:
            continue  # no room: try again
        if juxtapleural and not (ndimage.binary_dilation(lesion, scene.connectivity) & ~inside).any():
            continue  # it must reach the pleura
        name = PLACEMENTS[placement] if juxtapleural else INTRAPULMONARY
        scene.paint("tumour", side, name, centre, 2 * radius, box, alpha, target)
        return


def _add_spicules(scene: Scene, alpha, grid, ramp, count: int, radius: float, cut_radius: float, cut: float,
                  rng: np.random.Generator) -> None:
    """Raise `alpha` along `count` thin strands from inside the outline outwards, tapering to a third of
    their width; on a slice, near its plane so that they show."""
    params = scene.params
    directions = [random_direction(rng, scene.flat, 0.2) for _ in range(count)]
    for direction in directions:
        start = direction * cut_radius * 0.8 - [0, 0, cut]
        length = radius * 0.2 + rng.uniform(*params.spicule_length_mm)
        sub, distance, position = segment_distance(grid, start, start + direction * length, 3.0)
        width = rng.uniform(*params.spicule_width_mm) * (1 - 0.67 * position)
        spike = np.clip(0.5 - (distance - width / 2) / ramp[sub], 0, 1)
        alpha[sub] = np.maximum(alpha[sub], rng.uniform(0.6, 1.0) * spike)
