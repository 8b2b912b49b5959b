"""The synthetic scene generator: plausible spectra, determinism, consistent labels and files."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from hsikit.synthetic import (CLASS_NAMES, NODATA, make_large_scene_file, make_scene, material_spectra,
                              wavelength_grid, write_labels, write_scene_geotiff)


def band(wl, nm):
    return int(np.argmin(np.abs(wl - nm)))


def test_material_spectra_features():
    wl, _ = wavelength_grid()
    sp = dict(zip(CLASS_NAMES, material_spectra(wl)))
    ndvi = lambda s: (s[band(wl, 800)] - s[band(wl, 670)]) / (s[band(wl, 800)] + s[band(wl, 670)])  # noqa: E731
    assert ndvi(sp["trees"]) > 0.6 and ndvi(sp["grassland"]) > 0.6 and ndvi(sp["water"]) < 0
    assert sp["trees"][band(wl, 800)] > 5 * sp["trees"][band(wl, 670)], "red edge"
    assert (sp["water"][wl > 900] < 0.02).all()
    assert sp["bare soil"][band(wl, 1600)] > sp["bare soil"][band(wl, 500)]
    assert sp["red-tile roof"][band(wl, 700)] > 3 * sp["red-tile roof"][band(wl, 450)]
    assert sp["asphalt"].max() < 0.2 and sp["concrete roof"].min() > 0.15


def test_scene_is_deterministic_and_consistent():
    a, b, c = make_scene(60, 70, seed=1), make_scene(60, 70, seed=1), make_scene(60, 70, seed=2)
    assert np.array_equal(a.cube, b.cube) and not np.array_equal(a.cube, c.cube)
    nod = (a.cube == NODATA).all(axis=0)
    assert nod.any() and np.array_equal(nod, a.labels == 0)
    assert set(np.unique(a.labels)) - {0} <= set(range(1, 8))
    assert a.bad.sum() > 0 and all((1340 <= w <= 1460) or (1790 <= w <= 1960) for w in a.wavelengths[a.bad])
    assert a.cube.shape[0] > 100


def test_files_round_trip(tmp_path):
    from hsikit.io import open_scene, read_labels

    s = make_scene(50, 60, seed=0)
    write_scene_geotiff(s, tmp_path / "s.tif")
    write_labels(s, tmp_path / "l.tif", tmp_path / "l.gpkg")
    with open_scene(tmp_path / "s.tif") as sc:
        assert sc.crs.to_epsg() == 32633 and sc.bands.wavelengths[0] == pytest.approx(400)
        assert sum(sc.bands.bad) == s.bad.sum() and sc.bands.scale[0] == pytest.approx(1e-4)
        ras = read_labels(tmp_path / "l.tif", sc)
        vec = read_labels(tmp_path / "l.gpkg", sc, attribute="class_id")
        assert ras.class_names == CLASS_NAMES
        assert np.array_equal(ras.values, s.labels)
        assert (vec.values == s.labels).mean() > 0.95


def test_large_scene_file_streams(tmp_path):
    p = make_large_scene_file(tmp_path / "big.tif", 300, 260, bands=20, seed=3, block=128)
    q = make_large_scene_file(tmp_path / "big2.tif", 300, 260, bands=20, seed=3, block=128)
    with rasterio.open(p) as a, rasterio.open(q) as b:
        assert a.shape == (300, 260) and a.count == 20 and a.block_shapes[0] == (128, 128)
        assert np.array_equal(a.read(), b.read())
        d = a.read()
        assert (d != NODATA).all() and 0 < d[0].mean() < 5000
