"""Voxel-to-world geometry: one affine convention everywhere (RAS millimetres, as nibabel and MONAI),
and moving arrays between grids.

Every step asks the affine which way is right, anterior or superior; no step assumes an array row means a
patient direction. SimpleITK does the interpolation: on this CPU it is 5-6x faster than MONAI's Spacingd
for a full chest CT (docs/design.md, "What things cost"). Label maps move by nearest neighbour, or with
sub-voxel boundaries from interpolated probabilities (smooth_labels_to_grid).
"""
from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy import ndimage as ndi

from lungct.morphology import bounding_box

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def sitk_affine(image: sitk.Image) -> np.ndarray:
    """RAS affine of a SimpleITK image, for its array transposed to (x, y, z)."""
    dim = image.GetDimension()
    direction = np.array(image.GetDirection(), dtype=float).reshape(dim, dim)
    spacing = np.array(image.GetSpacing(), dtype=float)
    origin = np.array(image.GetOrigin(), dtype=float)
    affine = np.eye(4)
    affine[:dim, :dim] = direction * spacing
    affine[:dim, 3] = origin
    return LPS_TO_RAS @ affine


def affine_to_sitk(affine: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """(origin, spacing, direction) in SimpleITK's LPS convention for a RAS affine."""
    lps = LPS_TO_RAS @ np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    return tuple(lps[:3, 3]), tuple(spacing), tuple(direction.ravel())


REVERSE_AXES = [2, 1, 0, 3]


def array_to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image sharing the (x, y, z) array's memory layout: no transposing copy.

    SimpleITK reads a C-ordered (x, y, z) array as (z, y, x), so its index axes are ours reversed; the
    affine's columns are reversed to match, which keeps every voxel at the same place in the world.
    `sitk_view_to_array` undoes it. Use it for resampling, not for writing files.
    """
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    set_sitk_geometry(image, np.asarray(affine, dtype=float)[:, REVERSE_AXES])
    return image


def sitk_view_to_array(image: sitk.Image) -> np.ndarray:
    """The (x, y, z) array of an image made by array_to_sitk (or resampled onto such a grid)."""
    return sitk.GetArrayFromImage(image)


def set_sitk_geometry(image: sitk.Image, affine: np.ndarray) -> None:
    origin, spacing, direction = affine_to_sitk(affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)


def sitk_to_array(image: sitk.Image) -> np.ndarray:
    """The (x, y, z) array of a SimpleITK image (a copy, C-contiguous in x, y, z order)."""
    return c_order(sitk.GetArrayViewFromImage(image).transpose(2, 1, 0))


def c_order(array: np.ndarray, dtype=None, block=(128, 32, 8)) -> np.ndarray:
    """A C-contiguous copy (as `dtype`) of an array in any memory order, such as the (x, y, z) view of
    a NIfTI or ITK buffer. A 3D volume is copied block by block (sizes measured on a 512 x 512 x 286 scan):
    one transposing copy of the whole array misses the cache on nearly every voxel and takes 5-8x as long."""
    out = np.empty(array.shape, dtype or array.dtype)
    if array.ndim != 3 or array.flags.c_contiguous:
        out[...] = array
        return out
    (nx, ny, nz), (bx, by, bz) = array.shape, block
    for x in range(0, nx, bx):
        for y in range(0, ny, by):
            for z in range(0, nz, bz):
                out[x:x + bx, y:y + by, z:z + bz] = array[x:x + bx, y:y + by, z:z + bz]
    return out


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Length in mm of one step along each voxel axis."""
    return np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)


def orientation_code(affine: np.ndarray) -> str:
    """Three letters naming where each voxel axis points, e.g. 'RAS' or 'LPS' (nibabel's convention)."""
    import nibabel as nib

    return "".join(nib.orientations.aff2axcodes(np.asarray(affine, dtype=float)))


def geometry_summary(shape, affine) -> dict:
    """Shape, spacing, origin, direction and orientation code for reports and sidecars."""
    affine = np.asarray(affine, dtype=float)
    spacing = voxel_spacing(affine)
    return {
        "shape": [int(s) for s in shape],
        "spacing_mm": [round(float(s), 6) for s in spacing],
        "origin_mm": [round(float(o), 6) for o in affine[:3, 3]],
        "direction": [[round(float(v), 6) for v in row] for row in (affine[:3, :3] / spacing)],
        "orientation": orientation_code(affine),
    }


def voxel_ml(affine: np.ndarray) -> float:
    """Volume of one voxel in millilitres."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=float)[:3, :3]))) / 1000.0


def to_ras(array: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The array re-indexed (a view where possible) so its axes run R-A-S, and that grid's affine."""
    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=float))
    out = nib.orientations.apply_orientation(array, ornt)
    return out, np.asarray(affine, dtype=float) @ nib.orientations.inv_ornt_aff(ornt, array.shape)


