"""``hsikit.io.writer.RasterWriter`` against hsikit's geo-output rules: round trips, COG layout, overviews,
colour table, category names, QGIS style, band metadata, CRS handling and the overwrite rules."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from hsikit.errors import OptionError, OutputError
from hsikit.io.labels import read_qml_palette
from hsikit.io.legend import Legend
from hsikit.io.writer import RasterWriter, block_size, overview_factors

UTM = CRS.from_epsg(32633)
ROTATED = Affine(29.5, 5.2, 366000.0, 5.2, -29.5, 5810000.0)
NORTH_UP = from_origin(366000.0, 5810000.0, 30.0, 30.0)
NAMES = ["water", "forest", "city"]
COLORS = ["#0000ff", "#00aa00", "#aa0000"]
LEGEND = Legend.from_names(NAMES, COLORS)
HAS_GDALINFO = shutil.which("gdalinfo") is not None


def class_data(h: int, w: int) -> np.ndarray:
    return ((np.arange(h)[:, None] // 7 + np.arange(w)[None, :] // 11) % 4).astype(np.uint8)


def write_classes(path, h=300, w=260, *, transform=ROTATED, crs=UTM, legend=LEGEND, data=None, **kw):
    """Class map written in 100x130 windows in a scrambled order."""
    data = class_data(h, w) if data is None else data
    with RasterWriter(path, width=w, height=h, count=1, dtype="uint8", crs=crs, transform=transform, nodata=0,
                      kind="categorical", legend=legend, band_descriptions=["class"],
                      tags={"HSIKIT_MODEL": "test-model"}, **kw) as wr:
        starts = [(r0, c0) for r0 in range(0, h, 100) for c0 in range(0, w, 130)]
        order = starts[::-1][::2] + starts[::-1][1::2]
        assert sorted(order) == sorted(starts)
        for r0, c0 in order:
            hh, ww = min(100, h - r0), min(130, w - c0)
            wr.write(data[r0:r0 + hh, c0:c0 + ww], Window(c0, r0, ww, hh))  # 2-D arrays are accepted too
    return data


def dir_names(d) -> list[str]:
    return sorted(p.name for p in d.iterdir())


# ------------------------------------------------------------------------------------------------------------------
# class maps
# ------------------------------------------------------------------------------------------------------------------
def test_class_map_round_trip(tmp_path):
    p = tmp_path / "classes.tif"
    data = write_classes(p)
    assert dir_names(tmp_path) == ["classes.qml", "classes.tif", "classes.tif.aux.xml"], "no temp files left"
    with rasterio.open(p) as src:
        assert src.driver == "GTiff"
        assert (src.count, src.height, src.width) == (1, 300, 260)
        assert src.crs == UTM
        assert src.transform == ROTATED, "rotation terms kept"
        assert src.nodata == 0
        assert src.dtypes[0] == "uint8"
        np.testing.assert_array_equal(src.read(1), data)
        assert src.descriptions == ("class",)
        tags = src.tags()
        assert json.loads(tags["HSIKIT_CLASS_NAMES"]) == NAMES
        assert json.loads(tags["HSIKIT_CLASS_COLORS"]) == COLORS
        assert tags["HSIKIT_MODEL"] == "test-model"


def test_class_map_colour_table(tmp_path):
    p = tmp_path / "c.tif"
    write_classes(p, h=64, w=64)
    with rasterio.open(p) as src:
        cmap = src.colormap(1)
    assert cmap[0][3] == 0, "nodata entry fully transparent"
    assert cmap[1] == (0, 0, 255, 255)
    assert cmap[2] == (0, 170, 0, 255)
    assert cmap[3] == (170, 0, 0, 255)
    assert all(cmap[v][3] == 255 for v in (1, 2, 3)), "classes opaque"


def test_class_map_category_names_sidecar(tmp_path):
    p = tmp_path / "c.tif"
    write_classes(p, h=64, w=64)
    root = ET.parse(tmp_path / "c.tif.aux.xml").getroot()
    assert root.tag == "PAMDataset"
    band = root.find("./PAMRasterBand[@band='1']")
    assert band is not None
    cats = [c.text for c in band.find("CategoryNames").findall("Category")]
    assert cats == ["no data", *NAMES]


def test_class_map_qml_style(tmp_path):
    p = tmp_path / "c.tif"
    write_classes(p, h=64, w=64)
    qml = tmp_path / "c.qml"
    root = ET.parse(qml).getroot()
    assert root.tag == "qgis"
    rr = root.find("./pipe/rasterrenderer")
    assert rr is not None and rr.get("type") == "paletted" and rr.get("band") == "1"
    pal = read_qml_palette(qml)
    assert pal == [(1, "#0000ff", "water"), (2, "#00aa00", "forest"), (3, "#aa0000", "city")]
    for e in root.iter("paletteEntry"):
        assert e.get("alpha") == "255"


def test_class_map_layout_and_overviews(tmp_path):
    p = tmp_path / "c.tif"
    data = np.ones((300, 260), np.uint8)
    data[1::2, ::2] = 3  # a checkerboard of 1 and 3: an averaging overview would invent class 2
    data[::2, 1::2] = 3
    write_classes(p, data=data)
    with rasterio.open(p) as src:
        ims = src.tags(ns="IMAGE_STRUCTURE")
        assert ims["LAYOUT"] == "COG"
        assert ims["COMPRESSION"] == "DEFLATE"
        assert ims["PREDICTOR"] == "2"
        assert src.block_shapes[0] == (256, 256)
        assert src.profile["tiled"]
        assert src.overviews(1) == [2, 4]
    with rasterio.open(p, overview_level=0) as ov:
        assert (ov.height, ov.width) == (150, 130)
        assert set(np.unique(ov.read(1)).tolist()) <= {1, 3}, "nearest overviews keep class values"


@pytest.mark.skipif(not HAS_GDALINFO, reason="gdalinfo (Debian gdal-bin) not installed")
def test_gdalinfo_reads_class_map(tmp_path):
    p = tmp_path / "c.tif"
    write_classes(p)
    out = subprocess.run(["gdalinfo", "-json", str(p)], capture_output=True, text=True, check=True).stdout
    info = json.loads(out)
    band = info["bands"][0]
    assert band["categories"] == ["no data", "water", "forest", "city"]
    assert band["noDataValue"] == 0
    assert band["colorInterpretation"] == "Palette"
    entries = band["colorTable"]["entries"]
    assert entries[0][3] == 0 and entries[1] == [0, 0, 255, 255] and entries[3] == [170, 0, 0, 255]
    assert len(band["overviews"]) == 2
    assert band["block"] == [256, 256]
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    assert info["geoTransform"] == pytest.approx([366000.0, 29.5, 5.2, 5810000.0, 5.2, -29.5])
    assert "32633" in json.dumps(info["coordinateSystem"])


def test_class_map_uint16_many_classes(tmp_path):
    names = [f"c{i}" for i in range(1, 301)]
    legend = Legend.from_names(names)
    data = (np.arange(20 * 20).reshape(20, 20) % 301).astype(np.uint16)
    p = tmp_path / "many.tif"
    with RasterWriter(p, width=20, height=20, count=1, dtype="uint16", crs=UTM, transform=NORTH_UP, nodata=0,
                      kind="categorical", legend=legend) as wr:
        wr.write(data, Window(0, 0, 20, 20))
    with rasterio.open(p) as src:
        assert src.dtypes[0] == "uint16"
        np.testing.assert_array_equal(src.read(1), data)
        cmap = src.colormap(1)
        assert cmap[0][3] == 0 and cmap[300][3] == 255
    assert len(read_qml_palette(tmp_path / "many.qml")) == 300
    cats = ET.parse(tmp_path / "many.tif.aux.xml").getroot().findall(".//Category")
    assert len(cats) == 301 and cats[300].text == "c300"


def test_class_map_without_legend_has_no_sidecars(tmp_path):
    p = tmp_path / "plain.tif"
    write_classes(p, h=50, w=50, legend=None)
    assert dir_names(tmp_path) == ["plain.tif"]
    with rasterio.open(p) as src:
        assert "HSIKIT_CLASS_NAMES" not in src.tags()


# ------------------------------------------------------------------------------------------------------------------
# layout rules
# ------------------------------------------------------------------------------------------------------------------
def test_block_size_rule():
    assert block_size(10, 10) == 256
    assert block_size(2047, 2047) == 256
    assert block_size(2047, 100) == 256
    assert block_size(2048, 10) == 512
    assert block_size(10, 2048) == 512
    assert block_size(10000, 9000) == 512


def test_overview_factors_rule():
    assert overview_factors(64, 64, 256) == []
    assert overview_factors(128, 128, 256) == []
    assert overview_factors(129, 40, 256) == [2]
    assert overview_factors(300, 260, 256) == [2, 4]
    f = overview_factors(10000, 8000, 512)
    assert f[0] == 2 and all(b == 2 * a for a, b in zip(f, f[1:]))
    assert 10000 / f[-1] <= 512, "smallest level fits in one block"


@pytest.mark.parametrize("size,n_overviews", [(100, 0), (128, 0), (129, 1), (300, 2)])
def test_overviews_present_above_128_px(tmp_path, size, n_overviews):
    p = tmp_path / "o.tif"
    write_classes(p, h=size, w=size // 2 + 1)
    with rasterio.open(p) as src:
        assert len(src.overviews(1)) == n_overviews
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


# ------------------------------------------------------------------------------------------------------------------
# continuous outputs
# ------------------------------------------------------------------------------------------------------------------
def test_continuous_float_cube(tmp_path):
    p = tmp_path / "cube.tif"
    rng = np.random.default_rng(0)
    data = rng.random((3, 150, 140)).astype(np.float32)
    data[:, :5, :5] = np.nan
    wls = (450.0, 550.0, 650.0)
    band_tags = [{"wavelength": f"{w:g}", "wavelength_units": "nm", "fwhm": "10", "bad_band": "1" if i != 1 else "0"}
                 for i, w in enumerate(wls)]
    descs = ["B (450 nm)", "G (550 nm)", "R (650 nm)"]
    with RasterWriter(p, width=140, height=150, count=3, dtype="float32", crs=UTM, transform=ROTATED,
                      nodata=float("nan"), kind="continuous", band_descriptions=descs, band_tags=band_tags,
                      tags={"HSIKIT_VERSION": "0"}) as wr:
        # two windows, bottom first
        wr.write(data[:, 75:], Window(0, 75, 140, 75))
        wr.write(data[:, :75], Window(0, 0, 140, 75))
    assert dir_names(tmp_path) == ["cube.tif"], "no category sidecar or style for continuous output"
    with rasterio.open(p) as src:
        assert src.count == 3 and src.dtypes == ("float32",) * 3
        assert src.crs == UTM and src.transform == ROTATED
        np.testing.assert_array_equal(src.read(), data)
        assert src.nodata is not None and np.isnan(src.nodata)
        assert src.descriptions == tuple(descs)
        for i, w in enumerate(wls):
            t = src.tags(i + 1)
            assert float(t["wavelength"]) == w and t["fwhm"] == "10" and t["wavelength_units"] == "nm"
            assert t["bad_band"] == ("0" if i == 1 else "1")
        assert src.tags()["HSIKIT_VERSION"] == "0"
        ims = src.tags(ns="IMAGE_STRUCTURE")
        assert ims["LAYOUT"] == "COG" and ims["COMPRESSION"] == "DEFLATE" and ims["PREDICTOR"] == "3"
        assert src.block_shapes[0] == (256, 256)
        assert src.overviews(1) == [2]
        with pytest.raises(ValueError):  # no colour table on float bands
            src.colormap(1)


def test_continuous_overviews_average_and_skip_nodata(tmp_path):
    p = tmp_path / "avg.tif"
    data = np.zeros((1, 140, 140), np.float32)
    data[0, ::2, ::2] = 1.0
    data[0, 1::2, 1::2] = 1.0  # checkerboard: average = 0.5, nearest = 0 or 1
    data[0, 0:2, 0:2] = [[np.nan, 4.0], [4.0, 4.0]]  # one nodata pixel in the first 2x2 block
    data[0, 0:2, 2:4] = np.nan  # an all-nodata 2x2 block
    with RasterWriter(p, width=140, height=140, count=1, dtype="float32", crs=UTM, transform=NORTH_UP,
                      nodata=float("nan"), kind="continuous") as wr:
        wr.write(data, Window(0, 0, 140, 140))
    with rasterio.open(p, overview_level=0) as ov:
        o = ov.read(1)
    assert o.shape == (70, 70)
    assert o[0, 0] == pytest.approx(4.0), "nodata ignored when averaging"
    assert np.isnan(o[0, 1]), "all-nodata block stays nodata"
    np.testing.assert_allclose(o[1:, :], 0.5)
    np.testing.assert_allclose(o[0, 2:], 0.5)


def test_int16_with_scales_offsets_cog(tmp_path):
    p = tmp_path / "refl.tif"
    data = (np.arange(2 * 200 * 30, dtype=np.int32).reshape(2, 200, 30) % 20000 - 10000).astype(np.int16)
    with RasterWriter(p, width=30, height=200, count=2, dtype="int16", crs=UTM, transform=NORTH_UP, nodata=-9999,
                      kind="continuous", scales=[1e-4, 2e-4], offsets=[0.0, 0.1]) as wr:
        wr.write(data, Window(0, 0, 30, 200))
    with rasterio.open(p) as src:
        np.testing.assert_array_equal(src.read(), data)
        assert src.dtypes[0] == "int16" and src.nodata == -9999
        assert src.scales == pytest.approx((1e-4, 2e-4)) and src.offsets == pytest.approx((0.0, 0.1))
        ims = src.tags(ns="IMAGE_STRUCTURE")
        assert ims["PREDICTOR"] == "2" and ims["COMPRESSION"] == "DEFLATE" and ims["LAYOUT"] == "COG"
        assert src.overviews(1)
    assert dir_names(tmp_path) == ["refl.tif"]


def test_gtiff_format_multiband(tmp_path):
    p = tmp_path / "refl.tif"
    data = np.arange(2 * 600 * 40, dtype=np.int16).reshape(2, 600, 40)
    with RasterWriter(p, width=40, height=600, count=2, dtype="int16", crs=UTM, transform=ROTATED, nodata=-9999,
                      kind="continuous", scales=[1e-4, 1e-4], offsets=[0.0, 0.1], fmt="gtiff") as wr:
        wr.write(data[:, 300:], Window(0, 300, 40, 300))
        wr.write(data[:, :300], Window(0, 0, 40, 300))
    assert dir_names(tmp_path) == ["refl.tif"], "overviews are internal: no .ovr"
    with rasterio.open(p) as src:
        np.testing.assert_array_equal(src.read(), data)
        assert src.crs == UTM and src.transform == ROTATED
        assert src.scales == pytest.approx((1e-4, 1e-4)) and src.offsets == pytest.approx((0.0, 0.1))
        assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
        ims = src.tags(ns="IMAGE_STRUCTURE")
        assert ims["COMPRESSION"] == "DEFLATE" and ims["PREDICTOR"] == "2" and ims["INTERLEAVE"] == "BAND"
        assert ims.get("LAYOUT") != "COG"
        assert len(src.overviews(1)) >= 2 and len(src.overviews(2)) >= 2


def test_gtiff_format_class_map(tmp_path):
    p = tmp_path / "c.tif"
    data = write_classes(p, fmt="gtiff")
    assert dir_names(tmp_path) == ["c.qml", "c.tif", "c.tif.aux.xml"]
    with rasterio.open(p) as src:
        np.testing.assert_array_equal(src.read(1), data)
        assert src.profile["tiled"] and src.block_shapes[0] == (256, 256)
        assert src.overviews(1) == [2, 4]
        assert src.colormap(1)[1] == (0, 0, 255, 255)
        assert src.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
    assert [c for _, _, c in read_qml_palette(tmp_path / "c.qml")] == NAMES


def test_spectral_metadata_round_trip_through_open_scene(tmp_path):
    """Per-band wavelength/fwhm/bad_band items written here are what hsikit's reader (and EnMAP-Box) read back."""
    from hsikit.io import open_scene

    p = tmp_path / "cube.tif"
    tags = [{"wavelength": f"{w}", "wavelength_units": "micrometers", "fwhm": "0.01", "bad_band": b}
            for w, b in ((0.45, "1"), (0.55, "0"), (0.65, "1"))]
    data = np.full((3, 10, 20), 1234, np.int16)
    data[1] = -9999  # the bad band holds nodata everywhere
    data[0, 2, 3] = -9999
    with RasterWriter(p, width=20, height=10, count=3, dtype="int16", crs=UTM, transform=ROTATED, nodata=-9999,
                      kind="continuous", band_tags=tags, band_descriptions=["a", "b", "c"], scales=[1e-4] * 3,
                      offsets=[0.0] * 3) as wr:
        wr.write(data, Window(0, 0, 20, 10))
    with open_scene(p) as sc:
        assert sc.crs == UTM and sc.transform == ROTATED
        assert sc.bands.names == ("a", "b", "c")
        assert sc.bands.wavelengths == pytest.approx((450.0, 550.0, 650.0))
        assert sc.bands.fwhm == pytest.approx((10.0,) * 3)
        assert sc.bands.wavelength_units == "micrometers"
        assert sc.bands.bad == (False, True, False)
        assert sc.bands.scale == pytest.approx((1e-4,) * 3) and sc.nodata == -9999
        valid = sc.read_valid()
        assert not valid[2, 3] and valid.sum() == 199


