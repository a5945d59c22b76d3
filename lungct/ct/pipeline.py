"""Post-processing as recorded data: the steps after the CT network, with every parameter, written into
the checkpoint (meta["postprocess"]) and into every sidecar, so that the same input, model and lungct
version give the same mask (nnU-Net keeps its post-processing beside its weights the same way).

`lungct infer` runs what the checkpoint records. A checkpoint that names a step, a parameter or a
pipeline version this code does not know is refused in one line rather than run differently. Checkpoints
that record nothing (trained before the pipeline was data) get `default_steps()`.
"""
from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass

from lungct.errors import LungctError

PIPELINE_VERSION = 1

# Every step this code runs, in order, with its parameters' defaults (docs/conventions.md says why each
# step is there and what it costs).
KNOWN_STEPS = {
    "roi": {},  # labels outside the classical chain's spine-axis mirrored lung ROI are dropped
    "gas_outside_lungs": {"air_hu": -700.0, "gas_hu": -950.0, "min_ml": 5.0, "rim_mm": 3.0},
    "main_components": {"min_fraction": 0.1},
    "fill_holes_2d": {},
    "lesion_decision": {"margin_mm": 30.0, "min_slices": 4, "lung_probability_floor": 0.005, "min_lung_share": 0.0},
    "boundary": {"boundary_hu": -320.0, "partial_volume_spacing_mm": 2.0, "parenchyma_below_hu": -600.0,
                 "band": [64, 192], "neighbourhood_mm": 2.6, "hu_width": 100.0},
    "dense_lesion_rule": {"lesion_min_diameter_mm": 11.0, "lesion_margin_mm": 3.0},
}


@dataclass(frozen=True)
class Step:
    name: str
    params: dict


class PostProcessing:
    """The recorded steps of a checkpoint, checked against what this code knows."""

    def __init__(self, steps: list[Step], version: int = PIPELINE_VERSION):
        self.steps, self.version = steps, version

    @classmethod
    def from_meta(cls, meta: dict, where=None) -> "PostProcessing":
        recorded = meta.get("postprocess")
        if recorded is None:
            return cls([Step(name, copy.deepcopy(params)) for name, params in default_steps(meta).items()])
        version = int(recorded.get("version", 0))
        if version != PIPELINE_VERSION:
            raise LungctError(where, f"records post-processing version {version}; this lungct runs version "
                                     f"{PIPELINE_VERSION} (use the lungct version the model was made with)")
        steps = []
        for spec in recorded.get("steps", []):
            name, params = spec.get("name"), dict(spec.get("params") or {})
            if name not in KNOWN_STEPS:
                raise LungctError(where, f"records a post-processing step '{name}' this lungct does not know "
                                         f"(known: {', '.join(KNOWN_STEPS)})")
            unknown = sorted(set(params) - set(KNOWN_STEPS[name]))
            if unknown:
                raise LungctError(where, f"post-processing step '{name}' has a parameter '{unknown[0]}' this "
                                         "lungct does not know")
            steps.append(Step(name, {**copy.deepcopy(KNOWN_STEPS[name]), **params}))
        return cls(steps, version)

    def has(self, name: str) -> bool:
        return any(step.name == name for step in self.steps)

    def params(self, name: str) -> dict | None:
        return next((step.params for step in self.steps if step.name == name), None)

    def without(self, name: str) -> "PostProcessing":
        return PostProcessing([s for s in self.steps if s.name != name], self.version)

    def record(self) -> dict:
        """What the checkpoint and the sidecar hold: the version, the steps, and a digest of both."""
        body = {"version": self.version, "steps": [{"name": s.name, "params": s.params} for s in self.steps]}
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
        return {**body, "digest": digest}


def default_steps(meta: dict) -> dict:
    """The steps of a checkpoint that records none: its own ROI and component settings, no lesion
    decision (it has no such stage), the dense-lesion rule for `--aerated`."""
    inference = meta.get("inference") or {}
    steps = {"roi": {}} if inference.get("roi") else {}
    steps.update({"gas_outside_lungs": {}, "main_components": {"min_fraction": float(inference.get("min_component_fraction", 0.1))},
                  "fill_holes_2d": {}, "boundary": {}, "dense_lesion_rule": {}})
    return {name: {**KNOWN_STEPS[name], **params} for name, params in steps.items()}
