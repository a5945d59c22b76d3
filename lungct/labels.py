"""Label values, names and colours: the one place every output, preview and sidecar takes them from.

Label maps are uint8. CT and radiographs share the convention of lungmask (1 = right lung, 2 = left lung)
and the names used as keys everywhere (volumes, areas, statistics, DICOM segments): `right_lung`,
`left_lung`; one merged label is `lungs`; the tumour stage adds `tumour`.
"""
from __future__ import annotations

import numpy as np

BACKGROUND, RIGHT_LUNG, LEFT_LUNG, TUMOUR = 0, 1, 2, 3
LUNG_LABELS = {"background": BACKGROUND, "right_lung": RIGHT_LUNG, "left_lung": LEFT_LUNG}
BINARY_LABELS = {"background": BACKGROUND, "lungs": 1}
TOTAL = "total"

COLOURS = {  # RGB for previews and DICOM-SEG display
    "right_lung": (230, 60, 60),
    "left_lung": (60, 150, 240),
    "lungs": (230, 60, 60),
    "tumour": (250, 210, 40),
}
ROI_COLOUR = (240, 210, 40)
OTHER_COLOUR = (120, 220, 120)


def colour_of(name: str) -> tuple[int, int, int]:
    return COLOURS.get(name, OTHER_COLOUR)


def foreground(label_values: dict) -> dict:
    """{name: value} without the background."""
    return {name: int(value) for name, value in label_values.items() if int(value) != BACKGROUND}


def measure(labels: np.ndarray, label_values: dict, unit: float, digits: int = 2) -> dict:
    """{name: count x unit} for every foreground label and their total: volumes (unit = mL per voxel)
    or areas (cm² per pixel). count_nonzero per label: a bincount would first copy the map to int64."""
    labels = np.asarray(labels)
    out = {name: round(int(np.count_nonzero(labels == value)) * unit, digits)
           for name, value in foreground(label_values).items()}
    out[TOTAL] = round(sum(out.values()), digits)
    return out
