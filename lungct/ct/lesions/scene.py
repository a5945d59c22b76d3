"""The image being painted: its labels, grids, own noise, body frame and lung surfaces, and the steps every
painter shares (a box around a point, where paint may go, blending a lesion in)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from lungct.ct.lesions.orientation import find_frame
from lungct.ct.lesions.params import Lesion, LesionParams
from lungct.ct.lesions.placement import Surface, classify_surface
from lungct.morphology import IN_PLANE

PARTIAL_VOLUME_WEIGHT = 0.45  # paint weight on non-bone tissue by the lung (the pleural margin)


class Scene:
    """A volume (x, y, z) painted in place; a slice is a volume one voxel thick (`flat`).

    Lung surfaces are found and classified on a coarser analysis grid (every `stride` voxels, about
    params.analysis_mm apart) that sees the labels as effusions change them.
    """

    def __init__(self, image: np.ndarray, labels: np.ndarray, spacing: np.ndarray, params: LesionParams,
                 posterior_hint=None, inferior_hint=None):
        self.image, self.labels, self.spacing, self.params = image, labels, spacing, params
        self.flat = labels.shape[2] == 1
        if self.flat:
            self.stride = np.ones(3, int)
        else:
            self.stride = np.maximum(1, np.round(params.analysis_mm / spacing)).astype(int)
        self.analysis_spacing = spacing * self.stride
        self.analysis_labels = labels[::self.stride[0], ::self.stride[1], ::self.stride[2]]  # a view
        self.mask = np.zeros(labels.shape, bool)  # the lesions painted so far
        self.records: list[Lesion] = []
        self.noise_hu = scan_noise(image)
        self.connectivity = IN_PLANE if self.flat else ndimage.generate_binary_structure(3, 1)
        self.margin_ball = _ball(params.pleural_margin_mm, spacing, labels.shape)
        self.frame = find_frame(self, posterior_hint, inferior_hint)
        self._surfaces: dict[int, Surface] = {}

    def surface(self, side: int) -> Surface:
        """A lung's surface, classified by placement (found once: painters call after all effusions)."""
        if side not in self._surfaces:
            self._surfaces[side] = classify_surface(self, side)
        return self._surfaces[side]

    def crop(self, centre, reach):
        """The box of voxels within `reach` mm (per axis) of `centre` (mm), and their offsets from it in
        mm as three broadcastable arrays (x, y, z)."""
        low = np.clip(np.floor((centre - reach) / self.spacing).astype(int), 0, self.labels.shape)
        high = np.clip(np.ceil((centre + reach) / self.spacing).astype(int) + 1, 0, self.labels.shape)
        if self.flat:
            low[2], high[2] = 0, 1
        grid = []
        for axis in range(3):
            shape = [-1 if other == axis else 1 for other in range(3)]
            offsets = np.arange(low[axis], high[axis]) * self.spacing[axis] - centre[axis]
            grid.append(offsets.reshape(shape))
        return tuple(slice(start, stop) for start, stop in zip(low, high)), grid

    def weights(self, box, side: int):
        """(Paint weight over `box`, the lung there): 1 in the lung and on its dark partial-volume rim,
        PARTIAL_VOLUME_WEIGHT on non-bone tissue by it; no weight (None) if the lung is not in the box."""
        labels, image = self.labels[box], self.image[box]
        inside = labels == side
        if not inside.any():
            return None, inside
        rim = ndimage.binary_dilation(inside, self.margin_ball) & (labels == 0)
        rim &= image < self.params.bone_hu
        return inside + rim * np.where(image < -300, 1.0, PARTIAL_VOLUME_WEIGHT).astype(np.float32), inside

    def paint(self, kind: str, side: int, placement: str, centre, diameter: float, box, alpha, target):
        """Blend `target` in by `alpha`; the lesion is where alpha >= 0.5 inside this lung (whose labels
        stay: all inside the pleura is lung)."""
        self.image[box] += alpha * (target - self.image[box])
        mask = (alpha >= 0.5) & (self.labels[box] == side)
        self.mask[box] |= mask
        centre = np.asarray(centre, float)
        self.records.append(Lesion(kind, side, placement, centre, float(diameter), box, alpha, mask))


def scan_noise(image: np.ndarray) -> float:
    """The scan's own noise sd (HU) in soft tissue, from neighbouring voxels' differences along x on
    three slices (10 HU if there is too little tissue); painted texture gets as much grain."""
    step = max(1, image.shape[2] // 3)
    left, right = (image[i:image.shape[0] - 1 + i, :, ::step] for i in (0, 1))
    differences = (left - right)[(np.abs(left - 20) < 100) & (np.abs(right - 20) < 100)]
    if differences.size <= 50:
        return 10.0
    spread = np.median(np.abs(differences - np.median(differences)))  # MAD x 1.05 ~ one voxel's sd
    return float(np.clip(1.05 * spread, 4, 40))


def _ball(radius_mm: float, spacing, shape) -> np.ndarray:
    """The voxel offsets within `radius_mm` (flat along axes one voxel long), a structuring element."""
    half = np.floor(radius_mm / spacing + 1e-6).astype(int) * (np.array(shape) > 1)
    offsets_mm = (np.indices(2 * half + 1).T - half) * spacing
    return (offsets_mm ** 2).sum(-1).T <= radius_mm ** 2 + 1e-6
