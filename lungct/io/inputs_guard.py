"""An input is never written: every planned output is checked against the files the run reads.

A mask named like its scan in the scan's own folder (`-o scans/`, or `-o scan.nii.gz` for `scan.nii.gz`)
would replace the scan, with or without --overwrite. The check compares file identities (device and
inode, after following symbolic links), so a symbolic or hard link to an input is caught as well as the
input's own name.
"""
from __future__ import annotations

import os
from pathlib import Path

from lungct.errors import LungctError

INPUT_REFUSAL = "is an input of this run: lungct never writes over an input, even with --overwrite"


def file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file `path` names, through symbolic links; None when there is none."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_dev, status.st_ino


class InputFiles:
    """The identities of every file a run reads, to test outputs against."""

    def __init__(self, paths):
        self.identities = {identity for identity in map(file_identity, paths) if identity is not None}

    def holds(self, path: Path) -> bool:
        """True when writing `path` would replace an input: it is one, or a link to one."""
        identity = file_identity(path)
        return identity is not None and identity in self.identities

    def inside(self, folder: Path) -> Path | None:
        """An input file inside `folder` (which a folder replaced whole would take with it), or None."""
        if not Path(folder).is_dir():
            return None
        for root, _, names in os.walk(folder):
            for name in names:
                if self.holds(Path(root) / name):
                    return Path(root) / name
        return None

    def refuse(self, path: Path, hint: str = "") -> None:
        """Raise the one-line refusal when `path` is an input."""
        if self.holds(path):
            raise LungctError(path, INPUT_REFUSAL + (f"; {hint}" if hint else ""))
