"""Image-quality metrics for restored hyperspectral cubes, with the conventions of the papers hsikit follows.

All functions take a reference and an estimate of the same shape, ``(C, H, W)`` band first (a 2-D
``(H, W)`` array is treated as one band), and compute in float64:

- :func:`psnr`: per-band PSNR (``10 log10(range² / MSE_b)``), mean over bands (MPSNR);
- :func:`ssim`: per-band SSIM exactly as ``skimage.metrics.structural_similarity(data_range=..., win_size=7)``
  (uniform 7x7 window, K1 0.01, K2 0.03, sample covariance, border of 3 pixels excluded), mean over bands;
- :func:`sam`: mean spectral angle, degrees by default (SSPSR convention; HSDT tables are in radians);
- :func:`ergas`: ``(100 / scale) * sqrt(mean_b(MSE_b / mu_b²))``, mu_b the reference band mean;
- :func:`rmse` over the whole cube and :func:`cc`, the mean per-band Pearson correlation.

``valid`` (an (H, W) bool array, True = pixel counts) restricts psnr/sam/ergas/rmse/cc to valid pixels, e.g.
to skip nodata; SSIM always uses the whole image (its sliding window has no notion of holes).
:func:`quality_report` bundles them and implements the band-completion and clipping conventions.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter

from hsikit.errors import OptionError

__all__ = ["cc", "ergas", "per_band_psnr", "psnr", "quality_report", "rmse", "sam", "ssim"]


def _pair(ref: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(ref, dtype=np.float64)
    b = np.asarray(est, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if b.ndim == 2:
        b = b[None]
    if a.ndim != 3 or a.shape != b.shape:
        raise OptionError(
            f"reference and estimate must be (bands, rows, cols) cubes of the same shape, got "
            f"{np.shape(ref)} and {np.shape(est)}"
        )
    return a, b


def _valid(valid: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray | None:
    if valid is None:
        return None
    v = np.asarray(valid, dtype=bool)
    if v.shape != shape[1:]:
        raise OptionError(f"valid mask must have shape {shape[1:]} (rows, cols), got {v.shape}")
    if not v.any():
        raise OptionError("valid mask excludes every pixel")
    return v


def _band_pixels(a: np.ndarray, v: np.ndarray | None) -> np.ndarray:
    """(C, N) matrix of the valid pixels of every band."""
    flat = a.reshape(a.shape[0], -1)
    return flat if v is None else flat[:, v.ravel()]


def _band_mse(a: np.ndarray, b: np.ndarray, v: np.ndarray | None) -> np.ndarray:
    return np.mean((_band_pixels(a, v) - _band_pixels(b, v)) ** 2, axis=1)


def per_band_psnr(
    ref: np.ndarray, est: np.ndarray, data_range: float = 1.0, valid: np.ndarray | None = None
) -> np.ndarray:
    """PSNR of every band in dB, shape (C,); a perfect band is ``inf``."""
    a, b = _pair(ref, est)
    mse = _band_mse(a, b, _valid(valid, a.shape))
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(float(data_range) ** 2 / mse)


def psnr(ref: np.ndarray, est: np.ndarray, data_range: float = 1.0, valid: np.ndarray | None = None) -> float:
    """Mean over bands of the per-band PSNR (dB).

    Perfect bands (MSE 0, PSNR inf) are left out of the mean so one exact band does not make the score
    infinite; the result is ``inf`` only when every band is perfect.
    """
    values = per_band_psnr(ref, est, data_range, valid)
    finite = np.isfinite(values)
    if not finite.any():
        return float("inf")
    return float(values[finite].mean())


def ssim(ref: np.ndarray, est: np.ndarray, data_range: float = 1.0) -> float:
    """Mean over bands of the per-band SSIM, identical to skimage's ``structural_similarity`` with
    ``data_range`` given, ``win_size=7`` and its other defaults (computed in float64). Whole image always."""
    a, b = _pair(ref, est)
    win = 7
    if a.shape[1] < win or a.shape[2] < win:
        raise OptionError(f"SSIM needs images of at least {win}x{win} pixels, got {a.shape[1]}x{a.shape[2]}")
    size = (1, win, win)  # 1 along the band axis: every band is filtered on its own
    filt = lambda img: uniform_filter(img, size=size, mode="reflect")  # noqa: E731
    ux, uy = filt(a), filt(b)
    cov_norm = win * win / (win * win - 1.0)  # sample covariance
    vx = cov_norm * (filt(a * a) - ux * ux)
    vy = cov_norm * (filt(b * b) - uy * uy)
    vxy = cov_norm * (filt(a * b) - ux * uy)
    c1 = (0.01 * float(data_range)) ** 2
    c2 = (0.03 * float(data_range)) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[:, pad:-pad, pad:-pad].mean(axis=(1, 2)).mean())


def sam(ref: np.ndarray, est: np.ndarray, radians: bool = False, valid: np.ndarray | None = None) -> float:
    """Mean spectral angle between reference and estimate spectra, in degrees (radians if asked).

    Pixels where either spectrum has zero norm are skipped (SSPSR convention); ``nan`` if none is left.
    """
    a, b = _pair(ref, est)
    v = _valid(valid, a.shape)
    pa, pb = _band_pixels(a, v), _band_pixels(b, v)
    na, nb = np.linalg.norm(pa, axis=0), np.linalg.norm(pb, axis=0)
    keep = (na > 0) & (nb > 0)
    if not keep.any():
        return float("nan")
    cos = np.sum(pa[:, keep] * pb[:, keep], axis=0) / (na[keep] * nb[keep])
    angle = float(np.mean(np.arccos(np.clip(cos, -1.0, 1.0))))
    return angle if radians else float(np.degrees(angle))


def ergas(ref: np.ndarray, est: np.ndarray, scale: int = 1, valid: np.ndarray | None = None) -> float:
    """ERGAS = (100 / scale) * sqrt(mean_b(MSE_b / mu_b²)), mu_b the mean of reference band b.

    ``scale`` is the resolution ratio (1 for denoising, s for x s super-resolution). Bands whose reference
    mean is 0 (ratio undefined) are left out; ``nan`` if none is left.
    """
    if scale <= 0:
        raise OptionError(f"ERGAS scale must be > 0, got {scale}")
    a, b = _pair(ref, est)
    v = _valid(valid, a.shape)
    mse = _band_mse(a, b, v)
    mu2 = np.mean(_band_pixels(a, v), axis=1) ** 2
    keep = mu2 > 0
    if not keep.any():
        return float("nan")
    return float(100.0 / scale * np.sqrt(np.mean(mse[keep] / mu2[keep])))


def rmse(ref: np.ndarray, est: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Root-mean-square error over all (valid) voxels of the cube."""
    a, b = _pair(ref, est)
    return float(np.sqrt(np.mean(_band_mse(a, b, _valid(valid, a.shape)))))