# ------------------------------------------------------------------------------------------------------------------
# CRS, options, overwrite rules
# ------------------------------------------------------------------------------------------------------------------
def test_no_crs_writes_and_warns(tmp_path):
    p = tmp_path / "n.tif"
    with pytest.warns(UserWarning, match="no CRS"):
        with RasterWriter(p, width=8, height=6, count=1, dtype="uint8", crs=None, transform=Affine.identity(),
                          nodata=0, kind="categorical", legend=LEGEND) as wr:
            wr.write(np.full((1, 6, 8), 2, np.uint8), Window(0, 0, 8, 6))
    with rasterio.open(p) as src:
        assert src.crs is None
        assert src.read(1).tolist() == [[2] * 8] * 6
        assert src.nodata == 0


def test_invalid_options(tmp_path):
    common = dict(width=4, height=4, crs=UTM, transform=NORTH_UP, nodata=0)
    with pytest.raises(OptionError):
        RasterWriter(tmp_path / "a.tif", count=2, dtype="uint8", kind="categorical", **common)
    with pytest.raises(OptionError):
        RasterWriter(tmp_path / "a.tif", count=1, dtype="float32", kind="categorical", **common)
    with pytest.raises(OptionError):
        RasterWriter(tmp_path / "a.tif", count=1, dtype="uint8", kind="continuous", fmt="png", **common)
    with pytest.raises(OptionError):
        RasterWriter(tmp_path / "a.tif", count=1, dtype="uint8", kind="fuzzy", **common)
    with pytest.raises(ValueError):
        RasterWriter(tmp_path / "a.tif", count=2, dtype="uint8", kind="continuous", band_descriptions=["x"], **common)
    with pytest.raises(ValueError, match="bands"):
        with RasterWriter(tmp_path / "a.tif", count=2, dtype="uint8", kind="continuous", **common) as wr:
            wr.write(np.zeros((3, 4, 4), np.uint8), Window(0, 0, 4, 4))
    assert dir_names(tmp_path) == []


