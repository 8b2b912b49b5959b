"""Train the FFDNN crop-stress model on a labelled Sentinel-2 series: photochemical filter, split by field,
margin-loss training, report and safetensors checkpoint."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hsikit.errors import InputError, OptionError
from hsikit.report import save_png
from hsikit.training.run import Run, RunOptions, RunResult, jsonable, prepare_run


@dataclass
class StressTrainResult(RunResult):
    """A trained crop-stress model (:class:`RunResult`), with the fields of each split."""

    split: dict[str, list[int]] = field(default_factory=dict)


def fields_from_labels(labels: np.ndarray) -> np.ndarray:
    """Field ids when none are given: every 4-connected region of one class is a field (ids 1..n, 0 = none)."""
    from scipy.ndimage import label as connected

    out = np.zeros(labels.shape, np.int32)
    n = 0
    for c in np.unique(labels[labels > 0]):
        comp, m = connected(labels == c)
        out[comp > 0] = comp[comp > 0] + n
        n += m
    return out


def split_fields(field_class: dict[int, int], *, seed: int, val: float = 0.15,
                 test: float = 0.15) -> dict[str, list[int]]:
    """Stratified split of fields (id → majority class) into train/val/test, about 70/15/15 per class; every
    class needs at least 3 fields (one for each part)."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    by_class: dict[int, list[int]] = {}
    for f, c in sorted(field_class.items()):
        by_class.setdefault(c, []).append(f)
    for c, ids in sorted(by_class.items()):
        if len(ids) < 3:
            raise InputError(f"class {c} has {len(ids)} field(s); splitting by field needs at least 3 per class "
                             "(give --fields, or label more fields)")
        ids = list(rng.permutation(ids))
        n_test = max(1, int(np.floor(test * len(ids) + 0.5)))
        n_val = max(1, int(np.floor(val * len(ids) + 0.5)))
        if n_test + n_val >= len(ids):
            n_test, n_val = 1, 1
        out["test"] += [int(v) for v in ids[:n_test]]
        out["val"] += [int(v) for v in ids[n_test : n_test + n_val]]
        out["train"] += [int(v) for v in ids[n_test + n_val :]]
    return {k: sorted(v) for k, v in out.items()}


def _soil_slope(ds: Any, filt, soil_mask: np.ndarray, block: int) -> float:
    """Soil-line slope from the bare-soil-looking observations (0 < NDVI < 0.2, red > 0.05, cloud-free) of the
    pixels of ``soil_mask``."""
    from hsikit.timeseries.filter import (
        bare_soil,
        blocks,
        estimate_soil_slope,
        read_block,
    )
    from hsikit.timeseries.indices import required_bands

    nir, red = required_bands("ndvi", filt.cfg.nir)
    ns, rs = [], []
    h, w = soil_mask.shape
    for ys, xs in blocks(w, h, block):
        if not soil_mask[ys, xs].any():
            continue
        b = read_block(ds, ys, xs, [nir, red], [], filt.cfg.cloud_scl)
        m = bare_soil(b.bands[nir], b.bands[red]) & ~b.invalid & soil_mask[ys, xs].ravel()[None]
        ns.append(b.bands[nir][m])
        rs.append(b.bands[red][m])
    n = np.concatenate(ns) if ns else np.zeros(0)
    r = np.concatenate(rs) if rs else np.zeros(0)
    return estimate_soil_slope(n, r, np.ones(n.shape, bool))


