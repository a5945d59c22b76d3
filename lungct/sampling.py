"""Training samples: axial slices (2D) or patches (3D) of the training cases, drawn afresh each epoch
and augmented identically on image and label, with a random state fixed by (seed, epoch, sample) so a run
repeats exactly whatever the number of data-loader workers or DDP ranks."""
from __future__ import annotations

import random

import numpy as np
import torch

from lungct.data import Case
from lungct.errors import LungctError


def fit_2d(array: np.ndarray, size, fill: float, offsets=None) -> np.ndarray:
    """Crop or pad the first two axes to `size`: centred, or cropping from `offsets` (fractions 0..1)."""
    out = np.full(tuple(size) + array.shape[2:], fill, dtype=array.dtype)
    src, dst = [], []
    for axis, (n, s) in enumerate(zip(array.shape[:2], size)):
        if n >= s:
            start = (n - s) // 2 if offsets is None else int(round(offsets[axis] * (n - s)))
            src.append(slice(start, start + s)), dst.append(slice(0, s))
        else:
            start = (s - n) // 2
            src.append(slice(0, n)), dst.append(slice(start, start + n))
    out[tuple(dst)] = array[tuple(src)]
    return out


class SliceSampler(torch.utils.data.Dataset):
    """Axial slices of the training cases: all slices with foreground plus a share of negatives, drawn
    afresh each epoch (`reshuffle(epoch)`), each fitted to the slice size and augmented."""

    def __init__(self, cases: list[Case], slice_size, negative_share: float, per_epoch: int | None,
                 augment=None, fill: float = 0.0, seed: int = 0):
        self.cases, self.size, self.augment, self.fill = cases, list(slice_size), augment, fill
        self.positives = [(i, z) for i, c in enumerate(cases) for z in np.nonzero(c.labels.any(axis=(0, 1)))[0]]
        self.negatives = [(i, z) for i, c in enumerate(cases) for z in np.nonzero(~c.labels.any(axis=(0, 1)))[0]]
        if not self.positives:
            raise LungctError(None, "no training slice holds any foreground label")
        self.negative_share, self.per_epoch, self.seed = negative_share, per_epoch, seed
        self.items, self.epoch = [], 0
        self.reshuffle(0)

    def reshuffle(self, epoch: int) -> None:
        self.epoch = epoch
        rng = random.Random(self.seed * 1000 + epoch)
        total = self.per_epoch or len(self.positives)
        negatives = min(len(self.negatives), round(total * self.negative_share))
        self.items = [rng.choice(self.positives) for _ in range(total - negatives)] + rng.sample(self.negatives, negatives)
        rng.shuffle(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        case_index, z = self.items[index]
        case = self.cases[case_index]
        # Slices larger than the slice size are cropped at a random place, so the network also sees the
        # body's edge and the air around it (a centred crop would never show it: outside air taken for lung).
        offsets = np.random.default_rng(_sample_seed(self.seed, self.epoch, index)).random(2)
        item = {"image": torch.from_numpy(fit_2d(case.image[:, :, z], self.size, self.fill, offsets)[None].copy()),
                "label": torch.from_numpy(fit_2d(case.labels[:, :, z], self.size, 0, offsets)[None].astype(np.float32))}
        return _augmented(self.augment, item, self.seed, self.epoch, index)


class PatchSampler(torch.utils.data.Dataset):
    """3D patches with foreground oversampling (MONAI RandCropByPosNegLabeld), augmented."""

    def __init__(self, cases: list[Case], patch_size, positive_share: float, per_epoch: int | None,
                 augment=None, fill: float = 0.0, seed: int = 0):
        from monai.transforms import Compose, RandCropByPosNegLabeld, SpatialPadd

        self.cases, self.augment, self.seed, self.epoch = cases, augment, seed, 0
        self.per_epoch = per_epoch or 4 * len(cases)
        self.crop = Compose([
            SpatialPadd(["image", "label"], spatial_size=list(patch_size), constant_values=fill),
            RandCropByPosNegLabeld(["image", "label"], "label", spatial_size=list(patch_size),
                                   pos=positive_share, neg=1.0 - positive_share, num_samples=1)])
        self.crop.set_random_state(seed)

    def reshuffle(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_epoch

    def __getitem__(self, index: int) -> dict:
        case = self.cases[index % len(self.cases)]
        self.crop.set_random_state(_sample_seed(self.seed, self.epoch, index))
        item = self.crop({"image": torch.from_numpy(case.image[None].copy()),
                          "label": torch.from_numpy(case.labels[None].astype(np.float32))})[0]
        item = {"image": torch.as_tensor(item["image"]).float(), "label": torch.as_tensor(item["label"]).float()}
        return _augmented(self.augment, item, self.seed, self.epoch, index)


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 100_003 + index) % (2 ** 31)


def _augmented(augment, item: dict, seed: int, epoch: int, index: int) -> dict:
    """Augment with a random state fixed by (seed, epoch, sample): the same run twice, or with data
    loader workers or DDP ranks in any order, sees the same samples."""
    if augment is None:
        return item
    augment.set_random_state(_sample_seed(seed, epoch, index))
    out = augment(item)
    return {key: torch.as_tensor(value) for key, value in out.items()}


def augmentation(settings: dict, size, seed: int):
    """Shifts (a fraction of each side), rotation about the axial axis and zoom, applied identically to
    image and label (MONAI RandAffined, label nearest), plus intensity jitter; optionally Gaussian noise
    of up to `noise_sd` (the network's input units) on `noise_prob` of the samples, as in low-dose scans."""
    if not settings["enabled"]:
        return None
    from monai.transforms import Compose, RandAffined, RandGaussianNoised, RandScaleIntensityd, RandShiftIntensityd

    dim = len(size)
    rotate = np.deg2rad(float(settings["rotate_deg"]))
    shift, zoom, prob = float(settings["shift"]), float(settings["zoom"]), float(settings["prob"])
    jitter = float(settings["intensity_jitter"])
    steps = [
        RandAffined(["image", "label"], prob=prob, rotate_range=[rotate] if dim == 2 else [0, 0, rotate],
                    scale_range=[zoom] * dim, translate_range=[shift * n for n in size],
                    mode=["bilinear", "nearest"], padding_mode="border"),
        RandScaleIntensityd("image", factors=jitter, prob=prob),
        RandShiftIntensityd("image", offsets=jitter, prob=prob),
    ]
    noise = float(settings["noise_sd"])
    if noise > 0:  # the standard deviation is drawn from [0, noise_sd] per sample
        steps.append(RandGaussianNoised("image", std=noise, prob=float(settings["noise_prob"])))
    return Compose(steps).set_random_state(seed)
