"""Retrain lungct's default CT model (lungct/weights/ct-lungs-2d.pt) from ../shared/data, from scratch.

The whole loop, as the model card describes it:
 1. preprocess the shared CTs (volumes and the ct-slices) with `--recalibrate` at 1.5 mm;
 2. write the training labels on each scan's own grid: the manual masks where the data has them (ct-slices,
    imlab, copdgene), split into right (1) and left (2) by the chain's own right/left labels, else the
    chain's labels; `lungct train --labels` carries them onto the preprocessed grid;
 3. `lungct train --dim 2d --config ct-default-2d`: lesions painted into the lungs of half the training
    slices and labelled as lung (the lesion-inclusive convention), imlab-id001/id002 and 21 ct-slices held
    out; validation runs the shipped inference on the original scans;
 4. `lungct train --config ct-default-2d-finetune --init run/best.pt`: 12 more epochs from those weights with
    lesions in 80 % of the slices at a quarter of the learning rate (the lesion-inclusive convention learned
    harder; lungct/weights/ct-lungs-2d.md has the before/after);
 5. copy the second stage's best checkpoint into lungct/weights/.
radiomics-lung1/2 (the two real tumours) are left out of training: they are the held-out tumour check.

    python examples/train_default_ct_model.py work/ [--skip-prep] [--stages 1|2] [--train-args "--epochs 2"] [--no-install]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
VOLUMES = {  # case -> (scan, manual reference or None)
    "imlab-id001": ("ct-volumes/imlab-id001/image.nii.gz", "ct-volumes/imlab-id001/lungs.nii.gz"),
    "imlab-id002": ("ct-volumes/imlab-id002/image.nii.gz", "ct-volumes/imlab-id002/lungs.nii.gz"),
    "copdgene-ct64": ("ct-volumes/copdgene-ct64/image.nrrd", "ct-volumes/copdgene-ct64/lungs-lr.nii.gz"),
    "chest-cta": ("ct-volumes/chest-cta/image.nii.gz", None),
    "abdomen-couch": ("ct-volumes/abdomen-couch/dicom", None),
}
PREP_OVERRIDES = ["--recalibrate", "--set", "Resampled.spacing_mm=1.5"]


def right_left(manual: np.ndarray, chain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Manual binary lungs split into right (1) / left (2): each voxel takes the nearest chain label;
    without chain labels, the side of the mask's own centre along world x (RAS: the right lung at +x)."""
    out = np.zeros(manual.shape, np.uint8)
    if not manual.any():
        return out
    if chain.any():
        _, nearest = ndi.distance_transform_edt(chain == 0, return_indices=True)
        out[manual] = chain[tuple(index[manual] for index in nearest)]
        return out
    index = np.stack(np.nonzero(manual), axis=1)
    x_world = index @ affine[0, :3] + affine[0, 3]
    out[manual] = np.where(x_world >= x_world.mean(), 1, 2)
    return out


def write_labels(case: str, manual_path: Path | None, prep: Path, labels: Path) -> None:
    """labels/<case>.nii.gz on the scan's own grid: the manual mask split right/left, or the chain's."""
    from lungct.evaluate import read_labels
    from lungct.io.volumes import write_nifti

    chain, affine = read_labels(prep / case / "lungs-native.nii.gz")
    target = labels / f"{case}.nii.gz"
    if manual_path is None:
        write_nifti(target, chain, affine, dtype=np.uint8)
        return
    manual, manual_affine = read_labels(manual_path)
    if manual.shape != chain.shape or not np.allclose(manual_affine, affine, atol=1e-3):
        raise SystemExit(f"error: {manual_path}: not on the grid of {case}'s scan")
    split = manual if manual.max() == 2 else right_left(manual > 0, chain, affine)
    write_nifti(target, split, manual_affine, dtype=np.uint8)


def prepare(work: Path) -> tuple[Path, Path]:
    prep, scans, labels = work / "prep", work / "scans", work / "labels"
    for folder in (scans, labels):
        folder.mkdir(parents=True, exist_ok=True)
    for case, (scan, _) in VOLUMES.items():  # the volumes under their case names
        link = scans / (case + "".join(Path(scan).suffixes) if Path(scan).suffix else case)
        if not link.exists():
            link.symlink_to(DATA / scan)
    subprocess.run([sys.executable, "-m", "lungct", "preprocess", str(scans), str(DATA / "ct-slices/images"),
                    "-o", str(prep), "--quiet", *PREP_OVERRIDES], check=False)
    for case, (_, manual) in VOLUMES.items():
        write_labels(case, DATA / manual if manual else None, prep, labels)
    for image in sorted((DATA / "ct-slices/images").glob("*.nii.gz")):
        write_labels(image.name[:-7], DATA / "ct-slices/masks" / image.name, prep, labels)
    return prep, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="working folder for the preprocessed data, labels and the run")
    parser.add_argument("--skip-prep", action="store_true", help="reuse work/prep and work/labels")
    parser.add_argument("--train-args", default="", help="extra arguments for `lungct train`")
    parser.add_argument("--stages", type=int, choices=(1, 2), default=2, help="1: the first stage only")
    parser.add_argument("--no-install", action="store_true", help="leave lungct/weights/ct-lungs-2d.pt alone")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"error: {DATA}: the shared data folder is missing")
    prep, labels = (args.work / "prep", args.work / "labels") if args.skip_prep else prepare(args.work)
    stages = [("ct-default-2d", args.work / "run", []),
              ("ct-default-2d-finetune", args.work / "run-finetune", ["--init", str(args.work / "run" / "best.pt")])]
    for recipe, run, extra in stages[:args.stages]:
        command = [sys.executable, "-m", "lungct", "train", "--dim", "2d", "--data", str(prep), "--labels", str(labels),
                   "--config", recipe, "-o", str(run), *extra, *args.train_args.split()]
        print("+", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    if not args.no_install:
        best, target = stages[args.stages - 1][1] / "best.pt", ROOT / "lungct" / "weights" / "ct-lungs-2d.pt"
        shutil.copy2(best, target)
        print(f"copied {best} -> {target}")

if __name__ == "__main__":
    main()
