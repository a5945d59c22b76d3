"""`lungct preprocess`: scans in, per-case folders out (image, lungs, ROI, native-grid lungs, sidecar).

A case folder appears whole or not at all: everything is written into a hidden temporary folder that
is renamed into place at the end, so an interrupted run leaves nothing half-written and the next run
resumes with the cases that have no folder yet. Cases run through lungct.batch like `lungct infer`'s.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lungct import __version__
from lungct.batch import Outcome, guarded, limit_threads, run_cases, shard, threads_per_task
from lungct.ct.segmenter import prepare_scan
from lungct.errors import LungctError
from lungct.geometry import geometry_summary, labels_to_grid, voxel_ml
from lungct.io import CaseSource, Scan, discover, load_case, load_scan
from lungct.io.atomic import (TEMPORARY_NAME_CHARS, atomic_path, cannot_write, check_writable, open_text,
                              write_json)
from lungct.io.folder_lock import folder_lock, tables_lock
from lungct.io.inputs_guard import INPUT_REFUSAL, InputFiles
from lungct.io.nifti_orientation import orientation_codes
from lungct.io.volumes import write_nifti
from lungct.labels import LUNG_LABELS, measure
from lungct.recipes import Chain, load_recipe, recipe_digest
from lungct.report import save_preview

CASE_FILES = ("image.nii.gz", "lungs.nii.gz", "roi.nii.gz", "lungs-native.nii.gz", "case.json", "preview.png")
SUMMARY_FIELDS = ["case", "status", "right_lung_ml", "left_lung_ml", "total_ml", "flags", "warnings", "source", "seconds"]


@dataclass
class Preprocessed:
    """What the chain made of one scan: arrays on the processing grid and on the scan's own grid."""

    scan: Scan
    image: np.ndarray
    lungs: np.ndarray
    roi: np.ndarray
    affine: np.ndarray
    lungs_native: np.ndarray
    case: dict = field(default_factory=dict)

    @property
    def volumes_ml(self) -> dict:
        return measure(self.lungs, LUNG_LABELS, voxel_ml(self.affine), digits=1)


def preprocess_scan(scan: Scan | str | Path, recipe: dict | str | Path | None = None, chain: Chain | None = None,
                    recalibrate: bool | None = None) -> Preprocessed:
    """Run the preprocessing chain on one scan (a loaded Scan or a path)."""
    started = time.perf_counter()
    if not isinstance(scan, Scan):
        scan = load_scan(scan)
    read_seconds = time.perf_counter() - started
    if chain is None:
        overrides = {} if recalibrate is None else {"CheckHUCalibrationd.recalibrate": bool(recalibrate)}
        recipe = recipe if isinstance(recipe, dict) else load_recipe(recipe or "preprocess", overrides)
        chain = Chain.of(recipe)
    prepared = prepare_scan(chain, scan)
    data, case = prepared.extras, prepared.case
    lungs = data["lungs"].astype(np.uint8) if "lungs" in data else np.zeros(prepared.image.shape, np.uint8)
    roi = prepared.roi.astype(np.uint8) if prepared.roi is not None else np.zeros_like(lungs)
    start = time.perf_counter()
    lungs_native = labels_to_grid(lungs, prepared.affine, scan.array.shape, scan.affine)
    case["timings_s"]["to_input_grid"] = round(time.perf_counter() - start, 3)
    case["timings_s"]["read"] = round(read_seconds, 3)
    return Preprocessed(scan, prepared.image, lungs, roi, prepared.affine, lungs_native, case)


def case_record(result: Preprocessed, recipe: dict) -> dict:
    """The case.json sidecar; sources are absolute, so training can find the original scans again."""
    scan, case = result.scan, result.case
    sources = [str(Path(p).resolve()) for p in scan.sources]
    record = {
        "case": scan.name,
        "status": "ok",
        "lungct_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "sources": sources if len(sources) <= 3 else {"folder": str(Path(scan.source).resolve()), "files": len(sources)},
        "format": scan.format,
        "modality": scan.info.get("modality", "CT" if scan.format != "dicom" else "unknown"),
        "input": case.get("input"),
        "output": {**geometry_summary(result.image.shape, result.affine), "files": list(CASE_FILES)},
        "labels": dict(LUNG_LABELS),
        "volumes_ml": result.volumes_ml,
        "hu_calibration": case.get("hu_calibration"),
        "flags": sorted(set(case.get("flags", []))),
        "warnings": case.get("warnings", []),
        "body_volume_ml": case.get("body_volume_ml"),
        "lungs": case.get("lungs"),
        "roi": case.get("roi"),
        "timings_s": case.get("timings_s"),
        "recipe": {"name": recipe.get("name"), "source": recipe.get("source"), "digest": recipe_digest(recipe),
                   "transforms": recipe.get("transforms")},
    }
    if scan.format == "dicom":
        record["dicom"] = {k: v for k, v in scan.info.items() if k != "modality"}
    return record


