"""Lung densitometry: exact numbers on phantoms whose HU distributions are known, whatever the storage order.

Expected values come from hand counts or from plain numpy on explicitly selected voxels (np.percentile with
method="inverted_cdf", world coordinates by matrix product), never from the module's own histograms.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from lungct.ct.densitometry import (COLUMNS, PERCENTILES, REGIONS, densitometry_checks, lung_statistics,
                                    save_histogram_plot, sharp_kernel, write_statistics_csv)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPACING = (2.0, 2.0, 2.5)  # mm: voxel = 10 mm^3 = 0.01 mL
VOXEL_ML = 0.01
RIGHT = (slice(2, 6), slice(3, 8), slice(2, 11))  # 4 x 5 x 9 = 180 voxels
LEFT = (slice(9, 12), slice(4, 8), slice(4, 10))  # 3 x 4 x 6 = 72 voxels
LEFT_VALUES = {-250: 2, -600: 2, -856: 2, -1150: 2, 1500: 1, -249: 1, -601: 1, -1000: 61}


def phantom():
    """int16 HU, uint8 labels and a RAS affine; the right lung's values are laid out per slice (see test)."""
    shape = (14, 12, 14)
    hu = np.full(shape, -1000, np.int16)
    hu[:, :, :2] = 2000  # bone-like and padding values outside the lungs must not count
    hu[0] = -2048
    labels = np.zeros(shape, np.uint8)
    labels[RIGHT], labels[LEFT] = 1, 2
    labels[12, 1, 5] = 3  # e.g. trachea: not a listed lung
    right = np.full((4, 5, 9), -950, np.int16)
    right[2:4, 0:3, :] = -850  # 6 per slice
    right[0:2, 0:3, 6:9] = -960  # 6 per slice in the three most superior slices
    right[0, 4, :] = 40  # dense, anterior row
    right[1, 4, :] = -500  # high attenuation, anterior row
    hu[RIGHT] = right
    hu[LEFT] = np.repeat(np.array(list(LEFT_VALUES), np.int16), list(LEFT_VALUES.values())).reshape(3, 4, 6)
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = (-101.0, 37.5, -260.25)
    return hu, labels, affine


def reference(values, voxel_ml=VOXEL_ML) -> dict:
    """Plain numpy, one voxel list: what every row must equal."""
    v = np.asarray(values, dtype=np.float64)
    n = v.size
    out = {"voxels": n, "volume_ml": n * voxel_ml, "mass_g": np.clip(v + 1000, 0, None).sum() / 1000 * voxel_ml,
           "dense_ml": (v > -250).sum() * voxel_ml, "aerated_ml": (v <= -250).sum() * voxel_ml}
    if n == 0:
        return {c: out.get(c, math.nan) for c in COLUMNS}
    out.update(mean_hu=v.mean(), sd_hu=v.std(), laa950_pct=100 * (v < -950).mean(),
               laa910_pct=100 * (v < -910).mean(), laa856_pct=100 * (v < -856).mean(),
               haa_pct=100 * ((v >= -600) & (v <= -250)).mean())
    for q in PERCENTILES:
        out[f"perc{q}_hu"] = float(np.floor(np.percentile(v, q, method="inverted_cdf")))
    return out


def region_voxels(labels, affine, values) -> dict:
    """Index arrays per region: thirds/halves of the world z/y extent of voxel centres (ties upward)."""
    ijk = np.argwhere(np.isin(labels, values))
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    out = {"whole": np.ones(len(ijk), bool)}
    if len(ijk):
        at_least = lambda c, q: c >= c.min() + (c.max() - c.min()) * q - 1e-6  # noqa: E731
        z, y = world[:, 2], world[:, 1]
        out.update(upper=at_least(z, 2 / 3), middle=at_least(z, 1 / 3) & ~at_least(z, 2 / 3),
                   lower=~at_least(z, 1 / 3), anterior=at_least(y, 0.5), posterior=~at_least(y, 0.5))
    return {r: tuple(ijk[out.get(r, np.zeros(len(ijk), bool))].T) for r in REGIONS}


def assert_row(row, expected, rel=1e-9):
    for c in COLUMNS:
        got, want = row[c], expected[c]
        if isinstance(want, float) and math.isnan(want):
            assert math.isnan(got), (row["lung"], row["region"], c, got)
        else:
            assert got == pytest.approx(want, rel=rel, abs=1e-9), (row["lung"], row["region"], c, got, want)


