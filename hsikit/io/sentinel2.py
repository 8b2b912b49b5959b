"""Sentinel-2 products as users get them: SAFE folders (L1C / L2A) and GeoTIFF band stacks.

Both open as a :class:`Sentinel2Scene`: every band is read lazily, window by window, from its own file and
resampled on the fly onto one target grid (10, 20 or 60 m of the tile, or any grid given, e.g. a time series'
grid in another UTM zone). Values stay the product's digital numbers (uint16); ``bands.scale``/``bands.offset``
turn them into reflectance (``reflectance = DN * scale + offset``) and :func:`reflectance` applies them.

Product metadata follows the ESA Sentinel-2 Products Specification Document (PSD 14.x/15.x, S2-PDGS-TAS-DI-PSD) as
found in real ``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml`` / ``MTD_TL.xml`` files:

- ``General_Info/Product_Info``: ``PRODUCT_START_TIME``, ``PROCESSING_BASELINE`` (e.g. ``05.10``),
  ``Datatake/DATATAKE_SENSING_START``, ``Datatake/SPACECRAFT_NAME``;
- ``General_Info/Product_Image_Characteristics``: L2A ``QUANTIFICATION_VALUES_LIST/BOA_QUANTIFICATION_VALUE``
  (10000) and, from baseline 04.00, ``BOA_ADD_OFFSET_VALUES_LIST/BOA_ADD_OFFSET[@band_id]`` (-1000); L1C
  ``QUANTIFICATION_VALUE`` and ``Radiometric_Offset_List/RADIO_ADD_OFFSET[@band_id]``; ``band_id`` is the
  ``Spectral_Information[@bandId]`` index whose ``physicalBand`` is ``B1`` .. ``B12``/``B8A``;
- granule ``MTD_TL.xml``: ``Geometric_Info/Tile_Geocoding/HORIZONTAL_CS_CODE`` (``EPSG:32633``),
  ``General_Info/SENSING_TIME``.

Physical value = (DN + ADD_OFFSET) / QUANTIFICATION, so ``scale = 1/QUANTIFICATION`` and
``offset = ADD_OFFSET/QUANTIFICATION`` (baseline >= 04.00: DN 1500 -> 0.05). DN 0 is NODATA in every band.

Scene classification (SCL, L2A, 20 and 60 m) classes, as sen2cor writes them:

====  ==========================  ====  ==========================
0     no data                     6     water
1     saturated or defective      7     unclassified
2     dark area / cast shadow     8     cloud, medium probability
3     cloud shadow                9     cloud, high probability
4     vegetation                  10    thin cirrus
5     not vegetated               11    snow / ice
====  ==========================  ====  ==========================

:data:`CLOUD_CLASSES` (3, 8, 9, 10) make the cloud mask. Without SCL the cloud mask comes from ``QI_DATA``:
L1C ``MSK_CLASSI_B00`` (baseline >= 04.00; band 1 opaque clouds, band 2 cirrus) or L2A ``MSK_CLDPRB_20m``
(cloud probability, cloudy from ``prob_threshold`` %). Pre-04.00 L1C cloud masks are GML vectors and are not read.
"""

from __future__ import annotations

import re
import threading
import warnings
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import numpy as np
from affine import Affine
from rasterio.windows import Window

from hsikit.errors import BandMismatchError, InputError, OptionError
from hsikit.io.bandinfo import BandInfo
from hsikit.io.scene import Scene, matchable_nodata
from hsikit.io.safe import (  # noqa: F401  (constants and SAFE helpers re-exported as part of this API)
    BASELINE_04_OFFSET, CLOUD_CLASSES, DEFAULT_QUANTIFICATION, NATIVE_RESOLUTION, SCL_CLASSES, TILE_PATTERN, SafeInfo,
    baseline_tuple, date_in_name, is_safe, parse_time, pick_file, read_safe_metadata,
)
from hsikit.preprocess.sensors import SENTINEL2, canonical_band_name



