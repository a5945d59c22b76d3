"""The lesion decision at inference: the 3D network of the checkpoint's `lesion_decision` stage, run on
the chest around the lungs at 3 mm, gives per voxel the probability of outside / lung / lesion inside the
lung; lungct.ct.conventions turns that into the two conventions at the scan's own resolution.

The 2D lung network draws the lungs' boundary finely, slice by slice; a slice cannot tell a mass bulging
from the mediastinum from the mediastinum, nor a hilar mass from a normal hilum. This stage sees the
whole chest at once and decides the dense tissue: lesion (kept in `lungs`, out of `aerated`), lung
(vessels) or outside (the hilum, a diaphragm dome the 2D network took).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from lungct.errors import LungctError
from lungct.geometry import REVERSE_AXES, array_to_sitk, set_sitk_geometry, sitk_view_to_array
from lungct.networks import build_network
from lungct.recipes import Chain

OUTSIDE, LUNG, LESION = 0, 1, 2
# The network's input: HU through two windows, the whole CT range and soft tissue (a mass against the
# mediastinum differs from it by tens of HU, which the wide window compresses).
WINDOWS = ((-1024.0, 600.0), (-200.0, 300.0))


def window_channels(hu: np.ndarray, windows=WINDOWS) -> np.ndarray:
    """(channels, *shape) float32 in [0, 1], one channel per HU window."""
    return np.stack([np.clip((hu - low) / (high - low), 0.0, 1.0) for low, high in windows]).astype(np.float32)


@dataclass
class DecisionMaps:
    """uint8 probabilities (3, x, y, z) of outside / lung / lesion on a RAS box grid, and its affine."""

    probability: np.ndarray
    affine: np.ndarray


class LesionDecision:
    """The decision network, loaded once per process from a checkpoint's stage payload."""

    def __init__(self, network: torch.nn.Module, meta: dict, device: torch.device):
        self.network, self.meta, self.device = network, meta, device
        self.spacing_mm = float(Chain(meta["input"]["chain"]).spacing_mm)
        self.windows = [tuple(w) for w in meta["input"]["windows"]]
        # the network's total downsampling: box sides are padded to a multiple of it
        self.divisor = int(np.prod(meta["network"]["args"]["strides"]))

    @classmethod
    def from_stage(cls, stage: dict, device: torch.device, where=None) -> "LesionDecision":
        meta = stage["meta"]
        network = build_network(meta["network"]["name"], for_inference=True, **meta["network"]["args"])
        try:
            network.load_state_dict(stage["state_dict"])
        except RuntimeError as err:
            raise LungctError(where, f"lesion-decision weights do not fit its network ({str(err).splitlines()[0][:160]})") from None
        return cls(network.to(device).eval(), meta, device)

    def grid_around(self, lungs_world_box: np.ndarray, margin_mm: float) -> tuple[np.ndarray, tuple]:
        """(affine, shape) of the RAS grid at this stage's spacing covering a world box (2 x 3 RAS corners)
        widened by `margin_mm`, its sides a multiple of the network's divisor."""
        low, high = lungs_world_box[0] - margin_mm, lungs_world_box[1] + margin_mm
        shape = np.ceil((high - low) / self.spacing_mm / self.divisor).astype(int) * self.divisor
        centre = (low + high) / 2
        affine = np.eye(4)
        affine[:3, :3] *= self.spacing_mm
        affine[:3, 3] = centre - (shape - 1) / 2 * self.spacing_mm
        return affine, tuple(int(n) for n in shape)

    def run(self, hu_source: sitk.Image, affine: np.ndarray, shape: tuple) -> DecisionMaps:
        """The three probabilities on the grid (affine, shape), from `hu_source` (calibrated HU, linear)."""
        reference = sitk.Image([int(n) for n in shape][::-1], sitk.sitkFloat32)
        set_sitk_geometry(reference, affine[:, REVERSE_AXES])
        hu = sitk_view_to_array(sitk.Resample(hu_source, reference, sitk.Transform(), sitk.sitkLinear, -1024.0,
                                              sitk.sitkFloat32))
        batch = torch.from_numpy(window_channels(hu, self.windows))[None].to(self.device)
        with torch.inference_mode():
            probability = F.softmax(self.network(batch).float(), dim=1)[0]
        scores = (probability * 255 + 0.5).clamp_(0, 255).to(torch.uint8).cpu().numpy()
        return DecisionMaps(scores, affine)


def hu_image(stored: np.ndarray, affine: np.ndarray, slope: float, intercept: float) -> sitk.Image:
    """The scan as a SimpleITK image in calibrated HU (float32 only when the calibration changes values)."""
    if slope == 1.0 and intercept == 0.0:
        return array_to_sitk(stored, affine)
    return array_to_sitk(stored.astype(np.float32) * np.float32(slope) + np.float32(intercept), affine)
