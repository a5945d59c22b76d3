"""Look-and-check for lungct.ct.lesions: paint synthetic lesions into a real CT and draw them.

    python examples/show_synthetic_lesions.py [scan] [--out /tmp/synthetic_lesions.png] [--seed 0] [--hint]

Draws 12 axial slices: 8 synthesised slice by slice (as a 2D training sampler would), 4 cut through one
whole-volume (3D) synthesis. Window -1000..400 HU, anterior up, patient's right on the left; each lesion is
outlined in its kind's colour (tumour red, consolidation orange, effusion cyan: what turned background), the lung
labels after synthesis in thin green. Without --hint posterior and inferior are read from the anatomy.
Prints what was painted and how long it took.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lungct.ct.lesions import LesionParams, orientation_hints, synthesize_lesions  # noqa: E402
from lungct.geometry import voxel_spacing  # noqa: E402
from lungct.io import load_scan  # noqa: E402

from lungct.ct.transforms.lungs import segment_lungs  # noqa: E402

COLOURS = {"tumour": "red", "consolidation": "orange", "effusion": "cyan"}
DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "ct-volumes" / "chest-cta" / "image.nii.gz"


def lung_labels(scan, cache: Path | None):
    """Right/left lung labels on the scan's grid (segment_lungs takes a while: cache them if asked)."""
    if cache and cache.exists():
        return np.load(cache)["labels"]
    labels, _ = segment_lungs(scan.array, scan.affine)
    if cache:
        np.savez_compressed(cache, labels=labels)
    return labels


def draw(ax, image, lungs, outlines, title, view):
    """One axial slice; `view` turns an (x, y) array into display order; outlines are (kind, full-slice mask)."""
    ax.imshow(view(image), cmap="gray", vmin=-1000, vmax=400, interpolation="nearest")
    ax.contour(view(lungs > 0), levels=[0.5], colors="lime", linewidths=0.4, alpha=0.5)
    for kind, mask in outlines:
        if mask.any():
            ax.contour(view(mask), levels=[0.5], colors=COLOURS[kind], linewidths=0.7, alpha=0.8)
    ax.set_title(title, fontsize=7)
    ax.axis("off")


def slice_outlines(records, shape, k=None):
    """Full-slice masks of the records (of axial slice k for a volume's records)."""
    out = []
    for r in records:
        mask = np.zeros(shape, bool)
        if k is None:
            mask[r.box] = r.mask
        elif r.box[2].start <= k < r.box[2].stop:
            mask[r.box[:2]] = r.mask[:, :, k - r.box[2].start]
        out.append((r.kind, mask))
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scan", nargs="?", default=str(DEFAULT))
    parser.add_argument("--out", default="/tmp/synthetic_lesions.png")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--labels-cache", type=Path, default=None, help="npz to keep the lung labels in")
    parser.add_argument("--hint", action="store_true", help="posterior/inferior from the affine, not the anatomy")
    args = parser.parse_args()

    scan = load_scan(args.scan)
    image, lungs = np.asarray(scan.array, np.float32), lung_labels(scan, args.labels_cache)
    spacing = tuple(voxel_spacing(scan.affine))
    posterior, inferior = orientation_hints(scan.affine)
    hints = (posterior, inferior) if args.hint else (None, None)
    # Display: x across (patient's right on the left when x runs to the left), anterior up.
    flip_x, flip_y = (scan.affine[0, 0] > 0), posterior[1] < 0

    def view(a):
        a = a[::-1] if flip_x else a
        return (a[:, ::-1] if flip_y else a).T

    rng = np.random.default_rng(args.seed)
    area = (lungs > 0).sum(axis=(0, 1))
    ks = np.flatnonzero(area > 0.25 * area.max())
    ks = ks[np.linspace(0, len(ks) - 1, 8).round().astype(int)]
    fig, axes = plt.subplots(3, 4, figsize=(16, 10.5), dpi=110)
    times, params = [], LesionParams(count_probs=(0.0, 0.5, 0.35, 0.15))  # always something to look at
    for ax, k in zip(axes.ravel()[:8], ks):
        records, t = [], time.perf_counter()
        hint2d = None if hints[0] is None else hints[0][:2]
        img, lab, _ = synthesize_lesions(image[:, :, k], lungs[:, :, k], spacing[:2], rng, params, hint2d,
                                         records=records)
        times.append(time.perf_counter() - t)
        title = f"2D z={k}: " + ", ".join(f"{r.kind[:6]}/{r.placement[:7]}" for r in records)
        draw(ax, img, lab, slice_outlines(records, img.shape), title, view)
    records, t = [], time.perf_counter()
    img3, lab3, _ = synthesize_lesions(image, lungs, spacing, rng, LesionParams(count_probs=(0, 0, 0, 0, 1)),
                                       *hints, records=records)
    t3 = time.perf_counter() - t
    for r in records:
        print(f"3D {r.kind:13s} side {r.side} {r.placement:14s} {r.diameter_mm:5.1f} mm  "
              f"centre voxel {np.round(r.centre_mm / np.array(spacing)).astype(int)}")
    centres = [int(round(r.centre_mm[2] / spacing[2])) for r in records if r.kind != "effusion"][:4]
    for ax, k in zip(axes.ravel()[8:], centres + [int(ks[3])] * (4 - len(centres))):
        outlines = slice_outlines(records, img3.shape[:2], k)
        title = f"3D z={k}: " + ", ".join(f"{r.kind[:6]}/{r.placement[:7]}" for r, (_, m) in zip(records, outlines)
                                          if m.any())
        draw(ax, img3[:, :, k], lab3[:, :, k], outlines, title, view)
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"2D slice {image.shape[:2]}: median {1000 * np.median(times):.0f} ms, max {1000 * max(times):.0f} ms; "
          f"3D volume {image.shape}: {t3:.2f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
