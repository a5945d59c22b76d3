"""A training run's record: the epoch log as CSV, its plots, and where runs go by default."""
from __future__ import annotations

import csv
import datetime as _dt
from pathlib import Path

from lungct.io.atomic import atomic_path, open_text
from lungct.workspace import runs_dir


def write_log(out_dir: Path, history: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in history for k in row))
    with atomic_path(out_dir / "log.csv") as temporary, open_text(temporary) as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(history)


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
        with atomic_path(out_dir / filename) as temporary:
            figure.savefig(temporary, dpi=90, format="png")
        plt.close(figure)


def default_run_dir(recipe: dict) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return runs_dir() / f"{recipe.get('name', 'train')}-{stamp}"
