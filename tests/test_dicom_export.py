"""DICOM-SEG and RTSTRUCT export: every source file gets exactly its own slice of the mask, read back voxel by voxel.

Truth is independent of the writer: a synthetic series is written one file per phantom slice, so file k's
frame must equal the phantom's truth slice k (transposed to rows x columns), whatever order lungct's
reader sorted the slices in. SEG frames are read back with pydicom (and cross-checked with highdicom);
RTSTRUCT contours are mapped to pixels through each file's own IPP/IOP/PixelSpacing and filled by pixel
centre (skimage.draw.polygon) with the even-odd rule (XOR of the contours of a slice). Both must give the
mask back exactly: no pixel may differ, boundary pixels included.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

import phantoms
from lungct.errors import LungctError
from lungct.io import load_scan
from lungct.io.dicom_export import LUNG_SEGMENTS, write_dicom_seg, write_rtstruct

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CODE_TO_LABEL = {"3341006": 1, "44029006": 2, "39607008": 1, "108369006": 3}
NAME_TO_LABEL = {"Right lung": 1, "Left lung": 2, "Lung": 1, "Tumour": 3}
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture(scope="module")
def base() -> phantoms.Phantom:
    """A small chest phantom, 48 x 44 x 20 at 7 x 7.7 x 9 mm.

    Not square, so swapped rows and columns cannot go unseen; lung sections change from slice to slice,
    so a file given its neighbour's slice cannot either.
    """
    phantom = phantoms.make_phantom((48, 44, 20), (7.0, 7.7, 9.0), noise_hu=0.0)
    assert all((phantom.lungs[:, :, k] != phantom.lungs[:, :, k + 1]).any() for k in range(4, 17))
    return phantom


def on_grid(values, affine_from, shape, affine_to) -> np.ndarray:
    """values resampled onto (shape, affine_to) where both grids share voxel centres (checked)."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    mapping = np.linalg.inv(affine_from) @ np.asarray(affine_to, float)
    source = index @ mapping[:3, :3].T + mapping[:3, 3]
    rounded = np.rint(source).astype(int)
    assert np.abs(source - rounded).max() < 1e-3, "grids do not share voxel centres"
    assert (rounded >= 0).all() and (rounded < values.shape).all(), "target grid reaches outside the source"
    return values[tuple(rounded.T)].reshape(shape)


def written_series(folder: Path, phantom, **kwargs):
    """(files in phantom slice order, scan as lungct reads it, lungs on lungct's grid)."""
    files = phantoms.write_dicom_series(phantom, folder, **kwargs)
    scan = load_scan(folder)
    assert np.array_equal(on_grid(phantom.array, phantom.affine, scan.array.shape, scan.affine), scan.array)
    return files, scan, on_grid(phantom.lungs, phantom.affine, scan.array.shape, scan.affine)


def geometry(ds):
    iop = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_sp, col_sp = (float(v) for v in ds.PixelSpacing)
    return np.array([float(v) for v in ds.ImagePositionPatient]), iop[:3], iop[3:], row_sp, col_sp


