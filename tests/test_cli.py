"""End-to-end CLI tests: user errors give one line and a non-zero exit; train -> classify writes a valid map."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from clirun import cli
from fakedata import write_fake_geotiff, write_labels_for
from hsikit.cli.main import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    scene = write_fake_geotiff(d / "scene.tif", bands=12, height=60, width=70, nodata_border=2)
    labels = write_labels_for(scene, d / "labels.tif")
    model = d / "model.safetensors"
    code = run(["train", "classifier", str(scene), "--labels", str(labels), "-o", str(model), "--epochs", "15",
                "--seed", "0"])
    assert code == 0
    return d, scene, labels, model


def test_help_does_not_import_torch():
    code = "import sys; from hsikit.cli.main import run; run(['--help']) if False else None; " \
           "import hsikit.cli.main; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"
    exe = Path(sys.executable).parent / "hsikit"
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "classify" in res.stdout


def test_info_text_and_json(capsys, tmp_path):
    scene = write_fake_geotiff(tmp_path / "s.tif", bands=8)
    code, out, _ = cli(capsys, "info", scene)
    assert code == 0 and "8 bands" in out and "EPSG:32633" in out
    code, out, _ = cli(capsys, "info", scene, "--json")
    d = json.loads(out)
    assert d["bands"] == 8 and d["epsg"] == 32633 and d["wavelength_range_nm"][0] == pytest.approx(420.0)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["info", "/nonexistent/scene.tif"], "not found"),
        (["classify", "/nonexistent/scene.tif", "-o", "x.tif"], "not found"),
    ],
)
def test_missing_file_is_one_line_error(capsys, tmp_path, args, needle):
    code, _, err = cli(capsys, *args)
    assert code == 2
    assert needle in err and err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_not_a_raster(capsys, tmp_path):
    p = tmp_path / "notes.tif"
    p.write_text("this is not a raster")
    code, _, err = cli(capsys, "info", p)
    assert code == 2 and "not a raster" in err and len(err.strip().splitlines()) == 1


def test_bad_option_value(capsys, trained):
    d, scene, _, model = trained
    code, _, err = cli(capsys, "classify", scene, "--model", model, "-o", d / "x.tif", "--probabilities", "int7")
    assert code == 2 and "int7" in err


def test_existing_output_needs_overwrite(capsys, trained):
    d, scene, _, model = trained
    out = d / "exists.tif"
    out.write_bytes(b"keep me")
    code, _, err = cli(capsys, "classify", scene, "--model", model, "-o", out)
    assert code == 2 and "--overwrite" in err
    assert out.read_bytes() == b"keep me"


def test_unwritable_output_dir(capsys, trained):
    d, scene, _, model = trained
    code, _, err = cli(capsys, "classify", scene, "--model", model, "-o", d / "no" / "such" / "dir" / "x.tif")
    assert code == 2 and err.startswith("error:")


def test_band_mismatch(capsys, trained, tmp_path):
    d, _, _, model = trained
    other = write_fake_geotiff(tmp_path / "other.tif", bands=9)
    code, _, err = cli(capsys, "classify", other, "--model", model, "-o", tmp_path / "c.tif")
    assert code == 2
    assert "12 bands" in err and "9 bands" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.tif").exists()


def test_debug_shows_traceback(trained, tmp_path):
    exe = Path(sys.executable).parent / "hsikit"
    res = subprocess.run([str(exe), "--debug", "info", str(tmp_path / "missing.tif")], capture_output=True, text=True)
    assert res.returncode != 0 and "Traceback" in res.stderr


def test_models_lists_registry(capsys):
    code, out, _ = cli(capsys, "models", "--json")
    names = {e["name"]: e for e in json.loads(out)}
    assert code == 0 and {"spectral-cnn", "unet"} <= set(names)
    assert names["unet"]["task"] == "classification"


def test_train_then_classify(capsys, trained):
    d, scene, labels, model = trained
    out = d / "classes.tif"
    code, stdout, err = cli(capsys, "classify", scene, "--model", model, "-o", out, "--tile", "32",
                            "--probabilities", "--confidence", "--quicklook")
    assert code == 0, err
    assert out.exists() and out.with_suffix(".qml").exists() and out.with_suffix(".png").exists()
    probs = d / "classes_probabilities.tif"
    with rasterio.open(out) as dst, rasterio.open(scene) as src, rasterio.open(labels) as lab:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert dst.nodata == 0 and dst.dtypes[0] == "uint8"
        assert dst.colormap(1)[1][3] == 255 and dst.colormap(1)[0][3] == 0
        cls = dst.read(1)
        ref = lab.read(1)
        assert (cls[:2, :] == 0).all()  # nodata border stays nodata
        m = ref > 0
        assert (cls[m] == ref[m]).mean() > 0.9
        tags = dst.tags()
        assert tags["HSIKIT_MODEL"] == "spectral-cnn" and tags["HSIKIT_INPUT"] == "scene.tif"
        assert "/" not in tags["HSIKIT_COMMAND"].split(" ", 2)[-1].split()[0]
    with rasterio.open(probs) as p:
        assert p.count == 4 and p.dtypes[0] == "float32"
        arr = p.read()
        v = ~np.isnan(arr[0])
        assert np.allclose(arr[:, v].sum(axis=0), 1.0, atol=1e-4)
        assert np.isnan(arr[:, :2, :]).all()
    with rasterio.open(d / "classes_confidence.tif") as c:
        conf = c.read(1)
        np.testing.assert_allclose(conf[v], arr[:, v].max(axis=0), atol=1e-6)
        assert c.descriptions == ("confidence",) and np.isnan(conf[:2]).all()


@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="gdalinfo (Debian gdal-bin) not installed")
def test_gdalinfo_reads_class_map(capsys, trained):
    d, scene, _, model = trained
    out = d / "g.tif"
    assert cli(capsys, "classify", scene, "--model", model, "-o", out)[0] == 0
    info = json.loads(subprocess.run(["gdalinfo", "-json", str(out)], capture_output=True, text=True, check=True).stdout)
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    band = info["bands"][0]
    assert band["colorInterpretation"] == "Palette" and len(band["colorTable"]["entries"]) >= 5
    assert band["categories"] == ["no data", "class_1", "class_2", "class_3", "class_4"]
    assert "overviews" not in band, "60x70 px fits under the 128 px overview threshold"
    assert info["coordinateSystem"]["wkt"]
