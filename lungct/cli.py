"""The `lungct` command: thin click wrappers that parse options and call the library.

Every failure the library can explain arrives as a LungctError and is printed as one line
("<file>: <what is wrong>") with exit status 1, never as a traceback.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from lungct import __version__
from lungct.errors import LungctError


def explained(func):
    """Turn a LungctError into a one-line message and exit status 1."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except LungctError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(1)
    return wrapper


def recipe_options(default: str):
    """--config and --set, shared by every verb that runs a recipe."""
    def decorate(func):
        func = click.option("--set", "set_values", multiple=True, metavar="KEY=VALUE",
                            help="Change one recipe value, e.g. --set Resampled.spacing_mm=1.5 (repeatable).")(func)
        func = click.option("--config", default=default, show_default=True,
                            help="Recipe: a YAML file or the name of a built-in one in pipelines/.")(func)
        return func
    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lungct")
def main():
    """lungct: lung segmentation for chest CT, from a folder of scans to masks, volumes and a report."""


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: the workspace, ./lungct-work/prep or $LUNGCT_WORKDIR/prep).")
@recipe_options("preprocess")
@click.option("--recalibrate", is_flag=True,
              help="Rescale scans whose air is not at -1000 HU so air = -1000 and soft tissue = 40.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Cases processed in parallel (processes).")
@click.option("--overwrite", is_flag=True, help="Redo cases already present in the output folder.")
@click.option("--scheduler", default=None, metavar="ADDRESS|local:N",
              help="Run the cases on a Dask cluster (tcp://head:8786), or local:N worker processes.")
@click.option("--num-parts", type=click.IntRange(min=1), default=1, show_default=True,
              help="Split the case list into this many shards (job arrays) ...")
