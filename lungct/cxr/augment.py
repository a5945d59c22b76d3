"""Opacity synthesis and film augmentation for radiograph training: lung *fields*, not air.

Why: trained on clean films, the model learnt "lung = dark air" and segments an opacified field as its
remaining air only; portable films (AP supine, text, tubes, crops) confuse it further. `add_opacities`
paints opacities inside the fields while the label stays the whole field; `film_augment` makes a clean film
look like one nobody prepared. Arrays as after ResizePadd: image float32 in [0, 1] (brighter = denser), mask
uint8 (0/1, or 1 = right, 2 = left), valid bool (False on the padding). All randomness from `rng`; no BLAS
(its threads stall on a busy machine): ~3 + ~5 ms per 256 x 256 sample."""
from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage as ndi

FONT = ImageFont.load_default_imagefont()  # Pillow's small bitmap font, scaled up: blocky burnt-in letters
WORDS = ("L", "R", "AP", "PA", "PORTABLE", "SUPINE", "AP SUPINE", "ERECT", "MOBILE", "PORT", "SEMI-ERECT", "UPRIGHT")

@dataclass
class OpacityParams:
    p_consolidation: float = 0.35  # dense patchy white regions, mostly lower and peripheral
    consolidation_strength: tuple = (0.55, 0.95)  # peak fraction of the way to soft-tissue brightness
    consolidation_blobs: tuple = (1, 3)  # patches per affected field (inclusive)
    p_ground_glass: float = 0.3  # mild haze, weak enough that vessels stay visible
    ground_glass_strength: tuple = (0.15, 0.45)
    p_patchy: float = 0.3  # diffuse bilateral patchy shadows, peripheral and basal (COVID-like)
    patchy_strength: tuple = (0.4, 0.9)
    p_whiteout: float = 0.2  # a lobe or a whole field nearly as bright as soft tissue (the failure case)
    whiteout_strength: tuple = (0.85, 1.0)
    whiteout_whole: float = 0.5  # share of white-outs taking the whole field (else a lower/upper part)
    p_effusion: float = 0.15  # basal haze, meniscus rising laterally, costophrenic angle blunted
    effusion_strength: tuple = (0.65, 0.95)
    p_bilateral: float = 0.35  # consolidation / effusion in both fields rather than one
    spill_sigma: float = 2.0  # px: opacity fades out within ~2 sigma outside the field edge (blurred border)
    detail_keep: float = 0.35  # share of fine detail (ribs, vessels) still seen through a full opacity

@dataclass
class FilmParams:
    p_rotate: float = 0.5
    max_rotation_deg: float = 15.0  # triangular distribution: small tilts common, 15 degrees rare
    p_scale: float = 0.5
    scale_range: tuple = (0.85, 1.15)
    aspect_range: tuple = (0.93, 1.07)  # rows/cols scale ratio (low lung volumes, wide chests)
    p_shift: float = 0.5
    max_shift: float = 0.08  # fraction of the image size
    p_ap: float = 0.3  # AP supine look: upper field compressed vertically, mediastinum magnified
    ap_compress: tuple = (0.1, 0.35)  # rows warped by y + a sin(pi y) / pi: slope 1 + a at the top
    ap_widen: tuple = (0.05, 0.2)  # magnification 1 / (1 - b) at the midline
    p_crop: float = 0.15  # apex, bases, one side or one costophrenic angle beyond the film edge
    crop_fraction: tuple = (0.05, 0.3)  # of the lungs' height (top/bottom/corner) or one field's width
    p_border: float = 0.15  # black or white frame bands at the film edge (the lung under them is lost)
    border_width: tuple = (2, 20)  # px
    p_collimation: float = 0.15  # bright unexposed margins outside a collimation rectangle
    collimation_opacity: tuple = (0.4, 0.85)
    p_exposure: float = 0.6  # exposure and processing: gamma, contrast, brightness and a ramp together
    gamma_range: tuple = (0.6, 1.6)  # log-uniform
    contrast_range: tuple = (0.6, 1.3)  # low: the veiled look of scatter on grid-less portable films
    brightness_range: tuple = (-0.1, 0.1)
    gradient_range: tuple = (0.0, 0.12)  # uneven exposure across the film (heel effect, grid cut-off)
    p_blur: float = 0.25  # portable films: motion, no grid, soft detector
    blur_sigma: tuple = (0.5, 1.6)  # px
    p_noise: float = 0.4
    noise_sigma: tuple = (0.002, 0.015)  # Gaussian (electronic) part
    quantum_sigma: tuple = (0.0, 0.02)  # Poisson-like part, x (0.3 + brightness): fewer photons behind density
    p_jpeg: float = 0.1  # blockiness of images passed around as JPEG
    jpeg_quality: tuple = (10, 50)
    p_text: float = 0.4  # burnt-in letters and markers: L, R, AP, PORTABLE, dates, times
    p_arrows: float = 0.1  # annotation arrows (coloured ones turn mid-grey in grey films)
    p_tubes: float = 0.3  # ET tube, NG tube, central line
    p_ecg: float = 0.25  # ECG electrodes (rings/discs) and their leads

