"""Two lung conventions from one prediction, at the scan's own resolution (docs/conventions.md).

`lungs` (the default): everything inside the visceral pleura, tumours, consolidation and atelectasis
included. `aerated`: the same lungs without dense lesions; vessels and small airways stay in, as
threshold-based references draw them.

Both start from the 2D lung network's interpolated probability on the native grid, its boundary refined
where the model is unsure (a thin band around its surface, where the interpolated probability lies
between `band`): there a voxel is lung when the calibrated HU around it (its in-plane neighbourhood's
mean, so that no HU value is a cliff in the lungs' histogram) is below the air/tissue boundary, or when it
belongs to a lesion, or when the lung surrounds it in its slice (a vessel). The boundary is -320 HU on
fine grids; on scans coarser than `partial_volume_spacing_mm` it is half-way between the lungs' own
density and soft tissue, as a voxel there is lung when most of it is lung.

Which dense tissue is a lesion comes from the model's lesion decision (lungct.ct.decision: a 3D network
that sees the whole chest): its lesions join the nearest lung in `lungs` and leave `aerated` where dense;
dense voxels the 2D network drew as lung and the decision calls outside (a normal hilum, a diaphragm dome
on thick slices) leave both. Without a decision (a single slice, or a model without that stage) the
dense-lesion rule stands in: dense objects thick enough to hold a ball of `lesion_min_diameter_mm`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from lungct.ct.decision import LESION, LUNG, OUTSIDE, DecisionMaps
from lungct.geometry import field_to_grid, labels_to_grid, shifted_affine, voxel_spacing
from lungct.morphology import bounding_box, dilate_mm, erode_mm, fill_holes_2d, parts_touching

SOFT_TISSUE_HU = 40.0
BONE_HU = 300.0
MIN_RIM_SCORE = 64  # a dense voxel joins a lesion's rim only where the lesion is at least this probable (0.25)


@dataclass(frozen=True)
class ConventionParams:
    boundary_hu: float = -320.0  # air/tissue boundary on fine grids
    partial_volume_spacing_mm: float = 2.0  # coarser native voxels: the partial-volume midpoint instead
    parenchyma_below_hu: float = -600.0  # voxels that measure the lungs' own density on coarse scans
    band: tuple = (64, 192)  # uint8 probabilities (0.25 .. 0.75) where the model is unsure: refined by HU
    neighbourhood_mm: float = 2.6  # a voxel is judged dense on the mean HU of its in-plane neighbours this wide
    hu_width: float = 100.0  # in the band, this many HU from the boundary outweigh the network's doubt
    lesion_min_diameter_mm: float = 11.0  # without a decision: dense objects this thick are lesions
    lesion_margin_mm: float = 3.0  # ... grown back this far beyond the opening (their rim against the pleura)
    lung_probability_floor: float = 0.005  # a decided lesion counts as seen by the 2D network above this ...
    min_lung_share: float = 0.0  # ... on at least this share of its voxels (0: every decided lesion is kept)

    @classmethod
    def from_steps(cls, boundary: dict | None, dense_rule: dict | None, decision: dict | None = None) -> "ConventionParams":
        """The parameters the checkpoint's recorded `boundary`, `dense_lesion_rule` and `lesion_decision`
        steps give (the decision's own: those the conventions use)."""
        fields = set(cls.__dataclass_fields__)
        values = {}
        for step in (boundary or {}, dense_rule or {}, {k: v for k, v in (decision or {}).items() if k in fields}):
            values.update({k: tuple(v) if isinstance(v, list) else v for k, v in step.items()})
        return cls(**values)


@dataclass
class Conventions:
    lungs: np.ndarray  # uint8 labels, lesion-inclusive (the default)
    aerated: np.ndarray  # uint8 labels without dense lesions
    boundary_hu: float
    lesion_ml: float  # dense lesion, as the written grid measures it


def boundary_hu(hu_network: np.ndarray, labels_network: np.ndarray, native_spacing, p: ConventionParams) -> float:
    """The HU that separates lung from tissue at the scan's own resolution."""
    if max(native_spacing) <= p.partial_volume_spacing_mm:
        return p.boundary_hu
    parenchyma = hu_network[(labels_network > 0) & (hu_network < p.parenchyma_below_hu)]
    if parenchyma.size == 0:
        return p.boundary_hu
    return min((float(np.median(parenchyma)) + SOFT_TISSUE_HU) / 2, p.boundary_hu)


def dense_lesions(hu_network: np.ndarray, labels_network: np.ndarray, affine_network: np.ndarray, threshold_hu: float,
                  p: ConventionParams) -> np.ndarray:
    """Dense objects inside the lungs thick enough to hold a ball of `lesion_min_diameter_mm` (vessels are
    thinner), grown back by `lesion_margin_mm`, on the network's grid (bool). On slices thicker than a
    quarter of that diameter a nodule spans too few of them for a ball (a 13 mm nodule: three 5 mm slices,
    the outer two in partial volume), so there it need only hold, in one slice, the ball's cross-section half
    a slice from its centre, and grows back through the neighbouring slices."""
    spacing = voxel_spacing(affine_network)
    dense = (hu_network >= threshold_hu) & (labels_network > 0)
    radius, grow = p.lesion_min_diameter_mm / 2, p.lesion_min_diameter_mm / 2 + p.lesion_margin_mm
    if dense.shape[2] == 1:  # one slice: a disc
        return dilate_mm(erode_mm(dense, radius, spacing, in_plane=True), grow, spacing, in_plane=True) & dense
    if spacing[2] <= radius / 2:
        return dilate_mm(erode_mm(dense, radius, spacing), grow, spacing) & dense
    section = np.sqrt(radius ** 2 - min(spacing[2], radius) ** 2 / 4)
    lesions = dilate_mm(erode_mm(dense, section, spacing, in_plane=True), grow, spacing, in_plane=True)
    reach = int(grow // spacing[2])
    if reach:
        lesions = ndi.binary_dilation(lesions, np.ones((1, 1, 2 * reach + 1), bool))
    return lesions & dense


def surface_ring(labels_network: np.ndarray) -> np.ndarray:
    """uint8 1 within one network voxel of the lungs' surface: the band may only move the boundary there,
    never bring in air the model left out far from the lungs (gas, airways, air outside the body)."""
    lung = labels_network > 0
    cross = ndi.generate_binary_structure(lung.ndim, 1)
    return (ndi.binary_dilation(lung, cross) & ~ndi.binary_erosion(lung, cross)).astype(np.uint8)


def neighbourhood_size(spacing_mm: float, width_mm: float) -> int:
    """The odd number of voxels across that fits in `width_mm` (1 on coarse grids: the voxel alone)."""
    return 1 + 2 * max(0, int((width_mm / spacing_mm - 1) // 2))


def local_mean(stored: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """The mean of each point's `size` x `size` in-plane neighbourhood (clipped at the array's edge)."""
    if size <= 1:
        return stored[tuple(points.T)].astype(np.float32)
    total = np.zeros(len(points), np.float32)
    reach = size // 2
    for dx in range(-reach, reach + 1):
        for dy in range(-reach, reach + 1):
            x = np.clip(points[:, 0] + dx, 0, stored.shape[0] - 1)
            y = np.clip(points[:, 1] + dy, 0, stored.shape[1] - 1)
            total += stored[x, y, points[:, 2]]
    return total / size ** 2


def dense_at(stored: np.ndarray, where: np.ndarray, threshold_stored: float, size: int) -> np.ndarray:
    """bool over `where`'s True voxels (in order): dense by their neighbourhood's mean stored value."""
    return local_mean(stored, np.argwhere(where), size) >= threshold_stored


def band_keeps(stored: np.ndarray, band: np.ndarray, probability: np.ndarray, threshold_stored: float, to_stored,
               threshold_hu: float, p: ConventionParams, size: int) -> np.ndarray:
    """bool over the band's voxels (fine grids): lung. The network's probability and the HU around the voxel
    vote together: at the boundary HU the probability decides, `hu_width` HU below or above it outweigh the
    whole band's range of probability. No HU value is a cliff, so the lungs' histogram has no step there
    (a hard -320 HU cut made one: 2.4 times as many voxels in the 10 HU below it as in the 10 above)."""
    mean = local_mean(stored, np.argwhere(band), size)
    per_hu = (to_stored(threshold_hu + p.hu_width) - threshold_stored) / p.hu_width  # stored units per HU
    below_hu = (threshold_stored - mean) / per_hu
    width = (p.band[1] - p.band[0]) / 2
    return (probability.astype(np.float32) - 128) / width + below_hu / p.hu_width > 0


def lesion_margins(decision: DecisionMaps) -> tuple[np.ndarray, np.ndarray]:
    """(how far the lesion probability beats both others, how far it beats outside alone), float32 on the
    decision grid; a voxel is lesion where the first is positive, or where it is dense and the second is
    (its partial-volume rim against the lung, where the lung's probability rises)."""
    scores = decision.probability.astype(np.int16)
    over_both = scores[LESION] - np.maximum(scores[OUTSIDE], scores[LUNG])
    over_outside = np.where(scores[LESION] >= MIN_RIM_SCORE, scores[LESION] - scores[OUTSIDE], -255)
    return over_both.astype(np.float32), over_outside.astype(np.float32)


def decided_regions(decision: DecisionMaps, margins: tuple[np.ndarray, np.ndarray], box_shape,
                    box_affine: np.ndarray, dense: np.ndarray, candidates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lesion, outside) over a native box: the decision's probabilities interpolated linearly between its
    voxels, only where they can matter (around a coarse lesion; in the box of the `candidates`, dense
    voxels the 2D network drew as lung). `margins` are the decision's `lesion_margins`; `dense` (bool
    over the box) is what a lesion's rim may take."""
    scores = decision.probability.astype(np.int16)
    outside_margin = (scores[OUTSIDE] - np.maximum(scores[LUNG], scores[LESION])).astype(np.float32)
    over_both, over_outside = margins
    to_decision = np.linalg.inv(decision.affine) @ box_affine
    lesion = np.zeros(tuple(box_shape), bool)
    parts, _ = ndi.label(ndi.binary_dilation(over_both > 0))
    for part_box in ndi.find_objects(parts):  # each decided lesion in its own native box
        part = np.zeros(parts.shape, bool)
        part[part_box] = parts[part_box] > 0
        sub = native_box(part, decision.affine, box_affine, box_shape)
        if any(b.stop <= b.start for b in sub):
            continue
        sub_shape, sub_affine = [b.stop - b.start for b in sub], shifted_affine(box_affine, [b.start for b in sub])
        core = field_to_grid(over_both, decision.affine, sub_shape, sub_affine, -255.0) > 0
        rim = field_to_grid(over_outside, decision.affine, sub_shape, sub_affine, -255.0) > 0
        lesion[sub] |= core | rim & dense[sub]
    outside = np.zeros(tuple(box_shape), bool)
    points = np.argwhere(candidates)
    if len(points):  # only the candidates near where outside wins on the coarse grid need interpolating
        coordinates = to_decision[:3, :3] @ points.T + to_decision[:3, 3:4]
        nearest = np.clip(np.round(coordinates).astype(int).T, 0, np.array(outside_margin.shape) - 1)
        near_outside = ndi.binary_dilation(outside_margin > 0)[tuple(nearest.T)]
        values = ndi.map_coordinates(outside_margin, coordinates[:, near_outside], order=1, mode="nearest",
                                     prefilter=False)
        outside[tuple(points[near_outside][values > 0].T)] = True
    return lesion, outside


def on_grid(values: np.ndarray, affine: np.ndarray, points: np.ndarray, points_affine: np.ndarray) -> np.ndarray:
    """`values` at the nearest voxel to each of `points` (voxel indices on the grid `points_affine`)."""
    to_grid = np.linalg.inv(affine) @ points_affine
    index = np.round(to_grid[:3, :3] @ points.T + to_grid[:3, 3:4]).astype(int).T
    inside = np.all((index >= 0) & (index < np.array(values.shape)), axis=1)
    out = np.zeros(len(points), values.dtype)
    out[inside] = values[tuple(index[inside].T)]
    return out


def native_box(coarse: np.ndarray, coarse_affine: np.ndarray, box_affine: np.ndarray, box_shape) -> tuple[slice, ...]:
    """The part of a native box that a coarse mask's bounding box covers."""
    region = bounding_box(coarse, margin=1)
    corners = np.array(np.meshgrid(*[(b.start, b.stop - 1) for b in region], indexing="ij")).reshape(3, -1)
    to_native = np.linalg.inv(box_affine) @ coarse_affine
    index = to_native[:3, :3] @ corners + to_native[:3, 3:4]
    low = np.clip(np.floor(index.min(1)).astype(int), 0, np.array(box_shape))
    high = np.clip(np.ceil(index.max(1)).astype(int) + 1, 0, np.array(box_shape))
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def seen_as_lung(lesions: np.ndarray, probability: np.ndarray, floor: float, share: float) -> np.ndarray:
    """The decided lesions of which at least `share` of the voxels got a lung probability of `floor` or more
    from the 2D network. A 2D network trained on lesions painted into the lungs gives a tumour it cut out
    some probability of lung; the heart or a liver dome next to the lung base it is sure of."""
    near = bounding_box(lesions, margin=1)
    parts, count = ndi.label(lesions[near])
    if not count:
        return lesions
    seen = ndi.sum(probability[near] >= floor * 255, parts, np.arange(1, count + 1))
    sizes = np.bincount(parts.ravel(), minlength=count + 1)[1:]
    kept = np.zeros(count + 1, bool)
    kept[1:] = seen >= share * sizes
    out = np.zeros(lesions.shape, bool)
    out[near] = kept[parts]
    return out


def join_to_nearest_lung(lungs: np.ndarray, extra: np.ndarray) -> None:
    """Label the voxels of `extra` that are not lung with their lung's label (in place): a part that
    touches one lung joins it; a part that touches both (a mass at the anterior junction) is split between
    them by nearest voxel, inside its own box."""
    if not extra.any():
        return
    near = bounding_box(extra, margin=3)
    lungs, extra = lungs[near], extra[near]  # views: the labels are set in place
    todo = extra & (lungs == 0)
    parts, count = ndi.label(todo)
    for index, box in enumerate(ndi.find_objects(parts), start=1):
        box = tuple(slice(max(0, b.start - 2), b.stop + 2) for b in box)
        part = parts[box] == index
        region = lungs[box]
        touching = np.unique(region[ndi.binary_dilation(part, iterations=2) & (region > 0)])
        if len(touching) == 1:
            region[part] = touching[0]
        elif len(touching) > 1:
            _, nearest = ndi.distance_transform_edt(region == 0, return_indices=True)
            region[part] = region[tuple(axis[part] for axis in nearest)]


def two_conventions(candidate: np.ndarray, probability: np.ndarray, stored: np.ndarray, native_affine: np.ndarray,
                    to_stored, hu_network: np.ndarray, labels_network: np.ndarray, affine_network: np.ndarray,
                    p: ConventionParams = ConventionParams(), decision: DecisionMaps | None = None) -> Conventions:
    """Default and aerated labels on the native grid from the interpolated prediction (`candidate` label
    and its uint8 `probability`), the native stored values and `to_stored` (HU -> stored units); the
    lesion decision's maps when the model has that stage, else the dense-lesion rule."""
    threshold = boundary_hu(hu_network, labels_network, voxel_spacing(native_affine), p)
    threshold_stored = to_stored(threshold)
    size = neighbourhood_size(float(min(voxel_spacing(native_affine)[:2])), p.neighbourhood_mm)
    box = bounding_box(probability > p.band[0], margin=1)  # no lung outside this box, nothing changes there
    lungs, aerated = np.zeros(candidate.shape, np.uint8), np.zeros(candidate.shape, np.uint8)
    if not any(b.stop > b.start for b in box):
        return Conventions(lungs, aerated, round(threshold, 1), 0.0)
    margins = None if decision is None else lesion_margins(decision)
    if margins is not None and (margins[0] > 0).any():  # and where the decided lesions reach
        reach = native_box(margins[0] > 0, decision.affine, native_affine, candidate.shape)
        box = tuple(slice(min(a.start, b.start), max(a.stop, b.stop)) for a, b in zip(box, reach))
    lungs[box] = np.where(probability[box] >= 128, candidate[box], 0)
    box_shape, box_affine = [b.stop - b.start for b in box], shifted_affine(native_affine, [b.start for b in box])
    lungs_box, stored_box = lungs[box], stored[box]
    if decision is None:
        lesions_network = dense_lesions(hu_network, labels_network, affine_network, threshold, p)
        coded = lesions_network.astype(np.uint8) | (surface_ring(labels_network) << 1)  # both maps in one pass
        coded = labels_to_grid(coded, affine_network, box_shape, box_affine)
        lesions, ring = (coded & 1) > 0, (coded & 2) > 0
    else:
        ring = None
        dense = stored_box >= threshold_stored
        lesions, outside = decided_regions(decision, margins, box_shape, box_affine, dense, dense & (lungs_box > 0))
        lesions &= stored_box < to_stored(BONE_HU)  # a lesion's blurred edge never takes a rib or a vertebra
        lungs_box[outside] = 0
    probability, candidate = probability[box], candidate[box]
    band = (probability > p.band[0]) & (probability < p.band[1]) & (candidate > 0)
    if ring is None:
        band[band] = on_grid(surface_ring(labels_network), affine_network, np.argwhere(band), box_affine) > 0
    else:
        band &= ring
    if max(voxel_spacing(native_affine)) <= p.partial_volume_spacing_mm:
        keep = band_keeps(stored_box, band, probability[band], threshold_stored, to_stored, threshold, p, size)
    else:  # coarse voxels: lung when most of the voxel is (the partial-volume midpoint decides alone)
        keep = ~dense_at(stored_box, band, threshold_stored, size)
    keep |= lesions[band]
    lungs_box[band] = np.where(keep, candidate[band], 0)
    for value in np.unique(candidate[band][~keep]):  # dense voxels the lung surrounds (vessels) stay in
        if value:
            own = lungs_box[bounding_box(lungs_box == value)]  # a view: one lung's box
            own[fill_holes_2d(own == value) & (own == 0)] = value
    if decision is not None and lesions.any():  # the decided lesions that touch a lung join the nearest one
        near = bounding_box(lesions, margin=2)
        lesions[near] = parts_touching(lesions[near], ndi.binary_dilation(lungs_box[near] > 0))
        if p.min_lung_share > 0:
            lesions = seen_as_lung(lesions, probability, p.lung_probability_floor, p.min_lung_share)
        join_to_nearest_lung(lungs_box, lesions)
    dense_lesion = lesions & (lungs_box > 0)
    dense_lesion[dense_lesion] = dense_at(stored_box, dense_lesion, threshold_stored, size)
    aerated[box] = np.where(dense_lesion, 0, lungs_box)
    lesion_ml = float(dense_lesion.sum() * np.prod(voxel_spacing(native_affine)) / 1000)
    return Conventions(lungs, aerated, round(threshold, 1), round(lesion_ml, 2))
