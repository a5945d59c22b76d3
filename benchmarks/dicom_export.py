"""Benchmark DICOM-SEG and RTSTRUCT export of a lung mask on a full-size CT series.

Run by hand (not a test); writes benchmarks/results/dicom_export.md:

    python benchmarks/dicom_export.py            # median of 3 runs per writer
    python benchmarks/dicom_export.py --runs 1

The series is synthetic: 512 x 512 x 300 int16 (0.7 x 0.7 x 1 mm, IPP descending as many scanners store
it), written once into a temporary folder. The mask holds two lobulated ellipsoid lungs of about 2.7 L
each, the size of an adult's. Target: DICOM-SEG adds at most 2 s to a run (timed in process, and as
`lungct infer` with and without it, whole process). The breakdown times the
writer's steps apart (headers, matching, highdicom's constructor, saving) to show where the time goes.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SHAPE = (512, 512, 300)
SPACING = (0.7, 0.7, 1.0)


NOTES = """Why DICOM-SEG costs what it does (profiled with cProfile, 2026-12-02):

- Most of the time is per frame, not per voxel: highdicom builds a per-frame functional-group item
  (derivation image, plane position, frame content, segment identification) for each of the ~500
  frames, and pydicom serialises those ~4600 nested datasets one element at a time. No highdicom
  option removes that: a bool array per segment is much slower (table above), keeping empty frames
  adds frames, `workers` only parallelises compression (BINARY is not compressed), and
  highdicom refuses `dimension_organization_type="3D"` for these single-frame series ("not a
  regularly-spaced 3D volume"), with or without empty frames.
- highdicom looks up the source IOD for every source image (`is_multiframe_image` ->
  `is_attribute_in_iod`, 0.3-1 ms each, 0.08-0.3 s for 300 slices); caching it per SOP class
  (a monkeypatch) saved 0.1-0.2 s, within the noise of this shared machine: not applied. Upstream fix
  worth proposing: memoise the IOD lookup per SOP Class UID.
- Passing highdicom the geometry it would otherwise compute (`plane_positions`, `plane_orientation`,
  `pixel_measures`) doubles its constructor's time: it then matches the planes back to the source
  images and still derives theirs. Not used.
- The first call in a process imports highdicom (0.1 s beside pydicom) and loads its JSON copy of the
  DICOM standard (0.2 s). Importing it in a background thread when the export starts gains nothing
  measurable (import and JSON decoding hold the GIL), so there is no warm-up hook.
- The cyclic garbage collector is paused during the write: the ~60 000 objects of a write set off full
  collections over every object of the process (0.4 million once highdicom's tables are loaded, more
  beside torch), which cost a third of the first call and 10-25 % of later ones.
- lungct's own steps were made cheap: label slices are transposed tile by tile (3x faster than one
  (x, y, z) -> (z, y, x) copy), labels are passed as a uint8 label map, the segments present are found
  frame by frame (a histogram of all labels took 0.1 s), and only one pydicom header read per file.
  Reading only the needed tags (`specific_tags`) is no faster: pydicom still walks every element.
- RTSTRUCT: contour data is encoded once as text and kept raw (pydicom's per-value DS conversion and
  validation cost 10 s for 130 000 points); skimage.measure.find_contours is now the largest step."""


def grid_affine() -> np.ndarray:
    """RAS affine of an LPS-stored, head-first series centred on the origin."""
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    affine[:3, 3] = -affine[:3, :3] @ ((np.array(SHAPE) - 1) / 2)
    return affine


def lungs_and_ct() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 labels, int16 HU) on the grid: body ellipse, two lobulated lungs, air outside."""
    x = (np.arange(SHAPE[0]) - SHAPE[0] / 2) * SPACING[0]
    y = (np.arange(SHAPE[1]) - SHAPE[1] / 2) * SPACING[1]
    xx, yy = np.meshgrid(x, y, indexing="ij")
    labels = np.zeros(SHAPE, np.uint8)
    hu = np.full(SHAPE, -1000, np.int16)
    body = (xx / 160) ** 2 + (yy / 115) ** 2 <= 1
    for k in range(SHAPE[2]):
        z = (k - SHAPE[2] / 2) * SPACING[2]
        hu[:, :, k][body] = 40
        for side, cx in ((1, -75.0), (2, 75.0)):  # LPS storage: low array x is the patient's right
            scale = 1 - (z / 125) ** 2
            if scale <= 0:
                continue
            angle = np.arctan2(yy, xx - cx)
            wobble = 1 + 0.06 * np.sin(7 * angle + z / 9) + 0.03 * np.sin(17 * angle - z / 5)
            inside = ((xx - cx) / 60) ** 2 + (yy / 90) ** 2 <= scale * wobble ** 2
            labels[:, :, k][inside] = side
            hu[:, :, k][inside] = -850
    return labels, hu


