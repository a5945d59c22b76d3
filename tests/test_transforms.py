"""Each preprocessing transform on the chest phantom, against the phantom's own truth.

The full chain runs once per phantom variant (cached per test process) and each test asserts several
properties of that one run.
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

import phantoms
from lungct import LungctError
from lungct.geometry import geometry_summary, orientation_code, voxel_spacing
from lungct.io import Scan
from lungct.morphology import dilate_mm
from lungct.ct.preprocess import preprocess_scan
from lungct.recipes import Chain, load_recipe
from lungct.ct.transforms.resample import Resampled
from lungct.geometry import (is_oblique, labels_to_grid, resample_to_spacing,
                                       smooth_labels_to_grid)
from lungct.ct.transforms.intensity import CheckHUCalibrationd, HUWindowd, estimate_calibration

DICE_MIN = 0.97


def chain_input(ph: phantoms.Phantom) -> dict:
    """The dict the preprocess chain starts from, as preprocess_scan builds it."""
    return {"image": MetaTensor(torch.from_numpy(ph.array.astype(np.float32)[None]),
                                affine=torch.as_tensor(ph.affine, dtype=torch.float64)),
            "case": {"warnings": [], "flags": [], "input": geometry_summary(ph.array.shape, ph.affine)},
            "source": ph.name}


def run_steps(ph: phantoms.Phantom, until: str, recipe: str = "preprocess", overrides=None) -> dict:
    """The chain's dict right after step `until`."""
    data = chain_input(ph)
    for name, step in Chain.of(load_recipe(recipe, overrides)).steps:
        data = step(data)
        if name == until:
            return data
    raise AssertionError(f"no step {until}")


def preprocess_phantom(ph: phantoms.Phantom, recipe=None):
    scan = Scan(ph.name, ph.array.astype(np.float32), ph.affine, [Path(f"{ph.name}.nii.gz")], "nii.gz")
    return preprocess_scan(scan, recipe)


def native(result, key: str) -> np.ndarray:
    """A label map of the processing grid brought back onto the scan's own grid."""
    return labels_to_grid(getattr(result, key), result.affine, result.scan.array.shape, result.scan.affine)


@functools.lru_cache(maxsize=None)
def segmented(name: str, kind: str = "plain"):
    """(phantom variant, preprocess result with the default recipe), computed once per test process."""
    ph = phantoms.variant(phantoms.standard(kind), name)
    return ph, preprocess_phantom(ph)


# ------------------------------------------------------------------------------- HU calibration


def test_calibration_of_a_calibrated_scan_is_ok(phantom):
    data = CheckHUCalibrationd()(chain_input(phantom))
    record = data["case"]["hu_calibration"]
    assert record["status"] == "ok"
    assert abs(record["air_stored"] + 1000) <= 10
    assert abs(record["soft_tissue_stored"] - 40) <= 15
    assert "hu_miscalibrated" not in data["case"]["flags"]


def test_calibration_check_flags_air_at_minus_790(phantom):
    ph = phantoms.miscalibrated(phantom, air=-790.0, tissue=0.0)
    data = CheckHUCalibrationd()(chain_input(ph))
    case, record = data["case"], data["case"]["hu_calibration"]
    assert record["status"] == "miscalibrated"
    assert abs(record["air_stored"] + 790) <= 10
    assert abs(record["soft_tissue_stored"] - 0) <= 15
    assert record.get("applies_to_segmentation") is True
    assert "hu_miscalibrated" in case["flags"]
    assert any("-790" in w and "-1000" in w for w in case["warnings"]), case["warnings"]
    np.testing.assert_array_equal(data["image"][0].numpy(), ph.array.astype(np.float32))  # image untouched


def test_recalibrate_maps_air_to_minus_1000(phantom):
    ph = phantoms.miscalibrated(phantom, air=-790.0, tissue=0.0)
    data = CheckHUCalibrationd(recalibrate=True)(chain_input(ph))
    fixed = data["image"][0].numpy()
    record = data["case"]["hu_calibration"]
    assert record["applied_to_image"] is True and "hu_miscalibrated" in data["case"]["flags"]
    outside_air = ~phantom.body & ~phantom.couch & ~phantom.below_couch
    assert abs(np.median(fixed[outside_air]) + 1000) <= 10
    assert abs(np.median(fixed[phantom.lungs > 0]) + 850) <= 20
    assert abs(np.mean(fixed) - np.mean(phantom.array)) <= 10  # the whole scan lands back on the HU scale
    again = estimate_calibration(fixed)
    assert abs(again["air"] + 1000) <= 10 and abs(again["tissue"] - 40) <= 15


