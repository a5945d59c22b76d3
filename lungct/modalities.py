"""The kinds of image lungct segments, in one registry: CT scans and chest radiographs. Each says what
its masks are written as, which model it uses by default, what its results measure, which segmenter
serves it and which transforms its chains may name. Code that differs by modality asks the registry,
not the modality's name.

The segmenters and the chains' transforms load only when a modality's case needs them: importing them
loads PyTorch, about 2 s of every command that never segments (measured on the shared 2-core machine),
so those imports sit inside the functions below.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from lungct.errors import LungctError


@dataclass(frozen=True)
class Modality:
    name: str  # "ct" or "cxr", as checkpoints and sidecars record it
    noun: str  # what its inputs are called in messages
    mask_suffix: str  # a folder output's mask file: <case><mask_suffix>
    mask_suffixes: tuple  # what a one-file output may be called
    default_model: str  # the shipped model (lungct/weights/<name>.pt)
    measure_key: str  # the sidecar's measurements
    measure_unit: str
    dicom_objects: bool  # masks can also be written as DICOM-SEG / RTSTRUCT referencing a source series
    segmenter: Callable  # (Model, InferOptions) -> Segmenter
    load_transforms: Callable  # () -> None: registers the chain's transforms (lungct.keyed.TRANSFORMS)
    check_checkpoint: Callable  # (meta, path) -> None: refuses, in one line, a model this code cannot run


def _ct_segmenter(model, options):
    from lungct.ct.segmenter import CTSegmenter

    return CTSegmenter(model, options)


def _cxr_segmenter(model, options):
    from lungct.cxr.segmenter import RadiographSegmenter

    return RadiographSegmenter(model, options)


def _ct_checkpoint(meta: dict, path) -> None:
    from lungct.ct.pipeline import PostProcessing

    PostProcessing.from_meta(meta, path)


def _no_check(meta: dict, path) -> None:
    return None


def _ct_transforms() -> None:
    import lungct.ct.transforms  # noqa: F401  (registers on import)


def _cxr_transforms() -> None:
    import lungct.cxr.transforms  # noqa: F401  (registers on import)


CT = Modality("ct", "CT scans", ".nii.gz", (".nii.gz", ".nii"), "ct-lungs", "volumes_ml", "mL", True,
              _ct_segmenter, _ct_transforms, _ct_checkpoint)
CXR = Modality("cxr", "radiographs", ".png", (".nii.gz", ".nii", ".png"), "cxr-lungs-2d", "areas_cm2", "cm²", False,
               _cxr_segmenter, _cxr_transforms, _no_check)
MODALITIES = {m.name: m for m in (CT, CXR)}


def get_modality(name: str) -> Modality:
    if name not in MODALITIES:
        raise LungctError(None, f"unknown modality '{name}' (known: {', '.join(MODALITIES)})")
    return MODALITIES[name]


def load_all_transforms() -> None:
    """Register every modality's chain transforms, for a recipe that may name any of them."""
    for each in MODALITIES.values():
        each.load_transforms()
