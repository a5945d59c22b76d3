"""Training samples: axial slices (2D) or patches (3D) of the training cases, drawn afresh each epoch
and augmented identically on image and label, with a random state fixed by (seed, epoch, sample) so a run
repeats exactly whatever the number of data-loader workers or DDP ranks.

Before the generic augmentation a sample may get a modality's own synthesis (`make_synthesis`): CT
lesions painted into the lungs and labelled as lung (lungct.ct.lesions), or radiograph opacities and film
artefacts with the lung fields unchanged (lungct.cxr.augment), after which the rest of the radiograph
chain (equalisation, local contrast) runs on the sample, as it would on a film at inference."""
from __future__ import annotations

import dataclasses
import random

import numpy as np
import torch

from lungct.ct.lesions import LesionParams, orientation_hints, synthesize_lesions
from lungct.ct.transforms.common import hu_to_window, window_to_hu
from lungct.cxr.augment import OpacityParams, add_opacities, film_augment
from lungct.cxr.bases import GastricParams, PleuralFluidParams, add_gastric_bubble, add_pleural_fluid
from lungct.cxr.transforms import valid_region
from lungct.data import Case
from lungct.errors import LungctError
from lungct.geometry import voxel_spacing
from lungct.recipes import Chain, suggest_name


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
                 augment=None, fill: float = 0.0, seed: int = 0, synthesis=None, roi_slices_only: bool = False,
                 case_weights: dict | None = None):
        self.cases, self.size, self.augment, self.fill = cases, list(slice_size), augment, fill
        self.synthesis = synthesis

        def usable(case: Case) -> np.ndarray:  # slices outside the lung ROI never reach the network
            everywhere = np.ones(case.labels.shape[2], bool)
            return case.roi_slices if roi_slices_only and case.roi_slices is not None else everywhere

        self.positives = [(i, z) for i, c in enumerate(cases) for z in np.nonzero(c.labels.any(axis=(0, 1)))[0]]
        self.negatives = [(i, z) for i, c in enumerate(cases)
                          for z in np.nonzero(~c.labels.any(axis=(0, 1)) & usable(c))[0]]
        if not self.positives:
            raise LungctError(None, "no training slice holds any foreground label")
        # {case name: weight}: a case's slices drawn that much more often (films worth seeing twice)
        self.weights = [float(case_weights.get(cases[i].name, 1.0)) for i, _ in self.positives] \
            if case_weights else None
        self.negative_share, self.per_epoch, self.seed = negative_share, per_epoch, seed
        self.items, self.epoch = [], 0
        self.reshuffle(0)

    def reshuffle(self, epoch: int) -> None:
        self.epoch = epoch
        rng = random.Random(self.seed * 1000 + epoch)
        total = self.per_epoch or len(self.positives)
        negatives = min(len(self.negatives), round(total * self.negative_share))
        drawn = rng.choices(self.positives, self.weights, k=total - negatives) if self.weights else \
            [rng.choice(self.positives) for _ in range(total - negatives)]
        self.items = drawn + rng.sample(self.negatives, negatives)
        rng.shuffle(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        case_index, z = self.items[index]
        case = self.cases[case_index]
        # Slices larger than the slice size are cropped at a random place, so the network also sees the
        # body's edge and the air around it (a centred crop would never show it: outside air taken for lung).
        rng = np.random.default_rng(_sample_seed(self.seed, self.epoch, index))
        offsets = rng.random(2)
        image, labels = case.image[:, :, z], case.labels[:, :, z]
        if self.synthesis is not None:
            image, labels = self.synthesis(image, labels, rng, case)
        item = {"image": torch.from_numpy(fit_2d(image, self.size, self.fill, offsets)[None].copy()),
                "label": torch.from_numpy(fit_2d(labels, self.size, 0, offsets)[None].astype(np.float32))}
        return _augmented(self.augment, item, self.seed, self.epoch, index)


class PatchSampler(torch.utils.data.Dataset):
    """3D patches with foreground oversampling (MONAI RandCropByPosNegLabeld), augmented."""

    def __init__(self, cases: list[Case], patch_size, positive_share: float, per_epoch: int | None,
                 augment=None, fill: float = 0.0, seed: int = 0, synthesis=None):
        from monai.transforms import Compose, RandCropByPosNegLabeld, SpatialPadd

        self.cases, self.augment, self.seed, self.epoch, self.synthesis = cases, augment, seed, 0, synthesis
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
        if self.synthesis is not None:
            rng = np.random.default_rng(_sample_seed(self.seed, self.epoch, index))
            image, labels = self.synthesis(item["image"][0].numpy(), item["label"][0].numpy().astype(np.uint8), rng, case)
            item = {"image": torch.from_numpy(image[None].astype(np.float32)),
                    "label": torch.from_numpy(labels[None].astype(np.float32))}
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


# ------------------------------------------------------------------------------------ modality synthesis


class LesionSynthesis:
    """CT: with probability `prob`, dense lesions painted into a sample's lungs and labelled as lung (the
    network input is windowed HU; the lesions are made in HU and windowed back)."""

    def __init__(self, prob: float, window: dict, params: dict | None = None, where=None):
        self.prob, self.window = float(prob), window
        self.params = _params(LesionParams, params, "augment.lesions.params", where)

    def __call__(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, case: Case):
        if not labels.any() or rng.random() >= self.prob:
            return image, labels
        hu = window_to_hu(image, self.window)
        posterior, inferior = orientation_hints(case.affine)
        spacing = voxel_spacing(case.affine)[: image.ndim]
        hints = ({"posterior_hint": posterior[:2]} if image.ndim == 2 else
                 {"posterior_hint": posterior, "inferior_hint": inferior})
        hu, labels, _ = synthesize_lesions(hu, labels, spacing, rng, self.params, **hints)
        return hu_to_window(hu, self.window).astype(np.float32), labels


class RadiographSynthesis:
    """Radiographs: pleural fluid at a base (the fluid leaves the label), opacities inside the lung fields
    (label unchanged), a gastric bubble under the left dome (background) and film artefacts, each with its
    probability, on the grey 256 x 256 image; then the rest of the recipe's chain (`rest`, from
    augment.before_step on) runs on the sample, with the image's own pixels as the film left them.
    `params` ({"opacities": {...}, "gastric": {...}, "pleural_fluid": {...}}) change the generators'
    defaults (OpacityParams, GastricParams, PleuralFluidParams)."""

    def __init__(self, opacity_prob: float, film_prob: float, rest, gastric_prob: float = 0.0,
                 fluid_prob: float = 0.0, params: dict | None = None, where=None):
        self.opacity_prob, self.film_prob, self.rest = float(opacity_prob), float(film_prob), rest
        self.gastric_prob, self.fluid_prob = float(gastric_prob), float(fluid_prob)
        params = params or {}
        self.opacity_params = _params(OpacityParams, params.get("opacities"), "augment.opacities.params", where)
        self.gastric_params = _params(GastricParams, params.get("gastric"), "augment.gastric.params", where)
        self.fluid_params = _params(PleuralFluidParams, params.get("pleural_fluid"), "augment.pleural_fluid.params",
                                    where)

    def __call__(self, image: np.ndarray, labels: np.ndarray, rng: np.random.Generator, case: Case):
        valid = valid_region({"case": case.record}, image.shape)
        if self.fluid_prob > 0 and rng.random() < self.fluid_prob:  # no draw when off: older runs repeat
            image, labels = add_pleural_fluid(image, labels, rng, self.fluid_params)
        if rng.random() < self.opacity_prob:
            image = add_opacities(image, labels, rng, self.opacity_params)
        if self.gastric_prob > 0 and rng.random() < self.gastric_prob:
            image = add_gastric_bubble(image, labels, rng, self.gastric_params)
        if rng.random() < self.film_prob:
            image, labels, valid = film_augment(image, labels, valid, rng)
        out = self.rest({"image": image[None].astype(np.float32), "case": dict(case.record), "valid": valid})
        return np.asarray(out["image"], dtype=np.float32)[0], labels


def _params(kind, values: dict | None, key: str, where):
    """A generator's parameter dataclass with the recipe's changes; unknown names refused with a suggestion."""
    known = {f.name for f in dataclasses.fields(kind)}
    unknown = sorted(set(values or {}) - known)
    if unknown:
        raise LungctError(where, f"unknown recipe key '{key}.{unknown[0]}'" + suggest_name(unknown[0], known))
    return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in (values or {}).items()})


