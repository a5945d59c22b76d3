"""One exception type for everything a user can get wrong, rendered as one line naming the file."""
from __future__ import annotations

from pathlib import Path

from lungct.os_names import printable


class LungctError(Exception):
    """Bad input or a refused operation: `str()` gives '<file>: <what is wrong>', valid UTF-8 (a file
    name's undecodable bytes as \\xNN); `source` keeps the name as the OS gave it."""

    def __init__(self, source: str | Path | None, reason: str):
        self.source = str(source) if source is not None else None
        self.reason = " ".join(printable(reason).split())  # always one line
        super().__init__(f"{printable(self.source)}: {self.reason}" if self.source else self.reason)
