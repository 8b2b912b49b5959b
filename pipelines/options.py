"""The options of the inference commands, declared once per command: name, flags, type, default, help and check.

The single-scene command (``hsikit classify``) and the batch task (``hsikit batch classify``) build their
command-line options from the same :class:`CommandSpec` (:mod:`hsikit.cli.specs`); the batch task table
(:mod:`hsikit.pipelines.batch_tasks`) takes its defaults and checks from it, and the pipelines check their
options' values with it (:meth:`CommandSpec.check`, :func:`check_format`). Where a batch task differs on
purpose, the option says so in ``batch`` with the reason beside it. No torch, typer or CLI import here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Tuple

from hsikit.errors import OptionError

#: the raster layouts every inference command writes
FORMATS = ("cog", "gtiff")
#: how ``--probabilities`` stores per-class probabilities
PROBABILITIES = ("float32", "uint8")

Scope = Literal["both", "single", "batch"]
Check = Literal["", "file", "positive", "size"]


@dataclass(frozen=True)
class Option:
    """One option of an inference command.

    ``name`` is the pipeline's keyword and the batch task's option key; ``flags`` the command-line spellings, long
    first (``("--png/--no-png",)`` for a switch pair; none: an option of the batch task only, not on the command
    line); ``type`` the value's type (``Tuple[float, float]`` for a pair). ``low`` is the smallest accepted value,
    ``choices`` the accepted words, ``check`` a check made while the command line is parsed (``file``: an input
    that must exist; ``positive``: above zero; ``size``: a memory size such as 8G). ``scope`` says which commands
    take it; ``batch`` what the batch task does differently (any of the other fields, e.g. ``default``)."""

    name: str
    flags: tuple[str, ...]
    type: Any = str
    default: Any = None
    help: str = ""
    low: int | float | None = None
    choices: tuple[str, ...] = ()
    check: Check = ""
    metavar: str | None = None
    required: bool = False
    scope: Scope = "both"
    batch: Mapping[str, Any] = field(default_factory=dict)

    @property
    def flag(self) -> str:
        """How messages name the option: its long flag (the switch's "on" side), else its name."""
        return self.flags[0].split("/")[0] if self.flags else self.name

    def for_batch(self) -> Option:
        """The option as the batch task takes it (its ``batch`` differences applied)."""
        return dataclasses.replace(self, **self.batch, batch={}) if self.batch else self

    def validate(self, value: Any) -> None:
        """Refuse a value outside ``choices`` (None is the unset value of an option whose default is None)."""
        if self.choices and value not in self.choices and not (value is None and self.default is None):
            raise OptionError(f"{self.flag} must be {' or '.join(self.choices)}, not {value!r}")


@dataclass(frozen=True)
class CommandSpec:
    """The options of one inference command, in ``--help`` order; ``model`` is its checkpoint option (the batch
    passes the model apart from the task options), None for commands without a model."""

    command: str
    model: Option | None
    options: tuple[Option, ...]

    def __getitem__(self, name: str) -> Option:
        for o in (self.model, *self.options):
            if o is not None and o.name == name:
                return o
        raise KeyError(name)

    def single(self) -> list[Option]:
        """The single-scene command's options (the model first)."""
        opts = [o for o in self.options if o.scope != "batch"]
        return [self.model, *opts] if self.model else opts

    def batch_model(self) -> Option | None:
        """The batch task's checkpoint option."""
        return self.model.for_batch() if self.model else None

    def batch(self) -> list[Option]:
        """The batch task's options (not the model), with their batch differences applied."""
        return [o.for_batch() for o in self.options if o.scope != "single"]

    def batch_defaults(self) -> dict[str, Any]:
        """The batch task's option keys and their defaults."""
        return {o.name: o.default for o in self.batch()}

    def check(self, values: Mapping[str, Any]) -> None:
        """Refuse the values of ``values`` (option name -> value) that their option does not accept."""
        for name, value in values.items():
            self[name].validate(value)


# -- options several commands share ---------------------------------------------------------------------------------
FORMAT = Option("fmt", ("--format",), str, "cog", "Output layout.", choices=FORMATS)
DEVICE = Option("device", ("--device",), str, "auto", "auto, cpu, cuda or cuda:N.",
                batch={"help": "auto, cpu, cuda or cuda:N (on each worker)."})


def check_format(fmt: Any) -> str:
    """``fmt`` if it is an output layout hsikit writes (cog or gtiff), else an :class:`OptionError`."""
    FORMAT.validate(fmt)
    return fmt


# -- classify --------------------------------------------------------------------------------------------------------
CLASSIFY = CommandSpec("classify", Option(
    "model", ("--model", "-m"), Path, None, "Checkpoint (.safetensors) or exported model (.onnx, run with "
    "onnxruntime); default: the bundled sample model.",
    check="file"), (
    Option("tile", ("--tile",), int, None, "Tile size in pixels (default: the largest tiles that fit --max-memory, "
           "the whole scene when it fits).", low=1,
           # a batch plans no tiles from memory: its workers share the machine, so every scene gets this fixed tile
           batch={"default": 512, "help": "Tile size in pixels (fixed: a batch does not plan tiles from memory)."}),
    Option("overlap", ("--overlap",), int, None, "Tile overlap in pixels (default 25% of the tile up to 128, at "
           "least twice the model's receptive field).", low=0),
    Option("batch_size", ("--batch-size",), int, None, "Tiles per model call (image models; pixel models are fed in "
           "pixel chunks). Default: 1 with planned tiles, 2 with --tile.", low=1,
           # with the batch's fixed tiles, the single-scene default for given tiles
           batch={"default": 2, "help": "Tiles per model call (image models; pixel models are fed in pixel "
                  "chunks)."}),
    Option("max_memory", ("--max-memory",), str, None, "Memory for tiles, model activations and buffers, e.g. 8G or "
           "512M (default: a third of the RAM); sizes the tiles when --tile is not given.", check="size",
           metavar="SIZE", scope="single"),
    DEVICE,
    Option("probabilities", ("--probabilities",), str, None, "Also write per-class probabilities: float32 (the "
           "default when no value is given) or uint8 (p x 254).", choices=PROBABILITIES),
    Option("confidence", ("--confidence",), bool, False, "Also write the winning class's probability (float32)."),
    Option("quicklook", ("--quicklook",), bool, False, "Also write a PNG quicklook with a legend."),
    Option("legend", ("--legend",), Path, None, "Own class names/colours (.json, .csv or .clr: value, name, "
           "colour).", check="file"),
    FORMAT,
))

# -- restoration -----------------------------------------------------------------------------------------------------
_TILE = Option("tile", ("--tile",), int, None, "Tile size in input pixels (default: 128, 64 for super-resolution, or "
               "4x the model's receptive field if larger; 256 for denoising without a model).", low=1)
_OVERLAP = Option("overlap", ("--overlap",), int, None, "Tile overlap in pixels (default 25% of the tile, at least "
                  "the model's receptive field).", low=0)
# a batch refuses x1 while parsing; the single-scene commands leave it to the model's check (as before the specs)
_SCALE_BATCH = {"low": 2}

DENOISE = CommandSpec("denoise", Option(
    "model", ("--model", "-m"), Path, None, "Denoising checkpoint (hsikit train denoiser), or an all-in-one "
    "restorer. Without it: a training-free method.", check="file",
    # the training-free methods fit each scene whole: a batch runs models only
    batch={"required": True, "help": "Checkpoint (.safetensors)."}), (
    Option("method", ("--method",), str, None, "subspace (default without -m: HySime noise + subspace, non-local "
           "means on the eigen-images), pca, wavelet, tv, or model (default with -m).", scope="single"),
    Option("task", ("--task",), str, None, "For all-in-one models: gaussian (default) or complex."),
    _TILE, _OVERLAP, DEVICE, FORMAT,
))

SUPER_RESOLVE = CommandSpec("super-resolve", Option(
    "model", ("--model", "-m"), Path, None, "Super-resolution checkpoint (hsikit train super-resolver), or an "
    "all-in-one restorer.", check="file", required=True), (
    Option("scale", ("--scale", "-s"), int, None, "Up-sampling factor (default: the model's; all-in-one models: 4).",
           low=1, batch=_SCALE_BATCH),
    _TILE, _OVERLAP, DEVICE, FORMAT,
))

RESTORE = CommandSpec("restore", Option(
    "model", ("--model", "-m"), Path, None, "Restoration checkpoint (any hsikit restoration model).", check="file",
    required=True), (
    Option("task", ("--task", "-t"), str, None, "Task of an all-in-one model: gaussian, complex, blur, sr, inpaint, "
           "haze, band-missing."),
    Option("scale", ("--scale", "-s"), int, None, "Up-sampling factor for --task sr.", low=1, batch=_SCALE_BATCH),
    _TILE, _OVERLAP, DEVICE, FORMAT,
))

# -- preprocess ------------------------------------------------------------------------------------------------------
PREPROCESS = CommandSpec("preprocess", None, (
    Option("drop_bad_bands", ("--drop-bad-bands",), bool, False, "Drop the file's bad bands and the 1340-1460 / "
           "1790-1960 nm water-vapour bands."),
    Option("wavelength_range", ("--wavelength-range",), Tuple[float, float], None,
           "Keep bands between MIN and MAX nm.", metavar="MIN MAX"),
    Option("resample_to", ("--resample-to",), str, None, "Resample spectrally to a sensor's bands (sentinel2, "
           "landsat8) with Gaussian responses."),
    Option("scale", ("--scale",), float, None, "Multiply values by this factor (e.g. 0.0001 for reflectance x "
           "10000); default: the file's own scale/offset when set.", check="positive"),
    Option("normalize", ("--normalize",), bool, False, "Standardise each band (z-score from streamed statistics)."),
    Option("pca", ("--pca",), int, None, "Keep N principal components (covariance streamed over the scene).", low=1),
    Option("chain", ("--chain",), Path, None, "A preprocessing chain as JSON (e.g. from a checkpoint) instead of the "
           "options.", check="file"),
    Option("block", (), int, 512, "Rows and columns of the windows the chain is applied to.", scope="batch"),
    FORMAT,
))

# -- stress ----------------------------------------------------------------------------------------------------------
STRESS_SEASON_HELP = "Start of the season window: MM-DD (year chosen per series) or YYYY-MM-DD."

STRESS = CommandSpec("stress", Option(
    "model", ("--model", "-m"), Path, None, "FFDNN checkpoint (hsikit train stress).", check="file", required=True), (
    Option("fields", ("--fields",), Path, None, "Field-id raster on the series grid: also write <out>_fields.tif with "
           "one class per field.", check="file", scope="single"),
    Option("season_start", ("--season-start",), str, None, STRESS_SEASON_HELP + " Default: the model's.",
           scope="single"),
    Option("explain", ("--explain/--no-explain",), bool, True, "Write the explanation: which dates, indices and "
           "frequencies drove each class (JSON + PNG) and the most influential date per pixel."),
    Option("png", ("--png/--no-png",), bool, True, "Write a PNG of the class map with a legend."),
    Option("block", ("--block",), int, None, "Block size in pixels (default: the series' chunk, or 256).", low=1,
           scope="single"),
    Option("batch_size", ("--batch-size",), int, 8192, "Pixels per model call.", low=1, scope="single"),
    DEVICE, FORMAT,
))

#: every inference command's options, by command name
SPECS: dict[str, CommandSpec] = {s.command: s for s in (CLASSIFY, DENOISE, SUPER_RESOLVE, RESTORE, PREPROCESS,
                                                         STRESS)}
