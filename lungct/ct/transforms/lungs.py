"""Lungs: the air inside the body, airways removed, gas outside the lungs refused, split into right and left.

How it goes (docs/design.md, "Lung isolation"), on a coarse analysis grid (2 mm) for the decisions and the full grid for
the boundary:
1. candidates = air (< -320 HU) inside the filled body: the couch and outside air are already gone;
2. the trachea is found as a small, round, central air object in the upper slices and followed down
   through the carina into the main bronchi, then removed;
3. objects touching only through thin necks (lung and stomach gas through a partial-volume diaphragm,
   the two lungs at a junction line) are separated: seeds are the candidates eroded by a few mm, and
   every voxel goes to its nearest seed within its own connected component (a seeded region growing);
4. objects are sorted into lungs and gas by size, density and side: gas in the stomach or bowel is
   darker than aerated lung, which carries vessels and septa;
5. a lung object that spans both sides of the midline is split at the narrowest junction (erosion
   grows until it falls in two), and right/left come from the affine, never from array rows;
6. vessels and nodules are filled per axial slice.
"""
from __future__ import annotations

from dataclasses import dataclass, asdict

import numpy as np
from scipy import ndimage as ndi

from lungct.geometry import from_ras, to_ras, voxel_spacing
from lungct.labels import LEFT_LUNG as LEFT, RIGHT_LUNG as RIGHT
from lungct.morphology import (IN_PLANE, analysis_strides, bounding_box, dilate_mm, fill_holes_2d, fine_box,
                               upsample_nearest)
from lungct.ct.transforms.body import body_mask
from lungct.ct.transforms.separation import split_in_two, split_objects
from lungct.keyed import KeyedTransform, register_transform
from lungct.ct.transforms.common import case_info, hu_to_stored, put_like, volume_of, affine_of

NO_LUNG_WARNING = "no lung found"  # the case's warning when the chain finds no lung



@dataclass
class LungParams:
    """Every constant of the lung step, in HU and millimetres (recipe keys of LungMaskd)."""

    threshold_hu: float = -320.0
    body_threshold_hu: float = -500.0
    analysis_spacing_mm: float = 2.0
    trachea_min_area_mm2: float = 30.0
    trachea_max_area_mm2: float = 700.0
    trachea_max_offset_mm: float = 40.0
    trachea_search_fraction: float = 0.5
    trachea_min_fill: float = 0.45  # share of its bounding box a round tube fills (a circle: 0.79)
    trachea_max_aspect: float = 2.5  # longest over shortest side of its box: tubes are round, not slits
    trachea_follow_factor: float = 1.5  # an airway followed slice to slice may grow to this x the max area
    bronchus_length_mm: float = 30.0
    split_radius_mm: float = 4.0
    core_threshold_hu: float = -600.0
    max_split_radius_mm: float = 24.0
    min_lung_volume_ml: float = 5.0
    min_lung_area_cm2: float = 2.0  # the same floor for a single axial slice
    second_lung_min_fraction: float = 0.03
    gas_p90_hu: float = -900.0
    lung_max_median_hu: float = -600.0
    merge_distance_mm: float = 4.0
    min_candidate_ml: float = 1.0  # objects smaller than this are never lungs: their density is not measured
    split_step_mm: float = 2.0  # erosion radius step while splitting a fused lung pair
    split_min_fraction: float = 0.1  # the smaller of two split parts must hold this share of the larger
    soft_tissue_hu: float = 40.0  # for the partial-volume boundary on coarse scans
    boundary_hu: float | None = None  # None: threshold_hu, or the partial-volume midpoint on coarse scans
    partial_volume_spacing_mm: float = 2.0
    both_sides_fraction: float = 0.2


# --------------------------------------------------------------------------------------------- airways


