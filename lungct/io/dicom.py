"""DICOM series: headers with pydicom, pixels with SimpleITK (GDCM decodes RLE, JPEG-LS and JPEG 2000).

Geometry is computed here from ImagePositionPatient/ImageOrientationPatient rather than trusted to a
reader, so gaps, uneven spacing and mixed orientations are found and reported instead of silently
stretching the volume.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from lungct.errors import LungctError
from lungct.geometry import LPS_TO_RAS, sitk_affine, sitk_to_array
from lungct.io.gantry_tilt import slice_shear, tilt_warning
from lungct.io.volumes import itk_reason
from lungct.os_names import itk_names

CT_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2"}
PROJECTION_MODALITIES = {"CR", "DX", "DR", "RG", "MG", "XA", "RF", "PX", "IO"}
_HEADER_TAGS = [
    "SOPClassUID", "Modality", "SeriesInstanceUID", "StudyInstanceUID", "SeriesDescription", "SeriesNumber",
    "ImageType", "InstanceNumber", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
    "Rows", "Columns", "NumberOfFrames", "SliceThickness", "RescaleSlope", "RescaleIntercept",
    "Manufacturer", "ManufacturerModelName", "ConvolutionKernel", "KVP", "PatientPosition",
    "BodyPartExamined", "SamplesPerPixel", "PhotometricInterpretation", "AcquisitionNumber",
    "ImagerPixelSpacing", "SOPInstanceUID",
]
SPACING_TOLERANCE = 0.01  # relative deviation of slice gaps from their median before we call them uneven
ORIENTATION_TOLERANCE = 1e-3


@dataclass
class DicomSlice:
    """The header facts of one DICOM file that series grouping and geometry need."""

    path: Path
    series_uid: str
    modality: str
    sop_class: str
    rows: int
    columns: int
    frames: int
    position: tuple | None
    orientation: tuple | None
    pixel_spacing: tuple | None
    image_type: tuple
    description: str
    instance: int | None
    thickness: float | None
    kind: str | None = "ct"  # "ct", "cxr" (a radiograph) or None (neither), from dicom_kind
    kind_reason: str = ""
    sop_uid: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def is_localizer(self) -> bool:
        return "LOCALIZER" in self.image_type


CT_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.2",)  # CT, enhanced CT, legacy converted
RADIOGRAPH_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.1",)  # CR (…1.1), DX for presentation/processing (…1.1.1.x)
CHEST_RADIOGRAPH_MODALITIES = {"CR", "DX", "DR", "RG"}
OTHER_PROJECTION_MODALITIES = {"MG": "a mammogram", "XA": "an angiography run", "RF": "a fluoroscopy run",
                               "IO": "an intra-oral dental radiograph", "PX": "a panoramic dental radiograph"}


def dicom_kind(ds) -> tuple[str | None, str]:
    """("cxr" | "ct" | None, why) from a DICOM header: what the file holds as far as lungct is concerned."""
    modality = str(ds.get("Modality", "") or "").upper()
    sop = str(ds.get("SOPClassUID", "") or "")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if modality == "CT" or (not modality and sop.startswith(CT_SOP_PREFIXES)):
        return "ct", "DICOM Modality CT"
    if modality in CHEST_RADIOGRAPH_MODALITIES:
        return "cxr", f"DICOM Modality {modality}"
    if modality in OTHER_PROJECTION_MODALITIES:
        return None, f"DICOM Modality {modality} ({OTHER_PROJECTION_MODALITIES[modality]}), not a chest radiograph"
    if sop.startswith(RADIOGRAPH_SOP_PREFIXES) and not sop.startswith(CT_SOP_PREFIXES):
        return "cxr", "a CR/DX SOP class"
    # "DX-like": secondary captures and exports without a usable Modality but shaped like a projection.
    dx_like = frames == 1 and "ImagerPixelSpacing" in ds and "ImagePositionPatient" not in ds
    if modality in ("", "OT") and (dx_like or ("Rows" in ds and "ImagePositionPatient" not in ds
                                               and "SliceThickness" not in ds)):
        return "cxr", f"a single 2D image without slice geometry (Modality {modality or 'missing'})"
    if modality in ("MR", "PT", "NM", "US", "SEG", "RTSTRUCT", "SR", "PR"):
        return None, f"DICOM Modality {modality}, neither a radiograph nor CT"
    return None, f"DICOM Modality {modality or 'missing'} with slice geometry: not recognised as a radiograph"



def is_dicom_file(path: Path) -> bool:
    """True for files with the DICM preamble, or a .dcm name that pydicom can parse."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    if len(head) == 132 and head[128:132] == b"DICM":
        return True
    if path.suffix.lower() in (".dcm", ".dicom", ".ima"):
        return True  # no preamble, but named as DICOM: let the reader say what is wrong with it
    return False