def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    return ndi.gaussian_filter(np.asarray(a, np.float32), float(sigma), mode="nearest", truncate=3.0)

@lru_cache(maxsize=256)
def _interpolation(n_out: int, n_in: int):
    """Gaussian weights (sd 0.7 nodes) of the 4 nearest coarse nodes for each output position."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    idx = np.floor(pos).astype(np.intp)[:, None] + np.arange(-1, 3)[None, :]
    w = np.exp(-0.5 * ((pos[:, None] - idx) / 0.7) ** 2) * ((idx >= 0) & (idx < n_in))
    return np.clip(idx, 0, n_in - 1), (w / w.sum(1, keepdims=True)).astype(np.float32)

def _texture(rng, shape, cells=(4, 9, 20, 40), weights=(1.0, 0.7, 0.45, 0.25)) -> np.ndarray:
    """Smooth random field (zero mean, unit sd): coarse noise grids (`cells` across 256 px) upsampled with
    Gaussian weights give lobe-sized swells, patches and fine mottling, without bilinear creases."""
    out = np.zeros(shape, np.float32)
    for n, w in zip(cells, weights):
        coarse = rng.standard_normal((max(2, round(n * shape[0] / 256)), max(2, round(n * shape[1] / 256))), np.float32)
        (ir, wr), (ic, wc) = _interpolation(shape[0], coarse.shape[0]), _interpolation(shape[1], coarse.shape[1])
        out += w * ((coarse[ir] * wr[:, :, None]).sum(1)[:, ic] * wc[None]).sum(2)
    return (out - out.mean()) / (out.std() + 1e-6)

def _smoothstep(x):
    return np.clip(x, 0.0, 1.0) ** 2 * (3 - 2 * np.clip(x, 0.0, 1.0))

def _bbox(m: np.ndarray):
    rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
    return int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])

def _split_col(m: np.ndarray) -> int:
    """The mediastinal gap: the emptiest column in the middle half of the lungs' bounding box."""
    _, _, c0, c1 = _bbox(m)
    lo, hi = c0 + (c1 - c0) // 4, c1 - (c1 - c0) // 4
    counts = m[:, lo:hi + 1].sum(0)
    return lo + int(np.median(np.flatnonzero(counts == counts.min())))

