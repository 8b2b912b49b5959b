"""Train a denoiser, super-resolver or all-in-one restorer on clean scenes, with degradations synthesised on the fly."""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from hsikit.errors import InputError, OptionError
from hsikit.io.scene import Scene

Kind = Literal["denoiser", "super-resolver", "restorer"]
#: the registry task and default architecture of each kind
KINDS: dict[str, tuple[str, str]] = {
    "denoiser": ("denoising", "hsdt"),
    "super-resolver": ("super-resolution", "essaformer"),
    "restorer": ("restoration", "mp-hsir"),
}
#: scenes are held in memory during training; larger inputs should be cropped first
MAX_TRAINING_BYTES = 4 << 30


@dataclass
class RestorationTrainResult:
    checkpoint: Path
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    report_dir: Path | None = None
    seconds: float = 0.0


def load_clean(scenes: Sequence[Scene], chain) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[float, float]]]:
    """Each scene through ``chain`` and its own min-max onto [0, 1] (invalid pixels 0), with validity masks."""
    from hsikit.pipelines.restore import scene_value_range
    from hsikit.pipelines.train_classifier import _preprocessed

    cubes, valids, ranges = [], [], []
    for sc in scenes:
        lo, hi = scene_value_range(sc, chain.apply)
        x = _preprocessed(sc, chain)
        v = sc.read_valid()
        x = (x - np.float32(lo)) / np.float32(hi - lo)
        x[:, ~v] = 0.0
        cubes.append(x.astype(np.float32, copy=False))
        valids.append(v)
        ranges.append((lo, hi))
    return cubes, valids, ranges


def make_degrader(kind: str, *, degradations: Sequence[str] | None, tasks: Sequence[str] | None, scale: int,
                  wavelengths: Sequence[float] | None, model_tasks: Sequence[str] | None = None):
    """``f(clean, rng) -> (input, task index)`` for a training kind, and a JSON description of it. Restorers
    draw one of ``tasks`` per crop; the index is that task's position in the model's own list ``model_tasks``."""
    from hsikit.restoration.degradations import degrade, downsample, parse_degradation
    from hsikit.restoration.tasks import task_sampler

    if kind == "denoiser":
        specs = [parse_degradation(d) for d in (degradations or ["blind-gaussian"])]

        def f(x, rng):
            d = specs[int(rng.integers(len(specs)))] if len(specs) > 1 else specs[0]
            return degrade(x, d, rng).x, -1

        return f, {"degradations": [dataclasses.asdict(s) for s in specs]}
    if kind == "super-resolver":
        method = "bicubic"
        for d in degradations or []:
            spec = parse_degradation(d)
            if spec.name != "downsample":
                raise OptionError("super-resolvers train on `downsample:method=...` degradations only")
            method = spec.params.get("method", method)
        return (lambda x, rng: (downsample(x, scale, method=method), -1)), {"downsample": method, "scale": scale}
    samplers = [task_sampler(t, wavelengths) for t in tasks]
    ids = [list(model_tasks or tasks).index(t) for t in tasks]

    def g(x, rng):
        k = int(rng.integers(len(samplers)))
        return samplers[k](x, rng), ids[k]

    return g, {"tasks": list(tasks)}


