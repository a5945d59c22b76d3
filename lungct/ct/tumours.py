"""The NSCLC pipeline's second stage at inference: a tumour model's labels joined to the lung labels, and
each tumour measured the way a radiologist reports it (volume, longest diameter, where it is).

The lung model and the tumour model run on the same scan; tumour voxels take the tumour label over the
lungs (the default, lesion-inclusive lungs contain them; the tumour model itself keeps to the lung ROI),
so one label map holds both. Each connected
tumour gets its volume in mL, its largest 3D diameter in mm (the longest distance between two of its
voxel centres, found on its convex hull) and its centroid in RAS millimetres.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from lungct.geometry import voxel_ml
from lungct.labels import TUMOUR

FULL_3D = ndi.generate_binary_structure(3, 3)


def join_tumours(lungs: np.ndarray, tumour: np.ndarray) -> np.ndarray:
    """One label map: the lungs' labels, and TUMOUR wherever the tumour mask is (it wins over the lungs)."""
    out = lungs.copy()
    out[tumour > 0] = TUMOUR
    return out


def largest_diameter_mm(points_mm: np.ndarray) -> float:
    """The longest distance between two points (mm): on the convex hull, which holds both ends."""
    if len(points_mm) < 2:
        return 0.0
    try:
        from scipy.spatial import ConvexHull, QhullError

        points_mm = points_mm[ConvexHull(points_mm).vertices]
    except (QhullError, ValueError):  # flat or tiny: every point is a candidate
        pass
    if len(points_mm) > 4000:  # a hull this large comes from a huge lesion; a sample keeps it quick
        points_mm = points_mm[:: len(points_mm) // 4000 + 1]
    differences = points_mm[:, None, :] - points_mm[None, :, :]
    return float(np.sqrt((differences ** 2).sum(-1)).max())


def describe_tumours(mask: np.ndarray, affine: np.ndarray, min_ml: float = 0.0) -> list[dict]:
    """Per connected tumour (largest first): volume (mL), largest diameter (mm), centroid (RAS mm)."""
    components, count = ndi.label(mask > 0, structure=FULL_3D)
    unit, out = voxel_ml(affine), []
    for index, box in enumerate(ndi.find_objects(components), start=1):
        voxels = np.argwhere(components[box] == index) + [s.start for s in box]
        volume = len(voxels) * unit
        if volume < min_ml:
            continue
        world = voxels @ np.asarray(affine, float)[:3, :3].T + np.asarray(affine, float)[:3, 3]
        out.append({"volume_ml": round(volume, 3), "largest_diameter_mm": round(largest_diameter_mm(world), 1),
                    "centroid_mm": [round(float(c), 1) for c in world.mean(axis=0)]})
    return sorted(out, key=lambda lesion: -lesion["volume_ml"])
