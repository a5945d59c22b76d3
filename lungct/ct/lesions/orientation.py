"""Which way the body lies in the array: left-right, posterior, inferior and the spine on each slice.

The painters need them (dependent consolidation and effusion lie posterior, the paravertebral gutter is by
the spine, the diaphragm below). A caller that knows the affine passes hints (orientation_hints); without
them posterior is voted on from cues in the slices and inferior from the lungs' shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from lungct.ct.lesions.params import LesionParams

if TYPE_CHECKING:
    from lungct.ct.lesions.scene import Scene

CUE_SLICES = 16  # posterior is voted on by about this many slices through the lungs
NO_SPINE = 1e6  # mm: where the spine is taken to be when no slice shows it (no surface is paravertebral)


def orientation_hints(affine) -> tuple[np.ndarray, int]:
    """From a voxel-to-world (RAS) affine: (posterior as a voxel-step direction (x, y, z), +1/-1 = the
    z index direction towards the feet)."""
    world_to_voxel = np.linalg.inv(np.asarray(affine, float)[:3, :3])
    posterior = world_to_voxel @ [0.0, -1.0, 0.0]
    towards_feet = int(-np.sign(world_to_voxel[2, 2]) or -1)
    return posterior, towards_feet


@dataclass
class Frame:
    """The body's axes and landmarks, in mm on the image grid (index * spacing)."""
    sides: list  # the lungs shown (1 = right, 2 = left), each with at least 5 voxels on the analysis grid
    lung_centres: dict  # side -> centre
    left_right: np.ndarray  # unit, in-plane, from the right lung to the left
    midline: np.ndarray  # a point between the lungs (or the body's centre)
    posterior: np.ndarray  # unit, in-plane
    spine: np.ndarray  # (slices, 3): the vertebral body's centre on each slice of the image
    inferior: np.ndarray  # unit along z, towards the feet (zero on a slice)


