"""The hsikit Processing algorithms: each builds an hsikit command line from its parameters, runs it with
:mod:`.runner` (progress into the feedback, Cancel as SIGINT, hsikit's error line as the Processing error) and
hands its outputs to QGIS, class maps with their ``.qml`` style.

The parameters of the inference commands come from ``options.json``, which ``qgis/build_plugin.py`` exports from
hsikit's own option declarations (``hsikit.pipelines.options``): flags, types, defaults, limits, choices and help
are declared once, in hsikit. This module adds only what is QGIS's: parameter names (``INPUT``, ``MODEL``,
``OUTPUT``, ``TILE``…), short labels, file filters, which options are advanced, and the outputs.
"""

import functools
import html
import json
import os
import re
import shlex
import tempfile

from qgis.core import (
    NULL,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingLayerPostProcessorInterface,
    QgsProcessingOutputFile,
    QgsProcessingOutputMultipleLayers,
    QgsProcessingOutputNumber,
    QgsProcessingOutputRasterLayer,
    QgsProcessingOutputString,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterFileDestination,
    QgsProcessingParameterFolderDestination,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProviderRegistry,
)
from qgis.PyQt.QtCore import QCoreApplication

from . import runner

#: the provider's setting holding the executable's path (Processing > Options > Providers > hsikit)
EXECUTABLE_SETTING = "HSIKIT_EXECUTABLE"
OPTIONS_FILE = os.path.join(os.path.dirname(__file__), "options.json")

# Processing's names for hsikit's option names (the rest: the name in capitals)
_NAMES = {"fmt": "FORMAT"}
# short labels for the dialog (hsikit's help text becomes the tooltip); (command, name) before name
_LABELS = {
    "model": "Model checkpoint (.safetensors)",
    "tile": "Tile size (pixels)",
    "overlap": "Tile overlap (pixels)",
    "batch_size": "Batch size",
    "max_memory": "Memory budget (e.g. 8G)",
    "device": "Device (auto, cpu, cuda or cuda:N)",
    "probabilities": "Also write per-class probabilities",
    "confidence": "Also write the winning class's probability",
    "quicklook": "Also write a PNG quicklook",
    "legend": "Own class names and colours (.json, .csv, .clr)",
    "fmt": "Output layout",
    "method": "Method (subspace, pca, wavelet, tv, model)",
    "task": "Task of an all-in-one model",
    "scale": "Up-sampling factor",
    ("preprocess", "scale"): "Multiply values by",
    "drop_bad_bands": "Drop bad and water-vapour bands",
    "wavelength_range": "Keep bands between (nm)",
    "resample_to": "Resample spectrally to (sentinel2, landsat8)",
    "normalize": "Standardise each band",
    "pca": "Principal components to keep",
    "chain": "Preprocessing chain (.json)",
    "fields": "Field-id raster",
    "season_start": "Season start (MM-DD or YYYY-MM-DD)",
    "explain": "Write the explanation",
    "png": "Write a PNG of the class map",
    "block": "Block size (pixels)",
}
_FILTERS = {
    "model": "hsikit checkpoints (*.safetensors);;All files (*)",
    "legend": "Legends (*.json *.csv *.clr);;All files (*)",
    "chain": "Preprocessing chains (*.json);;All files (*)",
}
_LAYERS = {"fields"}  # file options that are rasters: picked from the project's layers
_ADVANCED = {"overlap", "batch_size", "max_memory", "device", "fmt", "block"}
_FLAG = re.compile(r"--[a-z][a-z0-9-]*")


def tr(text: str) -> str:
    return QCoreApplication.translate("hsikit", text)


def configured_executable() -> str:
    """The executable set in the provider's settings, or "" (then the environment variable or PATH decide)."""
    try:
        from processing.core.ProcessingConfig import ProcessingConfig
    except ImportError:  # pragma: no cover - without the Processing plugin there is no settings page
        return ""
    value = ProcessingConfig.getSetting(EXECUTABLE_SETTING)
    return str(value).strip() if value else ""