# ----------------------------------------------------------------------------------------------------------------
# grids and layers
# ----------------------------------------------------------------------------------------------------------------
class Grid(NamedTuple):
    """A raster grid: CRS, affine transform (of the upper-left corner) and size in pixels."""

    crs: Any
    transform: Affine
    width: int
    height: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        from rasterio.transform import array_bounds

        west, south, east, north = array_bounds(self.height, self.width, self.transform)
        return (west, south, east, north)

    @property
    def res(self) -> tuple[float, float]:
        return (abs(self.transform.a), abs(self.transform.e))

    @classmethod
    def of(cls, ds: Any) -> "Grid":
        """The grid of an open rasterio dataset."""
        return cls(ds.crs, ds.transform, ds.width, ds.height)

    def same_as(self, other: "Grid") -> bool:
        return (self.width == other.width and self.height == other.height
                and self.transform.almost_equals(other.transform, precision=1e-9 * max(1.0, self.res[0]))
                and (self.crs == other.crs or self.crs is None or other.crs is None))


@dataclass(frozen=True)
class Layer:
    """One raster band in a file: ``kind`` "spectral" (resampled bilinear up / average down) or "mask" (nearest)."""

    name: str
    path: str
    index: int = 1
    kind: str = "spectral"
    nodata: float | None = 0


def _open_raster(path: str):
    import rasterio
    from rasterio.errors import RasterioIOError

    try:
        return rasterio.open(path)
    except RasterioIOError as e:
        reason = str(e).split(":")[-1].strip() or "unrecognised format"
        raise InputError(f"{Path(path).name} is not a raster GDAL can read ({reason})") from None


