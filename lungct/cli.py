"""The `lungct` command: thin click wrappers that parse options and call the library.

Every failure the library can explain arrives as a LungctError and is printed as one line
("<file>: <what is wrong>") with exit status 1, never as a traceback.

Each verb imports the library inside its own function: `lungct --help` and a usage error then answer in
0.4 s instead of the 3-4 s that loading PyTorch, SimpleITK and the readers takes (measured on the shared
2-core machine), and a verb loads only what it uses.
"""
from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import click

from lungct import __version__
from lungct.errors import LungctError
from lungct.os_names import printable


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


def say(message: str) -> None:
    """A message on stderr; a file name's undecodable bytes as \\xNN (never an encoding error)."""
    click.echo(printable(message), err=True)


def finish_batch(outcomes, where, failures_file: str | None = None) -> None:
    """The end of every batch verb: one summary line (or the one case's result), exit 1 if any failed."""
    from lungct.batch import counts, summary_line

    n = counts(outcomes)
    record = (outcomes[0].record or {}) if len(outcomes) == 1 and n["ok"] == 1 else {}
    written = record.get("mask") or record.get("dicom_seg") or record.get("rtstruct")
    if written:
        measures = record.get("volumes_ml") or record.get("areas_cm2")
        unit = "mL" if "volumes_ml" in record else "cm²"
        text = ", ".join(f"{k} {v:.0f} {unit}" for k, v in measures.items()) if measures else "pixel spacing unknown"
        say(f"{written}: {text} ({(record.get('timings_s') or {}).get('total', 0):.1f} s)")
    else:
        say(summary_line(outcomes, where))
    if n["failed"]:
        if failures_file:
            say(f"failures listed in {failures_file}")
        sys.exit(1)


def batch_options(func):
    """--num-parts/--part-id/--scheduler/--overwrite/--quiet, shared by the batch verbs."""
    for option in reversed([
        click.option("--overwrite", is_flag=True, help="Redo cases already done (otherwise a batch resumes)."),
        click.option("--scheduler", default=None, metavar="ADDRESS|local:N",
                     help="Run the cases on a Dask cluster (tcp://head:8786), or local:N worker processes."),
        click.option("--num-parts", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Split the case list into this many shards (job arrays) ..."),
        click.option("--part-id", type=click.IntRange(min=0), default=0, show_default=True,
                     help="... and do this one (0-based)."),
        click.option("--quiet", is_flag=True, help="No progress bar."),
    ]):
        func = option(func)
    return func


assume_orientation_option = click.option(
    "--assume-orientation", default=None, metavar="RAS|LPS|...",
    help="NIfTI files whose header states no orientation (qform and sform codes 0): where their voxel axes point "
         "(otherwise refused: right and left would be a guess). Recorded as a warning and a QC flag.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lungct")
def main():
    """lungct: lungs in chest CT and lung fields in chest radiographs, from a folder of scans and
    radiographs (DICOM, NIfTI, NRRD, MHA, PNG, JPEG) to masks, volumes or areas, and a QC report.

    \b
    lungct infer scans/ -o masks/          the shipped models (CT and radiographs), one mask per case
    lungct evaluate masks/ references/     Dice, IoU, HD95, ASSD, volume difference
    lungct preprocess scans/ -o prep/      the classical CT chain: lungs, ROI, training images
    lungct train --dim 2d --data prep/     train your own model from a recipe in pipelines/
    """


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: the workspace, ./lungct-work/prep or $LUNGCT_WORKDIR/prep).")
@click.option("--set", "set_values", multiple=True, metavar="KEY=VALUE",
              help="Change one recipe value, e.g. --set Resampled.spacing_mm=1.5 (repeatable).")
@click.option("--config", default="preprocess", show_default=True,
              help="Recipe: a YAML file or the name of a built-in one in pipelines/.")
@click.option("--recalibrate", is_flag=True,
              help="Rescale scans whose air is not at -1000 HU so air = -1000 and soft tissue = 40.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Cases processed in parallel (processes).")
