"""Radiographs through `lungct train --modality cxr`, `lungct infer` and `lungct evaluate`."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from cxr_phantoms import dice, make_cxr, write_ct_nifti, write_mask_png, write_png8, write_png16
from lungct.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def run(*args):
    return CliRunner().invoke(main, [*map(str, args)])


@pytest.fixture(scope="module")
def cxr_model(tmp_path_factory):
    """A small radiograph U-Net trained briefly on phantoms through the real CLI."""
    root = tmp_path_factory.mktemp("cxr")
    (root / "images").mkdir(), (root / "masks").mkdir()
    shapes = [(256, 256), (300, 240), (240, 300), (320, 320), (280, 250)]
    for i in range(15):
        phantom = make_cxr(shapes[i % len(shapes)], seed=i)
        write_png8(root / "images" / f"p{i}.png", phantom.image)
        write_mask_png(root / "masks" / f"p{i}.png", phantom.mask)
    result = run("train", "--dim", "2d", "--modality", "cxr", "--images", root / "images", "--labels", root / "masks",
                 "-o", root / "run", "--epochs", "8", "--quiet", "--set", "data.split_file=none",
                 "--set", "data.validation_fraction=0.2", "--set", "data.samples_per_epoch=64",
                 "--set", 'network.args={"channels": [8, 16, 32, 64], "strides": [2, 2, 2], "num_res_units": 0, "norm": "batch"}',
                 "--set", "optimizer.lr=0.005")
    assert result.exit_code == 0, result.output
    return root / "run" / "best.pt"


def test_radiograph_mask_comes_back_at_the_original_resolution(tmp_path, cxr_model):
    phantom = make_cxr((300, 240), seed=42)  # not square, not 256
    source = write_png16(tmp_path / "cxr.png", phantom.image)
    out = tmp_path / "out" / "mask.png"
    result = run("infer", source, "-o", out, "--model", cxr_model, "--preview", tmp_path / "out" / "look.png")
    assert result.exit_code == 0, result.output
    mask = np.asarray(Image.open(out))
    assert mask.shape == (300, 240) and set(np.unique(mask)) <= {0, 255}
    assert dice(mask > 0, phantom.mask > 0) > 0.9
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["original_shape"] == [300, 240] and record["modality"] == "cxr"
    labels = np.asarray(Image.open(record["labels_mask"]))
    assert dice(labels == 1, phantom.lungs == 1) > 0.85  # the patient's right lung on the viewer's left
    assert dice(labels == 2, phantom.lungs == 2) > 0.85
    assert (tmp_path / "out" / "look.png").is_file()


def test_folder_of_radiographs_then_evaluate(tmp_path, cxr_model):
    images, refs = tmp_path / "images", tmp_path / "refs"
    images.mkdir(), refs.mkdir()
    for i in range(3):
        phantom = make_cxr((256, 256), seed=100 + i)
        write_png8(images / f"c{i}.png", phantom.image)
        write_mask_png(refs / f"c{i}.png", phantom.mask)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = run("infer", images, "-o", tmp_path / "masks", "--model", cxr_model, "--quiet")
    assert result.exit_code == 1  # the broken picture failed, the others were done
    assert "broken.png" in result.output
    assert sorted(p.name for p in (tmp_path / "masks").glob("c?.png")) == ["c0.png", "c1.png", "c2.png"]
    result = run("evaluate", tmp_path / "masks", refs, "-o", tmp_path / "metrics.csv")
    assert result.exit_code == 0, result.output
    rows = (tmp_path / "metrics-summary.csv").read_text().splitlines()
    dice_row = next(r for r in rows if r.startswith("all,dice"))
    assert float(dice_row.split(",")[3]) > 0.9  # mean Dice


def test_radiograph_batch_shards_resume_and_refuses_tta(tmp_path, cxr_model):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(5):
        write_png8(images / f"r{i}.png", make_cxr((200, 200), seed=200 + i).image)
    masks = tmp_path / "masks"
    parts = []
    for part in range(2):  # two job-array parts: disjoint, together everything
        before = {p.name for p in masks.glob("r?.png")}
        result = run("infer", images, "-o", masks, "--model", cxr_model, "--quiet", "--num-parts", 2, "--part-id", part)
        assert result.exit_code == 0, result.output
        parts.append({p.name for p in masks.glob("r?.png")} - before)
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    assert sorted(parts[0] | parts[1]) == [f"r{i}.png" for i in range(5)]
    (masks / "r3.json").unlink()  # as if stopped between the mask and its JSON: done again
    result = run("infer", images, "-o", masks, "--model", cxr_model, "--quiet")
    assert result.exit_code == 0 and "1 done, 4 skipped" in result.output, result.output
    result = run("infer", images, "-o", tmp_path / "other", "--model", cxr_model, "--tta")
    assert result.exit_code == 1 and "is for CT scans, not radiographs" in result.output
    assert not (tmp_path / "other").exists()


def test_a_ct_volume_is_refused_by_the_radiograph_model(tmp_path, cxr_model):
    ct = write_ct_nifti(tmp_path / "ct.nii.gz")
    result = run("infer", ct, "-o", tmp_path / "m.nii.gz", "--model", cxr_model)
    assert result.exit_code == 1
    assert "gives a cxr model, but the input holds only CT scans" in result.output


def test_a_radiograph_is_refused_on_the_ct_path(tmp_path):
    source = write_png8(tmp_path / "cxr.png", make_cxr((128, 128)).image)
    result = run("infer", source, "-o", tmp_path / "m.nii.gz", "--modality", "ct", "--model", "ct-lungs-2d")
    assert result.exit_code == 1
    assert "not a CT scan" in result.output
    assert not (tmp_path / "m.nii.gz").exists()


@pytest.mark.skipif(not (ROOT / "lungct/weights/cxr-lungs-2d.pt").is_file(), reason="no shipped radiograph model")
def test_shipped_radiograph_model_on_the_validation_images(tmp_path, shared_data):
    import csv

    rows = list(csv.DictReader((shared_data / "cxr/splits.csv").open()))
    names = [r["file"] for r in rows if r["split"] == "validation"][:25]
    images = tmp_path / "images"
    images.mkdir()
    for name in names:
        (images / Path(name).name).symlink_to(shared_data / "cxr/images" / Path(name).name)
    result = run("infer", images, "-o", tmp_path / "masks", "--quiet")
    assert result.exit_code == 0, result.output
    scores = [dice(np.asarray(Image.open(tmp_path / "masks" / Path(n).name)) > 0,
                   np.asarray(Image.open(shared_data / "cxr/masks" / Path(n).name)) > 0) for n in names]
    assert np.mean(scores) >= 0.95, scores
