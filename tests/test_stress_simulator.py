"""The wheat-stress Sentinel-2 simulator: layout contract, seeding, physics sanity, clouds, GeoTIFF output."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from hsikit.errors import OptionError
from hsikit.timeseries.indices import compute_index
from hsikit.timeseries.simulator import (BANDS, CLASS_NAMES, SimConfig, acquisition_calendar, simulate_series,
                                         single_date_ndvi_oa, write_series)


@pytest.fixture(scope="module")
def ds():
    return simulate_series(fields_per_class=4, field_size=8, seed=11)


def test_layout_matches_the_time_series_contract(ds):
    r = ds["reflectance"]
    assert r.dims == ("time", "band", "y", "x") and r.dtype == np.float32
    assert ds["cloud"].dims == ds["valid"].dims == ("time", "y", "x")
    assert ds["cloud"].dtype == bool and ds["valid"].dtype == bool
    assert list(ds["band"].values) == list(BANDS) and "wavelength" in ds.coords
    t = ds["time"].values
    assert t.dtype == np.dtype("datetime64[ns]") and (np.diff(t) > np.timedelta64(0)).all()
    v = r.values
    assert np.nanmin(v) > 0 and np.nanmax(v) <= 1
    assert ds.rio.crs.to_epsg() == 32650 and ds.rio.transform().a == 10.0
    np.testing.assert_array_equal(np.isnan(v).any(axis=1), ~ds["valid"].values)
    np.testing.assert_array_equal(ds["cloud"].values, np.isin(ds["SCL"].values, (3, 8, 9, 10)))
    assert 0.05 < ds["cloud"].values.mean() < 0.6  # some dates cloudy, most pixels usable
    assert json.loads(ds.attrs["class_names"]) == list(CLASS_NAMES)


def test_fields_labels_and_seeding(ds):
    lab, fid = ds["labels"].values, ds["fields"].values
    assert set(np.unique(lab)) == {0, 1, 2, 3} and fid.max() == 12
    for f in range(1, 13):
        assert len(np.unique(lab[fid == f])) == 1 and (fid == f).sum() == 64
    assert ((lab == 0) == (fid == 0)).all()
    again = simulate_series(fields_per_class=4, field_size=8, seed=11)
    np.testing.assert_array_equal(again["reflectance"].values, ds["reflectance"].values)
    other = simulate_series(fields_per_class=4, field_size=8, seed=12)
    assert not np.array_equal(other["labels"].values, lab) or not np.allclose(
        np.nan_to_num(other["reflectance"].values[:5]), np.nan_to_num(ds["reflectance"].values[:5]))


def test_irregular_calendar():
    rng = np.random.default_rng(0)
    days = acquisition_calendar(SimConfig(), rng)
    gaps = np.diff(days)
    assert days.min() >= 40 and days.max() <= 215 and len(set(gaps.tolist())) > 1 and gaps.min() >= 1
    assert acquisition_calendar(SimConfig(n_dates=60), rng).size == 60
    with pytest.raises(OptionError):
        SimConfig(n_dates=1000)


def test_stress_signatures(ds):
    """Clear-sky means: all classes green up; rust loses chlorophyll after onset; N deficiency has less
    chlorophyll through the season and less canopy; a healthy canopy at peak has NDVI > 0.8."""
    r = ds["reflectance"]
    bands = {b: r.sel(band=b).values for b in ("B03", "B04", "B05", "B08")}
    ok = ~ds["cloud"].values & ds["valid"].values
    lcc = np.where(ok, compute_index("lcc", bands), np.nan)
    ndvi = np.where(ok, compute_index("ndvi", bands), np.nan)
    lab = ds["labels"].values
    doy = (ds["time"].values.astype("datetime64[D]") - np.datetime64("2021-01-01")).astype(int) + 1

    def mean(a, cls, lo, hi):
        m = (doy >= lo) & (doy <= hi)
        return float(np.nanmean(a[m][:, lab == cls]))

    assert mean(ndvi, 1, 120, 160) > 0.8 and mean(ndvi, 1, 40, 60) < 0.5
    # chlorophyll: rust ≈ healthy before onset, clearly lower once infection develops
    assert abs(mean(lcc, 2, 95, 110) - mean(lcc, 1, 95, 110)) < 0.1
    assert mean(lcc, 2, 160, 180) < mean(lcc, 1, 160, 180) - 0.1
    assert mean(lcc, 3, 120, 160) < mean(lcc, 1, 120, 160) - 0.1
    assert mean(ndvi, 3, 90, 120) < mean(ndvi, 1, 90, 120)


def test_single_date_ndvi_is_not_enough():
    d = simulate_series(fields_per_class=8, field_size=6, seed=3)
    best = single_date_ndvi_oa(d, train_fields=np.arange(1, 13))
    assert best["date"] is not None and 0.4 < best["oa"] < 0.8


def test_write_series_geotiffs(ds, tmp_path):
    paths = write_series(ds, tmp_path / "sim")
    assert len(paths["dates"]) == ds.sizes["time"] and all(p.exists() for p in paths["scl"])
    with rasterio.open(paths["dates"][3]) as src:
        assert src.crs.to_epsg() == 32650 and src.transform == ds.rio.transform()
        assert src.descriptions == BANDS and src.dtypes[0] == "uint16" and src.nodata == 0
        assert src.tags()["ACQUISITION_DATE"] == str(ds["time"].values[3])[:10]
        dn = src.read()
    ref = ds["reflectance"].isel(time=3).values
    np.testing.assert_allclose(np.where(dn > 0, dn / 1e4, np.nan), ref, atol=6e-5)
    with rasterio.open(paths["labels"]) as src:
        assert json.loads(src.tags()["HSIKIT_CLASS_NAMES"]) == list(CLASS_NAMES)
        np.testing.assert_array_equal(src.read(1), ds["labels"].values)
    meta = json.loads(paths["metadata"].read_text())
    assert len(meta["fields"]) == 12 and meta["simulator"]["seed"] == 11
    from hsikit.errors import OutputError

    with pytest.raises(OutputError):
        write_series(ds, tmp_path / "sim")
    timeseries = pytest.importorskip("hsikit.io.timeseries")
    back = timeseries.open_series(paths["series"])
    np.testing.assert_allclose(back["reflectance"].sel(band=list(BANDS)).values, ds["reflectance"].values,
                               atol=6e-5)
    np.testing.assert_array_equal(back["cloud"].values, ds["cloud"].values)
