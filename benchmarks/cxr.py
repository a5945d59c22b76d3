"""Benchmark the radiograph networks: the seed papers' three set-ups trained with the same time budget on
this CPU, then validation Dice (mean/sd/min/max over the 64 validation radiographs of
../shared/data/cxr, masks at the original resolution after post-processing, as the seed papers report)
and radiographs per second at inference. The shipped default model is evaluated the same way.
Run by hand (not a test); writes cxr.md, cxr-shipped.json and cxr-<recipe>.json into --results (default
benchmarks/results; the table is made from every cxr-*.json there, cxr-notes.md appended).

    python benchmarks/cxr.py                          # all three, 15 minutes of training each
    python benchmarks/cxr.py --only cxr-2d-segnet --minutes 5
    python benchmarks/cxr.py --only shipped --results /tmp/cxr-bench    # the shipped model only, no training
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
DATA = ROOT.parent / "shared" / "data" / "cxr"
RESULTS = ROOT / "benchmarks" / "results"
RECIPES = {"cxr-2d-unet32": "U-Net 32→512 (Adam 5e-4, DiceCE)",
           "cxr-2d-segnet": "SegNet 64 filters, index unpooling (Adam 1e-3, CE)",
           "cxr-2d-resunet50": "U-Net decoder on ResNet-50 (SGD 1e-3 momentum 0.9, CE)"}


def validation_folder(tmp: Path) -> tuple[Path, Path]:
    """The validation radiographs and their masks as two folders of symlinks (same file names)."""
    images, masks = tmp / "val-images", tmp / "val-masks"
    images.mkdir()
    masks.mkdir()
    for row in csv.DictReader((DATA / "splits.csv").open()):
        if row["split"] == "validation":
            (images / row["file"]).symlink_to(DATA / "images" / row["file"])
            (masks / row["file"]).symlink_to(DATA / "masks" / row["file"])
    return images, masks


def train(recipe: str, out: Path, minutes: float) -> dict:
    command = [sys.executable, "-m", "lungct", "train", "--dim", "2d", "--modality", "cxr", "--config", recipe,
               "--images", str(DATA / "images"), "--labels", str(DATA / "masks"), "-o", str(out),
               "--max-minutes", str(minutes), "--quiet"]
    print("+", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    rows = list(csv.DictReader((out / "log.csv").open()))
    seconds = sorted(float(r["seconds"]) for r in rows)
    best = max(rows, key=lambda r: float(r["val_mean_dice"]))
    return {"epochs": len(rows), "median_epoch_s": seconds[len(seconds) // 2], "train_wall_s": time.perf_counter() - started,
            "best_epoch": int(best["epoch"]), "val_dice_network_grid": float(best["val_mean_dice"])}


def measure(model: Path | str, images: Path, references: Path, masks: Path) -> dict:
    """Images per second (model already loaded) and Dice of the written masks against the references."""
    from lungct.engine import InferOptions, infer, segmenter_for
    from lungct.evaluate import evaluate
    from lungct.networks import parameter_count

    options = InferOptions(models=[str(model)], device="cpu", binary=True)
    segmenter = segmenter_for("cxr", options)  # loaded here, so that the timing below is inference only
    count = len(list(images.iterdir()))
    started = time.perf_counter()
    outcomes = infer([images], masks, options, modality="cxr", overwrite=True, progress=False, log=lambda m: None)
    per_second = count / (time.perf_counter() - started)
    failed = [o.reason for o in outcomes if o.status != "ok"]
    if failed:
        raise SystemExit(f"error: {len(failed)} radiograph(s) failed: {failed[0]}")
    dice = next(s for s in evaluate(masks, references, log=lambda m: None).summary if s["metric"] == "dice")
    return {"parameters_m": parameter_count(segmenter.model.network) / 1e6, "images_per_s": per_second, "n": dice["n"],
            "dice_mean": dice["mean"], "dice_sd": dice["sd"], "dice_min": dice["min"], "dice_max": dice["max"]}


def table(results: list[dict], minutes: float | None) -> str:
    lines = ["# lungct radiograph benchmark", "",
             f"{os.cpu_count()} CPU cores, no GPU, {time.strftime('%Y-%m-%d %H:%M')}. Training on the 492 training "
             f"radiographs of ../shared/data/cxr with the same time budget"
             + (f" ({minutes:g} min, checked after each epoch)" if minutes else "")
             + "; Dice over the 64 validation radiographs (splits.csv), masks at the original resolution after post-processing "
               "(`lungct infer` + `lungct evaluate`); images/s = inference on 2 CPU cores, model loaded.", "",
             "| network (recipe) | parameters | epochs (median s) | best epoch | Dice mean ± sd | min | max | images/s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        training = f"{r['epochs']} ({r['median_epoch_s']:.0f} s)" if "epochs" in r else r.get("training", "")
        lines.append(f"| {r['title']} (`{r['recipe']}`) | {r['parameters_m']:.2f} M | {training} | "
                     f"{r.get('best_epoch', '')} | {r['dice_mean']:.4f} ± {r['dice_sd']:.4f} | {r['dice_min']:.4f} | "
                     f"{r['dice_max']:.4f} | {r['images_per_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=[*sorted(RECIPES), "shipped"], action="append", default=None,
                        help="train and measure only this recipe (repeatable); 'shipped': no training")
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget per network")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for cxr.md and the cxr-*.json")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"error: {DATA}: the shared radiographs are missing")
    results_dir = args.results
    results_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images, references = validation_folder(tmp)
        shipped = {"recipe": "cxr-2d", "title": "shipped default `cxr-lungs-2d`, U-Net 16→256",
                   "training": "see model card", **measure("cxr-lungs-2d", images, references, tmp / "masks-shipped")}
        (results_dir / "cxr-shipped.json").write_text(json.dumps(shipped, indent=1))
        for recipe in [r for r in args.only or RECIPES if r != "shipped"]:
            result = {"recipe": recipe, "title": RECIPES[recipe], "minutes": args.minutes,
                      **train(recipe, tmp / recipe, args.minutes)}
            result.update(measure(tmp / recipe / "best.pt", images, references, tmp / f"masks-{recipe}"))
            (results_dir / f"cxr-{recipe}.json").write_text(json.dumps(result, indent=1))
            print(json.dumps(result), flush=True)
    results = [json.loads((results_dir / f"cxr-{name}.json").read_text())
               for name in [*RECIPES, "shipped"] if (results_dir / f"cxr-{name}.json").is_file()]
    notes = results_dir / "cxr-notes.md"  # hand-written reading of the table, kept across reruns
    text = table(results, args.minutes) + ("\n" + notes.read_text() if notes.is_file() else "")
    (results_dir / "cxr.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
