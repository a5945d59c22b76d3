"""`lungct train`: a recipe-driven training loop for 2D slice and 3D patch networks.

One loop for every network in lungct.networks: MONAI DiceCE loss (Dice weighted more in the first
epochs when the recipe says so), augmentation on image and label alike, validation on held-apart
cases (mean Dice per label, whole cases), best and last checkpoints, early stopping, a learning-rate
schedule, a CSV log and PNG plots. Under torchrun it runs as PyTorch DDP (gloo on CPU, nccl on CUDA):
every rank trains on its share of samples, validation metrics are all-reduced, only rank 0 writes.
"""
from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from lungct import __version__
from lungct.checkpoint import read_checkpoint, save_checkpoint
from lungct.data import (Case, PatchSampler, SliceSampler, augmentation, load_pair_cases, load_prep_cases,
                         split_cases)
from lungct.errors import LungctError
from lungct.networks import DIMS, build_network, parameter_count

LOG_FIELDS = ["epoch", "loss", "val_mean_dice", "lr", "seconds"]


def pick_device(name: str = "auto") -> torch.device:
    """cuda, then mps, then cpu for "auto"; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LungctError(None, f"--device {name}: no CUDA device is available here")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Distributed:
    """Rank bookkeeping: a no-op in a single process, torch.distributed under torchrun."""

    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64)
        torch.distributed.all_reduce(tensor)
        return tensor.tolist()

    def wrap(self, network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if self.world == 1:
            return network
        return torch.nn.parallel.DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)

    def close(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def load_cases(recipe: dict, data: Path | None, images: Path | None, labels: Path | None) -> tuple[list[Case], dict | None]:
    allowed = {int(v) for v in recipe["labels"].values()}
    if images:
        if not labels:
            raise LungctError(images, "--images needs --labels (a folder of label files matched by case name)")
        spacing = recipe["input"].get("spacing_mm")
        return load_pair_cases(images, labels, allowed, spacing, recipe["input"]["window"],
                               recipe["input"].get("recalibrate", True)), None
    from lungct.workspace import prep_dir

    return load_prep_cases(data or prep_dir(), labels, allowed)


def load_radiograph_cases(recipe: dict, images: Path | None, masks: Path | None,
                          progress: bool = True) -> tuple[list[Case], list[Case]]:
    """Radiographs and their masks through the recipe's chain (256 x 256), split as the split file says."""
    from lungct.cxr.dataset import cxr_training_split, load_cxr_pair
    from tqdm import tqdm

    if not images or not masks:
        raise LungctError(images, "radiograph training needs --images and --labels (masks, 0/1 or 0/255)")
    train_pairs, val_pairs, _ = cxr_training_split(images, masks, recipe)
    if not train_pairs or not val_pairs:
        raise LungctError(images, f"{len(train_pairs)} training and {len(val_pairs)} validation radiographs: need both")
    out = []
    for pairs in (train_pairs, val_pairs):
        cases = []
        for name, image_path, mask_path in tqdm(pairs, desc="radiographs", leave=False, disable=not progress or len(pairs) < 50):
            image, mask = load_cxr_pair(image_path, mask_path, recipe)
            cases.append(Case(name, image.astype(np.float32)[..., None], mask.astype(np.uint8)[..., None], np.eye(4)))
        out.append(cases)
    return out[0], out[1]


def make_sampler(recipe: dict, cases: list[Case], seed: int):
    settings, dim = recipe.get("data", {}), int(recipe["dim"])
    fill = float(recipe["input"]["window"].get("b_min", 0.0))
    size = recipe["input"]["slice_size"] if dim == 2 else recipe["input"]["patch_size"]
    augment = augmentation(recipe.get("augment", {}), size, seed)
    if dim == 2:
        return SliceSampler(cases, size, float(settings.get("negative_share", 0.1)), settings.get("samples_per_epoch"),
                            augment, fill, seed)
    return PatchSampler(cases, size, float(settings.get("positive_share", 0.67)), settings.get("samples_per_epoch"),
                        augment, fill, seed)


