"""Crop-stress maps from a Sentinel-2 time series with a trained FFDNN, block by block, with explanations."""

from __future__ import annotations

import json
import time
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from hsikit.errors import BandMismatchError, InputError, OptionError
from hsikit.pipelines.options import check_format
from hsikit.report import save_png

#: spatial chunk (px) of series opened from files; blocks follow it
SERIES_CHUNK = 256
#: GDAL block cache while a series is read (MB)
GDAL_CACHE_MB = 256
#: a series reader: paths -> Dataset in the hsikit time-series layout (default hsikit.io.timeseries.open_series)
Reader = Callable[[Sequence[str]], Any]


@dataclass
class StressResult:
    """What :func:`stress` wrote, and a summary of the run."""

    class_map: Path
    qml: Path
    lengths: Path
    png: Path | None = None
    explanation: Path | None = None
    explanation_png: Path | None = None
    date_map: Path | None = None
    field_map: Path | None = None
    seconds: float = 0.0
    pixels: int = 0
    classified: int = 0
    blocks: int = 0
    class_counts: dict[str, int] = field(default_factory=dict)
    grid: list[str] = field(default_factory=list)


# -- series input ----------------------------------------------------------------------------------------------------
def open_series_input(series: Any, reader: Reader | None = None) -> tuple[Any, str]:
    """(Dataset, display name) for ``series``: an ``xarray.Dataset`` as it is, else path(s) through ``reader``
    (default :func:`hsikit.io.timeseries.open_series`, which also opens EOPatch folders)."""
    import xarray as xr

    if isinstance(series, xr.Dataset):
        return series, str(series.attrs.get("source") or series.attrs.get("name") or "in-memory series")
    items = [series] if isinstance(series, (str, Path)) else list(series)
    if not items:
        raise InputError("no series given")
    if reader is None:
        from hsikit.io.timeseries import open_series

        # 256 px chunks: a block's read (all dates at once) stays a few hundred MB, and each chunk is read once
        ds = open_series([str(p) for p in items], chunks=SERIES_CHUNK)
    else:
        ds = reader([str(p) for p in items])
    first = Path(str(items[0])).name
    return ds, first if len(items) == 1 else f"{first} (+{len(items) - 1} more)"


def date_labels(ds: Any) -> list[str]:
    """Per date of a series: "S2_20230612.tif (2023-06-12)" where the files are known, else the date."""
    days = [str(t)[:10] for t in np.asarray(ds["time"].values)]
    if "source" in ds.coords:
        return [f"{src} ({d})" for src, d in zip(ds["source"].values, days)]
    return days


def check_bands_on_every_date(ds: Any, filt: Any, nir: str | None, band_names: Sequence[str],
                              variables: Sequence[str]) -> None:
    """Raise an error naming the inputs that lack a band the model needs, when the series left that band out
    because of them (``bands_missing`` attribute of :func:`hsikit.io.timeseries.open_series`); the filter's
    own error only sees the series without the band."""
    missing = json.loads(ds.attrs.get("bands_missing", "{}"))
    if not missing:
        return
    filt.cfg.nir = nir
    try:
        filt.resolve([*band_names, *missing], variables)
    except BandMismatchError:
        return  # something no input has is missing too: the filter's error says what
    need = [b for b in filt.needed_bands(variables) if b in missing]
    if not need:
        return
    files = sorted({f for b in need for f in missing[b]})
    one = len(files) == 1
    shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    raise BandMismatchError(f"{shown} {'lacks' if one else 'lack'} {'band' if len(need) == 1 else 'bands'} "
                            f"{', '.join(need)}, which the model needs and the other inputs have: re-export "
                            f"{'it' if one else 'them'} with every band, or leave {'it' if one else 'them'} out")


