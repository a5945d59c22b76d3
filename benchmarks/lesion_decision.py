"""Benchmark the lesion decision for generalisation, not fit: lesions painted by an independent generator
(benchmarks/independent_lesions.py) into host volumes the model never trained on, every family the
training recipe knows and three it does not; then the two real tumours, and the lesion-free volumes.

Run by hand (not a test); writes lesion-decision.md and lesion-decision.json into --results:

    python benchmarks/lesion_decision.py                       # the shipped CT model
    python benchmarks/lesion_decision.py --model work/ct-lungs.pt --instances 1 --results /tmp/ld

1. Held-out hosts imlab-id002 (its reference lungs), radiomics-lung1 and -lung2 (lungs of the classical
   chain; lesions kept 25 mm from their real tumours): per family and location, the share of each lesion's
   voxels inside `lungs` and inside `aerated` (effusion: the share of the fluid inside `lungs`, which should
   be none; ground glass: aerated lung, inside both).
2. The real tumours of radiomics-lung1/2: inside `lungs`, inside `aerated`; on lung2 the Dice between the
   dense part (`lungs` minus `aerated`) and the tumour.
3. Lesion-free volumes (imlab-id001, copdgene-ct64, chest-cta): the dense part in mL, and the Dice of both
   conventions against the references (chest-cta has none).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import independent_lesions as generator  # noqa: E402

from lungct.ct.segmenter import CTSegmenter  # noqa: E402
from lungct.ct.transforms.lungs import segment_lungs  # noqa: E402
from lungct.evaluate import read_labels  # noqa: E402
from lungct.geometry import voxel_ml, voxel_spacing  # noqa: E402
from lungct.io import Scan, load_scan  # noqa: E402
from lungct.metrics import overlap  # noqa: E402
from lungct.morphology import dilate_mm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VOLUMES = ROOT.parent / "shared" / "data" / "ct-volumes"
SEED = 20261207
HOSTS = {"imlab-id002": ("image.nii.gz", "lungs.nii.gz", None),
         "radiomics-lung1": ("image.nrrd", None, "tumour.nrrd"), "radiomics-lung2": ("image.nrrd", None, "tumour.nrrd")}
# The decision's own training hosts: where its post-processing parameters may be tuned (--tune), with the
# families it trained on; the report above is never used for a choice.
TUNE_HOSTS = {"imlab-id001": ("image.nii.gz", "lungs.nii.gz", None),
              "copdgene-ct64": ("image.nrrd", "lungs.nrrd", None), "chest-cta": ("image.nii.gz", None, None)}
LESION_FREE = {"imlab-id001": ("image.nii.gz", "lungs.nii.gz"), "copdgene-ct64": ("image.nrrd", "lungs-lr.nii.gz"),
               "chest-cta": ("image.nii.gz", None)}
TUMOUR_CLEARANCE_MM = 25.0
CENTRAL = ("hilar", "mediastinal", "anterior_junction", "azygo_oesophageal")


def conventions_of(segmenter: CTSegmenter, scan: Scan) -> tuple[np.ndarray, np.ndarray, float]:
    """(lungs, aerated, seconds): one run gives both."""
    started = time.perf_counter()
    result = segmenter.segment(scan)
    return result.conventions.lungs, result.conventions.aerated, time.perf_counter() - started


def sides_of(binary: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Right (1) / left (2) of a binary lung mask by the side of the lungs' mid-plane (RAS x: right is +)."""
    index = np.argwhere(binary)
    x = index @ affine[0, :3] + affine[0, 3]
    sides = np.zeros(binary.shape, np.uint8)
    sides[tuple(index.T)] = np.where(x >= np.median(x), 1, 2)
    return sides


def host(name: str, hosts: dict):
    """(scan, side labels, tumour mask or None) of a host."""
    image, reference, tumour_file = hosts[name]
    scan = load_scan(VOLUMES / name / image)
    if reference:
        lungs = read_labels(VOLUMES / name / reference)[0] > 0
    else:
        lungs = segment_lungs(scan.array, scan.affine)[0] > 0
    tumour = load_scan(VOLUMES / name / tumour_file).array > 0 if tumour_file else None
    return scan, sides_of(lungs, scan.affine), tumour


