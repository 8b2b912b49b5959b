"""``hsikit.io.read_labels``: label rasters on (or cropped to) a scene grid, off-grid rasters refused or resampled on
request, labels outside the scene refused, legends from .qml / tags / GDAL categories, and vector polygons
rasterised onto the scene grid."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from fakedata import write_fake_geotiff
from hsikit.errors import InputError
from hsikit.io import open_scene, read_labels
from hsikit.io.labels import LabelMap
from hsikit.io.scene import ArrayScene

UTM = CRS.from_epsg(32633)
ORIGIN = (366000.0, 5810000.0)
GRID = from_origin(*ORIGIN, 30.0, 30.0)
H, W = 40, 50  # the generated scene (fakedata default)

POTSDAM_TILES = ["128_0", "128_128", "128_32", "128_96", "160_128", "160_160", "160_64", "160_96", "192_128",
                 "192_160", "192_64", "192_96", "64_0", "64_32", "96_0", "96_128", "96_32", "96_96"]
POTSDAM_COUNTS = {1: 505, 2: 953, 3: 1694, 4: 2070, 5: 91, 6: 359}
BERLIN_NAMES = ["roof", "pavement", "low vegetation", "tree", "soil", "water"]
BERLIN_COLORS = ["#e60000", "#9c9c9c", "#98e600", "#267300", "#a87000", "#0064ff"]


@pytest.fixture
def scene(tmp_path):
    sc = open_scene(write_fake_geotiff(tmp_path / "scene.tif", bands=3, height=H, width=W))
    yield sc
    sc.close()


# ------------------------------------------------------------------------------------------------------------------
# real label rasters
# ------------------------------------------------------------------------------------------------------------------
def test_enmap_tile_labels_over_tile_image(shared_data):
    d = shared_data / "enmap_potsdam"
    with open_scene(d / "images/enmap_potsdam_tile_128_0.tif") as sc:
        lm = read_labels(d / "labels/enmap_potsdam_tile_128_0.tif", sc)
    assert isinstance(lm, LabelMap)
    assert lm.values.shape == (32, 32)
    assert lm.values.dtype == np.int32, "float32 label codes become integers"
    with rasterio.open(d / "labels/enmap_potsdam_tile_128_0.tif") as src:
        raw = src.read(1)
    assert raw.dtype == np.float32
    np.testing.assert_array_equal(lm.values, raw.astype(np.int32))
    assert lm.counts() == {1: 18, 2: 52, 3: 350, 4: 83, 5: 5}
    assert (lm.values == 0).sum() == 516
    assert lm.num_classes == 5


@pytest.mark.parametrize("tile", POTSDAM_TILES)
def test_enmap_full_label_raster_cropped_to_tile(shared_data, tile):
    """The 200x330 scene label raster, read onto a 32x32 tile grid, equals that tile's own label file."""
    d = shared_data / "enmap_potsdam"
    with open_scene(d / f"images/enmap_potsdam_tile_{tile}.tif") as sc:
        from_full = read_labels(d / "enmap_landcover_unstyled.tif", sc)
        own = read_labels(d / f"labels/enmap_potsdam_tile_{tile}.tif", sc)
        # the tile name is its pixel offset in the full scene
        x, y = (int(v) for v in tile.split("_"))
        assert sc.transform.c == pytest.approx(362175.0 + x * 30.0)
    assert from_full.values.shape == (32, 32) and from_full.values.dtype == np.int32
    np.testing.assert_array_equal(from_full.values, own.values)
    with rasterio.open(d / "enmap_landcover_unstyled.tif") as src:
        direct = src.read(1, window=Window(x, y, 32, 32)).astype(np.int32)
    np.testing.assert_array_equal(from_full.values, direct)


def test_enmap_tiles_hold_all_labelled_pixels(shared_data):
    d = shared_data / "enmap_potsdam"
    total: dict[int, int] = {}
    for tile in POTSDAM_TILES:
        with open_scene(d / f"images/enmap_potsdam_tile_{tile}.tif") as sc:
            for k, n in read_labels(d / f"labels/enmap_potsdam_tile_{tile}.tif", sc).counts().items():
                total[k] = total.get(k, 0) + n
    assert total == POTSDAM_COUNTS


