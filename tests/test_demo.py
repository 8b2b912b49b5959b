"""The embedded sample and the demo job: the class map is a QGIS-ready COG (checked by gdalinfo too)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio

from hsikit.cli.main import run
from hsikit.io.labels import read_qml_palette

SAMPLE = Path(__file__).resolve().parents[1] / "sample_data"


def test_sample_files_small_and_complete():
    files = ["sample_scene.tif", "sample_labels.tif", "sample_labels.gpkg", "sample_model.safetensors"]
    assert all((SAMPLE / f).exists() for f in files)
    assert sum((SAMPLE / f).stat().st_size for f in files) < 10e6
    with rasterio.open(SAMPLE / "sample_scene.tif") as src:
        assert src.count > 100 and src.crs.to_epsg() == 32633 and src.width == src.height == 200


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "sample_classes.tif"
    code = run(["classify", str(SAMPLE / "sample_scene.tif"), "--model", str(SAMPLE / "sample_model.safetensors"),
                "-o", str(out), "--quicklook"])
    assert code == 0
    return out


def test_demo_class_map(demo):
    with rasterio.open(demo) as dst, rasterio.open(SAMPLE / "sample_scene.tif") as src, \
            rasterio.open(SAMPLE / "sample_labels.tif") as lab:
        assert dst.crs == src.crs and dst.transform == src.transform and dst.shape == src.shape
        assert dst.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert dst.overviews(1), "zoomed-out levels for QGIS"
        cls, ref = dst.read(1), lab.read(1)
        assert np.array_equal(cls == 0, ref == 0), "nodata where the scene has none"
        assert (cls[ref > 0] == ref[ref > 0]).mean() > 0.95
    names = [e[2] for e in read_qml_palette(demo.with_suffix(".qml"))]
    assert names == ["water", "trees", "grassland", "bare soil", "red-tile roof", "concrete roof", "asphalt"]
    assert demo.with_suffix(".png").stat().st_size > 1000


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="gdalinfo (Debian gdal-bin) not installed")
def test_demo_gdalinfo(demo):
    info = json.loads(subprocess.run(["gdalinfo", "-json", str(demo)], capture_output=True, text=True, check=True).stdout)
    src = json.loads(subprocess.run(["gdalinfo", "-json", str(SAMPLE / "sample_scene.tif")], capture_output=True,
                                    text=True, check=True).stdout)
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    assert info["geoTransform"] == src["geoTransform"]
    assert info["coordinateSystem"]["wkt"] == src["coordinateSystem"]["wkt"]
    b = info["bands"][0]
    assert b["type"] == "Byte" and b["noDataValue"] == 0 and b["colorInterpretation"] == "Palette"
    assert b["categories"][:3] == ["no data", "water", "trees"]
    assert b["colorTable"]["entries"][0][3] == 0
    assert len(b["overviews"]) >= 1


def test_default_model_is_freenet():
    from hsikit.checkpoint import read_checkpoint_meta

    meta = read_checkpoint_meta(SAMPLE / "sample_model.safetensors")
    assert meta.arch == "freenet" and meta.task == "classification"
    assert meta.provenance["test_oa"] > 0.97
