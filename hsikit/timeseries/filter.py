"""The FFDNN "plant photochemical information filter" (pre-processing without learned weights): from a
Sentinel-2 reflectance series to a standardised ``(N, F, T)`` feature tensor on a regular time grid.

Steps, per pixel:

1. **Cloud masking**: a date is unusable where the series' ``cloud`` mask is set (or, without one, where the
   Scene Classification Layer is 3 shadow, 8/9 cloud, 10 cirrus), where ``valid`` is false, or where a band the
   filter reads is not finite.
2. **Photochemical features** per usable date: by default ``lai`` (WDVI → LAI by the CLAIR model, canopy
   structure) and ``lcc`` (−ln TCARI/OSAVI, leaf chlorophyll), see :mod:`hsikit.timeseries.indices`. Any
   registered index, or a variable the series already carries (``NDVI`` of an EOPatch), can be a feature.
3. **Non-vegetation masking**: pixels whose seasonal NDVI peak (the 90th percentile over usable dates) stays
   below ``ndvi_min`` (0.2) — roads, water, bare soil all season — or with fewer than ``min_valid_dates``
   usable dates, are dropped (map value 0).
4. **Regular grid**: each feature is linearly interpolated over the usable dates onto ``length`` (T = 32)
   dates ``step_days`` (5) apart from the season start; before the first / after the last usable date the edge
   value is held.
5. **Standardisation**: per-feature z-score with mean and standard deviation fitted on the training pixels and
   stored with the model (:meth:`PhotochemicalFilter.to_dict`).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from hsikit.errors import BandMismatchError, InputError, OptionError
from hsikit.timeseries.indices import INDICES, canonical_index, compute_index, normalise_band_name, required_bands

#: quantile of a pixel's usable-date NDVI compared with ``ndvi_min`` (its robust seasonal peak)
PEAK_QUANTILE = 0.9
#: SCL classes masked by default: 3 cloud shadow, 8 cloud medium probability, 9 cloud high probability, 10 cirrus
CLOUD_SCL = (3, 8, 9, 10)


@dataclass
class FilterConfig:
    """Settings of the photochemical filter; fitted values (soil slope, season start, statistics) included.

    ``season_start``: "MM-DD" (the year is chosen per series: the one whose window holds most acquisitions) or
    an ISO date; None at fit time means the series' first acquisition. ``nir``: "B08" or "B8A" (None: B08 when
    present). ``soil_slope`` is WDVI's c; ``alpha``/``wdvi_inf`` the CLAIR constants. ``ndvi_min`` None keeps
    every pixel.
    """

    features: tuple[str, ...] = ("lai", "lcc")
    soil_slope: float = 1.0
    alpha: float = 0.4
    wdvi_inf: float = 0.6
    nir: str | None = None
    cloud_scl: tuple[int, ...] = CLOUD_SCL
    ndvi_min: float | None = 0.2
    min_valid_dates: int = 3
    step_days: int = 5
    length: int = 32
    season_start: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["features"], d["cloud_scl"] = list(self.features), list(self.cloud_scl)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FilterConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("features", "cloud_scl"):
            if k in kw and kw[k] is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)


@dataclass
class SeriesBlock:
    """A spatial block of a series, pixels flattened row-major: ``bands``/``variables`` map names to
    ``(D, N)`` arrays, ``invalid`` is ``(D, N)`` (True = cloud, nodata or non-finite), ``dates`` is ``(D,)``;
    ``nodata`` (D, N), where known, is the part of ``invalid`` that is not cloud."""

    dates: np.ndarray
    bands: dict[str, np.ndarray]
    variables: dict[str, np.ndarray]
    invalid: np.ndarray
    shape: tuple[int, int]
    nodata: np.ndarray | None = None

    @property
    def pixels(self) -> int:
        return int(self.shape[0] * self.shape[1])

    def take(self, sl: slice) -> "SeriesBlock":
        """The pixels ``sl`` (of the flattened block) as a block of shape (1, n); arrays are views."""
        n = len(range(*sl.indices(self.pixels)))
        return SeriesBlock(dates=self.dates, bands={k: v[:, sl] for k, v in self.bands.items()},
                           variables={k: v[:, sl] for k, v in self.variables.items()}, invalid=self.invalid[:, sl],
                           shape=(1, n), nodata=None if self.nodata is None else self.nodata[:, sl])


@dataclass
class FilteredBlock:
    """Filter output: ``x`` (N, F, T) float32 (standardised when statistics are set; 0 where not kept),
    ``keep`` (N,) bool, ``raw`` (N, F, T) before standardisation, ``n_valid`` usable dates per pixel."""

    x: np.ndarray
    keep: np.ndarray
    raw: np.ndarray
    n_valid: np.ndarray
    grid: np.ndarray = field(repr=False)


# -- masks and soil line -----------------------------------------------------------------------------------------------
def scl_cloud_mask(scl: Any, classes: Sequence[int] = CLOUD_SCL) -> Any:
    """True where the Scene Classification Layer is one of ``classes`` (default shadow, cloud, cirrus)."""
    s = np.asarray(scl)
    return np.isin(s, np.asarray(list(classes), dtype=s.dtype if s.dtype.kind in "iu" else np.float64))


def estimate_soil_slope(nir: np.ndarray, red: np.ndarray, soil: np.ndarray) -> float:
    """Soil-line slope c = NIR_soil / Red_soil: the median ratio over the ``soil`` observations."""
    n, r = np.asarray(nir, np.float64)[soil], np.asarray(red, np.float64)[soil]
    ok = np.isfinite(n) & np.isfinite(r) & (r > 1e-3)
    if ok.sum() < 10:
        raise InputError(f"too few bare-soil observations ({int(ok.sum())}) to estimate the soil-line slope; "
                         "give --soil-slope")
    return float(np.median(n[ok] / r[ok]))


def bare_soil(nir: np.ndarray, red: np.ndarray, ndvi_max: float = 0.15) -> np.ndarray:
    """Observations that look like bare soil: finite, 0 < NDVI < ``ndvi_max`` and red reflectance > 0.05."""
    with np.errstate(invalid="ignore", divide="ignore"):
        v = (nir - red) / (nir + red)
    return np.isfinite(v) & (v > 0) & (v < ndvi_max) & (red > 0.05)


def robust_peak(values: np.ndarray, usable: np.ndarray, q: float = PEAK_QUANTILE) -> np.ndarray:
    """Per pixel, the ``q`` quantile (lower order statistic) of ``values`` (D, N) over its ``usable`` dates;
    -inf for pixels without any usable date. Vectorised: one sort along time."""
    a = np.sort(np.where(usable, values, -np.inf), axis=0)  # unusable dates sort first
    d = a.shape[0]
    n = usable.sum(axis=0)
    idx = np.clip(d - n + np.floor(q * np.maximum(n - 1, 0)).astype(np.int64), 0, d - 1)
    out = np.take_along_axis(a, idx[None, :], axis=0)[0]
    return np.where(n > 0, out, -np.inf)


# -- time grid -------------------------------------------------------------------------------------------------------
_MMDD = re.compile(r"^(\d{2})-(\d{2})$")


def season_grid(dates: np.ndarray, cfg: FilterConfig) -> np.ndarray:
    """The ``cfg.length`` grid dates (datetime64[D]) ``cfg.step_days`` apart for a series with ``dates``."""
    d = np.asarray(dates).astype("datetime64[D]")
    if d.size == 0:
        raise InputError("the series has no acquisition dates")
    if cfg.step_days < 1 or cfg.length < 2:
        raise OptionError("the time grid needs step_days >= 1 and length >= 2")
    span = np.timedelta64(int(cfg.step_days) * (int(cfg.length) - 1), "D")
    start = cfg.season_start
    if start is None:
        t0 = d.min()
    elif _MMDD.match(start):
        years = range(int(str(d.min())[:4]) - 1, int(str(d.max())[:4]) + 1)
        best, t0 = -1, None
        for y in years:
            try:
                cand = np.datetime64(f"{y:04d}-{start}")
            except ValueError:
                raise OptionError(f"season start {start!r} is not a valid MM-DD date") from None
            n = int(((d >= cand) & (d <= cand + span)).sum())
            if n > best:
                best, t0 = n, cand
    else:
        try:
            t0 = np.datetime64(start, "D")
        except ValueError:
            raise OptionError(f"season start {start!r} is neither MM-DD nor an ISO date") from None
    grid = t0 + np.arange(int(cfg.length)) * np.timedelta64(int(cfg.step_days), "D")
    if not ((d >= grid[0]) & (d <= grid[-1])).any():
        raise InputError(f"no acquisition falls in the season window {grid[0]} .. {grid[-1]} "
                         f"(series: {d.min()} .. {d.max()}); set the season start")
    return grid


def interpolate_to_grid(values: np.ndarray, valid: np.ndarray, dates: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``values`` (N, F, D) over each pixel's ``valid`` (N, D) dates onto ``grid``.

    Grid dates before a pixel's first valid date take its first valid value, those after its last valid date
    the last one (edges held). Pixels without any valid date come out NaN. Returns (N, F, T) float32.
    """
    values = np.asarray(values, dtype=np.float32)
    n, f, dn = values.shape
    t = (np.asarray(dates).astype("datetime64[s]") - np.asarray(grid[0]).astype("datetime64[s]")).astype(np.float64)
    g = (np.asarray(grid).astype("datetime64[s]") - np.asarray(grid[0]).astype("datetime64[s]")).astype(np.float64)
    order = np.argsort(t, kind="stable")
    if not np.all(order == np.arange(dn)):
        t, values, valid = t[order], values[:, :, order], valid[:, order]
    idx = np.arange(dn)
    prev = np.maximum.accumulate(np.where(valid, idx, -1), axis=1)  # last valid index <= d
    nxt = np.minimum.accumulate(np.where(valid, idx, dn)[:, ::-1], axis=1)[:, ::-1]  # first valid index >= d
    lo = np.searchsorted(t, g, side="right") - 1  # last date <= grid date
    hi = np.searchsorted(t, g, side="left")  # first date >= grid date
    p = np.where(lo >= 0, prev[:, np.clip(lo, 0, dn - 1)], -1)
    q = np.where(hi < dn, nxt[:, np.clip(hi, 0, dn - 1)], dn)
    has_p, has_q = p >= 0, q < dn
    p = np.where(has_p, p, q)
    q = np.where(has_q, q, p)
    none = ~(has_p | has_q)
    pc, qc = np.clip(p, 0, dn - 1), np.clip(q, 0, dn - 1)
    tp, tq = t[pc], t[qc]
    w = np.divide(g[None, :] - tp, tq - tp, out=np.zeros_like(tp), where=tq > tp)
    w = np.clip(w, 0.0, 1.0).astype(np.float32)[:, None, :]
    vp = np.take_along_axis(values, pc[:, None, :], axis=2)
    vq = np.take_along_axis(values, qc[:, None, :], axis=2)
    out = vp + w * (vq - vp)
    out[np.broadcast_to(none[:, None, :], out.shape)] = np.nan
    return out


