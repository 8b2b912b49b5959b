"""Multi-date Sentinel-2 series: one grid across tiles/UTM zones, sorted dates, masks, lazy dask backing, EOPatch."""

from __future__ import annotations

import json
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin, rowcol
from rasterio.windows import Window
from rasterio.warp import transform as warp_points

from hsikit.errors import BandMismatchError, InputError, OptionError
from hsikit.io.eopatch import open_eopatch
from hsikit.io.sentinel2 import Sentinel2Scene
from hsikit.io.timeseries import collect_inputs, open_series
from s2fake import write_eopatch, write_raster, write_safe, write_stack

LON, LAT = 12.0, 52.0  # on the border of UTM zones 32 and 33


def _feature_tile(parent, epsg, tile, when, east_shift=0.0, size=60):
    """A tile around (LON, LAT) whose B02 has a bright 40 m square centred on that point (in its own CRS)."""
    (x,), (y,) = warp_points("EPSG:4326", f"EPSG:{epsg}", [LON], [LAT])
    ulx = round((x - size * 5 + east_shift) / 10) * 10
    uly = round((y + size * 5) / 10) * 10
    cx = ulx + 10 * (np.arange(size) + 0.5)
    cy = uly - 10 * (np.arange(size) + 0.5)
    b02 = np.full((size, size), 1000, np.uint16)
    b02[np.ix_(np.abs(cy - y) < 20, np.abs(cx - x) < 20)] = 8000
    return write_safe(parent, epsg=epsg, tile=tile, ulx=ulx, uly=uly, size=size, when=when, bands={"B02": b02},
                      include=("B02", "B03", "B04", "B08"))


def _centroid(img, background):
    w = np.nan_to_num(img - background).clip(min=0)
    rr, cc = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    return (w * (rr + 0.5)).sum() / w.sum(), (w * (cc + 0.5)).sum() / w.sum()


def test_tiles_in_two_utm_zones_align_on_one_grid(tmp_path):
    a = _feature_tile(tmp_path, 32632, "T32UPD", "2023-06-03T10:20:00Z")
    b = _feature_tile(tmp_path, 32633, "T33UUU", "2023-06-08T10:20:00Z", east_shift=200.0)
    ds = open_series([b, a])  # order of the inputs does not matter: the earliest date gives the grid
    assert ds.rio.crs.to_epsg() == 32632 and ds.sizes == {"time": 2, "band": 4, "y": 60, "x": 60}
    assert list(ds.tile.values) == ["T32UPD", "T33UUU"]
    with rasterio.open(next(a.glob("GRANULE/*/IMG_DATA/R10m/*_B02_10m.jp2"))) as src:
        assert ds.rio.transform() == src.transform
    b02 = ds.reflectance.sel(band="B02").values
    bg = (1000 - 1000) / 10000.0
    ca, cb = _centroid(b02[0], bg), _centroid(b02[1], bg)
    (x,), (y,) = warp_points("EPSG:4326", "EPSG:32632", [LON], [LAT])
    tr = ds.rio.transform()
    point = ((tr.f - y) / 10.0, (x - tr.c) / 10.0)  # continuous (row, col) of the point on the grid
    assert abs(ca[0] - point[0]) < 0.6 and abs(ca[1] - point[1]) < 0.6
    assert abs(cb[0] - point[0]) < 0.6 and abs(cb[1] - point[1]) < 0.6
    r, c = rowcol(tr, x, y)
    assert b02[0, r, c] > 0.5 and b02[1, r, c] > 0.5  # both dates bright in the pixel holding the point
    # the second tile lies 200 m further east: the grid's western third has no data on that date
    valid = ds.valid.values
    assert valid[0].all()
    assert not valid[1][:, :15].any() and valid[1][8:52, 25:].all()  # UTM 33 is rotated ~4.7 deg vs 32
    assert 0.6 < valid[1].mean() < 0.73
    assert np.isnan(ds.reflectance.values[1][:, ~valid[1]]).all()
    # the same series on the second tile's CRS
    ds33 = open_series([a, b], crs="EPSG:32633", resolution=10)
    assert ds33.rio.crs.to_epsg() == 32633 and ds33.sizes["x"] >= 60


def _series_safes(tmp_path):
    scl1 = np.full((30, 30), 4, np.uint8)
    scl1[:10] = 9  # top third cloudy
    scl1[10:12] = 3  # cloud shadow
    scl2 = np.full((30, 30), 5, np.uint8)
    scl2[:, :3] = 10  # cirrus
    b02_late = np.full((60, 60), 3000, np.uint16)
    return [
        write_safe(tmp_path, when="2023-07-20T10:15:59Z", scl=scl2, bands={"B02": b02_late}),
        write_safe(tmp_path, when="2023-06-03T10:15:59Z", scl=scl1, baseline="04.00"),
        write_safe(tmp_path, when="2021-05-01T10:15:59Z", level="L1C", baseline="03.01"),
    ]


