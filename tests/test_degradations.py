"""Degradation synthesis (hsikit.restoration.degradations): reproducibility, shapes, statistics, parsing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from hsikit.errors import OptionError
from hsikit.restoration import degradations as deg
from hsikit.restoration.degradations import (
    DEGRADATIONS,
    Degradation,
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
    stripe_noise,
)


def cube(c: int = 9, h: int = 32, w: int = 32, seed: int = 0) -> np.ndarray:
    """Strictly inside (0, 1) so zeroed or saturated pixels are recognisable."""
    return (np.random.default_rng(seed).random((c, h, w)) * 0.8 + 0.1).astype(np.float32)


# ---------------------------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", list(DEGRADATIONS))
def test_every_degradation_is_reproducible(name: str) -> None:
    x = cube()
    before = x.copy()
    a = degrade(x, Degradation(name), 7)
    b = degrade(x, name, np.random.default_rng(7))
    c = degrade(x, name, 8)
    np.testing.assert_array_equal(x, before)  # input untouched
    assert a.x.dtype == np.float32 and a.x.base is not x
    np.testing.assert_array_equal(a.x, b.x)
    if DEGRADATIONS[name].random:
        assert not np.array_equal(a.x, c.x)
    else:
        np.testing.assert_array_equal(a.x, c.x)
    expected_hw = (32 // a.scale, 32 // a.scale)
    assert a.x.shape == (9, *expected_hw)


def test_list_degradations_has_required_names() -> None:
    names = [n for n, _ in list_degradations()]
    for required in (
        "gaussian", "blind-gaussian", "noniid", "stripe", "deadline", "impulse", "mixture", "complex",
        "poisson", "blur", "motion-blur", "downsample", "sr-nearest", "inpaint", "band-missing", "haze",
    ):
        assert required in names
    assert all(doc and "\n" not in doc for _, doc in list_degradations())


# ---------------------------------------------------------------------------------------------- noise


def test_gaussian_noise_std() -> None:
    x = cube(8, 64, 64)
    y = gaussian_noise(x, np.random.default_rng(0), 50 / 255)
    assert abs((y - x).std() / (50 / 255) - 1) < 0.03
    assert abs((y - x).mean()) < 0.01
    assert degrade(x, "gaussian:sigma=30", 0).x.std() != degrade(x, "gaussian", 0).x.std()


def test_registry_gaussian_sigma_is_in_255_units() -> None:
    x = np.zeros((8, 64, 64), np.float32)
    y = degrade(x, "gaussian:sigma=30", 1).x
    assert abs(y.std() * 255 / 30 - 1) < 0.03


def test_noniid_each_band_draws_from_the_list() -> None:
    x = np.zeros((12, 64, 64), np.float32)
    sigmas = np.array([10, 30, 50, 70]) / 255
    y = noniid_gaussian_noise(x, np.random.default_rng(3))
    stds = y.reshape(12, -1).std(axis=1)
    nearest = sigmas[np.abs(stds[:, None] - sigmas[None]).argmin(axis=1)]
    np.testing.assert_allclose(stds, nearest, rtol=0.05)
    assert len(np.unique(nearest)) > 1


def test_blind_gaussian_same_sigma_in_all_bands() -> None:
    y = degrade(np.zeros((8, 64, 64), np.float32), "blind-gaussian", 4).x
    stds = y.reshape(8, -1).std(axis=1)
    assert stds.max() / stds.min() < 1.15
    assert np.min(np.abs(stds.mean() * 255 - np.array([10, 30, 50, 70]))) < 3


def test_stripe_counts_and_offsets() -> None:
    x = cube(9, 16, 64)
    y = stripe_noise(x, np.random.default_rng(0))
    diff = x - y  # stripes subtract
    hit = [b for b in range(9) if np.any(diff[b] != 0)]
    assert len(hit) == 3  # floor(9 / 3)
    for b in hit:
        cols = np.flatnonzero(np.any(diff[b] != 0, axis=0))
        assert math.floor(0.05 * 64) <= cols.size < math.floor(0.15 * 64)
        for col in cols:  # one constant per column, |offset| <= 0.25
            np.testing.assert_allclose(diff[b][:, col], diff[b][0, col], atol=1e-6)
            assert abs(diff[b][0, col]) <= 0.25 + 1e-6


def test_deadline_counts() -> None:
    x = cube(9, 16, 64)
    y = deadline_noise(x, np.random.default_rng(1))
    hit = [b for b in range(9) if np.any(y[b] != x[b])]
    assert len(hit) == 3
    for b in hit:
        dead = np.flatnonzero(np.all(y[b] == 0, axis=0))
        changed = np.flatnonzero(np.any(y[b] != x[b], axis=0))
        np.testing.assert_array_equal(dead, changed)
        assert math.ceil(0.05 * 64) <= dead.size < math.ceil(0.15 * 64)


def test_impulse_salt_and_pepper() -> None:
    x = cube(9, 64, 64)
    y = impulse_noise(x, np.random.default_rng(2))
    hit = [b for b in range(9) if np.any(y[b] != x[b])]
    assert len(hit) == 3
    for b in hit:
        changed = y[b] != x[b]
        assert set(np.unique(y[b][changed])) <= {0.0, 1.0}
        frac = changed.mean()
        assert np.min(np.abs(frac - np.array([0.1, 0.3, 0.5, 0.7]))) < 0.03
        assert abs((y[b][changed] == 1).mean() - 0.5) < 0.06


def test_explicit_bands_are_respected() -> None:
    x = cube()
    y = deadline_noise(x, np.random.default_rng(0), bands=[0, 4])
    assert [b for b in range(9) if np.any(y[b] != x[b])] == [0, 4]


def test_mixture_uses_three_disjoint_thirds() -> None:
    x = cube(12, 32, 64)
    y = complex_noise(x, np.random.default_rng(5), "mixture", sigmas=(0.0,))
    kinds: dict[str, list[int]] = {"stripe": [], "deadline": [], "impulse": []}
    for b in range(12):
        changed = y[b] != x[b]
        if not changed.any():
            continue
        cols_whole = np.all(changed == changed[:1], axis=0)  # every changed column is changed entirely
        if cols_whole.all() and np.all(y[b][changed] == 0):
            kinds["deadline"].append(b)
        elif cols_whole.all():
            kinds["stripe"].append(b)
        else:
            assert set(np.unique(y[b][changed])) <= {0.0, 1.0}
            kinds["impulse"].append(b)
    assert [len(v) for v in kinds.values()] == [4, 4, 4]


def test_complex_random_and_noniid_share_the_gaussian_part() -> None:
    x = cube()
    a = complex_noise(x, np.random.default_rng(9), "random", choices=("none",))
    b = complex_noise(x, np.random.default_rng(9), "noniid")
    np.testing.assert_array_equal(a, b)
    with pytest.raises(OptionError):
        complex_noise(x, np.random.default_rng(0), "bogus")
    with pytest.raises(OptionError):
        complex_noise(x, np.random.default_rng(0), "random", choices=("gaussian",))


def test_complex_random_draws_every_choice() -> None:
    x = cube(9, 16, 32)
    clean = {"none": 0, "structured": 0}
    for seed in range(24):
        y = complex_noise(x, np.random.default_rng(seed), "random", sigmas=(0.0,))
        clean["none" if np.array_equal(x, y) else "structured"] += 1
    assert clean["none"] > 0 and clean["structured"] > clean["none"]


def test_poisson_noise() -> None:
    x = np.full((4, 64, 64), 0.5, np.float32)
    y = poisson_noise(x, np.random.default_rng(0), peak=10)
    np.testing.assert_allclose(y * 10, np.round(y * 10), atol=1e-5)  # multiples of 1/peak
    assert abs(y.mean() - 0.5) < 0.02
    assert abs(y.var() - 0.5 / 10) < 0.005  # Var = x / peak
    assert poisson_noise(-x, np.random.default_rng(0)).max() == 0


# ---------------------------------------------------------------------------------------------- blur


@pytest.mark.parametrize("k", [1, 9, 15, 21])
def test_gaussian_kernel(k: int) -> None:
    kern = gaussian_kernel(k)
    assert kern.shape == (k, k)
    assert abs(kern.sum() - 1) < 1e-12
    if k > 1:
        sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8
        c = (k - 1) // 2
        np.testing.assert_allclose(kern[c, c + 1] / kern[c, c], np.exp(-1 / (2 * sigma**2)))


def test_gaussian_kernel_rejects_even_size() -> None:
    with pytest.raises(OptionError):
        gaussian_kernel(8)


def test_motion_kernel_sums_to_one_and_is_rotated() -> None:
    k0 = motion_kernel(15, 0.0)
    np.testing.assert_allclose(k0[7], 1 / 15)
    assert k0.sum() == pytest.approx(1.0)
    k45 = motion_kernel(15, 45.0)
    assert k45.sum() == pytest.approx(1.0) and k45.min() >= 0
    c = 7
    assert k45[c + 3, c - 3] > 0.02 and k45[c - 3, c + 3] > 0.02  # anti-diagonal (counter-clockwise)
    assert k45[c + 3, c + 3] == 0 and k45[c - 3, c - 3] == 0
    np.testing.assert_allclose(k45, k45[::-1, ::-1], atol=1e-12)


def test_blur_keeps_constant_interior_and_zero_pads() -> None:
    x = np.full((3, 40, 40), 0.5, np.float32)
    y = gaussian_blur(x, 9)
    np.testing.assert_allclose(y[:, 4:-4, 4:-4], 0.5, atol=1e-6)
    assert y[0, 0, 0] < 0.5  # zero padding darkens the border
    m = motion_blur(x, 15, 45.0)
    np.testing.assert_allclose(m[:, 7:-7, 7:-7], 0.5, atol=1e-6)
    assert m.shape == x.shape and m.dtype == np.float32


def test_blur_preserves_mass_of_an_impulse() -> None:
    x = np.zeros((1, 31, 31), np.float32)
    x[0, 15, 15] = 1
    assert gaussian_blur(x, 15).sum() == pytest.approx(1.0, abs=1e-5)
    assert motion_blur(x, 15, 30.0).sum() == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("method", ["bicubic", "bicubic-noaa", "gaussian"])
def test_downsample_shape_and_constant(method: str) -> None:
    x = np.full((4, 32, 30), 0.3, np.float32)
    y = downsample(x, 4, method)
    assert y.shape == (4, 8, 7) and y.dtype == np.float32  # 30 cropped to 28
    np.testing.assert_allclose(y, 0.3, atol=1e-5)


def test_downsample_gaussian_is_blur_then_decimation() -> None:
    x = cube(2, 16, 16)
    y = downsample(x, 2, "gaussian")
    ref = ndimage.gaussian_filter(x, sigma=(0, 1.0, 1.0), mode="reflect")[:, ::2, ::2]
    np.testing.assert_allclose(y, ref, atol=1e-6)


def test_downsample_bicubic_antialiased_is_smoother() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((2, 32, 32)).astype(np.float32)
    aa = downsample(x, 4, "bicubic")
    noaa = downsample(x, 4, "bicubic-noaa")
    assert aa.std() < noaa.std()  # antialiasing averages the white noise away


def test_downsample_and_upsample_errors() -> None:
    x = cube()
    with pytest.raises(OptionError):
        downsample(x, 0)
    with pytest.raises(OptionError):
        downsample(x, 2, "lanczos")
    with pytest.raises(OptionError):
        downsample(x, 64)
    with pytest.raises(OptionError):
        nearest_upsample(x, 0)
    np.testing.assert_array_equal(downsample(x, 1), x)


def test_nearest_upsample() -> None:
    x = cube(2, 4, 5)
    y = nearest_upsample(x, 3)
    assert y.shape == (2, 12, 15)
    np.testing.assert_array_equal(y[:, ::3, ::3], x)
    np.testing.assert_array_equal(y[:, 2::3, 1::3], x)


def test_sr_nearest_keeps_size_and_reports_scale() -> None:
    x = cube(3, 34, 32)
    d = degrade(x, "sr-nearest:scale=2", 0)
    assert d.x.shape == (3, 34, 32) and d.scale == 1 and d.ergas_scale == 2
    lr = downsample(x, 2, "bicubic-noaa")
    np.testing.assert_array_equal(d.x, nearest_upsample(lr, 2))


# ---------------------------------------------------------------------------------------------- masks


def test_pixel_mask_fraction() -> None:
    x = cube(8, 32, 32)
    y, mask = pixel_mask(x, np.random.default_rng(0), 0.8)
    assert mask.dtype == bool and mask.shape == x.shape
    assert abs(mask.mean() - 0.8) < 0.02
    assert np.all(y[mask] == 0)
    np.testing.assert_array_equal(y[~mask], x[~mask])


@pytest.mark.parametrize(
    ("c", "ratio", "count"), [(10, 0.3, 3), (9, 0.2, 1), (31, 0.1, 3), (100, 0.29, 29), (8, 0.0, 0)]
)
def test_band_mask_zeroes_floor_ratio_bands(c: int, ratio: float, count: int) -> None:
    x = cube(c, 4, 4)
    y, mask = band_mask(x, np.random.default_rng(1), ratio)
    zeroed = [b for b in range(c) if np.all(y[b] == 0)]
    assert len(zeroed) == count
    np.testing.assert_array_equal(mask.any(axis=(1, 2)), np.isin(np.arange(c), zeroed))
    assert np.all(mask[zeroed])  # whole bands
    np.testing.assert_array_equal(y[~mask], x[~mask])


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_mask_ratio_validation(ratio: float) -> None:
    with pytest.raises(OptionError):
        pixel_mask(cube(), np.random.default_rng(0), ratio)
    with pytest.raises(OptionError):
        band_mask(cube(), np.random.default_rng(0), ratio)


def test_wrong_ndim_is_rejected() -> None:
    with pytest.raises(OptionError, match="bands, rows, cols"):
        gaussian_noise(np.zeros((8, 8), np.float32), np.random.default_rng(0), 0.1)
    with pytest.raises(OptionError):
        degrade(np.zeros((1, 8, 8, 2), np.float32), "blur", 0)


# ---------------------------------------------------------------------------------------------- haze


def test_haze_between_signal_and_airlight() -> None:
    x = cube(10, 32, 32)
    y = haze(x, np.random.default_rng(0), 0.75)
    airlight = x.reshape(10, -1).max(axis=1)  # top 0.01 % of 1024 pixels = the brightest one
    lo = np.minimum(x, airlight[:, None, None]) - 1e-6
    hi = np.maximum(x, airlight[:, None, None]) + 1e-6
    assert np.all(y >= lo) and np.all(y <= hi)
    assert not np.allclose(y, x)
    np.testing.assert_allclose(haze(x, np.random.default_rng(0), 0.0), x, atol=1e-6)


def test_haze_formula_with_given_cirrus() -> None:
    x = cube(4, 16, 16)
    wl = [400.0, 600.0, 800.0, 1000.0]
    cirrus = np.full((8, 8), 0.5)  # resized to 16 x 16
    y = haze(x, np.random.default_rng(0), 1.0, wavelengths=wl, cirrus=cirrus)
    t = 0.5 ** (400.0 / np.array(wl))
    airlight = x.reshape(4, -1).max(axis=1)
    expected = x * t[:, None, None] + (airlight * (1 - t))[:, None, None]
    np.testing.assert_allclose(y, expected, atol=1e-6)
    # longer wavelengths are hazed less
    change = np.abs(y - x).reshape(4, -1).mean(axis=1) / np.abs(airlight[:, None] - x.reshape(4, -1)).mean(axis=1)
    assert np.all(np.diff(change) < 0)
    with pytest.raises(OptionError):
        haze(x, np.random.default_rng(0), 1.0, wavelengths=[500.0])


def test_smooth_random_field_range() -> None:
    f = deg.smooth_random_field((32, 24), np.random.default_rng(0))
    assert f.shape == (32, 24) and f.min() == 0 and f.max() == 1
    # smooth: neighbour differences far below those of white noise
    assert np.abs(np.diff(f, axis=0)).mean() < 0.05


# ---------------------------------------------------------------------------------------------- parsing and composition


@pytest.mark.parametrize(
    "text",
    ["gaussian:sigma=30", "downsample:scale=2,method=gaussian", "mixture", "blur:kernel_size=15,sigma=2.5",
     "complex:choices=stripe|deadline|impulse", "noniid:sigmas=10|30", "haze:omega=0.5,wavelengths=none"],
)
def test_parse_round_trip(text: str) -> None:
    d = parse_degradation(text)
    assert d.to_text() == text == str(d)
    assert parse_degradation(d.to_text()) == d


def test_parse_values() -> None:
    d = parse_degradation(" Downsample : scale=2 , method=gaussian ")
    assert d == Degradation("downsample", {"scale": 2, "method": "gaussian"})
    assert parse_degradation("blur:kernel-size=7").params == {"kernel_size": 7}
    assert parse_degradation("haze:omega=0.5").params == {"omega": 0.5}
    chain = parse_degradations("blur:kernel_size=9+gaussian:sigma=10")
    assert [c.name for c in chain] == ["blur", "gaussian"]


@pytest.mark.parametrize(
    ("text", "needle"), [("foo", "gaussian"), ("gaussian:foo=1", "sigma"), ("gaussian:sigma", "key=value")]
)
def test_parse_errors_are_one_line(text: str, needle: str) -> None:
    with pytest.raises(OptionError) as err:
        parse_degradation(text)
    assert "\n" not in str(err.value) and needle in str(err.value)


def test_degrade_composes_in_order() -> None:
    x = cube()
    d = degrade(x, [Degradation("blur", {"kernel_size": 5}), Degradation("gaussian", {"sigma": 10})], 3)
    manual = gaussian_noise(gaussian_blur(x, 5), np.random.default_rng(3), 10 / 255)
    np.testing.assert_array_equal(d.x, manual)
    assert d.mask is None and d.scale == 1


def test_degrade_carries_masks_and_scales() -> None:
    x = cube(10, 32, 32)
    d = degrade(x, ["downsample:scale=2", "band-missing:ratio=0.3", "gaussian:sigma=5"], 0)
    assert d.x.shape == (10, 16, 16) and d.scale == 2 and d.ergas_scale == 2
    assert d.mask is not None and d.mask.shape == d.x.shape and d.mask.any(axis=(1, 2)).sum() == 3
    d2 = degrade(x, ["downsample:scale=2", "downsample:scale=2,method=gaussian"], 0)
    assert d2.scale == 4 and d2.x.shape == (10, 8, 8)
    both = degrade(x, ["inpaint:ratio=0.5", "band-missing:ratio=0.3"], 0)
    assert both.mask.mean() > 0.5
    with pytest.raises(OptionError, match="masks last"):
        degrade(x, ["inpaint", "downsample:scale=2"], 0)
    with pytest.raises(OptionError):
        degrade(x, Degradation("gaussian", {"bogus": 1}), 0)
