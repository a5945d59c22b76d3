"""`lungct train`: a recipe-driven training loop for 2D slice and 3D patch networks, CT and radiographs.

One loop for every network in lungct.networks: MONAI DiceCE loss (Dice weighted more in the first
epochs when the recipe says so), augmentation on image and label alike, a learning-rate schedule, early
stopping, a CSV log and plots. The network's input chain is the recipe's (or, for a `lungct preprocess`
folder, the one that made its images) and is written into every checkpoint. Validation runs the shipped
segmenter itself (input chain, network, post-processing, the way back to the original grid) on the
validation cases' original inputs and scores against their original-grid references, so the Dice that
picks best.pt is the Dice `lungct infer` + `lungct evaluate` give. Under torchrun it runs as PyTorch DDP
(gloo on CPU, nccl on CUDA): each rank trains on its share of samples and validates its share of cases.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from lungct import data as cases_from
from lungct.checkpoint import read_checkpoint, save_checkpoint
from lungct.cxr.dataset import cxr_pairs, find_split_file, read_split_file
from lungct.data import read_reference
from lungct.engine import make_segmenter
from lungct.errors import LungctError
from lungct.io.atomic import make_folder, write_text
from lungct.metrics import overlap
from lungct.models import Model, autocast_dtype, pick_device, resolve_model
from lungct.networks import DIMS, build_network, parameter_count
from lungct.options import InferOptions
from lungct.recipes import Chain, chain_of, resolved_step
from lungct.sampling import PatchSampler, SliceSampler, augmentation, chain_before, make_synthesis
from lungct.trainlog import plot_log, write_log
from lungct.workspace import prep_dir


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

    def gather(self, mapping: dict) -> dict:
        """Union of every rank's dict (validation results per case)."""
        if self.world == 1:
            return mapping
        parts = [None] * self.world
        torch.distributed.all_gather_object(parts, mapping)
        return {k: v for part in parts for k, v in part.items()}

    def wrap(self, network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if self.world == 1:
            return network
        return torch.nn.parallel.DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)

    def close(self) -> None:
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


# ---------------------------------------------------------------------------------------------- recipe


def make_optimizer(recipe: dict, network: torch.nn.Module):
    settings = recipe["optimizer"]
    name, lr, decay = settings["name"].lower(), float(settings["lr"]), float(settings["weight_decay"])
    if name == "adam":
        return torch.optim.Adam(network.parameters(), lr=lr, weight_decay=decay)
    if name == "adamw":
        return torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=decay)
    if name == "sgd":
        return torch.optim.SGD(network.parameters(), lr=lr, momentum=float(settings["momentum"]),
                               weight_decay=decay, nesterov=bool(settings["nesterov"]))
    raise LungctError(recipe.get("source"), f"unknown optimizer '{name}' (adam, adamw, sgd)")


def make_scheduler(recipe: dict, optimizer, epochs: int):
    settings = recipe["schedule"]
    name = settings["name"]
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs), eta_min=float(settings["min_lr"]))
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=float(settings["factor"]),
                                                          patience=int(settings["patience"]))
    if name in ("none", "constant"):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    raise LungctError(recipe.get("source"), f"unknown schedule '{name}' (cosine, plateau, constant)")


def make_loss(recipe: dict, epoch: int):
    """DiceCE; during the first `dice_first_epochs` epochs Dice carries `dice_first_weight` (seed schedule)."""
    from monai.losses import DiceCELoss

    settings = recipe["loss"]
    dice = float(settings["dice_first_weight"] if epoch < int(settings["dice_first_epochs"]) else settings["dice_weight"])
    return DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=dice, lambda_ce=float(settings["ce_weight"]))


