"""Where on a lung's surface a lesion sits: the places radiologists name (hilum, anterior junction line,
azygo-oesophageal recess, paravertebral gutter, diaphragm, costal wall, apex), found on a lung label map.

Both lesion generators (training's lungct.ct.decision.families and the benchmark's independent one) place
lesions by these names, so a benchmark can report coverage per location. The grid must be RAS-oriented
(lungct's processing grids are): +x is the patient's right, +y anterior, +z superior. Labels 1 = right
lung, 2 = left lung.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

LOCATIONS = ("hilar", "anterior_junction", "azygo_oesophageal", "paravertebral", "mediastinal", "diaphragmatic",
             "basal_subpleural", "costal", "apical")


@dataclass
class SurfacePoints:
    """Surface voxels of one lung with their outward normals (unit, in mm space) and location names."""

    side: int
    index: np.ndarray  # (n, 3) voxel indices
    normal: np.ndarray  # (n, 3) outward unit normals
    location: np.ndarray  # (n,) location name per voxel ("" where none applies)

    def at(self, location: str) -> np.ndarray:
        """Row numbers of the points named `location`."""
        return np.flatnonzero(self.location == location)


def lung_height(labels: np.ndarray) -> tuple[int, int]:
    """(lowest, highest) axial index holding lung."""
    slices = np.flatnonzero((labels > 0).any(axis=(0, 1)))
    return int(slices[0]), int(slices[-1])


def midline_x(labels: np.ndarray) -> float:
    """The x index half-way between the lungs' medial edges (between the lungs' centres without both)."""
    right, left = (np.argwhere(labels == side) for side in (1, 2))
    if len(right) and len(left):
        return float((np.percentile(right[:, 0], 5) + np.percentile(left[:, 0], 95)) / 2)
    return float(np.argwhere(labels > 0)[:, 0].mean()) if (labels > 0).any() else labels.shape[0] / 2


def surface_points(labels: np.ndarray, side: int, spacing) -> SurfacePoints:
    """The lung's surface voxels, their outward normals (from the gradient of the smoothed lung) and the
    location each lies in, from its height in the lung, which way it faces and where it lies in the chest."""
    spacing = np.asarray(spacing, float)
    lung = labels == side
    surface = lung & ~ndi.binary_erosion(lung)
    index = np.argwhere(surface)
    if not len(index):
        return SurfacePoints(side, index, np.zeros((0, 3)), np.zeros(0, "<U20"))
    smooth = ndi.gaussian_filter(lung.astype(np.float32), sigma=6.0 / spacing)
    gradient = np.stack([ndi.sobel(smooth, axis) / s for axis, s in enumerate(spacing)], axis=-1)
    normal = -gradient[tuple(index.T)]
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
    return SurfacePoints(side, index, normal, _locations(labels, side, index, normal, spacing))


def _locations(labels, side, index, normal, spacing) -> np.ndarray:
    low, high = lung_height(labels)
    height = (index[:, 2] - low) / max(1, high - low)  # 0 at the base, 1 at the apex
    toward_midline = np.array([-1.0, 0, 0]) if side == 1 else np.array([1.0, 0, 0])
    medial = normal @ toward_midline > 0.45
    lung = np.argwhere(labels == side)
    front, back = lung[:, 1].max(), lung[:, 1].min()
    depth = (index[:, 1] - back) / max(1, front - back)  # 0 posterior, 1 anterior
    midline = midline_x(labels)
    from_midline = np.abs(index[:, 0] - midline) * spacing[0]
    names = np.full(len(index), "", dtype="<U20")
    names[(normal[:, 2] > 0.3) | (height > 0.86)] = "apical"
    costal = ~medial & (normal[:, 2] > -0.6)
    names[costal & (height <= 0.86)] = "costal"
    names[costal & (height < 0.3) & (depth < 0.5)] = "basal_subpleural"
    names[(normal[:, 2] < -0.6) & (height < 0.5)] = "diaphragmatic"
    central = medial & (height > 0.2) & (height <= 0.86)
    names[central] = "mediastinal"
    names[central & (depth < 0.22)] = "paravertebral"
    names[central & (depth >= 0.3) & (depth <= 0.62) & (height >= 0.4) & (height <= 0.72)] = "hilar"
    names[central & (depth > 0.7) & (height >= 0.35) & (from_midline < 25)] = "anterior_junction"
    recess = central & (depth >= 0.15) & (depth < 0.4) & (height >= 0.15) & (height < 0.55)
    if side == 1 and recess.any():  # the right lung's recess behind the heart, by the oesophagus and azygos
        # at or below: on a 3 mm grid most of the recess can lie at one distance from the midline (a strict
        # "below" then named no point at all on the shared volumes, and no such lesion was ever painted)
        nearest_midline = from_midline <= np.percentile(from_midline[recess], 30)
        names[recess & nearest_midline] = "azygo_oesophageal"
    return names


def interior_points(labels: np.ndarray, side: int, spacing, depth_mm: float) -> np.ndarray:
    """Voxel indices of the lung at least `depth_mm` from its surface (where a lesion fits inside)."""
    lung = labels == side
    depth = ndi.distance_transform_edt(lung, sampling=spacing)
    return np.argwhere(depth >= depth_mm)
