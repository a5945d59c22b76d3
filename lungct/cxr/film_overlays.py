"""What lies on top of a radiograph but is not anatomy: tubes, lines, ECG electrodes, burnt-in text, arrows.

Why: ICU and portable films carry radio-opaque devices across the lungs, and letters, dates and
annotation arrows burnt into the pixels; a model trained on clean films takes them for lung edges. They
change the image only: the lung under a tube or a letter is still lung.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lungct.cxr.field_geometry import Landmarks

FONT = ImageFont.load_default_imagefont()  # Pillow's small bitmap font, scaled up: blocky burnt-in letters
WORDS = ("L", "R", "AP", "PA", "PORTABLE", "SUPINE", "AP SUPINE", "ERECT", "MOBILE", "PORT", "SEMI-ERECT",
         "UPRIGHT")


def bezier(start, control, end, n: int = 24) -> list:
    """Quadratic Bezier through (row, col) points, as PIL (x, y) pairs."""
    t = np.linspace(0, 1, n)[:, None]
    start, control, end = (np.asarray(q, float) for q in (start, control, end))
    points = (1 - t) ** 2 * start + 2 * (1 - t) * t * control + t ** 2 * end
    return [(float(col), float(row)) for row, col in points]


def _tone(rng, low: int, high: int) -> int:
    """A grey level (or a width) in [low, high)."""
    return int(rng.integers(low, high))


def _endotracheal_tube(rng, draw: ImageDraw.ImageDraw, lungs: Landmarks):
    """A faint band with a radio-opaque stripe down the midline, the tip above the carina."""
    height = lungs.bottom - lungs.top
    mouth = (-5, lungs.midline + rng.normal(0, 6))
    neck = (lungs.top - 0.2 * height, lungs.midline + rng.normal(0, 4))
    tip = (lungs.top + rng.uniform(0.1, 0.3) * height, lungs.midline + rng.normal(0, 2))
    path = bezier(mouth, neck, tip)
    draw.line(path, fill=_tone(rng, 70, 130), width=_tone(rng, 4, 7), joint="curve")
    draw.line(path, fill=_tone(rng, 180, 256), width=1)


def _nasogastric_tube(rng, draw: ImageDraw.ImageDraw, lungs: Landmarks):
    """Down the midline, through the diaphragm, into the stomach under the left dome."""
    height, width, midline = lungs.bottom - lungs.top, lungs.right - lungs.left, lungs.midline
    bend = (lungs.bottom + rng.uniform(-0.05, 0.1) * height, midline + rng.normal(0, 4))
    end = (lungs.bottom + rng.uniform(0.05, 0.25) * height, midline + rng.uniform(0.12, 0.35) * width)
    nose = (-5, midline + rng.normal(0, 8))
    chest = (lungs.top + 0.5 * height, midline + rng.normal(0, 5))
    stomach = (end[0] + 0.1 * height, bend[1] + 0.05 * width)
    draw.line(bezier(nose, chest, bend) + bezier(bend, stomach, end), fill=_tone(rng, 150, 240), width=2)


def _central_line(rng, draw: ImageDraw.ImageDraw, lungs: Landmarks):
    """From the subclavian / jugular region of either side to the superior vena cava."""
    height, width = lungs.bottom - lungs.top, lungs.right - lungs.left
    entry_row = lungs.top - rng.uniform(0.0, 0.12) * height
    if rng.random() < 0.6:
        entry_col = lungs.left + rng.uniform(0, 0.3) * width
    else:
        entry_col = lungs.right - rng.uniform(0, 0.3) * width
    start = (entry_row, entry_col)
    tip = (lungs.top + rng.uniform(0.25, 0.45) * height, lungs.midline - rng.uniform(0.02, 0.08) * width)
    via = (lungs.top + rng.uniform(-0.05, 0.1) * height, (start[1] + tip[1]) / 2)
    draw.line(bezier(start, via, tip), fill=_tone(rng, 140, 230), width=_tone(rng, 1, 3), joint="curve")


def _electrode(rng, draw: ImageDraw.ImageDraw, lungs: Landmarks, film_rows: int):
    """An ECG electrode on or beside the chest: bright rim, darker disc, a dot, its lead off the film."""
    height, width = lungs.bottom - lungs.top, lungs.right - lungs.left
    row = lungs.top + rng.uniform(-0.2, 1.0) * height
    col = lungs.left + rng.uniform(-0.15, 1.15) * width
    radius = rng.uniform(3, 6)
    lead_end = (rng.choice([-40.0, film_rows + 40.0]), col + rng.normal(0, 0.5 * width))  # above or below
    slack = ((row + lead_end[0]) / 2 + rng.normal(0, 20), col + rng.normal(0, 30))
    draw.line(bezier((row, col), slack, lead_end), fill=_tone(rng, 120, 220), width=1)
    draw.ellipse([col - radius, row - radius, col + radius, row + radius], fill=_tone(rng, 40, 120),
                 outline=_tone(rng, 180, 256), width=_tone(rng, 1, 3))
    draw.ellipse([col - 1.2, row - 1.2, col + 1.2, row + 1.2], fill=255)


def device_opacity(rng, shape: tuple, lungs: Landmarks, tubes: bool, ecg: bool) -> np.ndarray:
    """Radio-opaque objects as opacity 0..1 (float32, `shape`): tubes and lines as thin bright curves
    (each of ET tube, NG tube and central line by chance), 2-5 electrodes as rings."""
    canvas = Image.new("L", shape[::-1])
    draw = ImageDraw.Draw(canvas)
    if tubes and rng.random() < 0.6:
        _endotracheal_tube(rng, draw, lungs)
    if tubes and rng.random() < 0.5:
        _nasogastric_tube(rng, draw, lungs)
    if tubes and rng.random() < 0.5:
        _central_line(rng, draw, lungs)
    for _ in range(_tone(rng, 2, 6) if ecg else 0):
        _electrode(rng, draw, lungs, shape[0])
    return np.asarray(canvas, np.float32) / 255


def _word(rng) -> str:
    """A marker or word (60 %), a date, or a time (20 %)."""
    kind, n = rng.random(), rng.integers(0, 60, 3)
    if kind < 0.6:
        return WORDS[n[0] % len(WORDS)]
    if kind > 0.8:
        return f"{n[0] % 24:02d}:{n[1]:02d}"
    return f"{n[0] % 28 + 1:02d}/{n[1] % 12 + 1:02d}/20{15 + n[2] % 8}"


def _letters(word: str, scale: int) -> Image.Image:
    """The word in FONT, white on a black tile with a 2 px margin, enlarged `scale` times (blocky)."""
    tile = Image.new("L", tuple(v + 4 for v in FONT.getbbox(word)[2:]))
    ImageDraw.Draw(tile).text((2, 2), word, fill=255, font=FONT)
    return tile.resize((tile.width * scale, tile.height * scale), Image.Resampling.NEAREST)


def _text_position(rng, tile: Image.Image, film_box) -> tuple[int, int]:
    """(top, left) of a tile: near a corner of the film (85 %), else anywhere on it."""
    first_row, last_row, first_col, last_col = film_box
    if rng.random() < 0.85:
        if rng.random() < 0.7:
            top = first_row + rng.integers(0, 12)
        else:
            top = last_row - tile.height - rng.integers(0, 12)
        if rng.random() < 0.5:
            left = first_col + rng.integers(0, 12)
        else:
            left = last_col - tile.width - rng.integers(0, 12)
    else:
        top = rng.uniform(first_row, last_row - tile.height / 2)
        left = rng.uniform(first_col, last_col - tile.width / 2)
    return int(top), int(left)


def _burn_text(rng, picture: Image.Image, draw: ImageDraw.ImageDraw, film_box):
    """One marker, word, date or time in pure white (75 %) or black, sometimes on a box of the other."""
    word = _word(rng)
    scale = int(rng.integers(2, 5)) if len(word) <= 2 else int(rng.integers(1, 3))  # markers big, words small
    tile = _letters(word, scale)
    top, left = _text_position(rng, tile, film_box)
    white = rng.random() < 0.75
    if rng.random() < 0.3:  # label box in the opposite colour
        draw.rectangle([left, top, left + tile.width - 1, top + tile.height - 1], fill=0.0 if white else 1.0)
    picture.paste(1.0 if white else 0.0, (left, top), tile)


def _draw_arrow(rng, draw: ImageDraw.ImageDraw, lungs: Landmarks):
    """An arrow pointing into the lungs: white, black or mid-grey (a coloured arrow on a grey film)."""
    tip = np.array([rng.uniform(lungs.top, lungs.bottom), rng.uniform(lungs.left, lungs.right)])
    angle, length, width = rng.uniform(0, 2 * np.pi), rng.uniform(12, 35), int(rng.integers(2, 4))
    direction = np.array([np.sin(angle), np.cos(angle)])
    tail, neck = tip + direction * length, tip + direction * 3 * width
    barb = np.array([-direction[1], direction[0]]) * 2.2 * width
    grey = rng.uniform(0.35, 0.75)  # drawn whichever colour is chosen
    colour = (1.0, 0.0, grey)[int(rng.integers(3))]
    draw.line([(tail[1], tail[0]), (neck[1], neck[0])], fill=colour, width=width)
    draw.polygon([(q[1], q[0]) for q in (tip, neck + barb, neck - barb)], fill=colour)


def burn_in(rng, image: np.ndarray, lungs: Landmarks, film_box, text: bool, arrows: bool) -> np.ndarray:
    """Letters, dates and arrows painted over the film after processing: pure white or black (arrows also
    mid-grey), over lung or not; the label does not change. `film_box`: the film's first/last row and
    first/last column."""
    picture = Image.fromarray(image.copy())
    draw = ImageDraw.Draw(picture)
    for _ in range(int(rng.integers(1, 4)) if text else 0):
        _burn_text(rng, picture, draw, film_box)
    for _ in range(int(rng.integers(1, 5)) if arrows else 0):
        _draw_arrow(rng, draw, lungs)
    return np.asarray(picture, np.float32)
