"""The radiograph segmenter: a loaded model turns chest radiographs into lung fields at their own size.

Per radiograph: read (PNG/JPEG/TIFF, 16-bit, DICOM CR/DX with its LUTs) -> the checkpoint's recorded
chain to 256 x 256 -> network -> lung probability back to the original pixels -> two largest fields,
holes filled, right/left labels when separable -> a PNG mask (0/255, so it reads like a reference mask)
and `-labels.png` (1 = right lung, 2 = left lung), or one NIfTI label map when the output is named
.nii.gz; a JSON with the areas in cm². No flip test-time augmentation: a flip swaps right and left.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lungct.cxr.postprocess import finish_cxr
from lungct.errors import LungctError
from lungct.io.atomic import atomic_path
from lungct.io.discover import CaseSource
from lungct.io.radiograph import Radiograph, load_radiograph
from lungct.io.volumes import NIFTI_SUFFIXES, suffix_of, write_nifti
from lungct.labels import BINARY_LABELS, LUNG_LABELS
from lungct.models import Model, flip_dice, uncertain_fraction
from lungct.options import InferOptions
from lungct.recipes import Chain
from lungct.report import save_picture_overlay
from lungct.segmentation import OutputPlan, Result, Segmenter


@dataclass
class PreparedRadiograph:
    radiograph: Radiograph
    image: np.ndarray  # (256, 256) network input
    record: dict  # the chain's record: original shape, spacing, resize/pad


class RadiographResult(Result):
    modality = "cxr"
    measure_key = "areas_cm2"

    def __init__(self, *args, radiograph: Radiograph, mask: np.ndarray, **kwargs):
        super().__init__(*args, **kwargs)
        self.radiograph, self.mask = radiograph, mask

    def write_outputs(self, plan: OutputPlan) -> dict:
        written = {"mask": plan.mask}
        if suffix_of(plan.mask) in NIFTI_SUFFIXES:
            write_nifti(plan.mask, self.labels.T[:, :, None], coronal_affine(self.radiograph.spacing_mm), dtype=np.uint8)
        else:
            write_png(plan.mask, self.mask * 255)  # 0/255: viewable, like reference masks
            if self.labels is not self.mask and "left_lung" in self.label_values:
                labels_path = plan.mask.with_name(f"{plan.mask.name[:-len('.png')]}-labels.png")
                write_png(labels_path, self.labels)
                written["labels_mask"] = labels_path
        if plan.preview is not None:
            save_picture_overlay(plan.preview, self.radiograph.array, self.labels, self.label_values)
            written["preview"] = plan.preview
        return written


def coronal_affine(spacing_mm) -> np.ndarray:
    """RAS affine of a frontal radiograph stored as (cols, rows, 1): columns run towards the patient's
    left (-x), rows downwards (-z), so viewers show it as a coronal plane the way it is read."""
    row_mm, col_mm = spacing_mm or (1.0, 1.0)
    return np.array([[-float(col_mm), 0, 0, 0], [0, 0, 1.0, 0], [0, -float(row_mm), 0, 0], [0, 0, 0, 1.0]])


def write_png(path: Path, array: np.ndarray) -> Path:
    """An 8-bit PNG of a 2D label array, atomically."""
    from PIL import Image

    with atomic_path(Path(path)) as tmp:
        Image.fromarray(np.asarray(array).clip(0, 255).astype(np.uint8)).save(tmp, format="PNG")
    return Path(path)


class RadiographSegmenter(Segmenter):
    """`RadiographSegmenter.load("cxr-lungs-2d").segment("cxr.png")`: one loaded model, many radiographs."""

    modality = "cxr"

    def __init__(self, model: Model, options: InferOptions = InferOptions()):
        super().__init__(model, options)
        if model.modality != self.modality:
            raise LungctError(model.path, f"is a {model.modality} model, not a radiograph model")
        self.binary = options.binary
        self.post = dict(model.meta.get("inference") or {})
        self.chain = Chain(model.meta["input"]["chain"], model.path)

    @classmethod
    def load(cls, model=None, device: str = "auto", precision: str = "auto", **options) -> "RadiographSegmenter":
        options = InferOptions(device=device, precision=precision, **options)
        return cls(Model.load(model, cls.modality, device, precision), options)

    def settings(self) -> dict:
        return {**super().settings(), **self.post}

    def read(self, source) -> Radiograph:
        if isinstance(source, Radiograph):
            return source
        if isinstance(source, CaseSource):
            refusal = source.refusal("cxr")
            if refusal:
                raise LungctError(source.source, refusal)
            source = source.paths[0]
        return load_radiograph(source)

    def prepare(self, radiograph: Radiograph) -> PreparedRadiograph:
        data = {"image": radiograph.array[None].astype(np.float32),
                "case": {"source": str(radiograph.source), "original_shape": list(radiograph.original_shape),
                         "spacing_mm": list(radiograph.spacing_mm) if radiograph.spacing_mm else None,
                         "patient_right_on_image_left": radiograph.patient_right_on_image_left,
                         "photometric": radiograph.photometric, "warnings": list(radiograph.warnings)}}
        out = self.chain(data)
        return PreparedRadiograph(radiograph, np.asarray(out["image"], dtype=np.float32)[0], out["case"])

    def finish(self, prepared: PreparedRadiograph) -> RadiographResult:
        radiograph, model = prepared.radiograph, self.model
        timings = {}
        start = time.perf_counter()
        agreement = [0, 0]  # against the mirrored film: a confidence measure only, the output is unflipped
        _, probability = model.predict_slices(prepared.image[:, :, None], batch_size=1, flips=[(1,)],
                                              agreement=agreement, average=False)
        timings["network"] = round(time.perf_counter() - start, 3)
        confidence = {"flip_dice": flip_dice(agreement),
                      "uncertain_fraction": uncertain_fraction(probability, model.channel_values)}
        start = time.perf_counter()
        lung = 1.0 - probability[model.channel_values == 0][0, :, :, 0].astype(np.float32) / 255.0
        post = self.post
        result = finish_cxr(lung, prepared.record, threshold=float(post["threshold"]),
                            min_fraction=float(post["min_fraction"]), fill_holes=bool(post["fill_holes"]),
                            split=bool(post["split_fields"]) and not self.binary)
        timings["postprocess"] = round(time.perf_counter() - start, 3)
        split = result.labels is not None
        labels = result.labels if split else result.mask
        extra = {"original_shape": list(radiograph.original_shape),
                 "spacing_mm": list(radiograph.spacing_mm) if radiograph.spacing_mm else None,
                 "confidence": confidence}
        return RadiographResult(radiograph.name, str(radiograph.source), radiograph.photometric.get("format", ""),
                                labels, dict(LUNG_LABELS if split else BINARY_LABELS), result.areas_cm2,
                                model.record(), self.settings(), list(radiograph.warnings) + result.warnings,
                                [], timings, extra, radiograph=radiograph, mask=result.mask)
