"""One `lungct preprocess` run at a time per output folder (or one per shard of a split case list).

Two runs writing one folder at once would each find the other's case folders appear under them, record
those cases as failed ("exists already") and replace each other's summary.csv. So a run holds an flock on
<folder>/.lungct.lock from start to end: an unsharded run exclusively; a shard of a --num-parts run shared
(the shards' cases are disjoint, they may run together) and its own part's lock exclusively. The kernel
drops a lock when its process ends, however it ends, so a killed run never leaves the folder locked; a
run that ends normally removes the lock file.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
import socket
from pathlib import Path

from lungct.errors import LungctError
from lungct.io.atomic import cannot_write

HELD = "another lungct run holds this folder"
LOCK_NAME = ".lungct.lock"
TABLES_LOCK_NAME = ".lungct-tables.lock"


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise cannot_write(path, err) from None


def _holder(descriptor: int) -> str:
    """What the exclusive holder wrote in the lock file: ' (pid N on host, since time)', or ''."""
    text = os.pread(descriptor, 200, 0).decode("utf-8", "replace").strip()
    return f" ({text})" if text else ""


def _is_current(descriptor: int, path: Path) -> bool:
    """True while `path` still names the file locked (a finishing holder removes it before letting go)."""
    try:
        return os.stat(path).st_ino == os.fstat(descriptor).st_ino
    except FileNotFoundError:
        return False


def _take(path: Path, folder: Path, exclusive: bool, wait: bool = False) -> int:
    while True:
        descriptor = _open(path)
        try:
            fcntl.flock(descriptor, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _holder(descriptor)
            os.close(descriptor)
            advice = "wait for it to end or give another output folder (-o)"
            raise LungctError(folder, f"{HELD}{holder}; {advice}") from None
        if _is_current(descriptor, path):
            break
        os.close(descriptor)  # locked just as its holder removed it: take the new one
    os.ftruncate(descriptor, 0)  # what an earlier holder wrote; shared holders leave it empty
    if exclusive:
        started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
        os.pwrite(descriptor, f"pid {os.getpid()} on {socket.gethostname()}, since {started}".encode(), 0)
    return descriptor


def _release(descriptor: int, path: Path) -> None:
    """Let go of a lock, removing its file when no one else holds it (no lock file stays behind)."""
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if _is_current(descriptor, path):
            os.unlink(path)
    except OSError:  # another shard still holds it, or the folder is gone
        pass
    os.close(descriptor)  # closing drops the lock


@contextlib.contextmanager
def folder_lock(folder, part: str | None = None):
    """Hold `folder` for one run (`part`: this shard's name, e.g. "part0of4"); LungctError if another holds it."""
    folder = Path(folder)
    held = [(folder / LOCK_NAME, _take(folder / LOCK_NAME, folder, exclusive=part is None))]
    try:
        if part is not None:
            path = folder / f".lungct-{part}.lock"
            held.append((path, _take(path, folder, exclusive=True)))
        yield folder
    finally:
        for path, descriptor in reversed(held):
            _release(descriptor, path)


@contextlib.contextmanager
def tables_lock(folder):
    """Wait for, then hold, the right to rewrite the folder's tables (shards finishing at once)."""
    path = Path(folder) / TABLES_LOCK_NAME
    descriptor = _take(path, Path(folder), exclusive=True, wait=True)
    try:
        yield
    finally:
        _release(descriptor, path)
