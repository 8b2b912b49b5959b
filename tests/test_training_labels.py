"""The user's labels train: every labelled pixel but a validation share, test only where the user says; the
papers' protocols under --protocol paper; unambiguous fractions and counts; the counts printed and recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from clirun import cli
from fakedata import write_fake_geotiff, write_labels_for
from hsikit.errors import InputError, OptionError
from hsikit.pipelines.train_classifier import train_classifier
from hsikit.training.run import RunOptions


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("labels")
    scene = write_fake_geotiff(d / "scene.tif", bands=8, height=40, width=50)
    labels = write_labels_for(scene, d / "labels.tif")
    with rasterio.open(labels) as src:
        lab, profile = src.read(1), src.profile
    # test labels: the unlabelled pixels of the last 10 rows, with their true class
    test = np.zeros_like(lab)
    yy, xx = np.mgrid[0 : lab.shape[0], 0 : lab.shape[1]]
    truth = (((yy // 10) + (xx // 13)) % 4 + 1).astype("uint8")
    region = (yy >= 30) & (lab == 0)
    test[region] = truth[region]
    with rasterio.open(d / "test.tif", "w", **profile) as dst:
        dst.write(test, 1)
    return scene, labels, d / "test.tif", lab, test


def _sizes(lab: np.ndarray) -> dict[str, int]:
    return {str(c): int(n) for c, n in zip(*np.unique(lab[lab > 0], return_counts=True))}


def _report(res) -> dict:
    return json.loads((Path(res.report_dir) / "report.json").read_text())


def _train(data, tmp_path, **kw):
    scene, labels = data[:2]
    lines: list[str] = []
    run = RunOptions(progress=False, overwrite=kw.pop("overwrite", False))
    res = train_classifier(scene, labels, out=tmp_path / "m.safetensors", model="random-forest", run=run,
                           echo=lines.append, **kw)
    return res, _report(res), lines


def test_default_trains_on_every_labelled_pixel_but_validation(data, tmp_path):
    lab = data[3]
    res, rep, lines = _train(data, tmp_path)
    counts, sizes = rep["split"]["counts"], _sizes(lab)
    assert rep["split"]["protocol"] == "user" and counts["test"] == {} and counts["unused"] == {}
    for c, n in sizes.items():
        assert counts["val"][c] == max(1, round(0.1 * n)) and counts["train"][c] == n - counts["val"][c]
    assert res.scored_on == "validation" and rep["scored_on"] == "validation"
    assert sum(res.metrics["support"]) == sum(counts["val"].values())
    assert lines == [rep["split"]["summary"]] == [res.split_summary]
    assert lines[0].startswith("training pixels per class: class_1 ") and "10 % per class" in lines[0]
    assert "test: none" in lines[0]


def test_paper_protocol_reproduces_the_old_split(data, tmp_path):
    """The generic recipe's 50 % / 20 % drawn as before (train first, then validation, the rest tests)."""
    from hsikit.sampling import stratified_split

    lab = data[3]
    res, rep, lines = _train(data, tmp_path, protocol="paper")
    old = stratified_split(lab, train=0.5, val=0.2, seed=0)  # what the recipe's train=0.5, val=0.2 meant
    assert rep["split"]["counts"] == {**json.loads(json.dumps(old.counts(lab))), "unused": {}}
    assert res.scored_on == "test" and sum(res.metrics["support"]) == int(old.test.sum())
    assert "paper protocol: 50 % per class" in lines[0] and lines[0].endswith("; from the rest of --labels)")


