"""Lung masks as DICOM-SEG and RTSTRUCT objects that overlay their source CT series exactly.

A viewer places a SEG frame or an RTSTRUCT contour by the source image it references and by patient
coordinates, never by array index. So every source file is matched to a slice of the label grid by its
position in the grid (never by file order or InstanceNumber; a gantry tilt's sheared grid places each
tilted slice exactly), and any disagreement between
the grid and the series is refused: a mask of another scan must never be written as if it belonged here.

The label grid is the one `lungct.io.load_scan` returns for the series: (x, y, z) with x along the
ImageOrientationPatient row direction, y along its column direction, and the RAS affine. The DICOM
frame for a source slice k is therefore `labels[:, :, k].T` (rows, columns). When lungct interpolated
over a missing slice, grid slices without a source file are left out: no image, nothing to overlay.

RTSTRUCT is written with pydicom rather than rt-utils: rt-utils 1.2.7 pulls in opencv-python and the
`dataclasses` backport, fails on series lacking Type 2 study attributes (StudyID, StudyDate) and uses
pydicom APIs deprecated in 3.x. Contours follow the even-odd (XOR) convention most viewers use: a hole
in a lung is one more closed contour on the same slice.
"""
from __future__ import annotations

import datetime
import gc
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ImplicitVRLittleEndian, generate_uid

from lungct import __version__
from lungct.errors import LungctError
from lungct.labels import colour_of
from lungct.geometry import LPS_TO_RAS
from lungct.io.atomic import atomic_path

__all__ = ["write_dicom_seg", "write_rtstruct", "LUNG_SEGMENTS", "SEGMENT_CODES", "match_source_slices"]

LUNG_SEGMENTS = {1: "Right lung", 2: "Left lung"}
_ANATOMY = ("91723000", "Anatomical Structure")
_ABNORMAL = ("49755003", "Morphologically Abnormal Structure")
# name (lower case) -> (SNOMED CT category, SNOMED CT type, display RGB (as lungct's previews), RT ROI type)
SEGMENT_CODES = {
    "right lung": (_ANATOMY, ("3341006", "Right lung"), colour_of("right_lung"), "ORGAN"),
    "left lung": (_ANATOMY, ("44029006", "Left lung"), colour_of("left_lung"), "ORGAN"),
    "lung": (_ANATOMY, ("39607008", "Lung"), colour_of("lungs"), "ORGAN"),
    "lungs": (_ANATOMY, ("39607008", "Lung"), colour_of("lungs"), "ORGAN"),
    "tumour": (_ABNORMAL, ("108369006", "Neoplasm"), colour_of("tumour"), ""),
    "tumor": (_ABNORMAL, ("108369006", "Neoplasm"), colour_of("tumour"), ""),
    "neoplasm": (_ABNORMAL, ("108369006", "Neoplasm"), colour_of("tumour"), ""),
}
# Largest offset of a source slice from the grid, as a fraction of a voxel step. DS values carry about
# 1e-5 mm; lungct itself keeps unevenly spaced slices within 1 % of a step as they are.
POSITION_TOLERANCE = 0.05
ORIENTATION_TOLERANCE = 1e-3
_REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
             "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns")
_TYPE2_COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                 "ReferringPhysicianName", "StudyID", "AccessionNumber")
RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
CONTOUR_DATA = 0x30060050
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # conventional class of RTReferencedStudySequence


@dataclass
class SourceSlice:
    """One source file matched to the label grid: its header (no pixels) and grid slice index."""

    path: Path
    header: Dataset
    k: int


