"""Batch runs beyond one process: shards for job arrays, a Dask cluster, a worker dying mid-case."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from lungct.batch import Outcome, run_cases, shard, threads_per_task
from lungct.cli import main
from lungct.errors import LungctError
from lungct.ct.preprocess import preprocess_batch
from lungct.recipes import load_recipe
from phantoms import make_phantom, write_nifti

FAST = {"Resampled.spacing_mm": 2.0}


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    for seed in range(3):
        write_nifti(make_phantom((64, 64, 32), (4.0, 4.0, 5.0), seed=seed), folder / f"case{seed}.nii.gz")
    return folder


class Named:
    def __init__(self, name):
        self.name = name


def test_shards_are_disjoint_and_complete():
    items = [Named(f"case{i:03d}") for i in range(23)]
    parts = [shard(list(reversed(items)), 4, k) for k in range(4)]
    names = [item.name for part in parts for item in part]
    assert sorted(names) == sorted(item.name for item in items) and len(names) == len(set(names))
    assert [len(p) for p in parts] == [6, 6, 6, 5]
    assert [i.name for i in shard(items, 4, 1)] == [i.name for i in shard(list(reversed(items)), 4, 1)]
    with pytest.raises(LungctError, match="--part-id"):
        shard(items, 4, 4)


def test_shards_through_the_cli_cover_every_case_once(tmp_path, scans):
    out = tmp_path / "prep"
    for part in range(2):
        result = CliRunner().invoke(main, ["preprocess", str(scans), "-o", str(out), "--num-parts", "2",
                                           "--part-id", str(part), "--set", "Resampled.spacing_mm=2", "--quiet"])
        assert result.exit_code == 0, result.output
    assert sorted(p.parent.name for p in out.glob("*/case.json")) == ["case0", "case1", "case2"]
    assert (out / "failures-part0of2.csv").is_file() and (out / "failures-part1of2.csv").is_file()
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 4  # header + all three cases, whichever part wrote it last


def comparable(case_dir: Path) -> dict:
    """What must not depend on where a case ran: arrays, headers, and case.json without times."""
    out = {}
    for name in ("image.nii.gz", "lungs.nii.gz", "roi.nii.gz", "lungs-native.nii.gz"):
        img = nib.load(case_dir / name)
        out[name] = (np.asarray(img.dataobj).tobytes(), img.affine.tobytes(), str(img.header.get_data_dtype()))
    record = json.loads((case_dir / "case.json").read_text())
    for key in ("created", "timings_s"):
        record.pop(key, None)
    out["case.json"] = json.dumps(record, sort_keys=True)
    return out


def test_dask_local_cluster_gives_the_same_outputs_as_a_local_run(tmp_path, scans):
    pytest.importorskip("dask.distributed", reason="dask[distributed] is not installed (extra 'cluster')")
    recipe = load_recipe("preprocess", FAST)
    preprocess_batch([scans], tmp_path / "local", recipe, progress=False, log=lambda m: None)
    outcomes = preprocess_batch([scans], tmp_path / "dask", recipe, progress=False, log=lambda m: None,
                                scheduler="local:2")
    assert sorted(o.status for o in outcomes) == ["ok"] * 3
    for case in ("case0", "case1", "case2"):
        assert comparable(tmp_path / "local" / case) == comparable(tmp_path / "dask" / case), case


def _dies_on_case1(item, out_dir):
    """A task whose worker process dies mid-case for one item (as an OOM kill would)."""
    if item == "case1":
        Path(out_dir, ".tmp-case1-partial").mkdir()
        os._exit(1)
    return Outcome(item, item, "ok")


def test_a_dying_worker_fails_only_its_case(tmp_path):
    outcomes = run_cases(_dies_on_case1, ["case0", "case1"], str(tmp_path), workers=2, progress=False,
                         log=lambda m: None)
    statuses = {o.name: o.status for o in outcomes}
    assert statuses["case1"] == "failed" and "worker lost" in next(o.reason for o in outcomes if o.name == "case1")


def test_rerun_after_an_interrupted_run_completes_and_cleans_up(tmp_path, scans):
    out = tmp_path / "prep"
    recipe = load_recipe("preprocess", FAST)
    preprocess_batch([scans], out, recipe, progress=False, log=lambda m: None)
    # what a worker killed mid-case leaves behind: a hidden temporary folder and no case folder
    import shutil

    shutil.rmtree(out / "case2")
    (out / ".tmp-case2-deadbeef").mkdir()
    (out / ".tmp-case2-deadbeef" / "image.nii.gz").write_bytes(b"half")
    outcomes = preprocess_batch([scans], out, recipe, progress=False, log=lambda m: None)
    assert {o.name: o.status for o in outcomes} == {"case0": "skipped", "case1": "skipped", "case2": "ok"}
    assert not list(out.glob(".tmp-*")) and (out / "case2" / "case.json").is_file()


def test_cli_scheduler_local(tmp_path, scans):
    pytest.importorskip("dask.distributed", reason="dask[distributed] is not installed (extra 'cluster')")
    result = CliRunner().invoke(main, ["preprocess", str(scans), "-o", str(tmp_path / "prep"), "--scheduler", "local:2",
                                       "--set", "Resampled.spacing_mm=2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "3 done" in result.output


def test_unreachable_scheduler_is_one_clear_line(tmp_path, scans):
    pytest.importorskip("dask.distributed", reason="dask[distributed] is not installed (extra 'cluster')")
    result = CliRunner().invoke(main, ["preprocess", str(scans), "-o", str(tmp_path / "prep"), "--scheduler",
                                       "tcp://127.0.0.1:1", "--quiet"])
    assert result.exit_code == 1
    assert "cannot reach the Dask scheduler" in result.output


def test_local_cluster_workers_share_the_cores(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.delenv("LUNGCT_TORCH_THREADS", raising=False)
    assert [threads_per_task(f"local:{n}") for n in (1, 2, 3, 16)] == [8, 4, 2, 1]
    assert threads_per_task("tcp://head:8786") == 1
    monkeypatch.setenv("LUNGCT_TORCH_THREADS", "4")
    assert threads_per_task("tcp://head:8786") == 4


def test_dask_inference_matches_the_local_run(tmp_path, scans):
    pytest.importorskip("dask.distributed", reason="dask[distributed] is not installed (extra 'cluster')")
    for name, extra in (("local", []), ("dask", ["--scheduler", "local:2"])):
        result = CliRunner().invoke(main, ["infer", str(scans), "-o", str(tmp_path / name), "--quiet", *extra])
        assert result.exit_code == 0, result.output
    for case in ("case0", "case1", "case2"):
        local, dask = nib.load(tmp_path / "local" / f"{case}.nii.gz"), nib.load(tmp_path / "dask" / f"{case}.nii.gz")
        assert np.array_equal(np.asarray(local.dataobj), np.asarray(dask.dataobj)) and np.array_equal(local.affine, dask.affine)
