"""Two lung conventions from one prediction, at the scan's own resolution (docs/conventions.md).

`lungs` (the default): everything inside the visceral pleura, nodules, tumours, consolidation and
atelectasis included (the network is trained to keep them in). `aerated`: the same lungs without dense
lesions; vessels and small airways stay in, as threshold-based references draw them.

Both come from the network's interpolated probability on the native grid:
- the boundary is refined where the model is unsure (a thin band around its surface, where the
  interpolated probability lies between `band`): there a voxel is lung when its calibrated HU is below the
  air/tissue boundary, or when it belongs to a dense lesion the model kept in (never across one), or
  when the lung surrounds it in its slice (a vessel);
- dense lesions are the dense voxels (HU at or above the boundary) inside the lungs that survive an opening
  by a ball of `lesion_min_diameter_mm` on the network's grid (vessels and the pleural rim are thinner and
  vanish), grown back by `lesion_margin_mm` more; `aerated` leaves out their dense native voxels. Nodules
  thinner than that stay in `aerated`, and where they touch the pleura the band may trim them from `lungs`.
The boundary is -320 HU on fine grids; on scans coarser than `partial_volume_spacing_mm` it is half-way
between the lungs' own density and soft tissue, as a voxel there is lung when most of it is lung.

Before either, `carved_lesions` takes back the dense tissue the network cut out of a lung's surface (a 2D
network sees a tumour against the chest wall, the spine or the mediastinum on one slice, where it looks like
the wall): the notch such a lesion leaves is filled by a closing with a ball of `recover_radius_mm` (the
rolling ball of classical lung CAD), and its soft-tissue voxels count as a lesion of that lung.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from lungct.geometry import labels_to_grid, shifted_affine, voxel_spacing
from lungct.morphology import (IN_PLANE, analysis_strides, bounding_box, close_mm, dilate_mm, erode_mm,
                               fill_holes_2d, parts_touching, upsample_nearest)

SOFT_TISSUE_HU = 40.0


@dataclass(frozen=True)
class ConventionParams:
    boundary_hu: float = -320.0  # air/tissue boundary on fine grids
    partial_volume_spacing_mm: float = 2.0  # coarser native voxels: the partial-volume midpoint instead
    parenchyma_below_hu: float = -600.0  # voxels that measure the lungs' own density on coarse scans
    band: tuple = (64, 192)  # uint8 probabilities (0.25 .. 0.75) where the model is unsure: refined by HU
    lesion_min_diameter_mm: float = 11.0  # dense objects this thick are lesions; intrapulmonary vessels are thinner
    lesion_margin_mm: float = 3.0  # lesions grown back this far beyond the opening (their rim against the pleura)
    recover_radius_mm: float = 40.0  # rolling ball that fills the notch a carved-out lesion leaves (0: off)
    recover_hu: tuple = (-100.0, 200.0)  # what it takes back: soft tissue (not fat, air or bone)
    recover_spacing_mm: float = 4.5  # the closing runs on a grid this coarse (27x fewer voxels than 1.5 mm)
    recover_min_thickness_mm: float = 4.0  # what it takes back is this thick somewhere ...
    recover_rim_mm: float = 6.0  # ... or within this of such a core (the thin rim of the notch's lens)
    recover_contact_mm: float = 3.0  # and lies this near the lung (across the lesion's partial-volume edge)
    recover_max_fraction: float = 0.25  # more than this share of the lung's volume: nothing is taken back
    recover_min_probability: float = 0.005  # ... nor where the network was sure it is not that lung
    cap_min_slice_mm: float = 3.0  # on slices this thick, a lesion's end is taken one slice on ...
    cap_shrink_mm: float = 3.0  # ... under its cross-section shrunk by this (a lesion narrows to its end)


@dataclass
class Conventions:
    lungs: np.ndarray  # uint8 labels, lesion-inclusive (the default)
    aerated: np.ndarray  # uint8 labels without dense lesions
    boundary_hu: float
    lesion_ml_network_grid: float


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


def carved_lesions(labels_network: np.ndarray, hu_network: np.ndarray, affine_network: np.ndarray,
                   p: ConventionParams = ConventionParams()) -> np.ndarray:
    """uint8 lung labels of soft tissue in the notches of each lung's surface, on the network's grid (0
    elsewhere): what a closing by a ball of `recover_radius_mm` adds to the lung there, where the network
    cut a lesion out. Run at about `recover_spacing_mm`. Never on a single slice: without the slices above
    and below, a diaphragm dome or the heart's edge is wrapped in lung just as a lesion is."""
    spacing = voxel_spacing(affine_network)
    out = np.zeros(labels_network.shape, np.uint8)
    if p.recover_radius_mm <= 0 or labels_network.shape[2] == 1:
        return out
    lungs = labels_network > 0
    for value in np.unique(labels_network[lungs]):
        own = labels_network == value
        box = bounding_box(own, margin=[int(np.ceil(p.recover_radius_mm / s)) + 1 for s in spacing])
        strides = analysis_strides(spacing, p.recover_spacing_mm, own[box].shape)
        coarse_spacing = [s * k for s, k in zip(spacing, strides)]
        pad = [(int(np.ceil(p.recover_radius_mm / s)) + 1,) * 2 for s in coarse_spacing]  # a lung the scan's edge cuts goes on
        coarse = np.pad(own[box][::strides[0], ::strides[1], ::strides[2]], pad, mode="edge")
        closed = close_mm(coarse, p.recover_radius_mm, coarse_spacing)
        closed, coarse = (a[tuple(slice(lo, a.shape[i] - hi) for i, (lo, hi) in enumerate(pad))] for a in (closed, coarse))
        if not (closed & ~coarse).any():
            continue
        hu = hu_network[box]
        notch = upsample_nearest(closed, strides, own[box].shape) & ~lungs[box]
        tissue = notch & (hu > p.recover_hu[0]) & (hu < p.recover_hu[1])
        if p.recover_min_thickness_mm > 0:  # slivers along a concave surface (the heart's) are no lesion
            radius = p.recover_min_thickness_mm / 2
            tissue &= dilate_mm(erode_mm(tissue, radius, spacing), radius + p.recover_rim_mm, spacing)
        # Only tissue against the lung: behind air the network left out (a lung it missed in part) is the wall.
        near = bounding_box(tissue, margin=[int(np.ceil(p.recover_contact_mm / s)) + 1 for s in spacing])
        tissue[near] = parts_touching(tissue[near], dilate_mm(own[box][near], p.recover_contact_mm, spacing))
        if tissue.sum() > p.recover_max_fraction * own.sum():  # not notches: a lung the network got wrong
            continue
        out[box][tissue] = value
    if spacing[2] >= p.cap_min_slice_mm:
        out = lesion_end_caps(out, labels_network, hu_network, affine_network, p)
    return out


