"""An independent lesion generator for the lesion-decision benchmark: not the model's training generator
(lungct.ct.decision.families), so that a score measures what the model learned, not how well it fits the
way its training lesions were drawn.

What differs from training: lesions are painted at the scan's own resolution (training paints on the
3 mm grid); masses are unions of 2-5 overlapping spheres with a smoothed outline (training: one ellipsoid
with noise on its radius); texture is a density gradient plus band-limited noise at the scan's own noise
level (training: one correlated field); sizes, densities and how far a mass reaches beyond the pleura are
drawn from other ranges; consolidation is a half-space cut of the lung bounded by a sphere around a seed
(training: a wedge), ground glass a smooth blob added to the lung, effusion a gravity-level fluid layer.
Shared with training: the names of the places on the lung surface (lungct.ct.anatomy), by design, so that
both speak of the same hilum.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from lungct.ct.anatomy import interior_points, surface_points
from lungct.geometry import labels_to_grid, voxel_spacing

ANALYSIS_MM = 3.0
EVAL_FAMILIES = {  # family -> (kind, surface location or None, diameter range mm)
    "costal": ("mass", "costal", (14, 40)), "hilar": ("mass", "hilar", (22, 50)),
    "mediastinal": ("mass", "mediastinal", (18, 45)), "anterior_junction": ("mass", "anterior_junction", (14, 36)),
    "azygo_oesophageal": ("mass", "azygo_oesophageal", (16, 40)), "paravertebral": ("mass", "paravertebral", (16, 45)),
    "diaphragmatic": ("mass", "diaphragmatic", (18, 45)), "basal_subpleural": ("mass", "basal_subpleural", (12, 35)),
    "apical": ("mass", "apical", (20, 45)), "cavitating": ("cavity", "costal", (24, 45)),
    "fissural": ("plaque", None, (16, 34)), "consolidation": ("consolidation", None, (35, 70)),
    "ground_glass": ("ground_glass", None, (25, 55)), "effusion": ("effusion", None, (15, 35)),
}
HELD_OUT_FAMILIES = ("anterior_junction", "cavitating", "fissural")  # never in the training recipe


@dataclass
class EvalLesion:
    family: str
    side: int
    voxels: np.ndarray  # bool on the native grid: what should be inside `lungs` (effusion: outside)
    kind: str


class NativeCase:
    """A host scan at its own resolution with its lungs (right 1 / left 2), and a 3 mm RAS view of them for
    finding places."""

    def __init__(self, hu: np.ndarray, sides: np.ndarray, affine: np.ndarray):
        self.hu, self.sides, self.affine = hu.astype(np.float32), sides.astype(np.uint8), np.asarray(affine, float)
        self.spacing = voxel_spacing(self.affine)
        low, high = np.zeros(3), np.array(hu.shape) - 1
        corners = np.array(np.meshgrid(*zip(low, high), indexing="ij")).reshape(3, -1).T
        world = corners @ self.affine[:3, :3].T + self.affine[:3, 3]
        self.coarse_affine = np.diag([ANALYSIS_MM] * 3 + [1.0])
        self.coarse_affine[:3, 3] = world.min(0)
        shape = np.ceil((world.max(0) - world.min(0)) / ANALYSIS_MM).astype(int) + 1
        self.coarse_sides = labels_to_grid(self.sides, self.affine, tuple(shape), self.coarse_affine)
        self.envelope = np.stack([ndi.binary_fill_holes(self.sides[:, :, k] > 0) for k in range(hu.shape[2])], 2)
        self.noise = self._noise()

    def _noise(self) -> float:
        tissue = (self.hu > -50) & (self.hu < 100)
        diff = np.diff(self.hu, axis=0)[tissue[1:] & tissue[:-1]]
        return float(np.clip(1.05 * np.median(np.abs(diff - np.median(diff))), 4, 60)) if diff.size > 100 else 12.0

    def to_world(self, coarse_index) -> np.ndarray:
        return self.coarse_affine[:3, :3] @ np.asarray(coarse_index, float) + self.coarse_affine[:3, 3]

    def box_around(self, world_centre, radius_mm: float):
        """(native slices around a world point, the world coordinates (3, *box) of their voxels)."""
        index = np.linalg.solve(self.affine[:3, :3], np.asarray(world_centre) - self.affine[:3, 3])
        reach = np.ceil(radius_mm / self.spacing).astype(int) + 1
        box = tuple(slice(max(0, int(c) - r), min(n, int(c) + r + 1)) for c, r, n in zip(index, reach, self.hu.shape))
        grid = np.stack(np.meshgrid(*[np.arange(b.start, b.stop) for b in box], indexing="ij")).reshape(3, -1)
        world = (self.affine[:3, :3] @ grid + self.affine[:3, 3:4]).reshape(3, *[b.stop - b.start for b in box])
        return box, world


def _texture(shape, mean_hu: float, noise: float, rng, world) -> np.ndarray:
    """A density gradient across the lesion plus band-limited noise at the scan's own level."""
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    gradient = np.tensordot(direction, world - world.reshape(3, -1).mean(1)[:, None, None, None], 1)
    band = ndi.gaussian_filter(rng.standard_normal(shape), 1.0) - ndi.gaussian_filter(rng.standard_normal(shape), 3.0)
    return (mean_hu + 0.4 * gradient + 3.0 * noise * band / (band.std() + 1e-6) * 0.3
            + noise * rng.standard_normal(shape)).astype(np.float32)


