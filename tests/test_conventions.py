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
from lungct.ct.conventions import ConventionParams, boundary_hu, dense_lesions, surface_ring, two_conventions
from lungct.ct.decision import DecisionMaps
from lungct.geometry import labels_to_grid

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
    # HU and the network's probability vote together (no HU is a cliff): mostly lung below -320 HU on a fine
    # grid, mostly tissue above the midpoint on a coarse one
    assert (fine.lungs[between] > 0).mean() > 0.8
    assert (coarse.lungs[between] == 0).mean() > 0.8


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
    assert result.lesion_ml == pytest.approx(
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
    assert np.array_equal(plain.lungs, plain.aerated) and plain.lesion_ml == 0


# ------------------------------------------------------------------------------- the lesion decision


def decision_maps(chest, lesion: np.ndarray, outside: np.ndarray, spacing_mm: float = 3.0) -> DecisionMaps:
    """The 3D lesion decision as its network would give it on a coarse RAS grid: lesion where `lesion`,
    outside where `outside` or beyond the lungs, lung elsewhere (each 0.9 certain), resampled from the
    phantom's grid by nearest neighbour."""
    code = np.where(lesion, 2, np.where(outside | (chest["lungs"] == 0), 0, 1)).astype(np.uint8)
    affine = np.diag([spacing_mm] * 3 + [1.0])
    corner = chest["affine"][:3, 3]
    affine[:3, 3] = corner
    extent = np.array(chest["hu"].shape) * SPACING
    shape = tuple(int(n) for n in np.ceil(extent / spacing_mm))
    coarse = labels_to_grid(code, chest["affine"], shape, affine)
    probability = np.full((3, *shape), 13, np.uint8)
    for value in range(3):
        probability[value][coarse == value] = 230
    return DecisionMaps(probability, affine)


def carved(chest, names=None) -> np.ndarray:
    """The phantom's lungs as a 2D network that cut the lesions out of them draws them."""
    cut = np.zeros(chest["lungs"].shape, bool)
    for name, lesion in chest["lesions"].items():
        if names is None or name in names:
            cut |= ndi.binary_dilation(lesion, iterations=1)  # the rim too: the network follows the tissue edge
    return np.where(cut, 0, chest["lungs"]).astype(np.uint8)


def decided(chest, labels: np.ndarray, decision: DecisionMaps):
    candidate, probability = network(labels, chest["spacing"])
    return two_conventions(candidate, probability, chest["hu"], chest["affine"], lambda hu: hu, chest["hu"],
                           labels, chest["affine"], P, decision)


@pytest.mark.parametrize("decision_mm, covered", [(2.0, 0.95), (3.0, 0.75)])
def test_lesions_the_2d_network_cut_out_join_their_lung_by_the_decision(chest, decision_mm, covered):
    """The 2D network cut the three juxtapleural lesions out (0 % inside); the decision calls them lesion:
    each comes back into its own lung in `lungs` and stays out of `aerated`; nothing else changes. On the
    decision's 3 mm grid a lesion's edge against the wall (soft tissue against soft tissue: only the
    decision says where the pleura runs) is known to half a decision voxel: a 20 mm lesion keeps >= 75 %."""
    labels = carved(chest)
    lesions = np.any(list(chest["lesions"].values()), axis=0)
    result = decided(chest, labels, decision_maps(chest, lesions, np.zeros_like(lesions), decision_mm))
    for name, lesion in chest["lesions"].items():
        assert (labels[lesion] == 0).all(), name
        assert (result.lungs[lesion] > 0).mean() >= covered, name
        assert (result.lungs[lesion] == chest["lungs"][lesion]).mean() >= covered, name  # in its own lung
        assert (result.aerated[lesion] == 0).mean() >= 0.85, name
    assert not ((result.lungs > 0) & (chest["hu"] > 300)).any()  # never the bony block
    beyond = (result.lungs > 0) & (chest["lungs"] == 0)
    assert beyond.sum() < 0.02 * (chest["lungs"] > 0).sum()
    assert result.lesion_ml == pytest.approx(lesions.sum() * SPACING ** 3 / 1000, rel=1 - covered + 0.1)


def test_dense_tissue_the_decision_calls_outside_leaves_both_conventions(chest):
    """A 2D network that took a block of soft tissue beside the mediastinum into the left lung (a normal
    hilum taken for lung): the decision calls it outside, and it leaves `lungs` and `aerated`; air and
    vessels the decision calls lung stay."""
    world = np.moveaxis(np.indices(chest["hu"].shape), 0, -1) @ chest["affine"][:3, :3].T + chest["affine"][:3, 3]
    left = np.argwhere(chest["lungs"] == 2)
    medial = left[np.argmax(world[tuple(left.T)][:, 0])]  # the left lung's medial edge (RAS: right is +x)
    hilum = (np.linalg.norm(world - world[tuple(medial)] - [6, 0, 0], axis=-1) < 9) & (chest["lungs"] == 0)
    hilum &= chest["with_vessels"] > 0
    labels = np.where(hilum, 2, chest["lungs"]).astype(np.uint8)
    case = dict(chest, hu=chest["with_vessels"])
    candidate, probability = network(labels, chest["spacing"])
    decision = decision_maps(chest, np.zeros_like(hilum), hilum)
    result = two_conventions(candidate, probability, case["hu"], chest["affine"], lambda hu: hu, case["hu"], labels,
                             chest["affine"], P, decision)
    assert hilum.sum() > 100
    assert (result.lungs[hilum] == 0).mean() > 0.95 and (result.aerated[hilum] == 0).mean() > 0.95
    for vessel in chest["vessels"]:
        assert (result.lungs[vessel] > 0).all()
    assert np.array_equal(result.lungs, result.aerated)  # no lesion: the conventions agree
    assert phantoms.dice(result.lungs > 0, chest["lungs"] > 0) > 0.99


def test_a_decided_lesion_that_touches_no_lung_is_not_taken(chest):
    """Lesion probability in the mediastinum, away from both lungs, is not lung."""
    far = np.zeros(chest["lungs"].shape, bool)
    distance = ndi.distance_transform_edt(chest["lungs"] == 0, sampling=chest["spacing"])
    far[(distance > 12) & (chest["hu"] > -200)] = True
    far &= ndi.binary_erosion(far, iterations=2)
    assert far.sum() > 50
    result = decided(chest, chest["lungs"], decision_maps(chest, far, np.zeros_like(far)))
    assert not (result.lungs[far] > 0).any()


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
    assert shell.sum() > 1000 and phantoms.dice(naive, truth) < 0.965
    assert phantoms.dice(refined, truth) > 0.99
    clearly_dense = case["hu"] >= P.boundary_hu + P.hu_width
    assert not (refined & ~truth & clearly_dense).any()  # the tissue of a too-wide shell all dropped
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
