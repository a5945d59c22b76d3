"""`lungct evaluate`: predicted masks against reference masks, per case and per label, to CSV.

Pairs are matched by case name: a volume file's stem, or a prep-style folder `<case>/lungs.nii.gz`.
Pairs must share their grid exactly; with `resample` the prediction is copied onto the reference grid
by nearest neighbour (labels never blend), otherwise the pair is refused with what differs.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lungct.errors import LungctError
from lungct.geometry import orientation_code, voxel_spacing
from lungct.io.atomic import atomic_path, open_text
from lungct.io.nifti_orientation import NIBABEL_GUESS
from lungct.io.volumes import PICTURE_SUFFIXES, VOLUME_SUFFIXES, read_volume, stem_of, suffix_of

DERIVED_PICTURES = ("-labels", "-preview", "-histogram")  # written beside masks by `lungct infer`
from lungct.geometry import labels_to_grid
from lungct.io.radiograph import read_cxr_mask
from lungct.metrics import compare_labels, summarise

ROW_FIELDS = ["case", "label", "name", "dice", "iou", "hd95_mm", "assd_mm", "ref_ml", "pred_ml",
              "volume_diff_ml", "abs_volume_diff_ml", "resampled", "prediction", "reference"]
SUMMARY_COLUMNS = ["label", "metric", "n", "mean", "sd", "min", "max"]


@dataclass
class Evaluation:
    rows: list[dict] = field(default_factory=list)
    summary: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # one line each: "<file>: <reason>"
    unmatched: list[str] = field(default_factory=list)  # notes on cases found on one side only


# ------------------------------------------------------------------------------------------ matching


def mask_files(folder: Path, mask_name: str = "lungs.nii.gz") -> dict[str, Path]:
    """{case: mask file} in a folder: volume files by stem, and `<case>/<mask_name>` sub-folders."""
    found: dict[str, Path] = {}
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith("."):
            continue
        if path.is_file() and suffix_of(path) in VOLUME_SUFFIXES:
            found[stem_of(path)] = path  # over a same-named preview picture
        elif path.is_file() and suffix_of(path) in PICTURE_SUFFIXES and not stem_of(path).endswith(DERIVED_PICTURES):
            found.setdefault(stem_of(path), path)  # radiograph masks; a CT mask's preview never wins
        elif path.is_dir() and (path / mask_name).is_file():
            found[path.name] = path / mask_name
    return found


def match_pairs(prediction: Path, reference: Path, mask_name: str = "lungs.nii.gz"):
    """([(case, prediction file, reference file)], notes about cases found on one side only)."""
    prediction, reference = Path(prediction), Path(reference)
    for path in (prediction, reference):
        if not path.exists():
            raise LungctError(path, "no such file or folder")
    if prediction.is_file() and reference.is_file():
        return [(stem_of(prediction), prediction, reference)], []
    if prediction.is_file() != reference.is_file():
        raise LungctError(prediction if prediction.is_dir() else reference,
                          "is a folder but the other input is a file: give two files or two folders")
    preds, refs = mask_files(prediction, mask_name), mask_files(reference, mask_name)
    pairs = [(case, preds[case], refs[case]) for case in sorted(preds.keys() & refs.keys())]
    notes = []
    if refs.keys() - preds.keys():
        notes.append(_listing("reference(s) have no prediction", refs.keys() - preds.keys()))
    if preds.keys() - refs.keys():
        notes.append(_listing("prediction(s) have no reference", preds.keys() - refs.keys()))
    if not pairs:
        raise LungctError(prediction, f"no case name in common with {reference} (cases are matched by file "
                                      f"stem, or by folder name for <case>/{mask_name})")
    return pairs, notes


def _listing(what: str, names) -> str:
    names = sorted(names)
    return f"{len(names)} {what}: {', '.join(names[:5])}{' ...' if len(names) > 5 else ''}"


# ------------------------------------------------------------------------------------------ geometry


def geometry_difference(shape_a, affine_a, shape_b, affine_b) -> str | None:
    """What differs between two grids (shape, spacing, origin, direction), or None when they match."""
    if tuple(shape_a) != tuple(shape_b):
        return f"shape {tuple(shape_a)} vs {tuple(shape_b)}"
    spacing_a, spacing_b = voxel_spacing(affine_a), voxel_spacing(affine_b)
    if not np.allclose(spacing_a, spacing_b, rtol=1e-4, atol=1e-5):
        return f"spacing {_fmt(spacing_a)} vs {_fmt(spacing_b)} mm"
    if not np.allclose(affine_a[:3, :3] / spacing_a, affine_b[:3, :3] / spacing_b, atol=1e-4):
        return f"direction {orientation_code(affine_a)} vs {orientation_code(affine_b)} (axes point elsewhere)"
    if not np.allclose(affine_a[:3, 3], affine_b[:3, 3], atol=1e-3 + 1e-3 * spacing_a.max()):
        return f"origin {_fmt(affine_a[:3, 3])} vs {_fmt(affine_b[:3, 3])} mm"
    return None


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def read_labels(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(integer label array, affine) of a mask file."""
    if suffix_of(path) in PICTURE_SUFFIXES:  # a radiograph mask: 0/255 or 0/1 (or 1 = right, 2 = left)

        try:
            array = read_cxr_mask(path)
        except LungctError:
            from PIL import Image

            with Image.open(path) as picture:
                array = np.asarray(picture.convert("L"))
        return array[..., None].astype(np.uint8), np.eye(4)
    array, affine, _ = read_volume(path, NIBABEL_GUESS)  # two unoriented masks compare on the same guess
    if array.dtype.kind == "f":
        array = np.rint(array)
    if array.min() < 0 or array.max() > 255:
        raise LungctError(path, f"is not a label mask (values {array.min():g} to {array.max():g})")
    return array.astype(np.uint8, copy=False), affine


