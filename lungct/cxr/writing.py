"""Writing a radiograph's mask as a PNG at the radiograph's own size, atomically."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lungct.errors import LungctError
from lungct.io.volumes import atomic_path


def write_cxr_mask(path: str | Path, mask: np.ndarray, scale: int | None = None, overwrite: bool = True) -> Path:
    """8-bit PNG of a label mask. `scale` multiplies the labels (None: 255 for a binary mask, so it is
    visible and matches 0/255 reference masks; 1 for right/left labels 1/2, so values stay labels)."""
    from PIL import Image

    path = Path(path)
    if path.exists() and not overwrite:
        raise LungctError(path, "exists (use --overwrite to replace it)")
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise LungctError(path, f"a radiograph mask is 2D, got shape {mask.shape}")
    if scale is None:
        scale = 255 if int(mask.max(initial=0)) <= 1 else 1
    pixels = (mask.astype(np.int64) * int(scale)).clip(0, 255).astype(np.uint8)
    with atomic_path(path) as tmp:
        Image.fromarray(pixels).save(tmp, format="PNG")
    return path