def match_source_slices(shape, affine, source_files, where) -> list[SourceSlice]:
    """Source files matched to grid slices by position, in grid order; LungctError(where, ...) on mismatch."""
    headers = _read_headers(source_files, where)
    nx, ny, nz = (int(n) for n in shape)
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    ux, uy = lps[:3, 0] / spacing[0], lps[:3, 1] / spacing[1]
    if abs(lps[:3, 2] @ np.cross(ux, uy)) < ORIENTATION_TOLERANCE * spacing[2]:
        raise LungctError(where, "the mask grid's slices do not advance across their planes (singular affine)")
    to_grid = np.linalg.inv(lps[:3, :3])  # exact for a gantry tilt's sheared grid too
    rows, cols = int(headers[0][1].Rows), int(headers[0][1].Columns)
    if (cols, rows) != (nx, ny):
        raise LungctError(where, f"mask grid is {nx}x{ny} in-plane but the series has {cols} columns x {rows} rows")
    matched, seen = [], {}
    for path, ds in headers:
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        if np.abs(iop - np.concatenate([ux, uy])).max() > ORIENTATION_TOLERANCE:
            raise LungctError(where, f"orientation of {path.name} ({_fmt(iop)}) differs from the mask grid's "
                                     f"({_fmt(np.concatenate([ux, uy]))})")
        row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
        if abs(col_sp - spacing[0]) > 1e-3 * spacing[0] or abs(row_sp - spacing[1]) > 1e-3 * spacing[1]:
            raise LungctError(where, f"pixel spacing of {path.name} ({row_sp:g}, {col_sp:g} mm) differs from the "
                                     f"mask grid's ({spacing[1]:g}, {spacing[0]:g} mm)")
        u, v, w = to_grid @ (np.array([float(v) for v in ds.ImagePositionPatient]) - lps[:3, 3])
        if max(abs(u), abs(v)) > POSITION_TOLERANCE:
            raise LungctError(where, f"{path.name} is shifted in-plane by ({u:.2f}, {v:.2f}) voxels from the mask "
                                     "grid (another grid)")
        k = int(round(w))
        if abs(w - k) > POSITION_TOLERANCE:
            raise LungctError(where, f"{path.name} lies between mask slices (at grid slice {w:.2f}): the mask was "
                                     "computed on another grid")
        if not 0 <= k < nz:
            raise LungctError(where, f"{path.name} lies outside the mask grid (at grid slice {k}, grid has {nz})")
        if k in seen:
            raise LungctError(where, f"{path.name} and {seen[k].name} sit at the same slice position")
        seen[k] = path
        matched.append(SourceSlice(path, ds, k))
    if min(seen) != 0 or max(seen) != nz - 1:
        raise LungctError(where, f"the mask grid's {nz} slices extend beyond the series (source slices cover grid "
                                 f"slices {min(seen)}-{max(seen)})")
    return sorted(matched, key=lambda s: s.k)


def write_dicom_seg(path, labels, affine, source_files, segments: dict[int, str], *,
                    series_description: str = "lungct lungs", algorithm_version: str = __version__,
                    series_number: int = 901) -> Path:
    """Write a BINARY DICOM-SEG (one segment per label of `segments` present) referencing the source images.

    Segment numbers run 1..N in label order; the coded property type, not the number, says which lung.
    """
    path = Path(path)
    labels = _check_labels(labels, path)
    with _gc_paused():
        matched = match_source_slices(labels.shape, affine, source_files, path)
        frames = _frames(labels, matched)
        present = _segment_numbers(frames, segments, path)
        seg = _segmentation(matched, frames, present, series_description, algorithm_version, series_number)
        with atomic_path(path) as tmp:
            seg.save_as(tmp, enforce_file_format=True)
    return path


def _segment_numbers(frames, segments, where) -> list[tuple[int, str]]:
    """Relabel frames in place to segment numbers 1..N (labels not exported -> 0); the (label, name) present."""
    present = _present(frames, segments, where)
    numbers = np.zeros(256, np.uint8)  # label -> segment number
    numbers[[value for value, _ in present]] = np.arange(1, len(present) + 1)
    top = int(frames.max())
    if not np.array_equal(numbers[:top + 1], np.arange(top + 1)):  # usually the labels are 1..N already
        frames[...] = numbers[frames]
    return present