def _spheres_distance(world, centre, radius, rng) -> np.ndarray:
    """Signed distance (mm, positive inside) to a union of 2-5 overlapping spheres, outline smoothed."""
    best = np.full(world.shape[1:], -1e9, np.float32)
    for _ in range(rng.integers(2, 6)):
        offset = rng.normal(0, 0.35 * radius, 3)
        r = radius * rng.uniform(0.55, 0.9)
        best = np.maximum(best, r - np.linalg.norm(world - (centre + offset)[:, None, None, None], axis=0))
    return ndi.gaussian_filter(best, 0.8)


def paint(case: NativeCase, family: str, rng) -> EvalLesion | None:
    """Paint one lesion of `family` into the case (in place); its voxels, or None when it found no seat."""
    kind, location, (low, high) = EVAL_FAMILIES[family]
    side = int(rng.choice([s for s in (1, 2) if (case.sides == s).any()]))
    diameter = rng.uniform(low, high)
    if kind in ("mass", "cavity"):
        return _mass(case, family, location, side, diameter / 2, rng, kind == "cavity")
    if kind == "plaque":
        return _plaque(case, family, side, diameter / 2, rng)
    if kind == "consolidation":
        return _consolidation(case, family, side, diameter / 2, rng)
    if kind == "ground_glass":
        return _ground_glass(case, family, side, diameter / 2, rng)
    return _effusion(case, family, side, diameter, rng)


def _blend(case: NativeCase, box, alpha, target) -> None:
    hu = case.hu[box]
    alpha = np.where(hu > 250, 0, alpha)
    hu += alpha * (target - hu)


def _mass(case, family, location, side, radius, rng, cavity) -> EvalLesion | None:
    surface = surface_points(case.coarse_sides, side, [ANALYSIS_MM] * 3)
    rows = surface.at(location)
    if not len(rows):
        return None
    row = int(rng.choice(rows))
    point, normal = case.to_world(surface.index[row]), surface.normal[row]
    centre = point - normal * radius * rng.uniform(0.2, 0.7)  # 15-40 % of the radius beyond the pleura
    box, world = case.box_around(centre, radius * 1.8)
    distance = _spheres_distance(world, centre, radius, rng)
    alpha = np.clip(0.5 + distance / case.spacing.min(), 0, 1)
    target = _texture(alpha.shape, rng.uniform(15, 55), case.noise, rng, world)
    if cavity:
        cavity_radius = radius * rng.uniform(0.3, 0.55)  # drawn before the cavity's centre
        inner = centre + rng.normal(0, 2, 3)
        hollow = cavity_radius - np.linalg.norm(world - inner[:, None, None, None], axis=0)
        target = np.where(hollow > 0, rng.uniform(-990, -900), target)
    return _paint_lesion(case, family, side, box, alpha, target)


def _interior_seat(case, side, depth_mm, rng) -> np.ndarray | None:
    """A world point of the lung at least `depth_mm` inside it, or None when the lung has no such depth."""
    seats = interior_points(case.coarse_sides, side, [ANALYSIS_MM] * 3, depth_mm)
    if not len(seats):
        return None
    return case.to_world(seats[rng.integers(len(seats))])


