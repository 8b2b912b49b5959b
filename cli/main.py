"""`hsikit` command-line entry point.

Every command is a thin wrapper over a documented Python function (``hsikit.classify``, ``hsikit.scene_info`` …).
Heavy libraries (torch, the models) are imported inside the commands so ``hsikit --help`` stays fast.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import signal
import sys
import textwrap
import warnings
from enum import Enum
from pathlib import Path
from typing import Any, Optional, Tuple

import typer
from typer.core import TyperGroup

from hsikit._version import __version__
from hsikit.errors import HsikitError


# -- help layout ---------------------------------------------------------------------------------------------------
def _wrap(text: str, width: int, indent: str = "") -> str:
    """Paragraphs of ``text`` filled to ``width``; unlike click's wrapper, words are never split at their hyphens,
    so option and model names (--drop-bad-bands, spectral-cnn) stay whole."""
    paragraphs = [" ".join(p.split()) for p in text.split("\n\n")]
    return "\n\n".join(textwrap.fill(p, width, initial_indent=indent, subsequent_indent=indent,
                                     break_on_hyphens=False) for p in paragraphs if p)


class _HelpFormatter(typer.Context.formatter_class):  # click's plain formatter: it wraps where rich truncates
    def write_text(self, text: str) -> None:
        self.write(_wrap(text, self.width, " " * self.current_indent) + "\n")

    def write_dl(self, rows, col_max: int = 30, col_spacing: int = 2) -> None:
        rows = list(rows)
        first = min(max((len(term) for term, _ in rows), default=0), col_max) + col_spacing
        hang = " " * (self.current_indent + first)
        for term, text in rows:
            self.write(" " * self.current_indent + term)
            if not text:
                self.write("\n")
                continue
            self.write(" " * (first - len(term)) if len(term) <= first - col_spacing else "\n" + hang)
            lines = _wrap(text, max(self.width - first - 2, 10)).splitlines() or [""]
            self.write("\n".join([lines[0]] + [hang + line if line else "" for line in lines[1:]]) + "\n")


class _Context(typer.Context):
    formatter_class = _HelpFormatter


#: commands that compute nothing heavy (listings, headers, downloads): no --threads
_NOT_COMPUTE = {"info", "models", "degradations", "import-weights", "list", "download", "status"}
THREADS_HELP = "Threads for torch, GDAL and NumPy (default: all cores); recorded in the outputs' tags."


@functools.lru_cache(maxsize=1)
def _threads_option() -> Any:
    """The ``--threads`` parameter as typer builds it (same help layout and range check as every option); built
    once and shared by every compute command."""
    one = typer.Typer()

    @one.command()
    def threads(threads: Optional[int] = typer.Option(None, "--threads", min=1, help=THREADS_HELP)) -> None:
        """A carrier for the parameter."""

    return typer.main.get_command(one).params[0]


def _add_threads(cmd: Any) -> None:
    """Give a compute command the shared ``--threads`` option, applied before its body runs (and so before torch
    is imported, which then sizes its pool from it)."""
    cmd.params.append(_threads_option())
    body = cmd.callback

    def with_threads(*args: Any, threads: Optional[int] = None, **kwargs: Any) -> Any:
        from hsikit.threads import set_threads

        set_threads(threads)
        return body(*args, **kwargs)

    cmd.callback = with_threads


class _Group(TyperGroup):
    """A command group whose help (and its commands' help) is click's plain text, summaries included whole; its
    compute commands share one ``--threads`` option."""

    context_class = _Context

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name, cmd in self.commands.items():
            cmd.context_class = _Context
            if (not isinstance(cmd, TyperGroup) and name not in _NOT_COMPUTE
                    and not any(p.name == "threads" for p in cmd.params)):
                _add_threads(cmd)

    def format_commands(self, ctx: typer.Context, formatter) -> None:
        rows = [(name, cmd.get_short_help_str(limit=10_000)) for name in self.list_commands(ctx)
                if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def _plain_help(t: typer.Typer) -> None:
    """Use :class:`_Group` for ``t`` and every group below it (rich's help panels truncate at 80 columns)."""
    t.info.cls = _Group
    for group in t.registered_groups:
        _plain_help(group.typer_instance)


def _text_width() -> int:
    """Width of listings: the terminal's (``COLUMNS``, else 80, when not a terminal), at most 100."""
    return max(40, min(shutil.get_terminal_size().columns, 100))


app = typer.Typer(
    name="hsikit",
    help="Hyperspectral and multispectral remote sensing: inspect, preprocess, train and classify whole scenes "
    "in tiles, writing georeferenced Cloud-Optimised GeoTIFFs that open styled in QGIS.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
from hsikit.cli.datasets import app as datasets_app  # noqa: E402  (no torch import)

train_app = typer.Typer(help="Train models on labelled scenes.", no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(datasets_app, name="datasets")

NOTHING_WRITTEN = "nothing was written"
#: ``interrupted`` is what an interrupted command leaves behind (commands that keep partial work say so)
_state = {"debug": False, "progress": True, "interrupted": NOTHING_WRITTEN}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hsikit {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress: neither bars on a terminal nor the "
                               "progress lines written to logs and pipes."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """hsikit: read any GDAL raster, prepare its bands, run models over the whole scene in tiles."""
    _state["debug"] = debug
    _state["progress"] = not quiet


# -- checks made while the command line is parsed (before torch or a model loads) ----------------------------------
#: GDAL driver prefixes (HDF5:, NETCDF:, SENTINEL2_L1C:), URLs and /vsi paths: not local files to look for
_NOT_LOCAL = re.compile(r"^([A-Za-z][A-Za-z0-9_]+:|/vsi)")


def _param_name(param: Any) -> str:
    """How the user spells a parameter: its long option, or an argument's name in capitals."""
    if getattr(param, "param_type_name", "") == "argument":
        return (param.name or "").upper()
    opts = list(param.opts)
    return max(opts, key=len) if opts else str(param.name)


def _exists(value: Any) -> Any:
    """Parameter callback of input files: one that is not there fails at once, naming the option."""
    for p in value if isinstance(value, (list, tuple)) else [value]:
        if p is not None and not _NOT_LOCAL.match(str(p)) and not Path(p).exists():
            raise typer.BadParameter(f"file not found: {p}")
    return value


def _suffix_check(suffixes: tuple[str, ...], what: str):
    """A parameter callback refusing an output whose extension is not one of ``suffixes`` (hsikit writes ``what``)."""

    def check(param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
        if value is not None:
            from hsikit.io.outputs import check_suffix

            check_suffix(value, suffixes, option=_param_name(param), what=what)
        return value

    return check


def _positive(value: Any) -> Any:
    """Parameter callback of quantities that must be above zero (learning rates, factors)."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"must be greater than 0, not {value:g}")
    return value


def _fraction(value: Any) -> Any:
    """Parameter callback of fractions strictly between 0 and 1 (mask ratios)."""
    if value is not None and not 0 < value < 1:
        raise typer.BadParameter(f"must be between 0 and 1 (exclusive), not {value:g}")
    return value


def _size(param: typer.CallbackParam, value: Optional[str]) -> Optional[str]:
    """Parameter callback of memory sizes (8G, 512M): a size without a unit or below 64 MiB fails at once."""
    if value is not None:
        from hsikit.engine.budget import parse_size
        from hsikit.errors import OptionError

        try:
            parse_size(value, option=_param_name(param))
        except OptionError as e:
            raise typer.BadParameter(str(e).split(": ", 1)[-1]) from None
    return value


#: parameter callbacks of outputs: an extension hsikit does not write is refused before any work
RASTER_OUT = _suffix_check((".tif", ".tiff"), "a GeoTIFF")
CHECKPOINT_OUT = _suffix_check((".safetensors",), "a safetensors checkpoint")
ALLOW_RESAMPLE_HELP = ("Resample label rasters that are not on the scene grid by nearest neighbour (with a warning) "
                       "instead of refusing them.")
SET_METAVAR = "KEY=VALUE"


def _is_rank_zero() -> bool:
    """Whether this process is the first (or only) one of a run; the variables are those Lightning's launcher and
    torchrun set (hsikit.training.module.is_global_zero reads them too, but importing it loads torch)."""
    return all(int(os.environ.get(k, "0") or 0) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


def _start_training(out: Path, report_dir: Optional[Path], *, overwrite: bool, resume: bool, devices: int = 1,
                    num_nodes: int = 1) -> None:
    """What every training command does before torch loads: refuse an existing checkpoint or report folder as the
    pipeline would (seconds later), say what an interruption keeps, and quieten multi-process runs."""
    _state["interrupted"] = "no checkpoint was written; --resume continues from the last saved epoch, if any"
    if devices * num_nodes > 1:
        # torch's C++ advice that DDP found no unused parameter (hsikit keeps the check on for models that leave
        # some unused); must be set before torch is imported, and the other ranks inherit it
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    if not _is_rank_zero():  # the other ranks of a DDP run start after rank 0 has created the report folder
        return
    from hsikit.errors import OutputError
    from hsikit.io.atomic import check_output

    check_output(out, overwrite or resume)
    rdir = Path(report_dir) if report_dir else out.with_name(out.stem + "_report")
    if not overwrite and not resume and rdir.is_dir() and any(rdir.iterdir()):
        raise OutputError(f"report folder exists and is not empty: {rdir} (use --overwrite, or --resume)")


def _command_line() -> str:
    """The invoking command for provenance tags, with paths reduced to file names."""
    def shown(a: str) -> str:
        try:
            return Path(a).name if os.sep in a and Path(a).exists() else a
        except OSError:  # not a path at all (e.g. longer than a file name may be)
            return a

    return " ".join(["hsikit", *map(shown, sys.argv[1:])])


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
    scene: Path = typer.Argument(..., callback=_exists, help="Any raster GDAL reads (GeoTIFF, ENVI .hdr, .lan, VRT, HDF5 subdataset) or a benchmark .mat cube."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    variable: Optional[str] = typer.Option(None, help="Variable name inside a .mat file."),
) -> None:
    """Show a scene's size, bands, wavelength range, bad bands, CRS, resolution, nodata and dtype, or a model
    checkpoint's card (architecture, configuration, bands, classes, preprocessing, provenance)."""
    from hsikit.pipelines.info import format_info, format_model_card, model_card, scene_info

    if scene.suffix.lower() == ".safetensors":  # a model: its card
        card = model_card(scene)
        typer.echo(json.dumps(card, indent=2) if as_json else format_model_card(card))
        return
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
    width = _text_width()
    name_w = max(len(e.name) for e in entries) + 2
    task_w = max(len(e.task) for e in entries) + 2
    for e in entries:  # one line of name, task and inputs; the description wrapped below it, never cut
        typer.echo(f"{e.name:<{name_w}}{e.task:<{task_w}}{e.inputs}".rstrip())
        typer.echo(_wrap(e.description, width, "    "))


# -- preprocess ----------------------------------------------------------------------------------------------------
@app.command()
def preprocess(
    scene: Path = typer.Argument(..., callback=_exists, help="Input scene."),
    out: Path = typer.Option(..., "-o", "--out", callback=RASTER_OUT, help="Output GeoTIFF (float32, NaN nodata)."),
    drop_bad_bands: bool = typer.Option(False, "--drop-bad-bands", help="Drop the file's bad bands and the 1340-1460 / 1790-1960 nm water-vapour bands."),
    wavelength_range: Optional[Tuple2] = typer.Option(None, "--wavelength-range", help="Keep bands between MIN and MAX nm.", metavar="MIN MAX"),
    resample_to: Optional[str] = typer.Option(None, "--resample-to", help="Resample spectrally to a sensor's bands (sentinel2, landsat8) with Gaussian responses."),
    scale: Optional[float] = typer.Option(None, "--scale", callback=_positive, help="Multiply values by this factor (e.g. 0.0001 for reflectance x 10000); default: the file's own scale/offset when set."),
    normalize: bool = typer.Option(False, "--normalize", help="Standardise each band (z-score from streamed statistics)."),
    pca: Optional[int] = typer.Option(None, "--pca", min=1, help="Keep N principal components (covariance streamed over the scene)."),
    chain: Optional[Path] = typer.Option(None, "--chain", callback=_exists, help="A preprocessing chain as JSON (e.g. from a checkpoint) instead of the options."),
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
RECIPE_HELP = ("Named training recipe (default: the model's first; FreeNet: paper). MorpMamba: default, chosen "
               "on a real scene's validation data, or notebook, the official notebook's (15 whitened PCA "
               "components, last epoch).")
RECORD_HELP = "Store the scores in the model file, where hsikit info shows them."
PRECISION_HELP = "Lightning precision: 32-true, 16-mixed, bf16-mixed."
RESUME_HELP = "Continue an interrupted run from <report>/checkpoints/last.ckpt."
DEVICES_HELP = ("Processes (CPU) or GPUs per node; more than one trains with distributed data parallel (each "
                "process takes its share of every epoch; gloo on CPU). The other ranks re-run this command.")
STRATEGY_HELP = ("auto (DDP when --devices or --num-nodes > 1), ddp, or another Lightning strategy name (not the "
                 "spawn/fork ones).")
NUM_NODES_HELP = "Nodes of a multi-node DDP run (launch with torchrun or a cluster scheduler on each node)."


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


class Protocol(str, Enum):
    user = "user"
    paper = "paper"


def _share(param: typer.CallbackParam, value: Optional[str]) -> Optional[str]:
    """Parameter callback of --train/--val: a fraction or percentage in range, checked before torch loads."""
    if value is not None:
        from hsikit.sampling import parse_fraction

        name = _param_name(param)
        parse_fraction(value, name, allow_zero=name == "--val", allow_one=name != "--val")
    return value


@train_app.command("classifier")
def train_classifier(
    scene: Optional[Path] = typer.Argument(None, callback=_exists, help="Training scene (or use --dataset)."),
    labels: Optional[Path] = typer.Option(None, "--labels", "-l", callback=_exists, help="Label raster on the scene grid, or polygons (GeoPackage/Shapefile) with a class attribute."),
    allow_resample: bool = typer.Option(False, "--allow-resample", help=ALLOW_RESAMPLE_HELP),
    out: Path = typer.Option(..., "-o", "--out", callback=CHECKPOINT_OUT, help="Checkpoint to write (.safetensors, JSON metadata inside)."),
    model: ClsModel = typer.Option(ClsModel.spectral_cnn, "--model", "-m", help="Architecture; each trains with its own recipe (see README)."),
    recipe: Optional[str] = typer.Option(None, "--recipe", metavar="NAME", help=RECIPE_HELP),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="A benchmark dataset instead of SCENE/--labels (hsikit datasets list)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where benchmark datasets live (default $HSIKIT_DATA or ~/.cache/hsikit/datasets)."),
    attribute: Optional[str] = typer.Option(None, "--attribute", help="Class column of vector labels."),
    protocol: Protocol = typer.Option(Protocol.user, "--protocol", help="user: every labelled pixel trains except a validation share (--val); only --test-labels or --split give a test set. paper: the model paper's sampling (FreeNet 200 px/class, MorpMamba 25 % / 25 %, others 50 % / 20 %), the rest of the labels tested."),
    train: Optional[str] = typer.Option(None, "--train", metavar="FRACTION", callback=_share, help="Share of each class that trains: 0.8 or 80%; 1 = all that validation leaves (the default; under --protocol paper, the paper's share)."),
    train_pixels: Optional[int] = typer.Option(None, "--train-pixels", min=1, metavar="N", help="Training pixels per class instead of --train."),
    val: Optional[str] = typer.Option(None, "--val", metavar="FRACTION", callback=_share, help="Validation share of each class: 0.1 or 10% (the default; at least 1 pixel of a class with 2 or more; under --protocol paper, the paper's share); 0 = none."),
    val_pixels: Optional[int] = typer.Option(None, "--val-pixels", min=0, metavar="N", help="Validation pixels per class instead of --val."),
    test_labels: Optional[Path] = typer.Option(None, "--test-labels", callback=_exists, help="Test labels (raster on the scene grid, or polygons): only these pixels are tested and scored; they never train."),
    split: Optional[Path] = typer.Option(None, "--split", callback=_exists, help="Split raster on the scene grid: 1 train, 2 validation, 3 test (instead of --train/--val/--test-labels)."),
    disjoint: bool = typer.Option(False, "--disjoint", help="Drop validation/test pixels whose patch/receptive field overlaps a training pixel's."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs (default: the recipe's)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", min=1, help="Optimiser steps instead of epochs (FreeNet's recipe: 1000)."),
    patience: Optional[int] = typer.Option(None, "--patience", min=1, help="Early stopping: epochs without a better validation OA."),
    select_best: Optional[bool] = typer.Option(None, "--select-best/--keep-last", help="Keep the best-validation-OA weights or the last ones (default: the recipe's)."),
    lr: Optional[float] = typer.Option(None, "--lr", callback=_positive, help="Learning rate (default: the recipe's)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Minibatch size (default depends on the model)."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Random seed (splits, initialisation, batches)."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    precision: str = typer.Option("32-true", "--precision", help=PRECISION_HELP),
    resume: bool = typer.Option(False, "--resume", help=RESUME_HELP),
    devices: int = typer.Option(1, "--devices", min=1, help=DEVICES_HELP),
    strategy: str = typer.Option("auto", "--strategy", help=STRATEGY_HELP),
    num_nodes: int = typer.Option(1, "--num-nodes", min=1, help=NUM_NODES_HELP),
    drop_bad_bands: Optional[bool] = typer.Option(None, "--drop-bad-bands/--keep-bad-bands", help="Drop bad and water-vapour bands before the model."),
    pca: Optional[int] = typer.Option(None, "--pca", min=1, help="Reduce to N principal components first."),
    pca_whiten: Optional[bool] = typer.Option(None, "--pca-whiten/--no-pca-whiten", help="Scale PCA components to unit variance (MorpMamba's notebook does)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar=SET_METAVAR, help="Model option KEY=VALUE (e.g. --set reduction_ratio=0.5, --set patch=7)."),
    report_dir: Optional[Path] = typer.Option(None, "--report-dir", help="Where to write the report (default: <out>_report/)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint/report."),
) -> None:
    """Train a classifier; writes the checkpoint and a report (OA/AA/kappa, confusion matrix PNG/CSV)."""
    _start_training(out, report_dir, overwrite=overwrite, resume=resume, devices=devices, num_nodes=num_nodes)
    from hsikit.errors import OptionError
    from hsikit.training.recipes import recipe_for

    recipe_for(model.value, recipe)  # an unknown name stops here, before torch loads
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
    # the pipeline reads the split raster like the labels: grid checks, --allow-resample, one-line errors
    res = run_train(sc, lab, model=model.value, recipe=recipe, out=out, attribute=attribute,
                    allow_resample=allow_resample,
                    protocol=protocol.value, train=train, train_pixels=train_pixels, val=val, val_pixels=val_pixels,
                    test_labels=str(test_labels) if test_labels is not None else None,
                    split=str(split) if split is not None else None,
                    disjoint=disjoint, epochs=epochs, iterations=iterations, patience=patience,
                    select_best=select_best, lr=lr,
                    batch_size=batch_size, seed=seed, device=device, precision=precision, resume=resume,
                    model_config=_model_config(set_),
                    chain={"drop_bad_bands": drop_bad_bands, "pca": pca, "pca_whiten": pca_whiten},
                    report_dir=report_dir, overwrite=overwrite, progress=_state["progress"], command=_command_line(),
                    devices=devices, strategy=strategy, num_nodes=num_nodes, echo=typer.echo)
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
    model: Path = typer.Argument(..., callback=_exists, help="Classifier checkpoint (.safetensors)."),
    scene: Path = typer.Argument(..., callback=_exists, help="Labelled scene to classify."),
    labels: Path = typer.Option(..., "--labels", "-l", callback=_exists, help="Reference labels (raster on the scene grid, or polygons)."),
    allow_resample: bool = typer.Option(False, "--allow-resample", help=ALLOW_RESAMPLE_HELP),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder: class map, report.json, confusion matrix."),
    split: Optional[Path] = typer.Option(None, "--split", callback=_exists, help="Split raster: only pixels with value 3 (test) are scored."),
    attribute: Optional[str] = typer.Option(None, "--attribute", help="Class column of vector labels."),
    tile: int = typer.Option(512, "--tile", min=1, help="Tile size in pixels."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder's files."),
    record: bool = typer.Option(True, "--record/--no-record", help=RECORD_HELP),
) -> None:
    """Classify a labelled scene and report OA, AA, kappa, per-class accuracy/F1 and the confusion matrix."""
    from hsikit.pipelines.evaluate import evaluate as run_eval

    res = run_eval(model, scene, labels, out=out, split=split, attribute=attribute, allow_resample=allow_resample,
                   tile=tile, device=device, overwrite=overwrite, progress=_state["progress"], command=_command_line(),
                   record=record)
    m = res.metrics
    typer.echo(f"OA {m['oa']:.4f}  AA {m['aa']:.4f}  kappa {m['kappa']:.4f}  on {m['n']} pixels")
    typer.echo(f"run folder: {res.run_dir}")


benchmark_app = typer.Typer(help="Run a paper's protocol over several seeds and report mean ± std.", no_args_is_help=True)
app.add_typer(benchmark_app, name="benchmark")


@benchmark_app.command("classify")
def benchmark_classify(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset key (hsikit datasets list) or enmap_potsdam."),
    model: ClsModel = typer.Option(..., "--model", "-m", help="Architecture."),
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
    _state["interrupted"] = "benchmark.json was not written; the checkpoints of finished seeds are kept"
    from hsikit.training.recipes import recipe_for

    recipe_for(model.value, recipe)
    from hsikit.pipelines.benchmark import benchmark_classify as run_bench

    overrides = {k: v for k, v in {"epochs": epochs, "iterations": iterations, "recipe": recipe}.items()
                 if v is not None}
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
    scene: Path = typer.Argument(..., callback=_exists, help="Scene to classify."),
    out: Path = typer.Option(..., "-o", "--out", callback=RASTER_OUT, help="Class map to write (.tif; uint8, 0 = nodata)."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", callback=_exists, help="Checkpoint (.safetensors); default: the bundled sample model."),
    tile: Optional[int] = typer.Option(None, "--tile", min=1, help="Tile size in pixels (default: the largest tiles that fit --max-memory, the whole scene when it fits)."),
    overlap: Optional[int] = typer.Option(None, "--overlap", min=0, help="Tile overlap in pixels (default 25% of the tile up to 128, at least twice the model's receptive field)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Tiles per model call (image models; pixel models are fed in pixel chunks). Default: 1 with planned tiles, 2 with --tile."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", metavar="SIZE", callback=_size, help="Memory for tiles, model activations and buffers, e.g. 8G or 512M (default: a third of the RAM); sizes the tiles when --tile is not given."),
    device: str = typer.Option("auto", "--device", help=DEVICE_HELP),
    probabilities: Optional[ProbFmt] = typer.Option(None, "--probabilities", help="Also write per-class probabilities: float32 (the default when no value is given) or uint8 (p x 254)."),
    confidence: bool = typer.Option(False, "--confidence", help="Also write the winning class's probability (float32)."),
    quicklook: bool = typer.Option(False, "--quicklook", help="Also write a PNG quicklook with a legend."),
    legend: Optional[Path] = typer.Option(None, "--legend", callback=_exists, help="Own class names/colours (.json, .csv or .clr: value, name, colour)."),
    fmt: Fmt = typer.Option(Fmt.cog, "--format", help="Output layout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
) -> None:
    """Classify a whole scene in tiles into a QGIS-ready class map (colour table, class names, .qml style)."""
    from hsikit.pipelines.classify import classify as run_classify

    res = run_classify(str(scene), out=out, model=model, tile=tile, overlap=overlap, batch_size=batch_size,
                       max_memory=max_memory, device=device, probabilities=probabilities.value if probabilities else None,
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


# -- import-weights ------------------------------------------------------------------------------------------------
@app.command("import-weights")
def import_weights(
    arch: str = typer.Argument(..., help="Architecture of the published weights: essaformer, freenet, hsdt, "
                               "morpmamba, mp-hsir or spectralgpt."),
    source: Path = typer.Argument(..., callback=_exists, help="The published weights: .pth/.pt/.ckpt (read with "
                                  "torch's weights-only loader, never unpickled), .safetensors or Keras .h5."),
    out: Path = typer.Option(..., "-o", "--out", callback=CHECKPOINT_OUT, help="hsikit checkpoint to write "
                             "(.safetensors with metadata: configuration, band grid, provenance)."),
    set_: Optional[list[str]] = typer.Option(None, "--set", metavar=SET_METAVAR, help="Override an inferred "
                                             "configuration value, e.g. --set in_bands=31."),
    wavelengths: Optional[str] = typer.Option(None, "--wavelengths", help="Band grid the weights were trained "
                                              "on: icvl, cave, harvard, chikusei, pavia-university, FIRST:LAST:STEP "
                                              "in nm, a comma list, or a raster/ENVI header with band wavelengths "
                                              "(default: the paper's)."),
    name: Optional[str] = typer.Option(None, "--name", help="Name recorded in the checkpoint (default: the "
                                       "file's stem)."),
    text_embeddings: Optional[Path] = typer.Option(None, "--text-embeddings", callback=_exists, help="mp-hsir: "
                                                   ".npz table of the task prompts' 512-d CLIP text embeddings, one "
                                                   "row per task prompt (required: the weights do not hold them)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint."),
) -> None:
    """Convert a paper's published weights into an hsikit checkpoint; the configuration is inferred from the
    tensor shapes and every tensor must map."""
    from hsikit.pipelines.import_weights import import_weights as run_import

    res = run_import(arch, source, out=out, overrides=_model_config(set_), wavelengths=wavelengths, name=name,
                     overwrite=overwrite, text_embeddings=text_embeddings, command=_command_line())
    for note in res.notes:
        typer.echo(f"  {note}")
    typer.echo(f"wrote {res.checkpoint} ({res.arch}, {res.tensors} tensors, {res.parameters:,} parameters)")


from hsikit.cli import restoration as _restoration  # noqa: E402,F401  (registers denoise, super-resolve, ...)
from hsikit.cli import sentinel2 as _sentinel2  # noqa: E402,F401  (registers s2 commands)
from hsikit.cli import foundation as _foundation  # noqa: E402,F401  (registers pretrain, train scene-classifier|segmenter)
from hsikit.cli import stress as _stress  # noqa: E402,F401  (registers stress, train stress)
from hsikit.cli import batch as _batch  # noqa: E402,F401  (registers batch)

_plain_help(app)


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


def _usage_line(e: Exception, args: list[str]) -> str:
    """A click/typer usage error in one line: the option (with the value given) or argument, and what is wrong."""
    def sentence(text: str) -> str:  # "Input should be ..." -> "input should be ..."
        text = " ".join(text.split()).removeprefix("Value error, ")
        return text[:1].lower() + text[1:] if text[1:2].islower() else text

    param, message = getattr(e, "param", None), str(getattr(e, "message", "") or "")
    if param is None or not message or type(e).__name__ == "MissingParameter":
        return sentence(e.format_message())
    name = _param_name(param)
    given = [v for o in param.opts for i, a in enumerate(args[:-1]) if a == o for v in [args[i + 1]]]
    given += [a.split("=", 1)[1] for o in param.opts for a in args if a.startswith(o + "=")]
    if getattr(param, "param_type_name", "") != "argument" and given and given[-1] not in message:
        name = f"{name} {given[-1]}"
    return f"{name}: {sentence(message)}"


def _catch_signals() -> tuple[list[int], dict[int, Any]]:
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, so a scheduler's SIGTERM cleans up like
    Ctrl-C. Returns the list the caught signals go to and the handlers to restore."""
    caught: list[int] = []

    def interrupt(signum: int, frame: Any) -> None:
        first = not caught
        caught.append(signum)
        if first:  # a second signal must not break the clean-up the first one started
            raise KeyboardInterrupt

    previous: dict[int, Any] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            if signal.getsignal(sig) is not signal.SIG_IGN:  # e.g. SIGINT of a background job stays ignored
                previous[sig] = signal.signal(sig, interrupt)
        except ValueError:  # not the main thread: leave signals alone
            break
    return caught, previous


def run(argv: list[str] | None = None) -> int:
    """Console-script entry: user errors print one line and exit 2; ``--debug`` shows tracebacks. An interrupt
    (SIGINT, SIGTERM) prints one line and exits 130 or 143."""
    args = _default_option_values(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args
    if not debug:
        warnings.showwarning = _warn_one_line
    _state["interrupted"] = NOTHING_WRITTEN
    caught, previous = _catch_signals()
    interrupted = False
    try:
        code = _invoke(args, debug)
    except KeyboardInterrupt:  # one that typer did not turn into exit code 130 (caught is empty off the main thread)
        code, interrupted = 130, True
    except SystemExit:
        if not caught:  # a SystemExit of another origin keeps its meaning
            raise
        code = 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    if caught or interrupted:
        print(f"interrupted: {_state['interrupted']}", file=sys.stderr)
        code = 128 + (caught[0] if caught else int(signal.SIGINT))
    return _finish(argv, code)


def _invoke(args: list[str], debug: bool) -> int:
    """Run the command line; the exit code, with a user error printed as one line. Lightning answers an interrupt
    with SystemExit(1), which the caller handles."""
    try:
        # with standalone_mode=False click returns a command's typer.Exit code instead of raising it
        ret = app(args=args, prog_name="hsikit", standalone_mode=False)
        return ret if isinstance(ret, int) else 0
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        print("aborted", file=sys.stderr)
        return 130
    except HsikitError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except Exception as e:  # noqa: BLE001 - last resort: one line, traceback only with --debug
        usage = hasattr(e, "format_message") and hasattr(e, "exit_code")  # click/typer usage errors
        if usage and type(e).__name__ == "NoArgsIsHelpError":  # a group given no command: its help
            e.show()
            return e.exit_code
        if debug:
            raise
        if usage:
            print(f"error: {_usage_line(e, args)}", file=sys.stderr)
            return e.exit_code
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: {type(e).__name__}: {msg} (run with --debug for the traceback)", file=sys.stderr)
        return 1


def _finish(argv: list[str] | None, code: int) -> int:
    if argv is None:
        sys.exit(code)
    return code
