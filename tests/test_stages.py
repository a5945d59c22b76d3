"""The NSCLC pipeline's stages and the speed paths: labels drawn on original scans carried through
preprocessing, the tumour model joined to the lungs, the lung ROI on a coarse grid, one case prepared
ahead of the next, and the ONNX export."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from lungct.cli import main
from phantoms import dice, make_phantom, orientations, write_nifti


def run(*args):
    return CliRunner().invoke(main, [*map(str, args)])


@pytest.fixture(scope="module")
def tumour_scans(tmp_path_factory):
    """A tumour phantom stored in four orientations (flipped, permuted, oblique), with its tumour label."""
    root = tmp_path_factory.mktemp("tumours")
    base = make_phantom((80, 80, 40), (3.5, 3.5, 3.5), seed=12, tumour=True)
    for name, phantom in orientations(base).items():
        if name in ("RAS", "flipped", "permuted", "oblique"):
            write_nifti(phantom, root / "scans" / f"{name}.nii.gz")
            write_nifti(phantom.tumour.astype(np.uint8), root / "labels" / f"{name}.nii.gz", phantom.affine)
    return root


def test_labels_on_the_original_scans_are_carried_exactly_onto_the_preprocessed_grid(tumour_scans, tmp_path):
    from lungct.data import load_prep_cases
    from lungct.geometry import labels_to_grid

    prep = tmp_path / "prep"
    result = run("preprocess", tumour_scans / "scans", "-o", prep, "--set", "Resampled.spacing_mm=3", "--quiet")
    assert result.exit_code == 0, result.output
    cases, _ = load_prep_cases(prep, tumour_scans / "labels", {0, 1})
    for case in cases:
        native = nib.load(tumour_scans / "labels" / f"{case.name}.nii.gz")
        expected = labels_to_grid(np.asarray(native.dataobj), native.affine, case.image.shape, case.affine)
        assert np.array_equal(case.labels, expected), case.name  # nearest neighbour, the image's own grid
        assert case.reference == tumour_scans / "labels" / f"{case.name}.nii.gz" and case.source.exists()
        assert case.labels.sum() > 50 and case.roi_slices.any()
    # the same tumour lands on the same world positions whatever the storage order
    world = {c.name: (c.affine[:3, :3] @ np.argwhere(c.labels).mean(0) + c.affine[:3, 3]) for c in cases}
    for name, centre in world.items():
        assert np.abs(centre - world["RAS"]).max() < 3.5, name


def test_training_data_keeps_to_the_roi_slices_and_masks_outside_it(tumour_scans, tmp_path):
    from lungct.recipes import load_recipe
    from lungct.sampling import SliceSampler
    from lungct.training import training_data

    recipe = load_recipe("train-2d-tumour", {"Resampled.spacing_mm": 3.5, "data.validation_fraction": 0.25})
    train, validation, chain = training_data(recipe, None, tumour_scans / "scans", tumour_scans / "labels", False)
    assert [s["name"] for s in chain][2:4] == ["LungROId", "MaskOutsideROId"]
    for case in train:  # outside the ROI the network sees air, HU -1000 windowed
        outside = ~np.repeat(case.roi_slices[None, None], case.image.shape[0], 0).repeat(case.image.shape[1], 1)
        assert np.allclose(case.image[outside], (1024 - 1000) / 1624, atol=1e-4)
    sampler = SliceSampler(train, [64, 64], 0.5, 40, roi_slices_only=True)
    assert all(train[i].roi_slices[z] for i, z in sampler.negatives) and sampler.negatives


def test_lungs_and_tumour_in_one_label_map_with_each_tumour_measured(tmp_path, model_2d, tumour_model_2d):
    phantom = make_phantom((96, 96, 48), (3.0, 3.0, 3.5), seed=13, tumour=True)
    write_nifti(phantom, tmp_path / "scan.nii.gz")
    result = run("infer", tmp_path / "scan.nii.gz", "-o", tmp_path / "m.nii.gz", "--model", model_2d,
                 "--model", tumour_model_2d, "--quiet")
    assert result.exit_code == 0, result.output
    labels = np.asarray(nib.load(tmp_path / "m.nii.gz").dataobj)
    record = json.loads((tmp_path / "m.json").read_text())
    assert record["labels"] == {"background": 0, "right_lung": 1, "left_lung": 2, "tumour": 3}
    assert dice(labels == 3, phantom.tumour) > 0.7 and dice(labels == 1, phantom.lungs == 1) > 0.85
    from lungct.ct.tumours import describe_tumours

    assert record["tumours"] == describe_tumours(labels == 3, phantom.affine)  # each tumour of the written map
    (largest, *_), (truth, *_) = record["tumours"], describe_tumours(phantom.tumour, phantom.affine)
    assert largest["volume_ml"] == pytest.approx(truth["volume_ml"], rel=0.3)
    assert np.abs(np.array(largest["centroid_mm"]) - truth["centroid_mm"]).max() < 10
    assert record["volumes_ml"]["tumour"] == pytest.approx(largest["volume_ml"], rel=0.05)


def test_describe_tumours_on_known_shapes():
    from lungct.ct.tumours import describe_tumours

    mask = np.zeros((40, 40, 20), bool)
    mask[5:15, 5:10, 2:4] = True  # a box 10 x 5 x 2 voxels
    mask[30:31, 30:31, 10:11] = True  # a single voxel
    affine = np.diag([2.0, 1.0, 3.0, 1.0])
    box, dot = describe_tumours(mask, affine)
    assert box["volume_ml"] == pytest.approx(100 * 6 / 1000) and dot["volume_ml"] == pytest.approx(0.006)
    assert box["largest_diameter_mm"] == pytest.approx(np.sqrt(18 ** 2 + 4 ** 2 + 3 ** 2), abs=0.1)
    assert box["centroid_mm"] == pytest.approx([19.0, 7.0, 7.5]) and dot["largest_diameter_mm"] == 0


def test_lung_roi_on_a_coarse_copy_matches_the_full_chain(phantom):
    from lungct.ct.preprocess import preprocess_scan
    from lungct.io import Scan
    from lungct.recipes import load_recipe

    scan = Scan("p", phantom.array.astype(np.float32), phantom.affine, [], "memory")
    full = preprocess_scan(scan, load_recipe("preprocess", {"Resampled.spacing_mm": 1.5}))
    coarse = load_recipe("preprocess", {"Resampled.spacing_mm": 1.5})
    coarse["transforms"] = [s for s in coarse["transforms"] if s["name"] not in ("BodyMaskd", "LungMaskd", "MirrorROId")]
    coarse["transforms"].insert(2, {"name": "LungROId", "args": {"spacing_mm": 3.0}})
    fast = preprocess_scan(scan, coarse)
    assert dice(fast.roi > 0, full.roi > 0) > 0.9 and not fast.lungs.any()  # a margin drawn on 3 mm voxels
    assert (fast.roi > 0)[full.lungs > 0].mean() > 0.999  # the coarse ROI still holds every lung voxel


def test_a_batch_prepared_one_case_ahead_gives_the_same_masks(tmp_path, model_2d):
    scans = tmp_path / "scans"
    for seed in (14, 15, 16):
        write_nifti(make_phantom((64, 64, 24), (4.0, 4.0, 5.0), seed=seed), scans / f"c{seed}.nii.gz")
    assert run("infer", scans, "-o", tmp_path / "batch", "--model", model_2d, "--quiet").exit_code == 0
    for seed in (14, 15, 16):  # one at a time: nothing prepared ahead
        out = tmp_path / f"one{seed}.nii.gz"
        assert run("infer", scans / f"c{seed}.nii.gz", "-o", out, "--model", model_2d, "--quiet").exit_code == 0
        together = np.asarray(nib.load(tmp_path / "batch" / f"c{seed}.nii.gz").dataobj)
        assert np.array_equal(together, np.asarray(nib.load(out).dataobj))


def test_onnx_export_matches_pytorch(tmp_path, model_2d, model_3d):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (extra 'onnx')")
    for model in (model_2d, model_3d):
        out = tmp_path / f"{model.stem}.onnx"
        result = run("export", "--model", model, "-o", out)
        assert result.exit_code == 0 and "ONNX Runtime matches PyTorch" in result.output, result.output
        meta = json.loads(out.with_name(out.name + ".json").read_text())
        assert meta["input"]["chain"] and meta["labels"]["right_lung"] == 1
    assert run("export", "--model", model_2d, "-o", out).exit_code == 1  # exists: not overwritten
