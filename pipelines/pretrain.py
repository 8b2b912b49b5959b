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
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hsikit.errors import BandMismatchError, InputError, OptionError
from hsikit.io.inputs import RASTER_EXTENSIONS
from hsikit.io.scene import Scene
from hsikit.preprocess.chain import Chain, Step
from hsikit.report import save_png, write_loss_curve_png

NORMALIZATIONS = ("dataset", "zscore", "per-image", "none")
SPECTRAL_MODES = ("auto", "select", "resample")
#: the raster extensions of :mod:`hsikit.io.inputs` (kept for importers; folders are searched by ``find_rasters``)
RASTER_SUFFIXES = frozenset(RASTER_EXTENSIONS)
_LIST_SUFFIXES = {".txt", ".csv", ".lst"}
_GDAL_PREFIXES = ("HDF5:", "HDF4_", "NETCDF:", "/vsi", "GTIFF_DIR:", "SENTINEL2_")
#: a URL (``http(s)://``, ``s3://``, ``gs://``) or a glob pattern: resolved by :func:`hsikit.io.inputs.resolve_inputs`
_REMOTE_OR_GLOB = re.compile(r"^(?:https?|s3|gs)://|[*?\[]")


@dataclass
class PretrainResult:
    checkpoint: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    report_dir: Path | None = None
    seconds: float = 0.0


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


def prepare_run_dir(out: Path, report_dir: str | Path | None, *, overwrite: bool, resume: bool) -> Path:
    """Check the checkpoint and report folder (existing ones need --overwrite or --resume); returns the folder.
    ``--overwrite`` without ``--resume`` removes the earlier run's resumable state so it cannot leak in."""
    from hsikit.io.atomic import check_output

    check_output(out, overwrite or resume)
    rdir = Path(report_dir) if report_dir else out.with_name(out.stem + "_report")
    if rdir.exists() and not overwrite and not resume and any(rdir.iterdir()):
        raise InputError(f"report folder exists and is not empty: {rdir} (use --overwrite, or --resume)")
    if resume and not (rdir / "checkpoints" / "last.ckpt").exists():
        warnings.warn(f"--resume: no interrupted run in {rdir}; starting from scratch", stacklevel=3)
    if overwrite and not resume:
        for stale in (rdir / "checkpoints" / "last.ckpt", rdir / "metrics.csv"):
            if stale.exists():
                stale.unlink()
    rdir.mkdir(parents=True, exist_ok=True)
    return rdir


