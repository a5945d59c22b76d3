"""Radiograph training pairs: images matched to their lung masks by name, checked, and the optional
`file,dataset,split` CSV that splits them into training and validation."""
from __future__ import annotations

import csv
from pathlib import Path


from lungct.errors import LungctError
from lungct.io.dicom import is_dicom_file
from lungct.io.radiograph import read_cxr_mask
from lungct.io.volumes import PICTURE_SUFFIXES, stem_of, suffix_of

MASK_NAME_SUFFIXES = ("", "_mask", "-mask", "_label", "_seg")


def _radiograph_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise LungctError(folder, "no such folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                  and (suffix_of(p) in PICTURE_SUFFIXES or is_dicom_file(p)))


def _image_size(path: Path) -> tuple[int, int] | None:
    """(rows, cols) from the file header without decoding the pixels, or None when not a picture."""
    if suffix_of(path) not in PICTURE_SUFFIXES:
        return None
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size[1], image.size[0]
    except Exception:  # noqa: BLE001 - the reader reports it properly later
        return None


def read_split_file(path: Path) -> dict[str, str]:
    """{image stem: split} from a CSV with columns file and split (dataset optional)."""
    path = Path(path)
    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise LungctError(path, f"cannot read the split file ({err})") from None
    if not rows or not {"file", "split"} <= set(rows[0]):
        raise LungctError(path, "split file needs a header with columns 'file' and 'split'")
    return {stem_of(Path(row["file"].strip())): row["split"].strip().lower() for row in rows if row.get("file")}


def find_split_file(images_dir: Path, setting: str | Path | None = "auto") -> Path | None:
    """The split CSV a recipe's `data.split_file` names; "auto": splits.csv in or beside the images folder."""
    if setting in (None, "", "none", False):
        return None
    if str(setting) != "auto":
        path = Path(setting)
        if not path.is_file():
            raise LungctError(path, "split file not found")
        return path
    for candidate in (Path(images_dir) / "splits.csv", Path(images_dir).parent / "splits.csv"):
        if candidate.is_file():
            return candidate
    return None


def cxr_pairs(images_dir: str | Path, masks_dir: str | Path, split_csv: str | Path | None = None,
              split: str | None = None, check_values: bool = True) -> list[tuple[str, Path, Path]]:
    """[(name, image path, mask path)] sorted by name, every image with a mask of the same size and
    0/1 or 0/255 values; `split` ("train" / "validation") keeps the images the split file assigns to it.

    Refused (LungctError naming the file): an image without a mask, a mask whose size differs from its
    image's, mask values outside {0, 1} or {0, 255}, a split file naming missing images, an unknown split.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    images = _radiograph_files(images_dir)
    if not images:
        raise LungctError(images_dir, "holds no radiographs (PNG, JPEG, TIFF, BMP or DICOM)")
    masks: dict[str, Path] = {}
    for path in _radiograph_files(masks_dir):
        masks.setdefault(stem_of(path), path)
    wanted = None
    if split is not None:
        if split_csv is None:
            raise LungctError(images_dir, f"split '{split}' asked for but no split file given")
        assignment = read_split_file(Path(split_csv))
        known = sorted(set(assignment.values()))
        if split.lower() not in known:
            raise LungctError(split_csv, f"no image is in split '{split}' (splits: {', '.join(known)})")
        wanted = {name for name, s in assignment.items() if s == split.lower()}
        present = {stem_of(p) for p in images}
        missing = sorted(wanted - present)
        if missing:
            raise LungctError(split_csv, f"names {len(missing)} image(s) not in {images_dir} (e.g. {missing[0]})")
    pairs = []
    for image in images:
        name = stem_of(image)
        if wanted is not None and name not in wanted:
            continue
        mask = next((masks[name + tail] for tail in MASK_NAME_SUFFIXES if name + tail in masks), None)
        if mask is None:
            raise LungctError(image, f"has no mask in {masks_dir} (expected {name}.png or {name}_mask.png)")
        image_size, mask_size = _image_size(image), _image_size(mask)
        if image_size and mask_size and image_size != mask_size:
            raise LungctError(mask, f"mask is {mask_size[0]}x{mask_size[1]} (rows x cols) but its image "
                                    f"{image.name} is {image_size[0]}x{image_size[1]}")
        if check_values:
            read_cxr_mask(mask)
        pairs.append((name, image, mask))
    return pairs
