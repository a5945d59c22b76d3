"""synthesize_lesions: effusions, then tumours and consolidation, painted into one slice or volume."""
from __future__ import annotations

import numpy as np

from lungct.ct.lesions.consolidation import paint_consolidation
from lungct.ct.lesions.effusion import paint_effusion
from lungct.ct.lesions.params import LesionParams
from lungct.ct.lesions.scene import Scene
from lungct.ct.lesions.tumour import paint_tumour

MIN_LUNG_VOXELS = 20  # on the analysis grid: fewer and no lesion is painted (effusions may be)


def synthesize_lesions(image_hu, lungs, spacing_mm, rng: np.random.Generator,
                       params: LesionParams = LesionParams(), posterior_hint=None, inferior_hint=None,
                       records: list | None = None) -> tuple[np.ndarray, ...]:
    """(new image in HU, new lung labels, lesion mask) for a 2D slice (x, y) or a volume (x, y, z): effusions,
    then 0..n lesions; `records` (a list) receives a `Lesion` each. Without hints (`orientation_hints`)
    posterior and inferior come from the anatomy (spinal canal, lung base)."""
    flat = np.ndim(image_hu) == 2
    image = np.array(image_hu, np.float32)
    labels = np.array(lungs, np.uint8)
    spacing = np.asarray(spacing_mm, float)
    if flat:  # a volume one voxel thick, as thick as the pixels are wide
        image, labels, spacing = image[..., None], labels[..., None], np.append(spacing, spacing.mean())
    scene = Scene(image, labels, spacing, params, posterior_hint, inferior_hint)
    for side in scene.frame.sides:
        if rng.random() < params.effusion_prob:
            paint_effusion(scene, side, rng)
    # per lung, after the effusions (the analysis grid's labels are a view of the painted ones)
    lung_voxels = np.bincount(scene.analysis_labels.ravel(), minlength=3)[1:3].astype(float)
    count = 0
    if lung_voxels.sum() > MIN_LUNG_VOXELS:
        count = rng.choice(len(params.count_probs), p=np.divide(params.count_probs, sum(params.count_probs)))
    for _ in range(count):
        paint = paint_tumour if rng.random() < params.tumour_prob else paint_consolidation
        side = 1 + rng.choice(2, p=lung_voxels / lung_voxels.sum())  # the bigger lung more often
        paint(scene, side, rng)
    if records is not None:
        if flat:  # records of the slice, not of the one-voxel volume
            for record in scene.records:
                record.box, record.centre_mm = record.box[:2], record.centre_mm[:2]
                record.alpha, record.mask = record.alpha[..., 0], record.mask[..., 0]
        records.extend(scene.records)
    if flat:
        return scene.image[..., 0], scene.labels[..., 0], scene.mask[..., 0]
    return scene.image, scene.labels, scene.mask
