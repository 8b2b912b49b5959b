"""Restore whole scenes in tiles: denoising, super-resolution and prompt-driven all-in-one restoration.

Values are mapped to the network's [0, 1] range with the input scene's own minimum and maximum (over the
bands the model uses, valid pixels only) and mapped back afterwards, so outputs are in the input's units.
Tiles overlap by at least twice the model's receptive field and are blended with raised-cosine ramps (see
:mod:`hsikit.engine.engine`); super-resolved outputs keep the CRS and origin with the pixel size divided by the scale.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import rasterio

from hsikit.engine.engine import EngineStats
from hsikit.errors import BandMismatchError, InputError, OptionError
from hsikit.io.scene import Scene
from hsikit.pipelines.options import check_format

RESTORATION_TASKS = ("denoising", "super-resolution", "restoration")
#: ``hsikit denoise --method``: training-free methods first, "model" runs a checkpoint
DENOISE_METHODS = ("subspace", "pca", "wavelet", "tv", "model")
#: the prompt tasks a plain denoising command may use on an all-in-one model
DENOISE_TASKS = ("gaussian", "complex")
_TRAIN_COMMAND = {"denoising": "denoiser", "super-resolution": "super-resolver", "restoration": "restorer"}


@dataclass
class RestoreResult:
    """What a restoration command wrote."""

    output: Path
    seconds: float
    pixels: int
    tiles: int
    scale: int
    task: str
    value_range: tuple[float, float]
    engine: EngineStats | None = None
    method: str = "model"
    params: dict | None = None


#: widest strip of input columns processed at once: the accumulators hold every output band of one tile row of
#: it, so this keeps them from growing with the scene's width (strips carry their shared columns to the next one)
RESTORE_STRIP_WIDTH = 512

#: GDAL's block cache through a whole restoration (statistics pass, tiles, COG copy): at its default, 5 % of the
#: RAM, it fills with the scene and the process's memory grows with it
GDAL_CACHE_MB = 128


def _bounded_gdal_cache(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
            return fn(*args, **kwargs)

    return run


def scene_value_range(scene: Scene, transform, block: int = 256) -> tuple[float, float]:
    """(min, max) over every valid pixel of the model's bands, streamed in ``block`` px windows (only the two
    extremes are kept, so memory is one window whatever the scene)."""
    from hsikit.preprocess.stats import valid_pixels
    from hsikit.windows import iter_windows

    lo, hi = math.inf, -math.inf
    for w in iter_windows(scene.width, scene.height, block):
        x = valid_pixels(scene, w, transform)
        if x.size:
            lo, hi = min(lo, float(x.min())), max(hi, float(x.max()))
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        raise InputError(f"{scene.name} is constant over its valid pixels ({lo:g}); there is nothing to restore")
    return lo, hi


def resolve_task(meta, command: str, task: str | None, scale: int | None) -> tuple[str, int, bool]:
    """(task name, output scale, nearest pre-upsampling) for running model ``meta`` as ``command``."""
    kind = meta.task
    tasks = list(meta.config.get("tasks") or [])
    if kind not in RESTORATION_TASKS:
        raise InputError(f"this model is a {kind} model, not a restoration model")
    if command == "denoise":
        if kind == "super-resolution":
            raise OptionError("this is a super-resolution model; use `hsikit super-resolve`")
        if kind == "restoration":
            task = task or "gaussian"
            if task not in DENOISE_TASKS or task not in tasks:
                raise OptionError(f"--task {task!r}: denoising uses one of {[t for t in DENOISE_TASKS if t in tasks]}")
        return task or "denoise", 1, False
    if command == "super-resolve":
        if kind == "super-resolution":
            own = int(meta.config.get("scale", 4))
            if scale not in (None, own):
                raise OptionError(f"--scale {scale}: this model was trained for x{own}; train one for x{scale}")
            return "sr", own, False
        if kind == "restoration" and "sr" in tasks:
            s = int(scale or 4)
            if s < 2:
                raise OptionError(f"--scale must be 2 or more, not {s}")
            return "sr", s, True
        raise OptionError("this model does not super-resolve; use `hsikit denoise` or `hsikit restore`")
    # restore: any restoration model; all-in-one models need a task
    if kind == "restoration":
        if task is None:
            raise OptionError(f"--task is required for this all-in-one model; one of {', '.join(tasks)}")
        if task not in tasks:
            raise OptionError(f"--task {task!r} is not one of this model's tasks: {', '.join(tasks)}")
        if task == "sr":
            s = int(scale or 4)
            return "sr", s, True
        return task, 1, False
    if kind == "super-resolution":
        return resolve_task(meta, "super-resolve", None, scale)
    return resolve_task(meta, "denoise", None, scale)


def restorer_module(net, meta, task: str, scale: int, nearest: bool):
    """The network as ``x -> y`` for the engine (a torch module): the task prompt bound, nearest pre-upsampling
    for models that super-resolve at the target size (MP-HSIR), and the output clamped to [0, 1] for models
    trained on their clamped output (MP-HSIR's loss)."""
    import torch

    idx = list(meta.config.get("tasks") or []).index(task) if getattr(net, "takes_task", False) else -1
    clamp = bool((meta.restoration or {}).get("clamp_output", False))

    class Restorer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if nearest and scale > 1:
                x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
            if idx >= 0:
                y = self.net(x, torch.full((x.shape[0],), idx, dtype=torch.long, device=x.device))
            else:
                y = self.net(x)
            return y.clamp(0, 1) if clamp else y

    return Restorer()


def model_context(meta, scale: int = 1, nearest: bool = False) -> int:
    """The receptive field of checkpoint ``meta``'s network in input px (the halo a tile needs); models that see
    the nearest up-sampled tile (``nearest``) need ``scale`` times fewer input px."""
    from hsikit.models.registry import get_entry

    entry = get_entry(meta.arch)
    context = int(entry.receptive_field(entry.config_cls(**meta.config)))
    return max(1, math.ceil(context / scale)) if nearest else context


@dataclass
class RestoreSetup:
    """What restoring one scene with one checkpoint needs, from the scene's header and the checkpoint's metadata
    only (no pixels, no weights); the scene's value range is a separate, scene-level pass."""

    model_path: Path
    meta: object
    command: str
    task: str
    scale: int
    nearest: bool
    chain: object
    context: int
    tile: int
    overlap: int | None
    out_bands: object
    nodata: float

    @property
    def spec(self):
        from hsikit.engine.engine import TileSpec

        return TileSpec(tile=self.tile, overlap=self.overlap, batch_size=1, max_strip_width=RESTORE_STRIP_WIDTH)

    def tile_tag(self, sc: Scene) -> dict:
        """The tiling the run uses on ``sc`` (overlap and margin as resolved, not as requested)."""
        from hsikit.engine.engine import planned_overlap

        overlap, margin = planned_overlap(self.spec, self.context, False, (sc.height, sc.width))
        return {"tile": self.tile, "overlap": overlap, "margin": margin, "context": self.context,
                "blend": "raised-cosine"}


def restore_setup(sc: Scene, model_path: str | Path, *, command: str = "restore", task: str | None = None,
                  scale: int | None = None, tile: int | None = None, overlap: int | None = None) -> RestoreSetup:
    """Check ``sc`` against the restoration checkpoint (georeferencing, task, bands) and plan the tiling."""
    from hsikit.checkpoint import read_checkpoint_meta
    from hsikit.engine.engine import TileSpec, check_spec
    from hsikit.pipelines.common import check_georeferencing
    from hsikit.preprocess.chain import Chain

    model_path = Path(model_path)
    check_spec(TileSpec(tile=1 if tile is None else tile, overlap=overlap))
    check_georeferencing(sc)
    meta = read_checkpoint_meta(model_path)
    task_name, s, nearest = resolve_task(meta, command, task, scale)
    chain = Chain.from_dict(meta.preprocessing)
    try:
        chain.check_input(sc.bands, source=sc.name)
    except BandMismatchError as e:
        raise BandMismatchError(f"{model_path.name}: {e}; train a model on this sensor's bands with `hsikit "
                                f"train {_TRAIN_COMMAND[meta.task]} SCENE... -o MODEL.safetensors`") from None
    context = model_context(meta, s, nearest)
    return RestoreSetup(model_path, meta, command, task_name, s, nearest, chain, context,
                        default_tile(context, s) if tile is None else tile, overlap, chain.output_bands(sc.bands),
                        _output_nodata(sc.nodata))


def restore_predictor(net, setup: RestoreSetup, device: str = "auto"):
    """The engine's ``predict`` for a loaded restoration network (prompt bound, no softmax)."""
    from hsikit.engine.torch_predict import TorchPredictor

    return TorchPredictor(restorer_module(net, setup.meta, setup.task, setup.scale, setup.nearest), device=device,
                          softmax=False, out_scale=setup.scale)


def unit_transforms(setup: RestoreSetup, value_range: tuple[float, float]):
    """(to_unit(raw, valid), from_unit(values, valid)): the scene's min-max onto [0, 1] and back, nodata kept."""
    lo, hi = value_range
    span = hi - lo

    def to_unit(raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
        return (setup.chain.apply(raw, valid) - np.float32(lo)) / np.float32(span)

    def from_unit(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
        v = values * np.float32(span) + np.float32(lo)
        v[:, ~valid] = setup.nodata
        return v.astype(np.float32, copy=False)

    return to_unit, from_unit


def restore_writer(out: Path, setup: RestoreSetup, sc: Scene, value_range: tuple[float, float], *,
                   command_line: str | None, fmt: str, overwrite: bool, extra_tags: dict[str, str] | None = None,
                   temp_dir: str | Path | None = None):
    """The RasterWriter of a restored scene with its provenance tags (float32, the model's bands)."""
    from affine import Affine

    from hsikit.checkpoint import checkpoint_sha256
    from hsikit.io.gaps import fill_tags
    from hsikit.io.writer import RasterWriter
    from hsikit.pipelines.common import provenance_tags, spectral_band_tags

    lo, hi = value_range
    s = setup.scale
    tags = provenance_tags(
        scene=sc, command=command_line, model=setup.meta.arch, checkpoint_sha256=checkpoint_sha256(setup.model_path),
        bands_used=[sc.bands.names[i] for i in setup.chain.used_input_bands(sc.count)],
        normalization=f"scene min-max [{lo:g}, {hi:g}] -> [0, 1] and back",
        tile=setup.tile_tag(sc),
        extra={"HSIKIT_TASK": setup.task, "HSIKIT_SCALE": str(s), "HSIKIT_VALUE_RANGE": json.dumps([lo, hi]),
               **fill_tags(sc), **(extra_tags or {})},
    )
    transform = sc.transform * Affine.scale(1.0 / s) if s > 1 else sc.transform
    if sc.crs is None and s > 1:  # check_georeferencing warned about the scene's grid; this is the same one, finer
        from hsikit.io.writer import note_no_crs_reported

        note_no_crs_reported(sc.width * s, sc.height * s, transform)
    bands = setup.out_bands
    return RasterWriter(out, width=sc.width * s, height=sc.height * s, count=bands.count, dtype="float32",
                        crs=sc.crs, transform=transform, nodata=setup.nodata, kind="continuous", overwrite=overwrite,
                        band_descriptions=list(bands.names), band_tags=spectral_band_tags(bands), tags=tags, fmt=fmt,
                        temp_dir=temp_dir)


@_bounded_gdal_cache
def restore_scene(
    scene: str | Path | Scene,
    *,
    out: str | Path,
    model: str | Path,
    command: Literal["denoise", "super-resolve", "restore"] = "restore",
    task: str | None = None,
    scale: int | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    device: str = "auto",
    fmt: Literal["cog", "gtiff"] = "cog",
    overwrite: bool = False,
    progress: bool = True,
    command_line: str | None = None,
) -> RestoreResult:
    """Restore ``scene`` with checkpoint ``model`` into ``out`` (float32, bands of the model, nodata kept).

    ``command`` says what the caller asked for ("denoise", "super-resolve", "restore") and is checked against
    what the model does; ``task`` picks the prompt of an all-in-one model; ``scale`` the super-resolution factor.
    """
    from hsikit.checkpoint import load_checkpoint
    from hsikit.engine.engine import run_tiled
    from hsikit.io.atomic import check_output
    from hsikit.io.gaps import check_band_gaps
    from hsikit.io.open import open_scene
    from hsikit.io.outputs import check_suffix

    out = Path(out)
    check_format(fmt)
    check_output(check_suffix(out), overwrite)
    t0 = time.perf_counter()
    own = not isinstance(scene, Scene)
    sc = open_scene(scene) if own else scene
    try:
        check_band_gaps(sc)
        setup = restore_setup(sc, model, command=command, task=task, scale=scale, tile=tile, overlap=overlap)
        lo, hi = scene_value_range(sc, setup.chain.apply)
        net, _ = load_checkpoint(setup.model_path, device="cpu")
        predictor = restore_predictor(net, setup, device)
        to_unit, from_unit = unit_transforms(setup, (lo, hi))
        writer = restore_writer(out, setup, sc, (lo, hi), command_line=command_line, fmt=fmt, overwrite=overwrite)

        def sink(window, values: np.ndarray, valid: np.ndarray) -> None:
            writer.write(from_unit(values, valid), window)

        with writer:
            stats = run_tiled(sc, predictor, out_channels=setup.out_bands.count, sink=sink, spec=setup.spec,
                              context=setup.context, transform_input=to_unit, progress=progress, scale=setup.scale,
                              gdal_cache_mb=GDAL_CACHE_MB)
    finally:
        if own:
            sc.close()
    return RestoreResult(output=out, seconds=time.perf_counter() - t0, pixels=int(stats.pixels), tiles=int(stats.tiles),
                         scale=setup.scale, task=setup.task, value_range=(lo, hi), engine=stats)


def default_tile(context: int, scale: int = 1) -> int:
    """Tiles of 128 input px (64 for super-resolution), or the smallest multiple of 32 that leaves room for
    halos of the model's receptive field on both sides (tile >= 4 x context)."""
    base = 64 if scale > 1 else 128
    return max(base, -(-4 * int(context) // 32) * 32)


def _output_nodata(nodata: float | None) -> float:
    """The input's nodata value when float32 holds it exactly, else NaN."""
    if nodata is None or not math.isfinite(float(nodata)):
        return float("nan")
    return float(nodata) if float(np.float32(nodata)) == float(nodata) else float("nan")


def denoise(scene, *, out, model=None, task: str | None = None, method: str | None = None, **kw) -> RestoreResult:
    """Denoise ``scene``: with a checkpoint (``method`` "model", the default when ``model`` is given; a denoising
    model, or an all-in-one model with task "gaussian"/"complex"), or without one by a training-free ``method``
    (default "subspace"; see :func:`denoise_classical`)."""
    method = method or ("model" if model is not None else "subspace")
    if method not in DENOISE_METHODS:
        raise OptionError(f"--method {method!r}: choose one of {', '.join(DENOISE_METHODS)}")
    if method == "model":
        if model is None:
            raise OptionError("--method model needs a checkpoint: -m/--model MODEL.safetensors")
        return restore_scene(scene, out=out, model=model, command="denoise", task=task, **kw)
    if model is not None:
        raise OptionError(f"-m/--model is used by --method model only, not by --method {method}")
    if task is not None:
        raise OptionError("--task is for all-in-one models (--method model)")
    kw.pop("device", None)  # the classical methods run on the CPU
    return denoise_classical(scene, out=out, method=method, **kw)


#: the spatial denoiser of the eigen-images per method ("none": only the noise estimate is used)
_SPATIAL = {"subspace": "nlm", "pca": "wavelet", "wavelet": "none", "tv": "none"}
_CLASSICAL_CONTEXT = 16


def _repaired(raw: np.ndarray, valid: np.ndarray, *, repair: bool) -> np.ndarray:
    """A window as the classical methods see it: float32, dead columns repaired for the subspace methods."""
    from hsikit.restoration.subspace import repair_dead_columns

    return repair_dead_columns(raw) if repair else raw.astype(np.float32)


@dataclass
class ClassicalDenoiser:
    """A training-free denoiser fitted on one scene (pass 1 of :func:`denoise_classical`): the subspace model
    (noise sigma per band, band means, signal subspace), its parameters as written to the output's tags, and the
    scene's value range."""

    method: str
    model: object
    mean: np.ndarray
    params: dict
    value_range: tuple[float, float]

    @property
    def repair(self) -> bool:
        return self.method in ("subspace", "pca")

    def centred(self, raw: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The engine's input: centred, so its zero fill of invalid pixels is the band mean, not an outlier."""
        return _repaired(raw, valid, repair=self.repair) - self.mean[:, None, None]

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Denoise a batch (N, C, h, w) of centred tiles."""
        from hsikit.restoration import classical

        def one(x: np.ndarray) -> np.ndarray:
            if self.repair:
                return self.model.denoise_centred(x)
            if self.method == "wavelet":
                return classical.wavelet_denoise(x, sigma=self.model.sigma)
            return classical.tv_denoise(x, weight=classical.TV_WEIGHT_PER_SIGMA * self.model.sigma)

        return np.stack([one(x) for x in batch])


def fit_classical_denoiser(sc: Scene, method: str, block: int = 256) -> ClassicalDenoiser:
    """Fit ``method`` on ``sc`` in one streamed pass of ``block`` px windows: the band covariance, per-band noise
    sigma (HySime regression) and the whitened covariance's signal subspace."""
    from hsikit.restoration import classical
    from hsikit.restoration.subspace import fit_subspace_scene

    repair = method in ("subspace", "pca")
    prepare = functools.partial(_repaired, repair=repair)
    model, acc = fit_subspace_scene(sc, transform=prepare, block=block, spatial=_SPATIAL[method])
    if repair:
        params = model.params()
    else:
        params = {"noise": "hysime-regression", "noise_sigma_median": float(np.median(model.sigma))}
        params.update({"wavelet": "db1", "threshold": "BayesShrink"} if method == "wavelet"
                      else {"tv_weight_per_sigma": classical.TV_WEIGHT_PER_SIGMA})
    params["dead_column_repair"] = repair
    return ClassicalDenoiser(method, model, model.mean.astype(np.float32), params,
                             (float(np.min(acc.min)), float(np.max(acc.max))))


def _classical_spec(tile: int | None, overlap: int | None):
    """The tiling of a classical denoiser: 256 px tiles overlapping by twice its reach unless told otherwise."""
    from hsikit.engine.engine import TileSpec, check_spec

    tile = 256 if tile is None else tile
    spec = TileSpec(tile=tile, overlap=overlap, batch_size=1, max_strip_width=RESTORE_STRIP_WIDTH)
    check_spec(spec)
    if overlap is None:  # the engine's default (a quarter of the tile) is more than this reach needs
        spec.overlap = min(2 * _CLASSICAL_CONTEXT, tile // 2)
    return spec


def _classical_writer(out: Path, sc: Scene, spec, fitted: ClassicalDenoiser, *, command_line: str | None, fmt: str,
                      overwrite: bool):
    """The RasterWriter of a classically denoised scene: float32, every band, the method and its parameters."""
    from hsikit.engine.engine import planned_overlap
    from hsikit.io.gaps import fill_tags
    from hsikit.io.writer import RasterWriter
    from hsikit.pipelines.common import provenance_tags, spectral_band_tags

    context = _CLASSICAL_CONTEXT
    ov, margin = planned_overlap(spec, context, False, (sc.height, sc.width))
    tags = provenance_tags(
        scene=sc, command=command_line, bands_used=list(sc.bands.names),
        tile={"tile": spec.tile, "overlap": ov, "margin": margin, "context": context, "blend": "raised-cosine"},
        extra={"HSIKIT_TASK": "denoise", "HSIKIT_METHOD": fitted.method,
               "HSIKIT_METHOD_PARAMS": json.dumps(fitted.params), **fill_tags(sc)},
    )
    return RasterWriter(out, width=sc.width, height=sc.height, count=sc.count, dtype="float32", crs=sc.crs,
                        transform=sc.transform, nodata=_output_nodata(sc.nodata), kind="continuous",
                        overwrite=overwrite, band_descriptions=list(sc.bands.names),
                        band_tags=spectral_band_tags(sc.bands), tags=tags, fmt=fmt)


@_bounded_gdal_cache
def denoise_classical(
    scene: str | Path | Scene,
    *,
    out: str | Path,
    method: str = "subspace",
    tile: int | None = None,
    overlap: int | None = None,
    fmt: Literal["cog", "gtiff"] = "cog",
    overwrite: bool = False,
    progress: bool = True,
    command_line: str | None = None,
    block: int = 256,
) -> RestoreResult:
    """Denoise ``scene`` without a model, in two streamed passes (memory bounded by the tile, not the scene).

    Pass 1 accumulates the band covariance over ``block`` px windows (dead columns repaired first, see
    :func:`hsikit.restoration.subspace.repair_dead_columns`): per-band noise sigma (HySime regression), the
    whitened covariance and its signal subspace. Pass 2 runs the tiled engine, overlapping tiles by twice the
    spatial denoiser's reach. Methods: "subspace" (HySime subspace, eigen-images denoised by non-local means +
    DCT Wiener), "pca" (same subspace, BayesShrink wavelet shrinkage of the eigen-images), "wavelet" and "tv"
    (per band, with the band's estimated noise sigma). All bands are kept, in the input's units.
    """
    from hsikit.engine.engine import run_tiled
    from hsikit.io.atomic import check_output
    from hsikit.io.gaps import check_band_gaps
    from hsikit.io.open import open_scene
    from hsikit.io.outputs import check_suffix
    from hsikit.pipelines.common import check_georeferencing

    out = Path(out)
    if method not in _SPATIAL:
        raise OptionError(f"--method {method!r}: training-free methods are {', '.join(_SPATIAL)}")
    check_format(fmt)
    check_output(check_suffix(out), overwrite)
    spec = _classical_spec(tile, overlap)
    t0 = time.perf_counter()
    own = not isinstance(scene, Scene)
    sc = open_scene(scene) if own else scene
    try:
        check_band_gaps(sc)
        check_georeferencing(sc)
        fitted = fit_classical_denoiser(sc, method, block)
        mean = fitted.mean
        writer = _classical_writer(out, sc, spec, fitted, command_line=command_line, fmt=fmt, overwrite=overwrite)

        def sink(window, values: np.ndarray, valid: np.ndarray) -> None:
            v = values + mean[:, None, None]
            v[:, ~valid] = writer.nodata
            writer.write(v.astype(np.float32, copy=False), window)

        with writer:
            stats = run_tiled(sc, fitted.predict, out_channels=sc.count, sink=sink, spec=spec,
                              context=_CLASSICAL_CONTEXT, transform_input=fitted.centred, progress=progress,
                              gdal_cache_mb=GDAL_CACHE_MB)
    finally:
        if own:
            sc.close()
    return RestoreResult(output=out, seconds=time.perf_counter() - t0, pixels=int(stats.pixels),
                         tiles=int(stats.tiles), scale=1, task="denoise", value_range=fitted.value_range,
                         engine=stats, method=method, params=fitted.params)


def super_resolve(scene, *, out, model, scale: int | None = None, **kw) -> RestoreResult:
    """Super-resolve ``scene`` by ``scale`` (a super-resolution model, or an all-in-one model with task "sr")."""
    return restore_scene(scene, out=out, model=model, command="super-resolve", scale=scale, **kw)


def restore(scene, *, out, model, task: str | None = None, **kw) -> RestoreResult:
    """Restore ``scene`` with any restoration model; all-in-one models need ``task``."""
    return restore_scene(scene, out=out, model=model, command="restore", task=task, **kw)
