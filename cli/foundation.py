"""Foundation-model commands: ``pretrain spectralgpt``, ``train scene-classifier``, ``train segmenter``.

Imported by :mod:`hsikit.cli.main`; heavy libraries load inside the commands.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from hsikit.cli.app import app, train_app
from hsikit.cli.options import (ALLOW_RESAMPLE_HELP, CHECKPOINT_OUT, SET_METAVAR, exists, fraction, model_config,
                                positive, run_options)
from hsikit.training.run import RunOptions

pretrain_app = typer.Typer(help="Pretrain foundation models on unlabelled scene archives.", no_args_is_help=True)
app.add_typer(pretrain_app, name="pretrain")


class Variant(str, Enum):
    tiny = "tiny"
    small = "small"
    base = "base"


class Normalization(str, Enum):
    dataset = "dataset"
    zscore = "zscore"
    per_image = "per-image"
    none = "none"


class Spectral(str, Enum):
    auto = "auto"
    select = "select"
    resample = "resample"


class SegHead(str, Enum):
    upernet = "upernet"
    smp_upernet = "smp-upernet"


_NORM_HELP = ("dataset: per-band 2/98 % of sampled training windows -> 0/1, stored in the checkpoint (seam-free "
              "tiles); zscore: their mean/std; per-image: the official per-image min-max; none.")
_SPECTRAL_HELP = ("How scene bands become the model's bands: select them by name, resample a hyperspectral "
                  "spectrum onto them (Gaussian responses), or auto (select if all are named, else resample).")
_SET_HELP = "Model option KEY=VALUE (e.g. --set patch_size=4, --set mask_ratio=0.75, --set head_dropout=0.1)."


def _cfg(set_: list[str] | None, **explicit) -> dict:
    cfg = model_config(set_)
    cfg.update({k: v for k, v in explicit.items() if v is not None})
    return cfg


@pretrain_app.command("spectralgpt")
@run_options
def pretrain_spectralgpt(
    archives: list[Path] = typer.Argument(..., callback=exists, help="Scenes, folders (searched recursively; *.SAFE products count as one scene), list files (.txt/.csv, one path per line) or local STAC catalogues (.json). Windows are read on demand, scenes are never loaded whole."),
    out: Path = typer.Option(..., "-o", "--out", callback=CHECKPOINT_OUT, help="Checkpoint to write (.safetensors; its encoder initialises `train segmenter|scene-classifier --init`)."),
    variant: Variant = typer.Option(Variant.small, "--variant", help="tiny (tests), small (CPU), base (the published shapes, 85 M encoder)."),
    img_size: Optional[int] = typer.Option(None, "--img-size", min=1, help="Model input side in px (default 128; a multiple of the patch size)."),
    mask_ratio: Optional[float] = typer.Option(None, "--mask-ratio", callback=fraction, help="Fraction of 3-D tokens hidden (default 0.9, the paper's)."),
    val: Optional[list[Path]] = typer.Option(None, "--val", callback=exists, metavar="PATH", help="Validation scene(s)/folders for the per-epoch loss on fixed windows (default: windows of the training scenes)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimiser steps (default 2000)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs of --steps-per-epoch steps, instead of --steps."),
    steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", min=1, help="Steps between validation passes (default 100)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Windows per step (default 16)."),
    lr: Optional[float] = typer.Option(None, "--lr", callback=positive, help="Peak learning rate (default 1.5e-3, for CPU batches and budgets)."),
    base_lr: Optional[float] = typer.Option(None, "--base-lr", callback=positive, help="Use the paper's rule instead: peak = BASE_LR x global batch / 256 (batch x processes; the paper: 2e-4 at 4096)."),
    chip: Optional[int] = typer.Option(None, "--chip", min=1, help="Scene pixels one sample covers before the random resized crop (default: --img-size)."),
    normalization: Normalization = typer.Option(Normalization.dataset, "--normalization", help=_NORM_HELP),
    spectral: Spectral = typer.Option(Spectral.auto, "--spectral", help=_SPECTRAL_HELP),
    preview_every: Optional[int] = typer.Option(None, "--preview-every", min=0, help="Write a reconstruction preview PNG every N steps (default: 5 over the run; 0: none)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar=SET_METAVAR, help=_SET_HELP),
    run: RunOptions = None,
) -> None:
    """Pretrain SpectralGPT (3-D spectral masked autoencoder) on windows streamed from a scene archive; writes
    the checkpoint, report.json, loss_curve.png and reconstruction previews (original / masked / reconstructed).

    With --devices (or --num-nodes) above 1, every process draws its own --batch-size windows per step: the
    global batch is --batch-size x processes, with the same steps and learning rate."""
    from hsikit.pipelines.pretrain import pretrain_spectralgpt as pretrain

    res = pretrain([str(a) for a in archives], out=out, variant=variant.value,
                   model_config=_cfg(set_, img_size=img_size, mask_ratio=mask_ratio),
                   val=[str(v) for v in val or []] or None, steps=steps, epochs=epochs,
                   steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr, base_lr=base_lr, chip=chip,
                   normalization=normalization.value, spectral=spectral.value, preview_every=preview_every, run=run)
    m = res.metrics
    if not m:  # a non-zero DDP rank: rank 0 reports
        return
    pps = m.get("patches_per_second")
    typer.echo(f"wrote {res.checkpoint}")
    typer.echo(f"loss {m['first_loss']:.4f} -> {m['last_loss']:.4f}; validation loss {m['first_val_loss']:.4f} -> "
               f"{m['last_val_loss']:.4f}; {pps:.1f} patches/s; report: {res.report_dir}" if pps else
               f"loss {m['first_loss']:.4f} -> {m['last_loss']:.4f}; report: {res.report_dir}")


@train_app.command("segmenter")
@run_options
def train_segmenter(
    scenes: list[Path] = typer.Argument(..., callback=exists, help="Training scene(s) (one --labels each), or CSV list(s) with columns image,mask (paths relative to the CSV)."),
    labels: Optional[list[Path]] = typer.Option(None, "--labels", "-l", callback=exists, metavar="PATH", help="Label raster (on or reprojected to the scene grid) or polygons per scene, repeated in scene order; 0 = unlabelled (ignored)."),
    out: Path = typer.Option(..., "-o", "--out", callback=CHECKPOINT_OUT, help="Checkpoint to write (.safetensors with the full preprocessing chain; use it with `hsikit classify`)."),
    init: Optional[Path] = typer.Option(None, "--init", callback=exists, help="SpectralGPT checkpoint whose encoder initialises the segmenter (from `hsikit pretrain spectralgpt`); without it the encoder starts random."),
    val: Optional[list[Path]] = typer.Option(None, "--val", callback=exists, metavar="PATH", help="Validation scene(s) or CSV list(s): OA/mIoU after every epoch, whole scenes in tiles."),
    val_labels: Optional[list[Path]] = typer.Option(None, "--val-labels", callback=exists, metavar="PATH", help="Labels of each --val scene (in order)."),
    allow_resample: bool = typer.Option(False, "--allow-resample", help=ALLOW_RESAMPLE_HELP),
    attribute: Optional[str] = typer.Option(None, "--attribute", help="Class column of vector labels."),
    class_names: Optional[str] = typer.Option(None, "--class-names", help="Comma-separated names of classes 1..K (default: from the labels' legend)."),
    variant: Optional[Variant] = typer.Option(None, "--variant", help="Encoder size without --init (default small)."),
    img_size: Optional[int] = typer.Option(None, "--img-size", min=1, help="Training window side in px (default: the --init model's, else 128); larger inputs run as overlapping windows of this size."),
    head: Optional[SegHead] = typer.Option(None, "--head", help="upernet (the paper's pyramid + UPerNet head) or smp-upernet (segmentation-models-pytorch's decoder)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimiser steps (default 1000)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs of --steps-per-epoch steps, instead of --steps."),
    steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", min=1, help="Steps between validation passes (default 50)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Windows per step (default 8)."),
    lr: Optional[float] = typer.Option(None, "--lr", callback=positive, help="Peak learning rate (default 1e-4, the paper's)."),
    layer_decay: Optional[float] = typer.Option(None, "--layer-decay", max=1, callback=positive, help="Layer-wise lr decay of the encoder blocks (default 1 = off; e.g. 0.75)."),
    freeze_encoder: bool = typer.Option(False, "--freeze-encoder", help="Train the head alone on the fixed (e.g. pretrained) encoder: the frozen-feature probe."),
    select_best: Optional[bool] = typer.Option(None, "--select-best/--keep-last", help="Keep the weights of the best validation mIoU (default) or the last."),
    normalization: Optional[Normalization] = typer.Option(None, "--normalization", help=_NORM_HELP + " Default: the --init checkpoint's statistics, else dataset."),
    spectral: Spectral = typer.Option(Spectral.auto, "--spectral", help=_SPECTRAL_HELP),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar=SET_METAVAR, help=_SET_HELP),
    run: RunOptions = None,
) -> None:
    """Fine-tune a SpectralGPT segmenter (encoder + UPerNet head) on labelled scenes; `hsikit classify` then maps
    whole scenes with it.

    With --devices (or --num-nodes) above 1, every process draws its own --batch-size windows per step: the
    global batch is --batch-size x processes, with the same steps and learning rate."""
    from hsikit.pipelines.finetune import train_segmenter as train

    res = train([str(s) for s in scenes], [str(x) for x in labels or []], out=out, init=init,
                variant=variant.value if variant else None,
                model_config=_cfg(set_, img_size=img_size, head=head.value if head else None),
                val=[str(v) for v in val or []] or None, val_labels=[str(v) for v in val_labels or []],
                attribute=attribute, allow_resample=allow_resample,
                class_names=class_names.split(",") if class_names else None, steps=steps, epochs=epochs,
                steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr, select_best=select_best,
                layer_decay=layer_decay, freeze_encoder=freeze_encoder or None,
                normalization=normalization.value if normalization else None, spectral=spectral.value, run=run)
    m = res.metrics
    if not m:  # a non-zero DDP rank: rank 0 reports
        return
    typer.echo(f"wrote {res.checkpoint}")
    val_txt = f"; validation OA {m['val_oa']:.4f}, mIoU {m['val_miou']:.4f}" if "val_oa" in m else ""
    typer.echo(f"loss {m['first_loss']:.4f} -> {m['last_loss']:.4f}{val_txt}; report: {res.report_dir}")


@train_app.command("scene-classifier")
@run_options
def train_scene_classifier(
    chips: list[Path] = typer.Argument(..., callback=exists, help="Labelled chips: folder(s) with one sub-folder per class (EuroSAT layout: root/<class>/*.tif) and/or CSV file(s) of path,label."),
    out: Path = typer.Option(..., "-o", "--out", callback=CHECKPOINT_OUT, help="Checkpoint to write (.safetensors)."),
    init: Optional[Path] = typer.Option(None, "--init", callback=exists, help="SpectralGPT checkpoint whose encoder initialises the classifier."),
    val: Optional[list[Path]] = typer.Option(None, "--val", callback=exists, metavar="PATH", help="Validation chips (same layouts): accuracy after every epoch."),
    variant: Optional[Variant] = typer.Option(None, "--variant", help="Encoder size without --init (default small)."),
    img_size: Optional[int] = typer.Option(None, "--img-size", min=1, help="Chips are resized to this side (default: the --init model's, else 128)."),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, help="Optimiser steps (default 1000)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs of --steps-per-epoch steps, instead of --steps."),
    steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", min=1, help="Steps between validation passes (default 50)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Chips per step (default 16)."),
    lr: Optional[float] = typer.Option(None, "--lr", callback=positive, help="Peak learning rate (default 2e-4)."),
    layer_decay: Optional[float] = typer.Option(None, "--layer-decay", max=1, callback=positive, help="Layer-wise lr decay (default 0.75; 1 = off)."),
    mixup: Optional[float] = typer.Option(None, "--mixup", min=0, help="Mixup Beta parameter (default 0.8; 0 = off)."),
    cutmix: Optional[float] = typer.Option(None, "--cutmix", min=0, help="Cutmix Beta parameter (default 1.0; 0 = off)."),
    smoothing: Optional[float] = typer.Option(None, "--smoothing", min=0, max=1, help="Label smoothing (default 0.1)."),
    select_best: Optional[bool] = typer.Option(None, "--select-best/--keep-last", help="Keep the weights of the best validation accuracy (default) or the last."),
    normalization: Optional[Normalization] = typer.Option(None, "--normalization", help=_NORM_HELP + " Default: the --init checkpoint's statistics, else dataset."),
    spectral: Spectral = typer.Option(Spectral.auto, "--spectral", help=_SPECTRAL_HELP),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar=SET_METAVAR, help=_SET_HELP),
    run: RunOptions = None,
) -> None:
    """Fine-tune a SpectralGPT scene classifier (one class per chip, as in EuroSAT) with layer-wise lr decay,
    mixup/cutmix and label smoothing.

    With --devices (or --num-nodes) above 1, every process draws its own --batch-size chips per step: the
    global batch is --batch-size x processes, with the same steps and learning rate."""
    from hsikit.pipelines.finetune import train_scene_classifier as train

    res = train([str(c) for c in chips], out=out, init=init, variant=variant.value if variant else None,
                model_config=_cfg(set_, img_size=img_size), val=[str(v) for v in val or []] or None, steps=steps,
                epochs=epochs, steps_per_epoch=steps_per_epoch, batch_size=batch_size, lr=lr,
                select_best=select_best, mixup=mixup, cutmix=cutmix, smoothing=smoothing, layer_decay=layer_decay,
                normalization=normalization.value if normalization else None, spectral=spectral.value, run=run)
    m = res.metrics
    if not m:  # a non-zero DDP rank: rank 0 reports
        return
    typer.echo(f"wrote {res.checkpoint}")
    val_txt = f"; validation accuracy {m['val_accuracy']:.4f}" if "val_accuracy" in m else ""
    typer.echo(f"loss {m['first_loss']:.4f} -> {m['last_loss']:.4f}{val_txt}; report: {res.report_dir}")