def find_airways(air: np.ndarray, body: np.ndarray, spacing, p: LungParams) -> tuple[np.ndarray, dict]:
    """Trachea and main bronchi on an R-A-S grid: followed slice by slice from a seed near the top."""
    airway = np.zeros_like(air)
    slices_with_air = np.flatnonzero(air.any(axis=(0, 1)))
    if len(slices_with_air) == 0:
        return airway, {"found": False}
    labels, count = ndi.label(air, structure=IN_PLANE)
    pixel_mm2 = spacing[0] * spacing[1]
    areas = np.bincount(labels.ravel(), minlength=count + 1) * pixel_mm2
    centres = _centres(labels, count)
    boxes = ndi.find_objects(labels)
    body_x = np.array([np.flatnonzero(body[:, :, k].any(axis=1)).mean() if body[:, :, k].any() else np.nan
                       for k in range(body.shape[2])])

    def is_trachea_like(lab: int) -> bool:
        area = areas[lab]
        if not (p.trachea_min_area_mm2 <= area <= p.trachea_max_area_mm2):
            return False
        cx, _, cz = centres[lab - 1]
        if np.isnan(body_x[int(cz)]) or abs(cx - body_x[int(cz)]) * spacing[0] > p.trachea_max_offset_mm:
            return False
        box = boxes[lab - 1]
        extent = [(s.stop - s.start) * sp for s, sp in zip(box[:2], spacing[:2])]
        fill = area / (extent[0] * extent[1])
        return fill >= p.trachea_min_fill and max(extent) <= p.trachea_max_aspect * max(min(extent), 1e-6)

    top, bottom = slices_with_air[-1], slices_with_air[0]
    search_to = top - int((top - bottom) * p.trachea_search_fraction)
    seed = None
    for k in range(top, search_to - 1, -1):
        found = [lab for lab in np.unique(labels[:, :, k]) if lab and is_trachea_like(lab)]
        if found:
            seed = max(found, key=lambda lab: areas[lab])  # the trachea is the widest central tube
            break
    if seed is None:
        return airway, {"found": False}
    seed_slice = int(round(centres[seed - 1][2]))
    airway[labels == seed] = True
    current = {seed}
    max_follow = p.trachea_max_area_mm2 * p.trachea_follow_factor
    # Upwards: larynx and trachea above the seed while they stay tube-sized.
    for k in range(seed_slice + 1, air.shape[2]):
        below = np.isin(labels[:, :, k - 1], list(current))
        nxt = {lab for lab in np.unique(labels[:, :, k][below]) if lab and areas[lab] <= max_follow}
        if not nxt:
            break
        for lab in nxt:
            airway[:, :, k] |= labels[:, :, k] == lab
        current = nxt
    # Downwards: trachea, carina, then each main bronchus for bronchus_length_mm.
    current = {seed}
    carina = None
    for k in range(seed_slice - 1, -1, -1):
        above = np.isin(labels[:, :, k + 1], list(current))
        nxt = {lab for lab in np.unique(labels[:, :, k][above]) if lab}
        nxt = {lab for lab in nxt if areas[lab] <= max_follow}  # a merge with lung stops that branch
        if not nxt:
            break
        if carina is None and len(nxt) >= 2:
            carina = k
        if carina is not None and (carina - k) * spacing[2] > p.bronchus_length_mm:
            break
        for lab in nxt:
            airway[:, :, k] |= labels[:, :, k] == lab
        current = nxt
    voxels = airway.sum()
    return airway, {"found": True, "seed_slice": seed_slice, "carina_found": carina is not None,
                    "volume_ml": round(float(voxels * np.prod(spacing) / 1000), 1)}


# ----------------------------------------------------------------------------------- choosing the lungs


def _centres(labels: np.ndarray, count: int) -> np.ndarray:
    """(count, 3) mean voxel index of labels 1..count: ndi.center_of_mass's numbers (the same float sums
    in the same voxel order) from the labelled voxels alone, not from full-grid coordinate arrays."""
    flat = labels.ravel()
    where = np.flatnonzero(flat)
    owner = flat[where]
    sizes = np.bincount(owner, minlength=count + 1)[1:count + 1].astype(float)
    coords = np.unravel_index(where, labels.shape)
    return np.stack([np.bincount(owner, weights=c.astype(float), minlength=count + 1)[1:count + 1] / sizes
                     for c in coords], axis=1).reshape(-1, labels.ndim)


