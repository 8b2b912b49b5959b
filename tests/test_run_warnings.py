"""One warning per fact per run: a scene without CRS is reported once (not once more per output), and a run
without --model says which model it falls back to and what that model was trained on."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.windows import Window

from clirun import cli
from hsikit.io.scene import ArrayScene
from hsikit.io.writer import RasterWriter

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SCENE = ROOT / "sample_data" / "sample_scene.tif"
SAMPLE_MODEL = ROOT / "sample_data" / "sample_model.safetensors"

needs_sample = pytest.mark.skipif(not (SAMPLE_SCENE.exists() and SAMPLE_MODEL.exists()),
                                  reason="the sample scene/model of a source checkout are needed")


def _no_crs_crop(path: Path, size: int = 40) -> Path:
    """A corner of the sample scene (the sample model's bands) written without CRS."""
    with rasterio.open(SAMPLE_SCENE) as src:
        w = Window(0, 0, size, size)
        prof = dict(src.profile, width=size, height=size, transform=src.window_transform(w), blockxsize=16,
                    blockysize=16)
        prof.pop("crs")
        with rasterio.open(path, "w", **prof) as dst:
            dst.write(src.read(window=w))
            dst.update_tags(**src.tags())  # still the synthetic sample (its SENSOR tag says so)
            for i in range(src.count):
                dst.update_tags(i + 1, **src.tags(i + 1))
    return path


@needs_sample
def test_classify_without_crs_warns_once(tmp_path, capsys):
    scene = _no_crs_crop(tmp_path / "scene.tif")
    code, out, err = cli(capsys, "-q", "classify", scene, "-o", tmp_path / "classes.tif", "--model", SAMPLE_MODEL,
                         "--probabilities", "float32", "--confidence")
    assert code == 0, err
    crs_lines = [line for line in err.splitlines() if line.startswith("warning:") and "CRS" in line]
    assert crs_lines == ["warning: scene.tif has no CRS: outputs are written on its pixel grid without "
                         "georeferencing"], err
    assert "no --model given" not in err
    for name in ("classes.tif", "classes_probabilities.tif", "classes_confidence.tif"):
        with rasterio.open(tmp_path / name) as src:
            assert src.crs is None


@needs_sample
def test_classify_without_model_names_the_sample_model(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HSIKIT_DEFAULT_MODEL", raising=False)
    scene = _no_crs_crop(tmp_path / "scene.tif", size=24)
    code, out, err = cli(capsys, "-q", "classify", scene, "-o", tmp_path / "classes.tif")
    assert code == 0, err
    lines = [line for line in err.splitlines() if "no --model given" in line]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("warning: no --model given: using the sample model sample_model.safetensors (freenet "
                           "trained on the synthetic sample scene; 7 classes: water, trees, ")
    assert "103 bands 400-2484 nm" in line and line.endswith("; pass --model for real scenes)")


@needs_sample
def test_default_model_from_environment_is_named(tmp_path, monkeypatch):
    from hsikit.pipelines.common import default_model

    model = tmp_path / "regional.safetensors"
    shutil.copy(SAMPLE_MODEL, model)
    monkeypatch.setenv("HSIKIT_DEFAULT_MODEL", str(model))
    with pytest.warns(UserWarning) as rec:
        assert default_model() == model
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert msg.startswith(f"no --model given: using $HSIKIT_DEFAULT_MODEL {model} (freenet trained on "
                          "sample_scene.tif; 7 classes: ")
    assert "\n" not in msg and "sample model" not in msg

    monkeypatch.setenv("HSIKIT_DEFAULT_MODEL", str(tmp_path / "missing.safetensors"))
    with pytest.warns(UserWarning, match=r"using \$HSIKIT_DEFAULT_MODEL .*missing.safetensors$"):
        default_model()  # the facts are left out; loading the model reports the missing file


def test_writer_stays_quiet_only_on_a_reported_grid(tmp_path):
    from hsikit.pipelines.common import check_georeferencing

    grid = Affine(2.0, 0.0, 1000.0, 0.0, -2.0, 3000.0)
    sc = ArrayScene(np.ones((2, 7, 9), np.float32), path="nocrs.tif", transform=grid)
    with pytest.warns(UserWarning, match="nocrs.tif has no CRS"):
        check_georeferencing(sc)

    def write(name: str, width: int, transform: Affine) -> list[str]:
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            with RasterWriter(tmp_path / name, width=width, height=7, count=1, dtype="float32", crs=None,
                              transform=transform, nodata=float("nan"), kind="continuous") as wr:
                wr.write(np.zeros((1, 7, width), np.float32), Window(0, 0, width, 7))
        return [str(r.message) for r in rec if "CRS" in str(r.message)]

    assert write("same_grid.tif", 9, grid) == []
    assert write("other_grid.tif", 18, Affine(1.0, 0.0, 1000.0, 0.0, -1.0, 3000.0)) == [
        "other_grid.tif: no CRS, written on the pixel grid without georeferencing"]


def test_classify_without_model_refuses_a_scene_that_is_not_the_sample(tmp_path, capsys, monkeypatch):
    """The sample model would map any 103-band scene with confidence; a real scene needs a real model."""
    from fakedata import write_fake_geotiff

    monkeypatch.delenv("HSIKIT_DEFAULT_MODEL", raising=False)
    scene = write_fake_geotiff(tmp_path / "enmap.tif", bands=103)
    code, out, err = cli(capsys, "classify", scene, "-o", tmp_path / "classes.tif")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no --model given: enmap.tif needs a model trained for its sensor" in err
    assert "hsikit train classifier" in err and "hsikit import-weights" in err
    assert not (tmp_path / "classes.tif").exists()
