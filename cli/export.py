"""``hsikit export``: a checkpoint as an ONNX model (and a STAC MLM item) that runs without torch."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from hsikit.cli.app import app
from hsikit.cli.options import exists, suffix_check
from hsikit.export import OPSET

ONNX_OUT = suffix_check((".onnx",), "an ONNX model")
ITEM_OUT = suffix_check((".json",), "a STAC item (JSON)")


@app.command()
def export(
    model: Path = typer.Argument(..., callback=exists, help="Checkpoint to export (.safetensors)."),
    out: Path = typer.Option(..., "-o", "--out", callback=ONNX_OUT,
                             help="ONNX model to write (.onnx): the network with its linear preprocessing folded in, "
                                  "class probabilities out, any batch, height and width."),
    mlm: Optional[Path] = typer.Option(None, "--mlm", callback=ITEM_OUT, metavar="ITEM.json",
                                       help="Also write a STAC item describing the model (Machine Learning Model "
                                            "extension): bands, value scaling, tiling, classes and colours, "
                                            "provenance."),
    opset: int = typer.Option(OPSET, "--opset", min=13, max=20,
                              help="ONNX opset version; the default runs on onnxruntime 1.11 and later."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
) -> None:
    """Export a model to ONNX for onnxruntime, QGIS or any ONNX runtime, checked against torch; `hsikit classify
    --model MODEL.onnx` runs it without torch."""
    from hsikit.pipelines.export import export_model

    res = export_model(model, out=out, mlm=mlm, opset=opset, overwrite=overwrite)
    folded = f"{' > '.join(res.folded)} folded in" if res.folded else f"preprocessing kept outside: {res.not_folded}"
    typer.echo(f"wrote {res.onnx} ({res.arch}, opset {res.opset}, {res.parameters:,} parameters; {folded})")
    typer.echo(f"onnxruntime matches torch within {res.max_difference:.1e} on {len(res.shapes)} input shapes "
               f"({res.seconds:.1f} s)")
    if res.mlm:
        typer.echo(f"wrote {res.mlm}")
