"""`lungct.segment`: a path, a SimpleITK image or a nibabel image in, the CLI's mask out, in the input's
geometry; numpy arrays refused; models resolved and loaded once per process."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner
from phantoms import make_phantom, reindexed, write_nifti

import lungct
from lungct import engine
from lungct.cli import main
from lungct.engine import resolved
from lungct.options import InferOptions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory) -> Path:
    phantom = reindexed(make_phantom((64, 64, 24), (4.0, 4.0, 5.0), seed=5), flips=(0,), name="api")  # LAS storage
    return write_nifti(phantom, tmp_path_factory.mktemp("api") / "scan.nii.gz")


@pytest.fixture(scope="module")
def cli_mask(scan_file, model_2d, tmp_path_factory) -> tuple[np.ndarray, dict]:
    out = tmp_path_factory.mktemp("cli") / "mask.nii.gz"
    result = CliRunner().invoke(main, ["infer", str(scan_file), "-o", str(out), "--model", str(model_2d), "--quiet"])
    assert result.exit_code == 0, result.output
    return np.asarray(nib.load(out).dataobj), json.loads(out.with_name("mask.json").read_text())


def test_a_path_gives_the_clis_mask_and_sidecar(scan_file, model_2d, cli_mask, tmp_path):
    result = lungct.segment(scan_file, model=model_2d)
    labels, sidecar = cli_mask
    assert isinstance(result.mask, sitk.Image)
    assert np.array_equal(sitk.GetArrayFromImage(result.mask).T, labels)
    assert result.summary["volumes_ml"] == sidecar["volumes_ml"]
    assert result.summary["inference"]["postprocess"] == sidecar["inference"]["postprocess"]
    record = result.write(tmp_path / "again.nii.gz")
    assert np.array_equal(np.asarray(nib.load(tmp_path / "again.nii.gz").dataobj), labels)
    assert record["volumes_ml"] == sidecar["volumes_ml"]
    reference = sitk.ReadImage(str(scan_file))
    for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert np.allclose(getattr(result.mask, get)(), getattr(reference, get)(), atol=1e-5), get


def test_a_simpleitk_image_keeps_its_geometry_and_gets_the_same_labels(scan_file, model_2d, cli_mask):
    image = sitk.ReadImage(str(scan_file))
    result = lungct.segment(image, model=model_2d)
    for get in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(result.mask, get)() == getattr(image, get)(), get
    assert np.array_equal(sitk.GetArrayFromImage(result.mask).T, cli_mask[0])


def test_a_nibabel_image_gives_a_nibabel_mask_with_its_affine_and_codes(scan_file, model_2d, cli_mask):
    image = nib.load(scan_file)
    result = lungct.segment(image, model=model_2d)
    assert isinstance(result.mask, nib.Nifti1Image)
    assert np.array_equal(result.mask.affine, image.affine)
    assert int(result.mask.header["sform_code"]) == int(image.header["sform_code"])
    assert int(result.mask.header["qform_code"]) == int(image.header["qform_code"])
    assert np.array_equal(np.asarray(result.mask.dataobj), cli_mask[0])
    assert result.summary["volumes_ml"] == cli_mask[1]["volumes_ml"]


def test_a_numpy_array_is_refused_in_one_line_saying_how_to_pass_geometry():
    with pytest.raises(lungct.LungctError) as caught:
        lungct.segment(np.zeros((32, 32, 8), np.int16))
    message = str(caught.value)
    assert "\n" not in message and "SimpleITK.Image" in message and "nibabel.Nifti1Image(array, affine)" in message


def test_the_model_is_read_and_built_once_per_process(scan_file, model_2d, monkeypatch):
    from lungct import checkpoint

    reads = []
    original = checkpoint._read_checkpoint_file
    monkeypatch.setattr(checkpoint, "_read_checkpoint_file", lambda path: reads.append(path) or original(path))
    checkpoint._READ.clear()
    engine._SEGMENTERS.clear()
    first = lungct.segment(scan_file, model=model_2d, statistics=False)
    second = lungct.segment(scan_file, model=model_2d, statistics=False)
    assert len(reads) == 1 and len(engine._SEGMENTERS) == 1
    assert np.array_equal(first.result.labels, second.result.labels)


def test_latest_is_fixed_when_a_batch_starts(tmp_path, model_2d, monkeypatch):
    runs = tmp_path / "work" / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "best.pt").write_bytes(Path(model_2d).read_bytes())
    monkeypatch.setenv("LUNGCT_WORKDIR", str(tmp_path / "work"))
    options = resolved(InferOptions(models=["latest"]))
    (runs / "b").mkdir()
    (runs / "b" / "best.pt").write_bytes(Path(model_2d).read_bytes())  # a run finishing mid-batch
    assert options.models == (str(runs / "a" / "best.pt"),)
    assert resolved(InferOptions(models=["latest"])).models == (str(runs / "b" / "best.pt"),)


def test_the_example_runs(scan_file, model_2d, tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "api_one_scan.py"), str(scan_file), str(tmp_path),
                           "--model", str(model_2d)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "scan-lungs.nii.gz").is_file() and "right_lung" in done.stdout