def assert_matches_reference(stats, hu, labels, affine, voxel_ml=VOXEL_ML):
    for name, values in (("right_lung", [1]), ("left_lung", [2]), ("both", [1, 2])):
        for region, idx in region_voxels(labels, affine, values).items():
            assert_row(stats.row(name, region), reference(hu[idx], voxel_ml))


# -------------------------------------------------------------------------------------------- exact numbers


def test_box_phantom_gives_every_number_exactly():
    hu, labels, affine = phantom()
    stats = lung_statistics(hu, labels, affine)
    right = stats.row("right_lung")
    # 18 x -960, 90 x -950, 54 x -850, 9 x -500, 9 x 40 HU
    assert right["voxels"] == 180
    assert right["volume_ml"] == pytest.approx(1.8)
    assert right["mass_g"] == pytest.approx(0.2718)  # sum(HU + 1000) = 27180 -> 27.18 g/mL-voxel x 0.01 mL
    assert right["mean_hu"] == -849.0
    assert right["sd_hu"] == pytest.approx(math.sqrt(51939.0), rel=1e-12)
    assert right["laa950_pct"] == pytest.approx(10.0)  # -950 itself is not below -950
    assert right["laa910_pct"] == pytest.approx(60.0)
    assert right["laa856_pct"] == pytest.approx(60.0)
    assert right["haa_pct"] == pytest.approx(5.0)
    assert right["dense_ml"] == pytest.approx(0.09) and right["aerated_ml"] == pytest.approx(1.71)
    assert [right[f"perc{q}_hu"] for q in PERCENTILES] == [-960, -960, -950, -950, -950, -850, -850, -500]
    left = stats.row("left_lung")
    assert left["voxels"] == 72
    assert left["haa_pct"] == pytest.approx(100 * 4 / 72)  # -600 and -250 are inside, -601 and -249 not
    assert left["dense_ml"] == pytest.approx(0.02)  # -249 and 1500
    assert left["laa856_pct"] == pytest.approx(100 * 63 / 72)  # -856 itself is not below -856
    assert (left["perc5_hu"], left["perc90_hu"], left["perc95_hu"]) == (-1000, -856, -250)
    assert left["mean_hu"] == pytest.approx(sum(k * v for k, v in LEFT_VALUES.items()) / 72, rel=1e-15)
    assert stats.row("both")["voxels"] == 252
    assert_matches_reference(stats, hu, labels, affine)


def test_regions_get_exactly_the_expected_voxels():
    hu, labels, affine = phantom()
    stats = lung_statistics(hu, labels, affine)
    counts = {r: stats.row("right_lung", r)["voxels"] for r in REGIONS}
    assert counts == {"whole": 180, "upper": 60, "middle": 60, "lower": 60, "anterior": 108, "posterior": 72}
    assert stats.row("right_lung", "upper")["laa950_pct"] == pytest.approx(30.0)  # all -960 voxels are superior
    assert stats.row("right_lung", "lower")["laa950_pct"] == 0.0
    assert stats.row("right_lung", "anterior")["dense_ml"] == pytest.approx(0.09)
    assert stats.row("right_lung", "posterior")["dense_ml"] == 0.0
    left = {r: stats.row("left_lung", r)["voxels"] for r in REGIONS}  # 6 slices, 4 rows
    assert left == {"whole": 72, "upper": 24, "middle": 24, "lower": 24, "anterior": 36, "posterior": 36}
    # "both" uses the union's extent: z slices 2..10, so the left lung (4..9) has 1 slice low, 2 high
    both = {r: stats.row("both", r)["voxels"] for r in ("upper", "middle", "lower")}
    assert both == {"upper": 60 + 24, "middle": 60 + 36, "lower": 60 + 12}


def test_histograms_are_kept_for_plots():
    hu, labels, affine = phantom()
    stats = lung_statistics(hu, labels, affine)
    right, left = stats.histograms["right_lung"], stats.histograms["left_lung"]
    assert right.total == 180 and right.counts[right.hu == -950][0] == 90
    assert left.below == 2 and left.above == 1 and left.total == 72
    assert stats.histograms["both"].total == 252


def flipped(hu, labels, affine, axis):
    f = np.eye(4)
    f[axis, axis], f[axis, 3] = -1.0, hu.shape[axis] - 1
    return np.flip(hu, axis), np.flip(labels, axis), affine @ f


def permuted(hu, labels, affine, order):
    return hu.transpose(order), labels.transpose(order), affine[:, [*order, 3]]


