"""Sentinel-2 product reading: SAFE metadata, scale/offset, resampling onto one grid, SCL/cloud masks, GeoTIFF stacks.

The fake products (tests/s2fake.py) hold real JPEG 2000 band files, written losslessly with GDAL's JP2OpenJPEG
driver, in the ESA SAFE layout.
"""

from __future__ import annotations

import pickle
import shutil
from datetime import datetime

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from hsikit.errors import BandMismatchError, InputError, OptionError
from hsikit.io.open import open_scene
from hsikit.io.sentinel2 import (CLOUD_CLASSES, Grid, Sentinel2Scene, baseline_tuple, cloud_mask, date_in_name,
                                 open_s2_geotiff, open_safe, parse_time, read_safe_metadata, reflectance)
from hsikit.preprocess.sensors import SENTINEL2
from s2fake import write_raster, write_safe, write_stack


def _const(shape, value):
    return np.full(shape, value, dtype=np.uint16)


# ---------------------------------------------------------------------------------------------------------------
# metadata
# ---------------------------------------------------------------------------------------------------------------
def test_fake_band_files_are_real_jpeg2000(tmp_path):
    root = write_safe(tmp_path)
    f = next(root.glob("GRANULE/*/IMG_DATA/R10m/*_B02_10m.jp2"))
    with rasterio.open(f) as ds:
        assert ds.driver == "JP2OpenJPEG"
        assert ds.crs.to_epsg() == 32633 and ds.res == (10.0, 10.0)


def test_l2a_metadata(tmp_path):
    root = write_safe(tmp_path, baseline="05.10", when="2023-06-03T10:15:59.024Z", tile="T33UUU", epsg=32633)
    info = read_safe_metadata(root)
    assert info.level == "L2A" and info.baseline == "05.10"
    assert info.quantification == 10000.0
    assert info.add_offsets["B02"] == -1000.0 and info.add_offsets["B8A"] == -1000.0
    assert info.sensing_time == datetime(2023, 6, 3, 10, 15, 59, 24000)
    assert info.tile == "T33UUU" and info.epsg == 32633
    assert info.spacecraft == "Sentinel-2A" and info.cloud_cover == 12.5
    assert set(info.band_files["B02"]) == {10, 20, 60} and set(info.band_files["B05"]) == {20, 60}
    assert "B10" not in info.band_files
    # QI_DATA/MSK_QUALIT_B01.jp2 is not band B01
    assert all("QI_DATA" not in str(f) for f in info.band_files["B01"].values())
    # the MTD xml itself opens the same product
    assert read_safe_metadata(root / "MTD_MSIL2A.xml").path == root


def test_l1c_metadata(tmp_path):
    root = write_safe(tmp_path, level="L1C", baseline="04.00", epsg=32632, tile="T32UQD")
    info = read_safe_metadata(root)
    assert info.level == "L1C" and info.epsg == 32632 and info.tile == "T32UQD"
    assert info.add_offsets["B10"] == -1000.0
    assert {b: sorted(r) for b, r in info.band_files.items()}["B10"] == [60]


@pytest.mark.parametrize("level, baseline, expected", [
    ("L2A", "04.00", 0.05),  # (1500 - 1000) / 10000
    ("L2A", "05.10", 0.05),
    ("L2A", "03.01", 0.15),  # no offset before 04.00
    ("L1C", "04.00", 0.05),  # RADIO_ADD_OFFSET
    ("L1C", "02.09", 0.15),
])
def test_scale_and_offset_known_values(tmp_path, level, baseline, expected):
    root = write_safe(tmp_path, level=level, baseline=baseline, bands={"B02": _const((60, 60), 1500)})
    with open_safe(root, bands=["B02"]) as sc:
        assert sc.bands.scale == (1e-4,)
        assert sc.bands.offset == pytest.approx(((expected - 0.15),))
        r = reflectance(sc)
    assert r.dtype == np.float32
    np.testing.assert_allclose(r, expected, atol=1e-7)


