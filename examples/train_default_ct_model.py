"""Retrain lungct's default CT model (lungct/weights/ct-lungs-2d.pt) from ../shared/data.

The whole loop, as the model card describes it:
 1. preprocess every shared CT (volumes and the 205 ct-slices) with `--recalibrate` at 1.5 mm;
 2. replace the chain's labels by the manual masks where the data has them (ct-slices, imlab, copdgene),
    split into right (1) and left (2) with the chain's own right/left labels as a guide;
 3. `lungct train --dim 2d --config ct-default-2d` with the held-out cases as validation;
 4. evaluate on the held-out volumes and copy the best checkpoint into lungct/weights/.

    python examples/train_default_ct_model.py work/ [--epochs N] [--skip-prep]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
VOLUMES = {  # case -> (scan, manual reference or None)
    "imlab-id001": ("ct-volumes/imlab-id001/image.nii.gz", "ct-volumes/imlab-id001/lungs.nii.gz"),
    "imlab-id002": ("ct-volumes/imlab-id002/image.nii.gz", "ct-volumes/imlab-id002/lungs.nii.gz"),
    "copdgene-ct64": ("ct-volumes/copdgene-ct64/image.nrrd", "ct-volumes/copdgene-ct64/lungs-lr.nii.gz"),
    "radiomics-lung1": ("ct-volumes/radiomics-lung1/image.nrrd", None),
    "radiomics-lung2": ("ct-volumes/radiomics-lung2/image.nrrd", None),
    "chest-cta": ("ct-volumes/chest-cta/image.nii.gz", None),
    "abdomen-couch": ("ct-volumes/abdomen-couch/dicom", None),
}
PREP_OVERRIDES = ["--recalibrate", "--set", "Resampled.spacing_mm=1.5"]
# ct-slices whose reference is wrong (checked by eye): outside-body air included, or a whole lung missing.
EXCLUDED = ["ID_0254_Z_0075", "ID_0052_Z_0108", "ID_0134_Z_0137", "ID_0079_Z_0072"]


def right_left(manual: np.ndarray, chain: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Manual binary lungs split into right (1) / left (2): each voxel takes the nearest chain label;
    without chain labels, the side of the mask's own centre along RAS x."""
    out = np.zeros(manual.shape, np.uint8)
    if not manual.any():
        return out
    if chain.any():
        _, nearest = ndi.distance_transform_edt(chain == 0, return_indices=True)
        out[manual] = chain[tuple(index[manual] for index in nearest)]
        return out
    x_world = affine[0, 0] * np.arange(manual.shape[0])  # RAS grid: x grows to the patient's left
    centre = x_world[np.nonzero(manual)[0]].mean()
    side = np.where(x_world[:, None, None] < centre, 1, 2)
    out[manual] = np.broadcast_to(side, manual.shape)[manual]
    return out


def relabel(case_dir: Path, manual_path: Path) -> None:
    """Put the manual mask, on the case's grid and split right/left, into lungs.nii.gz."""
    from lungct.io import load_scan
    from lungct.io.volumes import write_nifti
    from lungct.transforms.geometry import labels_to_grid

    labels_img = nib.load(case_dir / "lungs.nii.gz")
    chain = np.asarray(labels_img.dataobj).astype(np.uint8)
    reference = load_scan(manual_path)
    manual = labels_to_grid((reference.array > 0).astype(np.uint8), reference.affine, chain.shape, labels_img.affine) > 0
    if reference.array.max() == 2:  # already right/left
        split = labels_to_grid(reference.array.astype(np.uint8), reference.affine, chain.shape, labels_img.affine)
    else:
        split = right_left(manual, chain, labels_img.affine)
    write_nifti(case_dir / "lungs.nii.gz", split, labels_img.affine, dtype=np.uint8)
    record = json.loads((case_dir / "case.json").read_text())
    record["training_labels"] = {"source": str(manual_path), "right_left": "as given" if reference.array.max() == 2
                                 else "split by nearest chain label"}
    (case_dir / "case.json").write_text(json.dumps(record, indent=1))


def prepare(work: Path) -> Path:
    prep = work / "prep"
    scans = work / "scans"
    scans.mkdir(parents=True, exist_ok=True)
    for case, (scan, _) in VOLUMES.items():  # link the volumes under their case names
        link = scans / (case + "".join(Path(scan).suffixes) if Path(scan).suffix else case)
        if not link.exists():
            link.symlink_to(DATA / scan)
    links = [scans, DATA / "ct-slices/images"]
    subprocess.run([sys.executable, "-m", "lungct", "preprocess", *map(str, links), "-o", str(prep), "--quiet",
                    *PREP_OVERRIDES], check=False)
    for case, (_, manual) in VOLUMES.items():
        if manual and not (prep / case / ".relabelled").exists():
            relabel(prep / case, DATA / manual)
            (prep / case / ".relabelled").touch()
    for name in EXCLUDED:  # kept out of training and validation
        if (prep / name).is_dir():
            shutil.move(prep / name, work / f"excluded-{name}")
    for image in sorted((DATA / "ct-slices/images").glob("*.nii.gz")):
        case = prep / image.name[:-7]
        if case.is_dir() and not (case / ".relabelled").exists():
            relabel(case, DATA / "ct-slices/masks" / image.name)
            (case / ".relabelled").touch()
    return prep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="working folder for the preprocessed data and the run")
    parser.add_argument("--skip-prep", action="store_true")
    parser.add_argument("--train-args", default="", help="extra arguments for `lungct train`")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"error: {DATA}: the shared data folder is missing")
    prep = args.work / "prep" if args.skip_prep else prepare(args.work)
    print(f"training data in {prep}")
    command = [sys.executable, "-m", "lungct", "train", "--dim", "2d", "--data", str(prep), "--config", "ct-default-2d",
               "-o", str(args.work / "run"), *args.train_args.split()]
    print("+", " ".join(command))
    subprocess.run(command, check=True)
    best = args.work / "run" / "best.pt"
    target = ROOT / "lungct" / "weights" / "ct-lungs-2d.pt"
    shutil.copy2(best, target)
    print(f"copied {best} -> {target}")


if __name__ == "__main__":
    main()
