"""Self-describing checkpoints: the weights plus everything inference needs (docs/design.md, "Checkpoints").

A checkpoint is a `torch.save` dict {"format", "meta", "state_dict", "extra"}. `meta` is plain JSON:
network (name, arguments), dim, modality, labels, `input.chain` (the transforms that turn a scan or a
radiograph into the network input, written at training time with every argument spelled out and run as it
is at inference), post-processing settings (`inference`), the training summary and metrics. `extra`
holds what resuming a run needs (optimiser, scheduler, loop state, random number generator states).

Checkpoints of lungct 0.1 (meta without `format_version`) are upgraded when read: their network input
chain is rebuilt once, the way their inference did it, so they keep giving the same masks.
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
from pathlib import Path

import torch

from lungct import __version__
from lungct.errors import LungctError
from lungct.io.atomic import atomic_path
from lungct.recipes import load_recipe, resolved_step

FORMAT = "lungct-checkpoint/1"  # the file layout; the meta has its own version
META_VERSION = 2
REQUIRED = ("network", "dim", "labels", "input")


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict, extra: dict | None = None,
                    stages: dict | None = None) -> Path:
    """Write atomically (temporary name, then rename), so a crash never leaves a truncated checkpoint.
    `meta` says its own format_version (lungct.training.model_meta writes the current one). `stages`: the
    later networks of a cascade, {name: {"meta": ..., "state_dict": ...}} (CT: the lesion decision)."""
    meta = json.loads(json.dumps({"lungct_version": __version__,
                                  "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                  **meta}))
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {"format": FORMAT, "meta": meta,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "extra": extra or {}}
    if stages:
        payload["stages"] = {name: {"meta": json.loads(json.dumps(stage["meta"])),
                                    "state_dict": {k: v.detach().cpu() for k, v in stage["state_dict"].items()}}
                             for name, stage in stages.items()}
    path = Path(path)
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return path


_READ: dict = {}  # (resolved path, inode, size, mtime) -> payload: a checkpoint is read once per process
_READ_KEEP = 4


def read_checkpoint(path: str | Path, shared: bool = False) -> dict:
    """The whole payload (meta upgraded to the current version, state_dict, extra). `shared`: the copy this
    process read before while the file is unchanged, for readers that copy what they use and change
    nothing (inference loads the weights into its network); training resumes from a fresh read, since
    an optimiser takes over the tensors it is given."""
    path = Path(path)
    if not path.is_file():
        raise LungctError(path, "no such checkpoint file")
    if not shared:
        return _read_checkpoint_file(path)
    status = path.stat()
    key = (str(path.resolve()), status.st_ino, status.st_size, status.st_mtime_ns)  # rewritten: a new inode
    if key not in _READ:
        while len(_READ) >= _READ_KEEP:
            _READ.pop(next(iter(_READ)))
        _READ[key] = _read_checkpoint_file(path)
    return _READ[key]


def _read_checkpoint_file(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a torch file, or foreign pickled objects
        raise LungctError(path, f"is not a readable lungct checkpoint ({type(err).__name__}: "
                                f"{str(err).splitlines()[0][:120] if str(err) else ''})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise LungctError(path, f"is not a lungct checkpoint (no '{FORMAT}' format tag)")
    missing = [key for key in REQUIRED if key not in payload["meta"]]
    if missing:
        raise LungctError(path, f"checkpoint metadata lacks {', '.join(missing)}: not a lungct checkpoint?")
    payload["meta"] = upgrade_meta(payload["meta"], path)
    return payload


def read_meta(path: str | Path) -> dict:
    return read_checkpoint(path, shared=True)["meta"]


def upgrade_meta(meta: dict, where=None) -> dict:
    """Meta of a lungct 0.1 checkpoint in today's form (a copy); current ones are returned as they are."""
    version = int(meta.get("format_version", 1))
    if version == META_VERSION:
        return meta
    if version > META_VERSION:
        raise LungctError(where, f"checkpoint format {version} is newer than this lungct ({__version__}) reads: "
                                 "upgrade lungct")

    meta = copy.deepcopy(meta)
    old = meta["input"]
    if meta.get("modality", "ct") == "cxr":
        recipe = meta["training"]["recipe"]
        chain = recipe["transforms"]
        inference = dict(recipe.get("inference") or {})
        meta["labels"] = {("lungs" if k == "lung" else k): v for k, v in meta["labels"].items()}
        pad = 0.0
    else:
        chain, inference = _legacy_ct_chain(meta), {"roi": bool((meta.get("inference") or {}).get("roi", False)),
                                                     "min_component_fraction": 0.1}
        pad = float((old.get("window") or {}).get("b_min", 0.0))
    size_key = "slice_size" if int(meta["dim"]) == 2 else "patch_size"
    meta["input"] = {"chain": [resolved_step(s) for s in chain], size_key: old[size_key], "pad_value": pad}
    meta["inference"] = inference
    meta["format_version"] = META_VERSION
    meta["upgraded_from"] = version
    return meta


def _legacy_ct_chain(meta: dict) -> list[dict]:
    """What lungct 0.1 ran at inference: the HU check, one resampling to the checkpoint's spacing (2D:
    thicker native slices kept), the ROI steps of its preprocessing recipe when it used the ROI (or when a
    step masked the image), then the HU window."""
    old = meta["input"]
    recorded = old.get("preprocess_recipe") or load_recipe("preprocess")
    steps = copy.deepcopy(recorded.get("transforms") or [])
    masks_image = any(s.get("name") == "MaskOutsideROId" and (s.get("args") or {}).get("enabled", True) for s in steps)
    keep_roi = masks_image or bool((meta.get("inference") or {}).get("roi", False))
    image_steps = ("CheckHUCalibrationd", "Resampled")
    steps = [s for s in steps if s.get("name") != "HUWindowd" and (keep_roi or s.get("name") in image_steps)]
    if not any(s.get("name") == "CheckHUCalibrationd" for s in steps):
        steps.insert(0, {"name": "CheckHUCalibrationd", "args": {}})
    resample = {"spacing_mm": old.get("spacing_mm"), "axcodes": old.get("axcodes") or "RAS",
                "keep_thick_slices": int(meta["dim"]) == 2}
    for step in steps:
        if step["name"] == "Resampled":
            step["args"] = {**(step.get("args") or {}), **resample}
    if not any(s["name"] == "Resampled" for s in steps):
        steps.insert(1, {"name": "Resampled", "args": resample})
    window = old.get("window") or {"a_min": -1024, "a_max": 600, "b_min": 0.0, "b_max": 1.0}
    return steps + [{"name": "HUWindowd", "args": dict(window)}]
