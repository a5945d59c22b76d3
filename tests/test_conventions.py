"""The two lung conventions (lungct.ct.conventions) on the chest phantom, with the network's output emulated.

The phantom (tests/phantoms.py, 2 mm voxels, a slab around z = 0) gets objects painted in with a partial-volume
edge: three soft-tissue lesions (20 mm spheres) inside the lungs, each touching the pleura - against the chest
wall, against a bony block beside the spine (paravertebral) and against the mediastinum - and two 3 mm vessels
running obliquely through the lungs. The "network" is emulated on the same grid: candidate labels (the nearest
lung) and a uint8 probability that is 255 inside the true lungs (lesions included) and 0 outside, with a ramp of
20 per mm across the surface, so the band (26 .. 230) is about two voxels on either side.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

import phantoms
from lungct.ct.conventions import (ConventionParams, boundary_hu, carved_lesions, dense_lesions, lesion_end_caps, surface_ring,
                                  where_network_doubts,
                                   two_conventions)

P = ConventionParams()
SPACING = 2.0


def signed_distance(mask: np.ndarray, spacing) -> np.ndarray:
    """mm from the surface half-way between voxel centres; positive inside."""
    inside = ndi.distance_transform_edt(mask, sampling=spacing) - spacing[0] / 2
    outside = ndi.distance_transform_edt(~mask, sampling=spacing) - spacing[0] / 2
    return np.where(mask, inside, -outside)


def network(labels: np.ndarray, spacing, grow: int = 0, slope: float = 20.0):
    """(candidate, probability) as the segmenter interpolates them, the surface moved out by `grow` voxels
    (in by -grow)."""
    mask = labels > 0
    if grow > 0:
        mask = ndi.binary_dilation(mask, iterations=grow)
    elif grow < 0:
        mask = ndi.binary_erosion(mask, iterations=-grow, border_value=1)
    probability = np.clip(np.round(128 + slope * signed_distance(mask, spacing)), 0, 255).astype(np.uint8)
    _, index = ndi.distance_transform_edt(labels == 0, return_indices=True)
    candidate = np.where(probability > 0, labels[tuple(index)], 0).astype(np.uint8)
    return candidate, probability


def run(case: dict, candidate=None, probability=None, params: ConventionParams = P, native_affine=None):
    """The conventions on the phantom's grid; the network's own labels (around whose surface the band may move
    the boundary) are the emulated prediction's."""
    cand, prob = (case["candidate"], case["probability"]) if candidate is None else (candidate, probability)
    affine = case["affine"] if native_affine is None else native_affine
    network_labels = np.where(prob >= 128, cand, 0).astype(np.uint8)
    return two_conventions(cand, prob, case["hu"], affine, lambda hu: hu, case["hu"], network_labels, affine, params)


def flip_affine(affine: np.ndarray, shape, axes) -> np.ndarray:
    """The affine that keeps voxels in place when the array's `axes` are reversed."""
    out = affine.copy()
    for axis in axes:
        flip = np.eye(4)
        flip[axis, axis], flip[axis, 3] = -1, shape[axis] - 1
        out = out @ flip
    return out


