"""Benchmark the two lung conventions (default `lungs`, lesion-inclusive; `aerated`, without dense lesions).

Run by hand (not a test); writes conventions.md and conventions.json into --results (default benchmarks/results):

    python benchmarks/conventions.py                          # the shipped model, all 201 ct-slices
    python benchmarks/conventions.py --model runs/x/best.pt --quick --results /tmp/conv   # 20 ct-slices

1. Real tumours (radiomics-lung1/2 with their tumour labels): share of tumour voxels in each mask.
2. Synthetic juxtapleural lesions, inserted here into shared normal volumes with a generator of this script's
   own (not lungct.ct.lesions, the model's training generator): seeded soft-tissue ellipsoids 1-4 cm, smooth
   texture, partial-volume edge, against the chest wall, the spine, the mediastinum or the diaphragm; at least
   half of each ellipsoid lies inside the lung (a lesion mostly outside it is a chest-wall mass, outside the
   visceral pleura: until 2026-12-02 such slivers, 5-7 mm deep into the lung, were inserted and counted too).
3. Dice of both conventions, the classical chain (lungct preprocess) and the textbook threshold recipe on the
   shared references. 4. Seconds per case. Every segmentation runs once per convention.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from lungct.ct.preprocess import preprocess_scan
from lungct.ct.transforms.intensity import estimate_calibration
from lungct.ct.transforms.lungs import segment_lungs
from lungct.engine import load_segmenter, make_segmenter
from lungct.options import InferOptions
from lungct.evaluate import read_labels
from lungct.geometry import voxel_ml, voxel_spacing
from lungct.io import Scan, load_scan
from lungct.metrics import overlap
from lungct.morphology import dilate_mm, fill_holes_2d
from lungct.recipes import Chain, load_recipe

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
VOLUMES = DATA / "ct-volumes"
SEED = 20250101
TUMOURS = ("radiomics-lung1", "radiomics-lung2")
SYNTHETIC = (("imlab-id001", "image.nii.gz", "lungs.nii.gz"), ("copdgene-ct64", "image.nrrd", "lungs-lr.nii.gz"),
             ("chest-cta", "image.nii.gz", None))  # None: lung mask from lungct.ct.transforms.lungs.segment_lungs
REFERENCES = (("imlab-id001", "image.nii.gz", "lungs.nii.gz"), ("imlab-id002", "image.nii.gz", "lungs.nii.gz"),
              ("copdgene-ct64", "image.nrrd", "lungs-lr.nii.gz"))
WITH_LESIONS = ("imlab-id002",)  # nodules, holes in its reference: not a case for "default within 0.01 of aerated"
SITES = ("chest wall", "spine", "mediastinum", "diaphragm")
CONVENTIONS = ("lungs", "aerated")
SECONDS: dict = {c: {"volumes": [], "ct-slices": []} for c in CONVENTIONS}


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def calibration(array: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) with HU = stored * slope + intercept: air -> -1000 and tissue -> 40 when the scan's
    outside air is more than 50 HU off, as lungct's HU check does; identity otherwise."""
    air, tissue = (estimate_calibration(array)[k] for k in ("air", "tissue"))
    if air is None or abs(air + 1000) <= 50:
        return 1.0, 0.0
    slope = 1040.0 / (tissue - air) if tissue is not None and tissue > air + 200 else 1.0
    return slope, -1000.0 - slope * air


def segment(segmenters: dict, scan, group: str) -> dict:
    """{convention: labels} from one run per convention, each timed."""
    out = {}
    for name, segmenter in segmenters.items():
        started = time.perf_counter()
        out[name] = segmenter.segment(scan).labels
        SECONDS[name][group].append(time.perf_counter() - started)
    return out


