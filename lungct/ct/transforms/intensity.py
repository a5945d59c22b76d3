"""Intensity steps: the HU calibration check, the training window, and masking outside the lung ROI."""
from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from lungct.errors import LungctError
from lungct.keyed import KeyedTransform, register_transform
from lungct.ct.transforms.common import affine_of, case_info, hu_to_stored, put_volume, volume_of

AIR_HU = -1000.0
SOFT_TISSUE_HU = 40.0


def estimate_calibration(array: np.ndarray, lowest_physical: float = -1400.0, max_voxels: int = 4_000_000) -> dict:
    """Air peak outside the body and soft-tissue peak inside it, in the array's stored units.

    Air is read only where it is connected to the image border within its slice, so lung parenchyma
    (which sits 100-150 HU above air) cannot pull the estimate. Values below `lowest_physical` are
    out-of-field padding and ignored.
    """
    stride_xy = max(1, int(np.ceil(np.sqrt(array.size / max_voxels))))
    sample = array[::stride_xy, ::stride_xy, :]
    if sample.size > max_voxels:
        sample = sample[:, :, :: int(np.ceil(sample.size / max_voxels))]
    padding = sample < lowest_physical
    values = sample[~padding]
    if values.size < 100:
        return {"air": None, "tissue": None, "reason": "image is all out-of-field padding"}
    lo, hi = np.percentile(values, [0.5, 99.5])
    if hi - lo < 1:
        return {"air": None, "tissue": None, "reason": "image has no contrast"}
    split = float(threshold_otsu(np.clip(values, lo, hi)))
    dark = (sample < split) | padding
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[:, :, 1] = ndi.generate_binary_structure(2, 1)
    labels, count = ndi.label(dark, structure=in_plane)
    reaches_border = np.zeros(count + 1, bool)  # label -> touches its slice's border (0: not dark)
    for face in (labels[0], labels[-1], labels[:, 0], labels[:, -1]):
        reaches_border[face] = True
    reaches_border[0] = False
    connected = reaches_border[labels]
    outside = connected & ~padding
    result = {"otsu": split, "air": None, "tissue": None}
    if outside.sum() >= 500:
        result["air"] = _mode(sample[outside])
    else:
        result["reason"] = "no air outside the body in the field of view"
        return result
    air = result["air"]
    inside = ~(connected | padding) & (sample >= split)
    window = sample[inside]
    window = window[(window > air + 650) & (window < air + 1300)]
    if window.size >= 500:
        result["tissue"] = _mode(window)
    return result


