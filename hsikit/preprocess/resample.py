"""Spectral resampling between sensors from Gaussian spectral response functions."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from hsikit.errors import BandMismatchError

_FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))


def gaussian_srf(grid: np.ndarray, center: float, fwhm: float) -> np.ndarray:
    s = fwhm * _FWHM_TO_SIGMA
    return np.exp(-0.5 * ((grid - center) / s) ** 2)


def _source_width(src: np.ndarray, src_fwhm: Sequence[float] | None) -> np.ndarray:
    if src_fwhm is not None:
        return np.asarray(src_fwhm, dtype=np.float64)
    if src.size == 1:
        return np.array([10.0])
    gaps = np.diff(src)
    # the smaller neighbour spacing, so a band beside a removed range does not stretch over the gap
    return np.concatenate([[gaps[0]], np.minimum(gaps[1:], gaps[:-1]), [gaps[-1]]])


def _grid(src, sfw, dst, dfw, step) -> np.ndarray:
    lo = min(src.min() - 3 * sfw.max(), dst.min() - 3 * dfw.max())
    hi = max(src.max() + 3 * sfw.max(), dst.max() + 3 * dfw.max())
    return np.arange(lo, hi + step, step)


def target_coverage(src_wl, src_fwhm, dst_wl, dst_fwhm, *, step: float = 1.0) -> np.ndarray:
    """Fraction (0..1) of each target band's response that falls where some source band responds (> 5 % of its
    peak, i.e. within about 2.4 sigma of a band centre: undersampled spectra still count, real gaps do not)."""
    src, dst = np.asarray(src_wl, float), np.asarray(dst_wl, float)
    sfw, dfw = _source_width(src, src_fwhm), np.asarray(dst_fwhm, float)
    grid = _grid(src, sfw, dst, dfw, step)
    covered = np.stack([gaussian_srf(grid, c, f) for c, f in zip(src, sfw)]).max(axis=0) > 0.05
    t = np.stack([gaussian_srf(grid, c, f) for c, f in zip(dst, dfw)])
    return (t * covered).sum(axis=1) / t.sum(axis=1)


def resampling_matrix(
    src_wl: Sequence[float],
    src_fwhm: Sequence[float] | None,
    dst_wl: Sequence[float],
    dst_fwhm: Sequence[float],
    *,
    step: float = 1.0,
    min_coverage: float = 0.9,
) -> np.ndarray:
    """Weights ``(n_dst, n_src)`` with rows summing to 1: target band = weights @ source spectrum.

    Each source band is taken as a Gaussian of its FWHM (when FWHM is unknown, as wide as the spacing to its
    nearer neighbour); the source responses are normalised to a partition of unity, and a target band's weight on a
    source band is the integral of the target response times that band's share. A target band whose response
    is covered by source bands for less than ``min_coverage`` (e.g. it falls in a dropped water-vapour gap) is an
    error; use :func:`target_coverage` to choose the bands that can be made.
    """
    src, dst = np.asarray(src_wl, float), np.asarray(dst_wl, float)
    sfw, dfw = _source_width(src, src_fwhm), np.asarray(dst_fwhm, float)
    cov = target_coverage(src, sfw, dst, dfw, step=step)
    bad = [f"{c:.0f} nm" for c, v in zip(dst, cov) if v < min_coverage]
    if bad:
        raise BandMismatchError(
            f"target band(s) at {', '.join(bad)} are not covered by the source bands ({src.min():.0f}-{src.max():.0f} nm)"
        )
    grid = _grid(src, sfw, dst, dfw, step)
    share = np.stack([gaussian_srf(grid, c, f) for c, f in zip(src, sfw)])
    share /= share.sum(axis=0, keepdims=True).clip(min=1e-300)
    w = np.stack([share @ gaussian_srf(grid, c, f) for c, f in zip(dst, dfw)])
    return w / w.sum(axis=1, keepdims=True)