def painted(scan: Scan, sides: np.ndarray, keep_clear: np.ndarray | None, family: str, rng):
    """(case, lesion) of one benchmark instance: up to 20 seats drawn, the first away from the real tumour."""
    for _ in range(20):
        case = generator.NativeCase(scan.array, sides, scan.affine)
        lesion = generator.paint(case, family, rng)
        if lesion is not None and (keep_clear is None or not (lesion.voxels & keep_clear).any()):
            return case, lesion
    return None, None


def synthetic(segmenter, instances: int, families, hosts: dict = HOSTS, seed: int = SEED) -> list[dict]:
    rows = []
    for h, name in enumerate(hosts):
        scan, sides, tumour = host(name, hosts)
        keep_clear = None if tumour is None else dilate_mm(tumour, TUMOUR_CLEARANCE_MM, voxel_spacing(scan.affine))
        for f, family in enumerate(families):
            for instance in range(instances):
                case, lesion = painted(scan, sides, keep_clear, family, np.random.default_rng([seed, h, f, instance]))
                if lesion is None:
                    rows.append({"host": name, "family": family, "instance": instance, "painted": False})
                    continue
                painted_scan = Scan(f"{name}+{family}", case.hu, scan.affine, [], "memory")
                lungs, aerated, seconds = conventions_of(segmenter, painted_scan)
                voxels = lesion.voxels
                rows.append({"host": name, "family": family, "instance": instance, "painted": True, "kind": lesion.kind,
                             "held_out_family": family in generator.HELD_OUT_FAMILIES,
                             "ml": round(float(voxels.sum() * voxel_ml(scan.affine)), 2),
                             "in_lungs": float((lungs[voxels] > 0).mean()),
                             "in_aerated": float((aerated[voxels] > 0).mean()),
                             "seconds": round(seconds, 2)})
                print(json.dumps(rows[-1]), flush=True)
    return rows


def real_tumours(segmenter) -> list[dict]:
    rows = []
    for name in ("radiomics-lung1", "radiomics-lung2"):
        scan = load_scan(VOLUMES / name / "image.nrrd")
        tumour = load_scan(VOLUMES / name / "tumour.nrrd").array > 0
        lungs, aerated, _ = conventions_of(segmenter, scan)
        dense = (lungs > 0) & (aerated == 0)
        rows.append({"case": name, "tumour_ml": round(float(tumour.sum() * voxel_ml(scan.affine)), 1),
                     "in_lungs": float((lungs[tumour] > 0).mean()), "in_aerated": float((aerated[tumour] > 0).mean()),
                     "dense_ml": round(float(dense.sum() * voxel_ml(scan.affine)), 1),
                     "dense_vs_tumour_dice": float(overlap(dense, tumour)["dice"])})
    return rows


def lesion_free(segmenter) -> list[dict]:
    rows = []
    for name, (image, reference) in LESION_FREE.items():
        scan = load_scan(VOLUMES / name / image)
        lungs, aerated, seconds = conventions_of(segmenter, scan)
        dense = (lungs > 0) & (aerated == 0)
        dense_ml = round(float(dense.sum() * voxel_ml(scan.affine)), 1)
        row = {"case": name, "dense_ml": dense_ml, "seconds": round(seconds, 2)}
        if reference:
            truth = read_labels(VOLUMES / name / reference)[0] > 0
            row.update(lungs_dice=float(overlap(lungs > 0, truth)["dice"]),
                       aerated_dice=float(overlap(aerated > 0, truth)["dice"]))
            row["gap"] = row["aerated_dice"] - row["lungs_dice"]
        rows.append(row)
    return rows


def voxel_share_in_lungs(rows: list[dict]) -> float | None:
    """The share of all these lesions' voxels inside `lungs` (each lesion weighted by its volume)."""
    if not rows:
        return None
    return sum(r["in_lungs"] * r["ml"] for r in rows) / sum(r["ml"] for r in rows)