@contextmanager
def warnings_after_checks() -> Iterator[None]:
    """Hold the warnings raised inside and show them once the block ends without an error: a run that a check
    stops shows its one error line, not the warnings that led up to it."""
    with warnings.catch_warnings(record=True) as held:
        warnings.simplefilter("always")
        yield
    seen = set()
    for w in held:
        key = (w.category, str(w.message))
        if key not in seen:
            seen.add(key)
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def series_grid(ds: Any) -> tuple[int, int, Any, Any]:
    """(height, width, crs, transform) of a series Dataset (CRS None when it has none)."""
    import rioxarray  # noqa: F401

    h, w = int(ds.sizes["y"]), int(ds.sizes["x"])
    crs = None
    try:
        crs = ds.rio.crs
    except Exception:  # noqa: BLE001 - rioxarray raises several kinds for datasets without spatial metadata
        crs = None
    try:
        transform = ds.rio.transform()
    except Exception:  # noqa: BLE001
        from affine import Affine

        transform = Affine.identity()
    return h, w, crs, transform


def grid_raster(src: Any, ds: Any, what: str, *, allow_vector: bool = False, attribute: str | None = None,
                allow_resample: bool = False):
    """A per-pixel integer raster on the series grid from an array, a DataArray, a variable name of ``ds`` or a
    file (raster; or vector polygons when ``allow_vector``). A raster file off the series grid is refused unless
    ``allow_resample`` (nearest neighbour, with a warning). Returns (values int32 (H, W), class names or None,
    class colours or None)."""
    h, w, crs, transform = series_grid(ds)
    names = colors = None
    if isinstance(src, str) and src in getattr(ds, "data_vars", {}):
        src = ds[src]
    if hasattr(src, "dims") and hasattr(src, "values") and not isinstance(src, np.ndarray):
        arr = np.asarray(src.values)
        if "class_names" in getattr(src, "attrs", {}):
            names = list(json.loads(src.attrs["class_names"]))
    elif isinstance(src, np.ndarray):
        arr = src
    else:
        from hsikit.io.labels import read_labels
        from hsikit.io.scene import ArrayScene

        p = Path(src)
        if not p.exists():
            raise InputError(f"{what} file not found: {p}")
        if not allow_vector and p.suffix.lower() not in (".tif", ".tiff", ".vrt", ".img", ".png"):
            raise InputError(f"{what} must be a raster on the series grid, not {p.name}")
        grid = ArrayScene(np.broadcast_to(np.zeros((1, 1, 1), np.uint8), (1, h, w)), crs=crs, transform=transform,
                          path="the series")
        lm = read_labels(p, grid, attribute=attribute, allow_resample=allow_resample)
        arr, names, colors = lm.values, lm.class_names, lm.class_colors
    if arr.shape != (h, w):
        raise InputError(f"{what} is {arr.shape[1]}x{arr.shape[0]} px, the series {w}x{h}")
    a = np.asarray(arr)
    if a.dtype.kind == "f":
        a = np.where(np.isfinite(a), a, 0)
    if np.any(a < 0):
        raise InputError(f"{what} holds negative values; expected 0 (none) and positive ids")
    return a.astype(np.int32), names, colors


class FieldIds:
    """Field ids on the series grid, read block by block: from a raster file (windowed reads, same grid as the
    series required), an array, a DataArray or a variable name of the series."""

    def __init__(self, src: Any, ds: Any) -> None:
        self._path: Path | None = None
        self._array: np.ndarray | None = None
        h, w, crs, transform = series_grid(ds)
        if isinstance(src, (str, Path)) and not (isinstance(src, str) and src in ds.data_vars):
            import rasterio

            p = Path(src)
            if not p.exists():
                raise InputError(f"field raster not found: {p}")
            with rasterio.open(p) as f:
                same = (f.height, f.width) == (h, w) and f.count == 1 and (
                    crs is None or f.crs is None or (f.crs == crs and f.transform.almost_equals(transform)))
            if not same:
                raise InputError(f"field raster {p.name} must be one band on the series grid ({w}x{h} px, same CRS "
                                 "and transform)")
            self._path = p
        else:
            self._array = grid_raster(src, ds, "field raster")[0]

    def read(self, ys: slice, xs: slice) -> np.ndarray:
        if self._array is not None:
            return self._array[ys, xs].astype(np.int64)
        import rasterio
        from rasterio.windows import Window

        with rasterio.open(self._path) as f:  # opened per block: nothing stays open if the run fails
            a = f.read(1, window=Window(xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start))
            nodata = f.nodata
        if a.dtype.kind == "f":
            a = np.where(np.isfinite(a), a, 0)
        if nodata is not None and np.isfinite(nodata):
            a = np.where(a == nodata, 0, a)
        if (a < 0).any():
            raise InputError("the field raster holds negative ids")
        return a.astype(np.int64)