class Sentinel2Scene(Scene):
    """Sentinel-2 bands, each from its own file (or band of a stack), on one target grid; read lazily.

    Extra layers (``SCL``, cloud masks) are read with :meth:`read_layer`; :meth:`cloud_mask` combines them.
    Attributes: ``acquired`` (naive UTC datetime or None), ``tile`` (``T33UUU`` or ""), ``level`` (``L1C``,
    ``L2A`` or ""), ``baseline`` (``05.10`` or None), ``cloud_source`` (``SCL``, ``MSK_CLASSI``, ``MSK_CLDPRB``,
    ``file`` or ``none``). Picklable: file handles are reopened on first use.
    """

    def __init__(
        self,
        *,
        path: str,
        grid: Grid,
        bands: BandInfo,
        layers: Sequence[Layer],
        extras: dict[str, Layer] | None = None,
        dtype: str = "uint16",
        nodata: float | None = 0,
        tags: dict[str, str] | None = None,
        acquired: datetime | None = None,
        tile: str = "",
        level: str = "",
        baseline: str | None = None,
        src_crs: Any = None,
        factory: Callable[..., "Sentinel2Scene"] | None = None,
        prob_threshold: float = 50.0,
    ) -> None:
        super().__init__(width=grid.width, height=grid.height, count=len(layers), dtype=dtype, crs=grid.crs,
                         transform=grid.transform, nodata=nodata, bands=bands, tags=tags)
        self.path = str(path)
        self.grid = grid
        self.layers = tuple(layers)
        self.extras = dict(extras or {})
        self.acquired = acquired
        self.tile = tile
        self.level = level
        self.baseline = baseline
        self.prob_threshold = float(prob_threshold)
        self._src_crs = src_crs
        self._factory = factory
        self._handles: dict | None = None

    # -- metadata ----------------------------------------------------------------------------------------------
    @property
    def layer_names(self) -> tuple[str, ...]:
        """Names of the extra layers (``SCL``, ``OPAQUE_CLOUDS``, ``CIRRUS``, ``CLDPRB``, ``CLOUD``)."""
        return tuple(self.extras)

    @property
    def cloud_source(self) -> str:
        if "SCL" in self.extras:
            return "SCL"
        if "OPAQUE_CLOUDS" in self.extras:
            return "MSK_CLASSI"
        if "CLDPRB" in self.extras:
            return "MSK_CLDPRB"
        if "CLOUD" in self.extras:
            return "file"
        return "none"

    def on_grid(self, grid: Grid, bands: Sequence[str] | None = None) -> "Sentinel2Scene":
        """The same product (optionally fewer bands) reprojected/resampled onto ``grid``."""
        if self._factory is None:
            raise OptionError(f"{self.name} cannot be moved to another grid")
        return self._factory(grid=grid, bands=list(bands) if bands is not None else list(self.bands.names))

    # -- reading -----------------------------------------------------------------------------------------------
    def _read(self, window: Window, bands: list[int]) -> np.ndarray:
        out = np.empty((len(bands), int(window.height), int(window.width)), dtype=self.dtype)
        groups: dict[tuple, list[int]] = {}
        for pos, b in enumerate(bands):
            groups.setdefault(self._reader_key(self.layers[b]), []).append(pos)
        for key, positions in groups.items():
            reader = self._reader(self.layers[bands[positions[0]]])
            idx = [self.layers[bands[p]].index for p in positions]
            out[positions] = reader.read(idx, window=window)
        return out

    def read_layer(self, name: str, window: Window | None = None) -> np.ndarray:
        """An extra layer (e.g. ``SCL``) on the scene grid, ``(h, w)``, nearest-neighbour resampled."""
        if name not in self.extras:
            have = ", ".join(self.extras) or "none"
            raise OptionError(f"{self.name} has no {name} layer (layers: {have})")
        w = self._check_window(window)
        with self._lock:
            return self._reader(self.extras[name]).read(self.extras[name].index, window=w)

    def cloud_mask(self, window: Window | None = None, classes: Iterable[int] = CLOUD_CLASSES) -> np.ndarray:
        """Boolean ``(h, w)``: True where cloud, cloud shadow or cirrus; all False when no mask is known.

        Source, first found: SCL ``classes``; MSK_CLASSI opaque clouds or cirrus; MSK_CLDPRB >= ``prob_threshold``;
        a GeoTIFF cloud file (non-zero = cloud).
        """
        w = self._check_window(window)
        src = self.cloud_source
        if src == "SCL":
            return np.isin(self.read_layer("SCL", w), list(classes))
        if src == "MSK_CLASSI":
            m = self.read_layer("OPAQUE_CLOUDS", w) > 0
            if "CIRRUS" in self.extras:
                m |= self.read_layer("CIRRUS", w) > 0
            return m
        if src == "MSK_CLDPRB":
            return self.read_layer("CLDPRB", w) >= self.prob_threshold
        if src == "file":
            data = self.read_layer("CLOUD", w)
            m = data != 0
            nd = self.extras["CLOUD"].nodata
            if nd is not None and matchable_nodata(nd, data.dtype):
                m &= data != nd
            if np.issubdtype(data.dtype, np.floating):
                m &= ~np.isnan(data)
            return m
        return np.zeros((int(w.height), int(w.width)), dtype=bool)

    # -- file handles ------------------------------------------------------------------------------------------
    def _reader_key(self, layer: Layer) -> tuple:
        return (layer.path, layer.kind, repr(layer.nodata))  # repr: NaN == NaN

    def _reader(self, layer: Layer):
        """The open dataset (same grid) or a WarpedVRT onto the scene grid for ``layer``'s file."""
        if self._handles is None:
            self._handles = {"ds": {}, "rd": {}}
            _OPEN_SCENES.opened(self)
        key = self._reader_key(layer)
        rd = self._handles["rd"].get(key)
        if rd is not None:
            return rd
        ds = self._handles["ds"].get(layer.path)
        if ds is None:
            ds = self._handles["ds"][layer.path] = _open_raster(layer.path)
        if Grid.of(ds).same_as(self.grid):
            rd = ds
        else:
            rd = self._warped(ds, layer)
        self._handles["rd"][key] = rd
        return rd

    def _warped(self, ds, layer: Layer):
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        src_crs = ds.crs or self._src_crs
        if src_crs is None:
            raise InputError(f"{Path(layer.path).name} has no CRS, so it cannot be put on the scene grid")
        if self.grid.crs is None:
            raise InputError(f"{self.name}: the target grid has no CRS")
        if layer.kind == "mask":
            resampling = Resampling.nearest
        else:
            resampling = Resampling.average if _source_res(ds, src_crs, self.grid) < 0.99 * self.grid.res[0] \
                else Resampling.bilinear
        kw: dict[str, Any] = dict(crs=self.grid.crs, transform=self.grid.transform, width=self.grid.width,
                                  height=self.grid.height, resampling=resampling)
        if ds.crs is None:
            kw["src_crs"] = src_crs
        if layer.nodata is not None:
            kw["src_nodata"] = layer.nodata
            kw["nodata"] = layer.nodata
        return WarpedVRT(ds, **kw)

    def close(self) -> None:
        """Release file handles (they reopen on the next read)."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        if self._handles is None:
            return
        own = list(self._handles["ds"].values())
        for rd in self._handles["rd"].values():
            if not any(rd is d for d in own):
                rd.close()
        for ds in own:
            ds.close()
        self._handles = None
        _OPEN_SCENES.closed(self)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = None
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()


class _OpenScenes:
    """Caps how many scenes hold open files at once (a long series would otherwise exhaust file descriptors):
    past the cap, the least recently opened idle scene is closed; it reopens on its next read."""

    def __init__(self) -> None:
        import weakref

        try:
            import resource

            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            soft = soft if 0 < soft < 1 << 20 else 1 << 20
        except (ImportError, OSError, ValueError):  # no resource module on Windows
            soft = 512
        # about 16 files per SAFE scene (bands + SCL + masks); leave room for everything else
        self.limit = max(8, (soft - 128) // 16)
        self._order: "weakref.WeakValueDictionary[int, Sentinel2Scene]" = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def opened(self, scene: "Sentinel2Scene") -> None:
        with self._lock:
            self._order.pop(id(scene), None)
            self._order[id(scene)] = scene
            victims = list(self._order.values())[: max(0, len(self._order) - self.limit)]
        for v in victims:
            if v is not scene and v._lock.acquire(blocking=False):  # never wait: a busy scene stays open
                try:
                    v._release()
                finally:
                    v._lock.release()

    def closed(self, scene: "Sentinel2Scene") -> None:
        with self._lock:
            self._order.pop(id(scene), None)


_OPEN_SCENES = _OpenScenes()


def _source_res(ds, src_crs, grid: Grid) -> float:
    """The source pixel size expressed in the target CRS's units (approximate when the CRSs differ)."""
    if grid.crs is None or src_crs == grid.crs:
        return abs(ds.transform.a)
    from rasterio.warp import calculate_default_transform

    t, _, _ = calculate_default_transform(src_crs, grid.crs, ds.width, ds.height, *ds.bounds)
    return abs(t.a)