STORAGES = {
    "flip x": lambda h, l, a: flipped(h, l, a, 0),
    "flip z": lambda h, l, a: flipped(h, l, a, 2),
    "LPS-like (flip x, y)": lambda h, l, a: flipped(*flipped(h, l, a, 0), 1),
    "z first": lambda h, l, a: permuted(h, l, a, (2, 0, 1)),
    "permuted and flipped": lambda h, l, a: flipped(*permuted(h, l, a, (1, 2, 0)), 1),
    "Fortran order": lambda h, l, a: (np.asfortranarray(h), np.asfortranarray(l), a),
}


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_same_numbers_whatever_the_storage(storage, dtype):
    hu, labels, affine = phantom()
    expected = lung_statistics(hu, labels, affine).rows
    h, l, a = STORAGES[storage](hu, labels, affine)
    h = np.ascontiguousarray(h) if storage != "Fortran order" else h
    stats = lung_statistics(h.astype(dtype), np.ascontiguousarray(l) if storage != "Fortran order" else l, a)
    assert [(r["lung"], r["region"]) for r in stats.rows] == [(r["lung"], r["region"]) for r in expected]
    for got, want in zip(stats.rows, expected):
        assert_row(got, want, rel=1e-12)


def test_anisotropic_spacing_scales_only_the_volumes():
    hu, labels, affine = phantom()
    base = lung_statistics(hu, labels, affine)
    aniso = affine.copy()
    aniso[:3, :3] = np.diag([0.6, 0.75, 3.0])  # 1.35 mm^3
    stats = lung_statistics(hu, labels, aniso)
    assert stats.voxel_ml == pytest.approx(0.00135)
    for got, want in zip(stats.rows, base.rows):
        scaled = {c: want[c] * 0.135 if c.endswith(("_ml", "_g")) else want[c] for c in COLUMNS}
        assert_row(got, scaled, rel=1e-12)
    assert_matches_reference(stats, hu, labels, aniso, voxel_ml=0.00135)


