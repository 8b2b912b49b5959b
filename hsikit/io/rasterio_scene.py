"""Scenes read lazily through rasterio/GDAL, with band metadata from GDAL tags and ENVI headers."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from hsikit.io.bandinfo import BandInfo, to_nanometres
from hsikit.io.envi import find_header, read_envi_metadata
from hsikit.io.scene import Scene

_LIST = re.compile(r"[{}]")


def _parse_list(text: str) -> list[str]:
    return [t.strip() for t in _LIST.sub("", text).split(",") if t.strip()]


def _band_tag(tags: dict[str, str], key: str) -> str | None:
    for k, v in tags.items():
        if k.lower() == key:
            return v
    return None


def _per_band_values(key: str, envi: dict[str, Any], dom: dict[str, str], per_band: list[dict[str, str]],
                     alias: str | None = None) -> list[float] | None:
    """One number per band from the ENVI header (via spectral), GDAL's ENVI domain, or per-band metadata items
    (EnMAP-Box/GDAL style; every band must have the item)."""
    if envi.get(key) is not None:
        return [float(v) for v in envi[key]]
    if dom.get(key):
        return [float(v) for v in _parse_list(dom[key])]
    vals = [_band_tag(t, key) or (alias and _band_tag(t, alias)) for t in per_band]
    if vals and all(v is not None for v in vals):
        return [float(v) for v in vals]
    return None


class RasterioScene(Scene):
    """A raster opened with rasterio; windows are read on demand, nothing else is loaded."""

    def __init__(self, path: str | Path, *, class_names: list[str] | None = None) -> None:
        self.path = str(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self._ds = rasterio.open(self.path)
        ds = self._ds
        meta_envi = self._envi_header_meta()
        nodata = ds.nodata
        if nodata is None and meta_envi.get("data_ignore_value") is not None:
            nodata = meta_envi["data_ignore_value"]
        crs, tags = self._georeferencing()
        super().__init__(
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtype=ds.dtypes[0],
            crs=crs,
            transform=ds.transform,
            nodata=nodata,
            bands=self._band_info(meta_envi),
            class_names=class_names,
            tags=tags,
        )
        self.driver = ds.driver
        # nodata-derived masks are handled by Scene.read_valid; only real mask bands need GDAL's mask
        self._has_mask = any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in ds.mask_flag_enums)

    # -- metadata ----------------------------------------------------------------------------------------------
    def _georeferencing(self) -> tuple[Any, dict[str, str]]:
        ds = self._ds
        tags = dict(ds.tags())
        crs = ds.crs
        gcps, _ = ds.gcps
        if ds.transform.is_identity and (gcps or ds.rpcs):
            tags["georef"] = "gcps"
            crs = None
        elif ds.transform.is_identity or ds.driver == "LAN" and abs(ds.transform.a) == 1.0:
            # LAN files without map info report a bogus EPSG:4326 with 1-degree pixels
            crs = None
        return crs, tags

    def _envi_header_meta(self) -> dict[str, Any]:
        if self._ds.driver != "ENVI":
            return {}
        hdr = find_header(self.path)
        return read_envi_metadata(hdr) if hdr else {}

    def _band_info(self, envi: dict[str, Any]) -> BandInfo:
        ds = self._ds
        n = ds.count
        per_band = [ds.tags(i + 1) for i in range(n)]
        dom = {k.lower(): v for k, v in ds.tags(ns="ENVI").items()} if ds.driver == "ENVI" else {}

        names = list(envi.get("band_names") or [])
        if len(names) != n:
            names = [d if d else f"band_{i + 1}" for i, d in enumerate(ds.descriptions)]
        wl_raw = _per_band_values("wavelength", envi, dom, per_band)
        units = envi.get("wavelength_units") or dom.get("wavelength_units") or _band_tag(per_band[0], "wavelength_units")
        fwhm_raw = _per_band_values("fwhm", envi, dom, per_band)
        bbl = _per_band_values("bbl", envi, dom, per_band, alias="bad_band")

        wavelengths = fwhm = None
        if wl_raw is not None and len(wl_raw) == n:
            wavelengths = to_nanometres(wl_raw, units)
            # FWHM shares the wavelength units; guess from the wavelengths when units are absent
            if fwhm_raw is not None and len(fwhm_raw) == n:
                factor = wavelengths[0] / wl_raw[0] if wl_raw[0] else 1.0
                fwhm = tuple(float(f) * factor for f in fwhm_raw)
        scale = offset = None
        if envi.get("reflectance_scale_factor"):
            scale = (1.0 / envi["reflectance_scale_factor"],) * n
        elif any(s != 1.0 for s in ds.scales) or any(o != 0.0 for o in ds.offsets):
            scale, offset = tuple(float(s) for s in ds.scales), tuple(float(o) for o in ds.offsets)
        if scale is not None and offset is None:
            offset = (0.0,) * n
        return BandInfo(
            names=tuple(str(x) for x in names),
            wavelengths=wavelengths,
            fwhm=fwhm,
            bad=tuple(int(b) == 0 for b in bbl) if bbl is not None and len(bbl) == n else (),
            scale=scale,
            offset=offset,
            wavelength_units=units_of(wl_raw, units) if wavelengths is not None else None,
        )

    # -- reading -----------------------------------------------------------------------------------------------
    def _read(self, window: Window, bands: list[int]) -> np.ndarray:
        return self._ds.read([b + 1 for b in bands], window=window)

    def _mask(self, window: Window) -> np.ndarray | None:
        if not self._has_mask:
            return None
        return self._ds.dataset_mask(window=window) > 0

    def close(self) -> None:
        self._ds.close()


def _normalise_units(units: str | None) -> str:
    u = (units or "").strip().lower()
    if u.startswith("micro") or u in ("um", "µm", "μm"):
        return "micrometers"
    return "nm"


def units_of(raw: list[float], units: str | None) -> str:
    """Units the input actually used (guessing like ``to_nanometres`` when they are missing/unknown)."""
    u = _normalise_units(units)
    if u == "nm" and (units or "").strip().lower() not in ("nm", "nanometers", "nanometer") and raw and max(raw) < 30:
        return "micrometers"
    return u