@pytest.fixture(scope="module")
def chest() -> dict:
    ph = phantoms.make_phantom((112, 80, 30), (SPACING,) * 3, stomach_gas=False, couch=False, name="conventions")
    spacing = ph.spacing
    hu, lungs = ph.array.astype(np.float32), ph.lungs
    world = np.moveaxis(np.indices(hu.shape), 0, -1) @ ph.affine[:3, :3].T + ph.affine[:3, 3]
    in_lung = lungs > 0

    def paint(distance_mm, value, where):  # partial volume: the covered fraction of each voxel
        f = np.clip(0.5 + distance_mm / SPACING, 0, 1) * where
        hu[:] = hu * (1 - f) + value * f

    def pleura(side: int, score) -> tuple[np.ndarray, np.ndarray]:
        """The surface point of one lung (mid slab) that maximises `score`, and the unit vector inwards."""
        k = hu.shape[2] // 2
        own = lungs[:, :, k] == side
        points = world[:, :, k][own & ~ndi.binary_erosion(own)]
        point = points[np.argmax(score(points))]
        centre_x = phantoms.LUNG_CENTRE_X if side == 1 else -phantoms.LUNG_CENTRE_X  # side 1: right (+x)
        inward = np.array([centre_x - point[0], -point[1], 0.0])  # towards the lung's axis, in the slice
        return point, inward / np.linalg.norm(inward)

    sites = {"chest wall": pleura(1, lambda p: p[:, 0]),  # the right lung's lateral surface
             "mediastinum": pleura(2, lambda p: p[:, 0]),  # the left lung's medial surface
             "spine": pleura(1, lambda p: -np.hypot(p[:, 0] - phantoms.SPINE_CENTRE[0], p[:, 1] - phantoms.SPINE_CENTRE[1]))}
    point, inward = sites["spine"]  # a bony block (450 HU) against the posteromedial pleura
    paint(15.0 - np.linalg.norm((world - (point - 16 * inward))[..., :2], axis=-1), 450.0, ~in_lung)
    vessels = []
    for a, b in (((50, -30, -25), (70, 30, 25)), ((-70, 20, -25), (-45, -25, 25))):
        a, b = np.array(a, float), np.array(b, float)
        t = np.clip(((world - a) @ (b - a)) / ((b - a) @ (b - a)), 0, 1)
        distance = 1.5 - np.linalg.norm(world - (a + t[..., None] * (b - a)), axis=-1)  # 3 mm rods
        paint(distance, 40.0, in_lung)
        vessels.append((distance > 0) & in_lung)
    with_vessels = hu.copy()
    lesions = {}
    for name, (point, inward) in sites.items():  # 20 mm spheres centred 4 mm inside the pleura
        distance = 10.0 - np.linalg.norm(world - (point + 4 * inward), axis=-1)
        paint(distance, 40.0, in_lung)
        lesions[name] = (distance > 0) & in_lung
    candidate, probability = network(lungs, spacing)
    return {"hu": hu, "with_vessels": with_vessels, "lungs": lungs, "affine": ph.affine,
            "spacing": spacing, "airway": ph.airway, "lesions": lesions, "vessels": vessels, "candidate": candidate,
            "probability": probability}


# ------------------------------------------------------------------------------------------ boundary_hu


def test_boundary_is_textbook_on_fine_grids_and_partial_volume_midpoint_on_coarse_ones():
    rng = np.random.default_rng(0)
    labels = np.zeros((40, 40, 10), np.uint8)
    labels[5:35, 5:35] = 1
    for lung_hu in (-850.0, -950.0):
        hu = np.where(labels > 0, lung_hu, 40.0) + rng.normal(0, 15, labels.shape)
        assert boundary_hu(hu, labels, (0.7, 0.7, 1.0), P) == P.boundary_hu
        assert boundary_hu(hu, labels, (2.0, 2.0, 2.0), P) == P.boundary_hu  # the limit is inclusive
        assert boundary_hu(hu, labels, (0.7, 0.7, 5.0), P) == pytest.approx((lung_hu + 40) / 2, abs=3)
    dense_lungs = np.where(labels > 0, -500.0, 40.0)  # no parenchyma to measure: the textbook value
    assert boundary_hu(dense_lungs, labels, (3.0, 3.0, 3.0), P) == P.boundary_hu


def test_coarse_native_grid_uses_the_midpoint_in_the_band(chest):
    chest = dict(chest, hu=chest["with_vessels"])  # no lesions: every dense voxel in the band is tissue
    fine = run(chest)
    coarse_affine = chest["affine"].copy()
    coarse_affine[:3, :3] *= 1.5  # the same voxels, 3 mm apart
    coarse = run(chest, native_affine=coarse_affine)
    assert fine.boundary_hu == P.boundary_hu
    assert coarse.boundary_hu == pytest.approx((-850 + 40) / 2, abs=5)
    band = (chest["probability"] > P.band[0]) & (chest["probability"] < P.band[1]) & (chest["candidate"] > 0)
    band &= surface_ring(chest["lungs"]) > 0  # the band only moves the surface by a network voxel
    between = band & (chest["hu"] >= coarse.boundary_hu) & (chest["hu"] < fine.boundary_hu)
    assert between.sum() > 50
    assert (fine.lungs[between] > 0).all()  # lung below -320 HU on a fine grid
    assert (coarse.lungs[between] == 0).all()  # tissue above the midpoint on a coarse one


