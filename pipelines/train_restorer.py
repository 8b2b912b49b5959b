"""Train a denoiser, super-resolver or all-in-one restorer on clean scenes, with degradations synthesised on the fly."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from hsikit.errors import InputError, OptionError
from hsikit.io.bandinfo import BandInfo
from hsikit.io.open import open_scene
from hsikit.io.scene import Scene
from hsikit.preprocess.chain import Chain
from hsikit.training.run import Run, RunOptions, RunResult, jsonable, prepare_run

if TYPE_CHECKING:
    from hsikit.models.registry import ModelEntry
    from hsikit.training.restoration import DegradeFn, Pair, RestorationRecipe

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
class RestorationTrainResult(RunResult):
    """A trained restoration model: see :class:`RunResult`."""


def load_clean(scenes: Sequence[Scene], chain) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[float, float]]]:
    """Each scene through ``chain`` and its own min-max onto [0, 1] (invalid pixels 0), with validity masks."""
    from hsikit.pipelines.restore import scene_value_range

    cubes, valids, ranges = [], [], []
    for sc in scenes:
        lo, hi = scene_value_range(sc, chain.apply)
        x = chain.apply_scene(sc)
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


@dataclass
class TrainingScenes:
    """The opened training (and validation) scenes, the preprocessing chain fitted on the first, its output
    bands, and the training scenes in memory: cubes on [0, 1], validity masks and each scene's value range."""

    scenes: list[Scene]
    val_scenes: list[Scene]
    chain: Chain
    bands: BandInfo
    cubes: list[np.ndarray]
    valids: list[np.ndarray]
    ranges: list[tuple[float, float]]


@dataclass
class RestorerSetup:
    """What the network trains on: the ``kind``, its architecture and JSON configuration, the degradation (and its
    description), the super-resolution factor (1: none) and the fixed validation pairs."""

    kind: str
    model: str
    entry: ModelEntry
    cfg: dict[str, Any]
    degrade: DegradeFn
    described: dict[str, Any]
    sr_scale: int
    val: list[Pair]


@dataclass
class Trained:
    """The outcome of the fit: the network, per-epoch history, per-step loss, the step a resumed run continued
    from and the run's seconds so far."""

    net: Any
    history: list[dict[str, float]]
    curve: list[float]
    resumed_from: int | None
    seconds: float


def check_kind(kind: str, model: str | None) -> ModelEntry:
    """The registry entry of ``model`` (default: the kind's architecture), refused unless it is a model of the
    task ``kind`` trains."""
    from hsikit.models.registry import get_entry

    if kind not in KINDS:
        raise OptionError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    want_task, default_arch = KINDS[kind]
    entry = get_entry(model or default_arch)
    if entry.task != want_task:  # a former name (registry alias) is reported under the current one
        raise OptionError(f"{entry.name} is a {entry.task} model; a {kind} needs a {want_task} model")
    return entry


def load_training_scenes(opened: list[Scene], opened_val: list[Scene], *, drop_bad_bands: bool) -> TrainingScenes:
    """Fit the chain on the first scene, check every other scene against it and the memory limit, and load the
    training scenes (the validation scenes are loaded once the model is configured)."""
    chain = Chain.from_options(drop_bad_bands=drop_bad_bands).fit(opened[0])
    for sc in opened[1:] + opened_val:
        chain.check_input(sc.bands, source=sc.name)
    bands = chain.output_bands(opened[0].bands)
    size = sum(bands.count * sc.width * sc.height * 4 for sc in opened + opened_val)
    if size > MAX_TRAINING_BYTES:
        raise InputError(f"training scenes take {size / 2**30:.1f} GiB in memory (limit "
                         f"{MAX_TRAINING_BYTES / 2**30:.0f} GiB); crop them or train on a subset")
    cubes, valids, ranges = load_clean(opened, chain)
    return TrainingScenes(opened, opened_val, chain, bands, cubes, valids, ranges)