# ----------------------------------------------------------------------------------------------------------------
# reflectance and cloud masks
# ----------------------------------------------------------------------------------------------------------------
def reflectance(scene: Scene, window: Window | None = None, bands: Sequence[int] | None = None) -> np.ndarray:
    """``(bands, h, w)`` float32 reflectance (``DN * scale + offset``) of a window; NaN on every band of pixels
    without data (any band at nodata or NaN). Scenes without scale/offset are returned as float32 unchanged."""
    raw = scene.read(window, bands)
    idx = list(range(scene.count)) if bands is None else [int(b) for b in bands]
    if bands is None:
        valid = scene.read_valid(window, raw)
    else:
        valid = np.ones(raw.shape[1:], dtype=bool)
        if np.issubdtype(raw.dtype, np.floating):
            valid &= ~np.isnan(raw).any(axis=0)
        if matchable_nodata(scene.nodata, raw.dtype):
            valid &= ~(raw == np.asarray(scene.nodata, dtype=raw.dtype)).any(axis=0)
    b = scene.bands
    scale = np.asarray([b.scale[i] for i in idx] if b.scale is not None else [1.0] * len(idx), np.float64)
    offset = np.asarray([b.offset[i] for i in idx] if b.offset is not None else [0.0] * len(idx), np.float64)
    out = (raw.astype(np.float64) * scale[:, None, None] + offset[:, None, None]).astype(np.float32)
    out[:, ~valid] = np.nan
    return out


