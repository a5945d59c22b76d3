"""The base of lungct's dictionary transforms (CT and radiograph chains): MONAI's MapTransform contract
(keys, allow_missing_keys, key_iterator, first_key) without MONAI's import, which costs 1.7 s of every
inference run because MONAI's __init__ loads every submodule.

A transform says what it means to the code around the chain through attributes (the ROI it makes, the HU
window it applies, the spacing it resamples to, what it writes outside the ROI), which lungct.recipes.Chain
reads; callers never match transform names. `register_transform` makes a class nameable in recipes.
"""
from __future__ import annotations

TRANSFORMS: dict[str, type] = {}  # class name -> class, for recipes (filled by register_transform)


def register_transform(cls: type) -> type:
    """Make a transform class nameable in recipes (pipelines/*.yaml) by its class name."""
    TRANSFORMS[cls.__name__] = cls
    return cls


class KeyedTransform:
    """MONAI's MapTransform contract (keys, allow_missing_keys, key_iterator, first_key) for lungct's steps."""

    roi_step = False  # a step of making the lung ROI: adds a mask, leaves the image alone (needed only for the ROI)
    window = None  # the HU window it maps to the network's units: {"a_min", "a_max", "b_min", "b_max"}
    target_spacing_mm = None  # the spacing it resamples to
    roi_fill_hu = None  # the HU it writes outside the ROI (None: it leaves the image outside the ROI alone)

    def __init__(self, keys="image", allow_missing_keys: bool = False):
        self.keys = (keys,) if isinstance(keys, str) else tuple(keys)
        self.allow_missing_keys = allow_missing_keys

    def key_iterator(self, data: dict):
        for key in self.keys:
            if key in data:
                yield key
            elif not self.allow_missing_keys:
                raise KeyError(f"key '{key}' is not in the data ({', '.join(map(str, data))}); "
                               "allow_missing_keys=True skips it")

    def first_key(self, data: dict):
        return next(self.key_iterator(data), [])

    def __call__(self, data):
        raise NotImplementedError
