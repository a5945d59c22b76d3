"""Synthetic dense lesions painted into chest CT and labelled as lung: a model trained on aerated-lung-only
references carves tumours (worst: those against the chest wall, mediastinum, spine or diaphragm), consolidation and
atelectasis out of the lung; these teach it that all inside the visceral pleura is lung, and effusion (which turns
the dependent lung into background) that fluid against the back wall is not. Millimetres and HU throughout; a 2D
slice is a volume one voxel thick (a tumour on it is the cut through a 3D one)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

PLACEMENTS = ("chest_wall", "mediastinum", "spine", "diaphragm")


@dataclass(frozen=True)
class LesionParams:
    """Every constant of the synthesis; (low, high) pairs are drawn uniformly unless said otherwise."""
    count_probs: tuple = (0.1, 0.45, 0.3, 0.15)  # P(0, 1, 2, 3 lesions) per image
    tumour_prob: float = 0.7  # a lesion is a tumour, else consolidation/atelectasis
    effusion_prob: float = 0.08  # per lung: a dependent effusion replacing its posterior part
    diameter_mm: tuple = (8.0, 60.0)  # tumour (a sphere before lobulation), log-uniform: small ones commoner
    juxtapleural_prob: float = 0.65  # tumours placed against the pleura; the rest surrounded by lung
    pleural_overlap: tuple = (0.15, 0.45)  # share of their radius beyond the pleura (clipped): higher = broader base
    placement_probs: tuple = (0.4, 0.25, 0.2, 0.15)  # chest wall, mediastinum, spine, diaphragm (over those shown)
    tumour_hu: tuple = (0.0, 60.0)  # mean density (soft tissue)
    texture_sd_hu: tuple = (15.0, 40.0)  # total sd inside: correlated texture plus the scan's own noise
    texture_mm: tuple = (1.5, 4.0)  # correlation length (gaussian sigma) of that texture
    lobes: tuple = (3, 8)  # smooth bumps on the radius (lobulation), integers
    lobe_amplitude: tuple = (0.08, 0.3)  # their height, fraction of the radius, either sign
    lobe_sharpness: tuple = (3.0, 12.0)  # their von Mises concentration: higher = narrower
    roughness: float = 0.08  # sd of the outline's noise (two octaves), fraction of the radius
    spiculated_prob: float = 0.5  # tumours with spicules
    spicules: tuple = (4, 12)  # how many, integers
    spicule_length_mm: tuple = (4.0, 18.0)  # beyond the surface
    spicule_width_mm: tuple = (0.8, 1.8)  # at the base; they taper to a third
    necrosis_prob: float = 0.2  # a low-density core
    necrosis_drop_hu: tuple = (15.0, 45.0)  # how much lower the core is
    pleural_margin_mm: float = 1.5  # tissue outside the lung a lesion may blend into (image only, never labels)
    consolidation_hu: tuple = (-100.0, 40.0)  # mean density; brighter vessels stay visible through it
    consolidation_sd_hu: tuple = (10.0, 30.0)  # its texture sd
    consolidation_depth_mm: tuple = (10.0, 45.0)  # from the pleura inwards (x 0.6 when dependent)
    consolidation_extent_mm: tuple = (20.0, 60.0)  # half-width along the pleura (x 1.3 when dependent)
    consolidation_edge_mm: tuple = (1.5, 5.0)  # blur of the inner margin: sharp atelectasis .. fuzzy pneumonia
    dependent_prob: float = 0.5  # consolidation at the posterior (dependent) pleura, a crescent; else a wedge
    bronchogram_prob: float = 0.5  # consolidation with air bronchograms
    bronchus_radius_mm: tuple = (0.8, 2.0)  # of the first branch; each fork shrinks it by 0.75
    effusion_hu: tuple = (0.0, 20.0)  # fluid
    effusion_thickness_mm: tuple = (8.0, 40.0)  # at the most dependent point (at most 40 % of the lung's depth)
    effusion_meniscus: tuple = (0.3, 0.8)  # 1 = flat gravity level; lower climbs the walls as a crescent
    bone_hu: float = 150.0  # spine; tissue a lesion never blends into
    midline_band_mm: float = 15.0  # half-width of the midline band where the spinal canal is sought
    paravertebral_mm: float = 50.0  # lung surface this near the vertebral body's centre is the spine gutter
    hull_mm: float = 8.0  # surface this near the lungs' axial hull is costal; deeper: medial = mediastinal, else dome
    diaphragm_cos: float = 0.5  # 3D: lower-lung surface facing the feet within 60 degrees is diaphragmatic
    analysis_mm: float = 3.0  # 3D: grid on which lung surfaces are found and classified


@dataclass
class Lesion:
    """One painted lesion (for coverage measurements); box, alpha and mask cover its footprint only."""
    kind: str  # "tumour", "consolidation" or "effusion"
    side: int  # 1 = right lung, 2 = left lung
    placement: str  # PLACEMENTS or "intrapulmonary"; consolidation "dependent"/"peripheral"; effusion "posterior"
    centre_mm: np.ndarray  # voxel index * spacing
    diameter_mm: float  # tumour size, 2 x consolidation extent, effusion thickness
    box: tuple  # slices of the image
    alpha: np.ndarray  # blending weight over box: the image changed only where > 0
    mask: np.ndarray  # lesion voxels over box (effusion: the lung turned background)


def orientation_hints(affine) -> tuple[np.ndarray, int]:
    """(posterior as a voxel-step direction (x, y, z), +1/-1 = the z index direction towards the feet)."""
    return (inv := np.linalg.inv(np.asarray(affine, float)[:3, :3])) @ [0.0, -1.0, 0.0], int(-np.sign(inv[2, 2]) or -1)


def synthesize_lesions(image_hu, lungs, spacing_mm, rng: np.random.Generator, params: LesionParams = LesionParams(),
                       posterior_hint=None, inferior_hint=None, records: list | None = None) -> tuple[np.ndarray, ...]:
    """(new image in HU, new lung labels, lesion mask) for a 2D slice (x, y) or a volume (x, y, z): effusions, then
    0..n lesions; `records` (a list) receives a `Lesion` each. Without hints (`orientation_hints`) posterior and
    inferior come from the anatomy (spinal canal, lung base)."""
    flat = np.ndim(image_hu) == 2
    img, lab, sp = np.array(image_hu, np.float32), np.array(lungs, np.uint8), np.asarray(spacing_mm, float)
    if flat:
        img, lab, sp = img[..., None], lab[..., None], np.append(sp, sp.mean())
    s = _Scene(img, lab, sp, params, posterior_hint, inferior_hint)
    for side in s.sides:
        if rng.random() < params.effusion_prob:
            s.effusion(side, rng)
    volume = np.bincount(s.clab.ravel(), minlength=3)[1:3].astype(float)
    for _ in range(rng.choice(len(params.count_probs), p=np.divide(params.count_probs, sum(params.count_probs)))
                   if volume.sum() > 20 else 0):
        paint = s.tumour if rng.random() < params.tumour_prob else s.consolidation
        paint(1 + rng.choice(2, p=volume / volume.sum()), rng)
    for r in s.records if flat else ():
        r.box, r.alpha, r.mask, r.centre_mm = r.box[:2], r.alpha[..., 0], r.mask[..., 0], r.centre_mm[:2]
    if records is not None:
        records.extend(s.records)
    return (s.img[..., 0], s.lab[..., 0], s.mask[..., 0]) if flat else (s.img, s.lab, s.mask)


def _unit(rng, flat: bool = False, z_scale: float = 1.0) -> np.ndarray:
    """A random direction; on a slice squashed towards its plane by `z_scale`, so that it shows."""
    return (v := rng.standard_normal(3) * (1, 1, z_scale if flat else 1)) / np.linalg.norm(v)


def _smooth_noise(shape, sigma_mm, sp, rng) -> np.ndarray:
    """Unit-sd noise correlated over `sigma_mm`; wide fields are drawn coarse and interpolated (fast)."""
    sig = np.array([sigma_mm / s if n > 1 else 0.0 for s, n in zip(sp, shape)])
    f = np.maximum(1, sig // 2).astype(int)
    small = tuple(-(-n // k) + (k > 1) for n, k in zip(shape, f))
    g = _upsample(ndimage.gaussian_filter(rng.standard_normal(small, dtype=np.float32), sig / f, truncate=3.0), shape)
    return (g - g.mean()) / (g.std() + 1e-6)


def _upsample(a, shape):
    """Linear interpolation onto `shape`, corners aligned, an axis at a time (ndimage.zoom is far slower)."""
    for ax, n in ((ax, n) for ax, n in enumerate(shape) if a.shape[ax] != n):
        x = np.linspace(0, a.shape[ax] - 1, n)
        i = np.minimum(x.astype(int), max(a.shape[ax] - 2, 0))
        w = (x - i).reshape([-1 if j == ax else 1 for j in range(a.ndim)]).astype(np.float32)
        a = np.take(a, i, ax) * (1 - w) + np.take(a, np.minimum(i + 1, a.shape[ax] - 1), ax) * w
    return a


def _segment(grid, a, b, reach):
    """Distance (mm) to the segment a-b and position t in [0, 1], on the sub-box of `grid` within `reach`."""
    sub = tuple(slice(*np.searchsorted(g.ravel(), [min(a[i], b[i]) - reach, max(a[i], b[i]) + reach]))
                for i, g in enumerate(grid))
    rel = [g[tuple(s if j == i else slice(None) for j, s in enumerate(sub))] - a[i] for i, g in enumerate(grid)]
    t = np.clip(sum(r * d for r, d in zip(rel, b - a)) / ((b - a) @ (b - a)), 0.0, 1.0)
    return sub, np.sqrt(sum((r - t * d) ** 2 for r, d in zip(rel, b - a))), t


class _Scene:
    """The image being painted, what its anatomy says (axes, spine, lung surfaces by placement), the painters."""
    def __init__(self, img, lab, sp, p: LesionParams, post_hint, inf_hint):
        self.img, self.lab, self.sp, self.p, self.flat = img, lab, sp, p, lab.shape[2] == 1
        self.stride = np.ones(3, int) if self.flat else np.maximum(1, np.round(p.analysis_mm / sp)).astype(int)
        self.csp, self.mask, self.records, self._surfaces = sp * self.stride, np.zeros(lab.shape, bool), [], {}
        a, b = (img[i:img.shape[0] - 1 + i, :, ::max(1, lab.shape[2] // 3)] for i in (0, 1))
        d = (a - b)[(np.abs(a - 20) < 100) & (np.abs(b - 20) < 100)]  # the scan's own noise, in soft tissue
        self.noise = float(np.clip(1.05 * np.median(np.abs(d - np.median(d))), 4, 40)) if d.size > 50 else 10.0
        self.cross = ndimage.generate_binary_structure(3, 1) * (np.array([0, 1, 0]) if self.flat else 1)  # in-plane
        r = np.floor(p.pleural_margin_mm / sp + 1e-6).astype(int) * (np.array(lab.shape) > 1)  # a ball, in mm
        self.rim = ((((np.indices(2 * r + 1).T - r) * sp) ** 2).sum(-1).T <= p.pleural_margin_mm ** 2 + 1e-6)
        self.clab = lab[::self.stride[0], ::self.stride[1], ::self.stride[2]]  # a view: sees later effusions
        self._frame(post_hint, inf_hint)

    def _frame(self, post_hint, inf_hint):
        """Left-right axis (lung to lung), posterior (hint or slice cues), the spine on each slice, inferior."""
        lab = self.clab
        pts = {s: np.argwhere(lab == s) * self.csp for s in (1, 2)}
        self.sides = [s for s in (1, 2) if len(pts[s]) >= 5]
        self.centre = {s: pts[s].mean(0) for s in self.sides}
        if len(self.sides) == 2:
            lr, mid = self.centre[2] - self.centre[1], (self.centre[1] + self.centre[2]) / 2
        else:  # one lung (or none): the body's centre is the midline
            mid = np.argwhere(self.img[::self.stride[0], ::self.stride[1], ::self.stride[2]] > -400).mean(0) * self.csp
            lr = np.zeros(3) if not self.sides else (mid - self.centre[self.sides[0]]) * (3 - 2 * self.sides[0])
        lr[2] = 0
        self.lr = lr / np.linalg.norm(lr) if np.linalg.norm(lr) > 1 else np.array([1.0, 0, 0])
        self.mid, post = mid, np.array([-self.lr[1], self.lr[0], 0.0])
        zs = np.flatnonzero((lab > 0).any((0, 1))) * self.stride[2]
        cues = {k: self._slice_cues(k, post) for k in zs[::max(1, len(zs) // 16)]}  # some 16 slices
        hint = None if post_hint is None else (np.resize(np.append(post_hint, 0), 3) * [1, 1, 0] * self.sp) @ post
        sign = 1 if (sum(c[0] for c in cues.values()) if hint is None else hint) >= 0 else -1
        self.post, zmm = post * sign, np.arange(self.lab.shape[2]) * self.sp[2]
        known = {k: c[1 if sign > 0 else 2] for k, c in cues.items() if c[1 if sign > 0 else 2] is not None}
        known = known or {0: np.full(2, 1e6)}  # no spine seen: no paravertebral surface
        c, kz = np.array([known[k] for k in sorted(known)]), np.array(sorted(known)) * self.sp[2]
        self.spine = np.stack([np.interp(zmm, kz, c[:, 0]), np.interp(zmm, kz, c[:, 1]), zmm], 1)  # per slice
        if not self.flat and inf_hint is None:  # the base spans the thorax, the apex is narrow
            size = [np.ptp(np.argwhere(lab[:, :, k]), 0).prod() for k in range(lab.shape[2]) if lab[:, :, k].any()]
            inf_hint = -1 if np.mean(size[:max(1, len(size) // 4)]) > np.mean(size[-max(1, len(size) // 4):]) else 1
        self.inf = np.array([0.0, 0.0, 0.0 if self.flat else np.sign(inf_hint)])

    def _slice_cues(self, k, post):
        """One slice's vote (+ if `post` is posterior) and the vertebra's centre if it is / is not. Cues: the spinal
        canal (a fluid hole in midline bone: a contrast-filled heart outweighs the spine in bone mass), the base's
        posterior recesses, the denser dependent lung, midline bone mass."""
        p, sp, lr, pp, lab = self.p, self.csp[:2], self.lr[:2], post[:2], self.clab[:, :, k // self.stride[2]]
        cs = [np.argwhere(lab == s).mean(0) * sp for s in (1, 2) if (lab == s).sum() >= 5]
        mid = (cs[0] + cs[1]) / 2 if len(cs) == 2 else self.mid[:2]
        lung = np.argwhere(lab > 0) * sp - mid
        if len(lung) < 20:
            return 0.0, None, None
        img = self.img[::self.stride[0], ::self.stride[1], k]
        bone = ndimage.binary_closing(img > p.bone_hu, iterations=max(1, round(4.5 / sp.min())))  # shut the arch
        comps, n = ndimage.label(ndimage.binary_fill_holes(bone) & ~bone)
        area, i = np.bincount(comps.ravel(), minlength=n + 1)[1:] * sp.prod(), np.arange(1, n + 1)
        fluid = ndimage.mean(np.abs(img) < 100, comps, i) if n else np.zeros(0)
        cent = np.reshape(ndimage.center_of_mass(np.ones_like(bone), comps, i), (-1, 2)) * sp - mid
        a, hu = lung @ pp, img[lab > 0]
        m, q1, q3 = a.mean(), *np.quantile(a, [0.25, 0.75])
        ok = ((area > 120) & (area < 450) & (fluid > 0.5) & (np.abs(cent @ lr) < p.midline_band_mm)
              & (np.abs(cent @ pp - m) > 0.15 * np.ptp(a)))  # in the back third, not inside the heart
        canal = [cent[ok][np.sign(cent[ok] @ pp - m) == d] for d in (1, -1)]
        dep, non = hu[(a > q3) & (hu < -500)], hu[(a < q1) & (hu < -500)]  # dependent lung is denser (gravity)
        grad = np.median(dep) - np.median(non) if len(dep) and len(non) else 0
        skew = np.mean(np.sign(a - (a.min() + a.max()) / 2))  # near the base only the back recesses remain
        band = (band := np.argwhere(img > p.bone_hu) * sp - mid)[np.abs(band @ lr) < p.midline_band_mm]
        behind = [band[(np.sign(band @ pp - m) == d) & (band @ pp * d < np.quantile(a * d, 0.98) + 30)]
                  for d in (1, -1)]  # midline bone on each side, up to 30 mm past the lungs (not the couch)
        vote = (3.0 * (len(canal[0]) - len(canal[1])) + (2 * np.sign(skew) if abs(skew) > 0.3 else 0)
                + (np.sign(grad) if abs(grad) > 25 else 0) + 0.5 * np.sign(len(behind[0]) - len(behind[1])))
        return vote, *[c.mean(0) - 15 * d * pp + mid if len(c) else b.mean(0) + mid if len(b) > 3 else None
                       for c, b, d in zip(canal, behind, (1, -1))]  # the vertebral body is before the canal

    def surfaces(self, side):
        """Surface voxels of a lung on the analysis grid: positions (mm), outward normals, PLACEMENTS index."""
        if side in self._surfaces:
            return self._surfaces[side]
        p, m = self.p, ndimage.binary_fill_holes(self.clab == side, self.cross)  # holes (vessels) are no pleura
        idx = np.argwhere(m & ~ndimage.binary_erosion(m, self.cross, border_value=1))  # a scan's cut is no surface
        axes, normal = np.flatnonzero(np.array(m.shape) > 1), np.zeros((len(idx), 3))
        g = ndimage.gaussian_filter(m * np.float32(1), [1.0 * (n > 1) for n in m.shape])
        normal[:, axes] = -np.stack([d[tuple(idx.T)] for d in np.gradient(g, *self.csp[axes], axis=tuple(axes))], 1)
        pos, normal = idx * self.csp, normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
        rel = (pos - self.spine[idx[:, 2] * self.stride[2]]) * [1, 1, 0]  # from the vertebra on that slice
        spine = (np.linalg.norm(rel, axis=1) < p.paravertebral_mm) & (rel @ self.post > -0.7 * p.paravertebral_mm)
        costal = self._hull_depth(pos) < p.hull_mm
        medial = (normal @ (self.lr if side == 1 else -self.lr) > 0) | (
            np.abs((pos - self.mid) @ self.lr) < abs((self.centre.get(side, self.mid) - self.mid) @ self.lr))
        low = pos @ self.inf >= np.quantile(pos @ self.inf, 0.6) if len(pos) else 0  # not under a hilar vessel
        dia = ~costal & ~medial if self.flat else (normal @ self.inf > p.diaphragm_cos) & low
        self._surfaces[side] = pos, normal, np.where(dia, 3, np.where(spine, 2, np.where(costal | ~medial, 0, 1)))
        return self._surfaces[side]

    def _hull_depth(self, pos) -> np.ndarray:
        """How deep inside the convex hull of both lungs (on its axial slice) each point lies, in mm."""
        ks, depth = np.round(pos[:, 2] / self.csp[2]).astype(int), np.zeros(len(pos))
        for k in np.unique(ks):
            m = self.clab[:, :, k] > 0
            rows = np.flatnonzero(m.any(1))  # the hull of each row's two ends is the hull of the lungs
            ends = np.concatenate([np.stack([rows, m[rows].argmax(1)], 1),
                                   np.stack([rows, m.shape[1] - 1 - m[rows, ::-1].argmax(1)], 1)]) * self.csp[:2]
            eq = ConvexHull(ends).equations if np.linalg.matrix_rank(ends - ends[0]) > 1 else np.zeros((1, 3))
            depth[ks == k] = np.min(-(pos[ks == k, :2] @ eq[:, :2].T + eq[:, 2]), axis=1)
        return depth

    def surface_point(self, side, rng, cats, pick=None):
        """A random surface point of `side` among `cats`, moved onto the last lung voxel of the full grid."""
        pos, normal, cat = self.surfaces(side)
        ok = np.flatnonzero(np.isin(cat, cats) & (True if pick is None else pick(pos)))
        for i in rng.choice(ok, size=min(5, len(ok)), replace=False) if len(ok) else ():
            ii = np.round((pos[i] + np.arange(-8, 9)[:, None] / 4 * self.csp.max() * normal[i]) / self.sp).astype(int)
            inside = np.append(self.lab[tuple(np.clip(ii, 0, np.array(self.lab.shape) - 1).T)] == side, False)
            if inside.any():  # the last lung voxel of the first run along the normal
                return ii[np.argmax(inside) + np.argmax(~inside[np.argmax(inside):]) - 1] * self.sp, normal[i]
        return None

    def crop(self, c, ext):
        """The voxels within `ext` mm of `c` (a box) and their offsets from `c` in mm (broadcastable X, Y, Z)."""
        lo = np.clip(np.floor((c - ext) / self.sp).astype(int), 0, self.lab.shape)
        hi = np.clip(np.ceil((c + ext) / self.sp).astype(int) + 1, 0, self.lab.shape)
        lo[2], hi[2] = (0, 1) if self.flat else (lo[2], hi[2])
        grid = [(np.arange(lo[i], hi[i]) * self.sp[i] - c[i]).reshape([-1 if j == i else 1 for j in range(3)])
                for i in range(3)]
        return tuple(slice(a, b) for a, b in zip(lo, hi)), grid

    def weights(self, box, side):
        """(Paint weight, lung): 1 in it and on its dark partial-volume rim, 0.45 on non-bone tissue by it."""
        lab, im = self.lab[box], self.img[box]
        inside = lab == side
        rim = ndimage.binary_dilation(inside, self.rim) & (lab == 0) & (im < self.p.bone_hu)
        return (inside + rim * np.where(im < -300, 1.0, 0.45).astype(np.float32) if inside.any() else None), inside

    def texture(self, shape, mean, sd, rng, sigma_mm):
        """Correlated texture plus the scan's own noise, `sd` in total."""
        return (mean + np.sqrt(max(sd ** 2 - self.noise ** 2, 16.0)) * _smooth_noise(shape, sigma_mm, self.sp, rng)
                + self.noise * _smooth_noise(shape, 0.4 * self.sp[:2].min(), self.sp, rng))

    def paint(self, kind, side, placement, c, diameter, box, alpha, target):
        """Blend `target` in by `alpha`; the lesion is alpha >= 0.5 inside this lung (its labels stay)."""
        self.img[box] += alpha * (target - self.img[box])
        mask = (alpha >= 0.5) & (self.lab[box] == side)
        self.mask[box] |= mask
        self.records.append(Lesion(kind, side, placement, np.asarray(c, float), float(diameter), box, alpha, mask))

    def blob(self, grid, R, rng):
        """A lobulated, rough outline about the origin: (distance, outline radius, signed distance, voxel depth)."""
        p, (X, Y, Z) = self.p, grid
        dist = np.maximum(np.sqrt(X ** 2 + Y ** 2 + Z ** 2), 1e-3)
        r = np.ones_like(dist)
        for _ in range(rng.integers(p.lobes[0], p.lobes[1] + 1)):  # von Mises bumps on the sphere
            v, kappa, amp = _unit(rng), rng.uniform(*p.lobe_sharpness), rng.uniform(*p.lobe_amplitude)
            r += amp * rng.choice([-1, 1]) * np.exp(kappa * ((X * v[0] + Y * v[1] + Z * v[2]) / dist - 1))
        noise = (_smooth_noise(dist.shape, max(R / 4, 1.5), self.sp, rng) + 0.6 * _smooth_noise(
            dist.shape, max(R / 10, 1.0), self.sp, rng)) * p.roughness * R
        ramp = np.maximum(np.sqrt((X * self.sp[0]) ** 2 + (Y * self.sp[1]) ** 2 + (Z * self.sp[2]) ** 2) / dist,
                          self.sp.min())  # a voxel's depth along the radius: the partial-volume ramp
        return dist, (r := R * np.clip(r, 0.5, 1.4)), dist - r - noise, ramp

    def tumour(self, side, rng):
        """A lobulated, maybe spiculated soft-tissue mass; most against the pleura, and clipped flat by it."""
        p, juxta = self.p, rng.random() < self.p.juxtapleural_prob
        R = float(np.exp(rng.uniform(*np.log(np.asarray(p.diameter_mm) / 2))))
        if juxta and not (have := np.isin(np.arange(4), self.surfaces(side)[2])).any():
            return
        cat = int(rng.choice(4, p=(w := np.multiply(p.placement_probs, have)) / w.sum())) if juxta else None
        for attempt in range(12):
            rp = np.sqrt(R * R - (h := rng.uniform(-0.7, 0.7) * R * self.flat) ** 2)  # a slice cuts it off-centre
            if juxta and (got := self.surface_point(side, rng, [cat])) is None:  # juxta: overlaps the pleura, clipped
                continue
            c = (got[0] - got[1] * (rp - max(1.0, rng.uniform(*p.pleural_overlap) * rp)) if juxta else self.csp * (
                rng.choice(np.argwhere(self.clab == side)) + rng.random(3) * (self.stride > 1))) + [0, 0, h]
            spicules = rng.integers(p.spicules[0], p.spicules[1] + 1) if rng.random() < p.spiculated_prob else 0
            box, grid = self.crop(c, R * 1.64 + (p.spicule_length_mm[1] + R * 0.2) * (spicules > 0) + 3)
            w, inside = self.weights(box, side)
            if w is None or not juxta and (np.sqrt(sum(g ** 2 for g in grid)) < 1.1 * R)[~inside].any():
                R *= 0.85 if attempt % 3 == 2 else 1.0  # no room here: look elsewhere, shrink now and then
                continue
            dist, r, sd, ramp = self.blob(grid, R, rng)
            if not juxta and (sd < ramp / 2)[~inside].any():
                continue
            alpha = np.clip(0.5 - sd / ramp, 0, 1)
            target = self.texture(dist.shape, rng.uniform(*p.tumour_hu), rng.uniform(*p.texture_sd_hu), rng,
                                  rng.uniform(*p.texture_mm))
            for v in [_unit(rng, self.flat, 0.2) for _ in range(spicules)]:  # thin tapering strands; on a slice, in it
                a = v * rp * 0.8 - [0, 0, h]
                sub, d, t = _segment(grid, a, a + v * (R * 0.2 + rng.uniform(*p.spicule_length_mm)), 3.0)
                spike = np.clip(0.5 - (d - rng.uniform(*p.spicule_width_mm) * (1 - 0.67 * t) / 2) / ramp[sub], 0, 1)
                alpha[sub] = np.maximum(alpha[sub], rng.uniform(0.6, 1.0) * spike)
            if rng.random() < p.necrosis_prob:
                target -= rng.uniform(*p.necrosis_drop_hu) * np.clip((r * rng.uniform(0.3, 0.6) - dist) / 3 + 0.5, 0, 1)
            alpha, expected = alpha * w, np.pi * rp * rp if self.flat else 4 / 3 * np.pi * R ** 3
            lesion, place = (alpha >= 0.5) & inside, PLACEMENTS[cat] if juxta else "intrapulmonary"
            if lesion.sum() * np.prod(self.sp[:3 - self.flat]) >= expected / 4 and (  # else no room: try again
                    not juxta or (ndimage.binary_dilation(lesion, self.cross) & ~inside).any()):  # on the pleura
                return self.paint("tumour", side, place, c, 2 * R, box, alpha, target)

    def consolidation(self, side, rng):
        """Dense lung along the pleura: a dependent crescent (atelectasis) or a peripheral wedge (pneumonia)."""
        p, dependent = self.p, rng.random() < self.p.dependent_prob
        pick = (lambda x: x @ self.post >= np.quantile(x @ self.post, 0.75)) if dependent else None  # the back
        got = self.surface_point(side, rng, [0, 2, 3], pick)
        if got is None:
            return
        (q, n), depth, extent = got, rng.uniform(*p.consolidation_depth_mm), rng.uniform(*p.consolidation_extent_mm)
        depth, extent, taper = (depth * 0.6, extent * 1.3, 0.0) if dependent else (depth, extent, rng.uniform(0.3, 0.8))
        inward = 1.3 * depth + (1.3 * extent) ** 2 / 300  # deepest point: depth plus the sag of a curved wall
        box, grid = self.crop(q - n * inward / 2, np.abs(n) * inward / 2 + np.sqrt(1 - n ** 2) * extent * 1.3 + 5)
        grid = [g - ni * inward / 2 for g, ni in zip(grid, n)]  # offsets from q
        w, inside = self.weights(box, side)
        if w is None:
            return
        f = np.where((np.array(inside.shape) > 40) & (not self.flat), 2, 1)  # depth under the pleura, coarse
        below = _upsample(ndimage.distance_transform_edt(inside[tuple(slice(None, None, k) for k in f)],
                                                         sampling=self.sp * f), inside.shape)
        wavy = 1 + 0.3 * np.clip(_smooth_noise(inside.shape, 12.0, self.sp, rng), -1.5, 1)  # undulating margins
        t = below / (depth * wavy)  # depth under the pleura, and distance from q, in units of the lesion's size
        shape = np.maximum(t, np.sqrt(sum(g ** 2 for g in grid)) / (extent * wavy * (1 - taper * np.minimum(t, 1))))
        alpha = np.clip((1 - shape) * depth / rng.uniform(*p.consolidation_edge_mm) + 0.5, 0, 1) * w
        target = self.texture(t.shape, rng.uniform(*p.consolidation_hu), rng.uniform(*p.consolidation_sd_hu), rng, 2.5)
        target = np.maximum(target, self.img[box])  # vessels stay visible through it
        if rng.random() < p.bronchogram_prob and depth > 8:
            air, d0 = np.zeros_like(alpha), n + 2 * np.cross(n, [0, 0, 1] if self.flat else _unit(rng))  # obliquely
            stack = [(-n * depth * rng.uniform(0.6, 0.9), d0 / np.linalg.norm(d0),  # from deep, relative to q
                      rng.uniform(*p.bronchus_radius_mm), 0)]
            while stack:  # a branching tree of air tubes, thinner at each fork
                a, d, rad, gen = stack.pop()
                sub, dist, _ = _segment(grid, a, b := a + d * rng.uniform(0.4, 0.8) * max(depth, extent), rad + 4)
                air[sub] = np.maximum(air[sub], np.clip(0.5 - (dist - rad) / self.sp[:2].min(), 0, 1))
                side_step = (rng.uniform(0.3, 0.6) * _unit(rng, self.flat, 0) for _ in range(2 if gen < 3 else 0))
                stack += [(b, (e := d + sd) / np.linalg.norm(e), rad * 0.75, gen + 1) for sd in side_step]
            air *= np.clip((alpha - 0.6) / 0.4, 0, 1) * np.clip((below - 4) / 3, 0, 1)  # inside, short of the pleura
            target += air * (-900.0 + self.noise * _smooth_noise(t.shape, 0.5, self.sp, rng) - target)
        if ((alpha >= 0.5) & inside).sum() >= 10:
            place = "dependent" if dependent else "peripheral"
            self.paint("consolidation", side, place, q, 2 * extent, box, alpha, target)

    def effusion(self, side, rng):
        """Fluid layering against the posterior chest wall: it replaces the dependent lung, which turns background."""
        p, idx, sp = self.p, np.argwhere(self.lab == side), self.sp  # (called for lungs that are there)
        s, lat = (pos := idx * sp) @ self.post, pos @ self.lr
        col = np.round((lat - lat.min()) / sp[:2].min()).astype(int), idx[:, 2]  # anterior-posterior lines
        top = np.full((col[0].max() + 1, self.lab.shape[2]), -np.inf)
        np.maximum.at(top, col, s)  # the most posterior lung on each line, then smoothed along the wall
        ok, sig = np.isfinite(top), [3 / sp[:2].min(), 3 / sp[2] * (not self.flat)]
        top = (ndimage.gaussian_filter(np.where(ok, top, 0), sig) / ndimage.gaussian_filter(ok + 1e-9, sig))[col]
        thick = min(rng.uniform(*p.effusion_thickness_mm), 0.4 * np.ptp(s))
        level = top - thick + rng.uniform(*p.effusion_meniscus) * (s.max() - top)  # a meniscus up the walls
        a = np.clip((s - level) / np.sqrt(((self.post * sp) ** 2).sum()) + 0.5, 0, 1)
        wet = idx[a > 0]  # the footprint's box, with room for the wall's partial-volume rim
        box = self.crop((wet.min(0) + wet.max(0)) * sp / 2, (np.ptp(wet, 0) / 2 + 4) * sp)[0] if len(wet) else None
        alpha = np.zeros(self.lab[box].shape if box else 0, np.float32)
        alpha[tuple((wet - [b.start for b in box]).T)] = a[a > 0]
        if not (fluid := alpha >= 0.5).any() or fluid.sum() > 0.6 * len(idx):
            return
        lab, im = self.lab[box], self.img[box]
        dark, n = ndimage.label((im < -100) & ((lab == 0) | (lab == side) & ~fluid))  # islands, lung the mask missed
        near = np.unique(dark[ndimage.binary_dilation(fluid, self.cross, iterations=max(1, round(3.0 / sp[:2].min())))])
        near = near[(near > 0) & (np.bincount(dark.ravel(), minlength=n + 1)[near] < 0.2 * fluid.sum())]
        swallowed = np.isin(dark, near)
        alpha[swallowed], fluid = 1.0, fluid | swallowed & (lab == side)
        im += alpha * (self.texture(alpha.shape, rng.uniform(*p.effusion_hu), max(self.noise, 6.0), rng, 3.0) - im)
        lab[fluid] = 0
        self.records.append(Lesion("effusion", side, "posterior", pos[a >= 0.5].mean(0), thick, box, alpha, fluid))
