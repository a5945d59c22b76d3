"""Render radiograph augmentation examples to a PNG grid, beside real COVID-era films, to judge realism.

Each row: a clean training film (Montgomery / Shenzhen) as the chain sees it, then random draws of
add_opacities + film_augment (lung mask outline: red = right field, green = left field). The last row:
real COVID-era radiographs with their masks, put through the same scale/resize/pad.

    python examples/show_cxr_augment.py [--out /tmp/cxr_augment.png] [--films 4] [--draws 5] [--real 6] [--seed 0]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

from lungct.cxr.augment import add_opacities, film_augment

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SIZE = 256


def chain(image_path: Path, mask_path: Path):
    """What the training chain hands to augmentation: grey to [0, 1], longer side to 256 (ScaleGreyd,
    ResizePadd), the mask split into 1 = right field (viewer's left), 2 = left field, and the image's own
    pixels (not the padding)."""
    from lungct.cxr.postprocess import split_fields
    from lungct.cxr.transforms import ResizePadd, ScaleGreyd, valid_region
    from lungct.io.radiograph import load_radiograph, read_cxr_mask

    data = {"image": load_radiograph(image_path).array[None], "mask": read_cxr_mask(mask_path)[None]}
    data = ResizePadd(size=(SIZE, SIZE))(ScaleGreyd()(data))
    mask = data["mask"][0]
    labels = split_fields(mask)
    return data["image"][0], (labels if labels is not None else mask), valid_region(data, (SIZE, SIZE))


def tile(image, mask, caption: str = "") -> np.ndarray:
    rgb = np.repeat((np.clip(image, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    for label, colour in ((1, (255, 40, 40)), (2, (40, 230, 40))):
        field = mask == label if (mask == 2).any() else (mask > 0) & (label == 1)
        rgb[field & ~ndi.binary_erosion(field)] = colour
    if caption:
        picture = Image.fromarray(rgb)
        ImageDraw.Draw(picture).text((4, 244), caption, fill=(255, 220, 0))
        rgb = np.asarray(picture)
    return rgb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/cxr_augment.png")
    parser.add_argument("--films", type=int, default=4)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--real", type=int, default=6, help="real COVID-era films to show")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    clean = sorted((DATA / "cxr" / "images").glob("MCUCXR_*.png"))[::37][:args.films // 2] + \
        sorted((DATA / "cxr" / "images").glob("CHNCXR_*.png"))[::97][:args.films - args.films // 2]
    rows = []
    for path in clean:
        image, mask, valid = chain(path, path.parent.parent / "masks" / path.name)
        row = [tile(image, mask, path.stem)]
        for _ in range(args.draws):
            out, out_mask, _valid = film_augment(add_opacities(image, mask, rng), mask, valid, rng)
            row.append(tile(out, out_mask))
        rows.append(np.concatenate(row, axis=1))
    covid = sorted((DATA / "cxr-covid" / "images").glob("*.png"))
    picks = [covid[int(i)] for i in np.linspace(0, len(covid) - 1, args.real + 2)[1:-1].round()]
    real = [tile(*chain(p, p.parent.parent / "masks" / p.name)[:2], "real COVID-era") for p in picks]
    width = args.draws + 1
    for start in range(0, len(real), width):
        chunk = real[start:start + width] + [np.zeros_like(real[0])] * (width - len(real[start:start + width]))
        rows.append(np.concatenate(chunk, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out)
    print(f"wrote {args.out}: {len(clean)} clean films x {args.draws} draws, {len(real)} real COVID-era films")


if __name__ == "__main__":
    main()
