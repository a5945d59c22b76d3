"""Metrics against values known in closed form, and `lungct evaluate` end to end on small files."""
from __future__ import annotations

import csv
import math

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from lungct.cli import main
from lungct.metrics import compare, compare_labels, summarise, surface_distances


def affine_for(spacing, origin=(0.0, 0.0, 0.0)):
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = origin
    return affine


def cube(shape, start, size):
    mask = np.zeros(shape, bool)
    mask[tuple(slice(s, s + size) for s in start)] = True
    return mask


@pytest.mark.parametrize("axis,spacing", [(0, (1.0, 1.0, 1.0)), (0, (2.0, 1.0, 1.0)), (2, (0.7, 0.7, 2.5))])
def test_offset_cubes_have_the_known_dice_iou_and_hd95(axis, spacing):
    n, k = 20, 3
    start = [10, 10, 10]
    moved = list(start)
    moved[axis] += k
    ref, pred = cube((40, 40, 40), start, n), cube((40, 40, 40), moved, n)
    row = compare(pred, ref, affine_for(spacing))
    assert row["dice"] == pytest.approx((n - k) / n)
    assert row["iou"] == pytest.approx((n - k) / (n + k))
    assert row["hd95_mm"] == pytest.approx(k * spacing[axis])  # the end faces are 1/6 of the surface
    assert 0 < row["assd_mm"] < k * spacing[axis]
    assert row["volume_diff_ml"] == pytest.approx(0.0)
    assert row["ref_ml"] == pytest.approx(n**3 * np.prod(spacing) / 1000)