# ----------------------------------------------------------------------------------------- dense lesions


@pytest.mark.parametrize("spacing", [(1.5, 1.5, 1.5), (1.5, 1.5, 5.0)])
def test_dense_lesions_are_thick_objects_never_vessels(spacing):
    shape = (64, 64, int(round(60 / spacing[2])))
    affine = np.diag([*spacing, 1.0])
    centres = np.moveaxis(np.indices(shape), 0, -1) * np.array(spacing)
    labels = np.zeros(shape, np.uint8)
    labels[:, 4:60] = 1  # tissue beyond y = 60 voxels: the wall the lesions touch
    hu = np.where(labels > 0, -850.0, 40.0)
    objects = {}
    for name, (x, diameter) in {"rod 3 mm": (12, 3.0), "rod 5 mm": (24, 5.0), "rod 6 mm": (36, 6.0)}.items():
        distance = diameter / 2 - np.hypot(centres[..., 0] - x, centres[..., 1] - 30)  # vertical rods
        objects[name] = distance
    objects["sphere 16 mm"] = 8.0 - np.linalg.norm(centres - [60, 40, 30], axis=-1)
    objects["sphere on the wall"] = 10.0 - np.linalg.norm(centres - [75, 60 * spacing[1] - 4, 30], axis=-1)
    for distance in objects.values():
        f = np.clip(0.5 + distance / spacing[0], 0, 1) * (labels > 0)
        hu = hu * (1 - f) + 40.0 * f
    found = dense_lesions(hu, labels, affine, P.boundary_hu, P)
    for name, distance in objects.items():
        inside = (distance > 0) & (labels > 0)
        if name.startswith("rod"):
            assert not found[inside].any(), name
        else:
            assert found[inside].mean() > 0.9, name
    assert not (found & (labels == 0)).any()  # never the wall beyond the lungs
    assert not (found & (hu < P.boundary_hu)).any()  # only dense voxels



def test_a_12_mm_nodule_on_5_mm_slices_is_a_lesion_and_an_8_mm_vessel_is_not():
    """Like radiomics-lung1's tumour (12-14 mm across in two 5 mm slices, less in the next): its centre
    between two slices, so no 11 mm ball fits its voxels, yet it is a lesion (the ball-only test found none
    of it)."""
    spacing = (1.5, 1.5, 5.0)
    shape = (48, 48, 9)
    centres = np.moveaxis(np.indices(shape), 0, -1) * np.array(spacing)
    labels = np.ones(shape, np.uint8)
    nodule = np.linalg.norm((centres - [36, 24, 22.5]) / [6.0, 6.0, 8.0], axis=-1) <= 1  # 12 mm in slices 4-5
    rod = np.hypot(centres[..., 0] - 36, centres[..., 1] - 54) <= 4.0  # an 8 mm vessel through every slice
    hu = np.where(nodule | rod, 40.0, -850.0)
    found = dense_lesions(hu, labels, np.diag([*spacing, 1.0]), P.boundary_hu, P)
    assert sorted(set(np.nonzero(nodule)[2])) == [3, 4, 5, 6]
    assert found[nodule].mean() > 0.9
    assert not found[rod].any()

def test_lesions_touching_the_pleura_stay_in_lungs_and_leave_aerated(chest):
    result = run(chest)
    outside = chest["lungs"] == 0
    for name, lesion in chest["lesions"].items():
        assert lesion.sum() > 300, name
        contact = ndi.binary_dilation(lesion, iterations=2) & outside
        assert (chest["hu"][contact] > (300 if name == "spine" else 0)).sum() > 20, name  # against tissue or bone
        assert (result.lungs[lesion] > 0).mean() >= 0.95, name
        assert (result.lungs[lesion] == chest["lungs"][lesion]).mean() >= 0.95, name  # on the right side
        assert (result.aerated[lesion] == 0).mean() >= 0.9, name
    assert result.lesion_ml_network_grid == pytest.approx(
        sum(m.sum() for m in chest["lesions"].values()) * SPACING ** 3 / 1000, rel=0.25)