@click.option("--part-id", type=click.IntRange(min=0), default=0, show_default=True, help="... and do this one (0-based).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@explained
def preprocess(inputs, output, config, set_values, recalibrate, workers, overwrite, scheduler, num_parts, part_id, quiet):
    """Preprocess scans: DICOM series folders, .nii/.nii.gz/.nrrd/.mha files, or folders of them.

    Writes prep/<case>/ (image, lungs, roi, lungs-native, case.json, preview.png),
    prep/summary.csv and prep/failures.csv. A second run resumes where the first stopped.
    """
    from lungct.preprocess import preprocess_batch
    from lungct.recipes import load_recipe, parse_set_options
    from lungct.workspace import prep_dir

    overrides = parse_set_options(set_values)
    if recalibrate:
        overrides["CheckHUCalibrationd.recalibrate"] = True
    recipe = load_recipe(config, overrides)
    out_dir = output or prep_dir()
    outcomes = preprocess_batch(list(inputs), out_dir, recipe, workers=workers, overwrite=overwrite,
                                progress=not quiet, log=lambda m: click.echo(m, err=True), scheduler=scheduler,
                                num_parts=num_parts, part_id=part_id)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed")}
    click.echo(f"{counts['ok']} done, {counts['skipped']} skipped (already done), {counts['failed']} failed "
               f"-> {out_dir}/summary.csv", err=True)
    if counts["failed"]:
        click.echo(f"failures listed in {out_dir}/failures{f'-part{part_id}of{num_parts}' if num_parts > 1 else ''}.csv",
                   err=True)
        sys.exit(1)


@main.command()
@click.option("--dim", type=click.Choice(["2d", "3d"]), required=True, help="2D slice network or 3D patch network.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="A `lungct preprocess` output folder (default: the workspace's prep/).")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="A folder of your own images (any format lungct reads), with --labels.")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Label files matched to the images by case name (with --data: instead of prep's lungs.nii.gz).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Run folder (default: the workspace's runs/<recipe>-<timestamp>/).")
@click.option("--config", default=None, help="Training recipe: a YAML file or a built-in name (default: train-2d / train-3d).")
@click.option("--set", "set_values", multiple=True, metavar="KEY=VALUE", help="Change one recipe value (repeatable).")
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=float, default=None, help="Learning rate.")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Time budget: stop after the epoch that uses it up (the best checkpoint stays).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps.")
@click.option("--resume", type=click.Path(path_type=Path), default=None,
              help="Continue an interrupted run from its last.pt (same recipe, same folder).")
@click.option("--modality", type=click.Choice(["ct", "cxr"]), default="ct", show_default=True,
              help="cxr: chest radiographs (default recipe cxr-2d; --images radiographs, --labels masks).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@explained
def train(dim, data, images, labels, output, config, set_values, epochs, batch_size, lr, max_minutes, device, resume,
          modality, quiet):
    """Train a segmentation network from a recipe; writes best.pt, last.pt, log.csv and plots."""
    import json

    from lungct.recipes import load_recipe, parse_set_options
    from lungct.training import default_run_dir, train as run_training

    overrides = parse_set_options(set_values)
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("optimizer.lr", lr),
                       ("time_budget_min", max_minutes)):
        if value is not None:
            overrides[key] = value
    if resume:
        recorded = Path(resume) / "recipe.json"
        if not recorded.is_file():
            raise LungctError(resume, "is not a lungct training run (no recipe.json)")
        recipe = json.loads(recorded.read_text())
        from lungct.recipes import apply_overrides

        apply_overrides(recipe, overrides, recorded)
        output = Path(resume)
    else:
        recipe = load_recipe(config or ("cxr-2d" if modality == "cxr" else f"train-{dim}"), overrides)
        if recipe.get("modality", "ct") != modality:
            raise LungctError(recipe.get("source"), f"is a {recipe.get('modality', 'ct')} recipe but --modality {modality} was given")
    if f"{recipe.get('dim')}d" != dim:
        raise LungctError(recipe.get("source"), f"is a {recipe.get('dim')}D recipe but --dim {dim} was given")
    out_dir = output or default_run_dir(recipe)
    best = run_training(recipe, out_dir, data=data, images=images, labels=labels, device=device, resume=resume,
                        progress=not quiet, log=lambda m: click.echo(m, err=True))
    if int(os.environ.get("RANK", 0)) == 0:
        click.echo(f"best validation Dice {best['val_mean_dice']:.4f} at epoch {best['best_epoch']} -> {out_dir}/best.pt",
                   err=True)


@main.command()
@click.argument("prediction", type=click.Path(path_type=Path))
@click.argument("reference", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Per-case CSV (default: the workspace's metrics.csv); the summary goes to <name>-summary.csv.")
@click.option("--resample", is_flag=True,
              help="Copy a prediction on another grid onto the reference grid (nearest neighbour) instead of refusing it.")
@click.option("--merge", is_flag=True, help="Compare only the whole foreground, not each label.")
@click.option("--mask-name", default="lungs.nii.gz", show_default=True,
              help="Mask file inside per-case folders (<case>/<mask-name>, as `lungct preprocess` writes).")
@click.option("--overwrite", is_flag=True, help="Replace existing CSV files.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@explained
def evaluate(prediction, reference, output, resample, merge, mask_name, overwrite, quiet):
    """Dice, IoU, HD95, ASSD (mm) and volume difference (mL) of predicted masks against references.

    PREDICTION and REFERENCE are two mask files, or two folders matched by case name (file stem, or
    the folder name of <case>/lungs.nii.gz). A multi-label reference is also measured label by label.
    """
    from lungct.evaluate import ROW_FIELDS, SUMMARY_COLUMNS, evaluate as run, format_summary, summary_path, write_rows
    from lungct.workspace import workdir

    output = output or workdir() / "metrics.csv"
    for path in (output, summary_path(output)):
        if path.exists() and not overwrite:
            raise LungctError(path, "exists already (use --overwrite to replace it)")
    result = run(prediction, reference, resample=resample, merge=merge, mask_name=mask_name,
                 progress=not quiet, log=lambda m: click.echo(m, err=True))
    if result.rows:
        write_rows(output, result.rows, ROW_FIELDS)
        write_rows(summary_path(output), result.summary, SUMMARY_COLUMNS)
        click.echo(format_summary(result.summary, len({r["case"] for r in result.rows})))
        click.echo(f"-> {output}, {summary_path(output)}", err=True)
    if result.failures:
        click.echo(f"{len(result.failures)} case(s) failed", err=True)
        sys.exit(1)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="mask.nii.gz for one scan, or a folder for <case>.nii.gz + <case>.json "
                   "(default: the workspace's masks/ folder).")
@click.option("--model", default=None, metavar="PATH|NAME|latest",
              help="Checkpoint file, shipped model name (lungct/weights/<name>.pt), or 'latest' "
                   "(best checkpoint of the newest run in the workspace). Default: the shipped default model.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="auto: mixed precision on CUDA, float32 elsewhere; bf16 also runs on CPUs that support it.")
@click.option("--tta", is_flag=True, help="Average over flips (anterior-posterior, and superior-inferior in 3D).")
@click.option("--binary", is_flag=True, help="One label (1 = lung) instead of 1 = right, 2 = left.")
@click.option("--roi/--no-roi", default=None,
              help="Keep labels only inside the preprocessing chain's mirrored lung ROI (default: as the model's "
                   "checkpoint says; the shipped CT model uses it).")
@click.option("--preview", is_flag=False, flag_value="auto", default=None, metavar="[PNG|FOLDER]",
              help="Write an axial + coronal picture (beside the mask, or at the path given).")
@click.option("--sw-batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="3D models: patches per network call.")
@click.option("--overlap", type=click.FloatRange(0, 0.95), default=0.5, show_default=True,
              help="3D models: sliding-window overlap.")
@click.option("--slice-batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="2D models: axial slices per network call.")
@click.option("--overwrite", is_flag=True, help="Replace existing masks (otherwise a batch resumes).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--modality", type=click.Choice(["auto", "ct", "cxr"]), default="auto", show_default=True,
              help="auto: radiographs (pictures, DICOM CR/DX) go to the radiograph model, CT to the CT model.")
@click.option("--num-parts", type=click.IntRange(min=1), default=1, show_default=True,
              help="Split the case list into this many shards (job arrays) ...")
@click.option("--part-id", type=click.IntRange(min=0), default=0, show_default=True, help="... and do this one (0-based).")
@click.option("--scheduler", default=None, metavar="ADDRESS|local:N",
              help="Run the scans on a Dask cluster (each worker loads the model once), or local:N processes.")
@explained
def infer(inputs, output, model, device, precision, tta, binary, roi, preview, sw_batch_size, overlap, slice_batch,
          overwrite, quiet, modality, num_parts, part_id, scheduler):
    """Segment the lungs of CT scans: files, DICOM series folders, or folders of them.

    The mask has the input's exact geometry (uint8, 1 = right lung, 2 = left lung); a JSON beside it
    gives volumes in mL, the model, timings and warnings. The model is loaded once for a whole batch.
    """
    from lungct.inference import infer_batch
    from lungct.workspace import workdir

    output = output or workdir() / "masks"
    if modality == "auto":
        modality = detected_modality(inputs, model)
    if modality == "cxr":
        for flag, used in (("--scheduler", scheduler), ("--tta", tta)):
            if used:  # flips would swap right and left; radiographs run ~20/s in one process
                raise LungctError(", ".join(map(str, inputs)), f"{flag} is for CT scans, not radiographs")
        return infer_radiograph_command(inputs, output, model, device, binary, preview, overwrite, quiet,
                                        num_parts, part_id)

    options = {"model": str(model) if model else None, "device": device, "precision": precision, "tta": tta,
               "sw_batch_size": sw_batch_size, "overlap": overlap, "slice_batch": slice_batch, "roi": roi,
               "binary": binary}
    outcomes = infer_batch(list(inputs), output, options, overwrite=overwrite, preview=preview,
                           progress=not quiet, log=lambda m: click.echo(m, err=True), num_parts=num_parts,
                           part_id=part_id, scheduler=scheduler)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed")}
    if len(outcomes) == 1 and counts["ok"] == 1:
        record = outcomes[0].record
        volumes = ", ".join(f"{k} {v:.0f} mL" for k, v in record["volumes_ml"].items())
        click.echo(f"{record['mask']}: {volumes} ({record['timings_s']['total']:.1f} s)", err=True)
    else:
        click.echo(f"{counts['ok']} done, {counts['skipped']} skipped (already done), {counts['failed']} failed "
                   f"-> {output}", err=True)
    if counts["failed"]:
        sys.exit(1)


def detected_modality(inputs, model) -> str:
    """cxr when every input is a radiograph (or the model is a radiograph model), else ct."""
    from lungct.cxr import detect_modality

    kinds = {detect_modality(p) for p in inputs}
    if kinds == {"cxr"}:
        return "cxr"
    if model and kinds <= {"cxr", None}:
        from lungct.checkpoint import read_meta
        from lungct.inference import resolve_model

        if model != "latest" and read_meta(resolve_model(model)).get("modality") == "cxr":
            return "cxr"
    return "ct"


def infer_radiograph_command(inputs, output, model, device, binary, preview, overwrite, quiet, num_parts=1, part_id=0):
    from lungct.cxr.infer import RadiographSegmenter, infer_radiographs

    outcomes = infer_radiographs(list(inputs), output, lambda: RadiographSegmenter(model, device=device, binary=binary),
                                 overwrite=overwrite, preview=preview, progress=not quiet,
                                 log=lambda m: click.echo(m, err=True), num_parts=num_parts, part_id=part_id)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed")}
    if len(outcomes) == 1 and counts["ok"] == 1:
        record = outcomes[0].record
        areas = record.get("areas_cm2")
        area_text = ", ".join(f"{k} {v:.0f} cm²" for k, v in areas.items()) if areas else "pixel spacing unknown"
        click.echo(f"{record['mask']}: {area_text}", err=True)
    else:
        click.echo(f"{counts['ok']} done, {counts['skipped']} skipped (already done), {counts['failed']} failed "
                   f"-> {output}", err=True)
    if counts["failed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
