"""Benchmark `lungct.ct.densitometry.lung_statistics`: seconds on a full-size scan, numbers on copdgene-ct64.

Run by hand (not a test); writes benchmarks/results/densitometry.md:

    python benchmarks/densitometry.py [--runs 7]

The full-size scan is synthetic: 512 x 512 x 300 int16 at 0.7 x 0.7 x 1 mm, a soft-tissue body with ribs,
air outside, and two ellipsoidal lungs of about 3 L each (lung ~-860 HU with 60 HU noise, emphysema-like
patches at ~-970 HU, vessels at ~+40 HU). Budget: lung_statistics adds <= 1 s (median) on 2 cores.
copdgene-ct64 uses its reference mask (lungs-lr.nii.gz), so the numbers do not depend on the segmenter.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))

from lungct.ct.densitometry import densitometry_checks, lung_statistics  # noqa: E402

SHAPE, SPACING = (512, 512, 300), (0.7, 0.7, 1.0)
# Approximate published values for orientation only (see docs/densitometry.md for the sources and caveats).
REFERENCE_RANGES = [
    ("%LAA-950 (inspiratory)", "smokers without COPD (GOLD 0): median ~1-2 %; GOLD 1-2: ~4-9 %; "
                               "GOLD 3: ~15-20 %; GOLD 4: ~25-30 %; >= 5 % is the usual 'CT emphysema' cut-off",
     "COPDGene baseline reports (approximate)"),
    ("Perc15 (inspiratory)", "smokers without airflow limitation ~-910 HU, mild COPD ~-920 HU; "
                             "severe emphysema below ~-960 HU",
     "NELSON (Mohamed Hoesein 2013); AATD studies (Parr 2008) (approximate)"),
    ("%LAA-856 (expiratory)", "GOLD 0: ~10-15 %; GOLD 4: ~50-65 % (not meaningful on an inspiratory scan)",
     "COPDGene baseline reports (approximate)"),
    ("%HAA (-600..-250)", "healthy never-smokers: median 4.3 % (range 2.7-17.8 %)",
     "MESA, Easthausen 2020 (Respirology)"),
    ("lung volume (inspiratory)", "~5-6.5 L in COPDGene, larger with hyperinflation",
     "COPDGene (approximate)"),
]


def synthetic_scan(seed: int = 0):
    """int16 HU, uint8 labels (1 right, 2 left) and an LPS-stored-like RAS affine of a 512^2 x 300 chest."""
    rng = np.random.default_rng(seed)
    x = (np.arange(SHAPE[0], dtype=np.float32) - 255.5) * SPACING[0]
    y = (np.arange(SHAPE[1], dtype=np.float32) - 255.5) * SPACING[1]
    z = (np.arange(SHAPE[2], dtype=np.float32) - 149.5) * SPACING[2]
    labels = np.zeros(SHAPE, np.uint8)
    hu = np.full(SHAPE, -1000, np.int16)
    body = (x[:, None] / 165) ** 2 + (y[None, :] / 120) ** 2
    hu[body <= 1] = 40
    hu[(body > 0.85) & (body <= 0.92)] = 700  # a rib-cage ring
    for centre, value in ((-75.0, 1), (75.0, 2)):  # array x < 0 is world +x (patient's right) with this affine
        r = ((x[:, None, None] - centre) / 62) ** 2 + ((y[None, :, None] - 5) / 92) ** 2 + ((z[None, None, :] + 5) / 125) ** 2
        labels[r <= 1] = value
    lung = labels > 0
    noise = rng.standard_normal(int(lung.sum()), dtype=np.float32) * 60 - 860
    patches = rng.random(noise.size, dtype=np.float32)
    noise[patches < 0.06] -= 110  # emphysema-like
    noise[patches > 0.98] = 40  # vessels
    hu[lung] = np.clip(noise, -1024, 3071).astype(np.int16)
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])  # stored as LPS usually is
    affine[:3, 3] = (255.5 * SPACING[0], 255.5 * SPACING[1], -149.5 * SPACING[2])
    return hu, labels, affine


def timed(fn, runs: int) -> list[float]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return seconds


def copdgene_section() -> list[str]:
    folder = DATA / "ct-volumes" / "copdgene-ct64"
    if not (folder / "image.nrrd").is_file():
        return [f"copdgene-ct64 not available ({folder} is missing)."]
    from lungct.io import load_scan

    scan, mask = load_scan(folder / "image.nrrd"), load_scan(folder / "lungs-lr.nii.gz")
    assert scan.array.shape == mask.array.shape and np.allclose(scan.affine, mask.affine, atol=1e-3)
    stats = lung_statistics(scan.array, mask.array, scan.affine)
    spacing = np.linalg.norm(scan.affine[:3, :3], axis=0)
    try:  # the preprocessing chain's calibration estimate (air outside the body), with its 50 HU tolerance
        from lungct.ct.transforms.intensity import estimate_calibration

        air = estimate_calibration(scan.array)["air"]
        status = None if air is None else "ok" if abs(air + 1000) <= 50 else "miscalibrated"
    except ImportError:
        air, status = None, None
    refusal, warnings = densitometry_checks(status, False, float(spacing[2]), None)
    warnings = ([f"refused: {refusal}"] if refusal else []) + warnings
    cols = ("volume_ml", "mass_g", "mean_hu", "sd_hu", "perc15_hu", "laa950_pct", "laa910_pct", "laa856_pct",
            "haa_pct", "dense_ml")
    lines = [f"{scan.array.shape[0]}×{scan.array.shape[1]}×{scan.array.shape[2]}, spacing "
             f"{' × '.join(f'{s:.2f}' for s in spacing)} mm, reference mask `lungs-lr.nii.gz`.", "",
             "| lung | region | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for row in stats.rows:
        if row["region"] == "whole" or row["lung"] == "both":
            lines.append(f"| {row['lung']} | {row['region']} | "
                         + " | ".join(f"{row[c]:.1f}" if "pct" not in c else f"{row[c]:.2f}" for c in cols) + " |")
    both = stats.row("both")
    lines += ["", f"HU calibration: air outside the body reads {air} HU ({status}). "
                  "Checks: " + ("; ".join(warnings) or "none"), "",
              f"Against the published ranges below, %LAA-950 {both['laa950_pct']:.1f} % and Perc15 "
              f"{both['perc15_hu']:.0f} HU fall where severe (GOLD 3-4) emphysema is reported. The volume was "
              "downsampled to ~4 mm, which averages small low-attenuation areas away (a thin-slice original "
              "would likely read higher), so these numbers check the code; they do not describe the subject."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    started = time.perf_counter()
    hu, labels, affine = synthetic_scan()
    made = time.perf_counter() - started
    lung_statistics(hu, labels, affine)  # warm-up (imports, page faults)
    int16 = timed(lambda: lung_statistics(hu, labels, affine), args.runs)
    whole = timed(lambda: lung_statistics(hu, labels, affine, regions=False), max(3, args.runs // 2))
    hu32 = hu.astype(np.float32) * np.float32(1.003) + np.float32(0.4)  # non-integer, like recalibrated HU
    float32 = timed(lambda: lung_statistics(hu32, labels, affine), max(3, args.runs // 2))
    stats = lung_statistics(hu, labels, affine)
    both = stats.row("both")
    lines = ["# Lung densitometry benchmark", "",
             f"{os.cpu_count()} CPU cores (shared), Python {platform.python_version()}, numpy {np.__version__}, "
             f"{datetime.now():%Y-%m-%d %H:%M}.", "",
             "## Speed: synthetic 512×512×300 int16 scan at 0.7×0.7×1 mm", "",
             f"Lungs {stats.row('right_lung')['volume_ml']:.0f} + {stats.row('left_lung')['volume_ml']:.0f} mL "
             f"({both['voxels']:,} voxels); made in {made:.1f} s (not timed).", "",
             "| call | median seconds | min | max | runs |", "|---|---|---|---|---|"]
    for name, secs in (("lung_statistics (int16, all regions)", int16),
                       ("lung_statistics (int16, whole lungs only)", whole),
                       ("lung_statistics (non-integer float32 HU, all regions)", float32)):
        lines.append(f"| {name} | {statistics.median(secs):.3f} | {min(secs):.3f} | {max(secs):.3f} | {len(secs)} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines += ["", f"Load average while measuring: {load:.1f} on {os.cpu_count()} cores (the machine is shared).",
              "", f"Budget: <= 1 s added per scan (median, int16). Both lungs: mean {both['mean_hu']:.1f} HU, "
                  f"Perc15 {both['perc15_hu']:.0f} HU, %LAA-950 {both['laa950_pct']:.2f} %.", "",
              "## copdgene-ct64 (reference mask)", "", *copdgene_section(), "",
              "## Published ranges (approximate; for orientation, not for diagnosis)", "",
              "| index | reported values | source |", "|---|---|---|",
              *(f"| {a} | {b} | {c} |" for a, b, c in REFERENCE_RANGES), ""]
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "densitometry.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
