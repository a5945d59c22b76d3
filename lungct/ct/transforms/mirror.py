"""Spine-axis mirroring: a lung region of interest that a tumour, collapse or effusion cannot shrink.

docs/design.md ("Spine-axis mirroring"), with every constant in millimetres: on each slice with lung, bone (> 100 HU) is
projected onto the left-right axis and smoothed (7 mm moving average); the spine column is the peak
inside the central ±15 % of the body. The axis starts at the mean over the first 5 mm of lung slices and
follows z with exponential smoothing (alpha = 0.3 per mm). Each lung half is dilated, flipped about the
axis and joined to the mask, so a lung lost on one side is recovered from its twin; then a 5 mm margin,
a closing of small mediastinal gaps and 2 mm more above and below.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from lungct.geometry import from_ras, to_ras, voxel_spacing
from lungct.morphology import analysis_strides, bounding_box, close_mm, dilate_mm, fine_box, upsample_nearest
from lungct.keyed import KeyedTransform, register_transform
from lungct.ct.transforms.common import affine_of, case_info, hu_to_stored, put_like, volume_of


@dataclass
class MirrorParams:
    bone_hu: float = 100.0
    smoothing_window_mm: float = 7.0
    central_band: float = 0.15
    start_mm: float = 5.0
    alpha_per_mm: float = 0.3
    half_dilation_mm: float = 3.0
    margin_mm: float = 5.0
    closing_mm: float = 5.0
    extend_mm: float = 2.0
    analysis_spacing_mm: float = 2.0


def spine_axis(bone: np.ndarray, body: np.ndarray, lung_slices: np.ndarray, spacing, p: MirrorParams) -> np.ndarray:
    """x position (voxels, R-A-S grid) of the spine on every slice; NaN outside the lung's slices."""
    axis = np.full(bone.shape[2], np.nan)
    slices = np.flatnonzero(lung_slices)
    if len(slices) == 0:
        return axis
    width = max(1, int(round(p.smoothing_window_mm / spacing[0])))
    profiles = ndi.uniform_filter1d(bone.sum(axis=1).astype(float), width, axis=0)  # (x, z)
    raw = np.full(bone.shape[2], np.nan)
    body_columns = body.any(axis=1)  # (x, z)
    for k in slices:
        xs = np.flatnonzero(body_columns[:, k])
        if len(xs) == 0:
            continue
        centre, half = (xs[0] + xs[-1]) / 2, p.central_band * (xs[-1] - xs[0])
        lo, hi = int(np.floor(centre - half)), int(np.ceil(centre + half)) + 1
        band = profiles[lo:hi, k]
        if band.size and band.max() > 0:
            raw[k] = lo + float(np.argmax(band))
    found = slices[~np.isnan(raw[slices])]
    if len(found) == 0:  # no bone at all (a phantom, a crop): fall back to the body centre
        for k in slices:
            xs = np.flatnonzero(body_columns[:, k])
            axis[k] = (xs[0] + xs[-1]) / 2 if len(xs) else bone.shape[0] / 2
        return axis
    start_count = max(1, int(round(p.start_mm / spacing[2])))
    smoothed = float(np.mean(raw[found[:start_count]]))
    alpha = 1.0 - (1.0 - p.alpha_per_mm) ** spacing[2]  # the same smoothing whatever the slice spacing
    for k in slices:
        if not np.isnan(raw[k]):
            smoothed = alpha * raw[k] + (1 - alpha) * smoothed
        axis[k] = smoothed
    return axis


def mirror_about(mask: np.ndarray, axis_x: np.ndarray) -> np.ndarray:
    """Each slice of `mask` flipped left-right about its own x = axis_x[k] (NaN: nothing)."""
    out = np.zeros_like(mask)
    xs = np.arange(mask.shape[0])
    for k in np.flatnonzero(~np.isnan(axis_x)):
        source = np.rint(2 * axis_x[k] - xs).astype(int)
        valid = (source >= 0) & (source < mask.shape[0])
        out[valid, :, k] = mask[source[valid], :, k]
    return out


