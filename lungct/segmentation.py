"""The segmenter protocol CT and radiographs share: `segmenter.segment(source) -> result`,
`result.write(plan) -> sidecar record`.

A segmenter holds one loaded `Model` and serves many inputs. `segment` is `finish(prepare(read(source)))`:
`prepare` runs the checkpoint's recorded input chain (deterministic, so training's validation caches it),
`finish` runs the network and the post-processing and brings the labels back to the input's own grid.
A result writes its mask, its preview and, last, the JSON sidecar whose presence marks the case as done.
"""
from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lungct import __version__
from lungct.io.atomic import write_json
from lungct.options import InferOptions


@dataclass
class OutputPlan:
    """Where one case's outputs go: the mask (NIfTI, or PNG for a radiograph; None when only DICOM
    objects are asked for), the sidecar, the preview, and DICOM objects by type ("dicom-seg", "rtstruct")."""

    mask: Path | None
    json: Path
    preview: Path | None = None
    dicom: dict = field(default_factory=dict)

    @property
    def done_marker(self) -> Path:
        """The main output, whose presence (with the sidecar) marks the case as done."""
        return self.mask if self.mask is not None else next(iter(self.dicom.values()))


@dataclass
class Result:
    """One input's labels on its own grid and what its sidecar reports; modalities add their own fields."""

    name: str
    source: str
    input_format: str
    labels: np.ndarray
    label_values: dict  # name -> value in `labels`, background included
    measures: dict  # volumes_ml (CT) or areas_cm2 (radiographs): name -> amount, and the total
    model: dict
    settings: dict
    warnings: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # modality-specific sidecar fields

    modality = "?"
    measure_key = "volumes_ml"

    def write(self, plan: OutputPlan) -> dict:
        """Mask, preview, then the sidecar (last: it marks the case as done). Returns the sidecar."""
        start = time.perf_counter()
        written = self.write_outputs(plan)
        self.timings_s["write"] = round(time.perf_counter() - start, 3)
        self.timings_s["total"] = round(sum(v for k, v in self.timings_s.items() if k != "total"), 3)
        record = self.sidecar(plan, written)

        write_json(plan.json, record)
        return record

    def write_outputs(self, plan: OutputPlan) -> dict:
        """Write the mask and the preview; return {what: path} of every file written."""
        raise NotImplementedError

    def sidecar(self, plan: OutputPlan, written: dict) -> dict:
        return {
            "case": self.name,
            "status": "ok",
            "modality": self.modality,
            "lungct_version": __version__,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "source": self.source,
            "format": self.input_format,
            "mask": str(plan.mask) if plan.mask else None,
            **{key: str(path) for key, path in written.items() if key != "mask"},
            "labels": self.label_values,
            self.measure_key: self.measures,
            **self.extra,
            "model": self.model,
            "inference": self.settings,
            "flags": sorted(set(self.flags)),
            "warnings": self.warnings,
            "timings_s": self.timings_s,
        }


class Segmenter:
    """Base of the CT and radiograph segmenters: a loaded Model, `segment(source)` timed step by step."""

    modality = "?"

    def __init__(self, model, options: InferOptions = InferOptions()):
        self.model, self.options = model, options

    def read(self, source):
        raise NotImplementedError

    def prepare(self, item):
        raise NotImplementedError

    def finish(self, prepared) -> Result:
        raise NotImplementedError

    def settings(self) -> dict:
        """The options the sidecar records under "inference": where the network ran and the options of
        this modality (lungct.options)."""
        return {"device": str(self.model.device), "precision": self.model.precision_name(),
                **self.options.for_modality(self.modality)}

    def segment(self, source) -> Result:
        """Labels of one input (a path, a discovered case, or an input already read) on its own grid."""
        return self.end(*self.begin(source))

    def begin(self, source) -> tuple[object, dict]:
        """(prepared input, timings): reading and the input chain, which a batch runs one case ahead."""
        timings = {}
        start = time.perf_counter()
        item = self.read(source)
        timings["read"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        prepared = self.prepare(item)
        timings["preprocess"] = round(time.perf_counter() - start, 3)
        return prepared, timings

    def end(self, prepared, timings: dict) -> Result:
        """The network, post-processing and the way back, on what `begin` prepared."""
        result = self.finish(prepared)
        result.timings_s = {**timings, **result.timings_s}
        return result
