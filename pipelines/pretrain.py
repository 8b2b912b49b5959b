"""SpectralGPT masked-autoencoder pretraining on an archive of scenes, streamed window by window.

Composes scene discovery (files, folders, list files, local STAC catalogues), the model's band handling (D3),
dataset-level normalisation (D4), the Lightning trainer of :mod:`hsikit.training.pretrain`, reconstruction
previews, the report and the safetensors checkpoint (its encoder initialises the fine-tuning heads).

Band handling (D3): the model consumes named bands (SpectralGPT's 12 Sentinel-2 bands by default). A scene whose
band names include all of them (any spelling ``B2``/``B02``/``..._B02_10m``) gets a ``select_bands`` step in model
order; otherwise, if it has wavelengths (a hyperspectral scene such as EnMAP), its bad and water-vapour bands are
dropped and it is resampled onto the model bands with Gaussian spectral responses (Sentinel-2A centres/FWHM);
otherwise it is a :class:`BandMismatchError` naming the missing bands. ``spectral`` forces one route.

Normalisation (D4): "dataset" (default) maps each band's 2nd/98th percentiles over windows sampled from all
training scenes to 0/1 (stored as a fitted ``normalize`` step, so tiled inference replays the same numbers and
has no seams); "zscore" uses their mean/std; "per-image" is the official per-image min-max, done by the model;
"none" feeds the scaled values as they are.
"""

from __future__ import annotations

import csv
import dataclasses
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hsikit.errors import BandMismatchError, InputError, OptionError
from hsikit.io.inputs import RASTER_EXTENSIONS
from hsikit.io.scene import Scene
from hsikit.preprocess.chain import Chain, Step
from hsikit.report import save_png, write_loss_curve_png
from hsikit.training.run import Run, RunOptions, RunResult, jsonable, prepare_run

NORMALIZATIONS = ("dataset", "zscore", "per-image", "none")
SPECTRAL_MODES = ("auto", "select", "resample")
#: the raster extensions of :mod:`hsikit.io.inputs` (kept for importers; folders are searched by ``find_rasters``)
RASTER_SUFFIXES = frozenset(RASTER_EXTENSIONS)
_LIST_SUFFIXES = {".txt", ".csv", ".lst"}
_GDAL_PREFIXES = ("HDF5:", "HDF4_", "NETCDF:", "/vsi", "GTIFF_DIR:", "SENTINEL2_")
#: a URL (``http(s)://``, ``s3://``, ``gs://``) or a glob pattern: resolved by :func:`hsikit.io.inputs.resolve_inputs`
_REMOTE_OR_GLOB = re.compile(r"^(?:https?|s3|gs)://|[*?\[]")


@dataclass
class PretrainResult(RunResult):
    """A pretrained SpectralGPT: see :class:`RunResult`."""


# -- scene discovery -------------------------------------------------------------------------------------------------
def list_scenes(archives: Sequence[str | Path]) -> list[str]:
    """Scene paths from files, folders, list files and STAC catalogues, found as ``hsikit batch`` finds its inputs
    (:mod:`hsikit.io.inputs`): a folder is searched recursively by :func:`~hsikit.io.inputs.find_rasters`
    (``*.SAFE`` products count as one scene, an ENVI ``.hdr`` stands for its data file, sidecars and hidden files
    are skipped), a STAC catalogue/collection/item (``.json``) gives its items' raster assets; list files
    (``.txt``/``.csv``/``.lst``: one path per line or a column named image/path/scene, relative to the list) are
    pretraining's own. Raises InputError when nothing is found."""
    from hsikit.io.inputs import find_rasters, resolve_inputs

    out: list[str] = []
    for a in archives:
        text = str(a)
        p = Path(a)
        if text.startswith(_GDAL_PREFIXES):
            out.append(text)
        elif p.is_dir():
            out.extend(str(f) for f in find_rasters(p))
        elif p.is_file() and p.suffix.lower() in _LIST_SUFFIXES:
            out.extend(_read_list(p))
        elif p.exists() or _REMOTE_OR_GLOB.search(text):
            out.extend(it.href for it in resolve_inputs([text]))  # a scene, a STAC catalogue, a URL, a glob
        else:
            raise InputError(f"scene or archive not found: {p}")
    seen, unique = set(), []
    for s in out:
        if s not in seen:
            seen.add(s)
            unique.append(s)
    if not unique:
        raise InputError(f"no scene found in {', '.join(str(a) for a in archives)}")
    return unique


