"""The default CT model as one file: the 2D lung network, its lesion-decision stage and the recorded
post-processing that joins them (lungct.ct.pipeline), composed from two training runs.

    compose_cascade("run-2d/best.pt", "run-decision/decision.pt", "ct-lungs.pt")
"""
from __future__ import annotations

import copy
from pathlib import Path

from lungct.checkpoint import read_checkpoint, save_checkpoint
from lungct.ct.decision.training import STAGE
from lungct.ct.pipeline import KNOWN_STEPS, PostProcessing, Step
from lungct.errors import LungctError
from lungct.models import resolve_model
from lungct.networks import build_network

CASCADE_STEPS = ("roi", "gas_outside_lungs", "main_components", "fill_holes_2d", "lesion_decision", "boundary",
                 "dense_lesion_rule")


def cascade_steps(lung_meta: dict, overrides: dict | None = None) -> PostProcessing:
    """The cascade's post-processing: every step with its defaults, the ROI only if the lung model uses
    it, parameters changed by `overrides` ({step: {param: value}})."""
    uses_roi = bool((lung_meta.get("inference") or {}).get("roi"))
    steps = []
    for name in CASCADE_STEPS:
        if name == "roi" and not uses_roi:
            continue
        steps.append(Step(name, {**copy.deepcopy(KNOWN_STEPS[name]), **((overrides or {}).get(name) or {})}))
    return PostProcessing(steps)


def compose_cascade(lung_model, decision_checkpoint: Path, out_path: Path, overrides: dict | None = None) -> Path:
    """One checkpoint from a CT lung model (path or shipped name) and a lesion-decision checkpoint."""
    lung = read_checkpoint(resolve_model(lung_model, "ct"))
    decision = read_checkpoint(decision_checkpoint)
    if decision["meta"].get("stage") != STAGE:
        raise LungctError(decision_checkpoint, "is not a lesion-decision checkpoint")
    meta = copy.deepcopy(lung["meta"])
    record = cascade_steps(meta, overrides).record()
    meta["postprocess"] = {"version": record["version"], "steps": record["steps"]}
    meta.pop("lungct_version", None)
    meta.pop("created", None)
    network = build_network(meta["network"]["name"], **meta["network"]["args"])
    network.load_state_dict(lung["state_dict"])
    stages = {"lesion_decision": {"meta": decision["meta"], "state_dict": decision["state_dict"]}}
    return save_checkpoint(out_path, network.eval(), meta, stages=stages)
