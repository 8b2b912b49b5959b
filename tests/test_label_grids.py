"""Label and split rasters off the scene grid in the pipelines: refused with one line (CLI: exit 2), resampled by
nearest neighbour only with ``allow_resample``; labels outside the scene refused before training."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from clirun import cli
from fakedata import write_fake_geotiff, write_labels_for
from hsikit.errors import InputError
from hsikit.training.run import RunOptions

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"
QUIET = RunOptions(progress=False)


def shifted_copy(src_path: Path, out: Path, dx: float, dy: float = 0.0) -> Path:
    """``src_path`` with its origin moved by (dx, dy) map units, values unchanged."""
    with rasterio.open(src_path) as src:
        data, profile, t = src.read(), src.profile, src.transform
    profile.update(transform=from_origin(t.c + dx, t.f + dy, t.a, -t.e))
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(data)
    return out


@pytest.fixture
def scene_and_labels(tmp_path):
    scene = write_fake_geotiff(tmp_path / "scene.tif", bands=8)
    labels = write_labels_for(scene, tmp_path / "labels.tif")
    return scene, labels


def test_train_classifier_refuses_labels_half_a_pixel_off(scene_and_labels, tmp_path):
    from hsikit.pipelines.train_classifier import train_classifier

    scene, labels = scene_and_labels
    off = shifted_copy(labels, tmp_path / "labels_off.tif", 15.0)
    with pytest.raises(InputError, match=r"^labels_off\.tif is not on the grid of scene\.tif: its origin is "
                                         r"shifted by \(\+0\.5, 0\) px \(15 m east\); pass --allow-resample"):
        train_classifier(scene, off, out=tmp_path / "m.safetensors", model="random-forest", run=QUIET)
    assert not (tmp_path / "m.safetensors").exists()
    with pytest.warns(UserWarning, match=r"labels_off\.tif is resampled by nearest neighbour"):
        res = train_classifier(scene, off, out=tmp_path / "m.safetensors", model="random-forest", run=QUIET,
                               allow_resample=True)
    assert res.checkpoint.exists()


def test_train_classifier_split_raster_path_on_other_grid(scene_and_labels, tmp_path):
    from hsikit.pipelines.train_classifier import train_classifier

    scene, labels = scene_and_labels
    with rasterio.open(labels) as src:
        lab, profile = src.read(1), src.profile
    split = np.where(lab > 0, 1 + (np.arange(lab.size).reshape(lab.shape) % 3), 0).astype(np.uint8)
    profile.update(nodata=None)
    with rasterio.open(tmp_path / "split.tif", "w", **profile) as dst:
        dst.write(split, 1)
    off = shifted_copy(tmp_path / "split.tif", tmp_path / "split_off.tif", 0.0, 10.0)
    with pytest.raises(InputError, match=r"^split_off\.tif is not on the grid of scene\.tif: its origin is shifted "
                                         r"by \(0, -0\.3333\) px \(10 m north\)"):
        train_classifier(scene, labels, out=tmp_path / "m.safetensors", model="random-forest", split=off,
                         run=QUIET)
    res = train_classifier(scene, labels, out=tmp_path / "m.safetensors", model="random-forest",
                           split=tmp_path / "split.tif", run=QUIET)
    counts = json.loads((res.report_dir / "report.json").read_text())["split"]["counts"]
    assert sum(counts["train"].values()) == int((split == 1).sum())


def test_train_cli_error_is_one_line(scene_and_labels, tmp_path, capsys):
    scene, labels = scene_and_labels
    off = shifted_copy(labels, tmp_path / "labels_off.tif", -15.0)
    code, _, err = cli(capsys, "train", "classifier", scene, "--labels", off, "-o", tmp_path / "m.safetensors",
                       "--model", "random-forest")
    assert code == 2
    assert err.strip().count("\n") == 0, err
    assert err.startswith("error: labels_off.tif is not on the grid of scene.tif: its origin is shifted by "
                          "(-0.5, 0) px (15 m west)")
    assert "Traceback" not in err


def test_train_cli_labels_outside_scene(scene_and_labels, tmp_path, capsys):
    """Before, this failed later with "training needs labels of at least two classes"."""
    scene, labels = scene_and_labels
    far = shifted_copy(labels, tmp_path / "far.tif", 100000.0)
    code, _, err = cli(capsys, "train", "classifier", scene, "--labels", far, "-o", tmp_path / "m.safetensors",
                       "--model", "random-forest")
    assert code == 2
    assert err.strip() == ("error: far.tif and scene.tif do not overlap: the labels cover x 466000 to 467500, "
                           "y 5808800 to 5810000, the scene x 366000 to 367500, y 5808800 to 5810000 (EPSG:32633)")


def test_evaluate_split_and_labels_off_grid(tmp_path):
    from hsikit.pipelines.evaluate import evaluate

    labels = SAMPLE / "sample_labels.tif"
    with rasterio.open(labels) as src:
        lab, profile = src.read(1), src.profile
    split = np.where(lab > 0, 3, 0).astype(lab.dtype)
    profile.update(nodata=None)
    with rasterio.open(tmp_path / "split.tif", "w", **profile) as dst:
        dst.write(split, 1)
    off = shifted_copy(tmp_path / "split.tif", tmp_path / "split_off.tif", 0.25 * profile["transform"].a)
    model, scene = SAMPLE / "sample_model.safetensors", SAMPLE / "sample_scene.tif"
    with pytest.raises(InputError, match=r"^split_off\.tif is not on the grid of sample_scene\.tif: its origin is "
                                         r"shifted by \(\+0\.25, 0\) px"):
        evaluate(model, scene, labels, out=tmp_path / "r1", split=off, progress=False)
    lab_off = shifted_copy(labels, tmp_path / "labels_off.tif", 0.0, 0.5 * profile["transform"].e)
    with pytest.raises(InputError, match=r"^labels_off\.tif is not on the grid of sample_scene\.tif"):
        evaluate(model, scene, lab_off, out=tmp_path / "r2", progress=False)
    with pytest.warns(UserWarning, match=r"split_off\.tif is resampled by nearest neighbour"):
        res = evaluate(model, scene, labels, out=tmp_path / "r3", split=off, allow_resample=True, progress=False,
                       record=False)  # the committed sample model stays as it is
    assert res.metrics["n"] > 0


def test_segmenter_labels_off_grid(tmp_path):
    """The segmenter's label rasters go through the same check (before any model is built)."""
    from hsikit.pipelines.finetune import open_labelled, train_segmenter

    scene = write_fake_geotiff(tmp_path / "scene.tif", bands=120)  # dense enough to resample onto S2 bands
    labels = write_labels_for(scene, tmp_path / "labels.tif")
    off = shifted_copy(labels, tmp_path / "labels_off.tif", 7.5)
    with pytest.raises(InputError, match=r"^labels_off\.tif is not on the grid of scene\.tif: its origin is shifted "
                                         r"by \(\+0\.25, 0\) px \(7\.5 m east\)"):
        train_segmenter([scene], [off], out=tmp_path / "seg.safetensors", steps=1, run=QUIET)
    with pytest.warns(UserWarning, match="nearest neighbour"):
        opened = open_labelled([(str(scene), str(off))], ("B02", "B03", "B04", "B08"), "auto", None,
                               allow_resample=True)
    try:
        assert len(opened) == 1 and opened[0][2].values.shape == (40, 50)
    finally:
        for sc, _, _ in opened:
            sc.close()