def _segmentation(matched, frames, present, description, version, series_number, **options):
    """The highdicom Segmentation: frames[i] belongs to matched[i]; empty frames are left out.

    `frames` stays a uint8 label map: a bool array per segment makes highdicom 15x slower (benchmark).
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    algorithm = hd.AlgorithmIdentificationSequence(name="lungct", family=codes.cid7162.ArtificialIntelligence,
                                                   version=version)
    descriptions = []
    for number, (_, name) in enumerate(present, 1):
        category, kind, rgb, _ = SEGMENT_CODES[name.lower()]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name,
            segmented_property_category=hd.sr.CodedConcept(category[0], "SCT", category[1]),
            segmented_property_type=hd.sr.CodedConcept(kind[0], "SCT", kind[1]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*rgb)))
    with warnings.catch_warnings():  # the source's PatientName is copied as it is, whatever its form
        warnings.filterwarnings("ignore", message=".*unlikely to represent the intended person name")
        return hd.seg.Segmentation(
            source_images=[item.header for item in matched], pixel_array=frames,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
            series_instance_uid=hd.UID(), series_number=series_number, sop_instance_uid=hd.UID(),
            instance_number=1, manufacturer="lungct", manufacturer_model_name="lungct", software_versions=version,
            device_serial_number="0", series_description=description[:64], content_label="LUNGS",
            content_description=description[:64], **{"omit_empty_frames": True, **options})


def write_rtstruct(path, labels, affine, source_files, segments: dict[int, str], *,
                   series_description: str = "lungct lungs", algorithm_version: str = __version__,
                   series_number: int = 902) -> Path:
    """Write an RT Structure Set: one ROI per label of `segments` present, CLOSED_PLANAR contours per slice.

    Contours trace the 0.5 level between pixel centres (skimage marching squares), so filling each
    polygon's pixel centres and XOR-ing the polygons of a slice gives back the mask exactly.
    """
    path = Path(path)
    labels = _check_labels(labels, path)
    with _gc_paused():  # as for the SEG: its datasets would set off full collections
        matched = match_source_slices(labels.shape, affine, source_files, path)
        frames = _frames(labels, matched)
        present = _present(frames, segments, path)
        first = matched[0].header
        frame_uid = str(first.FrameOfReferenceUID)
        ds = _rt_header(first, series_description, algorithm_version, series_number)
        series = _item(SeriesInstanceUID=first.SeriesInstanceUID,
                       ContourImageSequence=Sequence([_image_ref(item.header) for item in matched]))
        study = _item(ReferencedSOPClassUID=DETACHED_STUDY_MANAGEMENT, ReferencedSOPInstanceUID=first.StudyInstanceUID,
                      RTReferencedSeriesSequence=Sequence([series]))
        ds.ReferencedFrameOfReferenceSequence = Sequence([_item(FrameOfReferenceUID=frame_uid,
                                                                RTReferencedStudySequence=Sequence([study]))])
        rois, contours, observations = Sequence(), Sequence(), Sequence()
        for number, (value, name) in enumerate(present, 1):
            _, _, rgb, interpreted = SEGMENT_CODES[name.lower()]
            rois.append(_item(ROINumber=number, ReferencedFrameOfReferenceUID=frame_uid, ROIName=name,
                              ROIGenerationAlgorithm="AUTOMATIC", ROIGenerationDescription=f"lungct {algorithm_version}"))
            per_slice = Sequence()
            for item, frame in zip(matched, frames):
                for polygon in _polygons(frame == value):
                    per_slice.append(_contour(item.header, polygon))
            contours.append(_item(ROIDisplayColor=list(rgb), ReferencedROINumber=number, ContourSequence=per_slice))
            observations.append(_item(ObservationNumber=number, ReferencedROINumber=number,
                                      RTROIInterpretedType=interpreted, ROIInterpreter=""))
        ds.StructureSetROISequence = rois
        ds.ROIContourSequence = contours
        ds.RTROIObservationsSequence = observations
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
    return path


# ----------------------------------------------------------------------------------------------- helpers


@contextmanager
def _gc_paused():
    """Python's cyclic garbage collector paused, as it was before afterwards; reference counting still frees.

    A SEG write makes ~60 000 container objects (source headers, the SEG's datasets): enough to set off
    full collections, each walking every object of the process (0.4 million once highdicom has loaded its
    tables of the standard; more beside torch). 10-25 % of a warm write, a third of the first one.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_headers(source_files, where) -> list[tuple[Path, Dataset]]:
    """Headers (no pixels) of one single-frame series with full geometry; refuse anything else."""
    files = [Path(f) for f in source_files]
    if not files:
        raise LungctError(where, "no source DICOM files given")
    headers = []
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError) as err:
            raise LungctError(f, f"not a readable DICOM file ({err})") from None
        missing = [k for k in _REQUIRED if ds.get(k) in (None, "")]
        if missing:  # de-identification sometimes empties UIDs: then no viewer could link the export to it
            raise LungctError(f, f"source image has no {', '.join(missing)}: a SEG or RTSTRUCT could not "
                                 "reference it")
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise LungctError(f, "multi-frame source images are not supported; export needs one file per slice")
        for key in _TYPE2_COPIED:
            if key not in ds:
                setattr(ds, key, "")  # often missing in anonymised series; highdicom copies them as Type 2
        headers.append((f, ds))
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Rows", "Columns"):
        values = {str(ds.get(key, "")) for _, ds in headers}
        if len(values) > 1:
            raise LungctError(where, f"source files mix {len(values)} values of {key}: pass the files of one series")
    if len({str(ds.SOPInstanceUID) for _, ds in headers}) < len(headers):
        raise LungctError(where, "source files repeat a SOPInstanceUID (the same image passed twice?)")
    return headers