def cc(ref: np.ndarray, est: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean over bands of the Pearson correlation between reference and estimate band.

    Bands where either image is constant (correlation undefined) are left out; ``nan`` if none is left.
    """
    a, b = _pair(ref, est)
    v = _valid(valid, a.shape)
    pa, pb = _band_pixels(a, v), _band_pixels(b, v)
    da = pa - pa.mean(axis=1, keepdims=True)
    db = pb - pb.mean(axis=1, keepdims=True)
    denom = np.sqrt(np.sum(da * da, axis=1) * np.sum(db * db, axis=1))
    keep = denom > 0
    if not keep.any():
        return float("nan")
    return float(np.mean(np.sum(da * db, axis=1)[keep] / denom[keep]))


def quality_report(
    ref: np.ndarray,
    est: np.ndarray,
    *,
    scale: int = 1,
    data_range: float = 1.0,
    mask: np.ndarray | None = None,
    clip: bool = False,
    valid: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics as a dict with keys psnr, ssim, sam (degrees), ergas, rmse, cc.

    - ``mask``: a bool (C, H, W) mask (as returned by the masking degradations) or a (C,) band vector; only the
      bands it touches are scored (band-completion convention: score the zeroed bands). A per-voxel
      inpainting mask touches every band, so the whole cube is scored, as MP-HSIR does.
    - ``clip``: clip both cubes to [0, data_range] first (MP-HSIR convention; HSDT does not clip).
    - ``scale``: the ERGAS resolution ratio; ``valid``: (H, W) pixels to score (SSIM ignores it).
    """
    a, b = _pair(ref, est)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape == a.shape:
            bands = m.reshape(m.shape[0], -1).any(axis=1)
        elif m.shape == (a.shape[0],):
            bands = m
        else:
            raise OptionError(f"mask must have shape {a.shape} or ({a.shape[0]},), got {m.shape}")
        if not bands.any():
            raise OptionError("mask selects no band to score")
        a, b = a[bands], b[bands]
    if clip:
        a = np.clip(a, 0.0, data_range)
        b = np.clip(b, 0.0, data_range)
    return {
        "psnr": psnr(a, b, data_range, valid),
        "ssim": ssim(a, b, data_range),
        "sam": sam(a, b, valid=valid),
        "ergas": ergas(a, b, scale, valid),
        "rmse": rmse(a, b, valid),
        "cc": cc(a, b, valid),
    }