def test_existing_output_without_overwrite(tmp_path):
    p = tmp_path / "c.tif"
    write_classes(p, h=40, w=40)
    before = {n: (tmp_path / n).read_bytes() for n in dir_names(tmp_path)}
    mtime = p.stat().st_mtime_ns
    with pytest.raises(OutputError, match="exists"):
        write_classes(p, h=40, w=40, data=np.full((40, 40), 3, np.uint8))
    with pytest.raises(OutputError):
        RasterWriter(p, width=4, height=4, count=1, dtype="float32", crs=UTM, transform=NORTH_UP, nodata=None,
                     kind="continuous")
    assert {n: (tmp_path / n).read_bytes() for n in dir_names(tmp_path)} == before
    assert p.stat().st_mtime_ns == mtime


def test_overwrite_replaces_class_map(tmp_path):
    p = tmp_path / "c.tif"
    write_classes(p, h=40, w=40)
    new = np.full((40, 40), 1, np.uint8)
    write_classes(p, h=40, w=40, data=new, legend=Legend.from_names(["only"], ["#123456"]), overwrite=True)
    assert dir_names(tmp_path) == ["c.qml", "c.tif", "c.tif.aux.xml"]
    with rasterio.open(p) as src:
        np.testing.assert_array_equal(src.read(1), new)
        assert json.loads(src.tags()["HSIKIT_CLASS_NAMES"]) == ["only"]
    assert read_qml_palette(tmp_path / "c.qml") == [(1, "#123456", "only")]
    assert "water" not in (tmp_path / "c.tif.aux.xml").read_text()