def _curve(p0, p1, p2, n: int = 24) -> list:
    """Quadratic Bezier through (row, col) points, as PIL (x, y) pairs."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2 = (np.asarray(q, float) for q in (p0, p1, p2))
    return [(float(c), float(r)) for r, c in (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2]

class _Field:
    """One lung field in its own window (bbox + margin: work on ~15 % of the image). v: 0 apex to 1 base;
    u: 0 medial to 1 lateral; support: the field blurred by spill_sigma (1 inside, 0 a few pixels out)."""

    def __init__(self, part: np.ndarray, lateral_low: bool, spill_sigma: float):
        r0, r1, c0, c1 = _bbox(part)
        pad = int(np.ceil(3 * spill_sigma)) + 2
        self.win = (slice(max(r0 - pad, 0), r1 + pad + 1), slice(max(c0 - pad, 0), c1 + pad + 1))
        self.part = part[self.win]
        self.top, self.bottom, c0, c1 = _bbox(self.part)
        self.h, self.w = max(self.bottom - self.top, 1), max(c1 - c0, 1)
        self.rows = np.arange(self.part.shape[0], dtype=np.float32)[:, None]
        self.cols = np.arange(self.part.shape[1], dtype=np.float32)[None, :]
        self.v = (self.rows - self.top) / self.h
        self.u = np.clip((c1 - self.cols) / self.w if lateral_low else (self.cols - c0) / self.w, 0, 1)
        self.support = np.clip(2 * _blur(self.part, spill_sigma), 0, 1)

def _fields(mask: np.ndarray, spill_sigma: float) -> list[_Field]:
    """The fields: labels 1 and 2 if given, else the mask split at the mediastinal gap (one field if none)."""
    m = mask > 0
    if m.sum() < 30:
        return []
    split, cols = _split_col(m), np.arange(m.shape[1])
    parts = [mask == 1, mask == 2] if (mask == 1).any() and (mask == 2).any() else \
        [m] if m[:, split].any() else [m & (cols < split), m & (cols >= split)]
    parts = [p for p in parts if p.sum() >= 30]
    centre = split if len(parts) > 1 else m.shape[1] / 2
    return [_Field(p, float((p.sum(0) * cols).sum() / p.sum()) < centre, spill_sigma) for p in parts]

def soft_tissue_level(image: np.ndarray, mask: np.ndarray) -> float:
    """The brightness opacities tend to (water density, like fluid or consolidation): the median of the
    non-lung pixels inside the lungs' bounding box (mediastinum, heart, diaphragm domes)."""
    m = np.asarray(mask) > 0
    if not m.any():
        return float(np.percentile(image, 90))
    r0, r1, c0, c1 = _bbox(m)
    others = image[r0:r1 + 1, c0:c1 + 1][~m[r0:r1 + 1, c0:c1 + 1]]
    level = float(np.median(others)) if others.size > 20 else float(np.percentile(image, 90))
    return max(level, float(np.median(image[m])))

def _consolidation(rng, f: _Field, p: OpacityParams) -> np.ndarray:
    """1-3 blotchy patches (ellipses roughened by texture), centred mostly in lower and peripheral zones."""
    ys, xs = np.nonzero(f.part)
    weights = ((0.15 + f.v[ys, 0]) ** 2 * (0.25 + f.u[0, xs])).astype(np.float64)
    envelope = np.zeros(f.part.shape, np.float32)
    for _ in range(int(rng.integers(p.consolidation_blobs[0], p.consolidation_blobs[1] + 1))):
        k = rng.choice(len(ys), p=weights / weights.sum())
        ry, rx, th = f.h * rng.uniform(0.12, 0.35), f.w * rng.uniform(0.25, 0.6), rng.uniform(0, np.pi)
        dy, dx = f.rows - ys[k], f.cols - xs[k]
        a, b = (dy * np.cos(th) + dx * np.sin(th)) / ry, (dx * np.cos(th) - dy * np.sin(th)) / rx
        envelope = np.maximum(envelope, np.exp(-0.5 * (a * a + b * b)))
    blotchy = envelope + 0.3 * _texture(rng, f.part.shape) - 0.3  # ill-defined, lobulated margins
    return rng.uniform(*p.consolidation_strength) * _smoothstep(blotchy / 0.6)

