"""Benchmark `lungct preprocess`: seconds and peak memory per case, Dice against every reference mask.

Run by hand (not a test); writes preprocess.md and .json into --results (default benchmarks/results):

    python benchmarks/preprocess.py                 # shared volumes, full-size scan (3 runs), ct-slices
    python benchmarks/preprocess.py --quick --results /tmp/prep-bench   # one full-size run, 40 ct-slices

Each volume runs in a fresh process so its peak RSS is its own. The full-size scan is chest-cta
resampled to 0.7 x 0.7 x 1 mm (about 512 x 512 x 286; benchmarks/fullsize.py), made once in a temporary
folder. The baseline on the 201 ct-slices is the textbook recipe (air < -320, drop border air, two largest components, fill).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from fullsize import DATA, ROOT, make_full_size

RESULTS = ROOT / "benchmarks" / "results"
VOLUMES = [  # (case, scan, reference, reference is right/left)
    ("imlab-id001", "ct-volumes/imlab-id001/image.nii.gz", "ct-volumes/imlab-id001/lungs.nii.gz", False),
    ("imlab-id002", "ct-volumes/imlab-id002/image.nii.gz", "ct-volumes/imlab-id002/lungs.nii.gz", False),
    ("copdgene-ct64 (nrrd)", "ct-volumes/copdgene-ct64/image.nrrd", "ct-volumes/copdgene-ct64/lungs-lr.nii.gz", True),
    ("copdgene-ct64 (dicom)", "ct-volumes/copdgene-ct64/dicom", "ct-volumes/copdgene-ct64/lungs-lr.nii.gz", True),
    ("radiomics-lung1", "ct-volumes/radiomics-lung1/image.nrrd", None, False),
    ("radiomics-lung2", "ct-volumes/radiomics-lung2/image.nrrd", None, False),
    ("chest-cta", "ct-volumes/chest-cta/image.nii.gz", None, False),
    ("abdomen-couch", "ct-volumes/abdomen-couch/dicom", None, False),
]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / total) if total else 1.0


def run_case(scan_path: str, reference: str | None, right_left: bool) -> dict:
    """One case end to end (read, chain, write), in its own process."""
    import torch

    from lungct.ct.preprocess import preprocess_scan, write_case
    from lungct.io import load_scan
    from lungct.recipes import load_recipe

    torch.set_num_threads(os.cpu_count() or 1)
    recipe = load_recipe("preprocess")
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        result = preprocess_scan(scan_path, recipe)
        write_case(result, recipe, Path(out))
        seconds = time.perf_counter() - started
    row = {"seconds": seconds, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2,
           "shape": list(result.scan.array.shape), "timings_s": result.case["timings_s"],
           "volumes_ml": result.volumes_ml, "flags": result.case.get("flags", [])}
    if reference:
        truth = load_scan(reference).array.astype(np.int16)
        mask = result.lungs_native
        row["dice"] = dice(mask > 0, truth > 0)
        if right_left:
            row["dice_right"] = dice(mask == 1, truth == 1)
            row["dice_left"] = dice(mask == 2, truth == 2)
    return row


def in_fresh_process(*args) -> dict:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(run_case, *args).result()


def textbook(array: np.ndarray) -> np.ndarray:
    """The threshold baseline the issue quotes: air < -320, drop border air, two largest, fill holes."""
    from scipy import ndimage as ndi

    air = array < -320
    labels, count = ndi.label(air)
    border = np.unique(np.concatenate([labels[0].ravel(), labels[-1].ravel(), labels[:, 0].ravel(), labels[:, -1].ravel()]))
    air[np.isin(labels, border)] = False
    labels, count = ndi.label(air)
    if count == 0:
        return air
    sizes = ndi.sum(air, labels, range(1, count + 1))
    mask = np.isin(labels, np.argsort(sizes)[::-1][:2] + 1)
    return ndi.binary_fill_holes(mask)


def ct_slices(limit: int | None) -> list[dict]:
    import nibabel as nib

    from lungct.ct.preprocess import preprocess_scan
    from lungct.recipes import Chain, load_recipe

    chain = Chain.of(load_recipe("preprocess"))
    rows = []
    images = sorted((DATA / "ct-slices/images").glob("*.nii.gz"))[:limit]
    for path in images:
        truth = np.asarray(nib.load(DATA / "ct-slices/masks" / path.name).dataobj)[..., 0] > 0
        started = time.perf_counter()
        result = preprocess_scan(path, chain=chain)
        seconds = time.perf_counter() - started
        baseline = textbook(np.asarray(nib.load(path).dataobj, dtype=np.float32)[..., 0])
        rows.append({"case": path.name[:-7], "dice": dice(result.lungs_native[..., 0] > 0, truth),
                     "textbook": dice(baseline, truth), "seconds": seconds,
                     "flags": result.case.get("flags", [])})
    return rows


def summary(values) -> str:
    values = list(values)
    return (f"{statistics.mean(values):.4f} ± {statistics.pstdev(values):.4f} "
            f"(median {statistics.median(values):.4f}, min {min(values):.4f}, max {max(values):.4f}, n = {len(values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one full-size run and 40 ct-slices")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for preprocess.md/.json")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"error: {DATA}: the shared data folder is missing")
    args.results.mkdir(parents=True, exist_ok=True)
    report = {"machine": f"{os.cpu_count()} cores", "volumes": {}, "full_size": [], "ct_slices": []}
    lines = ["# lungct preprocess benchmark", "",
             f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d %H:%M')}; read + chain + write per case, "
             "fresh process per case.", "",
             "| case | shape | seconds | peak RSS (GB) | Dice | right / left Dice | volumes R / L (mL) | flags |",
             "|---|---|---|---|---|---|---|---|"]
    for name, scan, reference, right_left in VOLUMES:
        row = in_fresh_process(str(DATA / scan), str(DATA / reference) if reference else None, right_left)
        report["volumes"][name] = row
        rl = f"{row['dice_right']:.4f} / {row['dice_left']:.4f}" if "dice_right" in row else ""
        lines.append(f"| {name} | {'×'.join(map(str, row['shape']))} | {row['seconds']:.1f} | {row['peak_rss_gb']:.2f} | "
                     f"{row.get('dice', float('nan')):.4f} | {rl} | {row['volumes_ml']['right_lung']} / {row['volumes_ml']['left_lung']} | "
                     f"{', '.join(row['flags'])} |")
        print(lines[-1], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        full = make_full_size(Path(tmp))
        for _ in range(1 if args.quick else 3):
            row = in_fresh_process(str(full), None, False)
            report["full_size"].append(row)
            print(f"full size: {row['seconds']:.1f} s, {row['peak_rss_gb']:.2f} GB", flush=True)
    runs = report["full_size"]
    median = statistics.median(r["seconds"] for r in runs)
    steps = {k: statistics.median(r["timings_s"].get(k, 0) for r in runs) for k in runs[0]["timings_s"]}
    lines += ["", f"## Full-size scan ({'×'.join(map(str, runs[0]['shape']))}, chest-cta at 0.7×0.7×1 mm)", "",
              f"median {median:.1f} s over {len(runs)} run(s) (target ≤ 15 s); "
              f"peak RSS {max(r['peak_rss_gb'] for r in runs):.2f} GB (target ≤ 4 GB)", "",
              "| step | median seconds |", "|---|---|"] + [f"| {k} | {v:.2f} |" for k, v in steps.items()]
    rows = ct_slices(40 if args.quick else None)
    report["ct_slices"] = rows
    better = sum(r["dice"] > r["textbook"] + 0.005 for r in rows)
    worse = sum(r["dice"] < r["textbook"] - 0.005 for r in rows)
    lines += ["", "## ct-slices (manual masks; HU uncalibrated, air ≈ −790)", "",
              f"- lungct: Dice {summary(r['dice'] for r in rows)}",
              f"- textbook threshold recipe: Dice {summary(r['textbook'] for r in rows)}",
              f"- lungct better by > 0.005 on {better} slices, worse on {worse}; below 0.95: "
              f"{sum(r['dice'] < 0.95 for r in rows)} (lungct), {sum(r['textbook'] < 0.95 for r in rows)} (textbook)",
              f"- median seconds per slice: {statistics.median(r['seconds'] for r in rows):.2f}", "",
              "Lowest ten (lungct / textbook):", ""]
    lines += [f"- {r['case']}: {r['dice']:.4f} / {r['textbook']:.4f}" for r in sorted(rows, key=lambda r: r["dice"])[:10]]
    (args.results / "preprocess.json").write_text(json.dumps(report, indent=1, default=float))
    (args.results / "preprocess.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-20:]))
    print(f"wrote {args.results / 'preprocess.md'}")


if __name__ == "__main__":
    main()
