"""What the command modules share: parameter checks made while the command line is parsed (before torch or a
model loads), the option declarations several commands use, and the training commands' run options, declared
once (:func:`run_options`) and handed to the pipelines as one :class:`hsikit.training.run.RunOptions`."""

from __future__ import annotations

import functools
import inspect
import json
import os
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional, Tuple

import typer

from hsikit.cli.state import state
from hsikit.pipelines.options import DEVICE, FORMATS
from hsikit.training.run import RunOptions, check_run_outputs

# -- checks made while the command line is parsed (before torch or a model loads) ----------------------------------
#: GDAL driver prefixes (HDF5:, NETCDF:, SENTINEL2_L1C:), URLs and /vsi paths: not local files to look for
_NOT_LOCAL = re.compile(r"^([A-Za-z][A-Za-z0-9_]+:|/vsi)")


def param_name(param: Any) -> str:
    """How the user spells a parameter: its long option, or an argument's name in capitals."""
    if getattr(param, "param_type_name", "") == "argument":
        return (param.name or "").upper()
    opts = list(param.opts)
    return max(opts, key=len) if opts else str(param.name)


def exists(value: Any) -> Any:
    """Parameter callback of input files: one that is not there fails at once, naming the option."""
    for p in value if isinstance(value, (list, tuple)) else [value]:
        if p is not None and not _NOT_LOCAL.match(str(p)) and not Path(p).exists():
            raise typer.BadParameter(f"file not found: {p}")
    return value


def suffix_check(suffixes: tuple[str, ...], what: str):
    """A parameter callback refusing an output whose extension is not one of ``suffixes`` (hsikit writes ``what``)."""

    def check(param: typer.CallbackParam, value: Optional[Path]) -> Optional[Path]:
        if value is not None:
            from hsikit.io.outputs import check_suffix

            check_suffix(value, suffixes, option=param_name(param), what=what)
        return value

    return check


def positive(value: Any) -> Any:
    """Parameter callback of quantities that must be above zero (learning rates, factors)."""
    if value is not None and value <= 0:
        raise typer.BadParameter(f"must be greater than 0, not {value:g}")
    return value


def fraction(value: Any) -> Any:
    """Parameter callback of fractions strictly between 0 and 1 (mask ratios)."""
    if value is not None and not 0 < value < 1:
        raise typer.BadParameter(f"must be between 0 and 1 (exclusive), not {value:g}")
    return value


def size(param: typer.CallbackParam, value: Optional[str]) -> Optional[str]:
    """Parameter callback of memory sizes (8G, 512M): a size without a unit or below 64 MiB fails at once."""
    if value is not None:
        from hsikit.engine.budget import parse_size
        from hsikit.errors import OptionError

        try:
            parse_size(value, option=param_name(param))
        except OptionError as e:
            raise typer.BadParameter(str(e).split(": ", 1)[-1]) from None
    return value


#: parameter callbacks of outputs: an extension hsikit does not write is refused before any work
RASTER_OUT = suffix_check((".tif", ".tiff"), "a GeoTIFF")
CHECKPOINT_OUT = suffix_check((".safetensors",), "a safetensors checkpoint")
ALLOW_RESAMPLE_HELP = ("Resample label rasters that are not on the scene grid by nearest neighbour (with a warning) "
                       "instead of refusing them.")
SET_METAVAR = "KEY=VALUE"


def command_line() -> str:
    """The invoking command for provenance tags, with paths reduced to file names."""
    def shown(a: str) -> str:
        try:
            return Path(a).name if os.sep in a and Path(a).exists() else a
        except OSError:  # not a path at all (e.g. longer than a file name may be)
            return a

    return " ".join(["hsikit", *map(shown, sys.argv[1:])])


Tuple2 = Tuple[float, float]


#: the output layouts (--format) of commands whose options have no spec in hsikit.pipelines.options
Fmt = Enum("Fmt", {f: f for f in FORMATS}, type=str)
DEVICE_HELP = DEVICE.help
RECIPE_HELP = ("Named training recipe (default: the model's first; FreeNet: paper). MorpMamba: default, chosen "
               "on a real scene's validation data, or notebook, the official notebook's (15 whitened PCA "
               "components, last epoch).")