# -- the filter ------------------------------------------------------------------------------------------------------
class PhotochemicalFilter:
    """Turns :class:`SeriesBlock` pixels into the model's standardised ``(N, F, T)`` input (see module doc)."""

    def __init__(self, cfg: FilterConfig | None = None) -> None:
        self.cfg = cfg or FilterConfig()
        if not self.cfg.features:
            raise OptionError("the filter needs at least one feature")

    # -- description -------------------------------------------------------------------------------------------
    @property
    def num_features(self) -> int:
        return len(self.cfg.features)

    @property
    def fitted(self) -> bool:
        return self.cfg.mean is not None and self.cfg.std is not None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "ffdnn-photochemical-filter", **self.cfg.to_dict()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PhotochemicalFilter":
        if d.get("kind") not in (None, "ffdnn-photochemical-filter"):
            raise InputError(f"the model's preprocessing is {d.get('kind')!r}, not the FFDNN photochemical filter")
        return cls(FilterConfig.from_dict(d))

    def _is_index(self, feature: str) -> bool:
        try:
            canonical_index(feature)
            return True
        except OptionError:
            return False

    def resolve(self, band_names: Sequence[str], variables: Sequence[str]) -> "PhotochemicalFilter":
        """Fix the NIR band from what a series holds and check every feature can be computed; returns self."""
        have = {normalise_band_name(b) for b in band_names}
        if self.cfg.nir is None:
            self.cfg.nir = "B08" if "B08" in have or "B8A" not in have else "B8A"
        for f in self.cfg.features:
            if f in variables:  # a variable the series carries wins over an index of the same name
                continue
            if not self._is_index(f):
                raise OptionError(f"feature {f!r} is neither an index ({', '.join(sorted(INDICES))}) nor a "
                                  f"variable of the series ({', '.join(variables) or 'none'})")
            missing = [b for b in required_bands(f, self.cfg.nir) if b not in have]
            if missing:
                raise BandMismatchError(f"feature {f} needs band(s) {', '.join(missing)}; the series has "
                                        f"{', '.join(sorted(have)) or 'no bands'}")
        return self

    def needed_bands(self, variables: Sequence[str] = ()) -> list[str]:
        """Band names the filter reads (features not given as series variables, plus NIR/red for the NDVI test)."""
        out: list[str] = []
        for f in self.cfg.features:
            if f in variables:
                continue
            out += [b for b in required_bands(f, self.cfg.nir) if b not in out]
        if self.cfg.ndvi_min is not None and "NDVI" not in variables:
            out += [b for b in required_bands("ndvi", self.cfg.nir) if b not in out]
        return out

    def needed_variables(self, variables: Sequence[str]) -> list[str]:
        """Series variables read directly (features such as NDVI that the series carries)."""
        out = [f for f in self.cfg.features if f in variables]
        if self.cfg.ndvi_min is not None and "NDVI" in variables and "NDVI" not in out:
            out.append("NDVI")
        return out

    # -- computation -------------------------------------------------------------------------------------------
    def _params(self, feature: str) -> dict[str, float]:
        key = canonical_index(feature)
        p = {"slope": self.cfg.soil_slope}
        if key == "lai":
            p.update(alpha=self.cfg.alpha, wdvi_inf=self.cfg.wdvi_inf)
        return {k: v for k, v in p.items() if k in INDICES[key].params}

    def date_features(self, block: SeriesBlock) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-date features (D, F, N) float32 and NDVI (D, N) (None when it cannot be computed)."""
        feats = []
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            for f in self.cfg.features:
                if f in block.variables:
                    feats.append(np.asarray(block.variables[f], dtype=np.float32))
                else:
                    feats.append(np.asarray(compute_index(f, block.bands, nir=self.cfg.nir, **self._params(f)),
                                            dtype=np.float32))
            if "NDVI" in block.variables:
                ndvi = np.asarray(block.variables["NDVI"], dtype=np.float32)
            elif all(b in block.bands for b in required_bands("ndvi", self.cfg.nir)):
                ndvi = np.asarray(compute_index("ndvi", block.bands, nir=self.cfg.nir), dtype=np.float32)
            else:
                ndvi = None
        return np.stack(feats, axis=1), ndvi

    def filter(self, block: SeriesBlock, grid: np.ndarray) -> FilteredBlock:
        """Mask, compute features, drop non-vegetation, interpolate onto ``grid`` and standardise."""
        per_date, ndvi = self.date_features(block)
        usable = ~np.asarray(block.invalid, dtype=bool) & np.isfinite(per_date).all(axis=1)
        n_valid = usable.sum(axis=0)
        keep = n_valid >= max(1, int(self.cfg.min_valid_dates))
        if self.cfg.ndvi_min is not None and ndvi is not None and ndvi.size:
            # a robust seasonal peak: the 90th percentile of the usable dates, so a few noisy or
            # cloud-contaminated dates cannot make a road or bare field count as vegetation
            keep &= robust_peak(ndvi, usable & np.isfinite(ndvi)) >= self.cfg.ndvi_min
        raw = interpolate_to_grid(per_date.transpose(2, 1, 0), usable.T, block.dates, grid)
        keep &= np.isfinite(raw).all(axis=(1, 2))
        x = self.standardise(raw)
        x[~keep] = 0.0
        return FilteredBlock(x=x, keep=keep, raw=raw, n_valid=n_valid, grid=grid)

    def standardise(self, raw: np.ndarray) -> np.ndarray:
        """Per-feature z-score with the fitted statistics (identity before :meth:`fit_statistics`); NaN → 0."""
        x = np.array(raw, dtype=np.float32, copy=True)
        if self.fitted:
            m = np.asarray(self.cfg.mean, np.float32)[None, :, None]
            s = np.asarray(self.cfg.std, np.float32)[None, :, None]
            x = (x - m) / s
        x[~np.isfinite(x)] = 0.0
        return x

    def fit_statistics(self, raw: np.ndarray) -> "PhotochemicalFilter":
        """Mean and standard deviation of each feature over training pixels ``raw`` (N, F, T) and all dates."""
        if raw.shape[0] == 0:
            raise InputError("no training pixel survived the filter (clouds / non-vegetation everywhere?)")
        r = raw.transpose(1, 0, 2).reshape(raw.shape[1], -1).astype(np.float64)
        self.cfg.mean = [float(np.nanmean(v)) for v in r]
        self.cfg.std = [float(max(np.nanstd(v), 1e-6)) for v in r]
        return self


# -- reading blocks from the series layout ---------------------------------------------------------------------------
def band_lookup(ds: Any) -> dict[str, Any]:
    """Normalised band name ("B8" → "B08") → the name in the series' ``band`` coordinate."""
    if "band" not in getattr(ds, "coords", {}):
        return {}
    return {normalise_band_name(str(b)): b for b in ds["band"].values}


