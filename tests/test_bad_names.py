"""The bad-input matrix, row 3 (docs/bad-inputs.md): file names that are not valid UTF-8.

Latin-1 names from an old archive (`scan \\xe9t\\xe9.nii.gz`, a DICOM folder `s\\xe9rie/`, a MetaImage
header) are read and segmented; outputs keep the input's own bytes in their names; every text output
(messages, CSV, HTML) is valid UTF-8 with each undecodable byte shown as \\xNN; report.html and
statistics.csv are rewritten, never left from an earlier run.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from phantoms import make_phantom, write_dicom_series, write_itk, write_nifti

from lungct.cli import main

NIFTI_NAME = os.fsdecode(b"scan \xe9t\xe9")  # as Python hands the name over: 0xE9 as the surrogate \udce9
SERIES_NAME = os.fsdecode(b"s\xe9rie")
HEADER_NAME = os.fsdecode(b"h\xe9ader")
PRINTED = {NIFTI_NAME: "scan \\xe9t\\xe9", SERIES_NAME: "s\\xe9rie", HEADER_NAME: "h\\xe9ader"}


@pytest.fixture(scope="module")
def latin1_scans(tmp_path_factory) -> Path:
    """A folder of three scans with Latin-1 names: NIfTI, a DICOM series folder, a MetaImage header + data."""
    folder = tmp_path_factory.mktemp("archive") / "scans"
    scan = make_phantom((48, 48, 20), (6.0, 6.0, 6.0), seed=3)
    write_nifti(scan, folder / f"{NIFTI_NAME}.nii.gz")
    write_dicom_series(scan, folder / SERIES_NAME)
    write_itk(scan, folder / "plain.mhd")  # its header names plain.raw
    (folder / "plain.mhd").rename(folder / f"{HEADER_NAME}.mhd")
    return folder


def test_infer_segments_every_case_and_keeps_the_names_bytes(tmp_path, latin1_scans, model_2d):
    out = tmp_path / "masks"
    out.mkdir()
    for stale in ("report.html", "statistics.csv"):  # from an earlier run: must not survive this one
        (out / stale).write_text("stale\n")
    result = CliRunner().invoke(main, ["infer", str(latin1_scans), "-o", str(out), "--model", str(model_2d), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == f"3 done, 0 skipped (already done), 0 failed -> {out}"
    for name in PRINTED:
        assert (out / f"{name}.nii.gz").is_file()
        record = json.loads((out / f"{name}.json").read_text())
        assert record["status"] == "ok" and record["case"] == name
    sources = {json.loads((out / f"{name}.json").read_text())["source"] for name in PRINTED}
    assert sources == {str(latin1_scans / f"{NIFTI_NAME}.nii.gz"), str(latin1_scans / SERIES_NAME),
                       str(latin1_scans / f"{HEADER_NAME}.mhd")}  # the exact names, to open again


def test_report_and_statistics_are_rewritten_as_valid_utf8(tmp_path, latin1_scans, model_2d):
    out = tmp_path / "masks"
    out.mkdir()
    (out / "report.html").write_text("stale\n")
    (out / "statistics.csv").write_text("stale\n")
    CliRunner().invoke(main, ["infer", str(latin1_scans), "-o", str(out), "--model", str(model_2d), "--quiet"])
    page = (out / "report.html").read_bytes().decode("utf-8")  # raises if not UTF-8
    assert "stale" not in page and all(printed in page for printed in PRINTED.values())
    assert 'href="scan%20%E9t%E9.nii.gz"' in page  # the link carries the name's own bytes
    with open(out / "statistics.csv", encoding="utf-8", newline="") as handle:
        cases = {row["case"] for row in csv.DictReader(handle)}
    assert cases == set(PRINTED.values())


def test_preprocess_writes_case_folders_and_a_utf8_summary(tmp_path, latin1_scans):
    prep = tmp_path / "prep"
    result = CliRunner().invoke(main, ["preprocess", str(latin1_scans), "-o", str(prep), "--quiet"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in prep.iterdir() if p.is_dir()} == set(PRINTED)
    with open(prep / "summary.csv", encoding="utf-8", newline="") as handle:
        rows = {row["case"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(PRINTED.values()) and {row["status"] for row in rows.values()} == {"ok"}
    assert rows["s\\xe9rie"]["source"] == f"{latin1_scans}/s\\xe9rie (20 files)"


def test_a_refused_case_is_named_with_escapes_in_one_line(tmp_path):
    broken = tmp_path / f"{NIFTI_NAME}.nii.gz"
    broken.write_bytes(b"not a NIfTI file at all")
    result = CliRunner().invoke(main, ["infer", str(broken), "-o", str(tmp_path / "mask.nii.gz"), "--quiet"])
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith(f"FAILED {tmp_path}/scan \\xe9t\\xe9.nii.gz: cannot read NIfTI")
