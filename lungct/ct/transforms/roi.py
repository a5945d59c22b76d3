"""LungROId: the mirrored lung region of interest of the classical chain, made on a coarse copy.

Inference uses the chain's lungs only for the region of interest that cleans up the network's labels
(stomach gas fused to a lung, air outside the body). A 3 mm copy of the image gives that region in an
eighth of the voxels of the 1.5 mm network grid; its 5 mm margin is wider than the coarse voxel, and the
region comes back to the network grid by nearest neighbour. Body, lungs and mirroring are the same steps,
with the same parameters, as in `lungct preprocess`.
"""
from __future__ import annotations

import numpy as np

from lungct.ct.transforms.body import BodyMaskd
from lungct.keyed import KeyedTransform, register_transform
from lungct.ct.transforms.common import affine_of, case_info, put_like, put_volume, volume_of
from lungct.ct.transforms.lungs import LungMaskd
from lungct.ct.transforms.mirror import MirrorROId
from lungct.geometry import labels_to_grid, resample_to_spacing


@register_transform
class LungROId(KeyedTransform):
    """Add "roi" (uint8): BodyMaskd, LungMaskd and MirrorROId run on a copy at `spacing_mm`."""

    roi_step = True

    def __init__(self, keys="image", output_key: str = "roi", spacing_mm: float = 3.0, body: dict | None = None,
                 lungs: dict | None = None, mirror: dict | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.output_key, self.spacing_mm = output_key, spacing_mm
        self.steps = [BodyMaskd(**(body or {})), LungMaskd(**(lungs or {})), MirrorROId(**(mirror or {}))]

    def __call__(self, data):
        d = dict(data)
        key = self.keys[0]
        array, affine = volume_of(d, key), affine_of(d, key)
        spacing = [self.spacing_mm if n > 1 else None for n in array.shape]
        spacing = [s if s is not None else float(np.linalg.norm(affine[:3, i])) for i, s in enumerate(spacing)]
        coarse, coarse_affine = resample_to_spacing(array, affine, spacing, default=float(array.min()))
        small = put_volume({"case": case_info(d), "source": d.get("source")}, "image", coarse, coarse_affine)
        for step in self.steps:
            small = step(small)
        roi = labels_to_grid(volume_of(small, "roi").astype(np.uint8), coarse_affine, array.shape, affine)
        put_like(d, self.output_key, roi, key)
        return d
