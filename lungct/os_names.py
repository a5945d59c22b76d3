"""File names as the OS gives them, which need not be valid UTF-8 (Latin-1 names from an old archive).

Python hands such a name over with each undecodable byte as a lone surrogate ('\\udce9' for 0xE9), so
Python's own file functions (open, os, nibabel, pydicom, Pillow) open it as it is. Two things cannot take
it: text that must be UTF-8 (messages, CSV, HTML, titles drawn on pictures), which shows each such byte
as '\\xe9' (`printable`, or files opened with errors=ESCAPE); and SimpleITK, whose C++ paths are UTF-8,
which opens links with plain names to the same files instead (`itk_names`).
"""
from __future__ import annotations

import codecs
import contextlib
import os
import re
import tempfile
from pathlib import Path

ESCAPE = "lungct-escape"  # codec error handler: an undecodable byte of a file name written as \xNN
DETACHED_HEADERS = (".mhd", ".nhdr")  # headers that name their data file, relative to the header


def _escape_bytes(error: UnicodeError):
    if not isinstance(error, UnicodeEncodeError):
        raise error
    bad = error.object[error.start:error.end]
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if "\udc80" <= c <= "\udcff" else f"\\u{ord(c):04x}"
                   for c in bad), error.end


codecs.register_error(ESCAPE, _escape_bytes)


def printable(text) -> str:
    """`text` (a name, path or message) as valid UTF-8: each byte a file name could not decode as \\xNN."""
    return str(text).encode("utf-8", ESCAPE).decode("utf-8")


def is_utf8(path) -> bool:
    """True when the path's name decodes as UTF-8 (no byte was escaped by Python)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@contextlib.contextmanager
def itk_names(paths):
    """str paths SimpleITK can open: the paths themselves when all are UTF-8; otherwise symbolic links with
    plain names, in a temporary folder, to the same files (and to the data file a detached header names,
    under that name)."""
    paths = [Path(p) for p in paths]
    if all(map(is_utf8, paths)):
        yield [str(p) for p in paths]
        return
    with tempfile.TemporaryDirectory(prefix="lungct-names-") as folder:
        links = []
        for index, path in enumerate(paths):
            link = Path(folder) / f"{index:06d}{_suffix(path)}"
            link.symlink_to(path.resolve())
            links.append(str(link))
            if path.suffix.lower() in DETACHED_HEADERS:
                _link_companions(path, Path(folder))
        yield links


def _suffix(path: Path) -> str:
    """The suffix SimpleITK chooses its reader by, without the undecodable part of the name."""
    name = path.name.lower()
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"):
        if name.endswith(suffix):
            return suffix
    return ""


def _link_companions(header: Path, folder: Path) -> None:
    """Link the data file a detached header names (relative to the header) under that name."""
    text = header.read_bytes()[:8192]
    found = re.search(rb"^(?:ElementDataFile\s*=|data ?file:)[ \t]*(.+?)[ \t]*$", text, re.MULTILINE | re.IGNORECASE)
    if found is None or found.group(1).upper().startswith((b"LOCAL", b"LIST")):
        return
    name = os.fsdecode(found.group(1))
    if Path(name).name == name and not (folder / name).exists():  # a bare name: beside the header
        os.symlink((header.parent / name).resolve(), folder / name)
