"""The QGIS-ready writer (conventions §1-§8): round trips, layout, overviews, sidecars, overwrite rules."""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window

from hsikit.errors import OutputError
from hsikit.io.labels import read_qml_palette
from hsikit.io.legend import Legend
from hsikit.io.writer import RasterWriter, block_size

UTM = CRS.from_epsg(32633)
ROTATED = Affine(29.5, 5.2, 366000.0, 5.2, -29.5, 5810000.0)
LEGEND = Legend.from_names(["water", "forest", "city"], ["#0000ff", "#00aa00", "#aa0000"])


def write_classes(path, h=300, w=260, transform=ROTATED, crs=UTM, **kw):
    data = (np.arange(h * w).reshape(h, w) % 4).astype(np.uint8)
    with RasterWriter(path, width=w, height=h, count=1, dtype="uint8", crs=crs, transform=transform, nodata=0,
                      kind="categorical", legend=LEGEND, band_descriptions=["class"], tags={"HSIKIT_MODEL": "x"},
                      **kw) as wr:
        # windows in arbitrary order
        starts = [(r0, c0) for r0 in range(0, h, 100) for c0 in range(0, w, 130)]
        for r0, c0 in starts[1::2] + starts[::2]:
            wr.write(data[None, r0 : r0 + 100, c0 : c0 + 130], Window(c0, r0, min(130, w - c0), min(100, h - r0)))
    return data


def test_class_map_round_trip(tmp_path):
    p = tmp_path / "classes.tif"
    data = write_classes(p)
    with rasterio.open(p) as src:
        assert src.crs == UTM and src.transform == ROTATED
        assert src.nodata == 0 and src.dtypes[0] == "uint8"
        np.testing.assert_array_equal(src.read(1), data)
        cmap = src.colormap(1)
        assert cmap[0][3] == 0 and cmap[1] == (0, 0, 255, 255) and cmap[3] == (170, 0, 0, 255)
        assert json.loads(src.tags()["HSIKIT_CLASS_NAMES"]) == ["water", "forest", "city"]
        ims = src.tags(ns="IMAGE_STRUCTURE")
        assert ims["LAYOUT"] == "COG" and ims["COMPRESSION"] == "DEFLATE" and ims["PREDICTOR"] == "2"
        assert src.block_shapes[0] == (256, 256)
        assert src.overviews(1) == [2, 4]
        assert src.descriptions == ("class",)
        ov = src.read(1, out_shape=(75, 65))
        assert set(np.unique(ov)) <= {0, 1, 2, 3}, "nearest overviews keep class values"
    aux = (tmp_path / "classes.tif.aux.xml").read_text()
    assert "<Category>no data</Category>" in aux and aux.index("water") < aux.index("forest") < aux.index("city")
    pal = read_qml_palette(tmp_path / "classes.qml")
    assert pal == [(1, "#0000ff", "water"), (2, "#00aa00", "forest"), (3, "#aa0000", "city")]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["classes.qml", "classes.tif", "classes.tif.aux.xml"]


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="gdalinfo (Debian gdal-bin) not installed")
def test_gdalinfo_sees_categories(tmp_path):
    p = tmp_path / "c.tif"
    write_classes(p)
    info = json.loads(subprocess.run(["gdalinfo", "-json", str(p)], capture_output=True, text=True, check=True).stdout)
    band = info["bands"][0]
    assert band["categories"] == ["no data", "water", "forest", "city"]
    assert band["colorTable"]["entries"][2] == [0, 170, 0, 255]
    assert len(band["overviews"]) == 2


def test_block_size_rule():
    assert block_size(2047, 100) == 256 and block_size(2048, 10) == 512 and block_size(10000, 9000) == 512


def test_continuous_cube(tmp_path):
    p = tmp_path / "cube.tif"
    data = np.random.default_rng(0).random((3, 150, 140)).astype(np.float32)
    data[:, :5, :5] = np.nan
    tags = [{"wavelength": f"{w}", "wavelength_units": "nm", "fwhm": "10", "bad_band": "1"} for w in (450, 550, 650)]
    with RasterWriter(p, width=140, height=150, count=3, dtype="float32", crs=UTM, transform=ROTATED,
                      nodata=float("nan"), kind="continuous", band_descriptions=["B (450 nm)", "G (550 nm)", "R (650 nm)"],
                      band_tags=tags) as wr:
        wr.write(data, Window(0, 0, 140, 150))
    with rasterio.open(p) as src:
        np.testing.assert_array_equal(src.read(), data)
        assert np.isnan(src.nodata) and src.descriptions[1] == "G (550 nm)"
        assert src.tags(2)["wavelength"] == "550" and src.tags(3)["bad_band"] == "1"
        assert src.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == "3"
        gdal = tuple(int(x) for x in rasterio.__gdal_version__.split(".")[:2])
        assert src.tags(ns="IMAGE_STRUCTURE")["INTERLEAVE"] == ("BAND" if gdal >= (3, 11) else "PIXEL")
        assert src.overviews(1) == [2]
        avg = src.read(1, out_shape=(75, 70))
        assert 0 < np.nanmean(avg) < 1
    assert not (tmp_path / "cube.tif.aux.xml").exists() and not (tmp_path / "cube.qml").exists()


def test_int16_with_scale_and_gtiff(tmp_path):
    p = tmp_path / "refl.tif"
    data = np.arange(2 * 600 * 10, dtype=np.int16).reshape(2, 600, 10)
    with RasterWriter(p, width=10, height=600, count=2, dtype="int16", crs=UTM, transform=ROTATED, nodata=-9999,
                      kind="continuous", scales=[1e-4, 1e-4], offsets=[0.0, 0.1], fmt="gtiff") as wr:
        wr.write(data, Window(0, 0, 10, 600))
    with rasterio.open(p) as src:
        np.testing.assert_array_equal(src.read(), data)
        assert src.scales == (1e-4, 1e-4) and src.offsets == (0.0, 0.1)
        assert src.profile["tiled"] and src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") != "COG"
        assert src.overviews(1), "plain GeoTIFF also gets internal overviews"


def test_no_crs_warns(tmp_path):
    with pytest.warns(UserWarning, match="no CRS"):
        with RasterWriter(tmp_path / "n.tif", width=4, height=4, count=1, dtype="uint8", crs=None,
                          transform=Affine.identity(), nodata=0, kind="categorical", legend=LEGEND) as wr:
            wr.write(np.ones((1, 4, 4), np.uint8), Window(0, 0, 4, 4))
    with rasterio.open(tmp_path / "n.tif") as src, warnings.catch_warnings():
        assert src.crs is None and src.read(1).sum() == 16


def test_overwrite_rules(tmp_path):
    p = tmp_path / "c.tif"
    write_classes(p, h=40, w=40)
    before = p.read_bytes()
    with pytest.raises(OutputError, match="--overwrite"):
        write_classes(p, h=40, w=40)
    assert p.read_bytes() == before
    with RasterWriter(p, width=40, height=40, count=1, dtype="float32", crs=UTM, transform=ROTATED,
                      nodata=float("nan"), kind="continuous", overwrite=True) as wr:
        wr.write(np.zeros((1, 40, 40), np.float32), Window(0, 0, 40, 40))
    with rasterio.open(p) as src:
        assert src.dtypes[0] == "float32"
    assert not (tmp_path / "c.tif.aux.xml").exists(), "stale category sidecar removed with the replaced map"
    with pytest.raises(OutputError, match="does not exist"):
        write_classes(tmp_path / "missing" / "c.tif")