def make_optimizer(recipe: dict, network: torch.nn.Module):
    settings = recipe.get("optimizer", {})
    name, lr = settings.get("name", "adam").lower(), float(settings.get("lr", 1e-3))
    decay = float(settings.get("weight_decay", 0.0))
    if name == "adam":
        return torch.optim.Adam(network.parameters(), lr=lr, weight_decay=decay)
    if name == "adamw":
        return torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=decay)
    if name == "sgd":
        return torch.optim.SGD(network.parameters(), lr=lr, momentum=float(settings.get("momentum", 0.9)),
                               weight_decay=decay, nesterov=bool(settings.get("nesterov", False)))
    raise LungctError(recipe.get("source"), f"unknown optimizer '{name}' (adam, adamw, sgd)")


def make_scheduler(recipe: dict, optimizer, epochs: int):
    settings = recipe.get("schedule", {}) or {}
    name = settings.get("name", "cosine")
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs),
                                                          eta_min=float(settings.get("min_lr", 0.0)))
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=float(settings.get("factor", 0.5)),
                                                          patience=int(settings.get("patience", 2)))
    if name in ("none", "constant", None):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise LungctError(recipe.get("source"), f"unknown schedule '{name}' (cosine, plateau, constant)")


def make_loss(recipe: dict, epoch: int):
    """DiceCE; during the first `dice_first_epochs` epochs Dice carries `dice_first_weight` (seed schedule)."""
    from monai.losses import DiceCELoss

    settings = recipe.get("loss", {}) or {}
    dice = float(settings.get("dice_weight", 1.0))
    if epoch < int(settings.get("dice_first_epochs", 0)):
        dice = float(settings.get("dice_first_weight", 2.0))
    return DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=dice, lambda_ce=float(settings.get("ce_weight", 1.0)))


def predict_case(network, case: Case, recipe: dict, device: torch.device, autocast) -> np.ndarray:
    """Label map of a whole case: 2D slice by slice (sides padded to a multiple of 32), 3D sliding window."""
    values = np.array(sorted(int(v) for v in recipe["labels"].values()), dtype=np.uint8)
    fill = float(recipe["input"]["window"].get("b_min", 0.0))
    image = torch.from_numpy(np.ascontiguousarray(case.image, dtype=np.float32))
    with torch.inference_mode(), autocast():
        if int(recipe["dim"]) == 3:
            from monai.inferers import SlidingWindowInferer

            inferer = SlidingWindowInferer(list(recipe["input"]["patch_size"]), sw_batch_size=2, overlap=0.5,
                                           mode="gaussian", cval=fill)
            index = inferer(image[None, None].to(device), network)[0].argmax(0).cpu().numpy()
        else:
            x, y, z = image.shape
            pad = [(0, (-n) % 32) for n in (x, y)]
            slices = torch.nn.functional.pad(image.permute(2, 0, 1)[:, None], (0, pad[1][1], 0, pad[0][1]), value=fill)
            out = []
            for start in range(0, z, 16):
                out.append(network(slices[start:start + 16].to(device)).argmax(1).cpu())
            index = torch.cat(out).permute(1, 2, 0).numpy()[:x, :y]
    return values[index]


def dice_per_label(prediction: np.ndarray, truth: np.ndarray, labels: dict) -> dict:
    """Dice of every foreground label (1.0 when both are empty), via MONAI's DiceMetric."""
    from monai.metrics import compute_dice

    out = {}
    for name, value in labels.items():
        if int(value) == 0:
            continue
        p = torch.from_numpy(prediction == int(value))[None, None]
        t = torch.from_numpy(truth == int(value))[None, None]
        score = compute_dice(p, t, include_background=True, ignore_empty=False)
        out[name] = float(score.item())
    return out


def checkpoint_meta(recipe: dict, network_args: dict, train_cases, val_cases, prep_recipe, metrics: dict,
                    epoch: int) -> dict:
    inp = recipe["input"]
    return {
        "network": {"name": recipe["network"]["name"], "args": network_args},
        "dim": int(recipe["dim"]),
        "modality": recipe.get("modality", "ct"),
        "labels": {str(k): int(v) for k, v in recipe["labels"].items()},
        "input": {"spacing_mm": inp.get("spacing_mm") if prep_recipe is None or recipe.get("modality") == "cxr"
                  else _prep_spacing(prep_recipe),
                  "axcodes": inp.get("axcodes", "RAS"), "window": inp["window"],
                  **({"slice_size": inp["slice_size"]} if int(recipe["dim"]) == 2 else {"patch_size": inp["patch_size"]}),
                  "preprocess_recipe": prep_recipe},
        "training": {"recipe": recipe, "cases": len(train_cases), "validation_cases": [c.name for c in val_cases],
                     "epochs": epoch + 1, "seed": int(recipe.get("seed", 0))},
        "metrics": metrics,
        "inference": dict(recipe.get("inference") or {}),  # defaults for lungct infer, e.g. {roi: true}
        "lungct_version": __version__,
    }


