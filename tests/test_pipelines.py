"""The preprocess and info pipelines as users run them (CLI and Python)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

import hsikit
from hsikit.cli.main import run


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from hsikit.synthetic import make_scene, write_scene_geotiff

    d = tmp_path_factory.mktemp("pp")
    return write_scene_geotiff(make_scene(40, 50, seed=2), d / "scene.tif")


def test_preprocess_cli_writes_spectral_cog(scene, tmp_path, capsys):
    out = tmp_path / "s2.tif"
    code = run(["preprocess", str(scene), "-o", str(out), "--drop-bad-bands", "--resample-to", "sentinel2"])
    assert code == 0, capsys.readouterr().err
    with rasterio.open(out) as dst, rasterio.open(scene) as src:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert dst.dtypes[0] == "float32" and np.isnan(dst.nodata)
        assert dst.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert dst.descriptions[3] == "B04 (664.6 nm)"
        assert float(dst.tags(4)["wavelength"]) == pytest.approx(664.6)
        assert dst.tags(4)["wavelength_units"] == "nm" and "fwhm" in dst.tags(4)
        data = dst.read()
        nod = (src.read(1) == src.nodata)
        assert np.isnan(data[:, nod]).all() and np.isfinite(data[:, ~nod]).all()
        b4, b8 = data[3][~nod], data[7][~nod]
        assert 0 < np.nanmedian(b4) < 0.3, "values are reflectance after the file's 1e-4 scale"
        chain = json.loads(dst.tags()["HSIKIT_PREPROCESSING"])
        assert [s["op"] for s in chain["steps"]][:3] == ["drop_bad_bands", "scale", "resample"]
        assert (b8 > b4).mean() > 0.5


def test_preprocess_pca_and_chain_file(scene, tmp_path):
    res = hsikit.preprocess_scene(str(scene), out=tmp_path / "pca.tif", drop_bad_bands=True, normalize=True, pca=5,
                            progress=False)
    assert res.bands_out == 5
    chain_file = tmp_path / "chain.json"
    chain_file.write_text(json.dumps(res.chain))
    again = hsikit.preprocess_scene(str(scene), out=tmp_path / "pca2.tif", chain=chain_file, progress=False)
    with rasterio.open(tmp_path / "pca.tif") as a, rasterio.open(tmp_path / "pca2.tif") as b:
        assert a.descriptions == ("PC1", "PC2", "PC3", "PC4", "PC5")
        np.testing.assert_array_equal(a.read(), b.read())
    assert again.bands_out == 5


def test_info_json_of_real_enmap(shared_data):
    d = hsikit.scene_info(shared_data / "enmap_potsdam/images/enmap_potsdam_tile_128_0.tif")
    assert d["bands"] == 224 and d["epsg"] == 32633 and d["resolution"] == [30.0, 30.0]
    assert d["bad_bands"] == [130, 131, 132, 133, 134, 135]
    assert d["wavelength_range_nm"] == pytest.approx([418.24, 2445.53])
    assert d["nodata"] == -32768 and d["scale"] == pytest.approx(1e-4)
    json.dumps(d)


def test_to_xarray_is_lazy_and_georeferenced(scene):
    from rasterio.windows import Window

    with hsikit.open_scene(scene) as sc:
        da = sc.to_xarray(chunks=16)
        assert da.chunks is not None and da.rio.crs == sc.crs
        assert da.rio.transform() == sc.transform
        np.testing.assert_array_equal(da.isel(x=slice(4, 20), y=slice(3, 9)).values, sc.read(Window(4, 3, 16, 6)))
        assert da.wavelength.values[0] == pytest.approx(400.0)
