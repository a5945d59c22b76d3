"""Reading chest radiographs: picture files (Pillow) and DICOM CR/DX (pydicom) into one grey array.

The array is float32 (rows, cols) as the image is displayed, with higher values brighter (dense
structures white), whatever the file stored: colour is turned grey, 16-bit depth is kept, DICOM goes
through its Modality LUT (rescale), VOI LUT (window) and MONOCHROME1 inversion. Pixel spacing comes only
from DICOM (PixelSpacing, else ImagerPixelSpacing corrected for magnification); picture files have none
unless the caller knows it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lungct.errors import LungctError
from lungct.io.dicom import dicom_kind, is_dicom_file
from lungct.io.volumes import PICTURE_SUFFIXES, VOLUME_SUFFIXES, stem_of, suffix_of
from lungct.os_names import itk_names

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)  # ITU-R BT.601, as Pillow's convert("L")
CT_VOLUME_REFUSAL = "is a CT volume, not a radiograph; use the CT model or --modality"


@dataclass
class Radiograph:
    """A radiograph as read: grey values (brighter = denser) and what we learnt from the file.

    `spacing_mm` is (row spacing, column spacing) in mm or None. `photometric` says how the stored
    values became grey (interpretation, bit depth, inversion, windowing). `patient_right_on_image_left`
    is the standard PA/AP display; DICOM PatientOrientation can say otherwise.
    """

    array: np.ndarray
    spacing_mm: tuple[float, float] | None
    source: Path
    original_shape: tuple[int, int]
    photometric: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    patient_right_on_image_left: bool = True

    @property
    def name(self) -> str:
        return stem_of(self.source)


def load_radiograph(path: str | Path, spacing_mm: float | tuple[float, float] | None = None) -> Radiograph:
    """Read a PNG/JPEG/TIFF/BMP picture or a DICOM radiograph; refuse CT volumes and non-images.

    `spacing_mm` (one value or (row, col)) supplies the pixel spacing of picture files, which do not
    store a trustworthy one; for DICOM it overrides the header.
    """
    path = Path(path)
    if not path.exists():
        raise LungctError(path, "no such file")
    if path.is_dir():
        raise LungctError(path, "is a folder; a radiograph is one file (a folder of DICOM slices is a CT series)")
    if path.stat().st_size == 0:
        raise LungctError(path, "file is empty")
    suffix = suffix_of(path)
    if suffix in VOLUME_SUFFIXES:
        raise LungctError(path, CT_VOLUME_REFUSAL)
    if suffix in PICTURE_SUFFIXES:
        radiograph = _read_picture(path)
    elif is_dicom_file(path):
        radiograph = _read_dicom(path)
    else:
        radiograph = _read_picture(path, guessed=True)
    if spacing_mm is not None:
        spacing = (float(spacing_mm),) * 2 if np.isscalar(spacing_mm) else tuple(float(s) for s in spacing_mm)
        if len(spacing) != 2 or min(spacing) <= 0:
            raise LungctError(path, f"pixel spacing must be one or two positive numbers (mm), got {spacing_mm}")
        radiograph.spacing_mm = spacing
    _check_content(radiograph)
    return radiograph


def _check_content(radiograph: Radiograph) -> None:
    array = radiograph.array
    if array.ndim != 2 or min(array.shape) < 16:
        raise LungctError(radiograph.source, f"image is {array.shape}: too small to be a radiograph")
    if not np.all(np.isfinite(array)):
        raise LungctError(radiograph.source, "image holds NaN or infinite values")
    if float(array.max() - array.min()) <= 0:
        raise LungctError(radiograph.source, f"image is uniform (all pixels {float(array.min()):g}): nothing to segment")


# ------------------------------------------------------------------------------------------------ pictures


def _read_picture(path: Path, guessed: bool = False) -> Radiograph:
    from PIL import Image, UnidentifiedImageError

    warnings: list[str] = []
    try:
        with Image.open(path) as image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                warnings.append(f"file holds {frames} images; the first is used")
            image.load()
            mode, fmt = image.mode, image.format or suffix_of(path)[1:].upper()
            if mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
                mode = image.mode
            elif mode == "1":
                image = image.convert("L")
            elif mode == "CMYK":
                image = image.convert("RGB")
                mode = "RGB"
            array = np.asarray(image)
    except UnidentifiedImageError:
        what = "not a recognised image or scan (expected PNG, JPEG, TIFF, BMP or DICOM)" if guessed else \
            f"cannot read {suffix_of(path)[1:].upper()} file: not a valid image"
        raise LungctError(path, what) from None
    except (OSError, SyntaxError, ValueError) as err:
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else "unreadable"
        raise LungctError(path, f"cannot read {suffix_of(path)[1:].upper() or 'image'} file (truncated or corrupt: {reason})") from None
    bits = 8 if array.dtype == np.uint8 else 16 if array.dtype in (np.uint16, np.int16) else 32
    if array.dtype.kind == "b":
        array, bits = array.astype(np.uint8), 1
    grey, colour_warning = to_grey(array, mode)
    if colour_warning:
        warnings.append(colour_warning)
    photometric = {"interpretation": "MONOCHROME2", "mode": mode, "bits": bits, "inverted": False,
                   "format": fmt, "voi": None}
    return Radiograph(grey, None, path, tuple(grey.shape), photometric, warnings)


def to_grey(array: np.ndarray, mode: str = "") -> tuple[np.ndarray, str | None]:
    """(float32 grey (rows, cols), warning or None) from grey, grey+alpha, RGB or RGBA pixels."""
    array = np.asarray(array)
    if array.ndim == 2:
        return array.astype(np.float32), None
    if array.ndim != 3 or array.shape[2] not in (2, 3, 4):
        raise ValueError(f"pixel array of shape {array.shape} is not a 2D grey or colour image")
    channels = array.shape[2]
    if channels == 2:  # grey + alpha
        return array[..., 0].astype(np.float32), None
    rgb = array[..., :3].astype(np.float64)
    spread = float(np.abs(rgb - rgb.mean(axis=2, keepdims=True)).max())
    warning = None
    if spread > 0.02 * max(float(rgb.max()), 1.0):
        warning = f"colour image ({mode or f'{channels} channels'}) converted to grey; radiographs are normally grey"
    return (rgb @ LUMA).astype(np.float32), warning


# ------------------------------------------------------------------------------------------------ DICOM

def _read_dicom(path: Path) -> Radiograph:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path), force=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise LungctError(path, f"not a readable DICOM file ({err})") from None
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise LungctError(path, "DICOM file holds no image (no Pixel Data)")
    kind, why = dicom_kind(ds)
    if kind == "ct":
        raise LungctError(path, CT_VOLUME_REFUSAL)
    if kind is None:
        raise LungctError(path, f"is {why}; lungct segments chest radiographs (CR/DX) and CT")
    warnings: list[str] = []
    stored = _dicom_pixels(ds, path, warnings)
    if stored.ndim == 3 and int(ds.get("SamplesPerPixel", 1) or 1) == 1:
        warnings.append(f"DICOM file holds {stored.shape[0]} frames; the first is used")
        stored = stored[0]
    elif stored.ndim == 4:
        warnings.append(f"DICOM file holds {stored.shape[0]} frames; the first is used")
        stored = stored[0]
    interpretation = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").upper()
    if stored.ndim == 3:  # colour secondary capture (pydicom gives RGB)
        grey, note = to_grey(stored, interpretation)
        if note:
            warnings.append(note)
        values, voi = grey, None
        interpretation_used = "RGB"
    else:
        values, voi = _dicom_lookup_tables(ds, stored, warnings)
        interpretation_used = interpretation
    inverse_shape = str(ds.get("PresentationLUTShape", "") or "").upper() == "INVERSE"
    inverted = interpretation_used == "MONOCHROME1" or (interpretation_used == "MONOCHROME2" and inverse_shape)
    if inverted:
        if interpretation_used == "MONOCHROME2":
            warnings.append("Presentation LUT Shape INVERSE on a MONOCHROME2 image: displayed inverted")
        values = float(values.max()) + float(values.min()) - values
    photometric = {"interpretation": interpretation_used, "bits": int(ds.get("BitsStored", 8) or 8),
                   "inverted": bool(inverted), "voi": voi, "format": "DICOM",
                   "modality": str(ds.get("Modality", "") or "")}
    view = str(ds.get("ViewPosition", "") or "").upper()
    if view in ("LL", "RL", "LATERAL", "LAT", "LLD", "RLD"):
        warnings.append(f"ViewPosition {view}: a lateral view; the lung fields are not separable into right and left")
    photometric["view"] = view or None
    spacing = _dicom_spacing(ds, warnings)
    right_on_left = _patient_right_on_image_left(ds, warnings)
    grey = np.ascontiguousarray(values, dtype=np.float32)
    return Radiograph(grey, spacing, path, tuple(grey.shape), photometric, warnings, right_on_left)


def _dicom_pixels(ds, path: Path, warnings: list[str]) -> np.ndarray:
    """Stored pixel values; compressed syntaxes pydicom cannot decode go through SimpleITK (GDCM)."""
    try:
        return np.asarray(ds.pixel_array)
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for missing decoders/corruption
        first = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
    import SimpleITK as sitk

    try:
        with itk_names([path]) as (name,):
            image = sitk.ReadImage(name)
    except RuntimeError:
        raise LungctError(path, f"cannot decode the DICOM pixel data ({first})") from None
    array = sitk.GetArrayFromImage(image)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    # SimpleITK (GDCM) applies RescaleSlope/Intercept itself: undo it so the Modality LUT is applied once.
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    if (slope, intercept) != (1.0, 0.0):
        array = (array.astype(np.float64) - intercept) / slope
    warnings.append("pixel data decoded with GDCM (pydicom has no decoder for this transfer syntax)")
    return array


def _dicom_lookup_tables(ds, stored: np.ndarray, warnings: list[str]) -> tuple[np.ndarray, str | None]:
    """Modality LUT (rescale or LUT sequence) then the first VOI LUT or window, as a display would."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    voi = None
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        voi = "VOI LUT sequence"
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        voi = f"window {ds.get('VOILUTFunction', 'LINEAR') or 'LINEAR'}"
    if voi is None:
        return values, None
    try:
        # Both a window and a VOI LUT sequence take the Modality LUT's output (PS3.3 C.11.2); the LUT
        # indexes integers, so integral values are passed as such.
        source = values.astype(np.int64) if np.array_equal(values, np.round(values)) else values
        windowed = np.asarray(apply_voi_lut(source, ds, index=0, prefer_lut=True), dtype=np.float64)
    except Exception as err:  # noqa: BLE001 - malformed VOI attributes: show the unwindowed image
        warnings.append(f"VOI LUT/window could not be applied ({str(err)[:120]}); values used as stored")
        return values, None
    if float(windowed.max() - windowed.min()) <= 0:
        warnings.append("the VOI window leaves a uniform image; values used without it")
        return values, None
    return windowed, voi


