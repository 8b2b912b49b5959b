"""Sentinel-2 pipelines behind ``hsikit s2``: a product to one reflectance raster (:func:`stack_product`) and the
per-date table of a multi-date series (:func:`series_table`). The CLI parses options, calls these and prints."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from hsikit.errors import OptionError


@dataclass
class S2StackResult:
    """What :func:`stack_product` wrote, with the facts of the product it read."""

    #: the written files and their statistics (:class:`hsikit.io.s2_stack.StackResult`)
    written: Any
    #: acquisition time (naive UTC) or None
    acquired: datetime | None
    #: pixel size of the output grid, in ``units``
    pixel_size: float
    #: "m" for a projected CRS, else "deg"
    units: str
    #: where the product's cloud mask comes from (``SCL``, ``MSK_CLASSI``, ``MSK_CLDPRB``, ``file`` or ``none``)
    cloud_source: str


def stack_product(
    product: str | Path,
    out: str | Path,
    *,
    resolution: int = 10,
    bands: Sequence[str] | None = None,
    cloud_mask: str | Path | None = None,
    offset: float | None = None,
    quantification: float | None = None,
    band_names: Sequence[str] | None = None,
    granule: str | None = None,
    fmt: str = "cog",
    overwrite: bool = False,
    command: str | None = None,
    progress: bool = False,
) -> S2StackResult:
    """Write a Sentinel-2 product as one float32 reflectance raster on one grid (scale and offset applied).

    ``product``: a SAFE folder or its ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` (read with
    :func:`hsikit.io.sentinel2.open_safe` at ``resolution`` m, ``granule`` for old multi-granule products), or a
    GeoTIFF stack of bands (:func:`hsikit.io.sentinel2.open_s2_geotiff`, with ``offset``, ``quantification`` and
    ``band_names`` for stacks whose tags do not say them). ``cloud_mask`` also writes the cloud mask.
    """
    from hsikit.io.s2_stack import window_count, write_reflectance
    from hsikit.io.safe import is_safe
    from hsikit.io.sentinel2 import open_s2_geotiff, open_safe
    from hsikit.pipelines.common import provenance_tags
    from hsikit.progress import Progress

    bands = list(bands) if bands else None
    if is_safe(product):
        if offset is not None or quantification is not None or band_names is not None:
            raise OptionError("--offset, --quantification and --band-names are for GeoTIFF stacks; SAFE products "
                              "carry their own metadata")
        sc = open_safe(product, resolution=resolution, bands=bands, granule=granule)
    else:
        sc = open_s2_geotiff(product, bands=bands, band_names=list(band_names) if band_names else None,
                             quantification=quantification, add_offset=offset)
    with sc:
        tags = provenance_tags(scene=sc, command=command, bands_used=list(sc.bands.names))
        with Progress(progress, window_count(sc), f"writing {Path(out).name}", unit="windows") as bar:
            res = write_reflectance(sc, out, cloud_out=cloud_mask, fmt=fmt, overwrite=overwrite, tags=tags,
                                    on_window=bar.advance)
        return S2StackResult(written=res, acquired=sc.acquired, pixel_size=float(sc.res[0]),
                             units="m" if sc.crs.is_projected else "deg", cloud_source=sc.cloud_source)


def series_table(
    inputs: Sequence[str | Path],
    *,
    resolution: float | None = None,
    bands: Sequence[str] | None = None,
    crs: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Align the acquisitions of ``inputs`` on one grid (:func:`hsikit.io.timeseries.open_series`) and count each
    date's valid and cloudy pixels.

    Returns ``{"dates", "width", "height", "crs", "resolution", "bands", "acquisitions"}``; each acquisition is
    ``{"date", "tile", "level", "cloud_source", "valid_pct", "cloud_pct", "source"}`` (cloud % of valid pixels).
    """
    import dask

    from hsikit.io.timeseries import open_series
    from hsikit.progress import Progress

    ds = open_series([str(p) for p in inputs], resolution=resolution, bands=list(bands) if bands else None, crs=crs)
    rows = []
    n_px = ds.sizes["y"] * ds.sizes["x"]
    with Progress(progress, ds.sizes["time"], "reading dates", unit="dates") as bar:
        for i in range(ds.sizes["time"]):
            v, c = ds["valid"][i], ds["cloud"][i]
            n_valid, n_cloud = dask.compute(v.sum(), (c & v).sum())
            n_valid, n_cloud = int(n_valid), int(n_cloud)

            def coord(name: str) -> str:
                return str(ds[name].values[i]) if name in ds.coords else ""

            src = coord("cloud_source") or ds["cloud"].attrs.get("cloud_source", "")
            rows.append({"date": str(ds["time"].values[i])[:19], "tile": coord("tile"), "level": coord("level"),
                         "cloud_source": src, "valid_pct": round(100 * n_valid / n_px, 2),
                         "cloud_pct": round(100 * n_cloud / n_valid, 2) if n_valid else 0.0,
                         "source": coord("source")})
            bar.advance()
    return {"dates": len(rows), "width": ds.sizes["x"], "height": ds.sizes["y"],
            "crs": ds.rio.crs.to_string() if ds.rio.crs is not None else "no CRS",
            "resolution": abs(ds.rio.transform().a),
            "bands": [str(b) for b in ds["band"].values] if "band" in ds.coords else [],
            "acquisitions": rows}