def textbook(array: np.ndarray) -> np.ndarray:
    """Air < -320 HU after the scan's own calibration, air connected to the in-plane border dropped, the two
    largest components kept, holes filled per axial slice."""
    slope, intercept = calibration(array)
    air = array * slope + intercept < -320
    labels, count = ndi.label(air)
    border = np.unique(np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel()]))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    sizes[border], sizes[0] = 0, 0
    keep = [v for v in np.argsort(sizes)[::-1][:2] if sizes[v] > 0]
    return fill_holes_2d(np.isin(labels, keep))


def dice(masks: dict, truth: np.ndarray) -> dict:
    """Whole-lung Dice per method, and right/left (1/2) where the reference and the method have them."""
    out = {}
    for method, mask in masks.items():
        row = {"whole": overlap(mask > 0, truth > 0)["dice"]}
        if truth.max() > 1 and mask.max() > 1:
            row.update(right=overlap(mask == 1, truth == 1)["dice"], left=overlap(mask == 2, truth == 2)["dice"])
        out[method] = row
    return out


# ----------------------------------------------------------------------------- the lesion generator


def pleural_sites(lungs: np.ndarray, bone: np.ndarray, affine: np.ndarray) -> dict:
    """{site: (voxel indices, outward unit normals in RAS)} of lung surface voxels facing each structure."""
    spacing = voxel_spacing(affine)
    smooth = ndi.gaussian_filter(lungs.astype(np.float32), 2.0 / spacing)
    idx = np.argwhere(lungs & ~ndi.binary_erosion(lungs))
    grad = np.stack([smooth[tuple(np.clip(idx + e, 0, np.array(lungs.shape) - 1).T)]
                     - smooth[tuple(np.clip(idx - e, 0, np.array(lungs.shape) - 1).T)] for e in np.eye(3, dtype=int)], 1)
    normal = -grad @ np.linalg.inv(affine[:3, :3])  # index gradient -> world gradient, pointing out of the lung
    normal /= np.linalg.norm(normal, axis=1, keepdims=True) + 1e-9
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    inside = np.argwhere(lungs)[:: 20] @ affine[:3, :3].T + affine[:3, 3]
    lo, hi = np.percentile(inside[:, 0], [1, 99])
    counts, edges = np.histogram(inside[:, 0], bins=np.arange(lo + 0.3 * (hi - lo), lo + 0.7 * (hi - lo), 5.0))
    mid_x, mid_y = edges[np.argmin(counts)] + 2.5, np.median(inside[:, 1])  # the mediastinal gap
    z_lo, z_hi = np.percentile(inside[:, 2], [10, 90])
    lateral, side = np.abs(world[:, 0] - mid_x), np.sign(world[:, 0] - mid_x)
    near, far = np.percentile(lateral, [35, 60])
    bones = np.argwhere(bone)
    xy = bones @ affine[:2, :3].T + affine[:2, 3]
    spine = np.zeros(bone.shape, bool)  # bone near the posterior midline: vertebrae and rib heads
    spine[tuple(bones[(np.abs(xy[:, 0] - mid_x) < 30) & (xy[:, 1] < mid_y)].T)] = True
    to_spine = ndi.distance_transform_edt(~spine, sampling=spacing)[tuple(idx.T)]
    out_x, flat = normal[:, 0] * side, (np.abs(normal[:, 2]) < 0.5) & (world[:, 2] > z_lo) & (world[:, 2] < z_hi)
    chosen = {"chest wall": flat & (out_x > 0.7) & (lateral > far),
              "spine": flat & (to_spine < 10 + spacing.max()) & (world[:, 1] < mid_y),
              "mediastinum": flat & (out_x < -0.7) & (world[:, 1] > mid_y - 20) & (lateral < near),
              "diaphragm": (normal[:, 2] < -0.7) & (world[:, 2] < np.percentile(inside[:, 2], 30))}
    return {site: (idx[m], normal[m]) for site, m in chosen.items()}


