"""Dictionary transforms of the radiograph chain (pipelines/cxr-2d.yaml), one step each, on the
MapTransform contract of lungct.keyed.

The dict holds "image" (float32, channel first: (1, rows, cols), as displayed, brighter = denser),
optionally "mask" (uint8 (1, rows, cols), the lung fields), and "case", a plain JSON record of what was
done (original shape, spacing, the resize/pad) so a mask predicted on the 256 x 256 grid can go back to
the radiograph's own pixels (to_original).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi

from lungct.errors import LungctError
from lungct.keyed import KeyedTransform, register_transform


def _array(value) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] != 1:
        raise LungctError(None, f"radiograph chain expects one grey channel (1, rows, cols), got {array.shape}")
    return array


__all__ = ["ScaleGreyd", "ResizePadd", "EqualiseHistogramd", "LocalContrastNormalised"]


def case_record(data: dict) -> dict:
    return data.setdefault("case", {})


def valid_region(data: dict, shape) -> np.ndarray:
    """True on the image's own pixels, False on the padding ResizePadd added (all True before it), or
    data["valid"] when a step that moved the image (training's film augmentation) says where they are."""
    if data.get("valid") is not None:
        return np.asarray(data["valid"], bool)
    resize = case_record(data).get("resize")
    region = np.ones(shape, bool)
    if resize and tuple(resize["size"]) == tuple(shape):
        (top, bottom), (left, right) = resize["pad"]
        region[:] = False
        region[top:shape[0] - bottom, left:shape[1] - right] = True
    return region


@register_transform
class ScaleGreyd(KeyedTransform):
    """Grey values to [0, 1] between two percentiles (0 and 100: min and max), whatever the bit depth.

    Linear, so 8-bit, 16-bit and DICOM versions of one radiograph land on the same image.
    """

    def __init__(self, keys=("image",), lower_percentile: float = 0.0, upper_percentile: float = 100.0,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if not 0 <= lower_percentile < upper_percentile <= 100:
            raise ValueError(f"need 0 <= lower_percentile < upper_percentile <= 100, got {lower_percentile}, {upper_percentile}")
        self.lower, self.upper = float(lower_percentile), float(upper_percentile)

    def __call__(self, data: dict) -> dict:
        data = dict(data)
        for key in self.key_iterator(data):
            image = _array(data[key]).astype(np.float32)
            lo, hi = np.percentile(image, [self.lower, self.upper]) if (self.lower, self.upper) != (0.0, 100.0) \
                else (image.min(), image.max())
            span = float(hi - lo)
            data[key] = np.clip((image - lo) / span, 0, 1).astype(np.float32) if span > 0 else np.zeros_like(image)
            case_record(data)["grey_range"] = [float(lo), float(hi)]
        return data


def fitted_shape(shape, size) -> tuple[int, int]:
    """The largest (rows, cols) with the input's aspect ratio that fits in `size`."""
    scale = min(size[0] / shape[0], size[1] / shape[1])
    return (min(size[0], max(1, int(round(shape[0] * scale)))), min(size[1], max(1, int(round(shape[1] * scale)))))


def nearest_resize(array: np.ndarray, shape) -> np.ndarray:
    """Nearest-neighbour resize of the last two axes with pixel centres aligned (exact on integer ratios)."""
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * array.shape[-2] / shape[0]).astype(np.int64), array.shape[-2] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * array.shape[-1] / shape[1]).astype(np.int64), array.shape[-1] - 1)
    return array[..., rows[:, None], cols[None, :]]


def linear_resize(array: np.ndarray, shape) -> np.ndarray:
    """Bilinear resize of a 2D float array, smoothing first when shrinking so thin ribs do not alias."""
    from skimage.transform import resize

    if tuple(array.shape) == tuple(shape):
        return array.astype(np.float32)
    shrinking = shape[0] < array.shape[0] or shape[1] < array.shape[1]
    return resize(array.astype(np.float32), shape, order=1, mode="edge", anti_aliasing=shrinking,
                  preserve_range=True).astype(np.float32)


@register_transform
class ResizePadd(KeyedTransform):
    """Aspect-preserving resize so the longer side fits `size`, then symmetric padding to `size`.

    `keys` are images (bilinear, anti-aliased), `label_keys` masks (nearest). The resize and the padding
    go into data["cxr"]["resize"] so to_original can undo them exactly.
    """

    def __init__(self, keys=("image",), label_keys=("mask",), size=(256, 256), pad_value: float = 0.0,
                 allow_missing_keys: bool = True):
        super().__init__(list(keys) + list(label_keys), allow_missing_keys)
        self.image_keys, self.label_keys = tuple(keys), tuple(label_keys)
        self.size = (int(size), int(size)) if np.isscalar(size) else tuple(int(s) for s in size)
        self.pad_value = float(pad_value)

    def __call__(self, data: dict) -> dict:
        data = dict(data)
        present = [k for k in self.image_keys + self.label_keys if k in data]
        if not present:
            if self.allow_missing_keys:
                return data
            raise KeyError(f"none of {self.image_keys + self.label_keys} in the data")
        shape = _array(data[present[0]]).shape[1:]
        for key in present:
            if _array(data[key]).shape[1:] != shape:
                raise LungctError(None, f"'{key}' is {_array(data[key]).shape[1:]} but '{present[0]}' is {shape}")
        inner = fitted_shape(shape, self.size)
        top, left = (self.size[0] - inner[0]) // 2, (self.size[1] - inner[1]) // 2
        pad = [[top, self.size[0] - inner[0] - top], [left, self.size[1] - inner[1] - left]]
        for key in present:
            label = key in self.label_keys
            array = _array(data[key])[0]
            resized = nearest_resize(array, inner) if label else linear_resize(array, inner)
            fill = 0 if label else self.pad_value
            data[key] = np.pad(resized, pad, constant_values=fill)[None].astype(array.dtype if label else np.float32)
        case_record(data)["resize"] = {"original_shape": [int(s) for s in shape], "resized_shape": list(inner),
                                      "size": list(self.size), "pad": pad}
        return data


