"""Label inputs: rasters on (or reprojected to) the scene grid and vector polygons rasterised onto it."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from fakedata import write_fake_geotiff
from hsikit.errors import InputError
from hsikit.io import open_scene, read_labels
from hsikit.io.scene import ArrayScene


def test_enmap_tile_labels(shared_data):
    d = shared_data / "enmap_potsdam"
    with open_scene(d / "images/enmap_potsdam_tile_96_96.tif") as sc:
        tile = read_labels(d / "labels/enmap_potsdam_tile_96_96.tif", sc)
        assert tile.values.dtype == np.int32 and tile.values.shape == (32, 32)
        with rasterio.open(d / "labels/enmap_potsdam_tile_96_96.tif") as src:
            np.testing.assert_array_equal(tile.values, src.read(1).astype(int))
        full = read_labels(d / "enmap_landcover_unstyled.tif", sc)  # 200x330 scene raster cut to the tile grid
        np.testing.assert_array_equal(full.values, tile.values)
        assert full.values.max() <= 6


def test_berlin_labels_with_qml(shared_data):
    d = shared_data / "enmap_berlin_labels"
    with open_scene(d / "landcover_map_l3.tif") as sc:
        lm = read_labels(d / "landcover_polygon_30m.tif", sc)
    assert lm.class_names == ["roof", "pavement", "low vegetation", "tree", "soil", "water"]
    assert lm.counts() == {1: 495, 2: 586, 3: 320, 4: 539, 5: 51, 6: 37}
    assert all(c.startswith("#") and len(c) == 7 for c in lm.class_colors)


def boxes():
    """Two rectangles in pixel coordinates (row0, row1, col0, col1) of the fake scene, with classes 2 and 5."""
    return [((5, 15, 10, 20), 2), ((25, 35, 30, 45), 5)]


def write_polygons(path, crs, value_kind="int"):
    import pyogrio.raw
    from rasterio.warp import transform_geom
    from shapely.geometry import box, mapping, shape

    t = from_origin(366000.0, 5810000.0, 30.0, 30.0)
    geoms, vals = [], []
    for (r0, r1, c0, c1), v in boxes():
        x0, y0 = t * (c0, r1)
        x1, y1 = t * (c1, r0)
        g = box(x0, y0, x1, y1)
        if crs != "EPSG:32633":
            g = shape(transform_geom("EPSG:32633", crs, mapping(g)))
        geoms.append(g.wkb)
        vals.append(v if value_kind == "int" else {2: "meadow", 5: "forest"}[v])
    arr = np.array(vals, dtype=np.int32 if value_kind == "int" else object)
    pyogrio.raw.write(str(path), np.array(geoms, dtype=object), [arr], ["class"], driver="GPKG",
                      geometry_type="Polygon", crs=crs)
    return path


def expected():
    e = np.zeros((40, 50), np.int32)
    for (r0, r1, c0, c1), v in boxes():
        e[r0:r1, c0:c1] = v
    return e


def test_vector_polygons_utm(tmp_path):
    sc = open_scene(write_fake_geotiff(tmp_path / "s.tif"))
    lm = read_labels(write_polygons(tmp_path / "p.gpkg", "EPSG:32633"), sc)
    np.testing.assert_array_equal(lm.values, expected())


def test_vector_polygons_reprojected(tmp_path):
    sc = open_scene(write_fake_geotiff(tmp_path / "s.tif"))
    lm = read_labels(write_polygons(tmp_path / "p4326.gpkg", "EPSG:4326"), sc)
    assert (lm.values == expected()).mean() > 0.95


def test_string_classes(tmp_path):
    sc = open_scene(write_fake_geotiff(tmp_path / "s.tif"))
    lm = read_labels(write_polygons(tmp_path / "names.gpkg", "EPSG:32633", "str"), sc)
    assert lm.class_names == ["forest", "meadow"]
    e = expected()
    assert (lm.values[e == 5] == 1).all() and (lm.values[e == 2] == 2).all()


def test_vector_errors(tmp_path):
    sc = open_scene(write_fake_geotiff(tmp_path / "s.tif"))
    p = write_polygons(tmp_path / "p.gpkg", "EPSG:32633")
    with pytest.raises(InputError, match=r"attributes are \['class'\]"):
        read_labels(p, sc, attribute="landcover")
    far = open_scene(write_fake_geotiff(tmp_path / "far.tif", transform=from_origin(500000.0, 5000000.0, 30.0, 30.0)))
    with pytest.raises(InputError, match="do not overlap"):
        read_labels(p, far)
    with pytest.raises(InputError, match="no CRS"):
        read_labels(p, ArrayScene(np.zeros((1, 40, 50))))


def test_raster_label_errors(tmp_path):
    sc = open_scene(write_fake_geotiff(tmp_path / "s.tif"))
    frac = tmp_path / "frac.tif"
    with rasterio.open(frac, "w", driver="GTiff", width=50, height=40, count=1, dtype="float32",
                       crs=CRS.from_epsg(32633), transform=from_origin(366000.0, 5810000.0, 30.0, 30.0)) as dst:
        dst.write(np.full((1, 40, 50), 1.5, np.float32))
    with pytest.raises(InputError, match="fractional"):
        read_labels(frac, sc)
    with pytest.raises(InputError, match="not found"):
        read_labels(tmp_path / "nope.tif", sc)