def summary(rows: list[dict]) -> dict:
    """Coverage per family, per location group, held-out families, and the lesions below 85 %."""
    painted = [r for r in rows if r.get("painted") and r["kind"] == "lesion"]
    by_family = {}
    for r in rows:
        if r.get("painted"):
            by_family.setdefault(r["family"], []).append(r)
    out = {"families": {f: {"n": len(v), "in_lungs": statistics.mean(r["in_lungs"] for r in v),
                            "in_aerated": statistics.mean(r["in_aerated"] for r in v),
                            "min_in_lungs": min(r["in_lungs"] for r in v)} for f, v in by_family.items()}}
    out["lesion_voxels_in_lungs"] = voxel_share_in_lungs(painted)
    out["held_out_families_in_lungs"] = voxel_share_in_lungs([r for r in painted if r["held_out_family"]])
    out["central_in_lungs"] = voxel_share_in_lungs([r for r in painted if r["family"] in CENTRAL])
    out["below_85"] = [f"{r['host']}/{r['family']}#{r['instance']}: {r['in_lungs']:.2f}"
                       for r in painted if r["in_lungs"] < 0.85]
    return out


def percent(value) -> str:
    return "—" if value is None else f"{value:.1%}"


def write(report: dict, results: Path) -> None:
    results.mkdir(parents=True, exist_ok=True)
    (results / "lesion-decision.json").write_text(json.dumps(report, indent=1))
    s = report["summary"]
    lines = [f"# Lesion decision benchmark ({report['model']})", "",
             f"Held-out hosts {', '.join(HOSTS)}; independent generator (benchmarks/independent_lesions.py); "
             f"{report['instances']} lesion(s) per family and host, one per run.", "",
             f"- lesion voxels inside `lungs`: **{percent(s['lesion_voxels_in_lungs'])}**; held-out families "
             f"({', '.join(generator.HELD_OUT_FAMILIES)}): **{percent(s['held_out_families_in_lungs'])}**; central "
             f"({', '.join(CENTRAL)}): {percent(s['central_in_lungs'])}",
             f"- lesions below 85 % inside `lungs`: {len(s['below_85'])} {s['below_85']}", "",
             "| family | held out | n | inside `lungs` (mean) | min | inside `aerated` |", "|---|---|---|---|---|---|"]
    for family, v in s["families"].items():
        lines.append(f"| {family} | {'yes' if family in generator.HELD_OUT_FAMILIES else ''} | {v['n']} | "
                     f"{v['in_lungs']:.1%} | {v['min_in_lungs']:.1%} | {v['in_aerated']:.1%} |")
    lines += ["", "Effusion rows: the fluid's share inside `lungs` (should be 0). Ground glass: aerated lung, "
              "inside both.", "", "## Real tumours", "", "| case | tumour mL | in `lungs` | in `aerated` | dense mL | "
              "dense vs tumour Dice |", "|---|---|---|---|---|---|"]
    for r in report["tumours"]:
        lines.append(f"| {r['case']} | {r['tumour_ml']} | {r['in_lungs']:.1%} | {r['in_aerated']:.1%} | "
                     f"{r['dense_ml']} | {r['dense_vs_tumour_dice']:.3f} |")
    lines += ["", "## Lesion-free volumes", "", "| case | dense mL | `lungs` Dice | `aerated` Dice | gap |",
              "|---|---|---|---|---|"]
    for r in report["lesion_free"]:
        dice = (f"{r['lungs_dice']:.4f} | {r['aerated_dice']:.4f} | {r['gap']:.4f}" if "gap" in r else "— | — | —")
        lines.append(f"| {r['case']} | {r['dense_ml']} | {dice} |")
    (results / "lesion-decision.md").write_text("\n".join(lines) + "\n")