def insert_lesions(array, lungs, affine, rng, count: int = 5):
    """Insert `count` non-overlapping soft-tissue ellipsoids against the pleura, each at least half inside the
    lung (in place); their records."""
    spacing = voxel_spacing(affine)
    slope, intercept = calibration(array)
    bone = array * slope + intercept >= 200
    allowed = dilate_mm(lungs, 2.0, spacing) & ~bone  # the lesion replaces lung (and its rim), never bone
    sites, taken, records = pleural_sites(lungs, bone, affine), np.zeros(lungs.shape, bool), []
    offsets = np.stack(np.meshgrid(*[[-1 / 3, 0, 1 / 3]] * 3, indexing="ij"), -1).reshape(-1, 3)
    for n in range(count):
        site = SITES[n] if n < len(SITES) else str(rng.choice(SITES))
        for _ in range(50):
            voxel, normal = (a[rng.integers(len(a))] for a in sites[site])
            axes = rng.uniform(10, 40) / 2 * np.array([1.0, *rng.uniform(0.6, 1.0, 2)])
            q, r = np.linalg.qr(rng.normal(size=(3, 3)))
            rotation = q * np.sign(np.diag(r))
            centre = affine[:3, :3] @ voxel + affine[:3, 3] - normal * rng.uniform(0.3, 0.7) * axes.min()
            half = np.ceil(axes.max() / spacing).astype(int) + 2
            ci = np.round(np.linalg.solve(affine[:3, :3], centre - affine[:3, 3])).astype(int)
            box = tuple(slice(max(c - h, 0), min(c + h + 1, s)) for c, h, s in zip(ci, half, lungs.shape))
            grid = np.moveaxis(np.mgrid[box], 0, -1)[..., None, :] + offsets  # supersampled voxel positions
            local = (grid @ affine[:3, :3].T + affine[:3, 3] - centre) @ rotation / axes
            fraction = ((local ** 2).sum(-1) <= 1).mean(-1) * allowed[box]
            mask = fraction >= 0.5
            near = ndi.binary_dilation(mask, iterations=2)
            ellipsoid = 4 / 3 * np.pi * np.prod(axes) / np.prod(spacing)  # voxels
            if mask.sum() < max(8, ellipsoid / 2) or (near & taken[box]).any() or not (near & ~lungs[box]).any():
                continue  # mostly outside the lung (a chest-wall mass), overlapping another lesion, or off the pleura
            hu = rng.uniform(10, 60)
            texture = ndi.gaussian_filter(rng.normal(size=mask.shape), 1.5 / spacing)
            value = hu + 15 * texture / (texture.std() + 1e-9) + rng.normal(0, 8, mask.shape)
            array[box] = array[box] * (1 - fraction) + (value - intercept) / slope * fraction
            taken[box] |= mask
            records.append({"site": site, "box": box, "mask": mask, "hu": round(hu, 1),
                            "diameters_mm": [round(2 * a, 1) for a in axes], "voxels": int(mask.sum())})
            break
    return records


# ----------------------------------------------------------------------------------------- the parts


def tumours(segmenters) -> list[dict]:
    rows = []
    for case in TUMOURS:
        scan, label = load_scan(VOLUMES / case / "image.nrrd"), load_scan(VOLUMES / case / "tumour.nrrd")
        same_grid = label.array.shape == scan.array.shape and np.allclose(label.affine, scan.affine, atol=1e-3)
        assert same_grid, f"{case}: tumour.nrrd is not on the image's grid"
        tumour = label.array > 0
        masks = segment(segmenters, scan, "volumes")
        rows.append({"case": case, "same_grid": same_grid, "tumour_ml": round(tumour.sum() * voxel_ml(scan.affine), 1),
                     **{f"in_{c}": float((masks[c][tumour] > 0).mean()) for c in CONVENTIONS},
                     **{f"{c}_ml": round(float((masks[c] > 0).sum() * voxel_ml(scan.affine)), 1) for c in CONVENTIONS}})
    return rows