def _object_stats(objects: np.ndarray, count: int, hu: np.ndarray, seeds: np.ndarray, spacing,
                  min_candidate_ml: float) -> list[dict]:
    """Volume, centre and the density of each object's core (its seed, or all of it when it has none)."""
    index = np.arange(1, count + 1)
    voxels = np.bincount(objects.ravel(), minlength=count + 1)[1:]
    centres = _centres(objects, count)
    core = np.where(seeds, objects, 0)
    has_core = np.bincount(core.ravel(), minlength=count + 1)[1:] > 0
    voxel_ml = float(np.prod(spacing)) / 1000.0
    boxes = ndi.find_objects(objects, max_label=count)
    stats = []
    big = voxels * voxel_ml >= min_candidate_ml  # density only matters for objects that could be a lung
    for lab, n, c, cored, want, box in zip(index, voxels, centres, has_core, big, boxes):
        entry = {"label": int(lab), "volume_ml": float(n * voxel_ml), "centre": np.asarray(c, dtype=float),
                 "core_median_hu": np.nan, "core_p90_hu": np.nan}
        if want:
            values = hu[box][(core if cored else objects)[box] == lab]
            entry["core_median_hu"], entry["core_p90_hu"] = (float(v) for v in np.percentile(values, [50, 90]))
        stats.append(entry)
    return stats


def choose_lungs(objects: np.ndarray, count: int, hu: np.ndarray, seeds: np.ndarray, spacing, midline_x: float,
                 p: LungParams) -> tuple[np.ndarray, dict]:
    """Right (1) / left (2) label map on an R-A-S grid from the separated air objects."""
    stats = _object_stats(objects, count, hu, seeds, spacing, p.min_candidate_ml)
    lungs = np.zeros(objects.shape, np.uint8)
    min_ml = p.min_lung_volume_ml
    if objects.shape[2] == 1:
        min_ml = p.min_lung_area_cm2 * spacing[2] / 10.0
    # Gas (stomach, bowel, leftover airway) is air with nothing in it: even its densest tenth stays
    # near -1000 HU, while aerated lung, emphysema included, carries septa and small vessels.
    sized = [s for s in stats if s["volume_ml"] >= min_ml]
    gas = [s for s in sized if s["core_p90_hu"] < p.gas_p90_hu]
    candidates = sorted((s for s in sized if s["core_p90_hu"] >= p.gas_p90_hu
                         and s["core_median_hu"] <= p.lung_max_median_hu), key=lambda s: -s["volume_ml"])
    report = {"objects": count, "gas_objects_excluded": len(gas),
              "gas_volume_excluded_ml": round(sum(s["volume_ml"] for s in gas), 1), "split_at_midline": False}
    if not candidates:
        return lungs, report
    first = candidates[0]
    first_mask = objects == first["label"]
    xs = np.flatnonzero(first_mask.any(axis=(1, 2)))
    right_share = first_mask[int(np.ceil(midline_x)):].sum() / max(first_mask.sum(), 1)
    if min(right_share, 1 - right_share) > p.both_sides_fraction and len(xs):
        two = split_in_two(first_mask, spacing, p.split_radius_mm + p.split_step_mm, p.max_split_radius_mm,
                           p.split_step_mm, p.split_min_fraction)
        if two is not None:
            report["split_at_midline"] = True
            centre_1 = ndi.center_of_mass(two == 1)[0]
            centre_2 = ndi.center_of_mass(two == 2)[0]
            right_part = 1 if centre_1 > centre_2 else 2
            lungs[two == right_part] = RIGHT
            lungs[(two > 0) & (two != right_part)] = LEFT
            rest = candidates[1:]
        else:
            lungs[first_mask] = RIGHT if first["centre"][0] >= midline_x else LEFT
            rest = candidates[1:]
    else:
        side = RIGHT if first["centre"][0] >= midline_x else LEFT
        lungs[first_mask] = side
        rest = candidates[1:]
        other = [s for s in rest if (s["centre"][0] >= midline_x) != (side == RIGHT)
                 and s["volume_ml"] >= p.second_lung_min_fraction * first["volume_ml"]]
        if other:
            second = other[0]
            lungs[objects == second["label"]] = LEFT if side == RIGHT else RIGHT
            rest = [s for s in rest if s is not second]
    # Lung-dense fragments next to a lung (cut off by a fissure or a neck) join it; gas never does.
    merge_voxels = [int(np.ceil(p.merge_distance_mm / s)) for s in spacing]
    for _ in range(2):
        if not rest:
            break
        near_right = dilate_mm(lungs == RIGHT, p.merge_distance_mm, spacing)
        near_left = dilate_mm(lungs == LEFT, p.merge_distance_mm, spacing)
        joined = []
        for s in rest:
            obj = objects == s["label"]
            box = bounding_box(obj, margin=merge_voxels)
            r = (near_right[box] & obj[box]).sum()
            l_ = (near_left[box] & obj[box]).sum()
            if r or l_:
                lungs[obj] = RIGHT if r >= l_ else LEFT
                joined.append(s)
        rest = [s for s in rest if s not in joined]
        if not joined:
            break
    report["lung_objects_left_out"] = len(rest)
    return lungs, report


