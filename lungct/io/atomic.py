"""Every output is written under a temporary sibling name and renamed into place, so a reader never sees
half a file; an OS error on the way (permission, disk full, read-only file system, name too long) becomes
one line naming the path and the cause, and the temporary file is removed.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np

from lungct.errors import LungctError
from lungct.os_names import ESCAPE

TEMPORARY_NAME_CHARS = 60  # of the final name kept in the temporary's: a name near the 255-byte limit still fits


def cannot_write(path, err: OSError) -> LungctError:
    """The one-line error for an OS error while writing `path`."""
    return LungctError(path, f"cannot write: {err.strerror or err}")


def make_folder(folder) -> Path:
    """Create `folder` (and its parents) or raise the one-line reason it cannot be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise LungctError(folder, "cannot create folder: a file of that name is in the way") from None
    except OSError as err:
        where = f" ({err.filename})" if err.filename and Path(os.fsdecode(err.filename)) != folder else ""
        raise LungctError(folder, f"cannot create folder: {err.strerror or err}{where}") from None
    return folder


def name_too_long(path) -> str | None:
    """Why no file system call can take this path (a name or the whole path too long), or None."""
    path = Path(path).absolute()
    existing = next(folder for folder in path.parents if folder.is_dir())
    name_limit, path_limit = _limit(existing, "PC_NAME_MAX", 255), _limit(existing, "PC_PATH_MAX", 4096)
    longest = max(len(os.fsencode(part)) for part in path.parts)
    if longest > name_limit:
        return f"cannot write: File name too long ({longest} bytes; this file system allows {name_limit})"
    if len(os.fsencode(path)) >= path_limit:
        length = len(os.fsencode(path))
        return f"cannot write: File name too long (the path has {length} bytes; at most {path_limit - 1})"
    return None


def _limit(folder: Path, name: str, default: int) -> int:
    try:
        return int(os.pathconf(folder, name))
    except (OSError, ValueError):
        return default


def check_writable(folder) -> Path:
    """Create `folder` and prove a file can be made in it, before a batch spends time on cases."""
    folder = make_folder(folder)
    try:
        handle, probe = tempfile.mkstemp(prefix=".lungct-probe-", dir=folder)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise cannot_write(folder, err) from None
    return folder


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


@contextlib.contextmanager
def atomic_path(path: Path):
    """Yield a temporary sibling path; on success rename it onto `path`; on failure remove it. OSError
    from the writing or the renaming becomes LungctError(path, "cannot write: <cause>")."""
    path = Path(path)
    make_folder(path.parent)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else path.suffix  # writers choose the format by it
    tmp = path.with_name(f".{path.name[:TEMPORARY_NAME_CHARS]}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise cannot_write(path, err) from None
    finally:
        _remove(tmp)


def open_text(path: Path):
    """A UTF-8 text file for writing (CSV, HTML); names that are not UTF-8 come out as \\xNN escapes."""
    return open(path, "w", newline="", encoding="utf-8", errors=ESCAPE)


def write_text(path: Path, text: str) -> Path:
    with atomic_path(path) as tmp, open_text(tmp) as handle:
        handle.write(text)
    return Path(path)


def write_json(path: Path, payload: dict) -> Path:
    """JSON (ASCII: a name that is not UTF-8 keeps its escaped bytes, \\udcNN, and reads back the same)."""
    return write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
