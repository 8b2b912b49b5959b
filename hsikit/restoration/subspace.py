"""Training-free subspace denoising of hyperspectral cubes (HySime + FastHyDe-style eigen-image denoising).

1. Noise per band by HySime's multiple regression (Bioucas-Dias & Nascimento 2008): each band is regressed on
   all the others; the residual variance is that band's noise variance. Everything comes from the band
   covariance, so it is accumulated window by window (:class:`CovarianceAccumulator`).
2. The data are noise-whitened (divided by the per-band sigma) so the noise is white with unit variance.
3. Signal subspace (HySime's criterion in the whitened domain): keep the directions whose signal power exceeds
   the noise power, eigenvalue > 2, raised to the Marchenko-Pastur edge ``(1 + sqrt(C/N))**2``: the largest
   sample eigenvalue pure noise reaches with N pixels.
4. Eigen-images (projections onto the kept eigenvectors) still carry white unit-variance noise: each is
   denoised spatially (FastHyDe, Zhuang & Bioucas-Dias 2018, uses BM3D; here non-local means as a pilot, then
   an empirical Wiener filter in sliding 8x8 DCT blocks driven by that pilot, BM3D's second step without
   block matching).
5. Back-projection and un-whitening.

The fitted :class:`SubspaceDenoiser` holds only (C,) and (C, k) arrays; :meth:`SubspaceDenoiser.denoise`
works on any tile, so scenes are processed by the tiled engine with an overlap of :attr:`context` px.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from hsikit.errors import InputError, OptionError

__all__ = [
    "CovarianceAccumulator", "SubspaceDenoiser", "band_noise_sigma", "fit_subspace", "fit_subspace_scene",
    "repair_dead_columns", "signal_rank", "subspace_denoise",
]

Spatial = Literal["nlm", "wavelet", "none"]
NLM_PATCH = 5
NLM_DISTANCE = 6
#: NLM filtering strength per unit noise sigma (chosen on the EnMAP validation tiles, not the test tiles)
NLM_H = 1.2
WIENER_BLOCK = 8


class CovarianceAccumulator:
    """Pixel count, per-band sums, cross-products, min and max of valid pixels, merged window by window (float64)."""

    def __init__(self, bands: int) -> None:
        self.n = 0
        self.sum = np.zeros(bands)
        self.xtx = np.zeros((bands, bands))
        self.min = np.full(bands, np.inf)
        self.max = np.full(bands, -np.inf)

    def update(self, pixels: np.ndarray) -> None:
        """``pixels``: (n, C) valid pixels."""
        if pixels.shape[0] == 0:
            return
        x = pixels.astype(np.float64, copy=False)
        self.n += x.shape[0]
        self.sum += x.sum(axis=0)
        self.xtx += x.T @ x
        self.min = np.minimum(self.min, x.min(axis=0))
        self.max = np.maximum(self.max, x.max(axis=0))

    @property
    def mean(self) -> np.ndarray:
        return self.sum / max(self.n, 1)

    @property
    def covariance(self) -> np.ndarray:
        """Population covariance (divided by N)."""
        m = self.mean
        return (self.xtx - self.n * np.outer(m, m)) / max(self.n, 1)


def band_noise_sigma(cov: np.ndarray, n: int) -> np.ndarray:
    """Noise sigma per band, (C,), by regressing each band on all the others (HySime's ``estimateN``).

    The residual variance of band i is ``1 / (cov^-1)_ii``; it is scaled by N / (N - C) for the C fitted
    coefficients (without it, few pixels and many bands under-estimate the noise). A band much quieter than
    the others reads high: their noise enters its regression.
    """
    c = cov.shape[0]
    if n <= c + 1:
        raise InputError(f"subspace denoising needs more valid pixels than bands ({n} pixels, {c} bands)")
    ridge = 1e-10 * max(float(np.trace(cov)) / c, 1e-300)
    precision = np.linalg.inv(cov + ridge * np.eye(c))
    var = 1.0 / np.clip(np.diag(precision), 1e-300, None) * n / (n - c)
    return np.sqrt(np.clip(var, 0.0, None))


def signal_rank(eigenvalues: np.ndarray, n: int) -> int:
    """Signal subspace size from eigenvalues of the noise-whitened covariance (descending): HySime keeps a
    direction when its signal power (eigenvalue - 1) exceeds its noise power (1); with N pixels the sample
    eigenvalues of pure noise reach the Marchenko-Pastur edge, so the threshold is the larger of the two."""
    c = eigenvalues.size
    threshold = max(2.0, (1.0 + np.sqrt(c / max(n, 1))) ** 2)
    return max(1, int(np.sum(eigenvalues > threshold)))


@dataclass
class SubspaceDenoiser:
    """A fitted subspace denoiser: ``x -> mean + sigma * B (denoised eigen-images)``."""

    mean: np.ndarray  # (C,)
    sigma: np.ndarray  # (C,) noise sigma per band
    basis: np.ndarray  # (C, k) orthonormal eigenvectors of the whitened covariance
    eigenvalues: np.ndarray  # (C,) whitened covariance eigenvalues, descending
    pixels: int
    spatial: Spatial = "nlm"
    h: float = NLM_H
    rank_rule: str = "hysime"

    @property
    def rank(self) -> int:
        return int(self.basis.shape[1])

    @property
    def context(self) -> int:
        """Spatial reach of the eigen-image denoiser in px (the engine's halo)."""
        if self.spatial == "nlm":
            return NLM_PATCH // 2 + NLM_DISTANCE + WIENER_BLOCK
        return 16 if self.spatial == "wavelet" else 0

    def params(self) -> dict:
        """The parameters a run used, for output tags and reports."""
        p = {"rank": self.rank, "rank_rule": self.rank_rule, "noise": "hysime-regression", "pixels": int(self.pixels),
             "noise_sigma_median": float(np.median(self.sigma)), "noise_sigma_min": float(self.sigma.min()),
             "noise_sigma_max": float(self.sigma.max()), "spatial": self.spatial}
        if self.spatial == "nlm":
            p.update({"nlm_h": self.h, "nlm_patch": NLM_PATCH, "nlm_distance": NLM_DISTANCE,
                      "wiener_block": WIENER_BLOCK})
        return p

    def denoise_centred(self, x: np.ndarray) -> np.ndarray:
        """(C, h, w) data minus :attr:`mean` -> denoised data minus the mean (float32)."""
        c, hh, ww = x.shape
        white = x.reshape(c, -1).astype(np.float64) / self.sigma[:, None]
        z = (self.basis.T @ white).reshape(self.rank, hh, ww)
        for i in range(self.rank):
            z[i] = _denoise_eigenimage(z[i], self.spatial, self.h)
        return ((self.basis @ z.reshape(self.rank, -1)) * self.sigma[:, None]).reshape(c, hh, ww).astype(np.float32)

    def denoise(self, x: np.ndarray) -> np.ndarray:
        """(C, h, w) cube -> denoised cube (float32)."""
        a = np.asarray(x, dtype=np.float64)
        if a.ndim != 3 or a.shape[0] != self.mean.size:
            raise OptionError(f"expected a ({self.mean.size}, rows, cols) cube, got shape {a.shape}")
        return self.denoise_centred(a - self.mean[:, None, None]) + self.mean[:, None, None].astype(np.float32)


def fit_subspace(acc: CovarianceAccumulator, *, rank: int | None = None, spatial: Spatial = "nlm",
                 h: float = NLM_H) -> SubspaceDenoiser:
    """Noise estimate, whitening and signal subspace from streamed statistics."""
    if spatial not in ("nlm", "wavelet", "none"):
        raise OptionError(f"spatial denoiser must be nlm, wavelet or none, not {spatial!r}")
    cov = acc.covariance
    c = cov.shape[0]
    sigma = band_noise_sigma(cov, acc.n)
    positive = sigma[sigma > 0]
    if positive.size == 0:
        raise InputError("every band is constant or exactly predictable from the others: there is no noise to remove")
    # a (nearly) noise-free band must not get an enormous whitened variance
    sigma = np.maximum(sigma, 0.05 * float(np.median(positive)))
    white = cov / np.outer(sigma, sigma)
    evals, evecs = np.linalg.eigh(white)
    order = np.argsort(evals)[::-1]
    evals, evecs = evals[order], evecs[:, order]
    if rank is None:
        k, rule = signal_rank(evals, acc.n), "hysime"
    else:
        if int(rank) != rank or not 1 <= rank <= c:
            raise OptionError(f"subspace rank must be an integer in 1..{c}, got {rank}")
        k, rule = int(rank), "given"
    return SubspaceDenoiser(acc.mean.copy(), sigma, evecs[:, :k].copy(), evals, acc.n, spatial, float(h), rule)


def fit_subspace_scene(scene, *, transform=None, block: int = 512, rank: int | None = None,
                       spatial: Spatial = "nlm") -> tuple[SubspaceDenoiser, CovarianceAccumulator]:
    """:func:`fit_subspace` over the valid pixels of ``scene`` in one streamed pass of ``block`` px windows."""
    from hsikit.preprocess.stats import valid_pixels
    from hsikit.windows import iter_windows

    acc: CovarianceAccumulator | None = None
    for w in iter_windows(scene.width, scene.height, block):
        x = valid_pixels(scene, w, transform)
        if acc is None:
            acc = CovarianceAccumulator(x.shape[1])
        acc.update(x)
    if acc is None or acc.n == 0:
        raise InputError(f"{scene.name} has no valid pixel to denoise")
    return fit_subspace(acc, rank=rank, spatial=spatial), acc


def repair_dead_columns(x: np.ndarray) -> np.ndarray:
    """Replace dead columns (exactly constant over all rows of ``x`` in one band, while other columns of that
    band vary) by linear interpolation between the nearest live columns of the band, row by row.

    Dead detector columns are not noise the subspace model can describe: shared by several bands they look like
    signal and are kept. ``x``: (C, h, w); returns a float32 copy.
    """
    out = np.array(x, dtype=np.float32)
    c, hh, ww = out.shape
    if hh < 2 or ww < 2:
        return out
    dead = np.ptp(out, axis=1) == 0  # (C, w)
    cols = np.arange(ww)
    for b in np.flatnonzero(dead.any(axis=1) & ~dead.all(axis=1)):
        live = np.flatnonzero(~dead[b])
        gone = np.flatnonzero(dead[b])
        right = np.clip(np.searchsorted(live, gone), 0, live.size - 1)
        left = np.clip(right - 1, 0, live.size - 1)
        right = np.where(live[right] < gone, left, right)  # beyond the last live column
        left = np.where(live[left] > gone, right, left)  # before the first live column
        span = (live[right] - live[left]).astype(np.float32)
        t = np.where(span > 0, (cols[gone] - live[left]) / np.where(span > 0, span, 1), 0.0).astype(np.float32)
        out[b][:, gone] = out[b][:, live[left]] * (1 - t) + out[b][:, live[right]] * t
    return out


def subspace_denoise(x: np.ndarray, rank: int | None = None, spatial: Spatial = "nlm") -> np.ndarray:
    """Repair dead columns, then fit and apply the subspace denoiser on an in-memory (C, H, W) cube."""
    a = np.asarray(x)
    if a.ndim != 3:
        raise OptionError(f"expected a (bands, rows, cols) cube, got an array with shape {a.shape}")
    a = repair_dead_columns(a)
    acc = CovarianceAccumulator(a.shape[0])
    acc.update(a.reshape(a.shape[0], -1).T)
    return fit_subspace(acc, rank=rank, spatial=spatial).denoise(a)


def _denoise_eigenimage(z: np.ndarray, spatial: Spatial, h: float) -> np.ndarray:
    """Denoise one eigen-image whose noise is white with unit variance."""
    if spatial == "none":
        return z
    if spatial == "wavelet":
        from skimage.restoration import denoise_wavelet

        return denoise_wavelet(z, sigma=1.0, wavelet="db1", mode="soft", method="BayesShrink", rescale_sigma=True)
    from skimage.restoration import denoise_nl_means

    pad = NLM_PATCH // 2 + NLM_DISTANCE
    zp = np.pad(z, pad, mode="symmetric")
    pilot = denoise_nl_means(zp, h=h, sigma=1.0, patch_size=NLM_PATCH, patch_distance=NLM_DISTANCE, fast_mode=True)
    return _dct_wiener(zp, pilot)[pad:-pad, pad:-pad]


def _dct_basis(block: int) -> np.ndarray:
    """(block², block²) orthonormal 2-D DCT-II matrix acting on row-major flattened blocks."""
    i = np.arange(block)
    d = np.sqrt(2.0 / block) * np.cos(np.pi * (2 * i[None, :] + 1) * i[:, None] / (2 * block))
    d[0] /= np.sqrt(2.0)
    return np.kron(d, d)


def _dct_wiener(z: np.ndarray, pilot: np.ndarray, block: int = WIENER_BLOCK) -> np.ndarray:
    """Empirical Wiener filter of ``z`` (unit noise) in every sliding ``block`` x ``block`` DCT window, with the
    signal power taken from ``pilot``; overlapping estimates are averaged with BM3D's inverse-energy weights."""
    from numpy.lib.stride_tricks import sliding_window_view

    hh, ww = z.shape
    if min(hh, ww) < block:
        return pilot
    ny, nx = hh - block + 1, ww - block + 1
    k = _dct_basis(block).T.astype(np.float32)
    # every window as a row: the 2-D DCT of all of them is one matrix product
    fz = sliding_window_view(z.astype(np.float32), (block, block)).reshape(ny * nx, block * block) @ k
    fp = sliding_window_view(pilot.astype(np.float32), (block, block)).reshape(ny * nx, block * block) @ k
    fp *= fp
    gain = fp / (fp + np.float32(1.0))
    weight = (1.0 / np.maximum((gain * gain).sum(axis=1), 1e-3)).astype(np.float32)
    # (block², windows): each in-block offset's estimates contiguous for the aggregation below
    est = (k @ (fz * gain).T) * weight[None, :]
    est = est.reshape(block, block, ny, nx)
    weight = weight.reshape(ny, nx)
    out = np.zeros(z.shape, np.float32)
    wsum = np.zeros(z.shape, np.float32)
    for dy in range(block):
        for dx in range(block):
            out[dy : dy + ny, dx : dx + nx] += est[dy, dx]
            wsum[dy : dy + ny, dx : dx + nx] += weight
    return (out / wsum).astype(np.float64)
