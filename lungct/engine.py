"""`lungct infer`: CT scans and radiographs (one folder may hold both, in any nesting) through one path.

Discovery gives every case its modality; each modality gets its segmenter (the model given for it with
--model, or the shipped default), loaded once per process the first time a case needs it. Cases run
through lungct.batch (progress, failure isolation, local processes or a Dask cluster, shards); each
result writes its mask under a temporary name, then its sidecar, whose presence marks the case as done
for a resumed run. A folder output also gets report.html, the batch QC page, rewritten after every case.
"""
from __future__ import annotations

import datetime as _dt
import json
import threading
from dataclasses import dataclass, replace
from pathlib import Path

from lungct.batch import Outcome, guarded, limit_threads, run_cases, shard, threads_per_task
from lungct.checkpoint import read_meta
from lungct.ct.densitometry import write_statistics_csv
from lungct.errors import LungctError
from lungct.io import CaseSource, discover
from lungct.io.atomic import check_writable, name_too_long, write_json
from lungct.io.inputs_guard import INPUT_REFUSAL, InputFiles
from lungct.io.nifti_orientation import orientation_codes
from lungct.io.volumes import PICTURE_SUFFIXES, VOLUME_SUFFIXES, suffix_of
from lungct.modalities import CXR, get_modality
from lungct.models import Model, resolve_model
from lungct.options import InferOptions
from lungct.os_names import printable
from lungct.qc import load_sidecars, write_report
from lungct.segmentation import OutputPlan

OUTPUT_TYPES = ("nifti", "dicom-seg", "rtstruct")
DICOM_SUFFIX = {"dicom-seg": "-seg.dcm", "rtstruct": "-rtstruct.dcm"}
TUMOUR_ROLE = "-tumour"  # a CT model whose labels name a tumour: the tumour stage joined to the lung model


def resolved(options: InferOptions) -> InferOptions:
    """The options with every --model resolved to its checkpoint file, once, before any case runs."""
    return replace(options, models=tuple(str(resolve_model(m)) for m in options.models))


def make_segmenter(model, options: InferOptions = InferOptions()):
    """The segmenter of a loaded Model's modality (lungct.modalities)."""
    return get_modality(model.modality).segmenter(model, options)


def models_by_modality(models) -> dict[str, str]:
    """{role: model} for the models given with --model (read from each checkpoint's meta): the modality, or
    "ct-tumour" for a CT model whose labels name a tumour (the tumour stage, joined to the lung model)."""
    out: dict[str, str] = {}
    for model in models:
        meta = read_meta(resolve_model(model))
        get_modality(meta.get("modality", "ct")).check_checkpoint(meta, model)  # before any case runs
        role = meta.get("modality", "ct") + (TUMOUR_ROLE if "tumour" in meta["labels"] else "")
        if role in out:
            raise LungctError(model, f"two {role} models given with --model ({out[role]} and {model})")
        out[role] = model
    return out


_SEGMENTERS: dict[tuple, object] = {}
_LOCK = threading.Lock()


def segmenter_for(kind: str, options: InferOptions):
    """This process's segmenter for a modality, loaded on first use and kept for the cases that follow."""
    key = (kind, options.key())
    with _LOCK:
        if key not in _SEGMENTERS:
            given = models_by_modality(options.models)
            model = Model.load(given.get(kind), kind, options.device, options.precision)
            segmenter = make_segmenter(model, options)
            if kind + TUMOUR_ROLE in given:
                tumour = Model.load(given[kind + TUMOUR_ROLE], kind, options.device, options.precision)
                segmenter.tumour = make_segmenter(tumour, replace(options, statistics=False))
            _SEGMENTERS[key] = segmenter
        return _SEGMENTERS[key]


# --------------------------------------------------------------------------------------------- planning


