"""The CT segmenter: a loaded model turns scans into lung labels on the scan's own grid.

Per scan: read -> the checkpoint's recorded input chain (HU check, reorientation to RAS and resampling to
the network's spacing in one pass, the lung ROI when the model uses it, the HU window) -> the network on
that coarser grid (2D: batches of axial slices; 3D: sliding window) -> a uint8 label map and uint8
per-label probabilities -> clean-up (lungct.ct.postprocess) -> the labels onto the input's exact grid,
boundaries placed between coarse voxels by the interpolated probabilities. Per-label float scores never
exist at full resolution; one uint8 map at a time does (docs/design.md, "What things cost").
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lungct.errors import LungctError
from lungct.geometry import geometry_summary, smooth_labels_to_grid, voxel_ml
from lungct.io import CaseSource, Scan, load_case, load_scan
from lungct.labels import BINARY_LABELS, measure
from lungct.models import Model
from lungct.recipes import Chain, resolve_transform
from lungct.segmentation import OutputPlan, Result, Segmenter


@dataclass
class PreparedScan:
    """A scan after the input chain: the network input on its grid, the ROI, and the chain's record."""

    scan: Scan
    image: np.ndarray  # (x, y, z) network input
    affine: np.ndarray  # of the network grid
    roi: np.ndarray | None
    case: dict
    extras: dict = field(default_factory=dict)  # other label maps the chain made ("lungs", "body")


