"""Lesions painted in 3D into whole chest CT volumes, by family, to teach the lesion decision.

The shared references draw aerated lung only, so lesion-inclusive labels are made: each family is a kind
of lesion at a place radiologists name (lungct.ct.anatomy), painted in HU into a RAS volume with its
labels in three classes: outside the lungs (0), lung (1) and lesion inside the lung (2). What makes a
lesion "inside" is the visceral pleura, which the image does not show where a mass meets the mediastinum
or the chest wall: the label is the painted tissue within the lung's own outline before painting (its
envelope), so the network learns to carry the lung's surface smoothly across a mass.

Negatives are families too: pleural effusion replaces the dependent lung and is outside, with the
compressed lung above it (atelectasis) inside as a lesion; ground glass stays lung (aerated, class 1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from lungct.ct.anatomy import SurfacePoints, interior_points, lung_height, surface_points
from lungct.ct.decision.shapes import blob_alpha, lens_alpha, smooth_noise, soft_region, tube_alpha

OUTSIDE, LUNG, LESION = 0, 1, 2
BONE_HU = 200.0  # tissue a lesion never paints over


@dataclass(frozen=True)
class Family:
    """One family of lesions: what it is, where it sits and how large (diameter range, mm)."""

    name: str
    kind: str  # "mass", "cavity", "lens", "consolidation", "ground_glass", "effusion"
    location: str | None  # lungct.ct.anatomy location of the surface it grows from; None: inside the lung
    diameter_mm: tuple[float, float]
    beyond_pleura: tuple[float, float] = (0.1, 0.45)  # share of the radius outside the lung's surface


FAMILIES = {family.name: family for family in (
    Family("costal", "mass", "costal", (10, 50)),
    Family("hilar", "mass", "hilar", (20, 60), (0.3, 0.6)),
    Family("mediastinal", "mass", "mediastinal", (15, 55), (0.2, 0.55)),
    Family("anterior_junction", "mass", "anterior_junction", (15, 45), (0.2, 0.5)),
    Family("azygo_oesophageal", "mass", "azygo_oesophageal", (15, 45), (0.2, 0.5)),
    Family("paravertebral", "mass", "paravertebral", (15, 55), (0.15, 0.5)),
    Family("diaphragmatic", "mass", "diaphragmatic", (15, 55), (0.15, 0.45)),
    Family("basal_subpleural", "mass", "basal_subpleural", (10, 40)),
    Family("apical", "mass", "apical", (20, 55), (0.15, 0.45)),
    Family("cavitating", "cavity", "costal", (20, 55), (0.0, 0.3)),
    Family("fissural", "lens", None, (15, 40)),
    Family("consolidation", "consolidation", None, (40, 110)),
    Family("ground_glass", "ground_glass", None, (20, 70)),
    Family("effusion", "effusion", None, (10, 50)),
)}


@dataclass
class Painted:
    """One painted lesion, for the benchmark's coverage: its family, location, side and voxels."""

    family: str
    location: str
    side: int
    voxels: np.ndarray  # bool over the volume: its label voxels (lesion inside the envelope; effusion: fluid)
    volume_ml: float


@dataclass
class Canvas:
    """A volume being painted: HU, side labels (1 right, 2 left), classes, and the lung surfaces by side."""

    hu: np.ndarray
    sides: np.ndarray
    spacing: np.ndarray
    noise_hu: float
    classes: np.ndarray = None
    envelope: np.ndarray = None
    surfaces: dict = field(default_factory=dict)
    painted: list = field(default_factory=list)

    def __post_init__(self):
        self.spacing = np.asarray(self.spacing, float)
        if self.envelope is None:
            self.envelope = lung_envelope(self.sides)
        self.classes = np.where(self.envelope, LUNG, OUTSIDE).astype(np.uint8)

    def surface(self, side: int) -> SurfacePoints:
        if side not in self.surfaces:
            self.surfaces[side] = surface_points(self.sides, side, self.spacing)
        return self.surfaces[side]

    def blend(self, box, alpha: np.ndarray, target: np.ndarray) -> None:
        """Paint `target` HU over the box with weight `alpha`; bone stays."""
        hu = self.hu[box]
        alpha = np.where(hu > BONE_HU, 0.0, alpha)
        hu += alpha * (target - hu)

    def label(self, family: str, location: str, side: int, box, inside: np.ndarray, value: int) -> None:
        """Set `value` on `inside` (bool over the box) and record the lesion."""
        voxels = np.zeros(self.hu.shape, bool)
        voxels[box] = inside
        if not voxels.any():
            return
        self.classes[voxels] = value
        self.painted.append(Painted(family, location, side, voxels, float(voxels.sum() * self.spacing.prod() / 1000)))


