"""Opacities painted inside the lung fields of a radiograph, the label left as the whole field.

Why: trained on clean films, the model learnt "lung = dark air" and segmented an opacified field as its
remaining air only. Here consolidation, ground glass, patchy (COVID-like) shadows, white-out and
effusion brighten a field towards soft tissue while its label stays lung, so the model learns fields,
not air. Arrays as after ResizePadd (lungct.cxr.field_geometry); all randomness from `rng`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungct.cxr.field_geometry import (Field, blur, bounding_box, lung_fields, smooth_texture, smoothstep,
                                       soft_tissue_level)


@dataclass
class OpacityParams:
    p_consolidation: float = 0.35  # dense patchy white regions, mostly lower and peripheral
    consolidation_strength: tuple = (0.55, 0.95)  # peak fraction of the way to soft-tissue brightness
    consolidation_blobs: tuple = (1, 3)  # patches per affected field (inclusive)
    p_ground_glass: float = 0.3  # mild haze, weak enough that vessels stay visible
    ground_glass_strength: tuple = (0.15, 0.45)
    p_patchy: float = 0.3  # diffuse bilateral patchy shadows, peripheral and basal (COVID-like)
    patchy_strength: tuple = (0.4, 0.9)
    p_whiteout: float = 0.2  # a lobe or a whole field nearly as bright as soft tissue (the failure case)
    whiteout_strength: tuple = (0.85, 1.0)
    whiteout_whole: float = 0.5  # share of white-outs taking the whole field (else a lower/upper part)
    p_effusion: float = 0.15  # basal haze, meniscus rising laterally, costophrenic angle blunted
    effusion_strength: tuple = (0.65, 0.95)
    p_bilateral: float = 0.35  # consolidation / effusion in both fields rather than one
    spill_sigma: float = 2.0  # px: opacity fades out within ~2 sigma outside the field edge (blurred border)
    detail_keep: float = 0.35  # share of fine detail (ribs, vessels) still seen through a full opacity


def _consolidation(rng, field: Field, params: OpacityParams) -> np.ndarray:
    """1-3 blotchy patches (ellipses roughened by texture), centred mostly in lower and peripheral zones."""
    ys, xs = np.nonzero(field.part)
    weights = ((0.15 + field.vertical[ys, 0]) ** 2 * (0.25 + field.lateral[0, xs])).astype(np.float64)
    envelope = np.zeros(field.part.shape, np.float32)
    blobs = params.consolidation_blobs
    for _ in range(int(rng.integers(blobs[0], blobs[1] + 1))):
        centre = rng.choice(len(ys), p=weights / weights.sum())
        radius_rows = field.height * rng.uniform(0.12, 0.35)
        radius_cols = field.width * rng.uniform(0.25, 0.6)
        angle = rng.uniform(0, np.pi)
        dy, dx = field.rows - ys[centre], field.cols - xs[centre]
        along = (dy * np.cos(angle) + dx * np.sin(angle)) / radius_rows
        across = (dx * np.cos(angle) - dy * np.sin(angle)) / radius_cols
        envelope = np.maximum(envelope, np.exp(-0.5 * (along * along + across * across)))
    blotchy = envelope + 0.3 * smooth_texture(rng, field.part.shape) - 0.3  # ill-defined, lobulated margins
    return rng.uniform(*params.consolidation_strength) * smoothstep(blotchy / 0.6)


def _whiteout(rng, field: Field, params: OpacityParams) -> np.ndarray:
    """The whole field, or the part below (70 %) or above a wavy fissure-like edge, almost soft tissue."""
    strength = rng.uniform(*params.whiteout_strength)
    texture = smooth_texture(rng, field.part.shape, cells=(3, 8, 20), weights=(1.0, 0.6, 0.3))
    if rng.random() < params.whiteout_whole:
        return strength * np.clip(0.94 + 0.06 * texture, 0, 1)
    lower = rng.random() < 0.7
    edge = (rng.uniform(0.35, 0.65) if lower else rng.uniform(0.35, 0.55)) + 0.06 * texture
    beyond_edge = (field.vertical - edge) if lower else (edge - field.vertical)
    return strength * smoothstep(beyond_edge / 0.12) * np.clip(0.92 + 0.08 * texture, 0, 1)


def _effusion(rng, field: Field, params: OpacityParams) -> np.ndarray:
    """A fluid level with a meniscus rising laterally over the costophrenic angle; supine (1 in 3), fluid
    layering behind the lung instead: a veil thickening towards the base."""
    strength = rng.uniform(*params.effusion_strength)
    if rng.random() < 1 / 3:
        return 0.7 * strength * np.clip(field.vertical, 0, 1) ** 1.5
    medial_height = rng.uniform(0.06, 0.3)  # shares of the field's height
    meniscus_rise = rng.uniform(0.1, 0.3)
    level = field.bottom - field.height * (medial_height + meniscus_rise * field.lateral ** 2)
    depth = field.rows - level
    thickening = 0.75 + 0.25 * np.clip(depth / (field.bottom - level), 0, 1)
    return strength * smoothstep(depth / (0.06 * field.height)) * thickening


def _ground_glass(rng, field: Field, params: OpacityParams) -> np.ndarray:
    """A mild haze over the whole field, or growing towards the base; vessels stay visible through it."""
    regional = 1.0 if rng.random() < 0.5 else 0.3 + 0.7 * np.clip(field.vertical, 0, 1)
    haze = np.clip(0.7 + 0.3 * smooth_texture(rng, field.part.shape, (3, 7)), 0, 1)
    return rng.uniform(*params.ground_glass_strength) * regional * haze


def _patchy(rng, field: Field, params: OpacityParams) -> np.ndarray:
    """Mottled shadows, denser towards the periphery and the base (the COVID pattern)."""
    bias = (0.35 + 0.65 * np.clip(field.vertical, 0, 1)) * (0.35 + 0.65 * field.lateral)
    mottling = 0.45 * smooth_texture(rng, field.part.shape, (6, 14, 30), (1.0, 0.8, 0.5))
    shadow = mottling + 1.6 * bias - rng.uniform(0.6, 1.2)
    return rng.uniform(*params.patchy_strength) * smoothstep(shadow / 0.5)


def add_opacities(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                  params: OpacityParams = OpacityParams()) -> np.ndarray:
    """Opacities inside the lung fields, the label unchanged: the field stays lung however white it gets.
    Each opacity is a textured map alpha in [0, 1] that fades out just outside the field; the image moves
    a fraction alpha of the way towards the soft-tissue level (never beyond), keeping a share of fine detail
    so ribs and vessels still show through, as in real films."""
    image = np.asarray(image, np.float32)
    fields = lung_fields(np.asarray(mask), params.spill_sigma)
    if not fields:
        return image.copy()
    clear = np.ones(image.shape, np.float32)  # product of (1 - alpha): opacities combine like attenuations
    effects = ((params.p_consolidation, _consolidation, params.p_bilateral),  # (chance, maker, both fields)
               (params.p_ground_glass, _ground_glass, 1),
               (params.p_patchy, _patchy, 1),
               (params.p_whiteout, _whiteout, 0),
               (params.p_effusion, _effusion, params.p_bilateral))
    for chance, make, bilateral in effects:
        if rng.random() < chance:
            both = rng.random() < bilateral
            for field in fields if both else [fields[int(rng.integers(len(fields)))]]:
                clear[field.window] *= 1 - make(rng, field, params) * field.support
    if clear.min() >= 1:
        return image.copy()
    level = soft_tissue_level(image, mask)
    r0, r1, c0, c1 = bounding_box(clear < 1)
    box = (slice(r0, r1 + 1), slice(c0, c1 + 1))
    part, alpha = image[box], 1 - clear[box]
    base = blur(part, 1.5)  # the broad shading; part - base is the fine detail
    lifted = part + alpha * (np.maximum(level - base, 0) - (1 - params.detail_keep) * (part - base))
    out = image.copy()
    out[box] = np.clip(lifted, part, np.maximum(part, level))
    return out