def extract_training_pixels(ds: Any, filt, grid: np.ndarray, labels: np.ndarray, fields: np.ndarray, *,
                            block: int, max_pixels_per_field: int | None, seed: int, progress: bool = False):
    """Raw filtered features (N, F, T), labels (N,), field ids (N,) of the labelled pixels the filter keeps."""
    from hsikit.progress import Progress
    from hsikit.timeseries.filter import (
        blocks,
        filter_in_chunks,
        read_block,
        series_variables,
    )

    variables = series_variables(ds)
    bands, var_read = filt.needed_bands(variables), filt.needed_variables(variables)
    h, w = labels.shape
    xs_, ys_, fs_ = [], [], []
    plan = [(a, b) for a, b in blocks(w, h, block) if (labels[a, b] > 0).any()]
    import rasterio

    from hsikit.pipelines.stress import GDAL_CACHE_MB

    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), Progress(progress, len(plan), "filtering the series") as bar:
        for ys, xs in plan:
            blk = read_block(ds, ys, xs, bands, var_read, filt.cfg.cloud_scl)
            lab_b, fid_b = labels[ys, xs].ravel(), fields[ys, xs].ravel()
            for sl, fb in filter_in_chunks(filt, blk, grid):
                lab = lab_b[sl]
                m = fb.keep & (lab > 0)
                xs_.append(fb.raw[m])
                ys_.append(lab[m])
                fs_.append(fid_b[sl][m])
            bar.advance(pixels=blk.pixels)
    if not xs_:
        raise InputError("no labelled pixel lies in the series")
    x, y, f = np.concatenate(xs_), np.concatenate(ys_), np.concatenate(fs_)
    if max_pixels_per_field:
        rng = np.random.default_rng(seed)
        keep = np.zeros(len(f), bool)
        for fid in np.unique(f):
            idx = np.flatnonzero(f == fid)
            keep[rng.permutation(idx)[: int(max_pixels_per_field)] if idx.size > max_pixels_per_field else idx] = True
        x, y, f = x[keep], y[keep], f[keep]
    return x, y, f


def write_loss_png(history: list[dict[str, float]], path: Path, title: str = "") -> Path:
    """Training and validation margin loss per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(ep, [h["train_loss"] for h in history], label="train")
    if any(np.isfinite(h.get("val_loss", np.nan)) for h in history):
        ax.plot(ep, [h["val_loss"] for h in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("margin loss")
    ax.set_yscale("log")
    if title:
        ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    return save_png(fig, path, dpi=110)


@dataclass
class StressInputs:
    """What :func:`train_stress` reads and how it filters it (the parameters of the same names there)."""

    series: Any
    labels: Any
    fields: Any = None
    attribute: str | None = None
    allow_resample: bool = False
    features: Sequence[str] = ("lai", "lcc")
    season_start: str | None = None
    step_days: int = 5
    length: int = 32
    soil_slope: float | str = 1.0
    soil_mask: Any = None
    ndvi_min: float | None = 0.2
    nir: str | None = None
    max_pixels_per_field: int | None = None
    block: int | None = None
    reader: Any = None


@dataclass
class StressLabels:
    """Classes (1..K, 0 = unlabelled) and field ids (0 = none) on the series grid, with the class names and
    colours (K of each)."""

    classes: np.ndarray
    fields: np.ndarray
    names: list[str]
    colors: list[Any]


@dataclass
class StressPixels:
    """The labelled pixels the filter keeps: standardised series ``x`` (N, F, T), classes ``y`` (1..K) and field
    ids ``f`` (N,), the fields' majority classes, their split and each part's pixel mask (train, val, test)."""

    name: str
    filt: Any
    variables: list[str]
    grid: np.ndarray
    labels: StressLabels
    x: np.ndarray
    y: np.ndarray
    f: np.ndarray
    field_class: dict[int, int]
    split: dict[str, list[int]]
    parts: dict[str, np.ndarray]

    def preprocessing(self) -> dict[str, Any]:
        """The filter settings and statistics the checkpoint and the report record."""
        return {**self.filt.to_dict(), "bands": self.filt.needed_bands(self.variables),
                "variables": self.filt.needed_variables(self.variables),
                "training_grid": [str(g) for g in self.grid]}

    def counts(self) -> dict[str, dict[str, int]]:
        return {s: {"fields": len(self.split[s]), "pixels": int(m.sum())} for s, m in self.parts.items()}


@dataclass
class StressFit:
    """A trained FFDNN with its configuration, recipe, per-epoch history and loss of every step."""

    net: Any
    config: dict[str, Any]
    recipe: Any
    history: list[dict[str, float]]
    curve: list[float]
    steps_per_epoch: int
    resumed_from: int | None


def read_stress_labels(ds: Any, inputs: StressInputs) -> StressLabels:
    """The classes and fields of ``inputs`` on the grid of the series ``ds``; class names and colours from the
    labels, else from the series' attributes, else generic."""
    import json

    from hsikit.io.legend import default_colors
    from hsikit.pipelines.stress import grid_raster

    lab, names_from_labels, colors_from_labels = grid_raster(inputs.labels, ds, "label raster", allow_vector=True,
                                                             attribute=inputs.attribute,
                                                             allow_resample=inputs.allow_resample)
    if lab.max() < 2:
        raise InputError("training needs labels of at least two classes")
    k = int(lab.max())
    class_names = list(names_from_labels or [])[:k]
    if not class_names and "class_names" in ds.attrs:
        class_names = list(json.loads(ds.attrs["class_names"]))[:k]
        colors_from_labels = colors_from_labels or json.loads(ds.attrs.get("class_colors", "null"))
    class_names += [f"class_{i}" for i in range(len(class_names) + 1, k + 1)]
    enough = colors_from_labels and len(colors_from_labels) >= k
    class_colors = list(colors_from_labels)[:k] if enough else default_colors(k)
    fields = inputs.fields
    fid = grid_raster(fields, ds, "field raster")[0] if fields is not None else fields_from_labels(lab)
    fid = np.where(lab > 0, fid, 0)
    if fields is not None and (lab > 0).any() and not (fid[lab > 0] > 0).all():
        warnings.warn("some labelled pixels have field id 0 and are left out", stacklevel=4)
        lab = np.where(fid > 0, lab, 0)
    return StressLabels(lab, fid, class_names, class_colors)