CLASSIFIER_HELP = ("Classifier architecture: a classification model that `hsikit models` lists; each trains with "
                   "its own recipe (see README).")
RECORD_HELP = "Store the scores in the model file, where hsikit info shows them."
PRECISION_HELP = "Lightning precision: 32-true, 16-mixed, bf16-mixed."
RESUME_HELP = "Continue an interrupted run from <report>/checkpoints/last.ckpt."
DEVICES_HELP = ("Processes (CPU) or GPUs per node; more than one trains with distributed data parallel (each "
                "process takes its share of every epoch or step; gloo on CPU). The other ranks re-run this command.")
STRATEGY_HELP = ("auto (DDP when --devices or --num-nodes > 1), ddp, or another Lightning strategy name (not the "
                 "spawn/fork ones).")
NUM_NODES_HELP = "Nodes of a multi-node DDP run (launch with torchrun or a cluster scheduler on each node)."


def model_config(items: list[str] | None) -> dict:
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


def share(param: typer.CallbackParam, value: Optional[str]) -> Optional[str]:
    """Parameter callback of --train/--val: a fraction or percentage in range, checked before torch loads."""
    if value is not None:
        from hsikit.sampling import parse_fraction

        name = param_name(param)
        parse_fraction(value, name, allow_zero=name == "--val", allow_one=name != "--val")
    return value


# -- run options of every training command -------------------------------------------------------------------------
def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


#: the training commands' shared options, in --help order after each command's own; their values become the
#: fields of :class:`RunOptions` with the same names
RUN_PARAMS = [
    _param("seed", Optional[int], typer.Option(None, "--seed", min=0, help="Random seed (default: the recipe's). "
           "Splits, windows or crops, initialisation and batches follow from it.")),
    _param("device", str, typer.Option("auto", "--device", help=DEVICE_HELP)),
    _param("precision", str, typer.Option("32-true", "--precision", help=PRECISION_HELP)),
    _param("resume", bool, typer.Option(False, "--resume", help=RESUME_HELP)),
    _param("devices", int, typer.Option(1, "--devices", min=1, help=DEVICES_HELP)),
    _param("strategy", str, typer.Option("auto", "--strategy", help=STRATEGY_HELP)),
    _param("num_nodes", int, typer.Option(1, "--num-nodes", min=1, help=NUM_NODES_HELP)),
    _param("report_dir", Optional[Path], typer.Option(None, "--report-dir", help="Report folder (default: "
           "<out>_report/ beside the checkpoint).")),
    _param("overwrite", bool, typer.Option(False, "--overwrite", help="Replace an existing checkpoint and report.")),
]
_RUN_NAMES = [p.name for p in RUN_PARAMS]


def run_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a training command the shared run options. Its function takes ``out`` (the checkpoint) and ``run``
    (a :class:`RunOptions`) instead of the separate options; before it runs, the checkpoint and report folder are
    checked as the pipeline would check them (seconds later, once torch has loaded)."""
    sig = inspect.signature(command, eval_str=True)
    own = [p for p in sig.parameters.values() if p.name != "run"]

    @functools.wraps(command)
    def with_run(*args: Any, **kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name in _RUN_NAMES}
        run = RunOptions(**values, progress=state["progress"], command=command_line())
        start_training(kwargs["out"], run)
        return command(*args, run=run, **kwargs)

    with_run.__signature__ = sig.replace(parameters=[*own, *RUN_PARAMS])
    return with_run


def start_training(out: Path, run: RunOptions) -> None:
    """What every training command does before torch loads: refuse an existing checkpoint or report folder, say
    what an interruption keeps, and quieten multi-process runs."""
    from hsikit.training.distributed import launched_rank_zero

    state["interrupted"] = "no checkpoint was written; --resume continues from the last saved epoch, if any"
    if run.processes > 1:
        # torch's C++ advice that DDP found no unused parameter (hsikit keeps the check on for models that leave
        # some unused); must be set before torch is imported, and the other ranks inherit it
        os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    if launched_rank_zero():  # the other ranks of a DDP run start after rank 0 has created the report folder
        check_run_outputs(out, run)