def test_lesions_touching_the_pleura_stay_entirely_in_lungs(chest):
    result = run(chest)
    for name, lesion in chest["lesions"].items():
        assert (result.lungs[lesion] > 0).all(), name


def test_vessels_stay_in_both_conventions(chest):
    result = run(chest)
    for vessel in chest["vessels"]:
        assert vessel.sum() > 40
        assert (result.lungs[vessel] > 0).all() and (result.aerated[vessel] > 0).all()
    no_lesions = dict(chest, hu=chest["with_vessels"])  # vessels only: the two conventions agree
    plain = run(no_lesions)
    assert np.array_equal(plain.lungs, plain.aerated) and plain.lesion_ml_network_grid == 0


# ------------------------------------------------------------------------------- carved-out lesions


def carved(chest, names=None) -> np.ndarray:
    """The phantom's lungs as a 2D network that cut the lesions out of them draws them."""
    cut = np.zeros(chest["lungs"].shape, bool)
    for name, lesion in chest["lesions"].items():
        if names is None or name in names:
            cut |= ndi.binary_dilation(lesion, iterations=1)  # the rim too: the network follows the tissue edge
    return np.where(cut, 0, chest["lungs"]).astype(np.uint8)


def test_lesions_the_network_cut_out_are_taken_back_into_the_right_lung(chest):
    """A 2D network that cut the three juxtapleural lesions out (0 % inside): most of each comes back into
    its own lung (on this 2 mm phantom the closing runs at 4 mm and the lesions' partial-volume edge, a
    quarter of their voxels, is below the soft-tissue range), left out of `aerated`, and nothing else does."""
    labels = carved(chest)
    recovered = carved_lesions(labels, chest["hu"], chest["affine"], P)
    joined = np.where(recovered > 0, recovered, labels)
    candidate, probability = network(joined, chest["spacing"])
    result = two_conventions(candidate, probability, chest["hu"], chest["affine"], lambda hu: hu, chest["hu"],
                             joined, chest["affine"], P, recovered=recovered)
    for name, lesion in chest["lesions"].items():
        assert (labels[lesion] == 0).all(), name  # cut out before
        assert (result.lungs[lesion] > 0).mean() >= 0.65, name
        assert (result.lungs[lesion] == chest["lungs"][lesion]).mean() >= 0.65, name  # in its own lung
        assert (result.aerated[lesion] == 0).mean() >= 0.85, name
    near = np.any([ndi.binary_dilation(m, iterations=2) for m in chest["lesions"].values()], 0)
    assert ((recovered > 0) & (chest["lungs"] == 0) & ~near).sum() < 20  # no wall, bone or mediastinum
    assert not ((recovered > 0) & (chest["hu"] >= P.recover_hu[1])).any()  # never the bony block
    without = two_conventions(*network(labels, chest["spacing"]), chest["hu"], chest["affine"], lambda hu: hu,
                              chest["hu"], labels, chest["affine"], P)
    for name, lesion in chest["lesions"].items():
        assert (without.lungs[lesion] > 0).mean() < 0.2, name  # what the band alone would have kept


def test_a_lung_without_notches_gets_nothing_back(chest):
    lungs = chest["lungs"]
    assert not carved_lesions(lungs, chest["with_vessels"], chest["affine"], P).any()
    off = ConventionParams(recover_radius_mm=0)
    assert not carved_lesions(carved(chest), chest["hu"], chest["affine"], off).any()


def test_a_notch_too_large_for_its_lung_is_left_alone(chest):
    """Tissue filling a 50 mm ball where the right lung was: taken back while it is a small share of the lung,
    left alone once it is more than recover_max_fraction of it (a notch the size of a lobe is more likely
    the network's error than a lesion, and taking the wall behind it would amplify that error)."""
    world = np.moveaxis(np.indices(chest["hu"].shape), 0, -1) @ chest["affine"][:3, :3].T + chest["affine"][:3, 3]
    right = np.argwhere(chest["lungs"] == 1)
    edge = right[np.argmax(world[tuple(right.T)][:, 0])]  # the right lung's lateral surface
    hole = (np.linalg.norm(world - world[tuple(edge)], axis=-1) < 25) & (chest["lungs"] == 1)
    labels = np.where(hole, 0, chest["lungs"]).astype(np.uint8)
    hu = np.where(hole, 40.0, chest["with_vessels"])
    taken = carved_lesions(labels, hu, chest["affine"], P)
    assert (taken[hole] == 1).mean() > 0.5 and (taken == 1).sum() > 0.02 * (labels == 1).sum()
    assert not (taken == 2).any()
    assert not carved_lesions(labels, hu, chest["affine"], ConventionParams(recover_max_fraction=0.02)).any()