def find_frame(scene: Scene, posterior_hint=None, inferior_hint=None) -> Frame:
    """The frame of the scene's image (a `posterior_hint` may be 2D: in-plane x, y)."""
    labels, grid_mm = scene.analysis_labels, scene.analysis_spacing
    points = {side: np.argwhere(labels == side) * grid_mm for side in (1, 2)}
    sides = [side for side in (1, 2) if len(points[side]) >= 5]
    centres = {side: points[side].mean(0) for side in sides}
    if len(sides) == 2:
        left_right, midline = centres[2] - centres[1], (centres[1] + centres[2]) / 2
    else:  # one lung (or none): the body's centre is the midline
        stride = scene.stride
        body = scene.image[::stride[0], ::stride[1], ::stride[2]] > -400
        midline = np.argwhere(body).mean(0) * grid_mm
        # leftwards either way: from the right lung to the midline, or from the midline to the left lung
        left_right = np.zeros(3) if not sides else (midline - centres[sides[0]]) * (3 - 2 * sides[0])
    left_right[2] = 0
    if np.linalg.norm(left_right) > 1:
        left_right = left_right / np.linalg.norm(left_right)
    else:
        left_right = np.array([1.0, 0, 0])
    posterior = np.array([-left_right[1], left_right[0], 0.0])  # or anterior: the sign is decided next

    shown = np.flatnonzero((labels > 0).any((0, 1))) * scene.stride[2]
    cues = {k: slice_cues(scene, k, left_right, midline, posterior)
            for k in shown[::max(1, len(shown) // CUE_SLICES)]}
    if posterior_hint is None:
        score = sum(vote for vote, _, _ in cues.values())
    else:
        in_plane_mm = np.resize(np.append(posterior_hint, 0), 3) * [1, 1, 0] * scene.spacing
        score = in_plane_mm @ posterior
    sign = 1 if score >= 0 else -1
    posterior = posterior * sign

    which = 1 if sign > 0 else 2  # the cue's spine centre for the posterior that won
    known = {k: cue[which] for k, cue in cues.items() if cue[which] is not None}
    known = known or {0: np.full(2, NO_SPINE)}
    centres_xy = np.array([known[k] for k in sorted(known)])
    known_z = np.array(sorted(known)) * scene.spacing[2]
    slice_z = np.arange(scene.labels.shape[2]) * scene.spacing[2]
    spine_x = np.interp(slice_z, known_z, centres_xy[:, 0])
    spine_y = np.interp(slice_z, known_z, centres_xy[:, 1])
    spine = np.stack([spine_x, spine_y, slice_z], 1)

    if not scene.flat and inferior_hint is None:
        inferior_hint = _inferior_from_shape(labels)
    inferior = np.array([0.0, 0.0, 0.0 if scene.flat else np.sign(inferior_hint)])
    return Frame(sides, centres, left_right, midline, posterior, spine, inferior)


def _inferior_from_shape(labels: np.ndarray) -> int:
    """+1/-1: the z index direction towards the feet. The lung base spans the thorax, the apex is narrow:
    compare the lungs' in-plane bounding boxes over the first and last quarter of the slices showing them."""
    size = [np.ptp(np.argwhere(labels[:, :, k]), 0).prod()
            for k in range(labels.shape[2]) if labels[:, :, k].any()]
    quarter = max(1, len(size) // 4)
    return -1 if np.mean(size[:quarter]) > np.mean(size[-quarter:]) else 1


def slice_cues(scene: Scene, k: int, left_right, midline, posterior):
    """Slice k's vote (positive if `posterior` is posterior) and the vertebral body's centre (x, y in mm)
    if it is and if it is not (None where unseen).

    Cues: the spinal canal (a fluid hole in midline bone: a contrast-filled heart outweighs the spine in
    bone mass), the lung base's posterior recesses, the denser dependent lung, midline bone mass.
    """
    grid_mm, left_right, posterior = scene.analysis_spacing[:2], left_right[:2], posterior[:2]
    labels = scene.analysis_labels[:, :, k // scene.stride[2]]
    centres = [np.argwhere(labels == side).mean(0) * grid_mm
               for side in (1, 2) if (labels == side).sum() >= 5]
    centre = (centres[0] + centres[1]) / 2 if len(centres) == 2 else midline[:2]
    lung = np.argwhere(labels > 0) * grid_mm - centre
    if len(lung) < 20:
        return 0.0, None, None
    image = scene.image[::scene.stride[0], ::scene.stride[1], k]
    depth, lung_hu = lung @ posterior, image[labels > 0]  # depth: of lung voxels, along `posterior`
    q1, q3 = np.quantile(depth, [0.25, 0.75])

    canals = _spinal_canals(image, grid_mm, centre, left_right, posterior, depth, scene.params)
    # dependent lung is denser (gravity)
    dependent = lung_hu[(depth > q3) & (lung_hu < -500)]
    non_dependent = lung_hu[(depth < q1) & (lung_hu < -500)]
    gradient = np.median(dependent) - np.median(non_dependent) if len(dependent) and len(non_dependent) else 0
    # lung mostly on one side of its depth's middle: near the base only the back recesses remain
    skew = np.mean(np.sign(depth - (depth.min() + depth.max()) / 2))
    behind = _midline_bone(image, grid_mm, centre, left_right, posterior, depth, scene.params)

    vote = (3.0 * (len(canals[0]) - len(canals[1])) + (2 * np.sign(skew) if abs(skew) > 0.3 else 0)
            + (np.sign(gradient) if abs(gradient) > 25 else 0)
            + 0.5 * np.sign(len(behind[0]) - len(behind[1])))
    spines = []  # the vertebral body lies 15 mm before the canal; without one, at the midline bone's centre
    for canal, bone, d in zip(canals, behind, (1, -1)):
        if len(canal):
            spines.append(canal.mean(0) - 15 * d * posterior + centre)
        elif len(bone) > 3:
            spines.append(bone.mean(0) + centre)
        else:
            spines.append(None)
    return vote, *spines


def _spinal_canals(image, grid_mm, centre, left_right, posterior, depth, params: LesionParams) -> list:
    """Centres (mm from `centre`) of the holes in bone (the arch closed) that could be the spinal canal,
    on the side `posterior` points to and on the other: holding fluid, of a canal's area, by the midline,
    in the back or front third of the lungs' depth (not inside the heart)."""
    bone = ndimage.binary_closing(image > params.bone_hu, iterations=max(1, round(4.5 / grid_mm.min())))
    holes, count = ndimage.label(ndimage.binary_fill_holes(bone) & ~bone)
    index = np.arange(1, count + 1)
    area = np.bincount(holes.ravel(), minlength=count + 1)[1:] * grid_mm.prod()
    fluid = ndimage.mean(np.abs(image) < 100, holes, index) if count else np.zeros(0)
    hole_centres = np.reshape(ndimage.center_of_mass(np.ones_like(bone), holes, index), (-1, 2))
    hole_centres = hole_centres * grid_mm - centre
    mean_depth = depth.mean()
    canal = ((area > 120) & (area < 450) & (fluid > 0.5)
             & (np.abs(hole_centres @ left_right) < params.midline_band_mm)
             & (np.abs(hole_centres @ posterior - mean_depth) > 0.15 * np.ptp(depth)))
    found = hole_centres[canal]
    return [found[np.sign(found @ posterior - mean_depth) == d] for d in (1, -1)]


def _midline_bone(image, grid_mm, centre, left_right, posterior, depth, params: LesionParams) -> list:
    """Bone voxels (mm from `centre`) in the midline band on the side `posterior` points to and on the
    other, up to 30 mm past the lungs (not the couch)."""
    bone = np.argwhere(image > params.bone_hu) * grid_mm - centre
    band = bone[np.abs(bone @ left_right) < params.midline_band_mm]
    along = band @ posterior
    mean_depth = depth.mean()
    return [band[(np.sign(along - mean_depth) == d) & (along * d < np.quantile(depth * d, 0.98) + 30)]
            for d in (1, -1)]