@functools.lru_cache(maxsize=None)
def _exported_commands() -> dict:
    if not os.path.isfile(OPTIONS_FILE):
        raise QgsProcessingException(f"{OPTIONS_FILE} is missing: build the plugin with `make qgis-plugin`")
    with open(OPTIONS_FILE, encoding="utf-8") as f:
        return json.load(f)["commands"]


def command_options(command: str, batch: bool = False) -> list:
    """The options hsikit declares for ``command`` (its batch task's with ``batch``), as exported to options.json."""
    return _exported_commands()[command]["batch" if batch else "single"]


def _is_set(parameters: dict, name: str) -> bool:
    value = parameters.get(name)
    return not (value is None or value == NULL or (isinstance(value, str) and not value.strip()))


def layer_path(layer, name: str) -> str:
    """The file (or GDAL connection string) of a raster layer, for hsikit to open."""
    if layer.providerType() != "gdal":
        raise QgsProcessingException(f"{name}: layer {layer.name()!r} is not a raster file GDAL reads (provider "
                                     f"{layer.providerType()}); hsikit needs a file")
    source = layer.source()
    if os.path.exists(source):
        return source
    parts = QgsProviderRegistry.instance().decodeUri("gdal", source)
    path = parts.get("path") or ""
    # a plain file with options appended to its URI; anything else (HDF5:…, /vsizip/…) GDAL opens as it is
    return path if os.path.isfile(path) and not parts.get("layerName") else source


def _sibling(path: str, suffix: str) -> str:
    """``/a/b.tif`` + ``_probabilities.tif`` -> ``/a/b_probabilities.tif`` (hsikit's names for extra outputs)."""
    return os.path.splitext(path)[0] + suffix


class StyleLoader(QgsProcessingLayerPostProcessorInterface):
    """Applies hsikit's ``.qml`` sidecar (class colours and names) to an output once QGIS has loaded it."""

    # Processing keeps only the C++ side of a post-processor: the Python object must be kept alive here
    _alive = {}

    def __init__(self, qml: str) -> None:
        super().__init__()
        self.qml = qml

    def postProcessLayer(self, layer, context, feedback) -> None:  # noqa: N802
        message, ok = layer.loadNamedStyle(self.qml)
        if not ok:
            feedback.pushWarning(f"could not apply the style {self.qml}: {message}")
        layer.triggerRepaint()

    @classmethod
    def attach(cls, context: QgsProcessingContext, path: str) -> None:
        """Style ``path`` with its ``.qml`` sidecar when QGIS loads it, if it has one."""
        qml = _sibling(path, ".qml")
        if os.path.isfile(qml) and context.willLoadLayerOnCompletion(path):
            cls._alive[path] = loader = cls(qml)
            context.layerToLoadOnCompletionDetails(path).setPostProcessor(loader)


def load_on_completion(context: QgsProcessingContext, path: str, name: str, output: str) -> None:
    """Have QGIS add ``path`` to the project when the algorithm finishes, styled by its ``.qml``."""
    context.addLayerToLoadOnCompletion(path, QgsProcessingContext.LayerDetails(name, context.project(), output))
    StyleLoader.attach(context, path)