def _prep_spacing(prep_recipe: dict):
    for step in prep_recipe.get("transforms") or []:
        if step.get("name") == "Resampled":
            spacing = (step.get("args") or {}).get("spacing_mm", 1.0)
            return [float(s) for s in np.broadcast_to(np.asarray(spacing, dtype=float), (3,))]
    return None


def train(recipe: dict, out_dir: Path, data: Path | None = None, images: Path | None = None,
          labels: Path | None = None, device: str = "auto", resume: Path | None = None, progress: bool = True,
          log=print) -> dict:
    """Train as the recipe says; returns the best validation metrics. Writes best.pt, last.pt, log.csv, plots."""
    from tqdm import tqdm

    out_dir = Path(out_dir)
    seed = int(recipe.get("seed", 0))
    seed_everything(seed)
    dev = pick_device(device)
    dist = Distributed(dev)
    dim = int(recipe["dim"])
    name = recipe["network"]["name"]
    if DIMS.get(name) != dim:
        raise LungctError(recipe.get("source"), f"network '{name}' is not a {dim}D network")

    settings = recipe.get("data", {})
    if recipe.get("modality") == "cxr":
        train_cases, val_cases = load_radiograph_cases(recipe, images or data, labels, progress and dist.main)
        prep_recipe = {"name": recipe.get("name"), "transforms": recipe.get("transforms")}
    else:
        cases, prep_recipe = load_cases(recipe, data, images, labels)
        train_cases, val_cases = split_cases(cases, float(settings.get("validation_fraction", 0.2)), seed,
                                             settings.get("validation_cases"))
    sampler_data = make_sampler(recipe, train_cases, seed + dist.rank)
    network_args = {"in_channels": 1, "out_channels": len(recipe["labels"]), **(recipe["network"].get("args") or {})}
    network = build_network(name, **network_args).to(dev)
    optimizer = make_optimizer(recipe, network)
    epochs = int(recipe.get("epochs", 20))
    scheduler = make_scheduler(recipe, optimizer, epochs)
    state = {"epoch": -1, "best": -1.0, "best_epoch": -1, "stale": 0, "history": []}
    if resume:
        payload = read_checkpoint(Path(resume) / "last.pt" if Path(resume).is_dir() else resume)
        network.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["extra"]["optimizer"])
        scheduler.load_state_dict(payload["extra"]["scheduler"])
        state = payload["extra"]["state"]
        log(f"resuming after epoch {state['epoch'] + 1} (best validation Dice {state['best']:.4f})")
    model = dist.wrap(network, dev)
    use_amp = dev.type == "cuda" and recipe.get("amp", True)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)) \
        if use_amp else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported()) if use_amp else None
    patience = int((recipe.get("early_stopping") or {}).get("patience", 0))
    budget_s = 60.0 * float(recipe["time_budget_min"]) if recipe.get("time_budget_min") else None
    batch_size = int(recipe.get("batch_size", 8))
    if dist.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "recipe.json").write_text(json.dumps(recipe, indent=1, default=str))
        log(f"{name}: {parameter_count(network) / 1e6:.2f} M parameters, {len(train_cases)} training and "
            f"{len(val_cases)} validation cases, {len(sampler_data)} samples per epoch, device {dev}")

    for epoch in range(state["epoch"] + 1, epochs):
        started = time.perf_counter()
        sampler_data.reshuffle(epoch)
        sampler = (torch.utils.data.distributed.DistributedSampler(sampler_data, dist.world, dist.rank, shuffle=False)
                   if dist.world > 1 else None)
        loader = torch.utils.data.DataLoader(sampler_data, batch_size=batch_size, sampler=sampler, shuffle=False,
                                             num_workers=int(recipe.get("loader_workers", 0)), drop_last=len(sampler_data) > batch_size)
        loss_fn = make_loss(recipe, epoch)
        model.train()
        total, count = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", disable=not (progress and dist.main),
                   leave=False, dynamic_ncols=True)
        for batch in bar:
            image, label = batch["image"].to(dev), batch["label"].to(dev)
            optimizer.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(model(image), label)
            if scaler is not None and scaler.is_enabled():
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            total += float(loss.item()) * len(image)
            count += len(image)
            bar.set_postfix(loss=f"{total / count:.4f}")
        loss_sum, loss_count = dist.sum([total, count])
        mean_loss = loss_sum / max(loss_count, 1)

        model.eval()
        per_label = {n: [0.0, 0.0] for n, v in recipe["labels"].items() if int(v) != 0}
        for case in val_cases[dist.rank::dist.world]:
            scores = dice_per_label(predict_case(network, case, recipe, dev, autocast), case.labels, recipe["labels"])
            for label_name, score in scores.items():
                per_label[label_name][0] += score
                per_label[label_name][1] += 1
        flat = dist.sum([x for pair in per_label.values() for x in pair])
        dice = {n: flat[2 * i] / max(flat[2 * i + 1], 1) for i, n in enumerate(per_label)}
        mean_dice = float(np.mean(list(dice.values())))
        lr = optimizer.param_groups[0]["lr"]
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(mean_dice)
        else:
            scheduler.step()
        improved = mean_dice > state["best"]
        if improved:
            state.update(best=mean_dice, best_epoch=epoch, stale=0)
        else:
            state["stale"] += 1
        state["epoch"] = epoch
        row = {"epoch": epoch + 1, "loss": round(mean_loss, 5), "val_mean_dice": round(mean_dice, 5),
               **{f"dice_{n}": round(v, 5) for n, v in dice.items()}, "lr": lr,
               "seconds": round(time.perf_counter() - started, 2)}
        state["history"].append(row)
        if improved:
            state["best_dice"] = dice
        if dist.main:
            metrics = {"best_epoch": state["best_epoch"] + 1, "val_mean_dice": round(state["best"], 5),
                       "val_dice": state["best_dice"]}
            meta = checkpoint_meta(recipe, network_args, train_cases, val_cases, prep_recipe, metrics, epoch)
            if improved:
                save_checkpoint(out_dir / "best.pt", network, meta)
            save_checkpoint(out_dir / "last.pt", network, meta,
                            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": state})
            write_log(out_dir, state["history"])
            log(f"epoch {epoch + 1}: loss {mean_loss:.4f}, validation Dice {mean_dice:.4f} "
                f"({', '.join(f'{n} {v:.4f}' for n, v in dice.items())}), {row['seconds']:.0f} s"
                + (" *best" if improved else ""))
        if patience and state["stale"] >= patience:
            if dist.main:
                log(f"early stop: no improvement for {patience} epochs (best {state['best']:.4f} at epoch {state['best_epoch'] + 1})")
            break
        spent = sum(r["seconds"] for r in state["history"])  # epochs of earlier (resumed) sessions count too
        if budget_s and dist.sum([float(spent >= budget_s)])[0] > 0:
            if dist.main:
                log(f"time budget of {budget_s / 60:g} min used up after epoch {epoch + 1} "
                    f"(best {state['best']:.4f} at epoch {state['best_epoch'] + 1})")
            break
    if dist.main:
        plot_log(out_dir, state["history"])
    dist.close()
    return {"best_epoch": state["best_epoch"] + 1, "val_mean_dice": state["best"], "val_dice": state.get("best_dice")}


def write_log(out_dir: Path, history: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in history for k in row))
    temporary = out_dir / ".log.csv.tmp"
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(history)
    temporary.replace(out_dir / "log.csv")


def plot_log(out_dir: Path, history: list[dict]) -> None:
    """loss.png, dice.png and lr.png from the epoch log."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    dice_keys = [k for k in history[0] if k.startswith("dice_")] + ["val_mean_dice"]
    for filename, keys, ylabel in (("loss.png", ["loss"], "training loss"), ("dice.png", dice_keys, "validation Dice"),
                                   ("lr.png", ["lr"], "learning rate")):
        figure, axes = plt.subplots(figsize=(6, 3.5))
        for key in keys:
            axes.plot(epochs, [row.get(key) for row in history], marker="o", label=key)
        axes.set_xlabel("epoch")
        axes.set_ylabel(ylabel)
        if len(keys) > 1:
            axes.legend()
        figure.tight_layout()
        figure.savefig(out_dir / filename, dpi=90)
        plt.close(figure)


def default_run_dir(recipe: dict) -> Path:
    from lungct.workspace import runs_dir

    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return runs_dir() / f"{recipe.get('name', 'train')}-{stamp}"
