"""Synthetic lesions (lungct.ct.lesions) on the chest phantom: labels, HU, sizes, placement, effusion, 2D and 3D.

The phantom's world frame is RAS with the body centred on the origin: lungs at x = +-58 mm, spine centred at
(0, -65) mm (posterior is -y). Slices are sampled on their own grids (make_phantom with one axial slice).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from scipy import ndimage

import phantoms
from lungct.ct.lesions import PLACEMENTS, LesionParams, orientation_hints, synthesize_lesions

TUMOURS = dict(count_probs=(0.0, 1.0), tumour_prob=1.0, effusion_prob=0.0)
CONSOLIDATION = dict(count_probs=(0.0, 1.0), tumour_prob=0.0, effusion_prob=0.0)
SPINE_XY = np.array(phantoms.SPINE_CENTRE)


def slice_phantom(spacing=(1.5, 1.5), z_mm=0.0, **kwargs) -> phantoms.Phantom:
    """One axial slice (x, y, 1) at world z = z_mm, sampled on its own in-plane grid."""
    shape = (int(round(280 / spacing[0])), int(round(220 / spacing[1])), 1)
    affine = phantoms.centred_affine(shape, (*spacing, 2.0))
    affine[2, 3] = z_mm
    return phantoms.sample(affine, shape, phantoms.Anatomy(**kwargs), name="slice")


@pytest.fixture(scope="module")
def slice2d():
    return slice_phantom()


@pytest.fixture(scope="module")
def volume():
    return phantoms.standard("plain")


def run(ph: phantoms.Phantom, seed: int, flat: bool = True, hint: bool = False, **params):
    """Synthesise on a phantom (its only slice when flat); returns (image, labels, lesions, records, inputs)."""
    img = ph.array[:, :, 0] if flat else ph.array
    lab = ph.lungs[:, :, 0] if flat else ph.lungs
    sp = tuple(ph.spacing[:2] if flat else ph.spacing)
    post, inf = orientation_hints(ph.affine)
    records = []
    out = synthesize_lesions(img, lab, sp, np.random.default_rng(seed), LesionParams(**params),
                             post[:2 if flat else 3] if hint else None, inf if hint and not flat else None,
                             records=records)
    return (*out, records, (img.astype(np.float32), lab, np.array(sp)))


def world(ph: phantoms.Phantom, mask: np.ndarray) -> np.ndarray:
    """World (RAS mm) positions of a mask's voxels (a slice's mask gets its z index back)."""
    idx = np.argwhere(mask.reshape(mask.shape + (1,) * (3 - mask.ndim)))
    return idx @ ph.affine[:3, :3].T + ph.affine[:3, 3]


def full(record, shape, what="mask"):
    out = np.zeros(shape, bool)
    out[record.box] = getattr(record, what) > (0 if what == "alpha" else False)
    return out


def check_invariants(image, labels, lesions, records, inputs):
    """What must hold for every draw: labels, image footprints, the other lung, the body."""
    img, lab, sp = inputs
    assert image.dtype == np.float32 and labels.dtype == np.uint8 and lesions.dtype == bool
    assert image.shape == img.shape == labels.shape == lesions.shape
    fluid = np.zeros(lab.shape, bool)
    footprint = np.zeros(lab.shape, bool)
    for r in records:
        mask, foot = full(r, lab.shape), full(r, lab.shape, "alpha")
        assert len(r.box) == lab.ndim and r.alpha.shape == r.mask.shape == mask[r.box].shape
        assert (lab[mask] == r.side).all(), f"{r.kind} voxels outside their own lung"
        other = lab == 3 - r.side
        assert not (foot & other).any(), f"{r.kind} paints over the other lung"
        outside = ndimage.distance_transform_edt(lab != r.side, sampling=sp)
        if r.kind == "effusion":
            fluid |= mask
        else:
            assert outside[foot].max(initial=0) <= 2.0 + 1e-6, f"{r.kind} reaches > 2 mm outside its lung"
        footprint |= foot
    assert (labels[lesions] == lab[lesions]).all() and (lab[lesions] > 0).all()
    assert not (lesions & fluid).any()
    changed = labels != lab
    assert (changed == (fluid & (lab > 0))).all(), "labels changed outside effusion"
    assert (labels[fluid] == 0).all()
    assert not (image != img)[~footprint].any(), "image changed outside the lesions' footprints"
    union = np.zeros(lab.shape, bool)
    for r in records:
        if r.kind != "effusion":
            union |= full(r, lab.shape)
    assert (lesions == union).all()


def touches_boundary(mask, lung, sp) -> bool:
    """Some lesion voxel lies within one voxel spacing of a voxel outside the lung."""
    outside = ndimage.distance_transform_edt(lung, sampling=sp)  # in the lung: distance to the nearest outside voxel
    return bool(mask.any() and outside[mask].min() <= max(sp) + 1e-6)


# ------------------------------------------------------------------------------------------------- tests


def test_same_seed_same_output_other_seeds_differ(slice2d, volume):
    for ph, flat in ((slice2d, True), (volume, False)):
        a, b = run(ph, 7, flat, **TUMOURS), run(ph, 7, flat, **TUMOURS)
        for x, y in zip(a[:3], b[:3]):
            assert np.array_equal(x, y)
        masks = [run(ph, seed, flat, **TUMOURS)[2] for seed in range(4)]
        assert sum(np.array_equal(masks[0], m) for m in masks[1:]) == 0


@pytest.mark.parametrize("seed", range(40))
def test_invariants_2d(slice2d, seed):
    out = run(slice2d, seed, count_probs=(0.2, 0.3, 0.3, 0.2), effusion_prob=0.3)
    check_invariants(*out)
    assert out[2].any() or not [r for r in out[3] if r.kind != "effusion"]


@pytest.mark.parametrize("seed", range(6))
def test_invariants_3d(volume, seed):
    check_invariants(*run(volume, seed, False, count_probs=(0.0, 0.3, 0.4, 0.3), effusion_prob=0.3))


def test_anisotropic_2d_and_3d(volume):
    ph2 = slice_phantom((1.2, 2.0))
    aniso = phantoms.variant(volume, "anisotropic")  # 2.4 x 3.0 x 4.5 mm
    for seed in range(8):
        out = run(ph2, seed, count_probs=(0.0, 0.5, 0.5), effusion_prob=0.3)
        check_invariants(*out)
        assert out[2].any()
    for seed in range(3):
        out = run(aniso, seed, False, count_probs=(0.0, 0.5, 0.5), effusion_prob=0.3)
        check_invariants(*out)
        assert out[2].any()


def test_tumour_density_texture_and_size(slice2d, volume):
    plain = dict(TUMOURS, necrosis_prob=0.0, spiculated_prob=0.0)
    for ph, flat, n in ((slice2d, True, 30), (volume, False, 6)):
        sp = ph.spacing[:2] if flat else ph.spacing
        voxel = np.prod(sp)
        for seed in range(n):
            image, _, _, records, _ = run(ph, seed, flat, **plain)
            (r,) = records
            core = r.mask & (r.alpha > 0.99)
            assert 8.0 <= r.diameter_mm <= 60.0
            if core.sum() >= 30:
                values = image[r.box][core]
                assert -20 <= values.mean() <= 80, values.mean()
                assert 10 <= values.std() <= 50, values.std()
            size = r.mask.sum() * voxel
            extent = (np.ptp(np.argwhere(r.mask), axis=0) + 1) * sp
            assert extent.max() <= 1.5 * r.diameter_mm + 2 * sp.max()  # lobes reach 1.4 x the radius
            if flat:  # a slice cuts the sphere at most 0.7 R off-centre; a lesion fills >= 1/4 of that cut
                assert size >= 0.25 * np.pi * (0.71 * r.diameter_mm / 2) ** 2 - 4 * voxel
            else:
                assert size >= 0.25 * 4 / 3 * np.pi * (r.diameter_mm / 2) ** 3 - 8 * voxel


def test_consolidation_density(slice2d):
    for seed in range(20):
        image, _, _, records, (img, _, _) = run(slice2d, seed, bronchogram_prob=0.0, **CONSOLIDATION)
        if not records:
            continue
        (r,) = records
        assert r.kind == "consolidation"
        core = r.mask & (r.alpha > 0.99) & (img[r.box] < -500)  # on aerated lung (vessels stay brighter)
        if core.sum() >= 30:
            assert -130 <= image[r.box][core].mean() <= 70


def test_air_bronchograms_are_air_inside_consolidation(slice2d):
    found = 0
    for seed in range(20):
        image, _, _, records, (img, _, _) = run(slice2d, seed, bronchogram_prob=1.0, dependent_prob=0.0,
                                                consolidation_depth_mm=(25.0, 45.0), **CONSOLIDATION)
        for r in records:
            air = r.mask & (image[r.box] < -600) & (img[r.box] < -600)
            found += air.sum() > 3
            assert r.mask.sum() > 5 * air.sum()  # tubes, not holes
    assert found >= 5


def test_juxtapleural_touch_the_pleura_and_stay_inside(slice2d, volume):
    for ph, flat, n in ((slice2d, True, 40), (volume, False, 12)):
        sp = ph.spacing[:2] if flat else ph.spacing
        lab = ph.lungs[:, :, 0] if flat else ph.lungs
        seen = 0
        for seed in range(n):
            _, _, _, records, _ = run(ph, seed, flat, juxtapleural_prob=1.0, **dict(TUMOURS))
            for r in records:
                mask, foot = full(r, lab.shape), full(r, lab.shape, "alpha")
                assert r.placement in PLACEMENTS
                assert touches_boundary(mask, lab == r.side, sp), (seed, r.placement)
                beyond = ndimage.distance_transform_edt(lab != r.side, sampling=sp)[foot]
                assert beyond.max() <= 2.0 + 1e-6  # flattened against the pleura, not pushed into the wall
                seen += 1
        assert seen >= n * 0.8


def test_pleural_overlap_broadens_the_base_against_the_pleura(slice2d):
    """More of the radius beyond the pleura (clipped there) gives broad-based masses: a larger share of the
    lesion lies along the pleura."""
    lab, sp = slice2d.lungs[:, :, 0], slice2d.spacing[:2]
    def contact_share(overlap):
        shares = []
        for seed in range(40):
            _, _, _, records, _ = run(slice2d, seed, True, juxtapleural_prob=1.0, diameter_mm=(30.0, 40.0),
                                      pleural_overlap=overlap, **dict(TUMOURS))
            for r in records:
                depth = ndimage.distance_transform_edt(lab == r.side, sampling=sp)[full(r, lab.shape)]
                shares.append(np.mean(depth <= max(sp) + 1e-6))
        assert len(shares) >= 20
        return float(np.mean(shares))
    assert contact_share((0.6, 0.75)) > 1.3 * contact_share((0.15, 0.2))


@pytest.mark.parametrize("flat", [True, False])
def test_placement_shares_as_configured(slice2d, volume, flat):
    ph, n = (slice2d, 200) if flat else (volume, 120)
    lab = ph.lungs[:, :, 0] if flat else ph.lungs
    placements, params = Counter(), LesionParams()
    for seed in range(n):
        _, _, _, records, _ = run(ph, seed, flat, **TUMOURS)
        for r in records:
            placements[r.placement] += 1
            pts = world(ph, full(r, lab.shape))
            centre = pts.mean(0)
            if r.placement == "spine":  # beside the vertebra
                assert np.linalg.norm(centre[:2] - SPINE_XY) < params.paravertebral_mm + r.diameter_mm / 2
            elif r.placement == "mediastinum":  # on the medial side of its lung
                assert abs(centre[0]) < phantoms.LUNG_CENTRE_X
            elif r.placement == "diaphragm":  # at the lung base
                assert pts[:, 2].min() < phantoms.LUNG_BASE_Z + phantoms.BASE_RISE_MM + 15
            elif r.placement == "chest_wall":
                assert np.linalg.norm(centre[:2] - SPINE_XY) > 20
    total = sum(placements.values())
    assert total >= 0.9 * n
    juxta = total - placements["intrapulmonary"]
    assert abs(juxta / total - params.juxtapleural_prob) < 0.12
    shown = PLACEMENTS[:3] if flat else PLACEMENTS  # the phantom's slice shows no diaphragm dome
    want = np.array([params.placement_probs[PLACEMENTS.index(p)] for p in shown])
    got = np.array([placements[p] for p in shown]) / juxta
    assert np.abs(got - want / want.sum()).max() < 0.12, dict(placements)


@pytest.mark.parametrize("storage", ["RAS", "LPS", "flipped"])
def test_effusion_is_posterior_fluid_and_background(volume, storage):
    ph3 = phantoms.variant(volume, storage)
    ph2 = slice_phantom(z_mm=-20.0)
    for ph, flat in ((ph2, True), (ph3, False)):
        lab = ph.lungs[:, :, 0] if flat else ph.lungs
        for seed in range(2):
            image, labels, lesions, records, _ = run(ph, seed, flat, count_probs=(1.0,), effusion_prob=1.0)
            effusions = [r for r in records if r.kind == "effusion"]
            assert len(effusions) == 2  # both lungs
            for r in effusions:
                fluid = full(r, lab.shape)
                assert fluid.any() and (labels[fluid] == 0).all() and (lab[fluid] == r.side).all()
                assert not lesions.any()
                fluid_y, lung_y = world(ph, fluid)[:, 1].mean(), world(ph, lab == r.side)[:, 1].mean()
                assert fluid_y < lung_y - 15, (storage, flat, fluid_y, lung_y)  # posterior: -y in RAS
                core = np.zeros(lab.shape, bool)
                core[r.box] = r.alpha >= 0.99  # not the partial-volume edge
                assert -10 <= image[core & fluid].mean() <= 30


def test_hints_match_the_anatomy(volume):
    for name in ("RAS", "LPS", "flipped", "oblique"):
        ph = phantoms.variant(volume, name)
        post, inf = orientation_hints(ph.affine)
        assert np.allclose(ph.affine[:3, :3] @ post / np.linalg.norm(ph.affine[:3, :3] @ post), [0, -1, 0])
        assert inf == (-1 if ph.affine[2, 2] > 0 else 1)
        for seed in range(2):  # effusion lies posterior with the hints and without them
            for hint in (True, False):
                _, _, _, records, _ = run(ph, seed, False, hint, count_probs=(1.0,), effusion_prob=1.0)
                for r in records:
                    y = world(ph, full(r, ph.lungs.shape))[:, 1].mean()
                    assert y < world(ph, ph.lungs == r.side)[:, 1].mean() - 15


def test_no_lungs_or_nothing_drawn_returns_the_input(slice2d):
    img, lab = slice2d.array[:, :, 0], slice2d.lungs[:, :, 0]
    out = synthesize_lesions(img, np.zeros_like(lab), (1.5, 1.5), np.random.default_rng(0))
    assert np.array_equal(out[0], img) and not out[1].any() and not out[2].any()
    out = synthesize_lesions(img, lab, (1.5, 1.5), np.random.default_rng(0), LesionParams(count_probs=(1.0,),
                                                                                             effusion_prob=0.0))
    assert np.array_equal(out[0], img) and np.array_equal(out[1], lab) and not out[2].any()