def test_train_one_means_all_and_train_pixels_one_means_one(data, tmp_path):
    lab = data[3]
    _, all_, _ = _train(data, tmp_path, train=1.0, val=0)
    assert all_["split"]["counts"]["train"] == _sizes(lab) and all_["split"]["counts"]["val"] == {}
    _, pct, _ = _train(data, tmp_path, train="100%", val="0%", overwrite=True)
    assert pct["split"]["counts"] == all_["split"]["counts"]
    _, one, lines = _train(data, tmp_path, train_pixels=1, overwrite=True)
    assert set(one["split"]["counts"]["train"].values()) == {1}
    assert sum(one["split"]["counts"]["unused"].values()) == sum(_sizes(lab).values()) - 4 - sum(
        one["split"]["counts"]["val"].values())
    assert "1 px per class" in lines[0] and "unused: " in lines[0]
    _, part, _ = _train(data, tmp_path, train="80%", overwrite=True)  # a share of the class, not of the rest
    sizes = _sizes(lab)
    assert all(n == round(0.8 * sizes[c]) for c, n in part["split"]["counts"]["train"].items())


def test_test_labels_score_only_those_pixels(data, tmp_path):
    lab, test = data[3], data[4]
    res, rep, lines = _train(data, tmp_path, test_labels=data[2])
    counts = rep["split"]["counts"]
    assert counts["test"] == _sizes(test) and res.scored_on == "test"
    assert sum(res.metrics["support"]) == int((test > 0).sum())
    assert sum(counts["train"].values()) + sum(counts["val"].values()) == int((lab > 0).sum())
    assert lines[0].endswith("; from --test-labels)")
    # under the paper protocol too, the test set is the test labels; the rest of --labels stays unused
    res, rep, _ = _train(data, tmp_path, test_labels=data[2], protocol="paper", overwrite=True)
    assert rep["split"]["counts"]["test"] == _sizes(test) and sum(rep["split"]["counts"]["unused"].values()) > 0


def test_overlapping_test_labels_only_test(data, tmp_path):
    scene, labels, _, lab, _ = data
    with rasterio.open(labels) as src:
        profile = src.profile
    part = np.where(np.arange(lab.shape[0])[:, None] >= 30, lab, 0).astype("uint8")
    with rasterio.open(tmp_path / "part.tif", "w", **profile) as dst:
        dst.write(part, 1)
    with pytest.warns(UserWarning, match=r"^\d+ pixels labelled in both --labels and --test-labels only test"):
        res, rep, _ = _train(data, tmp_path, test_labels=tmp_path / "part.tif")
    counts = rep["split"]["counts"]
    assert counts["test"] == _sizes(part)
    assert sum(counts["train"].values()) + sum(counts["val"].values()) == int((lab > 0).sum() - (part > 0).sum())


def test_bad_values_refused_in_python(data, tmp_path):
    for kw, msg in [(dict(train=2), "--train 2: not a fraction .* use --train-pixels 2"),
                    (dict(train=0), r"--train 0: not a fraction of each class in \(0, 1\]"),
                    (dict(val=1.0), r"--val 1.0: not a fraction of each class in \[0, 1\)"),
                    (dict(train=0.5, train_pixels=3), "give --train .* or --train-pixels .*, not both"),
                    (dict(train_pixels=0), "--train-pixels 0"), (dict(val_pixels=-1), "--val-pixels -1"),
                    (dict(protocol="papers"), "unknown protocol"),
                    (dict(split=data[3], train=0.5), "--split already says")]:
        with pytest.raises(OptionError, match=msg):
            _train(data, tmp_path, **kw)
    assert not (tmp_path / "m.safetensors").exists()
    with rasterio.open(data[1]) as src:
        profile = src.profile
    with rasterio.open(tmp_path / "nine.tif", "w", **profile) as dst:
        dst.write(np.where(data[4] > 0, 9, 0).astype("uint8"), 1)
    with pytest.raises(InputError, match=r"^--test-labels has class 9; the training labels go up to 4$"):
        _train(data, tmp_path, test_labels=tmp_path / "nine.tif")