def write_case(result: Preprocessed, recipe: dict, out_dir: Path, overwrite: bool = False) -> Path:
    """Write one case folder atomically: build it under a hidden name, then rename it into place."""
    out_dir = Path(out_dir)
    final = out_dir / result.scan.name
    tmp = out_dir / f".tmp-{result.scan.name[:TEMPORARY_NAME_CHARS]}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        started = time.perf_counter()
        header = result.scan.header if result.scan.format in ("nii", "nii.gz") else None
        volumes = result.volumes_ml
        title = f"{result.scan.name}  R {volumes['right_lung']:.0f} mL  L {volumes['left_lung']:.0f} mL"
        # One thread per file, largest first: compression and most numpy work release the GIL.
        jobs = [(write_nifti, tmp / "image.nii.gz", result.image.astype(np.float32, copy=False), result.affine,
                 None, np.int16),
                (write_nifti, tmp / "lungs-native.nii.gz", result.lungs_native, result.scan.affine, header, np.uint8),
                (save_preview, tmp / "preview.png", result.image, result.lungs, result.roi, result.affine,
                 LUNG_LABELS, title),
                (write_nifti, tmp / "lungs.nii.gz", result.lungs, result.affine, None, np.uint8),
                (write_nifti, tmp / "roi.nii.gz", result.roi, result.affine, None, np.uint8)]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            for future in [pool.submit(*job) for job in jobs]:
                future.result()
        result.case["timings_s"]["write"] = round(time.perf_counter() - started, 3)
        record = case_record(result, recipe)
        record["timings_s"]["total"] = round(sum(v for k, v in record["timings_s"].items() if k != "total"), 3)
        write_json(tmp / "case.json", record)
        if final.exists():
            if not overwrite:
                raise LungctError(final, "exists already (use --overwrite to replace it)")
            old = out_dir / f".old-{result.scan.name[:TEMPORARY_NAME_CHARS]}-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
    except OSError as err:
        raise cannot_write(final, err) from None
    except LungctError as err:  # a file of the hidden folder: name the case folder the user will look for
        if str(err.source).startswith(str(tmp)):
            raise LungctError(final / Path(err.source).name, err.reason) from None
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# ------------------------------------------------------------------------------------------------ batch


def is_done(out_dir: Path, name: str) -> bool:
    try:
        return (Path(out_dir) / name / "case.json").is_file()
    except OSError:  # a name too long for the file system: not done (and refused when written)
        return False


def _preprocess_case(case: CaseSource, out_dir: str, recipe: dict, overwrite: bool) -> dict:
    started = time.perf_counter()
    scan = load_case(case)
    read_seconds = time.perf_counter() - started
    result = preprocess_scan(scan, recipe)
    result.case["timings_s"]["read"] = round(read_seconds, 3)
    final = write_case(result, recipe, Path(out_dir), overwrite)
    return json.loads((final / "case.json").read_text())


def preprocess_one(case: CaseSource, out_dir: str, recipe: dict, overwrite: bool, threads: int) -> Outcome:
    """A batch task: one case end to end; every failure becomes a one-line reason."""
    limit_threads(threads)
    return guarded(case.name, case.source, _preprocess_case, case, out_dir, recipe, overwrite)


