"""DICOM series that are awkward on purpose, built from the chest phantom: a gantry-tilted series, a series
folder with a localizer, a derived image or a duplicate file in it, and an enhanced multi-frame CT."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
from phantoms import Phantom, sample, write_dicom_series
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"


def gantry_tilted_affine(shape, spacing_mm, tilt_deg: float) -> np.ndarray:
    """RAS affine of a series acquired with the gantry tilted by `tilt_deg` about the left-right axis: the
    image planes lean (their rows still run right-left, their columns tilt out of the axial plane) while
    the table moves the slices straight along z. Sheared: the slice column is not the planes' normal."""
    angle = np.radians(tilt_deg)
    sx, sy, table_step = spacing_mm
    affine = np.eye(4)
    affine[:3, 0] = (sx, 0.0, 0.0)
    affine[:3, 1] = sy * np.array([0.0, np.cos(angle), np.sin(angle)])
    affine[:3, 2] = (0.0, 0.0, table_step)
    affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape, float) - 1) / 2)
    return affine


def gantry_tilted_phantom(shape=(64, 64, 30), spacing_mm=(4.5, 4.5, 5.0), tilt_deg: float = 15.0) -> Phantom:
    """The chest phantom sampled on a tilted series' own grid: its truth is exact on the tilted slices."""
    return sample(gantry_tilted_affine(shape, spacing_mm, tilt_deg), shape, seed=1, name="tilted")


def set_tags(path: Path, **tags) -> None:
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path)


def localizer_file(folder: Path, series_like: Path, name: str, same_series: bool, size=(79, 64)) -> Path:
    """A scout image (ImageType ORIGINAL\\PRIMARY\\LOCALIZER, coronal, its own size) in a series' folder,
    sharing the series' SeriesInstanceUID or with one of its own."""
    ds = pydicom.dcmread(series_like)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.Rows, ds.Columns = size[1], size[0]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
    ds.PixelData = np.zeros(size[::-1], np.int16 if ds.PixelRepresentation else np.uint16).tobytes()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    if not same_series:
        ds.SeriesInstanceUID = generate_uid()
    path = Path(folder) / name
    ds.save_as(path, enforce_file_format=True)
    return path


def series_with(folder: Path, phantom: Phantom, extra: str) -> list[Path]:
    """A phantom series in `folder` plus one awkward file: "localizer" (own series), "localizer in series"
    (same SeriesInstanceUID), "derived" (a DERIVED\\SECONDARY copy of one slice, same series), "other
    orientation" (a coronal image in the axial series) or "duplicate" (a byte-identical copy of one file)."""
    paths = write_dicom_series(phantom, folder)
    middle = paths[len(paths) // 2]
    if extra in ("localizer", "localizer in series"):
        localizer_file(folder, middle, "SCOUT.dcm", same_series=extra == "localizer in series")
    elif extra == "derived":  # at a slice's own position: a second image there, not a second acquisition
        copy = Path(folder) / "SC0001.dcm"
        shutil.copyfile(middle, copy)
        set_tags(copy, ImageType=["DERIVED", "SECONDARY"], SOPInstanceUID=generate_uid())
    elif extra == "other orientation":  # an original coronal image among the axial ones
        copy = Path(folder) / "COR0001.dcm"
        shutil.copyfile(middle, copy)
        set_tags(copy, SOPInstanceUID=generate_uid(), ImageOrientationPatient=["1", "0", "0", "0", "0", "-1"])
    elif extra == "duplicate":
        shutil.copyfile(middle, Path(folder) / f"copy of {middle.name}")
    else:
        raise ValueError(f"unknown extra file {extra!r}")
    return paths


def _item(**elements) -> Dataset:
    ds = Dataset()
    for key, value in elements.items():
        setattr(ds, key, value)
    return ds


def write_enhanced_ct(phantom: Phantom, path: Path) -> Path:
    """The phantom as one Enhanced CT object: all slices as frames, geometry in functional groups."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ phantom.affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    row, column = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = ENHANCED_CT_STORAGE, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = _item(SOPClassUID=ENHANCED_CT_STORAGE, SOPInstanceUID=meta.MediaStorageSOPInstanceUID, Modality="CT",
               SeriesInstanceUID=generate_uid(), StudyInstanceUID=generate_uid(), FrameOfReferenceUID=generate_uid(),
               ImageType=["ORIGINAL", "PRIMARY", "AXIAL", "NONE"], Rows=phantom.array.shape[1],
               Columns=phantom.array.shape[0], NumberOfFrames=phantom.array.shape[2], SamplesPerPixel=1,
               PhotometricInterpretation="MONOCHROME2", BitsAllocated=16, BitsStored=16, HighBit=15,
               PixelRepresentation=1)
    ds.file_meta = meta
    measures = _item(PixelSpacing=[f"{spacing[1]:g}", f"{spacing[0]:g}"], SliceThickness=f"{spacing[2]:g}")
    orientation = _item(ImageOrientationPatient=[f"{v:.6f}" for v in (*row, *column)])
    rescale = _item(RescaleIntercept="-1024", RescaleSlope="1", RescaleType="HU")
    ds.SharedFunctionalGroupsSequence = Sequence([_item(PixelMeasuresSequence=Sequence([measures]),
                                                        PlaneOrientationSequence=Sequence([orientation]),
                                                        PixelValueTransformationSequence=Sequence([rescale]))])
    positions = [lps[:3, 3] + lps[:3, 2] * k for k in range(phantom.array.shape[2])]
    ds.PerFrameFunctionalGroupsSequence = Sequence([
        _item(PlanePositionSequence=Sequence([_item(ImagePositionPatient=[f"{v:.6f}" for v in position])]))
        for position in positions])
    stored = (phantom.array.astype(np.int32) + 1024).astype(np.int16)  # frames, rows, columns
    ds.PixelData = np.ascontiguousarray(stored.transpose(2, 1, 0)).tobytes()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return Path(path)
