"""Restoration commands: denoise, super-resolve, restore, evaluate-restoration, train denoiser|super-resolver|restorer.

Imported by :mod:`hsikit.cli.main` once its app exists; heavy libraries load inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hsikit.cli.main import (CHECKPOINT_OUT, DEVICES_HELP, DEVICE_HELP, Fmt, NUM_NODES_HELP, PRECISION_HELP,
                             RASTER_OUT, RECORD_HELP, RESUME_HELP, SET_METAVAR, STRATEGY_HELP, _command_line, _exists,
                             _model_config, _positive, _start_training, _state, app, train_app)

_TILE_HELP = "Tile size in input pixels (default: 128, 64 for super-resolution, or 4x the model's receptive field if larger; 256 for denoising without a model)."
_OVERLAP_HELP = "Tile overlap in pixels (default 25% of the tile, at least the model's receptive field)."
_TASK_HELP = "Task of an all-in-one model: gaussian, complex, blur, sr, inpaint, haze, band-missing."


def _report(res) -> None:
    mpx = res.pixels / 1e6
    lo, hi = res.value_range
    if getattr(res, "method", "model") != "model":
        p = res.params or {}
        detail = f", rank {p['rank']}" if "rank" in p else ""
        typer.echo(f"wrote {res.output} in {res.seconds:.1f} s ({mpx / max(res.seconds, 1e-9):.3f} Mpx/s input, "
                   f"{res.tiles} tiles, method {res.method}{detail}, median noise sigma "
                   f"{p.get('noise_sigma_median', float('nan')):.4g})")
        return
    typer.echo(f"wrote {res.output} in {res.seconds:.1f} s ({mpx / max(res.seconds, 1e-9):.3f} Mpx/s input, "
               f"{res.tiles} tiles, x{res.scale}, task {res.task}, values scaled from [{lo:g}, {hi:g}])")


@app.command()
def denoise(
    scene: Path = typer.Argument(..., callback=_exists, help="Noisy scene (any GDAL raster)."),
    out: Path = typer.Option(..., "-o", "--out", callback=RASTER_OUT, help="Denoised scene to write (float32 COG, the model's bands)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", callback=_exists, help="Denoising checkpoint (hsikit train denoiser), or an all-in-one restorer. Without it: a training-free method."),
    method: Optional[str] = typer.Option(None, "--method", help="subspace (default without -m: HySime noise + subspace, non-local means on the eigen-images), pca, wavelet, tv, or model (default with -m)."),
    task: Optional[str] = typer.Option(None, "--task", help="For all-in-one models: gaussian (default) or complex."),
    tile: Optional[int] = typer.Option(None, "--tile", min=1, help=_TILE_HELP),
    overlap: Optional[int] = typer.Option(None, "--overlap", min=0, help=_OVERLAP_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    fmt: Fmt = typer.Option(Fmt.cog, "--format", help="Output layout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
) -> None:
    """Denoise a whole scene in blended tiles, with a model (-m) or without; band wavelengths, CRS, transform and nodata are kept."""
    from hsikit.pipelines.restore import denoise as run

    _report(run(str(scene), out=out, model=model, task=task, method=method, tile=tile, overlap=overlap, device=device,
                fmt=fmt.value, overwrite=overwrite, progress=_state["progress"], command_line=_command_line()))


@app.command("super-resolve")
def super_resolve(
    scene: Path = typer.Argument(..., callback=_exists, help="Low-resolution scene."),
    out: Path = typer.Option(..., "-o", "--out", callback=RASTER_OUT, help="Super-resolved scene (float32 COG; pixel size divided by the scale)."),
    model: Path = typer.Option(..., "--model", "-m", callback=_exists, help="Super-resolution checkpoint (hsikit train super-resolver), or an all-in-one restorer."),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", min=1, help="Up-sampling factor (default: the model's; all-in-one models: 4)."),
    tile: Optional[int] = typer.Option(None, "--tile", min=1, help=_TILE_HELP),
    overlap: Optional[int] = typer.Option(None, "--overlap", min=0, help=_OVERLAP_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    fmt: Fmt = typer.Option(Fmt.cog, "--format", help="Output layout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
) -> None:
    """Super-resolve a whole scene in tiles: same CRS and origin, pixel size / scale, band metadata kept."""
    from hsikit.pipelines.restore import super_resolve as run

    _report(run(str(scene), out=out, model=model, scale=scale, tile=tile, overlap=overlap, device=device,
                fmt=fmt.value, overwrite=overwrite, progress=_state["progress"], command_line=_command_line()))


@app.command()
def restore(
    scene: Path = typer.Argument(..., callback=_exists, help="Degraded scene."),
    out: Path = typer.Option(..., "-o", "--out", callback=RASTER_OUT, help="Restored scene to write (float32 COG)."),
    model: Path = typer.Option(..., "--model", "-m", callback=_exists, help="Restoration checkpoint (any hsikit restoration model)."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help=_TASK_HELP),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", min=1, help="Up-sampling factor for --task sr."),
    tile: Optional[int] = typer.Option(None, "--tile", min=1, help=_TILE_HELP),
    overlap: Optional[int] = typer.Option(None, "--overlap", min=0, help=_OVERLAP_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    fmt: Fmt = typer.Option(Fmt.cog, "--format", help="Output layout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
) -> None:
    """Restore a scene with a prompt-driven all-in-one model (MP-HSIR) or any single-task restoration model."""
    from hsikit.pipelines.restore import restore as run

    _report(run(str(scene), out=out, model=model, task=task, scale=scale, tile=tile, overlap=overlap, device=device,
                fmt=fmt.value, overwrite=overwrite, progress=_state["progress"], command_line=_command_line()))


@app.command("evaluate-restoration")
def evaluate_restoration(
    model: Path = typer.Argument(..., callback=_exists, help="Restoration checkpoint."),
    scenes: list[Path] = typer.Argument(..., callback=_exists, help="Clean reference scene(s), not used in training."),
    degradation: Optional[str] = typer.Option(None, "--degradation", "-d", help="Degradation(s) to synthesise, joined by '+', e.g. gaussian:sigma=50, mixture, downsample:scale=4, blur:kernel_size=11+gaussian:sigma=10 (default: the model's task). `hsikit degradations` lists them."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help=_TASK_HELP),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", min=1, help="Super-resolution factor (all-in-one models)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the synthetic degradation."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also score classical baselines (bicubic; wavelet, TV and PCA denoising)."),
    tile: Optional[int] = typer.Option(None, "--tile", min=1, help=_TILE_HELP),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Run folder for report.json."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing report."),
    record: bool = typer.Option(True, "--record/--no-record", help=RECORD_HELP),
) -> None:
    """Degrade clean scenes, restore them, and print PSNR/SSIM/SAM/ERGAS against the input and classical baselines."""
    if out is not None and (out / "report.json").exists() and not overwrite:  # the pipeline knows once torch loaded
        from hsikit.errors import OutputError

        raise OutputError(f"output exists: {out / 'report.json'} (use --overwrite to replace it)")
    from hsikit.pipelines.evaluate_restoration import evaluate_restoration as run

    res = run(model, [str(s) for s in scenes], degradation=degradation, task=task, scale=scale, seed=seed,
              baselines=baselines, tile=tile, device=device, out=out, overwrite=overwrite, record=record)
    typer.echo(f"{len(res.scenes)} scene(s), degradation {res.degradation}, task {res.task}")
    typer.echo(f"{'method':<16}{'PSNR dB':>9}{'SSIM':>8}{'SAM °':>8}{'ERGAS':>9}")
    for name, m in res.methods.items():
        typer.echo(f"{name:<16}{m['psnr']:>9.2f}{m['ssim']:>8.4f}{m['sam']:>8.2f}{m['ergas']:>9.2f}")
    if res.report:
        typer.echo(f"report: {res.report}")


@app.command()
def degradations() -> None:
    """List the named degradations for --degradation (noise, blur, down-sampling, masking, haze)."""
    from hsikit.cli.main import _text_width, _wrap
    from hsikit.restoration.degradations import list_degradations

    entries = list_degradations()
    indent = " " * (max(len(name) for name, _ in entries) + 2)
    for name, doc in entries:  # the description wraps under itself, at least two spaces after the longest name
        typer.echo(name + _wrap(doc, _text_width(), indent)[len(name):])


def _train(kind: str, scenes, out, model, val_scenes, degradation, tasks, scale, iterations, steps_per_epoch, lr,
           loss, batch_size, crop, seed, select_best, set_, device, precision, resume, drop_bad_bands, report_dir,
           overwrite, devices=1, strategy="auto", num_nodes=1) -> None:
    _start_training(out, report_dir, overwrite=overwrite, resume=resume, devices=devices, num_nodes=num_nodes)
    from hsikit.pipelines.train_restorer import train_restorer

    res = train_restorer([str(s) for s in scenes], out=out, kind=kind, model=model, model_config=_model_config(set_),
                         val_scenes=[str(s) for s in val_scenes or []], degradations=degradation, tasks=tasks,
                         scale=scale, iterations=iterations, steps_per_epoch=steps_per_epoch, lr=lr, loss=loss,
                         batch_size=batch_size, crop=crop, seed=seed, select_best=select_best, device=device,
                         precision=precision, resume=resume, drop_bad_bands=drop_bad_bands, report_dir=report_dir,
                         overwrite=overwrite, progress=_state["progress"], command=_command_line(),
                         devices=devices, strategy=strategy, num_nodes=num_nodes)
    m = res.metrics
    if not m:  # a non-zero DDP rank: rank 0 reports
        return
    typer.echo(f"wrote {res.checkpoint}")
    typer.echo(f"loss {m['first_loss']:.5f} -> {m['last_loss']:.5f}; validation PSNR {m['val_psnr']:.2f} dB "
               f"(best {m['best_val_psnr']:.2f}); report: {res.report_dir}")


def _train_command(kind: str, default_model: str, summary: str):
    def command(
        scenes: list[Path] = typer.Argument(..., callback=_exists, help="Clean training scene(s); crops are drawn from them at random."),
        out: Path = typer.Option(..., "-o", "--out", callback=CHECKPOINT_OUT, help="Checkpoint to write (.safetensors)."),
        model: str = typer.Option(default_model, "--model", "-m", help="Architecture (hsikit models)."),
        val_scenes: Optional[list[Path]] = typer.Option(None, "--val", callback=_exists, metavar="SCENE", help="Validation scene(s) for the per-epoch PSNR (repeatable)."),
        degradation: Optional[list[str]] = typer.Option(None, "--degradation", "-d", metavar="NAME", help="Training degradation(s), one drawn per crop (denoisers; default blind-gaussian). Super-resolvers: downsample:method=bicubic|gaussian."),
        tasks: Optional[list[str]] = typer.Option(None, "--task", "-t", metavar="TASK", help="All-in-one restorers: tasks to train (default: all of the model's)."),
        scale: int = typer.Option(4, "--scale", "-s", min=1, help="Super-resolution factor."),
        iterations: Optional[int] = typer.Option(None, "--iterations", min=1, help="Optimiser steps (default: the recipe's)."),
        steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", min=1, help="Steps between validation passes."),
        lr: Optional[float] = typer.Option(None, "--lr", callback=_positive, help="Peak learning rate (default: the recipe's)."),
        loss: Optional[str] = typer.Option(None, "--loss", help="mse, l1 or l1-clamp (L1 of the output clamped to [0, 1]); default: the recipe's."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Crops per step."),
        crop: Optional[int] = typer.Option(None, "--crop", min=1, help="Training crop size in target pixels."),
        seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Random seed (crops, degradations, initialisation)."),
        select_best: Optional[bool] = typer.Option(None, "--select-best/--keep-last", help="Keep the weights of the best validation PSNR, or the last."),
        set_: Optional[list[str]] = typer.Option(None, "--set", metavar=SET_METAVAR, help="Model option KEY=VALUE (e.g. --set variant=m, --set dim=32)."),
        device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
        precision: str = typer.Option("32-true", "--precision", help=PRECISION_HELP),
        resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
        devices: int = typer.Option(1, "--devices", min=1, help=DEVICES_HELP),
        strategy: str = typer.Option("auto", "--strategy", help=STRATEGY_HELP),
        num_nodes: int = typer.Option(1, "--num-nodes", min=1, help=NUM_NODES_HELP),
        drop_bad_bands: bool = typer.Option(True, "--drop-bad-bands/--keep-bad-bands", help="Drop bad and water-vapour bands."),
        report_dir: Optional[Path] = typer.Option(None, "--report-dir", help="Report folder (default <out>_report/)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint/report."),
    ) -> None:
        _train(kind, scenes, out, model, val_scenes, degradation, tasks, scale, iterations, steps_per_epoch, lr,
               loss, batch_size, crop, seed, select_best, set_, device, precision, resume, drop_bad_bands, report_dir,
               overwrite, devices, strategy, num_nodes)

    command.__doc__ = summary
    return command


train_app.command("denoiser")(_train_command(
    "denoiser", "hsdt", "Train a denoiser (default HSDT) on clean scenes with noise synthesised on the fly."))
train_app.command("super-resolver")(_train_command(
    "super-resolver", "essaformer", "Train a super-resolver (default ESSAformer) on clean scenes down-sampled on the fly."))
train_app.command("restorer")(_train_command(
    "restorer", "mp-hsir", "Train an all-in-one restorer (default MP-HSIR) on clean scenes, one task drawn per crop."))