def make_synthesis(recipe: dict, chain: list[dict]):
    """The modality's per-sample synthesis the recipe asks for, or None; for radiographs also the chain
    steps that then run per sample (the cases are loaded only up to augment.before_step)."""
    augment = recipe["augment"]
    if recipe["modality"] == "ct":
        if augment["lesions"]["prob"] <= 0:
            return None
        window = Chain(chain, recipe.get("source")).window
        if window is None:
            raise LungctError(recipe.get("source"), "lesion synthesis needs the chain's HUWindowd step")
        lesions = augment["lesions"]
        return LesionSynthesis(lesions["prob"], window, lesions.get("params"), recipe.get("source"))
    if all(augment[kind]["prob"] <= 0 for kind in ("opacities", "film", "gastric", "pleural_fluid")):
        return None
    params = {kind: augment[kind].get("params") for kind in ("opacities", "gastric", "pleural_fluid")}
    return RadiographSynthesis(augment["opacities"]["prob"], augment["film"]["prob"],
                               Chain(chain_after(chain, augment["before_step"], recipe), recipe.get("source")),
                               augment["gastric"]["prob"], augment["pleural_fluid"]["prob"], params,
                               recipe.get("source"))


def chain_before(chain: list[dict], step: str, recipe: dict) -> list[dict]:
    return chain[: _step_index(chain, step, recipe)]


def chain_after(chain: list[dict], step: str, recipe: dict) -> list[dict]:
    return chain[_step_index(chain, step, recipe):]


def _step_index(chain: list[dict], step: str, recipe: dict) -> int:
    names = [s["name"] for s in chain]
    if step not in names:
        raise LungctError(recipe.get("source"), f"augment.before_step names '{step}', not a step of the chain ({names})")
    return names.index(step)
