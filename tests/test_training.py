"""lungct train on tiny synthetic data: loss falls, checkpoints round-trip, resume, DDP, bad data refused."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lungct.checkpoint import read_checkpoint
from lungct.cli import main
from lungct.errors import LungctError
from lungct.networks import build_network
from lungct.recipes import load_recipe
from lungct.training import train

ROOT = Path(__file__).resolve().parents[1]
TINY = {  # a small, fast variant of the 2D recipe
    "network.args": {"channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 0, "norm": "batch"},
    "input.slice_size": [32, 32], "data.samples_per_epoch": 16, "batch_size": 4, "optimizer.lr": 0.01,
    "epochs": 3, "early_stopping.patience": 0, "data.validation_fraction": 0.34,
}


def blob_case(shape=(32, 32, 6), seed=0):
    """Windowed image in [0, 1] with two dark 'lungs' in a bright body: 1 = right (low x), 2 = left."""
    rng = np.random.default_rng(seed)
    x, y = np.mgrid[:shape[0], :shape[1]]
    body = ((x - 16) / 14) ** 2 + ((y - 16) / 11) ** 2 < 1
    right = ((x - 10) / 4.5) ** 2 + ((y - 16) / 6) ** 2 < 1
    left = ((x - 22) / 4.5) ** 2 + ((y - 16) / 6) ** 2 < 1
    image = np.where(body, 0.65, 0.0) - 0.45 * right - 0.45 * left
    labels = (right * 1 + left * 2).astype(np.uint8)
    image = np.repeat(image[..., None], shape[2], axis=2) + rng.normal(0, 0.02, shape)
    labels = np.repeat(labels[..., None], shape[2], axis=2)
    labels[..., 0] = 0  # one slice without lungs: a negative
    image[..., 0] = np.where(body, 0.65, 0.0)
    return image.astype(np.float32), labels


def as_hu(image: np.ndarray) -> np.ndarray:
    """A windowed blob image back in HU (window -1024..600), as a scan would hold it."""
    return np.round(image * 1624 - 1024).astype(np.int16)


def write_prep(folder: Path, count: int = 3) -> Path:
    """What `lungct preprocess --set Resampled.spacing_mm=1.5` would make of blob scans on a 1.5 mm grid:
    case folders whose case.json names the original scans (written beside, in scans/)."""
    from lungct.geometry import geometry_summary

    recipe = load_recipe("preprocess", {"Resampled.spacing_mm": 1.5})
    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    for i in range(count):
        case, scan = folder / f"case{i}", folder.parent / "scans" / f"case{i}.nii.gz"
        case.mkdir(parents=True)
        scan.parent.mkdir(exist_ok=True)
        image, labels = blob_case(seed=i)
        nib.save(nib.Nifti1Image(as_hu(image), affine), scan)
        nib.save(nib.Nifti1Image(np.clip((as_hu(image) + 1024) / 1624, 0, 1).astype(np.float32), affine),
                 case / "image.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), case / "lungs.nii.gz")
        nib.save(nib.Nifti1Image(labels, affine), case / "lungs-native.nii.gz")
        (case / "case.json").write_text(json.dumps({"case": case.name, "recipe": recipe, "sources": [str(scan)],
                                                    "input": geometry_summary(labels.shape, affine)}))
    return folder


def load_checkpoint(path):
    from lungct.models import Model

    model = Model.load(path, device="cpu")
    return model.network, model.meta


def chain_args(meta: dict, step: str) -> dict:
    return next(s["args"] for s in meta["input"]["chain"] if s["name"] == step)


def tiny_recipe(**extra):
    return load_recipe("train-2d", {**TINY, **extra})


@pytest.fixture
def prep(tmp_path):
    return write_prep(tmp_path / "prep")


def test_noise_augmentation_is_optional_seeded_and_leaves_labels_alone():
    from lungct.sampling import augmentation

    sample = {"image": np.full((1, 48, 48), 0.5, np.float32), "label": (np.arange(48 * 48) % 3).reshape(1, 48, 48)}
    plain = {**load_recipe("train-2d")["augment"], "prob": 0.0}  # no affine or jitter: only noise changes the image
    assert len(augmentation(plain, (48, 48), 0).transforms) == 3
    noisy = {**plain, "noise_sd": 0.05, "noise_prob": 1.0}
    first = augmentation(noisy, (48, 48), 7)(dict(sample))
    again = augmentation(noisy, (48, 48), 7)(dict(sample))
    np.testing.assert_array_equal(np.asarray(first["image"]), np.asarray(again["image"]))
    np.testing.assert_array_equal(np.asarray(first["label"]), sample["label"])
    assert 0 < float(np.std(np.asarray(first["image"]))) <= 0.05 * 1.1
    np.testing.assert_array_equal(np.asarray(augmentation(plain, (48, 48), 7)(dict(sample))["image"]), sample["image"])


def test_loss_falls_and_checkpoint_describes_itself(prep, tmp_path):
    out = tmp_path / "run"
    train(tiny_recipe(epochs=4), out, data=prep, progress=False, log=lambda m: None)
    rows = (out / "log.csv").read_text().splitlines()
    header = rows[0].split(",")
    losses = [float(r.split(",")[header.index("loss")]) for r in rows[1:]]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert {"dice_right_lung", "dice_left_lung", "lr", "seconds"} <= set(header)
    for name in ("best.pt", "last.pt", "loss.png", "dice.png", "lr.png", "recipe.json"):
        assert (out / name).is_file(), name
    network, meta = load_checkpoint(out / "best.pt")
    assert meta["labels"] == {"background": 0, "right_lung": 1, "left_lung": 2}
    assert meta["dim"] == 2 and meta["network"]["name"] == "unet2d"
    assert chain_args(meta, "Resampled")["spacing_mm"] == 1.5  # from the prep cases' preprocess recipe
    assert chain_args(meta, "CheckHUCalibrationd")["recalibrate"] is False  # ditto
    assert chain_args(meta, "Resampled")["keep_thick_slices"] is True  # from the 2D recipe
    assert meta["training"]["cases"] == 2 and len(meta["training"]["validation_cases"]) == 1
    metrics = meta["metrics"]
    assert set(metrics["val_cases"]) == set(meta["training"]["validation_cases"]) and meta["lungct_version"]
    per_case = list(metrics["val_cases"].values())
    assert metrics["val_dice"] == {k: np.mean([c[k] for c in per_case]) for k in ("right_lung", "left_lung")}
    logged = [float(r.split(",")[header.index("val_mean_dice")]) for r in rows[1:]]
    assert metrics["val_mean_dice"] == round(max(logged), 5) > 0 and metrics["best_epoch"] == 1 + logged.index(max(logged))


def test_checkpoint_round_trip_gives_identical_outputs(prep, tmp_path):
    out = tmp_path / "run"
    train(tiny_recipe(epochs=1), out, data=prep, progress=False, log=lambda m: None)
    first, _ = load_checkpoint(out / "last.pt")
    second, _ = load_checkpoint(out / "last.pt")
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))


def test_same_seed_same_weights(prep, tmp_path):
    for name in ("a", "b"):
        train(tiny_recipe(epochs=1), tmp_path / name, data=prep, progress=False, log=lambda m: None)
    a = read_checkpoint(tmp_path / "a" / "last.pt")["state_dict"]
    b = read_checkpoint(tmp_path / "b" / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_from_saved_epoch_and_optimiser(prep, tmp_path):
    out = tmp_path / "run"
    runner = CliRunner()
    args = ["train", "--dim", "2d", "--data", str(prep), "-o", str(out), "--quiet"]
    sets = sum((["--set", f"{k}={json.dumps(v)}"] for k, v in TINY.items() if k != "epochs"), [])
    result = runner.invoke(main, args + sets + ["--epochs", "2"])
    assert result.exit_code == 0, result.output
    steps_before = read_checkpoint(out / "last.pt")["extra"]["optimizer"]["state"][0]["step"]
    result = runner.invoke(main, ["train", "--dim", "2d", "--data", str(prep), "--resume", str(out), "--epochs", "3",
                                  "--quiet"])
    assert result.exit_code == 0, result.output
    assert "resuming after epoch 2" in result.output
    payload = read_checkpoint(out / "last.pt")
    assert [row["epoch"] for row in payload["extra"]["state"]["history"]] == [1, 2, 3]
    assert payload["extra"]["optimizer"]["state"][0]["step"] == steps_before * 3 / 2


def test_init_fine_tunes_from_a_checkpoint_and_refuses_another_network(prep, tmp_path):
    """--init starts from a checkpoint's weights: after one epoch at a vanishing learning rate the
    convolutions are still the source's; a checkpoint of another network or labels is refused by name."""
    source = tmp_path / "source"
    train(tiny_recipe(epochs=1), source, data=prep, progress=False, log=lambda m: None)
    sets = sum((["--set", f"{k}={json.dumps(v)}"] for k, v in TINY.items() if k not in ("epochs", "optimizer.lr")), [])
    args = ["train", "--dim", "2d", "--data", str(prep), "--quiet", "--epochs", "1", "--lr", "1e-12", *sets]
    result = CliRunner().invoke(main, args + ["-o", str(tmp_path / "tuned"), "--init", str(source / "best.pt")])
    assert result.exit_code == 0, result.output
    before = read_checkpoint(source / "best.pt")
    after = read_checkpoint(tmp_path / "tuned" / "last.pt")
    weights = [k for k in before["state_dict"] if k.endswith("conv.weight")]
    assert weights and all(torch.allclose(before["state_dict"][k], after["state_dict"][k], atol=1e-9) for k in weights)
    assert after["meta"]["training"]["init"] == str(source / "best.pt")
    other = sets + ["--set", 'network.args={"channels": [8, 16], "strides": [2], "num_res_units": 0, "norm": "batch"}']
    result = CliRunner().invoke(main, args[:-len(sets)] + other + ["-o", str(tmp_path / "x"), "--init", str(source / "best.pt")])
    assert result.exit_code != 0 and f"{source / 'best.pt'}: cannot initialise from it: its network" in result.output