def test_berlin_polygon_labels_names_from_qml(shared_data):
    d = shared_data / "enmap_berlin_labels"
    with open_scene(d / "landcover_map_l3.tif") as sc:
        assert sc.shape == (1, 400, 220) and sc.crs.to_epsg() == 32633
        lm = read_labels(d / "landcover_polygon_30m.tif", sc)
    assert lm.values.shape == (400, 220)
    assert lm.class_names == BERLIN_NAMES
    assert lm.class_colors == BERLIN_COLORS
    assert lm.counts() == {1: 495, 2: 586, 3: 320, 4: 539, 5: 51, 6: 37}
    assert lm.num_classes == 6


def _pixel_centre_oracle(scene, geoms, codes) -> np.ndarray:
    """Independent rasterisation: a pixel takes a polygon's code when the polygon contains its centre."""
    import shapely

    rows, cols = np.mgrid[0:scene.height, 0:scene.width]
    xs, ys = scene.transform * (cols + 0.5, rows + 0.5)
    out = np.zeros((scene.height, scene.width), np.int32)
    for g, c in zip(geoms, codes):
        out[shapely.contains_xy(shapely.from_wkb(g), xs, ys)] = c
    return out


def test_demmin_field_polygons_on_sentinel2(shared_data):
    """Real vector labels (2 multipolygons, EPSG:4326, string attribute 'desc') on the real Sentinel-2 grid."""
    import pyogrio.raw

    d = shared_data / "demmin_sentinel2"
    with open_scene(d / "sentinel2_fields.tif") as sc:
        lm = read_labels(d / "fields.gpkg", sc, attribute="desc")
        assert lm.values.shape == (242, 620)
        assert lm.class_names == ["Field 1", "Field 2"]
        _, _, geoms, fields = pyogrio.raw.read(d / "fields.gpkg")
        oracle = _pixel_centre_oracle(sc, geoms, [lm.class_names.index(n) + 1 for n in fields[0]])
        assert (lm.values == oracle).mean() > 0.999
        assert set(lm.counts()) == {1, 2} and all(n > 10000 for n in lm.counts().values())
        # 'desc' is not one of the recognised class column names
        with pytest.raises(InputError, match=r"\['desc'\]"):
            read_labels(d / "fields.gpkg", sc)


def test_demmin_sample_points_on_sentinel2(shared_data):
    """Point labels burn the pixel that contains each point."""
    import pyogrio.raw
    import shapely

    d = shared_data / "demmin_sentinel2"
    with open_scene(d / "sentinel2_fields.tif") as sc:
        lm = read_labels(d / "esus.gpkg", sc, attribute="field")
        meta, _, geoms, data = pyogrio.raw.read(d / "esus.gpkg")
        fields = data[list(meta["fields"]).index("field")]
        assert lm.class_names == sorted(set(fields)) == ["F1", "F2"]
        for g, name in zip(geoms, fields):
            pt = shapely.from_wkb(g)
            col, row = ~sc.transform * (pt.x, pt.y)
            assert lm.values[int(row), int(col)] == lm.class_names.index(name) + 1
        assert 0 < sum(lm.counts().values()) <= 78


# ------------------------------------------------------------------------------------------------------------------
# generated label rasters
# ------------------------------------------------------------------------------------------------------------------
def _write_label_raster(path, arr, *, transform=GRID, crs=UTM, nodata=None, dtype=None, **tags):
    arr = np.asarray(arr)
    profile = dict(driver="GTiff", width=arr.shape[-1], height=arr.shape[-2], count=1 if arr.ndim == 2 else arr.shape[0],
                   dtype=dtype or arr.dtype.name, transform=transform, nodata=nodata)
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(arr if arr.ndim == 3 else arr[None])
        if tags:
            dst.update_tags(**tags)
    return path


