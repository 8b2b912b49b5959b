"""`hsikit` command-line entry point.

Every command is a thin wrapper over a documented Python function (``hsikit.classify``, ``hsikit.scene_info`` …).
Heavy libraries (torch, the models) are imported inside the commands so ``hsikit --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Optional, Tuple

import click
import typer

from hsikit._version import __version__
from hsikit.errors import HsikitError

app = typer.Typer(
    name="hsikit",
    help="Hyperspectral and multispectral remote sensing: inspect, preprocess, train and classify whole scenes "
    "in tiles, writing georeferenced Cloud-Optimised GeoTIFFs that open styled in QGIS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
from hsikit.cli.datasets import app as datasets_app  # noqa: E402  (no torch import)

train_app = typer.Typer(help="Train models on labelled scenes.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(datasets_app, name="datasets")

_state = {"debug": False, "progress": True}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hsikit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """hsikit: read any GDAL raster, prepare its bands, run models over the whole scene in tiles."""
    _state["debug"] = debug
    _state["progress"] = not quiet and sys.stderr.isatty()


def _command_line() -> str:
    """The invoking command for provenance tags, with paths reduced to file names."""
    parts = ["hsikit"]
    for a in sys.argv[1:]:
        parts.append(Path(a).name if (os.sep in a and Path(a).exists()) else a)
    return " ".join(parts)


Tuple2 = Tuple[float, float]


class Fmt(str, Enum):
    cog = "cog"
    gtiff = "gtiff"


class ProbFmt(str, Enum):
    float32 = "float32"
    uint8 = "uint8"


# -- info ----------------------------------------------------------------------------------------------------------
@app.command()
def info(
    scene: Path = typer.Argument(..., help="Any raster GDAL reads (GeoTIFF, ENVI .hdr, .lan, VRT, HDF5 subdataset) or a benchmark .mat cube."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    variable: Optional[str] = typer.Option(None, help="Variable name inside a .mat file."),
) -> None:
    """Show a scene's size, bands, wavelength range, bad bands, CRS, resolution, nodata and dtype."""
    from hsikit.pipelines.info import format_info, scene_info

    d = scene_info(str(scene), variable=variable)
    typer.echo(json.dumps(d, indent=2) if as_json else format_info(d))