def test_baseline_04_without_offsets_assumes_minus_1000(tmp_path):
    root = write_safe(tmp_path, baseline="04.00", offsets=False, bands={"B03": _const((60, 60), 1500)})
    with pytest.warns(UserWarning, match="no BOA_ADD_OFFSET"):
        sc = open_safe(root, bands=["B03"])
    np.testing.assert_allclose(reflectance(sc), 0.05, atol=1e-7)


def test_band_names_and_wavelengths(tmp_path):
    l2a = open_safe(write_safe(tmp_path / "a"))
    l1c = open_safe(write_safe(tmp_path / "b", level="L1C"))
    assert l2a.bands.names == tuple(b for b in SENTINEL2.bands if b != "B10")
    assert l1c.bands.names == SENTINEL2.bands
    pos = {b: i for i, b in enumerate(SENTINEL2.bands)}
    for sc in (l2a, l1c):
        assert sc.bands.wavelengths == tuple(SENTINEL2.centers[pos[b]] for b in sc.bands.names)
        assert sc.bands.fwhm == tuple(SENTINEL2.fwhm[pos[b]] for b in sc.bands.names)
        assert sc.dtype == "uint16" and sc.nodata == 0 and sc.shape[1:] == (60, 60)
    with open_safe(write_safe(tmp_path / "c"), bands=["b8a", "B2", "B11"]) as sc:
        assert sc.bands.names == ("B8A", "B02", "B11")


# ---------------------------------------------------------------------------------------------------------------
# resampling onto one grid
# ---------------------------------------------------------------------------------------------------------------
def test_10m_band_is_read_unchanged_and_20m_band_keeps_constant_blocks(tmp_path):
    rng = np.random.default_rng(1)
    b02 = rng.integers(1, 5000, size=(60, 60)).astype(np.uint16)
    # B05 (20 m, 30x30) made of 5x5-pixel constant blocks, each with its own value
    blocks = rng.integers(1000, 6000, size=(6, 6)).astype(np.uint16)
    b05 = np.repeat(np.repeat(blocks, 5, axis=0), 5, axis=1)
    root = write_safe(tmp_path, level="L1C", bands={"B02": b02, "B05": b05})
    with open_safe(root, resolution=10, bands=["B02", "B05"]) as sc:
        assert (sc.width, sc.height) == (60, 60)
        data = sc.read()
    np.testing.assert_array_equal(data[0], b02)
    up = np.repeat(np.repeat(blocks, 10, axis=0), 10, axis=1)
    # bilinear interpolation changes only the pixel on each side of a block edge
    interior = np.zeros((60, 60), bool)
    for i in range(6):
        for j in range(6):
            interior[i * 10 + 1:i * 10 + 9, j * 10 + 1:j * 10 + 9] = True
    np.testing.assert_array_equal(data[1][interior], up[interior])
    # at block edges the value lies between the neighbouring blocks
    assert data[1].min() >= blocks.min() and data[1].max() <= blocks.max()


def test_downsampling_averages_and_uses_the_products_own_20m_file(tmp_path):
    # 2x2 blocks of 1000, 2000, 3000, 6000 average to exactly 3000
    tile = np.array([[1000, 2000], [3000, 6000]], np.uint16)
    b02 = np.tile(tile, (30, 30))
    l1c = write_safe(tmp_path / "l1c", level="L1C", bands={"B02": b02})
    with open_safe(l1c, resolution=20, bands=["B02"]) as sc:
        assert (sc.width, sc.height) == (30, 30) and sc.res == (20.0, 20.0)
        np.testing.assert_array_equal(sc.read()[0], 3000)
    # L2A ships B02 at 20 m: that file is read as is (here given a value no average could give)
    l2a = write_safe(tmp_path / "l2a", bands={"B02": b02})
    f20 = next(l2a.glob("GRANULE/*/IMG_DATA/R20m/*_B02_20m.jp2"))
    write_raster(f20, _const((30, 30), 4321), crs=CRS.from_epsg(32633), transform=from_origin(300000, 5900040, 20, 20))
    with open_safe(l2a, resolution=20, bands=["B02"]) as sc:
        np.testing.assert_array_equal(sc.read()[0], 4321)
    with open_safe(l2a, resolution=60) as sc:
        assert (sc.width, sc.height) == (10, 10)


