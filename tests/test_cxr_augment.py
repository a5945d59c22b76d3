"""Radiograph augmentation (lungct.cxr.augment) on synthetic radiographs: opacities change the picture but
never the label and never exceed soft tissue; film geometry moves image, mask and valid together;
overlays leave the mask alone; crops cut it."""
from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

import cxr_phantoms as P
from lungct.cxr.augment import FilmParams, OpacityParams, add_opacities, film_augment, soft_tissue_level

SHAPE = (256, 256)
OPACITY_PS = [k for k in OpacityParams.__dataclass_fields__ if k in
              ("p_consolidation", "p_ground_glass", "p_patchy", "p_whiteout", "p_effusion")]
FILM_PS = [k for k in FilmParams.__dataclass_fields__ if k.startswith("p_")]


def opacity(**on) -> OpacityParams:
    return OpacityParams(**{**{k: 0.0 for k in OPACITY_PS}, **on})


def film(**on) -> FilmParams:
    return FilmParams(**{**{k: 0.0 for k in FILM_PS}, **on})


EVERY_OPACITY = opacity(**{k: 1.0 for k in OPACITY_PS})
EVERY_FILM_EFFECT = film(**{k: 1.0 for k in FILM_PS})


def padded_phantom(seed: int = 3):
    """A portrait film as ResizePadd leaves it: 256 rows, 208 columns of image, 24 columns of zero padding
    each side; the image is at least 0.1 on its own pixels, so 'image > 0' tells where the film is."""
    ph = P.make_cxr((256, 208), seed=seed)
    image = np.zeros(SHAPE, np.float32)
    image[:, 24:232] = 0.1 + 0.9 * ph.image
    lungs = np.zeros(SHAPE, np.uint8)
    lungs[:, 24:232] = ph.lungs
    valid = np.zeros(SHAPE, bool)
    valid[:, 24:232] = True
    return image, lungs, valid


@pytest.fixture(scope="module")
def cxr():
    ph = P.make_cxr(SHAPE, seed=3)
    return ph.image.astype(np.float32), ph.lungs, np.ones(SHAPE, bool)


