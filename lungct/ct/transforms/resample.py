"""Resampled: one canonical orientation and spacing for the chain, in a single interpolation pass."""
from __future__ import annotations

import numpy as np
import torch

from lungct.keyed import KeyedTransform, register_transform
from lungct.ct.transforms.common import affine_of, case_info, put_volume
from lungct.geometry import reoriented_grid, resample_to_spacing, voxel_spacing


@register_transform
class Resampled(KeyedTransform):
    """Orient to `axcodes` and resample to `spacing_mm`: images linear, label maps nearest.

    The affine keeps the truth about where every voxel is; later steps read patient directions from it.
    `keep_thick_slices` (2D slice networks) keeps slices thicker than spacing_mm[2] as they are: a slice
    network needs the in-plane spacing, and interpolated slices would only add work, no information.
    """

    def __init__(self, keys="image", spacing_mm=1.0, axcodes: str | None = "RAS", label_keys=(),
                 keep_thick_slices: bool = False, allow_missing_keys: bool = True):
        super().__init__(keys, allow_missing_keys)
        self.spacing_mm = spacing_mm
        self.axcodes = axcodes
        self.keep_thick_slices = keep_thick_slices
        self.label_keys = set([label_keys] if isinstance(label_keys, str) else label_keys)

    @property
    def target_spacing_mm(self):
        return self.spacing_mm

    def target_spacing(self, affine: np.ndarray, shape) -> list[float]:
        """spacing_mm (None: the scan's own spacing, only reoriented), thick slices kept if asked."""
        native = voxel_spacing(reoriented_grid(affine, shape, self.axcodes)[0])
        if self.spacing_mm is None:
            return [float(s) for s in native]
        wanted = [float(s) for s in np.broadcast_to(np.asarray(self.spacing_mm, dtype=float), (3,))]
        if self.keep_thick_slices:
            wanted[2] = max(wanted[2], float(native[2]))
        return wanted

    def __call__(self, data):
        d = dict(data)
        first = self.first_key(d)
        value = d[first]
        spacing = self.target_spacing(affine_of(d, first), tuple(value.shape[1:]))
        for key in list(self.key_iterator(d)) + [k for k in self.label_keys if k in d]:
            nearest = key in self.label_keys
            value = d[key]
            array = value[0].numpy() if isinstance(value, torch.Tensor) else np.asarray(value)[0]
            out, affine = resample_to_spacing(array, affine_of(d, key), spacing, nearest=nearest,
                                              default=0 if nearest else -1024.0, axcodes=self.axcodes)
            put_volume(d, key, out, affine)
        info = case_info(d)
        info["processing_spacing_mm"] = [round(float(s), 4) for s in voxel_spacing(affine_of(d, self.keys[0]))]
        return d
