"""`hsikit evaluate` and `hsikit benchmark classify`: run folders with the class map, metrics and config."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import rasterio

from clirun import cli

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data"


def test_evaluate_sample_model_on_sample_scene(tmp_path, capsys):
    run_dir = tmp_path / "eval"
    model = tmp_path / "model.safetensors"
    shutil.copy(SAMPLE / "sample_model.safetensors", model)
    code, out, err = cli(capsys, "-q", "evaluate", model, SAMPLE / "sample_scene.tif",
                         "--labels", SAMPLE / "sample_labels.tif", "-o", run_dir)
    assert code == 0, err
    rep = json.loads((run_dir / "report.json").read_text())
    m = rep["metrics"]
    assert m["oa"] > 0.9 and 0 < m["kappa"] <= 1
    assert len(m["per_class_f1"]) == len(rep["class_names"]) == len(m["per_class_accuracy"])
    assert rep["hsikit_version"] and rep["arch"] and "classify" in rep["timings"]
    assert {"class_map.tif", "class_map.qml", "class_map.png", "confusion_matrix.csv", "confusion_matrix.png",
            "report.json"} <= {p.name for p in run_dir.iterdir()}
    with rasterio.open(run_dir / "class_map.tif") as src, rasterio.open(SAMPLE / "sample_scene.tif") as ref:
        assert src.crs == ref.crs and src.transform == ref.transform
    assert f"OA {m['oa']:.4f}" in out
    # the scores are stored in the model file, and the model card shows them
    code, out, err = cli(capsys, "info", model)
    assert code == 0, err
    assert re.search(rf"sample_scene\.tif vs sample_labels\.tif \(every labelled pixel, {m['n']} px\): "
                     rf"OA {m['oa']:.4f}, AA {m['aa']:.4f}, kappa {m['kappa']:.4f}", out), out
    # the run folder is not overwritten without --overwrite
    code, _, err = cli(capsys, "evaluate", model, SAMPLE / "sample_scene.tif",
                       "--labels", SAMPLE / "sample_labels.tif", "-o", run_dir)
    assert code == 2 and "--overwrite" in err


def test_stored_scores_replace_the_same_evaluation_and_keep_the_weights(tmp_path, capsys):
    from safetensors.torch import load_file

    from hsikit.checkpoint import read_checkpoint_meta

    model = tmp_path / "model.safetensors"
    shutil.copy(SAMPLE / "sample_model.safetensors", model)
    before = load_file(str(model))
    args = [model, SAMPLE / "sample_scene.tif", "--labels", SAMPLE / "sample_labels.tif"]
    for i in range(2):  # the same evaluation twice: one entry
        code, _, err = cli(capsys, "-q", "evaluate", *args, "-o", tmp_path / f"r{i}")
        assert code == 0, err
    half = tmp_path / "split.tif"
    with rasterio.open(SAMPLE / "sample_labels.tif") as src:
        lab, profile = src.read(1), src.profile
    with rasterio.open(half, "w", **(profile | {"nodata": None})) as dst:
        dst.write(np.where(lab > 0, 3, 0).astype(lab.dtype) * (np.arange(lab.shape[1]) % 2 == 0), 1)
    code, _, err = cli(capsys, "-q", "evaluate", *args, "--split", half, "-o", tmp_path / "r2")
    assert code == 0, err
    meta = read_checkpoint_meta(model)
    assert [e["scored"] for e in meta.evaluations] == ["every labelled pixel", "test pixels of split.tif"]
    assert meta.arch == read_checkpoint_meta(SAMPLE / "sample_model.safetensors").arch
    after = load_file(str(model))
    assert before.keys() == after.keys() and all(np.array_equal(before[k], after[k]) for k in before)
    # --no-record leaves the file alone
    stamp = model.stat().st_mtime_ns
    code, _, err = cli(capsys, "-q", "evaluate", *args, "--no-record", "-o", tmp_path / "r3")
    assert code == 0 and model.stat().st_mtime_ns == stamp


def test_a_model_file_that_cannot_be_rewritten_is_evaluated_with_a_warning(tmp_path, capsys, monkeypatch):
    import hsikit.checkpoint

    def refuse(final, directory=None):
        raise PermissionError(13, "Permission denied")

    model = tmp_path / "model.safetensors"
    shutil.copy(SAMPLE / "sample_model.safetensors", model)
    monkeypatch.setattr(hsikit.checkpoint, "temp_path", refuse)  # as in a read-only folder (root writes anyway)
    code, out, err = cli(capsys, "-q", "evaluate", model, SAMPLE / "sample_scene.tif", "--labels",
                         SAMPLE / "sample_labels.tif", "-o", tmp_path / "r")
    assert code == 0 and "OA" in out
    assert "warning: the scores were not stored in model.safetensors (Permission denied)" in err, err
    assert model.read_bytes() == (SAMPLE / "sample_model.safetensors").read_bytes()


def test_evaluate_with_split_scores_test_pixels_only(tmp_path, capsys):
    with rasterio.open(SAMPLE / "sample_labels.tif") as src:
        lab = src.read(1)
        profile = src.profile
    split = np.zeros_like(lab)
    split[: lab.shape[0] // 2][lab[: lab.shape[0] // 2] > 0] = 3
    profile.update(nodata=None)
    with rasterio.open(tmp_path / "split.tif", "w", **profile) as dst:
        dst.write(split, 1)
    # --no-record: the committed sample model is not to be changed by a test
    code, _, err = cli(capsys, "-q", "evaluate", "--no-record", SAMPLE / "sample_model.safetensors",
                       SAMPLE / "sample_scene.tif", "--labels", SAMPLE / "sample_labels.tif",
                       "--split", tmp_path / "split.tif", "-o", tmp_path / "r")
    assert code == 0, err
    m = json.loads((tmp_path / "r/report.json").read_text())["metrics"]
    assert m["n"] == int((split == 3).sum())


def test_evaluate_rejects_a_band_mismatch(tmp_path, capsys, fake_geotiff):
    scene = fake_geotiff(bands=12)
    code, _, err = cli(capsys, "evaluate", SAMPLE / "sample_model.safetensors", scene, "--labels",
                       SAMPLE / "sample_labels.tif", "-o", tmp_path / "r")
    assert code == 2 and err.count("\n") == 1


def test_benchmark_on_a_catalogue_dataset(tmp_path, capsys, shared_data):
    """A local Indian Pines: a synthetic cube (the real one is not available here) beside the real ground truth
    (re-saved .mat with its variable named "y"); SVM over two seeds gives mean ± std."""
    import scipy.io

    d = tmp_path / "data" / "indian_pines"
    d.mkdir(parents=True)
    gt = scipy.io.loadmat(shared_data / "indian_pines_gt/Indian_pines_gt.mat")["y"]
    rng = np.random.default_rng(0)
    means = rng.normal(size=(17, 200)) * 50 + 1000
    cube = (means[gt] + rng.normal(size=(145, 145, 200)) * 20).astype(np.uint16)
    scipy.io.savemat(d / "Indian_pines_corrected.mat", {"indian_pines_corrected": cube})
    shutil.copy(shared_data / "indian_pines_gt/Indian_pines_gt.mat", d / "Indian_pines_gt.mat")
    out = tmp_path / "bench"
    code, stdout, err = cli(capsys, "-q", "benchmark", "classify", "--dataset", "indian_pines", "--model", "svm",
                            "--seeds", "2", "--data-dir", tmp_path / "data", "-o", out)
    assert code == 0, err
    res = json.loads((out / "benchmark.json").read_text())
    assert [r["seed"] for r in res["runs"]] == [0, 1]
    assert res["summary"]["oa"]["mean"] > 0.9  # separable synthetic spectra
    # each seed draws its own training pixels: different support vectors, different checkpoints
    assert (out / "svm_seed0.safetensors").read_bytes() != (out / "svm_seed1.safetensors").read_bytes()
    assert "±" in stdout and "seed 1:" in stdout


def test_benchmark_on_enmap_potsdam_published_split(tmp_path, capsys, shared_data):
    out = tmp_path / "bench"
    code, stdout, err = cli(capsys, "-q", "benchmark", "classify", "--dataset", "enmap_potsdam", "--model",
                            "spectral-cnn", "--seeds", "2", "--epochs", "3", "--protocol", "published",
                            "--data-dir", shared_data / "enmap_potsdam", "-o", out)
    assert code == 0, err
    res = json.loads((out / "benchmark.json").read_text())
    rep = json.loads((out / "spectral-cnn_seed0_report/report.json").read_text())
    # the published test tiles: 660 labelled pixels (Summary_train_val.csv)
    assert sum(rep["split"]["counts"]["test"].values()) == 660
    assert sum(rep["split"]["counts"]["train"].values()) == 3806
    assert 0 < res["summary"]["oa"]["mean"] <= 1