def label_names(prediction: Path) -> dict[str, str]:
    """{value: name} from the JSON `lungct infer` writes beside a mask, when there is one."""
    sidecar = prediction.with_name(stem_of(prediction) + ".json")
    try:
        labels = json.loads(sidecar.read_text()).get("labels", {})
        return {str(int(value)): str(name) for name, value in labels.items()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def evaluate_pair(case: str, prediction: Path, reference: Path, resample: bool = False,
                  merge: bool = False, label: str | None = None) -> list[dict]:
    """Rows of metrics for one case; raises LungctError when the grids differ and not `resample`.
    `label` (a name from the prediction's sidecar, or a value) compares only that label of the prediction
    with the reference's whole foreground, e.g. the tumour of a lungs + tumour map with a tumour mask."""
    pred, pred_affine = read_labels(prediction)
    ref, ref_affine = read_labels(reference)
    difference = geometry_difference(pred.shape, pred_affine, ref.shape, ref_affine)
    if difference and not resample:
        raise LungctError(prediction, f"geometry differs from the reference {reference}: {difference} "
                                      "(--resample copies the prediction onto the reference grid)")
    if difference:
        pred = labels_to_grid(pred, pred_affine, ref.shape, ref_affine)
    names = label_names(prediction)
    if label is not None:
        value = int(label) if str(label).isdigit() else next((int(v) for v, n in names.items() if n == label), None)
        if value is None:
            raise LungctError(prediction, f"has no label '{label}' (its sidecar names {sorted(names.values())})")
        pred, ref, merge = (pred == value).astype(np.uint8), (ref > 0).astype(np.uint8), True
        names = {"all": names.get(str(value), str(label))}
    rows = compare_labels(pred, ref, ref_affine, merge=merge)
    for row in rows:
        row.update(case=case, name=names.get(row["label"], "lungs" if row["label"] == "all" else ""),
                   resampled=bool(difference), prediction=str(prediction), reference=str(reference))
    return rows


# ------------------------------------------------------------------------------------------ batch


def evaluate(prediction: Path, reference: Path, resample: bool = False, merge: bool = False,
             mask_name: str = "lungs.nii.gz", progress: bool = False, log=print, label: str | None = None) -> Evaluation:
    """Evaluate every matched pair; a pair that fails is reported (one line) and skipped."""
    from tqdm import tqdm

    pairs, notes = match_pairs(prediction, reference, mask_name)
    result = Evaluation(unmatched=notes)
    for note in notes:
        log(f"note: {note}")
    for case, pred_path, ref_path in tqdm(pairs, desc="evaluate", unit="case", disable=not progress or len(pairs) < 2,
                                          dynamic_ncols=True):
        try:
            result.rows += evaluate_pair(case, pred_path, ref_path, resample, merge, label)
        except LungctError as err:
            result.failures.append(str(err))
            log(f"FAILED {err}")
    result.summary = summarise(result.rows)
    return result


def write_rows(path: Path, rows: list[dict], columns: list[str]) -> Path:
    """CSV written atomically; floats with 6 significant digits, NaN as an empty cell."""
    with atomic_path(path) as tmp:
        with open_text(tmp) as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({k: _cell(row.get(k)) for k in columns})
    return Path(path)


def _cell(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return value


def summary_path(csv_path: Path) -> Path:
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.stem + "-summary.csv")


def format_summary(summary: list[dict], cases: int) -> str:
    """A plain-text table: one line per label and metric, mean ± sd [min, max] (n)."""
    lines = [f"{cases} case(s)", f"{'label':<8}{'metric':<20}{'mean':>10}{'sd':>10}{'min':>10}{'max':>10}{'n':>6}"]
    for s in summary:
        lines.append(f"{s['label']:<8}{s['metric']:<20}" + "".join(f"{s[k]:>10.4g}" for k in ("mean", "sd", "min", "max"))
                     + f"{s['n']:>6}")
    return "\n".join(lines)
