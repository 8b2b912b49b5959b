"""Classical restoration baselines to compare learned models against (per scene, in-memory cubes).

- :func:`bicubic_upsample`: the standard super-resolution baseline;
- :func:`wavelet_denoise`: per-band BayesShrink wavelet shrinkage (scikit-image);
- :func:`tv_denoise`: per-band total-variation (Chambolle) denoising with a noise-adaptive weight;
- :func:`pca_denoise`: noise-whitened PCA low-rank projection plus wavelet shrinkage of the kept
  component images (a PCA + wavelet hyperspectral denoiser in the spirit of Chen & Qian 2011).

None of them looks at a clean reference: their parameters come from the noisy cube (noise estimates).
Inputs are ``(C, H, W)`` float cubes; outputs are float32 of the same layout.
"""

from __future__ import annotations

import numpy as np

from hsikit.errors import OptionError

__all__ = ["bicubic_upsample", "estimate_band_sigma", "pca_denoise", "tv_denoise", "wavelet_denoise"]


def _cube64(x: np.ndarray) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 3:
        raise OptionError(f"expected a (bands, rows, cols) cube, got an array with shape {a.shape}")
    return a.astype(np.float64)


def _band_sigmas(sigma: float | np.ndarray | None, cube: np.ndarray) -> np.ndarray:
    if sigma is None:
        return estimate_band_sigma(cube)
    values = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (cube.shape[0],)).copy()
    if values.min() < 0:
        raise OptionError("noise sigma must be >= 0")
    return values


def estimate_band_sigma(x: np.ndarray) -> np.ndarray:
    """Noise standard deviation of every band, (C,), by skimage's wavelet MAD estimator (Donoho)."""
    from skimage.restoration import estimate_sigma

    cube = _cube64(x)
    return np.array([float(estimate_sigma(band)) for band in cube])


def bicubic_upsample(x: np.ndarray, scale: int) -> np.ndarray:
    """Bicubic up-sampling (C, H, W) -> (C, s*H, s*W) with ``torch`` (``align_corners=False``)."""
    if int(scale) != scale or scale < 1:
        raise OptionError(f"scale must be an integer >= 1, got {scale}")
    import torch
    import torch.nn.functional as F

    cube = np.ascontiguousarray(_cube64(x).astype(np.float32))
    if scale == 1:
        return cube
    t = torch.from_numpy(cube)[None]
    size = (cube.shape[1] * int(scale), cube.shape[2] * int(scale))
    return F.interpolate(t, size=size, mode="bicubic", align_corners=False)[0].numpy().copy()


def wavelet_denoise(x: np.ndarray, sigma: float | np.ndarray | None = None, wavelet: str = "db1") -> np.ndarray:
    """Per-band BayesShrink soft wavelet shrinkage (``skimage.restoration.denoise_wavelet``, rescale_sigma).

    ``sigma``: noise standard deviation (scalar or one per band); None estimates it per band with
    ``skimage.restoration.estimate_sigma``.
    """
    from skimage.restoration import denoise_wavelet

    cube = _cube64(x)
    sigmas = _band_sigmas(sigma, cube)
    out = np.empty_like(cube)
    for b, band in enumerate(cube):
        if sigmas[b] <= 0:
            out[b] = band
            continue
        out[b] = denoise_wavelet(
            band, sigma=float(sigmas[b]), wavelet=wavelet, mode="soft", method="BayesShrink", rescale_sigma=True
        )
    return out.astype(np.float32)


TV_WEIGHT_PER_SIGMA = 1.0


def tv_denoise(x: np.ndarray, weight: float | np.ndarray | None = None) -> np.ndarray:
    """Per-band total-variation denoising (``skimage.restoration.denoise_tv_chambolle``).

    ``weight`` (scalar or one per band; larger = smoother) defaults to ``TV_WEIGHT_PER_SIGMA * sigma_b``
    (factor 1.0) with sigma_b the band's estimated noise sigma: the ROF fidelity term is 1/weight, and a
    weight proportional to the noise level keeps the smoothing scale-free (doubling the data doubles both).
    """
    from skimage.restoration import denoise_tv_chambolle

    cube = _cube64(x)
    if weight is None:
        weights = TV_WEIGHT_PER_SIGMA * estimate_band_sigma(cube)
    else:
        weights = np.broadcast_to(np.asarray(weight, dtype=np.float64), (cube.shape[0],))
        if weights.min() < 0:
            raise OptionError("TV weight must be >= 0")
    out = np.empty_like(cube)
    for b, band in enumerate(cube):
        out[b] = band if weights[b] <= 0 else denoise_tv_chambolle(band, weight=float(weights[b]))
    return out.astype(np.float32)


