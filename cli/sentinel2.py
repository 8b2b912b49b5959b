"""Sentinel-2 commands: ``hsikit s2 stack`` (a SAFE product or GeoTIFF stack to a reflectance COG) and
``hsikit s2 series`` (a per-date table of a multi-date series).

Imported by :mod:`hsikit.cli.main` once its app exists; heavy libraries load inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from hsikit.cli.app import app
from hsikit.cli.options import RASTER_OUT, Fmt, command_line, exists, positive
from hsikit.cli.state import state

s2_app = typer.Typer(help="Sentinel-2 L1C/L2A: SAFE folders and GeoTIFF stacks to reflectance, multi-date series.",
                     no_args_is_help=True)
app.add_typer(s2_app, name="s2")


def _split(text: Optional[str]) -> Optional[list[str]]:
    if text is None:
        return None
    items = [t for t in text.replace(",", " ").split() if t]
    return items or None


@s2_app.command("stack")
def stack(
    product: Path = typer.Argument(..., callback=exists, help="SAFE folder (or its MTD_MSIL1C.xml / MTD_MSIL2A.xml), or a GeoTIFF stack of Sentinel-2 bands."),
    out: Path = typer.Option(..., "-o", "--out", callback=RASTER_OUT, help="Reflectance to write: float32 COG, NaN nodata, band names and wavelengths."),
    resolution: int = typer.Option(10, "--resolution", "-r", min=1, help="SAFE products: pixel size 10, 20 or 60 m; every band is resampled onto that grid (bilinear up, average down)."),
    bands: Optional[str] = typer.Option(None, "--bands", "-b", help="Bands to keep, e.g. B02,B03,B04,B08 (any spelling: B2, b8a); default: all the product has."),
    cloud_mask: Optional[Path] = typer.Option(None, "--cloud-mask", callback=RASTER_OUT, help="Also write a cloud mask: 1 clear, 2 cloud / cloud shadow / cirrus (SCL 3, 8, 9, 10), 0 no data."),
    offset: Optional[float] = typer.Option(None, "--offset", help="GeoTIFF stacks: add offset in DN, as ESA's BOA_ADD_OFFSET (-1000 for baseline 04.00+ data that was not harmonised). Default: the file's tags, else 0."),
    quantification: Optional[float] = typer.Option(None, "--quantification", callback=positive, help="GeoTIFF stacks: DN of reflectance 1 (default: the file's tags, else 10000 for integer stacks, 1 for float)."),
    band_names: Optional[str] = typer.Option(None, "--band-names", help="GeoTIFF stacks without band descriptions: the name of every band in file order (e.g. B2,B3,B4,B8,SCL)."),
    granule: Optional[str] = typer.Option(None, "--granule", help="Old multi-granule SAFE products: the tile (T33UUU) to read."),
    fmt: Fmt = typer.Option(Fmt.cog, "--format", help="Output layout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
) -> None:
    """Write a Sentinel-2 product as one float32 reflectance raster on one grid (scale and offset applied)."""
    from hsikit.pipelines.sentinel2 import stack_product

    r = stack_product(product, out, resolution=resolution, bands=_split(bands), cloud_mask=cloud_mask, offset=offset,
                      quantification=quantification, band_names=_split(band_names), granule=granule,
                      fmt=fmt.value, overwrite=overwrite, command=command_line(), progress=state["progress"])
    res = r.written
    when = f", {r.acquired:%Y-%m-%d}" if r.acquired else ""
    typer.echo(f"wrote {res.out} ({len(res.bands)} bands {','.join(res.bands)}, {res.width}x{res.height} px, "
               f"{r.pixel_size:g} {r.units}{when}; valid {100 * res.valid_fraction:.1f} %)")
    if res.cloud_mask:
        typer.echo(f"wrote {res.cloud_mask} (cloud {100 * res.cloud_fraction:.1f} % of valid pixels, "
                   f"from {r.cloud_source})")


@s2_app.command("series")
def series(
    inputs: list[Path] = typer.Argument(..., callback=exists, help="SAFE folders, GeoTIFF stacks, folders of them, or one eo-learn EOPatch folder."),
    resolution: Optional[float] = typer.Option(None, "--resolution", "-r", callback=positive, help="Grid pixel size in CRS units (default: the earliest acquisition's; SAFE products 10 m)."),
    bands: Optional[str] = typer.Option(None, "--bands", "-b", help="Bands that every date must have (default: the bands all dates share)."),
    crs: Optional[str] = typer.Option(None, "--crs", help="Grid CRS, e.g. EPSG:32633 (default: the earliest acquisition's)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Align acquisitions of one area on one grid and print each date's tile, valid % and cloud %."""
    from hsikit.pipelines.sentinel2 import series_table

    table = series_table(inputs, resolution=resolution, bands=_split(bands), crs=crs, progress=state["progress"])
    if as_json:
        typer.echo(json.dumps(table, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    rows = table["acquisitions"]
    t = Table("date", "tile", "level", "cloud mask", "valid %", "cloud %", title_justify="left",
              title=f"{len(rows)} dates on a {table['width']}x{table['height']} px grid, {table['crs']}, "
                    f"{table['resolution']:g}" + (f"; bands {','.join(table['bands'])}" if table["bands"] else ""))
    for r in rows:
        t.add_row(r["date"], r["tile"], r["level"], r["cloud_source"], f"{r['valid_pct']:.1f}",
                  f"{r['cloud_pct']:.1f}")
    for column in t.columns:  # cells fold, never end in "…"; the title wraps above the table
        column.overflow = "fold"
    Console().print(t)