def stress_filter(ds: Any, inputs: StressInputs, soil_slope: float | str, block: int):
    """The photochemical filter of ``inputs`` resolved on the series ``ds`` (soil slope estimated when "auto")
    and the season grid; returns (filter, series variables, grid)."""
    from hsikit.pipelines.stress import grid_raster, series_grid
    from hsikit.timeseries.filter import (
        FilterConfig,
        PhotochemicalFilter,
        season_grid,
        series_variables,
    )

    cfg = FilterConfig(features=tuple(inputs.features), soil_slope=1.0, ndvi_min=inputs.ndvi_min,
                       step_days=int(inputs.step_days), length=int(inputs.length), season_start=inputs.season_start,
                       nir=inputs.nir)
    filt = PhotochemicalFilter(cfg)
    variables = series_variables(ds)
    filt.resolve([str(b) for b in ds["band"].values] if "band" in ds.coords else [], variables)
    soil_mask = inputs.soil_mask
    if soil_slope == "auto":
        h, w = series_grid(ds)[:2]
        soil = (grid_raster(soil_mask, ds, "soil mask")[0] > 0) if soil_mask is not None else np.ones((h, w), bool)
        cfg.soil_slope = _soil_slope(ds, filt, soil, block)
    elif soil_mask is not None:
        raise OptionError("a soil mask is only used with soil_slope='auto'")
    else:
        cfg.soil_slope = float(soil_slope)
    grid = season_grid(np.asarray(ds["time"].values), cfg)
    if cfg.season_start is None:
        cfg.season_start = str(grid[0])[5:10]  # MM-DD: the window applies to other years too
    return filt, variables, grid


def stress_pixels(inputs: StressInputs, *, seed: int, progress: bool) -> StressPixels:
    """Open the series, filter its labelled pixels, split the fields 70/15/15 per class (``seed``) and
    standardise with the statistics of the training fields."""
    from hsikit.pipelines.stress import default_block, open_series_input

    soil_slope = inputs.soil_slope
    if isinstance(soil_slope, str) and soil_slope != "auto":
        try:
            soil_slope = float(soil_slope)
        except ValueError:
            raise OptionError(f"--soil-slope must be a number or 'auto', not {soil_slope!r}") from None
    ds, name = open_series_input(inputs.series, inputs.reader)
    block = int(inputs.block) if inputs.block else default_block(ds)
    labels = read_stress_labels(ds, inputs)
    filt, variables, grid = stress_filter(ds, inputs, soil_slope, block)
    x_raw, y, f = extract_training_pixels(ds, filt, grid, labels.classes, labels.fields, block=block,
                                          max_pixels_per_field=inputs.max_pixels_per_field, seed=seed,
                                          progress=progress)
    present = sorted(set(np.unique(y).tolist()))
    lost = [n for c, n in enumerate(labels.names, 1) if c not in present]
    if lost:
        raise InputError(f"no pixel of class(es) {', '.join(lost)} survived the filter (clouds all season or "
                         "NDVI < ndvi_min); relabel or lower --ndvi-min")
    field_class = {int(fi): int(np.bincount(y[f == fi]).argmax()) for fi in np.unique(f)}
    split = split_fields(field_class, seed=seed)
    parts = {s: np.isin(f, split[s]) for s in ("train", "val", "test")}
    filt.fit_statistics(x_raw[parts["train"]])
    return StressPixels(name, filt, variables, grid, labels, filt.standardise(x_raw), y, f, field_class, split,
                        parts)


