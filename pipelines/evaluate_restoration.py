"""Score a restoration model on clean scenes: degrade them, restore in tiles, compare with classical baselines.

Scores follow the papers' conventions on values scaled to [0, 1] by each scene's min-max: per-band PSNR
averaged over bands, SSIM (7×7), SAM in degrees, ERGAS (100/scale), RMSE and CC. Baselines: the degraded input
itself, bicubic up-sampling for super-resolution, and for noise per-band wavelet (BayesShrink) and TV
denoising, a PCA low-rank denoiser and the subspace denoiser that ``hsikit denoise`` runs without a model (the
method a trained denoiser has to beat to be worth using).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from hsikit.errors import InputError, OptionError
from hsikit.io.scene import ArrayScene, Scene

DENOISING_BASELINES = ("wavelet", "tv", "pca", "subspace")


@dataclass
class RestorationEvaluation:
    """Mean scores per method over the scenes (``methods``), per scene (``scenes``), and where they were written."""

    methods: dict[str, dict[str, float]]
    scenes: list[dict[str, Any]] = field(default_factory=list)
    degradation: str = ""
    task: str = ""
    report: Path | None = None
    seconds: float = 0.0


def default_degradation(meta, task: str, scale: int) -> str:
    from hsikit.restoration.tasks import TASK_TEST_DEGRADATION

    if meta.task == "super-resolution" or task == "sr":
        return f"downsample:scale={scale}" if meta.task == "super-resolution" else f"sr-nearest:scale={scale}"
    if meta.task == "restoration":
        return TASK_TEST_DEGRADATION[task]
    return "gaussian:sigma=50"


def restore_array(net, meta, x: np.ndarray, *, task: str, scale: int, nearest: bool, tile: int | None = None,
                  device: str = "auto", valid: np.ndarray | None = None) -> np.ndarray:
    """Run a restoration network over an in-memory cube (C, h, w) in [0, 1] through the tiled engine."""
    from hsikit.engine.engine import TileSpec, run_tiled
    from hsikit.engine.torch_predict import TorchPredictor
    from hsikit.pipelines.restore import default_tile, model_context, restorer_module

    context = model_context(meta, scale, nearest)
    tile = tile or default_tile(context, scale)
    c, h, w = x.shape
    data = x if valid is None else np.where(valid[None], x, np.float32(np.nan))
    predictor = TorchPredictor(restorer_module(net, meta, task, scale, nearest), device=device, softmax=False,
                               out_scale=scale)
    out = np.zeros((c, h * scale, w * scale), np.float32)

    def sink(win, values, ok):
        r, q = int(win.row_off), int(win.col_off)
        out[:, r : r + values.shape[1], q : q + values.shape[2]] = values

    run_tiled(ArrayScene(data.astype(np.float32, copy=False), nodata=np.nan if valid is not None else None),
              predictor, out_channels=c, sink=sink, spec=TileSpec(tile=tile, batch_size=1), context=context,
              progress=False, scale=scale)
    return out


@dataclass
class _Evaluated:
    """The checkpoint under evaluation and what it is scored on: its task, scale and the degradation."""

    net: Any
    meta: Any
    task: str
    scale: int
    nearest: bool
    degradation: str
    specs: list
    chain: Any
    clip: bool


def _load_evaluated(model: str | Path, degradation: str | None, task: str | None, scale: int | None,
                    clip: bool | None) -> _Evaluated:
    """Load ``model`` and resolve its task, scale, degradation and clipping as the evaluation runs them."""
    from hsikit.checkpoint import load_checkpoint
    from hsikit.pipelines.restore import resolve_task
    from hsikit.preprocess.chain import Chain
    from hsikit.restoration.degradations import parse_degradations

    net, meta = load_checkpoint(model, device="cpu")
    if clip is None:
        clip = bool((meta.restoration or {}).get("clamp_output", False))
    command = {"denoising": "denoise", "super-resolution": "super-resolve"}.get(meta.task, "restore")
    task_name, s, nearest = resolve_task(meta, command, task, scale)
    deg_text = degradation or default_degradation(meta, task_name, s)
    return _Evaluated(net, meta, task_name, s, nearest, deg_text, parse_degradations(deg_text),
                      Chain.from_dict(meta.preprocessing), clip)


def _baseline_estimates(ev: _Evaluated, deg) -> dict[str, np.ndarray]:
    """The classical baselines for this degradation: bicubic up-sampling for super-resolution, the training-free
    denoisers for noise, none for the other tasks."""
    from hsikit.restoration import classical
    from hsikit.restoration.subspace import subspace_denoise

    k = deg.scale
    if k > 1:
        return {"bicubic": classical.bicubic_upsample(deg.x, k)}
    if ev.task == "sr" and deg.ergas_scale > 1:  # all-in-one SR: LR nearest-replicated to full size
        k = deg.ergas_scale
        return {"bicubic": classical.bicubic_upsample(np.ascontiguousarray(deg.x[:, ::k, ::k]), k)}
    if ev.meta.task == "denoising" or ev.task in ("gaussian", "complex"):
        denoisers = {"wavelet": classical.wavelet_denoise, "tv": classical.tv_denoise,
                     "pca": classical.pca_denoise, "subspace": subspace_denoise}
        return {name: denoisers[name](deg.x) for name in DENOISING_BASELINES}
    return {}


def _score_scene(ev: _Evaluated, sc: Scene, rng: np.random.Generator, *, baselines: bool, tile: int | None,
                 device: str) -> dict[str, Any]:
    """Degrade one clean scene, restore it, and score the model, the degraded input and the baselines."""
    from hsikit.pipelines.train_restorer import load_clean
    from hsikit.restoration.degradations import degrade
    from hsikit.restoration.quality import quality_report

    s = ev.scale
    ev.chain.check_input(sc.bands, source=sc.name)
    cubes, valids, _ = load_clean([sc], ev.chain)
    clean, valid = cubes[0], valids[0]
    if s > 1 and not ev.nearest:
        hh, ww = clean.shape[1] // s * s, clean.shape[2] // s * s
        clean, valid = clean[:, :hh, :ww], valid[:hh, :ww]
    deg = degrade(clean, ev.specs, rng)
    if ev.meta.task == "super-resolution" and deg.scale != s:
        raise OptionError(f"the degradation must down-sample by the model's scale x{s} "
                          f"(e.g. downsample:scale={s}), not x{deg.scale}")
    k = deg.scale  # > 1: the input is the low-resolution cube, the model up-samples by k
    lr_valid = valid[::k, ::k]
    results: dict[str, np.ndarray] = {}
    if k == 1:
        results["degraded input"] = deg.x
    results[ev.meta.arch] = restore_array(ev.net, ev.meta, deg.x, task=ev.task, scale=k, nearest=ev.nearest and k > 1,
                                          tile=tile, device=device, valid=None if lr_valid.all() else lr_valid)
    if baselines:
        results.update(_baseline_estimates(ev, deg))
    r = max(deg.scale, deg.ergas_scale)
    scores = {name: quality_report(clean, est, scale=r, mask=deg.mask, clip=ev.clip) for name, est in results.items()}
    return {"scene": sc.name, "shape": list(clean.shape), "scores": scores}


def _mean_scores(per_scene: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each method's scores averaged over the scenes."""
    methods: dict[str, dict[str, float]] = {}
    for name in per_scene[0]["scores"]:
        keys = per_scene[0]["scores"][name].keys()
        methods[name] = {k: float(np.mean([p["scores"][name][k] for p in per_scene])) for k in keys}
    return methods


