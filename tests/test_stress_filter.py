"""The FFDNN photochemical filter: masking, features, regular time grid, statistics."""

from __future__ import annotations

import numpy as np
import pytest

from hsikit.errors import BandMismatchError, InputError, OptionError
from hsikit.timeseries.filter import (FilterConfig, PhotochemicalFilter, SeriesBlock, bare_soil, blocks,
                                      estimate_soil_slope, filter_in_chunks, interpolate_to_grid, read_block,
                                      robust_peak, scl_cloud_mask, season_grid)


def _days(*d: int) -> np.ndarray:
    return np.datetime64("2021-03-01") + np.array(d) * np.timedelta64(1, "D")


def test_interpolation_with_masked_dates_gives_regular_grid_without_nan():
    dates = _days(0, 10, 20, 30)
    grid = _days(*range(0, 40, 5))  # 8 grid dates, the last past the final acquisition
    values = np.array([[[0.0, 10.0, 20.0, 30.0]],     # date 10 cloudy: interpolated across
                       [[5.0, 7.0, 9.0, 11.0]],       # first two dates masked: edge value held before day 20
                       [[1.0, 2.0, 3.0, 4.0]]])       # nothing valid: NaN
    valid = np.array([[True, False, True, True], [False, False, True, True], [False] * 4])
    out = interpolate_to_grid(values, valid, dates, grid)
    assert out.shape == (3, 1, 8)
    np.testing.assert_allclose(out[0, 0], [0, 5, 10, 15, 20, 25, 30, 30])
    np.testing.assert_allclose(out[1, 0], [9, 9, 9, 9, 9, 10, 11, 11])
    assert np.isnan(out[2]).all() and not np.isnan(out[:2]).any()


def test_interpolation_unsorted_and_duplicate_dates():
    dates = _days(20, 0, 10, 10)
    vals = np.array([[[2.0, 0.0, 1.0, 1.0]]])
    out = interpolate_to_grid(vals, np.ones((1, 4), bool), dates, _days(0, 5, 10, 15, 20))
    np.testing.assert_allclose(out[0, 0], [0, 0.5, 1, 1.5, 2])


def test_season_grid_windows():
    dates = np.array(["2020-11-01", "2021-02-20", "2021-05-01", "2021-07-30"], dtype="datetime64[ns]")
    g = season_grid(dates, FilterConfig(season_start="02-15"))
    assert g.size == 32 and str(g[0]) == "2021-02-15" and (np.diff(g) == np.timedelta64(5, "D")).all()
    assert str(season_grid(dates, FilterConfig())[0]) == "2020-11-01"
    assert str(season_grid(dates, FilterConfig(season_start="2021-03-01", step_days=7, length=10))[-1]) == "2021-05-03"
    with pytest.raises(InputError, match="season window"):
        season_grid(dates, FilterConfig(season_start="2019-01-01"))
    with pytest.raises(OptionError):
        season_grid(dates, FilterConfig(season_start="13-45"))
    with pytest.raises(OptionError):
        season_grid(dates, FilterConfig(season_start="spring"))


def _toy_block() -> SeriesBlock:
    """3 pixels x 4 bands (B03, B04, B05, B08) x 3 dates: canopy, canopy, bare soil; the middle date of pixel 1
    is cloudy."""
    canopy = {"B03": 0.08, "B04": 0.05, "B05": 0.12, "B08": 0.45}
    soil = {"B03": 0.12, "B04": 0.18, "B05": 0.21, "B08": 0.22}
    bands = {b: np.array([[canopy[b], canopy[b], soil[b]]] * 3, dtype=np.float32) for b in canopy}
    invalid = np.zeros((3, 3), bool)
    invalid[1, 1] = True
    return SeriesBlock(dates=_days(0, 10, 20), bands=bands, variables={}, invalid=invalid, shape=(1, 3))


def test_filter_features_match_hand_values_on_a_toy_input():
    f = PhotochemicalFilter(FilterConfig(length=5, step_days=5, season_start="2021-03-01"))
    f.resolve(["B03", "B04", "B05", "B08"], [])
    per_date, ndvi = f.date_features(_toy_block())
    # canopy: WDVI = .40 -> LAI = ln 3 / .4; TCARI/OSAVI = .1524 / .70303 (hand values as in test_indices)
    np.testing.assert_allclose(per_date[0, 0, :2], 2.746531, rtol=1e-5)
    np.testing.assert_allclose(per_date[0, 1, :2], 1.528891, rtol=1e-5)
    np.testing.assert_allclose(ndvi[0], [0.8, 0.8, (0.22 - 0.18) / 0.40], rtol=1e-5)
    grid = season_grid(_toy_block().dates, f.cfg)
    fb = f.filter(_toy_block(), grid)
    assert fb.x.shape == (3, 2, 5) and not np.isnan(fb.x).any()
    assert fb.n_valid.tolist() == [3, 2, 3]
    # pixel 1 has 2 cloud-free dates (< min_valid_dates 3), pixel 2 is bare soil (NDVI never reaches 0.2)
    assert fb.keep.tolist() == [True, False, False]
    f.cfg.min_valid_dates = 2
    fb = f.filter(_toy_block(), grid)
    assert fb.keep.tolist() == [True, True, False]
    np.testing.assert_allclose(fb.raw[1, 0], 2.746531, rtol=1e-5)  # constant across the cloudy date
    assert (fb.x[2] == 0).all()  # dropped pixels are 0, the neutral standardised value