def _whiteout(rng, f: _Field, p: OpacityParams) -> np.ndarray:
    """The whole field, or the part below (70 %) or above a wavy fissure-like edge, almost soft tissue."""
    strength = rng.uniform(*p.whiteout_strength)
    tex = _texture(rng, f.part.shape, cells=(3, 8, 20), weights=(1.0, 0.6, 0.3))
    if rng.random() < p.whiteout_whole:
        return strength * np.clip(0.94 + 0.06 * tex, 0, 1)
    lower = rng.random() < 0.7
    edge = (rng.uniform(0.35, 0.65) if lower else rng.uniform(0.35, 0.55)) + 0.06 * tex
    return strength * _smoothstep(((f.v - edge) if lower else (edge - f.v)) / 0.12) * np.clip(0.92 + 0.08 * tex, 0, 1)

def _effusion(rng, f: _Field, p: OpacityParams) -> np.ndarray:
    """A fluid level with a meniscus rising laterally over the costophrenic angle; supine (1 in 3), a basal veil."""
    strength = rng.uniform(*p.effusion_strength)
    if rng.random() < 1 / 3:
        return 0.7 * strength * np.clip(f.v, 0, 1) ** 1.5
    level = f.bottom - f.h * (rng.uniform(0.06, 0.3) + rng.uniform(0.1, 0.3) * f.u ** 2)
    depth = f.rows - level
    return strength * _smoothstep(depth / (0.06 * f.h)) * (0.75 + 0.25 * np.clip(depth / (f.bottom - level), 0, 1))

def _ground_glass(rng, f: _Field, p: OpacityParams) -> np.ndarray:
    regional = 1.0 if rng.random() < 0.5 else 0.3 + 0.7 * np.clip(f.v, 0, 1)  # diffuse or basal
    haze = np.clip(0.7 + 0.3 * _texture(rng, f.part.shape, (3, 7)), 0, 1)
    return rng.uniform(*p.ground_glass_strength) * regional * haze

def _patchy(rng, f: _Field, p: OpacityParams) -> np.ndarray:
    bias = (0.35 + 0.65 * np.clip(f.v, 0, 1)) * (0.35 + 0.65 * f.u)  # peripheral and basal
    s = 0.45 * _texture(rng, f.part.shape, (6, 14, 30), (1.0, 0.8, 0.5)) + 1.6 * bias - rng.uniform(0.6, 1.2)
    return rng.uniform(*p.patchy_strength) * _smoothstep(s / 0.5)

def add_opacities(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator,
                  params: OpacityParams = OpacityParams()) -> np.ndarray:
    """Opacities inside the lung fields, the label unchanged: the field stays lung however white it gets.
    Each opacity is a textured map alpha in [0, 1] that fades out just outside the field; the image moves
    a fraction alpha of the way towards the soft-tissue level (never beyond), keeping a share of fine detail
    so ribs and vessels still show through, as in real films."""
    p, img = params, np.asarray(image, np.float32)
    if not (fields := _fields(np.asarray(mask), p.spill_sigma)):
        return img.copy()
    clear = np.ones(img.shape, np.float32)  # product of (1 - alpha): opacities combine like attenuations
    effects = ((p.p_consolidation, _consolidation, p.p_bilateral), (p.p_ground_glass, _ground_glass, 1),
               (p.p_patchy, _patchy, 1), (p.p_whiteout, _whiteout, 0), (p.p_effusion, _effusion, p.p_bilateral))
    for chance, make, spread in effects:
        if rng.random() < chance:  # in both fields with probability `spread`, else in one
            for f in fields if rng.random() < spread else [fields[int(rng.integers(len(fields)))]]:
                clear[f.win] *= 1 - make(rng, f, p) * f.support
    if clear.min() >= 1:
        return img.copy()
    level = soft_tissue_level(img, mask)
    r0, r1, c0, c1 = _bbox(clear < 1)
    part, alpha = img[r0:r1 + 1, c0:c1 + 1], 1 - clear[r0:r1 + 1, c0:c1 + 1]
    base = _blur(part, 1.5)
    lifted = part + alpha * (np.maximum(level - base, 0) - (1 - p.detail_keep) * (part - base))
    out = img.copy()
    out[r0:r1 + 1, c0:c1 + 1] = np.clip(lifted, part, np.maximum(part, level))
    return out