def configure_model(kind: str, entry: ModelEntry, recipe: RestorationRecipe, bands: BandInfo, *,
                    model_config: dict[str, Any] | None, tasks: Sequence[str] | None,
                    scale: int) -> tuple[dict[str, Any], list[str] | None]:
    """The model's full JSON configuration and the tasks a restorer trains (checked against the model's own);
    drops a spectral window the scenes' band count cannot hold from ``recipe``."""
    from hsikit.models.registry import make_config

    win = recipe.spectral_window
    if win and not 0 < win < bands.count:
        recipe.spectral_window = win = None
    cfg: dict[str, Any] = {"in_bands": win or bands.count, **(model_config or {})}
    if kind == "super-resolver":
        cfg.setdefault("scale", int(scale))
    cfg = jsonable(make_config(entry.name, **cfg))
    if kind == "restorer":
        known = list(cfg.get("tasks") or [])
        tasks = list(tasks or known)
        bad = [t for t in tasks if t not in known]
        if bad:
            raise OptionError(f"tasks {bad} are not tasks of this model ({', '.join(known)}); "
                              "set them with --set tasks=...")
    return cfg, tasks


def build_setup(kind: str, entry: ModelEntry, data: TrainingScenes, recipe: RestorationRecipe, *,
                model_config: dict[str, Any] | None, degradations: Sequence[str] | None, tasks: Sequence[str] | None,
                scale: int, val_crops: int, lead: bool) -> RestorerSetup:
    """Configure the model and its degradation, fit the recipe's crop to the scenes and the model's size
    multiple, and draw the fixed validation pairs (from the training scenes, with a warning, without
    validation scenes)."""
    from hsikit.training.restoration import check_crop, validation_pairs

    cfg, tasks = configure_model(kind, entry, recipe, data.bands, model_config=model_config, tasks=tasks, scale=scale)
    sr_scale = int(cfg.get("scale", 1)) if kind == "super-resolver" else 1
    degrade, described = make_degrader(kind, degradations=degradations, tasks=tasks, scale=sr_scale,
                                       wavelengths=data.bands.wavelengths, model_tasks=cfg.get("tasks"))
    multiple = max(entry.size_multiple, 8 if kind == "restorer" and "sr" in tasks else 1, sr_scale)
    vc, vv, _ = load_clean(data.val_scenes, data.chain) if data.val_scenes else ([], [], [])
    c = check_crop(data.cubes + vc, recipe.crop)
    recipe.crop = max(multiple, c - c % multiple)
    if data.val_scenes:
        val = validation_pairs(vc, vv, degrade, recipe.crop, val_crops, recipe.seed)
    else:
        if lead:  # stacklevel: the caller of train_restorer
            warnings.warn("no validation scene given: validation crops come from the training scenes", stacklevel=3)
        val = validation_pairs(data.cubes, data.valids, degrade, recipe.crop, val_crops, recipe.seed + 1)
    return RestorerSetup(kind, entry.name, entry, cfg, degrade, described, sr_scale, val)