def series_variables(ds: Any) -> list[str]:
    """Per-date data variables of the series other than reflectance and masks (e.g. ``NDVI``)."""
    skip = {"reflectance", "cloud", "valid", "SCL"}
    return [str(v) for v in ds.data_vars if v not in skip and "time" in ds[v].dims]


def read_block(ds: Any, ys: slice, xs: slice, bands: Sequence[str], variables: Sequence[str],
               cloud_scl: Sequence[int] = CLOUD_SCL) -> SeriesBlock:
    """Load one spatial block of a series Dataset (``reflectance`` (time, band, y, x), ``cloud``, ``valid``; or
    per-date variables such as ``NDVI``) into memory as a :class:`SeriesBlock`. Dask-backed arrays are computed
    together, in one pass, so shared source reads (one task per date for bands and masks) run once."""
    sub = ds.isel(y=ys, x=xs)
    h, w = int(sub.sizes["y"]), int(sub.sizes["x"])
    dates = np.asarray(sub["time"].values)
    d = dates.size
    lookup = band_lookup(ds)
    wanted: dict[str, Any] = {}
    if bands:
        missing = [b for b in bands if b not in lookup]
        if missing:
            raise BandMismatchError(f"the series lacks band(s) {', '.join(missing)}")
        wanted["reflectance"] = sub["reflectance"].sel(band=[lookup[b] for b in bands]).transpose("time", "band", "y", "x")
    for v in variables:
        wanted[f"var:{v}"] = sub[v].transpose("time", "y", "x")
    if "cloud" in sub.data_vars:
        wanted["cloud"] = sub["cloud"].transpose("time", "y", "x")
    elif "SCL" in sub.data_vars:
        wanted["scl"] = sub["SCL"].transpose("time", "y", "x")
    elif "SCL" in lookup:
        wanted["scl"] = sub["reflectance"].sel(band=lookup["SCL"]).transpose("time", "y", "x")
    if "valid" in sub.data_vars:
        wanted["valid"] = sub["valid"].transpose("time", "y", "x")
    lazy = {k: v.data for k, v in wanted.items() if hasattr(v.data, "dask")}
    if lazy:
        import dask

        done = dict(zip(lazy, dask.compute(*lazy.values())))
    else:
        done = {}
    arr = {k: np.asarray(done[k] if k in done else v.values) for k, v in wanted.items()}
    out_bands: dict[str, np.ndarray] = {}
    nodata = np.zeros((d, h * w), dtype=bool)
    if "reflectance" in arr:
        refl = arr["reflectance"].astype(np.float32, copy=False)
        for i, b in enumerate(bands):
            out_bands[b] = np.ascontiguousarray(refl[:, i]).reshape(d, -1)
        nodata |= ~np.isfinite(refl).all(axis=1).reshape(d, -1)
    out_vars = {}
    for v in variables:
        a = arr[f"var:{v}"].astype(np.float32, copy=False).reshape(d, -1)
        out_vars[v] = a
        nodata |= ~np.isfinite(a)
    if "valid" in arr:
        nodata |= ~arr["valid"].astype(bool, copy=False).reshape(d, -1)
    invalid = nodata.copy()
    if "cloud" in arr:
        invalid |= arr["cloud"].astype(bool, copy=False).reshape(d, -1)
    elif "scl" in arr:
        invalid |= scl_cloud_mask(arr["scl"], cloud_scl).reshape(d, -1)
    return SeriesBlock(dates=dates, bands=out_bands, variables=out_vars, invalid=invalid, shape=(h, w),
                       nodata=nodata)


