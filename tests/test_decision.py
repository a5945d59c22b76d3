"""The lesion decision on phantoms: lesion families painted in 3D with the right labels, the places of the
lung surface, post-processing as recorded data, and the whole cascade trained for a few steps, composed
into one checkpoint, run through `lungct infer` deterministically."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from phantoms import make_phantom, write_nifti

from lungct.checkpoint import read_checkpoint, save_checkpoint
from lungct.cli import main
from lungct.ct.anatomy import LOCATIONS, surface_points
from lungct.ct.cascade import compose_cascade
from lungct.ct.decision.families import FAMILIES, LESION, LUNG, OUTSIDE, paint
from lungct.ct.decision.training import initial_weights, load_decision_recipe, train_decision
from lungct.ct.pipeline import KNOWN_STEPS, PIPELINE_VERSION, PostProcessing
from lungct.ct.segmenter import CTSegmenter
from lungct.errors import LungctError


@pytest.fixture(scope="module")
def chest():
    """A 3 mm RAS phantom: HU and right/left lungs, as a host volume is."""
    phantom = make_phantom((96, 80, 64), (3.0, 3.0, 3.0), seed=7, stomach_gas=False)
    return phantom.array.astype(np.float32), phantom.lungs, phantom.spacing


def test_the_places_of_the_lung_surface_are_found_on_both_lungs(chest):
    _, sides, spacing = chest
    for side in (1, 2):
        surface = surface_points(sides, side, spacing)
        found = {name for name in LOCATIONS if len(surface.at(name))}
        assert {"costal", "mediastinal", "diaphragmatic", "apical", "paravertebral", "hilar"} <= found, side
        normals = np.linalg.norm(surface.normal, axis=1)
        assert np.allclose(normals, 1, atol=1e-3)
        costal = surface.at("costal")  # the lateral wall faces away from the midline
        outward = np.sign(surface.normal[costal, 0]).mean()
        assert (outward > 0.5) if side == 1 else (outward < -0.5)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_paints_with_its_label(chest, family):
    hu, sides, spacing = chest
    for seed in range(6):
        canvas = paint(hu, sides, spacing, np.random.default_rng(seed), {family: 1.0}, count_probs=(0, 1))
        if canvas.painted:
            break
    assert canvas.painted, f"{family}: no seat in six tries"
    lesion = canvas.painted[0]
    envelope = canvas.envelope | (lesion.family == "effusion") & lesion.voxels
    assert lesion.voxels.sum() > 10 and (envelope[lesion.voxels]).all(), "labels stay inside the pleura"
    assert np.any(canvas.hu[lesion.voxels] != hu[lesion.voxels]), "the image changed where labelled"
    expected = {"effusion": OUTSIDE, "ground_glass": LUNG}.get(family, LESION)
    assert (canvas.classes[lesion.voxels] == expected).all()
    unchanged = (canvas.hu == hu)
    assert (canvas.classes[unchanged & (sides == 0)] == OUTSIDE).all()


def test_painting_is_deterministic_and_leaves_bone_alone(chest):
    hu, sides, spacing = chest
    families = {name: 1.0 for name in FAMILIES}
    first = paint(hu, sides, spacing, np.random.default_rng(3), families, count_probs=(0, 0, 0, 1))
    second = paint(hu, sides, spacing, np.random.default_rng(3), families, count_probs=(0, 0, 0, 1))
    assert np.array_equal(first.hu, second.hu) and np.array_equal(first.classes, second.classes)
    bone = hu > 200
    assert np.array_equal(first.hu[bone], hu[bone])


# ------------------------------------------------------------------------------ post-processing as data


def test_recorded_steps_are_run_and_unknown_ones_refused():
    record = PostProcessing.from_meta({"postprocess": {"version": PIPELINE_VERSION, "steps": [
        {"name": "main_components", "params": {"min_fraction": 0.2}}, {"name": "boundary"}]}})
    assert record.params("main_components")["min_fraction"] == 0.2
    assert record.params("boundary") == KNOWN_STEPS["boundary"] and not record.has("roi")
    for bad, says in (({"version": PIPELINE_VERSION, "steps": [{"name": "magic_fix"}]}, "'magic_fix'"),
                      ({"version": PIPELINE_VERSION + 1, "steps": []}, "version"),
                      ({"version": PIPELINE_VERSION, "steps": [{"name": "boundary", "params": {"x": 1}}]}, "'x'")):
        with pytest.raises(LungctError) as caught:
            PostProcessing.from_meta({"postprocess": bad}, "model.pt")
        assert says in str(caught.value) and "\n" not in str(caught.value)


def test_a_checkpoint_naming_an_unknown_step_is_refused_in_one_line(model_2d, tmp_path):
    payload = read_checkpoint(model_2d)
    meta = {**payload["meta"], "postprocess": {"version": PIPELINE_VERSION, "steps": [{"name": "dome_trimmer"}]}}
    network = torch.nn.Module()
    path = tmp_path / "odd.pt"
    save_checkpoint(path, network, meta)
    torch.save({**torch.load(path, weights_only=True), "state_dict": payload["state_dict"]}, path)
    scan = write_nifti(make_phantom((48, 48, 16), (6.0, 6.0, 6.0)), tmp_path / "scan.nii.gz")
    result = CliRunner().invoke(main, ["infer", str(scan), "-o", str(tmp_path / "m.nii.gz"), "--model", str(path),
                                       "--quiet"])
    assert result.exit_code == 1 and "dome_trimmer" in result.output
    assert len(result.output.strip().splitlines()) == 1


# ----------------------------------------------------------------------------------- the whole cascade


@pytest.fixture(scope="module")
def cascade(model_2d, tmp_path_factory) -> Path:
    """A decision trained for a few steps on one phantom host, composed with the tiny 2D model."""
    folder = tmp_path_factory.mktemp("cascade")
    phantom = make_phantom((72, 64, 48), (4.0, 4.0, 4.0), seed=9)
    write_nifti(phantom, folder / "host.nii.gz")
    write_nifti(phantom.lungs, folder / "host-lungs.nii.gz", phantom.affine)
    recipe = load_decision_recipe("ct-decision-3d")
    recipe.update(steps=3, batch_size=1, loader_workers=0)
    recipe["sampling"]["patch"] = [32, 32, 32]
    recipe["network"]["args"].update(channels=[4, 8, 16], strides=[2, 2])
    decision = train_decision(recipe, [("host", folder / "host.nii.gz", folder / "host-lungs.nii.gz", None)],
                              folder / "run", log=lambda message: None)
    return compose_cascade(model_2d, decision, folder / "cascade.pt")


def test_the_cascade_records_its_steps_and_runs_them_deterministically(cascade, tmp_path):
    meta = read_checkpoint(cascade)["meta"]
    names = [step["name"] for step in meta["postprocess"]["steps"]]
    assert "lesion_decision" in names and names.index("lesion_decision") < names.index("boundary")
    scan = write_nifti(make_phantom((64, 64, 30), (5.0, 5.0, 5.0), seed=2), tmp_path / "scan.nii.gz")
    digests = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.nii.gz"
        result = CliRunner().invoke(main, ["infer", str(scan), "-o", str(out), "--model", str(cascade), "--quiet"])
        assert result.exit_code == 0, result.output
        digests.append(hashlib.sha256(np.asarray(nib.load(out).dataobj).tobytes()).hexdigest())
        sidecar = json.loads(out.with_name(f"{name}.json").read_text())
        recorded = sidecar["inference"]["postprocess"]
        assert [s["name"] for s in recorded["steps"]] == names and len(recorded["digest"]) == 16
        assert sidecar["conventions"]["lesions_by"] == "lesion decision"
        assert "lesion_decision" in sidecar["timings_s"]
    assert digests[0] == digests[1]


def test_a_single_slice_falls_back_to_the_dense_lesion_rule(cascade):
    segmenter = CTSegmenter.load(cascade, device="cpu", statistics=False)
    phantom = make_phantom((64, 64, 1), (5.0, 5.0, 5.0), seed=4)
    from lungct.io import Scan

    result = segmenter.segment(Scan("slice", phantom.array.astype(np.float32), phantom.affine, [], "memory"))
    assert result.extra["conventions"]["lesions_by"] == "dense-lesion rule"


def test_a_decision_is_fine_tuned_from_a_cascade_and_nothing_else(cascade, model_2d):
    stage = read_checkpoint(cascade)["stages"]["lesion_decision"]["state_dict"]
    start = initial_weights(cascade)
    assert start.keys() == stage.keys() and all(torch.equal(start[k], stage[k]) for k in stage)
    with pytest.raises(LungctError, match="holds no lesion-decision network"):
        initial_weights(model_2d)


@pytest.mark.parametrize("name", ["ct-decision-3d", "ct-decision-3d-finetune"])
def test_the_decision_recipes_are_lesion_decision_recipes(name):
    recipe = yaml.safe_load((Path(__file__).resolve().parents[1] / "pipelines" / f"{name}.yaml").read_text())
    held_out = {"anterior_junction", "cavitating", "fissural"}  # the benchmark's families never trained on
    assert recipe["stage"] == "lesion-decision" and not held_out & set(recipe["families"])
    assert set(recipe["families"]) <= set(FAMILIES)


def test_the_azygo_oesophageal_recess_is_found_where_the_right_lung_lies_at_one_distance_from_the_midline():
    """On a 3 mm grid the recess's points can all lie one voxel from the midline; they are still named."""
    sides = np.zeros((40, 30, 30), np.uint8)
    sides[21:34, 5:25, 3:27] = 1  # the right lung (RAS: +x) reaching the midline at x = 21
    sides[6:19, 5:25, 3:27] = 2
    surface = surface_points(sides, 1, (3.0, 3.0, 3.0))
    assert len(surface.at("azygo_oesophageal")) > 0