@dataclass
class Job:
    """One case to segment and where its outputs go."""

    case: CaseSource
    plan: OutputPlan
    record_failures: bool = True  # a failed case leaves a sidecar saying why (folder outputs)
    writes_over: Path | None = None  # an output that is an input of the run (refused, never written)

    def outputs(self) -> list[Path]:
        plan = self.plan
        return [path for path in (plan.mask, plan.json, plan.preview, *plan.dicom.values()) if path is not None]

    def refusal(self) -> str | None:
        """Why the outputs asked for cannot be made from this case, before any work."""
        if self.writes_over is not None:
            return f"its output {self.writes_over} {INPUT_REFUSAL}: give another output folder (-o)"
        too_long = next(((path, why) for path in self.outputs() if (why := name_too_long(path))), None)
        if too_long:
            return f"its output {too_long[0].name}: {too_long[1]}"
        kind = get_modality(self.case.modality)
        if self.plan.dicom and (not kind.dicom_objects or self.case.kind != "dicom"):
            kinds = "/".join(self.plan.dicom)
            return (f"--output-type {kinds} needs a DICOM CT series as input (no source series to reference); "
                    "this is " + (f"one of the {kind.noun}" if not kind.dicom_objects else "not a DICOM series"))
        return None

    @property
    def name(self) -> str:
        return self.case.name

    @property
    def source(self):
        return self.case.source


def is_file_output(output: Path) -> bool:
    return suffix_of(Path(output)) in VOLUME_SUFFIXES + PICTURE_SUFFIXES


def plan_jobs(cases: list[CaseSource], output: Path, preview, output_types=("nifti",)) -> list[Job]:
    """Where each case's mask, sidecar and preview go: <case>.nii.gz (CT) or <case>.png (radiograph) in a
    folder, or the one file `output` names (NIfTI for either; PNG for a radiograph); DICOM objects
    (<case>-seg.dcm, <case>-rtstruct.dcm) beside the mask."""
    unknown = set(output_types) - set(OUTPUT_TYPES)
    if unknown or not output_types:
        raise LungctError(None, f"--output-type must be one or more of {', '.join(OUTPUT_TYPES)}, not {sorted(unknown)}")
    jobs = _plan_masks(cases, Path(output), preview)
    for job in jobs:
        mask = job.plan.mask
        stem = mask.name[: -len(suffix_of(mask))]
        job.plan.dicom = {kind: mask.with_name(stem + DICOM_SUFFIX[kind]) for kind in output_types if kind in DICOM_SUFFIX}
        if "nifti" not in output_types and get_modality(job.case.modality).dicom_objects:
            job.plan.mask = None
    return jobs


def _plan_masks(cases: list[CaseSource], output: Path, preview) -> list[Job]:
    if is_file_output(output):
        suffix = suffix_of(output)
        if len(cases) != 1:
            raise LungctError(output, f"is one file but the input holds {len(cases)} cases: give a folder as -o")
        case = cases[0]
        kind = get_modality(case.modality)
        if suffix not in kind.mask_suffixes:
            raise LungctError(output, f"masks of {kind.noun} are written as {' or '.join(kind.mask_suffixes)}: name "
                                      "the output .nii.gz (or give a folder)")
        stem = output.name[: -len(suffix)]
        png = None if preview is None else output.with_name(f"{stem}-preview.png") if str(preview) == "auto" \
            else Path(preview)
        return [Job(case, OutputPlan(output, output.with_name(f"{stem}.json"), png), record_failures=False)]
    png_dir = None if preview is None else output if str(preview) == "auto" else Path(preview)
    return [Job(c, OutputPlan(output / f"{c.name}{get_modality(c.modality).mask_suffix}", output / f"{c.name}.json",
                              None if png_dir is None else png_dir / f"{c.name}-preview.png")) for c in cases]


# ---------------------------------------------------------------------------------------------- running


def prefetch_job(job: Job, options: InferOptions):
    """The first stage of a case (its segmenter, reading and input chain), run one case ahead."""
    refusal = job.refusal()
    if refusal:
        raise LungctError(job.source, refusal)
    segmenter = segmenter_for(job.case.modality, options)
    return (segmenter, *segmenter.begin(job.case))


