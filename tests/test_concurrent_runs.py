"""The bad-input matrix, row 4 (docs/bad-inputs.md): two `lungct preprocess` runs into one folder at once.

The second run is refused in one line ("another lungct run holds this folder", naming the holder) and
changes nothing; the first completes, and summary.csv says what the case folders' own records say. Shards
of one split case list may share the folder; each part only once.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import time
from pathlib import Path

import pytest
from child_process import error_lines, run_lungct, start_lungct
from phantoms import make_phantom, write_nifti


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("concurrent") / "scans"
    for seed, name in enumerate(("a", "b")):
        write_nifti(make_phantom((48, 48, 20), (6.0, 6.0, 6.0), seed=seed), folder / f"{name}.nii.gz")
    return folder


def summary_rows(prep: Path) -> dict:
    with open(prep / "summary.csv", newline="") as handle:
        return {row["case"]: row["status"] for row in csv.DictReader(handle)}


def sidecar_statuses(prep: Path) -> dict:
    return {path.parent.name: json.loads(path.read_text())["status"] for path in prep.glob("*/case.json")}


def holds_flock(pid: int, path: Path) -> bool:
    """True when process `pid` holds an flock on `path` (read from /proc/locks: looking never takes it)."""
    try:
        inode = str(os.stat(path).st_ino)
    except FileNotFoundError:
        return False
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and "->" not in fields and str(pid) in fields:
            where = fields[fields.index(str(pid)) + 1]
            if where.split(":")[-1] == inode:
                return True
    return False


def wait_until_locked(lock: Path, process, timeout_s: float = 120.0) -> None:
    """Return once `process` holds the flock on `lock`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if holds_flock(process.pid, lock):
            return
        time.sleep(0.05)
    raise TimeoutError(f"{lock} was never locked")


def test_a_second_run_into_a_busy_folder_is_refused_in_one_line(tmp_path, scans):
    prep = tmp_path / "prep"
    first = start_lungct("preprocess", scans, "-o", prep, "--quiet")
    try:
        wait_until_locked(prep / ".lungct.lock", first)
        os.kill(first.pid, signal.SIGSTOP)  # holds the folder for as long as the second run takes
        second = run_lungct("preprocess", scans, "-o", prep, "--quiet")
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, first_errors = first.communicate(timeout=300)
    assert first.returncode == 0, first_errors
    assert second.returncode == 1
    [line] = error_lines(second)
    assert line.startswith(f"error: {prep}: another lungct run holds this folder (pid {first.pid} on ")
    assert line.endswith("; wait for it to end or give another output folder (-o)")
    assert summary_rows(prep) == sidecar_statuses(prep) == {"a": "ok", "b": "ok"}
    assert (prep / "failures.csv").read_text().splitlines() == ["case,source,reason"]


def test_two_runs_started_together_leave_a_summary_that_matches_the_case_folders(tmp_path, scans):
    prep = tmp_path / "prep"
    runs = [start_lungct("preprocess", scans, "-o", prep, "--quiet") for _ in range(2)]
    results = [(run.wait(timeout=300), run.communicate()[1]) for run in runs]
    assert sorted(code for code, _ in results) in ([0, 0], [0, 1])  # refused if they overlapped
    for code, errors in results:
        if code == 1:
            assert [line for line in errors.splitlines() if line.strip()][-1].startswith(
                f"error: {prep}: another lungct run holds this folder")
    assert summary_rows(prep) == sidecar_statuses(prep) == {"a": "ok", "b": "ok"}


def test_shards_share_the_folder_but_each_part_runs_once(tmp_path, scans):
    prep = tmp_path / "prep"
    parts = [start_lungct("preprocess", scans, "-o", prep, "--quiet", "--num-parts", 2, "--part-id", k) for k in (0, 1)]
    wait_until_locked(prep / ".lungct-part0of2.lock", parts[0])
    again = run_lungct("preprocess", scans, "-o", prep, "--quiet", "--num-parts", 2, "--part-id", 0)
    assert [part.wait(timeout=300) for part in parts] == [0, 0]
    assert again.returncode in (0, 1)  # refused while part 0 ran; nothing left to do if it had ended
    if again.returncode == 1:
        assert error_lines(again)[-1].startswith(f"error: {prep}: another lungct run holds this folder (pid ")
    assert summary_rows(prep) == sidecar_statuses(prep) == {"a": "ok", "b": "ok"}
