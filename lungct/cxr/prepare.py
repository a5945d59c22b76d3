"""The radiograph chain end to end: a Radiograph (and its mask) to the 256 x 256 network input, and a
256 x 256 prediction back to the radiograph's own pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lungct.cxr.reading import Radiograph, load_radiograph
from lungct.errors import LungctError
from lungct.transforms.cxr import linear_resize, nearest_resize

DEFAULT_RECIPE = "cxr-2d"


def cxr_recipe(recipe: str | Path | dict | None = None, overrides: dict | None = None) -> dict:
    """A radiograph recipe dict: a name/path in pipelines/, or a dict (e.g. a checkpoint's training recipe)."""
    from lungct.recipes import apply_overrides, load_recipe

    if isinstance(recipe, dict):
        import copy

        return apply_overrides(copy.deepcopy(recipe), overrides or {}, recipe.get("source"))
    return load_recipe(recipe or DEFAULT_RECIPE, overrides)


def _chain(recipe: dict):
    """Recipes are built once per recipe dict (the transforms are stateless)."""
    from lungct.recipes import Chain, recipe_digest

    key = recipe_digest({"transforms": recipe.get("transforms") or []})
    if key not in _CHAINS:
        if not recipe.get("transforms"):
            raise LungctError(recipe.get("source"), "radiograph recipe has no 'transforms' chain")
        _CHAINS[key] = Chain(recipe)
    return _CHAINS[key]


_CHAINS: dict = {}


def prepare_cxr(radiograph: Radiograph | str | Path, recipe: str | Path | dict | None = None,
                mask: np.ndarray | None = None) -> tuple[np.ndarray, dict] | tuple[np.ndarray, np.ndarray, dict]:
    """(image float32 (H, W), record) through the recipe's chain; with `mask`, (image, mask uint8, record).

    The record (plain JSON) holds the original shape, spacing and the resize/pad, for to_original.
    """
    if not isinstance(radiograph, Radiograph):
        radiograph = load_radiograph(radiograph)
    recipe = cxr_recipe(recipe)
    data = {"image": radiograph.array[None].astype(np.float32),
            "cxr": {"source": str(radiograph.source), "original_shape": list(radiograph.original_shape),
                    "spacing_mm": list(radiograph.spacing_mm) if radiograph.spacing_mm else None,
                    "patient_right_on_image_left": radiograph.patient_right_on_image_left,
                    "photometric": radiograph.photometric, "warnings": list(radiograph.warnings)}}
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != radiograph.array.shape:
            raise LungctError(radiograph.source, f"mask is {mask.shape} but the radiograph is {radiograph.array.shape}")
        data["mask"] = mask[None].astype(np.uint8)
    out = _chain(recipe)(data)
    record = out["cxr"]
    record["timings_s"] = out.get("case", {}).get("timings_s", {})
    image = np.asarray(out["image"], dtype=np.float32)[0]
    if mask is not None:
        return image, np.asarray(out["mask"], dtype=np.uint8)[0], record
    return image, record


def to_original(array: np.ndarray, record: dict, nearest: bool = True) -> np.ndarray:
    """Undo ResizePadd: crop the padding and resize to the radiograph's original (rows, cols).

    Nearest neighbour (pixel centres aligned) for labels, which is exact when the original size is an
    integer multiple of the resized one; `nearest=False` resizes linearly (for probability maps).
    """
    array = np.asarray(array)
    resize = record.get("resize") if "resize" in record else record
    if not resize or "pad" not in resize:
        return array
    size = tuple(resize["size"])
    if array.shape[-2:] != size:
        raise LungctError(record.get("source"), f"prediction is {array.shape[-2:]} but the chain made {size}")
    (top, bottom), (left, right) = resize["pad"]
    inner = array[..., top:size[0] - bottom, left:size[1] - right]
    shape = tuple(resize["original_shape"])
    if nearest:
        return nearest_resize(inner, shape)
    if inner.ndim == 2:
        return linear_resize(inner, shape)
    return np.stack([linear_resize(channel, shape) for channel in inner.reshape(-1, *inner.shape[-2:])]).reshape(
        *inner.shape[:-2], *shape)
