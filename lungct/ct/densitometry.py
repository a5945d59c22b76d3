"""Lung densitometry: volume, mass and the HU-histogram indices of emphysema, air trapping and dense lung.

Why one pass: it must add well under a second to a 512x512x300 scan, so each voxel of the lungs' bounding box
gets one integer key (lung, position level along world z and y, 1-HU bin of floor(HU)) and np.bincount yields
every histogram at once; each (lung, region) row is then a sum of histograms. Flooring makes the "< T" and
">= T" thresholds exact for float HU too. Definitions, conventions and sources: docs/densitometry.md.
"""
from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from lungct.io.atomic import atomic_path, open_text
from lungct.os_names import printable

DEFAULT_LABEL_NAMES = MappingProxyType({1: "right_lung", 2: "left_lung"})
BOTH = "both"
REGIONS = ("whole", "upper", "middle", "lower", "anterior", "posterior")
PERCENTILES = (5, 10, 15, 25, 50, 75, 90, 95)
LAA_BELOW = (-950, -910, -856)  # %LAA: voxels strictly below
HAA_RANGE = (-600, -250)  # %HAA: both ends included
DENSE_ABOVE = -250  # dense: > -250 HU; aerated: <= -250 HU
HIST_LO, HIST_HI = -1100, 1100  # one bin per floor(HU) in [HIST_LO, HIST_HI], plus one below and one above
PLOT_THRESHOLDS = (-950, -910, -856, -600, -250)
COLUMNS = ("voxels", "volume_ml", "mass_g", "mean_hu", "sd_hu", *(f"perc{q}_hu" for q in PERCENTILES),
           "laa950_pct", "laa910_pct", "laa856_pct", "haa_pct", "dense_ml", "aerated_ml")
CSV_FIELDS = ("case", "status", "reason", "lung", "region", *COLUMNS)
_NB, _BIN0 = HIST_HI - HIST_LO + 3, 1 - HIST_LO  # bins; the bin of floor(HU) = v is v + _BIN0
_TIE_MM = 1e-6  # a voxel centre this close to a region boundary goes to the upper / anterior side
_CHUNK = 1 << 20  # voxels per block: bounds every temporary and keeps it in cache


@dataclass
class HuHistogram:
    """Voxel counts per 1 HU: counts[i] has floor(HU) == first_hu + i; `below` / `above` fall outside."""

    counts: np.ndarray
    below: int
    above: int
    first_hu: int = HIST_LO

    @property
    def hu(self) -> np.ndarray:
        return np.arange(self.first_hu, self.first_hu + len(self.counts))

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.below + self.above


@dataclass
class LungStatistics:
    """Tidy rows (one per lung x region) and each lung's whole-lung histogram, so plots need no recount."""

    rows: list[dict]
    histograms: dict[str, HuHistogram]
    voxel_ml: float

    def row(self, lung: str, region: str = "whole") -> dict:
        for r in self.rows:
            if r["lung"] == lung and r["region"] == region:
                return r
        raise KeyError((lung, region))

    def as_dict(self) -> dict:
        """lung -> region -> numbers, NaN as None (JSON has no NaN)."""
        out: dict = {}
        for r in self.rows:
            out.setdefault(r["lung"], {})[r["region"]] = {k: _plain(r[k]) for k in COLUMNS}
        return out


