"""Pictures for a quick look: an axial and a coronal slice with the lung labels over the image."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from lungct.io.volumes import atomic_path
from lungct.transforms.lungs import LEFT, RIGHT, to_ras

COLOURS = {RIGHT: (230, 60, 60), LEFT: (60, 150, 240)}
ROI_COLOUR = (240, 210, 40)


def _grey(values: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(values, [0.5, 99.5]) if values.size else (0, 1)
    return (np.clip((values - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def _overlay(grey: np.ndarray, labels: np.ndarray, roi: np.ndarray | None, alpha: float = 0.4) -> np.ndarray:
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(float)
    for label, colour in COLOURS.items():
        hit = labels == label
        rgb[hit] = (1 - alpha) * rgb[hit] + alpha * np.array(colour)
    if roi is not None and roi.any():
        edge = roi & ~(np.roll(roi, 1, 0) & np.roll(roi, -1, 0) & np.roll(roi, 1, 1) & np.roll(roi, -1, 1))
        rgb[edge] = ROI_COLOUR
    return rgb.astype(np.uint8)


def radiological_views(image, labels, roi, affine):
    """(axial, coronal) RGB arrays in radiological display: patient right on the viewer's left."""
    image, ras = to_ras(np.asarray(image, dtype=np.float32), affine)
    labels = to_ras(np.asarray(labels), affine)[0]
    roi = to_ras(np.asarray(roi) > 0, affine)[0] if roi is not None else np.zeros(labels.shape, bool)
    lung = labels > 0
    k = int(np.argmax(lung.sum(axis=(0, 1)))) if lung.any() else image.shape[2] // 2
    j = int(round(np.flatnonzero(lung.any(axis=(0, 2))).mean())) if lung.any() else image.shape[1] // 2
    grey = _grey(image)
    # Axial: rows run anterior to posterior, columns patient-right to patient-left.
    axial = _overlay(grey[::-1, ::-1, k].T, labels[::-1, ::-1, k].T, roi[::-1, ::-1, k].T)
    # Coronal: rows run superior to inferior, columns patient-right to patient-left.
    coronal = _overlay(grey[::-1, j, ::-1].T, labels[::-1, j, ::-1].T, roi[::-1, j, ::-1].T)
    spacing = np.linalg.norm(ras[:3, :3], axis=0)
    return axial, coronal, spacing


def save_preview(path, image, labels, roi, affine, title: str = "", height: int = 384) -> None:
    """Axial and coronal views side by side, with R/L marks, written atomically as PNG."""
    axial, coronal, spacing = radiological_views(image, labels, roi, affine)
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
    ImageDraw.Draw(canvas).text((4, 3), title, fill=(255, 255, 255))
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG")