def picture(segmenter, path: Path) -> None:
    """Three cases side by side, `lungs` (yellow) and `aerated` (cyan): a hilar mass painted by the independent
    generator into radiomics-lung2 (its true extent red, dashed), imlab-id001's normal hilum, and the lung
    bases of radiomics-lung1 on 5 mm slices, where a 2D network takes the top of a dome for lung."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lungct.geometry import to_ras

    scan, sides, tumour = host("radiomics-lung2", HOSTS)
    keep_clear = dilate_mm(tumour, TUMOUR_CLEARANCE_MM, voxel_spacing(scan.affine))
    family = list(generator.EVAL_FAMILIES).index("hilar")  # the benchmark's own first hilar instance on lung2
    case, lesion = painted(scan, sides, keep_clear, "hilar", np.random.default_rng([SEED, 2, family, 0]))
    with_mass = Scan("lung2+hilar", case.hu, scan.affine, [], "memory")
    panels = [("radiomics-lung2 + a hilar mass", with_mass, lesion.voxels),
              ("imlab-id001: a normal hilum", load_scan(VOLUMES / "imlab-id001" / "image.nii.gz"), None),
              ("radiomics-lung1: lung bases, 5 mm", load_scan(VOLUMES / "radiomics-lung1" / "image.nrrd"), None)]
    figure, axes = plt.subplots(1, 3, figsize=(15, 5.4))
    for axis, (title, image, truth) in zip(axes, panels):
        lungs, aerated, _ = conventions_of(segmenter, image)
        hu = to_ras(image.array, image.affine)[0]
        maps = [to_ras(m.astype(np.uint8), image.affine)[0] for m in (lungs > 0, aerated > 0)]
        if truth is not None:
            truth_ras = to_ras(truth.astype(np.uint8), image.affine)[0]
            k = int(np.argmax(truth_ras.sum((0, 1))))
        elif "hilum" in title:
            k = int(0.62 * hu.shape[2])
        else:
            k = int(np.flatnonzero(maps[0].any((0, 1)))[1])
        axis.imshow(np.clip(hu[:, :, k].T, -1000, 300), cmap="gray", origin="lower")
        for mask, colour in zip(maps, ("yellow", "cyan")):
            if mask[:, :, k].any():
                axis.contour(mask[:, :, k].T, levels=[0.5], colors=colour, origin="lower", linewidths=1.0)
        if truth is not None:
            axis.contour(truth_ras[:, :, k].T, levels=[0.5], colors="red", origin="lower", linewidths=1.0,
                         linestyles="dashed")
        dense = ((maps[0] > 0) & (maps[1] == 0)).sum() * voxel_ml(image.affine)
        inside = "" if truth is None else f", mass {100 * (lungs[truth] > 0).mean():.1f} % inside lungs"
        axis.set_title(f"{title}\ndense part {dense:.0f} mL{inside}", fontsize=10)
        axis.axis("off")
    figure.tight_layout(rect=(0, 0.04, 1, 0.95))
    figure.text(0.5, 0.01, "lungs (yellow) and aerated (cyan); red dashed: the painted mass", ha="center", fontsize=10)
    figure.savefig(path, dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a CT checkpoint or shipped name (default: the shipped model)")
    parser.add_argument("--instances", type=int, default=2, help="lesions per family and host")
    parser.add_argument("--families", nargs="*", default=list(generator.EVAL_FAMILIES))
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--tune", action="store_true",
                        help="the training hosts and families instead (for choosing post-processing parameters)")
    parser.add_argument("--set", dest="settings", nargs="*", default=[], metavar="PARAM=VALUE",
                        help="convention parameters to try (lungct.ct.conventions.ConventionParams)")
    parser.add_argument("--picture", type=Path, default=None, help="draw docs/conventions.png and stop")
    args = parser.parse_args()
    segmenter = CTSegmenter.load(args.model, statistics=False)
    if args.picture:
        picture(segmenter, args.picture)
        return
    changes = {k: float(v) for k, v in (item.split("=") for item in args.settings)}
    segmenter.convention_params = dataclasses.replace(segmenter.convention_params, **changes)
    if args.tune:
        families = [f for f in args.families if f not in generator.HELD_OUT_FAMILIES]
        report = {"model": args.model or "shipped", "instances": args.instances, "settings": changes,
                  "lesion_free": lesion_free(segmenter),
                  "synthetic": synthetic(segmenter, args.instances, families, TUNE_HOSTS, SEED + 1)}
        report["summary"] = summary(report["synthetic"])
        args.results.mkdir(parents=True, exist_ok=True)
        (args.results / "lesion-decision-tune.json").write_text(json.dumps(report, indent=1))
        print(json.dumps({"summary": report["summary"], "lesion_free": report["lesion_free"]}, indent=1))
        return
    report = {"model": args.model or "shipped", "instances": args.instances,
              "tumours": real_tumours(segmenter), "lesion_free": lesion_free(segmenter)}
    print(json.dumps(report, indent=1), flush=True)
    report["synthetic"] = synthetic(segmenter, args.instances, args.families)
    report["summary"] = summary(report["synthetic"])
    write(report, args.results)
    print((args.results / "lesion-decision.md").read_text())


if __name__ == "__main__":
    main()
