"""The bad-input matrix (docs/bad-inputs.md): the inputs issue #28 found lungct already handled well, kept
that way. Each is built in code and read as `lungct infer` reads it: it gives the phantom's voxels at the
phantom's places (with the warning the matrix names), or it is refused in one line naming the file.
Rows 1-7 of the issue, which needed changes, have their own modules (test_bad_inputs, test_bad_outputs,
test_bad_names, test_concurrent_runs, test_bad_orientation, test_gantry_tilt, test_series_members).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from child_process import start_lungct
from phantoms import make_phantom, write_dicom_series, write_nifti
from series_phantoms import set_tags, write_enhanced_ct

from lungct import LungctError, load_scan

PHANTOM = make_phantom((48, 48, 20), (6.0, 6.0, 6.0), seed=3)
NON_SQUARE = make_phantom((48, 32, 20), (6.0, 9.0, 6.0), seed=3)


def per_slice_rescale(folder: Path) -> Path:
    """Every other file stored with RescaleSlope 0.5 (stored values doubled), the rest with slope 1."""
    series = folder / "series"
    plain = write_dicom_series(PHANTOM, series, series_uid="1.2.826.0.1.3680043.8.498.77")
    halved = write_dicom_series(PHANTOM, folder / "halved", series_uid="1.2.826.0.1.3680043.8.498.77", slope=0.5)
    for k in range(1, len(plain), 2):
        shutil.copyfile(halved[k], plain[k])
    return series


def duplicate_position(folder: Path) -> Path:
    paths = write_dicom_series(PHANTOM, folder / "series")
    position = pydicom.dcmread(paths[5], stop_before_pixels=True).ImagePositionPatient
    set_tags(paths[6], ImagePositionPatient=list(position))  # two different images at one place
    return folder / "series"


def mixed_sizes(folder: Path) -> Path:
    write_dicom_series(PHANTOM, folder / "series", series_uid="1.2.826.0.1.3680043.8.498.78")
    smaller = write_dicom_series(PHANTOM.array[:40, :40], folder / "small", PHANTOM.affine,
                                 series_uid="1.2.826.0.1.3680043.8.498.78")
    for path in smaller:  # half the series 40x40: no size is the series' own
        shutil.copyfile(path, folder / "series" / f"small-{path.name}")
    return folder / "series"


READS = {  # input -> (builder, the phantom it must read as, the warnings expected)
    "NIfTI with a qform only": (lambda f: write_nifti(PHANTOM, f / "q.nii.gz", sform_code=0), PHANTOM, []),
    "NIfTI with an sform only": (lambda f: write_nifti(PHANTOM, f / "s.nii.gz", qform_code=0), PHANTOM, []),
    "NIfTI of float64": (lambda f: write_nifti(PHANTOM.array.astype(np.float64), f / "d.nii.gz", PHANTOM.affine),
                         PHANTOM, []),
    "NIfTI 4D with one volume": (lambda f: write_nifti(PHANTOM.array[..., None], f / "v.nii.gz", PHANTOM.affine),
                                 PHANTOM, []),
    "non-square pixels": (lambda f: write_nifti(NON_SQUARE, f / "n.nii.gz"), NON_SQUARE, []),
    "UTF-8 path with spaces": (lambda f: write_nifti(PHANTOM, f / "scans é" / "chest ü 1.nii.gz"), PHANTOM, []),
    "DICOM with per-slice rescale": (per_slice_rescale, PHANTOM, []),
    "enhanced multi-frame CT": (lambda f: write_enhanced_ct(PHANTOM, f / "enhanced.dcm"), PHANTOM,
                                ["multi-frame DICOM: geometry taken from the reader (GDCM)"]),
}

REFUSED = {  # input -> (builder, the one line's reason after '<file>: ')
    "NIfTI 4D with two volumes": (lambda f: write_nifti(np.stack([PHANTOM.array] * 2, -1), f / "t.nii.gz",
                                                        PHANTOM.affine),
                                  "has shape (48, 48, 20, 2) (int16): not a single 3D CT volume"),
    "NIfTI holding NaN": (lambda f: write_nifti(np.where(PHANTOM.lungs > 0, np.nan, PHANTOM.array).astype(np.float32),
                                                f / "nan.nii.gz", PHANTOM.affine),
                          "image holds NaN or infinite values"),
    "DICOM with two images at one position": (duplicate_position,
                                              "1 slice position(s) occur twice (two acquisitions in one series?)"),
    "DICOM series of mixed sizes": (mixed_sizes, "series mixes image sizes [(40, 40), (48, 48)] and no size is most "
                                                 "of it: split it into one series per size"),
}


@pytest.mark.parametrize("name", READS)
def test_read_as_it_should_be(tmp_path, name):
    build, phantom, warnings = READS[name]
    scan = load_scan(build(tmp_path))
    np.testing.assert_array_equal(scan.array, phantom.array.astype(np.float32))
    np.testing.assert_allclose(scan.affine, phantom.affine, atol=1e-4)
    assert scan.warnings == warnings


@pytest.mark.parametrize("name", REFUSED)
def test_refused_in_one_line(tmp_path, name):
    build, reason = REFUSED[name]
    source = build(tmp_path)
    with pytest.raises(LungctError) as err:
        load_scan(source)
    assert str(err.value) == f"{source}: {reason}"


def test_two_infer_runs_into_one_folder_both_finish_every_case(tmp_path, model_2d):
    for name in ("a", "b"):
        write_nifti(PHANTOM, tmp_path / "scans" / f"{name}.nii.gz")
    out = tmp_path / "masks"
    runs = [start_lungct("infer", tmp_path / "scans", "-o", out, "--model", model_2d, "--quiet") for _ in range(2)]
    assert [run.wait(timeout=300) for run in runs] == [0, 0], [run.communicate()[1] for run in runs]
    assert {json.loads((out / f"{name}.json").read_text())["status"] for name in ("a", "b")} == {"ok"}
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["a.nii.gz", "b.nii.gz"]
    assert not [p for p in out.iterdir() if ".tmp" in p.name]
