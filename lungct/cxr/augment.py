"""Opacity synthesis and film augmentation for radiograph training: lung *fields*, not air.

Why: trained on clean films, the model learnt "lung = dark air" and segments an opacified field as its
remaining air only; portable films (AP supine, text, tubes, crops) confuse it further. `add_opacities`
paints opacities inside the fields while the label stays the whole field; `film_augment` makes a clean film
look like one nobody prepared. Arrays as after ResizePadd: image float32 in [0, 1] (brighter = denser), mask
uint8 (0/1, or 1 = right, 2 = left), valid bool (False on the padding). All randomness from `rng`; no BLAS
(its threads stall on a busy machine): ~3 + ~5 ms per 256 x 256 sample.

The public names, from the modules that hold them:
- lungct.cxr.opacities: `OpacityParams`, `add_opacities` (consolidation, ground glass, patchy shadows,
  white-out, effusion);
- lungct.cxr.film: `FilmParams`, `film_augment` (exposure, blur, noise, frame bands, JPEG, and the order
  of it all), with lungct.cxr.film_geometry (crop, AP look, rotation, scale, shift) and
  lungct.cxr.film_overlays (tubes, lines, ECG electrodes, burnt-in text and arrows);
- lungct.cxr.field_geometry: `soft_tissue_level`, and the lung fields and smooth textures both build on.
"""
from __future__ import annotations

from lungct.cxr.field_geometry import soft_tissue_level
from lungct.cxr.film import FilmParams, film_augment
from lungct.cxr.opacities import OpacityParams, add_opacities

__all__ = ["FilmParams", "OpacityParams", "add_opacities", "film_augment", "soft_tissue_level"]
