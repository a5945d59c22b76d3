"""`lungct infer` on phantoms: exact output geometry for every storage orientation, right stays right,
determinism, a single slice, batches with a corrupt file, --binary, model lookup and the clean-up steps.

The fixture model is a small 2D U-Net trained for a few seconds on phantom slices (right and left lungs
labelled), so its predictions are good enough (Dice > 0.9) to catch a flipped or shifted mask.
"""
from __future__ import annotations

import json
import os
import time

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi
from click.testing import CliRunner

from lungct.cli import main
from lungct.errors import LungctError
from lungct.io import load_scan
from lungct.ct.postprocess import fill_holes, gas_outside_lungs, keep_main_components, postprocess, restrict_to_roi
from conftest import LABELS, SPACING
from phantoms import dice, make_phantom, orientations, write_dicom_series, write_itk, write_nifti

@pytest.fixture(scope="session")
def segmenter(model_2d):
    from lungct.ct.segmenter import CTSegmenter

    return CTSegmenter.load(model_2d, device="cpu")


@pytest.fixture(scope="session")
def phantoms():
    return orientations(make_phantom((96, 96, 48), (SPACING, SPACING, 3.5), seed=3))


def infer(*args):
    return CliRunner().invoke(main, ["infer", *map(str, args), "--quiet"])


# ------------------------------------------------------------------------------------------ geometry


def test_masks_keep_the_exact_geometry_of_every_orientation_and_left_stays_left(tmp_path, model_2d, phantoms):
    for name, phantom in phantoms.items():
        write_nifti(phantom, tmp_path / "in" / f"{name}.nii.gz")
    result = infer(tmp_path / "in", "-o", tmp_path / "out", "--model", model_2d)
    assert result.exit_code == 0, result.output
    for name, phantom in phantoms.items():
        source, mask = nib.load(tmp_path / "in" / f"{name}.nii.gz"), nib.load(tmp_path / "out" / f"{name}.nii.gz")
        assert mask.shape == source.shape, name
        assert np.array_equal(mask.affine, source.affine), name
        assert np.array_equal(mask.header.get_sform(), source.header.get_sform()), name
        assert np.array_equal(mask.header.get_qform(), source.header.get_qform()), name
        assert mask.get_data_dtype() == np.uint8
        labels = np.asarray(mask.dataobj)
        # The tiny test network saw only axis-aligned phantoms: on the 15-degree oblique one its probability
        # is fuzzy over a wide margin, which the HU refinement then follows into nearby air.
        floor = 0.65 if name == "oblique" else 0.9
        for value, other in ((1, 2), (2, 1)):  # right lung where the right lung is, never swapped
            assert dice(labels == value, phantom.lungs == value) > floor, name
            assert dice(labels == value, phantom.lungs == other) < 0.05, name


def test_dicom_and_nrrd_inputs_get_masks_on_their_own_grid(tmp_path, model_2d, phantoms):
    phantom = phantoms["LPS"]
    write_dicom_series(phantom, tmp_path / "series")
    write_itk(phantoms["oblique"], tmp_path / "oblique.nrrd")
    for source, out, truth in ((tmp_path / "series", tmp_path / "dicom.nii.gz", phantom),
                               (tmp_path / "oblique.nrrd", tmp_path / "nrrd.nii.gz", phantoms["oblique"])):
        result = infer(source, "-o", out, "--model", model_2d)
        assert result.exit_code == 0, result.output
        scan, mask = load_scan(source), nib.load(out)
        assert mask.shape == scan.array.shape
        np.testing.assert_allclose(mask.affine, scan.affine, atol=1e-4)
        assert dice(np.asarray(mask.dataobj) == 1, truth.lungs == 1) > (0.65 if truth.name == "oblique" else 0.9)