def _paint_lesion(case, family, side, box, alpha, target) -> EvalLesion | None:
    """Blend `target` HU in with `alpha` and record what lies inside the pleura as the lesion."""
    _blend(case, box, alpha, target)
    return _record(case, family, side, box, (alpha >= 0.5) & case.envelope[box], "lesion")


def _plaque(case, family, side, radius, rng) -> EvalLesion | None:
    centre = _interior_seat(case, side, 9, rng)
    if centre is None:
        return None
    normal = np.array([rng.normal(0, 0.3), rng.uniform(0.5, 0.9), rng.uniform(0.5, 0.9)])
    normal /= np.linalg.norm(normal)
    box, world = case.box_around(centre, radius * 1.3)
    offset = world - centre[:, None, None, None]
    across = np.tensordot(normal, offset, 1)
    along = np.sqrt(np.maximum((offset ** 2).sum(0) - across ** 2, 0))
    half = rng.uniform(3.5, 7.0)
    distance = np.minimum(half - np.abs(across) - 0.2 * along ** 2 / radius, radius - along)
    alpha = np.clip(0.5 + distance / case.spacing.min(), 0, 1)
    target = _texture(alpha.shape, rng.uniform(10, 50), case.noise, rng, world)
    return _paint_lesion(case, family, side, box, alpha, target)


def _consolidation(case, family, side, radius, rng) -> EvalLesion | None:
    seed = _interior_seat(case, side, 6, rng)
    if seed is None:
        return None
    box, world = case.box_around(seed, radius * 1.2)
    normal = rng.normal(size=3)
    normal /= np.linalg.norm(normal)
    offset = world - seed[:, None, None, None]
    region = (np.linalg.norm(offset, axis=0) < radius) & (np.tensordot(normal, offset, 1) > -radius * 0.3)
    region &= case.sides[box] == side
    alpha = ndi.gaussian_filter(region.astype(np.float32), rng.uniform(0.6, 2.0))
    target = _texture(alpha.shape, rng.uniform(-60, 35), case.noise, rng, world)
    airways = ndi.gaussian_filter(rng.standard_normal(alpha.shape), 1.2)
    target = np.where((airways > 2.2 * airways.std()) & (alpha > 0.8), -900.0, target)  # bronchograms
    return _paint_lesion(case, family, side, box, alpha, target)


def _ground_glass(case, family, side, radius, rng) -> EvalLesion | None:
    centre = _interior_seat(case, side, 10, rng)
    if centre is None:
        return None
    box, world = case.box_around(centre, radius * 1.5)
    distance = radius - np.linalg.norm(world - centre[:, None, None, None], axis=0)
    weight = np.clip(distance / 6.0, 0, 1) * (case.sides[box] == side) * (case.hu[box] < -400)
    case.hu[box] += weight * rng.uniform(220, 380)
    return _record(case, family, side, box, (weight >= 0.5) & case.envelope[box], "lung")


def _effusion(case, family, side, thickness, rng) -> EvalLesion | None:
    lung = case.sides == side
    world = np.stack(np.meshgrid(*[np.arange(n) for n in lung.shape], indexing="ij")).reshape(3, -1)
    posterior = -(case.affine[1, :3] @ world + case.affine[1, 3])  # mm towards the back (RAS y is anterior)
    posterior = posterior.reshape(lung.shape)
    level = np.percentile(posterior[lung], 100) - thickness
    fluid = lung & (posterior > level)
    if fluid.sum() < 100:
        return None
    alpha = ndi.gaussian_filter(fluid.astype(np.float32), 0.7)
    case.hu += alpha * (rng.uniform(5, 25) + case.noise * rng.standard_normal(lung.shape).astype(np.float32) - case.hu)
    case.sides[fluid] = 0
    case.envelope &= ~fluid
    return EvalLesion(family, side, fluid, "outside")


def _record(case, family, side, box, inside, kind) -> EvalLesion | None:
    voxels = np.zeros(case.hu.shape, bool)
    voxels[box] = inside
    return EvalLesion(family, side, voxels, kind) if voxels.sum() >= 20 else None
