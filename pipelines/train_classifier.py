"""Train a pixel classifier on a labelled scene: stratified split, early stopping, report, checkpoint."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hsikit.errors import InputError, OptionError
from hsikit.io.scene import Scene


@dataclass
class TrainResult:
    checkpoint: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    report_dir: Path | None = None
    seconds: float = 0.0


def train_classifier(
    scene: str | Path | Scene,
    labels: Any,
    *,
    out: str | Path,
    model: str = "spectral-cnn",
    model_config: dict[str, Any] | None = None,
    chain: dict[str, Any] | None = None,
    attribute: str | None = None,
    allow_resample: bool = False,
    train: float | None = None,
    val: float | None = None,
    split: np.ndarray | str | Path | None = None,
    disjoint: bool = False,
    epochs: int | None = None,
    iterations: int | None = None,
    patience: int | None = None,
    select_best: bool | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    device: str = "auto",
    precision: str = "32-true",
    tile: int = 64,
    resume: bool = False,
    overwrite: bool = False,
    report_dir: str | Path | None = None,
    progress: bool = True,
    command: str | None = None,
    devices: int = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
) -> TrainResult:
    """Train classifier ``model`` (any registered classification architecture) on ``scene`` with ``labels``.

    Each architecture trains with its paper's recipe (:mod:`hsikit.training.recipes`: optimiser, schedule,
    sampling, default split and preprocessing); arguments given here override it. Pixels of each class are split
    into ``train``/``val`` (counts >= 1 or fractions < 1) and the rest for testing, or by a ``split`` array or
    raster file (1 train, 2 val, 3 test). Label and split rasters must lie on the scene grid unless
    ``allow_resample`` (nearest neighbour, with a warning; see :func:`hsikit.io.labels.read_labels`).
    ``disjoint`` drops validation/test pixels whose neighbourhood (the model's receptive field, e.g. a patch)
    overlaps a training pixel's, so no test patch shares pixels with a training patch.
    ``select_best`` keeps the weights of the best validation epoch (default: per recipe; the FreeNet and
    MorpMamba papers report the last iteration).
    Bands go through the recipe's preprocessing chain fitted on the scene and stored in the checkpoint. Neural
    models train with Lightning (``precision``, ``resume`` from ``<report>/checkpoints/last.ckpt``); "svm" and
    "random-forest" with scikit-learn. The report folder (default ``<out stem>_report``) gets report.json,
    metrics.csv and the test confusion matrix as CSV and PNG.

    ``devices`` processes (CPU) or GPUs per node on ``num_nodes`` nodes train neural models with distributed data
    parallel (``strategy`` "auto"/"ddp"; see :func:`hsikit.training.module.make_trainer`); every rank runs this
    function, only the global rank 0 checks and writes the outputs (the others return a result without metrics).
    """
    import torch

    from hsikit.checkpoint import CheckpointMeta, save_checkpoint
    from hsikit.engine.torch_predict import resolve_device
    from hsikit.io.atomic import check_output
    from hsikit.io.labels import LabelMap, read_labels
    from hsikit.io.legend import default_colors
    from hsikit.io.open import open_scene
    from hsikit.metrics import confusion_matrix, scores
    from hsikit.models.registry import get_entry, make_config
    from hsikit.preprocess.chain import Chain
    from hsikit.report import write_confusion_csv, write_confusion_png, write_json
    from hsikit.sampling import split_from_raster, stratified_split
    from hsikit.training.module import is_global_zero
    from hsikit.training.recipes import recipe_for

    t_start = time.perf_counter()
    out = Path(out)
    rdir = Path(report_dir) if report_dir else out.with_name(out.stem + "_report")
    lead = is_global_zero()  # DDP re-runs this function on every rank: the other ranks neither check nor write
    if lead:
        check_output(out, overwrite or resume)  # a resumed run replaces its own earlier checkpoint
        if rdir.exists() and not overwrite and not resume and any(rdir.iterdir()):
            raise InputError(f"report folder exists and is not empty: {rdir} (use --overwrite, or --resume)")
    entry = get_entry(model)
    if entry.task != "classification":
        raise OptionError(f"{model} is a {entry.task} model, not a classifier")
    recipe = recipe_for(model).replace(epochs=epochs, iterations=iterations, patience=patience, lr=lr,
                                       select_best=select_best,
                                       batch_size=batch_size, train=train, val=val, seed=seed)
    if iterations is None and epochs is not None:
        recipe.iterations = -1  # an explicit epoch count wins over the recipe's iteration budget
    seed = recipe.seed

    own = not isinstance(scene, Scene)
    sc = open_scene(scene) if own else scene
    try:
        lm = (labels if isinstance(labels, LabelMap)
              else read_labels(labels, sc, attribute=attribute, allow_resample=allow_resample))
        lab = lm.values
        k = int(lab.max())
        if k < 2:
            raise InputError("training needs labels of at least two classes")
        names = list(lm.class_names or [])[:k] + [f"class_{i}" for i in range(len(lm.class_names or []) + 1, k + 1)]
        colors = list(lm.class_colors) if lm.class_colors and len(lm.class_colors) >= k else default_colors(k)
        if isinstance(split, (str, Path)):
            split = read_labels(split, sc, allow_resample=allow_resample).values
        sp = (split_from_raster(split, lab) if split is not None
              else stratified_split(lab, train=recipe.train, val=recipe.val, seed=seed,
                                    max_train_fraction=recipe.max_train_fraction))
        if not sp.train.any():
            raise InputError("the split left no training pixel")
        opts = dict(recipe.chain)
        opts.update({kk: v for kk, v in (chain or {}).items() if v is not None})
        ch = Chain.from_options(**opts).fit(sc)
        n_feat = ch.output_bands(sc.bands).count
        cfg = {"in_bands": n_feat, "num_classes": k, **(model_config or {})}
        full_cfg = make_config(model, **cfg)
        context = int(entry.receptive_field(full_cfg))
        cfg = dataclasses.asdict(full_cfg)  # every option stored: later default changes cannot alter the model
        if disjoint:
            sp = _disjoint(sp, context)

        torch.manual_seed(seed)
        np.random.seed(seed)
        dev = resolve_device(device)
        rdir.mkdir(parents=True, exist_ok=True)
        x = _preprocessed(sc, ch)
        data = _data_for(entry, x, lab, sp, recipe, tile=tile, context=context, model_config=cfg)
        from hsikit.training.module import resume_step

        resumed_from = resume_step(rdir) if resume and model not in _CLASSICAL else None
        if model in _CLASSICAL:
            net, history = _fit_classical(model, data, sp, k, seed, model_config or {})
            curve: list[float] = []
            cfg = dataclasses.asdict(net.cfg)
        else:
            net, history, curve = _fit_neural(model, cfg, data, sp, recipe, dev, rdir, progress=progress,
                                              precision=precision, resume=resume, devices=devices,
                                              strategy=strategy, num_nodes=num_nodes)
            if not is_global_zero():
                return TrainResult(out, {}, history, rdir, time.perf_counter() - t_start)
        pred_test = _predict(net, data, sp.test, dev)
        ref_test = lab[sp.test] - 1
        cm = confusion_matrix(ref_test, pred_test, k) if ref_test.size else np.zeros((k, k), int)
        metrics = scores(cm)
        seconds = time.perf_counter() - t_start
        meta = CheckpointMeta(
            arch=model, config=_jsonable_cfg(cfg), task="classification", bands=sc.bands.to_dict(),
            preprocessing=ch.to_dict(), class_names=names, class_colors=colors,
            provenance={"command": command, "scene": sc.name, "labels": getattr(labels, "name", None) or Path(str(labels)).name,
                        "created": _created(), "seed": seed,
                        "test_oa": metrics["oa"], "test_kappa": metrics["kappa"], "epochs_run": len(history)},
        )
        save_checkpoint(out, net, meta, overwrite=True if resume else overwrite)
        write_confusion_csv(cm, names, rdir / "confusion_matrix.csv")
        write_confusion_png(cm, names, rdir / "confusion_matrix.png",
                            title=f"{model} on {sc.name}: OA {metrics['oa']:.3f}, kappa {metrics['kappa']:.3f}")
        from hsikit._version import __version__

        write_json({"model": model, "config": _jsonable_cfg(cfg), "scene": sc.name, "seed": seed,
                    "hsikit_version": __version__, "recipe": dataclasses.asdict(recipe),
                    "distributed": {"processes": data.world, "strategy": strategy if data.world > 1 else None,
                                    "steps_per_epoch": data.steps_per_epoch() if model not in _CLASSICAL else None},
                    "resumed_from_step": resumed_from,
                    "split": {"train": recipe.train, "val": recipe.val, "disjoint": disjoint, "counts": sp.counts(lab)},
                    "preprocessing": [s.op for s in ch.steps], "device": str(dev), "precision": precision,
                    "history": history, "loss_curve": [round(v, 6) for v in curve], "metrics": metrics, "class_names": names, "seconds": seconds,
                    "checkpoint": out.name, "command": command},
                   rdir / "report.json")
    finally:
        if own:
            sc.close()
    return TrainResult(out, metrics, history, rdir, seconds)


_CLASSICAL = ("svm", "random-forest")


def _preprocessed(sc: Scene, ch) -> np.ndarray:
    """The whole training scene through the chain, window by window (float32, invalid pixels 0)."""
    from hsikit.windows import iter_windows

    x = np.zeros((ch.output_bands(sc.bands).count, sc.height, sc.width), dtype=np.float32)
    for w in iter_windows(sc.width, sc.height, 512):
        r0, c0, h, wd = int(w.row_off), int(w.col_off), int(w.height), int(w.width)
        raw = sc.read(w)
        x[:, r0 : r0 + h, c0 : c0 + wd] = ch.apply(raw, sc.read_valid(w, raw))
    return x


def _disjoint(sp, radius: int):
    """Drop validation/test pixels within ``2 * radius`` (Chebyshev) of a training pixel: their windows of
    half-size ``radius`` would share pixels with a training window."""
    from scipy.ndimage import binary_dilation

    from hsikit.sampling import Split

    if radius <= 0:
        return sp
    near = binary_dilation(sp.train, structure=np.ones((4 * radius + 1, 4 * radius + 1), bool))
    return Split(sp.train, sp.val & ~near, sp.test & ~near)


def _data_for(entry, x, lab, sp, recipe, *, tile: int, context: int, model_config: dict[str, Any]):
    from hsikit.training.data import DATA_KINDS

    cls = DATA_KINDS.get(entry.inputs)
    if cls is None:
        raise OptionError(f"no training data pipeline for models taking {entry.inputs!r}")
    return cls(x, lab, sp.train, batch_size=recipe.batch_size, seed=recipe.seed, crop=tile,
               size_multiple=entry.size_multiple, context=context, sub_minibatch=recipe.sub_minibatch,
               patch=model_config.get("patch", 4))


def _fit_neural(model, cfg, data, sp, recipe, dev, rdir, *, progress, precision, resume, devices=1,
                strategy="auto", num_nodes=1):
    from hsikit.models.registry import create_model
    from hsikit.training.module import fit

    net = create_model(model, **cfg).to(dev)
    return fit(net, data, recipe, sp.val, device=dev, run_dir=rdir, progress=progress, precision=precision,
               resume=resume, devices=devices, strategy=strategy, num_nodes=num_nodes)


def _fit_classical(model, data, sp, k, seed, model_config):
    feats = np.ascontiguousarray(data.x[:, sp.train].T)
    y = data.labels[sp.train].astype(np.int64) - 1
    t0 = time.perf_counter()
    if model == "svm":
        from hsikit.models.svm import fit_svm

        net = fit_svm(feats, y, num_classes=k, seed=seed, **model_config)
    else:
        from hsikit.models.random_forest import fit_random_forest

        net = fit_random_forest(feats, y, num_classes=k, seed=seed, **model_config)
    history = [{"epoch": 1, "fit_seconds": time.perf_counter() - t0}]
    if sp.val.any():
        import torch

        pv = data.predict(net.eval(), sp.val, torch.device("cpu"))
        history[0]["val_oa"] = float((pv == data.labels[sp.val] - 1).mean())
    return net.eval(), history


def _predict(net, data, mask, dev):
    """0-based predicted classes of the pixels of ``mask``."""
    net = net.to(dev).eval()
    out = data.predict(net, mask, dev)
    net.cpu()
    return out


def _jsonable_cfg(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


def _created() -> str:
    """Creation time in ISO 8601 UTC; ``SOURCE_DATE_EPOCH`` fixes it for reproducible builds."""
    import os

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    t = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    return t.replace(microsecond=0).isoformat()
