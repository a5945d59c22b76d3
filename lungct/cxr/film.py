"""Film augmentation: a clean radiograph made to look like one nobody prepared.

Why: portable films (AP supine, tilted, cropped, under- or over-exposed, noisy, with tubes, letters and
frame bands, passed around as JPEG) confused a model trained on clean PA films. `film_augment` draws
each effect by its own chance, in a fixed order: the geometry (lungct.cxr.film_geometry) moves image,
mask and valid together; the rest changes the image only, except where an opaque frame band or the film
edge hides lung, which then leaves the mask. Arrays as after ResizePadd (lungct.cxr.field_geometry);
valid bool, False on the padding. All randomness from `rng`.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lungct.cxr.field_geometry import Landmarks, blur, bounding_box, lung_landmarks
from lungct.cxr.film_geometry import warp_film
from lungct.cxr.film_overlays import burn_in, device_opacity


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
    quantum_sigma: tuple = (0.0, 0.02)  # Poisson-like, x (0.3 + brightness): fewer photons behind density
    p_jpeg: float = 0.1  # blockiness of images passed around as JPEG
    jpeg_quality: tuple = (10, 50)
    p_text: float = 0.4  # burnt-in letters and markers: L, R, AP, PORTABLE, dates, times
    p_arrows: float = 0.1  # annotation arrows (coloured ones turn mid-grey in grey films)
    p_tubes: float = 0.3  # ET tube, NG tube, central line
    p_ecg: float = 0.25  # ECG electrodes (rings/discs) and their leads


def _outside(shape: tuple, box, insets) -> np.ndarray:
    """True outside box (first/last row, first/last column) shrunk by insets (top, bottom, left, right)."""
    rr, cc = np.arange(shape[0])[:, None], np.arange(shape[1])[None, :]
    return (rr < box[0] + insets[0]) | (rr > box[1] - insets[1]) | (cc < box[2] + insets[2]) | \
        (cc > box[3] - insets[3])


def _collimate(rng, image: np.ndarray, film_box, lungs: Landmarks, opacity_range) -> np.ndarray:
    """Bright unexposed margins outside a collimation rectangle, inset from each film edge (60 % of the
    time) but stopping short of the lungs."""
    first_row, last_row, first_col, last_col = film_box
    gaps = (lungs.top - first_row, last_row - lungs.bottom, lungs.left - first_col, last_col - lungs.right)
    insets = [rng.uniform(0, max(gap - 2, 0)) if rng.random() < 0.6 else 0.0 for gap in gaps]
    margins = _outside(image.shape, film_box, insets)
    return np.where(margins, image + (1 - image) * rng.uniform(*opacity_range), image)


def _expose(rng, image: np.ndarray, valid: np.ndarray, params: FilmParams) -> np.ndarray:
    """Exposure and processing: a gamma, then contrast about the film's mean, brightness and a linear
    ramp across the film in a random direction (heel effect, grid cut-off)."""
    rows, cols = image.shape
    image = np.clip(image, 0, 1) ** np.float32(np.exp(rng.uniform(*np.log(params.gamma_range))))
    mean = float(image[valid].mean()) if valid.any() else 0.5
    angle, amplitude = rng.uniform(0, 2 * np.pi), rng.uniform(*params.gradient_range)
    ramp = (np.arange(rows)[:, None] / rows - 0.5) * np.sin(angle) + \
        (np.arange(cols)[None, :] / cols - 0.5) * np.cos(angle)
    contrast = rng.uniform(*params.contrast_range)
    brightness = rng.uniform(*params.brightness_range)
    return (image - mean) * contrast + mean + brightness + 2 * amplitude * ramp


def _add_noise(rng, image: np.ndarray, params: FilmParams) -> np.ndarray:
    """Electronic noise, plus quantum noise growing with brightness (fewer photons behind density)."""
    electronic = rng.uniform(*params.noise_sigma)
    quantum = np.float32(rng.uniform(*params.quantum_sigma))
    sd = electronic + quantum * (0.3 + np.clip(image, 0, 1))
    return image + sd * rng.standard_normal(image.shape, dtype=np.float32)


def _frame_bands(rng, shape: tuple, film_box, valid: np.ndarray, width_range) -> np.ndarray:
    """Where frame bands lie: along each film edge by chance (one at least), each of its own width."""
    sides = rng.random(4) < 0.5
    sides[rng.integers(4)] = True
    widths = rng.integers(width_range[0], width_range[1] + 1, 4)
    return _outside(shape, film_box, np.where(sides, widths, 0)) & valid


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    """The image through 8-bit JPEG at `quality`, back as float32 in [0, 1]."""
    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8)).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer), np.float32) / 255


def film_augment(image: np.ndarray, mask: np.ndarray, valid: np.ndarray, rng: np.random.Generator,
                 params: FilmParams = FilmParams()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A film nobody prepared: geometry (AP look, tilt, scale, shift, crop) on image, mask and valid alike;
    collimation, devices, exposure, blur, noise, frame bands, text, arrows and JPEG on the image only (lung
    under an opaque frame band, or beyond the film edge, leaves the mask). Identity when every p_ is 0."""
    fired = []

    def hit(chance: float) -> bool:  # one draw per effect, recorded, so "nothing happened" returns the input
        fired.append(rng.random() < chance)
        return fired[-1]

    image, mask, valid = np.asarray(image, np.float32), np.asarray(mask), np.asarray(valid, bool)
    moves = (params.p_crop, params.p_ap, params.p_rotate, params.p_scale, params.p_shift)
    crop, ap, rotate, scale, shift = [hit(chance) for chance in moves]
    image, mask, valid = warp_film(image, mask, valid, rng, params, crop, ap, rotate, scale, shift)
    image, mask, (rows, cols) = image.copy(), mask.copy(), image.shape
    film_box = bounding_box(valid) if valid.any() else (0, rows - 1, 0, cols - 1)
    lungs = lung_landmarks(mask > 0, film_box)
    if hit(params.p_collimation):
        image = _collimate(rng, image, film_box, lungs, params.collimation_opacity)
    tubes, ecg = hit(params.p_tubes), hit(params.p_ecg)
    if tubes or ecg:
        image = image + (1 - image) * 0.95 * device_opacity(rng, (rows, cols), lungs, tubes, ecg)
    if hit(params.p_exposure):
        image = _expose(rng, image, valid, params)
    if hit(params.p_blur):
        image = blur(np.clip(image, 0, 1), rng.uniform(*params.blur_sigma))
    if hit(params.p_noise):
        image = _add_noise(rng, image, params)
    image = np.clip(image, 0, 1)
    if hit(params.p_border):  # frame bands hide what is under them, lung included
        band = _frame_bands(rng, (rows, cols), film_box, valid, params.border_width)
        image[band], mask[band] = 1.0 if rng.random() < 0.4 else 0.0, 0
    text, arrows = hit(params.p_text), hit(params.p_arrows)
    if text or arrows:
        image = burn_in(rng, image, lungs, film_box, text, arrows)
    if hit(params.p_jpeg):
        image = _jpeg(image, int(rng.integers(*params.jpeg_quality)))
    if not any(fired):
        return image, mask, valid.copy()
    mask[~valid] = 0
    return np.where(valid, image, 0).astype(np.float32), mask, valid