class CTResult(Result):
    modality = "ct"
    measure_key = "volumes_ml"

    def __init__(self, *args, scan: Scan, processing: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.scan, self.processing = scan, processing

    @property
    def affine(self) -> np.ndarray:
        return self.scan.affine

    def write_outputs(self, plan: OutputPlan) -> dict:
        from lungct.io.volumes import write_nifti
        from lungct.report import save_preview

        header = self.scan.header if self.input_format in ("nii", "nii.gz") else None
        write_nifti(plan.mask, self.labels, self.scan.affine, header=header, dtype=np.uint8)
        written = {"mask": plan.mask}
        if plan.preview is not None:
            proc = self.processing
            title = f"{self.name}  " + "  ".join(f"{k} {v:.0f} mL" for k, v in self.measures.items())
            save_preview(plan.preview, proc["image"], proc["labels"], proc["roi"], proc["affine"],
                         self.label_values, title=title)
            written["preview"] = plan.preview
        return written


class CTSegmenter(Segmenter):
    """`CTSegmenter.load("ct-lungs-2d").segment("scan.nii.gz")`: one loaded model, many scans."""

    modality = "ct"

    def __init__(self, model: Model, tta: bool = False, roi: bool | None = None, binary: bool = False,
                 slice_batch: int = 16, sw_batch_size: int = 4, overlap: float = 0.5):
        super().__init__(model)
        if model.modality != "ct":
            raise LungctError(model.path, f"is a {model.modality} model; CT scans need a CT model")
        inference = model.meta.get("inference") or {}
        self.tta, self.binary = tta, binary
        self.roi = bool(inference.get("roi", False)) if roi is None else roi
        self.min_component_fraction = float(inference.get("min_component_fraction", 0.1))
        self.slice_batch, self.sw_batch_size, self.overlap = max(1, slice_batch), sw_batch_size, overlap
        steps = model.meta["input"]["chain"]
        makes_roi = any(getattr(resolve_transform(s["name"]), "ADDS_ONLY", False) for s in steps)
        if self.roi and not makes_roi:
            raise LungctError(model.path, "--roi: this model's input chain makes no lung ROI")
        if not self.roi:  # steps that only add the ROI are not needed then
            steps = [s for s in steps if not getattr(resolve_transform(s["name"]), "ADDS_ONLY", False)
                     or _feeds_image(steps)]
        self.chain = Chain(steps, model.path)

    @classmethod
    def load(cls, model=None, device: str = "auto", precision: str = "auto", **options) -> "CTSegmenter":
        return cls(Model.load(model, "ct", device, precision), **options)

    def settings(self) -> dict:
        return {**super().settings(), "tta": self.tta, "binary": self.binary, "roi": self.roi,
                **({"sw_batch_size": self.sw_batch_size, "overlap": self.overlap} if self.model.dim == 3 else {})}

    # ------------------------------------------------------------------------------------ the pipeline

    def read(self, source) -> Scan:
        if isinstance(source, Scan):
            return source
        return load_case(source) if isinstance(source, CaseSource) else load_scan(source)

    def prepare(self, scan: Scan) -> PreparedScan:
        prepared = prepare_scan(self.chain, scan)
        if not self.roi:
            prepared.roi = None
        return prepared

    def predict(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels, uint8 probabilities per channel) on the network grid; TTA flips never swap right and
        left: anterior-posterior (and superior-inferior in 3D)."""
        if self.model.dim == 3:
            return self.model.predict_volume(image, self.sw_batch_size, self.overlap,
                                             flips=[(1,), (2,), (1, 2)] if self.tta else [])
        return self.model.predict_slices(image, self.slice_batch, flips=[(1,)] if self.tta else [])

    def finish(self, prepared: PreparedScan) -> CTResult:
        from lungct.ct.postprocess import postprocess

        scan, model = prepared.scan, self.model
        timings = {}
        start = time.perf_counter()
        labels, scores = self.predict(prepared.image)
        timings["network"] = round(time.perf_counter() - start, 3)

        start = time.perf_counter()
        values = model.channel_values
        foreground = [int(v) for v in values if v != 0]
        labels, components = postprocess(labels, foreground, prepared.roi, self.min_component_fraction)
        label_values = {model.names[int(v)]: int(v) for v in values}
        if self.binary:
            labels = (labels > 0).astype(np.uint8)
            label_values = dict(BINARY_LABELS)
            scores = [255 - scores[values == 0][0]]  # lungs = not background
            foreground = [1]
        else:
            scores = scores[values != 0]
        native = smooth_labels_to_grid(labels, scores, foreground, prepared.affine, scan.array.shape, scan.affine)
        timings["postprocess"] = round(time.perf_counter() - start, 3)

        volumes = measure(native, label_values, voxel_ml(scan.affine))
        case = prepared.case
        warnings = list(case.get("warnings", [])) + self._result_warnings(volumes, scan)
        extra = {"input": geometry_summary(scan.array.shape, scan.affine),
                 "hu_calibration": case.get("hu_calibration"),
                 "components": {model.names[v]: n for v, n in components.items()},
                 "processing_grid": geometry_summary(labels.shape, prepared.affine)}
        return CTResult(scan.name, str(scan.source), scan.format, native, label_values, volumes, model.record(),
                        self.settings(), warnings, list(case.get("flags", [])), timings, extra, scan=scan,
                        processing={"image": prepared.image, "labels": labels, "roi": prepared.roi,
                                    "affine": prepared.affine})

    def _result_warnings(self, volumes: dict, scan: Scan) -> list[str]:
        warnings = []
        if volumes["total"] == 0:
            warnings.append("no lung found: the mask is empty")
        elif not self.binary:
            empty = [name for name, ml in volumes.items() if name != "total" and ml == 0]
            if empty:
                warnings.append(f"no {', '.join(empty)} found")
        if self.model.dim == 3 and min(scan.array.shape) == 1:
            warnings.append("a 3D model on a single slice: results are unreliable, prefer a 2D model")
        return warnings


def prepare_scan(chain: Chain, scan: Scan) -> PreparedScan:
    """Run an input chain on a scan: what training's data and inference both start from."""
    from monai.data import MetaTensor

    case = {"warnings": list(scan.warnings), "flags": [], "input": scan.geometry(), "timings_s": {}}
    data = {"image": MetaTensor(torch.from_numpy(np.ascontiguousarray(scan.array)[None]),
                                affine=torch.as_tensor(scan.affine, dtype=torch.float64)),
            "case": case, "source": str(scan.source)}
    data = chain(data)
    roi = data["roi"][0].numpy() if "roi" in data else None
    extras = {key: data[key][0].numpy() for key in ("lungs", "body") if key in data}
    return PreparedScan(scan, data["image"][0].numpy(), np.asarray(data["image"].affine, dtype=float), roi,
                        data["case"], extras)


def _feeds_image(steps: list[dict]) -> bool:
    """True when a step changes the image with the ROI (MaskOutsideROId enabled): the ROI must be made."""
    return any(s["name"] == "MaskOutsideROId" and (s.get("args") or {}).get("enabled", True) for s in steps)
