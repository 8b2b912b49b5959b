"""FFDNN crop-stress workflow: training on simulated fields (OA >= 90 % on held-out fields), the CLI from a
simulated series on disk to a georeferenced map with explanation, and the real eo-learn NDVI series."""

from __future__ import annotations

import json
import shutil
import subprocess
import warnings

import numpy as np
import pytest
import rasterio

from hsikit.cli.main import run
from hsikit.errors import InputError
from hsikit.training.run import RunOptions

torch = pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_training_on_simulated_fields_reaches_90_percent_and_beats_single_date_ndvi(tmp_path):
    from hsikit.pipelines.train_stress import train_stress
    from hsikit.timeseries.simulator import simulate_series, single_date_ndvi_oa

    ds = simulate_series(fields_per_class=20, field_size=8, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = train_stress(ds, "labels", fields="fields", out=tmp_path / "m.safetensors", epochs=10, patience=4,
                           run=RunOptions(seed=0, progress=False))
    m = res.metrics
    assert m["oa"] >= 0.90, m
    assert set(res.split["test"]).isdisjoint(res.split["train"]) and set(res.split["val"]).isdisjoint(res.split["train"])
    assert len(res.split["test"]) == 9 and m["n"] == 9 * 64  # 3 held-out fields per class, every pixel scored
    ndvi_rule = single_date_ndvi_oa(ds, train_fields=np.array(res.split["train"]))
    assert m["oa"] > ndvi_rule["oa"] + 0.15, (m["oa"], ndvi_rule)
    report = json.loads((tmp_path / "m_report" / "report.json").read_text())
    assert report["metrics"]["confusion_matrix"] and len(report["metrics"]["per_class_f1"]) == 3
    assert report["history"][-1]["epoch"] == len(report["history"]) <= 10


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("stress_cli")
    assert run(["-q", "simulate-stress", str(d / "sim"), "--fields-per-class", "4", "--field-size", "8",
                "--seed", "5"]) == 0
    sim = d / "sim"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run(["-q", "train", "stress", str(sim / "series"), "--labels", str(sim / "labels.tif"),
                    "--fields", str(sim / "fields.tif"), "-o", str(d / "m.safetensors"), "--epochs", "3",
                    "--soil-slope", "auto", "--soil-mask", str(sim / "soil.tif"), "--set", "width=32"]) == 0
        assert run(["-q", "stress", str(sim / "series"), "-o", str(d / "map.tif"), "-m", str(d / "m.safetensors"),
                    "--fields", str(sim / "fields.tif")]) == 0
    return d


def test_cli_writes_a_valid_georeferenced_map(cli_run):
    d = cli_run
    from hsikit.checkpoint import read_checkpoint_meta

    meta = read_checkpoint_meta(d / "m.safetensors")
    assert meta.task == "stress" and meta.arch == "ffdnn" and meta.config["width"] == 32
    assert meta.preprocessing["kind"] == "ffdnn-photochemical-filter" and len(meta.preprocessing["mean"]) == 2
    assert meta.preprocessing["soil_slope"] == pytest.approx(1.25, abs=0.1)  # the simulator's soil line
    first = sorted((d / "sim" / "series").glob("S2_SIM_????????.tif"))[0]
    with rasterio.open(first) as src:
        crs, transform, shape = src.crs, src.transform, src.shape
    with rasterio.open(d / "map.tif") as src:
        assert src.crs == crs and src.transform == transform and src.shape == shape
        assert src.nodata == 0 and src.dtypes[0] == "uint8"
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert json.loads(src.tags()["HSIKIT_CLASS_NAMES"]) == ["healthy", "yellow rust", "nitrogen deficiency"]
        assert len(json.loads(src.tags()["HSIKIT_TIME_GRID"])) == 32
        assert src.colormap(1)[2][:3] == (0xF4, 0x6D, 0x43)
        cls = src.read(1)
    with rasterio.open(d / "sim" / "labels.tif") as src:
        lab = src.read(1)
    assert set(np.unique(cls)) <= {0, 1, 2, 3}
    assert (cls[lab == 0] == 0).mean() > 0.95 and (cls[lab > 0] > 0).mean() > 0.95  # roads/fallow masked
    assert "<Category>yellow rust</Category>" in (d / "map.tif.aux.xml").read_text()
    assert (d / "map.qml").read_text().count("paletteEntry") >= 3
    with rasterio.open(d / "map_lengths.tif") as src:
        lengths = src.read()
        assert src.count == 3 and src.descriptions[1] == "length(yellow rust)"
    ok = np.isfinite(lengths).all(axis=0)
    np.testing.assert_array_equal(ok, cls > 0)
    assert (lengths[:, ok] >= 0).all() and (lengths[:, ok] < 1).all()
    np.testing.assert_array_equal(lengths[:, ok].argmax(0) + 1, cls[ok])
    with rasterio.open(d / "map_date.tif") as src:
        dates = src.read(1)
    assert dates[cls > 0].min() >= 1 and dates.max() <= 32 and (dates[cls == 0] == 0).all()
    with rasterio.open(d / "map_fields.tif") as src, rasterio.open(d / "sim" / "fields.tif") as fs:
        fmap, fid = src.read(1), fs.read(1)
    for f in np.unique(fid[fid > 0]):
        assert len(np.unique(fmap[fid == f])) == 1
    ex = json.loads((d / "map_explanation.json").read_text())
    assert ex["features"] == ["lai", "lcc"] and len(ex["grid_dates"]) == 32 and len(ex["frequency_bins"]) == 17
    some = next(c for c in ex["classes"].values() if c["pixels"])
    assert some["top_dates"][0]["date"] in ex["grid_dates"]
    assert sum(some["feature_share"].values()) == pytest.approx(1.0)
    for png in ("map.png", "map_explanation.png", "m_report/loss_curve.png", "m_report/confusion_matrix.png"):
        assert (d / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    if shutil.which("gdalinfo"):
        info = subprocess.run(["gdalinfo", str(d / "map.tif")], capture_output=True, text=True, check=True).stdout
        assert "Color Table" in info and "32650" in info and "LAYOUT=COG" in info and "yellow rust" in info


def test_cli_refuses_existing_outputs_and_wrong_models(cli_run, capsys):
    d = cli_run
    series, model = str(d / "sim" / "series"), str(d / "m.safetensors")
    assert run(["-q", "stress", series, "-o", str(d / "map.tif"), "-m", model]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run(["-q", "stress", series, "-o", str(d / "map.tif"), "-m", model, "--overwrite", "--no-explain",
                "--no-png"]) == 0
    from hsikit.pipelines.common import SAMPLE_MODEL

    if SAMPLE_MODEL.exists():
        assert run(["-q", "stress", series, "-o", str(d / "other.tif"), "-m", str(SAMPLE_MODEL)]) == 2
        assert "not a crop-stress model" in capsys.readouterr().err
    from hsikit.errors import BandMismatchError
    from hsikit.pipelines.stress import stress
    from hsikit.timeseries.simulator import simulate_series

    ds = simulate_series(fields_per_class=1, field_size=4, seed=1)
    with pytest.raises(BandMismatchError, match="B05"):
        stress(ds.sel(band=["B03", "B04", "B08"]), out=d / "x.tif", model=model, progress=False)
    bad = d / "bad_fields.tif"
    with rasterio.open(bad, "w", driver="GTiff", width=5, height=5, count=1, dtype="uint8") as dst:
        dst.write(np.ones((1, 5, 5), np.uint8))
    with pytest.raises(InputError, match="series grid"):
        stress(ds, out=d / "x.tif", model=model, fields=bad, progress=False)
    assert not (d / "x.tif").exists()


@pytest.mark.shared
def test_real_eolearn_ndvi_series_loss_falls(shared_data, tmp_path):
    """The real 68-date eo-learn series, NDVI as the only feature, LULC classes as labels: a smoke test of the
    whole pipeline (cloud masks, interpolation, FFT, capsules), the loss must fall."""
    from hsikit.pipelines.train_stress import train_stress

    timeseries = pytest.importorskip("hsikit.io.timeseries")
    ds = timeseries.open_series(shared_data / "eolearn_s2_timeseries")
    lulc = np.asarray(ds["LULC"].values)
    labels = np.select([lulc == 2, lulc == 3, lulc == 4], [1, 2, 3], 0)  # forest, grassland, shrubland
    h, w = labels.shape
    fields = (np.arange(h)[:, None] // 5) * 100 + np.arange(w)[None, :] // 5 + 1  # 5x5 px blocks as "fields"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = train_stress(ds, labels, fields=fields, out=tmp_path / "eo.safetensors", features=("NDVI",),
                           season_start="2015-07-11", step_days=28, length=32, ndvi_min=None, epochs=4, patience=0,
                           max_pixels_per_field=6, model_config={"width": 32},
                           run=RunOptions(seed=0, progress=False))
    report = json.loads((tmp_path / "eo_report" / "report.json").read_text())
    curve = np.array(report["loss_curve"])
    assert len(curve) > 60 and np.isfinite(curve).all()
    assert curve[-10:].mean() < 0.8 * curve[:10].mean()
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    assert report["filter"]["features"] == ["NDVI"] and res.metrics["n"] > 0
    with pytest.raises(InputError, match="fields"):
        train_stress(ds, labels, out=tmp_path / "bad.safetensors", features=("NDVI",), ndvi_min=None,
                     season_start="2015-07-11", step_days=28, fields=np.where(labels > 0, 1, 0),
                     run=RunOptions(progress=False))


# -- distributed data parallel (two CPU processes, gloo) through the CLI -------------------------------------------
#: |held-out OA (2 processes) - held-out OA (1 process)| allowed, see test_two_process_stress_training
DDP_OA_TOLERANCE = 0.05


def test_epoch_steps_per_rank():
    from hsikit.training.distributed import sharded_steps
    from hsikit.training.stress import epoch_steps

    assert epoch_steps(768, 64, 1) == (12, False) and epoch_steps(768, 64, 2) == (6, False)
    assert epoch_steps(129, 64, 1) == (2, True)  # a last batch of one sample is dropped (BatchNorm)
    assert epoch_steps(257, 64, 2) == (2, True)  # ranks get 129 each (padded): the drop is per rank
    assert epoch_steps(1000, 64, 3)[0] == sharded_steps(-(-1000 // 64), 3)


def test_epoch_sampler_is_seeded_per_epoch():
    from hsikit.training.stress import EpochSampler

    w = torch.tensor([1.0] * 90 + [9.0] * 10)
    a, b = EpochSampler(100, w, 3), EpochSampler(100, w, 3)
    assert list(a) == list(b)  # every rank draws the same list, to be cut into shares
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and len(list(a)) == 100
    b.set_epoch(1)
    assert list(a) == list(b)  # a resumed run draws the same epoch again
    rare = np.mean([i >= 90 for i in first])
    assert 0.3 < rare < 0.7  # class-balanced: the 10 heavy samples take about half of the draws
    assert sorted(EpochSampler(50, None, 0)) == list(range(50))


def test_two_process_stress_training(tmp_path):
    """Seed 0, the same simulated series, fields and split; 1 and 2 processes cannot give identical runs: the
    two ranks take halves of each epoch's balanced draw, so an epoch has half the optimiser steps of a twice
    larger effective batch (same learning rate), and the time shifts differ. Measured: held-out pixel OA 1.000
    (one process) and 0.984 (two, 3 of 192 test pixels wrong) after 8 epochs, best validation OA 0.979 and
    0.974. The tolerance 0.05 (about 10 test pixels) covers the slower convergence per epoch and thread-count
    differences between machines; a run whose ranks do not average gradients or train on unsharded, unequal
    data drifts or stalls far from it, and a broken one stays near chance (0.33)."""
    import os
    import sys
    from pathlib import Path

    from hsikit.checkpoint import load_checkpoint

    hsikit = Path(sys.executable).parent / "hsikit"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sim = tmp_path / "sim"
    subprocess.run([str(hsikit), "-q", "simulate-stress", str(sim), "--fields-per-class", "6", "--field-size", "8",
                    "--seed", "5"], check=True, capture_output=True, env=env, timeout=120)
    reports = {}
    for n in (1, 2):
        out = tmp_path / f"m{n}.safetensors"
        p = subprocess.run([str(hsikit), "-q", "train", "stress", str(sim / "series"), "--labels", str(sim / "labels.tif"),
                            "--fields", str(sim / "fields.tif"), "-o", str(out), "--epochs", "8", "--seed", "0",
                            "--device", "cpu", "--set", "width=16", "--patience", "1000", "--devices", str(n)],
                           capture_output=True, text=True, env=env, timeout=240)
        assert p.returncode == 0, p.stderr[-2000:]
        assert p.stdout.count("wrote ") == 1 and p.stdout.count("test fields:") == 1  # rank 0 only
        rdir = tmp_path / f"m{n}_report"
        reports[n] = json.loads((rdir / "report.json").read_text())
        assert sorted(q.name for q in (rdir / "checkpoints").iterdir()) == ["last.ckpt"]
        assert load_checkpoint(out)[1].task == "stress"
    one, two = reports[1], reports[2]
    assert one["distributed"]["processes"] == 1 and two["distributed"]["processes"] == 2
    n_train = one["split"]["counts"]["train"]["pixels"]
    assert one["split"] == two["split"]  # every rank filters and splits the same pixels
    spe1, spe2 = one["distributed"]["steps_per_epoch"], two["distributed"]["steps_per_epoch"]
    assert spe1 == -(-n_train // 64) and spe2 == -(-(-(-n_train // 2)) // 64)
    assert [h["step"] for h in two["history"]] == [spe2 * (i + 1) for i in range(8)]
    assert len(two["loss_curve"]) == 8 * spe2  # rank 0's steps
    assert two["history"][-1]["lr"] == pytest.approx(1e-3 * 0.01 + 1e-3 * 0.99 * 0.5 * (1 + np.cos(np.pi * 8 / 8)), rel=0.05)
    best1 = max(h["val_oa"] for h in one["history"])
    best2 = max(h["val_oa"] for h in two["history"])
    assert best1 > 0.8 and abs(best1 - best2) <= DDP_OA_TOLERANCE, (best1, best2)
    assert abs(one["metrics"]["oa"] - two["metrics"]["oa"]) <= DDP_OA_TOLERANCE, (one["metrics"]["oa"], two["metrics"]["oa"])
