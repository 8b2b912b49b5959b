"""Train a pixel classifier on a labelled scene: the user's or the paper's split, early stopping, report, checkpoint."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

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
    #: "test", "validation" (no test set) or None (neither): the pixels ``metrics`` were scored on
    scored_on: str | None = None
    #: the one line saying how many pixels per class went to training, validation and test ("" on DDP ranks > 0)
    split_summary: str = ""


PROTOCOLS = ("user", "paper")
#: the user protocol's validation share when none is given
DEFAULT_VAL = 0.1


def train_classifier(
    scene: str | Path | Scene,
    labels: Any,
    *,
    out: str | Path,
    model: str = "spectral-cnn",
    model_config: dict[str, Any] | None = None,
    recipe: str | None = None,
    chain: dict[str, Any] | None = None,
    attribute: str | None = None,
    allow_resample: bool = False,
    protocol: str = "user",
    train: float | str | None = None,
    train_pixels: int | None = None,
    val: float | str | None = None,
    val_pixels: int | None = None,
    split: np.ndarray | str | Path | None = None,
    test_labels: Any = None,
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
    echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train classifier ``model`` (any registered classification architecture) on ``scene`` with ``labels``.

    Each architecture trains with its default recipe, or the one named by ``recipe``
    (:mod:`hsikit.training.recipes`: optimiser, schedule, sampling, augmentation and preprocessing; MorpMamba
    also has "notebook", the official notebook's); arguments given here override it. Which labelled pixels train:

    * ``protocol="user"`` (default): every labelled pixel trains except a validation share of each class (``val``
      a fraction in [0, 1) or "10%", or ``val_pixels``; default 10 %, at least one pixel of a class with two or
      more); ``train``/``train_pixels`` take only part of each class (at most what validation leaves). No test
      set unless ``test_labels`` (labels on the scene grid, e.g. drawn apart from the training ones) or ``split``
      gives one; without one the metrics are the validation pixels'.
    * ``protocol="paper"``: the paper's sampling (FreeNet 200 px/class capped at half a class, MorpMamba 25 %
      train / 25 % validation, others 50 % / 20 %), ``train``/``val`` overriding it; the rest of ``labels`` (or
      ``test_labels``) is the test set. :func:`hsikit.benchmark_classify` uses it.

    Fractions lie in (0, 1] (1 = all), counts are separate arguments: ``train=1.0`` is every pixel,
    ``train_pixels=1`` one per class. A ``split`` array or raster file (1 train, 2 val, 3 test) replaces both.
    ``echo`` receives one line with the pixel counts per class of training, validation and test (also in
    report.json under "split"). Label, test-label and split rasters must lie on the scene grid unless
    ``allow_resample`` (nearest neighbour, with a warning; see :func:`hsikit.io.labels.read_labels`).
    ``disjoint`` drops validation/test pixels whose neighbourhood (the model's receptive field, e.g. a patch)
    overlaps a training pixel's, so no test patch shares pixels with a training patch.
    ``select_best`` keeps the weights of the best validation epoch (default: per recipe; the FreeNet and
    MorpMamba papers report the last iteration).
    Bands go through the recipe's preprocessing chain fitted on the scene and stored in the checkpoint. Neural
    models train with Lightning (``precision``, ``resume`` from ``<report>/checkpoints/last.ckpt``); "svm" and
    "random-forest" with scikit-learn. The report folder (default ``<out stem>_report``) gets report.json,
    metrics.csv and the confusion matrix of the scored pixels (test, else validation) as CSV and PNG.

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
    from hsikit.sampling import amount_option
    from hsikit.training.module import is_global_zero
    from hsikit.training.recipes import recipe_for, recipe_names

    t_start = time.perf_counter()
    out = Path(out)
    rdir = Path(report_dir) if report_dir else out.with_name(out.stem + "_report")
    lead = is_global_zero()  # DDP re-runs this function on every rank: the other ranks neither check nor write
    if lead:
        check_output(out, overwrite or resume)  # a resumed run replaces its own earlier checkpoint
        if rdir.exists() and not overwrite and not resume and any(rdir.iterdir()):
            raise InputError(f"report folder exists and is not empty: {rdir} (use --overwrite, or --resume)")
    entry = get_entry(model)
    model = entry.name  # a former name (registry alias) is recorded under the current one
    if entry.task != "classification":
        raise OptionError(f"{model} is a {entry.task} model, not a classifier")
    if protocol not in PROTOCOLS:
        raise OptionError(f"unknown protocol {protocol!r}: user (your labels train) or paper (the paper's split)")
    train_amt = amount_option(train, train_pixels, "--train")
    val_amt = amount_option(val, val_pixels, "--val", allow_zero=True)
    if split is not None and (train_amt or val_amt or test_labels is not None):
        raise OptionError("--split already says which pixels train, validate and test: drop --train/--val/"
                          "--test-labels")
    recipe_name = recipe or recipe_names(model)[0]
    recipe = recipe_for(model, recipe).replace(epochs=epochs, iterations=iterations, patience=patience, lr=lr,
                                       select_best=select_best, batch_size=batch_size, seed=seed)
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
        test_lm = None
        if test_labels is not None:
            test_lm = (test_labels if isinstance(test_labels, LabelMap)
                       else read_labels(test_labels, sc, attribute=attribute, allow_resample=allow_resample))
            lab = _with_test_labels(lab, lm, test_lm, k)
        sp, amounts = _split(lab, lm.values, test_lm, split, protocol, train_amt, val_amt, recipe, seed)
        if not sp.train.any():
            raise InputError("the split left no training pixel")
        opts = dict(recipe.chain)
        opts.update({kk: v for kk, v in (chain or {}).items() if v is not None})
        ch = Chain.from_options(**opts).fit(sc)
        n_feat = ch.output_bands(sc.bands).count
        cfg = {"in_bands": n_feat, "num_classes": k, **recipe.model, **(model_config or {})}
        full_cfg = make_config(model, **cfg)
        context = int(entry.receptive_field(full_cfg))
        cfg = dataclasses.asdict(full_cfg)  # every option stored: later default changes cannot alter the model
        if disjoint:
            sp = _disjoint(sp, context)
        test_from = ("--split" if split is not None else "--test-labels" if test_lm is not None
                     else "the rest of --labels" if protocol == "paper" else None)
        summary, split_info = _split_summary(sp, lab, lm.values, names, amounts, test_from, recipe,
                                             classical=model in _CLASSICAL)
        split_info.update(protocol=protocol, disjoint=disjoint)
        if echo is not None and lead:
            echo(summary)

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
        scored_on = "test" if sp.test.any() else "validation" if sp.val.any() else None
        mask = sp.test if scored_on == "test" else sp.val
        ref = lab[mask] - 1
        cm = confusion_matrix(ref, _predict(net, data, mask, dev), k) if ref.size else np.zeros((k, k), int)
        metrics = scores(cm) if scored_on else {}
        seconds = time.perf_counter() - t_start
        key = "test" if scored_on == "test" else "val"
        meta = CheckpointMeta(
            arch=model, config=_jsonable_cfg(cfg), task="classification", bands=sc.bands.to_dict(),
            preprocessing=ch.to_dict(), class_names=names, class_colors=colors,
            provenance={"command": command, "scene": sc.name, "labels": getattr(labels, "name", None) or Path(str(labels)).name,
                        "created": _created(), "seed": seed, "protocol": protocol, "recipe": recipe_name,
                        f"{key}_oa": metrics.get("oa"), f"{key}_kappa": metrics.get("kappa"),
                        "epochs_run": len(history)},
        )
        save_checkpoint(out, net, meta, overwrite=True if resume else overwrite)
        write_confusion_csv(cm, names, rdir / "confusion_matrix.csv")
        title = (f"{model} on {sc.name}: {scored_on} OA {metrics['oa']:.3f}, kappa {metrics['kappa']:.3f}"
                 if scored_on else f"{model} on {sc.name}: no test or validation pixels")
        write_confusion_png(cm, names, rdir / "confusion_matrix.png", title=title)
        from hsikit._version import __version__

        write_json({"model": model, "config": _jsonable_cfg(cfg), "scene": sc.name, "seed": seed,
                    "hsikit_version": __version__, "recipe_name": recipe_name,
                    "recipe": dataclasses.asdict(recipe),
                    "distributed": {"processes": data.world, "strategy": strategy if data.world > 1 else None,
                                    "steps_per_epoch": data.steps_per_epoch() if model not in _CLASSICAL else None},
                    "resumed_from_step": resumed_from,
                    "split": split_info, "scored_on": scored_on,
                    "preprocessing": [s.op for s in ch.steps], "device": str(dev), "precision": precision,
                    "history": history, "loss_curve": [round(v, 6) for v in curve], "metrics": metrics, "class_names": names, "seconds": seconds,
                    "checkpoint": out.name, "command": command},
                   rdir / "report.json")
    finally:
        if own:
            sc.close()
    return TrainResult(out, metrics, history, rdir, seconds, scored_on, summary)


_CLASSICAL = ("svm", "random-forest")


def _with_test_labels(lab: np.ndarray, lm, test_lm, k: int) -> np.ndarray:
    """The labels with the test labels written over them: their pixels only test, never train or validate.
    Vector test labels with class names are matched to the training classes by name."""
    import warnings

    tl = np.asarray(test_lm.values).astype(lab.dtype, copy=True)
    if lm.class_names and test_lm.class_names and list(test_lm.class_names) != list(lm.class_names):
        known = {n: i + 1 for i, n in enumerate(lm.class_names)}
        missing = sorted({n for n in test_lm.class_names if n not in known})
        if missing:
            raise InputError(f"--test-labels has classes the training labels lack: {', '.join(missing)}")
        codes = np.array([0] + [known[n] for n in test_lm.class_names], dtype=lab.dtype)
        tl = codes[np.clip(tl, 0, len(codes) - 1)]
    if not (tl > 0).any():
        raise InputError("--test-labels holds no labelled pixel on the scene")
    if int(tl.max()) > k:
        raise InputError(f"--test-labels has class {int(tl.max())}; the training labels go up to {k}")
    both = int(((tl > 0) & (lab > 0)).sum())
    if both:
        warnings.warn(f"{both} pixels labelled in both --labels and --test-labels only test", stacklevel=3)
    return np.where(tl > 0, tl, lab)


def _split(lab: np.ndarray, train_lab: np.ndarray, test_lm, split, protocol: str, train_amt, val_amt, recipe,
           seed: int):
    """The split and the amounts it drew (descriptions for the report). ``lab`` may hold test labels over
    ``train_lab``; only pixels outside the test labels train or validate."""
    from hsikit.sampling import Amount, Split, holdout_split, split_from_raster, stratified_split

    if split is not None:
        return split_from_raster(split, lab), ("from --split", "from --split")
    test = np.asarray(test_lm.values) > 0 if test_lm is not None else np.zeros(lab.shape, bool)
    pool = np.where(test, 0, train_lab)
    if not (pool > 0).any():
        raise InputError("no labelled pixel is left to train on outside --test-labels")
    if protocol == "paper":
        p_train, p_val = recipe.paper_split()
        tr, va = train_amt or p_train, val_amt or p_val
        sp = stratified_split(pool, train=tr, val=va, seed=seed, max_train_fraction=recipe.max_train_fraction)
        if test_lm is not None:
            sp = Split(sp.train, sp.val, test & (lab > 0))
        cap = f", at most {100 * recipe.max_train_fraction:g} % of a class" if recipe.max_train_fraction else ""
        return sp, (f"paper protocol: {tr} per class{cap}", f"paper protocol: {va} per class")
    va = val_amt or Amount(fraction=DEFAULT_VAL)
    sp = holdout_split(pool, val=va, train=train_amt, seed=seed)
    sp = Split(sp.train, sp.val, test & (lab > 0))
    return sp, (f"{train_amt} per class" if train_amt else "all but validation", f"{va} per class")


def _split_summary(sp, lab: np.ndarray, train_lab: np.ndarray, names: list[str], amounts: tuple[str, str],
                   test_from: str | None, recipe, *, classical: bool) -> tuple[str, dict[str, Any]]:
    """The line saying how many pixels per class train, validate and test, and the same for report.json."""
    counts = sp.counts(lab)
    counts["unused"] = {int(a): int(b) for a, b in
                        zip(*np.unique(train_lab[(train_lab > 0) & ~(sp.train | sp.val | sp.test)],
                                       return_counts=True))}

    def per_class(c: dict[int, int]) -> str:
        return ", ".join(f"{names[i - 1]} {n}" for i, n in sorted(c.items())) if c else "none"

    if classical:
        role = "scored only"
    elif recipe.early_stopping and recipe.select_best:
        role = "early stopping, best epoch kept"
    elif recipe.early_stopping:
        role = "early stopping"
    else:
        role = "best epoch kept" if recipe.select_best else "monitored only"
    n = {key: sum(c.values()) for key, c in counts.items()}
    parts = [f"training pixels per class: {per_class(counts['train'])} ({n['train']} in all; {amounts[0]})",
             f"validation: {per_class(counts['val'])} ({n['val']}; {amounts[1]}; {role})" if n["val"]
             else "validation: none"]
    if test_from:
        parts.append(f"test: {per_class(counts['test'])} ({n['test']}; from {test_from})")
    else:
        parts.append("test: none (give --test-labels or --split to score a test set; the scores are validation's)")
    if n["unused"]:
        parts.append(f"unused: {n['unused']}")
    line = "; ".join(parts)
    return line, {"train": amounts[0], "val": amounts[1], "test": test_from, "counts": counts, "summary": line}


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
               patch=model_config.get("patch", 4), augment=recipe.augment)


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