def test_values_that_are_not_hounsfield_units_are_refused(phantom):
    ph = phantoms.miscalibrated(phantom, air=0.0, tissue=1040.0)  # air at 0: an MR or a raw export
    with pytest.raises(LungctError) as err:
        CheckHUCalibrationd()(chain_input(ph))
    assert "not Hounsfield units" in str(err.value) and "\n" not in str(err.value)


def test_miscalibrated_scan_is_still_segmented(phantom):
    """Without --recalibrate the thresholds follow the measured calibration: same lungs."""
    ph = phantoms.miscalibrated(phantom, air=-790.0, tissue=0.0)
    result = preprocess_phantom(ph)
    assert "hu_miscalibrated" in result.case["flags"]
    mask = result.lungs_native
    assert phantoms.dice(mask > 0, phantom.lungs > 0) >= DICE_MIN
    assert phantoms.dice(mask == 1, phantom.lungs == 1) >= DICE_MIN
    assert phantoms.dice(mask == 2, phantom.lungs == 2) >= DICE_MIN


# -------------------------------------------------------------------------------------- HU window


def test_window_clips_and_rescales():
    values = np.linspace(-2000, 2000, 16 * 16 * 4, dtype=np.float32).reshape(16, 16, 4)
    data = {"image": MetaTensor(torch.from_numpy(values[None]), affine=torch.eye(4, dtype=torch.float64)),
            "case": {"warnings": [], "flags": []}}
    out = HUWindowd(a_min=-1024, a_max=600)(data)["image"][0].numpy()
    np.testing.assert_allclose(out, np.clip((values + 1024) / 1624, 0, 1), atol=1e-6)


def test_window_follows_the_measured_calibration(phantom):
    ph = phantoms.miscalibrated(phantom, air=-790.0, tissue=0.0)
    window = HUWindowd(a_min=-1024, a_max=600)
    reference = window(CheckHUCalibrationd()(chain_input(phantom)))["image"][0].numpy()
    measured = window(CheckHUCalibrationd()(chain_input(ph)))["image"][0].numpy()
    assert np.abs(measured - reference).mean() <= 0.01  # 16 HU


# ------------------------------------------------------------------------------------- resampling


def _world(affine, index):
    return affine[:3, :3] @ np.asarray(index, float) + affine[:3, 3]


def _value_at(array, affine, point):
    index = np.rint(np.linalg.solve(affine[:3, :3], np.asarray(point, float) - affine[:3, 3])).astype(int)
    return array[tuple(index)]


@pytest.mark.parametrize("variant", phantoms.VARIANTS)
def test_resampled_grid_is_ras_isotropic_and_keeps_places(phantom_variants, variant):
    ph = phantom_variants[variant]
    data = Resampled(spacing_mm=1.5, axcodes="RAS")(chain_input(ph))
    image, affine = data["image"][0].numpy(), np.asarray(data["image"].affine, float)
    assert orientation_code(affine) == "RAS" and not is_oblique(affine)
    np.testing.assert_allclose(voxel_spacing(affine), [1.5, 1.5, 1.5], atol=1e-9)
    assert data["case"]["processing_spacing_mm"] == [1.5, 1.5, 1.5]
    # The new grid spans the input's voxel centres (to within one new voxel), and not much more.
    corners = np.array([[i, j, k] for i in (0, ph.array.shape[0] - 1) for j in (0, ph.array.shape[1] - 1)
                        for k in (0, ph.array.shape[2] - 1)])
    before = corners @ ph.affine[:3, :3].T + ph.affine[:3, 3]
    lo, hi = before.min(axis=0), before.max(axis=0)
    after_lo, after_hi = _world(affine, [0, 0, 0]), _world(affine, np.array(image.shape) - 1)
    assert np.all(after_lo <= lo + 1.5) and np.all(after_hi >= hi - 1.5), (after_lo, after_hi, lo, hi)
    if variant != "oblique":  # an oblique scan's axis-aligned box is larger than the scan itself
        assert np.all(after_lo >= lo - 1.5) and np.all(after_hi <= hi + ph.spacing.max()), (after_lo, after_hi)
    # Anatomy stays where it is in the world.
    assert _value_at(image, affine, [0.0, -65.0, 0.0]) > 300  # spine
    assert _value_at(image, affine, [58.0, 10.0, 0.0]) < -700  # right lung
    assert _value_at(image, affine, [-58.0, 10.0, 0.0]) < -700  # left lung
    assert _value_at(image, affine, [0.0, 20.0, 0.0]) > -100  # mediastinum
    assert _value_at(image, affine, [0.0, 120.0, 0.0]) < -900  # air in front of the chest


