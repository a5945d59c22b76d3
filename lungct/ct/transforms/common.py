"""Small helpers the transforms share: the volumes of the chain's dict and its HU conversions.

The CT chain imports nothing of MONAI: inference would otherwise pay MONAI's import (1.7 s here, it
loads every MONAI submodule) on every run for a base class (lungct.keyed) and a tensor type. A volume
travels as a channel-first tensor with its affine beside it under "<key>_affine"; when MONAI is loaded anyway (training, or a recipe
that names a MONAI transform) it is a MetaTensor as well, so MONAI's spatial transforms keep the geometry.
"""
from __future__ import annotations

import sys

import numpy as np
import torch

from lungct.geometry import voxel_spacing


def volume_of(data: dict, key: str = "image") -> np.ndarray:
    """The (x, y, z) numpy view of a channel-first MetaTensor or array in the dict."""
    value = data[key]
    array = value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return array[0]


def affine_of(data: dict, key: str = "image") -> np.ndarray:
    """The volume's affine: a MetaTensor's own (a MONAI transform may have moved it), else "<key>_affine"."""
    value = data[key]
    affine = getattr(value, "affine", None)
    return np.asarray(data[f"{key}_affine"] if affine is None else affine, dtype=float)


def put_volume(data: dict, key: str, array: np.ndarray, affine) -> dict:
    """Store an (x, y, z) array on the grid `affine` as data[key] (channel first) and data[key + "_affine"]."""
    affine = np.asarray(affine, dtype=float)
    tensor = torch.from_numpy(np.ascontiguousarray(array)[None])
    monai_data = sys.modules.get("monai.data")
    data[key] = monai_data.MetaTensor(tensor, affine=torch.as_tensor(affine)) if monai_data else tensor
    data[f"{key}_affine"] = affine
    return data


def spacing_of(data: dict, key: str = "image") -> np.ndarray:
    return voxel_spacing(affine_of(data, key))


def put_like(data: dict, out_key: str, array: np.ndarray, key: str = "image") -> dict:
    """Store `array` as data[out_key] on the same grid as data[key]."""
    return put_volume(data, out_key, array, affine_of(data, key))


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