def cloud_mask(source: Any, window: Window | None = None, classes: Iterable[int] = CLOUD_CLASSES) -> np.ndarray:
    """Cloud mask (True = cloud, cloud shadow, cirrus) from an SCL array or a :class:`Sentinel2Scene` window."""
    if isinstance(source, np.ndarray):
        return np.isin(source, list(classes))
    if isinstance(source, Sentinel2Scene):
        return source.cloud_mask(window, classes)
    raise OptionError(f"cloud_mask needs an SCL array or a Sentinel-2 scene, not {type(source).__name__}")


def select_bands(available: Sequence[str], wanted: Sequence[str] | None, label: str) -> list[str]:
    if wanted is None:
        return [b for b in SENTINEL2.bands if b in available]
    out, missing = [], []
    for w in wanted:
        c = canonical_band_name(str(w))
        if c is None:
            raise OptionError(f"{w!r} is not a Sentinel-2 band name (B01 .. B12, B8A)")
        (out if c in available else missing).append(c)
    if missing:
        raise BandMismatchError(f"{label} lacks band(s) {', '.join(missing)}; it has {', '.join(available)}")
    if len(set(out)) != len(out):
        raise OptionError(f"bands listed twice: {', '.join(str(w) for w in wanted)}")
    return out


def _s2_bandinfo(names: Sequence[str], scale: Sequence[float], offset: Sequence[float]) -> BandInfo:
    pos = {b: i for i, b in enumerate(SENTINEL2.bands)}
    return BandInfo(names=tuple(names), wavelengths=tuple(SENTINEL2.centers[pos[b]] for b in names),
                    fwhm=tuple(SENTINEL2.fwhm[pos[b]] for b in names), scale=tuple(float(s) for s in scale),
                    offset=tuple(float(o) for o in offset), wavelength_units="nm",
                    extra={"native_resolution": [NATIVE_RESOLUTION[b] for b in names]})


def _check_resolution(resolution: float) -> int:
    if resolution not in (10, 20, 60):
        raise OptionError(f"Sentinel-2 resolution must be 10, 20 or 60 m, not {resolution}")
    return int(resolution)


def tile_grid(info: SafeInfo, resolution: int) -> Grid:
    """The tile's grid at 10, 20 or 60 m (from a band file; the EPSG of MTD_TL.xml if the file has no CRS)."""
    from rasterio.crs import CRS

    res = _check_resolution(resolution)
    files = [f for d in info.band_files.values() for r, f in d.items() if r == res] or \
            [f for d in info.band_files.values() for f in d.values()]
    with _open_raster(str(files[0])) as ds:
        left, bottom, right, top = ds.bounds
        crs = ds.crs
    if crs is None and info.epsg is not None:
        crs = CRS.from_epsg(info.epsg)
    if crs is None:
        raise InputError(f"{info.path.name}: band files carry no CRS and MTD_TL.xml gives no HORIZONTAL_CS_CODE")
    width, height = int(round((right - left) / res)), int(round((top - bottom) / res))
    return Grid(crs, Affine(res, 0.0, left, 0.0, -res, top), width, height)


