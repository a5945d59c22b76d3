"""Training the lesion decision: a 3D U-Net on whole-chest patches at 3 mm, on host volumes with lesions
painted by family (lungct.ct.decision.sampling), three classes (outside, lung, lesion), DiceCE with the
lesion weighted, Adam with cosine decay over a fixed number of steps. The last weights are the model (no
selection on the held-out volumes or families the benchmark reports on).

    train_decision(recipe, hosts, out_dir)   # hosts: [(name, scan, labels, sides or None)]
"""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import torch
import yaml

from lungct.checkpoint import read_checkpoint, save_checkpoint
from lungct.ct.decision.hosts import decision_chain, load_host
from lungct.ct.decision.sampling import DecisionSampler, SampleSettings
from lungct.errors import LungctError
from lungct.networks import build_network, parameter_count
from lungct.recipes import recipe_path, resolved_step

STAGE = "lesion-decision"


def decision_recipe_path(name_or_path: str | Path) -> Path | None:
    """The YAML file a recipe name or path means when it is a lesion-decision recipe, else None."""
    try:
        path = recipe_path(name_or_path)
    except LungctError:
        return None
    return path if (yaml.safe_load(path.read_text()) or {}).get("stage") == STAGE else None


def read_hosts(csv_path: Path) -> list[tuple]:
    """[(name, scan, labels, sides or None)] from a CSV with those columns; paths relative to the CSV."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise LungctError(csv_path, "no such hosts file")
    base = csv_path.parent
    rows = list(csv.DictReader(csv_path.open()))
    missing = {"name", "scan", "labels"} - set(rows[0] if rows else {})
    if missing:
        raise LungctError(csv_path, f"lacks the column(s) {', '.join(sorted(missing))} (name,scan,labels,sides)")
    return [(row["name"], base / row["scan"], base / row["labels"], base / row["sides"] if row.get("sides") else None)
            for row in rows]


def load_decision_recipe(name_or_path: str | Path) -> dict:
    """A lesion-decision recipe: a YAML file, or the name of one in pipelines/."""
    path = decision_recipe_path(name_or_path)
    if path is None:
        raise LungctError(name_or_path, "is not a lesion-decision recipe (a YAML file or a name in pipelines/ "
                                        f"with 'stage: {STAGE}')")
    recipe = yaml.safe_load(path.read_text())
    recipe["source"] = str(path)
    return recipe


def decision_meta(recipe: dict, hosts: list, steps_done: int, seconds: float) -> dict:
    """The checkpoint's meta: what the network is, the grid and windows it reads, its classes, how it was
    trained (hosts, families, steps)."""
    spacing = float(recipe["spacing_mm"])
    return {"stage": STAGE, "network": recipe["network"], "dim": 3, "modality": "ct",
            "labels": {str(k): int(v) for k, v in recipe["classes"].items()},
            "input": {"chain": [resolved_step(s) for s in decision_chain(spacing).specs],
                      "windows": [list(map(float, w)) for w in recipe["windows"]],
                      "patch_size": list(recipe["sampling"]["patch"]), "pad_value": 0.0},
            "format_version": 2,
            "training": {"recipe": {k: v for k, v in recipe.items() if k != "source"}, "hosts": [h.name for h in hosts],
                         "steps": steps_done, "minutes": round(seconds / 60, 1)}}


def initial_weights(checkpoint: Path) -> dict:
    """The decision network's weights from a decision checkpoint or from a cascade that holds one (to
    fine-tune the shipped model's decision: `--init ct-lungs`)."""
    saved = read_checkpoint(checkpoint)
    if saved["meta"].get("stage") == STAGE:
        return saved["state_dict"]
    stage = (saved.get("stages") or {}).get("lesion_decision")
    if stage is None:
        raise LungctError(checkpoint, "holds no lesion-decision network to start from")
    return stage["state_dict"]


def train_decision(recipe: dict, hosts: list[tuple], out_dir: Path, device: str = "cpu", log=print,
                   init: Path | None = None) -> Path:
    """Train the lesion-decision network (from `init`'s weights when given); write out_dir/decision.pt
    (the last weights) and log.csv."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = int(recipe.get("seed", 0))
    torch.manual_seed(seed)
    spacing = float(recipe["spacing_mm"])
    loaded = [load_host(name, scan, labels, spacing, sides) for name, scan, labels, sides in hosts]
    settings = SampleSettings(**{**recipe["sampling"], "families": dict(recipe["families"])})
    settings.patch = tuple(settings.patch)
    sampler = DecisionSampler(loaded, settings, seed, [tuple(w) for w in recipe["windows"]])
    network = build_network(recipe["network"]["name"], **recipe["network"]["args"])
    if init is not None:
        network.load_state_dict(initial_weights(init))
        recipe = {**recipe, "init": str(init)}
    network = network.to(device)
    log(f"lesion decision: {parameter_count(network):,} parameters, hosts {[h.name for h in loaded]}")
    steps, batch = int(recipe["steps"]), int(recipe["batch_size"])
    optimizer = torch.optim.Adam(network.parameters(), lr=float(recipe["optimizer"]["lr"]),
                                 weight_decay=float(recipe["optimizer"]["weight_decay"]))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps, eta_min=float(recipe["optimizer"]["min_lr"]))
    loss_of = make_loss(recipe)
    loader = torch.utils.data.DataLoader(_Samples(sampler, steps * batch), batch_size=batch,
                                         num_workers=int(recipe.get("loader_workers", 1)), persistent_workers=False)
    started, rows = time.time(), []
    network.train()
    for step, (image, classes) in enumerate(loader):
        optimizer.zero_grad()
        logits = network(image.to(device))
        loss = loss_of(logits, classes[:, None].long().to(device))
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 25 == 0 or step == steps - 1:
            rows.append(_progress(step, loss, logits, classes, started))
            log(" ".join(f"{k} {v}" for k, v in rows[-1].items()))
            _write_log(out_dir / "log.csv", rows)
        if (step + 1) % 500 == 0 or step == steps - 1:
            meta = decision_meta(recipe, loaded, step + 1, time.time() - started)
            save_checkpoint(out_dir / "decision.pt", network.eval(), meta)
            network.train()
    (out_dir / "recipe.json").write_text(json.dumps(recipe, indent=1, default=str))
    return out_dir / "decision.pt"


def make_loss(recipe: dict):
    """DiceCE over the three classes, cross-entropy weighted towards lesions (a few % of the voxels)."""
    from monai.losses import DiceCELoss

    weights = torch.tensor([float(w) for w in recipe["loss"]["ce_weights"]])
    return DiceCELoss(to_onehot_y=True, softmax=True, weight=weights, lambda_dice=float(recipe["loss"]["dice_weight"]),
                      lambda_ce=1.0)


class _Samples(torch.utils.data.Dataset):
    """Sample i of the run is the sampler's step i: loader workers draw them ahead of the network."""

    def __init__(self, sampler: DecisionSampler, count: int):
        self.sampler, self.count = sampler, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int):
        image, classes = self.sampler.sample(index)
        return torch.from_numpy(image), torch.from_numpy(classes)


def _progress(step: int, loss, logits, classes, started: float) -> dict:
    predicted = logits.argmax(1).cpu()
    lesion, truth = predicted == 2, classes == 2
    both = int((lesion & truth).sum())
    dice = 2 * both / max(1, int(lesion.sum() + truth.sum())) if truth.any() or lesion.any() else float("nan")
    return {"step": step, "loss": round(float(loss.detach()), 4), "lesion_dice": round(dice, 3),
            "minutes": round((time.time() - started) / 60, 1)}


def _write_log(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
