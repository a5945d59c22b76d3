"""Pictures for a quick look: a volume's axial and coronal slice, or a radiograph, with its labels tinted.

Colours come from lungct.labels by label name, so CT and radiograph pictures (and the QC page) agree.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from lungct.geometry import to_ras
from lungct.io.atomic import atomic_path
from lungct.labels import ROI_COLOUR, colour_of, foreground
from lungct.os_names import printable


def grey_levels(values: np.ndarray, window=None) -> np.ndarray:
    """uint8 grey of any values, stretched between their 0.5 and 99.5 percentiles (or `window`, lo and hi)."""
    lo, hi = grey_window(values) if window is None else window
    return (np.clip((values - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def grey_window(values: np.ndarray, q=(0.5, 99.5)):
    """The 0.5 and 99.5 percentiles that grey_levels stretches between: np.percentile's numbers.

    In a clipped window (HUWindowd) both fall inside the runs of the lowest and highest value; then each
    is that value, interpolated by np.quantile as it would have, with no sorted copy of the volume.
    """
    if not values.size:
        return (0, 1)
    n, low, high = values.size, values.min(), values.max()
    position = (n - 1) * np.true_divide(np.asarray(q, dtype=float), 100)  # np.quantile's "linear" index
    first = np.floor(position).astype(int)
    if (np.isfinite(low) and np.isfinite(high) and first[0] + 2 <= np.count_nonzero(values == low)
            and n - first[1] <= np.count_nonzero(values == high)):
        return [np.quantile(np.array([v, v], values.dtype), [p - f])[0] for v, p, f in zip((low, high), position, first)]
    return np.percentile(values, q)


def tint(grey: np.ndarray, labels: np.ndarray, label_values: dict, roi: np.ndarray | None = None,
         alpha: float = 0.4) -> np.ndarray:
    """RGB uint8: each label tinted in its colour, the ROI's outline drawn."""
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    for name, value in foreground(label_values).items():
        hit = labels == value
        rgb[hit] = (1 - alpha) * rgb[hit] + alpha * np.array(colour_of(name))
    if roi is not None and roi.any():
        edge = roi & ~(np.roll(roi, 1, 0) & np.roll(roi, -1, 0) & np.roll(roi, 1, 1) & np.roll(roi, -1, 1))
        rgb[edge] = ROI_COLOUR
    return rgb.astype(np.uint8)


def radiological_views(image, labels, roi, affine, label_values: dict):
    """(axial, coronal) RGB arrays in radiological display: patient right on the viewer's left."""
    image, ras = to_ras(np.asarray(image, dtype=np.float32), affine)
    labels = to_ras(np.asarray(labels), affine)[0]
    roi = to_ras(np.asarray(roi) > 0, affine)[0] if roi is not None else np.zeros(labels.shape, bool)
    lung = labels > 0
    k = int(np.argmax(lung.sum(axis=(0, 1)))) if lung.any() else image.shape[2] // 2
    j = int(round(np.flatnonzero(lung.any(axis=(0, 2))).mean())) if lung.any() else image.shape[1] // 2
    window = grey_window(image)  # of the whole volume; only the two slices shown are made grey
    # Axial: rows run anterior to posterior, columns patient-right to patient-left.
    axial = tint(grey_levels(image[::-1, ::-1, k].T, window), labels[::-1, ::-1, k].T, label_values,
                 roi[::-1, ::-1, k].T)
    # Coronal: rows run superior to inferior, columns patient-right to patient-left.
    coronal = tint(grey_levels(image[::-1, j, ::-1].T, window), labels[::-1, j, ::-1].T, label_values,
                   roi[::-1, j, ::-1].T)
    spacing = np.linalg.norm(ras[:3, :3], axis=0)
    return axial, coronal, spacing


def save_preview(path, image, labels, roi, affine, label_values: dict, title: str = "", height: int = 384) -> None:
    """Axial and coronal views side by side, with R/L marks, written atomically as PNG."""
    axial, coronal, spacing = radiological_views(image, labels, roi, affine, label_values)
    views = [(axial, (spacing[0], spacing[1]))]
    if coronal.shape[0] * spacing[2] >= 0.25 * axial.shape[0] * spacing[1]:  # not for a slice or a slab
        views.append((coronal, (spacing[0], spacing[2])))
    panels = []
    for view, (sx, sy) in views:
        rows, cols = view.shape[:2]
        scale = height / max(rows * sy, 1e-6)
        size = (max(1, int(round(cols * sx * scale))), height)
        panel = Image.fromarray(view).resize(size, Image.NEAREST if rows < 8 else Image.BILINEAR)
        draw = ImageDraw.Draw(panel)
        draw.text((4, height // 2), "R", fill=(255, 255, 255))
        draw.text((size[0] - 12, height // 2), "L", fill=(255, 255, 255))
        panels.append(panel)
    width = sum(p.width for p in panels) + 8 * (len(panels) - 1)
    canvas = Image.new("RGB", (width, height + 18), (0, 0, 0))
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 18))
        x += panel.width + 8
    ImageDraw.Draw(canvas).text((4, 3), printable(title), fill=(255, 255, 255))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")


def save_picture_overlay(path, grey: np.ndarray, labels: np.ndarray, label_values: dict) -> None:
    """A radiograph (rows, cols) as displayed, its lung fields tinted, written atomically as PNG."""
    rgb = tint(grey_levels(np.asarray(grey, dtype=np.float32)), labels, label_values)
    with atomic_path(path) as tmp:
        Image.fromarray(rgb).save(tmp, format="PNG")