def test_storage_order_does_not_change_the_resampled_image(phantom_variants):
    outputs = {name: Resampled(spacing_mm=1.5)(chain_input(phantom_variants[name]))["image"]
               for name in phantoms.REINDEXED}
    reference = outputs["RAS"]
    inner = (slice(1, -1),) * 3  # the outermost layer lies half an input voxel beyond the scan: extrapolated
    for name, image in outputs.items():
        assert image.shape == reference.shape, name
        np.testing.assert_allclose(np.asarray(image.affine), np.asarray(reference.affine), atol=1e-6, err_msg=name)
        np.testing.assert_allclose(image[0].numpy()[inner], reference[0].numpy()[inner], atol=0.01, err_msg=name)


@pytest.mark.parametrize("variant", phantoms.VARIANTS)
def test_labels_go_to_the_processing_grid_and_back(phantom_variants, variant):
    ph = phantom_variants[variant]
    labels, affine = resample_to_spacing(ph.lungs, ph.affine, 1.0, nearest=True, default=0, axcodes="RAS")
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2}
    back = labels_to_grid(labels, affine, ph.array.shape, ph.affine)
    assert back.shape == ph.lungs.shape
    if variant == "oblique":  # two nearest-neighbour passes through a rotated grid
        assert (back == ph.lungs).mean() >= 0.995
    else:  # native voxel centres fall on the 1 mm grid (or within 0.5 mm of one): exact
        np.testing.assert_array_equal(back, ph.lungs)


def _disc_probabilities(affine: np.ndarray, shape, centres_mm, radius_mm: float = 20.0) -> np.ndarray:
    """uint8 probabilities of two discs (x, y), constant along z: a soft edge 2 mm wide."""
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)
    world = index @ affine[:3, :3].T + affine[:3, 3]
    maps = []
    for cx, cy in centres_mm:
        r = np.hypot(world[..., 0] - cx, world[..., 1] - cy)
        maps.append(np.round(255 / (1 + np.exp((r - radius_mm) / 2.0))).astype(np.uint8))
    return np.stack(maps)


