"""``open_scene``: one entry point for every raster hsikit reads."""

from __future__ import annotations

from pathlib import Path

from rasterio.errors import RasterioIOError

from hsikit.errors import InputError
from hsikit.io.safe import is_safe
from hsikit.io.scene import Scene

_GDAL_PREFIXES = ("HDF5:", "HDF4_", "NETCDF:", "/vsi", "GTIFF_DIR:", "SENTINEL2_")


def open_scene(path: str | Path, *, variable: str | None = None) -> Scene:
    """Open a raster lazily: GeoTIFF/COG, ENVI (header or data file), ERDAS .lan, VRT, HDF5/NetCDF subdatasets
    (``HDF5:"file.h5"://name``), a MATLAB ``.mat`` benchmark cube (``variable`` picks the array) or a Sentinel-2
    SAFE folder / its ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml`` (all bands at 10 m, see
    :func:`hsikit.io.sentinel2.open_safe`).

    Raises :class:`InputError` for a missing file or one GDAL cannot read.
    """
    text = str(path)
    if text.startswith(_GDAL_PREFIXES):
        return _open_gdal(text, text)
    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {p}")
    if is_safe(p):
        from hsikit.io.sentinel2 import open_safe

        return open_safe(p)
    if p.is_dir():
        raise InputError(f"{p} is a directory, not a raster file")
    if p.suffix.lower() == ".mat":
        from hsikit.io.matcubes import open_mat

        return open_mat(p, variable)
    if p.suffix.lower() == ".hdr":
        from hsikit.io.envi import data_file_for

        data = data_file_for(p)
        if data is None:
            raise InputError(f"ENVI header {p.name} has no data file beside it")
        p = data
    return _open_gdal(str(p), p.name)


def _open_gdal(path: str, label: str) -> Scene:
    from hsikit.io.matcubes import class_names_for
    from hsikit.io.rasterio_scene import RasterioScene

    try:
        sc = RasterioScene(path)
    except RasterioIOError as e:
        raise InputError(f"{label} is not a raster GDAL can read ({_open_reason(str(e), path)})") from None
    if sc.driver == "LAN" and sc.count == 1:
        sc.class_names = class_names_for(path, (sc.height, sc.width))
    return sc


def _open_reason(message: str, path: str) -> str:
    """GDAL's reason without the file's path (the message names the file already), on one line:
    "'/data/x.tif' not recognized as being in a supported file format." -> "not recognized as being in a ..."."""
    text = " ".join(message.split())
    for p in (path, Path(path).name):
        text = text.replace(f"'{p}'", "").replace(f"`{p}'", "")
    reason = text.split(":")[-1].strip().rstrip(".")
    return reason or "unrecognised format"