def jsonable_config(cfg: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


# -- the pipeline ----------------------------------------------------------------------------------------------------
def pretrain_spectralgpt(
    archives: Sequence[str | Path],
    *,
    out: str | Path,
    variant: str = "small",
    model_config: dict[str, Any] | None = None,
    val: Sequence[str | Path] | None = None,
    steps: int | None = None,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    base_lr: float | None = None,
    seed: int | None = None,
    chip: int | None = None,
    normalization: str = "dataset",
    spectral: str = "auto",
    preview_every: int | None = None,
    val_batches: int | None = None,
    device: str = "auto",
    precision: str = "32-true",
    resume: bool = False,
    overwrite: bool = False,
    report_dir: str | Path | None = None,
    progress: bool = True,
    command: str | None = None,
    devices: int = 1,
    strategy: str = "auto",
    num_nodes: int = 1,
) -> PretrainResult:
    """Pretrain SpectralGPT (``variant`` tiny/small/base; ``model_config`` overrides, e.g. img_size, patch_size,
    mask_ratio, bands) on windows sampled from ``archives`` (see :func:`list_scenes`); ``lr`` is the peak learning
    rate (default 1.5e-3), ``base_lr`` alone applies the paper's rule base_lr x batch / 256; validation loss per epoch
    on fixed windows of ``val`` scenes (or of the training scenes). Writes the checkpoint ``out``, and in the
    report folder (default ``<out stem>_report``) report.json, loss_curve.png, metrics.csv, previews/*.png
    (every ``preview_every`` steps) and Lightning's resumable ``checkpoints/last.ckpt`` (``resume``).

    ``devices`` processes (CPU) or GPUs per node on ``num_nodes`` nodes train with DDP (``strategy`` "auto"/"ddp",
    see :func:`hsikit.training.module.make_trainer`): each step averages ``world x batch_size`` windows, different
    on every rank. Every rank runs this function; only the global rank 0 checks and writes outputs (the others
    return a result without metrics)."""
    import torch

    from hsikit._version import __version__
    from hsikit.checkpoint import CheckpointMeta, save_checkpoint
    from hsikit.engine.torch_predict import resolve_device
    from hsikit.models.registry import create_model, make_config
    from hsikit.models.spectralgpt import MAE_NAMES, mae_parameter_counts
    from hsikit.pipelines.train_classifier import _created
    from hsikit.report import write_json
    from hsikit.training.module import is_global_zero, world_size
    from hsikit.training.pretrain import PretrainRecipe, WindowSampler, fit_pretrain, validation_batches

    t0 = time.perf_counter()
    if variant not in MAE_NAMES:
        raise OptionError(f"--variant must be one of {', '.join(MAE_NAMES)}, not {variant!r}")
    arch = MAE_NAMES[variant]
    cfg_in = dict(model_config or {})
    if normalization == "per-image":
        cfg_in["input_scaling"] = "minmax"
    if normalization not in NORMALIZATIONS:
        raise OptionError(f"--normalization must be one of {', '.join(NORMALIZATIONS)}, not {normalization!r}")
    cfg = make_config(arch, **cfg_in)
    recipe = PretrainRecipe().replace(steps=steps, steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr,
                                      base_lr=base_lr, seed=seed, val_batches=val_batches)
    if base_lr is not None and lr is None:
        recipe.lr = None  # the paper's linear scaling rule
    if recipe.lr is not None and recipe.lr <= 0:
        raise OptionError("--lr must be positive")
    if recipe.steps < 1 or recipe.batch_size < 1:
        raise OptionError("--steps and --batch-size must be positive")
    out = Path(out)
    lead = is_global_zero()  # DDP re-runs this function on every rank: the other ranks neither check nor write
    world = world_size(devices, num_nodes)
    recipe.world = world
    rdir = (prepare_run_dir(out, report_dir, overwrite=overwrite, resume=resume) if lead else
            Path(report_dir) if report_dir else out.with_name(out.stem + "_report"))
    paths = list_scenes(archives)
    val_paths = list_scenes(val) if val else []
    scenes, chains = open_model_scenes(paths, cfg.bands, spectral, skip_unusable=True)
    vscenes, vchains = open_model_scenes(val_paths, cfg.bands, spectral, skip_unusable=True) if val_paths else ([], [])
    try:
        stats = None
        if normalization in ("dataset", "zscore"):
            stats = sample_statistics(scenes, chains, chip or cfg.img_size, seed=recipe.seed)
        norm = normalization_step(normalization, stats)
        full = [with_normalization(c, norm) for c in chains]
        vfull = [with_normalization(c, norm) for c in vchains]
        kw = dict(chip=chip or cfg.img_size, scale=tuple(recipe.crop_scale), hflip=recipe.hflip)
        sampler = WindowSampler(scenes, [c.apply for c in full], cfg.img_size, **kw)
        vsampler = (WindowSampler(vscenes, [c.apply for c in vfull], cfg.img_size, **kw) if vscenes else
                    WindowSampler(scenes, [c.apply for c in full], cfg.img_size, **kw))
        val_set = validation_batches(vsampler, recipe)

        torch.manual_seed(recipe.seed)
        np.random.seed(recipe.seed)
        dev = resolve_device(device)
        net = create_model(arch, **jsonable_config(cfg)).to(dev)
        every = int(preview_every if preview_every is not None else max(1, recipe.steps // 5))
        preview = _previewer(rdir / "previews", val_set[0], cfg.bands, arch) if every > 0 and val_set else None
        fit = fit_pretrain(net, sampler, recipe, val_set, device=dev, run_dir=rdir, progress=progress,
                           precision=precision, resume=resume, preview=preview, preview_every=every,
                           devices=devices, strategy=strategy, num_nodes=num_nodes)
        net, history, curve = fit.net, fit.history, fit.loss_curve
        if not lead:
            return PretrainResult(out, {}, history, rdir, time.perf_counter() - t0)
        if preview is not None:
            preview(net, len(curve))
        enc, dec = mae_parameter_counts(net)
        first_val = history[0]["val_loss"] if history else float("nan")
        last_val = history[-1]["val_loss"] if history else float("nan")
        metrics = {"first_loss": curve[0] if curve else None, "last_loss": curve[-1] if curve else None,
                   "first_val_loss": first_val, "last_val_loss": last_val,
                   "steps": len(curve), "patches_seen": len(curve) * recipe.batch_size * world,
                   "steps_this_run": fit.steps_run, "fit_seconds": fit.seconds,
                   "patches_per_second": (fit.steps_run * recipe.batch_size * world / fit.seconds
                                          if fit.seconds > 0 else None),
                   "windows_with_nodata": sampler.invalid_windows}
        names = [s.name for s in scenes]
        meta = CheckpointMeta(
            arch=arch, config=jsonable_config(net.cfg), task="masked-autoencoding", bands=scenes[0].bands.to_dict(),
            preprocessing=full[0].to_dict(),
            provenance={"command": command, "created": _created(), "seed": recipe.seed, "steps": len(curve),
                        "n_scenes": len(scenes), "scenes": names[:100], "normalization": normalization,
                        "spectral": spectral, "statistics_pixels": stats["pixels"] if stats else None,
                        "val_loss": last_val, "model_card": MODEL_CARD},
        )
        save_checkpoint(out, net, meta, overwrite=True if resume else overwrite)
        write_loss_curve_png(curve, history, rdir / "loss_curve.png", title=f"{arch} pretraining on {len(scenes)} scene(s)")
        write_json({"model": arch, "config": jsonable_config(net.cfg), "recipe": dataclasses.asdict(recipe),
                    "peak_lr": recipe.peak_lr, "normalization": normalization, "spectral": spectral,
                    "statistics": stats, "scenes": names, "val_scenes": [s.name for s in vscenes],
                    "parameters": {"encoder": enc, "decoder": dec}, "device": str(dev), "precision": precision,
                    "hsikit_version": __version__, "history": history,
                    "distributed": {"processes": world, "strategy": strategy if world > 1 else None,
                                    "global_batch": recipe.batch_size * world},
                    "loss_curve": [round(v, 6) for v in curve], "metrics": metrics,
                    "seconds": time.perf_counter() - t0, "checkpoint": out.name, "command": command},
                   rdir / "report.json")
    finally:
        for s in scenes + vscenes:
            s.close()
    return PretrainResult(out, metrics, history, rdir, time.perf_counter() - t0)


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