def lung_statistics(hu, labels, affine, label_names: Mapping[int, str] = DEFAULT_LABEL_NAMES,
                    regions: bool = True) -> LungStatistics:
    """Numbers per lung (each label, plus "both" = their union) and per region, from one pass over the box.

    Regions are thirds of each lung's extent along world +z (superior) and halves along world +y (anterior),
    measured through `affine` (RAS) at voxel centres, so storage order, flips and obliquity do not matter.
    """
    hu, labels, affine = np.asarray(hu), np.asarray(labels), np.asarray(affine, dtype=float)
    values = sorted(int(v) for v in label_names)
    names = [str(label_names[v]) for v in values] + [BOTH]
    problems = [hu.ndim != 3 or hu.shape != labels.shape, affine.shape != (4, 4) or not np.isfinite(affine).all(),
                labels.dtype.kind not in "biu" or hu.dtype.kind not in "iuf", not values or values[0] < 1,
                len(set(names)) != len(names)]
    if any(problems) or np.linalg.det(affine[:3, :3]) == 0:
        raise ValueError(f"lung_statistics needs HU {hu.shape} and integer labels {labels.shape} on one 3D grid, "
                         f"an invertible 4x4 affine, label values >= 1 and distinct names other than {BOTH!r}")
    k = len(values)
    lut = np.zeros(max(256, values[-1] + 2), np.uint8)
    lut[values] = np.arange(1, k + 1)
    voxel_ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    box = _bounding_box(labels)
    fields = _world_fields(affine, box) if regions else []
    lab, hub = labels[box], hu[box]
    axis = int(np.argmax(np.abs(hub.strides))) if hub.size else 0
    code, extents = _codes_and_extents(lab, lut, k, fields, axis)
    cuts, levels = _thresholds(extents, k, fields)
    tally = _count(hub, code, k, fields, levels, axis)
    rows, hists = [], {}
    for e, name in enumerate(names):
        for region in REGIONS if regions else ("whole",):
            parts = tally.select(*_selection(e, k, region, cuts[e]))
            rows.append({"lung": name, "region": region, **_numbers(*parts, voxel_ml, hub.dtype.kind in "iu")})
            if region == "whole":
                hists[name] = HuHistogram(parts[0][1:-1].copy(), int(parts[0][0]), int(parts[0][-1]))
    return LungStatistics(rows, hists, voxel_ml)


def _bounding_box(labels: np.ndarray):
    """Slices around every non-zero label, each axis reduced on the already-cropped view (cheap)."""
    box, view = [], labels
    for a in range(3):
        hit = np.flatnonzero(view.any(axis=tuple(b for b in range(3) if b != a)))
        if hit.size == 0:
            return (slice(0, 0),) * 3
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
        view = view[tuple(box) + (slice(None),) * (2 - a)]
    return tuple(box)


def _world_fields(affine, box):
    """(coefficient per voxel axis, value at box index 0) of world z, then world y: asked of the affine.

    Coefficients under 1e-6 of the axis' spacing (DICOM rounding) become 0, so on an axis-aligned grid a
    coordinate depends on one axis and costs a 1D array, not a volume.
    """
    lin, start = affine[:3, :3], np.array([s.start for s in box], dtype=float)
    coefs = [np.where(np.abs(lin[r]) < 1e-6 * np.linalg.norm(lin, axis=0), 0.0, lin[r]) for r in (2, 1)]
    return [(c, float(affine[r, 3] + c @ start)) for c, r in zip(coefs, (2, 1))]


def _field(coef, offset, sl, shape) -> np.ndarray:
    """World coordinate of the voxel centres of one block, expanded only along the axes it depends on."""
    value = np.full((1, 1, 1), offset)
    for a in range(3):
        if coef[a]:
            idx = np.arange(shape[a], dtype=float)[sl[a]]
            value = value + coef[a] * idx.reshape([-1 if b == a else 1 for b in range(3)])
    return value


