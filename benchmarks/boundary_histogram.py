"""Is the lungs' HU histogram cut by the way the mask is drawn? On the full-size scan (benchmarks/fullsize.py),
the histogram of the HU inside a mask, and the step at the boundary HU: the count of the 10 HU just below
-320 over the count of the 10 HU just above (1.0: no step; a hard threshold in the boundary band gives much
more than 1).

    python benchmarks/boundary_histogram.py MASK [MASK ...] --labels before after --plot docs/boundary-histogram.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fullsize import make_full_size  # noqa: E402

from lungct.evaluate import read_labels  # noqa: E402
from lungct.io import load_scan  # noqa: E402

BOUNDARY_HU = -320


def histogram(hu: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Voxel counts per HU from -1100 to 200 (1-HU bins) inside the mask."""
    values = np.round(hu[mask]).astype(int)
    return np.bincount(np.clip(values + 1100, 0, 1300), minlength=1301)


def step(counts: np.ndarray, at: int = BOUNDARY_HU, width: int = 10) -> float:
    below = counts[at + 1100 - width: at + 1100].sum()
    above = counts[at + 1100: at + 1100 + width].sum()
    return float(below / max(above, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("masks", nargs="+", type=Path)
    parser.add_argument("--labels", nargs="+")
    parser.add_argument("--scan", type=Path, default=None, help="default: the full-size scan (made once)")
    parser.add_argument("--plot", type=Path, default=None)
    args = parser.parse_args()
    scan = load_scan(args.scan or make_full_size(Path("/tmp")))
    labels = args.labels or [m.name for m in args.masks]
    curves = {}
    for name, path in zip(labels, args.masks):
        counts = histogram(scan.array, read_labels(path)[0] > 0)
        curves[name] = counts
        print(f"{name}: {counts.sum()} voxels, step at {BOUNDARY_HU} HU (10 HU below / above): {step(counts):.2f}")
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(8, 3.5))
        hu = np.arange(-1100, 201)
        for name, counts in curves.items():
            axis.plot(hu, counts / counts.sum() * 100, label=f"{name} (step {step(counts):.2f})", lw=1)
        axis.axvline(BOUNDARY_HU, color="grey", ls=":", lw=1)
        axis.set_xlim(-1000, 0)
        axis.set_yscale("log")
        axis.set_xlabel("HU")
        axis.set_ylabel("% of lung voxels per HU")
        axis.legend()
        figure.tight_layout()
        figure.savefig(args.plot, dpi=100)


if __name__ == "__main__":
    main()