def iou(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return float((a & b).sum() / max((a | b).sum(), 1))


# --------------------------------------------------------------------------------------------- opacities


def test_opacities_deterministic_for_a_seed_and_vary_between_seeds(cxr):
    image, lungs, _ = cxr
    a = add_opacities(image, lungs, np.random.default_rng(7), EVERY_OPACITY)
    b = add_opacities(image, lungs, np.random.default_rng(7), EVERY_OPACITY)
    c = add_opacities(image, lungs, np.random.default_rng(8), EVERY_OPACITY)
    assert np.array_equal(a, b)
    assert np.abs(a - c).max() > 0.05


@pytest.mark.parametrize("labels", ["right_left", "binary"])
def test_opacities_leave_the_label_and_the_input_untouched(cxr, labels):
    image, lungs, _ = cxr
    mask = lungs if labels == "right_left" else (lungs > 0).astype(np.uint8)
    mask_before, image_before = mask.copy(), image.copy()
    for seed in range(8):
        out = add_opacities(image, mask, np.random.default_rng(seed), EVERY_OPACITY)
        assert out.dtype == np.float32 and out.shape == SHAPE
        assert np.array_equal(mask, mask_before) and np.array_equal(image, image_before)
        assert out.min() >= 0 and out.max() <= 1


def test_opacities_brighten_inside_the_fields_only(cxr):
    image, lungs, _ = cxr
    near_field = ndi.binary_dilation(lungs > 0, iterations=5)
    for seed in range(10):
        added = add_opacities(image, lungs, np.random.default_rng(seed), EVERY_OPACITY) - image
        assert added.min() >= -1e-6  # opacities only ever brighten
        assert added.sum() > 50  # something substantial was painted
        assert added[near_field].sum() / added.sum() > 0.95
        assert added[lungs > 0].sum() / added.sum() > 0.8


def test_soft_tissue_level_is_the_phantoms_body_and_never_exceeded(cxr):
    image, lungs, _ = cxr
    level = soft_tissue_level(image, lungs)
    assert 0.72 < level < 0.85  # body 0.75, spine 0.9, diaphragm 0.8: the median of what lies between fields
    for seed in range(10):
        out = add_opacities(image, lungs, np.random.default_rng(seed), EVERY_OPACITY)
        assert np.all(out <= np.maximum(image, level) + 1e-5)
        assert out[lungs > 0].max() <= max(level, float(image[lungs > 0].max())) + 1e-5


@pytest.mark.parametrize("labels", ["right_left", "binary"])
def test_whiteout_brings_one_field_to_soft_tissue(cxr, labels):
    image, lungs, _ = cxr
    mask = lungs if labels == "right_left" else (lungs > 0).astype(np.uint8)
    level = soft_tissue_level(image, mask)
    before = {k: float(np.median(image[lungs == k])) for k in (1, 2)}
    for seed in range(6):
        out = add_opacities(image, mask, np.random.default_rng(seed), opacity(p_whiteout=1.0, whiteout_whole=1.0))
        rise = sorted((np.median(out[lungs == k]) - before[k]) / (level - before[k]) for k in (1, 2))
        assert rise[1] > 0.8, rise  # the whited-out field's median is near soft tissue
        assert rise[0] < 0.05, rise  # the other field is left alone


def test_no_fields_no_opacities(cxr):
    image, _, _ = cxr
    out = add_opacities(image, np.zeros(SHAPE, np.uint8), np.random.default_rng(0), EVERY_OPACITY)
    assert np.array_equal(out, image)


# ------------------------------------------------------------------------------------------------- film


def test_film_deterministic_for_a_seed_and_vary_between_seeds(cxr):
    image, lungs, valid = cxr
    a = film_augment(image, lungs, valid, np.random.default_rng(5))
    b = film_augment(image, lungs, valid, np.random.default_rng(5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    others = [film_augment(image, lungs, valid, np.random.default_rng(s))[0] for s in range(6, 10)]
    assert all(not np.array_equal(a[0], o) for o in others)


@pytest.mark.parametrize("padded", [False, True])
def test_film_identity_when_every_probability_is_zero(cxr, padded):
    image, lungs, valid = padded_phantom() if padded else cxr
    out, mask, out_valid = film_augment(image, lungs, valid, np.random.default_rng(0), film())
    assert np.array_equal(out, image) and np.array_equal(mask, lungs) and np.array_equal(out_valid, valid)
    assert out is not image and mask is not lungs


@pytest.mark.parametrize("moves", [dict(p_rotate=1.0), dict(p_scale=1.0, p_shift=1.0), dict(p_ap=1.0),
                                   dict(p_rotate=1.0, p_scale=1.0, p_shift=1.0, p_ap=1.0)])
def test_geometry_moves_image_mask_and_valid_together(moves):
    """Image bright exactly where the lungs are: after the warp, the bright part is the warped mask."""
    _, lungs, valid = padded_phantom()
    image = np.where(valid, np.where(lungs > 0, 0.9, 0.2), 0).astype(np.float32)
    moved = 0
    for seed in range(6):
        out, mask, out_valid = film_augment(image, lungs, valid, np.random.default_rng(seed), film(**moves))
        assert iou(out > 0.55, mask) > 0.95  # the mask sits on the image's bright structure
        assert set(np.unique(mask)) == {0, 1, 2} and mask.dtype == np.uint8  # labels kept (nearest neighbour)
        rows, cols = np.nonzero(mask)
        bright_r, bright_c = np.nonzero(out > 0.55)
        assert abs(rows.mean() - bright_r.mean()) < 1.5 and abs(cols.mean() - bright_c.mean()) < 1.5
        assert np.mean((out > 0.1) == out_valid) > 0.99  # valid is where the warped film is
        assert not (mask > 0)[~out_valid].any() and not out[~out_valid].any()
        moved += iou(mask, lungs) < 0.97
    assert moved >= 4  # and the transform did move things


def test_geometry_rotation_turns_image_and_mask_alike():
    """A tilted film: the lungs' principal axis and the bright structure's turn by the same angle."""
    _, lungs, valid = padded_phantom()
    image = np.where(valid, np.where(lungs == 1, 0.9, 0.2), 0).astype(np.float32)

    def angle(m):
        r, c = np.nonzero(m)
        cov = np.cov(np.stack([r - r.mean(), c - c.mean()]))
        return np.degrees(0.5 * np.arctan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1]))

    turns = []
    for seed in range(8):
        out, mask, _ = film_augment(image, lungs, valid, np.random.default_rng(seed), film(p_rotate=1.0))
        assert abs(angle(mask == 1) - angle(out > 0.55)) < 1.0
        turns.append(abs(angle(mask == 1) - angle(lungs == 1)))
    assert max(turns) > 3 and max(turns) <= 15.5


@pytest.mark.parametrize("overlay", [dict(p_text=1.0), dict(p_arrows=1.0), dict(p_tubes=1.0), dict(p_ecg=1.0)])
def test_text_arrows_tubes_and_leads_change_the_image_not_the_mask(cxr, overlay):
    image, lungs, valid = cxr
    changed = 0
    for seed in range(6):
        out, mask, out_valid = film_augment(image, lungs, valid, np.random.default_rng(seed), film(**overlay))
        assert np.array_equal(mask, lungs) and np.array_equal(out_valid, valid)
        changed += (np.abs(out - image) > 0.1).sum() > 10
    assert changed >= 5


def test_crops_cut_the_mask_at_the_film_edge():
    image, lungs, valid = padded_phantom()
    edge = valid & ~ndi.binary_erosion(valid, border_value=0)
    assert not (lungs > 0)[ndi.binary_dilation(edge, iterations=2)].any()  # the phantom's lungs are inside
    for seed in range(12):
        out, mask, out_valid = film_augment(image, lungs, valid, np.random.default_rng(seed), film(p_crop=1.0))
        assert not (mask > 0)[~out_valid].any() and not out[~out_valid].any()
        out_edge = out_valid & ~ndi.binary_erosion(out_valid, border_value=0)
        assert (mask > 0)[ndi.binary_dilation(out_edge, iterations=2)].any()  # now a field runs into the film edge
        assert np.mean((out > 0.05) == out_valid) > 0.99


def test_frame_bands_hide_the_lung_under_them(cxr):
    image, lungs, valid = cxr
    for seed in range(6):
        out, mask, _ = film_augment(image, lungs, valid, np.random.default_rng(seed), film(p_border=1.0))
        assert not ((mask > 0) & (lungs == 0)).any()  # the mask only loses pixels
        lost = (lungs > 0) & (mask == 0)
        assert np.all((out[lost] == 0) | (out[lost] == 1))  # and only under the band


@pytest.mark.parametrize("params", [FilmParams(), EVERY_FILM_EFFECT])
def test_film_outputs_keep_types_and_ranges(params):
    image, lungs, valid = padded_phantom()
    for seed in range(15):
        out, mask, out_valid = film_augment(image, lungs, valid, np.random.default_rng(seed), params)
        assert out.dtype == np.float32 and out.shape == SHAPE and out.min() >= 0 and out.max() <= 1
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1, 2}
        assert out_valid.dtype == bool and not out[~out_valid].any() and not mask[~out_valid].any()


def test_augmenting_a_sample_takes_a_few_milliseconds(cxr):
    image, lungs, valid = cxr
    rng = np.random.default_rng(0)
    add_opacities(image, lungs, rng), film_augment(image, lungs, valid, rng)  # warm the caches
    start, n = time.perf_counter(), 40
    for _ in range(n):
        film_augment(add_opacities(image, lungs, rng), lungs, valid, rng)
    assert (time.perf_counter() - start) / n < 0.05  # loose: ~8 ms on an idle core
