"""What the synthesis draws from (LesionParams) and what it reports (Lesion).

Millimetres and HU throughout. Recipes set LesionParams fields by name (augment.lesions.params), so the
names and defaults are part of the recipe format.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PLACEMENTS = ("chest_wall", "mediastinum", "spine", "diaphragm")


@dataclass(frozen=True)
class LesionParams:
    """Every constant of the synthesis; (low, high) pairs are drawn uniformly unless said otherwise."""
    count_probs: tuple = (0.1, 0.45, 0.3, 0.15)  # P(0, 1, 2, 3 lesions) per image
    tumour_prob: float = 0.7  # a lesion is a tumour, else consolidation/atelectasis
    effusion_prob: float = 0.08  # per lung: a dependent effusion replacing its posterior part
    diameter_mm: tuple = (8.0, 60.0)  # tumour (a sphere before lobulation), log-uniform: small ones commoner
    juxtapleural_prob: float = 0.65  # tumours placed against the pleura; the rest surrounded by lung
    pleural_overlap: tuple = (0.15, 0.45)  # share of the radius past the pleura: higher = broader base
    placement_probs: tuple = (0.4, 0.25, 0.2, 0.15)  # in PLACEMENTS' order, over those shown
    tumour_hu: tuple = (0.0, 60.0)  # mean density (soft tissue)
    texture_sd_hu: tuple = (15.0, 40.0)  # total sd inside: correlated texture plus the scan's own noise
    texture_mm: tuple = (1.5, 4.0)  # correlation length (gaussian sigma) of that texture
    lobes: tuple = (3, 8)  # smooth bumps on the radius (lobulation), integers
    lobe_amplitude: tuple = (0.08, 0.3)  # their height, fraction of the radius, either sign
    lobe_sharpness: tuple = (3.0, 12.0)  # their von Mises concentration: higher = narrower
    roughness: float = 0.08  # sd of the outline's noise (two octaves), fraction of the radius
    spiculated_prob: float = 0.5  # tumours with spicules
    spicules: tuple = (4, 12)  # how many, integers
    spicule_length_mm: tuple = (4.0, 18.0)  # beyond the surface
    spicule_width_mm: tuple = (0.8, 1.8)  # at the base; they taper to a third
    necrosis_prob: float = 0.2  # a low-density core
    necrosis_drop_hu: tuple = (15.0, 45.0)  # how much lower the core is
    pleural_margin_mm: float = 1.5  # tissue outside the lung a lesion may blend into (image, never labels)
    consolidation_hu: tuple = (-100.0, 40.0)  # mean density; brighter vessels stay visible through it
    consolidation_sd_hu: tuple = (10.0, 30.0)  # its texture sd
    consolidation_depth_mm: tuple = (10.0, 45.0)  # from the pleura inwards (x 0.6 when dependent)
    consolidation_extent_mm: tuple = (20.0, 60.0)  # half-width along the pleura (x 1.3 when dependent)
    consolidation_edge_mm: tuple = (1.5, 5.0)  # inner margin's blur: sharp atelectasis .. fuzzy pneumonia
    dependent_prob: float = 0.5  # consolidation at the posterior (dependent) pleura, a crescent; else a wedge
    bronchogram_prob: float = 0.5  # consolidation with air bronchograms
    bronchus_radius_mm: tuple = (0.8, 2.0)  # of the first branch; each fork shrinks it by 0.75
    effusion_hu: tuple = (0.0, 20.0)  # fluid
    effusion_thickness_mm: tuple = (8.0, 40.0)  # most dependent point (at most 40 % of the lung's depth)
    effusion_meniscus: tuple = (0.3, 0.8)  # 1 = flat gravity level; lower climbs the walls as a crescent
    bone_hu: float = 150.0  # spine; tissue a lesion never blends into
    midline_band_mm: float = 15.0  # half-width of the midline band where the spinal canal is sought
    paravertebral_mm: float = 50.0  # lung surface this near the vertebral body's centre is the spine gutter
    hull_mm: float = 8.0  # surface this near the lungs' axial hull is costal; deeper: medial or dome
    diaphragm_cos: float = 0.5  # 3D: lower-lung surface facing the feet within 60 degrees is diaphragmatic
    analysis_mm: float = 3.0  # 3D: grid on which lung surfaces are found and classified


@dataclass
class Lesion:
    """One painted lesion (for coverage measurements); box, alpha and mask cover its footprint only."""
    kind: str  # "tumour", "consolidation" or "effusion"
    side: int  # 1 = right lung, 2 = left lung
    placement: str  # PLACEMENTS or "intrapulmonary"; consolidation: "dependent"/"peripheral"; "posterior"
    centre_mm: np.ndarray  # voxel index * spacing
    diameter_mm: float  # tumour size, 2 x consolidation extent, effusion thickness
    box: tuple  # slices of the image
    alpha: np.ndarray  # blending weight over box: the image changed only where > 0
    mask: np.ndarray  # lesion voxels over box (effusion: the lung turned background)
