"""The bad-input matrix, row 5 (docs/bad-inputs.md): a NIfTI whose header states no orientation.

With qform_code = sform_code = 0 right and left are unknown: the file is refused in one line unless
--assume-orientation says how it is stored; then the right lung is labelled right, the sidecar warns, QC
flags it, and the mask keeps the input's codes (0, 0) so it lies on the input's voxels in any reader.
"""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner
from phantoms import dice, make_phantom, write_nifti

from lungct import LungctError, load_scan
from lungct.cli import main
from lungct.qcflags import qc_flags

REFUSAL = ("the NIfTI header states no orientation (qform_code = sform_code = 0), so right and left are unknown: "
           "say how its voxels are stored with --assume-orientation (e.g. RAS or LPS)")


@pytest.fixture(scope="module")
def unoriented(tmp_path_factory):
    """(path, phantom): the phantom stored in RAS order, in a NIfTI with both codes 0."""
    phantom = make_phantom((64, 64, 24), (4.5, 4.5, 6.0), seed=3)
    path = write_nifti(phantom, tmp_path_factory.mktemp("unoriented") / "ras.nii.gz", qform_code=0, sform_code=0)
    return path, phantom


def infer(*args):
    return CliRunner().invoke(main, ["infer", *map(str, args), "--quiet"])


def test_an_unoriented_nifti_is_refused_in_one_line(tmp_path, unoriented, model_2d):
    path, _ = unoriented
    result = infer(path, "-o", tmp_path / "mask.nii.gz", "--model", model_2d)
    assert result.exit_code == 1
    assert result.output.splitlines()[0] == f"FAILED {path}: {REFUSAL}"
    assert not (tmp_path / "mask.nii.gz").exists()
    with pytest.raises(LungctError) as err:
        load_scan(path)
    assert str(err.value) == f"{path}: {REFUSAL}"


def test_the_assumed_orientation_labels_the_right_lung_right_and_is_recorded(tmp_path, unoriented, model_2d):
    path, phantom = unoriented
    mask_path = tmp_path / "mask.nii.gz"
    result = infer(path, "-o", mask_path, "--model", model_2d, "--assume-orientation", "ras")
    assert result.exit_code == 0, result.output
    mask = nib.load(mask_path)
    assert (int(mask.header["qform_code"]), int(mask.header["sform_code"])) == (0, 0)
    labels = np.asarray(mask.dataobj)
    assert dice(labels == 1, phantom.lungs == 1) > 0.9 and dice(labels == 2, phantom.lungs == 2) > 0.9
    record = json.loads(mask_path.with_suffix("").with_suffix(".json").read_text())
    assert ("the NIfTI header states no orientation (qform_code = sform_code = 0): its voxels were read as RAS, as "
            "--assume-orientation says; the mask keeps the input's codes (0, 0)") in record["warnings"]
    assert "orientation_assumed" in record["flags"]
    assert "orientation_assumed" in [flag.code for flag in qc_flags(record)]


def test_the_assumption_decides_which_lung_is_which(tmp_path, unoriented, model_2d):
    """nibabel's guess for such a file (LAS, the Analyze convention) swaps right and left on RAS data."""
    path, phantom = unoriented
    result = infer(path, "-o", tmp_path / "mask.nii.gz", "--model", model_2d, "--assume-orientation", "LAS")
    assert result.exit_code == 0, result.output
    labels = np.asarray(nib.load(tmp_path / "mask.nii.gz").dataobj)
    assert dice(labels == 1, phantom.lungs == 2) > 0.9  # what lungct did before it refused these files


def test_a_malformed_orientation_is_refused_in_one_line(tmp_path, unoriented):
    result = infer(unoriented[0], "-o", tmp_path / "mask.nii.gz", "--assume-orientation", "RAX")
    assert result.exit_code == 1
    assert result.output.splitlines() == ["error: --assume-orientation RAX: expected three letters naming where the "
                                          "voxel axes point, one of R/L, A/P and S/I each (e.g. RAS, LPS, LAS)"]


def test_preprocess_keeps_the_codes_and_flags_the_case(tmp_path, unoriented):
    prep = tmp_path / "prep"
    result = CliRunner().invoke(main, ["preprocess", str(unoriented[0]), "-o", str(prep), "--quiet",
                                       "--assume-orientation", "RAS"])
    assert result.exit_code == 0, result.output
    native = nib.load(prep / "ras" / "lungs-native.nii.gz")
    assert (int(native.header["qform_code"]), int(native.header["sform_code"])) == (0, 0)
    assert "orientation_assumed" in json.loads((prep / "ras" / "case.json").read_text())["flags"]