def test_label_raster_nodata_becomes_unlabelled(tmp_path, scene):
    lab = np.zeros((H, W), np.uint8)
    lab[3:8, 4:9] = 2
    lab[20:22, :] = 255
    p = _write_label_raster(tmp_path / "l.tif", lab, nodata=255,
                            HSIKIT_CLASS_NAMES=json.dumps(["a", "b"]), HSIKIT_CLASS_COLORS=json.dumps(["#010203", "#040506"]))
    lm = read_labels(p, scene)
    expected = np.where(lab == 255, 0, lab).astype(np.int32)
    np.testing.assert_array_equal(lm.values, expected)
    assert lm.class_names == ["a", "b"] and lm.class_colors == ["#010203", "#040506"]


def test_label_raster_on_finer_grid_is_resampled(tmp_path, scene):
    """A 15 m label raster over the 30 m scene: nearest-neighbour onto the scene grid (when allowed)."""
    coarse = np.zeros((H, W), np.uint8)
    coarse[10:20, 5:25] = 1
    coarse[30:35, 40:48] = 4
    fine = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)
    p = _write_label_raster(tmp_path / "fine.tif", fine, transform=from_origin(*ORIGIN, 15.0, 15.0), nodata=0)
    with pytest.warns(UserWarning, match="nearest neighbour"):
        lm = read_labels(p, scene, allow_resample=True)
    np.testing.assert_array_equal(lm.values, coarse.astype(np.int32))


def test_label_raster_larger_than_scene_is_cropped(tmp_path, scene):
    big = np.zeros((H + 20, W + 30), np.uint8)
    big[10:10 + H, 10:10 + W] = (np.arange(H * W).reshape(H, W) % 5).astype(np.uint8)
    p = _write_label_raster(tmp_path / "big.tif", big,
                            transform=from_origin(ORIGIN[0] - 300.0, ORIGIN[1] + 300.0, 30.0, 30.0), nodata=0)
    lm = read_labels(p, scene)
    np.testing.assert_array_equal(lm.values, big[10:10 + H, 10:10 + W].astype(np.int32))


def test_label_raster_in_other_crs_is_reprojected(tmp_path, scene):
    """A label raster in EPSG:4326 lands on the UTM scene grid (nearest neighbour, when allowed)."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    truth = np.zeros((H, W), np.uint8)
    truth[4:20, 6:30] = 1
    truth[22:38, 20:46] = 2
    dst_t, dw, dh = calculate_default_transform(UTM, "EPSG:4326", W, H, *scene_bounds(), resolution=0.0001)
    geo = np.zeros((dh, dw), np.uint8)
    reproject(truth, geo, src_transform=GRID, src_crs=UTM, dst_transform=dst_t, dst_crs="EPSG:4326",
              resampling=Resampling.nearest, src_nodata=255, dst_nodata=0)
    p = _write_label_raster(tmp_path / "geo.tif", geo, transform=dst_t, crs=CRS.from_epsg(4326), nodata=0)
    with pytest.warns(UserWarning, match="nearest neighbour"):
        lm = read_labels(p, scene, allow_resample=True)
    assert lm.values.shape == (H, W)
    assert (lm.values == truth).mean() >= 0.97
    for code in (1, 2):
        assert (lm.values[truth == code] == code).mean() >= 0.95


def scene_bounds():
    from rasterio.transform import array_bounds

    return array_bounds(H, W, GRID)  # (west, south, east, north)


def test_label_raster_with_nodata_covering_part_of_scene(tmp_path, scene):
    part = np.zeros((H, 25), np.uint8)
    part[5:10, 5:10] = 3
    p = _write_label_raster(tmp_path / "half.tif", part, nodata=0)
    lm = read_labels(p, scene)
    expected = np.zeros((H, W), np.int32)
    expected[5:10, 5:10] = 3
    np.testing.assert_array_equal(lm.values, expected)


def test_label_raster_without_nodata_covering_part_of_scene(tmp_path, scene):
    """Scene pixels beyond the label raster's extent are unlabelled (0), even when the raster sets no nodata."""
    part = np.zeros((H, 25), np.uint8)
    part[5:10, 5:10] = 3
    p = _write_label_raster(tmp_path / "half_no_nodata.tif", part, nodata=None)
    lm = read_labels(p, scene)
    expected = np.zeros((H, W), np.int32)
    expected[5:10, 5:10] = 3
    np.testing.assert_array_equal(lm.values, expected)


