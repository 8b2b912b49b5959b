"""Classification commands: ``classify``, ``train classifier``, ``evaluate`` and ``benchmark classify``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hsikit.cli.app import app, benchmark_app, train_app
from hsikit.cli.options import (ALLOW_RESAMPLE_HELP, CHECKPOINT_OUT, CLASSIFIER_HELP, DEVICE_HELP, RASTER_OUT,
                                RECIPE_HELP, RECORD_HELP, SET_METAVAR, Protocol, command_line, exists, model_config,
                                positive, run_options, share)
from hsikit.cli.specs import spec_options
from hsikit.cli.state import state
from hsikit.pipelines.options import CLASSIFY
from hsikit.training.run import RunOptions


@train_app.command("classifier")
@run_options
def train_classifier(
    scene: Optional[Path] = typer.Argument(None, callback=exists, help="Training scene (or use --dataset)."),
    labels: Optional[Path] = typer.Option(None, "--labels", "-l", callback=exists, help="Label raster on the scene grid, or polygons (GeoPackage/Shapefile) with a class attribute."),
    allow_resample: bool = typer.Option(False, "--allow-resample", help=ALLOW_RESAMPLE_HELP),
    out: Path = typer.Option(..., "-o", "--out", callback=CHECKPOINT_OUT, help="Checkpoint to write (.safetensors, JSON metadata inside)."),
    model: str = typer.Option("spectral-cnn", "--model", "-m", metavar="NAME", help=CLASSIFIER_HELP),
    recipe: Optional[str] = typer.Option(None, "--recipe", metavar="NAME", help=RECIPE_HELP),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="A benchmark dataset instead of SCENE/--labels (hsikit datasets list)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where benchmark datasets live (default $HSIKIT_DATA or ~/.cache/hsikit/datasets)."),
    attribute: Optional[str] = typer.Option(None, "--attribute", help="Class column of vector labels."),
    protocol: Protocol = typer.Option(Protocol.user, "--protocol", help="user: every labelled pixel trains except a validation share (--val); only --test-labels or --split give a test set. paper: the model paper's sampling (FreeNet 200 px/class, MorpMamba 25 % / 25 %, others 50 % / 20 %), the rest of the labels tested."),
    train: Optional[str] = typer.Option(None, "--train", metavar="FRACTION", callback=share, help="Share of each class that trains: 0.8 or 80%; 1 = all that validation leaves (the default; under --protocol paper, the paper's share)."),
    train_pixels: Optional[int] = typer.Option(None, "--train-pixels", min=1, metavar="N", help="Training pixels per class instead of --train."),
    val: Optional[str] = typer.Option(None, "--val", metavar="FRACTION", callback=share, help="Validation share of each class: 0.1 or 10% (the default; at least 1 pixel of a class with 2 or more; under --protocol paper, the paper's share); 0 = none."),
    val_pixels: Optional[int] = typer.Option(None, "--val-pixels", min=0, metavar="N", help="Validation pixels per class instead of --val."),
    test_labels: Optional[Path] = typer.Option(None, "--test-labels", callback=exists, help="Test labels (raster on the scene grid, or polygons): only these pixels are tested and scored; they never train."),
    split: Optional[Path] = typer.Option(None, "--split", callback=exists, help="Split raster on the scene grid: 1 train, 2 validation, 3 test (instead of --train/--val/--test-labels)."),
    disjoint: bool = typer.Option(False, "--disjoint", help="Drop validation/test pixels whose patch/receptive field overlaps a training pixel's."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs (default: the recipe's)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", min=1, help="Optimiser steps instead of epochs (FreeNet's recipe: 1000)."),
    patience: Optional[int] = typer.Option(None, "--patience", min=1, help="Early stopping: epochs without a better validation OA."),
    select_best: Optional[bool] = typer.Option(None, "--select-best/--keep-last", help="Keep the best-validation-OA weights or the last ones (default: the recipe's)."),
    lr: Optional[float] = typer.Option(None, "--lr", callback=positive, help="Learning rate (default: the recipe's)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Minibatch size (default depends on the model)."),
    drop_bad_bands: Optional[bool] = typer.Option(None, "--drop-bad-bands/--keep-bad-bands", help="Drop bad and water-vapour bands before the model."),
    pca: Optional[int] = typer.Option(None, "--pca", min=1, help="Reduce to N principal components first."),
    pca_whiten: Optional[bool] = typer.Option(None, "--pca-whiten/--no-pca-whiten", help="Scale PCA components to unit variance (MorpMamba's notebook does)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar=SET_METAVAR, help="Model option KEY=VALUE (e.g. --set reduction_ratio=0.5, --set patch=7)."),
    run: RunOptions = None,
) -> None:
    """Train a classifier; writes the checkpoint and a report (OA/AA/kappa, confusion matrix PNG/CSV)."""
    from hsikit.training.recipes import recipe_for

    recipe_for(model, recipe)  # an unknown recipe name stops here, before torch loads
    from hsikit.pipelines.train_classifier import labelled_scene
    from hsikit.pipelines.train_classifier import train_classifier as run_train

    sc, lab = labelled_scene(scene, labels, dataset=dataset, data_dir=data_dir)
    # the pipeline reads the split raster like the labels: grid checks, --allow-resample, one-line errors
    res = run_train(sc, lab, model=model, recipe=recipe, out=out, attribute=attribute,
                    allow_resample=allow_resample, protocol=protocol.value, train=train, train_pixels=train_pixels,
                    val=val, val_pixels=val_pixels, test_labels=test_labels, split=split, disjoint=disjoint,
                    epochs=epochs, iterations=iterations, patience=patience, select_best=select_best, lr=lr,
                    batch_size=batch_size, model_config=model_config(set_),
                    chain={"drop_bad_bands": drop_bad_bands, "pca": pca, "pca_whiten": pca_whiten},
                    run=run, echo=typer.echo)
    if not res.split_summary:  # a non-zero DDP rank: rank 0 reports
        return
    typer.echo(f"wrote {res.checkpoint}")
    m = res.metrics
    if res.scored_on is None:
        typer.echo(f"not scored: no test or validation pixels (report: {res.report_dir})")
        return
    note = "" if res.scored_on == "test" else " (no test set: give --test-labels or --split)"
    typer.echo(f"{res.scored_on} OA {m['oa']:.4f}  AA {m['aa']:.4f}  kappa {m['kappa']:.4f}{note}  "
               f"(report: {res.report_dir})")


# -- evaluate / benchmark ------------------------------------------------------------------------------------------
@app.command()
def evaluate(
    model: Path = typer.Argument(..., callback=exists, help="Classifier checkpoint (.safetensors)."),
    scene: Path = typer.Argument(..., callback=exists, help="Labelled scene to classify."),
    labels: Path = typer.Option(..., "--labels", "-l", callback=exists, help="Reference labels (raster on the scene grid, or polygons)."),
    allow_resample: bool = typer.Option(False, "--allow-resample", help=ALLOW_RESAMPLE_HELP),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder: class map, report.json, confusion matrix."),
    split: Optional[Path] = typer.Option(None, "--split", callback=exists, help="Split raster: only pixels with value 3 (test) are scored."),
    attribute: Optional[str] = typer.Option(None, "--attribute", help="Class column of vector labels."),
    tile: int = typer.Option(512, "--tile", min=1, help="Tile size in pixels."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder's files."),
    record: bool = typer.Option(True, "--record/--no-record", help=RECORD_HELP),
) -> None:
    """Classify a labelled scene and report OA, AA, kappa, per-class accuracy/F1 and the confusion matrix."""
    from hsikit.pipelines.evaluate import evaluate as run_eval

    res = run_eval(model, scene, labels, out=out, split=split, attribute=attribute, allow_resample=allow_resample,
                   tile=tile, device=device, overwrite=overwrite, progress=state["progress"], command=command_line(),
                   record=record)
    m = res.metrics
    typer.echo(f"OA {m['oa']:.4f}  AA {m['aa']:.4f}  kappa {m['kappa']:.4f}  on {m['n']} pixels")
    typer.echo(f"run folder: {res.run_dir}")



@benchmark_app.command("classify")
def benchmark_classify(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset key (hsikit datasets list) or enmap_potsdam."),
    model: str = typer.Option(..., "--model", "-m", metavar="NAME", help=CLASSIFIER_HELP),
    recipe: Optional[str] = typer.Option(None, "--recipe", metavar="NAME", help=RECIPE_HELP),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for checkpoints, reports and benchmark.json."),
    protocol: str = typer.Option("paper", "--protocol", help="paper (the model's training-sample protocol) or published (the dataset's split)."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Number of seeds (0..N-1)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Dataset folder (default $HSIKIT_DATA / cache)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Override the recipe's epochs."),
    iterations: Optional[int] = typer.Option(None, "--iterations", min=1, help="Override the recipe's iterations."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar=SET_METAVAR, help="Model option KEY=VALUE."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing results."),
) -> None:
    """Train and test MODEL on DATASET once per seed; prints each run and mean ± std of OA, AA and kappa."""
    state["interrupted"] = "benchmark.json was not written; the checkpoints of finished seeds are kept"
    from hsikit.training.recipes import recipe_for

    recipe_for(model, recipe)
    from hsikit.pipelines.benchmark import benchmark_classify as run_bench

    overrides = {k: v for k, v in {"epochs": epochs, "iterations": iterations, "recipe": recipe}.items()
                 if v is not None}
    res = run_bench(dataset, model, out=out, protocol=protocol, seeds=seeds, data_dir=data_dir,
                    overrides=overrides, model_config=model_config(set_), device=device, overwrite=overwrite,
                    progress=state["progress"], echo=typer.echo)
    s = res.summary()
    typer.echo(f"{model} on {dataset} ({protocol}, {seeds} seeds): OA {100 * s['oa']['mean']:.2f} ± "
               f"{100 * s['oa']['std']:.2f}  AA {100 * s['aa']['mean']:.2f} ± {100 * s['aa']['std']:.2f}  "
               f"kappa {s['kappa']['mean']:.4f} ± {s['kappa']['std']:.4f}")
    typer.echo(f"results: {res.out / 'benchmark.json'}")


# -- classify ------------------------------------------------------------------------------------------------------
@app.command()
@spec_options(CLASSIFY)
def classify(
    scene: Path = typer.Argument(..., callback=exists, help="Scene to classify."),
    out: Path = typer.Option(..., "-o", "--out", callback=RASTER_OUT, help="Class map to write (.tif; uint8, 0 = nodata)."),
    options: dict = None,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
) -> None:
    """Classify a whole scene in tiles into a QGIS-ready class map (colour table, class names, .qml style)."""
    from hsikit.pipelines.classify import classify as run_classify

    res = run_classify(str(scene), out=out, **options, overwrite=overwrite, progress=state["progress"],
                       command=command_line())
    mpx = res.pixels / 1e6
    typer.echo(f"wrote {res.class_map} (+ {res.qml.name}) in {res.seconds:.1f} s, {mpx / max(res.seconds, 1e-9):.2f} Mpx/s")
    if res.probabilities:
        typer.echo(f"wrote {res.probabilities}")
    for extra in (res.confidence, res.quicklook):
        if extra:
            typer.echo(f"wrote {extra}")
    counts = ", ".join(f"{k} {v}" for k, v in res.class_counts.items() if v)
    typer.echo(f"pixels per class: {counts}")