class DateCoverage:
    """What each date of a series gave over the blocks read: pixels with data, clear pixels (data, no cloud) and
    finite pixels per band or variable, so that the dates that gave nothing can be named (:meth:`notes`)."""

    def __init__(self, n_dates: int, names: Sequence[str]) -> None:
        self.data = np.zeros(n_dates, np.int64)
        self.clear = np.zeros(n_dates, np.int64)
        self.finite = {str(n): np.zeros(n_dates, np.int64) for n in names}

    def add(self, block: SeriesBlock) -> None:
        nodata = block.nodata if block.nodata is not None else block.invalid
        self.data += (~nodata).sum(axis=1)
        self.clear += (~block.invalid).sum(axis=1)
        for n, a in (*block.bands.items(), *block.variables.items()):
            if n in self.finite:
                self.finite[n] += np.isfinite(a).sum(axis=1)

    def notes(self, labels: Sequence[str], skip: Sequence[bool] | None = None, most: int = 5) -> list[str]:
        """At most two warning lines: the dates without any valid pixel (with the empty band when only some are
        empty), and the dates cloudy wherever they have data; each such date is treated as missing. Dates
        flagged in ``skip`` (already reported, e.g. resampled from another grid) are left out."""
        def listed(items: list[str]) -> str:
            return ", ".join(items[:most]) + (f" and {len(items) - most} more" if len(items) > most else "")

        empty: list[tuple[str, str]] = []  # (line for this date alone, item of a list of dates)
        cloudy: list[str] = []
        for i, label in enumerate(labels):
            if self.clear[i] or (skip is not None and skip[i]):
                continue
            if self.data[i]:
                cloudy.append(label)
                continue
            gone = [n for n, c in self.finite.items() if c[i] == 0]
            if gone and len(gone) < len(self.finite):
                what = f"{'band' if len(gone) == 1 else 'bands'} {', '.join(gone)}"
                empty.append((f"{label}: {what} {'has' if len(gone) == 1 else 'have'} no valid pixel",
                              f"{label} ({what} empty)"))
            elif gone:
                empty.append((f"{label} has no valid pixel", label))
            else:  # each band has data somewhere, but never all of them in one pixel
                empty.append((f"{label} has no pixel with data in every band", f"{label} (no pixel with every band)"))
        out = []
        if len(empty) == 1:
            out.append(f"{empty[0][0]}: the date is treated as missing")
        elif empty:
            out.append(f"{len(empty)} dates have no valid pixel and are treated as missing: "
                       f"{listed([item for _, item in empty])}")
        if cloudy:
            one = len(cloudy) == 1
            out.append(f"{len(cloudy)} {'date is' if one else 'dates are'} cloudy wherever "
                       f"{'it has' if one else 'they have'} data and {'is' if one else 'are'} treated as missing: "
                       f"{listed(cloudy)}")
        return out


def filter_in_chunks(filt: PhotochemicalFilter, block: SeriesBlock, grid: np.ndarray, chunk: int = 32768):
    """Yield (pixel slice, :class:`FilteredBlock`) over ``block`` ``chunk`` pixels at a time, so the filter's
    float temporaries stay small however large the block read from disk is."""
    for s in range(0, block.pixels, max(1, int(chunk))):
        sl = slice(s, min(s + int(chunk), block.pixels))
        yield sl, filt.filter(block.take(sl), grid)


def blocks(width: int, height: int, size: int) -> list[tuple[slice, slice]]:
    """Row-major ``size``×``size`` blocks covering a ``width``×``height`` grid, as (rows, cols) slices; sizes in
    the order of :func:`hsikit.windows.iter_windows`."""
    size = max(1, int(size))
    return [(slice(r, min(r + size, height)), slice(c, min(c + size, width)))
            for r in range(0, height, size) for c in range(0, width, size)]