def where_network_doubts(recovered: np.ndarray, scores: np.ndarray, values, p: ConventionParams) -> np.ndarray:
    """`recovered` without the voxels whose own lung's uint8 score (`scores`, one channel per label in
    `values`) is below `recover_min_probability`. The closing proposes every notch; a network trained on
    lesions painted into the lungs still gives a carved-out lesion some probability of lung, but none to the
    aorta, the oesophagus or a diaphragm dome wrapped by the lung (on the lesion-free volumes half or more of
    what the closing takes). Scores are on the same grid."""
    out = recovered.copy()
    floor = p.recover_min_probability * 255
    for channel, value in zip(scores, values):
        out[(recovered == value) & (channel < floor)] = 0
    return out


def lesion_end_caps(recovered: np.ndarray, labels_network: np.ndarray, hu_network: np.ndarray,
                    affine_network: np.ndarray, p: ConventionParams) -> np.ndarray:
    """`recovered` with each lesion's ends taken one slice on. Beyond a lesion's last slice against the lung
    no lung lies to close over (radiomics-lung2's tumour at the base of the lung: its lowest two 5 mm slices),
    so there its end is the soft tissue under its cross-section shrunk by `cap_shrink_mm`, where that lies
    within `recover_contact_mm` of its lung in the slice (before the shrinking). A lesion is what was taken
    back and the thick soft-tissue objects the network kept in the lung itself."""
    spacing = voxel_spacing(affine_network)
    joined = np.where(recovered > 0, recovered, labels_network)
    lesions = np.where(dense_lesions(hu_network, joined, affine_network, p.recover_hu[0], p), joined, 0)
    soft = (hu_network > p.recover_hu[0]) & (hu_network < p.recover_hu[1]) & (joined == 0)
    out = recovered.copy()
    for value in np.unique(lesions[lesions > 0]):
        box = bounding_box(joined == value, margin=[1, 1, 1])  # the lung's box and a slice above and below
        footprint = erode_mm(lesions[box] == value, p.cap_shrink_mm, spacing, in_plane=True)
        ends = np.zeros(footprint.shape, bool)
        ends[:, :, 1:] |= footprint[:, :, :-1]
        ends[:, :, :-1] |= footprint[:, :, 1:]
        ends &= soft[box] & (out[box] == 0)
        reach = p.cap_shrink_mm + p.recover_contact_mm  # from the lung to the shrunk cross-section
        near = dilate_mm(labels_network[box] == value, reach, spacing, in_plane=True)
        out[box][parts_touching(ends, near, IN_PLANE)] = value
    return out


