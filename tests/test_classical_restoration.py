"""Classical restoration baselines (hsikit.restoration.classical) on a smooth synthetic cube."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from hsikit.errors import OptionError
from hsikit.restoration import downsample, gaussian_noise, nearest_upsample, noniid_gaussian_noise, psnr
from hsikit.restoration.classical import (
    bicubic_upsample,
    estimate_band_sigma,
    pca_denoise,
    tv_denoise,
    wavelet_denoise,
)

pytest.importorskip("pywt", reason="scikit-image's wavelet functions need PyWavelets")


def smooth_cube(c: int = 32, h: int = 32, w: int = 32, endmembers: int = 4, seed: int = 0) -> np.ndarray:
    """Linear mixture: smooth abundance maps (softmax of blurred noise) times smooth Gaussian-bump spectra."""
    rng = np.random.default_rng(seed)
    maps = np.stack([ndimage.gaussian_filter(rng.standard_normal((h, w)), 4, mode="wrap") for _ in range(endmembers)])
    abundance = np.exp(3 * maps / maps.std())
    abundance /= abundance.sum(axis=0, keepdims=True)
    lam = np.linspace(0, 1, c)
    spectra = np.stack([0.2 + 0.6 * np.exp(-((lam - mu) ** 2) / (2 * 0.15**2)) for mu in rng.uniform(0, 1, endmembers)])
    return np.einsum("kc,khw->chw", spectra, abundance).astype(np.float32)


@pytest.fixture(scope="module")
def scene() -> tuple[np.ndarray, np.ndarray]:
    clean = smooth_cube()
    return clean, gaussian_noise(clean, np.random.default_rng(1), 30 / 255)


def test_noise_estimate(scene: tuple[np.ndarray, np.ndarray]) -> None:
    _, noisy = scene
    sig = estimate_band_sigma(noisy)
    assert sig.shape == (32,)
    np.testing.assert_allclose(sig.mean(), 30 / 255, rtol=0.1)


@pytest.mark.parametrize(("denoiser", "gain"), [(wavelet_denoise, 4.0), (tv_denoise, 6.0), (pca_denoise, 10.0)])
def test_denoisers_improve_psnr(scene: tuple[np.ndarray, np.ndarray], denoiser, gain: float) -> None:
    clean, noisy = scene
    before = noisy.copy()
    out = denoiser(noisy)
    np.testing.assert_array_equal(noisy, before)
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert psnr(clean, out) > psnr(clean, noisy) + gain


def test_explicit_parameters(scene: tuple[np.ndarray, np.ndarray]) -> None:
    clean, noisy = scene
    base = psnr(clean, noisy)
    assert psnr(clean, wavelet_denoise(noisy, sigma=30 / 255)) > base + 4
    assert psnr(clean, tv_denoise(noisy, weight=0.12)) > base + 6
    np.testing.assert_array_equal(tv_denoise(noisy, weight=0.0), noisy)
    assert psnr(clean, pca_denoise(noisy, rank=3)) > base + 10
    # the projection alone already helps; wavelet shrinkage of the kept components helps more
    plain = psnr(clean, pca_denoise(noisy, rank=3, denoise_components=False))
    assert base + 5 < plain < psnr(clean, pca_denoise(noisy, rank=3))
    with pytest.raises(OptionError):
        pca_denoise(noisy, rank=0)
    with pytest.raises(OptionError):
        pca_denoise(noisy, rank=33)


def test_pca_handles_band_dependent_noise() -> None:
    clean = smooth_cube(seed=2)
    noisy = noniid_gaussian_noise(clean, np.random.default_rng(0))
    assert psnr(clean, pca_denoise(noisy)) > psnr(clean, noisy) + 10


def test_bicubic_upsample_beats_nearest() -> None:
    clean = smooth_cube(c=4, h=32, w=32, seed=3)
    lr = downsample(clean, 2)
    up = bicubic_upsample(lr, 2)
    assert up.shape == (4, 32, 32) and up.dtype == np.float32
    assert psnr(clean, up) > psnr(clean, nearest_upsample(lr, 2)) + 1.0
    flat = bicubic_upsample(np.full((2, 5, 6), 0.4, np.float32), 3)
    assert flat.shape == (2, 15, 18)
    np.testing.assert_allclose(flat, 0.4, atol=1e-6)
    with pytest.raises(OptionError):
        bicubic_upsample(lr, 0)


def test_rejects_non_cubes() -> None:
    with pytest.raises(OptionError):
        wavelet_denoise(np.zeros((8, 8), np.float32))