def _mode(values: np.ndarray, bin_width: float = 4.0) -> float:
    """Histogram mode, smoothed over a few bins so noise does not pick a spike."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < bin_width:
        return float(np.median(values))
    counts, edges = np.histogram(values, bins=int((hi - lo) / bin_width) + 1, range=(lo, hi + bin_width))
    counts = ndi.uniform_filter1d(counts.astype(float), 5)
    peak = int(np.argmax(counts))
    return float((edges[peak] + edges[peak + 1]) / 2)


@register_transform
class CheckHUCalibrationd(KeyedTransform):
    """Refuse non-CT values, flag a scan whose outside air is not at -1000 HU, and optionally fix it.

    Without `recalibrate` the image keeps its values, but the segmentation steps read their HU
    thresholds through the estimated calibration, so a mis-scaled scan still gets a correct mask.
    """

    def __init__(self, keys="image", tolerance_hu: float = 50.0, recalibrate: bool = False,
                 lowest_physical_hu: float = -1400.0, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.tolerance_hu = tolerance_hu
        self.recalibrate = recalibrate
        self.lowest_physical_hu = lowest_physical_hu

    def __call__(self, data):
        d = dict(data)
        info = case_info(d)
        key = self.keys[0]
        array = volume_of(d, key)
        estimate = estimate_calibration(array, self.lowest_physical_hu)
        air, tissue = estimate["air"], estimate["tissue"]
        record = {"air_stored": _round(air), "soft_tissue_stored": _round(tissue), "status": "ok"}
        source = d.get("source", "input")
        if air is None:
            record["status"] = "unchecked"
            info["warnings"].append(f"HU calibration not checked: {estimate.get('reason')}")
            if float(np.percentile(array, 1)) > -300:
                raise LungctError(source, "values do not look like CT Hounsfield units (no air below -300): "
                                          "an MR, PET or radiograph?")
        elif abs(air - AIR_HU) > self.tolerance_hu:
            slope, intercept = self._fit(air, tissue)
            record.update(status="miscalibrated", slope=_round(slope, 6), intercept=_round(intercept, 3))
            if air > -300 and not self.recalibrate:
                raise LungctError(source, f"values are not Hounsfield units: air outside the body reads {air:.0f} "
                                          "(expected -1000); MR, or CT stored without its rescale intercept? "
                                          "If it is CT, --recalibrate maps air to -1000")
            info["flags"].append("hu_miscalibrated")
            message = f"HU calibration looks off: air outside the body reads {air:.0f}, not -1000"
            if self.recalibrate:
                put_volume(d, key, array.astype(np.float32) * slope + intercept, affine_of(d, key))
                record["applied_to_image"] = True
                info["warnings"].append(message + f"; recalibrated (x{slope:.4f} {intercept:+.1f})")
            else:
                record["applies_to_segmentation"] = True
                info["warnings"].append(message + "; segmentation used the estimated calibration, "
                                                  "the image is unchanged (--recalibrate rescales it)")
        info["hu_calibration"] = record
        return d

    @staticmethod
    def _fit(air: float, tissue: float | None) -> tuple[float, float]:
        """slope, intercept with air -> -1000 and soft tissue -> 40 (shift only if no tissue peak)."""
        slope = (SOFT_TISSUE_HU - AIR_HU) / (tissue - air) if tissue is not None and tissue > air + 200 else 1.0
        return slope, AIR_HU - slope * air


def _round(value, digits=1):
    return None if value is None else round(float(value), digits)


@register_transform
class HUWindowd(KeyedTransform):
    """Clip to the recipe's HU window and rescale to [b_min, b_max]: MONAI's ScaleIntensityRanged, in its
    order of operations (tests compare the two), on one new tensor.

    The window is given in Hounsfield units; when the segmentation runs on an estimated calibration the
    same window is applied to the stored values that correspond to it.
    """

    def __init__(self, keys="image", a_min: float = -1024.0, a_max: float = 600.0, b_min: float | None = 0.0,
                 b_max: float | None = 1.0, clip: bool = True, dtype=np.float32, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.window_hu = (a_min, a_max)
        self.b_min, self.b_max, self.clip = b_min, b_max, clip
        self.dtype = None if dtype is None else torch.from_numpy(np.zeros(0, dtype)).dtype

    @property
    def window(self) -> dict:
        """The HU window and the range it maps to, as the recipe gives them."""
        return {"a_min": self.window_hu[0], "a_max": self.window_hu[1], "b_min": self.b_min, "b_max": self.b_max}

    def __call__(self, data):
        d = dict(data)
        lo, hi = (hu_to_stored(d, v) for v in self.window_hu)
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key]) - lo  # a new tensor; an integer image becomes float here
            if hi == lo:
                warnings.warn(f"HUWindowd: empty window ({lo} = {hi}): image only shifted")
                d[key] = image if self.b_min is None else image.add_(self.b_min)
                continue
            image.div_(hi - lo)
            if self.b_min is not None and self.b_max is not None:
                image.mul_(self.b_max - self.b_min).add_(self.b_min)
            if self.clip:
                image.clamp_(self.b_min, self.b_max)
            d[key] = image if self.dtype is None else image.to(self.dtype)
        return d


@register_transform
class MaskOutsideROId(KeyedTransform):
    """Set image voxels outside the lung region of interest to air (the seed papers' last step)."""

    def __init__(self, keys="image", roi_key: str = "roi", fill_hu: float = AIR_HU, enabled: bool = True,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.roi_key = roi_key
        self.fill_hu = fill_hu
        self.enabled = enabled

    @property
    def roi_fill_hu(self) -> float | None:
        """What the image holds outside the ROI once this ran (None when it is off)."""
        return float(self.fill_hu) if self.enabled else None

    def __call__(self, data):
        d = dict(data)
        if not self.enabled:
            return d
        roi = volume_of(d, self.roi_key) > 0
        if not roi.any():
            case_info(d)["warnings"].append("lung ROI is empty: image left unmasked")
            return d
        fill = hu_to_stored(d, self.fill_hu)
        for key in self.key_iterator(d):
            image = d[key]
            with torch.no_grad():
                image[0][torch.from_numpy(~roi)] = fill
        return d