def test_anisotropic_scan_volumes_in_the_sidecar_match_the_truth(tmp_path, model_2d, phantoms):
    phantom = phantoms["anisotropic"]
    write_nifti(phantom, tmp_path / "scan.nii.gz")
    result = infer(tmp_path / "scan.nii.gz", "-o", tmp_path / "mask.nii.gz", "--model", model_2d, "--preview")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "mask.json").read_text())
    voxel_ml = float(np.prod(phantom.spacing)) / 1000
    for label, name in ((1, "right_lung"), (2, "left_lung")):
        assert record["volumes_ml"][name] == pytest.approx((phantom.lungs == label).sum() * voxel_ml, rel=0.1)
    assert record["labels"] == LABELS
    assert record["input"]["spacing_mm"] == pytest.approx(list(phantom.spacing))
    assert set(record["timings_s"]) >= {"read", "preprocess", "network", "postprocess", "write", "total"}
    assert record["model"]["path"] == str(model_2d) and record["model"]["dim"] == 2
    assert isinstance(record["warnings"], list) and record["hu_calibration"]["status"] == "ok"
    assert (tmp_path / "mask-preview.png").stat().st_size > 1000


def test_3d_model_runs_through_the_sliding_window_and_keeps_geometry(tmp_path, model_3d, phantoms):
    phantom = phantoms["oblique"]
    write_nifti(phantom, tmp_path / "scan.nii.gz")
    result = infer(tmp_path / "scan.nii.gz", "-o", tmp_path / "mask.nii.gz", "--model", model_3d, "--tta",
                   "--sw-batch-size", "2")
    assert result.exit_code == 0, result.output
    source, mask = nib.load(tmp_path / "scan.nii.gz"), nib.load(tmp_path / "mask.nii.gz")
    assert mask.shape == source.shape and np.array_equal(mask.affine, source.affine)
    record = json.loads((tmp_path / "mask.json").read_text())
    assert record["inference"]["overlap"] == 0.5 and record["inference"]["tta"] is True


# ------------------------------------------------------------------------------------- behaviour


def test_repeated_runs_give_identical_masks(segmenter, phantoms, model_2d):
    from lungct.ct.segmenter import CTSegmenter

    scan = load_scan_from(phantoms["flipped"])
    first = segmenter.segment(scan).labels
    assert np.array_equal(first, segmenter.segment(scan).labels)
    assert np.array_equal(first, CTSegmenter.load(model_2d, device="cpu").segment(scan).labels)


def load_scan_from(phantom):
    from lungct.io import Scan

    return Scan(phantom.name, phantom.array.astype(np.float32), phantom.affine, [], "memory")


def test_a_single_axial_slice_is_segmented(tmp_path, model_2d):
    phantom = make_phantom((96, 96, 1), (SPACING, SPACING, 5.0), seed=4)
    write_nifti(phantom, tmp_path / "slice.nii.gz")
    result = infer(tmp_path / "slice.nii.gz", "-o", tmp_path / "mask.nii.gz", "--model", model_2d)
    assert result.exit_code == 0, result.output
    mask = nib.load(tmp_path / "mask.nii.gz")
    assert mask.shape == (96, 96, 1)
    labels = np.asarray(mask.dataobj)
    assert dice(labels == 1, phantom.lungs == 1) > 0.9 and dice(labels == 2, phantom.lungs == 2) > 0.9