def test_overwrite_with_continuous_removes_stale_sidecars(tmp_path):
    p = tmp_path / "c.tif"
    write_classes(p, h=40, w=40)
    assert (tmp_path / "c.tif.aux.xml").exists()
    with RasterWriter(p, width=40, height=40, count=1, dtype="float32", crs=UTM, transform=ROTATED,
                      nodata=float("nan"), kind="continuous", overwrite=True) as wr:
        wr.write(np.full((1, 40, 40), 0.25, np.float32), Window(0, 0, 40, 40))
    with rasterio.open(p) as src:
        assert src.dtypes[0] == "float32"
        assert np.all(src.read(1) == 0.25)
        assert "HSIKIT_CLASS_NAMES" not in src.tags()
    assert not (tmp_path / "c.tif.aux.xml").exists(), "stale category sidecar removed with the replaced map"
    assert dir_names(tmp_path) == ["c.tif"], "the old class map's paletted style must not stay beside the new raster"


def test_nonexistent_directory(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        write_classes(tmp_path / "missing" / "c.tif", h=20, w=20)
    assert dir_names(tmp_path) == []


def test_parent_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(OutputError):
        write_classes(f / "c.tif", h=20, w=20)


def test_output_path_is_a_directory(tmp_path):
    (tmp_path / "d.tif").mkdir()
    with pytest.raises(OutputError, match="directory"):
        write_classes(tmp_path / "d.tif", h=20, w=20, overwrite=True)


def test_unwritable_directory(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):  # running as root: permission bits do not stop us, so simulate the check
            real = os.access
            monkeypatch.setattr(os, "access",
                                lambda path, mode, *a, **k: False if os.path.samefile(path, ro) else real(path, mode, *a, **k))
        with pytest.raises(OutputError, match="not writable"):
            write_classes(ro / "c.tif", h=20, w=20)
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)