@pytest.mark.parametrize("target", ["aligned", "oblique", "flipped"])
def test_smooth_labels_put_the_boundary_between_coarse_voxels(target):
    # Two discs of radius 20 mm on a 3 mm grid, brought to a 1 mm grid (axis-aligned, rotated 20 degrees
    # about z, or with x and y flipped): interpolating the probabilities must beat the nearest-neighbour
    # copy against the exact discs, and keep the two labels apart.
    coarse = np.diag([3.0, 3.0, 3.0, 1.0])
    coarse[:3, 3] = [-45.0, -30.0, 0.0]
    centres = [(-22.0, 0.0), (22.0, 0.0)]
    scores = _disc_probabilities(coarse, (31, 21, 3), centres)
    labels = np.zeros((31, 21, 3), np.uint8)
    labels[scores[0] >= 128], labels[scores[1] >= 128] = 1, 2
    fine = np.eye(4)
    shape = (93, 63, 7) if target != "oblique" else (101, 101, 7)
    if target == "oblique":
        angle = np.radians(20)
        fine[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    elif target == "flipped":
        fine[:2, :2] = -np.eye(2)
    centre_index = (np.array(shape) - 1) / 2
    fine[:3, 3] = [0.0, 0.0, 3.0] - fine[:3, :3] @ centre_index  # the grid centred on the discs
    exact = _disc_probabilities(fine, shape, centres) >= 128
    smooth = smooth_labels_to_grid(labels, scores, [1, 2], coarse, shape, fine)
    nearest = labels_to_grid(labels, coarse, shape, fine)
    for value in (1, 2):
        assert phantoms.dice(smooth == value, exact[value - 1]) > phantoms.dice(nearest == value, exact[value - 1])
        assert phantoms.dice(smooth == value, exact[value - 1]) >= 0.99
    # On the same grid, the labels come back unchanged.
    np.testing.assert_array_equal(smooth_labels_to_grid(labels, scores, [1, 2], coarse, labels.shape, coarse), labels)


def test_smooth_labels_keep_what_post_processing_removed_or_filled():
    coarse = np.diag([2.0, 2.0, 2.0, 1.0])
    scores = np.zeros((1, 20, 20, 1), np.uint8)
    scores[0, 2:9, 2:9] = 250      # a confident speck the clean-up dropped
    scores[0, 10:18, 10:18] = 250  # the kept lung, with a hole the clean-up filled
    scores[0, 13:15, 13:15] = 10
    labels = np.zeros((20, 20, 1), np.uint8)
    labels[10:18, 10:18] = 1
    fine = np.diag([1.0, 1.0, 1.0, 1.0])
    out = smooth_labels_to_grid(labels, scores, [1], coarse, (40, 40, 1), fine)
    assert not out[:18, :18].any()            # the speck stays removed
    assert (out[26:30, 26:30] == 1).all()     # the filled hole stays filled
    assert 15 ** 2 <= (out == 1).sum() <= 16 ** 2  # 8 coarse voxels of 2 mm: a 15-16 mm square


# ---------------------------------------------------------------------------------- body and couch


def test_body_mask_excludes_the_couch_and_the_air_under_it(phantom):
    data = run_steps(phantom, "BodyMaskd")
    body, affine = data["body"][0].numpy(), np.asarray(data["body"].affine, float)
    couch = labels_to_grid(phantom.couch, phantom.affine, body.shape, affine) > 0
    below = labels_to_grid(phantom.below_couch, phantom.affine, body.shape, affine) > 0
    assert couch.sum() > 1000 and below.sum() > 1000  # the truth really is on this grid
    assert not (body & couch).any(), "couch inside the body mask"
    assert not (body & below).any(), "air under the couch inside the body mask"
    body_native = labels_to_grid(body, affine, phantom.array.shape, phantom.affine) > 0
    assert phantoms.dice(body_native, phantom.body) >= 0.98
    assert not (body_native & phantom.couch).any()


# ------------------------------------------------------------------------------------------ lungs


@pytest.mark.parametrize("variant", phantoms.VARIANTS)
def test_lungs_match_the_phantom_in_every_orientation(variant):
    ph, result = segmented(variant)
    mask = result.lungs_native
    assert mask.shape == ph.array.shape and mask.dtype == np.uint8
    assert phantoms.dice(mask > 0, ph.lungs > 0) >= DICE_MIN
    assert phantoms.dice(mask == 1, ph.lungs == 1) >= DICE_MIN, "right lung (label 1) is not the right lung"
    assert phantoms.dice(mask == 2, ph.lungs == 2) >= DICE_MIN, "left lung (label 2) is not the left lung"
    lung = mask > 0
    assert not lung[ph.couch].any(), "couch (or its air pockets) in the lung mask"
    assert not lung[ph.below_couch].any(), "air under the couch in the lung mask"
    assert not lung[ph.gas].any(), "stomach gas in the lung mask"
    trachea = ph.airway & (_world_z(ph) >= phantoms.CARINA_Z + 6)
    assert trachea.sum() > 50 and not lung[trachea].any(), "trachea in the lung mask"
    voxel_ml = np.prod(ph.spacing) / 1000
    for side, label in (("right_lung", 1), ("left_lung", 2)):
        truth_ml = (ph.lungs == label).sum() * voxel_ml
        assert abs(result.volumes_ml[side] - truth_ml) <= 0.05 * truth_ml, side
    assert result.case["flags"] == []


def _world_z(ph: phantoms.Phantom) -> np.ndarray:
    index = np.indices(ph.array.shape).reshape(3, -1)
    return (ph.affine[2, :3] @ index + ph.affine[2, 3]).reshape(ph.array.shape)


@pytest.mark.parametrize("variant", ["LPS", "flipped", "permuted"])
def test_storage_order_gives_the_same_voxels_the_same_labels(variant):
    _, reference = segmented("RAS")
    _, result = segmented(variant)
    flips, order = phantoms.REINDEXED[variant]
    expected = phantoms.reindex_array(reference.lungs_native, flips, order)
    assert (result.lungs_native == expected).mean() >= 0.9999


@pytest.mark.parametrize("where", ["volume", "single slice"])
def test_touching_lungs_are_split_into_right_and_left(where):
    base = phantoms.standard("touching")
    ph = base if where == "volume" else phantoms.axial_slice(base, z_mm=10.0)
    junction = tuple(np.rint(ph.world_to_voxel([0.0, 34.0, 10.0])).astype(int))
    assert ph.lungs[junction] > 0  # the lungs do touch in the truth, in front of the mediastinum
    mask = preprocess_phantom(ph).lungs_native
    assert phantoms.dice(mask > 0, ph.lungs > 0) >= DICE_MIN
    assert phantoms.dice(mask == 1, ph.lungs == 1) >= 0.95
    assert phantoms.dice(mask == 2, ph.lungs == 2) >= 0.95


# ------------------------------------------------------------------------------ spine-axis mirroring


@pytest.mark.parametrize("variant", ["RAS", "oblique"])
def test_mirrored_roi_covers_the_tumour(variant):
    ph, result = segmented(variant, kind="tumour")
    assert ph.tumour.sum() > 200
    roi = native(result, "roi") > 0
    lungs = result.lungs_native > 0
    assert phantoms.dice(lungs, ph.lungs > 0) >= DICE_MIN  # the tumour is not lung...
    assert lungs[ph.tumour].mean() <= 0.05
    assert roi[ph.tumour].mean() >= 0.99  # ...but the mirrored ROI holds it
    assert roi[ph.lungs > 0].mean() >= 0.999
    # Without mirroring, a 5 mm margin around the lungs would miss most of it.
    tumour_grid = labels_to_grid(ph.tumour, ph.affine, result.lungs.shape, result.affine) > 0
    margin_only = dilate_mm(result.lungs > 0, 5.0, voxel_spacing(result.affine), in_plane=True)
    assert margin_only[tumour_grid].mean() <= 0.6
    assert result.case["roi"]["mirror_added_ml"] > 0
    # The mirror axis is the phantom's spine (world x = 0), found from bone in every slice.
    axis = result.case["roi"]["spine_axis_mm"]
    x0, step = result.affine[0, 3], result.affine[0, 0] / abs(result.affine[0, 0])
    for key in ("mean", "min", "max"):
        assert abs(x0 + step * axis[key] - phantoms.SPINE_CENTRE[0]) <= 2.0, (key, axis)


def test_mask_outside_roi_sets_air(tumour_phantom):
    result = preprocess_phantom(tumour_phantom, load_recipe("preprocess-roi", {"Resampled.spacing_mm": 2.0}))
    outside = result.roi == 0
    air = (-1000 + 1024) / 1624  # the window maps -1000 HU here
    assert outside.any() and np.allclose(result.image[outside], air, atol=1e-5)
    assert result.image[result.lungs > 0].mean() < 0.2 and result.image[~outside].max() > 0.6


def test_large_erosion_equals_the_whole_box_distance_transform():
    """erode_mm only transforms the box around the candidates an inscribed box leaves: the same voxels as
    a distance transform of the whole mask's box, in 3D and in-plane, on anisotropic grids."""
    from scipy import ndimage as ndi

    from lungct.morphology import _sampling, _small_ball, bounding_box, erode_mm

    def whole_box(mask, radius, spacing, in_plane):
        out = np.zeros_like(mask)
        box = bounding_box(mask, margin=1)
        distance = ndi.distance_transform_edt(np.pad(mask[box], 1), sampling=_sampling(spacing, in_plane))
        out[box] = (distance > radius)[1:-1, 1:-1, 1:-1]
        return out

    rng = np.random.default_rng(1)
    checked = survivors = 0
    while checked < 40:
        shape = tuple(int(n) for n in rng.integers(8, 40, 3))
        mask = ndi.gaussian_filter(rng.random(shape), rng.uniform(2, 6)) > rng.uniform(0.46, 0.52)
        spacing = tuple(float(s) for s in rng.choice([0.7, 1.0, 1.5, 2.0], 3))
        radius, in_plane = float(rng.uniform(3.0, 9.0)), bool(rng.integers(0, 2))
        if _small_ball(radius, spacing, in_plane) is not None or not mask.any():
            continue  # small balls take the structuring-element path
        expected = whole_box(mask, radius, spacing, in_plane)
        np.testing.assert_array_equal(erode_mm(mask, radius, spacing, in_plane), expected)
        checked, survivors = checked + 1, survivors + bool(expected.any())
    assert survivors >= 10  # not only empty erosions


@pytest.mark.parametrize("options", [dict(a_min=-1024, a_max=600, b_min=0.0, b_max=1.0, clip=True),
                                     dict(a_min=-1000, a_max=400, b_min=-1.0, b_max=1.0, clip=False),
                                     dict(a_min=-1000, a_max=400, b_min=None, b_max=None, clip=False),
                                     dict(a_min=-500, a_max=-500, b_min=0.0, b_max=1.0, clip=True)])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_window_gives_monais_scale_intensity_range_values(options, dtype):
    """HUWindowd is MONAI's ScaleIntensityRanged without importing MONAI at inference: same numbers."""
    from monai.transforms import ScaleIntensityRanged

    values = np.linspace(-2000, 2000, 16 * 16 * 4).astype(dtype).reshape(16, 16, 4)
    case = {"warnings": [], "flags": []}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the empty window warns in both
        ours = HUWindowd(**options)({"image": torch.from_numpy(values[None]), "case": case})["image"]
        monai = ScaleIntensityRanged("image", **options)({"image": torch.from_numpy(values[None])})["image"]
    assert ours.dtype == monai.dtype
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(monai))
