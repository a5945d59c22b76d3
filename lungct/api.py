"""One call from an image to its lung mask: `lungct.segment(input)`.

    result = lungct.segment("scan.nii.gz")            # a file or a DICOM folder (CT or radiograph)
    result = lungct.segment(sitk_image)               # a SimpleITK.Image, geometry and all
    result = lungct.segment(nibabel_image)            # a nibabel image: result.mask is one too
    result.mask, result.summary, result.write("mask.nii.gz")

The mask has the input's exact geometry (shape, spacing, origin, direction). `result.summary` is the
sidecar `lungct infer` writes (volumes, both conventions, the model, the post-processing it ran, warnings).
The models load once per process and serve every later call with the same options; `lungct infer` runs
through the same segmenters, so the CLI and this call give byte-identical masks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from lungct.engine import resolved, segmenter_for
from lungct.errors import LungctError
from lungct.geometry import affine_to_sitk, sitk_affine, sitk_to_array
from lungct.io import CaseSource, Scan, discover
from lungct.io.volumes import suffix_of
from lungct.options import InferOptions
from lungct.segmentation import OutputPlan, Result

ARRAY_REFUSAL = ("a numpy array carries no geometry: pass a SimpleITK.Image (SetSpacing, SetOrigin, SetDirection) "
                 "or a nibabel image (nibabel.Nifti1Image(array, affine)) so that the mask can keep it")


@dataclass
class Segmentation:
    """What `segment` returns: the mask in the input's form and geometry, the sidecar, the full result."""

    mask: object  # SimpleITK.Image (path or SimpleITK input) or nibabel image (nibabel input)
    summary: dict
    result: Result

    def write(self, path: str | Path, overwrite: bool = False) -> dict:
        """Write the mask (NIfTI; PNG for a radiograph) and its sidecar (<name>.json) beside it, atomically,
        as `lungct infer` does; returns the sidecar."""
        path = Path(path)
        suffix = suffix_of(path)
        if path.exists() and not overwrite:
            raise LungctError(path, "exists already (pass overwrite=True to replace it)")
        sources = {Path(s).resolve() for s in getattr(getattr(self.result, "scan", None), "sources", [])}
        if path.resolve() in sources:
            raise LungctError(path, "is the input: lungct never writes over an input")
        stem = path.name[: -len(suffix)] if suffix else path.name
        return self.result.write(OutputPlan(path, path.with_name(f"{stem}.json")))


def segment(input, *, model=None, modality: str | None = None, aerated: bool = False, binary: bool = False,
            device: str = "auto", precision: str = "auto", tta: bool = False, statistics: bool = True,
            recalibrate: bool = False) -> Segmentation:
    """Segment one scan or radiograph: a path (file or DICOM folder), a SimpleITK.Image or a nibabel image.

    `model`: a checkpoint path, a shipped model name or "latest" (default: the shipped model of the
    modality); `modality`: "ct" or "cxr" (found from a path; an in-memory image is CT unless told)."""
    options = resolved(InferOptions(models=(str(model),) if model else (), device=device, precision=precision,
                                    tta=tta, binary=binary, aerated=aerated, statistics=statistics,
                                    recalibrate=recalibrate))
    source, kind = _source(input, modality)
    result = segmenter_for(kind, options).segment(source)
    summary = result.sidecar(OutputPlan(None, Path(f"{result.name}.json")), {})
    return Segmentation(_mask_like(input, result), summary, result)


def _source(input, modality: str | None) -> tuple[object, str]:
    """(what a segmenter reads, its modality)."""
    if isinstance(input, np.ndarray):
        raise LungctError(None, ARRAY_REFUSAL)
    if isinstance(input, (str, Path)):
        cases = discover([Path(input)])
        if len(cases) != 1:
            raise LungctError(input, f"holds {len(cases)} cases; segment one at a time, or use `lungct infer`")
        case: CaseSource = cases[0]
        if modality and modality != case.modality:
            case.problem = case.problem or case.refusal(modality)
            case.modality = modality
        return case, case.modality
    if isinstance(input, sitk.Image):
        if input.GetNumberOfComponentsPerPixel() != 1:
            raise LungctError(None, "a SimpleITK image with several values per voxel (colour): give one channel")
        image = sitk.JoinSeries(input) if input.GetDimension() == 2 else input
        scan = Scan("image", sitk_to_array(image).astype(np.float32), sitk_affine(image), [], "memory")
        return scan, modality or "ct"
    if isinstance(input, nib.spatialimages.SpatialImage):
        array = np.asarray(input.dataobj, dtype=np.float32)
        if array.ndim == 2:
            array = array[:, :, None]
        header = input.header if isinstance(input, (nib.Nifti1Image, nib.Nifti2Image)) else None
        scan = Scan("image", array, np.asarray(input.affine, float), [], "nii" if header is not None else "memory",
                    header)
        return scan, modality or "ct"
    raise LungctError(None, f"cannot segment a {type(input).__name__}: give a path, a SimpleITK.Image or a "
                            "nibabel image")


def _mask_like(input, result: Result):
    """The labels in the input's own form: nibabel for nibabel, SimpleITK otherwise, same geometry."""
    labels = np.asarray(result.labels, np.uint8)
    if isinstance(input, nib.spatialimages.SpatialImage):
        labels = labels.reshape(input.shape[:3]) if len(input.shape) >= 3 else labels[:, :, 0]
        header = input.header.copy() if isinstance(input, (nib.Nifti1Image, nib.Nifti2Image)) else None
        mask = nib.Nifti1Image(labels, input.affine, header=header)
        if header is not None:
            mask.set_qform(*input.get_qform(coded=True))
            mask.set_sform(*input.get_sform(coded=True))
        mask.set_data_dtype(np.uint8)
        return mask
    if labels.ndim == 3 and isinstance(input, sitk.Image) and input.GetDimension() == 2:
        labels = labels[:, :, 0]
    mask = sitk.GetImageFromArray(np.ascontiguousarray(labels.T))
    if isinstance(input, sitk.Image):
        mask.CopyInformation(input)
    else:
        _set_geometry(mask, result)
    return mask


def _set_geometry(mask: sitk.Image, result: Result) -> None:
    """A mask's geometry from the result's RAS affine (a path input)."""
    affine = getattr(result, "affine", None)
    if affine is None or mask.GetDimension() != 3:
        return
    origin, spacing, direction = affine_to_sitk(affine)
    mask.SetOrigin(origin)
    mask.SetSpacing(spacing)
    mask.SetDirection(direction)
