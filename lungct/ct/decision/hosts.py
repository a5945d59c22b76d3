"""Host volumes for the lesion decision: whole chest CTs on the decision network's grid (RAS, isotropic),
in HU, with their lungs labelled right (1) and left (2), into which lungct.ct.decision.families paints.

A host's lungs come from a manual reference where the data has one, else from a lungct mask of the
aerated convention (a checked pseudo-label); both are carried onto the grid by nearest neighbour.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from lungct.ct.segmenter import prepare_scan
from lungct.errors import LungctError
from lungct.evaluate import read_labels
from lungct.geometry import labels_to_grid, voxel_spacing
from lungct.io import load_scan
from lungct.recipes import Chain

HU_FILL = -1024.0  # outside the scan's field of view


@dataclass
class Host:
    """One host volume: HU and right/left lung labels on a RAS grid."""

    name: str
    hu: np.ndarray  # float32 (x, y, z)
    sides: np.ndarray  # uint8 0 / 1 right / 2 left
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return voxel_spacing(self.affine)


def decision_chain(spacing_mm: float) -> Chain:
    """The input chain up to the HU window: calibration check, then RAS at `spacing_mm` in all three axes
    (thick slices are interpolated: the decision network sees every scan on the same grid)."""
    return Chain([{"name": "CheckHUCalibrationd", "args": {"tolerance_hu": 50, "recalibrate": True}},
                  {"name": "Resampled", "args": {"spacing_mm": spacing_mm, "axcodes": "RAS",
                                                 "keep_thick_slices": False}}])


def load_host(name: str, scan_path: Path, labels_path: Path, spacing_mm: float, sides_path: Path | None = None) -> Host:
    """A host from a scan and its right/left lung labels; binary labels take their sides from a right/left
    mask on the same grid (`sides_path`, e.g. lungct's), else from the lungs' parts and the midline."""
    scan = load_scan(Path(scan_path))
    prepared = prepare_scan(decision_chain(spacing_mm), scan)
    labels, affine = read_labels(Path(labels_path))
    if labels.shape != scan.array.shape:
        raise LungctError(labels_path, f"labels of shape {labels.shape} are not on the grid of {scan_path} "
                                       f"{scan.array.shape}")
    if labels.max() == 1 and sides_path is not None:
        labels = split_by_nearest(labels > 0, read_labels(Path(sides_path))[0])
    sides = labels_to_grid(labels, affine, prepared.image.shape, prepared.affine)
    if sides.max() == 1:
        sides = split_at_midline(sides > 0, prepared.affine)
    return Host(name, prepared.image.astype(np.float32), sides.astype(np.uint8), prepared.affine)


def split_by_nearest(lungs: np.ndarray, sides: np.ndarray) -> np.ndarray:
    """Binary lungs as right (1) / left (2): each voxel takes the nearest side label of `sides`."""
    out = np.zeros(lungs.shape, np.uint8)
    if not lungs.any() or not sides.any():
        return lungs.astype(np.uint8)
    _, nearest = ndi.distance_transform_edt(sides == 0, return_indices=True)
    out[lungs] = sides[tuple(index[lungs] for index in nearest)]
    return out


def split_at_midline(lungs: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Binary lungs as right (1) / left (2): each connected part by the side of the lungs' centre its own
    centre lies on (RAS: the right lung at higher x)."""
    parts, count = ndi.label(lungs)
    centre = np.argwhere(lungs)[:, 0].mean()
    out = np.zeros(lungs.shape, np.uint8)
    for part in range(1, count + 1):
        voxels = parts == part
        out[voxels] = 1 if np.argwhere(voxels)[:, 0].mean() >= centre else 2
    return out