def mirrored_roi(hu: np.ndarray, lungs: np.ndarray, body: np.ndarray, spacing, bone_threshold: float,
                 p: MirrorParams) -> tuple[np.ndarray, dict]:
    """ROI on an R-A-S grid from lung labels (>0); the report holds the axis and what mirroring added.

    Full-grid work stays inside boxes: the spine is looked for in the lung's slices and the body's
    rows, and the coarse ROI comes back to the full grid only where it (or the lung) is.
    """
    lung_slices = lungs.any(axis=(0, 1))
    if not lung_slices.any():
        return np.zeros(lungs.shape, bool), {"slices": 0}
    zs = np.flatnonzero(lung_slices)
    zs = slice(zs[0], zs[-1] + 1)
    ys = bounding_box(body[:, :, zs])[1]  # bone outside the body is never counted: sums over y agree
    body_sub = body[:, ys, zs] > 0
    axis = np.full(lungs.shape[2], np.nan)
    axis[zs] = spine_axis((hu[:, ys, zs] > bone_threshold) & body_sub, body_sub, lung_slices[zs], spacing, p)
    strides = analysis_strides(spacing, p.analysis_spacing_mm, lungs.shape)
    cs = [s * st for s, st in zip(spacing, strides)]
    lung_c = lungs[:: strides[0], :: strides[1], :: strides[2]] > 0
    axis_c = axis[:: strides[2]] / strides[0]
    xs = np.arange(lung_c.shape[0])[:, None, None]
    right_half = lung_c & (xs > axis_c[None, None, :])
    left_half = lung_c & (xs <= axis_c[None, None, :])
    twins = mirror_about(dilate_mm(right_half, p.half_dilation_mm, cs, in_plane=True), axis_c)
    twins |= mirror_about(dilate_mm(left_half, p.half_dilation_mm, cs, in_plane=True), axis_c)
    roi_c = lung_c | twins
    roi_c = dilate_mm(roi_c, p.margin_mm, cs, in_plane=True)
    roi_c = close_mm(roi_c, p.closing_mm, cs, in_plane=True)
    # The ROI (coarse ROI, lung, and extend_mm of copied end slices) lies inside this box.
    extra = int(round(p.extend_mm / spacing[2]))
    box = _union(fine_box(bounding_box(roi_c), strides, lungs.shape, roi_c.shape), bounding_box(lungs))
    box = box[:2] + (slice(max(0, box[2].start - extra), min(lungs.shape[2], box[2].stop + extra)),)
    lung = lungs[box] > 0
    roi = upsample_nearest(roi_c, strides, lungs.shape, box) | lung
    # Extend the ROI beyond the lung's first and last slices by copying those slices.
    slices = np.flatnonzero(roi.any(axis=(0, 1)))
    for step in range(1, extra + 1):
        if slices[0] - step >= 0:
            roi[:, :, slices[0] - step] |= roi[:, :, slices[0]]
        if slices[-1] + step < roi.shape[2]:
            roi[:, :, slices[-1] + step] |= roi[:, :, slices[-1]]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    valid = axis[~np.isnan(axis)] * spacing[0]
    report = {
        "spine_axis_mm": {"mean": round(float(valid.mean()), 1), "min": round(float(valid.min()), 1),
                          "max": round(float(valid.max()), 1)},
        "roi_ml": round(float(np.count_nonzero(roi) * voxel_ml), 1),
        "mirror_added_ml": round(float(np.count_nonzero(upsample_nearest(twins, strides, lungs.shape, box) & ~lung)
                                       * voxel_ml), 1),
    }
    out = np.zeros(lungs.shape, bool)
    out[box] = roi
    return out, report


def _union(a: tuple[slice, ...], b: tuple[slice, ...]) -> tuple[slice, ...]:
    """The smallest box holding two boxes (an empty one adds nothing)."""
    if any(s.stop <= s.start for s in a):
        return b
    if any(s.stop <= s.start for s in b):
        return a
    return tuple(slice(min(x.start, y.start), max(x.stop, y.stop)) for x, y in zip(a, b))


@register_transform
class MirrorROId(KeyedTransform):
    """Add "roi" (uint8): the lungs, their mirrored twins about the spine axis, with a margin."""

    PARAMS = MirrorParams  # every constant of the step, recipe arguments of its own
    roi_step = True
    def __init__(self, keys="image", lungs_key: str = "lungs", body_key: str = "body", output_key: str = "roi",
                 allow_missing_keys: bool = False, **params):
        super().__init__(keys, allow_missing_keys)
        self.lungs_key = lungs_key
        self.body_key = body_key
        self.output_key = output_key
        self.params = MirrorParams(**params)

    def __call__(self, data):
        d = dict(data)
        key = self.keys[0]
        affine = affine_of(d, key)
        hu, ras_affine = to_ras(volume_of(d, key), affine)
        lungs = to_ras(volume_of(d, self.lungs_key), affine)[0]
        body = to_ras(volume_of(d, self.body_key), affine)[0]
        roi, report = mirrored_roi(hu, lungs, body, voxel_spacing(ras_affine),
                                   hu_to_stored(d, self.params.bone_hu), self.params)
        report["params"] = asdict(self.params)
        case_info(d)["roi"] = report
        put_like(d, self.output_key, from_ras(roi, affine).view(np.uint8), key)  # bool as 0/1, no copy
        return d