def write_series(hu: np.ndarray, folder: Path) -> list[Path]:
    """One uncompressed CT file per slice; IPP runs downwards with the file number."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ grid_affine()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    paths = []
    for k in range(SHAPE[2]):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.Modality, ds.PatientName, ds.PatientID = "CT", "Bench^Mark", "BENCH"
        ds.PatientBirthDate = ds.PatientSex = ds.AccessionNumber = ds.ReferringPhysicianName = ""
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20260101", "120000", "1"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        index = SHAPE[2] - 1 - k
        ds.ImagePositionPatient = [f"{v:.4f}" for v in lps[:3, 3] + lps[:3, 2] * index]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [SPACING[1], SPACING[0]]
        ds.SliceThickness = SPACING[2]
        ds.Rows, ds.Columns = SHAPE[1], SHAPE[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, 0
        ds.PixelData = np.ascontiguousarray(hu[:, :, index].T).tobytes()
        path = folder / f"{generate_uid()[-12:]}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def timed(fn, runs: int) -> tuple[float, list[float], float]:
    """(median wall s, wall s of each run, median CPU s): CPU time says less about the neighbours' load."""
    times, cpu = [], []
    for _ in range(runs):
        started, cpu_started = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return statistics.median(times), times, statistics.median(cpu)


def breakdown(labels, affine, files, out: Path) -> dict[str, float]:
    """Seconds of each step of write_dicom_seg, run apart (after the timed runs: imports are warm)."""
    from lungct.io import dicom_export as dx

    steps, started = {}, time.perf_counter()

    def lap(name):
        nonlocal started
        steps[name] = time.perf_counter() - started
        started = time.perf_counter()

    with dx._gc_paused():  # as write_dicom_seg
        matched = dx.match_source_slices(labels.shape, affine, files, out)
        lap("read headers (pydicom), match slices by position")
        frames = dx._frames(labels, matched)
        lap("label slices to (files, rows, cols) frames")
        present = dx._segment_numbers(frames, dx.LUNG_SEGMENTS, out)
        lap("segments present, relabel to segment numbers")
        seg = dx._segmentation(matched, frames, present, "bench", "0", 1)
        lap("highdicom Segmentation(...)")
        seg.save_as(out, enforce_file_format=True)
        lap("save_as (pydicom)")
    return steps


def highdicom_options(labels, affine, files, out: Path) -> list[tuple[str, float, float, int]]:
    """(variant, constructor s, save s, frames) for highdicom options that could change its cost; warm."""
    from lungct.io import dicom_export as dx

    matched = dx.match_source_slices(labels.shape, affine, files, out)
    frames = dx._frames(labels, matched)
    present = dx._segment_numbers(frames, dx.LUNG_SEGMENTS, out)
    onehot = np.stack([frames == n for n in range(1, len(present) + 1)], axis=-1)
    variants = [("uint8 label map (files, rows, cols), empty frames omitted: used", frames, {}),
                ("one bool plane per segment (files, rows, cols, 2)", onehot, {}),
                ("uint8 label map, omit_empty_frames=False", frames, {"omit_empty_frames": False})]
    rows = []
    for name, array, options in variants:
        with dx._gc_paused():  # as write_dicom_seg
            started = time.perf_counter()
            seg = dx._segmentation(matched, array, present, "bench", "0", 1, **options)
            built = time.perf_counter() - started
            started = time.perf_counter()
            seg.save_as(out, enforce_file_format=True)
            rows.append((name, built, time.perf_counter() - started, int(seg.NumberOfFrames)))
    return rows