@assume_orientation_option
@batch_options
@explained
def preprocess(inputs, output, config, set_values, recalibrate, workers, assume_orientation, overwrite, scheduler,
               num_parts, part_id, quiet):
    """Preprocess CT scans: DICOM series folders, .nii/.nii.gz/.nrrd/.mha files, or folders of them.

    Writes prep/<case>/ (image, lungs, roi, lungs-native, case.json, preview.png),
    prep/summary.csv and prep/failures.csv. A second run resumes where the first stopped.
    """
    from lungct.ct.preprocess import preprocess_batch
    from lungct.recipes import load_recipe, parse_set_options
    from lungct.workspace import prep_dir

    overrides = parse_set_options(set_values)
    if recalibrate:
        overrides["CheckHUCalibrationd.recalibrate"] = True
    recipe = load_recipe(config, overrides)
    out_dir = output or prep_dir()
    outcomes = preprocess_batch(list(inputs), out_dir, recipe, workers=workers, overwrite=overwrite,
                                progress=not quiet, log=say, scheduler=scheduler, num_parts=num_parts, part_id=part_id,
                                assume_orientation=assume_orientation)
    finish_batch(outcomes, f"{out_dir}/summary.csv",
                 f"{out_dir}/failures{f'-part{part_id}of{num_parts}' if num_parts > 1 else ''}.csv")


@main.command()
@click.option("--dim", type=click.Choice(["2d", "3d"]), required=True, help="2D slice network or 3D patch network.")
@click.option("--data", type=click.Path(path_type=Path), default=None,
              help="A `lungct preprocess` output folder (default: the workspace's prep/).")
@click.option("--images", type=click.Path(path_type=Path), default=None,
              help="A folder of your own images (any format lungct reads; radiographs with --modality cxr), with --labels.")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Label files on the original images' grids, matched by case name (with --data: instead of "
                   "prep's lungs; carried onto the preprocessed grid).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Run folder (default: the workspace's runs/<recipe>-<timestamp>/).")
@click.option("--config", default=None,
              help="Training recipe: a YAML file or a built-in name (default: train-2d / train-3d, or cxr-2d).")
@click.option("--set", "set_values", multiple=True, metavar="KEY=VALUE", help="Change one recipe value (repeatable).")
@click.option("--epochs", type=click.IntRange(min=1), default=None)
@click.option("--batch-size", type=click.IntRange(min=1), default=None)
@click.option("--lr", type=float, default=None, help="Learning rate.")
@click.option("--max-minutes", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Time budget: stop after the epoch that uses it up (the best checkpoint stays).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA, then MPS, then CPU), cpu, cuda, mps.")
@click.option("--resume", type=click.Path(path_type=Path), default=None,
              help="Continue an interrupted run from its last.pt (same recipe, same folder).")
@click.option("--init", "init", default=None, metavar="MODEL",
              help="Start from a checkpoint's weights (a path or a shipped model name): fine-tuning. Its network "
                   "and labels must be the recipe's.")
@click.option("--modality", type=click.Choice(["ct", "cxr"]), default="ct", show_default=True,
              help="cxr: chest radiographs (default recipe cxr-2d; --images radiographs, --labels masks).")
@click.option("--hosts", type=click.Path(path_type=Path), default=None,
              help="Lesion-decision recipes: a CSV of host volumes (name,scan,labels,sides).")