def test_statistics_and_config_round_trip():
    rng = np.random.default_rng(0)
    raw = rng.normal([[3.0], [-1.0]], [[2.0], [0.5]], size=(500, 2, 32)).astype(np.float32)
    f = PhotochemicalFilter().fit_statistics(raw)
    x = f.standardise(raw)
    np.testing.assert_allclose(x.mean(axis=(0, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=(0, 2)), 1, atol=1e-3)
    d = f.to_dict()
    g = PhotochemicalFilter.from_dict(d)
    assert g.cfg == f.cfg and g.fitted
    with pytest.raises(InputError):
        PhotochemicalFilter.from_dict({"kind": "pca"})
    with pytest.raises(InputError):
        PhotochemicalFilter().fit_statistics(raw[:0])


def test_resolve_checks_bands_and_features():
    f = PhotochemicalFilter()
    with pytest.raises(BandMismatchError, match="B05"):
        f.resolve(["B03", "B04", "B08"], [])
    assert PhotochemicalFilter().resolve(["B3", "B4", "B5", "B8A"], []).cfg.nir == "B8A"
    one = PhotochemicalFilter(FilterConfig(features=("NDVI",))).resolve([], ["NDVI", "CLP"])
    assert one.needed_bands(["NDVI", "CLP"]) == [] and one.needed_variables(["NDVI", "CLP"]) == ["NDVI"]
    with pytest.raises(OptionError, match="neither an index"):
        PhotochemicalFilter(FilterConfig(features=("foo",))).resolve(["B04", "B08"], [])


def test_masks_soil_line_and_peak():
    assert scl_cloud_mask(np.array([0, 3, 4, 5, 8, 9, 10, 11], np.uint8)).tolist() == [
        False, True, False, False, True, True, True, False]
    nir = np.array([0.25, 0.30, 0.20, 0.45] * 5)
    red = np.array([0.20, 0.24, 0.16, 0.05] * 5)
    soil = bare_soil(nir, red)
    assert soil.tolist()[:4] == [True, True, True, False]
    assert estimate_soil_slope(nir, red, soil) == pytest.approx(1.25)
    with pytest.raises(InputError):
        estimate_soil_slope(nir[:4], red[:4], soil[:4])
    v = np.array([[0.1, 0.9], [0.15, 0.1], [0.95, 0.2], [0.12, 0.3]])  # one outlier date in pixel 0
    use = np.array([[True, True], [True, True], [True, False], [True, False]])
    assert robust_peak(v, use, q=0.5).tolist() == [0.12, 0.1]
    assert robust_peak(v, np.zeros_like(use)).tolist() == [-np.inf, -np.inf]


def test_read_block_masks_clouds_from_scl_without_a_cloud_variable():
    from hsikit.timeseries.simulator import simulate_series

    ds = simulate_series(fields_per_class=2, field_size=6, fallow_fields=1, seed=4)
    f = PhotochemicalFilter(FilterConfig(season_start="02-15")).resolve(list(ds["band"].values), [])
    bands = f.needed_bands([])
    with_cloud = read_block(ds, slice(2, 12), slice(0, 9), bands, [])
    scl_only = read_block(ds.drop_vars("cloud"), slice(2, 12), slice(0, 9), bands, [])
    assert with_cloud.shape == (10, 9) and with_cloud.bands["B05"].shape == (ds.sizes["time"], 90)
    np.testing.assert_array_equal(with_cloud.invalid, scl_only.invalid)
    assert with_cloud.invalid.any() and not with_cloud.invalid.all()
    # every block of the plan covers the grid exactly once
    cover = np.zeros((ds.sizes["y"], ds.sizes["x"]), int)
    for ys, xs in blocks(ds.sizes["x"], ds.sizes["y"], 7):
        cover[ys, xs] += 1
    assert (cover == 1).all()
    whole = read_block(ds, slice(None), slice(None), bands, [])
    grid = season_grid(ds["time"].values, f.cfg)
    fb = f.filter(whole, grid)
    lab = ds["labels"].values.ravel()
    assert not np.isnan(fb.x).any() and fb.x.shape[1:] == (2, 32)
    assert fb.keep[lab > 0].mean() > 0.95 and fb.keep[lab == 0].mean() < 0.05  # roads / fallow dropped
    parts = list(filter_in_chunks(f, whole, grid, chunk=100))
    assert len(parts) == int(np.ceil(whole.pixels / 100))
    np.testing.assert_array_equal(np.concatenate([p.keep for _, p in parts]), fb.keep)
    np.testing.assert_array_equal(np.concatenate([p.raw for _, p in parts]), fb.raw)