def test_fractional_label_raster(tmp_path, scene):
    frac = np.full((H, W), 1.0, np.float32)
    frac[4, 4] = 1.5
    p = _write_label_raster(tmp_path / "frac.tif", frac)
    with pytest.raises(InputError, match="fractional"):
        read_labels(p, scene)


def test_negative_label_raster(tmp_path, scene):
    neg = np.ones((H, W), np.int16)
    neg[0, 0] = -3
    with pytest.raises(InputError, match="negative"):
        read_labels(_write_label_raster(tmp_path / "neg.tif", neg), scene)


def test_multiband_label_raster(tmp_path, scene):
    p = _write_label_raster(tmp_path / "two.tif", np.ones((2, H, W), np.uint8))
    with pytest.raises(InputError, match="2 bands"):
        read_labels(p, scene)


def test_label_raster_off_grid_without_crs(tmp_path):
    p = _write_label_raster(tmp_path / "nocrs.tif", np.ones((10, 10), np.uint8), crs=None,
                            transform=from_origin(0, 10, 1, 1))
    sc = ArrayScene(np.zeros((1, 12, 12), np.float32))
    with pytest.raises(InputError, match="not on the scene grid"):
        read_labels(p, sc)


def test_label_raster_same_size_without_crs(tmp_path):
    lab = (np.arange(12 * 10).reshape(12, 10) % 3).astype(np.uint8)
    p = _write_label_raster(tmp_path / "pix.tif", lab, crs=None, transform=from_origin(0, 12, 1, 1))
    sc = ArrayScene(np.zeros((2, 12, 10), np.float32))
    np.testing.assert_array_equal(read_labels(p, sc).values, lab.astype(np.int32))


# ------------------------------------------------------------------------------------------------------------------
# label rasters off the scene grid: refused with the exact difference, resampled only when allowed
# ------------------------------------------------------------------------------------------------------------------
def _blocks() -> np.ndarray:
    lab = np.zeros((H, W), np.uint8)
    lab[4:20, 6:30] = 1
    lab[22:38, 20:46] = 2
    return lab


@pytest.mark.parametrize("dx, dy, shift", [
    (15.0, 0.0, r"\(\+0\.5, 0\) px \(15 m east\)"),
    (0.0, -7.5, r"\(0, \+0\.25\) px \(7\.5 m south\)"),
    (-9.0, 12.0, r"\(-0\.3, -0\.4\) px \(9 m west, 12 m north\)"),
])
def test_label_raster_shifted_by_part_of_a_pixel_is_refused(tmp_path, scene, dx, dy, shift):
    p = _write_label_raster(tmp_path / "labels.tif", _blocks(),
                            transform=from_origin(ORIGIN[0] + dx, ORIGIN[1] + dy, 30.0, 30.0), nodata=0)
    with pytest.raises(InputError) as ei:
        read_labels(p, scene)
    msg = str(ei.value)
    assert "\n" not in msg
    assert re.fullmatch(rf"labels\.tif is not on the grid of scene\.tif: its origin is shifted by {shift}; "
                        r"pass --allow-resample to resample it by nearest neighbour", msg), msg


def test_label_raster_in_other_crs_is_refused(tmp_path, scene):
    from rasterio.warp import calculate_default_transform

    dst_t, dw, dh = calculate_default_transform(UTM, "EPSG:4326", W, H, *scene_bounds(), resolution=0.0001)
    p = _write_label_raster(tmp_path / "geo.tif", np.ones((dh, dw), np.uint8), transform=dst_t,
                            crs=CRS.from_epsg(4326), nodata=0)
    with pytest.raises(InputError, match=r"^geo\.tif is in EPSG:4326, scene\.tif in EPSG:32633; "
                                         r"pass --allow-resample to resample it by nearest neighbour$"):
        read_labels(p, scene)