def _record_scores(model: str | Path, ev: _Evaluated, res: RestorationEvaluation, seed: int) -> None:
    """Store the mean PSNR/SSIM/SAM of the model and the baselines in the model file."""
    from hsikit.pipelines.common import store_scores

    names = [p["scene"] for p in res.scenes]
    keep = ("psnr", "ssim", "sam")
    store_scores(model, {
        "key": f"restoration|{'+'.join(names)}|{ev.degradation}|{seed}|{ev.scale}", "scenes": names,
        "degradation": ev.degradation, "seed": seed, "task": ev.task,
        "scores": {m: {k: round(v, 4) for k, v in sc.items() if k in keep} for m, sc in res.methods.items()}})


def evaluate_restoration(
    model: str | Path,
    scenes: Sequence[str | Path | Scene],
    *,
    degradation: str | None = None,
    task: str | None = None,
    scale: int | None = None,
    seed: int = 0,
    baselines: bool = True,
    tile: int | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    overwrite: bool = False,
    clip: bool | None = None,
    record: bool = True,
) -> RestorationEvaluation:
    """Degrade each clean scene with ``degradation`` (seeded), restore it with ``model``, and score the result,
    the degraded input and the classical baselines against the clean scene. ``out``: a run folder for
    ``report.json``. ``clip`` clips every estimate and the reference to [0, 1] before scoring (MP-HSIR's
    convention; default: for models trained on their clamped output). ``record`` stores the mean PSNR/SSIM/SAM
    of the model and the baselines in the model file (shown by ``hsikit info``)."""
    from hsikit._version import __version__
    from hsikit.io.open import open_scene
    from hsikit.report import write_json

    t0 = time.perf_counter()
    if not scenes:
        raise InputError("no scene to evaluate on")
    rdir = Path(out) if out else None
    if rdir is not None and (rdir / "report.json").exists() and not overwrite:
        raise InputError(f"{rdir / 'report.json'} exists (use --overwrite)")
    ev = _load_evaluated(model, degradation, task, scale, clip)
    per_scene: list[dict[str, Any]] = []
    for i, src in enumerate(scenes):
        sc = src if isinstance(src, Scene) else open_scene(src)
        try:
            per_scene.append(_score_scene(ev, sc, np.random.default_rng([seed, i]), baselines=baselines, tile=tile,
                                          device=device))
        finally:
            if not isinstance(src, Scene):
                sc.close()
    methods = _mean_scores(per_scene)
    res = RestorationEvaluation(methods, per_scene, ev.degradation, ev.task, None, time.perf_counter() - t0)
    if record:
        _record_scores(model, ev, res, seed)
    if rdir is not None:
        rdir.mkdir(parents=True, exist_ok=True)
        res.report = write_json({"model": Path(model).name, "arch": ev.meta.arch, "task": ev.task,
                                 "degradation": ev.degradation, "seed": seed, "scale": ev.scale, "clip": ev.clip,
                                 "methods": methods, "scenes": per_scene, "hsikit_version": __version__,
                                 "seconds": res.seconds}, rdir / "report.json")
    return res