def fit_ffdnn(data: StressPixels, recipe: Any, model_config: dict[str, Any] | None, job: Run) -> StressFit:
    """Build the FFDNN for ``data`` (``model_config`` overrides), start the run and train on the training
    fields, validating on the validation fields."""
    from hsikit.models.registry import create_model, make_config
    from hsikit.training.stress import epoch_steps, fit_stress

    mcfg = {"in_features": data.filt.num_features, "num_classes": len(data.labels.names),
            "length": int(data.filt.cfg.length), **(model_config or {})}
    mcfg = jsonable(make_config("ffdnn", **mcfg))
    job.start(recipe.seed)
    net = create_model("ffdnn", **mcfg)
    tr, va = data.parts["train"], data.parts["val"]
    steps_per_epoch = epoch_steps(int(tr.sum()), recipe.batch_size, job.processes)[0]
    resumed_from = job.resumed_from()
    net, history, curve = fit_stress(net, data.x[tr], data.y[tr] - 1, data.x[va], data.y[va] - 1, recipe, run=job)
    return StressFit(net, mcfg, recipe, history, curve, steps_per_epoch, resumed_from)


def evaluate_stress(net: Any, data: StressPixels) -> tuple[np.ndarray, dict[str, Any]]:
    """(confusion matrix, scores) on the test fields, per pixel and (``fields``) per field: the class of the
    mean capsule lengths over its test pixels."""
    import torch

    from hsikit.metrics import confusion_matrix, scores
    from hsikit.training.stress import predict_lengths

    k, te = len(data.labels.names), data.parts["test"]
    lengths = predict_lengths(net, data.x[te], torch.device("cpu"))
    pred = lengths.argmax(1) if lengths.size else np.zeros(0, np.int64)
    cm = confusion_matrix(data.y[te] - 1, pred, k)
    metrics = scores(cm)
    metrics["confusion_matrix"] = cm.tolist()
    ft = data.f[te]
    f_ids = np.unique(ft)
    f_pred = np.array([lengths[ft == i].mean(0).argmax() for i in f_ids], dtype=np.int64) if f_ids.size \
        else np.zeros(0, np.int64)
    f_ref = np.array([data.field_class[int(i)] - 1 for i in f_ids], dtype=np.int64)
    fcm = confusion_matrix(f_ref, f_pred, k)
    metrics["fields"] = {**scores(fcm), "confusion_matrix": fcm.tolist()}
    return cm, metrics


def save_stress_model(job: Run, data: StressPixels, fit: StressFit, metrics: dict[str, Any]) -> Path:
    """The checkpoint: the network, the filter settings and statistics, the classes and the provenance."""
    from hsikit.checkpoint import CheckpointMeta

    m = metrics
    meta = CheckpointMeta(
        arch="ffdnn", config=fit.config, task="stress", preprocessing=data.preprocessing(),
        class_names=data.labels.names, class_colors=data.labels.colors,
        provenance=job.provenance(series=data.name, test_oa=m["oa"], test_kappa=m["kappa"],
                                  test_field_oa=m["fields"]["oa"], epochs_run=len(fit.history), split=data.split,
                                  time_shift_augmentation=fit.recipe.time_shift,
                                  paper="Shi et al. 2023, Front. Plant Sci. 14:1250844"),
    )
    return job.save(fit.net, meta)


