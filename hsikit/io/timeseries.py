"""Multi-date Sentinel-2 series on one grid: :func:`open_series` -> a lazily read ``xarray.Dataset``.

Rules (also in the README):

- Inputs: SAFE folders (or their MTD xml), GeoTIFF stacks, or folders holding them; an eo-learn EOPatch folder
  is opened with :func:`hsikit.io.eopatch.open_eopatch` instead (it cannot be mixed with other inputs).
- Dates: SAFE ``PRODUCT_START_TIME``; GeoTIFF tag ``ACQUISITION_DATE``, else ``TIFFTAG_DATETIME``, else a
  ``YYYYMMDD``/``YYYY-MM-DD`` in the file name; no date is an :class:`InputError`.
- Same time twice (the same datatake on two tiles, or two files with the same date in their names): merged
  into one time step, each pixel of a band taken from the first input (in path order) that has data in that
  band; ``cloud`` from the first input with data in every band.
- Grid: the grid most inputs share (the earliest of them on a tie), so one odd file cannot set it, unless
  ``crs``/``resolution``/``bounds`` say otherwise; every other acquisition is warped onto it lazily (bilinear,
  or average when the source is finer; nearest for masks). Inputs on another grid than most, or outside the
  series grid, are named in one warning (with the share of the grid they cover); the ``off_grid`` coordinate
  marks their dates.
- Bands: those present on every date (B01..B12/B8A order), or exactly ``bands`` (missing anywhere -> error).
  A band left out because some inputs lack it is named in a warning and in the ``bands_missing`` attribute
  (JSON: band -> file names lacking it), so a consumer that needs it can name the files.
- ``cloud``: SCL classes 3, 8, 9, 10 (or a cloud-mask file, see :mod:`hsikit.io.sentinel2`); False where no mask
  is known (``cloud_source`` coordinate says ``none``). ``valid``: the date has data (no band at nodata).
- Reflectance is NaN where that band has no data; read it with ``valid`` for "every band has data".
- Laziness: reflectance chunks hold one band of one date (``chunks`` pixels square), so selecting bands reads
  only their files; a ``valid``/``cloud`` chunk reads the bands of its date one at a time. A read that fails
  inside a chunk (a damaged or truncated file) raises :class:`InputError` naming the file, the band or mask and
  the window, also when dask computes it.
"""

from __future__ import annotations

import json
import math
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from affine import Affine
from rasterio.errors import RasterioError
from rasterio.windows import Window

from hsikit.errors import BandMismatchError, InputError, OptionError
from hsikit.io.eopatch import is_eopatch, open_eopatch
from hsikit.io.rasterio_scene import gdal_reason
from hsikit.io.sentinel2 import (CLOUD_CLASSES, Grid, Sentinel2Scene, is_safe, is_sibling_mask, open_s2_geotiff,
                                 open_safe, reflectance, select_bands)
from hsikit.preprocess.sensors import SENTINEL2

try:  # GDAL's own errors (CPLE_*) escape some reads directly instead of as RasterioIOError
    from rasterio._err import CPLE_BaseError
except ImportError:  # pragma: no cover - private module moved
    CPLE_BaseError = RasterioError

_TIFF = (".tif", ".tiff")
_READ_ERRORS = (RasterioError, CPLE_BaseError)
#: files listed by name in one warning or error line before "and N more"
_LIST_MAX = 5