def train_restorer(
    scenes: Sequence[str | Path | Scene],
    *,
    out: str | Path,
    kind: Kind = "denoiser",
    model: str | None = None,
    model_config: dict[str, Any] | None = None,
    val_scenes: Sequence[str | Path | Scene] | None = None,
    degradations: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    scale: int = 4,
    iterations: int | None = None,
    steps_per_epoch: int | None = None,
    lr: float | None = None,
    loss: str | None = None,
    batch_size: int | None = None,
    crop: int | None = None,
    seed: int | None = None,
    select_best: bool | None = None,
    val_crops: int = 8,
    drop_bad_bands: bool = True,
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
) -> RestorationTrainResult:
    """Train a restoration model of ``kind`` on clean ``scenes`` (crops drawn at random, degraded on the fly).

    Denoisers train on ``degradations`` (named, see ``hsikit.restoration.degradations``; default
    "blind-gaussian", σ cycling through 10/30/50/70), super-resolvers on bicubic ×``scale`` down-sampling,
    all-in-one restorers on ``tasks`` (default: every task of the model), one task drawn per sample. Validation
    PSNR is measured after every epoch on fixed degraded crops of ``val_scenes`` (or, without them, of the
    training scenes, with a warning). Each architecture trains with its recipe
    (:data:`hsikit.training.restoration.RESTORATION_RECIPES`); arguments given here override it.

    ``devices`` x ``num_nodes`` > 1 trains with distributed data parallel (each rank draws its own crops, one
    batch per rank per step); every rank runs this function, only the global rank 0 checks and writes outputs.
    """
    import torch

    from hsikit._version import __version__
    from hsikit.checkpoint import CheckpointMeta, save_checkpoint
    from hsikit.engine.torch_predict import resolve_device
    from hsikit.io.atomic import check_output
    from hsikit.io.open import open_scene
    from hsikit.models.registry import create_model, get_entry, make_config
    from hsikit.pipelines.train_classifier import _created, _jsonable_cfg
    from hsikit.preprocess.chain import Chain
    from hsikit.report import write_json
    from hsikit.training.module import is_global_zero, world_size
    from hsikit.training.restoration import check_crop, fit_restorer, restoration_recipe, validation_pairs

    t0 = time.perf_counter()
    lead = is_global_zero()  # DDP re-runs this function on every rank: the other ranks neither check nor write
    if kind not in KINDS:
        raise OptionError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    want_task, default_arch = KINDS[kind]
    model = model or default_arch
    entry = get_entry(model)
    model = entry.name  # a former name (registry alias) is recorded under the current one
    if entry.task != want_task:
        raise OptionError(f"{model} is a {entry.task} model; a {kind} needs a {want_task} model")
    if not scenes:
        raise InputError("no training scene given")
    out = Path(out)
    rdir = Path(report_dir) if report_dir else out.with_name(out.stem + "_report")
    if lead:
        check_output(out, overwrite or resume)
        if rdir.exists() and not overwrite and not resume and any(rdir.iterdir()):
            raise InputError(f"report folder exists and is not empty: {rdir} (use --overwrite, or --resume)")
    if loss not in (None, "mse", "l1", "l1-clamp"):
        raise OptionError(f"--loss must be mse, l1 or l1-clamp, not {loss!r}")
    recipe = restoration_recipe(model).replace(iterations=iterations, steps_per_epoch=steps_per_epoch, lr=lr, loss=loss,
                                               batch_size=batch_size, crop=crop, seed=seed, select_best=select_best)

    opened = [s if isinstance(s, Scene) else open_scene(s) for s in scenes]
    opened_val = [s if isinstance(s, Scene) else open_scene(s) for s in (val_scenes or [])]
    try:
        chain = Chain.from_options(drop_bad_bands=drop_bad_bands).fit(opened[0])
        for sc in opened[1:] + opened_val:
            chain.check_input(sc.bands, source=sc.name)
        bands = chain.output_bands(opened[0].bands)
        size = sum(bands.count * sc.width * sc.height * 4 for sc in opened + opened_val)
        if size > MAX_TRAINING_BYTES:
            raise InputError(f"training scenes take {size / 2**30:.1f} GiB in memory (limit "
                             f"{MAX_TRAINING_BYTES / 2**30:.0f} GiB); crop them or train on a subset")
        cubes, valids, ranges = load_clean(opened, chain)

        win = recipe.spectral_window
        if win and not 0 < win < bands.count:
            recipe.spectral_window = win = None
        cfg: dict[str, Any] = {"in_bands": win or bands.count, **(model_config or {})}
        if kind == "super-resolver":
            cfg.setdefault("scale", int(scale))
        full = make_config(model, **cfg)
        cfg = _jsonable_cfg(dataclasses.asdict(full))
        if kind == "restorer":
            known = list(cfg.get("tasks") or [])
            tasks = list(tasks or known)
            bad = [t for t in tasks if t not in known]
            if bad:
                raise OptionError(f"tasks {bad} are not tasks of this model ({', '.join(known)}); set them with --set tasks=...")
        sr_scale = int(cfg.get("scale", 1)) if kind == "super-resolver" else 1
        degrade, described = make_degrader(kind, degradations=degradations, tasks=tasks, scale=sr_scale,
                                           wavelengths=bands.wavelengths, model_tasks=cfg.get("tasks"))
        multiple = max(entry.size_multiple, 8 if kind == "restorer" and "sr" in tasks else 1, sr_scale)
        vc, vv, _ = load_clean(opened_val, chain) if opened_val else ([], [], [])
        c = check_crop(cubes + vc, recipe.crop)
        recipe.crop = max(multiple, c - c % multiple)
        if opened_val:
            val = validation_pairs(vc, vv, degrade, recipe.crop, val_crops, recipe.seed)
        else:
            if lead:
                warnings.warn("no validation scene given: validation crops come from the training scenes",
                              stacklevel=2)
            val = validation_pairs(cubes, valids, degrade, recipe.crop, val_crops, recipe.seed + 1)

        torch.manual_seed(recipe.seed)
        np.random.seed(recipe.seed)
        dev = resolve_device(device)
        net = create_model(model, **cfg).to(dev)
        rdir.mkdir(parents=True, exist_ok=True)
        from hsikit.training.module import resume_step

        resumed_from = resume_step(rdir) if resume else None
        net, history, curve = fit_restorer(net, cubes, valids, degrade, recipe, val, device=dev, run_dir=rdir,
                                           progress=progress, precision=precision, resume=resume, devices=devices,
                                           strategy=strategy, num_nodes=num_nodes)
        seconds = time.perf_counter() - t0
        if not is_global_zero():
            return RestorationTrainResult(out, {}, history, rdir, seconds)
        final = history[-1]["val_psnr"] if history else float("nan")
        metrics = {"val_psnr": final, "best_val_psnr": max((h["val_psnr"] for h in history), default=final),
                   "first_loss": curve[0] if curve else None, "last_loss": curve[-1] if curve else None}
        # a model trained on its clamped output (MP-HSIR) only means its output inside [0, 1]
        restoration = {"scaling": "scene-minmax", "kind": kind, "trained_on": described,
                       "training_value_ranges": ranges, "clamp_output": recipe.loss == "l1-clamp"}
        if sr_scale > 1:
            restoration["scale"] = sr_scale
        meta = CheckpointMeta(
            arch=model, config=cfg, task=entry.task, bands=opened[0].bands.to_dict(), preprocessing=chain.to_dict(),
            restoration=restoration,
            provenance={"command": command, "scenes": [s.name for s in opened], "val_scenes": [s.name for s in opened_val],
                        "created": _created(), "seed": recipe.seed, "iterations": recipe.iterations,
                        "val_psnr": final, "text_embedding_source": getattr(net, "text_embedding_source", None)},
        )
        save_checkpoint(out, net, meta, overwrite=True if resume else overwrite)
        write_json({"model": model, "kind": kind, "config": cfg, "recipe": dataclasses.asdict(recipe),
                    "trained_on": described, "scenes": [s.name for s in opened],
                    "val_scenes": [s.name for s in opened_val], "bands": bands.count, "device": str(dev),
                    "precision": precision, "hsikit_version": __version__, "history": history,
                    "distributed": {"processes": world_size(devices, num_nodes),
                                    "strategy": strategy if world_size(devices, num_nodes) > 1 else None},
                    "resumed_from_step": resumed_from,
                    "loss_curve": [round(v, 6) for v in curve], "metrics": metrics, "seconds": seconds,
                    "parameters": int(sum(p.numel() for p in net.parameters())), "checkpoint": out.name,
                    "command": command}, rdir / "report.json")
    finally:
        for s, src in zip(opened + opened_val, list(scenes) + list(val_scenes or [])):
            if not isinstance(src, Scene):
                s.close()
    return RestorationTrainResult(out, metrics, history, rdir, seconds)
