"""Train a pixel classifier on a labelled scene: the user's or the paper's split, early stopping, report, checkpoint.

The steps: check the arguments (:class:`_Request`), read the labels and draw the split (:class:`_Labels`), fit the
preprocessing chain and configure the model (:class:`_Prepared`), train (:class:`_Fitted`), then score the test
(else validation) pixels and write the checkpoint and report."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from hsikit.errors import InputError, OptionError
from hsikit.io.scene import Scene
from hsikit.training.run import Run, RunOptions, RunResult, jsonable, prepare_run

if TYPE_CHECKING:
    from hsikit.io.labels import LabelMap
    from hsikit.models.registry import ModelEntry
    from hsikit.preprocess.chain import Chain
    from hsikit.sampling import Amount, Split
    from hsikit.training.recipes import Recipe


@dataclass
class TrainResult(RunResult):
    """A trained classifier (:class:`RunResult`), with what its metrics were scored on and the split line."""

    #: "test", "validation" (no test set) or None (neither): the pixels ``metrics`` were scored on
    scored_on: str | None = None
    #: the one line saying how many pixels per class went to training, validation and test ("" on DDP ranks > 0)
    split_summary: str = ""


PROTOCOLS = ("user", "paper")
#: the user protocol's validation share when none is given
DEFAULT_VAL = 0.1
#: the classifiers fitted with scikit-learn instead of Lightning
CLASSICAL = ("svm", "random-forest")


def train_classifier(
    scene: str | Path | Scene, labels: Any, *, out: str | Path, model: str = "spectral-cnn",
    model_config: dict[str, Any] | None = None, recipe: str | None = None, chain: dict[str, Any] | None = None,
    attribute: str | None = None, allow_resample: bool = False, protocol: str = "user",
    train: float | str | None = None, train_pixels: int | None = None, val: float | str | None = None,
    val_pixels: int | None = None, split: np.ndarray | str | Path | None = None, test_labels: Any = None,
    disjoint: bool = False, epochs: int | None = None, iterations: int | None = None, patience: int | None = None,
    select_best: bool | None = None, lr: float | None = None, batch_size: int | None = None, tile: int = 64,
    run: RunOptions | None = None, echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train classifier ``model`` (one of :func:`classifier_names`) on ``scene`` with ``labels``.

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
    overlaps a training pixel's. ``select_best`` keeps the weights of the best validation epoch (default: per
    recipe; the FreeNet and MorpMamba papers report the last iteration). Bands go through the recipe's
    preprocessing chain fitted on the scene and stored in the checkpoint. Neural models train with Lightning,
    "svm" and "random-forest" with scikit-learn. ``run`` (:class:`RunOptions`) holds the seed (None: the
    recipe's), device, precision, resume, distributed data parallel, report folder (default ``<out stem>_report``:
    report.json, metrics.csv, the confusion matrix of the scored pixels as CSV and PNG) and overwrite; every DDP
    rank runs this function, only the global rank 0 checks and writes the outputs (the others return a result
    without metrics).
    """
    from hsikit.io.open import open_scene
    from hsikit.training.distributed import is_global_zero

    job = prepare_run(out, run)
    req = _request(model, recipe, protocol, (train, train_pixels), (val, val_pixels), split=split,
                   test_labels=test_labels, seed=job.options.seed,
                   overrides={"epochs": epochs, "iterations": iterations, "patience": patience, "lr": lr,
                              "select_best": select_best, "batch_size": batch_size})
    own = not isinstance(scene, Scene)
    sc = open_scene(scene) if own else scene
    try:
        labs = _read_labels(sc, labels, test_labels, split, req, attribute=attribute, allow_resample=allow_resample)
        prep = _prepare(sc, labs, req, chain=chain, model_config=model_config, disjoint=disjoint)
        if echo is not None and job.lead:
            echo(prep.summary)
        job.start(req.recipe.seed)
        data = classifier_data(req.entry, prep.chain.apply_scene(sc), labs.values, labs.split.train, req.recipe,
                               tile=tile, context=prep.context, model_config=prep.config)
        fitted = _fit(req, labs, prep, data, job, model_config=model_config)
        if not req.classical and not is_global_zero():
            return TrainResult(job.out, {}, fitted.history, job.dir, job.seconds)
        return _score_and_write(sc, req, labs, prep, data, fitted, job)
    finally:
        if own:
            sc.close()


