"""`lungct preprocess` end to end: a folder of good and bad scans in, case folders and tables out.

One batch (phantom scans in NIfTI, NRRD and DICOM, plus a PNG, a truncated file, an MR series and an
empty folder) runs once per test session through the click command; the tests below read its outputs.
To stay fast the batch processes at 2 mm (`--set Resampled.spacing_mm=2`); the default 1 mm recipe runs
once, through `python -m lungct`.
"""
from __future__ import annotations

import csv
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

import lungct
import phantoms
from lungct.cli import main
from lungct.geometry import orientation_code
from lungct.ct.preprocess import CASE_FILES, preprocess_scan, write_case
from lungct.recipes import load_recipe, recipe_digest

SET_2MM = ["--set", "Resampled.spacing_mm=2"]
UID_A, UID_B = "1.2.826.0.1.3680043.8.498.11", "1.2.826.0.1.3680043.8.498.12"
GOOD = {  # case name -> (input inside scans/, phantom variant, phantom kind)
    "chest": ("chest.nii.gz", "flipped", "plain"),
    "chest-lps": ("chest-lps.nrrd", "LPS", "plain"),
    "chest-790": ("chest-790.nii.gz", "RAS", "miscalibrated"),
    f"two_{UID_A}": ("two", "RAS", "plain"),
    f"two_{UID_B}": ("two", "oblique", "plain"),
}
BAD = {"bad": ("bad.png", "2D picture"), "broken": ("broken.nii.gz", "cannot read NIfTI"),
       "mr": ("mr", "Modality MR")}


@functools.lru_cache(maxsize=None)
def truth_phantom(variant: str, kind: str) -> phantoms.Phantom:
    if kind == "miscalibrated":
        return phantoms.miscalibrated(phantoms.variant(phantoms.standard(), variant))
    return phantoms.variant(phantoms.standard(kind), variant)