def write_outputs(job: Run, data: TrainingScenes, setup: RestorerSetup, recipe: RestorationRecipe,
                  trained: Trained) -> dict[str, Any]:
    """Write the checkpoint (its restoration metadata and provenance) and ``report.json``; returns the metrics."""
    from hsikit._version import __version__
    from hsikit.checkpoint import CheckpointMeta
    from hsikit.report import write_json

    history, curve, net, opts = trained.history, trained.curve, trained.net, job.options
    final = history[-1]["val_psnr"] if history else float("nan")
    metrics = {"val_psnr": final, "best_val_psnr": max((h["val_psnr"] for h in history), default=final),
               "first_loss": curve[0] if curve else None, "last_loss": curve[-1] if curve else None}
    # a model trained on its clamped output (MP-HSIR) only means its output inside [0, 1]
    restoration = {"scaling": "scene-minmax", "kind": setup.kind, "trained_on": setup.described,
                   "training_value_ranges": data.ranges, "clamp_output": recipe.loss == "l1-clamp"}
    if setup.sr_scale > 1:
        restoration["scale"] = setup.sr_scale
    scenes, val_scenes = [s.name for s in data.scenes], [s.name for s in data.val_scenes]
    meta = CheckpointMeta(
        arch=setup.model, config=setup.cfg, task=setup.entry.task, bands=data.scenes[0].bands.to_dict(),
        preprocessing=data.chain.to_dict(), restoration=restoration,
        provenance=job.provenance(scenes=scenes, val_scenes=val_scenes, iterations=recipe.iterations, val_psnr=final,
                                  text_embedding_source=getattr(net, "text_embedding_source", None)),
    )
    job.save(net, meta)
    write_json({"model": setup.model, "kind": setup.kind, "config": setup.cfg, "recipe": dataclasses.asdict(recipe),
                "trained_on": setup.described, "scenes": scenes, "val_scenes": val_scenes, "bands": data.bands.count,
                "device": str(job.device), "precision": opts.precision, "hsikit_version": __version__,
                "history": history,
                "distributed": {"processes": job.processes, "strategy": opts.strategy if job.processes > 1 else None},
                "resumed_from_step": trained.resumed_from,
                "loss_curve": [round(v, 6) for v in curve], "metrics": metrics, "seconds": trained.seconds,
                "parameters": int(sum(p.numel() for p in net.parameters())), "checkpoint": job.out.name,
                "command": opts.command}, job.dir / "report.json")
    return metrics


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
    select_best: bool | None = None,
    val_crops: int = 8,
    drop_bad_bands: bool = True,
    run: RunOptions | None = None,
) -> RestorationTrainResult:
    """Train a restoration model of ``kind`` on clean ``scenes`` (crops drawn at random, degraded on the fly).

    Denoisers train on ``degradations`` (named, see ``hsikit.restoration.degradations``; default
    "blind-gaussian", σ cycling through 10/30/50/70), super-resolvers on bicubic ×``scale`` down-sampling,
    all-in-one restorers on ``tasks`` (default: every task of the model), one task drawn per sample. Validation
    PSNR is measured after every epoch on fixed degraded crops of ``val_scenes`` (or, without them, of the
    training scenes, with a warning). Each architecture trains with its recipe
    (:data:`hsikit.training.restoration.RESTORATION_RECIPES`); arguments given here override it, and so does
    ``run.seed``.

    ``run`` holds the compute, output and provenance options (:class:`hsikit.training.run.RunOptions`).
    ``devices`` x ``num_nodes`` > 1 trains with distributed data parallel (each rank draws its own crops, one
    batch per rank per step); every rank runs this function, only the global rank 0 checks and writes outputs.
    """
    from hsikit.models.registry import create_model
    from hsikit.training.distributed import is_global_zero
    from hsikit.training.restoration import fit_restorer, restoration_recipe

    entry = check_kind(kind, model)
    if not scenes:
        raise InputError("no training scene given")
    job = prepare_run(out, run)  # DDP re-runs this function on every rank: the other ranks neither check nor write
    if loss not in (None, "mse", "l1", "l1-clamp"):
        raise OptionError(f"--loss must be mse, l1 or l1-clamp, not {loss!r}")
    recipe = restoration_recipe(entry.name).replace(
        iterations=iterations, steps_per_epoch=steps_per_epoch, lr=lr, loss=loss, batch_size=batch_size, crop=crop,
        seed=job.options.seed, select_best=select_best)

    opened = [s if isinstance(s, Scene) else open_scene(s) for s in scenes]
    opened_val = [s if isinstance(s, Scene) else open_scene(s) for s in (val_scenes or [])]
    try:
        data = load_training_scenes(opened, opened_val, drop_bad_bands=drop_bad_bands)
        setup = build_setup(kind, entry, data, recipe, model_config=model_config, degradations=degradations,
                            tasks=tasks, scale=scale, val_crops=val_crops, lead=job.lead)
        device = job.start(recipe.seed)
        net = create_model(setup.model, **setup.cfg).to(device)
        resumed_from = job.resumed_from()
        net, history, curve = fit_restorer(net, data.cubes, data.valids, setup.degrade, recipe, setup.val, run=job)
        seconds = job.seconds
        if not is_global_zero():  # asked again: the process group is up now
            return RestorationTrainResult(job.out, {}, history, job.dir, seconds)
        trained = Trained(net, history, curve, resumed_from, seconds)
        metrics = write_outputs(job, data, setup, recipe, trained)
    finally:
        for s, src in zip(opened + opened_val, list(scenes) + list(val_scenes or [])):
            if not isinstance(src, Scene):
                s.close()
    return RestorationTrainResult(job.out, metrics, history, job.dir, seconds)
