"""Restoration metrics (hsikit.restoration.quality) against scikit-image and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from hsikit.errors import OptionError
from hsikit.restoration import band_mask
from hsikit.restoration.quality import cc, ergas, per_band_psnr, psnr, quality_report, rmse, sam, ssim


def pair(c: int = 8, h: int = 32, w: int = 32, sigma: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = rng.random((c, h, w))
    est = ref + sigma * rng.standard_normal(ref.shape) * np.linspace(0.5, 2, c)[:, None, None]
    return ref, est


def test_psnr_matches_skimage_per_band_mean() -> None:
    ref, est = pair()
    expected = np.mean([peak_signal_noise_ratio(r, e, data_range=1.0) for r, e in zip(ref, est)])
    assert psnr(ref, est) == pytest.approx(expected, abs=1e-10)
    expected2 = np.mean([peak_signal_noise_ratio(r, e, data_range=2.0) for r, e in zip(ref, est)])
    assert psnr(ref, est, data_range=2.0) == pytest.approx(expected2, abs=1e-10)
    assert per_band_psnr(ref, est).shape == (8,)


def test_psnr_float32_inputs() -> None:
    ref, est = pair()
    assert psnr(ref.astype(np.float32), est.astype(np.float32)) == pytest.approx(psnr(ref, est), abs=1e-4)


def test_psnr_perfect_bands() -> None:
    ref, est = pair(c=4)
    est[1] = ref[1]
    others = np.mean([peak_signal_noise_ratio(ref[b], est[b], data_range=1.0) for b in (0, 2, 3)])
    assert psnr(ref, est) == pytest.approx(others)  # the perfect band is left out, not averaged as inf
    assert psnr(ref, ref) == float("inf")
    assert np.isinf(per_band_psnr(ref, est)[1])


@pytest.mark.parametrize("data_range", [1.0, 2.0])
def test_ssim_matches_skimage(data_range: float) -> None:
    ref, est = pair(c=5, h=24, w=29)
    expected = np.mean(
        [structural_similarity(r, e, data_range=data_range, win_size=7) for r, e in zip(ref, est)]
    )
    assert ssim(ref, est, data_range=data_range) == pytest.approx(expected, abs=1e-6)


def test_ssim_float32_and_identity() -> None:
    ref, est = pair(c=3)
    r32, e32 = ref.astype(np.float32), est.astype(np.float32)
    expected = np.mean([structural_similarity(r, e, data_range=1.0, win_size=7) for r, e in zip(r32, e32)])
    assert ssim(r32, e32) == pytest.approx(expected, abs=1e-5)
    assert ssim(ref, ref) == pytest.approx(1.0)
    assert ssim(ref[0], est[0]) == pytest.approx(structural_similarity(ref[0], est[0], data_range=1.0), abs=1e-6)
    with pytest.raises(OptionError):
        ssim(ref[:, :6, :6], est[:, :6, :6])


def test_sam_hand_cases() -> None:
    ref = np.zeros((2, 1, 3))
    est = np.zeros((2, 1, 3))
    ref[:, 0, 0], est[:, 0, 0] = (1, 0), (0, 1)  # orthogonal: 90 degrees
    ref[:, 0, 1], est[:, 0, 1] = (1, 0), (1, np.sqrt(3))  # 60 degrees
    ref[:, 0, 2], est[:, 0, 2] = (2, 3), (4, 6)  # parallel: 0 degrees
    assert sam(ref, est) == pytest.approx((90 + 60 + 0) / 3)
    assert sam(ref, est, radians=True) == pytest.approx(np.pi / 3 * (1.5 + 1 + 0) / 3)
    assert sam(ref, ref) == pytest.approx(0.0, abs=1e-6)


def test_sam_skips_zero_norm_pixels() -> None:
    ref = np.zeros((2, 1, 3))
    est = np.zeros((2, 1, 3))
    ref[:, 0, 0], est[:, 0, 0] = (1, 0), (0, 1)
    ref[:, 0, 1], est[:, 0, 1] = (0, 0), (1, 1)  # zero reference: skipped
    ref[:, 0, 2], est[:, 0, 2] = (1, 1), (0, 0)  # zero estimate: skipped
    assert sam(ref, est) == pytest.approx(90.0)
    assert np.isnan(sam(np.zeros((2, 2, 2)), np.zeros((2, 2, 2))))


def test_ergas_hand_case() -> None:
    ref = np.stack([np.full((4, 4), 0.5), np.full((4, 4), 0.25)])
    est = ref + 0.05
    expected = 100 * np.sqrt((0.0025 / 0.25 + 0.0025 / 0.0625) / 2)
    assert ergas(ref, est) == pytest.approx(expected)
    assert ergas(ref, est, scale=4) == pytest.approx(expected / 4)
    assert ergas(ref, ref) == 0.0


def test_rmse_and_cc() -> None:
    ref, est = pair()
    assert rmse(ref, est) == pytest.approx(np.sqrt(np.mean((ref - est) ** 2)))
    assert rmse(ref, ref + 0.1) == pytest.approx(0.1)
    expected = np.mean([np.corrcoef(r.ravel(), e.ravel())[0, 1] for r, e in zip(ref, est)])
    assert cc(ref, est) == pytest.approx(expected)
    assert cc(ref, 2 * ref + 1) == pytest.approx(1.0)
    assert cc(ref, -ref) == pytest.approx(-1.0)


def test_valid_pixel_mask() -> None:
    ref, est = pair(c=4, h=16, w=16)
    valid = np.ones((16, 16), bool)
    valid[:4] = False
    garbage = est.copy()
    garbage[:, :4] = 1e6  # nodata rows must not count
    sub_ref, sub_est = ref[:, 4:], est[:, 4:]
    assert psnr(ref, garbage, valid=valid) == pytest.approx(psnr(sub_ref, sub_est))
    assert sam(ref, garbage, valid=valid) == pytest.approx(sam(sub_ref, sub_est))
    assert ergas(ref, garbage, valid=valid) == pytest.approx(ergas(sub_ref, sub_est))
    assert rmse(ref, garbage, valid=valid) == pytest.approx(rmse(sub_ref, sub_est))
    assert cc(ref, garbage, valid=valid) == pytest.approx(cc(sub_ref, sub_est))
    with pytest.raises(OptionError):
        psnr(ref, est, valid=np.ones((4, 4), bool))
    with pytest.raises(OptionError):
        psnr(ref, est, valid=np.zeros((16, 16), bool))


def test_quality_report_keys_and_band_mask() -> None:
    ref, est = pair(c=10)
    report = quality_report(ref, est, scale=2)
    assert set(report) == {"psnr", "ssim", "sam", "ergas", "rmse", "cc"}
    assert report["ergas"] == pytest.approx(ergas(ref, est, scale=2))
    assert report["sam"] == pytest.approx(sam(ref, est))
    _, mask = band_mask(ref.astype(np.float32), np.random.default_rng(0), 0.3)
    bands = mask.any(axis=(1, 2))
    masked = quality_report(ref, est, mask=mask)
    assert masked["psnr"] == pytest.approx(psnr(ref[bands], est[bands]))
    assert masked["ssim"] == pytest.approx(ssim(ref[bands], est[bands]))
    assert quality_report(ref, est, mask=bands) == masked
    with pytest.raises(OptionError):
        quality_report(ref, est, mask=np.zeros(10, bool))
    with pytest.raises(OptionError):
        quality_report(ref, est, mask=np.zeros((3, 3), bool))


def test_quality_report_clip() -> None:
    ref, est = pair(sigma=0.2)
    clipped = quality_report(ref, est, clip=True)
    assert clipped["psnr"] == pytest.approx(psnr(ref, np.clip(est, 0, 1)))
    assert clipped["psnr"] > quality_report(ref, est)["psnr"]


def test_shape_mismatch_is_rejected() -> None:
    with pytest.raises(OptionError, match="same shape"):
        psnr(np.zeros((2, 8, 8)), np.zeros((2, 8, 7)))
