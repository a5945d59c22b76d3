"""Shared fixtures: the synthetic chest phantom and its orientations, the real-data folder, run-once folders.

Everything a test writes goes under pytest's tmp folders, so `pytest -n 2` workers never collide.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # `import phantoms` from every test module, whatever the import mode

import phantoms  # noqa: E402
from phantoms import make_phantom  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # ../shared/data from the repo root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real public scans beside the project; tests using them skip when it is not there."""
    if not DATA.is_dir():
        pytest.skip(f"real data not available: {DATA} is absent (../shared/data from the repository root)")
    return DATA


# ------------------------------------------------------------------------------------------- phantoms


@pytest.fixture(scope="session")
def phantom() -> phantoms.Phantom:
    """The chest phantom on its RAS grid (96 x 96 x 60 at 3 mm), stomach gas and couch included."""
    return phantoms.standard("plain")


@pytest.fixture(scope="session")
def phantom_variants(phantom) -> dict[str, phantoms.Phantom]:
    """The same phantom stored as RAS, LPS, x-flipped, axis-permuted, oblique and anisotropic grids."""
    return phantoms.orientations(phantom)


@pytest.fixture(scope="session")
def tumour_phantom() -> phantoms.Phantom:
    """The phantom with a tumour replacing the lateral part of the right lung's lower half."""
    return phantoms.standard("tumour")


# -------------------------------------------------------------------------------- built once per run


def _session_root(tmp_path_factory) -> Path:
    """A folder shared by all xdist workers of this run (and private to the run)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def built_once(tmp_path_factory):
    """`built_once(name, build)`: a folder filled by `build(folder)` once per test run, even with -n 2.

    The first worker to ask builds it under a lock directory; the others wait for its `.done` marker.
    Tests must treat the folder as read-only (copy it before changing anything).
    """
    root = _session_root(tmp_path_factory)

    def get(name: str, build, timeout_s: float = 600.0) -> Path:
        folder = root / name
        done = root / f"{name}.done"
        lock = root / f"{name}.lock"
        deadline = time.monotonic() + timeout_s
        while not done.exists():
            try:
                lock.mkdir()
            except FileExistsError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"waited {timeout_s:.0f} s for {folder} to be built by another worker")
                time.sleep(0.2)
                continue
            try:
                if not done.exists():
                    shutil.rmtree(folder, ignore_errors=True)
                    folder.mkdir(parents=True)
                    build(folder)
                    done.write_text("ok")
            finally:
                lock.rmdir()
        return folder

    return get


# ------------------------------------------------------------------------------------- tiny CT models
# A small 2D U-Net trained for a few seconds on phantom slices (right and left lungs labelled), good
# enough (Dice > 0.9) to catch a flipped or shifted mask, and an untrained 3D U-Net for the sliding window.

SPACING = 3.0
LABELS = {"background": 0, "right_lung": 1, "left_lung": 2}
WINDOW = {"a_min": -1024, "a_max": 600, "b_min": 0.0, "b_max": 1.0}


def tiny_network(dim: int):
    from lungct.networks import build_network

    args = {"in_channels": 1, "out_channels": len(LABELS)}
    args.update({"channels": [8, 16, 32, 64], "strides": [2, 2, 2]} if dim == 2 else {"channels": [4, 8, 16], "strides": [2, 2]})
    name = f"unet{dim}d"
    return name, args, build_network(name, **args)


def checkpoint_meta(dim: int, name: str, args: dict) -> dict:
    """Meta in lungct 0.1's form (no recorded input chain): loading it also tests the upgrade."""
    size = {"slice_size": [96, 96]} if dim == 2 else {"patch_size": [32, 32, 32]}
    return {"network": {"name": name, "args": args}, "dim": dim, "modality": "ct", "labels": LABELS,
            "input": {"spacing_mm": [SPACING] * 3, "axcodes": "RAS", "window": WINDOW, **size,
                      "preprocess_recipe": None},
            "training": {"recipe": None, "cases": 2, "validation_cases": [], "epochs": 1, "seed": 0},
            "metrics": {}, "lungct_version": "test", "created": "2026-01-01T00:00:00+00:00"}


def windowed_slices(phantom) -> tuple[np.ndarray, np.ndarray]:
    image = np.clip((phantom.array.astype(np.float32) + 1024) / 1624, 0, 1)
    return image.transpose(2, 0, 1)[:, None], phantom.lungs.transpose(2, 0, 1)[:, None].astype(np.int64)


def trained_tiny_2d(images: np.ndarray, truth: np.ndarray, labels: dict, steps: int, seed: int, path) -> Path:
    """A tiny 2D U-Net trained for `steps` batches of windowed slices (n, 1, x, y), saved at `path`."""
    from monai.losses import DiceCELoss

    from lungct.checkpoint import save_checkpoint
    from lungct.networks import build_network

    torch.manual_seed(seed)
    name, args, _ = tiny_network(2)
    args = {**args, "out_channels": len(labels)}
    network = build_network(name, **args)
    optimiser = torch.optim.Adam(network.parameters(), 3e-3)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    images, truth = torch.from_numpy(images), torch.from_numpy(truth)
    rng = np.random.default_rng(seed)
    network.train()
    for _ in range(steps):
        pick = torch.from_numpy(rng.choice(len(images), 16))
        optimiser.zero_grad()
        loss(network(images[pick]), truth[pick]).backward()
        optimiser.step()
    save_checkpoint(path, network.eval(), {**checkpoint_meta(2, name, args), "labels": labels})
    return path


@pytest.fixture(scope="session")
def model_2d(tmp_path_factory):
    """A 2D U-Net trained for ~100 steps on RAS slices of two phantoms at the model's spacing."""
    pairs = [windowed_slices(make_phantom((96, 96, 48), (SPACING, SPACING, 3.5), seed=s, tumour=s == 1))
             for s in range(2)]
    return trained_tiny_2d(np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]), LABELS,
                           120, 0, tmp_path_factory.mktemp("model") / "phantom-2d.pt")


@pytest.fixture(scope="session")
def model_3d(tmp_path_factory):
    """An untrained 3D U-Net: enough to check the sliding-window path keeps geometry."""
    from lungct.checkpoint import save_checkpoint

    torch.manual_seed(0)
    name, args, network = tiny_network(3)
    path = tmp_path_factory.mktemp("model") / "tiny-3d.pt"
    save_checkpoint(path, network.eval(), checkpoint_meta(3, name, args))
    return path


@pytest.fixture(scope="session")
def tumour_model_2d(tmp_path_factory):
    """A 2D U-Net trained for a few seconds to find the phantom's tumour (labels background / tumour)."""
    phantom = make_phantom((96, 96, 48), (SPACING, SPACING, 3.5), seed=11, tumour=True)
    image = windowed_slices(phantom)[0]
    truth = phantom.tumour.transpose(2, 0, 1)[:, None].astype(np.int64)
    return trained_tiny_2d(image, truth, {"background": 0, "tumour": 1}, 150, 1,
                           tmp_path_factory.mktemp("model") / "tumour-2d.pt")