def from_ras(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Undo to_ras: an R-A-S array back onto the grid `affine` describes."""
    ornt = nib.orientations.io_orientation(np.asarray(affine, dtype=float))
    back = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), ornt)
    return nib.orientations.apply_orientation(array, back)


def reoriented_grid(affine: np.ndarray, shape, axcodes: str | None) -> tuple[np.ndarray, tuple]:
    """(affine, shape) of the same voxels re-indexed so the axes point along `axcodes` (e.g. "RAS").

    An oblique grid becomes the axis-aligned grid that holds it (values then need resampling).
    """
    affine = np.asarray(affine, dtype=float)
    if not axcodes:
        return affine, tuple(shape)
    ornt = nib.orientations.ornt_transform(nib.orientations.io_orientation(affine),
                                           nib.orientations.axcodes2ornt(tuple(axcodes)))
    new_affine = affine @ nib.orientations.inv_ornt_aff(ornt, shape)
    new_shape = tuple(int(shape[int(i)]) for i in np.argsort(ornt[:, 0]))
    if min(new_shape) > 1 and is_oblique(new_affine):
        new_affine, new_shape = _straightened(new_affine, new_shape)
    return new_affine, new_shape


def is_oblique(affine: np.ndarray, tolerance: float = 1e-3) -> bool:
    """True when the voxel axes are rotated away from the world axes (beyond rounding noise)."""
    cosines = np.asarray(affine, dtype=float)[:3, :3] / voxel_spacing(affine)
    return bool(np.abs(np.abs(cosines) - np.round(np.abs(cosines))).max() > tolerance)


def is_sheared(affine: np.ndarray, tolerance: float = 1e-4) -> bool:
    """True when the voxel axes are not at right angles (a gantry-tilted DICOM series' grid); the tolerance
    passes direction cosines rounded to 6 decimals, as DICOM headers often store them."""
    cosines = np.asarray(affine, dtype=float)[:3, :3] / voxel_spacing(affine)
    return bool(np.abs(cosines.T @ cosines - np.eye(3)).max() > tolerance)


def _straightened(affine: np.ndarray, shape) -> tuple[np.ndarray, tuple]:
    """An axis-aligned grid (same axis order, signs and spacing) holding every voxel of an oblique one.

    Mirroring about the spine and per-slice steps work in array rows and columns, which only mean
    "left-right" and "axial" once the grid is aligned with the patient's (world) axes.
    """
    spacing = voxel_spacing(affine)
    cosines = affine[:3, :3] / spacing
    aligned = np.zeros((3, 3))
    for axis in range(3):
        world = int(np.argmax(np.abs(cosines[:, axis])))
        aligned[world, axis] = np.sign(cosines[world, axis])
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in shape])), dtype=float)
    world = nib.affines.apply_affine(affine, corners)
    along = world @ aligned  # position along each new axis, in mm
    lo, hi = along.min(axis=0), along.max(axis=0)
    new_shape = tuple(int(np.floor((h - l) / s + 1e-6)) + 1 for l, h, s in zip(lo, hi, spacing))
    new_affine = np.eye(4)
    new_affine[:3, :3] = aligned * spacing
    new_affine[:3, 3] = aligned @ lo
    return new_affine, new_shape


def resample_to_spacing(array: np.ndarray, affine: np.ndarray, spacing_mm, nearest: bool = False,
                        default: float = -1024.0, axcodes: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(float32 or uint8 array, affine) on a grid with `spacing_mm`, optionally reoriented to `axcodes`.

    Orientation and spacing change in one interpolation pass, so no reoriented copy of a full-size
    scan is ever made. Axes with a single voxel (one CT slice) keep their spacing.
    """
    grid_affine, grid_shape = reoriented_grid(affine, array.shape, axcodes)
    old_spacing = voxel_spacing(grid_affine)
    new_spacing = np.array([float(s) for s in np.broadcast_to(spacing_mm, 3)])
    new_spacing = np.where(np.array(grid_shape) == 1, old_spacing, new_spacing)
    new_size = [max(1, int(round(n * o / s))) for n, o, s in zip(grid_shape, old_spacing, new_spacing)]
    new_affine = grid_affine.copy()
    new_affine[:3, :3] = grid_affine[:3, :3] / old_spacing * new_spacing
    pixel = sitk.sitkUInt8 if nearest else sitk.sitkFloat32
    if np.allclose(new_affine, affine) and tuple(new_size) == tuple(array.shape):
        return np.asarray(array, dtype=np.uint8 if nearest else np.float32), np.asarray(affine, dtype=float)
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    out = _resample(array_to_sitk(array, affine), new_size, new_affine, interpolator, float(default), pixel, True)
    return sitk_view_to_array(out), new_affine


def labels_to_grid(labels: np.ndarray, affine: np.ndarray, shape, target_affine: np.ndarray) -> np.ndarray:
    """Nearest-neighbour copy of a label map onto another grid (any orientation, obliquity or spacing)."""
    source = array_to_sitk(labels.astype(np.uint8, copy=False), affine)
    out = _resample(source, shape, target_affine, sitk.sitkNearestNeighbor, 0.0, sitk.sitkUInt8, False)
    return sitk_view_to_array(out)


def field_to_grid(field: np.ndarray, affine: np.ndarray, shape, target_affine: np.ndarray,
                  default: float = 0.0) -> np.ndarray:
    """A float32 field linearly interpolated onto another grid (any orientation or spacing)."""
    source = array_to_sitk(np.asarray(field, np.float32), affine)
    return sitk_view_to_array(_resample(source, shape, target_affine, sitk.sitkLinear, float(default),
                                        sitk.sitkFloat32, False))


def _resample(image: sitk.Image, shape, affine: np.ndarray, interpolator, default: float, pixel,
              extrapolate: bool) -> sitk.Image:
    """sitk.Resample onto the (x, y, z) grid (shape, affine), given by its geometry: a reference image
    would be allocated (and zeroed) in full only to be read for that geometry."""
    origin, spacing, direction = affine_to_sitk(np.asarray(affine, dtype=float)[:, REVERSE_AXES])
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(s) for s in shape][::-1])
    resampler.SetOutputOrigin(origin)
    resampler.SetOutputSpacing(spacing)
    resampler.SetOutputDirection(direction)
    resampler.SetTransform(sitk.Transform())
    resampler.SetInterpolator(interpolator)
    resampler.SetDefaultPixelValue(default)
    resampler.SetOutputPixelType(pixel)
    resampler.SetUseNearestNeighborExtrapolator(extrapolate)
    return resampler.Execute(image)


