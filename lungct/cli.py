"""The `lungct` command: thin click wrappers that parse options and call the library.

Every failure the library can explain arrives as a LungctError and is printed as one line
("<file>: <what is wrong>") with exit status 1, never as a traceback.
"""
from __future__ import annotations

import functools
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
@click.option("--quiet", is_flag=True, help="No progress bar.")
@explained
def preprocess(inputs, output, config, set_values, recalibrate, workers, overwrite, quiet):
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
                                progress=not quiet, log=lambda m: click.echo(m, err=True))
    counts = {s: sum(o.status == s for o in outcomes) for s in ("ok", "skipped", "failed")}
    click.echo(f"{counts['ok']} done, {counts['skipped']} skipped (already done), {counts['failed']} failed "
               f"-> {out_dir}/summary.csv", err=True)
    if counts["failed"]:
        click.echo(f"failures listed in {out_dir}/failures.csv", err=True)
        sys.exit(1)


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


if __name__ == "__main__":
    main()
