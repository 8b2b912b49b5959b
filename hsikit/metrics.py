"""Classification accuracy as the remote-sensing literature reports it: OA, AA, kappa, per-class scores."""

from __future__ import annotations

from typing import Any

import numpy as np


def confusion_matrix(reference: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts, rows = reference class, columns = predicted class; inputs are 0-based class indices."""
    r = np.asarray(reference, dtype=np.int64).ravel()
    p = np.asarray(predicted, dtype=np.int64).ravel()
    if r.size and (r.min() < 0 or r.max() >= num_classes or p.min() < 0 or p.max() >= num_classes):
        raise ValueError("class index outside 0..num_classes-1")
    return np.bincount(r * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def scores(cm: np.ndarray) -> dict[str, Any]:
    """OA, AA (mean recall over classes present in the reference), Cohen's kappa, per-class recall/precision/F1."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    diag = np.diag(cm)
    ref = cm.sum(axis=1)
    pred = cm.sum(axis=0)
    present = ref > 0
    recall = np.divide(diag, ref, out=np.zeros_like(diag), where=ref > 0)
    precision = np.divide(diag, pred, out=np.zeros_like(diag), where=pred > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(diag), where=(precision + recall) > 0)
    oa = diag.sum() / total if total else 0.0
    pe = (ref * pred).sum() / total**2 if total else 0.0
    kappa = (oa - pe) / (1 - pe) if pe < 1 else 1.0
    return {
        "oa": float(oa),
        "aa": float(recall[present].mean()) if present.any() else 0.0,
        "kappa": float(kappa),
        "per_class_accuracy": recall.tolist(),
        "per_class_precision": precision.tolist(),
        "per_class_f1": f1.tolist(),
        "support": ref.astype(int).tolist(),
        "n": int(total),
    }