# -- explanation -----------------------------------------------------------------------------------------------------
def saliency(net: Any, x: np.ndarray, device: Any, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Capsule lengths (N, K), gradient×input saliency over time (N, F, T) and over rFFT frequency bins
    (N, F, T//2+1) of the predicted class's capsule length, for standardised inputs ``x`` (N, F, T).

    The series is rebuilt from its orthonormal real FFT, ``x = irfft(X)``, so one backward pass gives both the
    time-domain gradient and the gradient with respect to the real and imaginary part of every bin; the bin
    saliency is Re X·∂L/∂Re X + Im X·∂L/∂Im X (gradient×input in the frequency domain)."""
    import torch

    lengths, sal_t, sal_f = [], [], []
    t = x.shape[-1]
    for s in range(0, len(x), chunk):
        xb = torch.from_numpy(np.ascontiguousarray(x[s : s + chunk], dtype=np.float32)).to(device)
        spec = torch.fft.rfft(xb, dim=-1, norm="ortho")
        re = spec.real.clone().requires_grad_(True)
        im = spec.imag.clone().requires_grad_(True)
        xt = torch.fft.irfft(torch.complex(re, im), n=t, dim=-1, norm="ortho")
        xt.retain_grad()
        ln = net(xt)
        pred = ln.argmax(1)
        ln.gather(1, pred[:, None]).sum().backward()
        lengths.append(ln.detach().float().cpu().numpy())
        sal_t.append((xt.grad * xt).detach().cpu().numpy())
        sal_f.append((re.grad * re + im.grad * im).detach().cpu().numpy())
    if not lengths:
        empty = np.zeros((0,) + x.shape[1:], np.float32)
        return np.zeros((0, 0), np.float32), empty, np.zeros((0, x.shape[1], t // 2 + 1), np.float32)
    return np.concatenate(lengths), np.concatenate(sal_t), np.concatenate(sal_f)


class ExplanationSummary:
    """Per predicted class: pixel count, summed capsule lengths, summed |saliency| over (feature, date) and
    (feature, frequency bin)."""

    def __init__(self, k: int, f: int, t: int) -> None:
        self.count = np.zeros(k, np.int64)
        self.lengths = np.zeros((k, k))
        self.time = np.zeros((k, f, t))
        self.freq = np.zeros((k, f, t // 2 + 1))

    def add(self, pred: np.ndarray, lengths: np.ndarray, sal_t: np.ndarray, sal_f: np.ndarray) -> None:
        k = self.count.size
        self.count += np.bincount(pred, minlength=k)[:k]
        for c in np.unique(pred):
            m = pred == c
            self.lengths[c] += lengths[m].sum(0)
            self.time[c] += np.abs(sal_t[m]).sum(0)
            self.freq[c] += np.abs(sal_f[m]).sum(0)

    def to_dict(self, names: Sequence[str], features: Sequence[str], grid: Sequence[str], step_days: int,
                top: int = 5) -> dict[str, Any]:
        t = len(grid)
        season = t * step_days
        bins = [{"bin": b, "cycles_per_season": b, "period_days": (round(season / b, 1) if b else None)}
                for b in range(t // 2 + 1)]
        thirds = np.array_split(np.arange(1, t // 2 + 1), 3)
        out: dict[str, Any] = {}
        for c, name in enumerate(names):
            n = int(self.count[c])
            if n == 0:
                out[name] = {"pixels": 0}
                continue
            st, sf = self.time[c] / n, self.freq[c] / n
            tot = max(st.sum(), 1e-12)
            flat = np.argsort(st.ravel())[::-1][:top]
            fsum = sf.sum(0)
            band_share = {lab: float(fsum[idx].sum() / max(fsum.sum(), 1e-12))
                          for lab, idx in zip(("low", "mid", "high"), thirds)}
            band_share["dc"] = float(fsum[0] / max(fsum.sum(), 1e-12))
            out[name] = {
                "pixels": n,
                "mean_capsule_lengths": {nm: float(v) for nm, v in zip(names, self.lengths[c] / n)},
                "feature_share": {f: float(st[i].sum() / tot) for i, f in enumerate(features)},
                "top_dates": [{"date": grid[j % t], "feature": features[j // t], "saliency": float(st.ravel()[j])}
                              for j in flat],
                "date_saliency": {f: [float(v) for v in st[i]] for i, f in enumerate(features)},
                "frequency_saliency": {f: [float(v) for v in sf[i]] for i, f in enumerate(features)},
                "frequency_band_share": band_share,
            }
        return {
            "method": "gradient x input of the predicted class-capsule length w.r.t. the standardised filter "
                      "features (per date), and w.r.t. the real/imaginary parts of their orthonormal rFFT "
                      "(per frequency bin); mean absolute value over the pixels predicted as each class",
            "features": list(features), "grid_dates": list(grid), "step_days": step_days,
            "frequency_bins": bins, "classes": out,
        }


def write_explanation_png(summary: dict[str, Any], path: Path) -> Path:
    """One row per class: date × feature saliency heat map (left) and saliency per frequency bin (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [(n, d) for n, d in summary["classes"].items() if d.get("pixels")]
    feats, grid = summary["features"], summary["grid_dates"]
    rows = max(1, len(classes))
    fig, axes = plt.subplots(rows, 2, figsize=(12, 2.2 * rows + 0.8), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1.3]})
    ticks = list(range(0, len(grid), max(1, len(grid) // 8)))
    for r, (name, d) in enumerate(classes):
        a = np.array([d["date_saliency"][f] for f in feats])
        ax = axes[r, 0]
        ax.imshow(a, aspect="auto", cmap="magma", interpolation="nearest")
        ax.set_yticks(range(len(feats)), feats)
        ax.set_xticks(ticks, [grid[i][5:] for i in ticks], fontsize=7)
        ax.set_title(f"{name} ({d['pixels']} px): saliency per date", fontsize=9)
        ax2 = axes[r, 1]
        nb = len(next(iter(d["frequency_saliency"].values())))
        width = 0.8 / max(1, len(feats))
        for i, f in enumerate(feats):
            ax2.bar(np.arange(nb) + i * width, d["frequency_saliency"][f], width=width, label=f)
        ax2.set_title("per frequency bin (cycles/season)", fontsize=9)
        ax2.tick_params(labelsize=7)
        if r == 0:
            ax2.legend(fontsize=7)
    if not classes:
        axes[0, 0].text(0.5, 0.5, "no classified pixel", ha="center")
    fig.tight_layout()
    return save_png(fig, path)


def date_legend(grid: Sequence[str]):
    """A legend naming values 1..T by grid date, coloured along viridis (early purple, late yellow)."""
    import matplotlib

    from hsikit.io.legend import Legend

    cmap = matplotlib.colormaps["viridis"]
    cols = [matplotlib.colors.to_hex(cmap(i / max(1, len(grid) - 1))) for i in range(len(grid))]
    return Legend.from_names(list(grid), cols)


# -- the pipeline ----------------------------------------------------------------------------------------------------
def default_block(ds: Any, fallback: int = 256, cap: int = 256) -> int:
    """Block size in pixels: the series' dask chunk on y/x (so each chunk is read once), at most ``cap``;
    ``fallback`` for in-memory series."""
    for v in ("reflectance", *ds.data_vars):
        if v in ds.data_vars and "time" in ds[v].dims and ds[v].chunks and "y" in ds[v].dims and "x" in ds[v].dims:
            a = ds[v]
            return int(min(cap, max(8, min(a.chunks[a.dims.index("y")][0], a.chunks[a.dims.index("x")][0]))))
    return fallback


def output_paths(out: Path, *, png: bool, explain: bool, fields: bool) -> dict[str, Path]:
    """Every file a stress run writes, keyed by role."""
    p = {"class_map": out, "qml": out.with_suffix(".qml"), "lengths": out.with_name(out.stem + "_lengths.tif")}
    if png:
        p["png"] = out.with_suffix(".png")
    if explain:
        p["explanation"] = out.with_name(out.stem + "_explanation.json")
        p["explanation_png"] = out.with_name(out.stem + "_explanation.png")
        p["date_map"] = out.with_name(out.stem + "_date.tif")
    if fields:
        p["field_map"] = out.with_name(out.stem + "_fields.tif")
    return p


def load_stress_model(model: str | Path):
    """(network, metadata, filter) of an FFDNN stress checkpoint."""
    from hsikit.checkpoint import load_checkpoint
    from hsikit.timeseries.filter import PhotochemicalFilter

    net, meta = load_checkpoint(Path(model), device="cpu")
    if meta.task != "stress":
        raise InputError(f"{Path(model).name} is a {meta.task} model, not a crop-stress model (hsikit train stress)")
    if not meta.preprocessing:
        raise InputError(f"{Path(model).name} has no filter settings in its metadata")
    filt = PhotochemicalFilter.from_dict(meta.preprocessing)
    if not filt.fitted:
        raise InputError(f"{Path(model).name}: the filter statistics are missing from its metadata")
    return net, meta, filt


@dataclass
class StressScene:
    """A series checked against a stress model: its grid, the block size, the resolved filter and the season
    grid (``dates`` as ISO strings), the bands and variables read, the model's classes and legend, and the field
    ids (None: no field map)."""

    ds: Any
    name: str
    height: int
    width: int
    crs: Any
    transform: Any
    block: int
    filt: Any
    grid: np.ndarray
    dates: list[str]
    bands: list[str]
    variables: list[str]
    names: list[str]
    legend: Any
    field_ids: FieldIds | None = None


def open_stress_series(series: Any, reader: Reader | None, net: Any, meta: Any, filt: Any, *, block: int | None,
                       season_start: str | None, explain: bool, fields: Any) -> StressScene:
    """Open ``series`` and check it against the model (bands on every date, the length of the season grid); the
    warnings raised on the way are shown only once every check has passed (:func:`warnings_after_checks`)."""
    from hsikit.io.legend import Legend
    from hsikit.timeseries.filter import season_grid, series_variables

    with warnings_after_checks():
        ds, name = open_series_input(series, reader)
        h, w, crs, transform = series_grid(ds)
        block = int(block) if block is not None else default_block(ds)
        if crs is None:
            from hsikit.io.writer import note_no_crs_reported

            warnings.warn(f"{name} has no CRS: outputs are written on its pixel grid without georeferencing",
                          stacklevel=3)
            note_no_crs_reported(w, h, transform)  # the outputs' writers need not say it again
        variables = series_variables(ds)
        band_names = [str(b) for b in ds["band"].values] if "band" in ds.coords else []
        nir = filt.cfg.nir
        try:
            filt.resolve(band_names, variables)
        except BandMismatchError:
            check_bands_on_every_date(ds, filt, nir, band_names, variables)
            raise
        if season_start is not None:
            filt.cfg.season_start = season_start
        grid = season_grid(np.asarray(ds["time"].values), filt.cfg)
        bands, var_read = filt.needed_bands(variables), filt.needed_variables(variables)
        names = list(meta.class_names or [f"class_{i + 1}" for i in range(net.cfg.num_classes)])
        t = len(grid)
        if net.cfg.length != t:
            raise InputError(f"the model expects T = {net.cfg.length} grid dates, its filter gives {t}")
        if explain and t > 254:
            raise OptionError(f"the date map holds at most 254 grid dates, the model has {t}; use --no-explain")
        legend = Legend.from_names(names, meta.class_colors)
        field_ids = FieldIds(fields, ds) if fields is not None else None
    return StressScene(ds, name, h, w, crs, transform, block, filt, grid, [str(g) for g in grid], bands, var_read,
                       names, legend, field_ids)


def stress_tags(scene: StressScene, meta: Any, model_path: Path, command: str | None) -> dict[str, str]:
    """The provenance tags of every raster a stress run writes."""
    from hsikit.checkpoint import checkpoint_sha256
    from hsikit.pipelines.common import provenance_tags

    return provenance_tags(
        scene=SimpleNamespace(name=scene.name), command=command, model=meta.arch,
        checkpoint_sha256=checkpoint_sha256(model_path), bands_used=scene.bands + scene.variables,
        normalization="FFDNN photochemical filter, z-score with the checkpoint's training statistics",
        tile={"block": int(scene.block)},
        extra={"HSIKIT_CLASS_OFFSET": "1", "HSIKIT_TIME_GRID": json.dumps(scene.dates),
               "HSIKIT_FEATURES": json.dumps(list(scene.filt.cfg.features))},
    )


@dataclass
class StressTotals:
    """What the block loop adds up: pixels per class value (0 = nodata), classified pixels, the capsule-length
    sums and pixel counts per field id, and the explanation summary (None: no explanation)."""

    counts: np.ndarray
    field_sum: np.ndarray
    field_n: np.ndarray
    summary: ExplanationSummary | None = None
    classified: int = 0

    @classmethod
    def start(cls, k: int, features: int, t: int, explain: bool) -> "StressTotals":
        return cls(np.zeros(k + 1, np.int64), np.zeros((1, k)), np.zeros(1, np.int64),
                   ExplanationSummary(k, features, t) if explain else None)

    def add_fields(self, fid: np.ndarray, lengths: np.ndarray) -> None:
        """Add the capsule lengths of classified pixels to the sums of their field ids."""
        top = int(fid.max()) + 1
        if top > self.field_n.size:  # ids are only known block by block
            grow = top - self.field_n.size
            self.field_sum = np.concatenate([self.field_sum, np.zeros((grow, self.field_sum.shape[1]))])
            self.field_n = np.concatenate([self.field_n, np.zeros(grow, np.int64)])
        np.add.at(self.field_sum, fid, lengths)
        np.add.at(self.field_n, fid, 1)

    def field_classes(self) -> np.ndarray:
        """Class value (1..K) per field id: the class of its mean capsule lengths; 0 for id 0 and for fields
        without a classified pixel."""
        cls = np.zeros(self.field_n.size, np.uint8)
        has = self.field_n > 0
        cls[has] = (self.field_sum[has].argmax(1) + 1).astype(np.uint8)
        cls[0] = 0
        return cls

    def class_counts(self, names: Sequence[str]) -> dict[str, int]:
        return {"nodata": int(self.counts[0]), **{names[i]: int(self.counts[i + 1]) for i in range(len(names))}}


def classify_block(net: Any, scene: StressScene, blk: Any, ys: slice, xs: slice, totals: StressTotals, *,
                   device: Any, explain: bool, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Class values (uint8, 0 = not classified), capsule lengths (K, N) and most influential grid date (uint8,
    1..T) of the N pixels of one block, added to ``totals``; and the number of pixels classified."""
    import torch

    from hsikit.timeseries.filter import filter_in_chunks
    from hsikit.training.stress import predict_lengths

    filt, k, t = scene.filt, len(scene.names), len(scene.grid)
    hh, ww = blk.shape
    keep = np.zeros(hh * ww, bool)
    x = np.zeros((hh * ww, filt.num_features, t), np.float32)
    for sl, fb in filter_in_chunks(filt, blk, scene.grid):  # bounds the filter's temporaries
        keep[sl], x[sl] = fb.keep, fb.x
    lab = np.zeros(hh * ww, np.uint8)
    lens = np.full((k, hh * ww), np.nan, np.float32)
    dmap = np.zeros(hh * ww, np.uint8)
    idx = np.flatnonzero(keep)
    if idx.size:
        xk = x[idx]
        if explain:
            with torch.enable_grad():
                # backward passes keep the routing tensors: smaller chunks bound the memory
                ln, st, sf = saliency(net, xk, device, chunk=max(1, int(batch_size) // 8))
            pred = ln.argmax(1)
            totals.summary.add(pred, ln, st, sf)
            dmap[idx] = (np.abs(st).sum(1).argmax(1) + 1).astype(np.uint8)
        else:
            ln = predict_lengths(net, xk, device, chunk=int(batch_size))
            pred = ln.argmax(1)
        lab[idx] = (pred + 1).astype(np.uint8)
        lens[:, idx] = ln.T
        if scene.field_ids is not None:
            totals.add_fields(scene.field_ids.read(ys, xs).ravel()[idx], ln)
    totals.counts += np.bincount(lab, minlength=k + 1)[: k + 1]
    totals.classified += int(idx.size)
    return lab, lens, dmap, int(idx.size)


def write_maps(net: Any, scene: StressScene, paths: dict[str, Path], common: dict[str, Any], totals: StressTotals,
               *, device: Any, explain: bool, batch_size: int, progress: bool) -> tuple[list, Any]:
    """Classify the series block by block into the class map, the capsule lengths and (``explain``) the date
    map; returns the block plan and the dates' coverage (:class:`hsikit.timeseries.filter.DateCoverage`)."""
    import rasterio
    from rasterio.windows import Window

    from hsikit.io.writer import RasterWriter
    from hsikit.progress import Progress
    from hsikit.timeseries.filter import DateCoverage, blocks, read_block

    k = len(scene.names)
    plan = blocks(scene.width, scene.height, int(scene.block))
    cover = DateCoverage(int(scene.ds.sizes["time"]), scene.bands + scene.variables)
    with ExitStack() as stack:
        # GDAL's block cache (default 5 % of RAM) would otherwise grow with the scene until full
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB))
        cls_w = stack.enter_context(RasterWriter(paths["class_map"], count=1, dtype="uint8", nodata=0,
                                                 kind="categorical", legend=scene.legend, band_descriptions=["class"],
                                                 **common))
        len_w = stack.enter_context(RasterWriter(paths["lengths"], count=k, dtype="float32", nodata=float("nan"),
                                                 kind="continuous",
                                                 band_descriptions=[f"length({n})" for n in scene.names], **common))
        date_w = None
        if explain:
            date_w = stack.enter_context(RasterWriter(paths["date_map"], count=1, dtype="uint8", nodata=0,
                                                      kind="categorical", legend=date_legend(scene.dates),
                                                      band_descriptions=["most influential date"], **common))
        bar = stack.enter_context(Progress(progress, len(plan), scene.name))
        for ys, xs in plan:
            blk = read_block(scene.ds, ys, xs, scene.bands, scene.variables, scene.filt.cfg.cloud_scl)
            cover.add(blk)
            hh, ww = blk.shape
            lab, lens, dmap, n = classify_block(net, scene, blk, ys, xs, totals, device=device, explain=explain,
                                                batch_size=batch_size)
            win = Window(xs.start, ys.start, ww, hh)
            cls_w.write(lab.reshape(1, hh, ww), win)
            len_w.write(lens.reshape(k, hh, ww), win)
            if date_w is not None:
                date_w.write(dmap.reshape(1, hh, ww), win)
            bar.advance(pixels=hh * ww, skipped=n == 0)
    return plan, cover


def write_field_map(scene: StressScene, totals: StressTotals, plan: list, path: Path, common: dict[str, Any]) -> Path:
    """The field map: every pixel of a field gets the class of the field's mean capsule lengths."""
    from rasterio.windows import Window

    from hsikit.io.writer import RasterWriter

    field_cls = totals.field_classes()
    with RasterWriter(path, count=1, dtype="uint8", nodata=0, kind="categorical", legend=scene.legend,
                      band_descriptions=["class of field"], **common) as fw:
        for ys, xs in plan:
            f = scene.field_ids.read(ys, xs)
            f = np.where(f < field_cls.size, f, 0)  # fields without any classified pixel
            fw.write(field_cls[f][None], Window(xs.start, ys.start, f.shape[1], f.shape[0]))
    return path


def write_explanation(summary: ExplanationSummary, scene: StressScene, meta: Any, paths: dict[str, Path],
                      command: str | None) -> None:
    """The explanation JSON and its PNG."""
    from hsikit._version import __version__
    from hsikit.io.atomic import atomic_outputs

    d = summary.to_dict(scene.names, list(scene.filt.cfg.features), scene.dates, int(scene.filt.cfg.step_days))
    d.update({"model": meta.arch, "series": scene.name, "hsikit_version": __version__, "command": command})
    with atomic_outputs([paths["explanation"]], overwrite=True) as t:  # checked with the other outputs
        t[paths["explanation"]].write_text(json.dumps(d, indent=2) + "\n")
    write_explanation_png(d, paths["explanation_png"])


def stress(
    series: Any,
    *,
    out: str | Path,
    model: str | Path,
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
    png: bool = True,
    explain: bool = True,
    fields: Any = None,
    season_start: str | None = None,
    block: int | None = None,
    batch_size: int = 8192,
    device: str = "auto",
    fmt: str = "cog",
    reader: Reader | None = None,
) -> StressResult:
    """Map crop stress over ``series`` (path(s) read by ``reader`` / :func:`hsikit.io.timeseries.open_series`,
    or a Dataset in that layout) with the FFDNN checkpoint ``model``.

    Writes ``out``: uint8 class map (0 = nodata / cloud all season / non-vegetation, classes 1..K with the
    model's names and colours, ``.qml`` style); ``<out>_lengths.tif``: float32 class-capsule length per class;
    with ``png`` ``<out>.png``; with ``explain`` ``<out>_explanation.json`` and ``.png`` (per class: which
    dates, features and frequency bins drove the decision, as mean |gradient×input|) and ``<out>_date.tif``,
    the most influential grid date per pixel (values 1..T named by date). ``fields`` (raster/array of field ids
    on the series grid) adds ``<out>_fields.tif``: each field gets the class of its mean capsule lengths.
    The series is read lazily, ``block``×``block`` pixels at a time, so memory does not grow with the scene.
    ``season_start`` ("MM-DD" or ISO date) overrides the model's season window start.
    """
    from hsikit.engine.torch_predict import resolve_device
    from hsikit.io.atomic import output_group
    from hsikit.io.outputs import check_outputs, check_suffix
    from hsikit.io.quicklook import read_decimated, save_class_quicklook

    t0 = time.perf_counter()
    out = Path(out)
    check_format(fmt)
    if block is not None and int(block) < 8:
        raise OptionError(f"block must be at least 8 px, not {block}")
    paths = output_paths(check_suffix(out), png=png, explain=explain, fields=fields is not None)
    check_outputs({role.replace("_", " "): p for role, p in paths.items()}, overwrite)
    model_path = Path(model)
    net, meta, filt = load_stress_model(model_path)
    scene = open_stress_series(series, reader, net, meta, filt, block=block, season_start=season_start,
                               explain=explain, fields=fields)
    dev = resolve_device(device)
    net = net.to(dev).eval()
    for prm in net.parameters():
        prm.requires_grad_(False)
    common = dict(width=scene.width, height=scene.height, crs=scene.crs, transform=scene.transform,
                  overwrite=overwrite, tags=stress_tags(scene, meta, model_path, command), fmt=fmt)
    totals = StressTotals.start(len(scene.names), filt.num_features, len(scene.grid), explain)
    with output_group() as group:  # every output appears together when all are done, or none
        plan, cover = write_maps(net, scene, paths, common, totals, device=dev, explain=explain,
                                 batch_size=batch_size, progress=progress)
        off_grid = np.asarray(scene.ds["off_grid"].values, bool) if "off_grid" in scene.ds.coords else None
        for note in cover.notes(date_labels(scene.ds), skip=off_grid):
            warnings.warn(note, stacklevel=2)
        res = StressResult(class_map=paths["class_map"], qml=paths["qml"], lengths=paths["lengths"],
                           blocks=len(plan), pixels=scene.height * scene.width, classified=totals.classified,
                           grid=scene.dates)
        if scene.field_ids is not None:
            res.field_map = write_field_map(scene, totals, plan, paths["field_map"], common)
        if explain:
            write_explanation(totals.summary, scene, meta, paths, command)
            res.explanation, res.explanation_png = paths["explanation"], paths["explanation_png"]
            res.date_map = paths["date_map"]
        if png:
            save_class_quicklook(read_decimated(group.staged(paths["class_map"])), scene.legend, paths["png"])
            res.png = paths["png"]
    res.class_counts = totals.class_counts(scene.names)
    res.seconds = time.perf_counter() - t0
    return res
