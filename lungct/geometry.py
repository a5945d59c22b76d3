"""Voxel-to-world geometry: one affine convention everywhere (RAS millimetres, as nibabel and MONAI).

Every later step asks the affine which way is right, anterior or superior; no step assumes an array row
means a patient direction.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

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
    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Length in mm of one step along each voxel axis."""
    return np.linalg.norm(np.asarray(affine, dtype=float)[:3, :3], axis=0)


def axis_towards(affine: np.ndarray, direction: str) -> tuple[int, int]:
    """(voxel axis, sign) that best points to a patient direction: 'R', 'L', 'A', 'P', 'S' or 'I'.

    sign = +1 when increasing the index moves towards `direction`. Oblique scans get the closest axis.
    """
    world = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}[direction]
    cosines = np.asarray(affine, dtype=float)[:3, :3] / voxel_spacing(affine)
    component = cosines[world[0]] * world[1]  # how much each voxel axis moves along that world direction
    axis = int(np.argmax(np.abs(component)))
    return axis, int(np.sign(component[axis]))


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
