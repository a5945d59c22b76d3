"""The workspace: where outputs go when the user names no folder, so the verbs chain with no options.

`./lungct-work/` by default, moved with the LUNGCT_WORKDIR environment variable.
"""
from __future__ import annotations

import os
from pathlib import Path


def workdir() -> Path:
    return Path(os.environ.get("LUNGCT_WORKDIR") or "lungct-work")


def prep_dir() -> Path:
    """Preprocessed cases (`lungct preprocess` writes, `lungct train` reads)."""
    return workdir() / "prep"


def runs_dir() -> Path:
    """Training runs (`lungct train` writes, `lungct infer --model latest` reads)."""
    return workdir() / "runs"
