"""Evaluate a classifier checkpoint on a labelled scene: class map + accuracy report in one run folder."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hsikit.errors import InputError


@dataclass
class EvaluateResult:
    run_dir: Path
    class_map: Path
    metrics: dict[str, Any]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


def _scored_pixels(sc, labels: str | Path, split: str | Path | None, attribute: str | None, allow_resample: bool,
                   classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(label values, scored mask) on the grid of ``sc``: labelled pixels, only the test ones (3) with ``split``."""
    from hsikit.io.labels import read_labels

    lab = read_labels(labels, sc, attribute=attribute, allow_resample=allow_resample).values
    mask = lab > 0
    if split is not None:
        sp = read_labels(split, sc, allow_resample=allow_resample).values
        mask &= sp == 3
    if not mask.any():
        raise InputError("no labelled pixel to score (check the labels and the split raster)")
    if int(lab[mask].max()) > classes:
        raise InputError(f"labels hold class {int(lab[mask].max())}, the model knows {classes} classes")
    return lab, mask


def _score_class_map(class_map: Path, lab: np.ndarray, mask: np.ndarray, classes: int) -> tuple[np.ndarray, dict]:
    """(confusion matrix, scores) of the written class map against the labels under ``mask``."""
    import rasterio

    from hsikit.metrics import confusion_matrix, scores

    with rasterio.open(class_map) as src:
        pred = src.read(1)
    # unclassified (nodata) pixels under a label count as errors: they are predicted as "no class"
    p = pred[mask].astype(np.int64) - 1
    r = lab[mask].astype(np.int64) - 1
    missing = int((p < 0).sum())
    p[p < 0] = (r[p < 0] + 1) % classes  # any wrong class
    cm = confusion_matrix(r, p, classes)
    metrics = scores(cm)
    metrics["unclassified_labelled_pixels"] = missing
    return cm, metrics


def _record_scores(model: str | Path, scene: str | Path, labels: str | Path, split: str | Path | None,
                   pixels: int, metrics: dict[str, Any]) -> None:
    """Store OA, AA and kappa in the model file."""
    from hsikit.pipelines.common import store_scores

    scored = f"test pixels of {Path(split).name}" if split else "every labelled pixel"
    store_scores(model, {
        "key": f"classification|{Path(str(scene)).name}|{Path(str(labels)).name}|{Path(split).name if split else ''}",
        "scene": Path(str(scene)).name, "labels": Path(str(labels)).name, "scored": scored,
        "pixels": pixels, "oa": round(metrics["oa"], 4), "aa": round(metrics["aa"], 4),
        "kappa": round(metrics["kappa"], 4)})


def evaluate(
    model: str | Path,
    scene: str | Path,
    labels: str | Path,
    *,
    out: str | Path,
    split: str | Path | None = None,
    attribute: str | None = None,
    allow_resample: bool = False,
    tile: int = 512,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
    record: bool = True,
) -> EvaluateResult:
    """Classify ``scene`` with ``model`` into the run folder ``out`` and score it against ``labels``.

    Scored pixels: every labelled pixel, or with ``split`` (a raster on the scene grid: 3 = test) only the
    test pixels. The folder gets ``class_map.tif`` (+ .qml, PNG quicklook), ``report.json`` (OA, AA, kappa,
    per-class accuracy/precision/F1, model config, seed, hsikit version, timings), ``confusion_matrix.csv/png``.
    Label values are matched to the model's classes by value (1..K). Label and split rasters must lie on the
    scene grid unless ``allow_resample`` (nearest neighbour, with a warning). ``record`` stores OA, AA and
    kappa in the model file (shown by ``hsikit info``).
    """
    from hsikit._version import __version__
    from hsikit.checkpoint import read_checkpoint_meta
    from hsikit.io.open import open_scene
    from hsikit.pipelines.classify import classify
    from hsikit.report import write_confusion_csv, write_confusion_png, write_json

    t0 = time.perf_counter()
    run = Path(out)
    if run.exists() and any(run.iterdir()) and not overwrite:
        raise InputError(f"run folder exists and is not empty: {run} (use --overwrite)")
    run.mkdir(parents=True, exist_ok=True)
    meta = read_checkpoint_meta(model)
    if meta.task != "classification":
        raise InputError(f"{Path(model).name} is a {meta.task} model, not a classifier")
    k = len(meta.class_names or [])
    with open_scene(scene) as sc:
        lab, mask = _scored_pixels(sc, labels, split, attribute, allow_resample, k)
        t1 = time.perf_counter()
        res = classify(sc, out=run / "class_map.tif", model=model, tile=tile, device=device, quicklook=True,
                       overwrite=overwrite, progress=progress, command=command)
    t2 = time.perf_counter()
    cm, metrics = _score_class_map(res.class_map, lab, mask, k)
    names = list(meta.class_names)
    write_confusion_csv(cm, names, run / "confusion_matrix.csv")
    write_confusion_png(cm, names, run / "confusion_matrix.png",
                        title=f"{meta.arch}: OA {metrics['oa']:.3f}, kappa {metrics['kappa']:.3f}")
    timings = {"read_labels": t1 - t0, "classify": t2 - t1, "total": time.perf_counter() - t0}
    write_json({"model": str(model), "arch": meta.arch, "config": meta.config, "scene": str(scene),
                "labels": str(labels), "split": str(split) if split else None,
                "seed": meta.provenance.get("seed"), "training": meta.provenance, "hsikit_version": __version__,
                "metrics": metrics, "class_names": names, "timings": timings, "command": command,
                "class_map": res.class_map.name},
               run / "report.json")
    if record:
        _record_scores(model, scene, labels, split, int(mask.sum()), metrics)
    return EvaluateResult(run, res.class_map, metrics, timings["total"], timings)