def collect_inputs(inputs: str | Path | Sequence[str | Path]) -> list[Path]:
    """SAFE folders, GeoTIFFs and EOPatch folders named by ``inputs`` (folders of them are expanded)."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not items:
        raise InputError("no inputs given")
    out: list[Path] = []
    for it in items:
        p = Path(it)
        if not p.exists():
            raise InputError(f"file not found: {p}")
        if p.is_dir():
            if is_eopatch(p) or is_safe(p):
                out.append(p)
                continue
            kids = [c for c in sorted(p.iterdir())
                    if (c.is_dir() and (is_safe(c) or is_eopatch(c)))
                    or (c.is_file() and c.suffix.lower() in _TIFF and not _is_mask_of_stack(c))]
            if not kids:
                raise InputError(f"{p} holds no SAFE folders, GeoTIFF stacks or EOPatch folders")
            out.extend(kids)
        elif p.suffix.lower() == ".xml" and is_safe(p):
            out.append(p.parent)
        elif p.suffix.lower() in _TIFF:
            if not _is_mask_of_stack(p):
                out.append(p)
        elif p.suffix.lower() == ".zip":
            raise InputError(f"{p.name}: unzip SAFE archives before opening them")
        else:
            raise InputError(f"{p.name} is not a SAFE folder, GeoTIFF or EOPatch folder")
    seen: set[Path] = set()
    for p in out:
        r = p.resolve()
        if r in seen:
            raise InputError(f"{p} is given twice")
        seen.add(r)
    if not out:
        raise InputError("no Sentinel-2 inputs found")
    return out


def _is_mask_of_stack(p: Path) -> bool:
    """A ``<stem>_SCL.tif`` / ``<stem>_cloud.tif`` beside its stack ``<stem>.tif`` is a mask, not a date."""
    if not is_sibling_mask(p):
        return False
    base = p.stem.rsplit("_", 1)[0]
    return any(p.with_name(base + ext).is_file() for ext in (p.suffix, *_TIFF))


def _open_native(p: Path, resolution: float | None) -> Sentinel2Scene:
    if is_safe(p):
        res = int(resolution) if resolution in (10, 20, 60) else 10
        return open_safe(p, resolution=res)
    if p.is_file() and p.stat().st_size == 0:
        raise InputError(f"{p.name} is empty (0 bytes), not a GeoTIFF")
    sc = open_s2_geotiff(p)
    if sc.acquired is None:
        sc.close()
        raise InputError(f"{p.name}: no acquisition date (set the ACQUISITION_DATE tag, or put YYYYMMDD / "
                         "YYYY-MM-DD in the file name)")
    return sc


def target_grid(first: Grid, *, crs: Any = None, resolution: float | None = None,
                bounds: Sequence[float] | None = None) -> Grid:
    """The series grid: ``first`` unless ``crs``/``resolution``/``bounds`` (left, bottom, right, top in the
    target CRS) change it; a new grid keeps ``first``'s origin when the CRS is the same."""
    from rasterio.crs import CRS
    from rasterio.errors import CRSError
    from rasterio.warp import calculate_default_transform, transform_bounds

    try:
        tcrs = CRS.from_user_input(crs) if crs is not None else first.crs
    except (CRSError, ValueError) as e:
        raise OptionError(f"unknown CRS {crs!r} ({e})") from None
    same_crs = tcrs == first.crs
    if resolution is not None and (not np.isfinite(resolution) or resolution <= 0):
        raise OptionError(f"resolution must be positive, not {resolution}")
    if bounds is None and same_crs and (resolution is None or math.isclose(resolution, first.res[0])):
        return first
    if resolution is not None:
        res = float(resolution)
    elif same_crs:
        res = first.res[0]
    else:
        t, _, _ = calculate_default_transform(first.crs, tcrs, first.width, first.height, *first.bounds)
        res = abs(t.a)
    if bounds is not None:
        left, bottom, right, top = (float(v) for v in bounds)
        if not (right > left and top > bottom):
            raise OptionError(f"bounds must be left bottom right top with right > left and top > bottom: {bounds}")
    elif same_crs:
        left, bottom, right, top = first.bounds
    else:
        left, bottom, right, top = transform_bounds(first.crs, tcrs, *first.bounds)
        left, top = math.floor(left / res) * res, math.ceil(top / res) * res
    width = max(1, math.ceil((right - left) / res - 1e-6))
    height = max(1, math.ceil((top - bottom) / res - 1e-6))
    return Grid(tcrs, Affine(res, 0.0, left, 0.0, -res, top), width, height)


def _listed(names: Sequence[str]) -> str:
    """Up to :data:`_LIST_MAX` names, comma-separated, then "and N more"."""
    head = ", ".join(names[:_LIST_MAX])
    return head + (f" and {len(names) - _LIST_MAX} more" if len(names) > _LIST_MAX else "")


def _read_error(sc: Sentinel2Scene, path: str, what: str, w: Window, err: BaseException) -> InputError:
    """A failed chunk read as one line naming the file, what was read and the window (series grid pixels)."""
    f = Path(path).name
    name = f if f == sc.name else f"{sc.name} ({f})"
    r0, c0 = int(w.row_off), int(w.col_off)
    return InputError(f"cannot read {name}: {what}, rows {r0}-{r0 + int(w.height) - 1}, cols {c0}-"
                      f"{c0 + int(w.width) - 1} of the series grid ({gdal_reason(err)}; the file may be truncated "
                      "or damaged)")


def _band_reflectance(sc: Sentinel2Scene, w: Window, b: int) -> np.ndarray:
    """Band ``b`` of ``sc`` in window ``w`` as (h, w) reflectance; a failed read is an :class:`InputError`."""
    try:
        return reflectance(sc, w, [b])[0]
    except _READ_ERRORS as e:
        raise _read_error(sc, sc.layers[b].path, f"band {sc.bands.names[b]}", w, e) from e