# ------------------------------------------------------------------------------------------ whole step


def segment_lungs(array: np.ndarray, affine: np.ndarray, body: np.ndarray | None = None,
                  to_stored=lambda hu: hu, params: LungParams | None = None,
                  native_spacing=None) -> tuple[np.ndarray, dict]:
    """Right/left lung labels (1 = right, 2 = left) on the array's own grid, and a report.

    `to_stored` converts a Hounsfield value into the array's units (identity for calibrated CT);
    `native_spacing` is the voxel size the scan was acquired at, when `array` has been resampled.
    """
    p = params or LungParams()
    a, ras_affine = to_ras(np.asarray(array), affine)
    spacing = voxel_spacing(ras_affine)
    if body is None:
        body_ras = body_mask(a, spacing, to_stored(p.body_threshold_hu))
    else:
        body_ras = to_ras(np.asarray(body), affine)[0]  # a view; compared with 0 only where it is read
    strides = analysis_strides(spacing, p.analysis_spacing_mm, a.shape)
    coarse_spacing = np.array([s * st for s, st in zip(spacing, strides)])
    sample = (slice(None, None, strides[0]), slice(None, None, strides[1]), slice(None, None, strides[2]))
    a_c, body_c = a[sample], body_ras[sample] > 0
    air_c = (a_c < to_stored(p.threshold_hu)) & body_c
    hu_c = (a_c - to_stored(0.0)) / max(to_stored(1.0) - to_stored(0.0), 1e-6)

    airway_c, airway_report = find_airways(air_c, body_c, coarse_spacing, p)
    candidates = air_c & ~airway_c
    objects, count, seeds = split_objects(candidates, coarse_spacing, p.split_radius_mm,
                                          core=hu_c < p.core_threshold_hu)
    midline_x = _midline(body_c)
    lungs_c, report = choose_lungs(objects, count, hu_c, seeds, coarse_spacing, midline_x, p)
    del objects

    boundary_hu = p.boundary_hu
    if boundary_hu is None:
        boundary_hu = p.threshold_hu
        # A voxel of a coarse scan is lung when most of it is lung: half-way between the lungs' own
        # density and soft tissue. On fine grids the two contours lie within a fraction of a voxel.
        if native_spacing is not None and max(native_spacing) > p.partial_volume_spacing_mm:
            parenchyma = hu_c[(lungs_c > 0) & (hu_c < p.core_threshold_hu)]
            if parenchyma.size:
                boundary_hu = min((float(np.median(parenchyma)) + p.soft_tissue_hu) / 2, p.threshold_hu)
    report["boundary_hu"] = round(boundary_hu, 1)
    # Back to the full grid, only inside the box the grown labels reach (everything else stays 0):
    # full-resolution air near a coarse lung voxel takes its label.
    grown = _grown(lungs_c)
    box = fine_box(bounding_box(grown), strides, a.shape, grown.shape)
    lungs_box = upsample_nearest(grown, strides, a.shape, box)
    body_box = body_ras[box] > 0
    lungs_box[~((a[box] < to_stored(boundary_hu)) & body_box)] = 0
    for label in (RIGHT, LEFT):
        filled = fill_holes_2d(lungs_box == label) & body_box
        lungs_box[filled & (lungs_box == 0)] = label
    lungs = np.zeros(a.shape, np.uint8)
    lungs[box] = lungs_box
    voxel_ml = float(np.prod(spacing)) / 1000.0
    report.update({
        "airway": airway_report,
        "right_lung_ml": round(float(np.count_nonzero(lungs_box == RIGHT) * voxel_ml), 1),
        "left_lung_ml": round(float(np.count_nonzero(lungs_box == LEFT) * voxel_ml), 1),
    })
    return from_ras(lungs, affine), report


