"""The bad-input matrix, row 6 (docs/bad-inputs.md): a series acquired with the gantry tilted by 15 degrees.

The slices are read where their headers put them (a sheared grid); the network sees them resampled onto a
regular grid; the mask comes back onto the tilted slices: a NIfTI with the sheared affine, DICOM-SEG frames
and RTSTRUCT contours on each tilted source slice. Checked in world coordinates against the phantom's truth
sampled on the tilted slices, not merely voxel by voxel.
"""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from phantoms import dice, write_dicom_series
from series_phantoms import gantry_tilted_phantom, set_tags

from lungct import LungctError, load_scan
from lungct.cli import main

TILT_WARNING = ("gantry tilt of 15.0 degrees: the network saw the series resampled onto a regular grid; the mask "
                "lies on the tilted slices (a sheared affine)")


@pytest.fixture(scope="module")
def tilted():
    return gantry_tilted_phantom()


@pytest.fixture(scope="module")
def segmented(tmp_path_factory, tilted, model_2d):
    """(series folder, output folder): the tilted series segmented into NIfTI, DICOM-SEG and RTSTRUCT."""
    root = tmp_path_factory.mktemp("tilt")
    write_dicom_series(tilted, root / "tilted")
    result = CliRunner().invoke(main, ["infer", str(root / "tilted"), "-o", str(root / "out"), "--model", str(model_2d),
                                       "--output-type", "nifti", "--output-type", "dicom-seg",
                                       "--output-type", "rtstruct", "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"warning: tilted: {TILT_WARNING}" in result.output.splitlines()
    return root / "tilted", root / "out"


def labels_at(points: np.ndarray, labels: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The label a mask file places at each world point (RAS mm), by its own affine (nearest voxel)."""
    index = np.rint(nib.affines.apply_affine(np.linalg.inv(affine), points)).astype(int)
    inside = np.all((index >= 0) & (index < labels.shape), axis=1)
    found = np.zeros(len(points), labels.dtype)
    found[inside] = labels[tuple(index[inside].T)]
    return found


def test_the_series_is_read_onto_its_sheared_grid(tmp_path, tilted):
    write_dicom_series(tilted, tmp_path / "tilted")
    scan = load_scan(tmp_path / "tilted")
    np.testing.assert_allclose(scan.affine, tilted.affine, atol=1e-4)
    np.testing.assert_array_equal(scan.array, tilted.array.astype(np.float32))
    assert scan.warnings == [TILT_WARNING]


def test_the_nifti_mask_lies_on_the_tilted_slices_in_world_coordinates(segmented, tilted):
    _, out = segmented
    mask = nib.load(out / "tilted.nii.gz")
    assert (int(mask.header["qform_code"]), int(mask.header["sform_code"])) == (0, 1)  # a qform cannot shear
    np.testing.assert_allclose(mask.affine, tilted.affine, atol=1e-4)
    centres = nib.affines.apply_affine(tilted.affine, np.argwhere(np.ones(tilted.lungs.shape, bool)))
    truth = tilted.lungs.reshape(-1)  # the phantom's lungs at each tilted voxel centre, in world space
    placed = labels_at(centres, np.asarray(mask.dataobj), mask.affine)
    assert dice(placed == 1, truth == 1) > 0.9 and dice(placed == 2, truth == 2) > 0.9
    stacked = mask.affine.copy()  # the slices stacked along their normal, as lungct placed them before
    normal = np.cross(stacked[:3, 0], stacked[:3, 1])
    normal /= np.linalg.norm(normal)
    stacked[:3, 2] = normal * (stacked[:3, 2] @ normal)
    misplaced = labels_at(centres, np.asarray(mask.dataobj), stacked)
    assert dice(misplaced == 1, truth == 1) < 0.8  # what that cost: up to 38 mm off at the last slice


def test_dicom_seg_frames_reference_each_tilted_slice(segmented):
    series, out = segmented
    sources = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, sorted(series.iterdir()))}
    mask = np.asarray(nib.load(out / "tilted.nii.gz").dataobj)
    seg = pydicom.dcmread(out / "tilted-seg.dcm")
    frames = seg.pixel_array
    assert len(seg.PerFrameFunctionalGroupsSequence) == len(frames) > 0
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        source = sources[group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        np.testing.assert_allclose([float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in source.ImagePositionPatient], atol=1e-4)
        number = group.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        assert np.array_equal(frame > 0, mask[:, :, int(source.InstanceNumber) - 1].T == number)


def test_rtstruct_contours_lie_in_their_tilted_slices(segmented):
    series, out = segmented
    sources = {ds.SOPInstanceUID: ds for ds in map(pydicom.dcmread, sorted(series.iterdir()))}
    rtstruct = pydicom.dcmread(out / "tilted-rtstruct.dcm")
    contours = [c for roi in rtstruct.ROIContourSequence for c in roi.ContourSequence]
    assert contours
    for contour in contours:
        source = sources[contour.ContourImageSequence[0].ReferencedSOPInstanceUID]
        orientation = np.array([float(v) for v in source.ImageOrientationPatient])
        normal = np.cross(orientation[:3], orientation[3:])
        points = np.array([float(v) for v in contour.ContourData]).reshape(-1, 3)
        position = np.array([float(v) for v in source.ImagePositionPatient])
        assert np.abs((points - position) @ normal).max() < 1e-3  # in the slice's own (tilted) plane


def test_slice_positions_off_a_straight_line_are_refused(tmp_path, tilted):
    paths = write_dicom_series(tilted, tmp_path / "scattered")
    for k in range(1, len(paths), 2):  # every other slice 9 mm (two pixels) to the side: no grid holds them
        position = [float(v) for v in pydicom.dcmread(paths[k]).ImagePositionPatient]
        set_tags(paths[k], ImagePositionPatient=[f"{position[0] + 9.0:.6f}", *[f"{v:.6f}" for v in position[1:]]])
    with pytest.raises(LungctError) as err:
        load_scan(tmp_path / "scattered")
    assert str(err.value).startswith(f"{tmp_path / 'scattered'}: slice positions (ImagePositionPatient) scatter "
                                     "in-plane by up to ")
