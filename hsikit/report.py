"""Training/evaluation reports: JSON summary, confusion matrix as CSV and PNG."""

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
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


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
