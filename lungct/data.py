"""Training data: a case index (image + labels on one grid), split by case, sampled as slices or patches.

Two sources: a `lungct preprocess` output folder (prep/<case>/image.nii.gz, already windowed, with
lungs.nii.gz or labels from another folder matched by case name), or folders of the user's own images and
labels in any format lungct reads, which then get the recipe's preprocessing (HU check with
recalibration, RAS at the recipe spacing, HU window). Everything is loaded once into memory: the
deterministic part is cached, only augmentation runs per sample.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lungct.errors import LungctError


@dataclass
class Case:
    """One training case: the network input (float32, windowed) and integer labels on the same grid."""

    name: str
    image: np.ndarray  # (x, y, z), RAS
    labels: np.ndarray  # (x, y, z) uint8 label values
    affine: np.ndarray


def _stem(path: Path) -> str:
    from lungct.io.volumes import stem_of

    return stem_of(path)


def _label_file(folder: Path, name: str) -> Path | None:
    for candidate in (folder / name / "lungs.nii.gz", *sorted(folder.glob(f"{name}.*")), folder / name):
        if candidate.exists() and (candidate.is_file() or candidate.is_dir() and candidate != folder / name / "lungs.nii.gz"):
            if candidate.is_dir() and not any(candidate.iterdir()):
                continue
            return candidate
    return None


def _check_labels(name: str, labels: np.ndarray, allowed: set[int], source) -> np.ndarray:
    if not np.all(np.isfinite(labels)) or not np.allclose(labels, np.round(labels)):
        raise LungctError(source, f"case '{name}': labels are not integers")
    values = set(np.unique(labels).astype(int).tolist())
    unexpected = values - allowed
    if unexpected == {255} and allowed >= {0, 1}:  # 0/255 masks (pictures): binary foreground
        labels = (labels > 0).astype(np.uint8)
    elif unexpected:
        raise LungctError(source, f"case '{name}': unexpected label values {sorted(unexpected)} "
                                  f"(the recipe's labels are {sorted(allowed)})")
    return labels.astype(np.uint8)


def _same_grid(name: str, image_img, label_img, source) -> None:
    if image_img.shape[:3] != label_img.shape[:3]:
        raise LungctError(source, f"case '{name}': label shape {label_img.shape[:3]} differs from image shape {image_img.shape[:3]}")
    if not np.allclose(image_img.affine, label_img.affine, atol=1e-3):
        raise LungctError(source, f"case '{name}': label geometry (affine) differs from the image's")


def load_prep_cases(prep: Path, labels_dir: Path | None, allowed: set[int]) -> tuple[list[Case], dict | None]:
    """Cases from a preprocess output folder; returns them and the preprocess recipe they were made with."""
    import json

    import nibabel as nib

    prep = Path(prep)
    if not prep.is_dir():
        raise LungctError(prep, "no such folder (run `lungct preprocess` first, or give --data / --images)")
    folders = sorted(p.parent for p in prep.glob("*/image.nii.gz") if (p.parent / "case.json").is_file())
    if not folders:
        raise LungctError(prep, "holds no preprocessed cases (<case>/image.nii.gz with case.json)")
    cases, recipe = [], None
    for folder in folders:
        name = folder.name
        label_path = _label_file(Path(labels_dir), name) if labels_dir else folder / "lungs.nii.gz"
        if label_path is None or not label_path.exists():
            raise LungctError(labels_dir or folder, f"case '{name}' has an image but no labels")
        image_img = nib.load(folder / "image.nii.gz")
        if label_path.suffixes[-2:] == [".nii", ".gz"] or label_path.suffix == ".nii":
            label_img = nib.load(label_path)
            _same_grid(name, image_img, label_img, label_path)
            labels = np.asarray(label_img.dataobj)
        else:
            from lungct.io import load_scan

            scan = load_scan(label_path)
            if scan.array.shape != image_img.shape[:3] or not np.allclose(scan.affine, image_img.affine, atol=1e-3):
                raise LungctError(label_path, f"case '{name}': labels are not on the preprocessed image's grid")
            labels = scan.array
        labels = _check_labels(name, labels, allowed, label_path)
        image = np.asarray(image_img.dataobj, dtype=np.float32)
        cases.append(Case(name, image, labels, image_img.affine))
        if recipe is None:
            recipe = json.loads((folder / "case.json").read_text()).get("recipe")
    return cases, recipe


def load_pair_cases(images: Path, labels_dir: Path, allowed: set[int], spacing_mm, window: dict,
                    recalibrate: bool = True) -> list[Case]:
    """The user's own image/label pairs (any format lungct reads), matched by case name and preprocessed."""
    from lungct.io import discover, load_case, load_scan
    from lungct.transforms.geometry import labels_to_grid, resample_to_spacing
    from lungct.transforms.intensity import estimate_calibration
    from lungct.transforms.lungs import to_ras

    found = [c for c in discover([Path(images)]) if not c.problem]
    if not found:
        raise LungctError(images, "holds no readable images")
    cases = []
    for source in found:
        label_path = _label_file(Path(labels_dir), source.name)
        if label_path is None:
            raise LungctError(labels_dir, f"case '{source.name}' has an image but no labels")
        scan, labels = load_case(source), load_scan(label_path)
        if labels.array.shape != scan.array.shape or not np.allclose(labels.affine, scan.affine, atol=1e-3):
            raise LungctError(label_path, f"case '{source.name}': label shape or geometry differs from the image's "
                                          f"({labels.array.shape} vs {scan.array.shape})")
        values = _check_labels(source.name, labels.array, allowed, label_path)
        array = scan.array
        calibration = estimate_calibration(array)
        if recalibrate and calibration.get("air") is not None and abs(calibration["air"] + 1000) > 50 \
                and calibration.get("tissue") is not None:
            slope = 1040.0 / (calibration["tissue"] - calibration["air"])
            array = array * slope + (-1000.0 - slope * calibration["air"])
        if spacing_mm is None:
            image, affine = to_ras(array, scan.affine)
        else:
            image, affine = resample_to_spacing(array, scan.affine, spacing_mm)
        grid_labels = labels_to_grid(values, scan.affine, image.shape, affine)
        cases.append(Case(source.name, window_hu(image, window), grid_labels, affine))
    return cases


