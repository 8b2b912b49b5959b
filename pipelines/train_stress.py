"""Train the FFDNN crop-stress model on a labelled Sentinel-2 series: photochemical filter, split by field,
margin-loss training, report and safetensors checkpoint."""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hsikit.errors import InputError, OptionError
from hsikit.report import save_png


@dataclass
class StressTrainResult:
    checkpoint: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    report_dir: Path | None = None
    seconds: float = 0.0
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


def split_fields(field_class: dict[int, int], *, seed: int, val: float = 0.15, test: float = 0.15) -> dict[str, list[int]]:
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
    from hsikit.timeseries.filter import bare_soil, blocks, estimate_soil_slope, read_block
    from hsikit.timeseries.indices import required_bands

    nir, red = required_bands("ndvi", filt.cfg.nir)
    ns, rs = [], []
    h, w = soil_mask.shape
    for ys, xs in blocks(h, w, block):
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
    from hsikit.timeseries.filter import blocks, filter_in_chunks, read_block, series_variables

    variables = series_variables(ds)
    bands, var_read = filt.needed_bands(variables), filt.needed_variables(variables)
    h, w = labels.shape
    xs_, ys_, fs_ = [], [], []
    plan = [(a, b) for a, b in blocks(h, w, block) if (labels[a, b] > 0).any()]
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
    seed: int | None = None,
    max_pixels_per_field: int | None = None,
    block: int | None = None,
    device: str = "auto",
    precision: str = "32-true",
    resume: bool = False,
    report_dir: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
    reader: Any = None,
    devices: int = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
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

    ``devices`` processes (CPU) or GPUs per node on ``num_nodes`` nodes train with distributed data parallel
    (``strategy`` "auto"/"ddp", see :func:`hsikit.training.stress.fit_stress`). Every rank runs this function and
    filters the same pixels; only the global rank 0 checks and writes the outputs (the others return a result
    without metrics).
    """
    import torch

    from hsikit._version import __version__
    from hsikit.checkpoint import CheckpointMeta, save_checkpoint
    from hsikit.engine.torch_predict import resolve_device
    from hsikit.io.atomic import check_output
    from hsikit.io.legend import default_colors
    from hsikit.metrics import confusion_matrix, scores
    from hsikit.models.registry import create_model, make_config
    from hsikit.pipelines.stress import default_block, grid_raster, open_series_input, series_grid
    from hsikit.pipelines.train_classifier import _created, _jsonable_cfg
    from hsikit.report import write_confusion_csv, write_confusion_png, write_json
    from hsikit.timeseries.filter import FilterConfig, PhotochemicalFilter, season_grid, series_variables
    from hsikit.training.module import is_global_zero, resume_step, world_size
    from hsikit.training.stress import StressRecipe, epoch_steps, fit_stress, predict_lengths

    t_start = time.perf_counter()
    out = Path(out)
    rdir = Path(report_dir) if report_dir else out.with_name(out.stem + "_report")
    lead = is_global_zero()  # DDP re-runs this function on every rank: the other ranks neither check nor write
    if lead:
        check_output(out, overwrite or resume)
        if rdir.exists() and not overwrite and not resume and any(rdir.iterdir()):
            raise InputError(f"report folder exists and is not empty: {rdir} (use --overwrite, or --resume)")
    recipe = StressRecipe().replace(epochs=epochs, patience=patience, batch_size=batch_size, lr=lr,
                                    time_shift=time_shift, balanced=balanced, seed=seed)
    seed = recipe.seed
    if isinstance(soil_slope, str) and soil_slope != "auto":
        try:
            soil_slope = float(soil_slope)
        except ValueError:
            raise OptionError(f"--soil-slope must be a number or 'auto', not {soil_slope!r}") from None

    ds, name = open_series_input(series, reader)
    h, w, _, _ = series_grid(ds)
    block = int(block) if block else default_block(ds)
    lab, names_from_labels, colors_from_labels = grid_raster(labels, ds, "label raster", allow_vector=True,
                                                             attribute=attribute, allow_resample=allow_resample)
    if lab.max() < 2:
        raise InputError("training needs labels of at least two classes")
    k = int(lab.max())
    class_names = list(names_from_labels or [])[:k]
    if not class_names and "class_names" in ds.attrs:
        import json

        class_names = list(json.loads(ds.attrs["class_names"]))[:k]
        colors_from_labels = colors_from_labels or json.loads(ds.attrs.get("class_colors", "null"))
    class_names += [f"class_{i}" for i in range(len(class_names) + 1, k + 1)]
    class_colors = list(colors_from_labels)[:k] if colors_from_labels and len(colors_from_labels) >= k else default_colors(k)
    fid = grid_raster(fields, ds, "field raster")[0] if fields is not None else fields_from_labels(lab)
    fid = np.where(lab > 0, fid, 0)
    if fields is not None and (lab > 0).any() and not (fid[lab > 0] > 0).all():
        warnings.warn("some labelled pixels have field id 0 and are left out", stacklevel=2)
        lab = np.where(fid > 0, lab, 0)

    cfg = FilterConfig(features=tuple(features), soil_slope=1.0, ndvi_min=ndvi_min, step_days=int(step_days),
                       length=int(length), season_start=season_start, nir=nir)
    filt = PhotochemicalFilter(cfg)
    variables = series_variables(ds)
    filt.resolve([str(b) for b in ds["band"].values] if "band" in ds.coords else [], variables)
    if soil_slope == "auto":
        soil = (grid_raster(soil_mask, ds, "soil mask")[0] > 0) if soil_mask is not None else np.ones((h, w), bool)
        cfg.soil_slope = _soil_slope(ds, filt, soil, block)
    elif soil_mask is not None:
        raise OptionError("a soil mask is only used with soil_slope='auto'")
    else:
        cfg.soil_slope = float(soil_slope)
    dates = np.asarray(ds["time"].values)
    grid = season_grid(dates, cfg)
    if cfg.season_start is None:
        cfg.season_start = str(grid[0])[5:10]  # MM-DD: the window applies to other years too
    x_raw, y, f = extract_training_pixels(ds, filt, grid, lab, fid, block=block,
                                          max_pixels_per_field=max_pixels_per_field, seed=seed, progress=progress)
    present = sorted(set(np.unique(y).tolist()))
    lost = [class_names[c - 1] for c in range(1, k + 1) if c not in present]
    if lost:
        raise InputError(f"no pixel of class(es) {', '.join(lost)} survived the filter (clouds all season or "
                         "NDVI < ndvi_min); relabel or lower --ndvi-min")
    field_class = {int(fi): int(np.bincount(y[f == fi]).argmax()) for fi in np.unique(f)}
    split = split_fields(field_class, seed=seed)
    tr, va, te = (np.isin(f, split[s]) for s in ("train", "val", "test"))
    filt.fit_statistics(x_raw[tr])
    x = filt.standardise(x_raw)

    mcfg = {"in_features": filt.num_features, "num_classes": k, "length": int(length), **(model_config or {})}
    full = make_config("ffdnn", **mcfg)
    mcfg = _jsonable_cfg(dataclasses.asdict(full))
    torch.manual_seed(seed)
    np.random.seed(seed)
    dev = resolve_device(device)
    net = create_model("ffdnn", **mcfg)
    world = world_size(devices, num_nodes)
    steps_per_epoch = epoch_steps(int(tr.sum()), recipe.batch_size, world)[0]
    resumed_from = resume_step(rdir) if resume else None
    if lead:
        rdir.mkdir(parents=True, exist_ok=True)
    net, history, curve = fit_stress(net, x[tr], y[tr] - 1, x[va], y[va] - 1, recipe, device=dev, run_dir=rdir,
                                     progress=progress, precision=precision, resume=resume, devices=devices,
                                     strategy=strategy, num_nodes=num_nodes)
    if not is_global_zero():
        return StressTrainResult(out, {}, history, rdir, time.perf_counter() - t_start, split)

    lengths = predict_lengths(net, x[te], torch.device("cpu"))
    pred = lengths.argmax(1) if lengths.size else np.zeros(0, np.int64)
    cm = confusion_matrix(y[te] - 1, pred, k)
    metrics = scores(cm)
    metrics["confusion_matrix"] = cm.tolist()
    # per field: the class of the mean capsule lengths over its test pixels
    ft = f[te]
    f_ids = np.unique(ft)
    f_pred = np.array([lengths[ft == i].mean(0).argmax() for i in f_ids], dtype=np.int64) if f_ids.size else np.zeros(0, np.int64)
    f_ref = np.array([field_class[int(i)] - 1 for i in f_ids], dtype=np.int64)
    fcm = confusion_matrix(f_ref, f_pred, k)
    metrics["fields"] = {**scores(fcm), "confusion_matrix": fcm.tolist()}
    seconds = time.perf_counter() - t_start

    preprocessing = {**filt.to_dict(), "bands": filt.needed_bands(variables),
                     "variables": filt.needed_variables(variables), "training_grid": [str(g) for g in grid]}
    counts = {s: {"fields": len(split[s]), "pixels": int(m.sum())} for s, m in (("train", tr), ("val", va), ("test", te))}
    meta = CheckpointMeta(
        arch="ffdnn", config=mcfg, task="stress", preprocessing=preprocessing, class_names=class_names,
        class_colors=class_colors,
        provenance={"command": command, "series": name, "created": _created(), "seed": seed,
                    "test_oa": metrics["oa"], "test_kappa": metrics["kappa"], "test_field_oa": metrics["fields"]["oa"],
                    "epochs_run": len(history), "split": split, "time_shift_augmentation": recipe.time_shift,
                    "paper": "Shi et al. 2023, Front. Plant Sci. 14:1250844"},
    )
    save_checkpoint(out, net, meta, overwrite=True if resume else overwrite)
    write_confusion_csv(cm, class_names, rdir / "confusion_matrix.csv")
    write_confusion_png(cm, class_names, rdir / "confusion_matrix.png",
                        title=f"FFDNN on {name} (test fields): OA {metrics['oa']:.3f}, kappa {metrics['kappa']:.3f}")
    write_loss_png(history, rdir / "loss_curve.png", title=f"FFDNN on {name}")
    write_json({"model": "ffdnn", "config": mcfg, "series": name, "seed": seed, "hsikit_version": __version__,
                "recipe": dataclasses.asdict(recipe), "filter": preprocessing, "split": {**split, "counts": counts},
                "class_names": class_names, "device": str(dev), "precision": precision,
                "distributed": {"processes": world, "strategy": strategy if world > 1 else None,
                                "steps_per_epoch": steps_per_epoch},
                "resumed_from_step": resumed_from, "history": history,
                "loss_curve": [round(v, 6) for v in curve], "metrics": metrics, "seconds": seconds,
                "parameters": int(sum(p.numel() for p in net.parameters())), "checkpoint": out.name,
                "command": command}, rdir / "report.json")
    return StressTrainResult(out, metrics, history, rdir, seconds, split)