def _read_list(p: Path) -> list[str]:
    rows = [r for r in csv.reader(p.read_text().splitlines()) if r and r[0].strip() and not r[0].startswith("#")]
    if not rows:
        return []
    col = 0
    head = [c.strip().lower() for c in rows[0]]
    for name in ("image", "path", "scene", "file"):
        if name in head:
            col, rows = head.index(name), rows[1:]
            break
    return [str((p.parent / r[col].strip()).resolve()) if not Path(r[col].strip()).is_absolute() else r[col].strip()
            for r in rows]


# -- band handling (D3) ----------------------------------------------------------------------------------------------
def band_chain(scene: Scene, bands: Sequence[str], spectral: str = "auto") -> Chain:
    """A fitted chain bringing ``scene`` onto the model ``bands`` (no normalisation yet); see the module doc."""
    from hsikit.preprocess.bands import WATER_VAPOUR_WINDOWS
    from hsikit.preprocess.sensors import SENTINEL2, canonical_band_name, find_bands

    if spectral not in SPECTRAL_MODES:
        raise OptionError(f"--spectral must be one of {', '.join(SPECTRAL_MODES)}, not {spectral!r}")
    why = ""
    if spectral in ("auto", "select"):
        try:
            idx = find_bands(scene.bands.names, bands)
            return Chain([Step("select_bands", {"indices": idx}), Step("scale")]).fit(scene)
        except OptionError as e:
            why = str(e)
            if spectral == "select":
                raise BandMismatchError(f"{scene.name}: {why}") from None
    if scene.bands.wavelengths is None:
        raise BandMismatchError(f"{scene.name}: {why or 'the model needs bands ' + ', '.join(bands)}, and the scene "
                                "has no wavelengths to resample from")
    canon = [canonical_band_name(b) for b in bands]
    if None in canon:
        raise BandMismatchError(f"spectral resampling needs Sentinel-2 band names; {bands[canon.index(None)]!r} "
                                "is not one")
    pos = [SENTINEL2.bands.index(c) for c in canon]
    target = {"centers": [SENTINEL2.centers[i] for i in pos], "fwhm": [SENTINEL2.fwhm[i] for i in pos],
              "names": list(canon)}
    steps = [Step("drop_bad_bands", {"windows": [list(w) for w in WATER_VAPOUR_WINDOWS]}), Step("scale"),
             Step("resample", target)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # uncovered bands are reported below as an error, not a warning
        chain = Chain(steps).fit(scene)
    got = chain.output_bands(scene.bands).names
    if len(got) != len(bands):
        lost = [b for b in canon if b not in got]
        raise BandMismatchError(f"{scene.name}: its spectrum does not cover model band(s) {', '.join(lost)} "
                                f"({min(scene.bands.wavelengths):.0f}-{max(scene.bands.wavelengths):.0f} nm)")
    return chain


def with_normalization(chain: Chain, norm: Step | None) -> Chain:
    """``chain`` + the (fitted) normalisation step + fill_invalid(0)."""
    steps = list(chain.steps) + ([norm] if norm is not None else []) + [Step("fill_invalid", {"value": 0.0})]
    return Chain(steps, chain.input_bands)


def sample_statistics(scenes: Sequence[Scene], chains: Sequence[Chain], size: int, *, seed: int = 0,
                      windows_per_scene: int = 16, max_pixels: int = 200_000) -> dict[str, list[float]]:
    """Per-band mean/std and 2nd/98th percentiles of valid pixels in random ``size`` windows of every scene
    (at most ``windows_per_scene`` each; about ``max_pixels`` kept overall)."""
    from rasterio.windows import Window

    rng = np.random.default_rng([seed, 77])
    per_scene = max(1, max_pixels // max(1, len(scenes)))
    parts = []
    for sc, ch in zip(scenes, chains):
        h, w = min(size, sc.height), min(size, sc.width)
        n_win = 1 if (h, w) == (sc.height, sc.width) else windows_per_scene
        got = []
        for _ in range(n_win):
            win = Window(int(rng.integers(0, sc.width - w + 1)), int(rng.integers(0, sc.height - h + 1)), w, h)
            raw = sc.read(win)
            valid = sc.read_valid(win, raw)
            if valid.any():
                got.append(ch.apply(raw)[:, valid].T)
        if got:
            px = np.concatenate(got)
            if px.shape[0] > per_scene:
                px = px[rng.choice(px.shape[0], per_scene, replace=False)]
            parts.append(px)
    if not parts:
        raise InputError("no valid pixel found in the sampled windows of the training scenes")
    px = np.concatenate(parts).astype(np.float64)
    p2, p98 = np.percentile(px, [2, 98], axis=0)
    return {"mean": px.mean(0).tolist(), "std": px.std(0).tolist(), "p2": p2.tolist(), "p98": p98.tolist(),
            "pixels": int(px.shape[0])}


def normalization_step(mode: str, stats: dict[str, list[float]] | None) -> Step | None:
    """The fitted ``normalize`` step of a normalisation mode (None for "per-image"/"none")."""
    if mode not in NORMALIZATIONS:
        raise OptionError(f"--normalization must be one of {', '.join(NORMALIZATIONS)}, not {mode!r}")
    if mode in ("per-image", "none"):
        return None
    if mode == "dataset":
        lo, hi = np.asarray(stats["p2"]), np.asarray(stats["p98"])
        return Step("normalize", {"mean": lo.tolist(), "std": np.maximum(hi - lo, 1e-6).tolist(),
                                  "mode": "dataset-percentile-2-98"})
    return Step("normalize", {"mean": list(stats["mean"]), "std": np.maximum(stats["std"], 1e-6).tolist(),
                              "mode": "dataset-zscore"})


def open_model_scenes(paths: Sequence[str], bands: Sequence[str], spectral: str, *, skip_unusable: bool
                      ) -> tuple[list[Scene], list[Chain]]:
    """Open scenes and fit their band chains; unusable ones (other bands, unreadable) are skipped with one
    warning when ``skip_unusable``, else raise."""
    from hsikit.errors import HsikitError
    from hsikit.io.open import open_scene

    scenes, chains, skipped = [], [], []
    for p in paths:
        sc = None
        try:
            sc = open_scene(p)
            chains.append(band_chain(sc, bands, spectral))
            scenes.append(sc)
        except HsikitError as e:
            if sc is not None:
                sc.close()
            if not skip_unusable:
                raise
            skipped.append(e)
    if not scenes:
        if len(skipped) == 1:
            raise skipped[0]
        raise InputError(f"none of the {len(paths)} scenes is usable, e.g. {skipped[0] if skipped else 'none given'}")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unusable scene(s), e.g. {skipped[0]}", stacklevel=2)
    return scenes, chains


# -- previews and report ---------------------------------------------------------------------------------------------
def composite_bands(bands: Sequence[str]) -> list[int]:
    """Indices of a false-colour composite: NIR/red/green (B08, B04, B03), else red/green/blue, else the first."""
    from hsikit.preprocess.sensors import canonical_band_name

    canon = [canonical_band_name(b) or b for b in bands]
    for combo in (("B08", "B04", "B03"), ("B8A", "B04", "B03"), ("B04", "B03", "B02")):
        if all(c in canon for c in combo):
            return [canon.index(c) for c in combo]
    n = len(bands)
    return [min(i, n - 1) for i in (2, 1, 0)] if n >= 3 else [0] * 3


def save_preview(net, x, mask_seed: int, path: Path, bands: Sequence[str], title: str = "") -> Path:
    """Original / masked / reconstructed false-colour composite of the first sample of ``x`` as PNG (atomic).
    Masked values are grey; the reconstruction shows predictions at masked tokens and the input elsewhere."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch


    was = net.training
    net.eval()
    with torch.no_grad():
        dev = next(net.parameters()).device
        out = net(x[:1].to(dev), generator=torch.Generator().manual_seed(int(mask_seed)))
        rec, pm = net.reconstruct(out)
        from hsikit.models.spectralgpt import scale_input

        orig = scale_input(x[:1].to(dev), net.cfg.input_scaling)
    net.train(was)
    idx = composite_bands(bands)
    o, r, m = (t[0, idx].float().cpu().numpy() for t in (orig, rec, pm))
    lo = np.percentile(o, 2, axis=(1, 2))[:, None, None]
    hi = np.percentile(o, 98, axis=(1, 2))[:, None, None]

    def img(a):
        return np.clip((a - lo) / np.maximum(hi - lo, 1e-9), 0, 1).transpose(1, 2, 0)

    masked = np.where(m > 0.5, 0.5, img(o).transpose(2, 0, 1)).transpose(1, 2, 0)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    for ax, im, name in zip(axes, (img(o), masked, img(r)), ("original", f"masked ({float(out.mask.mean()):.0%})",
                                                             "reconstructed")):
        ax.imshow(im, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_axis_off()
    fig.suptitle(f"{title}  composite {'/'.join(bands[i] for i in idx)}  loss {float(out.loss):.4f}", fontsize=9)
    fig.tight_layout()
    return save_png(fig, path)


def _previewer(folder: Path, sample, bands: Sequence[str], arch: str):
    """``preview(net, step)`` writing ``folder/step_NNNNNN.png`` for a fixed validation batch and mask."""
    x, mask_seed = sample

    def preview(net, step: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)  # not before the trainer: its logger warns on a non-empty folder
        save_preview(net, x, mask_seed, folder / f"step_{step:06d}.png", bands, title=f"{arch} step {step}")

    return preview


# -- shared by the SpectralGPT pipelines -----------------------------------------------------------------------------
def step_budget(recipe: Any, steps: int | None, epochs: int | None, steps_per_epoch: int | None) -> Any:
    """``recipe`` (a pretraining or fine-tuning recipe) with its budget: ``steps`` optimiser steps, or ``epochs``
    of ``steps_per_epoch`` steps (default: the recipe's); neither keeps the recipe's steps."""
    if steps is not None and epochs is not None:
        raise OptionError("give --steps or --epochs, not both")
    recipe = recipe.replace(steps_per_epoch=steps_per_epoch)
    return recipe.replace(steps=steps if steps is not None else epochs * recipe.steps_per_epoch if epochs else None)


def write_run_report(run: Run, arch: str, recipe: Any, fit: Any, metrics: dict[str, Any], facts: dict[str, Any],
                     distributed: dict[str, Any] | None = None) -> Path:
    """The run's report.json: model, config and recipe, the pipeline's ``facts``, compute, history, loss curve,
    ``metrics`` and provenance (``fit``: the result of ``fit_pretrain`` or ``fit_head``)."""
    from hsikit._version import __version__
    from hsikit.report import write_json

    report = {"model": arch, "config": jsonable(fit.net.cfg), "recipe": dataclasses.asdict(recipe), **facts,
              "device": str(run.device), "precision": run.options.precision, "hsikit_version": __version__,
              "history": fit.history, **({"distributed": distributed} if distributed is not None else {}),
              "loss_curve": [round(v, 6) for v in fit.loss_curve], "metrics": metrics, "seconds": run.seconds,
              "checkpoint": run.out.name, "command": run.options.command}
    return write_json(report, run.dir / "report.json")


# -- the pipeline ----------------------------------------------------------------------------------------------------
@dataclass
class PretrainData:
    """The opened training and validation scenes of a pretraining run and what is drawn from them."""

    scenes: list[Scene]
    vscenes: list[Scene]
    chains: list[Chain]  # per training scene: bands, normalisation, fill_invalid
    stats: dict[str, Any] | None  # the sampled statistics of "dataset"/"zscore"
    sampler: Any  # WindowSampler of the training scenes
    val: list[Any]  # fixed validation batches (and mask seeds)

    def close(self) -> None:
        for s in self.scenes + self.vscenes:
            s.close()


def pretrain_spectralgpt(
    archives: Sequence[str | Path],
    *,
    out: str | Path,
    variant: str = "small",
    model_config: dict[str, Any] | None = None,
    val: Sequence[str | Path] | None = None,
    steps: int | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    base_lr: float | None = None,
    chip: int | None = None,
    normalization: str = "dataset",
    spectral: str = "auto",
    preview_every: int | None = None,
    val_batches: int | None = None,
    run: RunOptions | None = None,
) -> PretrainResult:
    """Pretrain SpectralGPT (``variant`` tiny/small/base; ``model_config`` overrides, e.g. img_size, patch_size,
    mask_ratio, bands) on windows sampled from ``archives`` (see :func:`list_scenes`) for ``steps`` (or
    ``epochs`` of ``steps_per_epoch``) steps; ``lr`` is the peak learning rate (default 1.5e-3), ``base_lr`` alone
    applies the paper's rule base_lr x batch / 256; validation loss per epoch on fixed windows of ``val`` scenes
    (or of the training scenes). Writes the checkpoint ``out``, and in the report folder (default
    ``<out stem>_report``) report.json, loss_curve.png, metrics.csv, previews/*.png (every ``preview_every``
    steps) and Lightning's resumable ``checkpoints/last.ckpt``.

    ``run``: the compute, output and seed options (:class:`~hsikit.training.run.RunOptions`). More than one
    process trains with DDP: each step averages ``world x batch_size`` windows, different on every rank. Every
    rank runs this function; only the global rank 0 checks and writes outputs (the others return a result
    without metrics)."""
    options = run or RunOptions()
    arch, cfg = _mae_config(variant, model_config, normalization)
    recipe = _pretrain_recipe(options, steps=steps, epochs=epochs, steps_per_epoch=steps_per_epoch,
                              batch_size=batch_size, lr=lr, base_lr=base_lr, val_batches=val_batches)
    job = prepare_run(out, options)
    recipe.world = job.processes
    data = open_pretrain_data(archives, val, cfg, spectral, normalization, chip or cfg.img_size, recipe)
    try:
        fit, preview = _fit_mae(job, arch, cfg, recipe, data, preview_every)
        if not job.lead:
            return PretrainResult(job.out, {}, fit.history, job.dir, job.seconds)
        if preview is not None:
            preview(fit.net, len(fit.loss_curve))
        metrics = _mae_metrics(fit, recipe, data)
        _save_mae(job, arch, recipe, data, fit, metrics, normalization, spectral)
    finally:
        data.close()
    return PretrainResult(job.out, metrics, fit.history, job.dir, job.seconds)


def _mae_config(variant: str, model_config: dict[str, Any] | None, normalization: str) -> tuple[str, Any]:
    """The MAE's registry name and config; refuses an unknown variant or normalisation."""
    from hsikit.models.registry import make_config
    from hsikit.models.spectralgpt import MAE_NAMES

    if variant not in MAE_NAMES:
        raise OptionError(f"--variant must be one of {', '.join(MAE_NAMES)}, not {variant!r}")
    arch = MAE_NAMES[variant]
    cfg_in = dict(model_config or {})
    if normalization == "per-image":
        cfg_in["input_scaling"] = "minmax"
    if normalization not in NORMALIZATIONS:
        raise OptionError(f"--normalization must be one of {', '.join(NORMALIZATIONS)}, not {normalization!r}")
    return arch, make_config(arch, **cfg_in)


def _pretrain_recipe(options: RunOptions, *, steps: int | None, epochs: int | None, steps_per_epoch: int | None,
                     batch_size: int | None, lr: float | None, base_lr: float | None, val_batches: int | None):
    from hsikit.training.pretrain import PretrainRecipe

    recipe = PretrainRecipe().replace(batch_size=batch_size, lr=lr, base_lr=base_lr, seed=options.seed,
                                      val_batches=val_batches)
    recipe = step_budget(recipe, steps, epochs, steps_per_epoch)
    if base_lr is not None and lr is None:
        recipe.lr = None  # the paper's linear scaling rule
    if recipe.lr is not None and recipe.lr <= 0:
        raise OptionError("--lr must be positive")
    if recipe.steps < 1 or recipe.batch_size < 1:
        raise OptionError("--steps and --batch-size must be positive")
    return recipe


def open_pretrain_data(archives: Sequence[str | Path], val: Sequence[str | Path] | None, cfg: Any, spectral: str,
                       normalization: str, chip: int, recipe: Any) -> PretrainData:
    """Open the scenes of ``archives`` (and ``val``) that have the model bands of ``cfg``, sample the
    normalisation statistics, and build the window sampler (``chip`` px per sample) and the validation batches
    (from the training scenes when there are no validation scenes). Closes what it opened if it fails."""
    from hsikit.training.pretrain import WindowSampler, validation_batches

    paths = list_scenes(archives)
    val_paths = list_scenes(val) if val else []
    scenes, chains = open_model_scenes(paths, cfg.bands, spectral, skip_unusable=True)
    vscenes, vchains = [], []
    try:
        if val_paths:
            vscenes, vchains = open_model_scenes(val_paths, cfg.bands, spectral, skip_unusable=True)
        stats = None
        if normalization in ("dataset", "zscore"):
            stats = sample_statistics(scenes, chains, chip, seed=recipe.seed)
        norm = normalization_step(normalization, stats)
        full = [with_normalization(c, norm) for c in chains]
        vfull = [with_normalization(c, norm) for c in vchains]
        kw = dict(chip=chip, scale=tuple(recipe.crop_scale), hflip=recipe.hflip)
        sampler = WindowSampler(scenes, [c.apply for c in full], cfg.img_size, **kw)
        vsampler = WindowSampler(vscenes or scenes, [c.apply for c in vfull or full], cfg.img_size, **kw)
        return PretrainData(scenes, vscenes, full, stats, sampler, validation_batches(vsampler, recipe))
    except BaseException:
        for s in scenes + vscenes:
            s.close()
        raise


def _fit_mae(job: Run, arch: str, cfg: Any, recipe: Any, data: PretrainData, preview_every: int | None):
    """Start the run, build the MAE and pretrain it; returns the fit and the previewer (None: no previews)."""
    from hsikit.models.registry import create_model
    from hsikit.training.pretrain import fit_pretrain

    job.start(recipe.seed)
    net = create_model(arch, **jsonable(cfg)).to(job.device)
    every = int(preview_every if preview_every is not None else max(1, recipe.steps // 5))
    preview = _previewer(job.dir / "previews", data.val[0], cfg.bands, arch) if every > 0 and data.val else None
    fit = fit_pretrain(net, data.sampler, recipe, data.val, run=job, preview=preview, preview_every=every)
    return fit, preview


def _mae_metrics(fit: Any, recipe: Any, data: PretrainData) -> dict[str, Any]:
    curve, history, world = fit.loss_curve, fit.history, recipe.world
    return {"first_loss": curve[0] if curve else None, "last_loss": curve[-1] if curve else None,
            "first_val_loss": history[0]["val_loss"] if history else float("nan"),
            "last_val_loss": history[-1]["val_loss"] if history else float("nan"),
            "steps": len(curve), "patches_seen": len(curve) * recipe.batch_size * world,
            "steps_this_run": fit.steps_run, "fit_seconds": fit.seconds,
            "patches_per_second": (fit.steps_run * recipe.batch_size * world / fit.seconds
                                   if fit.seconds > 0 else None),
            "windows_with_nodata": data.sampler.invalid_windows}


def _save_mae(job: Run, arch: str, recipe: Any, data: PretrainData, fit: Any, metrics: dict[str, Any],
              normalization: str, spectral: str) -> None:
    """Write the checkpoint, loss_curve.png and report.json."""
    from hsikit.checkpoint import CheckpointMeta
    from hsikit.models.spectralgpt import mae_parameter_counts

    net, stats, names = fit.net, data.stats, [s.name for s in data.scenes]
    meta = CheckpointMeta(
        arch=arch, config=jsonable(net.cfg), task="masked-autoencoding", bands=data.scenes[0].bands.to_dict(),
        preprocessing=data.chains[0].to_dict(),
        provenance=job.provenance(steps=len(fit.loss_curve), n_scenes=len(names), scenes=names[:100],
                                  normalization=normalization, spectral=spectral,
                                  statistics_pixels=stats["pixels"] if stats else None,
                                  val_loss=metrics["last_val_loss"], model_card=MODEL_CARD),
    )
    job.save(net, meta)
    write_loss_curve_png(fit.loss_curve, fit.history, job.dir / "loss_curve.png",
                         title=f"{arch} pretraining on {len(names)} scene(s)")
    enc, dec = mae_parameter_counts(net)
    world = job.processes
    write_run_report(job, arch, recipe, fit, metrics,
                     {"peak_lr": recipe.peak_lr, "normalization": normalization, "spectral": spectral,
                      "statistics": stats, "scenes": names, "val_scenes": [s.name for s in data.vscenes],
                      "parameters": {"encoder": enc, "decoder": dec}},
                     distributed={"processes": world, "strategy": job.options.strategy if world > 1 else None,
                                  "global_batch": recipe.batch_size * world})


MODEL_CARD = ("SpectralGPT (Hong et al., TPAMI 2024), clean-room hsikit implementation. D1 one config, variants "
              "base/small/tiny, bands padded to ceil(B/u) groups (padding excluded from the loss); D2 separable "
              "learned position tables everywhere (heads included), bicubic resize of the spatial table for other "
              "sizes; D3 bands selected by name or resampled (Gaussian SRFs) onto the model's S2 bands; D4 "
              "dataset-level 2/98 % scaling stored in the chain (official per-image min-max optional); D5 loss = "
              "masked-token MSE + all-cell spectral group-sum MSE, weights exposed; D6 segmentation head of the "
              "official SegMunich code (groups->1 linear, pseudo-pyramid, UPerNet) run as overlapping img_size "
              "windows on larger inputs, scene head = mean of all tokens + LayerNorm + linear (no change-detection "
              "head yet); D7 safetensors only, official .pth never unpickled (no converter yet); mask ratio 0.9 "
              "uniform over all 3-D tokens.")