class HsikitAlgorithm(QgsProcessingAlgorithm):
    """Runs one hsikit command. Subclasses set ``alg_id``, ``title``, ``group_key`` and ``summary``, declare their
    parameters in ``initAlgorithm`` and implement ``arguments`` (the command line) and ``outputs`` (the results)."""

    alg_id = ""
    title = ""
    group_key = ""
    summary = ""
    command = ""  # the hsikit command whose options options.json holds
    # exit codes that still produce outputs (a batch with failed scenes exits 1)
    accepted_codes = (0,)
    cancelled_note = "hsikit stopped and removed its unfinished files"

    _GROUPS = {"classification": "Classification", "restoration": "Restoration", "scenes": "Scenes"}

    def __init__(self) -> None:
        super().__init__()
        self._flags = {}  # command-line flag -> (parameter name, label), to point errors at the dialog's fields

    def createInstance(self):  # noqa: N802
        return type(self)()

    def name(self) -> str:
        return self.alg_id

    def displayName(self) -> str:  # noqa: N802
        return tr(self.title)

    def group(self) -> str:
        return tr(self._GROUPS[self.group_key])

    def groupId(self) -> str:  # noqa: N802
        return self.group_key

    def shortHelpString(self) -> str:  # noqa: N802
        rows = "".join(f"<dt><b>{html.escape(p.description())}</b> ({p.name()})</dt><dd>{html.escape(p.help())}</dd>"
                       for p in self.parameterDefinitions() if p.help())
        return f"<p>{html.escape(tr(self.summary))}</p>" + (f"<dl>{rows}</dl>" if rows else "")

    # -- parameters ------------------------------------------------------------------------------------------------
    def add(self, param, flag: str = "", helptext: str = "", advanced: bool = False):
        """Add a parameter, with its tooltip, and remember which command-line flag it stands for."""
        if helptext:
            param.setHelp(helptext)
        if advanced:
            param.setFlags(param.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
        if flag:
            self._flags[flag] = (param.name(), param.description())
        self.addParameter(param)
        return param

    def add_options(self, options: list) -> None:
        """Add a Processing parameter for each hsikit option (a MIN/MAX pair of numbers for a pair option)."""
        for opt in options:
            name, kind = opt["name"], opt["type"]
            pname = _NAMES.get(name, name.upper())
            label = tr(_LABELS.get((self.command, name)) or _LABELS.get(name) or name.replace("_", " ").capitalize())
            flag, optional = opt["flags"][0].split("/")[0], opt["default"] is None and not opt["required"]
            extra = {"helptext": opt["help"], "advanced": name in _ADVANCED}
            if kind in ("int", "float"):
                number = QgsProcessingParameterNumber.Integer if kind == "int" else QgsProcessingParameterNumber.Double
                param = QgsProcessingParameterNumber(pname, label, number, opt["default"], optional)
                if opt["low"] is not None:
                    param.setMinimum(opt["low"])
                self.add(param, flag, **extra)
            elif kind == "bool":
                self.add(QgsProcessingParameterBoolean(pname, label, bool(opt["default"])), flag, **extra)
            elif kind == "str" and opt["choices"]:
                self.add(QgsProcessingParameterEnum(pname, label, opt["choices"], False, opt["default"], optional,
                                                    usesStaticStrings=True), flag, **extra)
            elif kind == "str":
                self.add(QgsProcessingParameterString(pname, label, opt["default"], False, optional), flag, **extra)
            elif kind == "path" and name in _LAYERS:
                self.add(QgsProcessingParameterRasterLayer(pname, label, None, optional), flag, **extra)
            elif kind == "path":
                self.add(QgsProcessingParameterFile(pname, label, QgsProcessingParameterFile.File, "", None, optional,
                                                    _FILTERS.get(name, "")), flag, **extra)
            elif kind == "pair":
                for end, word in (("MIN", "from"), ("MAX", "to")):
                    self.add(QgsProcessingParameterNumber(f"{pname}_{end}", f"{label}: {tr(word)}",
                                                          QgsProcessingParameterNumber.Double, None, True),
                             flag, **extra)
            else:
                raise QgsProcessingException(f"{OPTIONS_FILE}: option {name} has an unknown type {kind!r}")

    def option_arguments(self, options: list, parameters: dict, context) -> list:
        """The command-line arguments of the options that are set (an unset optional option is left to hsikit)."""
        args = []
        for opt in options:
            name, kind = opt["name"], opt["type"]
            pname = _NAMES.get(name, name.upper())
            flags = opt["flags"][0].split("/")
            if kind == "pair":
                ends = [_is_set(parameters, f"{pname}_{e}") for e in ("MIN", "MAX")]
                if any(ends) and not all(ends):
                    raise QgsProcessingException(f"{pname}_MIN and {pname}_MAX: give both ends of the range, or none")
                if all(ends):
                    args += [flags[0], *(repr(self.parameterAsDouble(parameters, f"{pname}_{e}", context))
                                         for e in ("MIN", "MAX"))]
                continue
            if kind == "bool":
                on = self.parameterAsBoolean(parameters, pname, context)
                if len(flags) == 2:  # a --x/--no-x switch: always say which
                    args.append(flags[0] if on else flags[1])
                elif on:
                    args.append(flags[0])
                continue
            if not _is_set(parameters, pname):
                continue
            if kind == "int":
                value = str(self.parameterAsInt(parameters, pname, context))
            elif kind == "float":
                value = repr(self.parameterAsDouble(parameters, pname, context))
            elif kind == "str" and opt["choices"]:
                value = self.parameterAsEnumString(parameters, pname, context)
            elif kind == "str":
                value = self.parameterAsString(parameters, pname, context).strip()
            elif name in _LAYERS:
                value = layer_path(self.parameterAsRasterLayer(parameters, pname, context), pname)
            else:
                value = self.parameterAsFile(parameters, pname, context)
            args.append(f"{flags[0]}={value}")
        return args

    # -- running ---------------------------------------------------------------------------------------------------
    def processAlgorithm(self, parameters, context, feedback):  # noqa: N802
        result = self.execute(self.arguments(parameters, context), feedback)
        return self.outputs(parameters, context, feedback, result)

    def arguments(self, parameters: dict, context) -> list:
        raise NotImplementedError

    def outputs(self, parameters: dict, context, feedback, result: runner.Result) -> dict:
        raise NotImplementedError

    def execute(self, args: list, feedback, echo: bool = True) -> runner.Result:
        """Run ``hsikit args``: its lines go to the log (``echo``), progress lines also to the progress bar; a
        cancel interrupts it; a failure becomes a :class:`QgsProcessingException` with hsikit's one-line error."""
        try:
            exe = runner.find_executable(configured_executable())
        except runner.HsikitNotFound as exc:
            raise QgsProcessingException(str(exc)) from None
        feedback.pushCommandInfo(" ".join(shlex.quote(a) for a in (exe, *args)))
        label = [None]

        def on_line(line: runner.Line) -> None:
            if line.kind == "progress":
                if line.label != label[0]:
                    label[0] = line.label
                    feedback.setProgressText(line.label)
                feedback.setProgress(line.percent)
            if line.kind == "warning":
                feedback.pushWarning(line.text)
            elif line.kind != "error" and echo:
                feedback.pushInfo(line.text)

        result = runner.run(exe, args, on_line=on_line, is_cancelled=feedback.isCanceled)
        if result.cancelled and result.returncode != 0:
            raise QgsProcessingException(f"{self.displayName()} {tr('cancelled')}: {tr(self.cancelled_note)}")
        if result.returncode not in self.accepted_codes:
            raise QgsProcessingException(self.explain(result.message(args[0])))
        return result

    def explain(self, message: str) -> str:
        """hsikit's error line, with the dialog's name for each command-line flag it mentions."""
        known = [f for f in dict.fromkeys(_FLAG.findall(message)) if f in self._flags]
        notes = "; ".join(f"{f}: parameter {self._flags[f][0]}, \"{self._flags[f][1]}\"" for f in known)
        return f"{message} [{notes}]" if notes else message


class SceneAlgorithm(HsikitAlgorithm):
    """One scene in (``INPUT``), one raster out (``OUTPUT``), hsikit's options of ``command`` in between."""

    output_label = "Output"
    overwrite_help = "Replace existing outputs (hsikit never overwrites a file otherwise)."

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(QgsProcessingParameterRasterLayer("INPUT", tr("Input scene")), helptext=tr("The scene to process "
                 "(any raster GDAL reads: GeoTIFF, ENVI, VRT, HDF5 subdataset)."))
        self.add_options(command_options(self.command))
        self.add(QgsProcessingParameterBoolean("OVERWRITE", tr("Replace existing outputs"), False), "--overwrite",
                 tr(self.overwrite_help))
        self.add(QgsProcessingParameterRasterDestination("OUTPUT", tr(self.output_label)))
        for name, label, kind in self.extra_outputs():
            self.addOutput(kind(name, tr(label)))

    def extra_outputs(self) -> list:
        """(name, label, output class) of the files written beside OUTPUT when asked for."""
        return []

    def extra_paths(self, out: str, parameters: dict, context) -> dict:
        """Output name -> path of the extra files this run asked for."""
        return {}

    def arguments(self, parameters, context):
        scene = layer_path(self.parameterAsRasterLayer(parameters, "INPUT", context), "INPUT")
        out = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        args = [self.command, scene, "--out", out, *self.option_arguments(command_options(self.command), parameters,
                                                                          context)]
        return args + (["--overwrite"] if self.parameterAsBoolean(parameters, "OVERWRITE", context) else [])

    def outputs(self, parameters, context, feedback, result):
        out = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        results = {"OUTPUT": out}
        StyleLoader.attach(context, out)
        loading = context.willLoadLayerOnCompletion(out)
        kinds = {name: kind for name, _, kind in self.extra_outputs()}
        for name, path in self.extra_paths(out, parameters, context).items():
            if not os.path.isfile(path):
                feedback.pushWarning(f"hsikit did not write {path}")
                continue
            results[name] = path
            if loading and kinds[name] is QgsProcessingOutputRasterLayer:
                load_on_completion(context, path, os.path.splitext(os.path.basename(path))[0], name)
        return results


class ClassifyAlgorithm(SceneAlgorithm):
    alg_id, title, group_key, command = "classify", "Classify", "classification", "classify"
    output_label = "Class map"
    summary = ("Classify a whole scene in tiles with an hsikit classifier into a class map (uint8 COG, 0 = nodata) "
               "that loads with the model's class names and colours (.qml style).")

    def extra_outputs(self):
        return [("OUTPUT_PROBABILITIES", "Per-class probabilities", QgsProcessingOutputRasterLayer),
                ("OUTPUT_CONFIDENCE", "Confidence", QgsProcessingOutputRasterLayer),
                ("OUTPUT_QUICKLOOK", "Quicklook (PNG)", QgsProcessingOutputFile),
                ("OUTPUT_STYLE", "QGIS style (.qml)", QgsProcessingOutputFile)]

    def extra_paths(self, out, parameters, context):
        paths = {"OUTPUT_STYLE": _sibling(out, ".qml")}
        if _is_set(parameters, "PROBABILITIES"):
            paths["OUTPUT_PROBABILITIES"] = _sibling(out, "_probabilities.tif")
        if self.parameterAsBoolean(parameters, "CONFIDENCE", context):
            paths["OUTPUT_CONFIDENCE"] = _sibling(out, "_confidence.tif")
        if self.parameterAsBoolean(parameters, "QUICKLOOK", context):
            paths["OUTPUT_QUICKLOOK"] = _sibling(out, ".png")
        return paths


class DenoiseAlgorithm(SceneAlgorithm):
    alg_id, title, group_key, command = "denoise", "Denoise", "restoration", "denoise"
    output_label = "Denoised scene"
    summary = ("Denoise a whole scene in blended tiles, with a denoising model or without one (a training-free "
               "method); band wavelengths, CRS, transform and nodata are kept.")


class SuperResolveAlgorithm(SceneAlgorithm):
    alg_id, title, group_key, command = "superresolve", "Super-resolve", "restoration", "super-resolve"
    output_label = "Super-resolved scene"
    summary = ("Super-resolve a whole scene in tiles with a super-resolution model: same CRS and origin, the pixel "
               "size divided by the scale, band metadata kept.")


class RestoreAlgorithm(SceneAlgorithm):
    alg_id, title, group_key, command = "restore", "Restore", "restoration", "restore"
    output_label = "Restored scene"
    summary = ("Restore a scene with a prompt-driven all-in-one model (MP-HSIR: choose its task) or any single-task "
               "restoration model.")


class PreprocessAlgorithm(SceneAlgorithm):
    alg_id, title, group_key, command = "preprocess", "Preprocess", "scenes", "preprocess"
    output_label = "Preprocessed scene"
    summary = ("Prepare a scene's bands: drop bad bands, keep a wavelength range, scale, resample spectrally to a "
               "sensor, standardise, keep principal components, or apply a checkpoint's chain (.json).")


class StressAlgorithm(SceneAlgorithm):
    alg_id, title, group_key, command = "stress", "Stress", "classification", "stress"
    output_label = "Stress class map"
    summary = ("Map healthy / yellow rust / nitrogen deficiency (the model's classes) per pixel from a Sentinel-2 "
               "time series: per-date GeoTIFF layers, or a folder of dates, SAFE products or an EOPatch.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(QgsProcessingParameterMultipleLayers("INPUT", tr("Series: one raster per date"),
                                                      QgsProcessing.TypeRaster, None, True),
                 helptext=tr("Per-date GeoTIFFs (band descriptions B03, B04, …; the date in the ACQUISITION_DATE "
                             "tag or YYYYMMDD in the file name)."))
        self.add(QgsProcessingParameterFile("FOLDER", tr("Or: folder of the series"),
                                            QgsProcessingParameterFile.Folder, "", None, True),
                 helptext=tr("A folder of dated GeoTIFFs or SAFE products, or an eo-learn EOPatch folder."))
        self.add_options(command_options(self.command))
        self.add(QgsProcessingParameterBoolean("OVERWRITE", tr("Replace existing outputs"), False), "--overwrite",
                 tr(self.overwrite_help))
        self.add(QgsProcessingParameterRasterDestination("OUTPUT", tr(self.output_label)))
        for name, label, kind in self.extra_outputs():
            self.addOutput(kind(name, tr(label)))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        if not (_is_set(parameters, "INPUT") or _is_set(parameters, "FOLDER")):
            return False, tr("Give the series: raster layers (INPUT) or a folder (FOLDER)")
        return super().checkParameterValues(parameters, context)

    def arguments(self, parameters, context):
        series = [layer_path(layer, "INPUT") for layer in self.parameterAsLayerList(parameters, "INPUT", context)]
        if _is_set(parameters, "FOLDER"):
            series.append(self.parameterAsFile(parameters, "FOLDER", context))
        out = self.parameterAsOutputLayer(parameters, "OUTPUT", context)
        args = [self.command, *series, "--out", out,
                *self.option_arguments(command_options(self.command), parameters, context)]
        return args + (["--overwrite"] if self.parameterAsBoolean(parameters, "OVERWRITE", context) else [])

    def extra_outputs(self):
        return [("OUTPUT_FIELDS", "Class per field", QgsProcessingOutputRasterLayer),
                ("OUTPUT_DATE", "Most influential date", QgsProcessingOutputRasterLayer),
                ("OUTPUT_LENGTHS", "Capsule lengths", QgsProcessingOutputRasterLayer),
                ("OUTPUT_EXPLANATION", "Explanation (JSON)", QgsProcessingOutputFile),
                ("OUTPUT_EXPLANATION_PNG", "Explanation (PNG)", QgsProcessingOutputFile),
                ("OUTPUT_PNG", "Class map (PNG)", QgsProcessingOutputFile)]

    def extra_paths(self, out, parameters, context):
        paths = {"OUTPUT_LENGTHS": _sibling(out, "_lengths.tif")}
        if _is_set(parameters, "FIELDS"):
            paths["OUTPUT_FIELDS"] = _sibling(out, "_fields.tif")
        if self.parameterAsBoolean(parameters, "EXPLAIN", context):
            paths["OUTPUT_DATE"] = _sibling(out, "_date.tif")
            paths["OUTPUT_EXPLANATION"] = _sibling(out, "_explanation.json")
            paths["OUTPUT_EXPLANATION_PNG"] = _sibling(out, "_explanation.png")
        if self.parameterAsBoolean(parameters, "PNG", context):
            paths["OUTPUT_PNG"] = _sibling(out, ".png")
        return paths


