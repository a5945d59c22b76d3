"""The `lungct` command exits without interpreter teardown (lungct.cli.run): statuses and output intact."""
from __future__ import annotations

import subprocess
import sys


def lungct(*args, **env):
    import os

    return subprocess.run([sys.executable, "-m", "lungct", *args], capture_output=True, text=True,
                          env={**os.environ, **env})


def test_output_through_a_pipe_and_status_zero():
    done = lungct("--version")
    assert done.returncode == 0 and "lungct, version" in done.stdout


def test_an_error_is_one_line_on_stderr_with_status_one(tmp_path):
    done = lungct("infer", str(tmp_path / "missing.nii.gz"), "-o", str(tmp_path / "out.nii.gz"))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"error: {tmp_path / 'missing.nii.gz'}: no such file or folder"]
    assert not (tmp_path / "out.nii.gz").exists()


def test_usage_errors_keep_clicks_status_and_the_full_exit_switch_behaves_the_same(tmp_path):
    for env in ({}, {"LUNGCT_FULL_EXIT": "1"}):
        done = lungct("infer", **env)
        assert done.returncode == 2 and "Missing argument" in done.stderr
        assert lungct("--version", **env).stdout == lungct("--version").stdout