def make_inputs(scans: Path) -> None:
    """The batch's input folder: five good cases (two DICOM series share a folder) and four bad ones."""
    from PIL import Image

    flipped = truth_phantom("flipped", "plain")
    phantoms.write_nifti(flipped, scans / "chest.nii.gz", qform_code=1, sform_code=2)
    phantoms.write_itk(truth_phantom("LPS", "plain"), scans / "chest-lps.nrrd")
    phantoms.write_nifti(truth_phantom("RAS", "miscalibrated"), scans / "chest-790.nii.gz")
    phantoms.write_dicom_series(truth_phantom("RAS", "plain"), scans / "two", series_uid=UID_A, prefix="a-")
    phantoms.write_dicom_series(truth_phantom("oblique", "plain"), scans / "two", series_uid=UID_B, prefix="b-")
    base = phantoms.standard()
    phantoms.write_dicom_series(base.array[:, :, 20:26], scans / "mr", base.affine, modality="MR")
    Image.fromarray(np.full((64, 64), 128, np.uint8)).save(scans / "bad.png")
    whole = (scans / "chest.nii.gz").read_bytes()
    (scans / "broken.nii.gz").write_bytes(whole[: len(whole) // 2])
    (scans / "empty").mkdir()


def invoke(args, **kwargs) -> dict:
    result = CliRunner().invoke(main, [str(a) for a in args], **kwargs)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return {"exit_code": result.exit_code, "output": result.output, "stderr": result.stderr}


@pytest.fixture(scope="module")
def batch(built_once) -> dict:
    """Inputs and outputs of one `lungct preprocess scans/ -o prep/` run (read-only)."""
    def build(folder: Path):
        make_inputs(folder / "scans")
        run = invoke(["preprocess", folder / "scans", "-o", folder / "prep", *SET_2MM, "--quiet"])
        (folder / "run.json").write_text(json.dumps(run))

    folder = built_once("preprocess-batch", build)
    return {"scans": folder / "scans", "out": folder / "prep", **json.loads((folder / "run.json").read_text())}


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --------------------------------------------------------------------------------------- the batch


def test_batch_reports_each_bad_case_in_one_line_and_fails(batch):
    assert batch["exit_code"] == 1
    output = batch["output"]
    assert "Traceback" not in output
    failed = [line for line in output.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == len(BAD), output
    for name, (source, reason) in BAD.items():
        matching = [line for line in failed if line.startswith(f"FAILED {batch['scans'] / source}")]
        assert len(matching) == 1 and reason in matching[0], (name, failed)
    assert f"{len(GOOD)} done, 0 skipped (already done), {len(BAD)} failed" in output
    assert "failures listed in" in output
    assert "warning: chest-790: HU calibration looks off" in output


def test_batch_writes_whole_case_folders_only(batch):
    out = batch["out"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*GOOD, "summary.csv", "failures.csv"])
    for name in GOOD:
        assert sorted(p.name for p in (out / name).iterdir()) == sorted(CASE_FILES), name
    hidden = [p for p in out.rglob("*") if p.name.startswith(".") or ".tmp" in p.name]
    assert hidden == [], "temporary files left behind"
    for name in BAD:
        assert not (out / name).exists()
    assert not any("empty" in p.name for p in out.iterdir())  # an empty sub-folder is not a case


def test_summary_and_failure_tables(batch):
    rows = {row["case"]: row for row in read_csv(batch["out"] / "summary.csv")}
    assert set(rows) == set(GOOD) | set(BAD)
    for name in GOOD:
        row = rows[name]
        assert row["status"] == "ok"
        right, left, total = float(row["right_lung_ml"]), float(row["left_lung_ml"]), float(row["total_ml"])
        assert right > 300 and left > 300 and abs(total - right - left) <= 0.11
    assert "hu_miscalibrated" in rows["chest-790"]["flags"]
    failures = {row["case"]: row for row in read_csv(batch["out"] / "failures.csv")}
    assert set(failures) == set(BAD)
    for name, (source, reason) in BAD.items():
        assert rows[name]["status"] == "failed"
        text = failures[name]["reason"]
        assert "\n" not in text and text.startswith(f"{batch['scans'] / source}: ") and reason in text, text


@pytest.mark.parametrize("name", list(GOOD))
def test_lungs_native_has_exactly_the_input_geometry(batch, name):
    source, variant, kind = GOOD[name]
    ph = truth_phantom(variant, kind)
    native = nib.load(batch["out"] / name / "lungs-native.nii.gz")
    assert native.shape == ph.array.shape
    assert native.get_data_dtype() == np.uint8
    np.testing.assert_allclose(native.affine, ph.affine, atol=1e-5, rtol=0)
    np.testing.assert_allclose(native.header.get_zooms(), ph.spacing, atol=1e-5)
    labels = np.asarray(native.dataobj)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert phantoms.dice(labels > 0, ph.lungs > 0) >= 0.97
    assert phantoms.dice(labels == 1, ph.lungs == 1) >= 0.97 and phantoms.dice(labels == 2, ph.lungs == 2) >= 0.97
    if source.endswith(".nii.gz"):  # a NIfTI input: its header's own geometry fields come back unchanged
        original = nib.load(batch["scans"] / source)
        for field in ("qform_code", "sform_code"):
            assert int(native.header[field]) == int(original.header[field]), field
        np.testing.assert_allclose(native.get_qform(), original.get_qform(), atol=1e-5)
        np.testing.assert_allclose(native.get_sform(), original.get_sform(), atol=1e-5)
    else:
        assert int(native.header["sform_code"]) > 0 and int(native.header["qform_code"]) > 0


@pytest.mark.parametrize("name", ["chest", f"two_{UID_B}"])
def test_processing_grid_outputs(batch, name):
    folder = batch["out"] / name
    image, lungs, roi = (nib.load(folder / f) for f in ("image.nii.gz", "lungs.nii.gz", "roi.nii.gz"))
    assert orientation_code(image.affine) == "RAS"
    np.testing.assert_allclose(image.header.get_zooms(), [2.0, 2.0, 2.0], atol=1e-6)
    for other in (lungs, roi):
        assert other.shape == image.shape
        np.testing.assert_allclose(other.affine, image.affine, atol=1e-6)
    values = image.get_fdata()
    assert values.min() >= -1e-4 and values.max() <= 1 + 1e-4
    labels, region = np.asarray(lungs.dataobj), np.asarray(roi.dataobj) > 0
    assert lungs.get_data_dtype() == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    assert region[labels > 0].all()
    # Right lung (1) lies towards the patient's right: larger world x in RAS.
    centre_x = {label: (lungs.affine @ np.append(np.argwhere(labels == label).mean(axis=0), 1))[0] for label in (1, 2)}
    assert centre_x[1] > 30 and centre_x[2] < -30
    png = folder / "preview.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_case_json_records_the_case(batch):
    out = batch["out"]
    record = json.loads((out / "chest" / "case.json").read_text())
    ph = truth_phantom("flipped", "plain")
    assert record["case"] == "chest" and record["status"] == "ok"
    assert record["lungct_version"] == lungct.__version__
    assert record["sources"] == [str((batch["scans"] / "chest.nii.gz").resolve())]
    assert record["format"] == "nii.gz" and record["modality"] == "CT"
    assert record["input"]["shape"] == list(ph.array.shape)
    assert record["input"]["spacing_mm"] == [3.0, 3.0, 3.0] and record["input"]["orientation"] == "LAS"
    assert record["output"]["spacing_mm"] == [2.0, 2.0, 2.0] and record["output"]["orientation"] == "RAS"
    assert record["labels"] == {"background": 0, "right_lung": 1, "left_lung": 2}
    lungs = np.asarray(nib.load(out / "chest" / "lungs.nii.gz").dataobj)
    volumes = record["volumes_ml"]
    assert abs(volumes["right_lung"] - (lungs == 1).sum() * 8 / 1000) <= 0.1
    assert abs(volumes["left_lung"] - (lungs == 2).sum() * 8 / 1000) <= 0.1
    assert abs(volumes["total"] - volumes["right_lung"] - volumes["left_lung"]) <= 0.11
    truth_ml = (ph.lungs > 0).sum() * 27 / 1000
    assert abs(volumes["total"] - truth_ml) <= 0.05 * truth_ml
    assert record["hu_calibration"]["status"] == "ok" and record["flags"] == [] and record["warnings"] == []
    assert record["timings_s"]["total"] > 0
    expected = load_recipe("preprocess", {"Resampled.spacing_mm": 2})
    assert record["recipe"]["name"] == "preprocess" and record["recipe"]["digest"] == recipe_digest(expected)
    resampled = [t for t in record["recipe"]["transforms"] if t["name"] == "Resampled"]
    assert resampled[0]["args"]["spacing_mm"] == 2

    miscalibrated = json.loads((out / "chest-790" / "case.json").read_text())
    assert "hu_miscalibrated" in miscalibrated["flags"]
    assert miscalibrated["hu_calibration"]["status"] == "miscalibrated"
    assert abs(miscalibrated["hu_calibration"]["air_stored"] + 790) <= 10
    assert any("HU calibration" in w for w in miscalibrated["warnings"])

    series = json.loads((out / f"two_{UID_B}" / "case.json").read_text())
    assert series["format"] == "dicom" and series["modality"] == "CT"
    assert series["dicom"]["series_uid"] == UID_B and series["sources"]["files"] == 60
    oblique = truth_phantom("oblique", "plain")
    assert series["input"]["orientation"] == orientation_code(oblique.affine) == "RAS"
    np.testing.assert_allclose(series["input"]["direction"], oblique.affine[:3, :3] / 3.0, atol=1e-5)


# ---------------------------------------------------------------------------- resume, overwrite, workers


def test_second_run_resumes_and_overwrite_redoes(batch, tmp_path):
    out = tmp_path / "prep"
    shutil.copytree(batch["out"], out)
    inputs = [batch["scans"] / "chest.nii.gz", batch["scans"] / "chest-lps.nrrd"]
    stamps = {name: (out / name / "case.json").stat().st_mtime_ns for name in ("chest", "chest-lps")}
    run = invoke(["preprocess", *inputs, "-o", out, *SET_2MM, "--quiet"])
    assert run["exit_code"] == 0, run["output"]
    assert "2 of 2 case(s) already done" in run["output"] and "0 done, 2 skipped" in run["output"]
    assert {n: (out / n / "case.json").stat().st_mtime_ns for n in stamps} == stamps

    (out / ".tmp-chest-0badc0de").mkdir()  # what a killed run leaves
    (out / ".tmp-chest-0badc0de" / "image.nii.gz").write_bytes(b"half")
    run = invoke(["preprocess", inputs[0], "-o", out, *SET_2MM, "--quiet", "--overwrite"])
    assert run["exit_code"] == 0, run["output"]
    assert "1 done, 0 skipped" in run["output"]
    assert (out / "chest" / "case.json").stat().st_mtime_ns != stamps["chest"]
    assert (out / "chest-lps" / "case.json").stat().st_mtime_ns == stamps["chest-lps"]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    np.testing.assert_array_equal(np.asarray(nib.load(out / "chest" / "lungs-native.nii.gz").dataobj),
                                  np.asarray(nib.load(batch["out"] / "chest" / "lungs-native.nii.gz").dataobj))


def test_two_workers_give_the_same_results(batch, tmp_path):
    out = tmp_path / "prep"
    inputs = [batch["scans"] / "chest.nii.gz", batch["scans"] / "chest-lps.nrrd"]
    run = invoke(["preprocess", *inputs, "-o", out, *SET_2MM, "--quiet", "--workers", "2"])
    assert run["exit_code"] == 0, run["output"]
    for name in ("chest", "chest-lps"):
        for file in ("lungs.nii.gz", "lungs-native.nii.gz", "roi.nii.gz"):
            np.testing.assert_array_equal(np.asarray(nib.load(out / name / file).dataobj),
                                          np.asarray(nib.load(batch["out"] / name / file).dataobj), err_msg=file)
    assert len(read_csv(out / "summary.csv")) == 2 and read_csv(out / "failures.csv") == []


def test_interrupted_write_leaves_no_case_folder(tmp_path, monkeypatch):
    ph = phantoms.standard()
    recipe = load_recipe("preprocess", {"Resampled.spacing_mm": 2})
    result = preprocess_scan(lungct.io.Scan("cut", ph.array.astype(np.float32), ph.affine, [Path("cut.nii.gz")],
                                            "nii.gz"), recipe)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("lungct.ct.preprocess.write_json", killed)
    with pytest.raises(KeyboardInterrupt):
        write_case(result, recipe, tmp_path / "prep")
    assert list((tmp_path / "prep").iterdir()) == []


# ------------------------------------------------------------------------------------------ bad input


def test_empty_folder_fails_in_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    run = invoke(["preprocess", tmp_path / "empty", "-o", tmp_path / "prep"])
    assert run["exit_code"] == 1
    lines = run["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / 'empty'}: no scans found"), lines
    assert not (tmp_path / "prep").exists() or list((tmp_path / "prep").iterdir()) == []


def test_missing_input_fails_in_one_line(tmp_path):
    run = invoke(["preprocess", tmp_path / "nowhere", "-o", tmp_path / "prep"])
    assert run["exit_code"] == 1
    assert run["stderr"].strip() == f"error: {tmp_path / 'nowhere'}: no such file or folder"


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_scan_alone_fails_and_writes_no_case(batch, tmp_path, name):
    source, reason = BAD[name]
    run = invoke(["preprocess", batch["scans"] / source, "-o", tmp_path / "prep", "--quiet"])
    assert run["exit_code"] == 1 and reason in run["output"]
    assert sorted(p.name for p in (tmp_path / "prep").iterdir()) == ["failures.csv", "summary.csv"]
    assert [row["case"] for row in read_csv(tmp_path / "prep" / "failures.csv")] == [name]


# ------------------------------------------------------------------------- workspace, module, library


def test_without_output_option_cases_go_to_the_workspace(batch, tmp_path):
    run = invoke(["preprocess", batch["scans"] / "chest-lps.nrrd", *SET_2MM, "--quiet"],
                 env={"LUNGCT_WORKDIR": str(tmp_path / "work")})
    assert run["exit_code"] == 0, run["output"]
    assert (tmp_path / "work" / "prep" / "chest-lps" / "case.json").is_file()


def test_python_m_lungct_with_the_default_recipe(batch, tmp_path):
    source = batch["scans"] / "chest.nii.gz"
    done = subprocess.run([sys.executable, "-m", "lungct", "preprocess", str(source), "-o", str(tmp_path / "prep"),
                           "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "prep" / "chest"
    image = nib.load(folder / "image.nii.gz")
    np.testing.assert_allclose(image.header.get_zooms(), [1.0, 1.0, 1.0], atol=1e-6)
    original, native = nib.load(source), nib.load(folder / "lungs-native.nii.gz")
    assert native.shape == original.shape
    np.testing.assert_allclose(native.affine, original.affine, atol=1e-5, rtol=0)
    np.testing.assert_allclose(native.header.get_zooms(), original.header.get_zooms(), atol=1e-6)
    assert [int(native.header[f]) for f in ("qform_code", "sform_code")] == [1, 2]
    ph = truth_phantom("flipped", "plain")
    labels = np.asarray(native.dataobj)
    assert phantoms.dice(labels == 1, ph.lungs == 1) >= 0.97 and phantoms.dice(labels == 2, ph.lungs == 2) >= 0.97


def test_library_api(batch):
    scan = lungct.load_scan(batch["scans"] / "chest-lps.nrrd")
    ph = truth_phantom("LPS", "plain")
    np.testing.assert_array_equal(scan.array, ph.array.astype(np.float32))
    result = lungct.preprocess_scan(scan, lungct.load_recipe("preprocess", {"Resampled.spacing_mm": 2}))
    record = json.loads((batch["out"] / "chest-lps" / "case.json").read_text())
    assert result.volumes_ml == record["volumes_ml"]  # the CLI and the library agree, voxel for voxel
    cli = np.asarray(nib.load(batch["out"] / "chest-lps" / "lungs-native.nii.gz").dataobj)
    np.testing.assert_array_equal(result.lungs_native, cli)
    labels, report = lungct.segment_lungs(scan.array, scan.affine)
    assert labels.shape == scan.array.shape
    assert phantoms.dice(labels == 1, ph.lungs == 1) >= 0.95 and phantoms.dice(labels == 2, ph.lungs == 2) >= 0.95
    assert report["right_lung_ml"] > 300 and report["left_lung_ml"] > 300