@click.option("--lung-model", default=None, metavar="MODEL",
              help="Lesion-decision recipes: the CT lung model the decision joins (default: the shipped one); "
                   "the run then also writes cascade.pt, the two as one model.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@explained
def train(dim, data, images, labels, output, config, set_values, epochs, batch_size, lr, max_minutes, device, resume,
          init, modality, hosts, lung_model, quiet):
    """Train a segmentation network from a recipe; writes best.pt, last.pt, log.csv and plots.

    Validation runs the shipped inference on the validation cases' original inputs, so the Dice that
    picks best.pt is what `lungct infer` + `lungct evaluate` give. A lesion-decision recipe
    (pipelines/ct-decision-3d.yaml) trains the default CT model's 3D stage on --hosts instead.
    """
    import json

    if config and is_decision_recipe(config):
        return train_decision_stage(config, hosts, output, lung_model, device, init)

    from lungct.recipes import apply_overrides, load_recipe, parse_set_options
    from lungct.training import train as run_training
    from lungct.trainlog import default_run_dir

    overrides = parse_set_options(set_values)
    for key, value in (("epochs", epochs), ("batch_size", batch_size), ("optimizer.lr", lr),
                       ("time_budget_min", max_minutes)):
        if value is not None:
            overrides[key] = value
    if resume:
        resume = Path(resume).parent if Path(resume).is_file() else Path(resume)  # the run or its last.pt
        recorded = resume / "recipe.json"
        if not recorded.is_file():
            raise LungctError(resume, "is not a lungct training run (no recipe.json)")
        recipe = apply_overrides(json.loads(recorded.read_text()), overrides, recorded)
        output = resume
    else:
        recipe = load_recipe(config or ("cxr-2d" if modality == "cxr" else f"train-{dim}"), overrides)
        if recipe["modality"] != modality:
            raise LungctError(recipe.get("source"), f"is a {recipe['modality']} recipe but --modality {modality} was given")
    if f"{recipe['dim']}d" != dim:
        raise LungctError(recipe.get("source"), f"is a {recipe['dim']}D recipe but --dim {dim} was given")
    out_dir = output or default_run_dir(recipe)
    best = run_training(recipe, out_dir, data=data, images=images, labels=labels, device=device, resume=resume,
                        init=init, progress=not quiet, log=say)
    if int(os.environ.get("RANK", 0)) == 0:
        say(f"best validation Dice {best['val_mean_dice']:.4f} at epoch {best['best_epoch']} -> {out_dir}/best.pt")


def is_decision_recipe(config: str) -> bool:
    from lungct.ct.decision.training import decision_recipe_path

    return decision_recipe_path(config) is not None


def train_decision_stage(config: str, hosts: Path | None, output: Path | None, lung_model, device: str,
                         init: str | None = None) -> None:
    from lungct.ct.cascade import compose_cascade
    from lungct.ct.decision.training import load_decision_recipe, read_hosts, train_decision
    from lungct.models import pick_device, resolve_model
    from lungct.trainlog import default_run_dir

    if hosts is None:
        raise LungctError(config, "a lesion-decision recipe needs --hosts (a CSV: name,scan,labels,sides)")
    recipe = load_decision_recipe(config)
    out_dir = output or default_run_dir(recipe)  # the workspace's runs/<recipe>-<time>, as --output says
    start = resolve_model(init, "ct") if init else None
    decision = train_decision(recipe, read_hosts(hosts), out_dir, device=str(pick_device(device)), log=say, init=start)
    cascade = compose_cascade(lung_model, decision, out_dir / "cascade.pt")
    say(f"lesion decision -> {decision}; with the lung model -> {cascade}")


@main.command()
@click.argument("prediction", type=click.Path(path_type=Path))
@click.argument("reference", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="Per-case CSV (default: the workspace's metrics.csv); the summary goes to <name>-summary.csv.")
@click.option("--resample", is_flag=True,
              help="Copy a prediction on another grid onto the reference grid (nearest neighbour) instead of refusing it.")
@click.option("--merge", is_flag=True, help="Compare only the whole foreground, not each label.")
@click.option("--label", default=None, metavar="NAME|VALUE",
              help="Compare only this label of the predictions (e.g. tumour) with the references' foreground.")
@click.option("--mask-name", default="lungs.nii.gz", show_default=True,
              help="Mask file inside per-case folders (<case>/<mask-name>, as `lungct preprocess` writes).")
@click.option("--overwrite", is_flag=True, help="Replace existing CSV files.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@explained
def evaluate(prediction, reference, output, resample, merge, label, mask_name, overwrite, quiet):
    """Dice, IoU, HD95, ASSD (mm) and volume difference (mL) of predicted masks against references.

    PREDICTION and REFERENCE are two mask files, or two folders matched by case name (file stem, or
    the folder name of <case>/lungs.nii.gz). CT masks (NIfTI, NRRD, MHA) and radiograph masks (PNG,
    0/255 or 0/1) alike. A multi-label reference is also measured label by label.
    """
    from lungct.evaluate import ROW_FIELDS, SUMMARY_COLUMNS, format_summary, summary_path, write_rows
    from lungct.evaluate import evaluate as run
    from lungct.workspace import workdir

    output = output or workdir() / "metrics.csv"
    for path in (output, summary_path(output)):
        if path.exists() and not overwrite:
            raise LungctError(path, "exists already (use --overwrite to replace it)")
    result = run(prediction, reference, resample=resample, merge=merge, mask_name=mask_name,
                 progress=not quiet, log=say, label=label)
    if result.rows:
        write_rows(output, result.rows, ROW_FIELDS)
        write_rows(summary_path(output), result.summary, SUMMARY_COLUMNS)
        click.echo(format_summary(result.summary, len({r["case"] for r in result.rows})))
        say(f"-> {output}, {summary_path(output)}")
    if result.failures:
        say(f"{len(result.failures)} case(s) failed")
        sys.exit(1)


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="A folder (<case>.nii.gz for CT, <case>.png for radiographs, <case>.json, report.html), or "
                   "one file for one input: mask.nii.gz, or mask.png for a radiograph. Default: the workspace's masks/.")
@click.option("--model", "models", multiple=True, metavar="PATH|NAME|latest",
              help="Checkpoint file, shipped model name (lungct/weights/<name>.pt) or 'latest' (best checkpoint of "
                   "the newest run in the workspace); each serves its modality (repeat for CT and radiographs). "
                   "Default: the shipped ct-lungs and cxr-lungs-2d.")
@click.option("--modality", type=click.Choice(["auto", "ct", "cxr"]), default="auto", show_default=True,
              help="auto: each case's kind from the file (pictures, DICOM CR/DX: radiographs; volumes, CT series: CT).")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:1, mps.")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto", show_default=True,
              help="auto: mixed precision on CUDA, float32 elsewhere; bf16 also runs on CPUs that support it.")
