"""Commands that read scenes and models without training: ``info``, ``models``, ``preprocess`` and
``import-weights``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from hsikit.cli.app import app, text_width, wrap
from hsikit.cli.options import (CHECKPOINT_OUT, RASTER_OUT, SET_METAVAR, command_line, exists, model_config)
from hsikit.cli.specs import spec_options
from hsikit.cli.state import state
from hsikit.pipelines.options import PREPROCESS



# -- info ----------------------------------------------------------------------------------------------------------
@app.command()
def info(
    scene: Path = typer.Argument(..., callback=exists, help="Any raster GDAL reads (GeoTIFF, ENVI .hdr, .lan, VRT, HDF5 subdataset) or a benchmark .mat cube."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    variable: Optional[str] = typer.Option(None, help="Variable name inside a .mat file."),
) -> None:
    """Show a scene's size, bands, wavelength range, bad bands, CRS, resolution, nodata and dtype, or a model's
    card (a checkpoint or an exported .onnx: architecture, configuration, bands, classes, preprocessing,
    provenance)."""
    from hsikit.pipelines.info import format_info, format_model_card, model_card, scene_info

    if scene.suffix.lower() in (".safetensors", ".onnx"):  # a model (or one exported to ONNX): its card
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
    width = text_width()
    name_w = max(len(e.name) for e in entries) + 2
    task_w = max(len(e.task) for e in entries) + 2
    for e in entries:  # one line of name, task and inputs; the description wrapped below it, never cut
        typer.echo(f"{e.name:<{name_w}}{e.task:<{task_w}}{e.inputs}".rstrip())
        typer.echo(wrap(e.description, width, "    "))


# -- preprocess ----------------------------------------------------------------------------------------------------
@app.command()
@spec_options(PREPROCESS)
def preprocess(
    scene: Path = typer.Argument(..., callback=exists, help="Input scene."),
    out: Path = typer.Option(..., "-o", "--out", callback=RASTER_OUT, help="Output GeoTIFF (float32, NaN nodata)."),
    options: dict = None,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
) -> None:
    """Prepare a scene's bands (bad bands, subsetting, scaling, spectral resampling, normalisation, PCA)."""
    from hsikit.pipelines.preprocess import preprocess_scene as run_preprocess

    if options.get("wavelength_range"):
        options["wavelength_range"] = tuple(options["wavelength_range"])
    res = run_preprocess(str(scene), out=out, **options, overwrite=overwrite, progress=state["progress"],
                         command=command_line())
    typer.echo(f"wrote {res.out} ({res.bands_in} -> {res.bands_out} bands, {res.seconds:.1f} s)")



# -- import-weights ------------------------------------------------------------------------------------------------
@app.command("import-weights")
def import_weights(
    arch: str = typer.Argument(..., help="Architecture of the published weights: essaformer, freenet, hsdt, "
                               "morpmamba, mp-hsir or spectralgpt."),
    source: Path = typer.Argument(..., callback=exists, help="The published weights: .pth/.pt/.ckpt (read with "
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
    text_embeddings: Optional[Path] = typer.Option(None, "--text-embeddings", callback=exists, help="mp-hsir: "
                                                   ".npz table of the task prompts' 512-d CLIP text embeddings, one "
                                                   "row per task prompt (required: the weights do not hold them)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint."),
) -> None:
    """Convert a paper's published weights into an hsikit checkpoint; the configuration is inferred from the
    tensor shapes and every tensor must map."""
    from hsikit.pipelines.import_weights import import_weights as run_import

    res = run_import(arch, source, out=out, overrides=model_config(set_), wavelengths=wavelengths, name=name,
                     overwrite=overwrite, text_embeddings=text_embeddings, command=command_line())
    for note in res.notes:
        typer.echo(f"  {note}")
    typer.echo(f"wrote {res.checkpoint} ({res.arch}, {res.tensors} tensors, {res.parameters:,} parameters)")