def read_header(path: Path) -> DicomSlice:
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, force=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise LungctError(path, f"not a readable DICOM file ({err})") from None
    if "Rows" not in ds and "SOPClassUID" not in ds:
        raise LungctError(path, "not a DICOM image (no Rows or SOP Class in its header)")

    def floats(name):
        value = ds.get(name)
        try:
            return tuple(float(v) for v in value) if value is not None and len(value) else None
        except (TypeError, ValueError):
            return None

    def number(name, cast=float):
        try:
            value = ds.get(name)
            return cast(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    kind, reason = dicom_kind(ds)
    return DicomSlice(
        path=Path(path),
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        modality=str(ds.get("Modality", "") or "").upper(),
        sop_class=str(ds.get("SOPClassUID", "") or ""),
        rows=number("Rows", int) or 0,
        columns=number("Columns", int) or 0,
        frames=number("NumberOfFrames", int) or 1,
        position=floats("ImagePositionPatient"),
        orientation=floats("ImageOrientationPatient"),
        pixel_spacing=floats("PixelSpacing"),
        image_type=tuple(str(v).upper() for v in (ds.get("ImageType") or [])),
        description=str(ds.get("SeriesDescription", "") or ""),
        instance=number("InstanceNumber", int),
        thickness=number("SliceThickness"),
        kind=kind,
        kind_reason=reason,
        sop_uid=str(ds.get("SOPInstanceUID", "") or ""),
        extra={k: str(ds.get(k)) for k in ("Manufacturer", "ManufacturerModelName", "ConvolutionKernel",
                                           "KVP", "PatientPosition", "BodyPartExamined",
                                           "PhotometricInterpretation", "StudyInstanceUID")
               if ds.get(k) not in (None, "")},
    )


def refuse_non_ct(slices: list[DicomSlice], where: Path) -> list[str]:
    """Refuse series that are not CT; return warnings for series that do not say."""
    modalities = sorted({s.modality for s in slices if s.modality})
    if modalities and modalities != ["CT"]:
        kind = "a radiograph" if set(modalities) & PROJECTION_MODALITIES else "not CT"
        raise LungctError(where, f"DICOM Modality is {'/'.join(modalities)} ({kind}), not a CT series")
    if not modalities:
        if all(s.sop_class in CT_SOP_CLASSES for s in slices):
            return []
        return ["DICOM Modality is missing; assumed CT (checked by the HU test)"]
    return []


def series_geometry(slices: list[DicomSlice], where: Path):
    """Sort slices along the normal; return (sorted slices, RAS affine, slice positions along the normal (mm),
    warnings). The affine is sheared for a tilted gantry (lungct.io.gantry_tilt)."""
    warnings: list[str] = []
    sizes = {(s.rows, s.columns) for s in slices}
    if len(sizes) > 1:  # (a few odd images are left out at discovery: lungct.io.series_members)
        raise LungctError(where, f"series mixes image sizes {sorted(sizes)} and no size is most of it: split it "
                                 "into one series per size")
    missing = [s.path.name for s in slices if s.position is None or s.orientation is None or s.pixel_spacing is None]
    if missing:
        if len(slices) == 1:
            warnings.append("no ImagePositionPatient/ImageOrientationPatient/PixelSpacing: geometry assumed (1 mm, axial)")
            only = slices[0]
            sp = only.pixel_spacing or (1.0, 1.0)
            lps = np.diag([sp[1], sp[0], only.thickness or 1.0, 1.0])
            return slices, LPS_TO_RAS @ lps, np.zeros(1), warnings
        raise LungctError(where, f"{len(missing)} file(s) lack ImagePositionPatient, ImageOrientationPatient "
                                 f"or PixelSpacing (e.g. {missing[0]}): cannot place slices in space")
    orientations = np.array([s.orientation for s in slices])
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        count = len({tuple(np.round(o, 3)) for o in orientations})
        raise LungctError(where, f"series mixes {count} slice orientations (ImageOrientationPatient differs); "
                                 "split it into one series per orientation")
    spacings = np.array([s.pixel_spacing for s in slices])
    if np.abs(spacings - spacings[0]).max() > 1e-4:
        raise LungctError(where, "series mixes pixel spacings")
    row_dir = np.array(slices[0].orientation[:3])  # direction of increasing column index
    col_dir = np.array(slices[0].orientation[3:])  # direction of increasing row index
    normal = np.cross(row_dir, col_dir)
    positions = np.array([s.position for s in slices])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    slices = [slices[i] for i in order]
    along = along[order]
    positions = positions[order]
    steps = np.diff(along)
    if len(steps) and np.any(steps < 1e-3):
        dupes = int(np.sum(steps < 1e-3))
        raise LungctError(where, f"{dupes} slice position(s) occur twice (two acquisitions in one series?)")
    dz = float(np.median(steps)) if len(steps) else float(slices[0].thickness or 1.0)
    if len(steps):
        deviation = np.abs(steps - dz) / dz
        gaps = np.where(steps > 1.5 * dz)[0]
        if len(gaps):
            first = gaps[0]
            warnings.append(f"missing slices: {len(gaps)} gap(s), e.g. {steps[first]:.2f} mm between slices at "
                            f"{along[first]:.1f} and {along[first + 1]:.1f} mm (expected {dz:.2f} mm); interpolated")
        elif deviation.max() > SPACING_TOLERANCE:
            warnings.append(f"uneven slice spacing ({steps.min():.3f}-{steps.max():.3f} mm); resampled to "
                            f"{dz:.3f} mm")
    shear = slice_shear(positions, along, normal, min(slices[0].pixel_spacing), where)
    if shear.any():
        warnings.append(tilt_warning(shear))
    lps = np.eye(4)
    lps[:3, 0] = row_dir * slices[0].pixel_spacing[1]
    lps[:3, 1] = col_dir * slices[0].pixel_spacing[0]
    lps[:3, 2] = (normal + shear) * dz  # a gantry tilt shears the grid: each slice where its header puts it
    lps[:3, 3] = positions[0]
    return slices, LPS_TO_RAS @ lps, along - along[0], warnings


def read_series(slices: list[DicomSlice], where: Path):
    """(float32 (x, y, z) array in rescaled units, RAS affine, info dict, warnings) of one series."""
    warnings = refuse_non_ct(slices, where)
    if len(slices) == 1 and slices[0].frames > 1:
        return _read_multiframe(slices[0], warnings)
    slices, affine, offsets, geometry_warnings = series_geometry(slices, where)
    warnings += geometry_warnings
    reader = sitk.ImageSeriesReader()
    reader.SetOutputPixelType(sitk.sitkFloat32)  # rescale applied per file, no integer truncation
    try:
        with itk_names([s.path for s in slices]) as names:
            reader.SetFileNames(names)
            image = reader.Execute()
    except RuntimeError as err:
        bad = _first_unreadable(slices)
        raise LungctError(bad or where, f"cannot decode DICOM pixel data ({itk_reason(err)})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise LungctError(where, "colour DICOM images: not a CT series")
    array = sitk_to_array(image)
    if array.shape[2] != len(slices):
        raise LungctError(where, f"read {array.shape[2]} slices from {len(slices)} files")
    if len(offsets) > 1:
        array = _regularise(array, offsets, float(np.median(np.diff(offsets))))  # the step along the normal
    info = {
        "series_uid": slices[0].series_uid,
        "modality": slices[0].modality or "unknown",
        "description": slices[0].description,
        "files": len(slices),
        **({"SliceThickness": slices[0].thickness} if slices[0].thickness else {}),
        **slices[0].extra,
    }
    return array, affine, info, warnings


def _regularise(array: np.ndarray, offsets: np.ndarray, dz: float) -> np.ndarray:
    """Linearly interpolate slices at uneven positions onto a grid with constant step dz."""
    targets = np.arange(int(round(offsets[-1] / dz)) + 1) * dz
    if len(targets) == len(offsets) and np.allclose(targets, offsets, atol=SPACING_TOLERANCE * dz):
        return array
    out = np.empty(array.shape[:2] + (len(targets),), dtype=array.dtype)
    upper = np.clip(np.searchsorted(offsets, targets), 1, len(offsets) - 1)
    lower = upper - 1
    weight = np.clip((targets - offsets[lower]) / (offsets[upper] - offsets[lower]), 0, 1).astype(np.float32)
    for k in range(len(targets)):
        out[:, :, k] = array[:, :, lower[k]] * (1 - weight[k]) + array[:, :, upper[k]] * weight[k]
    return out


def _read_multiframe(item: DicomSlice, warnings: list[str]):
    try:
        with itk_names([item.path]) as (name,):
            image = sitk.ReadImage(name, sitk.sitkFloat32)
    except RuntimeError as err:
        raise LungctError(item.path, f"cannot decode DICOM pixel data ({itk_reason(err)})") from None
    warnings.append("multi-frame DICOM: geometry taken from the reader (GDCM)")
    info = {"series_uid": item.series_uid, "modality": item.modality or "unknown", "files": 1, **item.extra}
    return sitk_to_array(image), sitk_affine(image), info, warnings


def _first_unreadable(slices: list[DicomSlice]) -> Path | None:
    for s in slices:
        try:
            with itk_names([s.path]) as (name,):
                sitk.ReadImage(name)
        except RuntimeError:
            return s.path
    return None
