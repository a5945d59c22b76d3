"""The bad-input matrix, row 2 (docs/bad-inputs.md): outputs the OS refuses.

A folder the user may not write (mode 555, as an ordinary user), a disk that fills up (a file-size limit:
every write beyond it fails with EFBIG, as ENOSPC would) and names longer than the file system takes each
end in one line naming the path and the cause, a non-zero exit, no temporary files and no partial file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import pytest
from child_process import error_lines, file_size_limit, ordinary_user, run_lungct
from click.testing import CliRunner
from phantoms import make_phantom, write_nifti

from lungct.cli import main


@pytest.fixture(scope="module")
def small_scan():
    return make_phantom((48, 48, 20), (6.0, 6.0, 6.0), seed=3)


@pytest.fixture
def read_only_folder(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    yield folder
    folder.chmod(0o755)


def leftovers(folder: Path) -> list[str]:
    """Temporary files and folders anywhere below `folder`."""
    return [p.name for p in Path(folder).rglob("*") if ".tmp" in p.name or p.name.startswith((".tmp-", ".old-"))]


UNWRITABLE = {  # -o relative to the read-only folder -> the one line expected (without "error: <folder>")
    "folder": ("infer", "", ": cannot write: Permission denied"),
    "file in folder": ("infer", "mask.nii.gz", ": cannot write: Permission denied"),
    "new subfolder": ("infer", "sub/masks", "/sub/masks: cannot create folder: Permission denied ({folder}/sub)"),
    "preprocess": ("preprocess", "", ": cannot write: Permission denied"),
}


@pytest.mark.parametrize("target", UNWRITABLE)
def test_an_unwritable_output_folder_fails_in_one_line(tmp_path, small_scan, model_2d, read_only_folder, target):
    verb, below, expected = UNWRITABLE[target]
    scan = write_nifti(small_scan, tmp_path / "scans" / "scan.nii.gz")
    output = read_only_folder / below if below else read_only_folder
    model = ["--model", model_2d] if verb == "infer" else []
    result = run_lungct(verb, scan, "-o", output, *model, "--quiet", preexec_fn=ordinary_user())
    assert result.returncode == 1, result.stderr
    assert error_lines(result) == [f"error: {read_only_folder}{expected.format(folder=read_only_folder)}"]
    assert os.listdir(read_only_folder) == []


def test_a_full_disk_fails_every_case_in_one_line_and_leaves_no_partial_file(tmp_path, small_scan, model_2d):
    for name in ("a", "b"):
        write_nifti(small_scan, tmp_path / "scans" / f"{name}.nii.gz")
    out = tmp_path / "masks"
    result = run_lungct("infer", tmp_path / "scans", "-o", out, "--model", model_2d, "--quiet",
                        preexec_fn=file_size_limit(3000))  # masks (~2 kB) fit, previews do not
    assert result.returncode == 1 and "Traceback" not in result.stderr
    failed = [line for line in error_lines(result) if line.startswith("FAILED")]
    assert failed == [f"FAILED {out / name}-preview.png: cannot write: File too large" for name in ("a", "b")]
    assert leftovers(out) == []
    for path in out.iterdir():  # whatever was written is whole
        if path.suffix == ".json":
            assert json.loads(path.read_text())["status"] == "failed"
        else:
            assert nib.load(path).get_fdata().shape == small_scan.array.shape


def test_preprocess_on_a_full_disk_leaves_no_case_folder(tmp_path, small_scan):
    scan = write_nifti(small_scan, tmp_path / "scans" / "scan.nii.gz")
    prep = tmp_path / "prep"
    result = run_lungct("preprocess", scan, "-o", prep, "--quiet", preexec_fn=file_size_limit(3000))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"FAILED {prep}/scan/image.nii.gz: cannot write: File too large" in error_lines(result)
    assert sorted(p.name for p in prep.iterdir()) == ["failures.csv", "summary.csv"] and leftovers(prep) == []
    assert "cannot write: File too large" in (prep / "failures.csv").read_text()


def test_an_output_name_too_long_for_the_file_system(tmp_path, small_scan, model_2d):
    scan = write_nifti(small_scan, tmp_path / "scan.nii.gz")
    output = tmp_path / ("m" * 300 + ".nii.gz")
    result = CliRunner().invoke(main, ["infer", str(scan), "-o", str(output), "--model", str(model_2d), "--quiet"])
    assert result.exit_code == 1 and not isinstance(result.exception, OSError)
    assert result.output.splitlines() == [f"error: {output}: cannot write: File name too long (307 bytes; this file "
                                          "system allows 255)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.nii.gz"]


def test_a_case_whose_outputs_would_be_too_long_fails_alone(tmp_path, small_scan, model_2d):
    long_name = "b" * 245  # the scan's own name fits, <name>-preview.png does not
    for name in (long_name, "short"):
        write_nifti(small_scan, tmp_path / "scans" / f"{name}.nii.gz")
    out = tmp_path / "masks"
    result = CliRunner().invoke(main, ["infer", str(tmp_path / "scans"), "-o", str(out), "--model", str(model_2d),
                                       "--quiet"])
    assert result.exit_code == 1 and not isinstance(result.exception, OSError)
    assert (f"FAILED {tmp_path}/scans/{long_name}.nii.gz: its output {long_name}-preview.png: cannot write: File "
            "name too long (257 bytes; this file system allows 255)") in result.output.splitlines()
    assert (out / "short.nii.gz").is_file() and json.loads((out / "short.json").read_text())["status"] == "ok"
    assert not (out / f"{long_name}.nii.gz").exists() and leftovers(out) == []
