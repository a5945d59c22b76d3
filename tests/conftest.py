"""Shared fixtures: the synthetic chest phantom and its orientations, the real-data folder, run-once folders.

Everything a test writes goes under pytest's tmp folders, so `pytest -n 2` workers never collide.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))  # `import phantoms` from every test module, whatever the import mode

import phantoms  # noqa: E402

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