def _dicom_spacing(ds, warnings: list[str]) -> tuple[float, float] | None:
    def pair(name):
        value = ds.get(name)
        try:
            result = tuple(float(v) for v in value) if value is not None else None
        except (TypeError, ValueError):
            return None
        return result if result and len(result) == 2 and min(result) > 0 else None

    spacing = pair("PixelSpacing")
    if spacing:
        return spacing
    imager = pair("ImagerPixelSpacing")
    if imager:
        try:
            magnification = float(ds.get("EstimatedRadiographicMagnificationFactor", 1.0) or 1.0)
        except (TypeError, ValueError):
            magnification = 1.0
        if magnification <= 0:
            magnification = 1.0
        if magnification == 1.0:
            warnings.append("spacing from ImagerPixelSpacing (at the detector; anatomy is magnified by about 10%)")
        return (imager[0] / magnification, imager[1] / magnification)
    return None


def _patient_right_on_image_left(ds, warnings: list[str]) -> bool:
    """PatientOrientation's first value is where increasing columns point: 'L' in a standard display."""
    orientation = ds.get("PatientOrientation")
    try:
        towards = str(orientation[0]).upper() if orientation is not None and len(orientation) >= 1 else ""
    except TypeError:
        towards = ""
    if towards.startswith("R"):
        warnings.append("PatientOrientation says columns run towards the patient's right: the image is mirrored "
                        "against the standard display, right and left labels follow the patient")
        return False
    return True


def read_cxr_mask(path: str | Path) -> np.ndarray:
    """uint8 0/1 (rows, cols) from a mask file with values {0, 1} or {0, 255} (grey, or identical RGB)."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("L") if image.mode in ("RGB", "RGBA", "P", "LA", "1") else image)
    except Exception as err:  # noqa: BLE001
        raise LungctError(path, f"cannot read the mask ({str(err).splitlines()[0][:120] if str(err) else 'corrupt'})") from None
    values = set(np.unique(array).tolist())
    if values <= {0, 1}:
        return array.astype(np.uint8)
    if values <= {0, 255}:
        return (array == 255).astype(np.uint8)
    shown = sorted(values)[:6]
    raise LungctError(path, f"mask values must be {{0, 1}} or {{0, 255}}, found {len(values)} values "
                            f"({', '.join(str(int(v)) for v in shown)}{', ...' if len(values) > 6 else ''})")