def make_sampler(recipe: dict, cases, seed: int, chain: list[dict]):
    settings, dim, inp = recipe["data"], int(recipe["dim"]), recipe["input"]
    size = inp["slice_size"] if dim == 2 else inp["patch_size"]
    augment = augmentation(recipe["augment"], size, seed)
    per_epoch = settings["samples_per_epoch"] or None
    synthesis = make_synthesis(recipe, chain)
    if dim == 2:
        return SliceSampler(cases, size, float(settings["negative_share"]), per_epoch, augment, inp["pad_value"], seed,
                            synthesis, bool(settings["roi_slices_only"]), settings.get("case_weights"))
    return PatchSampler(cases, size, float(settings["positive_share"]), per_epoch, augment, inp["pad_value"], seed,
                        synthesis)


def model_meta(recipe: dict, network_args: dict, chain: list[dict]) -> dict:
    """What inference needs to know about the network (the checkpoint's meta without the training record)."""
    inp, dim = recipe["input"], int(recipe["dim"])
    size_key = "slice_size" if dim == 2 else "patch_size"
    return {"network": {"name": recipe["network"]["name"], "args": network_args}, "dim": dim,
            "modality": recipe["modality"], "labels": {str(k): int(v) for k, v in recipe["labels"].items()},
            "input": {"chain": [resolved_step(s) for s in chain], size_key: inp[size_key],
                      "pad_value": float(inp["pad_value"])},
            "inference": dict(recipe["inference"]), "format_version": 2}


def initialise_from(network: torch.nn.Module, meta: dict, model: str, log=print) -> None:
    """Fine-tuning: the weights of a checkpoint (path or shipped name) whose network and labels are the recipe's."""
    path = resolve_model(model)
    payload = read_checkpoint(path)
    for key in ("network", "labels"):
        if payload["meta"].get(key) != meta[key]:
            raise LungctError(path, f"cannot initialise from it: its {key} ({payload['meta'].get(key)}) is not the "
                                    f"recipe's ({meta[key]})")
    network.load_state_dict(payload["state_dict"])
    log(f"initialised from {path}")


# ---------------------------------------------------------------------------------------------- data


def training_data(recipe: dict, data: Path | None, images: Path | None, labels: Path | None,
                  progress: bool = True) -> tuple[list, list, list[dict]]:
    """(training cases, validation cases, the network input chain that made their images)."""
    chain, settings, seed = chain_of(recipe), recipe["data"], int(recipe["seed"])
    allowed = {int(v) for v in recipe["labels"].values()}
    named = [*settings["exclude_cases"], *(settings.get("case_weights") or {})]  # checked before any case is read
    if unquoted := next((name for name in named if not isinstance(name, str)), None):
        raise LungctError(recipe.get("source"), f"case name {unquoted!r} is not a string: quote names YAML reads as "
                                                "numbers (e.g. '16663_1_1')")
    assignment = None
    if recipe["modality"] == "cxr":
        images = images or data
        if not images or not labels:
            raise LungctError(images, "radiograph training needs --images and --labels (masks, 0/1 or 0/255)")

        split_file = find_split_file(Path(images), settings["split_file"])
        assignment = read_split_file(split_file) if split_file else None
        upfront = chain_before(chain, recipe["augment"]["before_step"], recipe) if make_synthesis(recipe, chain) else chain
        cases = cases_from.load_radiograph_cases(cxr_pairs(images, labels), Chain(upfront, recipe.get("source")), progress)
    elif images:
        if not labels:
            raise LungctError(images, "--images needs --labels (a folder of label files matched by case name)")
        cases = cases_from.load_pair_cases(images, labels, allowed, Chain(chain, recipe.get("source")))
    else:
        cases, prep_recipe = cases_from.load_prep_cases(data or prep_dir(), labels, allowed)
        chain = cases_from.adopt_prep_chain(chain, prep_recipe, data or prep_dir())
        fill = cases_from.masked_value(chain, prep_recipe)
        if fill is not None:
            cases_from.mask_outside_roi(cases, data or prep_dir(), fill)
    train_cases, val_cases = cases_from.split_cases(cases, float(settings["validation_fraction"]), seed,
                                                    settings["validation_cases"], assignment, settings["exclude_cases"])
    return train_cases, val_cases, chain


