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

from lungct.ct.conventions import ConventionParams, Conventions, two_conventions
from lungct.ct.decision import LesionDecision, hu_image
from lungct.ct.densitometry import densitometry_checks, lung_statistics, save_histogram_plot
from lungct.ct.noise import lung_noise_hu
from lungct.ct.pipeline import PostProcessing, Step
from lungct.ct.postprocess import postprocess
from lungct.ct.transforms.common import affine_of, put_volume, volume_of, window_to_hu
from lungct.ct.transforms.lungs import NO_LUNG_WARNING
from lungct.ct.tumours import describe_tumours, join_tumours
from lungct.errors import LungctError
from lungct.geometry import geometry_summary, smooth_probabilities_to_grid, voxel_ml, voxel_spacing
from lungct.io import CaseSource, Scan, load_case, load_scan
from lungct.io.dicom_export import write_dicom_seg, write_rtstruct
from lungct.io.volumes import write_nifti
from lungct.labels import BINARY_LABELS, TUMOUR, measure
from lungct.models import Model, flip_dice, uncertain_fraction
from lungct.morphology import bounding_box
from lungct.options import InferOptions
from lungct.recipes import Chain
from lungct.report import save_preview
from lungct.segmentation import OutputPlan, Result, Segmenter

CROP_MARGIN_MM = 30.0  # context around the ROI the network sees (the U-Net's receptive field is wider: the edge
# of the crop is read as air, 30 mm from the lungs' own boundary)


