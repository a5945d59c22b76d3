"""Synthetic chest radiographs for the radiograph tests, built in code, with the true lung fields.

A PA view as displayed: dark air around a bright body, two darker lung fields (the patient's right on the
viewer's left), a bright mediastinum and spine between them, rib-like bright arcs across the fields, a
bright diaphragm below, Gaussian noise. Values are "display brightness" in [0, 1] (denser = brighter).
Writers store one phantom as 8-bit/16-bit/RGB PNG, JPEG, TIFF and DICOM DX (MONOCHROME1 or 2, with
rescale, window or VOI LUT), so every reader path can be compared against the same picture.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class CxrPhantom:
    image: np.ndarray  # float64 (rows, cols) in [0, 1]
    lungs: np.ndarray  # uint8 (rows, cols): 1 = right lung (viewer's left), 2 = left lung

    @property
    def mask(self) -> np.ndarray:
        return (self.lungs > 0).astype(np.uint8)


def _ellipse(rows, cols, centre, radii) -> np.ndarray:
    r, c = np.mgrid[0:rows, 0:cols]
    return ((r - centre[0]) / radii[0]) ** 2 + ((c - centre[1]) / radii[1]) ** 2 <= 1.0


def make_cxr(shape=(256, 256), seed: int = 0, noise: float = 0.02, ribs: bool = True) -> CxrPhantom:
    """A phantom of any (rows, cols); the anatomy scales with the image, so non-square shapes stretch it."""
    rows, cols = shape
    rng = np.random.default_rng(seed)
    image = np.full(shape, 0.05)  # air
    body = _ellipse(rows, cols, (0.55 * rows, 0.5 * cols), (0.52 * rows, 0.46 * cols))
    image[body] = 0.75
    right = _ellipse(rows, cols, (0.45 * rows, 0.3 * cols), (0.28 * rows, 0.13 * cols))
    left = _ellipse(rows, cols, (0.47 * rows, 0.7 * cols), (0.26 * rows, 0.12 * cols))
    left &= ~_ellipse(rows, cols, (0.62 * rows, 0.6 * cols), (0.12 * rows, 0.08 * cols))  # heart notch
    image[right | left] = 0.3
    spine = (np.abs(np.arange(cols) - 0.5 * cols) < 0.05 * cols)[None, :] & body
    image[spine] = 0.9
    r, c = np.mgrid[0:rows, 0:cols]
    if ribs:
        for k in range(7):  # arcs sagging towards the sides, as posterior ribs do
            centre = 0.22 * rows + k * 0.075 * rows + 0.04 * rows * ((c - 0.5 * cols) / (0.5 * cols)) ** 2
            band = np.abs(r - centre) < 0.012 * rows + 0.5
            image[band & (right | left)] += 0.12
    diaphragm = body & (r > 0.75 * rows)
    image[diaphragm & ~(right | left)] = 0.8
    image += rng.normal(0, noise, shape)
    lungs = np.zeros(shape, np.uint8)
    lungs[right] = 1
    lungs[left] = 2
    return CxrPhantom(np.clip(image, 0, 1), lungs)


# -------------------------------------------------------------------------------------------- writers


def write_png8(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(path)
    return path


def write_png16(path: Path, image: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(np.round(image * 65535).astype(np.uint16)).save(path)
    return path


def write_rgb(path: Path, image: np.ndarray, tint=(1.0, 1.0, 1.0), alpha: bool = False) -> Path:
    from PIL import Image

    grey = np.round(image * 255)
    rgb = np.stack([np.clip(grey * t, 0, 255) for t in tint], axis=-1).astype(np.uint8)
    if alpha:
        rgb = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    Image.fromarray(rgb).save(path)
    return path


def write_mask_png(path: Path, mask: np.ndarray, high: int = 255) -> Path:
    from PIL import Image

    Image.fromarray((np.asarray(mask) > 0).astype(np.uint8) * np.uint8(high)).save(path)
    return path


def _dicom_base(modality: str, rows: int, cols: int, sop_class: str):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    ds.PatientName, ds.PatientID = "Phantom^Chest", "PHANTOM"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    return ds


DX_SOP = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation
CR_SOP = "1.2.840.10008.5.1.4.1.1.1"
CT_SOP = "1.2.840.10008.5.1.4.1.1.2"
MG_SOP = "1.2.840.10008.5.1.4.1.1.1.2"


def stored_values(image: np.ndarray, bits: int = 12) -> np.ndarray:
    """The phantom as detector values: brighter display = more attenuation = larger value (MONOCHROME2)."""
    return np.round(image * (2 ** bits - 1)).astype(np.uint16)


def write_dicom_radiograph(path: Path, image: np.ndarray, monochrome: int = 2, modality: str = "DX",
                           spacing=(0.4, 0.4), imager_spacing=None, magnification=None, window=None,
                           voi_lut: np.ndarray | None = None, rescale=None, patient_orientation=None,
                           sop_class: str = DX_SOP, with_modality: bool = True) -> Path:
    """A single-frame radiograph. MONOCHROME1 stores 4095 - value (bright = low). `rescale` = (slope,
    intercept) applied on reading, so stored = (value - intercept) / slope. `window` = (centre, width)
    and `voi_lut` (one entry per stored value) are written as VOI attributes."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    values = stored_values(image).astype(np.float64)
    if monochrome == 1:
        values = 4095 - values
    if rescale is not None:
        slope, intercept = rescale
        values = (values - intercept) / slope
        values = np.round(values)
    rows, cols = image.shape
    ds = _dicom_base(modality if with_modality else "", rows, cols, sop_class)
    if not with_modality:
        del ds.Modality
    ds.PhotometricInterpretation = f"MONOCHROME{monochrome}"
    ds.PresentationLUTShape = "INVERSE" if monochrome == 1 else "IDENTITY"
    if spacing is not None:
        ds.PixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    if imager_spacing is not None:
        ds.ImagerPixelSpacing = [f"{imager_spacing[0]:g}", f"{imager_spacing[1]:g}"]
    if magnification is not None:
        ds.EstimatedRadiographicMagnificationFactor = f"{magnification:g}"
    if rescale is not None:
        ds.RescaleSlope, ds.RescaleIntercept = f"{rescale[0]:g}", f"{rescale[1]:g}"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"
    if voi_lut is not None:
        item = Dataset()
        item.add_new(0x00283002, "US", [len(voi_lut), 0, 16])  # LUT Descriptor (ambiguous VR: say it)
        item.add_new(0x00283006, "OW", np.asarray(voi_lut, "<u2").tobytes())  # LUT Data
        ds.VOILUTSequence = Sequence([item])
    if patient_orientation is not None:
        ds.PatientOrientation = list(patient_orientation)
    ds.ViewPosition = "PA"
    ds.PixelData = np.ascontiguousarray(values.astype(np.uint16)).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_dicom_ct_slice(path: Path, shape=(64, 64)) -> Path:
    """A minimal CT slice (Modality CT, slice geometry) for the refusal tests."""
    ds = _dicom_base("CT", shape[0], shape[1], CT_SOP)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.ImagePositionPatient = ["0", "0", "0"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = ["0.7", "0.7"]
    ds.SliceThickness = "1"
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    ds.PixelData = (np.arange(shape[0] * shape[1]) % 2000).astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_ct_nifti(path: Path, shape=(32, 32, 8)) -> Path:
    import nibabel as nib

    data = np.full(shape, -1000, np.int16)
    data[8:24, 8:24] = 40
    nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.0, 2.0, 1.0])), str(path))
    return path


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)