def smooth_labels_to_grid(labels: np.ndarray, scores: np.ndarray, values, affine: np.ndarray, shape,
                          target_affine: np.ndarray) -> np.ndarray:
    """Labels on another grid with sub-voxel boundaries (smooth_probabilities_to_grid, cut at one half)."""
    candidate, probability = smooth_probabilities_to_grid(labels, scores, values, affine, shape, target_affine)
    candidate[probability < 128] = 0
    return candidate


def smooth_probabilities_to_grid(labels: np.ndarray, scores: np.ndarray, values, affine: np.ndarray, shape,
                                 target_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(most probable label, its uint8 probability) on another grid: each label's probability, linearly
    interpolated, so boundaries fall between coarse voxels (128 and up = one half or more).

    `scores` holds one uint8 probability map (0-255) per value in `values`, on the labels' grid. Inside a
    label the map is raised to just above one half and on the ring of voxels around it lowered to just
    below, so every coarse voxel keeps its (post-processed) label; only where the boundary runs between
    two coarse voxel centres does the interpolated probability place it, instead of the half-way cut of
    nearest-neighbour copying. Each label is resampled only inside its own bounding box (docs/design.md).
    """
    target_affine = np.asarray(target_affine, dtype=float)
    out = np.zeros(tuple(int(s) for s in shape), np.uint8)
    best = np.zeros(out.shape, np.uint8)
    for value, score in zip(values, scores):
        box = bounding_box(labels == value, margin=2)
        own = labels[box] == value
        if not own.any():
            continue
        near = ndi.binary_dilation(own, structure=ndi.generate_binary_structure(3, 1)) & ~own
        field = np.zeros(own.shape, np.uint8)
        field[own] = np.maximum(score[box][own], 129)
        field[near] = np.minimum(score[box][near], 126)
        box_affine = shifted_affine(affine, [b.start for b in box])
        window = _covered_window(box_affine, own.shape, target_affine, out.shape)
        if window is None:
            continue
        lo, hi = window
        reference = sitk.Image([int(n) for n in (hi - lo + 1)][::-1], sitk.sitkUInt8)
        set_sitk_geometry(reference, shifted_affine(target_affine, lo)[:, REVERSE_AXES])
        moved = sitk_view_to_array(sitk.Resample(array_to_sitk(field, box_affine), reference, sitk.Transform(),
                                                 sitk.sitkLinear, 0, sitk.sitkUInt8))
        region = tuple(slice(a, b + 1) for a, b in zip(lo, hi))
        out[region][moved > best[region]] = value
        np.maximum(best[region], moved, out=best[region])
    return out, best


def shifted_affine(affine: np.ndarray, index_offset) -> np.ndarray:
    """The affine of the sub-grid that starts at voxel `index_offset` of the grid `affine` describes."""
    out = np.array(affine, dtype=float)
    out[:3, 3] += out[:3, :3] @ np.asarray(index_offset, dtype=float)
    return out


def _covered_window(box_affine: np.ndarray, box_shape, target_affine: np.ndarray, target_shape):
    """(lo, hi) voxel indices (inclusive) of the part of a target grid that a source box, widened by one
    voxel for interpolation, covers; None when the box lies outside the target grid."""
    corners = np.array(list(itertools.product(*[(-1, n) for n in box_shape])), dtype=float)
    index = nib.affines.apply_affine(np.linalg.inv(target_affine) @ box_affine, corners)
    lo = np.maximum(np.floor(index.min(0)).astype(int), 0)
    hi = np.minimum(np.ceil(index.max(0)).astype(int), np.array(target_shape) - 1)
    return None if (hi < lo).any() else (lo, hi)
