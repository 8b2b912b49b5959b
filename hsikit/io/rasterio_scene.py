"""Scenes read lazily through rasterio/GDAL, with band metadata from GDAL tags and ENVI headers."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from hsikit.errors import InputError
from hsikit.io.bandinfo import BandInfo, to_nanometres
from hsikit.io.envi import find_header, read_envi_metadata
from hsikit.io.scene import Scene

try:  # rasterio 1.3 raises GDAL's errors (CPLE_*) from reads directly, 1.4 wraps them in RasterioIOError
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover - private module moved
    CPLE_BaseError = RasterioIOError

_READ_ERRORS = (RasterioIOError, CPLE_BaseError)
_LIST = re.compile(r"[{}]")
_LIBTIFF_FN = re.compile(r"\b(TIFF\w+)")
_GOT_BYTES = re.compile(r"got (\d+) bytes, expected (\d+)")
_HEADER_OFFSET = re.compile(r"^\s*header\s+offset\s*=\s*(\d+)", re.IGNORECASE | re.MULTILINE)


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
        if ds.driver == "ENVI":
            try:
                self._check_raw_size()
            except InputError:
                ds.close()
                raise
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
        try:
            return self._ds.read([b + 1 for b in bands], window=window)
        except _READ_ERRORS as e:
            bad = _failing(bands, lambda b: self._ds.read(b + 1, window=window)) if len(bands) > 1 else bands
            raise self._read_error(window, _band_list(bad or bands), e) from e

    def _mask(self, window: Window) -> np.ndarray | None:
        if not self._has_mask:
            return None
        try:
            return self._ds.dataset_mask(window=window) > 0
        except _READ_ERRORS as e:
            bands = list(range(self.count))
            bad = _failing(bands, lambda b: self._ds.read_masks(b + 1, window=window))
            # a per-dataset mask (or alpha band) is shared by every band
            what = "mask band" if len(bad) in (0, len(bands)) else "mask of " + _band_list(bad)
            raise self._read_error(window, what, e) from e

    def check_readable(self) -> None:
        """Read the first and last block of every band (and of the mask band, if any), raising
        :class:`InputError` if one fails.

        Cheap (two blocks a band, not the whole file) and catches the usual damage, a truncated file, before a
        long run reaches it.
        """
        by_shape: dict[tuple[int, int], list[int]] = {}
        for b, shape in enumerate(self._ds.block_shapes):
            by_shape.setdefault(tuple(shape), []).append(b)
        item = np.dtype(self.dtype).itemsize
        for (bh, bw), bands in by_shape.items():
            # several bands a read (far fewer calls), at most about 64 MB at once
            step = max(1, (64 << 20) // (bh * bw * item))
            for w in self._end_blocks(bh, bw):
                for i in range(0, len(bands), step):
                    self.read(w, bands[i : i + step])
        if self._has_mask:
            for w in self._end_blocks(*self._ds.block_shapes[0]):
                with self._lock:
                    self._mask(w)

    def _end_blocks(self, bh: int, bw: int) -> list[Window]:
        """The first and the last block of a band with blocks of ``bh`` x ``bw``, as windows inside the raster."""
        r1 = (self.height - 1) // bh * bh
        c1 = (self.width - 1) // bw * bw
        first = Window(0, 0, min(bw, self.width), min(bh, self.height))
        return [first] if (r1, c1) == (0, 0) else [first, Window(c1, r1, self.width - c1, self.height - r1)]

    def _read_error(self, window: Window, what: str, err: Exception) -> InputError:
        r0, c0 = int(window.row_off), int(window.col_off)
        return InputError(f"cannot read {self.name}: {what}, rows {r0}-{r0 + int(window.height) - 1}, "
                          f"cols {c0}-{c0 + int(window.width) - 1} ({gdal_reason(err)} / the file may be "
                          "truncated or damaged)")

    def _check_raw_size(self) -> None:
        """GDAL reads the missing part of a truncated ENVI file as zeros, silently: compare the size first."""
        hdr = find_header(self.path)
        try:
            text = hdr.read_text(errors="replace") if hdr is not None else ""
            size = os.path.getsize(self.path)
        except OSError:
            return
        m = _HEADER_OFFSET.search(text)
        offset = int(m.group(1)) if m else 0
        item = np.dtype(self._ds.dtypes[0]).itemsize
        band_bytes = self.width * self.height * item
        if size >= offset + band_bytes * self.count:
            return
        interleave = (self._ds.tags(ns="IMAGE_STRUCTURE").get("INTERLEAVE") or "BAND").upper()
        have = max(0, size - offset)
        if interleave == "BAND":
            first = have // band_bytes
            what = _band_list(list(range(first, self.count)))
        else:  # BIL/BIP: every band misses the rows from the first incomplete line on
            first_row = have // (self.width * self.count * item)
            what = f"{_band_list(list(range(self.count)))}, rows {first_row}-{self.height - 1}"
        raise InputError(f"cannot read {self.name}: {what} (the file has {size} bytes, its ENVI header describes "
                         f"{offset + band_bytes * self.count}; the file may be truncated)")

    def close(self) -> None:
        self._ds.close()


def _failing(bands: list[int], read_one: Callable[[int], Any]) -> list[int]:
    """The bands whose read fails when read one at a time (the error path only)."""
    bad = []
    for b in bands:
        try:
            read_one(b)
        except _READ_ERRORS:
            bad.append(b)
    return bad


def _band_list(bands: list[int]) -> str:
    """0-based indices as 1-based words: "band 7", "bands 1-3, 9"."""
    nums = sorted(b + 1 for b in bands)
    if len(nums) == 1:
        return f"band {nums[0]}"
    runs, start, prev = [], nums[0], nums[0]
    for n in nums[1:]:
        if n != prev + 1:
            runs.append((start, prev))
            start = n
        prev = n
    runs.append((start, prev))
    return "bands " + ", ".join(f"{a}-{b}" if b != a else f"{a}" for a, b in runs)


def gdal_reason(err: BaseException) -> str:
    """GDAL's own words for a failed read, from the innermost error, shortened: "TIFFReadEncodedTile failed, got
    0 of 8192 bytes" rather than libtiff's full message with its sentinel row/column numbers."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = " ".join(str(err).split())
    if not text or text.startswith("Read failed. See previous"):
        return "read failed"
    fn = _LIBTIFF_FN.search(text)
    if fn:
        got = _GOT_BYTES.search(text)
        return f"{fn.group(1)} failed" + (f", got {got.group(1)} of {got.group(2)} bytes" if got else "")
    return text.rsplit(": ", 1)[-1].replace("()", "").rstrip(".")[:120]


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
