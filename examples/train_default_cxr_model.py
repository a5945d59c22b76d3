"""Retrain lungct's default radiograph model (lungct/weights/cxr-lungs-2d.pt) from ../shared/data, from scratch.

 1. one training folder of links: the Montgomery/Shenzhen films with their published train/validation split,
    and the COVID-era films of the patients benchmarks/cxr_disease.py puts in its train and validation parts
    (split by patient; its test part is left out, so the numbers quoted on it are on films never seen);
 2. `lungct train --dim 2d --modality cxr --config cxr-default-2d` (opacities and film artefacts synthesised);
 3. copy the best checkpoint into lungct/weights/.

    python examples/train_default_cxr_model.py work/ [--train-args "--epochs 2"] [--no-install]
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def covid_part(patientid: str) -> str:
    """The benchmark's split of the COVID-era films by patient (one definition, in benchmarks/cxr_disease.py)."""
    spec = importlib.util.spec_from_file_location("cxr_disease", ROOT / "benchmarks" / "cxr_disease.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.covid_part(patientid)


def prepare(work: Path) -> tuple[Path, Path]:
    images, masks = work / "images", work / "masks"
    for folder in (images, masks):
        folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for row in csv.DictReader((DATA / "cxr" / "splits.csv").open()):
        rows.append((row["file"], DATA / "cxr" / "images" / row["file"], DATA / "cxr" / "masks" / row["file"],
                     row["split"]))
    for row in csv.DictReader((DATA / "cxr-covid" / "manifest.csv").open()):
        part = covid_part(row["patientid"])
        if part != "test":
            rows.append((row["file"], DATA / "cxr-covid" / "images" / row["file"],
                         DATA / "cxr-covid" / "masks" / row["file"], part))
    with (work / "splits.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "split"])
        for name, image, mask, split in rows:
            for source, folder in ((image, images), (mask, masks)):
                link = folder / name
                if not link.exists():
                    link.symlink_to(source)
            writer.writerow([name, split])
    return images, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path, help="working folder for the links and the run")
    parser.add_argument("--train-args", default="", help="extra arguments for `lungct train`")
    parser.add_argument("--no-install", action="store_true", help="leave lungct/weights/cxr-lungs-2d.pt alone")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"error: {DATA}: the shared data folder is missing")
    images, masks = prepare(args.work)
    command = [sys.executable, "-m", "lungct", "train", "--dim", "2d", "--modality", "cxr", "--images", str(images),
               "--labels", str(masks), "--config", "cxr-default-2d", "-o", str(args.work / "run"),
               *args.train_args.split()]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    if not args.no_install:
        best, target = args.work / "run" / "best.pt", ROOT / "lungct" / "weights" / "cxr-lungs-2d.pt"
        shutil.copy2(best, target)
        print(f"copied {best} -> {target}")


if __name__ == "__main__":
    main()