def test_oblique_grid_uses_world_directions():
    hu, labels, affine = phantom()
    a, b = math.radians(35), math.radians(20)  # about x, then about y: world z mixes all three voxel axes
    rot_x = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    rot = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]]) @ rot_x
    oblique = affine.copy()
    oblique[:3, :3] = rot @ affine[:3, :3]
    stats = lung_statistics(hu, labels, oblique)
    assert_matches_reference(stats, hu, labels, oblique)
    assert stats.row("right_lung", "upper")["voxels"] != 60  # tilted: thirds are no longer whole slices
    assert_row(stats.row("right_lung"), lung_statistics(hu, labels, affine).row("right_lung"), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_blockwise_pass_gives_the_same_numbers(monkeypatch, dtype):
    """Real scans are processed in blocks of ~10^6 voxels; force one slice per block on the small phantom."""
    from lungct.ct import densitometry

    hu, labels, affine = phantom()
    hu[3, 5, 6], hu[10, 6, 8] = -1300, 2500  # out-of-range values in different blocks
    oblique = affine.copy()
    oblique[:3, :3] = np.array([[1, 0, 0], [0, 0.8, -0.6], [0, 0.6, 0.8]]) @ affine[:3, :3]
    cases = [(hu, labels, affine), (hu, labels, oblique), (np.asfortranarray(hu), np.asfortranarray(labels), affine)]
    expected = [lung_statistics(h.astype(dtype), lab, a).rows for h, lab, a in cases]
    monkeypatch.setattr(densitometry, "_CHUNK", 40)
    for (h, lab, a), want in zip(cases, expected):
        stats = lung_statistics(h.astype(dtype), lab, a)
        for got, row in zip(stats.rows, want):
            assert_row(got, row, rel=1e-12)
        assert_matches_reference(stats, h.astype(dtype), lab, a)


def test_float_hu_lands_on_the_right_side_of_each_threshold():
    values = [-1000.5, -950.5, -950.0, -949.5, -910.5, -909.5, -856.5, -855.5, -600.5, -600.0, -599.5,
              -250.5, -250.0, -249.5, 0.25]
    hu = np.full((5, 5, 5), -1000, np.float32)
    labels = np.zeros(hu.shape, np.uint8)
    hu.flat[: len(values)] = values
    labels.flat[: len(values)] = 1
    row = lung_statistics(hu, labels, np.diag([*SPACING, 1.0])).row("right_lung")
    n = len(values)
    assert row["laa950_pct"] == pytest.approx(100 * 2 / n)  # -1000.5, -950.5
    assert row["laa910_pct"] == pytest.approx(100 * 5 / n)  # + -950.0, -949.5, -910.5
    assert row["laa856_pct"] == pytest.approx(100 * 7 / n)  # + -909.5, -856.5
    assert row["haa_pct"] == pytest.approx(100 * 4 / n)  # -600.0, -599.5, -250.5, -250.0
    assert row["dense_ml"] == pytest.approx(2 * VOXEL_ML) and row["aerated_ml"] == pytest.approx(13 * VOXEL_ML)
    assert row["mass_g"] == pytest.approx(sum(max(v + 1000, 0) for v in values) / 1000 * VOXEL_ML, rel=1e-12)
    assert row["mean_hu"] == pytest.approx(np.mean(values), rel=1e-12)
    assert_row(row, reference(values))


def test_values_beyond_the_binned_range_are_exact():
    hu = np.full((4, 4, 4), -1000, np.float32)
    labels = np.ones(hu.shape, np.uint8)
    hu.flat[:10] = [-1500.7, -1400.2, -1300.0, -1200.5, -1150.0, -1120.0, -1110.0, -1105.0, -1101.0, -1100.5]
    hu.flat[-5:] = [1100.5, 1500.0, 2500.25, 3000.0, 3071.0]
    for h in (hu, np.floor(hu).astype(np.int16)):
        stats = lung_statistics(h, labels, np.eye(4))
        for region, idx in region_voxels(labels, np.eye(4), [1]).items():
            assert_row(stats.row("right_lung", region), reference(h[idx], 0.001))


def test_empty_lung_gives_zero_volume_and_nan():
    hu, labels, affine = phantom()
    labels[labels == 2] = 0
    stats = lung_statistics(hu, labels, affine)
    for region in REGIONS:
        row = stats.row("left_lung", region)
        assert row["voxels"] == 0 and row["volume_ml"] == 0 and row["mass_g"] == 0
        assert row["dense_ml"] == 0 and row["aerated_ml"] == 0
        assert all(math.isnan(row[c]) for c in ("mean_hu", "sd_hu", "perc15_hu", "laa950_pct", "haa_pct"))
        assert_row(stats.row("both", region), stats.row("right_lung", region), rel=1e-12)
    sidecar = stats.as_dict()
    assert sidecar["left_lung"]["upper"]["mean_hu"] is None
    json.dumps(sidecar, allow_nan=False)
    nothing = lung_statistics(hu, np.zeros_like(labels), affine)
    assert {r["voxels"] for r in nothing.rows} == {0} and len(nothing.rows) == 3 * len(REGIONS)


def test_whole_lung_only_and_custom_names():
    hu, labels, affine = phantom()
    stats = lung_statistics(hu, labels, affine, label_names={2: "left", 3: "trachea"}, regions=False)
    assert [(r["lung"], r["region"]) for r in stats.rows] == [("left", "whole"), ("trachea", "whole"),
                                                              ("both", "whole")]
    assert stats.row("trachea")["voxels"] == 1 and stats.row("both")["voxels"] == 73
    with pytest.raises(ValueError):
        lung_statistics(hu, labels[:-1], affine)
    with pytest.raises(ValueError):
        lung_statistics(hu, labels, affine, label_names={1: "both"})


# ------------------------------------------------------------------------------------ checks and outputs


def test_checks_refuse_miscalibrated_hu_unless_recalibrated():
    reason, warnings = densitometry_checks("miscalibrated", False, 1.0, "B31f")
    assert reason and "--recalibrate" in reason and "\n" not in reason and warnings == []
    reason, warnings = densitometry_checks("miscalibrated", True, 1.0, "B31f")
    assert reason is None and len(warnings) == 1 and "recalibrated HU" in warnings[0]
    assert densitometry_checks("ok", False, 1.0, "STANDARD") == (None, [])
    reason, warnings = densitometry_checks("unchecked", False, None, None)
    assert reason is None and "not checked" in warnings[0]


def test_checks_warn_on_thick_slices_and_sharp_kernels():
    assert densitometry_checks("ok", False, 3.0, None) == (None, [])
    _, warnings = densitometry_checks("ok", False, 5.0, "B70f")
    assert len(warnings) == 2 and "5 mm" in warnings[0] and "B70f" in warnings[1]
    reason, warnings = densitometry_checks("miscalibrated", False, 5.0, "LUNG")
    assert reason and len(warnings) == 2


@pytest.mark.parametrize("kernel", ["B70f", "B60f", "Br64d", "I70f", "Bl57", "LUNG", "BONE", "BONEPLUS", "EDGE",
                                    "YC", "YD", "L", "D", "FC52", "FC86", "['B70f', '3']", "B80f\\3", "HD LUNG"])
def test_sharp_kernels(kernel):
    assert sharp_kernel(kernel)


@pytest.mark.parametrize("kernel", [None, "", "B31f", "B35f", "Br40d", "I31f", "STANDARD", "SOFT", "B", "C",
                                    "YB", "FC01", "FC18", "Qr40", "UNKNOWN KERNEL 7"])
def test_smooth_or_unknown_kernels(kernel):
    assert not sharp_kernel(kernel)


def test_csv_has_one_row_per_case_lung_region_and_refusals(tmp_path):
    hu, labels, affine = phantom()
    stats = lung_statistics(hu, labels, affine)
    labels[labels == 2] = 0
    empty_left = lung_statistics(hu, labels, affine)
    rows = [{"case": "a", **r} for r in stats.rows] + [{"case": "b", **r} for r in empty_left.rows]
    rows.append({"case": "c", "status": "refused", "reason": "HU calibration check says miscalibrated"})
    path = write_statistics_csv(tmp_path / "out" / "densitometry.csv", rows)
    assert sorted(p.name for p in path.parent.iterdir()) == ["densitometry.csv"]
    with open(path, newline="") as fh:
        read = list(csv.DictReader(fh))
    assert list(read[0])[:5] == ["case", "status", "reason", "lung", "region"] and set(COLUMNS) <= set(read[0])
    assert len(read) == 2 * 3 * len(REGIONS) + 1
    first = read[0]
    assert first["status"] == "ok" and first["lung"] == "right_lung" and float(first["mean_hu"]) == -849.0
    assert int(first["voxels"]) == 180 and float(first["sd_hu"]) == pytest.approx(math.sqrt(51939), rel=1e-9)
    b_left = next(r for r in read if r["case"] == "b" and r["lung"] == "left_lung")
    assert b_left["voxels"] == "0" and b_left["mean_hu"] == ""
    assert read[-1]["status"] == "refused" and read[-1]["reason"] and read[-1]["voxels"] == ""


def test_histogram_plot_is_a_png_written_atomically(tmp_path):
    hu, labels, affine = phantom()
    path = save_histogram_plot(tmp_path / "hist.png", lung_statistics(hu, labels, affine), title="phantom")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["hist.png"]
    from PIL import Image

    assert Image.open(path).size[0] > 400


# ------------------------------------------------------------------------------------------------ real data


def test_copdgene_matches_plain_numpy():
    folder = DATA / "ct-volumes" / "copdgene-ct64"
    if not (folder / "image.nrrd").is_file() or not (folder / "lungs-lr.nii.gz").is_file():
        pytest.skip(f"real data not available: {folder} (image.nrrd, lungs-lr.nii.gz) is missing")
    from lungct.io import load_scan

    scan, mask = load_scan(folder / "image.nrrd"), load_scan(folder / "lungs-lr.nii.gz")
    assert scan.array.shape == mask.array.shape
    np.testing.assert_allclose(scan.affine, mask.affine, atol=1e-3)
    labels = mask.array  # int16 as read: any integer label type works
    assert set(np.unique(labels)) == {0, 1, 2}
    stats = lung_statistics(scan.array, labels, scan.affine)
    voxel_ml = abs(np.linalg.det(scan.affine[:3, :3])) / 1000
    for name, values in (("right_lung", [1]), ("left_lung", [2]), ("both", [1, 2])):
        for region, idx in region_voxels(labels, scan.affine, values).items():
            v, row = scan.array[idx].astype(np.float64), stats.row(name, region)
            plain = {"voxels": v.size, "volume_ml": v.size * voxel_ml, "mean_hu": v.mean(), "sd_hu": v.std(),
                     "mass_g": np.maximum(v + 1000, 0).sum() / 1000 * voxel_ml,
                     "laa950_pct": 100 * np.mean(v < -950), "laa910_pct": 100 * np.mean(v < -910),
                     "laa856_pct": 100 * np.mean(v < -856), "haa_pct": 100 * np.mean((v >= -600) & (v <= -250)),
                     "dense_ml": np.sum(v > -250) * voxel_ml, "aerated_ml": np.sum(v <= -250) * voxel_ml}
            for column, want in plain.items():
                assert row[column] == pytest.approx(want, rel=1e-3, abs=1e-9), (name, region, column)
            for q in PERCENTILES:
                assert abs(row[f"perc{q}_hu"] - np.percentile(v, q)) <= 1.0, (name, region, q)
    assert stats.row("both")["laa950_pct"] > 5  # an emphysema case