def test_label_raster_with_other_pixel_size_is_refused(tmp_path, scene):
    p = _write_label_raster(tmp_path / "fine.tif", np.ones((2 * H, 2 * W), np.uint8),
                            transform=from_origin(*ORIGIN, 15.0, 15.0), nodata=0)
    with pytest.raises(InputError, match=r"^fine\.tif is not on the grid of scene\.tif: its pixels are 15 x 15 m, "
                                         r"the scene's 30 x 30 m; pass --allow-resample"):
        read_labels(p, scene)


def test_allow_resample_warns_with_both_grids(tmp_path, scene):
    """Half a pixel east: nearest neighbour then takes every scene pixel's value from one label pixel, and the
    warning names both grids."""
    truth = _blocks()
    p = _write_label_raster(tmp_path / "labels.tif", truth,
                            transform=from_origin(ORIGIN[0] + 15.0, ORIGIN[1], 30.0, 30.0), nodata=0)
    with pytest.warns(UserWarning) as rec:
        lm = read_labels(p, scene, allow_resample=True)
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert "\n" not in msg
    assert msg == ("labels.tif is resampled by nearest neighbour from its grid (EPSG:32633, 30 x 30 m pixels, "
                   "origin (366015, 5810000), 50x40 px) onto that of scene.tif (EPSG:32633, 30 x 30 m pixels, "
                   "origin (366000, 5810000), 50x40 px)")
    assert lm.values.shape == (H, W)
    assert (lm.values == truth).mean() > 0.9  # the class blocks shift by at most one column


