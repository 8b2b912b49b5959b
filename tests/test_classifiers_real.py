"""Every classifier on the real EnMAP Potsdam scene (published tile split): trains with falling loss, saves a
safetensors checkpoint and classifies the scene through `hsikit classify` into a valid, QGIS-ready class map."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from hsikit.cli.main import run

# small but real settings: speed for CI, not accuracy (the accuracy study is bench/bench_classifiers.py)
CASES = {
    "freenet": ["--iterations", "40", "--set", "reduction_ratio=0.25", "--lr", "0.01"],
    "morpmamba": ["--epochs", "4"],
    "unet": ["--epochs", "4", "--set", "encoder_depth=3"],
    "spectral-cnn": ["--epochs", "4"],
    "svm": [],
    "random-forest": ["--set", "n_trees=30"],
}


@pytest.fixture(scope="module")
def potsdam(shared_data, tmp_path_factory):
    from hsikit.pipelines.protocols import enmap_potsdam

    return enmap_potsdam(shared_data / "enmap_potsdam", tmp_path_factory.mktemp("potsdam"))


@pytest.mark.parametrize("model", list(CASES))
def test_train_and_classify_real_scene(model, potsdam, tmp_path, capsys):
    ckpt = tmp_path / f"{model}.safetensors"
    code = run(["-q", "train", "classifier", str(potsdam.scene), "-l", str(potsdam.labels), "--split",
                str(potsdam.split), "-m", model, "-o", str(ckpt), "--seed", "0", *CASES[model]])
    err = capsys.readouterr().err
    assert code == 0, err
    rep = json.loads((tmp_path / f"{model}_report/report.json").read_text())
    curve = rep["loss_curve"]
    if model not in ("svm", "random-forest"):
        n = max(1, len(curve) // 5)
        assert np.mean(curve[-n:]) < 0.8 * np.mean(curve[:n]), curve
    assert rep["split"]["counts"]["test"] and sum(rep["split"]["counts"]["test"].values()) == 660
    assert rep["metrics"]["oa"] > 0.4  # well above the 1/6 of guessing among six classes
    with open(ckpt, "rb") as f:
        assert f.read(8) and b"hsikit" in f.read(200000)  # safetensors header with hsikit metadata
    out = tmp_path / f"{model}.tif"
    code = run(["-q", "classify", str(potsdam.scene), "-m", str(ckpt), "-o", str(out), "--tile", "160"])
    assert code == 0, capsys.readouterr().err
    with rasterio.open(out) as dst, rasterio.open(potsdam.scene) as src:
        assert dst.crs == src.crs and dst.transform == src.transform
        assert dst.dtypes[0] == "uint8" and dst.nodata == 0
        cm = dst.read(1)
        assert dst.colormap(1)[1][:3] != (0, 0, 0)
    # pixels outside the 18 tiles are nodata in the scene and stay nodata in the map
    assert (cm == 0).any() and (cm > 0).sum() >= 18 * 32 * 32 * 0.95
    assert out.with_suffix(".qml").exists()


def test_resume_continues_an_interrupted_run(potsdam, tmp_path):
    """Lightning's last.ckpt carries weights, optimiser, schedule and history: a resumed run picks up where the
    first stopped instead of starting over."""
    from hsikit.pipelines.train_classifier import train_classifier
    from hsikit.training.run import RunOptions

    opts = RunOptions(progress=False, report_dir=tmp_path / "rep")
    kw = dict(model="freenet", split=_split(potsdam), model_config={"reduction_ratio": 0.25})
    first = train_classifier(potsdam.scene, potsdam.labels, out=tmp_path / "a.safetensors", iterations=6, run=opts,
                             **kw)
    assert (tmp_path / "rep/checkpoints/last.ckpt").exists()
    steps_first = first.history[-1]["step"]
    again = train_classifier(potsdam.scene, potsdam.labels, out=tmp_path / "a.safetensors", iterations=12,
                             run=opts.replace(resume=True), **kw)
    assert again.history[: len(first.history)] == first.history
    assert again.history[-1]["step"] == 12 > steps_first


def _split(p) -> np.ndarray:
    with rasterio.open(p.split) as src:
        return src.read(1)
