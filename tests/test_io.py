"""Reading scans: every format gives the same voxels at the same places; bad input fails in one line."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

import phantoms
from lungct import LungctError, load_scan
from lungct.io import discover

AFFINE_TOL = 1e-5


def assert_same_scan(scan, array, affine, atol=AFFINE_TOL):
    assert scan.array.shape == array.shape
    np.testing.assert_array_equal(scan.array.astype(np.float32), array.astype(np.float32))
    np.testing.assert_allclose(scan.affine, affine, atol=atol, rtol=0)


def assert_one_line_error(err: pytest.ExceptionInfo, path: Path, *phrases: str):
    message = str(err.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    for phrase in phrases:
        assert phrase.lower() in message.lower(), f"{phrase!r} not in {message!r}"


# ---------------------------------------------------------------------------------- volume formats


@pytest.mark.parametrize("variant", ["RAS", "LPS", "flipped", "permuted", "oblique", "anisotropic"])
def test_nifti_read_keeps_voxels_and_affine(tmp_path, phantom_variants, variant):
    ph = phantom_variants[variant]
    path = phantoms.write_nifti(ph, tmp_path / f"{variant}.nii.gz")
    scan = load_scan(path)
    assert_same_scan(scan, ph.array, ph.affine)
    assert scan.name == variant and scan.format == "nii.gz"
    assert scan.header is not None  # kept so outputs on the native grid copy its geometry exactly


def test_nifti_scaled_storage_reads_hounsfield_units(tmp_path, phantom):
    """uint16 with scl_inter = -1024, as many scanners export: values must come back in HU."""
    path = phantoms.write_nifti(phantom, tmp_path / "scaled.nii", scaled=True)
    assert nib.load(path).get_data_dtype() == np.uint16
    assert_same_scan(load_scan(path), phantom.array, phantom.affine)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
@pytest.mark.parametrize("variant", ["RAS", "LPS", "oblique", "anisotropic"])
def test_itk_formats_keep_voxels_and_affine(tmp_path, phantom_variants, variant, suffix):
    ph = phantom_variants[variant]
    path = phantoms.write_itk(ph, tmp_path / f"{variant}{suffix}")
    scan = load_scan(path)
    assert_same_scan(scan, ph.array, ph.affine)
    assert scan.format == suffix[1:]


def test_same_scan_in_every_format_reads_identically(tmp_path, phantom_variants):
    ph = phantom_variants["oblique"]
    paths = [phantoms.write_nifti(ph, tmp_path / "a.nii.gz"), phantoms.write_itk(ph, tmp_path / "b.nrrd"),
             phantoms.write_itk(ph, tmp_path / "c.mha")]
    phantoms.write_dicom_series(ph, tmp_path / "d")
    scans = [load_scan(p) for p in paths] + [load_scan(tmp_path / "d")]
    for scan in scans[1:]:
        assert_same_scan(scan, scans[0].array, scans[0].affine, atol=1e-4)


# ---------------------------------------------------------------------------------------- DICOM


@pytest.mark.parametrize("variant", ["RAS", "LPS", "oblique", "anisotropic"])
def test_dicom_series_geometry_and_rescale(tmp_path, phantom_variants, variant):
    ph = phantom_variants[variant]
    phantoms.write_dicom_series(ph, tmp_path / "series", slope=0.5, intercept=-1024.0)  # stored = 2 (HU + 1024)
    scan = load_scan(tmp_path / "series")
    # DICOM decimal strings carry 6 decimals here: positions are exact to 1e-6 mm.
    assert_same_scan(scan, ph.array, ph.affine, atol=1e-4)
    assert scan.format == "dicom" and scan.name == "series"
    assert scan.info["modality"] == "CT" and scan.info["files"] == ph.array.shape[2]
    assert scan.warnings == []


def test_dicom_file_order_comes_from_positions_not_names(tmp_path, phantom):
    paths = phantoms.write_dicom_series(phantom, tmp_path / "shuffled", shuffle_names=True, seed=3)
    for path in paths:  # InstanceNumber counts the wrong way too: only the position may be trusted
        ds = pydicom.dcmread(path)
        ds.InstanceNumber = len(paths) - int(ds.InstanceNumber) + 1
        ds.save_as(path)
    assert sorted(p.name for p in paths) != [p.name for p in paths]  # names really are out of order
    assert_same_scan(load_scan(tmp_path / "shuffled"), phantom.array, phantom.affine, atol=1e-4)


def test_dicom_missing_slice_is_reported_and_filled(tmp_path, phantom):
    paths = phantoms.write_dicom_series(phantom, tmp_path / "gap")
    missing = 30
    paths[missing].unlink()
    scan = load_scan(tmp_path / "gap")
    assert any("missing slices" in w for w in scan.warnings), scan.warnings
    assert scan.array.shape == phantom.array.shape  # the grid keeps its true extent and spacing
    np.testing.assert_allclose(scan.affine, phantom.affine, atol=1e-4)
    kept = [k for k in range(phantom.array.shape[2]) if k != missing]
    np.testing.assert_array_equal(scan.array[:, :, kept], phantom.array[:, :, kept].astype(np.float32))
    # The lost slice is interpolated from its neighbours.
    expected = (phantom.array[:, :, missing - 1].astype(np.float32) + phantom.array[:, :, missing + 1]) / 2
    np.testing.assert_allclose(scan.array[:, :, missing], expected, atol=0.51)


def test_dicom_uneven_spacing_is_reported(tmp_path, phantom):
    paths = phantoms.write_dicom_series(phantom, tmp_path / "uneven")
    for k in range(1, len(paths), 2):  # every other slice 0.3 mm higher: gaps of 3.3 and 2.7 mm
        ds = pydicom.dcmread(paths[k])
        position = [float(v) for v in ds.ImagePositionPatient]
        position[2] += 0.3
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.save_as(paths[k])
    scan = load_scan(tmp_path / "uneven")
    assert any("uneven slice spacing" in w for w in scan.warnings), scan.warnings
    assert np.isclose(np.linalg.norm(scan.affine[:3, 2]), 3.0, atol=0.31)


def test_dicom_mixed_orientations_are_refused(tmp_path, phantom):
    """Half the slices coronal: no orientation is the series' own (one odd image would be left out)."""
    paths = phantoms.write_dicom_series(phantom, tmp_path / "mixed")
    for path in paths[::2]:
        ds = pydicom.dcmread(path)
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
        ds.save_as(path)
    with pytest.raises(LungctError) as err:
        load_scan(tmp_path / "mixed")
    assert_one_line_error(err, tmp_path / "mixed", "orientation")