def test_windowed_reads_match_the_full_read(tmp_path):
    rng = np.random.default_rng(2)
    bands = {"B05": rng.integers(1, 9000, (30, 30)).astype(np.uint16),
             "B01": rng.integers(1, 9000, (10, 10)).astype(np.uint16)}
    with open_safe(write_safe(tmp_path, level="L1C", bands=bands), bands=["B01", "B05", "B04"]) as sc:
        full = sc.read()
        for w in (Window(0, 0, 17, 23), Window(17, 23, 25, 20), Window(42, 43, 18, 17), Window(59, 0, 1, 60)):
            part = sc.read(w)
            np.testing.assert_array_equal(part, full[:, w.row_off:w.row_off + w.height, w.col_off:w.col_off + w.width])
        np.testing.assert_array_equal(sc.read(Window(5, 5, 10, 10), bands=[1]), full[1:2, 5:15, 5:15])


def test_nodata_pixels_are_nan_and_invalid(tmp_path):
    b02 = _const((60, 60), 1500)
    b02[:10, :10] = 0
    with open_safe(write_safe(tmp_path, bands={"B02": b02})) as sc:
        valid = sc.read_valid()
        r = reflectance(sc)
        sub = reflectance(sc, Window(0, 0, 20, 20), bands=[1, 3])
    assert not valid[:10, :10].any() and valid[10:, :].all() and valid[:, 10:].all()
    assert np.isnan(r[:, :10, :10]).all() and not np.isnan(r[:, 10:, 10:]).any()
    assert sub.shape == (2, 20, 20) and np.isnan(sub[:, :10, :10]).all()
    np.testing.assert_allclose(sub[0, 10:, 10:], 0.05, atol=1e-7)