def open_safe(
    path: str | Path,
    *,
    resolution: int = 10,
    bands: Sequence[str] | None = None,
    grid: Grid | None = None,
    granule: str | None = None,
    prob_threshold: float = 50.0,
) -> Sentinel2Scene:
    """Open a SAFE folder (or its ``MTD_MSIL1C.xml`` / ``MTD_MSIL2A.xml``) as one lazily read scene.

    All bands (default: every band the product has, in B01..B12/B8A order; L2A has no B10) are resampled onto the
    tile grid at ``resolution`` m (10, 20 or 60), or onto ``grid`` (any CRS: reprojected). A band is read from
    its file at the target resolution when the product has one (L2A R20m/R60m), else from the finest file:
    bilinear when upsampling, average when downsampling; SCL and cloud masks nearest. Values are DN (uint16,
    nodata 0) with ``bands.scale``/``bands.offset`` from the metadata (see :func:`reflectance`).
    """
    info = read_safe_metadata(path, granule=granule)
    res = _check_resolution(resolution)
    names = select_bands([b for b in SENTINEL2.bands if b in info.band_files], bands, info.path.name)
    if not names:
        raise BandMismatchError(f"{info.path.name}: no Sentinel-2 bands selected")
    target = grid if grid is not None else tile_grid(info, res)
    target_res = target.res[0] if target.crs is not None and target.crs.is_projected else float(res)
    layers = [Layer(b, str(pick_file(info.band_files[b], target_res))) for b in names]
    extras: dict[str, Layer] = {}
    if info.scl_files:
        extras["SCL"] = Layer("SCL", str(pick_file(info.scl_files, target_res)), kind="mask", nodata=0)
    if info.classi_file is not None:
        extras["OPAQUE_CLOUDS"] = Layer("OPAQUE_CLOUDS", str(info.classi_file), 1, kind="mask", nodata=None)
        extras["CIRRUS"] = Layer("CIRRUS", str(info.classi_file), 2, kind="mask", nodata=None)
    if info.cloud_prob_files:
        extras["CLDPRB"] = Layer("CLDPRB", str(pick_file(info.cloud_prob_files, target_res)), kind="mask",
                                 nodata=None)
    q = info.quantification
    scale = [1.0 / q] * len(names)
    offset = [info.add_offsets.get(b, 0.0) / q for b in names]
    tags = {"S2_LEVEL": info.level, "PROCESSING_BASELINE": info.baseline or "", "TILE_ID": info.tile,
            "ACQUISITION_DATE": info.sensing_time.isoformat(), "QUANTIFICATION_VALUE": f"{q:g}",
            "ADD_OFFSET": ",".join(f"{info.add_offsets.get(b, 0.0):g}" for b in names)}
    if info.spacecraft:
        tags["SPACECRAFT_NAME"] = info.spacecraft
    if info.cloud_cover is not None:
        tags["CLOUD_COVERAGE_ASSESSMENT"] = f"{info.cloud_cover:g}"
    from rasterio.crs import CRS

    return Sentinel2Scene(
        path=str(info.path), grid=target, bands=_s2_bandinfo(names, scale, offset), layers=layers, extras=extras,
        dtype="uint16", nodata=0, tags=tags, acquired=info.sensing_time, tile=info.tile, level=info.level,
        baseline=info.baseline, src_crs=CRS.from_epsg(info.epsg) if info.epsg else None,
        factory=partial(open_safe, str(info.path), resolution=res, granule=granule, prob_threshold=prob_threshold),
        prob_threshold=prob_threshold,
    )


# ----------------------------------------------------------------------------------------------------------------
# GeoTIFF stacks
# ----------------------------------------------------------------------------------------------------------------
def _tag(tags: Iterable[dict[str, str]], *keys: str) -> str | None:
    want = {k.upper() for k in keys}
    for t in tags:
        for k, v in t.items():
            if k.upper() in want and str(v).strip():
                return str(v).strip()
    return None


def geotiff_date(tags: dict[str, str], path: str | Path) -> datetime | None:
    """Acquisition time of a GeoTIFF: tag ``ACQUISITION_DATE``, else ``TIFFTAG_DATETIME``, else a ``YYYYMMDD`` or
    ``YYYY-MM-DD`` in the file name; None when there is none."""
    for key in ("ACQUISITION_DATE", "TIFFTAG_DATETIME"):
        txt = _tag([tags], key)
        if txt:
            try:
                return parse_time(txt)
            except ValueError:
                raise InputError(f"{Path(path).name}: {key} {txt!r} is not a date") from None
    return date_in_name(Path(path).name)


def sibling_mask(path: str | Path) -> tuple[str, Path] | None:
    """A GeoTIFF stack's cloud mask file beside it: ``<stem>_SCL.tif`` (SCL classes) or ``<stem>_cloud.tif``
    (non-zero = cloud); ("SCL" | "CLOUD", path) or None."""
    p = Path(path)
    for suffix, kind in (("_SCL", "SCL"), ("_scl", "SCL"), ("_cloud", "CLOUD"), ("_CLOUD", "CLOUD")):
        for ext in (p.suffix, ".tif", ".tiff"):
            cand = p.with_name(p.stem + suffix + ext)
            if cand.is_file():
                return kind, cand
    return None