def surface_ring(labels_network: np.ndarray) -> np.ndarray:
    """uint8 1 within one network voxel of the lungs' surface: the band may only move the boundary there,
    never bring in air the model left out far from the lungs (gas, airways, air outside the body)."""
    lung = labels_network > 0
    cross = ndi.generate_binary_structure(lung.ndim, 1)
    return (ndi.binary_dilation(lung, cross) & ~ndi.binary_erosion(lung, cross)).astype(np.uint8)


def two_conventions(candidate: np.ndarray, probability: np.ndarray, stored: np.ndarray, native_affine: np.ndarray,
                    to_stored, hu_network: np.ndarray, labels_network: np.ndarray, affine_network: np.ndarray,
                    p: ConventionParams = ConventionParams(), recovered: np.ndarray | None = None) -> Conventions:
    """Default and aerated labels on the native grid from the interpolated prediction (`candidate` label
    and its uint8 `probability`), the native stored values and `to_stored` (HU -> stored units).
    `recovered`: carved_lesions already joined to the prediction; lesions, whatever their thickness."""
    threshold = boundary_hu(hu_network, labels_network, voxel_spacing(native_affine), p)
    if recovered is None:
        lesions_network = dense_lesions(hu_network, labels_network, affine_network, threshold, p)
    else:  # thick lesions among what the network drew itself; all that was taken back
        taken = recovered > 0
        lesions_network = dense_lesions(hu_network, np.where(taken, 0, labels_network), affine_network, threshold, p)
        near = bounding_box(taken, margin=1)
        lesions_network[near] |= ndi.binary_dilation(taken[near])  # and its interpolated rim
    box = bounding_box(probability > p.band[0], margin=1)  # no lung outside this box, nothing changes there
    lungs, aerated = np.zeros(candidate.shape, np.uint8), np.zeros(candidate.shape, np.uint8)
    lungs[box] = np.where(probability[box] >= 128, candidate[box], 0)
    box_shape, box_affine = [b.stop - b.start for b in box], shifted_affine(native_affine, [b.start for b in box])
    coded = lesions_network.astype(np.uint8) | (surface_ring(labels_network) << 1)  # both maps in one pass
    coded = labels_to_grid(coded, affine_network, box_shape, box_affine)
    lesions, ring = (coded & 1) > 0, (coded & 2) > 0
    dense = stored[box] >= to_stored(threshold)
    lungs_box, probability, candidate = lungs[box], probability[box], candidate[box]
    band = ring & (probability > p.band[0]) & (probability < p.band[1]) & (candidate > 0)
    keep = ~dense[band] | lesions[band]
    lungs_box[band] = np.where(keep, candidate[band], 0)
    for value in np.unique(candidate[band][~keep]):  # dense voxels the lung surrounds (vessels) stay in
        if value:
            own = lungs_box[bounding_box(lungs_box == value)]  # a view: one lung's box
            own[fill_holes_2d(own == value) & (own == 0)] = value
    aerated[box] = np.where(lesions & dense, 0, lungs_box)
    lesion_ml = float(lesions_network.sum() * np.prod(voxel_spacing(affine_network)) / 1000)
    return Conventions(lungs, aerated, round(threshold, 1), round(lesion_ml, 2))
