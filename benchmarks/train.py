"""Benchmark `lungct train` on this machine: seconds per epoch, when validation Dice first reaches 0.95,
best validation Dice. Run by hand (not a test); writes train-<kind>.json and train.md (made from every
train-*.json there, train-notes.md appended) into --results (default benchmarks/results).

    python benchmarks/train.py                 # 2D recipe on ct-slices, then the 3D recipes on the volumes
    python benchmarks/train.py --only 3d-lowres
    python benchmarks/train.py --only 2d --epochs 1 --results /tmp/train-bench    # a quick check

2D: the train-2d recipe on ../shared/data/ct-slices through `--images/--labels` (binary lung masks, the
201 slices with a correct reference; HU recalibrated by the input chain's CheckHUCalibrationd, 1 mm),
20 % of the slices held apart as validation.
3D: the train-3d (1.5 mm) and train-3d-lowres (3 mm) recipes on the volumes with lung masks
(imlab-id001 and copdgene-ct64 for training, imlab-id002, the case with a mass, held apart).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"


def run(name: str, args: list[str], out: Path) -> dict:
    started = time.perf_counter()
    command = [sys.executable, "-m", "lungct", "train", *args, "-o", str(out), "--quiet"]
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    return summarise(name, out, time.perf_counter() - started)


def summarise(name: str, out: Path, wall: float) -> dict:
    """The benchmark row of one finished run folder (its log.csv)."""
    rows = list(csv.DictReader((out / "log.csv").open()))
    elapsed, reached = 0.0, None
    for row in rows:
        elapsed += float(row["seconds"])
        if reached is None and float(row["val_mean_dice"]) >= 0.95:
            reached = (int(row["epoch"]), elapsed)
    best = max(rows, key=lambda r: float(r["val_mean_dice"]))
    seconds = sorted(float(r["seconds"]) for r in rows)
    return {"name": name, "epochs": len(rows), "median_epoch_s": seconds[len(seconds) // 2], "wall_s": wall,
            "reached": reached, "best": float(best["val_mean_dice"]), "best_epoch": int(best["epoch"]),
            "per_label": {k[5:]: float(v) for k, v in best.items() if k.startswith("dice_")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["2d", "3d", "3d-lowres"], default=None)
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for train.md and the train-*.json")
    args = parser.parse_args()
    results_dir = args.results
    results_dir.mkdir(parents=True, exist_ok=True)
    if not DATA.is_dir():
        sys.exit(f"error: {DATA}: the shared data folder is missing")
    extra = ["--epochs", str(args.epochs)] if args.epochs else []
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.only in (None, "2d"):
            results.append(run("2D train-2d on ct-slices", [
                "--dim", "2d", "--images", str(DATA / "ct-slices/images"), "--labels", str(DATA / "ct-slices/masks"),
                "--set", "labels={background: 0, lungs: 1}", "--set", "data.validation_fraction=0.2", *extra],
                tmp / "run2d"))
        if args.only in (None, "3d", "3d-lowres"):
            volumes = tmp / "volumes"
            (volumes / "images").mkdir(parents=True)
            (volumes / "labels").mkdir()
            for case, label in (("imlab-id001", "lungs.nii.gz"), ("imlab-id002", "lungs.nii.gz"),
                                ("copdgene-ct64", "lungs.nrrd")):
                image = next((DATA / "ct-volumes" / case).glob("image.*"))
                (volumes / "images" / f"{case}{''.join(image.suffixes)}").symlink_to(image)
                ref = DATA / "ct-volumes" / case / label
                (volumes / "labels" / f"{case}{''.join(ref.suffixes)}").symlink_to(ref)
            common = ["--dim", "3d", "--images", str(volumes / "images"), "--labels", str(volumes / "labels"),
                      "--set", "labels={background: 0, lungs: 1}", "--set", "data.validation_cases=[imlab-id002]",
                      "--set", "data.validation_fraction=0", *extra]
            for key, recipe in (("3d", "train-3d"), ("3d-lowres", "train-3d-lowres")):
                if args.only in (None, key):
                    results.append(run(f"3D {recipe} on imlab-id001 + copdgene-ct64 (validation imlab-id002)",
                                       [*common, "--config", recipe], tmp / f"run{key}"))
    for r in results:  # one JSON per run kind; the table is made from all of them
        key = "2d" if r["name"].startswith("2D") else "3d-lowres" if "lowres" in r["name"] else "3d"
        (results_dir / f"train-{key}.json").write_text(json.dumps(r, indent=1))
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob("train-*.json"))]
    lines = ["# lungct train benchmark", "",
             f"{os.cpu_count()} CPU cores, no GPU, {time.strftime('%Y-%m-%d %H:%M')}. Validation Dice = mean over "
             "held-apart cases of the Dice per label.", "",
             "| run | epochs | median s/epoch | wall time | first Dice ≥ 0.95 (epoch, s) | best Dice (epoch) |",
             "|---|---|---|---|---|---|"]
    for r in results:
        reached = f"{r['reached'][0]}, {r['reached'][1]:.0f} s" if r["reached"] else "not reached"
        lines.append(f"| {r['name']} | {r['epochs']} | {r['median_epoch_s']:.0f} | {r['wall_s'] / 60:.1f} min | "
                     f"{reached} | {r['best']:.4f} ({r['best_epoch']}) |")
    notes = results_dir / "train-notes.md"  # hand-written reading of the table, kept across reruns
    text = "\n".join(lines) + "\n" + ("\n" + notes.read_text() if notes.is_file() else "")
    (results_dir / "train.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
