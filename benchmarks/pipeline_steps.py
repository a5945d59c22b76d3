"""What each recorded post-processing step of the CT model does, measured by leaving it out: on the shared
volumes with references (Dice of `lungs` and `aerated`), the lesion-free ones (the dense part, `lungs`
minus `aerated`, in mL) and the two real tumours (share inside `lungs`), with the shipped model as it is
and with one step removed at a time. docs/conventions.md quotes the table.

Run by hand (not a test); writes pipeline-steps.md and pipeline-steps.json into --results:

    python benchmarks/pipeline_steps.py [--model ct-lungs] [--results benchmarks/results]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


from lungct.ct.segmenter import CTSegmenter
from lungct.evaluate import read_labels
from lungct.geometry import voxel_ml
from lungct.io import load_scan
from lungct.metrics import overlap

ROOT = Path(__file__).resolve().parents[1]
VOLUMES = ROOT.parent / "shared" / "data" / "ct-volumes"
CASES = {  # case -> (scan, reference lungs or None, tumour or None)
    "imlab-id001": ("image.nii.gz", "lungs.nii.gz", None),
    "imlab-id002": ("image.nii.gz", "lungs.nii.gz", None),
    "copdgene-ct64": ("image.nrrd", "lungs.nrrd", None),
    "chest-cta": ("image.nii.gz", None, None),
    "radiomics-lung1": ("image.nrrd", None, "tumour.nrrd"),
    "radiomics-lung2": ("image.nrrd", None, "tumour.nrrd"),
}
REMOVABLE = ("roi", "gas_outside_lungs", "main_components", "fill_holes_2d", "lesion_decision")


def without(model: str, step: str | None) -> CTSegmenter:
    """The shipped segmenter, or one that skips `step` (the rest as recorded)."""
    segmenter = CTSegmenter.load(model, statistics=False)
    if step is None:
        return segmenter
    segmenter.pipeline = segmenter.pipeline.without(step)
    if step == "roi":
        segmenter.roi = False
    elif step == "main_components":
        segmenter.min_component_fraction = None
    elif step == "lesion_decision":
        segmenter.decision = None
    return segmenter


def score(segmenter: CTSegmenter, case: str) -> dict:
    image, reference, tumour = CASES[case]
    scan = load_scan(VOLUMES / case / image)
    conventions = segmenter.segment(scan).conventions
    lungs, aerated = conventions.lungs > 0, conventions.aerated > 0
    row = {"dense_ml": round(float((lungs & ~aerated).sum() * voxel_ml(scan.affine)), 1)}
    if reference:
        truth = read_labels(VOLUMES / case / reference)[0] > 0
        row["lungs_dice"] = round(overlap(lungs, truth)["dice"], 4)
        row["aerated_dice"] = round(overlap(aerated, truth)["dice"], 4)
    if tumour:
        inside = load_scan(VOLUMES / case / tumour).array > 0
        row["tumour_in_lungs"] = round(float(lungs[inside].mean()), 3)
    return row


def write(table: dict, model: str, results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / "pipeline-steps.json").write_text(json.dumps({"model": model, "rows": table}, indent=1) + "\n")
    lines = [f"# Each post-processing step left out ({model})", "",
             "Dice against the aerated references (`lungs` / `aerated`), the dense part in mL, the tumours' "
             "share inside `lungs`.", "",
             "| left out | " + " | ".join(CASES) + " |", "|---" * (len(CASES) + 1) + "|"]
    for variant, rows in table.items():
        cells = []
        for case in CASES:
            row = rows[case]
            text = f"{row['dense_ml']} mL"
            if "lungs_dice" in row:
                text = f"{row['lungs_dice']:.4f} / {row['aerated_dice']:.4f}, " + text
            if "tumour_in_lungs" in row:
                text = f"{100 * row['tumour_in_lungs']:.1f} % in, " + text
            cells.append(text)
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    (results / "pipeline-steps.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ct-lungs")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if not VOLUMES.is_dir():
        raise SystemExit(f"error: {VOLUMES}: the shared volumes are missing")
    table = {}
    for step in (None, *REMOVABLE):
        segmenter = without(args.model, step)
        variant = step or "nothing (as shipped)"
        table[variant] = {case: score(segmenter, case) for case in CASES}
        print(variant, json.dumps(table[variant]), flush=True)
    write(table, args.model, args.results)


if __name__ == "__main__":
    main()