@click.option("--tta", is_flag=True, help="CT: average over flips that keep right and left (anterior-posterior, "
                                          "and superior-inferior in 3D).")
@click.option("--binary", is_flag=True, help="One label (1 = lungs) instead of 1 = right lung, 2 = left lung.")
@click.option("--aerated", is_flag=True, help="CT: write the aerated lungs (dense lesions left out) instead of the "
                                              "default lungs (everything inside the pleura, tumours included); the "
                                              "sidecar reports both.")
@click.option("--statistics/--no-statistics", default=True, show_default=True,
              help="CT: lung densitometry per lung and region (volume, mass, mean HU, %LAA-950, Perc15, %HAA ...) in "
                   "the sidecar, statistics.csv and a histogram beside the preview.")
@click.option("--recalibrate", is_flag=True, help="CT: densitometry on scans whose air is not at -1000 HU, after "
                                                  "rescaling them (air = -1000, soft tissue = 40); refused otherwise.")
@click.option("--roi/--no-roi", default=None,
              help="CT: keep labels only inside the mirrored lung ROI of the model's input chain (default: as the "
                   "checkpoint says; the shipped CT model uses it).")
@click.option("--output-type", "output_types", multiple=True, type=click.Choice(["nifti", "dicom-seg", "rtstruct"]),
              default=("nifti",), show_default=True,
              help="CT from a DICOM series: also (or only) a DICOM-SEG and/or an RTSTRUCT referencing the source "
                   "series (<case>-seg.dcm, <case>-rtstruct.dcm); repeatable.")