def preprocess_batch(inputs: list[Path], out_dir: Path, recipe: dict, workers: int = 1, overwrite: bool = False,
                     progress: bool = True, log=print, scheduler: str | None = None, num_parts: int = 1,
                     part_id: int = 0, assume_orientation: str | None = None) -> list[Outcome]:
    """Preprocess every case found in `inputs` into `out_dir`; resume unless `overwrite`.
    `assume_orientation` ("RAS", ...): how NIfTI files whose header states no orientation are stored.

    `scheduler` runs the cases on a Dask cluster (lungct.batch); `num_parts`/`part_id` keep one shard of
    the case list, so that N independent jobs together do every case exactly once.
    """
    assume_orientation = orientation_codes(assume_orientation)
    out_dir = check_writable(out_dir)
    part = f"part{part_id}of{num_parts}" if num_parts > 1 else None
    with folder_lock(out_dir, part):  # one run at a time (shards: one per part)
        cases = discover(inputs)
        if not cases:
            raise LungctError(", ".join(str(p) for p in inputs),
                              "no scans found (DICOM series, .nii/.nii.gz, .nrrd or .mha)")
        cases = shard(cases, num_parts, part_id)
        for case in cases:
            case.assume_orientation = assume_orientation
        if num_parts == 1:  # held exclusively: no other run writes here (shards leave each other's alone)
            _remove_stale_temporaries(out_dir)
        inputs = InputFiles(path for case in cases for path in case.paths + case.left_out)
        holding = {c.name: inputs.inside(out_dir / c.name) for c in cases}  # a folder replaced whole takes it along
        outcomes = [Outcome(c.name, str(c.source), "failed", f"{holding[c.name]} {INPUT_REFUSAL}: its case folder "
                            f"{out_dir / c.name} would be replaced; give another output folder (-o)")
                    for c in cases if holding[c.name]]
        cases = [c for c in cases if not holding[c.name]]
        outcomes += [Outcome(c.name, str(c.source), "skipped", "done in an earlier run") for c in cases
                     if not overwrite and is_done(out_dir, c.name)]
        todo = [c for c in cases if overwrite or not is_done(out_dir, c.name)]
        for outcome in outcomes:
            if outcome.status == "failed":
                log(f"error: {outcome.reason}")
        skipped = [o for o in outcomes if o.status == "skipped"]
        if skipped:
            log(f"{len(skipped)} of {len(cases)} case(s) already done in {out_dir} (resuming; --overwrite redoes them)")
            _warn_recipe_change(out_dir, [o.name for o in skipped], recipe, log)
        for case in cases:
            for note in case.notes:
                log(f"note: {note}")
        workers = max(1, min(workers, len(todo))) if todo else 1
        threads = threads_per_task(scheduler, workers)
        outcomes += run_cases(preprocess_one, todo, str(out_dir), recipe, overwrite, threads, workers=workers,
                              scheduler=scheduler, progress=progress, log=log, desc="preprocess")
        with tables_lock(out_dir):
            write_tables(out_dir, outcomes, failures_name=f"failures{f'-{part}' if part else ''}.csv")
        return outcomes


def _remove_stale_temporaries(out_dir: Path) -> None:
    """Temporary folders of an interrupted run (this command is the only writer of out_dir)."""
    for item in [*out_dir.glob(".tmp-*"), *out_dir.glob(".old-*")]:
        shutil.rmtree(item, ignore_errors=True)


def _warn_recipe_change(out_dir: Path, names: list[str], recipe: dict, log) -> None:
    digest = recipe_digest(recipe)
    for name in names:
        try:
            earlier = json.loads((out_dir / name / "case.json").read_text())["recipe"]["digest"]
        except (OSError, KeyError, ValueError):
            continue
        if earlier != digest:
            log(f"warning: {out_dir} holds cases made with another recipe ({earlier}, now {digest}); "
                "--overwrite remakes them")
            return


def write_tables(out_dir: Path, outcomes: list[Outcome], failures_name: str = "failures.csv") -> None:
    """summary.csv (every case folder in out_dir plus this run's failures) and failures.csv."""
    rows = {}
    for record_path in sorted(Path(out_dir).glob("*/case.json")):
        try:
            record = json.loads(record_path.read_text())
        except ValueError:
            continue
        volumes = record.get("volumes_ml", {})
        rows[record["case"]] = {
            "case": record["case"], "status": record.get("status", "ok"),
            "right_lung_ml": volumes.get("right_lung"), "left_lung_ml": volumes.get("left_lung"),
            "total_ml": volumes.get("total"), "flags": ";".join(record.get("flags", [])),
            "warnings": " | ".join(record.get("warnings", [])),
            "source": _source_text(record.get("sources")), "seconds": (record.get("timings_s") or {}).get("total"),
        }
    failures = [o for o in outcomes if o.status == "failed"]
    for outcome in failures:  # a case folder's own record stands: the summary says what the folder holds
        rows.setdefault(outcome.name, {"case": outcome.name, "status": "failed", "warnings": outcome.reason,
                                       "source": outcome.source, "seconds": round(outcome.seconds, 2)})
    _write_csv(Path(out_dir) / "summary.csv", SUMMARY_FIELDS, [rows[k] for k in sorted(rows)])
    _write_csv(Path(out_dir) / failures_name, ["case", "source", "reason"],
               [{"case": o.name, "source": o.source, "reason": o.reason} for o in failures])


def _source_text(sources) -> str:
    if isinstance(sources, dict):
        return f"{sources.get('folder')} ({sources.get('files')} files)"
    return ";".join(sources or [])


def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        with open_text(tmp) as handle:
            writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