def test_series_contract(tmp_path):
    _series_safes(tmp_path)
    ds = open_series(tmp_path, chunks=32)  # a folder of SAFE products
    assert list(ds.data_vars) == ["reflectance", "cloud", "valid"]
    assert ds.reflectance.dims == ("time", "band", "y", "x") and ds.reflectance.dtype == np.float32
    assert ds.cloud.dims == ("time", "y", "x") and ds.cloud.dtype == bool and ds.valid.dtype == bool
    for v in ds.data_vars.values():
        assert isinstance(v.data, da.Array)
    assert ds.time.dtype == np.dtype("datetime64[ns]")
    assert [str(t)[:10] for t in ds.time.values] == ["2021-05-01", "2023-06-03", "2023-07-20"]
    # L1C has B10, L2A does not: only shared bands are kept
    assert "B10" not in ds.band.values and list(ds.band.values)[:3] == ["B01", "B02", "B03"]
    assert ds.wavelength.sel(band="B8A") == pytest.approx(864.7)
    assert list(ds.level.values) == ["L1C", "L2A", "L2A"]
    assert list(ds.cloud_source.values) == ["none", "SCL", "SCL"]
    assert ds.x.values[0] == pytest.approx(300005.0) and ds.y.values[0] == pytest.approx(5900035.0)
    assert ds.rio.crs.to_epsg() == 32633 and ds.rio.transform().a == 10.0
    refl, cloud, valid = ds.reflectance.values, ds.cloud.values, ds.valid.values
    b02 = list(ds.band.values).index("B02")
    # default DN of B02 is 1100: 0.11 without offset (L1C 03.01), 0.01 with (L2A 04.00); 3000 -> 0.2
    np.testing.assert_allclose(refl[:, b02, 5, 5], [0.11, 0.01, 0.2], atol=1e-6)
    assert valid.all()
    assert not cloud[0].any()
    np.testing.assert_array_equal(cloud[1], np.repeat(np.repeat(np.isin(
        np.r_[np.full(10, 9), np.full(2, 3), np.full(18, 4)], [3, 8, 9, 10]), 2)[:, None], 60, axis=1))
    assert cloud[2][:, :6].all() and not cloud[2][:, 6:].any()


def _count_reads(monkeypatch) -> list[tuple[str, object, tuple[str, ...]]]:
    """Record (scene, window, files) of every pixel read of a Sentinel-2 scene."""
    calls = []
    real = Sentinel2Scene._read

    def counting(self, window, bands):
        calls.append((self.name, window, tuple(sorted({Path(self.layers[b].path).name for b in bands}))))
        return real(self, window, bands)

    monkeypatch.setattr(Sentinel2Scene, "_read", counting)
    return calls


def test_series_is_lazy(tmp_path, monkeypatch):
    _series_safes(tmp_path)
    calls = _count_reads(monkeypatch)
    ds = open_series(tmp_path, chunks=16, bands=["B04", "B08"])
    assert ds.reflectance.data.chunksize == (1, 1, 16, 16)  # one band of one date per chunk
    assert calls == []  # building the dataset reads no pixel
    assert list(ds.band.values) == ["B04", "B08"]
    small = ds.reflectance.isel(time=1, y=slice(0, 10), x=slice(0, 10)).values
    assert small.shape == (2, 10, 10)
    assert len(calls) == 2  # one 16 x 16 block of one date, per band
    assert {c[1] for c in calls} == {Window(0, 0, 16, 16)} and all(len(c[2]) == 1 for c in calls)
    ds.valid.isel(time=0).values
    assert len(calls) == 2 + 16 * 2  # every block of date 0 (60 x 60 in 16 px chunks), band by band


def test_selecting_bands_reads_only_their_files(tmp_path, monkeypatch):
    _series_safes(tmp_path)
    ds = open_series(tmp_path, chunks=32)  # every band
    assert len(ds.band) > 4
    calls = _count_reads(monkeypatch)
    sub = ds.reflectance.sel(band=["B04", "B08"]).isel(y=slice(0, 40), x=slice(0, 40)).values
    assert sub.shape == (3, 2, 40, 40) and np.isfinite(sub).all()
    files = {f for c in calls for f in c[2]}
    assert files and all(("B04" in f) or ("B08" in f) for f in files), files
    assert {f for f in files if "B04" in f} and {f for f in files if "B08" in f}
    assert len(calls) == 3 * 2 * 4  # dates x bands x 32-px blocks of the 40 x 40 window
    np.testing.assert_array_equal(sub, ds.reflectance.values[:, [list(ds.band.values).index(b) for b in ("B04", "B08")], :40, :40])