NO_ROI_WARNING = ("the classical chain's lung ROI found no lung (a field of view that cuts through the lungs?): "
                  "the network's labels are not restricted to it")


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

    def __init__(self, *args, scan: Scan, processing: dict, statistics=None, conventions=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.scan, self.processing, self.statistics = scan, processing, statistics
        self.conventions = conventions  # both conventions' labels (lungct.ct.conventions.Conventions)

    @property
    def affine(self) -> np.ndarray:
        return self.scan.affine

    def write_outputs(self, plan: OutputPlan) -> dict:
        written = {}
        if plan.mask is not None:
            header = self.scan.header if self.input_format in ("nii", "nii.gz") else None
            write_nifti(plan.mask, self.labels, self.scan.affine, header=header, dtype=np.uint8)
            written["mask"] = plan.mask
        written.update(self.write_dicom(plan.dicom))
        if plan.preview is not None:
            proc = self.processing
            title = f"{self.name}  " + "  ".join(f"{k} {v:.0f} mL" for k, v in self.measures.items())
            save_preview(plan.preview, proc["image"], proc["labels"], proc["roi"], proc["affine"],
                         self.label_values, title=title)
            written["preview"] = plan.preview
            if self.statistics is not None:
                histogram = plan.preview.with_name(plan.preview.name.replace("-preview.png", "") + "-histogram.png")
                save_histogram_plot(histogram, self.statistics, title=f"{self.name}: lung HU")
                written["histogram"] = histogram
        return written


    def write_dicom(self, targets: dict) -> dict:
        """DICOM-SEG and RTSTRUCT objects referencing the source series (lungct.io.dicom_export)."""
        segments = {v: name.replace("_", " ").capitalize() for name, v in self.label_values.items() if v}
        writers = {"dicom-seg": write_dicom_seg, "rtstruct": write_rtstruct}
        for kind, path in targets.items():
            writers[kind](path, self.labels, self.scan.affine, self.scan.sources, segments)
        return {kind.replace("-", "_"): path for kind, path in targets.items()}


class CTSegmenter(Segmenter):
    """`CTSegmenter.load("ct-lungs").segment("scan.nii.gz")`: one loaded model, many scans."""

    modality = "ct"

    def __init__(self, model: Model, options: InferOptions = InferOptions()):
        super().__init__(model, options)
        if model.modality != self.modality:
            raise LungctError(model.path, f"is a {model.modality} model; CT scans need a CT model")
        self.pipeline = PostProcessing.from_meta(model.meta, model.path)
        self.tta, self.binary, self.aerated = options.tta, options.binary, options.aerated
        self.statistics, self.recalibrate = options.statistics, options.recalibrate
        self.lung_model = bool(set(model.names.values()) & {"right_lung", "left_lung", "lungs"})
        self.tumour: CTSegmenter | None = None  # a tumour model's segmenter, joined to these lungs (set by the engine)
        self.roi = self.pipeline.has("roi") if options.roi is None else options.roi
        components = self.pipeline.params("main_components")  # None: the checkpoint records no such step
        self.min_component_fraction = None if components is None else float(components["min_fraction"])
        self.decision = None
        if self.pipeline.has("lesion_decision"):
            if "lesion_decision" not in model.stages:
                raise LungctError(model.path, "records a lesion_decision step but holds no lesion-decision network")
            self.decision = LesionDecision.from_stage(model.stages["lesion_decision"], model.device, model.path)
        self.convention_params = ConventionParams.from_steps(self.pipeline.params("boundary"),
                                                             self.pipeline.params("dense_lesion_rule"),
                                                             self.pipeline.params("lesion_decision"))
        self.slice_batch = max(1, options.slice_batch)
        self.sw_batch_size, self.overlap = options.sw_batch_size, options.overlap
        chain = Chain(model.meta["input"]["chain"], model.path)
        if self.roi and not chain.makes_roi:
            raise LungctError(model.path, "--roi: this model's input chain makes no lung ROI")
        self.chain = chain if self.roi else chain.without_roi()  # the ROI's steps are not needed then
        self.window = chain.window

    @classmethod
    def load(cls, model=None, device: str = "auto", precision: str = "auto", **options) -> "CTSegmenter":
        options = InferOptions(device=device, precision=precision, **options)
        return cls(Model.load(model, cls.modality, device, precision), options)

    def settings(self) -> dict:
        return {**super().settings(), "roi": self.roi, "convention": "aerated" if self.aerated else "lungs",
                "postprocess": self.applied_pipeline().record()}

    def applied_pipeline(self) -> PostProcessing:
        """The recorded steps as this run applies them (--roi / --no-roi may add or drop the ROI step)."""
        if self.roi == self.pipeline.has("roi"):
            return self.pipeline
        if not self.roi:
            return self.pipeline.without("roi")
        return PostProcessing([Step("roi", {}), *self.pipeline.steps], self.pipeline.version)

    # ------------------------------------------------------------------------------------ the pipeline

    def read(self, source) -> Scan:
        if isinstance(source, Scan):
            return source
        return load_case(source) if isinstance(source, CaseSource) else load_scan(source)

    def prepare(self, scan: Scan) -> PreparedScan:
        prepared = prepare_scan(self.chain, scan)
        if not self.roi:
            prepared.roi = None
        elif prepared.roi is not None and not prepared.roi.any():  # it would clear every label

            prepared.roi = None  # the chain's own warning is replaced by what it means here
            kept = [w for w in prepared.case.get("warnings", []) if w != NO_LUNG_WARNING]
            prepared.case["warnings"] = [*kept, NO_ROI_WARNING]
        return prepared

    def predict(self, image: np.ndarray, roi: np.ndarray | None = None,
                agreement: list | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(labels, uint8 probabilities per channel) on the network grid; TTA flips never swap right and
        left: anterior-posterior (and superior-inferior in 3D). With an ROI a 2D network sees only its box
        (slices with ROI, and in-plane the ROI's extent plus CROP_MARGIN_MM of context): whatever it
        found outside would be cleared by the ROI anyway."""
        if self.model.dim == 3:
            return self.model.predict_volume(image, self.sw_batch_size, self.overlap,
                                             flips=[(1,), (2,), (1, 2)] if self.tta else [], agreement=agreement)
        flips = [(1,)] if self.tta else []
        if roi is None:
            return self.model.predict_slices(image, self.slice_batch, flips=flips, agreement=agreement)
        labels = np.zeros(image.shape, np.uint8)
        scores = np.zeros((len(self.model.channel_values), *image.shape), np.uint8)
        scores[self.model.channel_values == 0] = 255  # background, for certain
        margin = [int(np.ceil(CROP_MARGIN_MM / s)) for s in self.model.spacing_mm or (1.0, 1.0, 1.0)]
        box = bounding_box(roi > 0, margin=[margin[0], margin[1], 0])
        if any(b.stop > b.start for b in box):
            labels[box], scores[(slice(None), *box)] = self.model.predict_slices(
                image[box], self.slice_batch, flips=flips, agreement=agreement)
        return labels, scores

    def finish(self, prepared: PreparedScan) -> CTResult:
        scan, model = prepared.scan, self.model
        timings = {}
        start = time.perf_counter()
        agreement = [0, 0]
        labels, scores = self.predict(prepared.image, prepared.roi, agreement)
        timings["network"] = round(time.perf_counter() - start, 3)
        confidence = {"flip_dice": flip_dice(agreement), "uncertain_fraction": uncertain_fraction(scores, model.channel_values)}

        start = time.perf_counter()
        values = model.channel_values
        foreground = [int(v) for v in values if v != 0]
        hu_network = self.hu_network(prepared)
        labels, components = postprocess(labels, foreground, prepared.roi, self.min_component_fraction,
                                         hu_network, prepared.affine, self.pipeline.params("gas_outside_lungs"),
                                         holes=self.pipeline.has("fill_holes_2d"))
        label_values = {model.names[int(v)]: int(v) for v in values}
        candidate, probability = smooth_probabilities_to_grid(labels, scores[values != 0], foreground, prepared.affine,
                                                              scan.array.shape, scan.affine)
        timings["postprocess"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        decision = self.decide(labels, prepared, hu_network)
        if decision is not None:
            timings["lesion_decision"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        case = prepared.case
        conventions = self.conventions(candidate, probability, prepared, labels, hu_network, decision)
        if self.binary:  # merged after the boundary is drawn: the same voxels as the labelled mask
            conventions.lungs, conventions.aerated = (conventions.lungs > 0).view(np.uint8), (conventions.aerated > 0).view(np.uint8)
            labels, label_values = (labels > 0).view(np.uint8), dict(BINARY_LABELS)
        native = conventions.aerated if self.aerated else conventions.lungs
        timings["conventions"] = round(time.perf_counter() - start, 3)
        tumours = None
        if self.tumour is not None:
            start = time.perf_counter()
            native, label_values, tumours = self.join_tumours(native, label_values, scan)
            timings["tumour"] = round(time.perf_counter() - start, 3)
        if self.lung_model:
            confidence["lung_noise_hu"] = lung_noise_hu(scan.array, conventions.aerated,
                                                        stored_to_hu(prepared.case)[0])
        density = None
        if self.statistics and self.lung_model:
            start = time.perf_counter()
            density = self.density(native, label_values, prepared)
            timings["statistics"] = round(time.perf_counter() - start, 3)

        unit = voxel_ml(scan.affine)
        lungs_ml, aerated_ml = measure(conventions.lungs, label_values, unit), measure(conventions.aerated, label_values, unit)
        volumes = measure(native, label_values, unit) if tumours is not None else aerated_ml if self.aerated else lungs_ml
        warnings = list(case.get("warnings", [])) + self._result_warnings(volumes, scan)
        extra = {"input": geometry_summary(scan.array.shape, scan.affine),
                 "hu_calibration": case.get("hu_calibration"),
                 "conventions": {"written": "aerated" if self.aerated else "lungs", "lungs_ml": lungs_ml,
                                 "aerated_ml": aerated_ml,
                                 "dense_ml": {k: round(v - aerated_ml[k], 2) for k, v in lungs_ml.items()},
                                 "boundary_hu": conventions.boundary_hu,
                                 "lesions_by": "lesion decision" if decision is not None else "dense-lesion rule"},
                 "components": {model.names[v]: n for v, n in components.items()},
                 "confidence": confidence,
                 "processing_grid": geometry_summary(labels.shape, prepared.affine)}
        if density is not None:
            extra["statistics"] = density[0]
        if tumours is not None:
            extra["tumours"] = tumours
        return CTResult(scan.name, str(scan.source), scan.format, native, label_values, volumes, model.record(),
                        self.settings(), warnings, list(case.get("flags", [])), timings, extra, scan=scan,
                        statistics=density[1] if density else None, conventions=conventions,
                        processing={"image": prepared.image, "labels": labels, "roi": prepared.roi,
                                    "affine": prepared.affine})

    def hu_network(self, prepared: PreparedScan) -> np.ndarray | None:
        """HU on the network's grid, from its windowed input; None when there is no HU to judge by or the
        model segments no lungs (then there is no gas to drop or lesion to take back)."""
        if self.window is None or not self.lung_model:
            return None

        return window_to_hu(prepared.image, self.window)

    def decide(self, labels_network: np.ndarray, prepared: PreparedScan, hu_network: np.ndarray | None):
        """The lesion decision's maps (lungct.ct.decision) around the lungs the 2D network found, or None:
        no such stage, no HU, no lungs, or too few slices to give it the 3D context it decides by."""
        params = self.pipeline.params("lesion_decision")
        scan = prepared.scan
        if self.decision is None or hu_network is None or not labels_network.any():
            return None
        if min(scan.array.shape) < params["min_slices"]:
            return None
        box = bounding_box(labels_network > 0)
        corners = np.array([[b.start for b in box], [b.stop - 1 for b in box]], float)
        world = corners @ prepared.affine[:3, :3].T + prepared.affine[:3, 3]
        world_box = np.array([world.min(0), world.max(0)])
        affine, shape = self.decision.grid_around(world_box, params["margin_mm"] + max(voxel_spacing(prepared.affine)))
        slope, intercept = stored_to_hu(prepared.case)
        return self.decision.run(hu_image(scan.array, scan.affine, slope, intercept), affine, shape)

    def conventions(self, candidate, probability, prepared: PreparedScan, labels_network: np.ndarray,
                    hu_network: np.ndarray | None, decision):
        """Default and aerated lungs on the native grid (lungct.ct.conventions), in calibrated HU."""
        if hu_network is None:  # no HU to refine with, or not lungs to refine
            lungs = np.where(probability >= 128, candidate, 0).astype(np.uint8)
            return Conventions(lungs, lungs, float("nan"), 0.0)
        slope, intercept = stored_to_hu(prepared.case)
        return two_conventions(candidate, probability, prepared.scan.array, prepared.scan.affine,
                               lambda hu: (hu - intercept) / slope, hu_network, labels_network, prepared.affine,
                               self.convention_params, decision)

    def join_tumours(self, lungs: np.ndarray, label_values: dict, scan: Scan):
        """(labels with the tumour model's tumours inside the lungs, label values, each tumour measured)."""
        tumour = self.tumour.finish(self.tumour.prepare(scan))
        mask = tumour.labels == tumour.label_values.get("tumour", 1)
        joined = join_tumours(lungs, mask)
        return joined, {**label_values, "tumour": TUMOUR}, describe_tumours(joined == TUMOUR, scan.affine)

    def density(self, labels: np.ndarray, label_values: dict, prepared: PreparedScan):
        """(sidecar record, LungStatistics or None) of the written mask on calibrated HU: refused (a reason in
        the record) when the scan's HU calibration is off and --recalibrate was not given."""
        scan, calibration = prepared.scan, prepared.case.get("hu_calibration") or {}
        miscalibrated = calibration.get("status") == "miscalibrated"
        slope, intercept = stored_to_hu(prepared.case)
        thickness = scan.info.get("SliceThickness") or max(prepared.case["input"]["spacing_mm"])
        refusal, warnings = densitometry_checks(calibration.get("status"), self.recalibrate and miscalibrated,
                                                float(thickness), scan.info.get("ConvolutionKernel"))
        record = {"convention": "aerated" if self.aerated else "lungs", "warnings": warnings}
        if refusal:
            return {**record, "refused": refusal}, None
        hu = scan.array
        if miscalibrated:
            hu = scan.array.astype(np.float32) * float(slope) + float(intercept)
        names = {v: n for n, v in label_values.items() if v}
        stats = lung_statistics(hu, labels, scan.affine, names)
        return {**record, "hu": "recalibrated" if miscalibrated else "as stored", **stats.as_dict()}, stats

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


def stored_to_hu(case: dict) -> tuple[float, float]:
    """(slope, intercept) from the scan's stored values to calibrated HU: the calibration check's estimate
    when it found the scan miscalibrated, else the identity."""
    calibration = case.get("hu_calibration") or {}
    if calibration.get("status") != "miscalibrated":
        return 1.0, 0.0
    return calibration.get("slope", 1.0), calibration.get("intercept", 0.0)


def prepare_scan(chain: Chain, scan: Scan) -> PreparedScan:
    """Run an input chain on a scan: what training's data and inference both start from."""
    case = {"warnings": list(scan.warnings), "flags": list(scan.flags), "input": scan.geometry(), "timings_s": {}}
    data = chain(put_volume({"case": case, "source": str(scan.source)}, "image", scan.array, scan.affine))
    roi = volume_of(data, "roi") if "roi" in data else None
    extras = {key: volume_of(data, key) for key in ("lungs", "body") if key in data}
    return PreparedScan(scan, volume_of(data, "image"), affine_of(data, "image"), roi, data["case"], extras)