def _check_labels(labels, where) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise LungctError(where, f"mask must be a 3-D (x, y, z) label array, got shape {labels.shape}")
    if labels.dtype in (np.uint8, bool):
        return labels.view(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0 or labels.max() > 255:
        raise LungctError(where, f"mask must hold integer labels 0-255 (got {labels.dtype})")
    return labels


def _frames(labels, matched, tile: int = 32) -> np.ndarray:
    """(files, rows, cols) uint8: the label slice of each matched source file, transposed to DICOM's layout.

    Transposed tile by tile: a whole-array (x, y, z) -> (z, y, x) copy is 3x slower (cache misses).
    """
    ks = np.array([item.k for item in matched])
    source = labels if np.array_equal(ks, np.arange(labels.shape[2])) else labels[:, :, ks]
    nx, ny = labels.shape[:2]
    frames = np.empty((len(ks), ny, nx), np.uint8)
    for x0 in range(0, nx, tile):
        for y0 in range(0, ny, tile):
            frames[:, y0:y0 + tile, x0:x0 + tile] = source[x0:x0 + tile, y0:y0 + tile].T
    return frames


def _present(frames, segments, where) -> list[tuple[int, str]]:
    """(label, name) of the segments on slices with a source image, in label order.

    Frame by frame, stopping at the first hit: a histogram of all labels widens every voxel to intp and
    a whole-array comparison allocates a 78 MB temporary (both 5-10x slower on a full-size series).
    """
    unknown = [name for name in segments.values() if name.lower() not in SEGMENT_CODES]
    if unknown:
        raise LungctError(where, f"no coded concept for segment name {unknown[0]!r}; known: "
                                 f"{', '.join(sorted(SEGMENT_CODES))}")
    present = [(int(v), segments[v]) for v in sorted(segments) if v and any((frame == v).any() for frame in frames)]
    if not present:
        raise LungctError(where, f"mask holds none of the labels {sorted(segments)} on the source slices")
    return present


def _polygons(mask: np.ndarray) -> list[np.ndarray]:
    """Closed (row, col) polygons of a 2-D mask at the 0.5 level, collinear vertices removed."""
    from skimage.measure import find_contours

    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return []
    r0, c0 = rows[0], cols[0]
    crop = np.pad(mask[r0:rows[-1] + 1, c0:cols[-1] + 1], 1).astype(np.float32)  # pad: contours close at edges
    out = []
    for line in find_contours(crop, 0.5):
        twice = np.rint(line[:-1] * 2).astype(np.int64)  # vertices sit on half pixels: exact in halves
        step = np.diff(np.vstack([twice[-1:], twice, twice[:1]]), axis=0)
        turn = step[:-1, 0] * step[1:, 1] - step[:-1, 1] * step[1:, 0] != 0
        out.append(twice[turn] / 2.0 + (r0 - 1, c0 - 1))
    return out


def _contour(header: Dataset, polygon: np.ndarray) -> Dataset:
    """A CLOSED_PLANAR contour in patient LPS mm through the slice's own IPP, IOP and PixelSpacing."""
    iop = np.array([float(v) for v in header.ImageOrientationPatient])
    row_sp, col_sp = (float(v) for v in header.PixelSpacing)
    origin = np.array([float(v) for v in header.ImagePositionPatient])
    points = origin + np.outer(polygon[:, 1] * col_sp, iop[:3]) + np.outer(polygon[:, 0] * row_sp, iop[3:])
    item = _item(ContourImageSequence=Sequence([_image_ref(header)]), ContourGeometricType="CLOSED_PLANAR",
                 NumberOfContourPoints=len(points))
    # Encoded here, and the item marked as encoded so the writer keeps the bytes: pydicom would convert and
    # validate each DS value (~30 us), 10 s for a full-size chest.
    text = ("\\".join(["%.4f"] * points.size) % tuple(points.ravel().tolist())).encode("ascii")
    text += b" " * (len(text) % 2)
    item[CONTOUR_DATA] = RawDataElement(Tag(CONTOUR_DATA), "DS", len(text), text, 0, True, True)
    item.set_original_encoding(True, True, default_encoding)
    return item


def _rt_header(src: Dataset, description: str, version: str, series_number: int) -> Dataset:
    now = datetime.datetime.now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian  # explicit VR caps a DS value at 64 KB: ~2000 contour points
    ds = Dataset()
    ds.file_meta = meta
    if "SpecificCharacterSet" in src:  # patient names are copied as they are
        ds.SpecificCharacterSet = src.SpecificCharacterSet
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for key in ("StudyInstanceUID",) + _TYPE2_COPIED:
        setattr(ds, key, src[key].value)  # patient and general study modules, as in the source
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description[:64]
    ds.OperatorsName = ""
    ds.Manufacturer = "lungct"
    ds.ManufacturerModelName = "lungct"
    ds.SoftwareVersions = version
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "LUNGCT"
    ds.StructureSetName = description[:64]
    ds.StructureSetDate = ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = ds.InstanceCreationTime = now.strftime("%H%M%S")
    return ds


def _image_ref(header: Dataset) -> Dataset:
    return _item(ReferencedSOPClassUID=header.SOPClassUID, ReferencedSOPInstanceUID=header.SOPInstanceUID)


def _item(**elements) -> Dataset:
    ds = Dataset()
    for key, value in elements.items():
        setattr(ds, key, value)
    return ds


def _fmt(values) -> str:
    return ", ".join(f"{v:.3f}" for v in values)