def seg_frames(path: Path, headers: dict) -> dict[str, np.ndarray]:
    """{source SOPInstanceUID: label frame} from a SEG read with pydicom alone; checks frame positions."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    label_of = {s.SegmentNumber: CODE_TO_LABEL[s.SegmentedPropertyTypeCodeSequence[0].CodeValue]
                for s in ds.SegmentSequence}
    shared = ds.SharedFunctionalGroupsSequence[0]
    out = {}
    for i, group in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ident = group.get("SegmentIdentificationSequence") or shared.SegmentIdentificationSequence  # 1 segment
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = np.array([float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient])
        assert np.allclose(position, geometry(headers[uid])[0], atol=1e-4)
        frame = out.setdefault(uid, np.zeros(pixels.shape[1:], np.uint8))
        assert not frame[pixels[i] > 0].any(), "segments overlap"
        frame[pixels[i] > 0] = label_of[ident[0].ReferencedSegmentNumber]
    return out


def rt_frames(path: Path, headers: dict) -> dict[str, np.ndarray]:
    """{source SOPInstanceUID: label frame} from RTSTRUCT contours filled by pixel centre, even-odd rule."""
    from skimage.draw import polygon

    ds = pydicom.dcmread(path)
    names = {roi.ROINumber: roi.ROIName for roi in ds.StructureSetROISequence}
    out = {}
    for roi in ds.ROIContourSequence:
        filled = {}
        for contour in roi.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            uid = contour.ContourImageSequence[0].ReferencedSOPInstanceUID
            origin, row_dir, col_dir, row_sp, col_sp = geometry(headers[uid])
            points = np.array(contour.ContourData, float).reshape(-1, 3)
            assert len(points) == int(contour.NumberOfContourPoints)
            offset = points - origin
            assert np.abs(offset @ np.cross(row_dir, col_dir)).max() < 1e-3, "contour off its image plane"
            shape = (int(headers[uid].Rows), int(headers[uid].Columns))
            rr, cc = polygon(offset @ col_dir / row_sp, offset @ row_dir / col_sp, shape)
            mask = filled.setdefault(uid, np.zeros(shape, bool))
            mask[rr, cc] ^= True
        for uid, mask in filled.items():
            frame = out.setdefault(uid, np.zeros(mask.shape, np.uint8))
            assert not frame[mask].any(), "ROIs overlap"
            frame[mask] = NAME_TO_LABEL[names[roi.ReferencedROINumber]]
    return out


def check_roundtrip(tmp: Path, files, labels, affine, expected: dict, segments=LUNG_SEGMENTS):
    """Write both formats and require every source file's frame to equal `expected[file]` exactly."""
    seg = write_dicom_seg(tmp / "lungs-seg.dcm", labels, affine, files, segments)
    rt = write_rtstruct(tmp / "lungs-rt.dcm", labels, affine, files, segments)
    headers = {str(h.SOPInstanceUID): h for h in (pydicom.dcmread(f, stop_before_pixels=True) for f in files)}
    uid_of = {Path(f): str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    for read in (seg_frames, rt_frames):
        frames = read(seg if read is seg_frames else rt, headers)
        assert set(frames) <= set(headers)
        for f, truth in expected.items():
            got = frames.get(uid_of[Path(f)], np.zeros_like(truth))
            assert np.array_equal(got, truth), f"{read.__name__}: {Path(f).name} differs in {(got != truth).sum()} px"
    return seg, rt


def truth_by_file(files, phantom_labels, keep=(1, 2)) -> dict:
    """File k of a written phantom series shows phantom slice k: its frame is that slice, transposed."""
    return {f: np.where(np.isin(phantom_labels[:, :, k].T, keep), phantom_labels[:, :, k].T, 0).astype(np.uint8)
            for k, f in enumerate(files)}


# ------------------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("flips", [(), (2,), (0,), (1,), (0, 1)],
                         ids=["ascending", "z-descending", "columns-flipped", "rows-flipped", "lps"])
def test_roundtrip_any_storage_order(tmp_path, base, flips):
    """IPP descending, IOP row or column cosines negated, shuffled names: each file still gets its own slice."""
    phantom = phantoms.reindexed(base, flips)
    files, scan, labels = written_series(tmp_path / "ct", phantom, shuffle_names=True, seed=len(flips))
    if flips == (2,):  # the reader sorted the slices the other way round: file order says nothing
        assert np.allclose(scan.affine[:, 2], -phantom.affine[:, 2])
    check_roundtrip(tmp_path, files, labels, scan.affine, truth_by_file(files, phantom.lungs))