@register_transform
class EqualiseHistogramd(KeyedTransform):
    """Histogram equalisation of the image's own pixels (not the padding): "global"
    (skimage equalize_hist) or "clahe" (equalize_adapthist, contrast-limited, tile `kernel_size`)."""

    def __init__(self, keys=("image",), method: str = "global", nbins: int = 256, clip_limit: float = 0.01,
                 kernel_size: int | None = None, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if method not in ("global", "clahe", "none"):
            raise ValueError(f"method must be 'global', 'clahe' or 'none', got '{method}'")
        self.method, self.nbins, self.clip_limit, self.kernel_size = method, int(nbins), float(clip_limit), kernel_size

    def __call__(self, data: dict) -> dict:
        from skimage import exposure

        data = dict(data)
        for key in self.key_iterator(data):
            image = _array(data[key])[0].astype(np.float64)
            region = valid_region(data, image.shape)
            if self.method == "none":
                continue
            lo, hi = float(image[region].min()), float(image[region].max())
            unit = np.clip((image - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(image)
            if self.method == "global":
                out = exposure.equalize_hist(unit, nbins=self.nbins, mask=region)
            else:
                (top, bottom), (left, right) = _pad_of(region)
                inner = unit[top:image.shape[0] - bottom, left:image.shape[1] - right]
                out = np.zeros_like(unit)
                out[top:image.shape[0] - bottom, left:image.shape[1] - right] = exposure.equalize_adapthist(
                    inner, kernel_size=self.kernel_size, clip_limit=self.clip_limit, nbins=self.nbins)
            out = np.where(region, out, 0.0)
            data[key] = out[None].astype(np.float32)
        return data


def _pad_of(region: np.ndarray):
    rows, cols = np.flatnonzero(region.any(1)), np.flatnonzero(region.any(0))
    return ((int(rows[0]), region.shape[0] - 1 - int(rows[-1])), (int(cols[0]), region.shape[1] - 1 - int(cols[-1])))


@register_transform
class LocalContrastNormalised(KeyedTransform):
    """Local contrast normalisation (the SegNet radiograph paper): subtract the Gaussian-weighted local
    mean, divide by the local standard deviation (never by less than its image-wide mean, so flat areas are
    not blown up). With `to_unit`, the result is clipped to +-`clip` and mapped to [0, 1]; padding becomes the
    flat-area value (0.5).

    `sigma` is in pixels of the chain's fixed grid (after ResizePadd). The padding is left out of the
    local statistics (normalised convolution), so the image edge is not darkened by it.
    """

    def __init__(self, keys=("image",), sigma: float = 16.0, clip: float = 3.0, to_unit: bool = True,
                 allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        if sigma <= 0 or clip <= 0:
            raise ValueError(f"sigma and clip must be positive, got {sigma}, {clip}")
        self.sigma, self.clip, self.to_unit = float(sigma), float(clip), bool(to_unit)

    def __call__(self, data: dict) -> dict:
        data = dict(data)
        for key in self.key_iterator(data):
            image = _array(data[key])[0].astype(np.float64)
            region = valid_region(data, image.shape).astype(np.float64)
            weight = np.maximum(ndi.gaussian_filter(region, self.sigma, mode="constant"), 1e-6)
            mean = ndi.gaussian_filter(image * region, self.sigma, mode="constant") / weight
            centred = (image - mean) * region
            var = ndi.gaussian_filter(centred ** 2, self.sigma, mode="constant") / weight
            std = np.sqrt(np.maximum(var, 0))
            floor = float(std[region > 0].mean()) if region.any() else 1.0
            out = centred / np.maximum(std, max(floor, 1e-6))
            if self.to_unit:
                out = (np.clip(out, -self.clip, self.clip) + self.clip) / (2 * self.clip)
            neutral = 0.5 if self.to_unit else 0.0  # padding reads as a flat area, like a collimated border
            data[key] = np.where(region > 0, out, neutral)[None].astype(np.float32)
        return data


def to_original(array: np.ndarray, record: dict, nearest: bool = True) -> np.ndarray:
    """Undo ResizePadd: crop the padding and resize to the radiograph's original (rows, cols).

    Nearest neighbour (pixel centres aligned) for labels, which is exact when the original size is an
    integer multiple of the resized one; `nearest=False` resizes linearly (for probability maps).
    """
    array = np.asarray(array)
    resize = record.get("resize") if "resize" in record else record
    if not resize or "pad" not in resize:
        return array
    size = tuple(resize["size"])
    if array.shape[-2:] != size:
        raise LungctError(record.get("source"), f"prediction is {array.shape[-2:]} but the chain made {size}")
    (top, bottom), (left, right) = resize["pad"]
    inner = array[..., top:size[0] - bottom, left:size[1] - right]
    shape = tuple(resize["original_shape"])
    if nearest:
        return nearest_resize(inner, shape)
    if inner.ndim == 2:
        return linear_resize(inner, shape)
    return np.stack([linear_resize(channel, shape) for channel in inner.reshape(-1, *inner.shape[-2:])]).reshape(
        *inner.shape[:-2], *shape)
