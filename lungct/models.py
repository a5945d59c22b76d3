"""Models: finding a checkpoint, choosing the device and precision, and running the network on arrays.

One `Model` serves training's validation and every segmenter (CT and radiograph): it knows the
checkpoint's meta, where the network runs and in which precision, and how to turn a stack of 2D inputs
or a 3D volume into softmax probabilities (2D: batches of slices padded to the network's divisor; 3D:
MONAI's sliding window with Gaussian blending), with optional flip test-time augmentation.
"""
from __future__ import annotations

import contextlib
import functools
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lungct.checkpoint import read_checkpoint
from lungct.errors import LungctError
from lungct.modalities import get_modality
from lungct.networks import build_network
from lungct.recipes import Chain
from lungct.workspace import runs_dir

WEIGHTS_DIR = Path(__file__).parent / "weights"
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


# ------------------------------------------------------------------------------------- finding a model


def shipped_models() -> list[str]:
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))


def latest_checkpoint(runs: Path | None = None) -> Path:
    """best.pt of the newest training run in the workspace (`lungct train` writes runs/<run>/best.pt)."""
    runs = Path(runs or runs_dir())
    found = sorted(runs.glob("*/best.pt"), key=lambda p: p.stat().st_mtime) if runs.is_dir() else []
    if not found:
        raise LungctError(runs, "holds no training run with a best.pt checkpoint (--model latest needs `lungct train` first)")
    return found[-1]