def is_sibling_mask(path: str | Path) -> bool:
    """Whether ``path`` is itself a ``*_SCL.tif`` / ``*_cloud.tif`` mask file."""
    return bool(re.search(r"_(scl|cloud)$", Path(path).stem, re.IGNORECASE))


def open_s2_geotiff(
    path: str | Path,
    *,
    bands: Sequence[str] | None = None,
    band_names: Sequence[str] | None = None,
    quantification: float | None = None,
    add_offset: float | None = None,
    grid: Grid | None = None,
) -> Sentinel2Scene:
    """Open a GeoTIFF of Sentinel-2 bands with proper band names (``B4`` -> ``B04``), wavelengths and scaling.

    Band names come from ``band_names`` or the band descriptions; a band named ``SCL`` becomes the SCL layer,
    other unrecognised bands are skipped with a warning. Cloud mask: that SCL band, else a sibling
    ``<stem>_SCL.tif`` or ``<stem>_cloud.tif`` (see :func:`sibling_mask`).

    Scaling, reflectance = (DN + add_offset) / quantification, first found:
    ``quantification``/``add_offset`` arguments (DN units, like the ESA metadata: 10000 and -1000); tags
    ``BOA_QUANTIFICATION_VALUE``/``QUANTIFICATION_VALUE`` and ``BOA_ADD_OFFSET``/``RADIO_ADD_OFFSET``
    (dataset or band); tag ``PROCESSING_BASELINE`` >= 04.00 -> offset -1000; the file's own GDAL scale/offset;
    otherwise integer stacks are taken as reflectance x 10000 with no offset (as Google Earth Engine's
    harmonised S2 collections deliver them) and float stacks as reflectance already. Integer stacks without a
    nodata value use 0 (the Sentinel-2 NODATA value); float stacks NaN.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {p}")
    with _open_raster(str(p)) as ds:
        count, dtypes, descriptions = ds.count, ds.dtypes, ds.descriptions
        tags, band_tags = dict(ds.tags()), [ds.tags(i + 1) for i in range(ds.count)]
        file_scales, file_offsets, file_nodata = ds.scales, ds.offsets, ds.nodata
        own_grid = Grid.of(ds)
    if own_grid.crs is None:
        raise InputError(f"{p.name} has no CRS; Sentinel-2 stacks need georeferencing")
    raw_names = list(band_names) if band_names is not None else [d or "" for d in descriptions]
    if len(raw_names) != count:
        raise OptionError(f"{p.name} has {count} bands but {len(raw_names)} band names were given")
    spectral: list[tuple[str, int]] = []
    scl_index, skipped = None, []
    for i, nm in enumerate(raw_names):
        if nm.strip().upper() == "SCL":
            scl_index = i + 1
            continue
        c = canonical_band_name(nm)
        if c is None:
            skipped.append(nm or f"band {i + 1}")
        else:
            spectral.append((c, i + 1))
    if not spectral:
        raise InputError(f"{p.name}: band names {raw_names} are not Sentinel-2 bands; name them (B02, B03, ...) "
                         "in the band descriptions or pass band_names")
    seen = [c for c, _ in spectral]
    if len(set(seen)) != len(seen):
        raise InputError(f"{p.name}: band names repeat ({', '.join(seen)})")
    if skipped:
        warnings.warn(f"{p.name}: skipping bands that are not Sentinel-2 bands: {', '.join(skipped)}", stacklevel=2)
    names = seen if bands is None else select_bands(seen, bands, p.name)  # file order unless bands are picked
    index_of = dict(spectral)
    idx = [index_of[b] for b in names]
    dtype = dtypes[idx[0] - 1]
    is_int = np.issubdtype(np.dtype(dtype), np.integer)
    nodata = file_nodata if file_nodata is not None else (0 if is_int else float("nan"))

    scale, offset = _stack_scaling(p.name, tags, [band_tags[i - 1] for i in idx], [file_scales[i - 1] for i in idx],
                                   [file_offsets[i - 1] for i in idx], is_int, quantification, add_offset)
    layers = [Layer(b, str(p), i, nodata=nodata) for b, i in zip(names, idx)]
    extras: dict[str, Layer] = {}
    if scl_index is not None:
        extras["SCL"] = Layer("SCL", str(p), scl_index, kind="mask", nodata=0)
    else:
        sib = sibling_mask(p)
        if sib is not None:
            kind, f = sib
            with _open_raster(str(f)) as m:
                m_nodata = m.nodata
            extras[kind] = Layer(kind, str(f), 1, kind="mask", nodata=0 if kind == "SCL" else m_nodata)
    acquired = geotiff_date(tags, p)
    tile_txt = _tag([tags], "TILE_ID", "MGRS_TILE") or p.name
    tm = TILE_PATTERN.search(tile_txt) or re.fullmatch(r"T?(\d{2}[C-X][A-Z]{2})", tile_txt)
    out_tags = {k: v for k, v in tags.items() if k.upper() != "AREA_OR_POINT"}
    if acquired is not None:
        out_tags["ACQUISITION_DATE"] = acquired.isoformat()
    bl = _tag([tags], "PROCESSING_BASELINE")
    return Sentinel2Scene(
        path=str(p), grid=grid if grid is not None else own_grid, bands=_s2_bandinfo(names, scale, offset),
        layers=layers, extras=extras, dtype=dtype, nodata=nodata, tags=out_tags, acquired=acquired,
        tile=f"T{tm.group(1)}" if tm else "", level=(_tag([tags], "S2_LEVEL", "PROCESSING_LEVEL") or ""),
        baseline=bl,
        factory=partial(open_s2_geotiff, str(p), band_names=band_names, quantification=quantification,
                        add_offset=add_offset),
    )


def _stack_scaling(name: str, tags: dict[str, str], band_tags: list[dict[str, str]], file_scales: Sequence[float],
                   file_offsets: Sequence[float], is_int: bool, quantification: float | None,
                   add_offset: float | None) -> tuple[list[float], list[float]]:
    n = len(band_tags)
    q_tag = _tag([tags], "BOA_QUANTIFICATION_VALUE", "QUANTIFICATION_VALUE")
    off_tags = [_tag([bt, tags], "BOA_ADD_OFFSET", "RADIO_ADD_OFFSET") for bt in band_tags]
    baseline = baseline_tuple(_tag([tags], "PROCESSING_BASELINE"))
    has_file_scaling = any(s != 1.0 for s in file_scales) or any(o != 0.0 for o in file_offsets)
    said = quantification is not None or add_offset is not None or q_tag or any(off_tags) or baseline
    if has_file_scaling and not said:
        return [float(s) for s in file_scales], [float(o) for o in file_offsets]
    try:
        q = float(quantification if quantification is not None else
                  q_tag if q_tag else DEFAULT_QUANTIFICATION if is_int else 1.0)
        if add_offset is not None:
            offs = [float(add_offset)] * n
        elif any(off_tags):
            offs = [float(o) if o else 0.0 for o in off_tags]
        elif baseline is not None and baseline >= (4, 0) and is_int:
            offs = [BASELINE_04_OFFSET] * n
        else:
            offs = [0.0] * n
    except ValueError as e:
        raise InputError(f"{name}: scaling tag is not a number ({e})") from None
    if q <= 0:
        raise OptionError(f"quantification must be positive, not {q:g}")
    return [1.0 / q] * n, [o / q for o in offs]


def open_sentinel2(path: str | Path, **kwargs: Any) -> Sentinel2Scene:
    """A SAFE folder / MTD xml via :func:`open_safe`, anything else as a GeoTIFF stack (:func:`open_s2_geotiff`)."""
    if is_safe(path):
        return open_safe(path, **kwargs)
    kwargs.pop("resolution", None)
    kwargs.pop("granule", None)
    return open_s2_geotiff(path, **kwargs)