def write_stress_report(job: Run, data: StressPixels, fit: StressFit, cm: np.ndarray, metrics: dict[str, Any],
                        seconds: float) -> None:
    """report.json, the confusion matrix (CSV, PNG) and the loss curve in the report folder."""
    from hsikit._version import __version__
    from hsikit.report import write_confusion_csv, write_confusion_png, write_json

    names, rdir, opts = data.labels.names, job.dir, job.options
    write_confusion_csv(cm, names, rdir / "confusion_matrix.csv")
    write_confusion_png(cm, names, rdir / "confusion_matrix.png", title=f"FFDNN on {data.name} (test fields): "
                        f"OA {metrics['oa']:.3f}, kappa {metrics['kappa']:.3f}")
    write_loss_png(fit.history, rdir / "loss_curve.png", title=f"FFDNN on {data.name}")
    world = job.processes
    write_json({"model": "ffdnn", "config": fit.config, "series": data.name, "seed": job.seed,
                "hsikit_version": __version__, "recipe": dataclasses.asdict(fit.recipe),
                "filter": data.preprocessing(), "split": {**data.split, "counts": data.counts()},
                "class_names": names, "device": str(job.device), "precision": opts.precision,
                "distributed": {"processes": world, "strategy": opts.strategy if world > 1 else None,
                                "steps_per_epoch": fit.steps_per_epoch},
                "resumed_from_step": fit.resumed_from, "history": fit.history,
                "loss_curve": [round(v, 6) for v in fit.curve], "metrics": metrics, "seconds": seconds,
                "parameters": int(sum(p.numel() for p in fit.net.parameters())), "checkpoint": job.out.name,
                "command": opts.command}, rdir / "report.json")


def train_stress(
    series: Any,
    labels: Any,
    *,
    out: str | Path,
    fields: Any = None,
    attribute: str | None = None,
    allow_resample: bool = False,
    features: Sequence[str] = ("lai", "lcc"),
    season_start: str | None = None,
    step_days: int = 5,
    length: int = 32,
    soil_slope: float | str = 1.0,
    soil_mask: Any = None,
    ndvi_min: float | None = 0.2,
    nir: str | None = None,
    model_config: dict[str, Any] | None = None,
    epochs: int | None = None,
    patience: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    time_shift: int | None = None,
    balanced: bool | None = None,
    max_pixels_per_field: int | None = None,
    block: int | None = None,
    reader: Any = None,
    run: RunOptions | None = None,
) -> StressTrainResult:
    """Train an FFDNN on ``series`` (paths or a Dataset, see :func:`hsikit.pipelines.stress.open_series_input`)
    with per-pixel class ``labels`` (raster or polygons on the series grid, an array, or a variable name of the
    Dataset; 0 = unlabelled) and ``fields`` (field ids; default: connected regions of one class).

    The photochemical filter (``features``, soil slope — a number, or "auto": the median NIR/red ratio of the
    bare-soil-looking observations of ``soil_mask`` (a raster/array of bare-soil pixels; default the whole
    scene, where roads and buildings bias it) —, the ``length``-date grid ``step_days`` apart from
    ``season_start``) turns every labelled
    pixel into an (F, T) series. Fields are split 70/15/15 per class (seeded), never pixels; the z-score
    statistics come from the training fields. Training follows :class:`hsikit.training.stress.StressRecipe`;
    the report folder (default ``<out stem>_report``) gets report.json (history, OA, per-class
    precision/recall/F1, kappa, confusion matrix on the test fields, per pixel and per field), loss_curve.png
    and the confusion matrix as CSV/PNG. The checkpoint stores the filter settings and statistics.

    ``run`` holds the shared run options (device, precision, seed — None: the recipe's —, resume, report folder,
    overwrite, ...). ``run.devices`` processes (CPU) or GPUs per node on ``run.num_nodes`` nodes train with
    distributed data parallel (see :func:`hsikit.training.stress.fit_stress`). Every rank runs this function and
    filters the same pixels; only the global rank 0 checks and writes the outputs (the others return a result
    without metrics).
    """
    from hsikit.training.stress import StressRecipe

    job = prepare_run(out, run)
    recipe = StressRecipe().replace(epochs=epochs, patience=patience, batch_size=batch_size, lr=lr,
                                    time_shift=time_shift, balanced=balanced, seed=job.options.seed)
    inputs = StressInputs(series, labels, fields, attribute, allow_resample, features, season_start, step_days,
                          length, soil_slope, soil_mask, ndvi_min, nir, max_pixels_per_field, block, reader)
    data = stress_pixels(inputs, seed=recipe.seed, progress=job.options.progress)
    fit = fit_ffdnn(data, recipe, model_config, job)
    if not job.lead:
        return StressTrainResult(job.out, {}, fit.history, job.dir, job.seconds, data.split)
    cm, metrics = evaluate_stress(fit.net, data)
    seconds = job.seconds
    save_stress_model(job, data, fit, metrics)
    write_stress_report(job, data, fit, cm, metrics, seconds)
    return StressTrainResult(job.out, metrics, fit.history, job.dir, seconds, data.split)
