"""Training samples for the lesion decision: a host volume with lesions painted by family, then a patch
drawn from it under a random rotation and scale, mirrored, blurred as thick slices are, noised, and
windowed into the network's two input channels; labels are the three classes of lungct.ct.decision.families.

Every sample's random state comes from (seed, step), so a run repeats exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from lungct.ct.decision import WINDOWS, window_channels
from lungct.ct.decision.hosts import HU_FILL, Host
from lungct.ct.decision.families import paint


@dataclass
class SampleSettings:
    """How samples are drawn: patch size (voxels), families (name -> weight), augmentation ranges."""

    patch: tuple = (96, 96, 80)
    families: dict = field(default_factory=dict)
    count_probs: tuple = (0.15, 0.4, 0.3, 0.15)  # P(0, 1, 2, 3 lesions) per sample
    rotate_deg: tuple = (8.0, 8.0, 15.0)  # about x, y, z
    scale: tuple = (0.85, 1.2)
    mirror_prob: float = 0.5
    thick_slice_prob: float = 0.35  # blur along z as a 4-8 mm slice would
    blur_prob: float = 0.2  # a soft reconstruction kernel
    noise_hu: tuple = (0.0, 25.0)
    hu_shift: float = 20.0
    hu_scale: float = 0.04


class DecisionSampler:
    """Samples from a list of hosts: `sample(seed, step) -> (image (2, *patch), classes (*patch))`."""

    def __init__(self, hosts: list[Host], settings: SampleSettings, seed: int = 0, windows=WINDOWS):
        self.hosts, self.settings, self.seed, self.windows = hosts, settings, seed, windows
        self.anatomy = [{} for _ in hosts]  # per host: envelope and surfaces, computed once
        lung_voxels = np.array([(h.sides > 0).sum() for h in hosts], float)
        # hosts by the square root of their lungs' size, none below a quarter of the mean (a host that shows
        # only the lung bases, the domes' negatives, is still seen)
        self.weights = np.maximum(lung_voxels ** 0.5, 0.25 * np.mean(lung_voxels ** 0.5))

    def sample(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        index = int(rng.choice(len(self.hosts), p=self.weights / self.weights.sum()))
        host, s = self.hosts[index], self.settings
        canvas = paint(host.hu, host.sides, host.spacing, rng, s.families, s.count_probs, anatomy=self.anatomy[index])
        hu, classes = patch_of(canvas.hu, canvas.classes, host.sides, s, rng)
        hu = degrade(hu, s, rng)
        if rng.random() < s.mirror_prob:  # right and left: the decision has no side
            hu, classes = hu[::-1], classes[::-1]
        return window_channels(hu, self.windows), np.ascontiguousarray(classes)


def patch_of(hu: np.ndarray, classes: np.ndarray, sides: np.ndarray, s: SampleSettings, rng):
    """A patch centred near the lungs (a random lung voxel pulled towards their centre), rotated and scaled:
    HU linear, classes nearest."""
    lungs = np.argwhere(sides > 0)
    centre = lungs.mean(0) if not len(lungs) else 0.6 * lungs.mean(0) + 0.4 * lungs[rng.integers(len(lungs))]
    angles = np.deg2rad([rng.uniform(-r, r) for r in s.rotate_deg])
    matrix = _rotation(angles) @ np.diag(rng.uniform(*s.scale, 3) ** -1)
    grid = np.indices(s.patch, dtype=np.float32).reshape(3, -1) - (np.array(s.patch)[:, None] - 1) / 2
    points = matrix @ grid + centre[:, None]
    hu_patch = ndi.map_coordinates(hu, points, order=1, cval=HU_FILL, prefilter=False).reshape(s.patch)
    class_patch = ndi.map_coordinates(classes, points, order=0, cval=0, prefilter=False).reshape(s.patch)
    return hu_patch.astype(np.float32), class_patch.astype(np.uint8)


def degrade(hu: np.ndarray, s: SampleSettings, rng) -> np.ndarray:
    """Scanner variety: thick slices (partial volume along z), soft kernels, calibration drift, noise."""
    if rng.random() < s.thick_slice_prob:
        hu = ndi.gaussian_filter1d(hu, rng.uniform(0.5, 1.2), axis=2)
    if rng.random() < s.blur_prob:
        hu = ndi.gaussian_filter(hu, (rng.uniform(0.3, 0.8),) * 2 + (0,))
    hu = hu * (1 + rng.uniform(-s.hu_scale, s.hu_scale)) + rng.uniform(-s.hu_shift, s.hu_shift)
    noise = rng.uniform(*s.noise_hu)
    if noise > 0:
        hu = hu + noise * rng.standard_normal(hu.shape).astype(np.float32)
    return hu


def _rotation(angles) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rx @ ry @ rz