def lung_envelope(sides: np.ndarray) -> np.ndarray:
    """The lungs with what they surround in each axial slice (vessels, nodules): inside the pleura."""
    lungs = sides > 0
    return np.stack([ndi.binary_fill_holes(lungs[:, :, k]) for k in range(lungs.shape[2])], axis=2)


def paint(hu: np.ndarray, sides: np.ndarray, spacing, rng: np.random.Generator, families: dict[str, float],
          count_probs=(0.15, 0.4, 0.3, 0.15), noise_hu: float | None = None, anatomy: dict | None = None) -> Canvas:
    """Paint 0..3 lesions drawn from `families` (name -> weight) into a RAS volume (HU, side labels):
    the returned canvas holds the new HU, the classes and what was painted. Effusions come first (the lung
    they take away is gone for the lesions after them). `anatomy` caches the host's envelope and lung
    surfaces across calls on the same host (a dict, filled on first use)."""
    anatomy = {} if anatomy is None else anatomy
    if "envelope" not in anatomy:
        anatomy["envelope"] = lung_envelope(sides)
    canvas = Canvas(np.array(hu, np.float32), np.array(sides, np.uint8), spacing,
                    float(rng.uniform(6, 25) if noise_hu is None else noise_hu), envelope=anatomy["envelope"].copy())
    for side in (1, 2):
        if side not in anatomy:
            anatomy[side] = canvas.surface(side)
        canvas.surfaces[side] = anatomy[side]
    names = [n for n in families if families[n] > 0]
    if not names or not (canvas.sides > 0).any():
        return canvas
    weights = np.array([families[n] for n in names], float)
    count = rng.choice(len(count_probs), p=np.divide(count_probs, sum(count_probs)))
    chosen = sorted(rng.choice(names, size=count, p=weights / weights.sum()), key=lambda n: n != "effusion")
    for name in chosen:
        present = [s for s in (1, 2) if (canvas.sides == s).sum() > 200]
        if present:
            PAINTERS[FAMILIES[name].kind](canvas, FAMILIES[name], int(rng.choice(present)), rng)
    return canvas


# ------------------------------------------------------------------------------------------- painters


def tissue(canvas: Canvas, shape, mean_hu: float, sd_hu: float, rng, correlation_mm: float = 2.5) -> np.ndarray:
    """Soft-tissue texture: correlated variation plus the scan's own noise."""
    texture = mean_hu + sd_hu * smooth_noise(shape, correlation_mm, canvas.spacing, rng)
    return texture + canvas.noise_hu * rng.standard_normal(shape).astype(np.float32)


def box_around(centre, radius_mm: float, spacing, shape) -> tuple[slice, ...]:
    half = np.ceil(radius_mm / np.asarray(spacing)).astype(int) + 2
    centre = np.round(centre).astype(int)
    return tuple(slice(max(0, c - h), min(n, c + h + 1)) for c, h, n in zip(centre, half, shape))


def _surface_seat(canvas: Canvas, family: Family, side: int, rng):
    """(a surface point, its outward normal) at the family's location, or None when the lung has none."""
    surface = canvas.surface(side)
    rows = surface.at(family.location)
    if not len(rows):
        return None
    row = int(rng.choice(rows))
    return surface.index[row], surface.normal[row]