def classifier_names() -> list[str]:
    """The registered classification architectures :func:`train_classifier` can train, sorted: those configured
    with ``in_bands`` and ``num_classes`` whose inputs a training data pipeline provides (or fitted with
    scikit-learn)."""
    from hsikit.models.registry import list_models
    from hsikit.training.data import DATA_KINDS

    def trainable(entry: ModelEntry) -> bool:
        fields = {f.name for f in dataclasses.fields(entry.config_cls)}
        return {"in_bands", "num_classes"} <= fields and (entry.inputs in DATA_KINDS or entry.name in CLASSICAL)

    return sorted(e.name for e in list_models("classification") if trainable(e))


def labelled_scene(scene: str | Path | None, labels: str | Path | None, *, dataset: str | None = None,
                   data_dir: str | Path | None = None) -> tuple[str | Scene, str | LabelMap]:
    """What to train on: ``scene`` and ``labels`` (as path strings), or the benchmark ``dataset`` (loaded with
    :func:`hsikit.datasets.load` from ``data_dir``) as a scene and label map; one or the other."""
    if dataset:
        if scene or labels:
            raise OptionError("give either SCENE --labels L or --dataset, not both")
        from hsikit.datasets import load

        loaded = load(dataset, data_dir)
        return loaded.scene, loaded.label_map()
    if scene is None or labels is None:
        raise OptionError("give SCENE and --labels, or --dataset")
    return str(scene), str(labels)


def classifier_data(entry: ModelEntry, x: np.ndarray, labels: np.ndarray, train: np.ndarray, recipe: Recipe, *,
                    tile: int, context: int, model_config: dict[str, Any]) -> Any:
    """The training data of architecture ``entry`` (:data:`hsikit.training.data.DATA_KINDS`, by its inputs): the
    preprocessed cube ``x``, the labels and the mask of the ``train`` pixels, batched as ``recipe`` says."""
    from hsikit.training.data import DATA_KINDS

    cls = DATA_KINDS.get(entry.inputs)
    if cls is None:
        raise OptionError(f"no training data pipeline for models taking {entry.inputs!r}")
    return cls(x, labels, train, batch_size=recipe.batch_size, seed=recipe.seed, crop=tile,
               size_multiple=entry.size_multiple, context=context, sub_minibatch=recipe.sub_minibatch,
               patch=model_config.get("patch", 4), augment=recipe.augment)


def disjoint_split(sp: Split, radius: int) -> Split:
    """Drop validation/test pixels within ``2 * radius`` (Chebyshev) of a training pixel: their windows of
    half-size ``radius`` would share pixels with a training window."""
    from scipy.ndimage import binary_dilation

    from hsikit.sampling import Split

    if radius <= 0:
        return sp
    near = binary_dilation(sp.train, structure=np.ones((4 * radius + 1, 4 * radius + 1), bool))
    return Split(sp.train, sp.val & ~near, sp.test & ~near)


# -- the steps of train_classifier -----------------------------------------------------------------------------------
@dataclass
class _Request:
    """The arguments checked: the architecture, its recipe with the overrides, the protocol and the amounts."""

    entry: ModelEntry
    recipe: Recipe
    recipe_name: str
    protocol: str
    train: Amount | None
    val: Amount | None

    @property
    def model(self) -> str:
        return self.entry.name

    @property
    def classical(self) -> bool:
        return self.entry.name in CLASSICAL


def _request(model: str, recipe: str | None, protocol: str, train: tuple[Any, int | None],
             val: tuple[Any, int | None], *, split: Any, test_labels: Any, seed: int | None,
             overrides: dict[str, Any]) -> _Request:
    """Check the model, the protocol and the amounts (``train``/``val``: (fraction, pixels)), before any file is
    read; resolve the recipe with ``overrides`` and ``seed`` (None: the recipe's)."""
    from hsikit.sampling import amount_option
    from hsikit.training.recipes import recipe_for, recipe_names

    entry = _classifier_entry(model)
    if protocol not in PROTOCOLS:
        raise OptionError(f"unknown protocol {protocol!r}: user (your labels train) or paper (the paper's split)")
    train_amt = amount_option(*train, "--train")
    val_amt = amount_option(*val, "--val", allow_zero=True)
    if split is not None and (train_amt or val_amt or test_labels is not None):
        raise OptionError("--split already says which pixels train, validate and test: drop --train/--val/"
                          "--test-labels")
    rec = recipe_for(entry.name, recipe).replace(**overrides, seed=seed)
    if overrides["iterations"] is None and overrides["epochs"] is not None:
        rec.iterations = -1  # an explicit epoch count wins over the recipe's iteration budget
    return _Request(entry, rec, recipe or recipe_names(entry.name)[0], protocol, train_amt, val_amt)