def test_a_single_slice_gets_nothing_back(chest):
    """Without the slices above and below, a closing cannot tell a lesion from a diaphragm dome."""
    k = chest["hu"].shape[2] // 2
    labels = carved(chest)[:, :, k:k + 1]
    assert not carved_lesions(labels, chest["hu"][:, :, k:k + 1], chest["affine"], P).any()



def test_what_the_network_was_sure_is_not_that_lung_is_not_taken_back(chest):
    """The three carved-out lesions: where the network gave the lesion's own lung some probability it comes
    back; where it was sure (score below recover_min_probability), as for the aorta, it does not; a score
    for the other lung does not count."""
    labels = carved(chest)
    recovered = carved_lesions(labels, chest["hu"], chest["affine"], P)
    scores = np.zeros((2, *labels.shape), np.uint8)
    doubted = chest["lesions"]["chest wall"]  # right lung (1)
    scores[0][doubted] = 20
    scores[1][chest["lesions"]["spine"]] = 200  # the spine lesion is in the right lung: the left's score is no doubt
    kept = where_network_doubts(recovered, scores, [1, 2], P)
    assert (kept[doubted] == recovered[doubted]).all() and (kept[doubted] == 1).mean() >= 0.5
    assert not kept[chest["lesions"]["spine"]].any() and not kept[chest["lesions"]["mediastinum"]].any()
    assert not (kept & ~(recovered > 0)).any()
    everything = where_network_doubts(recovered, np.full(scores.shape, 2, np.uint8), [1, 2], P)
    assert (everything == recovered).all()  # 2 of 255 is doubt enough

def test_a_lesion_at_the_base_of_the_lung_gets_its_end_one_thick_slice_on():
    """Like radiomics-lung2's tumour: against the wall at the lung's base, taken back in its upper 5 mm
    slices; its lowest slice, where the lung is only a strip beside it, comes with it under the
    cross-section above shrunk by cap_shrink_mm: never bone, never a slice further."""
    spacing, shape = (1.5, 1.5, 5.0), (64, 64, 8)
    affine = np.diag([*spacing, 1.0])
    x, y = np.indices(shape[:2])
    lung = np.zeros(shape, np.uint8)
    lung[8:56, 8:56, 2:] = 1
    lung[8:44, 8:56, 1] = 1  # the lowest slice: lung only beside the tumour
    tumour = np.zeros(shape, bool)
    tumour[:, :, 1:5] = (np.hypot(x - 48, y - 32) <= 9)[..., None]  # against the wall at x = 56
    hu = np.where(lung > 0, -850.0, 40.0)
    hu[tumour] = 40.0
    hu[58:, :, :] = 400.0  # a rib beyond the wall
    labels = np.where(tumour, 0, lung).astype(np.uint8)  # the network cut the tumour out ...
    recovered = np.where(tumour & (np.arange(8) >= 2), 1, 0).astype(np.uint8)  # ... the closing took its upper slices
    capped = lesion_end_caps(recovered, labels, hu, affine, P)
    end = tumour[:, :, 1]
    assert (recovered[:, :, 1] == 0).all()
    within = (np.hypot(x - 48, y - 32) <= 9 - P.cap_shrink_mm / 1.5)
    assert (capped[:, :, 1][within & end] == 1).all()
    assert (capped[:, :, 1] > 0).sum() <= end.sum()
    assert not (capped[:, :, 0] > 0).any()  # a slice further: no lung there to touch
    assert not (capped[hu >= P.recover_hu[1]] > 0).any()
    assert ((capped > 0) & (recovered == 0) & ~tumour).sum() == 0

# ---------------------------------------------------------------------------------------- the band


