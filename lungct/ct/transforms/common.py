"""Small helpers the transforms share: reading arrays and geometry out of the chain's dict."""
from __future__ import annotations

import numpy as np
import torch
from monai.data import MetaTensor

from lungct.geometry import voxel_spacing


def volume_of(data: dict, key: str = "image") -> np.ndarray:
    """The (x, y, z) numpy view of a channel-first MetaTensor or array in the dict."""
    value = data[key]
    array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return array[0]


def affine_of(data: dict, key: str = "image") -> np.ndarray:
    value = data[key]
    affine = value.affine if isinstance(value, MetaTensor) else data[f"{key}_affine"]
    return np.asarray(affine, dtype=float)


def spacing_of(data: dict, key: str = "image") -> np.ndarray:
    return voxel_spacing(affine_of(data, key))


def like_image(data: dict, array: np.ndarray, key: str = "image") -> MetaTensor:
    """A channel-first MetaTensor on the same grid as data[key]."""
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array)[None]), affine=torch.as_tensor(affine_of(data, key)))


def case_info(data: dict) -> dict:
    """The per-case record (flags, warnings, measurements) every step may add to."""
    info = data.setdefault("case", {})
    info.setdefault("warnings", [])
    info.setdefault("flags", [])
    return info


def hu_to_stored(data: dict, hu: float) -> float:
    """A threshold in Hounsfield units expressed in the image's stored units (see CheckHUCalibrationd)."""
    calibration = case_info(data).get("hu_calibration") or {}
    slope = calibration.get("slope", 1.0) if calibration.get("applies_to_segmentation") else 1.0
    intercept = calibration.get("intercept", 0.0) if calibration.get("applies_to_segmentation") else 0.0
    return (hu - intercept) / slope


def window_to_hu(values, window: dict):
    """Network input (HUWindowd's [b_min, b_max]) back to HU; exact inside the window, its ends outside it."""
    scale = (window["a_max"] - window["a_min"]) / (window["b_max"] - window["b_min"])
    return (values - window["b_min"]) * scale + window["a_min"]


def hu_to_window(hu, window: dict):
    """HU to the network input as HUWindowd makes it (clipped to [b_min, b_max])."""
    scale = (window["a_max"] - window["a_min"]) / (window["b_max"] - window["b_min"])
    return np.clip((hu - window["a_min"]) / scale + window["b_min"], window["b_min"], window["b_max"])