def paint_mass(canvas: Canvas, family: Family, side: int, rng, cavity: bool = False) -> None:
    """A lobulated soft-tissue mass grown from the surface at the family's location, part of it beyond
    the pleura (into the mediastinum, the wall, the diaphragm: painted there, labelled outside)."""
    seat = _surface_seat(canvas, family, side, rng)
    if seat is None:
        return
    point, normal = seat
    radius = float(np.exp(rng.uniform(*np.log(family.diameter_mm)))) / 2
    beyond = rng.uniform(*family.beyond_pleura)
    centre = point - normal * radius * (1 - 2 * beyond) / canvas.spacing  # mm along the normal, in voxels
    box = box_around(centre, radius * 1.5, canvas.spacing, canvas.hu.shape)
    radii = radius * rng.uniform(0.75, 1.25, 3)
    alpha = blob_alpha([b.stop - b.start for b in box], centre - [b.start for b in box], radii, canvas.spacing, rng)
    target = tissue(canvas, alpha.shape, rng.uniform(-10, 70), rng.uniform(8, 30), rng)
    if cavity:
        hollow = blob_alpha(alpha.shape, centre - [b.start for b in box] + rng.normal(0, 0.15, 3) * radius
                            / canvas.spacing, radii * rng.uniform(0.35, 0.65), canvas.spacing, rng, roughness=0.1)
        target += hollow * (rng.uniform(-980, -850) - target)
    canvas.blend(box, alpha, target)
    canvas.label(family.name, family.location, side, box, (alpha >= 0.5) & canvas.envelope[box], LESION)


def paint_cavity(canvas: Canvas, family: Family, side: int, rng) -> None:
    paint_mass(canvas, family, side, rng, cavity=True)


def paint_lens(canvas: Canvas, family: Family, side: int, rng) -> None:
    """A lens-shaped lesion along an oblique plane inside the lung (a fissural nodule or plaque)."""
    thickness = rng.uniform(6, 14)
    seats = interior_points(canvas.sides, side, canvas.spacing, thickness / 2 + 4)
    if not len(seats):
        return
    centre = seats[rng.integers(len(seats))].astype(float)
    extent = rng.uniform(*family.diameter_mm) / 2
    tilt = rng.uniform(np.deg2rad(30), np.deg2rad(60))
    normal = np.array([rng.normal(0, 0.2), np.sin(tilt), np.cos(tilt)])
    box = box_around(centre, extent * 1.3, canvas.spacing, canvas.hu.shape)
    alpha = lens_alpha([b.stop - b.start for b in box], centre - [b.start for b in box], extent, thickness / 2,
                       normal / np.linalg.norm(normal), canvas.spacing, rng)
    canvas.blend(box, alpha, tissue(canvas, alpha.shape, rng.uniform(0, 60), rng.uniform(8, 25), rng))
    canvas.label(family.name, "fissural", side, box, (alpha >= 0.5) & canvas.envelope[box], LESION)


def paint_consolidation(canvas: Canvas, family: Family, side: int, rng) -> None:
    """Segmental or lobar consolidation: the part of one lung on one side of an oblique plane, or a wedge
    from the hilum to the pleura, at soft-tissue density with air bronchograms; the fissure-like edge
    is sharp or fuzzy."""
    lung = canvas.sides == side
    points = np.argwhere(lung)
    centre = points.mean(0)
    extent = rng.uniform(*family.diameter_mm)
    seat = points[rng.integers(len(points))].astype(float)
    direction = (seat - centre) * canvas.spacing
    direction /= np.linalg.norm(direction) + 1e-9
    offsets = (np.argwhere(lung) - seat) * canvas.spacing
    along = offsets @ direction
    across = np.linalg.norm(offsets - along[:, None] * direction, axis=1)
    region = np.zeros(lung.shape, bool)
    region[tuple(np.argwhere(lung).T)] = (along > -extent / 2) & (across < extent / 2 + 0.3 * np.maximum(along, 0))
    if region.sum() < 50:
        return
    alpha = soft_region(region, rng.uniform(1.0, 4.0), canvas.spacing) * lung
    target = tissue(canvas, alpha.shape, rng.uniform(-80, 50), rng.uniform(10, 30), rng)
    if rng.random() < 0.6:  # air bronchograms: airways running through it towards the pleura
        target += tube_alpha(alpha.shape, seat, direction, canvas.spacing, rng) * (-920 - target) * (alpha > 0.7)
    canvas.blend(tuple(slice(None) for _ in range(3)), alpha, target)
    canvas.label(family.name, "lobar", side, tuple(slice(None) for _ in range(3)), alpha >= 0.5, LESION)


