"""Training data: cases (the network input and labels on one grid, plus where the original input and its
native-grid reference are, for validation), loaded from three kinds of source and split by case.

- a `lungct preprocess` folder (prep/<case>/image.nii.gz, made by the chain of its case.json), with the
  chain's labels or the user's own label files drawn on the original scans (--labels), carried onto the
  preprocessed grid by nearest neighbour;
- the user's own CT image/label pairs in any format lungct reads, run through the recipe's input chain;
- radiographs and their masks, through the radiograph recipe's chain.
Everything is loaded once into memory; only augmentation runs per sample (lungct.sampling).
"""
from __future__ import annotations

import copy
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lungct.ct.segmenter import prepare_scan
from lungct.ct.transforms.common import hu_to_window
from lungct.errors import LungctError
from lungct.evaluate import read_labels
from lungct.geometry import labels_to_grid
from lungct.io import discover, load_case
from lungct.io.radiograph import load_radiograph, read_cxr_mask
from lungct.recipes import Chain


@dataclass
class Case:
    """One training case: the network input (float32) and integer labels on the same grid; `source` is
    the original input and `reference` its labels on the original grid, which validation scores against."""

    name: str
    image: np.ndarray  # (x, y, z)
    labels: np.ndarray  # (x, y, z) uint8 label values
    affine: np.ndarray
    source: Path | None = None
    reference: Path | None = None
    record: dict = field(default_factory=dict)  # what the chain recorded (a radiograph's resize and padding)
    roi_slices: np.ndarray | None = None  # bool per axial slice: holds the lung ROI (training can keep to those)


def check_labels(name: str, labels: np.ndarray, allowed: set[int], source) -> np.ndarray:
    """uint8 labels of the recipe's values (0/255 masks read as binary); anything else is refused."""
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


def label_file(folder: Path, name: str) -> Path | None:
    """The label file (or DICOM folder) of case `name` in a labels folder: <name>.<any suffix> or <name>/."""
    for candidate in (*sorted(folder.glob(f"{name}.*")), folder / name):
        if candidate.is_file() or (candidate.is_dir() and any(candidate.iterdir())):
            return candidate
    return None