def resolve_model(model: str | Path | None, modality: str = "ct") -> Path:
    """A checkpoint path, the name of a shipped model (lungct/weights/<name>.pt), or 'latest'; None is
    the shipped default model of the modality."""
    model = str(model or get_modality(modality).default_model)
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
    """'auto' = CUDA (this process's LOCAL_RANK under torchrun), then Apple MPS, then the CPU; a named
    device must be available."""
    import os

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LungctError(None, f"--device {name}: not a device name (auto, cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LungctError(None, f"--device {name}: no CUDA GPU is available (use --device auto or cpu)")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LungctError(None, f"--device {name}: Apple MPS is not available (use --device auto or cpu)")
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


# ------------------------------------------------------------------------------------------------ model


class Model:
    """A network with its checkpoint meta, on a device, in a precision: `Model.load("ct-lungs")`."""

    def __init__(self, network: torch.nn.Module, meta: dict, device: torch.device, autocast: torch.dtype | None,
                 path: Path | None = None):
        self.network, self.meta, self.device, self.autocast, self.path = network, meta, device, autocast, path
        self._check()
        self.channel_values = np.array(sorted(int(v) for v in meta["labels"].values()), dtype=np.uint8)
        self.names = {int(v): str(k) for k, v in meta["labels"].items()}
        self.pad_value = float(meta["input"]["pad_value"])
        self._inferer = None
        self.channels_last = False  # NHWC weights and inputs (Model.load, 2D)
        self.stages: dict = {}

    @classmethod
    def load(cls, model: str | Path | None = None, modality: str | None = None, device: str = "auto",
             precision: str = "auto") -> "Model":
        """Resolve, read and check a checkpoint; `modality` (if given) must be the checkpoint's."""
        path = resolve_model(model, modality or "ct")
        payload = read_checkpoint(path, shared=True)
        meta = payload["meta"]
        if modality and meta.get("modality", "ct") != modality:
            raise LungctError(path, f"is a {meta.get('modality', 'ct')} model, not a {modality} model")
        network = build_network(meta["network"]["name"], for_inference=True, **meta["network"].get("args", {}))
        try:
            network.load_state_dict(payload["state_dict"])
        except RuntimeError as err:
            raise LungctError(path, f"weights do not fit the network it names ({str(err).splitlines()[0][:160]})") from None
        target = pick_device(device)
        network = network.to(target).eval()
        model = cls(network, meta, target, autocast_dtype(target, precision), path)
        model.stages = payload.get("stages") or {}  # later stages of a cascade (CT: the lesion decision)
        if model.dim == 2:  # oneDNN's convolutions run a quarter faster on NHWC (measured, 2 cores)
            model.network, model.channels_last = network.to(memory_format=torch.channels_last), True
        return model

    def _check(self) -> None:
        meta, where = self.meta, self.path
        if int(meta["dim"]) not in (2, 3):
            raise LungctError(where, f"has dim {meta['dim']}; expected 2 or 3")
        size_key = "slice_size" if int(meta["dim"]) == 2 else "patch_size"
        missing = [k for k in ("chain", size_key, "pad_value") if k not in meta["input"]]
        if missing:
            raise LungctError(where, f"checkpoint input lacks {', '.join(missing)}")

    @property
    def dim(self) -> int:
        return int(self.meta["dim"])

    @property
    def modality(self) -> str:
        return self.meta.get("modality", "ct")

    @functools.cached_property
    def spacing_mm(self) -> list[float] | None:
        """The grid the network works on (its input chain's Resampled spacing), or None (not resampled);
        read once per model (building the chain checks and resolves every transform)."""
        spacing = Chain(self.meta["input"]["chain"], self.path).spacing_mm
        return None if spacing is None else [float(v) for v in np.broadcast_to(np.asarray(spacing, float), (3,))]

    @property
    def name(self) -> str:
        if self.path is None:
            return "in-training"
        return self.path.stem if self.path.parent == WEIGHTS_DIR else str(self.path)

    def record(self) -> dict:
        """What a sidecar says about the model."""
        meta = self.meta
        return {"name": self.name, "path": str(self.path) if self.path else None, "network": meta.get("network"),
                "dim": self.dim, "modality": self.modality, "labels": meta.get("labels"),
                "metrics": {k: v for k, v in (meta.get("metrics") or {}).items() if k != "val_cases"},
                "created": meta.get("created"), "lungct_version": meta.get("lungct_version")}

    def precision_name(self) -> str:
        return str(self.autocast).replace("torch.", "") if self.autocast else "float32"

    # ------------------------------------------------------------------------------------- running it

    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        context = (torch.autocast(self.device.type, dtype=self.autocast) if self.autocast is not None
                   else contextlib.nullcontext())
        if self.channels_last:  # the layout the weights are in
            batch = batch.contiguous(memory_format=torch.channels_last)
        with context:
            out = self._inferer(batch, self.network) if self._inferer is not None else self.network(batch)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.float()

    def _softmax(self, batch: torch.Tensor, flips, agreement: list | None = None, average: bool = True) -> torch.Tensor:
        """Softmax probabilities averaged over the input and its flips along `flips` (tensor dims), or of
        the input alone (`average` False: the flips then only measure agreement). `agreement` accumulates
        [foreground voxels both agree on, foreground voxels of each] between the input's and each flip's
        prediction: a network that is sure of itself gives the same lungs either way."""
        batch = batch.to(self.device)
        first = torch.softmax(self._run(batch), dim=1)
        total = first.clone() if average else first
        for dims in flips:
            other = torch.softmax(self._run(batch.flip(dims)), dim=1).flip(dims)
            if agreement is not None:
                a, b = first.max(1).indices != 0, other.max(1).indices != 0
                agreement[0] += int((a & b).sum())
                agreement[1] += int(a.sum() + b.sum())
            if average:
                total += other
        return total / (1 + len(flips)) if average else total

    @property
    def divisor(self) -> int:
        """Slice sides are padded to a multiple of this (16, or the network's total downsampling)."""
        strides = (self.meta["network"].get("args") or {}).get("strides") or []
        total = int(np.prod([s if isinstance(s, int) else max(s) for s in strides])) if strides else 1
        return max(16, total)

    def predict_slices(self, image: np.ndarray, batch_size: int = 16, flips=(), agreement: list | None = None,
                       average: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(labels (x, y, n) in the checkpoint's values, uint8 (0-255) softmax probabilities (channels, x,
        y, n)) of a stack of 2D inputs (x, y, n); sides padded with the input's pad value to the network's
        divisor. `flips` are in-plane axes (0: x, 1: y) to average over."""
        nx, ny, nz = image.shape
        div = self.divisor
        px, py = math.ceil(nx / div) * div - nx, math.ceil(ny / div) * div - ny
        pad = (py // 2, py - py // 2, px // 2, px - px // 2)  # F.pad order: last axis (y) first
        tensor_flips = [tuple(a + 2 for a in axes) for axes in flips]
        out = np.empty((len(self.channel_values), nx, ny, nz), np.uint8)
        labels = np.empty((nx, ny, nz), np.uint8)
        with torch.inference_mode():
            for z0 in range(0, nz, max(1, batch_size)):
                z1 = min(nz, z0 + max(1, batch_size))
                batch = torch.from_numpy(np.ascontiguousarray(image[:, :, z0:z1].transpose(2, 0, 1), dtype=np.float32))
                batch = F.pad(batch[:, None], pad, value=self.pad_value)
                scores = self._softmax(batch, tensor_flips, agreement, average)[:, :, pad[2]:pad[2] + nx, pad[0]:pad[0] + ny]
                scores = scores.contiguous()  # max and the uint8 copy are many times slower on a strided view
                labels[..., z0:z1] = self.channel_values[scores.max(1).indices.cpu().numpy()].transpose(1, 2, 0)
                out[..., z0:z1] = to_uint8(scores).cpu().numpy().transpose(1, 2, 3, 0)
        return labels, out

    def predict_volume(self, image: np.ndarray, sw_batch_size: int = 4, overlap: float = 0.5, flips=(),
                       agreement: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(labels, uint8 softmax probabilities (channels, x, y, z)) of a 3D input, by Gaussian-weighted
        sliding window."""
        from monai.inferers import SlidingWindowInferer

        self._inferer = SlidingWindowInferer(roi_size=list(self.meta["input"]["patch_size"]), sw_batch_size=sw_batch_size,
                                             overlap=overlap, mode="gaussian", padding_mode="constant",
                                             cval=self.pad_value)
        try:
            with torch.inference_mode():
                batch = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
                scores = self._softmax(batch, [tuple(a + 2 for a in axes) for axes in flips], agreement)
                labels = self.channel_values[scores[0].max(0).indices.cpu().numpy()]
                return labels, to_uint8(scores)[0].cpu().numpy()
        finally:
            self._inferer = None


def to_uint8(probability: torch.Tensor) -> torch.Tensor:
    return (probability * 255 + 0.5).clamp_(0, 255).to(torch.uint8)


def flip_dice(agreement: list) -> float | None:
    """Dice between a prediction and its flipped twins, from the counts `_softmax` accumulates."""
    return round(2.0 * agreement[0] / agreement[1], 5) if agreement and agreement[1] else None


def uncertain_fraction(probability: np.ndarray, channel_values: np.ndarray) -> float:
    """Share of the voxels that may be lung (foreground probability >= 0.35) on which the network is
    unsure (<= 0.65): near 0 for a clear-cut prediction, large where it hesitates."""
    foreground = 255 - probability[channel_values == 0][0].astype(np.int16)
    possible = int(np.count_nonzero(foreground >= 89))
    return round(int(np.count_nonzero((foreground >= 89) & (foreground <= 166))) / possible, 5) if possible else 0.0