def _classifier_entry(model: str) -> ModelEntry:
    """The registry entry of classifier ``model``; a former name (alias) resolves to the current one, which the
    checkpoint and report record."""
    from hsikit.models.registry import list_models, resolve_name

    entry = {e.name: e for e in list_models()}.get(resolve_name(model))
    if entry is not None and entry.task != "classification":
        raise OptionError(f"{entry.name} is a {entry.task} model, not a classifier")
    names = classifier_names()
    if entry is None or entry.name not in names:
        raise OptionError(f"unknown classifier {model!r}; choose one of: {', '.join(names)}")
    return entry


@dataclass
class _Labels:
    """The labels on the scene grid, their classes and the split drawn from them."""

    map: LabelMap  #: the training labels as read
    values: np.ndarray  #: the same with the test labels written over them
    source: str  #: the name of the labels, for the provenance
    names: list[str]
    colors: list[Any]
    split: Split
    amounts: tuple[str, str]  #: what drew the training and validation pixels, in words
    test_from: str | None  #: where the test pixels come from (None: no test set)

    @property
    def k(self) -> int:
        return len(self.names)


def _read_labels(sc: Scene, labels: Any, test_labels: Any, split: Any, req: _Request, *, attribute: str | None,
                 allow_resample: bool) -> _Labels:
    """Read the labels, test labels and split raster on the grid of ``sc`` and draw the split."""
    from hsikit.io.labels import LabelMap, read_labels
    from hsikit.io.legend import default_colors

    def read(src: Any) -> LabelMap:
        if isinstance(src, LabelMap):
            return src
        return read_labels(src, sc, attribute=attribute, allow_resample=allow_resample)

    lm = read(labels)
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
        test_lm = read(test_labels)
        lab = _with_test_labels(lab, lm, test_lm, k)
    sp, amounts = _split(lab, lm.values, test_lm, split, req.protocol, req.train, req.val, req.recipe,
                         req.recipe.seed)
    if not sp.train.any():
        raise InputError("the split left no training pixel")
    test_from = ("--split" if split is not None else "--test-labels" if test_lm is not None
                 else "the rest of --labels" if req.protocol == "paper" else None)
    source = getattr(labels, "name", None) or Path(str(labels)).name
    return _Labels(lm, lab, source, names, colors, sp, amounts, test_from)


@dataclass
class _Prepared:
    """The preprocessing chain fitted on the scene, the model's full configuration and receptive field, and the
    split's summary (a line, and the same for report.json)."""

    chain: Chain
    config: dict[str, Any]
    context: int
    summary: str
    split_info: dict[str, Any]


def _prepare(sc: Scene, labs: _Labels, req: _Request, *, chain: dict[str, Any] | None,
             model_config: dict[str, Any] | None, disjoint: bool) -> _Prepared:
    """Fit the recipe's chain (``chain`` overriding it) on ``sc``, configure the model (the recipe's options,
    ``model_config`` overriding them) and, with ``disjoint``, keep validation/test windows off the training ones."""
    from hsikit.models.registry import make_config
    from hsikit.preprocess.chain import Chain

    opts = dict(req.recipe.chain)
    opts.update({k: v for k, v in (chain or {}).items() if v is not None})
    ch = Chain.from_options(**opts).fit(sc)
    cfg = {"in_bands": ch.output_bands(sc.bands).count, "num_classes": labs.k, **req.recipe.model,
           **(model_config or {})}
    full = make_config(req.model, **cfg)
    context = int(req.entry.receptive_field(full))
    if disjoint:
        labs.split = disjoint_split(labs.split, context)
    summary, info = _split_summary(labs.split, labs.values, labs.map.values, labs.names, labs.amounts,
                                   labs.test_from, req.recipe, classical=req.classical)
    info.update(protocol=req.protocol, disjoint=disjoint)
    # every option stored: later default changes cannot alter the model
    return _Prepared(ch, dataclasses.asdict(full), context, summary, info)


@dataclass
class _Fitted:
    """The trained model, its per-epoch history, the loss of every optimiser step, the configuration the
    checkpoint stores, and the step a resumed run continued from."""

    net: Any
    history: list[dict[str, float]]
    curve: list[float]
    config: dict[str, Any]
    resumed_from: int | None = None