def read_reference(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(labels, affine) of a label file on a scan's own grid, as `lungct evaluate` reads it."""
    return read_labels(Path(path))


# ------------------------------------------------------------------------------------------ CT sources


def prep_sources(record: dict, folder: Path) -> Path | None:
    """The original scan of a preprocessed case (its file, or its DICOM folder), if it still exists."""
    sources = record.get("sources")
    path = Path(sources["folder"]) if isinstance(sources, dict) else Path(sources[0]) if sources else None
    if path is not None and len(sources) > 1 and not isinstance(sources, dict):
        path = path.parent
    return path if path is not None and path.exists() else None


def load_prep_cases(prep: Path, labels_dir: Path | None, allowed: set[int]) -> tuple[list[Case], dict]:
    """Cases of a preprocess output folder, and the recipe its images were made with."""
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
        record = json.loads((folder / "case.json").read_text())
        image_img = nib.load(folder / "image.nii.gz")
        if labels_dir is not None:  # the user's labels, drawn on the original scan: carried onto this grid
            reference = label_file(Path(labels_dir), name)
            if reference is None:
                raise LungctError(labels_dir, f"case '{name}' has a preprocessed image but no label file")
            native, native_affine = read_reference(reference)
            _check_native_grid(name, native, native_affine, record, reference)
            labels = labels_to_grid(check_labels(name, native, allowed, reference), native_affine,
                                    image_img.shape[:3], image_img.affine)
        else:
            reference = folder / "lungs-native.nii.gz"
            if not (folder / "lungs.nii.gz").is_file():
                raise LungctError(folder, f"case '{name}' has an image but no labels (lungs.nii.gz)")
            label_img = nib.load(folder / "lungs.nii.gz")
            if label_img.shape[:3] != image_img.shape[:3]:
                raise LungctError(folder / "lungs.nii.gz", f"case '{name}': label shape {label_img.shape[:3]} differs "
                                                           f"from the image's {image_img.shape[:3]}")
            labels = check_labels(name, np.asarray(label_img.dataobj), allowed, folder / "lungs.nii.gz")
        image = np.asarray(image_img.dataobj, dtype=np.float32)
        roi = np.asarray(nib.load(folder / "roi.nii.gz").dataobj) if (folder / "roi.nii.gz").is_file() else None
        cases.append(Case(name, image, labels, image_img.affine, prep_sources(record, folder), reference,
                          roi_slices=None if roi is None else roi.any(axis=(0, 1))))
        recipe = recipe or record.get("recipe")
    return cases, recipe


def mask_outside_roi(cases: list[Case], prep: Path, value: float) -> None:
    """Set each case's image outside its roi.nii.gz to `value` (a network input value), as MaskOutsideROId
    does: for a recipe that masks the image, trained on a prep/ made without it."""
    import nibabel as nib

    for case in cases:
        path = Path(prep) / case.name / "roi.nii.gz"
        if not path.is_file():
            raise LungctError(path.parent, f"case '{case.name}' has no roi.nii.gz to mask the image with")
        case.image[np.asarray(nib.load(path).dataobj) == 0] = value


def _check_native_grid(name: str, labels: np.ndarray, affine: np.ndarray, record: dict, where) -> None:
    """Labels for a preprocessed case must lie on the original scan's grid (what preprocess recorded)."""
    grid = record.get("input") or {}
    shape = tuple(grid.get("shape") or ())
    if shape and tuple(labels.shape) != shape:
        raise LungctError(where, f"case '{name}': labels are {labels.shape} but the scan was {shape}: label "
                                 "files must be drawn on the original scans")
    origin = grid.get("origin_mm")
    if origin is not None and not np.allclose(affine[:3, 3], origin, atol=1e-2):
        raise LungctError(where, f"case '{name}': label geometry differs from the original scan's")


def load_pair_cases(images: Path, labels_dir: Path, allowed: set[int], chain) -> list[Case]:
    """The user's own CT image/label pairs (any format lungct reads), matched by case name and run through
    the recipe's input chain; labels follow the image onto the network grid by nearest neighbour."""
    found = [c for c in discover([Path(images)]) if not c.problem and c.modality == "ct"]
    if not found:
        raise LungctError(images, "holds no readable CT images")
    cases = []
    for source in found:
        reference = label_file(Path(labels_dir), source.name)
        if reference is None:
            raise LungctError(labels_dir, f"case '{source.name}' has an image but no labels")
        scan, (native, native_affine) = load_case(source), read_reference(reference)
        if native.shape != scan.array.shape or not np.allclose(native_affine, scan.affine, atol=1e-3):
            raise LungctError(reference, f"case '{source.name}': label shape or geometry differs from the image's "
                                         f"({native.shape} vs {scan.array.shape})")
        values = check_labels(source.name, native, allowed, reference)
        prepared = prepare_scan(chain, scan)
        grid_labels = labels_to_grid(values, scan.affine, prepared.image.shape, prepared.affine)
        cases.append(Case(source.name, prepared.image, grid_labels, prepared.affine, Path(source.source), reference,
                          roi_slices=None if prepared.roi is None else prepared.roi.any(axis=(0, 1))))
    return cases


def adopt_prep_chain(chain: list[dict], prep_recipe: dict | None, where) -> list[dict]:
    """The recipe's chain with the settings that made the preprocessed images (HU check, spacing,
    orientation, window) taken from prep/'s own recipe: the network's input is what it trained on."""
    if not prep_recipe:
        raise LungctError(where, "its case.json records no preprocessing recipe (made by an old lungct?)")
    made = {s["name"]: s.get("args") or {} for s in prep_recipe.get("transforms") or []}
    if Chain(prep_recipe.get("transforms") or [], where).roi_fill_hu is not None:
        return [s for s in prep_recipe["transforms"]]  # the image depends on the whole chain
    chain = copy.deepcopy(chain)
    adopt = {"CheckHUCalibrationd": ("recalibrate", "tolerance_hu"), "Resampled": ("spacing_mm", "axcodes"),
             "HUWindowd": ("a_min", "a_max", "b_min", "b_max")}
    for step in chain:
        for key in adopt.get(step["name"], ()):
            if key in made.get(step["name"], {}):
                step.setdefault("args", {})[key] = made[step["name"]][key]
    return chain


def masked_value(chain: list[dict], prep_recipe: dict) -> float | None:
    """The network input value outside the ROI when the chain masks the image (MaskOutsideROId) but prep/'s
    recipe did not, so its images must be masked on loading; None otherwise."""
    network_chain, prep_chain = Chain(chain), Chain(prep_recipe.get("transforms") or [])
    if network_chain.roi_fill_hu is None or prep_chain.roi_fill_hu is not None:
        return None
    return float(hu_to_window(network_chain.roi_fill_hu, network_chain.window))


# ------------------------------------------------------------------------------------------ radiographs


def load_radiograph_cases(pairs: list, chain, progress: bool = True) -> list[Case]:
    """Radiographs and their masks through the recipe's chain (256 x 256 images and masks)."""
    from tqdm import tqdm


    cases = []
    for name, image_path, mask_path in tqdm(pairs, desc="radiographs", leave=False,
                                            disable=not progress or len(pairs) < 50):
        radiograph = load_radiograph(image_path)
        mask = read_cxr_mask(mask_path)
        if mask.shape != radiograph.array.shape:
            raise LungctError(mask_path, f"mask is {mask.shape[0]}x{mask.shape[1]} (rows x cols) but its image is "
                                         f"{radiograph.array.shape[0]}x{radiograph.array.shape[1]}")
        out = chain({"image": radiograph.array[None].astype(np.float32), "mask": mask[None].astype(np.uint8)})
        image = np.asarray(out["image"], dtype=np.float32)[0]
        cases.append(Case(name, image[..., None], np.asarray(out["mask"], dtype=np.uint8)[0][..., None], np.eye(4),
                          Path(image_path), Path(mask_path), out.get("case", {})))
    return cases


# ------------------------------------------------------------------------------------------------ split


def split_cases(cases: list, fraction: float, seed: int, named=None, assignment: dict | None = None,
                excluded=None) -> tuple[list, list]:
    """(train, validation) by whole case, never by slice. With `assignment` ({name: "train"/"validation"},
    a split file) it decides; otherwise the `named` cases plus a seeded `fraction` of the others go to
    validation. `excluded` cases are left out of training only (references of another convention)."""
    excluded = set(excluded or [])
    if assignment is not None:
        missing = sorted(c.name for c in cases if c.name not in assignment)
        if missing:
            raise LungctError(None, f"the split file does not assign {len(missing)} case(s), e.g. {missing[0]}")
        train = [c for c in cases if assignment[c.name] == "train" and c.name not in excluded]
        validation = [c for c in cases if assignment[c.name] == "validation"]
    else:
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
        train = [c for c in rest[count:] if c.name not in excluded]
    if not train:
        raise LungctError(None, "no training cases left after holding apart the validation cases")
    if not validation:
        raise LungctError(None, "no validation cases: name some (data.validation_cases) or set data.validation_fraction")
    return train, validation
