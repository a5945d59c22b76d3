"""The base of lungct's dictionary transforms (CT and radiograph chains): MONAI's MapTransform contract
(keys, allow_missing_keys, key_iterator, first_key) without MONAI's import, which costs 1.7 s of every
inference run because MONAI's __init__ loads every submodule."""
from __future__ import annotations


class KeyedTransform:
    """MONAI's MapTransform contract (keys, allow_missing_keys, key_iterator, first_key) for lungct's steps."""

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