def test_series_pickles_for_process_and_distributed_schedulers(tmp_path):
    import pickle

    _series_safes(tmp_path)
    ds = open_series(tmp_path, chunks=32)
    ds.reflectance.isel(time=0, x=slice(0, 5), y=slice(0, 5)).values  # opens some files first
    clone = pickle.loads(pickle.dumps(ds))
    np.testing.assert_array_equal(clone.reflectance.values, ds.reflectance.values)
    np.testing.assert_array_equal(clone.cloud.values, ds.cloud.values)


def test_grid_options(tmp_path):
    _series_safes(tmp_path)
    ds = open_series(tmp_path, resolution=20)
    assert ds.sizes["x"] == 30 and ds.rio.transform().a == 20.0
    ds = open_series(tmp_path, bounds=(300100, 5899600, 300300, 5899900))
    assert (ds.sizes["x"], ds.sizes["y"]) == (20, 30)
    assert ds.x.values[0] == pytest.approx(300105.0)
    with pytest.raises(OptionError, match="bounds"):
        open_series(tmp_path, bounds=(1, 1, 0, 0))
    with pytest.raises(OptionError, match="unknown CRS"):
        open_series(tmp_path, crs="EPSG:not")
    with pytest.raises(BandMismatchError, match="lacks band.*B10"):
        open_series(tmp_path, bands=["B10"])


def test_same_time_on_two_tiles_is_merged(tmp_path):
    when = "2023-06-03T10:15:59Z"
    write_safe(tmp_path, tile="T33UUU", ulx=300000, when=when, bands={"B02": np.full((60, 60), 2000, np.uint16)})
    write_safe(tmp_path, tile="T33UUV", ulx=300300, when=when, bands={"B02": np.full((60, 60), 4000, np.uint16)})
    ds = open_series(tmp_path, bounds=(300000, 5899440, 300900, 5900040), bands=["B02"])
    assert ds.sizes["time"] == 1 and ds.sizes["x"] == 90
    assert ds.tile.values[0] == "T33UUU+T33UUV"
    b02 = ds.reflectance.values[0, 0]
    assert ds.valid.values.all()
    # the overlap (x 300300..300600) comes from the first input in path order
    np.testing.assert_allclose(b02[:, :60], 0.1, atol=1e-6)
    np.testing.assert_allclose(b02[:, 60:], 0.3, atol=1e-6)


def test_geotiff_stacks_with_dates_and_masks(tmp_path):
    tr = from_origin(300000.0, 5900040.0, 10.0, 10.0)
    data = np.full((5, 20, 20), 2000, np.uint16)
    data[4] = 4
    data[4, :4] = 8
    write_stack(tmp_path / "tagged.tif", data, ["B2", "B3", "B4", "B8", "SCL"],
                tags={"ACQUISITION_DATE": "2023-07-01T10:00:00"})
    write_stack(tmp_path / "s2_20230615.tif", data[:4] + 1000, ["B2", "B3", "B4", "B8"])
    cloud = np.zeros((20, 20), np.uint8)
    cloud[:, :2] = 1
    write_raster(tmp_path / "s2_20230615_cloud.tif", cloud, crs=CRS.from_epsg(32633), transform=tr, driver="GTiff")
    write_stack(tmp_path / "tiffdate.tif", data[:4], ["B02", "B03", "B04", "B08"],
                tags={"TIFFTAG_DATETIME": "2023:05:01 09:30:00"})
    assert len(collect_inputs(tmp_path)) == 3  # the _cloud file is a mask, not a date
    ds = open_series(tmp_path)
    assert [str(t)[:19] for t in ds.time.values] == ["2023-05-01T09:30:00", "2023-06-15T00:00:00",
                                                     "2023-07-01T10:00:00"]
    assert list(ds.band.values) == ["B02", "B03", "B04", "B08"]
    assert list(ds.cloud_source.values) == ["none", "file", "SCL"]
    np.testing.assert_allclose(ds.reflectance.values[:, 0, 0, 0], [0.2, 0.3, 0.2], atol=1e-6)
    cl = ds.cloud.values
    assert not cl[0].any() and cl[1][:, :2].all() and not cl[1][:, 2:].any()
    assert cl[2][:4].all() and not cl[2][4:].any()
    write_stack(tmp_path / "undated.tif", data[:4], ["B02", "B03", "B04", "B08"])
    with pytest.raises(InputError, match="undated.tif: no acquisition date"):
        open_series(tmp_path)