def test_seg_metadata(tmp_path, base):
    import highdicom as hd

    files, scan, labels = written_series(tmp_path / "ct", base)
    seg_path = write_dicom_seg(tmp_path / "s.dcm", labels, scan.affine, files, LUNG_SEGMENTS,
                               series_description="lungs test", algorithm_version="9.9")
    src = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    ds = pydicom.dcmread(seg_path)
    assert (ds.SOPClassUID, ds.Modality, ds.SegmentationType) == (SEG_STORAGE, "SEG", "BINARY")
    assert ds.FrameOfReferenceUID == src[0].FrameOfReferenceUID
    assert ds.StudyInstanceUID == src[0].StudyInstanceUID and ds.SeriesInstanceUID != src[0].SeriesInstanceUID
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == src[0].SeriesInstanceUID
    assert ds.SeriesDescription == "lungs test"
    referenced = {r.ReferencedSOPInstanceUID for r in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced <= {s.SOPInstanceUID for s in src}
    segments = {s.SegmentLabel: s for s in ds.SegmentSequence}
    assert set(segments) == {"Right lung", "Left lung"}
    for label, code in (("Right lung", "3341006"), ("Left lung", "44029006")):
        segment = segments[label]
        assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
        assert segment.SegmentedPropertyCategoryCodeSequence[0].CodingSchemeDesignator == "SCT"
        assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == code
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeMeaning == "Artificial Intelligence"
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("lungct", "9.9")
    nonempty = sum(int((labels[:, :, k] == v).any()) for k in range(labels.shape[2]) for v in (1, 2))
    assert int(ds.NumberOfFrames) == nonempty  # empty frames omitted
    # highdicom reads it back to the same frames, by source instance
    seg = hd.seg.segread(seg_path)
    uids = [s.SOPInstanceUID for s in src]
    pixels = seg.get_pixels_by_source_instance(uids, combine_segments=True, assert_missing_frames_are_empty=True)
    number_to_label = {s.SegmentNumber: {"Right lung": 1, "Left lung": 2}[s.SegmentLabel] for s in ds.SegmentSequence}
    lut = np.zeros(3, np.uint8)
    for number, label in number_to_label.items():
        lut[number] = label
    assert np.array_equal(lut[pixels], np.stack([base.lungs[:, :, k].T for k in range(len(files))]))


def test_rtstruct_metadata(tmp_path, base):
    files, scan, labels = written_series(tmp_path / "ct", base)
    ds = pydicom.dcmread(write_rtstruct(tmp_path / "r.dcm", labels, scan.affine, files, LUNG_SEGMENTS))
    src = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    assert (ds.Modality, ds.SOPClassUID) == ("RTSTRUCT", "1.2.840.10008.5.1.4.1.1.481.3")
    assert ds.StudyInstanceUID == src[0].StudyInstanceUID and ds.PatientID == src[0].PatientID
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == src[0].FrameOfReferenceUID
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == src[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == {s.SOPInstanceUID for s in src}
    assert [r.ROIName for r in ds.StructureSetROISequence] == ["Right lung", "Left lung"]
    assert all(r.ReferencedFrameOfReferenceUID == src[0].FrameOfReferenceUID for r in ds.StructureSetROISequence)
    assert [o.RTROIInterpretedType for o in ds.RTROIObservationsSequence] == ["ORGAN", "ORGAN"]


def test_single_lung_and_tumour_codes(tmp_path, base):
    """A binary lung mask is coded "Lung"; a tumour label is a Neoplasm, a Morphologically Abnormal Structure."""
    files, scan, labels = written_series(tmp_path / "ct", base)
    assert np.allclose(scan.affine, base.affine, atol=1e-4)  # lungct's grid is the phantom's: same indices
    lung = (labels > 0).astype(np.uint8)
    lung[20:26, 20:26, 8:12] = 3
    seg, _ = check_roundtrip(tmp_path, files, lung, scan.affine, truth_by_file(files, lung, keep=(1, 3)),
                             {1: "Lung", 3: "Tumour"})
    codes = {s.SegmentLabel: (s.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
                              s.SegmentedPropertyTypeCodeSequence[0].CodeValue)
             for s in pydicom.dcmread(seg).SegmentSequence}
    assert codes == {"Lung": ("91723000", "39607008"), "Tumour": ("49755003", "108369006")}
    # a label left out of `segments` is not exported: the tumour voxels read back as background
    seg, _ = check_roundtrip(tmp_path, files, lung, scan.affine, truth_by_file(files, lung, keep=(1,)), {1: "Lung"})
    assert [s.SegmentLabel for s in pydicom.dcmread(seg).SegmentSequence] == ["Lung"]


def test_failed_write_keeps_the_old_file(tmp_path, base, monkeypatch):
    files, scan, labels = written_series(tmp_path / "ct", base)
    out = tmp_path / "out" / "lungs.dcm"
    write_dicom_seg(out, labels, scan.affine, files, LUNG_SEGMENTS)
    before = out.read_bytes()

    def broken(self, filename, *args, **kwargs):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", broken)
    for writer in (write_dicom_seg, write_rtstruct):  # one line naming the file, not the OS error's traceback
        with pytest.raises(LungctError) as err:
            writer(out, labels, scan.affine, files, LUNG_SEGMENTS)
        assert str(err.value) == f"{out}: cannot write: disk full"
    assert out.read_bytes() == before and [p.name for p in out.parent.iterdir()] == ["lungs.dcm"]


def test_hole_is_an_extra_contour_xor(tmp_path, base):
    """A lung with a hole (and an island in the hole) on one slice: three contours, XOR fills back exactly."""
    files, scan, _ = written_series(tmp_path / "ct", base)
    labels = np.zeros(scan.array.shape, np.uint8)
    labels[10:30, 12:32, 7] = 1
    labels[15:25, 17:27, 7] = 0
    labels[19:21, 21:23, 7] = 1
    labels[34:40, 10:14, 7] = 2
    expected = truth_by_file(files, on_grid(labels, scan.affine, base.array.shape, base.affine))
    _, rt = check_roundtrip(tmp_path, files, labels, scan.affine, expected)
    roi = pydicom.dcmread(rt).ROIContourSequence[0]
    assert len(roi.ContourSequence) == 3  # outer boundary, hole, island: a union of them would fill the hole


def test_missing_slice_maps_files_by_position(tmp_path, base):
    """A gap in the series: lungct interpolates a grid slice that has no file; every file keeps its own slice."""
    every = phantoms.write_dicom_series(base, tmp_path / "ct", shuffle_names=True)
    gone_uid = pydicom.dcmread(every[7], stop_before_pixels=True).SOPInstanceUID
    every[7].unlink()
    files = every[:7] + every[8:]
    scan = load_scan(tmp_path / "ct")
    assert any("missing slices" in w for w in scan.warnings) and scan.array.shape == base.array.shape
    labels = base.lungs  # lungct's grid is the phantom's here: same origin, same step
    assert np.allclose(scan.affine, base.affine, atol=1e-4)
    truth = {f: base.lungs[:, :, k].T for k, f in enumerate(every) if k != 7}
    seg, rt = check_roundtrip(tmp_path, files, labels, scan.affine, truth)
    assert gone_uid not in pydicom.dcmread(seg).to_json()
    assert gone_uid not in pydicom.dcmread(rt).to_json()


@pytest.mark.parametrize("shift", [0.005, 0.3])
def test_slice_off_the_grid(tmp_path, base, shift):
    """One slice moved along the normal by a fraction of a step.

    0.5 %: lungct keeps the slices as they are, and so does the writer. 30 %: lungct resamples onto a
    regular grid on which no slice is that file's: refused rather than written a third of a slice off.
    """
    files = phantoms.write_dicom_series(base, tmp_path / "ct")
    ds = pydicom.dcmread(files[5])
    ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + shift * 9.0
    ds.save_as(files[5])
    scan = load_scan(tmp_path / "ct")
    labels = on_grid(base.lungs, base.affine, scan.array.shape, scan.affine)
    if shift < 0.01:
        check_roundtrip(tmp_path, files, labels, scan.affine, truth_by_file(files, base.lungs))
        return
    with pytest.raises(LungctError, match="between mask slices"):
        write_dicom_seg(tmp_path / "s.dcm", labels, scan.affine, files, LUNG_SEGMENTS)


# -------------------------------------------------------------------------------------------------- refusals


def _shifted(affine, voxels):
    out = np.array(affine, float)
    out[:3, 3] += out[:3, :3] @ np.asarray(voxels, float)
    return out


def _reversed_x(affine, n):
    """The same voxels stored with x reversed (as an RAS NIfTI of an LPS series would be)."""
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, n - 1
    return np.asarray(affine, float) @ flip


WRONG_GRIDS = {
    "one slice fewer": (lambda lab, aff: (lab[:, :, :-1], aff), "outside the mask grid"),
    "one slice more": (lambda lab, aff: (np.concatenate([lab, lab[:, :, -1:]], 2), aff), "extend beyond"),
    "half a slice off": (lambda lab, aff: (lab, _shifted(aff, (0, 0, 0.5))), "between mask slices"),
    "one slice off": (lambda lab, aff: (lab, _shifted(aff, (0, 0, 1))), "outside the mask grid"),
    "half a pixel off": (lambda lab, aff: (lab, _shifted(aff, (0.5, 0, 0))), "shifted in-plane"),
    "other in-plane size": (lambda lab, aff: (lab[:-1], aff), "in-plane"),
    "x reversed": (lambda lab, aff: (lab[::-1], _reversed_x(aff, lab.shape[0])), "orientation"),
    "other pixel spacing": (lambda lab, aff: (lab, aff @ np.diag([1.1, 1.1, 1.0, 1.0])), "pixel spacing"),
    "transposed": (lambda lab, aff: (lab.transpose(1, 0, 2), aff[:, [1, 0, 2, 3]]), "in-plane"),
}


@pytest.fixture(scope="module")
def plain_series(tmp_path_factory, base):
    folder = tmp_path_factory.mktemp("plain")
    files, scan, labels = written_series(folder / "ct", base)
    return files, scan, labels


@pytest.mark.parametrize("case", list(WRONG_GRIDS))
@pytest.mark.parametrize("writer", [write_dicom_seg, write_rtstruct], ids=["seg", "rtstruct"])
def test_mask_on_wrong_grid_is_refused(tmp_path, plain_series, case, writer):
    files, scan, labels = plain_series
    make, reason = WRONG_GRIDS[case]
    bad_labels, bad_affine = make(labels, scan.affine)
    out = tmp_path / "out.dcm"
    with pytest.raises(LungctError, match=reason) as info:
        writer(out, bad_labels, bad_affine, files, LUNG_SEGMENTS)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(out))
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


def test_other_refusals(tmp_path, base, plain_series):
    files, scan, labels = plain_series
    other = phantoms.write_dicom_series(base, tmp_path / "other")
    cases = [
        (files[:10] + other[10:], "mix"),  # two series
        (files + files[:1], "repeat a SOPInstanceUID"),
        ([], "no source DICOM files"),
    ]
    for sources, reason in cases:
        with pytest.raises(LungctError, match=reason):
            write_dicom_seg(tmp_path / "s.dcm", labels, scan.affine, sources, LUNG_SEGMENTS)
    with pytest.raises(LungctError, match="none of the labels"):
        write_rtstruct(tmp_path / "r.dcm", np.zeros_like(labels), scan.affine, files, LUNG_SEGMENTS)
    with pytest.raises(LungctError, match="no coded concept"):
        write_dicom_seg(tmp_path / "s.dcm", labels, scan.affine, files, {1: "Spleen"})
    assert not (tmp_path / "s.dcm").exists() and not (tmp_path / "r.dcm").exists()


# ---------------------------------------------------------------------------------------------------- real data


def _real(name: str) -> Path:
    folder = DATA / "ct-volumes" / name / "dicom"
    if not folder.is_dir():
        pytest.skip(f"real data not available: {folder} is absent (../shared/data from the repository root)")
    return folder


def _expected_by_geometry(files, labels, affine) -> dict:
    """Each file's frame sampled from the label grid at its own pixels' world positions (from its header)."""
    out = {}
    inverse = np.linalg.inv(np.asarray(affine, float))
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        origin, row_dir, col_dir, row_sp, col_sp = geometry(ds)
        rr, cc = np.meshgrid(np.arange(int(ds.Rows)), np.arange(int(ds.Columns)), indexing="ij")
        lps = origin + cc[..., None] * col_sp * row_dir + rr[..., None] * row_sp * col_dir
        ras = lps * [-1, -1, 1]
        voxel = ras @ inverse[:3, :3].T + inverse[:3, 3]
        index = np.rint(voxel).astype(int)
        assert np.abs(voxel - index).max() < 0.05
        out[f] = labels[index[..., 0], index[..., 1], index[..., 2]].astype(np.uint8)
    return out


def test_real_copdgene_reference_roundtrip(tmp_path):
    import nibabel as nib
    import SimpleITK as sitk

    from lungct.geometry import array_to_sitk, sitk_view_to_array

    folder = _real("copdgene-ct64")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    assert len(files) == 79
    scan = load_scan(folder)
    img = nib.load(folder.parent / "lungs-lr.nii.gz")
    labels = np.asarray(img.dataobj).astype(np.uint8)
    if labels.shape != scan.array.shape or not np.allclose(img.affine, scan.affine, atol=1e-3):
        ref = sitk.Resample(array_to_sitk(labels, img.affine), array_to_sitk(scan.array, scan.affine),
                            sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        labels = sitk_view_to_array(ref).astype(np.uint8)
    assert set(np.unique(labels)) == {0, 1, 2}
    check_roundtrip(tmp_path, files, labels, scan.affine, _expected_by_geometry(files, labels, scan.affine))


def test_real_abdomen_couch(tmp_path):
    """Its UIDs were emptied by de-identification: refused; a copy with UIDs restored round-trips."""
    folder = _real("abdomen-couch")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    scan = load_scan(folder)
    labels = np.zeros(scan.array.shape, np.uint8)
    box = (slice(128, 384), slice(128, 384), slice(None))
    labels[box] = scan.array[box] < -400
    assert labels.any()
    with pytest.raises(LungctError, match="could not reference"):
        write_dicom_seg(tmp_path / "s.dcm", labels, scan.affine, files, {1: "Lung"})
    copies, study, series = [], generate_uid(), generate_uid()
    (tmp_path / "ct").mkdir()
    for f in files:
        ds = pydicom.dcmread(f)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.save_as(tmp_path / "ct" / f.name)
        copies.append(tmp_path / "ct" / f.name)
    expected = _expected_by_geometry(copies, labels, scan.affine)
    check_roundtrip(tmp_path, copies[::-1], labels, scan.affine, expected, {1: "Lung"})