def sphere(shape, spacing, radius_mm):
    grids = np.meshgrid(*[(np.arange(n) - (n - 1) / 2) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum(g**2 for g in grids) <= radius_mm**2


def test_concentric_spheres_on_an_anisotropic_grid_measure_in_millimetres():
    spacing, shape = (0.8, 0.8, 2.0), (80, 80, 32)
    inner, outer = sphere(shape, spacing, 20.0), sphere(shape, spacing, 24.0)
    row = compare(inner, outer, affine_for(spacing))
    assert row["dice"] == pytest.approx(2 * 20**3 / (20**3 + 24**3), abs=0.02)
    assert row["ref_ml"] == pytest.approx(4 / 3 * math.pi * 24**3 / 1000, rel=0.02)
    assert row["pred_ml"] == pytest.approx(4 / 3 * math.pi * 20**3 / 1000, rel=0.02)
    # Surface voxels sit up to half a voxel inside each sphere: distances are 4 mm give or take that.
    assert row["assd_mm"] == pytest.approx(4.0, abs=0.5)
    assert row["hd95_mm"] == pytest.approx(4.0, abs=1.0)


def test_empty_masks_agree_and_one_empty_mask_has_no_distance():
    empty, full = np.zeros((20, 20, 20), bool), cube((20, 20, 20), (5, 5, 5), 5)
    assert compare(empty, empty, np.eye(4))["dice"] == 1.0
    assert surface_distances(empty, empty, (1, 1, 1)) == {"hd95_mm": 0.0, "assd_mm": 0.0}
    row = compare(empty, full, np.eye(4))
    assert row["dice"] == 0.0 and math.isnan(row["hd95_mm"]) and math.isnan(row["assd_mm"])


def test_a_single_slice_is_measured_in_its_own_plane():
    ref = np.zeros((40, 40, 1), bool)
    pred = ref.copy()
    ref[10:30, 10:30] = True
    pred[12:32, 10:30] = True
    row = compare(pred, ref, affine_for((0.5, 0.5, 5.0)))
    assert row["dice"] == pytest.approx(18 / 20)
    assert row["hd95_mm"] == pytest.approx(1.0)  # 2 pixels of 0.5 mm, whatever the slice thickness


def test_multi_label_references_are_also_measured_per_label():
    ref = np.zeros((30, 30, 30), np.uint8)
    ref[2:12, 5:25, 5:25] = 1
    ref[18:28, 5:25, 5:25] = 2
    swapped = np.where(ref == 1, 2, np.where(ref == 2, 1, 0)).astype(np.uint8)
    rows = {r["label"]: r for r in compare_labels(swapped, ref, np.eye(4))}
    assert set(rows) == {"1", "2", "all"}
    assert rows["1"]["dice"] == 0.0 and rows["2"]["dice"] == 0.0 and rows["all"]["dice"] == 1.0
    binary_rows = compare_labels(ref, (ref > 0).astype(np.uint8), np.eye(4))
    assert [r["label"] for r in binary_rows] == ["all"] and binary_rows[0]["dice"] == 1.0


def test_summary_gives_mean_sd_min_max_and_skips_undefined_values():
    rows = [{"label": "all", "dice": d, "hd95_mm": h} for d, h in [(0.9, 1.0), (0.8, math.nan), (1.0, 3.0)]]
    stats = {s["metric"]: s for s in summarise(rows, fields=("dice", "hd95_mm"))}
    assert stats["dice"]["mean"] == pytest.approx(0.9) and stats["dice"]["sd"] == pytest.approx(0.1)
    assert (stats["dice"]["min"], stats["dice"]["max"], stats["dice"]["n"]) == (0.8, 1.0, 3)
    assert stats["hd95_mm"]["n"] == 2 and stats["hd95_mm"]["mean"] == pytest.approx(2.0)


# ------------------------------------------------------------------------------------------ CLI


def save(path, array, affine):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.uint8), affine), str(path))
    return path


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_evaluate_matches_folders_by_case_name_and_writes_csv_and_summary(tmp_path):
    ref = cube((30, 30, 30), (5, 5, 5), 20)
    shifted = cube((30, 30, 30), (7, 5, 5), 20)
    affine = affine_for((1.5, 1.5, 2.0))
    save(tmp_path / "pred" / "a.nii.gz", ref, affine)
    save(tmp_path / "pred" / "b.nii.gz", shifted, affine)
    save(tmp_path / "pred" / "only-pred.nii.gz", ref, affine)
    save(tmp_path / "ref" / "a.nii.gz", ref, affine)
    save(tmp_path / "ref" / "b" / "lungs.nii.gz", ref, affine)  # a prep-style case folder
    out = tmp_path / "metrics.csv"
    result = CliRunner().invoke(main, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(out),
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    rows = {r["case"]: r for r in read_csv(out)}
    assert set(rows) == {"a", "b"}
    assert float(rows["a"]["dice"]) == 1.0
    assert float(rows["b"]["dice"]) == pytest.approx(18 / 20)
    assert float(rows["b"]["hd95_mm"]) == pytest.approx(3.0)
    summary = {s["metric"]: s for s in read_csv(tmp_path / "metrics-summary.csv")}
    assert float(summary["dice"]["mean"]) == pytest.approx(0.95)
    assert float(summary["dice"]["min"]) == pytest.approx(0.9) and float(summary["dice"]["max"]) == 1.0
    assert "1 prediction(s) have no reference: only-pred" in result.output
    again = CliRunner().invoke(main, ["evaluate", str(tmp_path / "pred"), str(tmp_path / "ref"), "-o", str(out)])
    assert again.exit_code == 1 and "exists already" in again.output


def test_evaluate_refuses_a_different_grid_unless_resample(tmp_path):
    ref = cube((30, 30, 30), (5, 5, 5), 20)
    ras = affine_for((1.0, 1.0, 1.0))
    # The same voxels stored left-right flipped (an LPS-like layout): same world, different grid.
    flipped = ras @ np.array([[-1, 0, 0, 29], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], float)
    pred = save(tmp_path / "pred.nii.gz", ref[::-1], flipped)
    reference = save(tmp_path / "ref.nii.gz", ref, ras)
    refused = CliRunner().invoke(main, ["evaluate", str(pred), str(reference), "-o", str(tmp_path / "m.csv")])
    assert refused.exit_code == 1
    assert f"{pred}: geometry differs from the reference {reference}: direction LAS vs RAS" in refused.output
    assert not (tmp_path / "m.csv").exists()
    ok = CliRunner().invoke(main, ["evaluate", str(pred), str(reference), "-o", str(tmp_path / "m.csv"), "--resample"])
    assert ok.exit_code == 0, ok.output
    row = read_csv(tmp_path / "m.csv")[0]
    assert float(row["dice"]) == 1.0 and row["resampled"] == "True"


def test_mask_folder_prefers_the_volume_over_its_preview_picture(tmp_path):
    from lungct.evaluate import mask_files

    for name in ("scan.nii.gz", "scan.png", "scan.json", "cxr.png", "cxr-labels.png", "cxr-preview.png"):
        (tmp_path / name).write_bytes(b"x")
    assert {k: v.name for k, v in mask_files(tmp_path).items()} == {"scan": "scan.nii.gz", "cxr": "cxr.png"}