class BatchClassifyAlgorithm(HsikitAlgorithm):
    alg_id, title, group_key, command = "batchclassify", "Batch classify", "classification", "classify"
    summary = ("Classify many scenes on a local Dask cluster of worker processes, one class map per scene in the "
               "output folder. A manifest in the folder records every scene: running again resumes (finished scenes "
               "are skipped). Scenes that fail are reported as warnings; the others are still loaded.")
    accepted_codes = (0, 1)
    cancelled_note = ("hsikit stopped and removed its unfinished files; finished scenes are kept, and running again "
                      "resumes")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(QgsProcessingParameterMultipleLayers("INPUT", tr("Input scenes"), QgsProcessing.TypeRaster, None,
                                                      True), helptext=tr("The scenes to classify."))
        self.add(QgsProcessingParameterFile("FOLDER", tr("And/or: folder of scenes"),
                                            QgsProcessingParameterFile.Folder, "", None, True),
                 helptext=tr("A folder searched recursively for rasters and SAFE products."))
        self.add_options(command_options(self.command, batch=True))
        self.add(QgsProcessingParameterNumber("WORKERS", tr("Worker processes"), QgsProcessingParameterNumber.Integer,
                                              None, True, 1), "--workers",
                 tr("Worker processes of the local cluster (default: half the CPU cores)."))
        self.add(QgsProcessingParameterBoolean("RETRY_FAILED", tr("Retry scenes that failed before"), False),
                 "--retry-failed", tr("Also retry scenes that failed in an earlier run (interrupted scenes are "
                                      "always retried)."))
        self.add(QgsProcessingParameterBoolean("OVERWRITE", tr("Replace outputs not written by this batch"), False),
                 "--overwrite", tr("Replace outputs that exist in the folder but were not written by this batch."))
        self.add(QgsProcessingParameterBoolean("LOAD_OUTPUTS", tr("Open the class maps"), True),
                 helptext=tr("Add every finished class map to the project, styled."))
        self.add(QgsProcessingParameterFolderDestination("OUTPUT", tr("Output folder")))
        self.addOutput(QgsProcessingOutputMultipleLayers("OUTPUT_LAYERS", tr("Class maps")))
        self.addOutput(QgsProcessingOutputNumber("DONE", tr("Scenes done")))
        self.addOutput(QgsProcessingOutputNumber("FAILED", tr("Scenes failed")))
        self.addOutput(QgsProcessingOutputFile("MANIFEST", tr("Manifest (SQLite)")))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        if not (_is_set(parameters, "INPUT") or _is_set(parameters, "FOLDER")):
            return False, tr("Give the scenes: raster layers (INPUT) and/or a folder (FOLDER)")
        return super().checkParameterValues(parameters, context)

    def arguments(self, parameters, context):
        inputs = [layer_path(layer, "INPUT") for layer in self.parameterAsLayerList(parameters, "INPUT", context)]
        if _is_set(parameters, "FOLDER"):
            inputs.append(self.parameterAsFile(parameters, "FOLDER", context))
        outdir = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        args = ["batch", self.command, *inputs, "--out", outdir,
                *self.option_arguments(command_options(self.command, batch=True), parameters, context)]
        if _is_set(parameters, "WORKERS"):
            args.append(f"--workers={self.parameterAsInt(parameters, 'WORKERS', context)}")
        for name, flag in (("RETRY_FAILED", "--retry-failed"), ("OVERWRITE", "--overwrite")):
            if self.parameterAsBoolean(parameters, name, context):
                args.append(flag)
        return args

    def outputs(self, parameters, context, feedback, result):
        outdir = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        status = self.execute(["batch", "status", "--json", outdir], feedback, echo=False)
        report = json.loads("\n".join(status.stdout))
        for failure in report.get("failures", []):
            feedback.pushWarning(f"failed: {failure.get('name', '')}: {failure.get('error', '')}")
        maps = []
        for scene in report.get("scenes_table", []):
            files = scene.get("outputs") or []
            if scene.get("status") == "done":
                maps += [f for f in files if f.endswith(".tif") and _sibling(f, ".qml") in files]
        if self.parameterAsBoolean(parameters, "LOAD_OUTPUTS", context):
            for path in maps:
                load_on_completion(context, path, os.path.splitext(os.path.basename(path))[0], "OUTPUT_LAYERS")
        counts = report.get("counts", {})
        return {"OUTPUT": outdir, "OUTPUT_LAYERS": maps, "DONE": counts.get("done", 0),
                "FAILED": counts.get("failed", 0), "MANIFEST": os.path.join(outdir, "hsikit-batch.sqlite")}


