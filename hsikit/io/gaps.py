"""Bands with missing values: find them before a run, fill the ones that are missing almost everywhere.

A pixel counts as invalid when any good band is NaN or nodata (:meth:`Scene.read_valid`). That is right for a
pixel that misses a few values, but a single band that is NaN over the whole scene (a dead detector row, a band a
processor blanked) would make every pixel invalid and the output all nodata. :func:`check_band_gaps` surveys a
sample of the scene first:

- a good band missing in at least half of the sampled non-empty pixels is *filled*: its missing values are
  interpolated per pixel from the nearest usable bands on either side (by wavelength, else by band order) and
  the band no longer decides validity;
- a band missing in fewer pixels keeps deciding: those pixels are written as nodata, and the run says so;
- a scene with no pixel that holds any good band is refused.

What was done is returned as one-line warnings and as an output tag (``HSIKIT_FILLED_BANDS``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field

import numpy as np
from rasterio.windows import Window

from hsikit.errors import InputError

#: a band missing in at least this share of the sampled non-empty pixels is filled instead of voiding them
FILL_SHARE = 0.5
#: partial gaps below this share of the sampled pixels are not worth a warning
WARN_SHARE = 0.01


@dataclass(frozen=True)
class BandFill:
    """Per-pixel linear interpolation of ``bands`` from ``(lower, upper, weight of upper)`` neighbours."""

    bands: tuple[int, ...]
    sources: tuple[tuple[int, int, float], ...]
    shares: tuple[float, ...] = ()

    def needed(self, bands: list[int]) -> list[int]:
        """``bands`` plus the neighbours their filled members are interpolated from, in order."""
        extra = {s for b, (lo, hi, _) in zip(self.bands, self.sources) if b in bands for s in (lo, hi)}
        return sorted(set(bands) | extra)

    def apply(self, data: np.ndarray, bands: list[int], missing) -> np.ndarray:
        """Fill the missing values of every filled band in ``data`` (rows follow ``bands``); ``missing(a)`` gives
        the boolean mask of missing values of an array ``a``. Integer data are rounded into their range."""
        pos = {b: k for k, b in enumerate(bands)}
        out = None
        for b, (lo, hi, w) in zip(self.bands, self.sources):
            if b not in pos:
                continue
            k = pos[b]
            gap = missing(data[k])
            if not gap.any():
                continue
            est = (1.0 - w) * data[pos[lo]].astype(np.float64) + w * data[pos[hi]].astype(np.float64)
            if out is None:
                out = data.copy()
            if np.issubdtype(data.dtype, np.integer):
                info = np.iinfo(data.dtype)
                est = np.clip(np.nan_to_num(np.round(est), nan=0), info.min, info.max)
            out[k][gap] = est[gap].astype(data.dtype)
        return data if out is None else out


@dataclass
class BandGaps:
    """What the survey found: bands filled, bands that void the pixels missing them, sample size."""

    filled: list[tuple[int, float]] = field(default_factory=list)
    partial: list[tuple[int, float]] = field(default_factory=list)
    sampled: int = 0
    nonempty: int = 0


def survey(scene, *, grid: int = 4, size: int = 64) -> BandGaps:
    """Share of sampled non-empty pixels that miss each good band, from ``grid`` x ``grid`` windows of ``size``
    px spread over the scene (the whole scene when it is not larger than the windows together)."""
    good = scene.bands.good_indices() or list(range(scene.count))
    gaps = BandGaps()
    counts = np.zeros(len(good), dtype=np.int64)
    for w in _sample_windows(scene.width, scene.height, grid, size):
        data = scene.read(w, bands=good) if len(good) < scene.count else scene.read(w)
        miss = scene.missing(data)
        mask = scene.dataset_mask(w)
        present = ~miss.all(axis=0) if mask is None else (~miss.all(axis=0) & mask)
        gaps.sampled += int(present.size)
        gaps.nonempty += int(present.sum())
        counts += miss[:, present].sum(axis=1)
    if gaps.nonempty:
        for k, c in enumerate(counts):
            share = float(c) / gaps.nonempty
            if share >= FILL_SHARE:
                gaps.filled.append((good[k], share))
            elif share >= WARN_SHARE:
                gaps.partial.append((good[k], share))
    return gaps


def plan_fill(scene, filled: list[int], shares: tuple[float, ...] = ()) -> BandFill:
    """Interpolation sources of each band in ``filled`` from the nearest good, unfilled bands around it."""
    good = [i for i in (scene.bands.good_indices() or range(scene.count)) if i not in set(filled)]
    pos = np.asarray(scene.bands.wavelengths if scene.bands.wavelengths is not None else range(scene.count), float)
    sources = []
    for b in filled:
        below = [i for i in good if pos[i] < pos[b] or (pos[i] == pos[b] and i < b)]
        above = [i for i in good if pos[i] > pos[b] or (pos[i] == pos[b] and i > b)]
        lo = max(below, key=lambda i: pos[i]) if below else None
        hi = min(above, key=lambda i: pos[i]) if above else None
        lo, hi = (lo if lo is not None else hi), (hi if hi is not None else lo)
        span = pos[hi] - pos[lo]
        sources.append((lo, hi, float((pos[b] - pos[lo]) / span) if span else 0.0))
    return BandFill(tuple(filled), tuple(sources), shares)


def check_band_gaps(scene) -> list[str]:
    """Survey ``scene``, fill the bands missing almost everywhere (``scene.band_fill``), warn about what was done
    and refuse a scene with no valid pixel. Returns the warnings given. Idempotent."""
    if getattr(scene, "_gaps_checked", False):
        return []
    gaps = survey(scene)
    if gaps.nonempty == 0 and not _any_present(scene):
        raise InputError(f"{scene.name} has no valid pixel: every band is NaN{_nodata_text(scene)} everywhere")
    usable = [i for i in (scene.bands.good_indices() or range(scene.count)) if i not in {b for b, _ in gaps.filled}]
    if not usable:
        raise InputError(f"{scene.name} has no usable band: every band is NaN{_nodata_text(scene)} in "
                         "at least half of its pixels")
    notes = []
    if gaps.filled:
        fill = plan_fill(scene, [b for b, _ in gaps.filled], tuple(s for _, s in gaps.filled))
        scene.band_fill = fill
        for (b, share), (lo, hi, _) in zip(gaps.filled, fill.sources):
            src = _describe(scene, lo) if lo == hi else f"{_describe(scene, lo)} and {_describe(scene, hi)}"
            notes.append(f"{scene.name}: {_describe(scene, b)} is missing in {100 * share:.0f} % of pixels: filled "
                         f"by interpolating {src}; results that rely on that band are less reliable")
    for b, share in gaps.partial:
        notes.append(f"{scene.name}: {_describe(scene, b)} is missing in {100 * share:.0f} % of pixels: those "
                     "pixels are written as nodata")
    for n in notes:
        warnings.warn(n, stacklevel=2)
    scene._gaps_checked = True
    return notes


def fill_tags(scene) -> dict[str, str]:
    """``HSIKIT_FILLED_BANDS``: the filled bands (1-based), their missing share and the bands they came from."""
    fill = getattr(scene, "band_fill", None)
    if fill is None:
        return {}
    items = [{"band": b + 1, "name": scene.bands.names[b], "missing_share": round(share, 4),
              "interpolated_from": sorted({lo + 1, hi + 1})}
             for b, (lo, hi, _), share in zip(fill.bands, fill.sources, fill.shares or (1.0,) * len(fill.bands))]
    return {"HSIKIT_FILLED_BANDS": json.dumps(items)}


def _describe(scene, i: int) -> str:
    wl = scene.bands.wavelengths
    return f"band {i + 1} ({wl[i]:.0f} nm)" if wl is not None else f"band {i + 1}"


def _nodata_text(scene) -> str:
    return f" or nodata ({scene.nodata:g})" if scene.nodata is not None and np.isfinite(scene.nodata) else ""


def _sample_windows(width: int, height: int, grid: int, size: int) -> list[Window]:
    if width <= grid * size and height <= grid * size:
        return [Window(0, 0, width, height)]
    w, h = min(size, width), min(size, height)
    xs = np.linspace(0, width - w, grid).round().astype(int)
    ys = np.linspace(0, height - h, grid).round().astype(int)
    return [Window(int(x), int(y), w, h) for y in sorted(set(ys)) for x in sorted(set(xs))]


def _any_present(scene, block: int = 512) -> bool:
    """Whether any pixel of the scene holds a good band (the sample found none; a small valid area may remain)."""
    from hsikit.windows import iter_windows

    good = scene.bands.good_indices() or list(range(scene.count))
    for w in iter_windows(scene.width, scene.height, block):
        if not scene.missing(scene.read(w, bands=good)).all():
            return True
    return False
