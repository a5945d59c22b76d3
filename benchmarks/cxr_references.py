"""Audit the radiograph references: masks drawn through the heart shadow, films with a visible gastric bubble.

Model-free criteria of lungct.cxr.audit, on every mask of ../shared/data (Montgomery/Shenzhen training and
validation films, the six heart-shadow references set apart, the COVID-era films by patient part):
- heart shadow: `heart_shadow_excess` ≥ HEART_SHADOW_THRESHOLD (the left field's lower medial half as
  bright as the mediastinum where the right field's is not);
- gastric bubble: `gastric_bubble_share` ≥ GASTRIC_BUBBLE_THRESHOLD (a dark region under the left dome).
Writes cxr-references.md into --results (default benchmarks/results) with the counts, the flagged names
and the two recipe lists pipelines/cxr-bases-2d.yaml uses (data.exclude_cases: heart-shadow training
masks; data.case_weights: training films with a gastric bubble). Run by hand:

    python benchmarks/cxr_references.py [--results DIR]
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cxr_disease import covid_part  # noqa: E402  (the benchmark's split of the COVID-era films by patient)

from lungct.cxr.audit import (GASTRIC_BUBBLE_THRESHOLD, HEART_SHADOW_THRESHOLD, gastric_bubble_share,  # noqa: E402
                              heart_shadow_excess)
from lungct.io.radiograph import load_radiograph, read_cxr_mask  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
BUBBLE_WEIGHT = 2.0  # training films with a gastric bubble are drawn twice as often
# Found by eye before the criterion (pipelines/cxr-2d-exclude-heart.yaml): how many it finds again.
BY_EYE = {"CHNCXR_0339_1", "CHNCXR_0007_0", "CHNCXR_0513_1", "CHNCXR_0295_0", "CHNCXR_0337_1", "CHNCXR_0293_0",
          "CHNCXR_0020_0", "CHNCXR_0298_0", "CHNCXR_0250_0", "CHNCXR_0030_0", "CHNCXR_0511_1", "CHNCXR_0423_1",
          "CHNCXR_0527_1", "CHNCXR_0016_0", "CHNCXR_0290_0"}


def films() -> list[dict]:
    """Every film with a mask: name, set (cxr train/validation, heart-shadow apart, covid part), paths."""
    out = []
    for row in csv.DictReader((DATA / "cxr" / "splits.csv").open()):
        out.append({"name": Path(row["file"]).stem, "set": f"{row['dataset']} {row['split']}",
                    "image": DATA / "cxr" / "images" / row["file"], "mask": DATA / "cxr" / "masks" / row["file"]})
    apart = DATA / "cxr" / "heart-shadow-references"
    for image in sorted((apart / "images").glob("*.png")):
        out.append({"name": image.stem, "set": "heart-shadow references (apart)", "image": image,
                    "mask": apart / "masks" / image.name})
    for row in csv.DictReader((DATA / "cxr-covid" / "manifest.csv").open()):
        out.append({"name": Path(row["file"]).stem, "set": f"COVID-era {covid_part(row['patientid'])}",
                    "image": DATA / "cxr-covid" / "images" / row["file"], "mask": DATA / "cxr-covid" / "masks" / row["file"]})
    return out


def audit(film: dict) -> dict:
    image, mask = load_radiograph(film["image"]).array, read_cxr_mask(film["mask"])
    excess = heart_shadow_excess(image, mask)
    return {**film, "heart": excess, "bubble": gastric_bubble_share(image, mask),
            "heart_shadow": excess is not None and excess >= HEART_SHADOW_THRESHOLD}


def training_lists(audited: list[dict]) -> tuple[list[str], dict[str, float]]:
    """(Montgomery/Shenzhen training masks drawn through the heart shadow, {training film with a gastric
    bubble: weight}); a film left out is not weighted."""
    training = [f for f in audited if f["set"].endswith(" train") and not f["set"].startswith("COVID")]
    excluded = sorted(f["name"] for f in training if f["heart_shadow"])
    weights = {f["name"]: BUBBLE_WEIGHT for f in sorted(training, key=lambda f: f["name"])
               if f["bubble"] >= GASTRIC_BUBBLE_THRESHOLD and f["name"] not in excluded}
    return excluded, weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for cxr-references.md")
    args = parser.parse_args()
    if not (DATA / "cxr").is_dir() or not (DATA / "cxr-covid").is_dir():
        sys.exit(f"error: {DATA}: the shared radiographs are missing")
    audited = [audit(film) for film in films()]
    excluded, weights = training_lists(audited)
    lines = ["# Radiograph references: heart shadow and gastric bubble", "",
             "`python benchmarks/cxr_references.py`; criteria in lungct/cxr/audit.py (no model involved). "
             f"Heart shadow: `heart_shadow_excess` ≥ {HEART_SHADOW_THRESHOLD} (share of the left field's lower "
             "medial half brighter than midway between the fields and the mediastinum, minus the right field's "
             f"share). Gastric bubble: `gastric_bubble_share` ≥ {GASTRIC_BUBBLE_THRESHOLD} (largest dark region "
             "under the left dome, as a share of the image).", "",
             "| set | films | heart shadow | gastric bubble |", "|---|---|---|---|"]
    for name in dict.fromkeys(f["set"] for f in audited):
        members = [f for f in audited if f["set"] == name]
        lines.append(f"| {name} | {len(members)} | {sum(f['heart_shadow'] for f in members)} | "
                     f"{sum(f['bubble'] >= GASTRIC_BUBBLE_THRESHOLD for f in members)} |")
    flagged = {f["name"] for f in audited if f["heart_shadow"]}
    validation = [f for f in audited if f["set"].endswith(" validation") and not f["set"].startswith("COVID")]
    lines += ["", f"Found by eye before (pipelines/cxr-2d-exclude-heart.yaml): {len(BY_EYE & flagged)} of {len(BY_EYE)} "
              f"flagged again; not flagged: {', '.join(sorted(BY_EYE - flagged)) or 'none'}.",
              f"Highest Montgomery/Shenzhen validation score: {max(v['heart'] or 0 for v in validation):.3f} "
              f"(threshold {HEART_SHADOW_THRESHOLD}).", "",
              "The COVID-era masks are another annotators' (V7 Labs): many include the lung behind the heart, "
              "so the criterion flags them by the dozen; they stay in training (their own validation part is "
              "scored on their convention).", "",
              "Flagged, heart shadow: " + ", ".join(f"{f['name']} ({f['set']}, {f['heart']:.2f})" for f in
                                                   sorted(audited, key=lambda f: -(f["heart"] or 0)) if f["heart_shadow"]),
              "", "## Recipe lists (pipelines/cxr-bases-2d.yaml)", "",
              f"Montgomery/Shenzhen training masks drawn through the heart shadow, left out of training ({len(excluded)}):",
              "", "    exclude_cases: [" + ", ".join(excluded) + "]", "",
              f"Training films with a visible gastric bubble, drawn {BUBBLE_WEIGHT:g} times as often ({len(weights)}):", "",
              "    case_weights: {" + ", ".join(f"{name}: {w}" for name, w in weights.items()) + "}"]
    text = "\n".join(lines) + "\n"
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "cxr-references.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