_MASK_LAYER = {"SCL": "SCL", "MSK_CLASSI": "OPAQUE_CLOUDS", "MSK_CLDPRB": "CLDPRB", "file": "CLOUD"}


def _cloud(sc: Sentinel2Scene, w: Window) -> np.ndarray:
    """The cloud mask of ``sc`` in window ``w``; a failed read is an :class:`InputError`."""
    try:
        return sc.cloud_mask(w, CLOUD_CLASSES)
    except _READ_ERRORS as e:
        layer = sc.extras.get(_MASK_LAYER.get(sc.cloud_source, ""))
        raise _read_error(sc, layer.path if layer else sc.path, f"cloud mask ({sc.cloud_source})", w, e) from e


class _BandBlocks:
    """One time step's reflectance dask blocks, one band each: (1, h, w) float32, mosaicked in order (a pixel of
    a band comes from the first scene with data in that band). Only that band's file is read, so selecting
    bands of the series reads only the selected bands."""

    def __init__(self, scenes: list[Sentinel2Scene]) -> None:
        self.scenes = scenes

    def __call__(self, block=None, block_info=None) -> np.ndarray:
        (b0, _), (r0, r1), (c0, c1) = block_info[None]["array-location"]
        w = Window(c0, r0, c1 - c0, r1 - r0)
        out = np.full((1, r1 - r0, c1 - c0), np.nan, dtype=np.float32)
        filled = np.zeros((r1 - r0, c1 - c0), dtype=bool)
        for sc in self.scenes:
            refl = _band_reflectance(sc, w, b0)
            take = ~np.isnan(refl) & ~filled
            out[0, take] = refl[take]
            filled |= take
            if filled.all():
                break
        return out


class _MaskBlocks:
    """One time step's mask dask blocks: (2, h, w) float32 = valid (every band has data), cloud (of the first
    scene with data on every band). Bands are read one at a time, so a mask block holds one band, not all."""

    def __init__(self, scenes: list[Sentinel2Scene], nbands: int) -> None:
        self.scenes, self.nbands = scenes, nbands

    def __call__(self, block=None, block_info=None) -> np.ndarray:
        (r0, r1), (c0, c1) = block_info[None]["array-location"][1:]
        w = Window(c0, r0, c1 - c0, r1 - r0)
        out = np.zeros((2, r1 - r0, c1 - c0), dtype=np.float32)
        filled = np.zeros((r1 - r0, c1 - c0), dtype=bool)
        for sc in self.scenes:
            has = ~filled
            for b in range(self.nbands):
                has &= ~np.isnan(_band_reflectance(sc, w, b))
                if not has.any():
                    break
            if not has.any():
                continue
            out[1, has] = _cloud(sc, w)[has]
            filled |= has
            if filled.all():
                break
        out[0] = filled
        return out