def _geometry(img, m, val, rng, p: FilmParams, hit):
    """Crop, AP look, rotation, scale, shift: one PIL mesh resampling; mask and valid by nearest neighbour."""
    crop, ap, rot, scale, shift = [hit(q) for q in (p.p_crop, p.p_ap, p.p_rotate, p.p_scale, p.p_shift)]
    if not (crop or ap or rot or scale or shift):
        return img, m, val
    H, W = img.shape
    cy, cx, lungs = (H - 1) / 2, (W - 1) / 2, m > 0
    lr0, lr1, lc0, lc1 = _bbox(lungs) if (has_lungs := lungs.sum() >= 30) else (H // 4, 3 * H // 4, W // 4, 3 * W // 4)
    win = list(_bbox(val)) if val.any() else [0, H - 1, 0, W - 1]
    if crop:  # the film edge runs across the lung: the part beyond it is gone from image, mask and valid
        f, kind = rng.uniform(*p.crop_fraction), rng.choice(["top", "bottom", "side", "corner"], p=[.3, .2, .25, .25])
        low = rng.random() < 0.5  # viewer's left (small columns) or right
        lh, fw = lr1 - lr0, 0.4 * (lc1 - lc0)  # one field is ~0.4 of both fields' width
        rr, cc, cut = np.arange(H)[:, None], np.arange(W)[None, :], False
        if kind != "corner":  # top, bottom or one side: that edge of the film moves into the lung
            i = {"top": 0, "bottom": 1, "side": 2 if low else 3}[kind]
            edge = (lr0 + f * lh, lr1 - f * lh, lc0 + f * fw, lc1 - f * fw)[i]
            win[i] = max(win[i], edge) if i in (0, 2) else min(win[i], edge)
        else:  # a diagonal edge through the lung's lowest-lateral point, moved in: one costophrenic angle off
            dy, dx = f * lh * rng.uniform(0.8, 1.6), f * fw * rng.uniform(1.0, 2.0) * (-1 if low else 1)
            score = rr / dy + cc / dx
            cut = score > (score[lungs].max() if has_lungs else lr1 / dy + (lc0 if low else lc1) / dx) - 1
        val = val & ~cut & (rr >= win[0]) & (rr <= win[1]) & (cc >= win[2]) & (cc <= win[3])
    fit = min(H / (win[1] - win[0] + 1), W / (win[3] - win[2] + 1)) if crop else 1.0  # the rest fills the frame
    wy, wx = ((win[0] + win[1]) / 2, (win[2] + win[3]) / 2) if crop else (cy, cx)
    theta = np.deg2rad(rng.triangular(-p.max_rotation_deg, 0, p.max_rotation_deg)) if rot else 0.0
    s, aspect = (rng.uniform(*p.scale_range), rng.uniform(*p.aspect_range)) if scale else (1.0, 1.0)
    ty, tx = rng.uniform(-1, 1, 2) * p.max_shift * np.array([H, W]) if shift else (0.0, 0.0)
    a, b = (rng.uniform(*p.ap_compress), rng.uniform(*p.ap_widen)) if ap else (0.0, 0.0)
    mid = ((_split_col(lungs) if has_lungs else cx) - wx) * fit + cx

    def source(r, c):  # output pixel -> source pixel (row, col): every step inverted, last first
        y, x = r - cy - ty, c - cx - tx
        r = (np.cos(theta) * y + np.sin(theta) * x) / (s * np.sqrt(aspect)) + cy
        c = (np.cos(theta) * x - np.sin(theta) * y) * np.sqrt(aspect) / s + cx
        yn = np.clip(r / (H - 1), 0, 1)
        r = r + a * (H - 1) * np.sin(np.pi * yn) / np.pi  # slope 1 + a at the top: the upper field shrinks
        c = c - b * (c - mid) * np.exp(-((c - mid) / (0.18 * W)) ** 2) * (0.5 + 0.5 * yn)  # heart magnified
        return (r - cy) / fit + wy, (c - cx) / fit + wx

    n = 6 if ap else 1  # an affine map is exact on one quad; the AP warp is piecewise bilinear on 6 x 6
    ys, xs = np.linspace(0, H, n + 1).round().astype(int), np.linspace(0, W, n + 1).round().astype(int)
    R, C = (q + 0.5 for q in source(ys[:, None] - 0.5, xs[None, :] - 0.5))  # PIL: pixel centres at +0.5
    mesh = [((int(xs[j]), int(ys[i]), int(xs[j + 1]), int(ys[i + 1])), tuple(
        v for ii, jj in ((i, j), (i + 1, j), (i + 1, j + 1), (i, j + 1)) for v in (C[ii, jj], R[ii, jj])))
        for i in range(n) for j in range(n)]
    code, out = (np.asarray(Image.fromarray(x).transform((W, H), Image.Transform.MESH, mesh, resample=how))
                 for x, how in ((np.where(val, m.astype(np.uint8) + 8, 0).astype(np.uint8), Image.Resampling.NEAREST),
                                (np.where(val, img, 0).astype(np.float32), Image.Resampling.BILINEAR)))  # label + 8
    return np.where(code >= 8, out, 0).astype(np.float32), np.where(code >= 8, code - 8, 0).astype(m.dtype), code >= 8

def _devices(rng, shape, marks, tubes: bool, ecg: bool) -> np.ndarray:
    """Radio-opaque objects as opacity 0..1: tubes and lines as thin bright curves, electrodes as rings."""
    r0, r1, c0, c1, mid = marks
    lh, lw, canvas = r1 - r0, c1 - c0, Image.new("L", shape[::-1])
    draw = ImageDraw.Draw(canvas)

    def tone(lo, hi):
        return int(rng.integers(lo, hi))

    if tubes and rng.random() < 0.6:  # endotracheal tube: faint band, radio-opaque stripe, tip above the carina
        path = _curve((-5, mid + rng.normal(0, 6)), (r0 - 0.2 * lh, mid + rng.normal(0, 4)),
                      (r0 + rng.uniform(0.1, 0.3) * lh, mid + rng.normal(0, 2)))
        draw.line(path, fill=tone(70, 130), width=tone(4, 7), joint="curve")
        draw.line(path, fill=tone(180, 256), width=1)
    if tubes and rng.random() < 0.5:  # nasogastric tube: down the midline into the stomach under the left dome
        bend = (r1 + rng.uniform(-0.05, 0.1) * lh, mid + rng.normal(0, 4))
        end = (r1 + rng.uniform(0.05, 0.25) * lh, mid + rng.uniform(0.12, 0.35) * lw)
        path = _curve((-5, mid + rng.normal(0, 8)), (r0 + 0.5 * lh, mid + rng.normal(0, 5)), bend)
        draw.line(path + _curve(bend, (end[0] + 0.1 * lh, bend[1] + 0.05 * lw), end), fill=tone(150, 240), width=2)
    if tubes and rng.random() < 0.5:  # central line from the subclavian / jugular region to the SVC
        start = (r0 - rng.uniform(0.0, 0.12) * lh, c0 + rng.uniform(0, 0.3) * lw if rng.random() < 0.6
                 else c1 - rng.uniform(0, 0.3) * lw)
        tip = (r0 + rng.uniform(0.25, 0.45) * lh, mid - rng.uniform(0.02, 0.08) * lw)
        draw.line(_curve(start, (r0 + rng.uniform(-0.05, 0.1) * lh, (start[1] + tip[1]) / 2), tip),
                  fill=tone(140, 230), width=tone(1, 3), joint="curve")
    for _ in range(tone(2, 6) if ecg else 0):  # electrode: bright rim, darker disc, a dot, and its lead
        cr, cc, rad = r0 + rng.uniform(-0.2, 1.0) * lh, c0 + rng.uniform(-0.15, 1.15) * lw, rng.uniform(3, 6)
        edge = (rng.choice([-40.0, shape[0] + 40.0]), cc + rng.normal(0, 0.5 * lw))
        draw.line(_curve((cr, cc), ((cr + edge[0]) / 2 + rng.normal(0, 20), cc + rng.normal(0, 30)), edge),
                  fill=tone(120, 220), width=1)
        draw.ellipse([cc - rad, cr - rad, cc + rad, cr + rad], fill=tone(40, 120), outline=tone(180, 256),
                     width=tone(1, 3))
        draw.ellipse([cc - 1.2, cr - 1.2, cc + 1.2, cr + 1.2], fill=255)
    return np.asarray(canvas, np.float32) / 255

def _burnt_in(rng, img, marks, box, text: bool, arrows: bool) -> np.ndarray:
    """Letters, dates and arrows painted over the film after processing: pure white or black (arrows also
    mid-grey, as coloured arrows become), over lung or not; the label does not change."""
    picture = Image.fromarray(img.copy())
    draw = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(1, 4)) if text else 0):
        kind, n = rng.random(), rng.integers(0, 60, 3)
        word = WORDS[n[0] % len(WORDS)] if kind < 0.6 else f"{n[0] % 24:02d}:{n[1]:02d}" if kind > 0.8 else \
            f"{n[0] % 28 + 1:02d}/{n[1] % 12 + 1:02d}/20{15 + n[2] % 8}"
        k = int(rng.integers(2, 5)) if len(word) <= 2 else int(rng.integers(1, 3))  # markers big, words small
        tile = Image.new("L", tuple(v + 4 for v in FONT.getbbox(word)[2:]))
        ImageDraw.Draw(tile).text((2, 2), word, fill=255, font=FONT)
        tile = tile.resize((tile.width * k, tile.height * k), Image.Resampling.NEAREST)
        if rng.random() < 0.85:  # near a corner of the film, else anywhere
            top = box[0] + rng.integers(0, 12) if rng.random() < 0.7 else box[1] - tile.height - rng.integers(0, 12)
            left = box[2] + rng.integers(0, 12) if rng.random() < 0.5 else box[3] - tile.width - rng.integers(0, 12)
        else:
            top, left = rng.uniform(box[0], box[1] - tile.height / 2), rng.uniform(box[2], box[3] - tile.width / 2)
        top, left, white = int(top), int(left), rng.random() < 0.75
        if rng.random() < 0.3:  # label box in the opposite colour
            draw.rectangle([left, top, left + tile.width - 1, top + tile.height - 1], fill=0.0 if white else 1.0)
        picture.paste(1.0 if white else 0.0, (left, top), tile)
    for _ in range(int(rng.integers(1, 5)) if arrows else 0):  # pointing into the lungs
        tip = np.array([rng.uniform(marks[0], marks[1]), rng.uniform(marks[2], marks[3])])
        ang, length, width = rng.uniform(0, 2 * np.pi), rng.uniform(12, 35), int(rng.integers(2, 4))
        d = np.array([np.sin(ang), np.cos(ang)])
        tail, neck, n = tip + d * length, tip + d * 3 * width, np.array([-d[1], d[0]]) * 2.2 * width
        colour = (1.0, 0.0, rng.uniform(0.35, 0.75))[int(rng.integers(3))]
        draw.line([(tail[1], tail[0]), (neck[1], neck[0])], fill=colour, width=width)
        draw.polygon([(q[1], q[0]) for q in (tip, neck + n, neck - n)], fill=colour)
    return np.asarray(picture, np.float32)