def test_on_grid_reprojects_to_another_utm_zone(tmp_path):
    with open_safe(write_safe(tmp_path, bands={"B02": _const((60, 60), 2500)})) as sc:
        from rasterio.warp import transform_bounds

        l, b, r, t = transform_bounds(sc.crs, "EPSG:32632", *sc.grid.bounds)
        grid = Grid(CRS.from_epsg(32632), from_origin(round(l) - 100, round(t) + 100, 10, 10),
                    int((r - l) // 10) + 20, int((t - b) // 10) + 20)
        moved = sc.on_grid(grid, ["B02"])
    assert moved.crs.to_epsg() == 32632 and moved.bands.names == ("B02",)
    data, valid = moved.read()[0], moved.read_valid()
    assert set(np.unique(data[valid])) == {2500}
    assert valid.any() and not valid[0, 0] and not valid[-1, -1]


# ---------------------------------------------------------------------------------------------------------------
# SCL and cloud masks
# ---------------------------------------------------------------------------------------------------------------
def test_scl_classes_make_the_cloud_mask(tmp_path):
    scl = (np.arange(30 * 30).reshape(30, 30) % 12).astype(np.uint8)
    root = write_safe(tmp_path, scl=scl)
    with open_safe(root, resolution=20) as sc:
        assert sc.cloud_source == "SCL" and "SCL" in sc.layer_names
        np.testing.assert_array_equal(sc.read_layer("SCL"), scl)
        m = sc.cloud_mask()
    np.testing.assert_array_equal(m, np.isin(scl, [3, 8, 9, 10]))
    assert CLOUD_CLASSES == (3, 8, 9, 10)
    assert m.sum() == sum((scl == c).sum() for c in (3, 8, 9, 10))
    # 10 m: SCL is nearest-neighbour resampled, each 20 m class covers 2x2 pixels
    with open_safe(root, resolution=10) as sc:
        np.testing.assert_array_equal(sc.read_layer("SCL"), np.repeat(np.repeat(scl, 2, 0), 2, 1))
        np.testing.assert_array_equal(cloud_mask(sc, Window(0, 0, 8, 8)),
                                      np.isin(np.repeat(np.repeat(scl[:4, :4], 2, 0), 2, 1), CLOUD_CLASSES))
    np.testing.assert_array_equal(cloud_mask(scl, classes=[9]), scl == 9)


def test_cloud_masks_from_qi_data(tmp_path):
    classi = np.zeros((3, 10, 10), np.uint8)
    classi[0, :2] = 1  # opaque clouds: rows 0-1
    classi[1, :, :3] = 1  # cirrus: cols 0-2
    classi[2, 5:] = 1  # snow is not cloud
    with open_safe(write_safe(tmp_path / "l1c", level="L1C", classi=classi), resolution=60) as sc:
        assert sc.cloud_source == "MSK_CLASSI"
        np.testing.assert_array_equal(sc.cloud_mask(), (classi[0] > 0) | (classi[1] > 0))
    prob = np.zeros((30, 30), np.uint8)
    prob[:, 10:] = 49
    prob[:, 20:] = 80
    with open_safe(write_safe(tmp_path / "l2a", cldprb=prob), resolution=20) as sc:
        assert sc.cloud_source == "MSK_CLDPRB"
        np.testing.assert_array_equal(sc.cloud_mask(), prob >= 50)
    with open_safe(write_safe(tmp_path / "none")) as sc:
        assert sc.cloud_source == "none" and not sc.cloud_mask().any()
        with pytest.raises(OptionError, match="no SCL layer"):
            sc.read_layer("SCL")


# ---------------------------------------------------------------------------------------------------------------
# entry points, errors, laziness
# ---------------------------------------------------------------------------------------------------------------
def test_open_scene_opens_safe_folders_and_mtd_files(tmp_path):
    root = write_safe(tmp_path)
    for p in (root, root / "MTD_MSIL2A.xml"):
        with open_scene(p) as sc:
            assert isinstance(sc, Sentinel2Scene) and sc.count == 12 and sc.res == (10.0, 10.0)
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(InputError, match="directory"):
        open_scene(plain)


def test_open_safe_errors(tmp_path):
    root = write_safe(tmp_path, include=("B02", "B03", "B04"))
    with pytest.raises(OptionError, match="10, 20 or 60"):
        open_safe(root, resolution=30)
    with pytest.raises(BandMismatchError, match="lacks band.*B05"):
        open_safe(root, bands=["B02", "B05"])
    with pytest.raises(OptionError, match="not a Sentinel-2 band"):
        open_safe(root, bands=["NIR"])
    with pytest.raises(InputError, match="not a Sentinel-2 SAFE"):
        open_safe(tmp_path)
    gran = next((root / "GRANULE").iterdir())
    shutil.copytree(gran, root / "GRANULE" / gran.name.replace("T33UUU", "T33UVV"))
    with pytest.raises(InputError, match="2 granules"):
        open_safe(root)
    with open_safe(root, granule="T33UVV") as sc:
        assert "T33UVV" in sc.layers[0].path


def test_scene_is_lazy_picklable_and_gives_xarray(tmp_path):
    rng = np.random.default_rng(3)
    b04 = rng.integers(1, 5000, (60, 60)).astype(np.uint16)
    sc = open_safe(write_safe(tmp_path, bands={"B04": b04}))
    assert sc._handles is None  # nothing opened until the first read
    clone = pickle.loads(pickle.dumps(sc))
    np.testing.assert_array_equal(clone.read(bands=[3])[0], b04)
    sc.read(Window(0, 0, 4, 4))
    clone2 = pickle.loads(pickle.dumps(sc))  # open handles are not pickled
    np.testing.assert_array_equal(clone2.read(Window(0, 0, 4, 4)), sc.read(Window(0, 0, 4, 4)))
    xa = sc.to_xarray(chunks=16)
    assert xa.sizes == {"band": 12, "y": 60, "x": 60}
    np.testing.assert_array_equal(xa.sel(band="B04").values, b04)
    sc.close()
    clone.close()
    clone2.close()


# ---------------------------------------------------------------------------------------------------------------
# GeoTIFF stacks
# ---------------------------------------------------------------------------------------------------------------
def _stack(tmp_path, name="stack.tif", dn=1500, names=("B4", "B3", "B2", "B8"), **kw):
    data = np.full((len(names), 20, 20), dn, np.uint16)
    return write_stack(tmp_path / name, data, list(names), **kw)


@pytest.mark.parametrize("tags, kwargs, expected", [
    ({}, {}, 0.15),  # no metadata: x 10000, no offset
    ({"PROCESSING_BASELINE": "05.09"}, {}, 0.05),
    ({"BOA_ADD_OFFSET": "-1000"}, {}, 0.05),
    ({"BOA_QUANTIFICATION_VALUE": "1000", "BOA_ADD_OFFSET": "-1000"}, {}, 0.5),
    ({}, {"add_offset": -1000}, 0.05),
    ({"PROCESSING_BASELINE": "05.09"}, {"add_offset": 0}, 0.15),
    ({}, {"quantification": 20000}, 0.075),
])
def test_geotiff_stack_scaling(tmp_path, tags, kwargs, expected):
    with open_s2_geotiff(_stack(tmp_path, tags=tags), **kwargs) as sc:
        assert sc.bands.names == ("B04", "B03", "B02", "B08")
        np.testing.assert_allclose(reflectance(sc), expected, atol=1e-7)


def test_geotiff_stack_names_masks_and_gdal_scaling(tmp_path):
    data = np.full((3, 20, 20), 1500, np.uint16)
    data[2] = 9  # SCL band: high-probability cloud
    data[2, 10:] = 4
    p = write_stack(tmp_path / "with_scl_20230603.tif", data, ["B8A", "B11", "SCL"])
    with open_s2_geotiff(p) as sc:
        assert sc.bands.names == ("B8A", "B11") and sc.cloud_source == "SCL"
        assert sc.acquired == datetime(2023, 6, 3)
        np.testing.assert_array_equal(sc.cloud_mask(), data[2] == 9)
    with open_s2_geotiff(p, bands=["B11"]) as sc:
        assert sc.bands.names == ("B11",)
    with pytest.warns(UserWarning, match="skipping bands.*NDVI"):
        sc = open_s2_geotiff(write_stack(tmp_path / "extra.tif", data, ["B02", "NDVI", "B04"]))
    assert sc.bands.names == ("B02", "B04")
    with pytest.raises(InputError, match="not Sentinel-2 bands"):
        open_s2_geotiff(write_stack(tmp_path / "unnamed.tif", data, ["", "", ""]))
    with open_s2_geotiff(tmp_path / "unnamed.tif", band_names=["B2", "B3", "B4"]) as sc:
        assert sc.bands.names == ("B02", "B03", "B04") and sc.acquired is None
    # a float file with GDAL scale/offset (physical = stored * scale + offset) keeps them
    f = write_stack(tmp_path / "scaled.tif", np.full((1, 4, 4), 2.0, np.float32), ["B03"])
    with rasterio.open(f, "r+") as ds:
        ds.scales, ds.offsets = (0.5,), (0.25,)
    with open_s2_geotiff(f) as sc:
        np.testing.assert_allclose(reflectance(sc), 1.25)


def test_geotiff_sibling_cloud_files(tmp_path):
    p = _stack(tmp_path, "a_2023-06-03.tif")
    cloud = np.zeros((20, 20), np.uint8)
    cloud[:5] = 1
    write_raster(tmp_path / "a_2023-06-03_cloud.tif", cloud, crs=CRS.from_epsg(32633),
                 transform=from_origin(300000.0, 5900040.0, 10.0, 10.0), driver="GTiff")
    with open_s2_geotiff(p) as sc:
        assert sc.cloud_source == "file"
        np.testing.assert_array_equal(sc.cloud_mask(), cloud > 0)
    q = _stack(tmp_path, "b.tif")
    scl = np.full((40, 40), 4, np.uint8)  # at 5 m: nearest-resampled onto the stack's 10 m grid
    scl[:10] = 3
    write_raster(tmp_path / "b_SCL.tif", scl, crs=CRS.from_epsg(32633),
                 transform=from_origin(300000.0, 5900040.0, 5.0, 5.0), driver="GTiff")
    with open_s2_geotiff(q) as sc:
        assert sc.cloud_source == "SCL"
        assert sc.cloud_mask()[:5].all() and not sc.cloud_mask()[5:].any()


def test_dates_and_baselines_parsing():
    assert parse_time("2023-06-03T10:15:59.024Z") == datetime(2023, 6, 3, 10, 15, 59, 24000)
    assert parse_time("2023-06-03T12:15:59+02:00") == datetime(2023, 6, 3, 10, 15, 59)
    assert parse_time("2023:06:03 10:15:59") == datetime(2023, 6, 3, 10, 15, 59)
    assert parse_time("20230603") == datetime(2023, 6, 3)
    assert parse_time("2023-06-03T10:15:59.123456789Z") == datetime(2023, 6, 3, 10, 15, 59, 123456)
    with pytest.raises(ValueError):
        parse_time("June 3rd")
    assert date_in_name("S2B_MSIL2A_20230603T101559_N0509_R065_T33UUU.SAFE") == datetime(2023, 6, 3, 10, 15, 59)
    assert date_in_name("field_2023-06-03.tif") == datetime(2023, 6, 3)
    assert date_in_name("scene_20231399_20230701.tif") == datetime(2023, 7, 1)  # invalid first match skipped
    assert date_in_name("sentinel2_fields.tif") is None
    assert baseline_tuple("05.10") == (5, 10) and baseline_tuple("N0400") == (4, 0)
    assert baseline_tuple(None) is None


@pytest.mark.shared
def test_demmin_geotiff_in_reflectance(shared_data):
    path = shared_data / "demmin_sentinel2/sentinel2_fields.tif"
    with open_s2_geotiff(path) as sc, rasterio.open(path) as raw:
        assert sc.bands.names == ("B04", "B03", "B02", "B08")
        assert sc.bands.wavelengths == (664.6, 559.8, 492.4, 832.8)
        assert sc.crs.to_epsg() == 4326 and sc.acquired is None and sc.cloud_source == "none"
        w = Window(300, 100, 40, 30)
        r = reflectance(sc, w)
        dn = raw.read(window=w).astype(np.float64)
    np.testing.assert_allclose(r, dn / 10000.0, rtol=1e-6)
    assert 0.01 < np.nanmean(r[3]) < 0.7 and r.dtype == np.float32


def test_open_file_handles_are_capped(tmp_path, monkeypatch):
    from hsikit.io import sentinel2

    monkeypatch.setattr(sentinel2._OPEN_SCENES, "limit", 2)
    scenes = [open_safe(write_safe(tmp_path / str(i), bands={"B02": _const((60, 60), 1000 + i)}), bands=["B02"])
              for i in range(4)]
    for sc in scenes:
        sc.read(Window(0, 0, 2, 2))
    assert [sc._handles is not None for sc in scenes] == [False, False, True, True]
    # a closed scene reopens on its next read
    assert [int(sc.read(Window(0, 0, 1, 1))[0, 0, 0]) for sc in scenes] == [1000, 1001, 1002, 1003]
    assert sum(sc._handles is not None for sc in scenes) == 2
    for sc in scenes:
        sc.close()