@click.option("--preview", is_flag=False, flag_value="auto", default=None, metavar="[PNG|FOLDER]",
              help="Write a picture per case (<case>-preview.png; CT: axial + coronal, and the lung HU histogram), "
                   "beside the mask or at the path given. A folder output has them unless --no-preview.")
@click.option("--no-preview", is_flag=True, help="No pictures (a folder output otherwise gets them for its QC page).")
@click.option("--sw-batch-size", type=click.IntRange(min=1), default=4, show_default=True,
              help="3D models: patches per network call.")
@click.option("--overlap", type=click.FloatRange(0, 0.95), default=0.5, show_default=True,
              help="3D models: sliding-window overlap.")
@click.option("--slice-batch", type=click.IntRange(min=1), default=16, show_default=True,
              help="2D CT models: axial slices per network call.")
@assume_orientation_option
@batch_options
@explained
def infer(inputs, output, modality, output_types, preview, no_preview, assume_orientation, overwrite, scheduler,
          num_parts, part_id, quiet, **option_flags):
    """Segment CT scans and chest radiographs: files, DICOM series folders, or folders of them (mixed).

    A CT mask has the input's exact geometry (uint8, 1 = right lung, 2 = left lung); a radiograph mask
    the picture's own size. A JSON beside each gives volumes (mL) or areas (cm²), the model, timings and
    warnings; a folder output also gets report.html, a QC page that ranks suspicious cases first. Models
    load once per batch; a second run resumes where the first stopped.
    """
    from lungct.engine import infer as run
    from lungct.engine import is_file_output
    from lungct.options import InferOptions
    from lungct.workspace import workdir

    output = output or workdir() / "masks"
    if no_preview:
        preview = None
    elif preview is None and not is_file_output(output):
        preview = "auto"  # the QC page shows every case's picture
    options = InferOptions.from_flags(option_flags)  # every other flag is an inference option of that name
    outcomes = run(list(inputs), output, options, modality=modality, overwrite=overwrite, preview=preview,
                   progress=not quiet, log=say, num_parts=num_parts, part_id=part_id, scheduler=scheduler,
                   output_types=tuple(output_types), assume_orientation=assume_orientation)
    finish_batch(outcomes, output)


@main.command("export")
@click.option("--model", default=None, metavar="PATH|NAME|latest", help="Checkpoint to export (default: the shipped CT model).")
@click.option("--modality", type=click.Choice(["ct", "cxr"]), default="ct", show_default=True,
              help="Which shipped model --model defaults to.")
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="The .onnx file to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing file.")
@explained
def export(model, modality, output, overwrite):
    """Export a model's network as ONNX (with its input chain and labels in <output>.json)."""
    from lungct.export import export_onnx
    from lungct.models import Model

    if output.exists() and not overwrite:
        raise LungctError(output, "exists already (use --overwrite to replace it)")
    report = export_onnx(Model.load(model, None if model else modality, "cpu"), output)
    checked = report["max_difference"]
    say(f"{output}: written" + (f" (ONNX Runtime matches PyTorch within {checked:.1g})" if checked is not None
                                else " (install onnxruntime to check it)"))


def run() -> None:
    """The `lungct` command: main(), then an exit that skips tearing the interpreter down. Every output is
    written, closed and renamed by then, and the pools are joined; freeing torch, SciPy, ITK and the arrays
    one object at a time took 0.5 s of every run (measured). LUNGCT_FULL_EXIT=1 exits normally (profilers,
    coverage)."""
    try:
        main()
        code = 0
    except SystemExit as stop:
        code = stop.code
    if os.environ.get("LUNGCT_FULL_EXIT") == "1":
        sys.exit(code)
    if isinstance(code, str):  # as sys.exit would: the message on stderr, status 1
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say
            pass
    os._exit(int(code or 0))


if __name__ == "__main__":
    run()