def synthetic(segmenters) -> list[dict]:
    rows = []
    for i, (case, image, reference) in enumerate(SYNTHETIC):
        scan = load_scan(VOLUMES / case / image)
        lungs = (read_labels(VOLUMES / case / reference)[0] if reference else segment_lungs(scan.array, scan.affine)[0]) > 0
        lungs = fill_holes_2d(lungs)  # vessels inside the lungs may be replaced too
        array = scan.array.astype(np.float32)
        records = insert_lesions(array, lungs, scan.affine, np.random.default_rng([SEED, i]))
        masks = segment(segmenters, Scan(f"{case}+lesions", array, scan.affine, [], "memory"), "volumes")
        for r in records:
            box, mask = r.pop("box"), r.pop("mask")
            inside = mask & lungs[box]  # the generator may replace up to 2 mm of the wall too: tissue for tissue
            r.update(case=case, **{f"in_{c}": float((masks[c][box][mask] > 0).mean()) for c in CONVENTIONS},
                     beyond_reference=float(1 - inside.sum() / mask.sum()),
                     inside_in_lungs=float((masks["lungs"][box][inside] > 0).mean()), inside_voxels=int(inside.sum()))
        rows += records
    return rows


def references(segmenters, slices: int | None) -> dict:
    out = {"volumes": {}, "ct-slices": []}
    chain = Chain.of(load_recipe("preprocess"))
    for case, image, reference in REFERENCES:
        scan, truth = load_scan(VOLUMES / case / image), read_labels(VOLUMES / case / reference)[0]
        masks = segment(segmenters, scan, "volumes")
        masks.update(classical=preprocess_scan(scan, chain=chain).lungs_native, textbook=textbook(scan.array))
        out["volumes"][case] = dice(masks, truth)
    chain = Chain.of(load_recipe("preprocess", {"CheckHUCalibrationd.recalibrate": True}))
    images = sorted((DATA / "ct-slices/images").glob("*.nii.gz"))
    for path in images[:: max(1, len(images) // slices)][:slices] if slices else images:
        scan, truth = load_scan(path), read_labels(DATA / "ct-slices/masks" / path.name)[0]
        masks = segment(segmenters, scan, "ct-slices")
        masks.update(classical=preprocess_scan(scan, chain=chain).lungs_native, textbook=textbook(scan.array))
        out["ct-slices"].append({"case": path.name[:-7], **{m: d["whole"] for m, d in dice(masks, truth).items()}})
    return out


# ------------------------------------------------------------------------------------------- report


def summarise(report: dict) -> None:
    """Summaries and targets (aerated against the threshold-drawn references) added to the report."""
    lesions, rows, vol = report["synthetic"], report["references"]["ct-slices"], report["references"]["volumes"]
    total = sum(r["voxels"] for r in lesions)
    report["synthetic_summary"] = {**{f"in_{c}": sum(r[f"in_{c}"] * r["voxels"] for r in lesions) / total for c in CONVENTIONS},
                                   "min_in_lungs": min(r["in_lungs"] for r in lesions),
                                   "inside_in_lungs": sum(r["inside_in_lungs"] * r["inside_voxels"] for r in lesions)
                                   / sum(r["inside_voxels"] for r in lesions)}
    sl = report["ct_slices_summary"] = {"n": len(rows)}
    for m in ("lungs", "aerated", "classical", "textbook"):
        v = [r[m] for r in rows]
        sl[m] = {"mean": statistics.mean(v), "sd": statistics.pstdev(v), "min": min(v), "below_0.95": sum(x < 0.95 for x in v)}
    mean_vol = statistics.mean(d["aerated"]["whole"] for d in vol.values())
    worst_rl = min(vol["copdgene-ct64"]["aerated"][k] for k in ("right", "left"))
    margin = min([d["aerated"]["whole"] - d["classical"]["whole"] for d in vol.values()]
                 + [sl["aerated"]["mean"] - sl["classical"]["mean"]])
    gap = max([abs(d["lungs"]["whole"] - d["aerated"]["whole"]) for c, d in vol.items() if c not in WITH_LESIONS]
              + [abs(sl["lungs"]["mean"] - sl["aerated"]["mean"])])
    report["targets"] = [("ct-slices mean ≥ 0.988", sl["aerated"]["mean"], sl["aerated"]["mean"] >= 0.988),
                         ("ct-slices below 0.95: none", sl["aerated"]["below_0.95"], sl["aerated"]["below_0.95"] == 0),
                         ("imlab-id001/002 + copdgene mean ≥ 0.988", mean_vol, mean_vol >= 0.988),
                         ("copdgene right and left ≥ 0.985", worst_rl, worst_rl >= 0.985),
                         ("not worse than the classical chain (worst margin)", margin, margin >= 0),
                         ("default within 0.01 of aerated without lesions (largest gap)", gap, gap <= 0.01)]
    report["seconds"] = {c: {g: statistics.median(v) if v else None for g, v in SECONDS[c].items()} for c in CONVENTIONS}
    report["seconds_all"] = SECONDS


def write_report(report: dict, results: Path) -> None:
    sl, s = report["ct_slices_summary"], report["synthetic_summary"]
    L = ["# Lung conventions benchmark", "", f"Model `{report['model']}`, {report['date']}, seed {report['seed']}; "
         f"default = `lungs` (lesion-inclusive), aerated = `--aerated`; {sl['n']} ct-slices. Every number: conventions.json.",
         "", "## 1. Real tumours (targets: ≥ 95 % of tumour voxels in default, ≤ 10 % in aerated)", "",
         "| case | tumour (mL) | in default | in aerated | default / aerated lungs (mL) | pass |", "|---|---|---|---|---|---|"]
    L += [f"| {r['case']} | {r['tumour_ml']} | {r['in_lungs']:.1%} | {r['in_aerated']:.1%} | {r['lungs_ml']} / "
          f"{r['aerated_ml']} | {mark(r['in_lungs'] >= 0.95 and r['in_aerated'] <= 0.10)} |" for r in report["tumours"]]
    L += ["", "## 2. Synthetic juxtapleural lesions (targets: ≥ 95 % of all lesion voxels in default, no lesion below 80 %)",
          "", "| volume | site | diameters (mm) | HU | voxels | in default | in aerated | beyond the reference lung "
          "| its part inside the reference lung, in default |", "|---|---|---|---|---|---|---|---|---|"]
    L += [f"| {r['case']} | {r['site']} | {' × '.join(map(str, r['diameters_mm']))} | {r['hu']} | {r['voxels']} "
          f"| {r['in_lungs']:.1%} {mark(r['in_lungs'] >= 0.8)} | {r['in_aerated']:.1%} | {r['beyond_reference']:.1%} "
          f"| {r['inside_in_lungs']:.1%} |" for r in report["synthetic"]]
    L += ["", f"All lesion voxels: {s['in_lungs']:.1%} in default {mark(s['in_lungs'] >= 0.95)}, {s['in_aerated']:.1%} in "
          f"aerated; lowest lesion in default {s['min_in_lungs']:.1%} {mark(s['min_in_lungs'] >= 0.8)}. "
          f"Of the lesion voxels inside the reference lung, {s['inside_in_lungs']:.1%} are in default (the rest of a "
          "lesion replaced up to 2 mm of chest wall or mediastinum beyond it, soft tissue for soft tissue: no "
          "image shows where the lesion ends there).", "",
          "## 3. Dice on the shared references", "", "| reference | default | aerated | classical chain | textbook |",
          "|---|---|---|---|---|"]
    methods = ("lungs", "aerated", "classical", "textbook")
    for case, d in report["references"]["volumes"].items():
        L += [f"| {case} {part.replace('whole', '')} | " + " | ".join(f"{d[m][part]:.4f}" if part in d[m] else "–" for m in methods)
              + " |" for part in ("whole", "right", "left") if part in d["lungs"]]
    L.append(f"| ct-slices (n = {sl['n']}) | " + " | ".join(f"{sl[m]['mean']:.4f} ± {sl[m]['sd']:.4f}, min {sl[m]['min']:.4f}, "
                                                            f"{sl[m]['below_0.95']} below 0.95" for m in methods) + " |")
    L += ["", "| target (aerated) | value | pass |", "|---|---|---|"]
    L += [f"| {name} | {value:.4f} | {mark(ok)} |" if isinstance(value, float) else f"| {name} | {value} | {mark(ok)} |"
          for name, value, ok in report["targets"]]
    L += ["", "## 4. Seconds per case (median; one run per convention)", "", "| convention | volumes | ct-slices |", "|---|---|---|"]
    L += [f"| {c} | {report['seconds'][c]['volumes']:.2f} | {report['seconds'][c]['ct-slices']:.2f} |" for c in CONVENTIONS]
    (results / "conventions.md").write_text("\n".join(L) + "\n")


def picture(segmenters, path: Path) -> None:
    """docs/conventions.png: radiomics-lung2's tumour slice, `lungs` beside `aerated`, the tumour outlined."""
    from PIL import Image, ImageDraw

    from lungct.geometry import to_ras
    from lungct.labels import LUNG_LABELS
    from lungct.report import tint

    scan, label = load_scan(VOLUMES / "radiomics-lung2" / "image.nrrd"), load_scan(VOLUMES / "radiomics-lung2" / "tumour.nrrd")
    masks = segment(segmenters, scan, "volumes")
    hu, _ = to_ras(scan.array, scan.affine)
    tumour = to_ras(label.array > 0, scan.affine)[0]
    k = int(np.argmax(tumour.sum(axis=(0, 1))))
    grey = (np.clip((hu[:, :, k] + 1000) / 1400, 0, 1) * 255).astype(np.uint8)[::-1, ::-1].T  # radiological view
    edge = tumour[:, :, k][::-1, ::-1].T
    edge = edge & ~(np.roll(edge, 1, 0) & np.roll(edge, -1, 0) & np.roll(edge, 1, 1) & np.roll(edge, -1, 1))
    panels = []
    for name in CONVENTIONS:
        labels = to_ras(masks[name], scan.affine)[0][:, :, k][::-1, ::-1].T
        rgb = tint(grey, labels, LUNG_LABELS, alpha=0.45)
        rgb[edge] = (250, 210, 40)
        panel = Image.fromarray(rgb)
        ImageDraw.Draw(panel).text((8, 8), f"{name}   R          L", fill=(255, 255, 255))
        panels.append(panel)
    canvas = Image.new("RGB", (sum(p.width for p in panels) + 8, panels[0].height))
    canvas.paste(panels[0], (0, 0))
    canvas.paste(panels[1], (panels[0].width + 8, 0))
    canvas.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint or model name (default: the shipped CT model)")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results", help="folder for the outputs")
    parser.add_argument("--quick", action="store_true", help="20 of the 201 ct-slices")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--no-roi", dest="roi", action="store_false",
                        help="labels not limited to the classical chain's mirrored ROI (default: as the model says)")
    parser.add_argument("--picture", type=Path, default=None, help="only draw the two conventions on radiomics-lung2")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    default = load_segmenter(args.model, "ct", device="cpu")
    if not args.roi:
        default = make_segmenter(default.model, InferOptions(roi=False))
    segmenters = {"lungs": default, "aerated": make_segmenter(default.model, InferOptions(aerated=True, roi=default.roi))}
    if args.picture:
        return picture(segmenters, args.picture)
    report = {"model": str(args.model or default.model.path), "date": time.strftime("%Y-%m-%d %H:%M"), "seed": SEED,
              "quick": args.quick, "tumours": tumours(segmenters), "synthetic": synthetic(segmenters),
              "references": references(segmenters, 20 if args.quick else None)}
    summarise(report)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "conventions.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    write_report(report, args.results)
    print((args.results / "conventions.md").read_text())


if __name__ == "__main__":
    main()
