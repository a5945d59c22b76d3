"""The full-size scan the infer and preprocess benchmarks time: chest-cta resampled to 0.7 x 0.7 x 1 mm and
padded in-plane to 512 x 512 (about 512 x 512 x 286), a routine full-size chest CT. Imported by
benchmarks/infer.py and benchmarks/preprocess.py (run as scripts, so this folder is on sys.path).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SOURCE = DATA / "ct-volumes/chest-cta/image.nii.gz"
SPACING_MM = (0.7, 0.7, 1.0)
SIDE = 512


def make_full_size(folder: Path) -> Path:
    """Write <folder>/full-size.nii.gz (int16 HU) once and return its path."""
    from lungct.geometry import resample_to_spacing
    from lungct.io import load_scan
    from lungct.io.volumes import write_nifti

    path = Path(folder) / "full-size.nii.gz"
    if path.exists():
        return path
    scan = load_scan(SOURCE)
    array, affine = resample_to_spacing(scan.array, scan.affine, list(SPACING_MM))
    padded = np.full((SIDE, SIDE, array.shape[2]), -1024, np.int16)
    ox, oy = (SIDE - array.shape[0]) // 2, (SIDE - array.shape[1]) // 2
    padded[ox:ox + array.shape[0], oy:oy + array.shape[1]] = np.clip(np.round(array), -1024, 3071)
    shift = affine.copy()
    shift[:3, 3] = affine[:3, 3] - affine[:3, :3] @ np.array([ox, oy, 0])
    write_nifti(path, padded, shift, dtype=np.int16)
    return path
