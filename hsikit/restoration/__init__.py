"""Hyperspectral restoration utilities: degradation synthesis, quality metrics and classical baselines.

- :mod:`hsikit.restoration.degradations`: noise, blur, down-sampling, masks and haze following the HSDT,
  MP-HSIR and ESSAformer protocols, plus a composable registry (``degrade(x, "gaussian:sigma=30", seed)``);
- :mod:`hsikit.restoration.quality`: MPSNR, MSSIM, SAM, ERGAS, RMSE, CC with the papers' conventions;
- :mod:`hsikit.restoration.classical`: bicubic, wavelet, TV and PCA baselines.

Importing this package does not import torch (only the bicubic resamplers load it, on first call).
"""

from __future__ import annotations

from hsikit.restoration.classical import (
    bicubic_upsample,
    estimate_band_sigma,
    pca_denoise,
    tv_denoise,
    wavelet_denoise,
)
from hsikit.restoration.degradations import (
    COMPLEX_CASES,
    DEGRADATIONS,
    DOWNSAMPLE_METHODS,
    Degradation,
    DegradationSpec,
    Degraded,
    band_mask,
    complex_noise,
    deadline_noise,
    degrade,
    downsample,
    gaussian_blur,
    gaussian_kernel,
    gaussian_noise,
    haze,
    impulse_noise,
    list_degradations,
    motion_blur,
    motion_kernel,
    nearest_upsample,
    noniid_gaussian_noise,
    parse_degradation,
    parse_degradations,
    pixel_mask,
    poisson_noise,
    smooth_random_field,
    stripe_noise,
)
from hsikit.restoration.quality import cc, ergas, per_band_psnr, psnr, quality_report, rmse, sam, ssim

__all__ = [
    "COMPLEX_CASES",
    "DEGRADATIONS",
    "DOWNSAMPLE_METHODS",
    "Degradation",
    "DegradationSpec",
    "Degraded",
    "band_mask",
    "bicubic_upsample",
    "cc",
    "complex_noise",
    "deadline_noise",
    "degrade",
    "downsample",
    "ergas",
    "estimate_band_sigma",
    "gaussian_blur",
    "gaussian_kernel",
    "gaussian_noise",
    "haze",
    "impulse_noise",
    "list_degradations",
    "motion_blur",
    "motion_kernel",
    "nearest_upsample",
    "noniid_gaussian_noise",
    "parse_degradation",
    "parse_degradations",
    "pca_denoise",
    "per_band_psnr",
    "pixel_mask",
    "poisson_noise",
    "psnr",
    "quality_report",
    "rmse",
    "sam",
    "smooth_random_field",
    "ssim",
    "stripe_noise",
    "tv_denoise",
    "wavelet_denoise",
]