def test_dicom_mr_series_is_refused(tmp_path, phantom):
    phantoms.write_dicom_series(phantom.array[:, :, 20:26], tmp_path / "mr", phantom.affine, modality="MR",
                                intercept=-1024.0)
    with pytest.raises(LungctError) as err:
        load_scan(tmp_path / "mr")
    assert_one_line_error(err, tmp_path / "mr", "Modality MR", "CT")


def test_folder_with_two_series(tmp_path, phantom, phantom_variants):
    folder = tmp_path / "study"
    phantoms.write_dicom_series(phantom, folder, series_uid="1.2.826.0.1.3680043.8.498.1")
    phantoms.write_dicom_series(phantom_variants["LPS"], folder / "sub", series_uid="1.2.826.0.1.3680043.8.498.2")
    for path in sorted((folder / "sub").iterdir()):  # both series' files side by side in one folder
        path.rename(folder / f"b-{path.name}")
    (folder / "sub").rmdir()
    cases = discover([folder])
    assert sorted(c.name for c in cases) == ["study_1.2.826.0.1.3680043.8.498.1", "study_1.2.826.0.1.3680043.8.498.2"]
    assert all(len(c.paths) == phantom.array.shape[2] for c in cases)
    with pytest.raises(LungctError) as err:
        load_scan(folder)
    assert_one_line_error(err, folder, "holds 2 scans")
    scan = load_scan(folder, series_uid="1.2.826.0.1.3680043.8.498.2")
    assert_same_scan(scan, phantom_variants["LPS"].array, phantom_variants["LPS"].affine, atol=1e-4)


# ------------------------------------------------------------------------------------ bad input


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(LungctError) as err:
        load_scan(tmp_path / "empty")
    assert_one_line_error(err, tmp_path / "empty", "no scans")


def test_missing_path_is_refused(tmp_path):
    with pytest.raises(LungctError) as err:
        load_scan(tmp_path / "nowhere.nii.gz")
    assert_one_line_error(err, tmp_path / "nowhere.nii.gz", "no such file")


def test_png_is_refused(tmp_path):
    from PIL import Image

    path = tmp_path / "chest.png"
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8)).save(path)
    with pytest.raises(LungctError) as err:
        load_scan(path)
    assert_one_line_error(err, path, "picture", "not a CT")


@pytest.mark.parametrize("keep", [0.5, 0.002])  # truncated in the voxels, or inside the header
def test_truncated_nifti_is_refused(tmp_path, phantom, keep):
    whole = phantoms.write_nifti(phantom, tmp_path / "whole.nii.gz").read_bytes()
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(whole[: int(len(whole) * keep)])
    with pytest.raises(LungctError) as err:
        load_scan(path)
    assert_one_line_error(err, path, "NIfTI")


def test_truncated_uncompressed_nifti_is_refused(tmp_path, phantom):
    whole = tmp_path / "whole.nii"
    phantoms.write_nifti(phantom, whole)
    path = tmp_path / "short.nii"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(LungctError) as err:
        load_scan(path)
    assert_one_line_error(err, path)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "zero.nrrd"
    path.write_bytes(b"")
    with pytest.raises(LungctError) as err:
        load_scan(path)
    assert_one_line_error(err, path, "empty")


def test_constant_volume_is_refused(tmp_path, phantom):
    path = phantoms.write_nifti(np.zeros((32, 32, 8), np.int16), tmp_path / "blank.nii.gz", phantom.affine)
    with pytest.raises(LungctError) as err:
        load_scan(path)
    assert_one_line_error(err, path, "constant")


def test_gzip_of_garbage_is_refused(tmp_path):
    path = tmp_path / "garbage.nii.gz"
    with gzip.open(path, "wb") as handle:
        handle.write(b"not a nifti header" * 40)
    with pytest.raises(LungctError) as err:
        load_scan(path)
    assert_one_line_error(err, path, "NIfTI")


def test_discover_names_and_ignores_hidden_files(tmp_path, phantom):
    phantoms.write_nifti(phantom, tmp_path / "in" / "a.nii.gz")
    phantoms.write_itk(phantom, tmp_path / "in" / "b.mha")
    phantoms.write_dicom_series(phantom.array[:, :, :4], tmp_path / "in" / "series", phantom.affine)
    shutil.copy(tmp_path / "in" / "a.nii.gz", tmp_path / "in" / ".a.nii.gz.1234.tmp.nii.gz")  # a half-written output
    cases = discover([tmp_path / "in"])
    assert [(c.name, c.kind) for c in cases] == [("a", "volume"), ("b", "volume"), ("series", "dicom")]