def window_hu(image: np.ndarray, window: dict) -> np.ndarray:
    lo, hi = float(window["a_min"]), float(window["a_max"])
    b_lo, b_hi = float(window.get("b_min", 0.0)), float(window.get("b_max", 1.0))
    return (np.clip(image, lo, hi) - lo) / (hi - lo) * (b_hi - b_lo) + b_lo


def split_cases(cases: list[Case], fraction: float, seed: int, named: list[str] | None = None):
    """(train, validation) by whole case, never by slice: the `named` cases plus a seeded `fraction` of
    the others go to validation."""
    named = set(named or [])
    unknown = named - {c.name for c in cases}
    if unknown:
        raise LungctError(None, f"validation cases not in the data: {', '.join(sorted(unknown))}")
    rest = sorted((c for c in cases if c.name not in named), key=lambda c: c.name)
    random.Random(seed).shuffle(rest)
    count = round(fraction * len(rest)) if fraction > 0 else 0
    if fraction > 0 and not named:
        if len(rest) < 2:
            raise LungctError(None, f"need at least 2 cases to hold one apart for validation, found {len(rest)}")
        count = min(len(rest) - 1, max(1, count))
    validation = [c for c in cases if c.name in named] + rest[:count]
    if not rest[count:]:
        raise LungctError(None, "no training cases left after holding apart the validation cases")
    return rest[count:], validation


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
    if not settings or not settings.get("enabled", True):
        return None
    from monai.transforms import Compose, RandAffined, RandGaussianNoised, RandScaleIntensityd, RandShiftIntensityd

    dim = len(size)
    rotate = np.deg2rad(float(settings.get("rotate_deg", 10)))
    shift, zoom, prob = float(settings.get("shift", 0.1)), float(settings.get("zoom", 0.1)), float(settings.get("prob", 0.8))
    jitter = float(settings.get("intensity_jitter", 0.05))
    steps = [
        RandAffined(["image", "label"], prob=prob, rotate_range=[rotate] if dim == 2 else [0, 0, rotate],
                    scale_range=[zoom] * dim, translate_range=[shift * n for n in size],
                    mode=["bilinear", "nearest"], padding_mode="border"),
        RandScaleIntensityd("image", factors=jitter, prob=prob),
        RandShiftIntensityd("image", offsets=jitter, prob=prob),
    ]
    noise = float(settings.get("noise_sd", 0.0))
    if noise > 0:  # the standard deviation is drawn from [0, noise_sd] per sample
        steps.append(RandGaussianNoised("image", std=noise, prob=float(settings.get("noise_prob", 0.25))))
    return Compose(steps).set_random_state(seed)
