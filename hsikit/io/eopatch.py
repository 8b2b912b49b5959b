"""eo-learn EOPatch folders (``data/``, ``mask/``, ``mask_timeless/`` ``.npy`` features, ``timestamps.json``,
``bbox.geojson``) as a lazily read ``xarray.Dataset`` with the same conventions as :func:`open_series`.

Features are memory-mapped ``.npy`` files (``.npy.gz`` ones are decompressed into memory when opened); pickled
features (old ``*.pkl`` EOPatches) are never read.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from hsikit.errors import InputError

#: eo-learn's example land-use/land-cover classes (``mask_timeless/LULC``)
LULC_CLASSES = ("no data", "cultivated land", "forest", "grassland", "shrubland", "water", "wetlands", "tundra",
                "artificial surface", "bareland", "snow and ice")
_FEATURE_DIRS = ("data", "mask", "data_timeless", "mask_timeless")


def _find(root: Path, stem: str) -> Path | None:
    for suffix in ("", ".gz"):
        p = root / f"{stem}{suffix}"
        if p.is_file():
            return p
    return None


def is_eopatch(path: str | Path) -> bool:
    """A folder with ``timestamps.json`` (or ``.json.gz``), ``bbox.geojson`` and a ``data`` or ``mask`` folder."""
    p = Path(path)
    return (p.is_dir() and _find(p, "timestamps.json") is not None and _find(p, "bbox.geojson") is not None
            and any((p / d).is_dir() for d in ("data", "mask")))


def _read_text(p: Path) -> str:
    if p.suffix == ".gz":
        with gzip.open(p, "rt", encoding="utf-8") as f:
            return f.read()
    return p.read_text(encoding="utf-8")


def _load(p: Path) -> Any:
    try:
        if p.name.endswith(".npy.gz"):
            with gzip.open(p, "rb") as f:
                return np.load(io.BytesIO(f.read()), allow_pickle=False)
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except ValueError as e:
        raise InputError(f"{p.name}: not a plain numpy array ({e})") from None


def _features(root: Path) -> dict[str, dict[str, Path]]:
    out: dict[str, dict[str, Path]] = {}
    for d in _FEATURE_DIRS:
        folder = root / d
        if folder.is_dir():
            for f in sorted(folder.iterdir()):
                if f.name.endswith((".npy", ".npy.gz")):
                    out.setdefault(d, {})[f.name.split(".npy")[0]] = f
    return out


def open_eopatch(path: str | Path, *, chunks: int = 512):
    """Open an EOPatch folder as an ``xarray.Dataset`` (dask-backed).

    Variables: every single-channel ``data/`` feature (``NDVI``, ``CLP`` ...) as float32 (time, y, x);
    ``data/BANDS*`` with 13 channels as ``reflectance`` (time, band, y, x) in B01..B12/B8A order; ``cloud`` =
    ``mask/CLM`` > 0 (False everywhere when absent), ``valid`` = ``mask/IS_DATA`` > 0 (else where NDVI is not NaN);
    single-channel ``mask_timeless``/``data_timeless`` features (``LULC``, ``DEM``) as (y, x). Coordinates: ``time``
    (datetime64[ns], from ``timestamps.json``), ``y``/``x`` pixel centres from ``bbox.geojson``; CRS via rioxarray.
    """
    import dask.array as da
    import rioxarray  # noqa: F401
    import xarray as xr
    from rasterio.transform import from_bounds

    from hsikit.io.sentinel2 import parse_time
    from hsikit.preprocess.sensors import SENTINEL2

    root = Path(path)
    if not is_eopatch(root):
        raise InputError(f"{root} is not an EOPatch folder (timestamps.json, bbox.geojson, data/ or mask/)")
    try:
        stamps = json.loads(_read_text(_find(root, "timestamps.json")))
        times = [parse_time(str(s)) for s in stamps]
    except (ValueError, TypeError) as e:
        raise InputError(f"{root.name}/timestamps.json: not a list of ISO times ({e})") from None
    if len(set(times)) != len(times):
        raise InputError(f"{root.name}/timestamps.json lists the same time twice")
    crs, (left, bottom, right, top) = _bbox(root)
    feats = _features(root)
    arrays = {d: {k: _load(p) for k, p in fs.items()} for d, fs in feats.items()}
    temporal = [a for d in ("data", "mask") for a in arrays.get(d, {}).values()]
    if not temporal:
        raise InputError(f"{root.name} holds no data/ or mask/ features")
    t, h, w = temporal[0].shape[:3]
    if t != len(times):
        raise InputError(f"{root.name}: features have {t} time steps, timestamps.json {len(times)}")
    transform = from_bounds(left, bottom, right, top, w, h)

    def lazy(a, timeless: bool):
        if tuple(a.shape[:3] if not timeless else a.shape[:2]) != ((t, h, w) if not timeless else (h, w)):
            raise InputError(f"{root.name}: feature of shape {a.shape} does not match ({t}, {h}, {w})")
        ch = (h if chunks is None else chunks)
        c = ((1, ch, ch, -1) if not timeless else (ch, ch, -1))
        return da.from_array(a, chunks=c, asarray=True, inline_array=True)

    data_vars: dict[str, Any] = {}
    for name, a in arrays.get("data", {}).items():
        arr = lazy(a, False)
        if a.shape[3] == 1:
            data_vars[name] = (("time", "y", "x"), arr[..., 0].astype(np.float32))
        elif name.upper().startswith("BANDS") and a.shape[3] == len(SENTINEL2.bands):
            data_vars["reflectance"] = (("time", "band", "y", "x"), arr.transpose(0, 3, 1, 2).astype(np.float32))
        else:
            data_vars[name] = (("time", "y", "x", f"{name}_channel"), arr)
    masks = arrays.get("mask", {})
    if "CLM" in masks:
        data_vars["cloud"] = (("time", "y", "x"), lazy(masks["CLM"], False)[..., 0] > 0)
    else:
        data_vars["cloud"] = (("time", "y", "x"), da.zeros((t, h, w), dtype=bool, chunks=(1, chunks, chunks)))
    if "IS_DATA" in masks:
        data_vars["valid"] = (("time", "y", "x"), lazy(masks["IS_DATA"], False)[..., 0] > 0)
    elif "NDVI" in data_vars:
        data_vars["valid"] = (("time", "y", "x"), ~da.isnan(data_vars["NDVI"][1]))
    else:
        data_vars["valid"] = (("time", "y", "x"), da.ones((t, h, w), dtype=bool, chunks=(1, chunks, chunks)))
    for d in ("mask_timeless", "data_timeless"):
        for name, a in arrays.get(d, {}).items():
            if a.ndim == 3 and a.shape[2] == 1:
                data_vars[name] = (("y", "x"), lazy(a, True)[..., 0])

    coords: dict[str, Any] = {
        "time": np.array([np.datetime64(x, "ns") for x in times]),
        "y": transform.f + transform.e * (np.arange(h) + 0.5),
        "x": transform.c + transform.a * (np.arange(w) + 0.5),
    }
    if "reflectance" in data_vars:
        coords["band"] = list(SENTINEL2.bands)
        coords["wavelength"] = ("band", list(SENTINEL2.centers))
    ds = xr.Dataset(data_vars, coords=coords)
    ds["cloud"].attrs["cloud_source"] = "CLM" if "CLM" in masks else "none"
    if "LULC" in ds:
        ds["LULC"].attrs.update(flag_values=list(range(len(LULC_CLASSES))),
                                flag_meanings=" ".join(n.replace(" ", "_") for n in LULC_CLASSES))
    ds.attrs["source"] = root.name
    ds = ds.sortby("time")
    return ds.rio.write_crs(crs).rio.write_transform(transform)


def _bbox(root: Path):
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        gj = json.loads(_read_text(_find(root, "bbox.geojson")))
        name = gj.get("crs", {}).get("properties", {}).get("name", "EPSG:4326")
        crs = CRS.from_user_input(name.replace("urn:ogc:def:crs:", "").replace("::", ":"))
        ring = np.asarray(gj["coordinates"][0], dtype=float)
    except (ValueError, KeyError, TypeError, IndexError, CRSError) as e:
        raise InputError(f"{root.name}/bbox.geojson: not a polygon with a CRS ({e})") from None
    return crs, (ring[:, 0].min(), ring[:, 1].min(), ring[:, 0].max(), ring[:, 1].max())
