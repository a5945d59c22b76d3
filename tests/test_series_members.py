"""The bad-input matrix, row 7 (docs/bad-inputs.md): files in a series folder that are not its slices.

A localizer (in the series or in a series of its own), a derived image, an image of another orientation
and a byte-identical copy are left out, each named in a warning, and the series is segmented; a folder
that holds only a scout, a series with no orientation most of its images share, and two different images
at one position are still refused in one line.
"""
from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from phantoms import dice, make_phantom, write_dicom_series
from series_phantoms import localizer_file, series_with, set_tags

from lungct import LungctError, load_scan
from lungct.cli import main

LEFT_OUT = {  # the extra file -> the warning naming it ({uid} and {folder}: the scout series' own)
    "localizer": "left out the localizer (scout) series {uid} in {folder} (1 file(s): SCOUT.dcm)",
    "localizer in series": "left out 1 localizer (scout) image(s), ImageType LOCALIZER: SCOUT.dcm",
    "derived": "left out 1 derived image(s), ImageType DERIVED or SECONDARY among original ones: SC0001.dcm",
    "other orientation": ("left out 1 image(s) whose orientation or size differs from most of the series' (48x48 "
                          "pixels, ImageOrientationPatient [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0]): COR0001.dcm"),
    "duplicate": "left out 1 byte-identical duplicate file(s): copy of IMG0011.dcm",
}


@pytest.fixture(scope="module")
def scan():
    return make_phantom((48, 48, 20), (6.0, 6.0, 6.0), seed=3)


def infer(*args):
    return CliRunner().invoke(main, ["infer", *map(str, args), "--quiet"])


def series_uid(path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID)


@pytest.mark.parametrize("extra", LEFT_OUT)
def test_the_extra_file_is_left_out_by_name_and_the_series_segmented(tmp_path, scan, model_2d, extra):
    folder = tmp_path / "series"
    series_with(folder, scan, extra)
    scout_uid = next((series_uid(p) for p in folder.glob("SCOUT.dcm")), "")
    warning = LEFT_OUT[extra].format(uid=scout_uid, folder=folder)
    result = infer(folder, "-o", tmp_path / "mask.nii.gz", "--model", model_2d)
    assert result.exit_code == 0, result.output
    assert f"warning: series: {warning}" in result.output.splitlines()
    record = json.loads((tmp_path / "mask.json").read_text())
    assert warning in record["warnings"]
    labels = np.asarray(nib.load(tmp_path / "mask.nii.gz").dataobj)
    assert labels.shape == scan.array.shape and dice(labels == 1, scan.lungs == 1) > 0.9


def test_a_scout_series_in_its_own_folder_is_left_out_of_the_batch(tmp_path, scan, model_2d):
    study = tmp_path / "study"
    paths = write_dicom_series(scan, study / "ct")
    (study / "scout").mkdir()
    scout = localizer_file(study / "scout", paths[0], "SCOUT.dcm", same_series=False)
    result = infer(study, "-o", tmp_path / "masks", "--model", model_2d)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "masks").glob("*.nii.gz")) == ["ct.nii.gz"]  # one case: the CT
    note = f"left out the localizer (scout) series {series_uid(scout)} in {study / 'scout'} (1 file(s): SCOUT.dcm)"
    assert note in json.loads((tmp_path / "masks" / "ct.json").read_text())["warnings"]


def test_a_folder_holding_only_a_scout_is_refused(tmp_path, scan):
    paths = write_dicom_series(scan, tmp_path / "ct")
    (tmp_path / "scout").mkdir()
    localizer_file(tmp_path / "scout", paths[0], "SCOUT.dcm", same_series=False)
    shutil.rmtree(tmp_path / "ct")
    with pytest.raises(LungctError) as err:
        load_scan(tmp_path / "scout")
    assert str(err.value) == f"{tmp_path / 'scout' / 'SCOUT.dcm'}: is a localizer (scout) series, not a CT volume"


def test_two_different_images_at_one_position_are_still_refused(tmp_path, scan):
    paths = write_dicom_series(scan, tmp_path / "series")
    copy = tmp_path / "series" / "other.dcm"
    shutil.copyfile(paths[5], copy)
    set_tags(copy, WindowCenter="40")  # the same SOPInstanceUID, other bytes: not a copy, a conflict
    with pytest.raises(LungctError) as err:
        load_scan(tmp_path / "series")
    assert str(err.value) == (f"{tmp_path / 'series'}: 1 slice position(s) occur twice (two acquisitions in one "
                              "series?)")
