"""`lungct infer`: a Segmenter loads a checkpoint once and turns scans into masks on their own grid.

Per scan: read -> HU check, reorient to RAS and resample to the checkpoint's spacing in one pass, HU
window (the preprocessing recorded in the checkpoint) -> network on that coarser grid (3D: MONAI
sliding window with Gaussian blending; 2D: batches of axial slices) -> argmax to a uint8 label map and
uint8 per-label probabilities -> clean-up (lungct.postprocess) -> the labels onto the input's exact grid,
boundaries placed between coarse voxels by the interpolated probabilities. Per-label float scores never
exist at full resolution; one uint8 map at a time does (DESIGN.md §7).
"""
from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lungct import __version__
from lungct.errors import LungctError
from lungct.geometry import geometry_summary, voxel_spacing
from lungct.io import Scan, load_scan
from lungct.metrics import voxel_ml

DEFAULT_MODEL = "ct-lungs-2d"
WEIGHTS_DIR = Path(__file__).parent / "weights"
IMAGE_STEPS = ("CheckHUCalibrationd", "Resampled", "HUWindowd")  # what the network input needs
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


# ------------------------------------------------------------------------------------- finding a model


def shipped_models() -> list[str]:
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))


def latest_checkpoint(runs: Path | None = None) -> Path:
    """best.pt of the newest training run in the workspace (`lungct train` writes runs/<run>/best.pt)."""
    from lungct.workspace import runs_dir

    runs = Path(runs or runs_dir())
    found = sorted(runs.glob("*/best.pt"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    if not found:
        raise LungctError(runs, "holds no training run with a best.pt checkpoint (--model latest needs `lungct train` first)")
    return found[-1]


def resolve_model(model: str | Path | None) -> Path:
    """A checkpoint path, the name of a shipped model (lungct/weights/<name>.pt), or 'latest'."""
    model = str(model or DEFAULT_MODEL)
    if model == "latest":
        return latest_checkpoint()
    path = Path(model).expanduser()
    if path.is_file():
        return path
    shipped = WEIGHTS_DIR / f"{model}.pt"
    if shipped.is_file():
        return shipped
    names = ", ".join(shipped_models()) or "none installed"
    raise LungctError(model, f"no such checkpoint file or shipped model (shipped: {names}; or 'latest')")


def pick_device(name: str = "auto") -> torch.device:
    """'auto' = CUDA, then Apple MPS, then CPU; a named device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LungctError(None, "--device cuda: no CUDA GPU is available (use --device auto or cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise LungctError(None, "--device mps: Apple MPS is not available (use --device auto or cpu)")
    return device


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """Mixed precision: on CUDA by default (bf16 where supported); on CPU only when asked (bf16)."""
    if precision not in PRECISIONS:
        raise LungctError(None, f"--precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type == "cpu":
        raise LungctError(None, "--precision fp16 is for GPUs; on CPU use bf16 or fp32")
    return torch.bfloat16 if precision == "bf16" else torch.float16


# ------------------------------------------------------------------------------------------- results


@dataclass
class Segmentation:
    """One scan's result: labels on the input's grid, and what the JSON sidecar reports."""

    name: str
    labels: np.ndarray  # uint8 (x, y, z), the input's exact grid
    affine: np.ndarray
    header: object | None
    label_values: dict  # name -> value in `labels`, background included
    volumes_ml: dict
    timings_s: dict
    warnings: list[str] = field(default_factory=list)
    case: dict = field(default_factory=dict)  # the preprocessing's record (HU calibration, flags)
    processing: dict = field(default_factory=dict)  # image, labels, roi, affine on the network's grid
    source: str = ""
    input_format: str = ""


# ------------------------------------------------------------------------------------------ segmenter


class Segmenter:
    """A loaded model serving many scans: `Segmenter("ct-lungs-2d").segment("scan.nii.gz")`."""

    def __init__(self, model: str | Path | None = None, device: str = "auto", precision: str = "auto",
                 tta: bool = False, sw_batch_size: int = 4, overlap: float = 0.5, slice_batch: int = 16,
                 roi: bool | None = None, binary: bool = False, min_component_fraction: float = 0.1):
        from lungct.checkpoint import load_checkpoint

        self.path = resolve_model(model)
        self.device = pick_device(device)
        self.autocast = autocast_dtype(self.device, precision)
        self.network, self.meta = load_checkpoint(self.path, device=str(self.device))
        self.network.eval()
        self._check_meta()
        if roi is None:  # the checkpoint's own default (training recipe's `inference: {roi: ...}`)
            roi = bool((self.meta.get("inference") or {}).get("roi", False))
        self.tta, self.roi, self.binary = tta, roi, binary
        self.sw_batch_size, self.overlap, self.slice_batch = sw_batch_size, overlap, max(1, slice_batch)
        self.min_component_fraction = min_component_fraction
        labels = self.meta["labels"]
        self.channel_values = np.array(sorted(int(v) for v in labels.values()), dtype=np.uint8)
        self.names = {int(v): str(k) for k, v in labels.items()}
        self.window = dict(self.meta["input"].get("window") or {"a_min": -1024, "a_max": 600, "b_min": 0.0, "b_max": 1.0})
        self.inferer = None
        if self.dim == 3:
            from monai.inferers import SlidingWindowInferer

            self.inferer = SlidingWindowInferer(roi_size=list(self.meta["input"]["patch_size"]),
                                                sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian",
                                                padding_mode="constant", cval=float(self.window["b_min"]))

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def model_name(self) -> str:
        return self.path.stem if self.path.parent == WEIGHTS_DIR else str(self.path)

    def _check_meta(self) -> None:
        meta = self.meta
        missing = [k for k in ("network", "dim", "labels", "input") if k not in meta]
        if missing:
            raise LungctError(self.path, f"checkpoint metadata lacks {', '.join(missing)}: not a lungct checkpoint?")
        if meta.get("modality", "ct") != "ct":
            raise LungctError(self.path, f"is a {meta['modality']} model; lungct infer segments CT scans")
        if int(meta["dim"]) not in (2, 3):
            raise LungctError(self.path, f"has dim {meta['dim']}; expected 2 or 3")
        if int(meta["dim"]) == 3 and not meta["input"].get("patch_size"):
            raise LungctError(self.path, "3D checkpoint without input.patch_size")

    def model_record(self) -> dict:
        """What the JSON sidecar says about the model."""
        meta = self.meta
        return {"name": self.model_name, "path": str(self.path), "network": meta.get("network"), "dim": self.dim,
                "labels": meta.get("labels"), "input": {k: v for k, v in meta["input"].items() if k != "preprocess_recipe"},
                "metrics": meta.get("metrics"), "created": meta.get("created"),
                "lungct_version": meta.get("lungct_version")}

    # -------------------------------------------------------------------------------- the pipeline

    def segment(self, scan: Scan | str | Path) -> Segmentation:
        """Labels for one scan (a loaded Scan, or a file / DICOM folder path) on the scan's own grid."""
        timings = {}
        started = time.perf_counter()
        if not isinstance(scan, Scan):
            scan = load_scan(scan)
            timings["read"] = round(time.perf_counter() - started, 3)
        start = time.perf_counter()
        data = self.preprocess(scan)
        image = data["image"][0].numpy()
        affine = np.asarray(data["image"].affine, dtype=float)
        roi = data["roi"][0].numpy() if self.roi and "roi" in data else None
        timings["preprocess"] = round(time.perf_counter() - start, 3)

        start = time.perf_counter()
        labels, scores = self.predict(image)
        timings["network"] = round(time.perf_counter() - start, 3)

        from lungct.postprocess import postprocess
        from lungct.transforms.geometry import smooth_labels_to_grid

        start = time.perf_counter()
        foreground = [int(v) for v in self.channel_values if v != 0]
        labels = postprocess(labels, foreground, roi, self.min_component_fraction)
        label_values = {self.names[int(v)]: int(v) for v in self.channel_values}
        if self.binary:
            labels = (labels > 0).astype(np.uint8)
            label_values = {self.names.get(0, "background"): 0, "lungs": 1}
            scores = [255 - scores[self.channel_values == 0][0]]  # lungs = not background
            foreground = [1]
        else:
            scores = scores[self.channel_values != 0]
        native = smooth_labels_to_grid(labels, scores, foreground, affine, scan.array.shape, scan.affine)
        timings["postprocess"] = round(time.perf_counter() - start, 3)

        case = data["case"]
        unit = voxel_ml(scan.affine)
        volumes = {name: round(int(np.count_nonzero(native == v)) * unit, 2)
                   for name, v in label_values.items() if v != 0}
        volumes["total"] = round(sum(volumes.values()), 2)
        warnings = list(case.get("warnings", [])) + self._result_warnings(volumes, scan)
        return Segmentation(scan.name, native, scan.affine, scan.header, label_values, volumes, timings, warnings,
                            case, {"image": image, "labels": labels, "roi": roi, "affine": affine},
                            str(scan.source), scan.format)

    def processing_spacing(self, scan: Scan):
        """The grid the network runs on: the checkpoint's spacing; a 2D model keeps thicker native slices."""
        from lungct.transforms.geometry import reoriented_grid

        axcodes = self.meta["input"].get("axcodes") or "RAS"
        native = voxel_spacing(reoriented_grid(scan.affine, scan.array.shape, axcodes)[0])
        wanted = self.meta["input"].get("spacing_mm")
        if wanted is None:
            return [float(s) for s in native]
        wanted = [float(s) for s in np.broadcast_to(np.asarray(wanted, dtype=float), (3,))]
        if self.dim == 2:
            wanted[2] = max(wanted[2], float(native[2]))  # fewer slices, never invented ones
        return wanted

    def recipe(self, scan: Scan) -> dict:
        """The checkpoint's preprocessing recipe cut down to what the network input needs.

        The whole chain runs only when it changes the image (MaskOutsideROId on) or --roi asks for the
        lung region of interest; otherwise: HU check, one resampling pass and the window.
        """
        from lungct.recipes import load_recipe

        recorded = self.meta["input"].get("preprocess_recipe") or load_recipe("preprocess")
        steps = copy.deepcopy(recorded.get("transforms") or [])
        masks_image = any(s.get("name") == "MaskOutsideROId" and (s.get("args") or {}).get("enabled", True)
                          for s in steps)
        if not (masks_image or self.roi):
            steps = [s for s in steps if s.get("name") in IMAGE_STEPS]
        steps = [s for s in steps if s.get("name") != "HUWindowd"]
        if not any(s.get("name") == "CheckHUCalibrationd" for s in steps):
            steps.insert(0, {"name": "CheckHUCalibrationd", "args": {}})
        resample = {"spacing_mm": self.processing_spacing(scan), "axcodes": self.meta["input"].get("axcodes") or "RAS"}
        for step in steps:
            if step.get("name") == "Resampled":
                step["args"] = {**(step.get("args") or {}), **resample}
        if not any(s.get("name") == "Resampled" for s in steps):
            steps.insert(1, {"name": "Resampled", "args": resample})
        steps.append({"name": "HUWindowd", "args": self.window})
        return {"name": f"infer:{recorded.get('name', 'preprocess')}", "transforms": steps}

    def preprocess(self, scan: Scan) -> dict:
        from monai.data import MetaTensor

        from lungct.recipes import Chain

        case = {"warnings": list(scan.warnings), "flags": [], "input": scan.geometry(), "timings_s": {}}
        data = {"image": MetaTensor(torch.from_numpy(np.ascontiguousarray(scan.array)[None]),
                                    affine=torch.as_tensor(scan.affine, dtype=torch.float64)),
                "case": case, "source": str(scan.source)}
        return Chain(self.recipe(scan))(data)

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 label map in the checkpoint's label values, uint8 (0-255) softmax probability of every
        channel, shape (channels, x, y, z)) of a windowed (x, y, z) image."""
        with torch.inference_mode():
            return self._predict_3d(image) if self.dim == 3 else self._predict_2d(image)

    @staticmethod
    def _to_labels_and_scores(probability: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Argmax channel and uint8 (0-255) probabilities of (batch, channels, ...) probabilities."""
        return probability.argmax(1).to(torch.uint8), (probability * 255 + 0.5).clamp_(0, 255).to(torch.uint8)

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        context = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None
                   else contextlib.nullcontext())
        with context:
            out = self.inferer(batch, self.network) if self.inferer is not None else self.network(batch)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.float()

    def _scores(self, batch: torch.Tensor, flip_dims: list[tuple]) -> torch.Tensor:
        """Softmax probabilities, with TTA averaged over flips that never swap right and left."""
        batch = batch.to(self.device)
        flip_dims = flip_dims if self.tta else []
        total = torch.softmax(self._run(batch), dim=1)
        for dims in flip_dims:
            total += torch.softmax(self._run(batch.flip(dims)), dim=1).flip(dims)
        return total / (1 + len(flip_dims))

    def _predict_3d(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        batch = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
        scores = self._scores(batch, [(3,), (4,), (3, 4)])  # anterior-posterior, superior-inferior
        index, probability = self._to_labels_and_scores(scores)
        return self.channel_values[index[0].cpu().numpy()], probability[0].cpu().numpy()

    @property
    def divisor(self) -> int:
        """Slice sides are padded to a multiple of this (16, or the network's total downsampling)."""
        strides = (self.meta["network"].get("args") or {}).get("strides") or []
        total = int(np.prod([s if isinstance(s, int) else max(s) for s in strides])) if strides else 1
        return max(16, total)

    def _predict_2d(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        nx, ny, nz = image.shape
        div = self.divisor
        px, py = math.ceil(nx / div) * div - nx, math.ceil(ny / div) * div - ny
        pad = (py // 2, py - py // 2, px // 2, px - px // 2)  # F.pad order: last axis (y) first
        out = np.empty(image.shape, np.uint8)
        probability = np.empty((len(self.channel_values), *image.shape), np.uint8)
        for z0 in range(0, nz, self.slice_batch):
            z1 = min(nz, z0 + self.slice_batch)
            batch = torch.from_numpy(np.ascontiguousarray(image[:, :, z0:z1].transpose(2, 0, 1), dtype=np.float32))
            batch = F.pad(batch[:, None], pad, value=float(self.window["b_min"]))
            scores = self._scores(batch, [(3,)])  # flip anterior-posterior only
            scores = scores[:, :, pad[2]:pad[2] + nx, pad[0]:pad[0] + ny]
            index, slab = self._to_labels_and_scores(scores)
            out[:, :, z0:z1] = self.channel_values[index.cpu().numpy()].transpose(1, 2, 0)
            probability[:, :, :, z0:z1] = slab.cpu().numpy().transpose(1, 2, 3, 0)
        return out, probability

    def _result_warnings(self, volumes: dict, scan: Scan) -> list[str]:
        warnings = []
        if volumes["total"] == 0:
            warnings.append("no lung found: the mask is empty")
        elif not self.binary:
            empty = [name for name, ml in volumes.items() if name != "total" and ml == 0]
            if empty:
                warnings.append(f"no {', '.join(empty)} found")
        if self.dim == 3 and min(scan.array.shape) == 1:
            warnings.append("a 3D model on a single slice: results are unreliable, prefer a 2D model")
        return warnings


# ------------------------------------------------------------------------------------------- writing


def sidecar_record(result: Segmentation, segmenter: Segmenter, mask_path: Path) -> dict:
    """The JSON written beside a mask."""
    case = result.case
    proc = result.processing
    return {
        "case": result.name,
        "status": "ok",
        "lungct_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "source": result.source,
        "format": result.input_format,
        "mask": str(mask_path),
        "input": geometry_summary(result.labels.shape, result.affine),
        "labels": result.label_values,
        "volumes_ml": result.volumes_ml,
        "model": segmenter.model_record(),
        "inference": {"device": str(segmenter.device),
                      "precision": str(segmenter.autocast).replace("torch.", "") if segmenter.autocast else "float32",
                      "tta": segmenter.tta, "binary": segmenter.binary, "roi": segmenter.roi,
                      "sw_batch_size": segmenter.sw_batch_size if segmenter.dim == 3 else None,
                      "overlap": segmenter.overlap if segmenter.dim == 3 else None,
                      "processing_grid": geometry_summary(proc["labels"].shape, proc["affine"])},
        "hu_calibration": case.get("hu_calibration"),
        "flags": sorted(set(case.get("flags", []))),
        "warnings": result.warnings,
        "timings_s": result.timings_s,
    }


def write_result(result: Segmentation, segmenter: Segmenter, mask_path: Path, json_path: Path,
                 preview_path: Path | None = None) -> dict:
    """Mask (uint8, the input's header when it had one), optional preview, then the JSON (written last:
    its presence marks the case as done)."""
    from lungct.io.volumes import write_json, write_nifti
    from lungct.report import save_preview

    start = time.perf_counter()
    header = result.header if result.input_format in ("nii", "nii.gz") else None
    write_nifti(mask_path, result.labels, result.affine, header=header, dtype=np.uint8)
    if preview_path is not None:
        proc = result.processing
        title = f"{result.name}  " + "  ".join(f"{k} {v:.0f} mL" for k, v in result.volumes_ml.items())
        save_preview(preview_path, proc["image"], proc["labels"], proc["roi"], proc["affine"], title=title)
    result.timings_s["write"] = round(time.perf_counter() - start, 3)
    result.timings_s["total"] = round(sum(v for k, v in result.timings_s.items() if k != "total"), 3)
    record = sidecar_record(result, segmenter, mask_path)
    write_json(json_path, record)
    return record


# --------------------------------------------------------------------------------------------- batch

MASK_SUFFIXES = (".nii.gz", ".nii")


@dataclass
class InferOutcome:
    name: str
    source: str
    status: str  # "ok", "failed" or "skipped"
    reason: str = ""
    record: dict | None = None


@dataclass
class Planned:
    case: object  # lungct.io.CaseSource
    mask: Path
    json: Path
    preview: Path | None


def is_single_output(output: Path) -> bool:
    """-o naming a .nii/.nii.gz file means one scan; anything else is a folder of <case>.nii.gz."""
    return str(output).lower().endswith(MASK_SUFFIXES)


def plan_outputs(cases: list, output: Path, preview: str | Path | None) -> list[Planned]:
    """Where each case's mask, JSON and preview go."""
    from lungct.io.volumes import ITK_SUFFIXES, suffix_of

    output = Path(output)
    if suffix_of(output) in ITK_SUFFIXES:
        raise LungctError(output, "masks are written as NIfTI: name the output .nii.gz (or give a folder)")
    if is_single_output(output):
        if len(cases) != 1:
            raise LungctError(output, f"is one file but the input holds {len(cases)} scans: give a folder as -o")
        stem = output.name[: -len(".nii.gz")] if output.name.lower().endswith(".nii.gz") else output.stem
        png = None if preview is None else output.with_name(stem + ".png") if str(preview) == "auto" else Path(preview)
        return [Planned(cases[0], output, output.with_name(stem + ".json"), png)]
    png_dir = None if preview is None else output if str(preview) == "auto" else Path(preview)
    return [Planned(c, output / f"{c.name}.nii.gz", output / f"{c.name}.json",
                    None if png_dir is None else png_dir / f"{c.name}.png") for c in cases]


def infer_one(plan: Planned, segmenter: Segmenter) -> InferOutcome:
    """One scan end to end (read, segment, write); every failure becomes a one-line reason."""
    import traceback

    from lungct.io import load_case

    case = plan.case
    try:
        started = time.perf_counter()
        scan = load_case(case)
        read_seconds = time.perf_counter() - started
        result = segmenter.segment(scan)
        result.timings_s = {"read": round(read_seconds, 3), **result.timings_s}
        record = write_result(result, segmenter, plan.mask, plan.json, plan.preview)
        return InferOutcome(case.name, str(case.source), "ok", record=record)
    except LungctError as err:
        return InferOutcome(case.name, str(case.source), "failed", str(err))
    except MemoryError:
        return InferOutcome(case.name, str(case.source), "failed", f"{case.source}: out of memory")
    except Exception as err:  # a bug on one scan must not stop the batch; keep a hint of where
        where = traceback.format_exc(limit=6).strip().splitlines()
        hint = where[-3].strip() if len(where) > 2 else ""
        return InferOutcome(case.name, str(case.source), "failed",
                            " ".join(f"{case.source}: internal error {type(err).__name__}: {err} [{hint}]".split()))


_WORKER_SEGMENTERS: dict[str, Segmenter] = {}
_WORKER_LOCK = threading.Lock()


def _infer_on_worker(plan: Planned, options: dict, torch_threads: int = 1) -> InferOutcome:
    """Dask task: the worker process loads the model once (first case) and keeps it for the others;
    `torch_threads` keeps the workers sharing a machine from oversubscribing its cores."""
    import json

    key = json.dumps(options, sort_keys=True, default=str)
    with _WORKER_LOCK:
        if key not in _WORKER_SEGMENTERS:
            torch.set_num_threads(torch_threads)
            _WORKER_SEGMENTERS[key] = Segmenter(**options)
    return infer_one(plan, _WORKER_SEGMENTERS[key])


def infer_batch(inputs: list[Path], output: Path, segmenter: Segmenter | dict, overwrite: bool = False, preview=None,
                progress: bool = True, log=print, num_parts: int = 1, part_id: int = 0,
                scheduler: str | None = None) -> list[InferOutcome]:
    """Segment every scan found in `inputs`; resume (skip cases whose mask and JSON exist) unless
    `overwrite`; one bad scan is reported in one line and skipped. `segmenter` is a Segmenter or
    Segmenter's keyword arguments: the model is then loaded only when there is work to do, and with
    `scheduler` (a Dask address or local:N) once by each worker, where the cases run."""
    from tqdm import tqdm

    from lungct.io import discover

    cases = discover([Path(p) for p in inputs])
    if not cases:
        raise LungctError(", ".join(str(p) for p in inputs), "no scans found (DICOM series, .nii/.nii.gz, .nrrd or .mha)")
    if num_parts > 1:  # one shard of the case list, for job arrays (lungct.batch.shard)
        from lungct.batch import shard

        cases = shard(cases, num_parts, part_id)
    plans = plan_outputs(cases, output, preview)
    single = is_single_output(Path(output))
    outcomes, todo = [], []
    for plan in plans:
        if plan.mask.exists() and not overwrite:
            if single:
                raise LungctError(plan.mask, "exists already (use --overwrite to replace it)")
            if plan.json.exists():
                outcomes.append(InferOutcome(plan.case.name, str(plan.case.source), "skipped", "done in an earlier run"))
                continue
        todo.append(plan)
    if outcomes:
        log(f"{len(outcomes)} of {len(plans)} scan(s) already done in {output} (resuming; --overwrite redoes them)")
    if scheduler and isinstance(segmenter, Segmenter):
        raise ValueError("with a scheduler, pass Segmenter's keyword arguments: each worker loads its own model")
    if todo and not scheduler and not isinstance(segmenter, Segmenter):
        segmenter = Segmenter(**segmenter)
    bar = tqdm(total=len(todo), desc="infer", unit="scan", disable=not progress or len(todo) < 2, dynamic_ncols=True)

    def say(message: str) -> None:
        with tqdm.external_write_mode(file=sys.stderr):
            log(message)

    if scheduler:
        from lungct.batch import run_tasks, torch_threads_per_task, worker_lost

        def lost(plan: Planned, err: Exception) -> InferOutcome:
            return InferOutcome(plan.case.name, str(plan.case.source), "failed", worker_lost(plan.case.source, err))

        results = run_tasks(_infer_on_worker, todo, dict(segmenter), torch_threads_per_task(scheduler),
                            scheduler=scheduler, on_crash=lost)
    else:
        results = (infer_one(plan, segmenter) for plan in todo)
    for outcome in results:
        bar.update(1)
        bar.set_postfix_str(outcome.name[:30])
        outcomes.append(outcome)
        for warning in (outcome.record or {}).get("warnings", []):
            say(f"warning: {outcome.name}: {warning}")
        if outcome.status == "failed":
            say(f"FAILED {outcome.reason}")
    bar.close()
    return outcomes
