"""Restoration commands: denoise, super-resolve, restore, evaluate-restoration, train denoiser|super-resolver|restorer.

Imported by :mod:`hsikit.cli.main` once its app exists; heavy libraries load inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hsikit.cli.app import app, text_width, train_app, wrap
from hsikit.cli.options import (CHECKPOINT_OUT, DEVICE_HELP, RASTER_OUT, RECORD_HELP, SET_METAVAR, command_line, exists,
                                model_config, positive, run_options)
from hsikit.cli.specs import spec_options
from hsikit.cli.state import state
from hsikit.pipelines.options import DENOISE, RESTORE, SUPER_RESOLVE, CommandSpec
from hsikit.training.run import RunOptions



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


def _restoration_command(spec: CommandSpec, pipeline: str, scene_help: str, out_help: str, summary: str):
    """The single-scene command of a restoration pipeline (denoise, super_resolve, restore): its options come from
    ``spec``; it calls ``hsikit.pipelines.restore.<pipeline>`` and prints what was written."""

    @spec_options(spec)
    def command(
        scene: Path = typer.Argument(..., callback=exists, help=scene_help),
        out: Path = typer.Option(..., "-o", "--out", callback=RASTER_OUT, help=out_help),
        options: dict = None,
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    ) -> None:
        from hsikit.pipelines import restore as pipelines

        run = getattr(pipelines, pipeline)
        _report(run(str(scene), out=out, **options, overwrite=overwrite, progress=state["progress"],
                    command_line=command_line()))

    command.__doc__ = summary
    return command


app.command("denoise")(_restoration_command(
    DENOISE, "denoise", "Noisy scene (any GDAL raster).", "Denoised scene to write (float32 COG, the model's bands).",
    "Denoise a whole scene in blended tiles, with a model (-m) or without; band wavelengths, CRS, transform and "
    "nodata are kept."))
app.command("super-resolve")(_restoration_command(
    SUPER_RESOLVE, "super_resolve", "Low-resolution scene.",
    "Super-resolved scene (float32 COG; pixel size divided by the scale).",
    "Super-resolve a whole scene in tiles: same CRS and origin, pixel size / scale, band metadata kept."))
app.command("restore")(_restoration_command(
    RESTORE, "restore", "Degraded scene.", "Restored scene to write (float32 COG).",
    "Restore a scene with a prompt-driven all-in-one model (MP-HSIR) or any single-task restoration model."))


@app.command("evaluate-restoration")
def evaluate_restoration(
    model: Path = typer.Argument(..., callback=exists, help="Restoration checkpoint."),
    scenes: list[Path] = typer.Argument(..., callback=exists, help="Clean reference scene(s), not used in training."),
    degradation: Optional[str] = typer.Option(None, "--degradation", "-d", help="Degradation(s) to synthesise, joined by '+', e.g. gaussian:sigma=50, mixture, downsample:scale=4, blur:kernel_size=11+gaussian:sigma=10 (default: the model's task). `hsikit degradations` lists them."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help=RESTORE["task"].help),
    scale: Optional[int] = typer.Option(None, "--scale", "-s", min=1, help="Super-resolution factor (all-in-one models)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the synthetic degradation."),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="Also score classical baselines (bicubic; wavelet, TV and PCA denoising)."),
    tile: Optional[int] = typer.Option(None, "--tile", min=1, help=RESTORE["tile"].help),
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
    from hsikit.restoration.degradations import list_degradations

    entries = list_degradations()
    indent = " " * (max(len(name) for name, _ in entries) + 2)
    for name, doc in entries:  # the description wraps under itself, at least two spaces after the longest name
        typer.echo(name + wrap(doc, text_width(), indent)[len(name):])


def _train_command(kind: str, default_model: str, summary: str):
    @run_options
    def command(
        scenes: list[Path] = typer.Argument(..., callback=exists, help="Clean training scene(s); crops are drawn from them at random."),
        out: Path = typer.Option(..., "-o", "--out", callback=CHECKPOINT_OUT, help="Checkpoint to write (.safetensors)."),
        model: str = typer.Option(default_model, "--model", "-m", help="Architecture (hsikit models)."),
        val_scenes: Optional[list[Path]] = typer.Option(None, "--val", callback=exists, metavar="SCENE", help="Validation scene(s) for the per-epoch PSNR (repeatable)."),
        degradation: Optional[list[str]] = typer.Option(None, "--degradation", "-d", metavar="NAME", help="Training degradation(s), one drawn per crop (denoisers; default blind-gaussian). Super-resolvers: downsample:method=bicubic|gaussian."),
        tasks: Optional[list[str]] = typer.Option(None, "--task", "-t", metavar="TASK", help="All-in-one restorers: tasks to train (default: all of the model's)."),
        scale: int = typer.Option(4, "--scale", "-s", min=1, help="Super-resolution factor."),
        iterations: Optional[int] = typer.Option(None, "--iterations", min=1, help="Optimiser steps (default: the recipe's)."),
        steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", min=1, help="Steps between validation passes."),
        lr: Optional[float] = typer.Option(None, "--lr", callback=positive, help="Peak learning rate (default: the recipe's)."),
        loss: Optional[str] = typer.Option(None, "--loss", help="mse, l1 or l1-clamp (L1 of the output clamped to [0, 1]); default: the recipe's."),
        batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Crops per step."),
        crop: Optional[int] = typer.Option(None, "--crop", min=1, help="Training crop size in target pixels."),
        select_best: Optional[bool] = typer.Option(None, "--select-best/--keep-last", help="Keep the weights of the best validation PSNR, or the last."),
        set_: Optional[list[str]] = typer.Option(None, "--set", metavar=SET_METAVAR, help="Model option KEY=VALUE (e.g. --set variant=m, --set dim=32)."),
        drop_bad_bands: bool = typer.Option(True, "--drop-bad-bands/--keep-bad-bands", help="Drop bad and water-vapour bands."),
        run: RunOptions = None,
    ) -> None:
        from hsikit.pipelines.train_restorer import train_restorer

        res = train_restorer([str(s) for s in scenes], out=out, kind=kind, model=model,
                             model_config=model_config(set_), val_scenes=[str(s) for s in val_scenes or []],
                             degradations=degradation, tasks=tasks, scale=scale, iterations=iterations,
                             steps_per_epoch=steps_per_epoch, lr=lr, loss=loss, batch_size=batch_size, crop=crop,
                             select_best=select_best, drop_bad_bands=drop_bad_bands, run=run)
        m = res.metrics
        if not m:  # a non-zero DDP rank: rank 0 reports
            return
        typer.echo(f"wrote {res.checkpoint}")
        typer.echo(f"loss {m['first_loss']:.5f} -> {m['last_loss']:.5f}; validation PSNR {m['val_psnr']:.2f} dB "
                   f"(best {m['best_val_psnr']:.2f}); report: {res.report_dir}")

    command.__doc__ = summary
    return command


train_app.command("denoiser")(_train_command(
    "denoiser", "hsdt", "Train a denoiser (default HSDT) on clean scenes with noise synthesised on the fly."))
train_app.command("super-resolver")(_train_command(
    "super-resolver", "essaformer", "Train a super-resolver (default ESSAformer) on clean scenes down-sampled on the fly."))
train_app.command("restorer")(_train_command(
    "restorer", "mp-hsir", "Train an all-in-one restorer (default MP-HSIR) on clean scenes, one task drawn per crop."))
