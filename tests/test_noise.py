"""Lung noise (lungct.ct.noise): the SD of added Gaussian noise is recovered inside a lung with vessels."""
from __future__ import annotations

import numpy as np
import pytest

from lungct.ct.noise import lung_noise_hu


def _lung_with_vessels(sd: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    x, y, z = np.meshgrid(np.arange(160), np.arange(160), np.arange(12), indexing="ij")
    lungs = (((x - 80) / 60.0) ** 2 + ((y - 80) / 50.0) ** 2 < 1).astype(np.uint8)
    image = np.where(lungs > 0, -850.0, 40.0)
    for cx, cy in rng.uniform(40, 120, (25, 2)):  # vessels: small dense discs the estimate must ignore
        image[(x - cx) ** 2 + (y - cy) ** 2 < 4] = 40.0
    return (image + rng.normal(0, sd, image.shape)).astype(np.float32), lungs


@pytest.mark.parametrize("sd", [20.0, 60.0, 180.0])
def test_noise_of_the_lung_is_the_added_noise(sd):
    image, lungs = _lung_with_vessels(sd)
    assert lung_noise_hu(image, lungs) == pytest.approx(sd, rel=0.05)


def test_calibration_slope_and_empty_or_tiny_lungs():
    image, lungs = _lung_with_vessels(50.0)
    assert lung_noise_hu(image, lungs, slope=2.0) == pytest.approx(2 * lung_noise_hu(image, lungs), rel=1e-6)
    assert lung_noise_hu(image, np.zeros_like(lungs)) is None
    tiny = np.zeros_like(lungs)
    tiny[78:82, 78:82, 5] = 1
    assert lung_noise_hu(image, tiny) is None