class SceneInfoAlgorithm(HsikitAlgorithm):
    alg_id, title, group_key, command = "sceneinfo", "Scene info", "scenes", "info"
    summary = ("Show a scene's size, bands, wavelength range, bad bands, CRS, resolution, nodata and data type, or a "
               "model checkpoint's card (architecture, configuration, bands, classes, preprocessing, provenance), "
               "as an HTML report and as JSON.")

    def initAlgorithm(self, config=None):  # noqa: N802
        self.add(QgsProcessingParameterRasterLayer("INPUT", tr("Scene"), None, True),
                 helptext=tr("A raster to describe (give this or a model)."))
        self.add(QgsProcessingParameterFile("MODEL", tr("Or: model checkpoint (.safetensors)"),
                                            QgsProcessingParameterFile.File, "", None, True, _FILTERS["model"]),
                 helptext=tr("A checkpoint whose card to show (give this or a scene)."))
        self.add(QgsProcessingParameterFileDestination("OUTPUT", tr("Report"), tr("HTML files (*.html)"),
                                                       QgsProcessing.TEMPORARY_OUTPUT))
        self.addOutput(QgsProcessingOutputString("JSON", tr("Information (JSON)")))

    def checkParameterValues(self, parameters, context):  # noqa: N802
        if _is_set(parameters, "INPUT") == _is_set(parameters, "MODEL"):
            return False, tr("Give either a scene (INPUT) or a model checkpoint (MODEL)")
        return super().checkParameterValues(parameters, context)

    def arguments(self, parameters, context):
        if _is_set(parameters, "MODEL"):
            target = self.parameterAsFile(parameters, "MODEL", context)
        else:
            target = layer_path(self.parameterAsRasterLayer(parameters, "INPUT", context), "INPUT")
        return [self.command, "--json", target]

    def outputs(self, parameters, context, feedback, result):
        text = "\n".join(result.stdout)
        try:
            info = json.loads(text)
        except ValueError as exc:
            raise QgsProcessingException(f"hsikit info wrote no JSON ({exc})") from None
        out = self.parameterAsFileOutput(parameters, "OUTPUT", context)
        write_text(out, info_html(info))
        return {"OUTPUT": out, "JSON": text}

    def execute(self, args, feedback, echo=False):
        return super().execute(args, feedback, echo=echo)  # the JSON goes to the report, not the log


def _cell(value) -> str:
    if isinstance(value, dict):
        return "<table>" + "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_cell(v)}</td></tr>"
                                   for k, v in value.items()) + "</table>"
    if isinstance(value, list):
        return html.escape(", ".join(str(v) for v in value))
    return html.escape("" if value is None else str(value))


def info_html(info: dict) -> str:
    """hsikit info's JSON as an HTML page: one row per field, nested fields as nested tables."""
    title = html.escape(str(info.get("file", "hsikit info")))
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title><style>"
            "th{text-align:left;vertical-align:top;padding-right:1em}td{vertical-align:top}</style></head>"
            f"<body><h2>{title}</h2>{_cell(info)}</body></html>\n")


def write_text(path: str, text: str) -> None:
    """Write ``path`` through a temporary file renamed when complete."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".hsikit-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def algorithms() -> list:
    """One instance of every hsikit algorithm, in toolbox order."""
    return [ClassifyAlgorithm(), DenoiseAlgorithm(), SuperResolveAlgorithm(), RestoreAlgorithm(),
            PreprocessAlgorithm(), SceneInfoAlgorithm(), StressAlgorithm(), BatchClassifyAlgorithm()]
