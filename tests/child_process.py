"""`lungct` in a child process, under conditions a test cannot set in its own: an ordinary user's file
permissions, a file-size limit (the disk filling up), or two runs at once.

An ordinary user: when the tests run as root (CI), the child keeps uid 0 but loses the capabilities that
let root ignore file modes (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER), so a folder of mode 555
refuses it exactly as it refuses any user. Switching to `nobody` instead would need the interpreter and
every test folder readable by nobody (the CI interpreter lives under /root, mode 700).
"""
from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
PR_CAPBSET_DROP = 24
FILE_MODE_CAPABILITIES = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


def _drop_file_mode_capabilities() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in FILE_MODE_CAPABILITIES:
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def ordinary_user():
    """A preexec_fn that makes the child obey file modes like an ordinary user (None: it already does);
    skips the test when root cannot give up its capabilities here."""
    if os.geteuid() != 0:
        return None
    probe = subprocess.run([sys.executable, "-c", "pass"], preexec_fn=_drop_file_mode_capabilities,
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip("running as root and unable to drop CAP_DAC_OVERRIDE: file modes would not apply")
    return _drop_file_mode_capabilities


def file_size_limit(limit_bytes: int):
    """A preexec_fn under which no file can grow beyond `limit_bytes` (writes fail with EFBIG, as on a
    full disk); SIGXFSZ is ignored so the write fails instead of killing the process."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return apply


def lungct_command(*args) -> list[str]:
    return [sys.executable, "-m", "lungct", *map(str, args)]


def child_environment() -> dict:
    """The test's environment with this checkout first on the path (never an installed copy)."""
    path = os.pathsep.join([str(REPOSITORY), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path, "LUNGCT_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1"}


def run_lungct(*args, preexec_fn=None, cwd=None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`lungct <args>` to completion; stdout and stderr as text."""
    return subprocess.run(lungct_command(*args), preexec_fn=preexec_fn, cwd=cwd, capture_output=True, text=True,
                          env=child_environment(), timeout=timeout)


def start_lungct(*args, cwd=None) -> subprocess.Popen:
    """`lungct <args>` started and left running (for two runs at once)."""
    return subprocess.Popen(lungct_command(*args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_environment())


def error_lines(result) -> list[str]:
    """The lines of the child's stderr, without progress bars."""
    return [line for line in result.stderr.splitlines() if line.strip()]