def whole_process(series: Path, out: Path, runs: int) -> dict:
    """`lungct infer series` with and without DICOM-SEG, alternating, each a fresh process: what a user pays."""
    import subprocess

    base = [sys.executable, "-m", "lungct", "infer", str(series), "--quiet", "--overwrite", "-o"]
    commands = {"nifti": base + [str(out / "nifti")],
                "nifti + dicom-seg": base + [str(out / "seg"), "--output-type", "nifti", "--output-type", "dicom-seg"]}
    seconds = {name: [] for name in commands}
    for _ in range(runs):
        for name, command in commands.items():
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            seconds[name].append(time.perf_counter() - started)
    differences = [b - a for a, b in zip(*seconds.values())]
    return {**{name: statistics.median(v) for name, v in seconds.items()}, "added": statistics.median(differences),
            "runs": runs}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-whole-process", dest="whole_process", action="store_false",
                        help="skip timing `lungct infer` with and without --output-type dicom-seg")
    args = parser.parse_args(argv)
    import pydicom

    import lungct
    from lungct.io import load_scan
    from lungct.io.dicom_export import LUNG_SEGMENTS, write_dicom_seg, write_rtstruct

    labels, hu = lungs_and_ct()
    litres = [float((labels == v).sum()) * np.prod(SPACING) / 1e6 for v in (1, 2)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "ct").mkdir()
        started = time.perf_counter()
        files = write_series(hu, tmp / "ct")
        print(f"series written in {time.perf_counter() - started:.1f} s")
        del hu
        started = time.perf_counter()
        scan = load_scan(tmp / "ct")
        read_s = time.perf_counter() - started
        assert scan.array.shape == SHAPE and np.allclose(scan.affine, grid_affine(), atol=1e-3), scan.affine
        affine = scan.affine
        del scan
        def seg():
            write_dicom_seg(tmp / "seg.dcm", labels, affine, files, LUNG_SEGMENTS)

        def rt():
            write_rtstruct(tmp / "rt.dcm", labels, affine, files, LUNG_SEGMENTS)

        seg_cold, _, _ = timed(seg, 1)  # first call in the process: imports highdicom, loads its tables
        seg_s, seg_runs, seg_cpu = timed(seg, args.runs)
        print(f"DICOM-SEG first call {seg_cold:.2f} s, then {seg_s:.2f} s "
              f"({', '.join(f'{t:.2f}' for t in seg_runs)}), CPU {seg_cpu:.2f} s")
        rt_cold, _, _ = timed(rt, 1)
        rt_s, rt_runs, rt_cpu = timed(rt, args.runs)
        print(f"RTSTRUCT first call {rt_cold:.2f} s, then {rt_s:.2f} s ({', '.join(f'{t:.2f}' for t in rt_runs)}), "
              f"CPU {rt_cpu:.2f} s")
        seg_mb, rt_mb = (tmp / "seg.dcm").stat().st_size / 1e6, (tmp / "rt.dcm").stat().st_size / 1e6
        ds = pydicom.dcmread(tmp / "rt.dcm")
        contours = sum(len(roi.ContourSequence) for roi in ds.ROIContourSequence)
        points = sum(int(c.NumberOfContourPoints) for roi in ds.ROIContourSequence for c in roi.ContourSequence)
        frames = int(pydicom.dcmread(tmp / "seg.dcm", stop_before_pixels=True).NumberOfFrames)
        steps = breakdown(labels, affine, files, tmp / "seg-steps.dcm")
        options = highdicom_options(labels, affine, files, tmp / "seg-options.dcm")
        infer = whole_process(tmp / "ct", tmp, args.runs) if args.whole_process else None
        load = os.getloadavg()
    import highdicom  # only now: the first timed call above paid for importing it
    lines = [
        "# DICOM-SEG and RTSTRUCT export benchmark",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPU "
        f"cores shared with other work (load average {load[0]:.1f} / {load[1]:.1f} at the end); "
        f"lungct {lungct.__version__}, highdicom {highdicom.__version__}, pydicom {pydicom.__version__}, "
        f"Python {platform.python_version()}.",
        "",
        f"Synthetic series {SHAPE[0]}×{SHAPE[1]}×{SHAPE[2]} int16 ({SPACING[0]}×{SPACING[1]}×{SPACING[2]} mm, "
        f"IPP descending, shuffled file names); lungs {litres[0]:.2f} L + {litres[1]:.2f} L. "
        f"lungct reads the series in {read_s:.1f} s.",
        "",
        f"| writer | first call in process, wall s | then median of {args.runs}, wall s | runs, wall s | "
        "median CPU s | output |",
        "|---|---|---|---|---|---|",
        f"| write_dicom_seg | {seg_cold:.2f} | **{seg_s:.2f}** | {', '.join(f'{t:.2f}' for t in seg_runs)} | "
        f"{seg_cpu:.2f} | {seg_mb:.1f} MB, {frames} frames (BINARY, empty frames omitted) |",
        f"| write_rtstruct | {rt_cold:.2f} | **{rt_s:.2f}** | {', '.join(f'{t:.2f}' for t in rt_runs)} | "
        f"{rt_cpu:.2f} | {rt_mb:.1f} MB, {contours} contours, {points} points |",
        "",
        "Where write_dicom_seg spends its time (steps run apart, warm imports):",
        "",
        "| step | s |",
        "|---|---|",
        *[f"| {name} | {seconds:.2f} |" for name, seconds in steps.items()],
        f"| total | {sum(steps.values()):.2f} |",
        "",
        "highdicom options (warm, one run each):",
        "",
        "| pixel_array and options | Segmentation(...) s | save_as s | frames |",
        "|---|---|---|---|",
        *[f"| {name} | {built:.2f} | {saved:.2f} | {n} |" for name, built, saved, n in options],
        "",
        f"Target: DICOM-SEG adds ≤ 2 s — in process {'met' if seg_s <= 2.0 else 'NOT met'} (median wall time, "
        f"warm); median CPU time {seg_cpu:.2f} s; the first call in a process {seg_cold:.2f} s.",
        "",
        *([f"Whole process, `lungct infer` on the series ({infer['runs']} alternating runs each, start-up included): "
           f"{infer['nifti']:.2f} s with a NIfTI mask, {infer['nifti + dicom-seg']:.2f} s with a NIfTI mask and "
           f"DICOM-SEG; DICOM-SEG adds **{infer['added']:.2f} s** (median of the pairwise differences) — "
           f"{'met' if infer['added'] <= 2.0 else 'NOT met'}.", ""] if infer else []),
        NOTES,
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dicom_export.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
