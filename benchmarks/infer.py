"""Benchmark `lungct infer`: seconds and peak memory on a full-size scan, Dice on every shared reference.

Run by hand (not a test); writes infer.md and infer.json into --results (default benchmarks/results):

    python benchmarks/infer.py --model ct-lungs-2d           # full-size scan once, every reference
    python benchmarks/infer.py --model runs/x/best.pt --ct-slices 40 --compare-bf16   # printed only

The full-size scan (chest-cta resampled to 0.7 x 0.7 x 1 mm and padded to 512 x 512 x 286) is made once
in a temporary folder and segmented in a fresh process, so the peak RSS is inference's own (model load,
read, preprocess, network, post-process, write). References: imlab-id001/id002 (whole lung),
copdgene-ct64 as NRRD and as DICOM (right/left), and the ct-slices manual masks; one model load serves them.
The four ct-slices whose manual mask is wrong (../shared/data/ct-slices/wrong-references) are scored in a row
of their own and kept out of every summary.
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
WRONG = DATA / "ct-slices/wrong-references"  # images/ and masks/ of the slices whose manual mask is wrong
VOLUMES = [  # (case, scan, reference, reference has right/left labels)
    ("imlab-id001", "ct-volumes/imlab-id001/image.nii.gz", "ct-volumes/imlab-id001/lungs.nii.gz", False),
    ("imlab-id002", "ct-volumes/imlab-id002/image.nii.gz", "ct-volumes/imlab-id002/lungs.nii.gz", False),
    ("copdgene-ct64 (nrrd)", "ct-volumes/copdgene-ct64/image.nrrd", "ct-volumes/copdgene-ct64/lungs-lr.nii.gz", True),
    ("copdgene-ct64 (dicom)", "ct-volumes/copdgene-ct64/dicom", "ct-volumes/copdgene-ct64/lungs-lr.nii.gz", True),
]
STEPS = ("load_model", "read", "preprocess", "network", "postprocess", "write")


def full_size_run(scan_path: str, model: str | None, options: dict) -> dict:
    """One scan end to end in this (fresh) process: model load, segment, write."""
    import torch

    from lungct.engine import load_segmenter
    from lungct.segmentation import OutputPlan

    torch.set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    segmenter = load_segmenter(model, "ct", **options)
    load_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as out:
        result = segmenter.segment(scan_path)
        record = result.write(OutputPlan(mask=Path(out) / "mask.nii.gz", json=Path(out) / "mask.json"))
    seconds = time.perf_counter() - started
    grid = record["processing_grid"]["shape"]
    dim = segmenter.model.dim
    return {"seconds": seconds, "timings_s": {"load_model": round(load_seconds, 3), **record["timings_s"]},
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2,
            "shape": list(result.labels.shape), "processing_shape": grid, "dim": dim,
            "slices_per_s": grid[2] / max(record["timings_s"]["network"], 1e-9) if dim == 2 else None,
            "volumes_ml": record["volumes_ml"], "warnings": record["warnings"], "model": record["model"]["name"]}


def in_fresh_process(*args) -> dict:
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(full_size_run, *args).result()


def slice_cases(folder: Path, group: str, limit: int | None = None) -> list[tuple]:
    """(name, scan, reference, right/left, group) of the ct-slices in folder/images with a mask in folder/masks."""
    images = sorted((folder / "images").glob("*.nii.gz"))[:limit] if (folder / "images").is_dir() else []
    return [(p.name[:-7], p, folder / "masks" / p.name, False, group) for p in images
            if (folder / "masks" / p.name).is_file()]


def reference_rows(segmenter, ct_slices: int | None) -> list[dict]:
    """Dice of every shared reference (whole lung, and right/left where the reference has them); the
    wrong references (group "wrong-references") are scored apart."""
    from lungct.evaluate import read_labels
    from lungct.metrics import overlap

    rows = []
    cases = [(name, DATA / scan, DATA / ref, lr, "volumes") for name, scan, ref, lr in VOLUMES]
    cases += slice_cases(DATA / "ct-slices", "ct-slices", ct_slices)
    cases += slice_cases(WRONG, "wrong-references")
    for name, scan, ref, right_left, group in cases:
        started = time.perf_counter()
        result = segmenter.segment(scan)
        seconds = time.perf_counter() - started
        truth = read_labels(ref)[0]
        row = {"case": name, "group": group, "seconds": seconds,
               "dice": overlap(result.labels > 0, truth > 0)["dice"], "timings_s": result.timings_s}
        if right_left:
            row["dice_right"] = overlap(result.labels == 1, truth == 1)["dice"]
            row["dice_left"] = overlap(result.labels == 2, truth == 2)["dice"]
        rows.append(row)
        if group == "volumes":
            print(f"{name}: Dice {row['dice']:.4f} ({seconds:.1f} s)", flush=True)
    return rows


def noisy_rows(segmenter, cases: list[str], noise_hu: float) -> list[dict]:
    """Dice of ct-slices with seeded Gaussian noise of `noise_hu` added to the HU values (a low-dose scan)."""
    from lungct.evaluate import read_labels
    from lungct.io import load_scan
    from lungct.metrics import overlap

    rows = []
    for seed, name in enumerate(sorted(cases)):
        scan = load_scan(DATA / "ct-slices/images" / f"{name}.nii.gz")
        noise = np.random.default_rng(seed).normal(0.0, noise_hu, scan.array.shape).astype(np.float32)
        scan.array = scan.array.astype(np.float32) + noise
        truth = read_labels(DATA / "ct-slices/masks" / f"{name}.nii.gz")[0]
        rows.append({"case": name, "noise_hu": noise_hu,
                     "dice": overlap(segmenter.segment(scan).labels > 0, truth > 0)["dice"]})
    return rows


def summary(values) -> str:
    values = list(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return (f"{statistics.mean(values):.4f} ± {sd:.4f} (min {min(values):.4f}, max {max(values):.4f}, "
            f"n = {len(values)})")


def input_spacing(meta: dict):
    """The network grid's spacing (mm) from the checkpoint's recorded input chain (its Resampled step)."""
    steps = [s for s in meta["input"]["chain"] if s["name"] == "Resampled"]
    return (steps[0].get("args") or {}).get("spacing_mm") if steps else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint path, shipped model name or 'latest'")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--tta", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="full-size runs (the machine is shared: keep it 1)")
    parser.add_argument("--skip-full-size", action="store_true", help="references only (printed; infer.md is kept)")
    parser.add_argument("--ct-slices", type=int, default=None, help="only the first N ct-slices (default: all 201; printed, infer.md is kept)")
    parser.add_argument("--results", type=Path, default=None,
                        help=f"write infer.md/.json here, partial runs too (default: {RESULTS.relative_to(ROOT)}, full runs only)")
    parser.add_argument("--noise-hu", type=float, nargs="*", default=[100.0, 200.0],
                        help="also segment the held-out ct-slices with this much Gaussian noise added (HU sd)")
    parser.add_argument("--compare-bf16", action="store_true",
                        help="also run the references with CPU bf16 autocast and report the Dice change")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"error: {DATA}: the shared data folder is missing")
    from lungct.engine import load_segmenter

    options = {"device": args.device, "precision": args.precision, "tta": args.tta}
    results = args.results or RESULTS
    report = {"machine": f"{os.cpu_count()} cores", "options": options, "full_size": [], "references": []}
    segmenter = load_segmenter(args.model, "ct", **options)
    model = segmenter.model
    lines = ["# lungct infer benchmark", "",
             f"{os.cpu_count()} CPU cores, {time.strftime('%Y-%m-%d %H:%M')}; model `{model.name}` "
             f"({model.meta['network']['name']}, {model.dim}D, input spacing {input_spacing(model.meta)} mm); "
             f"options {options}.", ""]
    if not args.skip_full_size:
        with tempfile.TemporaryDirectory() as tmp:
            full = make_full_size(Path(tmp))
            for _ in range(max(1, args.repeat)):
                row = in_fresh_process(str(full), args.model, options)
                report["full_size"].append(row)
                print(f"full size: {row['seconds']:.1f} s, {row['peak_rss_gb']:.2f} GB", flush=True)
        runs = report["full_size"]
        median = statistics.median(r["seconds"] for r in runs)
        lines += [f"## Full-size scan ({'×'.join(map(str, runs[0]['shape']))}, chest-cta at 0.7×0.7×1 mm)", "",
                  f"median {median:.1f} s end to end over {len(runs)} run(s), model load included (target ≤ 30 s); "
                  f"peak RSS {max(r['peak_rss_gb'] for r in runs):.2f} GB (target ≤ 6 GB); network grid "
                  f"{'×'.join(map(str, runs[0]['processing_shape']))}"
                  + (f"; {statistics.median(r['slices_per_s'] for r in runs):.1f} slices/s" if runs[0]["slices_per_s"] else ""),
                  "", "| step | median seconds |", "|---|---|"]
        lines += [f"| {k} | {statistics.median(r['timings_s'].get(k, 0) for r in runs):.2f} |" for k in STEPS]
        lines.append("")
    rows = reference_rows(segmenter, args.ct_slices)
    report["references"] = rows
    wrong = [r for r in rows if r["group"] == "wrong-references"]
    scored = [r for r in rows if r["group"] != "wrong-references"]
    volumes = [r for r in rows if r["group"] == "volumes"]
    slices = [r for r in rows if r["group"] == "ct-slices"]
    lines += ["## Dice on the shared references", "", "| case | Dice | right / left Dice | seconds |", "|---|---|---|---|"]
    for r in volumes:
        rl = f"{r['dice_right']:.4f} / {r['dice_left']:.4f}" if "dice_right" in r else ""
        lines.append(f"| {r['case']} | {r['dice']:.4f} | {rl} | {r['seconds']:.1f} |")
    lines += ["", f"- volumes: Dice {summary(r['dice'] for r in volumes)}"]
    if slices:
        lines += [f"- ct-slices: Dice {summary(r['dice'] for r in slices)}; below 0.95: "
                  f"{sum(r['dice'] < 0.95 for r in slices)}; median {statistics.median(r['seconds'] for r in slices):.2f} s per slice"]
    lines += [f"- every reference: Dice {summary(r['dice'] for r in scored)}; below 0.95: "
              f"{sum(r['dice'] < 0.95 for r in scored)} (targets: mean ≥ 0.98, none below 0.95)"]
    if wrong:
        lines += [f"- not scored above, the {len(wrong)} ct-slices whose manual mask is wrong "
                  f"(ct-slices/wrong-references): " + ", ".join(f"{r['case']} {r['dice']:.4f}" for r in wrong)]
    held_out = set(model.meta.get("training", {}).get("validation_cases") or [])
    unseen = [r for r in slices if r["case"] in held_out]
    if unseen:
        lines += [f"- ct-slices the model never trained on: Dice {summary(r['dice'] for r in unseen)}; below 0.95: "
                  f"{sum(r['dice'] < 0.95 for r in unseen)}"]
        for noise_hu in args.noise_hu:  # low-dose robustness: the same held-out slices, noisier
            noisy = noisy_rows(segmenter, [r["case"] for r in unseen], noise_hu)
            report.setdefault("noisy", []).extend(noisy)
            lines += [f"- the same with Gaussian noise of {noise_hu:g} HU added: Dice {summary(r['dice'] for r in noisy)}; "
                      f"below 0.95: {sum(r['dice'] < 0.95 for r in noisy)}"]
    lines.append("")
    if slices:
        lines += ["Lowest five ct-slices: " + ", ".join(f"{r['case']} {r['dice']:.4f}"
                                                          for r in sorted(slices, key=lambda r: r["dice"])[:5]), ""]
    if args.compare_bf16:
        bf16 = load_segmenter(args.model, "ct", **{**options, "precision": "bf16"})
        rows16 = reference_rows(bf16, args.ct_slices)
        report["references_bf16"] = rows16
        diffs = [abs(a["dice"] - b["dice"]) for a, b in zip(rows, rows16)]
        net32 = sum(r["timings_s"]["network"] for r in rows)
        net16 = sum(r["timings_s"]["network"] for r in rows16)
        lines += ["## CPU bf16 autocast vs float32", "",
                  f"- Dice bf16: {summary(r['dice'] for r in rows16 if r['group'] != 'wrong-references')}",
                  f"- |Dice change| per case: max {max(diffs):.5f}, mean {statistics.mean(diffs):.5f}",
                  f"- network seconds over all references: fp32 {net32:.1f}, bf16 {net16:.1f}", ""]
    print("\n".join(lines))
    if (args.skip_full_size or args.ct_slices) and args.results is None:  # a partial run keeps the full table
        return
    results.mkdir(parents=True, exist_ok=True)
    (results / "infer.json").write_text(json.dumps(report, indent=1, default=float))
    (results / "infer.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {results / 'infer.md'}")


if __name__ == "__main__":
    main()
