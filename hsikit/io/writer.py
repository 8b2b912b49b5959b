"""QGIS-ready GeoTIFF/COG writer: class maps as uint8/uint16 with 0 as nodata, a colour table, GDAL category names
and a paletted ``.qml`` style; continuous outputs with their nodata, band descriptions, scales/offsets and
per-band wavelength items; dataset-level provenance tags (``HSIKIT_*``).

Windows are streamed into an uncompressed tiled work file; on completion it is copied to the final layout
(COG with overviews, or tiled GeoTIFF with internal overviews), sidecars (GDAL category names, QGIS ``.qml``)
are written, and everything is renamed into place atomically. Nothing appears under the final names until all
is complete; on error every temporary file is removed.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import warnings
import xml.etree.ElementTree as ET
from collections import OrderedDict
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from hsikit.errors import OptionError
from hsikit.io.atomic import atomic_outputs, check_output, remove_stale_temps, remove_with_sidecars, temp_path
from hsikit.io.legend import Legend
from hsikit.threads import gdal_threads
from hsikit.io.qml import write_qml_paletted

Kind = Literal["categorical", "continuous"]


def block_size(width: int, height: int) -> int:
    """512 px blocks, or 256 for rasters under about 2048 px on both sides."""
    return 256 if max(width, height) < 2048 else 512


def overview_factors(width: int, height: int, block: int, min_size: int = 128) -> list[int]:
    """2, 4, 8, ... until the smallest level fits in one block, and at least until it is under ``min_size`` px,
    so even small maps get a zoomed-out level in QGIS."""
    out, f = [], 2
    while max(width, height) / (f // 2) > min(block, min_size) or (not out and max(width, height) > min_size):
        out.append(f)
        f *= 2
    return out


# pixel grids (width, height, transform) whose missing CRS the user has been told about, most recent last
_NO_CRS_REPORTED: OrderedDict[tuple, None] = OrderedDict()
_NO_CRS_LOCK = threading.Lock()


def _grid_key(width: int, height: int, transform: Any) -> tuple:
    return (int(width), int(height), tuple(float(v) for v in tuple(transform)[:6]))


def note_no_crs_reported(width: int, height: int, transform: Any) -> None:
    """Record that the user was warned that the raster on this pixel grid has no CRS (as pipelines'
    ``check_georeferencing`` does), so writers of outputs on the same grid do not warn again."""
    key = _grid_key(width, height, transform)
    with _NO_CRS_LOCK:
        _NO_CRS_REPORTED[key] = None
        _NO_CRS_REPORTED.move_to_end(key)
        while len(_NO_CRS_REPORTED) > 32:
            _NO_CRS_REPORTED.popitem(last=False)


def _no_crs_reported(width: int, height: int, transform: Any) -> bool:
    with _NO_CRS_LOCK:
        return _grid_key(width, height, transform) in _NO_CRS_REPORTED


def _gdal_at_least(major: int, minor: int) -> bool:
    """The COG driver learnt INTERLEAVE=BAND in GDAL 3.11; older builds write multi-band COGs pixel-interleaved."""
    v = tuple(int(x) for x in rasterio.__gdal_version__.split(".")[:2])
    return v >= (major, minor)


#: the most bytes of one (pixel-interleaved, all bands) block of a COG; see RasterWriter._cog_block
COG_BLOCK_BYTES = 16 << 20

#: GDAL's block cache while the finished work file is copied to the output: its default (5 % of the RAM) would
#: fill with the whole output and make the process's memory grow with the scene
COPY_CACHE_MB = 128


@functools.lru_cache(maxsize=1)
def _cog_copy_keeps_domains() -> bool:
    """Whether the COG driver, told COPY_SRC_MDD=YES, keeps named metadata domains *and* the bands' own items.

    GDAL < 3.8 has no such option, and GDAL 3.8-3.10 then drop every band's default-domain items (wavelengths):
    a one-pixel copy in memory tells which build this is.
    """
    if not _gdal_at_least(3, 8):
        return False
    src, dst = f"/vsimem/hsikit_probe_{os.getpid()}.tif", f"/vsimem/hsikit_probe_{os.getpid()}_cog.tif"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return _probe_cog_copy(src, dst)
    except Exception:  # noqa: BLE001 - any failure means "do not rely on it"
        return False
    finally:
        for p in (src, dst):
            try:
                rasterio.shutil.delete(p)
            except Exception:  # noqa: BLE001
                pass


def _probe_cog_copy(src: str, dst: str) -> bool:
    with rasterio.open(src, "w", driver="GTiff", width=1, height=1, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 1, 1), np.uint8))
        ds.update_tags(1, probe="band")
        ds.update_tags(ns="HSIKIT_PROBE", probe="domain")
    rasterio.shutil.copy(src, dst, driver="COG", COPY_SRC_MDD="YES")
    with rasterio.open(dst) as ds:
        return ds.tags(1).get("probe") == "band" and ds.tags(ns="HSIKIT_PROBE").get("probe") == "domain"


class RasterWriter:
    """Write a raster window by window; finalised atomically when the ``with`` block ends without error.

    ``kind`` "categorical": single band uint8/uint16 class map, nearest overviews, colour table + category names +
    ``.qml`` from ``legend``. "continuous": any band count, average overviews. ``band_tags`` are per-band metadata
    items (wavelength, fwhm, ...); ``tags`` dataset-level items (provenance), more can be added during the run
    with :meth:`add_tags`; ``tag_domains`` dataset-level items in named metadata domains ({domain: {key: value}},
    read back with rasterio's ``src.tags(ns=domain)``). ``temp_dir`` holds the work and temporary files instead of
    the output's folder (it must be on the same filesystem).

    Without a CRS the output is written on the pixel grid, with a warning unless the user was already told about
    this grid (:func:`note_no_crs_reported`).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        count: int,
        dtype: str,
        crs: Any,
        transform: Any,
        nodata: float | None,
        kind: Kind,
        overwrite: bool = False,
        legend: Legend | None = None,
        band_descriptions: Sequence[str] | None = None,
        band_tags: Sequence[dict[str, str]] | None = None,
        tags: dict[str, str] | None = None,
        fmt: Literal["cog", "gtiff"] = "cog",
        scales: Sequence[float] | None = None,
        offsets: Sequence[float] | None = None,
        temp_dir: str | Path | None = None,
        tag_domains: dict[str, dict[str, str]] | None = None,
    ) -> None:
        self.path = Path(path)
        self.temp_dir = Path(temp_dir) if temp_dir is not None else None
        check_output(self.path, overwrite)
        if kind not in ("categorical", "continuous"):
            raise OptionError(f"unknown output kind {kind!r}")
        if fmt not in ("cog", "gtiff"):
            raise OptionError(f"output format must be cog or gtiff, not {fmt!r}")
        if kind == "categorical" and (count != 1 or np.dtype(dtype).kind != "u"):
            raise OptionError("class maps are single-band unsigned integer rasters")
        for name, seq in (("band_descriptions", band_descriptions), ("band_tags", band_tags), ("scales", scales),
                          ("offsets", offsets)):
            if seq is not None and len(seq) != count:
                raise ValueError(f"{name} has {len(seq)} entries for {count} bands")
        for domain in tag_domains or {}:
            if not domain or domain.upper() in ("IMAGE_STRUCTURE", "DERIVED_SUBDATASETS", "SUBDATASETS"):
                raise ValueError(f"tag domain {domain!r} is the default or a GDAL-reserved domain")
        self.width, self.height, self.count = int(width), int(height), int(count)
        self.dtype = np.dtype(dtype).name
        self.crs, self.transform, self.nodata = crs, transform, nodata
        self.kind, self.fmt, self.overwrite, self.legend = kind, fmt, overwrite, legend
        self.band_descriptions, self.band_tags = band_descriptions, band_tags
        self.tags = dict(tags or {})
        self.tag_domains = {d: {str(k): str(v) for k, v in items.items()} for d, items in (tag_domains or {}).items()}
        self.scales, self.offsets = scales, offsets
        self.block = block_size(self.width, self.height)
        self._stack: ExitStack | None = None
        self._dst = None
        self._finalised = False

    # -- files -------------------------------------------------------------------------------------------------
    @property
    def aux_path(self) -> Path:
        return self.path.with_name(self.path.name + ".aux.xml")

    @property
    def qml_path(self) -> Path:
        return self.path.with_suffix(".qml")

    @property
    def _domains_in_pam(self) -> bool:
        """Tag domains go to the ``.aux.xml`` sidecar when this GDAL cannot copy them into a COG (and its band
        items too); rewriting the COG's header afterwards would break its layout."""
        return self.fmt == "cog" and bool(self.tag_domains) and not _cog_copy_keeps_domains()

    def _finals(self) -> list[Path]:
        finals = [self.path]
        if self.kind == "categorical" and self.legend is not None:
            finals += [self.aux_path, self.qml_path]
        elif self._domains_in_pam:
            finals.append(self.aux_path)
        return finals

    # -- context -----------------------------------------------------------------------------------------------
    def __enter__(self) -> "RasterWriter":
        self._stack = ExitStack()
        try:
            self._temps = self._stack.enter_context(atomic_outputs(self._finals(), self.overwrite, self.temp_dir))
            work_name = self.path.with_name(self.path.stem + ".work.tif")
            remove_stale_temps(work_name, self.temp_dir)
            self._work = temp_path(work_name, self.temp_dir)
            self._stack.callback(remove_with_sidecars, self._work)
            profile = dict(driver="GTiff", width=self.width, height=self.height, count=self.count, dtype=self.dtype,
                           transform=self.transform, nodata=self.nodata, tiled=True, blockxsize=self.block,
                           blockysize=self.block, interleave="band", bigtiff="IF_SAFER", compress="NONE")
            if self.crs is not None:
                profile["crs"] = self.crs
            elif not _no_crs_reported(self.width, self.height, self.transform):
                warnings.warn(f"{self.path.name}: no CRS, written on the pixel grid without georeferencing",
                              stacklevel=2)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._dst = rasterio.open(self._work, "w", **profile)
            self._describe(self._dst)
        except BaseException:
            stack, self._stack = self._stack, None
            if self._dst is not None:
                self._dst.close()
                self._dst = None
            stack.__exit__(*sys.exc_info())
            raise
        return self

    def add_tags(self, **tags: str) -> None:
        """Add dataset-level (default domain) tags, e.g. statistics known only at the end of a run; call it
        before the ``with`` block ends."""
        if self._finalised:
            raise RuntimeError(f"{self.path.name} is already finalised: add tags inside the with block")
        tags = {str(k): str(v) for k, v in tags.items()}
        self.tags.update(tags)
        if self._dst is not None:
            self._dst.update_tags(**tags)

    def write(self, array: np.ndarray, window: Window) -> None:
        """Write ``array`` (count, h, w) at ``window`` (any position, any order)."""
        if array.ndim == 2:
            array = array[None]
        if array.shape[0] != self.count:
            raise ValueError(f"array has {array.shape[0]} bands, the output {self.count}")
        self._dst.write(array.astype(self.dtype, copy=False), window=window)

    def __exit__(self, exc_type, exc, tb) -> None:
        stack, self._stack = self._stack, None
        self._finalised = True
        try:
            if self._dst is not None:
                self._dst.close()
                self._dst = None
            if exc_type is None:
                self._finalise()
        except BaseException:
            stack.__exit__(*sys.exc_info())
            raise
        stack.__exit__(exc_type, exc, tb)
        if exc_type is None and self.overwrite:
            # a stale sidecar or QGIS style of a replaced output would be applied to the new file
            for side in (self.aux_path, self.qml_path):
                if side not in self._finals() and side.exists():
                    side.unlink()

    # -- internals ---------------------------------------------------------------------------------------------
    def _describe(self, dst) -> None:
        for i in range(self.count):
            if self.band_descriptions is not None:
                dst.set_band_description(i + 1, self.band_descriptions[i])
            if self.band_tags is not None and self.band_tags[i]:
                dst.update_tags(i + 1, **self.band_tags[i])
        if self.scales is not None:
            dst.scales = tuple(float(s) for s in self.scales)
        if self.offsets is not None:
            dst.offsets = tuple(float(o) for o in self.offsets)
        tags = dict(self.tags)
        if self.kind == "categorical" and self.legend is not None:
            dst.write_colormap(1, self.legend.colormap())
            tags["HSIKIT_CLASS_NAMES"] = json.dumps(list(self.legend.names))
            tags["HSIKIT_CLASS_COLORS"] = json.dumps(list(self.legend.colors))
        if tags:
            dst.update_tags(**tags)
        for domain, items in self.tag_domains.items():
            dst.update_tags(ns=domain, **items)

    def _finalise(self) -> None:
        final_tmp = self._temps[self.path]
        resampling = "NEAREST" if self.kind == "categorical" else "AVERAGE"
        predictor = "2" if np.dtype(self.dtype).kind in "iu" else "3"
        with warnings.catch_warnings(), rasterio.Env(GDAL_CACHEMAX=COPY_CACHE_MB):
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            factors = overview_factors(self.width, self.height, self.block)
            # overviews are built band by band in the band-interleaved work file, where a few blocks of cache
            # suffice, and copied to the output (the COG driver's OVERVIEWS=AUTO uses a source's overviews instead
            # of computing them over rows of all bands at once, which a small cache makes re-read)
            if factors and (self.fmt != "cog" or self.count > 1):
                with rasterio.open(self._work, "r+") as dst:
                    dst.build_overviews(factors, getattr(Resampling, resampling.lower()))
            if self.fmt == "cog":
                extra = {"INTERLEAVE": "BAND"} if self.count > 1 and _gdal_at_least(3, 11) else {}
                # CreateCopy keeps only the default metadata domain unless told otherwise
                if self.tag_domains and not self._domains_in_pam:
                    extra["COPY_SRC_MDD"] = "YES"
                rasterio.shutil.copy(
                    self._work, final_tmp, driver="COG", BLOCKSIZE=self._cog_block("INTERLEAVE" in extra),
                    COMPRESS="DEFLATE", LEVEL=6, PREDICTOR=predictor, OVERVIEWS="AUTO", RESAMPLING=resampling,
                    BIGTIFF="IF_SAFER", OVERVIEW_COUNT=len(factors), NUM_THREADS=gdal_threads(), **extra,
                )
            else:
                rasterio.shutil.copy(
                    self._work, final_tmp, driver="GTiff", TILED="YES", BLOCKXSIZE=self.block,
                    BLOCKYSIZE=self.block, COMPRESS="DEFLATE", ZLEVEL=6, PREDICTOR=predictor, BIGTIFF="IF_SAFER",
                    COPY_SRC_OVERVIEWS="YES", INTERLEAVE="BAND", NUM_THREADS=gdal_threads(),
                )
                if self.tag_domains:  # not promised as a COG: its header may move behind the data
                    with rasterio.open(final_tmp, "r+", IGNORE_COG_LAYOUT_BREAK="YES") as dst:
                        for domain, items in self.tag_domains.items():
                            dst.update_tags(ns=domain, **items)
        if self.aux_path in self._temps:
            self._write_pam(final_tmp, self._temps[self.aux_path])
        if self.kind == "categorical" and self.legend is not None:
            write_qml_paletted(self._temps[self.qml_path], self.legend)

    def _cog_block(self, band_interleaved: bool) -> int:
        """The COG's block size. A pixel-interleaved block holds every band (512² px of 100 float32 bands is
        100 MB) and GDAL compresses several at once, one per thread: the block is halved (down to 128 px) until
        it holds at most :data:`COG_BLOCK_BYTES`, so the copy's memory does not grow with the band count."""
        block = self.block
        if band_interleaved:
            return block
        per_px = self.count * np.dtype(self.dtype).itemsize
        while block > 128 and block * block * per_px > COG_BLOCK_BYTES:
            block //= 2
        return block

    def _write_pam(self, raster_tmp: Path, aux_tmp: Path) -> None:
        """The ``.aux.xml`` sidecar: whatever PAM content GDAL wrote itself, plus GDAL category names (class maps)
        and the tag domains the COG could not hold."""
        gdal_aux = raster_tmp.with_name(raster_tmp.name + ".aux.xml")
        root = ET.parse(gdal_aux).getroot() if gdal_aux.exists() else ET.Element("PAMDataset")
        if self.kind == "categorical" and self.legend is not None:
            self._add_categories(root)
        if self._domains_in_pam:
            for domain, items in self.tag_domains.items():
                for old in root.findall(f"./Metadata[@domain='{domain}']"):
                    root.remove(old)
                md = ET.SubElement(root, "Metadata", {"domain": domain})
                for key, value in items.items():
                    ET.SubElement(md, "MDI", {"key": key}).text = value
        ET.indent(root)
        aux_tmp.write_text(ET.tostring(root, encoding="unicode") + "\n", encoding="utf-8")
        if gdal_aux.exists():
            os.remove(gdal_aux)

    def _add_categories(self, root: ET.Element) -> None:
        """GDAL category names of band 1 into a PAM tree (replacing any)."""
        band = root.find("./PAMRasterBand[@band='1']")
        if band is None:
            band = ET.SubElement(root, "PAMRasterBand", {"band": "1"})
        old = band.find("CategoryNames")
        if old is not None:
            band.remove(old)
        cats = ET.Element("CategoryNames")
        for name in ("no data", *self.legend.names):
            ET.SubElement(cats, "Category").text = name
        band.insert(0, cats)