def segment_job(job: Job, options: InferOptions, threads: int | None = None, prefetched=None) -> Outcome:
    """A batch task: one case end to end (read, segment, write); every failure becomes a one-line reason."""
    if threads:
        limit_threads(threads)
    outcome = guarded(job.name, job.source, _segment, job, options, prefetched)
    if outcome.status == "failed" and job.record_failures and job.writes_over is None:
        try:
            write_json(job.plan.json, {"case": job.name, "status": "failed", "modality": job.case.modality,
                                       "source": str(job.source), "reason": outcome.reason,
                                       "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
        except LungctError as err:  # the folder took no output (disk full?): the reason says so once
            if err.reason not in outcome.reason:
                outcome.reason += f"; no failure record either ({err.reason})"
    return outcome


def _segment(job: Job, options: InferOptions, prefetched=None) -> dict:
    if isinstance(prefetched, BaseException):
        raise prefetched
    segmenter, prepared, timings = prefetched or prefetch_job(job, options)
    return segmenter.end(prepared, timings).write(job.plan)


def guard_inputs(jobs: list[Job], inputs: InputFiles, output: Path) -> None:
    """Refuse every output that is an input file of the run (or a link to one): the one file `-o` names
    fails the run, a case in a folder output fails alone (its mask named like its scan, in the scan's
    folder), and is never written, nor its failure record."""
    for job in jobs:
        job.writes_over = next((path for path in job.outputs() if inputs.holds(path)), None)
    if is_file_output(output) and jobs and jobs[0].writes_over is not None:
        stem = output.name[: -len(suffix_of(output))]
        inputs.refuse(jobs[0].writes_over, f"name the output otherwise (e.g. {stem}-mask{suffix_of(output)})")


def is_done(job: Job) -> bool:
    """A case is done when its mask exists and its sidecar says ok (a failed case is tried again)."""
    try:
        if not (job.plan.done_marker.exists() and job.plan.json.exists()):
            return False
        return json.loads(job.plan.json.read_text()).get("status", "ok") == "ok"
    except (OSError, ValueError):  # a name too long for the file system, an unreadable sidecar
        return False


def escaping(log):
    """`log` with the undecodable bytes of file names in its messages shown as \\xNN (lungct.os_names)."""
    return lambda message: log(printable(message))


def infer(inputs: list[Path], output: Path, options: InferOptions | None = None, modality: str = "auto",
          overwrite: bool = False, preview=None, progress: bool = True, log=print, num_parts: int = 1,
          part_id: int = 0, scheduler: str | None = None, output_types=("nifti",),
          assume_orientation: str | None = None) -> list[Outcome]:
    """Segment every case found in `inputs`; resume (skip finished cases) unless `overwrite`.
    `assume_orientation` ("RAS", "LPS", ...): how NIfTI files whose header states no orientation are stored."""
    log = escaping(log)  # messages name files: any log (print included) gets them as valid UTF-8
    options = resolved(options or InferOptions())
    assume_orientation = orientation_codes(assume_orientation)
    cases = discovered = discover([Path(p) for p in inputs])
    for case in cases:
        case.assume_orientation = assume_orientation
    if not cases:
        raise LungctError(", ".join(str(p) for p in inputs), "no scans or radiographs found (DICOM, NIfTI, NRRD, "
                                                              "MHA, PNG, JPEG, TIFF)")
    if modality != "auto":  # forced: the other kind is refused case by case
        for case in cases:
            case.problem = case.problem or case.refusal(modality)
            case.modality = modality
    given = {role.removesuffix(TUMOUR_ROLE) for role in models_by_modality(options.models)}
    kinds = {c.modality for c in cases if not c.problem}
    if given and kinds and not kinds & given:
        only = " and ".join(get_modality(kind).noun for kind in sorted(kinds))
        raise LungctError(", ".join(options.models), f"--model gives a {'/'.join(sorted(given))} model, but the input "
                                                      f"holds only {only}")
    if options.tta and kinds == {CXR.name}:  # a flip swaps right and left
        raise LungctError(", ".join(map(str, inputs)), "--tta is for CT scans, not radiographs")
    cases = shard(cases, num_parts, part_id)
    jobs = plan_jobs(cases, Path(output), preview, output_types)
    inputs = InputFiles(path for case in discovered for path in case.paths + case.left_out)
    guard_inputs(jobs, inputs, Path(output))
    for folder in output_folders(jobs, Path(output)):
        check_writable(folder)
    one_file = is_file_output(Path(output))
    if one_file and (too_long := name_too_long(output)):
        raise LungctError(output, too_long)
    done = [job for job in jobs if not overwrite and job.writes_over is None and is_done(job)]
    if len(jobs) == 1 and jobs[0].refusal() is None and (done or (jobs[0].plan.done_marker.exists() and not overwrite)):
        raise LungctError(jobs[0].plan.done_marker, "exists already (use --overwrite to replace it)")
    todo = [job for job in jobs if not any(job is d for d in done)]
    outcomes = [Outcome(j.name, str(j.source), "skipped", "done in an earlier run") for j in done]
    if outcomes:
        log(f"{len(outcomes)} of {len(jobs)} case(s) already done in {output} (resuming; --overwrite redoes them)")
    folder = None if one_file else Path(output)

    def report(_=None) -> None:
        if folder is not None and folder.is_dir() and not any(map(inputs.holds, batch_tables(folder))):
            try:
                write_batch_tables(folder)
            except Exception as err:  # the report must never cost the batch its masks, nor stay stale
                log(f"warning: {folder}: report.html / statistics.csv not written ({type(err).__name__}: "
                    f"{err}); {remove_batch_tables(folder)}")

    threads = threads_per_task(scheduler) if scheduler else None
    outcomes += run_cases(segment_job, todo, options, threads, scheduler=scheduler, progress=progress, log=log,
                          desc="infer", unit="case", on_outcome=report,
                          prefetch=(lambda job: prefetch_job(job, options)) if len(todo) > 1 else None)
    report()
    return outcomes


def output_folders(jobs: list[Job], output: Path) -> list[Path]:
    """Every folder the run writes into: checked before any case runs, so that an unwritable output
    fails the run in one line instead of every case."""
    folders = {path.parent for job in jobs for path in job.outputs()}
    return sorted(folders | ({Path(output)} if not is_file_output(output) else set()))


def batch_tables(folder: Path) -> list[Path]:
    """The files a folder output gets besides its cases' own."""
    return [folder / "report.html", folder / "statistics.csv"]


def write_batch_tables(folder: Path) -> None:
    """report.html (the QC page) and statistics.csv (one row per case, lung and region) from every sidecar
    in the folder: correct while a batch runs and after a resume."""
    sidecars = load_sidecars(folder)  # read once for both
    write_report(folder, sidecars=sidecars)
    rows = []
    for _, record in sidecars:
        statistics = record.get("statistics")
        if not statistics:
            continue
        if statistics.get("refused"):
            rows.append({"case": record["case"], "status": "refused", "reason": statistics["refused"]})
            continue
        meta = {"case": record["case"], "status": "ok", "convention": statistics.get("convention"),
                "hu": statistics.get("hu")}
        for lung, regions in statistics.items():
            if isinstance(regions, dict):
                rows += [{**meta, "lung": lung, "region": region, **numbers} for region, numbers in regions.items()]
    if rows:
        write_statistics_csv(folder / "statistics.csv", rows)
    else:  # no sidecar has statistics now: an earlier table would describe cases that no longer do
        (folder / "statistics.csv").unlink(missing_ok=True)


def remove_batch_tables(folder: Path) -> str:
    """Remove report.html and statistics.csv (never left stale); say what became of them."""
    kept = []
    for path in batch_tables(folder):
        try:
            path.unlink(missing_ok=True)
        except OSError:
            kept.append(path.name)
    return f"{' and '.join(kept)} left as before (cannot remove)" if kept else "the earlier ones are removed"


# ------------------------------------------------------------------------------------------- library use


def load_segmenter(model=None, modality: str = "ct", device: str = "auto", precision: str = "auto", **options):
    """A segmenter for the library: `load_segmenter().segment("scan.nii.gz")` (CT), or modality="cxr"
    (`options`: lungct.options.InferOptions fields)."""
    options = InferOptions(device=device, precision=precision, **options)
    return make_segmenter(Model.load(model, modality, device, precision), options)
