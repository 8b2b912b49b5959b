"""Sentinel-2 commands: ``hsikit s2 stack`` (a SAFE product or GeoTIFF stack to a reflectance COG) and
``hsikit s2 series`` (a per-date table of a multi-date series).

Imported by :mod:`hsikit.cli.main` once its app exists; heavy libraries load inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from hsikit.cli.main import RASTER_OUT, Fmt, _command_line, _exists, _positive, _state, app

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
    product: Path = typer.Argument(..., callback=_exists, help="SAFE folder (or its MTD_MSIL1C.xml / MTD_MSIL2A.xml), or a GeoTIFF stack of Sentinel-2 bands."),
    out: Path = typer.Option(..., "-o", "--out", callback=RASTER_OUT, help="Reflectance to write: float32 COG, NaN nodata, band names and wavelengths."),
    resolution: int = typer.Option(10, "--resolution", "-r", min=1, help="SAFE products: pixel size 10, 20 or 60 m; every band is resampled onto that grid (bilinear up, average down)."),
    bands: Optional[str] = typer.Option(None, "--bands", "-b", help="Bands to keep, e.g. B02,B03,B04,B08 (any spelling: B2, b8a); default: all the product has."),
    cloud_mask: Optional[Path] = typer.Option(None, "--cloud-mask", callback=RASTER_OUT, help="Also write a cloud mask: 1 clear, 2 cloud / cloud shadow / cirrus (SCL 3, 8, 9, 10), 0 no data."),
    offset: Optional[float] = typer.Option(None, "--offset", help="GeoTIFF stacks: add offset in DN, as ESA's BOA_ADD_OFFSET (-1000 for baseline 04.00+ data that was not harmonised). Default: the file's tags, else 0."),
    quantification: Optional[float] = typer.Option(None, "--quantification", callback=_positive, help="GeoTIFF stacks: DN of reflectance 1 (default: the file's tags, else 10000 for integer stacks, 1 for float)."),
    band_names: Optional[str] = typer.Option(None, "--band-names", help="GeoTIFF stacks without band descriptions: the name of every band in file order (e.g. B2,B3,B4,B8,SCL)."),
    granule: Optional[str] = typer.Option(None, "--granule", help="Old multi-granule SAFE products: the tile (T33UUU) to read."),
    fmt: Fmt = typer.Option(Fmt.cog, "--format", help="Output layout."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
) -> None:
    """Write a Sentinel-2 product as one float32 reflectance raster on one grid (scale and offset applied)."""
    from hsikit.errors import OptionError
    from hsikit.io.s2_stack import window_count, write_reflectance
    from hsikit.io.sentinel2 import is_safe, open_s2_geotiff, open_safe
    from hsikit.pipelines.common import provenance_tags
    from hsikit.progress import Progress

    if is_safe(product):
        if offset is not None or quantification is not None or band_names is not None:
            raise OptionError("--offset, --quantification and --band-names are for GeoTIFF stacks; SAFE products "
                              "carry their own metadata")
        sc = open_safe(product, resolution=resolution, bands=_split(bands), granule=granule)
    else:
        sc = open_s2_geotiff(product, bands=_split(bands), band_names=_split(band_names),
                             quantification=quantification, add_offset=offset)
    with sc:
        tags = provenance_tags(scene=sc, command=_command_line(), bands_used=list(sc.bands.names))
        with Progress(_state["progress"], window_count(sc), f"writing {out.name}", unit="windows") as bar:
            res = write_reflectance(sc, out, cloud_out=cloud_mask, fmt=fmt.value, overwrite=overwrite, tags=tags,
                                    on_window=bar.advance)
    when = f", {sc.acquired:%Y-%m-%d}" if sc.acquired else ""
    typer.echo(f"wrote {res.out} ({len(res.bands)} bands {','.join(res.bands)}, {res.width}x{res.height} px, "
               f"{sc.res[0]:g} {'m' if sc.crs.is_projected else 'deg'}{when}; valid {100 * res.valid_fraction:.1f} %)")
    if res.cloud_mask:
        typer.echo(f"wrote {res.cloud_mask} (cloud {100 * res.cloud_fraction:.1f} % of valid pixels, "
                   f"from {sc.cloud_source})")


@s2_app.command("series")
def series(
    inputs: list[Path] = typer.Argument(..., callback=_exists, help="SAFE folders, GeoTIFF stacks, folders of them, or one eo-learn EOPatch folder."),
    resolution: Optional[float] = typer.Option(None, "--resolution", "-r", callback=_positive, help="Grid pixel size in CRS units (default: the earliest acquisition's; SAFE products 10 m)."),
    bands: Optional[str] = typer.Option(None, "--bands", "-b", help="Bands that every date must have (default: the bands all dates share)."),
    crs: Optional[str] = typer.Option(None, "--crs", help="Grid CRS, e.g. EPSG:32633 (default: the earliest acquisition's)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
) -> None:
    """Align acquisitions of one area on one grid and print each date's tile, valid % and cloud %."""
    import dask

    from hsikit.io.timeseries import open_series
    from hsikit.progress import Progress

    ds = open_series([str(p) for p in inputs], resolution=resolution, bands=_split(bands), crs=crs)
    rows = []
    n_px = ds.sizes["y"] * ds.sizes["x"]
    with Progress(_state["progress"], ds.sizes["time"], "reading dates", unit="dates") as bar:
        for i in range(ds.sizes["time"]):
            v, c = ds["valid"][i], ds["cloud"][i]
            n_valid, n_cloud = dask.compute(v.sum(), (c & v).sum())
            n_valid, n_cloud = int(n_valid), int(n_cloud)
            coord = lambda name: str(ds[name].values[i]) if name in ds.coords else ""  # noqa: E731
            src = coord("cloud_source") or ds["cloud"].attrs.get("cloud_source", "")
            rows.append({"date": str(ds["time"].values[i])[:19], "tile": coord("tile"), "level": coord("level"),
                         "cloud_source": src, "valid_pct": round(100 * n_valid / n_px, 2),
                         "cloud_pct": round(100 * n_cloud / n_valid, 2) if n_valid else 0.0,
                         "source": coord("source")})
            bar.advance()
    crs_txt = ds.rio.crs.to_string() if ds.rio.crs is not None else "no CRS"
    res = abs(ds.rio.transform().a)
    header = {"dates": len(rows), "width": ds.sizes["x"], "height": ds.sizes["y"], "crs": crs_txt,
              "resolution": res, "bands": [str(b) for b in ds["band"].values] if "band" in ds.coords else []}
    if as_json:
        typer.echo(json.dumps({**header, "acquisitions": rows}, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table("date", "tile", "level", "cloud mask", "valid %", "cloud %", title_justify="left",
              title=f"{len(rows)} dates on a {ds.sizes['x']}x{ds.sizes['y']} px grid, {crs_txt}, {res:g}"
                    + (f"; bands {','.join(header['bands'])}" if header["bands"] else ""))
    for r in rows:
        t.add_row(r["date"], r["tile"], r["level"], r["cloud_source"], f"{r['valid_pct']:.1f}",
                  f"{r['cloud_pct']:.1f}")
    for column in t.columns:  # cells fold, never end in "…"; the title wraps above the table
        column.overflow = "fold"
    Console().print(t)