def test_batch_with_a_corrupt_file_does_the_others_reports_it_and_resumes(tmp_path, model_2d, phantoms):
    scans = tmp_path / "scans"
    write_nifti(phantoms["RAS"], scans / "a.nii.gz")
    write_nifti(phantoms["LPS"], scans / "b.nii.gz")
    (scans / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    result = infer(scans, "-o", tmp_path / "masks", "--model", model_2d)
    assert result.exit_code == 1
    failed = [line for line in result.output.splitlines() if line.startswith("FAILED")]
    assert len(failed) == 1 and failed[0].startswith(f"FAILED {scans / 'broken.nii.gz'}: ")
    assert "2 done, 0 skipped (already done), 1 failed" in result.output
    for case in ("a", "b"):
        assert (tmp_path / "masks" / f"{case}.nii.gz").is_file() and (tmp_path / "masks" / f"{case}.json").is_file()
    assert not [p for p in (tmp_path / "masks").iterdir() if p.name.startswith(".") or p.name == "broken.nii.gz"]
    failure = json.loads((tmp_path / "masks" / "broken.json").read_text())  # the QC page lists it
    assert failure["status"] == "failed" and failure["reason"] == failed[0][len("FAILED "):]
    assert (tmp_path / "masks" / "report.html").is_file()
    before = (tmp_path / "masks" / "a.nii.gz").stat().st_mtime_ns
    again = infer(scans, "-o", tmp_path / "masks", "--model", model_2d)
    assert again.exit_code == 1 and "0 done, 2 skipped (already done), 1 failed" in again.output
    assert (tmp_path / "masks" / "a.nii.gz").stat().st_mtime_ns == before


def test_binary_merges_the_labels(tmp_path, model_2d, phantoms):
    write_nifti(phantoms["RAS"], tmp_path / "scan.nii.gz")
    assert infer(tmp_path / "scan.nii.gz", "-o", tmp_path / "lr.nii.gz", "--model", model_2d).exit_code == 0
    result = infer(tmp_path / "scan.nii.gz", "-o", tmp_path / "one.nii.gz", "--model", model_2d, "--binary")
    assert result.exit_code == 0, result.output
    both = np.asarray(nib.load(tmp_path / "lr.nii.gz").dataobj)
    one = np.asarray(nib.load(tmp_path / "one.nii.gz").dataobj)
    assert set(np.unique(one)) == {0, 1} and np.array_equal(one, (both > 0).astype(np.uint8))
    record = json.loads((tmp_path / "one.json").read_text())
    assert record["labels"] == {"background": 0, "lungs": 1} and set(record["volumes_ml"]) == {"lungs", "total"}


def test_existing_output_is_not_overwritten_without_overwrite(tmp_path, model_2d, phantoms):
    write_nifti(phantoms["RAS"], tmp_path / "scan.nii.gz")
    (tmp_path / "mask.nii.gz").write_bytes(b"precious")
    result = infer(tmp_path / "scan.nii.gz", "-o", tmp_path / "mask.nii.gz", "--model", model_2d)
    assert result.exit_code == 1 and "exists already (use --overwrite to replace it)" in result.output
    assert (tmp_path / "mask.nii.gz").read_bytes() == b"precious"
    assert infer(tmp_path / "scan.nii.gz", "-o", tmp_path / "mask.nii.gz", "--model", model_2d,
                 "--overwrite").exit_code == 0
    assert nib.load(tmp_path / "mask.nii.gz").shape == phantoms["RAS"].array.shape


# ---------------------------------------------------------------------------------------- models


def test_model_lookup_by_path_name_and_latest(tmp_path, monkeypatch, model_2d):
    from lungct.models import resolve_model

    assert resolve_model(str(model_2d)) == model_2d
    with pytest.raises(LungctError, match="no such checkpoint file or shipped model"):
        resolve_model("no-such-model")
    monkeypatch.setenv("LUNGCT_WORKDIR", str(tmp_path))
    with pytest.raises(LungctError, match="needs `lungct train` first"):
        resolve_model("latest")
    for run, age in (("old", 100), ("new", 0)):
        best = tmp_path / "runs" / run / "best.pt"
        best.parent.mkdir(parents=True)
        best.write_bytes(model_2d.read_bytes())
        os.utime(best, (time.time() - age, time.time() - age))
    assert resolve_model("latest") == tmp_path / "runs" / "new" / "best.pt"


def test_cpu_bf16_autocast_gives_nearly_the_same_mask(segmenter, model_2d, phantoms):
    from lungct.ct.segmenter import CTSegmenter

    scan = load_scan_from(phantoms["RAS"])
    fp32 = CTSegmenter.load(model_2d, device="cpu", precision="fp32").segment(scan).labels
    bf16 = CTSegmenter.load(model_2d, device="cpu", precision="bf16").segment(scan).labels
    assert dice(bf16 == 1, fp32 == 1) > 0.98 and dice(bf16 == 2, fp32 == 2) > 0.98


# ------------------------------------------------------------------------------------- clean-up


def test_postprocess_drops_specks_keeps_a_large_second_part_and_fills_holes():
    labels = np.zeros((40, 40, 20), np.uint8)
    labels[2:15, 2:38, 2:10] = 1  # main part of label 1
    labels[2:15, 2:38, 12:18] = 1  # a second part, 6/8 of its size: kept
    labels[36:38, 36:38, 5:6] = 1  # a speck outside label 2: dropped
    labels[20:38, 5:35, 2:18] = 2
    labels[25:30, 15:20, 8] = 0  # a hole inside label 2 on one slice: filled
    kept, counts = keep_main_components(labels, [1, 2], 0.1)
    assert counts == {1: 2, 2: 1}
    cleaned = fill_holes(kept, [1, 2])
    assert cleaned[2:15, 2:38, 12:18].all() and cleaned[2:15, 2:38, 2:10].all()
    assert (cleaned[36:38, 36:38, 5] == 0).all()
    assert (cleaned[25:30, 15:20, 8] == 2).all()
    roi = np.zeros(labels.shape, bool)
    roi[:20] = True
    assert not restrict_to_roi(cleaned, roi)[20:].any()


def test_stomach_gas_labelled_as_lung_is_dropped_and_a_bulla_in_the_lung_is_not():
    """imlab-id002's error: a 2D network labelled the fundus gas under the left lung, and the diaphragm
    between, as left lung. Dropped: the gas, pure air apart from the lung's air and outside its outline. Kept:
    a 30 mm bulla (pure air inside the right lung) and every lung voxel; on a single slice nothing."""
    ph = make_phantom((96, 96, 60), (3.0, 3.0, 3.0), stomach_gas=True, seed=5)
    hu = ph.array.astype(np.float32)
    world = np.moveaxis(np.indices(hu.shape), 0, -1) @ ph.affine[:3, :3].T + ph.affine[:3, 3]
    right = np.argwhere(ph.lungs == 1)
    bulla = np.linalg.norm(world - world[tuple(right[len(right) // 2])], axis=-1) <= 15
    bulla &= ph.lungs == 1
    hu[bulla] = -1000.0
    bridge = ndi.binary_dilation(ph.gas, iterations=2) & ndi.binary_dilation(ph.lungs == 2, iterations=2)
    bridge = (bridge | ndi.binary_dilation(ph.gas)) & (ph.lungs == 0)  # the diaphragm between, the gas's rim
    network = np.where(ph.gas | bridge, 2, ph.lungs).astype(np.uint8)
    assert network[ph.gas].all() and bulla.sum() * 27 / 1000 > 5  # mL: big enough to be judged
    gas = gas_outside_lungs(network, [1, 2], hu, ph.affine)
    assert gas[ph.gas].all() and not gas[ph.lungs > 0].any() and not gas[bulla].any()
    cleaned, _ = postprocess(network, [1, 2], hu=hu, affine=ph.affine)
    assert not cleaned[ph.gas].any()
    assert (cleaned[ph.lungs > 0] == ph.lungs[ph.lungs > 0]).all()
    assert dice(cleaned > 0, ph.lungs > 0) > 0.99
    k = int(np.argwhere(ph.gas)[0][2])
    assert not gas_outside_lungs(network[:, :, k:k + 1], [1, 2], hu[:, :, k:k + 1], ph.affine).any()
    unchanged, _ = postprocess(network, [1, 2])  # without HU: as before
    assert unchanged[ph.gas].all()
