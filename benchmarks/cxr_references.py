"""Audit the radiograph references: which manual masks include the heart shadow in the left lung field.

The shared masks (../shared/data/README.md) leave out the lung behind the heart; some Shenzhen masks do
not. Where one does, the shipped model (trained on the convention) leaves a large compact region over the
heart unlabelled that the reference labels. This lists those radiographs (the largest missed region after
a 2-pixel opening: at least 1500 pixels of the 256 x 256 image, centred in the heart's columns 135-190),
and gives the validation Dice with and without them. Run by hand; writes cxr-references.md into --results
(default benchmarks/results).

    python benchmarks/cxr_references.py [--results DIR] [--limit N]
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cxr"
RESULTS = ROOT / "benchmarks" / "results"
MIN_PIXELS, HEART_COLUMNS = 1500, (135, 190)


def heart_region_missed(reference: np.ndarray, prediction: np.ndarray) -> int:
    """Pixels of the largest reference-only region when it sits over the heart, else 0."""
    missed = ndi.binary_opening(reference & ~prediction, iterations=2)
    regions, count = ndi.label(missed)
    if not count:
        return 0
    sizes = ndi.sum(missed, regions, range(1, count + 1))
    largest = int(np.argmax(sizes))
    column = ndi.center_of_mass(regions == largest + 1)[1]
    return int(sizes[largest]) if sizes[largest] >= MIN_PIXELS and HEART_COLUMNS[0] < column < HEART_COLUMNS[1] else 0


def main() -> None:
    from lungct.engine import InferOptions, infer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for cxr-references.md")
    parser.add_argument("--limit", type=int, default=None,
                        help="only the first N radiographs of each split (a quick check; the table is partial)")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"error: {DATA}: the shared radiographs are missing")
    rows = list(csv.DictReader((DATA / "splits.csv").open()))
    if args.limit:
        rows = [r for split in ("train", "validation") for r in [r for r in rows if r["split"] == split][:args.limit]]
    options = InferOptions(models=["cxr-lungs-2d"], device="cpu", binary=True)
    found, dice = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        for row in rows:
            (images / row["file"]).symlink_to(DATA / "images" / row["file"])
        outcomes = infer([images], Path(tmp) / "masks", options, modality="cxr", overwrite=True, progress=False,
                         log=lambda m: None)
        failed = [o.reason for o in outcomes if o.status != "ok"]
        if failed:
            sys.exit(f"error: {len(failed)} radiograph(s) failed: {failed[0]}")
        for row in rows:
            reference = np.asarray(Image.open(DATA / "masks" / row["file"])) > 0
            prediction = np.asarray(Image.open(Path(tmp) / "masks" / row["file"])) > 0
            dice[row["file"]] = 2 * (reference & prediction).sum() / (reference.sum() + prediction.sum())
            if pixels := heart_region_missed(reference, prediction):
                found.append((row, pixels))
    lines = ["# Radiograph references that include the heart shadow", "",
             "Found with the shipped `cxr-lungs-2d` model by `benchmarks/cxr_references.py` (criterion in its docstring).", "",
             "| split | dataset | radiographs | references with the heart shadow |", "|---|---|---|---|"]
    for split in ("train", "validation"):
        for dataset in sorted({r["dataset"] for r in rows}):
            total = sum(r["split"] == split and r["dataset"] == dataset for r in rows)
            hits = sum(r["split"] == split and r["dataset"] == dataset for r, _ in found)
            lines.append(f"| {split} | {dataset} | {total} | {hits} |")
    validation = [r["file"] for r in rows if r["split"] == "validation"]
    flagged = {r["file"] for r, _ in found}
    for title, names in (("all validation radiographs", validation),
                         ("without the flagged references", [f for f in validation if f not in flagged])):
        values = [dice[f] for f in names]
        lines.append(f"\n- shipped model, {title}: Dice {statistics.mean(values):.4f} ± {statistics.stdev(values):.4f} "
                     f"(min {min(values):.4f}, n = {len(values)})")
    lines.append("\nFlagged: " + ", ".join(f"{r['file'][:-4]} ({r['split']}, {pixels} px, Dice {dice[r['file']]:.3f})"
                                           for r, pixels in sorted(found, key=lambda x: -x[1])))
    text = "\n".join(lines) + "\n"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "cxr-references.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