@pytest.mark.parametrize("args, msg", [
    (["--train", "1.5"], "error: --train 1.5: not a fraction of each class in (0, 1]"),
    (["--train", "200"], "use --train-pixels 200"),
    (["--train", "0"], "error: --train 0: not a fraction"),
    (["--train", "120%"], "error: --train 120%: not a fraction"),
    (["--val", "1"], "error: --val 1: not a fraction of each class in [0, 1)"),
    (["--val", "ten"], "error: --val ten: not a fraction (0.8) or a percentage (80%)"),
    (["--train-pixels", "0"], "--train-pixels"),
    (["--train-pixels", "1.5"], "--train-pixels"),
    (["--train", "0.5", "--train-pixels", "3"],
     "error: give --train (a fraction) or --train-pixels (a count), not both"),
    (["--protocol", "papers"], "--protocol"),
])
def test_bad_values_refused_on_the_command_line(data, tmp_path, capsys, args, msg):
    scene, labels = data[:2]
    code, out, err = cli(capsys, "-q", "train", "classifier", scene, "--labels", labels, "-o",
                         tmp_path / "m.safetensors", "-m", "random-forest", *args)
    assert code == 2 and err.startswith("error: ") and err.strip().count("\n") == 0, err
    assert msg in err and "Traceback" not in err


def test_cli_prints_and_records_the_counts(data, tmp_path, capsys):
    scene, labels, test = data[:3]
    model = tmp_path / "m.safetensors"
    code, out, err = cli(capsys, "-q", "train", "classifier", scene, "--labels", labels, "-o", model, "-m",
                         "random-forest", "--val", "20%")
    assert code == 0, err
    rep = json.loads((tmp_path / "m_report/report.json").read_text())
    lines = out.splitlines()
    assert lines[0] == rep["split"]["summary"] and "20 % per class" in lines[0]
    assert "validation OA" in out and "no test set: give --test-labels or --split" in out
    code, out, err = cli(capsys, "-q", "train", "classifier", scene, "--labels", labels, "-o", model, "-m",
                         "random-forest", "--test-labels", test, "--train-pixels", "20", "--overwrite")
    assert code == 0, err
    rep = json.loads((tmp_path / "m_report/report.json").read_text())
    assert out.splitlines()[0] == rep["split"]["summary"] and "test OA" in out
    assert set(rep["split"]["counts"]["train"].values()) == {20} and rep["scored_on"] == "test"
    assert rep["split"]["test"] == "--test-labels"


def test_neural_model_states_what_validation_does(data, tmp_path):
    scene, labels = data[:2]
    lines: list[str] = []
    train_classifier(scene, labels, out=tmp_path / "c.safetensors", epochs=1, run=RunOptions(progress=False),
                     echo=lines.append)
    assert "early stopping, best epoch kept" in lines[0]


def test_benchmark_keeps_the_paper_protocol(tmp_path, capsys, shared_data):
    """hsikit benchmark classify draws the paper's split (generic recipe: 50 % / 20 %, the rest tests) whatever
    train classifier's default, and prints each run's counts."""
    import shutil

    import scipy.io

    d = tmp_path / "data" / "indian_pines"
    d.mkdir(parents=True)
    gt = scipy.io.loadmat(shared_data / "indian_pines_gt/Indian_pines_gt.mat")["y"]
    rng = np.random.default_rng(0)
    cube = (rng.normal(size=(17, 200))[gt] * 50 + 1000 + rng.normal(size=(145, 145, 200)) * 20).astype(np.uint16)
    scipy.io.savemat(d / "Indian_pines_corrected.mat", {"indian_pines_corrected": cube})
    shutil.copy(shared_data / "indian_pines_gt/Indian_pines_gt.mat", d / "Indian_pines_gt.mat")
    out = tmp_path / "bench"
    code, stdout, err = cli(capsys, "-q", "benchmark", "classify", "--dataset", "indian_pines", "--model",
                            "random-forest", "--seeds", "1", "--data-dir", tmp_path / "data", "-o", out)
    assert code == 0, err
    rep = json.loads((out / "random-forest_seed0_report/report.json").read_text())
    assert rep["split"]["protocol"] == "paper" and rep["scored_on"] == "test"
    for c, n in _sizes(gt).items():
        assert rep["split"]["counts"]["train"][c] == round(0.5 * n)
    assert rep["split"]["summary"] in stdout.splitlines()