def test_label_raster_within_grid_tolerance_is_read_as_is(tmp_path, scene):
    """Origins that differ by float noise (1e-9 px) are the same grid: no error, no warning, values unchanged."""
    truth = _blocks()
    p = _write_label_raster(tmp_path / "labels.tif", truth,
                            transform=from_origin(ORIGIN[0] + 30.0 * 1e-9, ORIGIN[1], 30.0, 30.0), nodata=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lm = read_labels(p, scene)
    np.testing.assert_array_equal(lm.values, truth.astype(np.int32))


def test_label_raster_on_larger_grid_crop_needs_no_resampling(tmp_path, scene):
    """A raster on the same pixel grid but offset by whole pixels and larger is cropped exactly, without warning."""
    big = np.zeros((H + 7, W + 9), np.uint8)
    big[3:3 + H, 5:5 + W] = _blocks()
    p = _write_label_raster(tmp_path / "big.tif", big,
                            transform=from_origin(ORIGIN[0] - 5 * 30.0, ORIGIN[1] + 3 * 30.0, 30.0, 30.0), nodata=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lm = read_labels(p, scene)
    np.testing.assert_array_equal(lm.values, _blocks().astype(np.int32))


def test_enmap_labels_shifted_half_a_pixel(shared_data, tmp_path):
    """A real EnMAP label tile moved by half a pixel (15 m east) is refused over its image tile; allowed, it is
    resampled by nearest neighbour and lands one column over for half the tile's pixels at most."""
    d = shared_data / "enmap_potsdam"
    with rasterio.open(d / "labels/enmap_potsdam_tile_128_0.tif") as src:
        raw, t, crs = src.read(1), src.transform, src.crs
    shifted = _write_label_raster(tmp_path / "enmap_labels_shifted.tif", raw,
                                  transform=from_origin(t.c + 15.0, t.f, 30.0, 30.0), crs=crs)
    with open_scene(d / "images/enmap_potsdam_tile_128_0.tif") as sc:
        with pytest.raises(InputError, match=r"enmap_labels_shifted\.tif is not on the grid of "
                                             r"enmap_potsdam_tile_128_0\.tif: its origin is shifted by "
                                             r"\(\+0\.5, 0\) px \(15 m east\)"):
            read_labels(shifted, sc)
        with pytest.warns(UserWarning, match="nearest neighbour"):
            lm = read_labels(shifted, sc, allow_resample=True)
    direct = raw.astype(np.int32)
    assert lm.values.shape == (32, 32)
    # every resampled pixel takes the value of its own label pixel or of its western neighbour
    ok = (lm.values[:, 1:] == direct[:, 1:]) | (lm.values[:, 1:] == direct[:, :-1])
    assert ok.all()


# ------------------------------------------------------------------------------------------------------------------
# labels that do not overlap the scene
# ------------------------------------------------------------------------------------------------------------------
def test_label_raster_outside_scene_names_both_extents(tmp_path, scene):
    p = _write_label_raster(tmp_path / "labels.tif", np.ones((10, 20), np.uint8),
                            transform=from_origin(500000.0, 5801000.0, 50.0, 100.0), nodata=0)
    with pytest.raises(InputError) as ei:
        read_labels(p, scene)
    assert str(ei.value) == ("labels.tif and scene.tif do not overlap: the labels cover x 500000 to 501000, "
                             "y 5800000 to 5801000, the scene x 366000 to 367500, y 5808800 to 5810000 (EPSG:32633)")


def test_label_raster_outside_scene_in_other_crs_reports_scene_crs(tmp_path, scene):
    """Bounds of a far-away EPSG:4326 raster are given in the scene's CRS, even without --allow-resample."""
    from rasterio.warp import transform_bounds

    t = from_origin(2.0, 48.0, 0.001, 0.001)
    p = _write_label_raster(tmp_path / "paris.tif", np.ones((10, 10), np.uint8), transform=t,
                            crs=CRS.from_epsg(4326), nodata=0)
    with pytest.raises(InputError) as ei:
        read_labels(p, scene, allow_resample=True)
    msg = str(ei.value)
    x0, y0, x1, y1 = transform_bounds("EPSG:4326", UTM, 2.0, 47.99, 2.01, 48.0, densify_pts=21)
    assert msg.startswith(f"paris.tif and scene.tif do not overlap: the labels cover x {x0:.0f} to {x1:.0f}, "
                          f"y {y0:.0f} to {y1:.0f}, the scene x 366000 to 367500"), msg
    assert msg.endswith("(EPSG:32633)") and "\n" not in msg


def test_vector_polygons_outside_scene_names_both_extents(tmp_path):
    p = write_polygons(tmp_path / "p.gpkg")
    far = open_scene(write_fake_geotiff(tmp_path / "far.tif", transform=from_origin(500000.0, 5000000.0, 30.0, 30.0)))
    with far, pytest.raises(InputError) as ei:
        read_labels(p, far)
    # POLYGONS span pixel rows 5..35 and columns 2..45 of the GRID
    assert str(ei.value) == ("p.gpkg and far.tif do not overlap: the labels cover x 366060 to 367350, "
                             "y 5808950 to 5809850, the scene x 500000 to 501500, y 4998800 to 5000000 (EPSG:32633)")


def test_enmap_label_tile_over_another_tile(shared_data):
    d = shared_data / "enmap_potsdam"
    with open_scene(d / "images/enmap_potsdam_tile_192_160.tif") as sc:
        with pytest.raises(InputError, match=r"^enmap_potsdam_tile_64_0\.tif and enmap_potsdam_tile_192_160\.tif do "
                                             r"not overlap: the labels cover x 364095 to 365055, .*\(EPSG:32633\)$"):
            read_labels(d / "labels/enmap_potsdam_tile_64_0.tif", sc)


def test_missing_label_file(tmp_path, scene):
    with pytest.raises(InputError, match="not found"):
        read_labels(tmp_path / "nope.tif", scene)


def test_label_map_from_writer_output_keeps_legend(tmp_path, scene):
    """A class map written by RasterWriter reads back with its names and colours (from the .qml beside it)."""
    from hsikit.io.legend import Legend
    from hsikit.io.writer import RasterWriter

    legend = Legend.from_names(["water", "forest"], ["#0000ff", "#00aa00"])
    cm = np.zeros((H, W), np.uint8)
    cm[:20] = 1
    cm[20:, 10:] = 2
    out = tmp_path / "map.tif"
    with RasterWriter(out, width=W, height=H, count=1, dtype="uint8", crs=scene.crs, transform=scene.transform,
                      nodata=0, kind="categorical", legend=legend) as wr:
        wr.write(cm, Window(0, 0, W, H))
    lm = read_labels(out, scene)
    np.testing.assert_array_equal(lm.values, cm.astype(np.int32))
    assert lm.class_names == ["water", "forest"] and lm.class_colors == ["#0000ff", "#00aa00"]
    # without the .qml the category names in the .aux.xml (and colours from the colour table) are used
    out.with_suffix(".qml").unlink()
    lm2 = read_labels(out, scene)
    assert lm2.class_names == ["water", "forest"]
    assert lm2.class_colors == ["#0000ff", "#00aa00"]


# ------------------------------------------------------------------------------------------------------------------
# vector polygons
# ------------------------------------------------------------------------------------------------------------------
# polygons in pixel coordinates: a list of (row0, row1, col0, col1) boxes (pixel edges) and a class code
POLYGONS = [
    ([(5, 15, 10, 20)], 2),
    ([(25, 35, 30, 45)], 5),
    ([(20, 30, 2, 6), (26, 30, 6, 14)], 3),  # an L shape
]
CLASS_NAMES_BY_CODE = {2: "meadow", 3: "urban", 5: "forest"}


def _expected_labels(code_map=None) -> np.ndarray:
    e = np.zeros((H, W), np.int32)
    for boxes, v in POLYGONS:
        for r0, r1, c0, c1 in boxes:
            e[r0:r1, c0:c1] = code_map[v] if code_map else v
    return e


def _polygon_geometries(crs: str, transform=GRID):
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping, shape
    from shapely.ops import unary_union

    out = []
    for boxes, _ in POLYGONS:
        parts = []
        for r0, r1, c0, c1 in boxes:
            x0, y0 = transform * (c0, r1)
            x1, y1 = transform * (c1, r0)
            parts.append(box(x0, y0, x1, y1))
        g = unary_union(parts)
        assert g.geom_type == "Polygon"
        if crs != "EPSG:32633":
            g = shape(transform_geom("EPSG:32633", crs, mapping(g)))
        out.append(g)
    return out


def write_polygons(path, crs="EPSG:32633", *, values="int", column="class", extra=None, transform=GRID):
    import pyogrio.raw

    geoms = _polygon_geometries(crs, transform)
    if values == "int":
        cols = [np.array([v for _, v in POLYGONS], dtype=np.int32)]
    else:
        cols = [np.array([CLASS_NAMES_BY_CODE[v] for _, v in POLYGONS], dtype=object)]
    names = [column]
    for name, arr in (extra or {}).items():
        names.append(name)
        cols.append(arr)
    pyogrio.raw.write(str(path), np.array([g.wkb for g in geoms], dtype=object), cols, names, driver="GPKG",
                      geometry_type="Polygon", crs=crs, layer="labels")
    return path


def test_vector_polygons_utm_exact(tmp_path, scene):
    lm = read_labels(write_polygons(tmp_path / "p.gpkg"), scene)
    assert lm.values.shape == (H, W) and lm.values.dtype == np.int32
    np.testing.assert_array_equal(lm.values, _expected_labels())
    assert lm.counts() == {2: 100, 3: 72, 5: 150}
    assert lm.class_names is None


def test_vector_polygons_wgs84_reprojected(tmp_path, scene):
    p = write_polygons(tmp_path / "p4326.gpkg", "EPSG:4326")
    import pyogrio

    assert CRS.from_user_input(pyogrio.read_info(p)["crs"]).to_epsg() == 4326
    lm = read_labels(p, scene)
    e = _expected_labels()
    agreement = (lm.values == e).mean()
    assert agreement >= 0.95, agreement
    # and each class lands on (mostly) its own pixels, not just background agreement
    for code in (2, 3, 5):
        hit = (lm.values[e == code] == code).mean()
        assert hit >= 0.9, (code, hit)
        assert (lm.values == code).sum() == pytest.approx((e == code).sum(), rel=0.1)


def test_vector_integer_codes_with_name_column(tmp_path, scene):
    names = np.array([CLASS_NAMES_BY_CODE[v] for _, v in POLYGONS], dtype=object)
    p = write_polygons(tmp_path / "named.gpkg", column="class_id", extra={"class_name": names})
    lm = read_labels(p, scene)
    np.testing.assert_array_equal(lm.values, _expected_labels())
    assert lm.class_names == ["class_1", "meadow", "urban", "class_4", "forest"]


def test_vector_string_classes(tmp_path, scene):
    lm = read_labels(write_polygons(tmp_path / "names.gpkg", values="str"), scene)
    assert lm.class_names == ["forest", "meadow", "urban"]  # sorted, codes 1..K
    code = {"forest": 1, "meadow": 2, "urban": 3}
    np.testing.assert_array_equal(lm.values, _expected_labels({v: code[n] for v, n in CLASS_NAMES_BY_CODE.items()}))
    assert set(np.unique(lm.values)) == {0, 1, 2, 3}


def test_vector_explicit_attribute(tmp_path, scene):
    other = np.array(["x", "y", "z"], dtype=object)
    p = write_polygons(tmp_path / "attr.gpkg", column="landuse", extra={"note": other})
    lm = read_labels(p, scene, attribute="landuse")
    np.testing.assert_array_equal(lm.values, _expected_labels())
    lm_note = read_labels(p, scene, attribute="note")
    assert lm_note.class_names == ["x", "y", "z"]
    np.testing.assert_array_equal(lm_note.values, _expected_labels({2: 1, 5: 2, 3: 3}))


def test_vector_missing_attribute_lists_available(tmp_path, scene):
    p = write_polygons(tmp_path / "p.gpkg", column="class", extra={"note": np.array(["a", "b", "c"], dtype=object)})
    with pytest.raises(InputError, match="landcover") as ei:
        read_labels(p, scene, attribute="landcover")
    assert "['class', 'note']" in str(ei.value)


def test_vector_no_class_like_attribute(tmp_path, scene):
    p = write_polygons(tmp_path / "p.gpkg", column="foo")
    with pytest.raises(InputError, match=r"\['foo'\]"):
        read_labels(p, scene)


def test_vector_code_zero_rejected(tmp_path, scene):
    import pyogrio.raw

    g = _polygon_geometries("EPSG:32633")[0]
    p = tmp_path / "zero.gpkg"
    pyogrio.raw.write(str(p), np.array([g.wkb], dtype=object), [np.array([0], np.int32)], ["class"], driver="GPKG",
                      geometry_type="Polygon", crs="EPSG:32633")
    with pytest.raises(InputError, match="1..K"):
        read_labels(p, scene)


def test_vector_polygons_outside_scene(tmp_path):
    p = write_polygons(tmp_path / "p.gpkg")
    far = open_scene(write_fake_geotiff(tmp_path / "far.tif", transform=from_origin(500000.0, 5000000.0, 30.0, 30.0)))
    with far, pytest.raises(InputError, match="do not overlap"):
        read_labels(p, far)


def test_vector_labels_need_crs(tmp_path):
    p = write_polygons(tmp_path / "p.gpkg")
    with pytest.raises(InputError, match="no CRS"):
        read_labels(p, ArrayScene(np.zeros((2, H, W), np.float32)))


def test_unreadable_vector(tmp_path, scene):
    p = tmp_path / "broken.gpkg"
    p.write_text("not a geopackage")
    with pytest.raises(InputError, match="cannot read vector labels"):
        read_labels(p, scene)
