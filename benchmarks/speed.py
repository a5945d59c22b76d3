"""Whole-process speed of lungct on a full-size chest CT, side by side with the I/O floor and the textbook
threshold recipe, in one run: medians and peak RSS of every command, and the ratios.

Run by hand (not a test); writes benchmarks/results/speed.md and speed.json (or --results DIR):

    python benchmarks/speed.py                  # 3 runs of each command, a 10-scan folder once
    python benchmarks/speed.py --runs 5 --folder 10

Commands, each a fresh process (start-up, imports and model loading included):
- `lungct --help`;
- `lungct infer full-size.nii.gz -o mask.nii.gz` (the shipped CT model), with `--precision bf16` (fast only
  on CPUs with native bf16) and with `--no-statistics`;
- `lungct infer folder/ -o masks/` on a folder of N copies of the scan (seconds per scan);
- `lungct preprocess full-size.nii.gz -o prep/`;
- the I/O floor: SimpleITK read, one threshold, gzip write;
- the textbook recipe: read, air < -320 HU, border air removed, two largest components, holes filled, write.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
FLOOR = """
import sys, SimpleITK as sitk
image = sitk.ReadImage(sys.argv[1])
sitk.WriteImage(sitk.Cast(image < -320, sitk.sitkUInt8), sys.argv[2], True)
"""
TEXTBOOK = """
import sys, numpy as np, SimpleITK as sitk
from scipy import ndimage as ndi
image = sitk.ReadImage(sys.argv[1])
air = sitk.GetArrayViewFromImage(image) < -320
labels, count = ndi.label(air)
border = np.unique(np.concatenate([labels[0].ravel(), labels[-1].ravel(), labels[:, 0].ravel(),
                                   labels[:, -1].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel()]))
sizes = np.bincount(labels.ravel()); sizes[border] = 0; sizes[0] = 0
keep = np.argsort(sizes)[::-1][:2]
lungs = np.isin(labels, keep[sizes[keep] > 0])
for k in range(lungs.shape[0]):
    lungs[k] = ndi.binary_fill_holes(lungs[k])
out = sitk.GetImageFromArray(lungs.astype(np.uint8)); out.CopyInformation(image)
sitk.WriteImage(out, sys.argv[2], True)
"""


def timed(command: list[str], cleanup=None) -> dict:
    """Wall seconds and peak RSS (GB) of one fresh process."""
    if cleanup:
        cleanup()
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    error = process.stderr.read().decode()[-500:]
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{error}")
    return {"seconds": seconds, "peak_rss_gb": usage.ru_maxrss / 1024 ** 2}


def median_of(command, runs: int, cleanup=None) -> dict:
    rows = [timed(command, cleanup) for _ in range(runs)]
    return {"runs": rows, "seconds": statistics.median(r["seconds"] for r in rows),
            "peak_rss_gb": max(r["peak_rss_gb"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--folder", type=int, default=10, help="scans in the folder run (0: skip)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    lungct = [sys.executable, "-m", "lungct"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # made in a child process: a child inherits its parent's peak RSS at fork, so a parent that built the
        # scan itself would lift every figure below to its own ~0.9 GB
        subprocess.run([sys.executable, "-c", "import sys; from fullsize import make_full_size; "
                        "make_full_size(sys.argv[1])", str(tmp)], cwd=Path(__file__).parent, check=True)
        scan = Path(tmp) / "full-size.nii.gz"
        mask, prep = tmp / "mask.nii.gz", tmp / "prep"

        def clean_mask():
            for path in tmp.glob("mask*"):
                path.unlink()

        rows = {
            "help": median_of(lungct + ["--help"], args.runs),
            "floor": median_of([sys.executable, "-c", FLOOR, str(scan), str(mask)], args.runs, clean_mask),
            "textbook": median_of([sys.executable, "-c", TEXTBOOK, str(scan), str(mask)], args.runs, clean_mask),
            "infer": median_of(lungct + ["infer", str(scan), "-o", str(mask), "--quiet"], args.runs, clean_mask),
            "infer_bf16": median_of(lungct + ["infer", str(scan), "-o", str(mask), "--quiet", "--precision", "bf16"],
                                    args.runs, clean_mask),
            "infer_no_statistics": median_of(lungct + ["infer", str(scan), "-o", str(mask), "--quiet", "--no-statistics"],
                                             args.runs, clean_mask),
            "preprocess": median_of(lungct + ["preprocess", str(scan), "-o", str(prep), "--quiet"], args.runs,
                                    lambda: shutil.rmtree(prep, ignore_errors=True)),
        }
        subprocess.run(lungct + ["infer", str(scan), "-o", str(mask), "--quiet", "--overwrite"], check=True)
        record = json.loads(mask.with_name("mask.json").read_text())
        if args.folder:
            folder = tmp / "folder"
            folder.mkdir()
            for k in range(args.folder):
                (folder / f"scan{k:02d}.nii.gz").symlink_to(scan)
            run = timed(lungct + ["infer", str(folder), "-o", str(tmp / "masks"), "--quiet"])
            rows["folder"] = {**run, "scans": args.folder, "seconds_per_scan": run["seconds"] / args.folder}
    report = {"machine": f"{os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows,
              "steps_s": record["timings_s"], "shape": record["input"]["shape"]}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "speed.json").write_text(json.dumps(report, indent=1))
    floor = rows["floor"]["seconds"]
    lines = ["# lungct speed on a full-size chest CT", "",
             f"{report['machine']}, {report['date']}; scan {'×'.join(map(str, report['shape']))} (chest-cta at "
             "0.7×0.7×1 mm); every command a fresh process, start-up included; medians of "
             f"{args.runs} runs.", "",
             "| command | median s | × I/O floor | peak RSS GB | target |", "|---|---|---|---|---|"]
    targets = {"infer": "≤ 10 s, ≤ 7× floor, ≤ 2 GB", "preprocess": "≤ 10 s", "help": "well under 1 s"}
    for name, row in rows.items():
        if name == "folder":
            continue
        lines.append(f"| {name} | {row['seconds']:.2f} | {row['seconds'] / floor:.1f} | {row['peak_rss_gb']:.2f} | "
                     f"{targets.get(name, '')} |")
    if "folder" in rows:
        f = rows["folder"]
        lines += ["", f"A folder of {f['scans']} full-size scans: {f['seconds']:.1f} s, {f['seconds_per_scan']:.2f} s "
                  f"per scan (target ≤ 8 s), peak RSS {f['peak_rss_gb']:.2f} GB."]
    lines += ["", "Steps of one `lungct infer` run (seconds, from its sidecar): " +
              ", ".join(f"{k} {v:.2f}" for k, v in record["timings_s"].items()), ""]
    (args.results / "speed.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