@pytest.mark.parametrize("grow", [1, -1])
def test_band_follows_the_hu_edge(chest, grow):
    """A probability surface a network voxel too wide is trimmed to the air; one too narrow grows to it (the
    band moves the surface by at most one network voxel: here the native grid is the network's)."""
    case = dict(chest, hu=chest["with_vessels"])
    truth = chest["lungs"] > 0
    candidate, probability = network(chest["lungs"], chest["spacing"], grow=grow)
    result = run(case, candidate, probability)
    naive = np.where(probability >= 128, candidate, 0) > 0
    shell = naive ^ truth  # where the emulated network is wrong
    refined = result.lungs > 0
    dense = case["hu"] >= P.boundary_hu
    assert shell.sum() > 1000 and phantoms.dice(naive, truth) < 0.965
    assert phantoms.dice(refined, truth) > 0.99
    assert not (refined & ~truth & dense).any()  # the tissue of a too-wide shell all dropped
    if grow < 0:
        assert (refined[shell] == truth[shell]).mean() > 0.99  # the lung of a too-narrow shell all back
    else:  # what stays of a too-wide shell: partial-volume voxels of the surface (below -320 HU) or airway air
        near_airway = ndi.binary_dilation(chest["airway"], iterations=2)
        assert not (refined & ~truth & (ndi.distance_transform_edt(~truth) > 1.5) & ~near_airway).any()
    assert (result.lungs[refined & truth] == chest["lungs"][refined & truth]).all()


def test_nothing_changes_outside_the_band_except_lesions_in_aerated(chest):
    result = run(chest)
    cand, prob = chest["candidate"], chest["probability"]
    band = (prob > P.band[0]) & (prob < P.band[1]) & (cand > 0)
    naive = np.where(prob >= 128, cand, 0)
    assert np.array_equal(result.lungs[~band], naive[~band])
    lesions = dense_lesions(chest["hu"], chest["lungs"], chest["affine"], result.boundary_hu, P)
    removed = result.aerated != result.lungs
    assert np.array_equal(removed, lesions & (chest["hu"] >= result.boundary_hu) & (result.lungs > 0))
    assert not (result.aerated & (result.lungs == 0)).any()


# --------------------------------------------------------------------------------------- orientation


def test_flipping_an_axis_of_everything_flips_the_result(chest):
    reference = run(chest)
    for axis in (0, 1, 2):
        flipped = {k: np.flip(v, axis).copy() if isinstance(v, np.ndarray) and v.ndim == 3 else v
                   for k, v in chest.items()}
        flipped["affine"] = flip_affine(chest["affine"], chest["hu"].shape, [axis])
        result = run(flipped)
        assert np.array_equal(result.lungs, np.flip(reference.lungs, axis)), axis
        assert np.array_equal(result.aerated, np.flip(reference.aerated, axis)), axis


def test_native_lps_grid_with_network_on_ras(chest):
    """The network works on RAS while the scan is stored LPS: the lesions cross grids by world position."""
    reference = run(chest)
    axes = (0, 1)
    native = {k: np.flip(chest[k], axes).copy() for k in ("candidate", "probability", "hu")}
    native_affine = flip_affine(chest["affine"], chest["hu"].shape, axes)
    result = two_conventions(native["candidate"], native["probability"], native["hu"], native_affine, lambda hu: hu,
                             chest["hu"], chest["lungs"], chest["affine"], P)
    assert np.array_equal(result.lungs, np.flip(reference.lungs, axes))
    assert np.array_equal(result.aerated, np.flip(reference.aerated, axes))


def test_stored_units_are_read_through_the_calibration(chest):
    """A scan stored with air at -790 (ct-slices) gives the same masks when `to_stored` maps HU to its units."""
    slope, intercept = 1.2, 0.0 - 1000 + 790 * 1.2  # HU = stored * slope + intercept, air -790 -> -1000
    stored = (chest["hu"] - intercept) / slope
    reference = run(chest)
    result = two_conventions(chest["candidate"], chest["probability"], stored, chest["affine"],
                             lambda hu: (hu - intercept) / slope, chest["hu"], chest["lungs"], chest["affine"], P)
    assert np.array_equal(result.lungs, reference.lungs) and np.array_equal(result.aerated, reference.aerated)