class Validation:
    """The validation cases through the shipped segmenter: their input chain runs once (cached), each
    epoch runs the network, the post-processing and the way back to the original grid, and scores Dice
    per label against the original-grid reference with the function `lungct evaluate` uses. It stops
    after the conventions: densitometry would cost every epoch time and change no Dice."""

    def __init__(self, cases: list, network: torch.nn.Module, meta: dict, device: torch.device, aerated: bool = False):
        self.model = Model(network, meta, device, autocast_dtype(device, "auto"))
        options = InferOptions(binary=meta["modality"] == "cxr", aerated=aerated, statistics=False)
        self.segmenter = make_segmenter(self.model, options)
        self.items = []
        for case in cases:
            if case.source is None or not Path(case.source).exists():
                raise LungctError(case.source, f"validation case '{case.name}': its original input is gone; validation "
                                               "runs the shipped inference on the original inputs")
            prepared = self.segmenter.prepare(self.segmenter.read(case.source))
            self.items.append((case.name, prepared, read_reference(case.reference)[0]))
        self.labels = {n: int(v) for n, v in meta["labels"].items() if int(v) != 0}

    def score(self) -> dict:
        """{case: {label name: Dice}} of this rank's validation cases."""
        self.model.network.eval()
        out = {}
        for name, prepared, reference in self.items:
            labels = self.segmenter.finish(prepared).labels.reshape(reference.shape)
            out[name] = {label: overlap(labels == v, reference == v)["dice"] for label, v in self.labels.items()}
        return out


def mean_dice(per_case: dict) -> tuple[float, dict]:
    """(mean over labels of the per-label mean over cases, {label: mean})."""
    labels = sorted({label for scores in per_case.values() for label in scores})
    per_label = {label: float(np.mean([scores[label] for scores in per_case.values()])) for label in labels}
    return float(np.mean(list(per_label.values()))), per_label


# ---------------------------------------------------------------------------------------------- loop