def test_time_budget_stops_after_the_epoch_that_uses_it_up(prep, tmp_path):
    out = tmp_path / "run"
    sets = sum((["--set", f"{k}={json.dumps(v)}"] for k, v in TINY.items() if k != "epochs"), [])
    result = CliRunner().invoke(main, ["train", "--dim", "2d", "--data", str(prep), "-o", str(out), "--quiet",
                                       "--epochs", "5", "--max-minutes", "0.0001", *sets])
    assert result.exit_code == 0, result.output
    assert "time budget of 0.0001 min used up after epoch 1" in result.output
    assert len((out / "log.csv").read_text().strip().splitlines()) == 2  # header + one epoch
    assert (out / "best.pt").is_file()


def test_images_and_labels_folders_in_any_format(tmp_path):
    images, labels = tmp_path / "imgs", tmp_path / "masks"
    images.mkdir(), labels.mkdir()
    for i in range(3):
        image, lab = blob_case(seed=i)
        hu = (image * 1624 - 1024).astype(np.int16)  # back to HU so the recipe window applies
        affine = np.diag([1.0, 1.0, 1.0, 1.0])
        nib.save(nib.Nifti1Image(hu, affine), images / f"p{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), labels / f"p{i}.nii.gz")
    out = tmp_path / "run"
    result = train(tiny_recipe(epochs=1, **{"CheckHUCalibrationd.recalibrate": False}), out, images=images,
                   labels=labels, progress=False, log=lambda m: None)
    assert (out / "best.pt").is_file() and 0 <= result["val_mean_dice"] <= 1
    _, meta = load_checkpoint(out / "best.pt")
    assert chain_args(meta, "Resampled")["spacing_mm"] == 1.0 and not chain_args(meta, "CheckHUCalibrationd")["recalibrate"]


@pytest.mark.parametrize("problem, message", [
    ("empty", "holds no preprocessed cases"),
    ("no_labels", "has an image but no labels"),
    ("shape", "label shape"),
    ("values", "unexpected label values [7]"),
])
def test_bad_datasets_are_refused_naming_the_case(tmp_path, problem, message):
    prep = tmp_path / "prep"
    if problem == "empty":
        prep.mkdir()
    else:
        write_prep(prep)
        target = prep / "case1" / "lungs.nii.gz"
        if problem == "no_labels":
            target.unlink()
        elif problem == "shape":
            nib.save(nib.Nifti1Image(np.zeros((30, 32, 6), np.uint8), np.diag([1.5, 1.5, 1.5, 1])), target)
        else:
            labels = np.asarray(nib.load(target).dataobj).copy()
            labels[0, 0, 0] = 7
            nib.save(nib.Nifti1Image(labels, np.diag([1.5, 1.5, 1.5, 1])), target)
    result = CliRunner().invoke(main, ["train", "--dim", "2d", "--data", str(prep), "-o", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert message in result.output
    if problem != "empty":
        assert "case1" in result.output
    assert not (tmp_path / "run").exists()


def test_validation_dice_is_what_infer_and_evaluate_give(tmp_path, monkeypatch):
    """Validation runs the shipped segmenter: the Dice recorded for a case is `lungct evaluate` on `lungct infer`;
    it stops after the conventions (no densitometry per epoch)."""
    from lungct.ct.segmenter import CTSegmenter

    def no_densitometry(*args, **kwargs):
        raise AssertionError("densitometry ran during training validation")

    images, labels = tmp_path / "imgs", tmp_path / "masks"
    images.mkdir(), labels.mkdir()
    for i in range(3):
        image, lab = blob_case(seed=i)
        affine = np.diag([-1.2, 1.2, 1.5, 1.0])  # stored right-to-left, off the network's 1 mm grid
        nib.save(nib.Nifti1Image(as_hu(image), affine), images / f"p{i}.nii.gz")
        nib.save(nib.Nifti1Image(lab, affine), labels / f"p{i}.nii.gz")
    out = tmp_path / "run"
    monkeypatch.setattr(CTSegmenter, "density", no_densitometry)
    train(tiny_recipe(epochs=6, **{"CheckHUCalibrationd.recalibrate": False, "data.samples_per_epoch": 32}), out,
          images=images, labels=labels, progress=False, log=lambda m: None)
    monkeypatch.undo()
    meta = read_checkpoint(out / "best.pt")["meta"]
    (case, recorded), = meta["metrics"]["val_cases"].items()
    runner = CliRunner()
    result = runner.invoke(main, ["infer", str(images / f"{case}.nii.gz"), "-o", str(tmp_path / "m.nii.gz"),
                                  "--model", str(out / "best.pt"), "--quiet"])
    assert result.exit_code == 0, result.output
    from lungct.evaluate import evaluate

    rows = {r["name"]: r["dice"] for r in evaluate(tmp_path / "m.nii.gz", labels / f"{case}.nii.gz").rows
            if r["label"] != "all"}
    assert rows == recorded and max(rows.values()) > 0.3  # exactly equal, label by label, and not trivially


@pytest.mark.parametrize("setting, message", [
    ("optimizer.lrr=1", "unknown recipe key 'optimizer.lrr' (did you mean 'optimizer.lr'?)"),
    ("epochz=3", "unknown recipe key 'epochz' (did you mean 'epochs'?)"),
    ("Resampled.spacingmm=2", "Resampled has no argument 'spacingmm' (did you mean 'spacing_mm'?)"),
    ("augment.noise_sd=loud", "recipe key 'augment.noise_sd' must be float"),
])
def test_unknown_recipe_keys_are_refused_with_the_nearest_valid_one(prep, tmp_path, setting, message):
    result = CliRunner().invoke(main, ["train", "--dim", "2d", "--data", str(prep), "-o", str(tmp_path / "run"),
                                       "--set", setting])
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


def test_recipe_dim_must_match(prep, tmp_path):
    result = CliRunner().invoke(main, ["train", "--dim", "3d", "--config", "train-2d", "--data", str(prep)])
    assert result.exit_code == 1 and "is a 2D recipe but --dim 3d" in result.output


def test_3d_training_runs(prep, tmp_path):
    recipe = load_recipe("train-3d", {"network.args": {"channels": [4, 8], "strides": [2], "num_res_units": 0},
                                      "input.patch_size": [16, 16, 8], "data.samples_per_epoch": 4,
                                      "batch_size": 2, "epochs": 1, "data.validation_fraction": 0.34})
    out = tmp_path / "run3d"
    train(recipe, out, data=prep, progress=False, log=lambda m: None)
    network, meta = load_checkpoint(out / "best.pt")
    assert meta["dim"] == 3 and meta["input"]["patch_size"] == [16, 16, 8]


@pytest.mark.parametrize("name, args, shape", [
    ("unet2d", {"channels": [8, 16, 32]}, (2, 1, 32, 32)),
    ("unet3d", {"channels": [4, 8, 16]}, (1, 1, 16, 16, 16)),
    ("segnet2d", {"filters": 8}, (2, 1, 32, 48)),
    ("resunet2d", {}, (2, 1, 64, 64)),
])
def test_every_network_runs_forward_and_backward(name, args, shape):
    network = build_network(name, in_channels=1, out_channels=3, **args)
    x = torch.rand(*shape, requires_grad=True)
    y = network(x)
    assert y.shape == (shape[0], 3, *shape[2:])
    y.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in network.parameters() if p.requires_grad)


def test_unknown_network_is_refused():
    with pytest.raises(LungctError, match="unknown network 'vnet'"):
        build_network("vnet")


def test_two_process_gloo_ddp_writes_one_checkpoint(prep, tmp_path):
    out = tmp_path / "ddp"
    sets = sum((["--set", f"{k}={json.dumps(v)}"] for k, v in TINY.items()), [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                             port, "-m", "lungct", "train", "--dim", "2d", "--data", str(prep), "-o", str(out),
                             "--epochs", "1", "--quiet", *sets], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sorted(p.name for p in out.glob("*.pt")) == ["best.pt", "last.pt"]
    assert len((out / "log.csv").read_text().splitlines()) == 2  # header + one epoch, written once
    assert result.stderr.count("epoch 1: loss") == 1 and result.stderr.count("best validation Dice") == 1  # rank 0 only


def test_lesion_params_from_the_recipe_reach_the_synthesis_and_unknown_ones_are_refused():
    from lungct.recipes import chain_of
    from lungct.sampling import make_synthesis

    recipe = load_recipe("ct-default-2d", {"augment.lesions.params": {"pleural_overlap": [0.2, 0.7],
                                                                       "juxtapleural_prob": 0.9}})
    synthesis = make_synthesis(recipe, chain_of(recipe))
    assert synthesis.params.pleural_overlap == (0.2, 0.7) and synthesis.params.juxtapleural_prob == 0.9
    assert make_synthesis(load_recipe("ct-default-2d"), chain_of(recipe)).params.pleural_overlap == (0.15, 0.45)
    bad = load_recipe("ct-default-2d", {"augment.lesions.params": {"pleural_overlapp": [0.2, 0.7]}})
    with pytest.raises(LungctError, match="pleural_overlapp"):
        make_synthesis(bad, chain_of(bad))
