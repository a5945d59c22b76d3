"""`lungct infer` for chest radiographs: a radiograph model loaded once, masks at each picture's own size.

Per radiograph: read (PNG/JPEG/TIFF, 16-bit, DICOM CR/DX with its LUTs) -> the checkpoint's chain to
256 x 256 -> network (optional horizontal-flip-free TTA is not offered: flipping swaps right and left)
-> lung probability back to the original pixels -> two largest fields, holes filled, right/left labels
when separable -> PNG mask (0/255 binary, or 1 = right / 2 = left) and a JSON with the areas in cm².
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lungct.errors import LungctError

DEFAULT_CXR_MODEL = "cxr-lungs-2d"
PICTURE_OUT = (".png",)


class RadiographSegmenter:
    """`RadiographSegmenter("cxr-lungs-2d").segment("cxr.png")` -> (CxrResult, record)."""

    def __init__(self, model: str | Path | None = None, device: str = "auto", binary: bool = False):
        from lungct.checkpoint import load_checkpoint
        from lungct.inference import pick_device, resolve_model

        self.path = resolve_model(model or DEFAULT_CXR_MODEL)
        self.device = pick_device(device)
        self.network, self.meta = load_checkpoint(self.path, device=str(self.device))
        if self.meta.get("modality") != "cxr":
            raise LungctError(self.path, f"is a {self.meta.get('modality', 'ct')} model, not a radiograph model "
                                         "(use it on CT scans, or --modality)")
        self.recipe = self.meta["training"]["recipe"]
        self.settings = dict(self.recipe.get("inference") or {})
        self.binary = binary

    def segment(self, path: str | Path):
        from lungct.cxr import finish_cxr, load_radiograph
        from lungct.cxr.prepare import prepare_cxr

        timings = {}
        started = time.perf_counter()
        radiograph = load_radiograph(path)
        timings["read"] = round(time.perf_counter() - started, 3)
        start = time.perf_counter()
        image, record = prepare_cxr(radiograph, self.recipe)
        timings["preprocess"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        with torch.inference_mode():
            scores = self.network(torch.from_numpy(image[None, None]).to(self.device))[0].float().cpu().numpy()
        timings["network"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        result = finish_cxr(scores, record, threshold=float(self.settings.get("threshold", 0.5)),
                            min_fraction=float(self.settings.get("min_fraction", 0.05)),
                            fill_holes=bool(self.settings.get("fill_holes", True)),
                            split=bool(self.settings.get("split_fields", True)) and not self.binary)
        timings["postprocess"] = round(time.perf_counter() - start, 3)
        record = {"source": str(path), "modality": "cxr", "original_shape": list(radiograph.original_shape),
                  "spacing_mm": list(radiograph.spacing_mm) if radiograph.spacing_mm else None,
                  "labels": ({"background": 0, "lungs": 1} if result.labels is None or self.binary
                             else {"background": 0, "right_lung": 1, "left_lung": 2}),
                  "areas_cm2": result.areas_cm2, "model": {"name": self.path.stem, "path": str(self.path),
                                                         "metrics": self.meta.get("metrics")},
                  "timings_s": timings, "warnings": list(radiograph.warnings) + list(result.warnings)}
        return result, record


@dataclass
class RadiographOutcome:
    name: str
    source: str
    status: str  # ok, skipped, failed
    reason: str = ""
    record: dict | None = None


def radiograph_files(inputs: list[Path]) -> list[Path]:
    from lungct.cxr.dataset import _radiograph_files

    files = []
    for item in map(Path, inputs):
        if not item.exists():
            raise LungctError(item, "no such file or folder")
        files.extend([item] if item.is_file() else _radiograph_files(item))
    if not files:
        raise LungctError(", ".join(map(str, inputs)), "no radiographs found (PNG, JPEG, TIFF, BMP or DICOM)")
    return files


def infer_radiographs(inputs: list[Path], output: Path, make_segmenter, overwrite: bool = False,
                      preview=None, progress: bool = True, log=print, num_parts: int = 1,
                      part_id: int = 0) -> list[RadiographOutcome]:
    """Segment every radiograph in `inputs`: one file -> `output` (a .png path), else `output`/<name>.png.
    A batch resumes (a radiograph whose mask and JSON exist is skipped) unless `overwrite`;
    `num_parts`/`part_id` take one shard of the list, as for CT (lungct.batch.shard)."""
    from tqdm import tqdm

    from lungct.batch import shard
    from lungct.cxr import write_cxr_mask
    from lungct.io.volumes import stem_of, write_json

    files = radiograph_files(inputs)
    single = len(files) == 1 and Path(output).suffix.lower() in PICTURE_OUT
    if num_parts > 1:
        files = shard(files, num_parts, part_id)
    segmenter, outcomes = None, []
    bar = tqdm(files, desc="infer", unit="image", disable=not progress or len(files) < 2, dynamic_ncols=True)
    for path in bar:
        name = stem_of(path)
        mask_path = Path(output) if single else Path(output) / f"{name}.png"
        json_path = mask_path.with_suffix(".json")
        if single and mask_path.exists() and not overwrite:
            raise LungctError(mask_path, "exists; --overwrite replaces it")
        if mask_path.exists() and json_path.exists() and not overwrite:
            outcomes.append(RadiographOutcome(name, str(path), "skipped", "done in an earlier run"))
            continue
        try:
            segmenter = segmenter or make_segmenter()
            result, record = segmenter.segment(path)
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            write_cxr_mask(mask_path, result.mask, overwrite=True)  # 0/255: viewable, like reference masks
            record["mask"] = str(mask_path)
            if result.labels is not None and not segmenter.binary:  # 1 = right, 2 = left
                labels_path = mask_path.with_name(f"{mask_path.stem}-labels.png")
                write_cxr_mask(labels_path, result.labels, scale=1, overwrite=True)
                record["labels_mask"] = str(labels_path)
            if preview:
                preview_path = Path(preview) if Path(preview).suffix.lower() == ".png" and single else \
                    (Path(preview) if not single else mask_path.parent) / f"{name}-preview.png"
                save_overlay(path, result.output, preview_path)
                record["preview"] = str(preview_path)
            write_json(json_path, record)
            outcomes.append(RadiographOutcome(name, str(path), "ok", record=record))
        except LungctError as err:
            if single or segmenter is None:
                raise
            bar.write(f"FAILED {err}")
            outcomes.append(RadiographOutcome(name, str(path), "failed", str(err)))
    return outcomes


def save_overlay(source: Path, labels: np.ndarray, path: Path) -> None:
    """The radiograph with its lung fields tinted (right red, left blue), for a quick look."""
    from PIL import Image

    from lungct.cxr import load_radiograph
    from lungct.io.volumes import atomic_path

    grey = load_radiograph(source).array
    grey = (255 * (grey - grey.min()) / max(float(np.ptp(grey)), 1e-6)).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    for value, colour in ((1, (230, 60, 60)), (2, (60, 150, 240))):
        where = labels == value
        rgb[where] = 0.6 * rgb[where] + 0.4 * np.array(colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temporary:
        Image.fromarray(rgb.astype(np.uint8)).save(temporary, format="PNG")