def _chunks(shape, axis):
    step = max(1, _CHUNK // max(1, math.prod(shape) // max(1, shape[axis])))
    for start in range(0, shape[axis], step):
        yield tuple(slice(start, start + step) if a == axis else slice(None) for a in range(3))


def _codes_and_extents(lab, lut, k, fields, axis):
    """Lung code (1..k, 0 elsewhere) per box voxel, and each lung's min/max world z and y at voxel centres."""
    code = np.empty(lab.shape, np.uint8)
    extents = np.full((k, len(fields), 2), np.nan)
    dep = {a for coef, _ in fields for a in range(3) if coef[a]}
    other = tuple(a for a in range(3) if a not in dep)
    for sl in _chunks(lab.shape, axis):
        c = np.take(lut, lab[sl], mode="clip")
        code[sl] = c
        for lung in range(1, k + 1) if fields else ():
            present = c == lung
            present = present.any(axis=other, keepdims=True) if other else present
            if not present.any():
                continue
            for f, (coef, offset) in enumerate(fields):
                v = np.broadcast_to(_field(coef, offset, sl, lab.shape), present.shape)[present]
                lo_hi = extents[lung - 1, f]
                lo_hi[:] = np.fmin(lo_hi[0], v.min()), np.fmax(lo_hi[1], v.max())
    return code, extents


def _thresholds(extents, k, fields):
    """All lungs' third (z) and half (y) boundaries, sorted per axis: a voxel's level = boundaries at or below it.

    Then `z >= t` <=> level >= cut(t), so the key needs one small level per voxel, not a test per lung and region.
    """
    if not fields:
        return [None] * (k + 1), [np.empty(0), np.empty(0)]
    both = np.stack([np.fmin.reduce(extents[..., 0]), np.fmax.reduce(extents[..., 1])], -1)  # NaN-skipping
    ext = np.concatenate([extents, both[None]])
    fracs = ((1 / 3, 2 / 3), (1 / 2,))
    bounds = [[[lo + (hi - lo) * q - _TIE_MM for q in fracs[f]] for f, (lo, hi) in enumerate(e)] for e in ext]
    levels = [np.sort([t for b in bounds for t in b[f] if np.isfinite(t)]) for f in range(2)]
    cuts = [[[int(np.searchsorted(levels[f], t, side="right")) for t in b[f]] for f in range(2)]
            if np.isfinite(e).all() else None for e, b in zip(ext, bounds)]
    return cuts, levels


@dataclass
class _Tally:
    """Per key: voxel counts, exact sums of HU and HU^2, exact -250 HU ties; raw values outside the bins."""

    counts: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    ties: np.ndarray
    out_keys: np.ndarray
    out_values: np.ndarray

    def select(self, codes, zs, ys):
        """(histogram, sums per bin, ties, sorted values below and above the bins) of one row."""
        pick = lambda a: a[codes, zs, ys].sum(axis=(0, 1, 2))  # noqa: E731
        member = np.zeros(self.counts.shape[:3], bool)
        member[codes, zs, ys] = True
        inside = member.ravel()[self.out_keys // _NB]
        b, vals = self.out_keys[inside] % _NB, self.out_values[inside]
        return (pick(self.counts), pick(self.s1), pick(self.s2), int(pick(self.ties)[DENSE_ABOVE + _BIN0]),
                np.sort(vals[b == 0]), np.sort(vals[b == _NB - 1]))


def _count(hub, code, k, fields, levels, axis) -> _Tally:
    """The one pass: key = ((lung * nz + z level) * ny + y level) * bins + HU bin, then np.bincount."""
    nz, ny = len(levels[0]) + 1, len(levels[1]) + 1
    shape, integer = (k + 1, nz, ny, _NB), hub.dtype.kind in "iu"
    size = math.prod(shape)
    counts, out_keys, out_values = np.zeros(size, np.int64), [np.empty(0, np.intp)], [np.empty(0)]
    s1, s2, ties = (None, None, None) if integer else (np.zeros(size), np.zeros(size), np.zeros(size, np.int64))
    for sl in _chunks(hub.shape, axis) if hub.size else ():
        c, h = code[sl], hub[sl]
        key = c.astype(np.intp)
        key *= nz * ny * _NB
        if fields:
            zl = np.searchsorted(levels[0], _field(*fields[0], sl, hub.shape), side="right")
            yl = np.searchsorted(levels[1], _field(*fields[1], sl, hub.shape), side="right")
            key += (zl * ny + yl).astype(np.intp) * _NB
        key += _BIN0
        if integer:
            h = h.astype(np.int32) if h.dtype.kind == "u" or h.dtype.itemsize < 2 else h
            key += np.clip(h, HIST_LO - 1, HIST_HI + 1)
        else:
            f = np.floor(h)
            if np.isnan(f).any():
                raise ValueError("NaN HU inside the lungs' bounding box")
            key += np.clip(f, HIST_LO - 1, HIST_HI + 1, out=f).astype(np.int16)  # int16: 4x cheaper
        flat = key.ravel()
        chunk = np.bincount(flat, minlength=size)
        counts += chunk
        if not integer:  # weighted sums over lung voxels only: they are the slow part
            lung = c != 0
            lk, h64 = flat[lung.ravel()], h[lung].astype(np.float64)
            s1 += np.bincount(lk, h64, minlength=size)
            s2 += np.bincount(lk, h64 * h64, minlength=size)
            tie = h64 == DENSE_ABOVE
            ties += np.bincount(lk[tie], minlength=size) if tie.any() else 0
        if chunk.reshape(k + 1, -1, _NB)[1:, :, [0, -1]].any():  # lung voxels outside the binned range
            b = flat % _NB
            out = ((b == 0) | (b == _NB - 1)) & (c != 0).ravel()
            out_keys.append(flat[out])
            out_values.append(np.asarray(h, dtype=np.float64).ravel()[out])
    keys, vals = np.concatenate(out_keys), np.concatenate(out_values)
    if integer:  # integer HU: in-range sums follow exactly from the counts; a -250 bin holds only ties
        v = np.arange(_NB, dtype=float) + HIST_LO - 1
        v[[0, -1]] = 0.0
        s1 = (counts.reshape(-1, _NB) * v).ravel() + np.bincount(keys, vals, minlength=size)
        s2 = (counts.reshape(-1, _NB) * v * v).ravel() + np.bincount(keys, vals * vals, minlength=size)
        ties = counts
    return _Tally(*(a.reshape(shape) for a in (counts, s1, s2, ties)), keys, vals)


def _selection(e, k, region, cuts):
    """(lung codes, z-level slice, y-level slice) of one row; nothing for a region of an empty lung."""
    codes = slice(e + 1, e + 2) if e < k else slice(1, k + 1)
    zs = ys = slice(None)
    if region != "whole" and cuts is None:
        codes = slice(0, 0)
    elif region in ("upper", "middle", "lower"):
        (p1, p2), _ = cuts
        zs = {"upper": slice(p2, None), "middle": slice(p1, p2), "lower": slice(0, p1)}[region]
    elif region in ("anterior", "posterior"):
        ys = slice(cuts[1][0], None) if region == "anterior" else slice(0, cuts[1][0])
    return codes, zs, ys


def _numbers(hist, s1, s2, ties, under, over, voxel_ml, integer) -> dict:
    """Every column of one row from its histogram; NaN where a number is undefined (no voxels)."""
    n = int(hist.sum())
    cum = np.cumsum(hist)
    below = lambda t: int(cum[t + _BIN0 - 1])  # noqa: E731  voxels with HU < t (exact: floor(HU) < t)
    aerated = below(DENSE_ABOVE) + ties
    out = {"voxels": n, "volume_ml": n * voxel_ml, "dense_ml": (n - aerated) * voxel_ml,
           "aerated_ml": aerated * voxel_ml}
    tissue = slice(-1000 + _BIN0, None)  # density (HU + 1000) / 1000 g/mL, 0 below -1000 HU
    out["mass_g"] = (float(s1[tissue].sum()) + 1000.0 * float(hist[tissue].sum())) / 1000.0 * voxel_ml
    if n == 0:
        return {c: out.get(c, math.nan) for c in COLUMNS}
    total1, total2 = float(s1.sum()), float(s2.sum())
    if integer:  # exact integer sums: the variance is rounded once
        t1, t2 = int(total1), int(total2)
        out["mean_hu"], var = t1 / n, (n * t2 - t1 * t1) / (n * n)
    else:
        out["mean_hu"] = total1 / n
        var = max(total2 / n - out["mean_hu"] ** 2, 0.0)
    out["sd_hu"] = math.sqrt(var)
    for q in PERCENTILES:  # lowest value whose cumulative count reaches q % (numpy's 'inverted_cdf')
        rank = -(-q * n // 100)
        i = int(np.searchsorted(cum, rank, side="left"))
        v = under[rank - 1] if i == 0 else over[rank - int(cum[-2]) - 1] if i == _NB - 1 else HIST_LO + i - 1
        out[f"perc{q}_hu"] = float(math.floor(v))
    for t in LAA_BELOW:
        out[f"laa{-t}_pct"] = 100.0 * below(t) / n
    out["haa_pct"] = 100.0 * (below(HAA_RANGE[1]) - below(HAA_RANGE[0]) + ties) / n
    return {c: out[c] for c in COLUMNS}


def _plain(value):
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return int(value) if isinstance(value, (np.integer, int)) else value


_SIEMENS = re.compile(r"^[A-Z][a-z]?(\d{2})[a-z]?$")  # B31f, Br64d, I70f, Hr40: two digits = sharpness
_CANON = re.compile(r"^FC(\d{2})$", re.IGNORECASE)  # FC01..FC18 body; FC5x lung, FC8x high resolution
_PHILIPS_SHARP = {"D", "E", "L", "YC", "YD", "YE"}
_SHARP_WORDS = ("LUNG", "BONE", "EDGE", "SHARP")  # GE LUNG/BONE/BONEPLUS/EDGE and plain-word kernels


def sharp_kernel(kernel: str | None) -> bool:
    """True when a DICOM ConvolutionKernel is recognisably sharp; unknown or smooth kernels give False."""
    text = str(kernel or "").strip()
    first = next((t for t in re.split(r"[\\\[\]',\"\s/]+", text) if t), "")  # DICOM multi-values: the first
    if (m := _SIEMENS.match(first)) and not _CANON.match(first):
        return int(m.group(1)) >= 50
    if m := _CANON.match(first):
        return m.group(1)[0] in "58"
    if first.upper() in _PHILIPS_SHARP:
        return True
    return any(word in text.upper() for word in _SHARP_WORDS)


def densitometry_checks(hu_calibration_status: str | None, recalibrated: bool, slice_thickness_mm: float | None,
                        kernel: str | None) -> tuple[str | None, list[str]]:
    """(refusal reason or None, warnings): absolute HU thresholds need calibrated HU, thin slices, soft kernels."""
    refusal, warnings = None, []
    if recalibrated:
        warnings.append("densitometry computed on recalibrated HU (air mapped to -1000 HU): "
                        "compare with scans calibrated at acquisition with care")
    elif hu_calibration_status == "miscalibrated":
        refusal = ("HU calibration check says miscalibrated: densitometry on shifted HU would be wrong "
                   "(rerun with --recalibrate)")
    elif hu_calibration_status in (None, "unchecked"):
        warnings.append("HU calibration was not checked: densitometry assumes air at -1000 HU")
    if slice_thickness_mm is not None and slice_thickness_mm > 3.0:
        warnings.append(f"slices are {slice_thickness_mm:.3g} mm thick (> 3 mm): partial volume lowers %LAA and "
                        "raises Perc15 against thin-slice references")
    if sharp_kernel(kernel):
        warnings.append(f"sharp reconstruction kernel {str(kernel).strip()!r}: its noise raises %LAA-950 and "
                        "lowers Perc15 against smooth-kernel references")
    return refusal, warnings


def write_statistics_csv(path, rows) -> Path:
    """One row per case x lung x region (refused cases: status and reason only), written atomically."""
    rows = list(rows)
    fields = list(CSV_FIELDS) + list(dict.fromkeys(k for r in rows for k in r if k not in CSV_FIELDS))
    with atomic_path(Path(path)) as tmp:
        with open_text(tmp) as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            for r in rows:
                row = {k: _csv_value(r.get(k)) for k in fields}
                row["status"] = r.get("status") or ("refused" if r.get("reason") else "ok")
                writer.writerow(row)
    return Path(path)


def _csv_value(value):
    value = _plain(value)
    return "" if value is None else f"{value:.10g}" if isinstance(value, float) else value


def save_histogram_plot(path, stats: LungStatistics, title: str = "") -> Path:
    """PNG of each lung's HU histogram (% of its voxels per HU, 5-HU running mean) with the thresholds marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shown = [(name, hist) for name, hist in stats.histograms.items() if hist.total]
    for name, hist in shown:
        pct = np.convolve(100.0 * hist.counts / hist.total, np.ones(5) / 5, mode="same")
        ax.plot(hist.hu, pct, lw=1.6 if name == BOTH else 1.0, ls="-" if name == BOTH else "--",
                label=f"{name} ({stats.row(name)['volume_ml']:.0f} mL)")
    top = ax.get_ylim()[1]
    for t in PLOT_THRESHOLDS:
        ax.axvline(t, color="grey", lw=0.7, ls=":")
        ax.text(t, top * 0.98, f"{t}", rotation=90, va="top", ha="right", fontsize=8, color="dimgrey",
                bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 1})
    ax.set(xlim=(-1100, 200), xlabel="HU", ylabel="% of lung voxels per HU", title=printable(title) or "Lung HU histogram")
    if shown:
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