def train(recipe: dict, out_dir: Path, data: Path | None = None, images: Path | None = None,
          labels: Path | None = None, device: str = "auto", resume: Path | None = None, init: str | None = None,
          progress: bool = True, log=print) -> dict:
    """Train as the recipe says; returns the best validation metrics. Writes best.pt, last.pt, log.csv, plots."""
    from tqdm import tqdm


    out_dir, seed, dim = Path(out_dir), int(recipe["seed"]), int(recipe["dim"])
    seed_everything(seed)
    dev = pick_device(device)
    dist = Distributed(dev)
    name = recipe["network"]["name"]
    if DIMS.get(name) != dim:
        raise LungctError(recipe.get("source"), f"network '{name}' is not a {dim}D network")
    train_cases, val_cases, chain = training_data(recipe, data, images, labels, progress and dist.main)
    sampler_data = make_sampler(recipe, train_cases, seed + dist.rank, chain)
    network_args = {"in_channels": 1, "out_channels": len(recipe["labels"]), **(recipe["network"]["args"] or {})}
    network = build_network(name, **network_args).to(dev)
    meta = model_meta(recipe, network_args, chain)
    optimizer = make_optimizer(recipe, network)
    epochs = int(recipe["epochs"])
    scheduler = make_scheduler(recipe, optimizer, epochs)
    state = {"epoch": -1, "best": -1.0, "best_epoch": -1, "stale": 0, "history": []}
    if resume:
        payload = read_checkpoint(Path(resume) / "last.pt" if Path(resume).is_dir() else resume)
        network.load_state_dict(payload["state_dict"])
        optimizer.load_state_dict(payload["extra"]["optimizer"])
        scheduler.load_state_dict(payload["extra"]["scheduler"])
        state = payload["extra"]["state"]
        _set_rng_states(payload["extra"].get("rng"))
        log(f"resuming after epoch {state['epoch'] + 1} (best validation Dice {state['best']:.4f})")
    elif init:
        initialise_from(network, meta, init, log)
    validation = Validation(val_cases[dist.rank::dist.world], network, meta, dev,
                            aerated=recipe["data"]["reference_convention"] == "aerated")
    model = dist.wrap(network, dev)
    use_amp = dev.type == "cuda" and recipe["amp"]
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)) \
        if use_amp else contextlib.nullcontext
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported()) if use_amp else None
    patience = int(recipe["early_stopping"]["patience"])
    budget_s = 60.0 * float(recipe["time_budget_min"]) if recipe["time_budget_min"] else None
    batch_size = int(recipe["batch_size"])
    summary = {"recipe": recipe, "cases": len(train_cases), "validation_cases": [c.name for c in val_cases], "seed": seed,
               "init": str(init) if init else None}
    if dist.main:
        make_folder(out_dir)
        write_text(out_dir / "recipe.json", json.dumps(recipe, indent=1, default=str))
        weighted = sum(c.name in (recipe["data"].get("case_weights") or {}) for c in train_cases)
        log(f"{name}: {parameter_count(network) / 1e6:.2f} M parameters, {len(train_cases)} training and "
            f"{len(val_cases)} validation cases" + (f" ({weighted} weighted)" if weighted else "")
            + f", {len(sampler_data)} samples per epoch, device {dev}")

    for epoch in range(state["epoch"] + 1, epochs):
        started = time.perf_counter()
        sampler_data.reshuffle(epoch)
        sampler = (torch.utils.data.distributed.DistributedSampler(sampler_data, dist.world, dist.rank, shuffle=False)
                   if dist.world > 1 else None)
        loader = torch.utils.data.DataLoader(sampler_data, batch_size=batch_size, sampler=sampler, shuffle=False,
                                             num_workers=int(recipe["loader_workers"]),
                                             drop_last=len(sampler_data) > batch_size)
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

        per_case = dist.gather(validation.score())
        dice_mean, dice = mean_dice(per_case)
        lr = optimizer.param_groups[0]["lr"]
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(dice_mean)
        else:
            scheduler.step()
        improved = dice_mean > state["best"]
        if improved:
            state.update(best=dice_mean, best_epoch=epoch, stale=0, best_dice=dice, best_cases=per_case)
        else:
            state["stale"] += 1
        state["epoch"] = epoch
        row = {"epoch": epoch + 1, "loss": round(mean_loss, 5), "val_mean_dice": round(dice_mean, 5),
               **{f"dice_{n}": round(v, 5) for n, v in dice.items()}, "lr": lr,
               "seconds": round(time.perf_counter() - started, 2)}
        state["history"].append(row)
        if dist.main:
            metrics = {"best_epoch": state["best_epoch"] + 1, "val_mean_dice": round(state["best"], 5),
                       "val_dice": state["best_dice"], "val_cases": state["best_cases"]}
            record = {**meta, "training": {**summary, "epochs": epoch + 1}, "metrics": metrics}
            if improved:
                save_checkpoint(out_dir / "best.pt", network, record)
            save_checkpoint(out_dir / "last.pt", network, record,
                            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": state,
                             "rng": _rng_states()})
            write_log(out_dir, state["history"])
            log(f"epoch {epoch + 1}: loss {mean_loss:.4f}, validation Dice {dice_mean:.4f} "
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


def _rng_states() -> dict:
    """The random number generators' states, so a resumed run draws what an uninterrupted one would."""
    _, keys, position, has_gauss, gauss = np.random.get_state()
    return {"python": repr(random.getstate()), "numpy": [keys.tolist(), int(position), int(has_gauss), float(gauss)],
            "torch": torch.get_rng_state().tolist()}


def _set_rng_states(states: dict | None) -> None:
    import ast

    if not states:
        return
    random.setstate(ast.literal_eval(states["python"]))
    keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(torch.tensor(states["torch"], dtype=torch.uint8))