def test_mixed_safe_and_geotiff_reprojected(tmp_path):
    safe = write_safe(tmp_path, when="2023-06-03T10:00:00Z", include=("B02", "B03", "B04", "B08"),
                      bands={"B04": np.full((60, 60), 2500, np.uint16)})
    # the same area as a 20 m GeoTIFF in geographic coordinates (as GEE exports give)
    from rasterio.warp import transform_bounds

    l, b, r, t = transform_bounds("EPSG:32633", "EPSG:4326", 299900, 5899340, 300700, 5900140)
    tr = from_origin(l, t, (r - l) / 40, (t - b) / 40)
    tif = write_stack(tmp_path / "gee_20230610.tif", np.full((2, 40, 40), 3500, np.uint16), ["B4", "B8"],
                      epsg=4326, transform=tr)
    ds = open_series([tif, safe])
    assert ds.rio.crs.to_epsg() == 32633 and list(ds.band.values) == ["B04", "B08"]
    assert ds.valid.values.all()
    np.testing.assert_allclose(ds.reflectance.sel(band="B04").values[:, 30, 30], [0.15, 0.35], atol=1e-6)


def test_input_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        open_series(tmp_path / "missing")
    with pytest.raises(InputError, match="holds no"):
        open_series(tmp_path)
    safe = write_safe(tmp_path / "a")
    with pytest.raises(InputError, match="given twice"):
        open_series([safe, safe / "MTD_MSIL2A.xml"])
    patch = write_eopatch(tmp_path / "patch", times=["2020-01-01"])
    with pytest.raises(InputError, match="EOPatch"):
        open_series([safe, patch])


def test_fake_eopatch_conventions(tmp_path):
    times = ["2020-01-03T10:00:00", "2020-01-01T10:00:00", "2020-01-02T10:00:00"]
    root = write_eopatch(tmp_path / "patch", times=times)
    ds = open_series(root)  # dispatches to open_eopatch
    ndvi = np.load(root / "data" / "NDVI.npy")
    assert [str(t)[:10] for t in ds.time.values] == ["2020-01-01", "2020-01-02", "2020-01-03"]
    assert ds.NDVI.dims == ("time", "y", "x") and ds.NDVI.dtype == np.float32
    np.testing.assert_array_equal(ds.NDVI.values[0], ndvi[1, ..., 0])  # reordered with its time
    np.testing.assert_array_equal(ds.cloud.values[2], np.load(root / "mask" / "CLM.npy")[0, ..., 0] > 0)
    assert not ds.valid.values[2, 0, 0] and ds.valid.values[0].all()
    assert ds.LULC.dims == ("y", "x")
    assert ds.rio.crs.to_epsg() == 32633
    assert ds.x.values[0] == pytest.approx(465185.0) and ds.y.values[0] == pytest.approx(5079295.0)
    assert isinstance(ds.NDVI.data, da.Array)


@pytest.mark.shared
def test_real_eopatch(shared_data):
    root = shared_data / "eolearn_s2_timeseries"
    ds = open_eopatch(root)
    assert ds.sizes["time"] == 68 and (ds.sizes["y"], ds.sizes["x"]) == (101, 100)
    stamps = json.loads((root / "timestamps.json").read_text())
    assert str(ds.time.values[0])[:19] == stamps[0] and str(ds.time.values[-1])[:10] == "2017-12-22"
    assert (np.diff(ds.time.values) > np.timedelta64(0)).all()
    ndvi = np.load(root / "data" / "NDVI.npy", mmap_mode="r")
    np.testing.assert_array_equal(ds.NDVI.values[10], ndvi[10, ..., 0])
    clm = np.load(root / "mask" / "CLM.npy", mmap_mode="r")
    assert int(ds.cloud.sum()) == int((clm > 0).sum())
    lulc = ds.LULC.values
    assert lulc.shape == (101, 100)
    counts = dict(zip(*np.unique(lulc, return_counts=True)))
    assert counts == {0: 155, 1: 11, 2: 7601, 3: 1777, 4: 358, 8: 198}
    assert "forest" in ds.LULC.attrs["flag_meanings"]
    assert ds.rio.crs.to_epsg() == 32633
    left, top = ds.rio.transform().c, ds.rio.transform().f
    assert left == pytest.approx(465181.0522318204) and top == pytest.approx(5080254.63349641)
    same = open_series(root)
    assert same.sizes["time"] == 68