def _grown(lungs_c: np.ndarray) -> np.ndarray:
    """Coarse labels grown by one voxel (6-neighbours) where only one lung touches, inside their box."""
    grown = lungs_c.copy()
    box = bounding_box(lungs_c, margin=1)
    sub = lungs_c[box]
    for label in (RIGHT, LEFT):
        other = LEFT if label == RIGHT else RIGHT
        ring = ndi.binary_dilation(sub == label) & (sub == 0) & ~ndi.binary_dilation(sub == other)
        grown[box][ring] = label
    return grown


def _midline(body: np.ndarray) -> float:
    """x index (R-A-S grid) of the body's centre, averaged over slices: where right turns into left."""
    profile = body.sum(axis=(1, 2)).astype(float)
    if profile.sum() == 0:
        return body.shape[0] / 2
    return float((np.arange(len(profile)) * profile).sum() / profile.sum())


@register_transform
class LungMaskd(KeyedTransform):
    """Add "lungs" (uint8: 1 = right lung, 2 = left lung) to the dict; the report goes to case["lungs"]."""

    PARAMS = LungParams  # every constant of the step, recipe arguments of its own
    roi_step = True
    def __init__(self, keys="image", output_key: str = "lungs", body_key: str = "body",
                 allow_missing_keys: bool = False, **params):
        super().__init__(keys, allow_missing_keys)
        self.output_key = output_key
        self.body_key = body_key
        self.params = LungParams(**params)

    def __call__(self, data):
        d = dict(data)
        key = self.keys[0]
        body = volume_of(d, self.body_key) if self.body_key in d else None
        info = case_info(d)
        native_spacing = (info.get("input") or {}).get("spacing_mm")
        lungs, report = segment_lungs(volume_of(d, key), affine_of(d, key), body,
                                      to_stored=lambda hu: hu_to_stored(d, hu), params=self.params,
                                      native_spacing=native_spacing)
        info["lungs"] = report
        info["lungs"]["params"] = asdict(self.params)
        if report["right_lung_ml"] + report["left_lung_ml"] == 0:
            info["warnings"].append(NO_LUNG_WARNING)
            info["flags"].append("no_lungs")
        elif min(report["right_lung_ml"], report["left_lung_ml"]) == 0:
            side = "right" if report["right_lung_ml"] == 0 else "left"
            info["warnings"].append(f"only one lung found: no {side} lung")
            info["flags"].append("one_lung")
        put_like(d, self.output_key, lungs, key)
        return d
