"""Training/evaluation reports: JSON summary, confusion matrix as CSV and PNG, loss curves; figures written atomically."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np


def write_confusion_csv(cm: np.ndarray, names: Sequence[str], path: Path) -> Path:
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["reference \\ predicted", *names])
        for n, row in zip(names, cm):
            w.writerow([n, *[int(v) for v in row]])
    return Path(path)


def write_confusion_png(cm: np.ndarray, names: Sequence[str], path: Path, title: str = "") -> Path:
    """Row-normalised colours with the counts written in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(names)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    if title:
        ax.set_title(title, fontsize=10)
    for i in range(k):
        for j in range(k):
            if cm[i, j]:
                ax.text(j, i, str(int(cm[i, j])), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.tight_layout()
    return save_png(fig, path, dpi=110)

def save_png(fig, path: str | Path, *, dpi: int = 100, **savefig_kw: Any) -> Path:
    """Write a matplotlib figure as PNG through a temporary file renamed when complete, and close it."""
    import matplotlib.pyplot as plt

    from hsikit.io.atomic import atomic_outputs

    path = Path(path)
    try:
        # the caller decided whether ``path`` may be replaced; inside an output group it is renamed with the rest
        with atomic_outputs([path], overwrite=True) as temps:
            fig.savefig(temps[path], format="png", dpi=dpi, **savefig_kw)
    finally:
        plt.close(fig)
    return path


def write_loss_curve_png(curve: Sequence[float], history: Sequence[dict[str, float]], path: Path, title: str,
                    val_key: str = "val_loss", val_label: str = "validation loss") -> Path:
    """Per-step training loss and per-epoch validation curve as PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    if curve:
        ax.plot(np.arange(1, len(curve) + 1), curve, lw=0.7, alpha=0.6, label="training loss (per step)")
    steps = [h["step"] for h in history]
    if history and any(np.isfinite(h.get("train_loss", np.nan)) for h in history):
        ax.plot(steps, [h["train_loss"] for h in history], "o-", ms=3, label="training loss (epoch mean)")
    if history and any(np.isfinite(h.get(val_key, np.nan)) for h in history):
        ax2 = ax.twinx() if val_key not in ("val_loss",) else ax
        ax2.plot(steps, [h.get(val_key, np.nan) for h in history], "s-", ms=3, color="C3", label=val_label)
        if ax2 is not ax:
            ax2.set_ylabel(val_label)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    if curve and min(curve) > 0:
        ax.set_yscale("log")  # the first steps' loss is orders of magnitude above the rest
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    return save_png(fig, path)


def write_json(data: dict[str, Any], path: Path) -> Path:
    Path(path).write_text(json.dumps(data, indent=2, default=_default) + "\n")
    return Path(path)


def _default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return o.name
    return str(o)
