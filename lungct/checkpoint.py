"""Self-describing checkpoints: the weights plus everything inference needs (DESIGN.md §2).

A checkpoint is a `torch.save` dict {"format", "meta", "state_dict", "extra"}; `meta` is plain JSON
(network name and arguments, dim, modality, labels, input spacing/window/recipe, training summary,
metrics, version), `extra` holds what resuming needs (optimiser, scheduler, epoch, RNG states).
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import torch

from lungct import __version__
from lungct.errors import LungctError
from lungct.io.volumes import atomic_path

FORMAT = "lungct-checkpoint/1"
REQUIRED = ("network", "dim", "labels", "input")


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict, extra: dict | None = None) -> Path:
    """Write atomically (temporary name, then rename), so a crash never leaves a truncated checkpoint."""
    meta = json.loads(json.dumps({"lungct_version": __version__,
                                  "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                                  **meta}))
    model = getattr(model, "module", model)  # unwrap DistributedDataParallel
    payload = {"format": FORMAT, "meta": meta,
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
               "extra": extra or {}}
    path = Path(path)
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return path


def _read(path: Path, full: bool) -> dict:
    if not path.is_file():
        raise LungctError(path, "no such checkpoint file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=not full)
    except Exception as err:  # truncated, not a torch file, or foreign pickled objects
        raise LungctError(path, f"is not a readable lungct checkpoint ({type(err).__name__}: "
                                f"{str(err).splitlines()[0][:120] if str(err) else ''})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise LungctError(path, f"is not a lungct checkpoint (no '{FORMAT}' format tag)")
    missing = [key for key in REQUIRED if key not in payload["meta"]]
    if missing:
        raise LungctError(path, f"checkpoint metadata lacks {', '.join(missing)}")
    return payload


def read_meta(path: str | Path) -> dict:
    return _read(Path(path), full=False)["meta"]


def read_checkpoint(path: str | Path) -> dict:
    """The whole payload (meta, state_dict, extra with optimiser state), for resuming."""
    return _read(Path(path), full=False)


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The network rebuilt from the checkpoint's own description, weights loaded, in eval mode."""
    from lungct.networks import build_network

    path = Path(path)
    payload = _read(path, full=False)
    meta = payload["meta"]
    network = build_network(meta["network"]["name"], **meta["network"].get("args", {}))
    try:
        network.load_state_dict(payload["state_dict"])
    except RuntimeError as err:
        raise LungctError(path, f"weights do not fit the network it names ({str(err).splitlines()[0][:160]})") from None
    return network.to(device).eval(), meta
