"""The bad-input matrix (docs/bad-inputs.md): what each input that once broke lungct gets now.

Row 1, data loss: an input is never written, with or without --overwrite, whether the output names it,
a symbolic link to it or a hard link to it; masks beside scans in their own folder are refused per case.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from phantoms import make_phantom, write_nifti

from lungct.cli import main


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def infer(*args) -> object:
    return CliRunner().invoke(main, ["infer", *map(str, args), "--quiet"])


@pytest.fixture(scope="module")
def small_scan() -> object:
    return make_phantom((48, 48, 20), (6.0, 6.0, 6.0), seed=3)


def scan_file(folder: Path, small_scan, name: str = "scan.nii.gz") -> Path:
    return write_nifti(small_scan, Path(folder) / name)


def no_temporaries(folder: Path) -> bool:
    return not [p for p in Path(folder).rglob("*") if ".tmp" in p.name]


@pytest.mark.parametrize("overwrite", [False, True])
def test_the_output_file_is_the_input_scan(tmp_path, small_scan, model_2d, overwrite):
    scan = scan_file(tmp_path, small_scan)
    before = digest(scan)
    result = infer(scan, "-o", scan, "--model", model_2d, *(["--overwrite"] if overwrite else []))
    assert result.exit_code == 1
    message = result.output.strip().splitlines()
    assert len(message) == 1 and str(scan) in message[0] and "never writes over an input" in message[0]
    assert "scan-mask.nii.gz" in message[0]  # says how to name it
    assert digest(scan) == before and sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_the_output_file_is_a_link_to_the_input(tmp_path, small_scan, model_2d, link):
    scan = scan_file(tmp_path / "scans", small_scan)
    before = digest(scan)
    out = tmp_path / "out.nii.gz"
    (out.symlink_to if link == "symbolic" else out.hardlink_to)(scan)
    result = infer(scan, "-o", out, "--model", model_2d, "--overwrite")
    assert result.exit_code == 1 and "never writes over an input" in result.output
    assert digest(scan) == before and digest(out) == before
    assert out.is_symlink() == (link == "symbolic")


def test_masks_beside_scans_in_their_own_folder_are_refused_case_by_case(tmp_path, small_scan, model_2d):
    scans = tmp_path / "scans"
    for name in ("a.nii.gz", "b.nii.gz"):
        scan_file(scans, small_scan, name)
    series = tmp_path / "elsewhere.nii.gz"  # a second input whose mask does not land on a scan
    scan_file(tmp_path, small_scan, series.name)
    before = {p.name: digest(p) for p in scans.iterdir()}
    result = infer(scans, series, "-o", scans, "--model", model_2d, "--overwrite")
    assert result.exit_code == 1
    refused = [line for line in result.output.splitlines() if "never writes over an input" in line]
    assert len(refused) == 2 and all("give another output folder" in line for line in refused)
    assert {p.name: digest(p) for p in scans.iterdir() if p.name in before} == before
    # the scan whose mask does not collide is segmented; the refused ones leave no record over anything
    assert (scans / "elsewhere.nii.gz").is_file() and (scans / "elsewhere.json").is_file()
    assert not (scans / "a.json").exists() and no_temporaries(scans)


def test_preprocess_never_replaces_a_case_folder_that_holds_an_input(tmp_path, small_scan):
    prep = tmp_path / "prep"
    scan = scan_file(prep / "scan", small_scan, "scan.nii.gz")  # prep/scan/ is also the case folder
    before = digest(scan)
    result = CliRunner().invoke(main, ["preprocess", str(scan), "-o", str(prep), "--overwrite", "--quiet"])
    assert result.exit_code == 1 and "never writes over an input" in result.output
    assert digest(scan) == before and os.listdir(prep / "scan") == ["scan.nii.gz"]
