"""Retrain lungct's default CT model (lungct/weights/ct-lungs.pt) from ../shared/data, from scratch.

The whole loop, as the model card (lungct/weights/ct-lungs.md) describes it:
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
 5. the lesion decision (`lungct train --config ct-decision-3d --hosts`): a 3D network at 3 mm on host volumes
    with lesions painted in 3D by family (lungct/ct/decision/families.py): imlab-id001 and copdgene-ct64 with
    their references, chest-cta and abdomen-couch with the second stage's `--aerated` masks as checked
    pseudo-labels (each must agree with the classical chain's lungs, Dice >= 0.95, or the run stops);
 6. the second stage's network, the decision and the recorded post-processing composed into one
    checkpoint (lungct.ct.cascade), copied into lungct/weights/ct-lungs.pt.
radiomics-lung1/2 (the two real tumours) and imlab-id002 are never hosts of the decision: they are the held-out
volumes of benchmarks/lesion_decision.py, as are its held-out lesion families.

    python examples/train_default_ct_model.py work/ [--skip-prep] [--stages 1|2|3] [--decision-only]
                                                    [--train-args "--epochs 2"] [--no-install]

--decision-only trains stage 5 on the shipped model's lung network: 3000 steps, 167 minutes for the shipped
run on the shared 2-core CPU while other jobs ran (about 3.3 s a step, above the two hours aimed at); the
whole loop takes about 5 hours.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from lungct.ct.decision.hosts import split_by_nearest

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
        return split_by_nearest(manual, chain)
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


DECISION_HOSTS = {  # case -> (scan, labels: a manual reference, or None for a checked pseudo-label)
    "imlab-id001": ("ct-volumes/imlab-id001/image.nii.gz", "ct-volumes/imlab-id001/lungs.nii.gz"),
    "copdgene-ct64": ("ct-volumes/copdgene-ct64/image.nrrd", "ct-volumes/copdgene-ct64/lungs-lr.nii.gz"),
    "chest-cta": ("ct-volumes/chest-cta/image.nii.gz", None),
    "abdomen-couch": ("ct-volumes/abdomen-couch/dicom", None),
}
PSEUDO_LABEL_MIN_DICE = 0.95


def checked_pseudo_label(case: str, mask: Path) -> None:
    """Stop unless the lung model's mask agrees with the classical chain's lungs (Dice), where either has
    enough lung to compare (abdomen-couch shows only the lung bases)."""
    from lungct.ct.preprocess import preprocess_scan
    from lungct.evaluate import read_labels
    from lungct.io import load_scan
    from lungct.metrics import overlap

    labels, _ = read_labels(mask)
    chain = preprocess_scan(load_scan(DATA / DECISION_HOSTS[case][0])).lungs_native > 0
    if labels.sum() < 2000 and chain.sum() < 2000:
        print(f"pseudo-label {case}: {labels.sum()} / {chain.sum()} voxels of lung (model / chain): no check")
        return
    dice = overlap(labels > 0, chain)["dice"]
    print(f"pseudo-label {case}: Dice {dice:.4f} against the classical chain")
    if dice < PSEUDO_LABEL_MIN_DICE:
        sys.exit(f"error: {mask}: the pseudo-label disagrees with the classical chain (Dice {dice:.3f})")


def decision_hosts(work: Path, lung_model: str) -> Path:
    """hosts.csv for the lesion decision: references where there are, checked pseudo-labels elsewhere; the
    lung model's right/left masks give binary references their sides."""
    masks = work / "pseudo-labels"
    scans = work / "decision-scans"
    scans.mkdir(parents=True, exist_ok=True)
    for case, (scan, _) in DECISION_HOSTS.items():
        link = scans / (case + "".join(Path(scan).suffixes) if Path(scan).suffix else case)
        if not link.exists():
            link.symlink_to(DATA / scan)
    subprocess.run([sys.executable, "-m", "lungct", "infer", str(scans), "-o", str(masks), "--aerated", "--model",
                    lung_model, "--no-preview", "--quiet", "--overwrite"], check=True)
    rows = ["name,scan,labels,sides"]
    for case, (scan, reference) in DECISION_HOSTS.items():
        mask = masks / f"{case}.nii.gz"
        if reference is None:
            checked_pseudo_label(case, mask)
        rows.append(f"{case},{DATA / scan},{DATA / reference if reference else mask},{mask}")
    hosts = work / "hosts.csv"
    hosts.write_text("\n".join(rows) + "\n")
    return hosts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="working folder for the preprocessed data, labels and the run")
    parser.add_argument("--skip-prep", action="store_true", help="reuse work/prep and work/labels")
    parser.add_argument("--train-args", default="", help="extra arguments for the 2D stages' `lungct train`")
    parser.add_argument("--stages", type=int, choices=(1, 2, 3), default=3,
                        help="1: the first 2D stage only; 2: both 2D stages; 3: and the lesion decision")
    parser.add_argument("--decision-only", action="store_true",
                        help="train only the lesion decision, on the shipped model's lung network")
    parser.add_argument("--no-install", action="store_true", help="leave lungct/weights/ct-lungs.pt alone")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"error: {DATA}: the shipped data folder is missing")
    lung_model = "ct-lungs"
    if not args.decision_only:
        prep, labels = (args.work / "prep", args.work / "labels") if args.skip_prep else prepare(args.work)
        stages = [("ct-default-2d", args.work / "run", []),
                  ("ct-default-2d-finetune", args.work / "run-finetune", ["--init", str(args.work / "run" / "best.pt")])]
        for recipe, run, extra in stages[:args.stages]:
            command = [sys.executable, "-m", "lungct", "train", "--dim", "2d", "--data", str(prep), "--labels",
                       str(labels), "--config", recipe, "-o", str(run), *extra, *args.train_args.split()]
            print("+", " ".join(command), flush=True)
            subprocess.run(command, check=True)
        lung_model = str(stages[min(args.stages, 2) - 1][1] / "best.pt")
    if args.stages < 3 and not args.decision_only:
        print(f"the lung network is {lung_model}; stage 3 (the lesion decision) not run")
        return
    hosts = decision_hosts(args.work, lung_model)
    run = args.work / "run-decision"
    command = [sys.executable, "-m", "lungct", "train", "--dim", "3d", "--config", "ct-decision-3d", "--hosts",
               str(hosts), "--lung-model", lung_model, "-o", str(run)]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    if not args.no_install:
        target = ROOT / "lungct" / "weights" / "ct-lungs.pt"
        shutil.copy2(run / "cascade.pt", target)
        print(f"copied {run / 'cascade.pt'} -> {target}")


if __name__ == "__main__":
    main()