def open_series(
    inputs: str | Path | Sequence[str | Path],
    *,
    resolution: float | None = None,
    bands: Sequence[str] | None = None,
    crs: Any = None,
    bounds: Sequence[float] | None = None,
    chunks: int = 512,
):
    """Open Sentinel-2 acquisitions of one area as an ``xarray.Dataset`` on one grid, read lazily (dask).

    Variables: ``reflectance`` float32 (time, band, y, x), scale/offset applied, NaN without data; ``cloud`` bool
    (time, y, x), True = cloud / cloud shadow / cirrus, False where no mask is known; ``valid`` bool (time, y, x).
    Coordinates: ``time`` (datetime64[ns], ascending), ``band`` (``B03`` ...), ``wavelength``/``fwhm`` (band, nm),
    ``y``/``x`` pixel centres, per-time ``tile``, ``level``, ``source``, ``cloud_source`` and ``off_grid``; CRS
    and transform via rioxarray (``ds.rio.crs``); attribute ``bands_missing`` where bands were left out. See the
    module docstring for dates, merging, grid and band rules.
    An EOPatch folder gives :func:`~hsikit.io.eopatch.open_eopatch`'s dataset.
    """
    import dask.array as da
    import rioxarray  # noqa: F401
    import xarray as xr
    from dask.base import tokenize

    if int(chunks) < 1:
        raise OptionError(f"chunks must be a positive number of pixels, not {chunks}")
    chunks = int(chunks)
    paths = collect_inputs(inputs)
    patches = [p for p in paths if is_eopatch(p)]
    if patches:
        if len(paths) > 1:
            raise InputError("an EOPatch folder cannot be combined with other inputs")
        return open_eopatch(patches[0], chunks=chunks)

    natives: list[Sentinel2Scene] = []
    try:
        for p in paths:
            natives.append(_open_native(p, resolution))
        natives.sort(key=lambda s: (s.acquired, s.path))
        ref = _reference_grid(natives)
        grid = target_grid(ref, crs=crs, resolution=resolution, bounds=bounds)
        names = _series_bands(natives, bands)
        missing = _missing_bands(natives, names) if bands is None else {}
        off = _warn_grids(natives, ref, grid)
        scenes = [s.on_grid(grid, names) for s in natives]
    finally:
        for s in natives:
            s.close()

    groups: dict[datetime, list[Sentinel2Scene]] = {}
    for s in scenes:
        groups.setdefault(s.acquired, []).append(s)
    times = sorted(groups)
    nb = len(names)
    ych = tuple(min(chunks, grid.height - i) for i in range(0, grid.height, chunks))
    xch = tuple(min(chunks, grid.width - i) for i in range(0, grid.width, chunks))
    refl_dates, mask_dates = [], []
    for t in times:
        members = sorted(groups[t], key=lambda s: s.path)
        groups[t] = members
        token = tokenize([m.path for m in members], grid.crs.to_wkt(), tuple(grid.transform), grid.width,
                         grid.height, names, chunks)
        # one band per reflectance chunk: a band selection reads (and holds) only the selected bands
        refl_dates.append(da.map_blocks(_BandBlocks(members), dtype=np.float32, chunks=((1,) * nb, ych, xch),
                                        meta=np.empty((0, 0, 0), np.float32), name="s2-refl-" + token))
        mask_dates.append(da.map_blocks(_MaskBlocks(members, nb), dtype=np.float32, chunks=((2,), ych, xch),
                                        meta=np.empty((0, 0, 0), np.float32), name="s2-mask-" + token))
    refl, masks = da.stack(refl_dates, axis=0), da.stack(mask_dates, axis=0)
    pos = {b: i for i, b in enumerate(SENTINEL2.bands)}
    tr = grid.transform
    coords = {
        "time": np.array([np.datetime64(t, "ns") for t in times]),
        "band": list(names),
        "wavelength": ("band", [SENTINEL2.centers[pos[b]] for b in names]),
        "fwhm": ("band", [SENTINEL2.fwhm[pos[b]] for b in names]),
        "y": tr.f + tr.e * (np.arange(grid.height) + 0.5),
        "x": tr.c + tr.a * (np.arange(grid.width) + 0.5),
        "tile": ("time", [_join_unique(m.tile for m in groups[t]) for t in times]),
        "level": ("time", [_join_unique(m.level for m in groups[t]) for t in times]),
        "source": ("time", ["+".join(m.name for m in groups[t]) for t in times]),
        "cloud_source": ("time", [_join_unique(m.cloud_source for m in groups[t]) for t in times]),
        "off_grid": ("time", [any(m.path in off for m in groups[t]) for t in times]),
    }
    ds = xr.Dataset(
        {
            "reflectance": (("time", "band", "y", "x"), refl),
            "cloud": (("time", "y", "x"), masks[:, 1] > 0.5),
            "valid": (("time", "y", "x"), masks[:, 0] > 0.5),
        },
        coords=coords,
    )
    ds["reflectance"].attrs.update(long_name="reflectance (surface for L2A, top of atmosphere for L1C)", units="1")
    ds["cloud"].attrs.update(long_name="cloud, cloud shadow or cirrus", scl_classes=list(CLOUD_CLASSES))
    ds["valid"].attrs.update(long_name="the acquisition has data")
    ds.coords["wavelength"].attrs["units"] = "nm"
    ds.coords["fwhm"].attrs["units"] = "nm"
    ds.coords["off_grid"].attrs["long_name"] = ("a file of the date is on another grid than most inputs, or outside "
                                                "the series grid (named in a warning)")
    ds = ds.rio.write_crs(grid.crs).rio.write_transform(grid.transform)
    if missing:
        ds.attrs["bands_missing"] = json.dumps(missing)
    return ds


def _join_unique(values) -> str:
    """Distinct non-empty values in first-seen order, joined by '+'."""
    return "+".join(dict.fromkeys(v for v in values if v))


def _series_bands(scenes: list[Sentinel2Scene], bands: Sequence[str] | None) -> list[str]:
    if bands is not None:
        names = None
        for s in scenes:
            label = f"{s.name} ({s.acquired:%Y-%m-%d})"
            names = select_bands(list(s.bands.names), bands, label)
        return names
    common = [b for b in SENTINEL2.bands if all(b in s.bands.names for s in scenes)]
    if not common:
        raise BandMismatchError("the inputs share no Sentinel-2 band: "
                                + "; ".join(f"{s.name}: {', '.join(s.bands.names)}" for s in scenes))
    return common


