"""Train lungct's tumour model (lungct/weights/ct-tumour-2d.pt) on tumours painted into the shared CTs, and
check it on the only two real NSCLC tumours there are (radiomics-lung1/2, never used in training).

No public tumour CT set beyond those two can be had here, so the training set is made: tumours of 8-60 mm
(lobulated, spiculated, textured soft tissue, most against the pleura, the spine, the mediastinum or the
diaphragm; lungct/ct/lesions/) painted into the shared volumes and slices at their own resolution,
their masks written on the same grids. Then the NSCLC pipeline's second stage: `lungct train --config
train-2d-tumour` (lung ROI, image masked outside it), `lungct infer --model ct-lungs-2d --model <tumour>` on
the real cases, and Dice, volume, diameter and false-positive volume against their tumour labels.

    python examples/train_tumour_model.py work/ [--variants 4] [--train-args "--epochs 2"] [--install]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
VOLUMES = {  # name -> (scan, lung labels or None for the classical chain's)
    "imlab-id001": ("ct-volumes/imlab-id001/image.nii.gz", "ct-volumes/imlab-id001/lungs.nii.gz"),
    "imlab-id002": ("ct-volumes/imlab-id002/image.nii.gz", "ct-volumes/imlab-id002/lungs.nii.gz"),
    "copdgene-ct64": ("ct-volumes/copdgene-ct64/image.nrrd", "ct-volumes/copdgene-ct64/lungs-lr.nii.gz"),
    "chest-cta": ("ct-volumes/chest-cta/image.nii.gz", None),
}
REAL = ("radiomics-lung1", "radiomics-lung2")


def paint(array_hu: np.ndarray, lungs: np.ndarray, affine: np.ndarray, seed: int):
    """(image with tumours, tumour mask), tumours only (no consolidation, no effusion)."""
    from lungct.ct.lesions import LesionParams, orientation_hints, synthesize_lesions
    from lungct.geometry import voxel_spacing

    params = LesionParams(tumour_prob=1.0, effusion_prob=0.0, count_probs=(0.0, 0.45, 0.35, 0.2))
    posterior, inferior = orientation_hints(affine)
    flat = array_hu.shape[2] == 1
    hints = {"posterior_hint": posterior[:2]} if flat else {"posterior_hint": posterior, "inferior_hint": inferior}
    image, _, mask = synthesize_lesions(array_hu[..., 0] if flat else array_hu, lungs[..., 0] if flat else lungs,
                                        voxel_spacing(affine)[:2] if flat else voxel_spacing(affine),
                                        np.random.default_rng(seed), params, **hints)
    return (image[..., None], mask[..., None]) if flat else (image, mask)


def make_training_set(work: Path, variants: int) -> tuple[Path, Path]:
    """scans/ and tumours/ (masks on each scan's own grid): every shared volume `variants` times, every
    ct-slice once; uncalibrated slices are painted in HU and stored back in their own units."""
    from lungct.ct.transforms.intensity import estimate_calibration
    from lungct.ct.transforms.lungs import segment_lungs
    from lungct.evaluate import read_labels
    from lungct.io import load_scan
    from lungct.io.volumes import write_nifti

    scans, tumours = work / "scans", work / "tumours"
    for folder in (scans, tumours):
        folder.mkdir(parents=True, exist_ok=True)
    sources = [(name, DATA / scan, DATA / labels if labels else None, variants)
               for name, (scan, labels) in VOLUMES.items()]
    sources += [(p.name[:-7], p, DATA / "ct-slices/masks" / p.name, 1)
                for p in sorted((DATA / "ct-slices/images").glob("*.nii.gz"))]
    seed = 0
    for name, scan_path, labels_path, count in sources:
        if (tumours / f"{name}-v{count - 1}.nii.gz").exists():
            seed += count
            continue
        scan = load_scan(scan_path)
        lungs = read_labels(labels_path)[0] if labels_path else segment_lungs(scan.array, scan.affine)[0]
        slope, intercept = 1.0, 0.0
        calibration = estimate_calibration(scan.array)
        if calibration.get("air") is not None and abs(calibration["air"] + 1000) > 50 and calibration.get("tissue"):
            slope = 1040.0 / (calibration["tissue"] - calibration["air"])  # air -> -1000, soft tissue -> 40
            intercept = -1000.0 - slope * calibration["air"]
        hu = scan.array.astype(np.float32) * slope + intercept
        for k in range(count):
            image, mask = paint(hu, lungs.astype(np.uint8), scan.affine, seed)
            seed += 1
            stored = np.round((image - intercept) / slope).astype(np.int16)
            write_nifti(scans / f"{name}-v{k}.nii.gz", stored, scan.affine, dtype=np.int16)
            write_nifti(tumours / f"{name}-v{k}.nii.gz", mask.astype(np.uint8), scan.affine, dtype=np.uint8)
    return scans, tumours


def check_on_real_tumours(work: Path, model: Path) -> list[dict]:
    """Lungs + tumour on radiomics-lung1/2; Dice, volume and diameter error, false-positive volume."""
    from lungct.ct.tumours import describe_tumours
    from lungct.evaluate import read_labels
    from lungct.metrics import overlap

    real = work / "real"
    real.mkdir(exist_ok=True)
    for name in REAL:
        link = real / f"{name}.nrrd"
        if not link.exists():
            link.symlink_to(DATA / "ct-volumes" / name / "image.nrrd")
    subprocess.run([sys.executable, "-m", "lungct", "infer", str(real), "-o", str(work / "real-masks"), "--quiet",
                    "--overwrite", "--model", "ct-lungs-2d", "--model", str(model)], check=True)
    rows = []
    for name in REAL:
        labels, affine = read_labels(work / "real-masks" / f"{name}.nii.gz")
        truth = read_labels(DATA / "ct-volumes" / name / "tumour.nrrd")[0] > 0
        found = labels == 3
        unit = abs(np.linalg.det(affine[:3, :3])) / 1000
        true_size = describe_tumours(truth, affine)[0]
        lesions = json.loads((work / "real-masks" / f"{name}.json").read_text()).get("tumours") or []
        rows.append({"case": name, "dice": overlap(found, truth)["dice"], "true_ml": round(truth.sum() * unit, 2),
                     "found_ml": round(found.sum() * unit, 2),
                     "false_positive_ml": round((found & ~truth).sum() * unit, 2),
                     "true_diameter_mm": true_size["largest_diameter_mm"],
                     "found_diameter_mm": lesions[0]["largest_diameter_mm"] if lesions else 0.0,
                     "lesions_found": len(lesions)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("--variants", type=int, default=4, help="painted copies of each shared volume")
    parser.add_argument("--train-args", default="")
    parser.add_argument("--install", action="store_true", help="copy best.pt to lungct/weights/ct-tumour-2d.pt")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"error: {DATA}: the shared data folder is missing")
    scans, tumours = make_training_set(args.work, args.variants)
    command = [sys.executable, "-m", "lungct", "train", "--dim", "2d", "--images", str(scans), "--labels", str(tumours),
               "--config", "train-2d-tumour", "-o", str(args.work / "run"), *args.train_args.split()]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    rows = check_on_real_tumours(args.work, args.work / "run" / "best.pt")
    (args.work / "real-tumours.json").write_text(json.dumps(rows, indent=1))
    for row in rows:
        print(json.dumps(row))
    if args.install:
        shutil.copy2(args.work / "run" / "best.pt", ROOT / "lungct" / "weights" / "ct-tumour-2d.pt")


if __name__ == "__main__":
    main()