def _fit(req: _Request, labs: _Labels, prep: _Prepared, data: Any, run: Run, *,
         model_config: dict[str, Any] | None) -> _Fitted:
    """Train with Lightning, or fit the scikit-learn model (with the ``model_config`` given, not the recipe's)."""
    if req.classical:
        net, history = _fit_classical(req.model, data, labs.split, labs.k, req.recipe.seed, model_config or {})
        return _Fitted(net, history, [], dataclasses.asdict(net.cfg))
    from hsikit.models.registry import create_model
    from hsikit.training.module import fit

    resumed_from = run.resumed_from()  # before this run rewrites last.ckpt
    net = create_model(req.model, **prep.config).to(run.device)
    net, history, curve = fit(net, data, req.recipe, labs.split.val, run)
    return _Fitted(net, history, curve, prep.config, resumed_from)


def _score_and_write(sc: Scene, req: _Request, labs: _Labels, prep: _Prepared, data: Any, fitted: _Fitted,
                     run: Run) -> TrainResult:
    """Score the test pixels (else the validation ones), write the checkpoint, the confusion matrix and
    report.json."""
    from hsikit.checkpoint import CheckpointMeta
    from hsikit.metrics import confusion_matrix, scores
    from hsikit.report import write_confusion_csv, write_confusion_png

    sp, k = labs.split, labs.k
    scored_on = "test" if sp.test.any() else "validation" if sp.val.any() else None
    mask = sp.test if scored_on == "test" else sp.val
    ref = labs.values[mask] - 1
    cm = confusion_matrix(ref, _predict(fitted.net, data, mask, run.device), k) if ref.size else np.zeros((k, k), int)
    metrics = scores(cm) if scored_on else {}
    seconds = run.seconds
    key = "test" if scored_on == "test" else "val"
    meta = CheckpointMeta(
        arch=req.model, config=jsonable(fitted.config), task="classification", bands=sc.bands.to_dict(),
        preprocessing=prep.chain.to_dict(), class_names=labs.names, class_colors=labs.colors,
        provenance=run.provenance(scene=sc.name, labels=labs.source, protocol=req.protocol, recipe=req.recipe_name,
                                  **{f"{key}_oa": metrics.get("oa"), f"{key}_kappa": metrics.get("kappa")},
                                  epochs_run=len(fitted.history)),
    )
    run.save(fitted.net, meta)
    write_confusion_csv(cm, labs.names, run.dir / "confusion_matrix.csv")
    title = (f"{req.model} on {sc.name}: {scored_on} OA {metrics['oa']:.3f}, kappa {metrics['kappa']:.3f}"
             if scored_on else f"{req.model} on {sc.name}: no test or validation pixels")
    write_confusion_png(cm, labs.names, run.dir / "confusion_matrix.png", title=title)
    _write_report(sc, req, labs, prep, data, fitted, run, metrics=metrics, scored_on=scored_on, seconds=seconds)
    return TrainResult(run.out, metrics, fitted.history, run.dir, seconds, scored_on, prep.summary)


def _write_report(sc: Scene, req: _Request, labs: _Labels, prep: _Prepared, data: Any, fitted: _Fitted, run: Run, *,
                  metrics: dict[str, Any], scored_on: str | None, seconds: float) -> None:
    """report.json: the model, recipe, split, compute options, history and scores of the run."""
    from hsikit._version import __version__
    from hsikit.report import write_json

    opts = run.options
    write_json({"model": req.model, "config": jsonable(fitted.config), "scene": sc.name, "seed": run.seed,
                "hsikit_version": __version__, "recipe_name": req.recipe_name,
                "recipe": dataclasses.asdict(req.recipe),
                "distributed": {"processes": data.world, "strategy": opts.strategy if data.world > 1 else None,
                                "steps_per_epoch": None if req.classical else data.steps_per_epoch()},
                "resumed_from_step": fitted.resumed_from,
                "split": prep.split_info, "scored_on": scored_on,
                "preprocessing": [s.op for s in prep.chain.steps], "device": str(run.device),
                "precision": opts.precision, "history": fitted.history,
                "loss_curve": [round(v, 6) for v in fitted.curve], "metrics": metrics, "class_names": labs.names,
                "seconds": seconds, "checkpoint": run.out.name, "command": opts.command},
               run.dir / "report.json")


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
    from hsikit.sampling import (
        Amount,
        Split,
        holdout_split,
        split_from_raster,
        stratified_split,
    )

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
