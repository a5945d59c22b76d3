"""Shapes and textures for lesions painted in 3D (lungct.ct.decision.families): soft-edged weights in
[0, 1] over a box, in millimetres whatever the voxel spacing.

A weight is 1 inside the shape and falls to 0 over `edge_mm` across its boundary, so painting blends
into the scan as partial volume does; the label is where the weight reaches one half.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def smooth_noise(shape, correlation_mm: float, spacing, rng: np.random.Generator) -> np.ndarray:
    """Unit-sd float32 noise correlated over `correlation_mm` (a Gaussian-filtered white field)."""
    sigma = np.maximum(correlation_mm / np.asarray(spacing, float), 0.5)
    field = ndi.gaussian_filter(rng.standard_normal(tuple(shape)).astype(np.float32), sigma, truncate=3.0)
    return (field - field.mean()) / (field.std() + 1e-6)


def _offsets_mm(shape, centre, spacing) -> list[np.ndarray]:
    """Per axis, the distance in mm of each voxel from `centre` (broadcastable grids)."""
    return [((np.arange(n) - c) * s).reshape([-1 if i == axis else 1 for i in range(3)])
            for axis, (n, c, s) in enumerate(zip(shape, centre, spacing))]


def _edge(distance: np.ndarray, scale_mm: float, edge_mm: float) -> np.ndarray:
    """Weight from a normalised distance (1 at the boundary) with a soft edge `edge_mm` wide."""
    return np.clip(0.5 + (1.0 - distance) * scale_mm / max(edge_mm, 1e-3), 0.0, 1.0).astype(np.float32)


def blob_alpha(shape, centre, radii_mm, spacing, rng: np.random.Generator, roughness: float = 0.25,
               edge_mm: float = 1.5) -> np.ndarray:
    """A lobulated ellipsoid: its normalised radius perturbed by smooth noise of relative size `roughness`
    (lobulation at about half the radius, with a finer octave)."""
    spacing = np.asarray(spacing, float)
    radii = np.asarray(radii_mm, float)
    axes = _offsets_mm(shape, centre, spacing)
    rotation = _random_rotation(rng)
    rotated = [sum(rotation[row, col] * axes[col] for col in range(3)) for row in range(3)]
    distance = np.sqrt(sum((r / radius) ** 2 for r, radius in zip(rotated, radii)))
    if roughness > 0:
        coarse = smooth_noise(shape, radii.mean() / 2, spacing, rng)
        fine = smooth_noise(shape, radii.mean() / 6, spacing, rng)
        distance = distance * (1 + roughness * (0.8 * coarse + 0.35 * fine))
    return _edge(distance, radii.mean(), edge_mm)


def lens_alpha(shape, centre, extent_mm: float, half_thickness_mm: float, normal, spacing,
               rng: np.random.Generator, edge_mm: float = 1.5) -> np.ndarray:
    """A lens: an oblate ellipsoid `extent_mm` in radius along a plane with unit `normal`, thinning to
    its rim, a little irregular."""
    axes = _offsets_mm(shape, centre, spacing)
    normal = np.asarray(normal, float)
    across = sum(n * a for n, a in zip(normal, axes))
    radial2 = sum(a * a for a in axes) - across ** 2
    distance = np.sqrt(np.maximum(radial2, 0) / extent_mm ** 2 + across ** 2 / half_thickness_mm ** 2)
    distance = distance * (1 + 0.15 * smooth_noise(shape, extent_mm / 2, spacing, rng))
    return _edge(distance, half_thickness_mm, edge_mm)


def soft_region(mask: np.ndarray, edge_mm: float, spacing) -> np.ndarray:
    """A bool region's weight with its boundary blurred over `edge_mm` (a sharp or a fuzzy margin)."""
    sigma = np.asarray([edge_mm / s for s in spacing]) / 2
    return np.clip(ndi.gaussian_filter(mask.astype(np.float32), sigma), 0.0, 1.0)


def tube_alpha(shape, start, direction, spacing, rng: np.random.Generator, branches: int = 5) -> np.ndarray:
    """Air-filled airways (air bronchograms): a few tapering tubes from `start` roughly along `direction`
    (a unit vector in mm space), forking once or twice."""
    spacing = np.asarray(spacing, float)
    out = np.zeros(tuple(shape), np.float32)
    stack = [(np.asarray(start, float), np.asarray(direction, float), rng.uniform(1.0, 2.0), 0)]
    drawn = 0
    while stack and drawn < branches:
        origin, heading, radius, generation = stack.pop()
        length_mm = rng.uniform(15, 35)
        steps = int(length_mm / spacing.min()) + 1
        for t in np.linspace(0, length_mm, steps):
            point = np.round(origin + heading * t / spacing).astype(int)
            reach = np.ceil(radius / spacing).astype(int)
            box = tuple(slice(max(0, p - r), min(n, p + r + 1)) for p, r, n in zip(point, reach, shape))
            if any(b.stop <= b.start for b in box):
                break
            axes = _offsets_mm([b.stop - b.start for b in box], point - [b.start for b in box], spacing)
            inside = np.sqrt(sum(a * a for a in axes)) <= radius
            out[box] = np.maximum(out[box], inside)
        drawn += 1
        end = origin + heading * length_mm / spacing
        if generation < 2:
            for _ in range(2):
                turn = heading + rng.normal(0, 0.35, 3)
                stack.append((end, turn / np.linalg.norm(turn), radius * 0.75, generation + 1))
    return out


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random 3D rotation matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q