# -- models --------------------------------------------------------------------------------------------------------
@app.command()
def models(as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")) -> None:
    """List the registered model architectures with their task and inputs."""
    from hsikit.models.registry import list_models

    entries = list_models()
    if as_json:
        typer.echo(json.dumps([{"name": e.name, "task": e.task, "inputs": e.inputs, "description": e.description}
                               for e in entries], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table("name", "task", "inputs", "description")
    for e in entries:
        t.add_row(e.name, e.task, e.inputs, e.description)
    Console().print(t)


# -- preprocess ----------------------------------------------------------------------------------------------------
@app.command()
def preprocess(
    scene: Path = typer.Argument(..., help="Input scene."),
    out: Path = typer.Option(..., "-o", "--out", help="Output GeoTIFF (float32, NaN nodata)."),
    drop_bad_bands: bool = typer.Option(False, "--drop-bad-bands", help="Drop the file's bad bands and the 1340-1460 / 1790-1960 nm water-vapour bands."),
    wavelength_range: Optional[Tuple2] = typer.Option(None, "--wavelength-range", help="Keep bands between MIN and MAX nm.", metavar="MIN MAX"),
    resample_to: Optional[str] = typer.Option(None, "--resample-to", help="Resample spectrally to a sensor's bands (sentinel2, landsat8) with Gaussian responses."),
    scale: Optional[float] = typer.Option(None, "--scale", help="Multiply values by this factor (e.g. 0.0001 for reflectance x 10000); default: the file's own scale/offset when set."),
    normalize: bool = typer.Option(False, "--normalize", help="Standardise each band (z-score from streamed statistics)."),
    pca: Optional[int] = typer.Option(None, "--pca", help="Keep N principal components (covariance streamed over the scene)."),
    chain: Optional[Path] = typer.Option(None, "--chain", help="A preprocessing chain as JSON (e.g. from a checkpoint) instead of the options."),
    fmt: Fmt = typer.Option(Fmt.cog, "--format", help="Output layout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
) -> None:
    """Prepare a scene's bands (bad bands, subsetting, scaling, spectral resampling, normalisation, PCA)."""
    from hsikit.pipelines.preprocess import preprocess_scene as run_preprocess

    res = run_preprocess(str(scene), out=out, chain=chain, drop_bad_bands=drop_bad_bands,
                         wavelength_range=tuple(wavelength_range) if wavelength_range else None,
                         resample_to=resample_to, scale=scale, normalize=normalize, pca=pca, fmt=fmt.value,
                         overwrite=overwrite, progress=_state["progress"], command=_command_line())
    typer.echo(f"wrote {res.out} ({res.bands_in} -> {res.bands_out} bands, {res.seconds:.1f} s)")


# -- train ---------------------------------------------------------------------------------------------------------
class ClsModel(str, Enum):
    freenet = "freenet"
    morpmamba = "morpmamba"
    unet = "unet"
    spectral_cnn = "spectral-cnn"
    svm = "svm"
    random_forest = "random-forest"


DEVICE_HELP = "auto, cpu, cuda or cuda:N."
PRECISION_HELP = "Lightning precision: 32-true, 16-mixed, bf16-mixed."
RESUME_HELP = "Continue an interrupted run from <report>/checkpoints/last.ckpt."
DEVICES_HELP = ("Processes (CPU) or GPUs per node; more than one trains with distributed data parallel (each "
                "process takes its share of every epoch; gloo on CPU). The other ranks re-run this command.")
STRATEGY_HELP = ("auto (DDP when --devices or --num-nodes > 1), ddp, or another Lightning strategy name (not the "
                 "spawn/fork ones).")
NUM_NODES_HELP = "Nodes of a multi-node DDP run (launch with torchrun or a cluster scheduler on each node)."


def _quiet_ddp(devices: int, num_nodes: int) -> None:
    """Multi-process runs: silence torch's C++ advice that DDP found no unused parameter this time (hsikit keeps the
    check on for models that leave some unused). Must run before torch is imported; the other ranks inherit it."""
    if devices * num_nodes > 1:
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")


def _model_config(items: list[str] | None) -> dict:
    """``KEY=VALUE`` pairs (values parsed as JSON when they parse) into a model config dict."""
    from hsikit.errors import OptionError

    cfg = {}
    for it in items or []:
        if "=" not in it:
            raise OptionError(f"--set expects KEY=VALUE, not {it!r}")
        k, v = it.split("=", 1)
        try:
            cfg[k.strip().replace("-", "_")] = json.loads(v)
        except json.JSONDecodeError:
            cfg[k.strip().replace("-", "_")] = v
    return cfg


@train_app.command("classifier")
def train_classifier(
    scene: Optional[Path] = typer.Argument(None, help="Training scene (or use --dataset)."),
    labels: Optional[Path] = typer.Option(None, "--labels", "-l", help="Label raster on the scene grid, or polygons (GeoPackage/Shapefile) with a class attribute."),
    out: Path = typer.Option(..., "-o", "--out", help="Checkpoint to write (.safetensors, JSON metadata inside)."),
    model: ClsModel = typer.Option(ClsModel.spectral_cnn, "--model", "-m", help="Architecture; each trains with its paper's recipe (see README)."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="A benchmark dataset instead of SCENE/--labels (hsikit datasets list)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where benchmark datasets live (default $HSIKIT_DATA or ~/.cache/hsikit/datasets)."),
    attribute: Optional[str] = typer.Option(None, "--attribute", help="Class column of vector labels."),
    train: Optional[float] = typer.Option(None, "--train", help="Training pixels per class: a fraction (<1) or a count (>=1). Default: the model's paper protocol."),
    val: Optional[float] = typer.Option(None, "--val", help="Validation pixels per class: a fraction or a count."),
    split: Optional[Path] = typer.Option(None, "--split", help="Split raster on the scene grid: 1 train, 2 validation, 3 test (overrides --train/--val)."),
    disjoint: bool = typer.Option(False, "--disjoint", help="Drop validation/test pixels whose patch/receptive field overlaps a training pixel's."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Epochs (default: the recipe's)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Optimiser steps instead of epochs (FreeNet's recipe: 1000)."),
    patience: Optional[int] = typer.Option(None, "--patience", help="Early stopping: epochs without a better validation OA."),
    select_best: Optional[bool] = typer.Option(None, "--select-best/--keep-last", help="Keep the best-validation-OA weights or the last ones (default: the recipe's)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Learning rate (default: the recipe's)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Minibatch size (default depends on the model)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed (splits, initialisation, batches)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("32-true", "--precision", help=PRECISION_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    devices: int = typer.Option(1, "--devices", help=DEVICES_HELP),
    strategy: str = typer.Option("auto", "--strategy", help=STRATEGY_HELP),
    num_nodes: int = typer.Option(1, "--num-nodes", help=NUM_NODES_HELP),
    drop_bad_bands: Optional[bool] = typer.Option(None, "--drop-bad-bands/--keep-bad-bands", help="Drop bad and water-vapour bands before the model."),
    pca: Optional[int] = typer.Option(None, "--pca", help="Reduce to N principal components first."),
    pca_whiten: Optional[bool] = typer.Option(None, "--pca-whiten/--no-pca-whiten", help="Scale PCA components to unit variance (MorpMamba's notebook does)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Model option KEY=VALUE (e.g. --set reduction_ratio=0.5, --set patch=7)."),
    report_dir: Optional[Path] = typer.Option(None, "--report-dir", help="Where to write the report (default: <out>_report/)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint/report."),
) -> None:
    """Train a classifier; writes the checkpoint and a report (OA/AA/kappa, confusion matrix PNG/CSV)."""
    _quiet_ddp(devices, num_nodes)
    from hsikit.errors import OptionError
    from hsikit.pipelines.train_classifier import train_classifier as run_train

    if dataset:
        if scene or labels:
            raise OptionError("give either SCENE --labels L or --dataset, not both")
        from hsikit.datasets import load

        loaded = load(dataset, data_dir)
        sc, lab = loaded.scene, loaded.label_map()
    else:
        if scene is None or labels is None:
            raise OptionError("give SCENE and --labels, or --dataset")
        sc, lab = str(scene), str(labels)
    split_arr = None
    if split is not None:
        import rasterio

        with rasterio.open(split) as src:
            split_arr = src.read(1)
    res = run_train(sc, lab, model=model.value, out=out, attribute=attribute, train=train, val=val, split=split_arr,
                    disjoint=disjoint, epochs=epochs, iterations=iterations, patience=patience,
                    select_best=select_best, lr=lr,
                    batch_size=batch_size, seed=seed, device=device, precision=precision, resume=resume,
                    model_config=_model_config(set_),
                    chain={"drop_bad_bands": drop_bad_bands, "pca": pca, "pca_whiten": pca_whiten},
                    report_dir=report_dir, overwrite=overwrite, progress=_state["progress"], command=_command_line(),
                    devices=devices, strategy=strategy, num_nodes=num_nodes)
    m = res.metrics
    if not m:  # a non-zero DDP rank: rank 0 reports
        return
    typer.echo(f"wrote {res.checkpoint}")
    typer.echo(f"test OA {m['oa']:.4f}  AA {m['aa']:.4f}  kappa {m['kappa']:.4f}  (report: {res.report_dir})")


# -- evaluate / benchmark ------------------------------------------------------------------------------------------
@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="Classifier checkpoint (.safetensors)."),
    scene: Path = typer.Argument(..., help="Labelled scene to classify."),
    labels: Path = typer.Option(..., "--labels", "-l", help="Reference labels (raster on the scene grid, or polygons)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder: class map, report.json, confusion matrix."),
    split: Optional[Path] = typer.Option(None, "--split", help="Split raster: only pixels with value 3 (test) are scored."),
    attribute: Optional[str] = typer.Option(None, "--attribute", help="Class column of vector labels."),
    tile: int = typer.Option(512, "--tile", help="Tile size in pixels."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder's files."),
) -> None:
    """Classify a labelled scene and report OA, AA, kappa, per-class accuracy/F1 and the confusion matrix."""
    from hsikit.pipelines.evaluate import evaluate as run_eval

    res = run_eval(model, scene, labels, out=out, split=split, attribute=attribute, tile=tile, device=device,
                   overwrite=overwrite, progress=_state["progress"], command=_command_line())
    m = res.metrics
    typer.echo(f"OA {m['oa']:.4f}  AA {m['aa']:.4f}  kappa {m['kappa']:.4f}  on {m['n']} pixels")
    typer.echo(f"run folder: {res.run_dir}")


benchmark_app = typer.Typer(help="Run a paper's protocol over several seeds and report mean ± std.", no_args_is_help=True)
app.add_typer(benchmark_app, name="benchmark")


@benchmark_app.command("classify")
def benchmark_classify(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset key (hsikit datasets list) or enmap_potsdam."),
    model: ClsModel = typer.Option(..., "--model", "-m", help="Architecture."),
    out: Path = typer.Option(..., "-o", "--out", help="Folder for checkpoints, reports and benchmark.json."),
    protocol: str = typer.Option("paper", "--protocol", help="paper (the model's training-sample protocol) or published (the dataset's split)."),
    seeds: int = typer.Option(5, "--seeds", help="Number of seeds (0..N-1)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Dataset folder (default $HSIKIT_DATA / cache)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override the recipe's epochs."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Override the recipe's iterations."),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="Model option KEY=VALUE."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing results."),
) -> None:
    """Train and test MODEL on DATASET once per seed; prints each run and mean ± std of OA, AA and kappa."""
    from hsikit.pipelines.benchmark import benchmark_classify as run_bench

    overrides = {k: v for k, v in {"epochs": epochs, "iterations": iterations}.items() if v is not None}
    res = run_bench(dataset, model.value, out=out, protocol=protocol, seeds=seeds, data_dir=data_dir,
                    overrides=overrides, model_config=_model_config(set_), device=device, overwrite=overwrite,
                    progress=_state["progress"], echo=typer.echo)
    s = res.summary()
    typer.echo(f"{model.value} on {dataset} ({protocol}, {seeds} seeds): OA {100 * s['oa']['mean']:.2f} ± "
               f"{100 * s['oa']['std']:.2f}  AA {100 * s['aa']['mean']:.2f} ± {100 * s['aa']['std']:.2f}  "
               f"kappa {s['kappa']['mean']:.4f} ± {s['kappa']['std']:.4f}")
    typer.echo(f"results: {res.out / 'benchmark.json'}")


# -- classify ------------------------------------------------------------------------------------------------------
@app.command()
def classify(
    scene: Path = typer.Argument(..., help="Scene to classify."),
    out: Path = typer.Option(..., "-o", "--out", help="Class map to write (.tif; uint8, 0 = nodata)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint (.safetensors); default: the bundled sample model."),
    tile: int = typer.Option(512, "--tile", help="Tile size in pixels."),
    overlap: Optional[int] = typer.Option(None, "--overlap", help="Tile overlap in pixels (default 25% of the tile, at least the model's receptive field)."),
    batch_size: int = typer.Option(2, "--batch-size", help="Tiles per model call (image models; pixel models are fed in pixel chunks)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    probabilities: Optional[ProbFmt] = typer.Option(None, "--probabilities", help="Also write per-class probabilities: float32 (the default when no value is given) or uint8 (p x 254)."),
    confidence: bool = typer.Option(False, "--confidence", help="Also write the winning class's probability (float32)."),
    quicklook: bool = typer.Option(False, "--quicklook", help="Also write a PNG quicklook with a legend."),
    legend: Optional[Path] = typer.Option(None, "--legend", help="Own class names/colours (.json, .csv or .clr: value, name, colour)."),
    fmt: Fmt = typer.Option(Fmt.cog, "--format", help="Output layout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
) -> None:
    """Classify a whole scene in tiles into a QGIS-ready class map (colour table, class names, .qml style)."""
    from hsikit.pipelines.classify import classify as run_classify

    res = run_classify(str(scene), out=out, model=model, tile=tile, overlap=overlap, batch_size=batch_size,
                       device=device, probabilities=probabilities.value if probabilities else None,
                       confidence=confidence, quicklook=quicklook, legend=legend, fmt=fmt.value, overwrite=overwrite,
                       progress=_state["progress"], command=_command_line())
    mpx = res.pixels / 1e6
    typer.echo(f"wrote {res.class_map} (+ {res.qml.name}) in {res.seconds:.1f} s, {mpx / max(res.seconds, 1e-9):.2f} Mpx/s")
    if res.probabilities:
        typer.echo(f"wrote {res.probabilities}")
    for extra in (res.confidence, res.quicklook):
        if extra:
            typer.echo(f"wrote {extra}")
    counts = ", ".join(f"{k} {v}" for k, v in res.class_counts.items() if v)
    typer.echo(f"pixels per class: {counts}")


from hsikit.cli import restoration as _restoration  # noqa: E402,F401  (registers denoise, super-resolve, ...)
from hsikit.cli import sentinel2 as _sentinel2  # noqa: E402,F401  (registers s2 commands)
from hsikit.cli import foundation as _foundation  # noqa: E402,F401  (registers pretrain, train scene-classifier|segmenter)
from hsikit.cli import stress as _stress  # noqa: E402,F401  (registers stress, train stress)
from hsikit.cli import batch as _batch  # noqa: E402,F401  (registers batch)


# -- entry point ---------------------------------------------------------------------------------------------------
def _warn_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _default_option_values(args: list[str]) -> list[str]:
    """``--probabilities`` given without a value means float32 (``--probabilities uint8`` picks the compact form)."""
    out = []
    for i, a in enumerate(args):
        out.append(a)
        if a == "--probabilities" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("float32")
    return out


def run(argv: list[str] | None = None) -> int:
    """Console-script entry: user errors print one line and exit 2; ``--debug`` shows tracebacks."""
    args = _default_option_values(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args
    if not debug:
        warnings.showwarning = _warn_one_line
    try:
        # with standalone_mode=False click returns a command's typer.Exit code instead of raising it
        ret = app(args=args, prog_name="hsikit", standalone_mode=False)
        code = ret if isinstance(ret, int) else 0
    except (typer.Exit, click.exceptions.Exit) as e:
        code = e.exit_code
    except (typer.Abort, click.exceptions.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        code = 130
    except HsikitError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        code = e.exit_code
    except Exception as e:  # noqa: BLE001 - last resort: one line, traceback only with --debug
        if hasattr(e, "show") and hasattr(e, "exit_code"):  # click/typer usage errors (typer vendors click)
            e.show()
            return _finish(argv, e.exit_code)
        if debug:
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: {type(e).__name__}: {msg} (run with --debug for the traceback)", file=sys.stderr)
        code = 1
    return _finish(argv, code)


def _finish(argv: list[str] | None, code: int) -> int:
    if argv is None:
        sys.exit(code)
    return code