def _outside(shape, box, insets) -> np.ndarray:  # outside box (r0, r1, c0, c1) shrunk by (top, bottom, left, right)
    rr, cc = np.arange(shape[0])[:, None], np.arange(shape[1])[None, :]
    return (rr < box[0] + insets[0]) | (rr > box[1] - insets[1]) | (cc < box[2] + insets[2]) | (cc > box[3] - insets[3])

def film_augment(image: np.ndarray, mask: np.ndarray, valid: np.ndarray, rng: np.random.Generator,
                 params: FilmParams = FilmParams()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A film nobody prepared: geometry (AP look, tilt, scale, shift, crop) on image, mask and valid alike;
    collimation, devices, exposure, blur, noise, frame bands, text, arrows and JPEG on the image only (lung
    under an opaque frame band, or beyond the film edge, leaves the mask). Identity when every p_ is 0."""
    p, fired = params, []

    def hit(q):  # one draw per effect, recorded, so "nothing happened" returns the input untouched
        return fired.append(rng.random() < q) or fired[-1]

    img, m, val = _geometry(np.asarray(image, np.float32), np.asarray(mask), np.asarray(valid, bool), rng, p, hit)
    img, m, (H, W) = img.copy(), m.copy(), img.shape
    box = r0, r1, c0, c1 = _bbox(val) if val.any() else (0, H - 1, 0, W - 1)
    marks = (*_bbox(m > 0), _split_col(m > 0)) if (m > 0).sum() >= 30 else \
        ((4 * r0 + r1) // 5, (r0 + 4 * r1) // 5, (5 * c0 + c1) // 6, (c0 + 5 * c1) // 6, (c0 + c1) // 2)
    if hit(p.p_collimation):  # bright margins; the insets stop short of the lungs
        gaps = (marks[0] - r0, r1 - marks[1], marks[2] - c0, c1 - marks[3])
        insets = [rng.uniform(0, max(g - 2, 0)) if rng.random() < 0.6 else 0.0 for g in gaps]
        img = np.where(_outside((H, W), box, insets), img + (1 - img) * rng.uniform(*p.collimation_opacity), img)
    tubes, ecg = hit(p.p_tubes), hit(p.p_ecg)
    if tubes or ecg:
        img = img + (1 - img) * 0.95 * _devices(rng, (H, W), marks, tubes, ecg)
    if hit(p.p_exposure):
        img = np.clip(img, 0, 1) ** np.float32(np.exp(rng.uniform(*np.log(p.gamma_range))))
        mean = float(img[val].mean()) if val.any() else 0.5
        ang, amp = rng.uniform(0, 2 * np.pi), rng.uniform(*p.gradient_range)
        ramp = (np.arange(H)[:, None] / H - 0.5) * np.sin(ang) + (np.arange(W)[None, :] / W - 0.5) * np.cos(ang)
        img = (img - mean) * rng.uniform(*p.contrast_range) + mean + rng.uniform(*p.brightness_range) + 2 * amp * ramp
    if hit(p.p_blur):
        img = _blur(np.clip(img, 0, 1), rng.uniform(*p.blur_sigma))
    if hit(p.p_noise):
        sd = rng.uniform(*p.noise_sigma) + np.float32(rng.uniform(*p.quantum_sigma)) * (0.3 + np.clip(img, 0, 1))
        img = img + sd * rng.standard_normal((H, W), dtype=np.float32)
    img = np.clip(img, 0, 1)
    if hit(p.p_border):  # frame bands hide what is under them, lung included
        keep = rng.random(4) < 0.5
        keep[rng.integers(4)] = True  # at least one band
        band = _outside((H, W), box, np.where(keep, rng.integers(p.border_width[0], p.border_width[1] + 1, 4), 0)) & val
        img[band], m[band] = 1.0 if rng.random() < 0.4 else 0.0, 0
    text, arrows = hit(p.p_text), hit(p.p_arrows)
    if text or arrows:
        img = _burnt_in(rng, img, marks, box, text, arrows)
    if hit(p.p_jpeg):
        buffer = io.BytesIO()
        quality = int(rng.integers(*p.jpeg_quality))
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
        img = np.asarray(Image.open(buffer), np.float32) / 255
    if not any(fired):
        return img, m, val.copy()
    m[~val] = 0
    return np.where(val, img, 0).astype(np.float32), m, val
