"""What looks wrong with one case: the QC flags and the ranking score of the batch page (lungct.qc).

Every threshold is a module constant with the reason for its value; the page only renders what these
rules say, so a rule can be checked on a sidecar alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

# ----------------------------------------------------------------------------------------- thresholds
# CT lung volumes (mL). Adult total lung capacity is about 4-8 L and residual volume 1.2-2.5 L
# (ERS 1993 reference equations, Quanjer et al.; GLI 2021); chest CT is taken near TLC, sometimes at
# expiration. Below 300 mL a lung is absent, collapsed or mis-segmented even at full expiration.
MIN_LUNG_ML = 300.0
# Both lungs below 1.5 L is under adult residual volume (or a child, or a partial scan); above 9 L is
# beyond even tall men with hyperinflation (severe emphysema reaches 8-9 L): a leak into air outside.
TOTAL_ML_RANGE = (1500.0, 9000.0)
# The right lung (three lobes) holds ~53-55 % of the total, so right/left is ~1.1-1.2 in adults (on a
# PA radiograph the heart shrinks the left field, ~1.1-1.3). The band is wide on purpose: it catches a
# half-missing lung or a leak across the midline, not anatomy.
RL_RATIO_RANGE = (0.6, 2.0)
# Radiograph lung-field areas (cm², only when pixel spacing is known). On 40 Montgomery reference
# masks (0.0875 mm pixels) the total is 150-600 cm² (median ~360), each field well above 60 cm².
MIN_FIELD_CM2 = 30.0
TOTAL_CM2_RANGE = (120.0, 900.0)
# Adult lungs span 200-300 mm head to foot: a CT input covering less (one slice, a slab) has no
# whole-lung volumes, so the volume ranges are not checked on it (a missing lung still is).
MIN_CHEST_COVERAGE_MM = 150.0
# Post-processing keeps the main component per lung; a second one is legitimate (a bulla, a lobe cut
# by the field of view), more than two means a fragmented prediction.
MAX_COMPONENTS = 2
# Agreement with the flipped input's prediction (CT with --tta: anterior-posterior, which keeps right
# and left; radiographs: the mirrored film, whose heart is then on the wrong side, so agreement is lower
# even on good films). Thresholds from the shared data: about the 5th percentile of good cases.
MIN_FLIP_DICE = {"ct": 0.95, "cxr": 0.85}
# Share of the voxels that may be lung on which the network hesitates (probability 0.35-0.65): a boundary
# layer on good cases; far more means it is undecided over a whole region. Radiographs, checked on the 306
# films of benchmarks/results/cxr-disease.json (clean, COVID-era, synthetic opacities): flip Dice < 0.85 or
# uncertain > 10 % flags 44 films (14 %), among them 11 of the 14 with Dice below 0.85; the uncertain
# share follows the Dice more closely (r = -0.70) than the flip agreement does (r = 0.42).
MAX_UNCERTAIN_FRACTION = {"ct": 0.10, "cxr": 0.10}
# Image noise inside the aerated lung (lungct.ct.noise, HU; the SD white noise would have). lungct infer on
# the 201 shared ct-slices: median 94, 95th percentile 119, 99th 162; the slice the data's README calls
# noisy (ID_0049) reads 272, the next 246 (ID_0264), 2.5-3x the median. Whole volumes read far less (chest-cta
# 30, imlab 46-52, copdgene 17 HU). Above 200 HU densities and boundaries are less certain than the network's
# own confidence says.
MAX_LUNG_NOISE_HU = 200.0

SEVERITY_WEIGHT = {"error": 10.0, "warning": 3.0}  # one error outranks three warnings
FAILED_SCORE = 100.0  # a failed case has no output at all: always at the top
LUNGS = ("right_lung", "left_lung")


@dataclass(frozen=True)
class Flag:
    code: str
    severity: str  # "error" (red) or "warning" (amber)
    text: str


def _num(value) -> float | None:
    """A finite float, or None (old sidecars may hold null, strings or NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _dict(record: dict, key: str) -> dict:
    value = record.get(key)
    return value if isinstance(value, dict) else {}


def modality(record: dict) -> str:
    """"cxr" or "ct"; older radiograph sidecars lack the field but have areas or a PNG mask."""
    if record.get("modality") in ("ct", "cxr"):
        return record["modality"]
    mask = str(record.get("mask") or "").lower()
    return "cxr" if "areas_cm2" in record or mask.endswith(".png") else "ct"


def measures(record: dict) -> tuple[dict, str]:
    """({right_lung, left_lung, total, ...}: numbers, unit): volumes for CT, areas for radiographs."""
    key, unit = ("areas_cm2", "cm²") if modality(record) == "cxr" else ("volumes_ml", "mL")
    return {k: _num(v) for k, v in _dict(record, key).items()}, unit


def rl_ratio(record: dict) -> float | None:
    values, _ = measures(record)
    right, left = values.get("right_lung"), values.get("left_lung")
    return right / left if right is not None and left else None


def key_statistics(record: dict) -> dict:
    """Whole-lung mean HU, %LAA-950 and Perc15 (both lungs), or {} when absent or refused."""
    whole = _dict(_dict(_dict(record, "statistics"), "both"), "whole")
    return {k: _num(whole.get(k)) for k in ("mean_hu", "laa950_pct", "perc15_hu")}


def coverage_mm(record: dict) -> float | None:
    """Head-to-foot extent of the input (mm) from its sidecar geometry; None when not recorded."""
    geometry = _dict(record, "input")
    try:
        shape, spacing, direction = geometry["shape"], geometry["spacing_mm"], geometry["direction"]
        return sum(abs(float(direction[2][i])) * float(spacing[i]) * int(shape[i]) for i in range(3))
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def qc_flags(record: dict) -> list[Flag]:
    """What looks wrong with one case, worst first; thresholds are the module constants above."""
    flags: list[Flag] = []
    status = record.get("status") or "ok"
    if status != "ok":
        reason = record.get("reason") or record.get("error") or ""
        flags.append(Flag("failed", "error", f"{status}: {reason}".rstrip(": ")))
    is_cxr = modality(record) == "cxr"
    values, unit = measures(record)
    has_values = bool(_dict(record, "areas_cm2" if is_cxr else "volumes_ml"))
    split = any(k in values or k in _dict(record, "labels") for k in LUNGS)
    low = MIN_FIELD_CM2 if is_cxr else MIN_LUNG_ML
    low_total, high_total = TOTAL_CM2_RANGE if is_cxr else TOTAL_ML_RANGE
    whole_chest = is_cxr or (coverage_mm(record) or math.inf) >= MIN_CHEST_COVERAGE_MM
    if status == "ok" and not has_values and not is_cxr:
        flags.append(Flag("no_volumes", "warning", "no lung volumes recorded"))
    if has_values and split:
        for lung in LUNGS:
            side = lung.split("_")[0]
            value = values.get(lung)
            if not value:
                flags.append(Flag(f"missing_{lung}", "error", f"{side} lung missing"))
            elif value < low and whole_chest:
                flags.append(Flag(f"tiny_{lung}", "error", f"{side} lung tiny: {value:.0f} {unit} < {low:.0f}"))
        ratio = rl_ratio(record)
        if ratio is not None and values.get("right_lung") and not RL_RATIO_RANGE[0] <= ratio <= RL_RATIO_RANGE[1]:
            flags.append(Flag("rl_ratio", "warning", f"right/left ratio {ratio:.2f} outside "
                                                     f"{RL_RATIO_RANGE[0]}-{RL_RATIO_RANGE[1]}"))
    total = values.get("total")
    if total is not None and total > 0 and whole_chest and not low_total <= total <= high_total:
        shown = f"{total / 1000:.2f} L" if not is_cxr else f"{total:.0f} cm²"
        bounds = f"{low_total / 1000:g}-{high_total / 1000:g} L" if not is_cxr else f"{low_total:g}-{high_total:g} cm²"
        flags.append(Flag("total_range", "warning", f"total {shown} outside the adult range {bounds}"))
    for lung, count in _dict(record, "components").items():
        if (_num(count) or 0) > MAX_COMPONENTS:
            flags.append(Flag("components", "warning", f"{lung.replace('_', ' ')}: {_num(count):.0f} components"))
    pipeline_flags = record.get("flags") if isinstance(record.get("flags"), list) else []
    if _dict(record, "hu_calibration").get("status") == "miscalibrated" or "hu_miscalibrated" in pipeline_flags:
        air = _num(_dict(record, "hu_calibration").get("air_stored"))
        flags.append(Flag("hu_miscalibrated", "warning",
                          "HU calibration off" + (f": air reads {air:.0f}, not -1000" if air is not None else "")))
    if "orientation_assumed" in pipeline_flags:  # right and left rest on what the user said
        flags.append(Flag("orientation_assumed", "warning", "orientation assumed (--assume-orientation): the "
                                                            "NIfTI header states none"))
    confidence = _dict(record, "confidence")
    flip, uncertain = _num(confidence.get("flip_dice")), _num(confidence.get("uncertain_fraction"))
    kind = "cxr" if modality(record) == "cxr" else "ct"
    if flip is not None and flip < MIN_FLIP_DICE[kind]:
        flags.append(Flag("low_flip_dice", "warning", f"flip Dice {flip:.3f} < {MIN_FLIP_DICE[kind]}"))
    if uncertain is not None and uncertain > MAX_UNCERTAIN_FRACTION[kind]:
        flags.append(Flag("uncertain", "warning", f"{uncertain:.1%} of the mask uncertain "
                                                  f"(> {MAX_UNCERTAIN_FRACTION[kind]:.0%})"))
    noise = _num(confidence.get("lung_noise_hu"))
    if noise is not None and noise > MAX_LUNG_NOISE_HU:
        flags.append(Flag("noisy", "warning", f"noisy image: {noise:.0f} HU noise in the lungs "
                                              f"(> {MAX_LUNG_NOISE_HU:.0f})"))
    for other in sorted(set(map(str, pipeline_flags)) - {"hu_miscalibrated", "orientation_assumed"}):
        flags.append(Flag(other, "warning", f"pipeline flag: {other}"))
    warnings = record.get("warnings") if isinstance(record.get("warnings"), list) else []
    if warnings:
        flags.append(Flag("warnings", "warning", f"{len(warnings)} pipeline warning{'s' * (len(warnings) > 1)}"))
    return sorted(flags, key=lambda f: f.severity != "error")  # stable: errors first, order kept within


def suspicion(record: dict) -> float:
    """Ranking score: severity weights summed, plus (1 - flip Dice) so that among equally flagged cases
    the one the model is less sure of comes first."""
    flags = qc_flags(record)
    score = sum(FAILED_SCORE if f.code == "failed" else SEVERITY_WEIGHT.get(f.severity, 1.0) for f in flags)
    flip = _num(_dict(record, "confidence").get("flip_dice"))
    return round(score + (min(max(1.0 - flip, 0.0), 0.99) if flip is not None else 0.0), 4)