def paint_ground_glass(canvas: Canvas, family: Family, side: int, rng) -> None:
    """Hazy lung (ground glass): denser parenchyma with its vessels still seen; aerated lung, class 1."""
    seats = interior_points(canvas.sides, side, canvas.spacing, 8)
    if not len(seats):
        return
    centre = seats[rng.integers(len(seats))].astype(float)
    radius = rng.uniform(*family.diameter_mm) / 2
    box = box_around(centre, radius * 1.5, canvas.spacing, canvas.hu.shape)
    alpha = blob_alpha([b.stop - b.start for b in box], centre - [b.start for b in box],
                       radius * rng.uniform(0.7, 1.3, 3), canvas.spacing, rng, edge_mm=4.0)
    alpha *= canvas.sides[box] == side
    raised = canvas.hu[box] + rng.uniform(200, 420) + 0.5 * canvas.noise_hu * rng.standard_normal(alpha.shape)
    canvas.blend(box, alpha * (canvas.hu[box] < -500), np.minimum(raised, -250))
    canvas.label(family.name, "ground_glass", side, box, (alpha >= 0.5) & canvas.envelope[box], LUNG)


def paint_effusion(canvas: Canvas, family: Family, side: int, rng) -> None:
    """Pleural fluid layering against the back of one lung (outside the lungs) and the compressed lung
    above it (atelectasis: a lesion inside)."""
    lung = canvas.sides == side
    low, high = lung_height(canvas.sides)
    back = np.where(lung.any(axis=1), np.argmax(lung, axis=1), -1)  # most posterior lung row per (x, z)
    depth_mm = (np.arange(lung.shape[1])[None, :, None] - back[:, None, :]) * canvas.spacing[1]
    height = (np.arange(lung.shape[2]) - low) / max(1, high - low)
    thickness = rng.uniform(*family.diameter_mm) * np.clip(1.15 - height, 0, 1) ** rng.uniform(0.5, 2.0)
    fluid = lung & (depth_mm < thickness[None, None, :])
    if fluid.sum() < 50 or fluid.sum() > 0.5 * lung.sum():
        return
    compressed = lung & ~fluid & (depth_mm < thickness[None, None, :] + rng.uniform(4, 14)) & (thickness > 3)[None, None, :]
    whole = tuple(slice(None) for _ in range(3))
    fluid_alpha = soft_region(fluid, 0.8, canvas.spacing)
    canvas.blend(whole, fluid_alpha, tissue(canvas, fluid.shape, rng.uniform(0, 20), 3.0, rng, 4.0))
    canvas.blend(whole, soft_region(compressed, 0.8, canvas.spacing) * ~fluid,
                 tissue(canvas, fluid.shape, rng.uniform(-60, 40), rng.uniform(10, 25), rng))
    canvas.envelope &= ~fluid
    canvas.sides[fluid] = 0
    canvas.label("effusion", "pleural", side, whole, fluid, OUTSIDE)
    if compressed.any():
        canvas.label("atelectasis", "pleural", side, whole, compressed, LESION)
    canvas.surfaces.pop(side, None)  # the lung's surface moved


PAINTERS = {"mass": paint_mass, "cavity": paint_cavity, "lens": paint_lens, "consolidation": paint_consolidation,
            "ground_glass": paint_ground_glass, "effusion": paint_effusion}