def _missing_bands(scenes: list[Sentinel2Scene], names: Sequence[str]) -> dict[str, list[str]]:
    """Sentinel-2 bands some inputs have but that are left out of the series because others lack them:
    {band: [names of the inputs lacking it]}; one warning names them."""
    missing = {b: [s.name for s in scenes if b not in s.bands.names]
               for b in SENTINEL2.bands if b not in names and any(b in s.bands.names for s in scenes)}
    if missing:
        by_files: dict[tuple[str, ...], list[str]] = {}
        for b, files in missing.items():
            by_files.setdefault(tuple(files), []).append(b)
        parts = [f"{'band' if len(bs) == 1 else 'bands'} {', '.join(bs)} {'is' if len(bs) == 1 else 'are'} on "
                 f"{len(scenes) - len(files)} of {len(scenes)} inputs, not on {_listed(list(files))}"
                 for files, bs in by_files.items()]
        warnings.warn("; ".join(parts) + ": left out of the series", stacklevel=3)
    return missing


def _reference_grid(scenes: list[Sentinel2Scene]) -> Grid:
    """The grid most inputs share, the earliest on a tie (``scenes`` are sorted by time)."""
    best, best_n = scenes[0].grid, 0
    for s in scenes:
        n = sum(o.grid.same_as(s.grid) for o in scenes)
        if n > best_n:
            best, best_n = s.grid, n
    return best


def _coverage(g: Grid, grid: Grid) -> float:
    """Share of ``grid``'s area inside ``g``'s bounds (approximate across CRSs)."""
    from rasterio.warp import transform_bounds

    b = g.bounds if g.crs == grid.crs else transform_bounds(g.crs, grid.crs, *g.bounds)
    gl, gb, gr, gt = grid.bounds
    w = max(0.0, min(b[2], gr) - max(b[0], gl))
    h = max(0.0, min(b[3], gt) - max(b[1], gb))
    return w * h / max((gr - gl) * (gt - gb), 1e-300)


def _describe(g: Grid, ref: Grid | None = None) -> str:
    """ "37x37 px at 10 m, EPSG:32650"; with ``ref``, the CRS only where it differs, and the shift of the origin
    where only that does."""
    unit = " m" if g.crs is not None and g.crs.is_projected else "°"
    txt = f"{g.width}x{g.height} px at {g.res[0]:.6g}{unit}"
    if ref is None or g.crs != ref.crs:
        epsg = g.crs.to_epsg() if g.crs is not None else None
        txt += f", EPSG:{epsg}" if epsg else ", another CRS"
    elif (g.width, g.height) == (ref.width, ref.height) and g.res == ref.res:
        dx, dy = g.transform.c - ref.transform.c, g.transform.f - ref.transform.f
        txt += f", origin shifted by {dx:.6g}, {dy:.6g}{unit}"
    return txt


def _warn_grids(scenes: list[Sentinel2Scene], ref: Grid, grid: Grid) -> set[str]:
    """One warning naming the inputs that are resampled from another grid than most inputs' (``ref``), or that
    do not overlap the series ``grid``, with the share of the grid each covers; returns their paths."""
    notes: list[tuple[Sentinel2Scene, float]] = []
    for s in scenes:
        cov = _coverage(s.grid, grid)
        if not s.grid.same_as(ref) or cov <= 0:
            notes.append((s, cov))
    if not notes:
        return set()

    def share(cov: float) -> str:
        return "none" if cov <= 0 else f"{100 * cov:.2g} %" if cov < 0.01 else f"{100 * cov:.0f} %"

    if len(notes) == 1:
        s, cov = notes[0]
        if cov <= 0:
            msg = f"{s.name} does not overlap the series grid ({_describe(grid)}): its date has no valid pixel"
        else:
            msg = (f"{s.name} is on another grid ({_describe(s.grid, grid)}) than the series ({_describe(grid)}): "
                   "it is resampled onto the series grid")
            if cov < 0.995:
                msg += f", of which it covers {share(cov)}"
    else:
        items = [f"{s.name} ({_describe(s.grid, grid)}, covers {share(cov)})" for s, cov in notes]
        msg = (f"{len(notes)} inputs are on another grid than the series ({_describe(grid)}) and are resampled "
               f"onto it: {_listed(items)}")
    warnings.warn(msg, stacklevel=3)
    return {s.path for s, _ in notes}