def _mp_median(gamma: float) -> float:
    """Median of the Marchenko-Pastur law (unit variance, ratio gamma = C / N <= 1), numerically."""
    lo, hi = (1.0 - np.sqrt(gamma)) ** 2, (1.0 + np.sqrt(gamma)) ** 2
    lam = np.linspace(lo, hi, 20001)
    density = np.sqrt(np.clip((hi - lam) * (lam - lo), 0.0, None)) / (2.0 * np.pi * gamma * lam)
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2.0 * np.diff(lam))])
    return float(np.interp(0.5 * cdf[-1], cdf, lam))


def pca_denoise(
    x: np.ndarray,
    rank: int | None = None,
    *,
    denoise_components: bool = True,
    wavelet: str = "db1",
) -> np.ndarray:
    """Low-rank PCA denoiser with wavelet shrinkage of the kept component images.

    1. Estimate each band's noise sigma (wavelet MAD) and divide the centred band by it, so the noise becomes
       roughly white with unit variance in every band (noise-adjusted PCA; this also handles band-dependent
       noise levels).
    2. PCA of the whitened spectra. Without ``rank``, keep the components whose eigenvalue exceeds the
       Marchenko-Pastur upper edge ``v * (1 + sqrt(C / N))**2`` (N = pixels): the largest eigenvalue that white
       noise of variance v produces, so everything above it carries signal. v corrects the per-band sigma
       estimates: median eigenvalue / Marchenko-Pastur median (for C >= 8 and C < N; else v = 1), which
       assumes fewer than C / 2 signal components. At least one component is kept.
    3. Optionally (``denoise_components``, default on) shrink every kept component image with BayesShrink
       wavelet thresholding at the noise sigma sqrt(v) (whitened white noise keeps its variance under an
       orthonormal projection): the kept components still carry noise, most of all the low-energy ones
       (Chen & Qian 2011 shrink the low-energy PCs; dropping those under the noise edge is the limit of
       strong shrinkage).
    4. Project back, undo the whitening and add the band means.
    """
    from skimage.restoration import denoise_wavelet

    cube = _cube64(x)
    c, h, w = cube.shape
    n = h * w
    sig = estimate_band_sigma(cube)
    if sig.max() <= 0:
        return cube.astype(np.float32)
    # a (nearly) noise-free band must not get an enormous whitened variance
    sig = np.maximum(sig, 0.05 * float(np.median(sig[sig > 0])))
    flat = cube.reshape(c, n)
    mean = flat.mean(axis=1, keepdims=True)
    white = (flat - mean) / sig[:, None]
    cov = white @ white.T / max(n - 1, 1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    if rank is None:
        gamma = c / n
        noise_var = 1.0
        if 8 <= c < n:
            # correct the per-band sigma estimates with the bulk of the spectrum: the median eigenvalue of
            # white noise is the Marchenko-Pastur median (assumes the signal rank is below C / 2)
            noise_var = float(np.median(evals)) / _mp_median(gamma)
        edge = noise_var * (1.0 + np.sqrt(gamma)) ** 2
        k = max(1, int(np.sum(evals > edge)))
    else:
        if int(rank) != rank or not 1 <= rank <= c:
            raise OptionError(f"PCA rank must be an integer in 1..{c}, got {rank}")
        k = int(rank)
    basis = evecs[:, :k]
    scores = basis.T @ white  # (k, N)
    if denoise_components:
        images = scores.reshape(k, h, w)
        noise_sigma = float(np.sqrt(noise_var)) if rank is None else 1.0
        for i in range(k):
            images[i] = denoise_wavelet(
                images[i], sigma=noise_sigma, wavelet=wavelet, mode="soft", method="BayesShrink", rescale_sigma=True
            )
        scores = images.reshape(k, n)
    restored = (basis @ scores) * sig[:, None] + mean
    return restored.reshape(c, h, w).astype(np.float32)
