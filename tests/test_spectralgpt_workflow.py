"""SpectralGPT end to end on real scenes: MAE pretraining lowers the reconstruction loss, `pretrain` ->
`train segmenter --init` -> `classify` writes a valid class map, interrupted runs resume exactly, and the scene
classifier trains on chip folders."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import rasterio

from hsikit.cli.main import run

torch = pytest.importorskip("torch")


pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--variant", "tiny", "--img-size", "32", "--batch-size", "4", "--lr", "2e-3"]


@pytest.fixture(scope="module")
def potsdam(shared_data):
    d = shared_data / "enmap_potsdam"
    if not (d / "train_files.csv").exists():
        pytest.skip("enmap_potsdam not in shared data")
    return d


@pytest.mark.shared
def test_pretraining_lowers_the_loss_on_a_real_sentinel2_scene(shared_data, tmp_path):
    """The real 4-band Demmin S2 scene (B4, B3, B2, B8; groups of 3, so one padded group)."""
    from hsikit.pipelines.pretrain import pretrain_spectralgpt
    from hsikit.training.run import RunOptions

    scene = shared_data / "demmin_sentinel2" / "sentinel2_fields.tif"
    res = pretrain_spectralgpt([scene], out=tmp_path / "mae.safetensors", variant="tiny",
                               model_config={"img_size": 32, "bands": ["B02", "B03", "B04", "B08"]}, steps=40,
                               steps_per_epoch=10, batch_size=8, lr=2e-3, preview_every=0,
                               run=RunOptions(progress=False))
    val = [h["val_loss"] for h in res.history]
    assert len(val) == 4 and val[-1] < 0.6 * val[0]
    assert res.history[-1]["val_loss_token"] < res.history[0]["val_loss_token"]
    assert res.history[-1]["val_loss_spectral"] < res.history[0]["val_loss_spectral"]
    assert res.metrics["patches_per_second"] > 0 and res.metrics["windows_with_nodata"] >= 0
    from hsikit.checkpoint import read_checkpoint_meta

    meta = read_checkpoint_meta(res.checkpoint)
    assert meta.task == "masked-autoencoding" and meta.config["bands"] == ["B02", "B03", "B04", "B08"]
    ops = [s["op"] for s in meta.preprocessing["steps"]]
    assert ops == ["select_bands", "scale", "normalize", "fill_invalid"]
    assert meta.preprocessing["steps"][0]["params"]["indices"] == [2, 1, 0, 3]  # file order B4, B3, B2, B8


@pytest.mark.shared
def test_pretrain_finetune_classify_writes_a_valid_class_map(potsdam, tmp_path):
    """EnMAP tiles resampled onto SpectralGPT's 12 S2 bands: pretrain on the training tiles, fine-tune the
    segmenter from that encoder, then `hsikit classify` a held-apart test tile with the checkpoint alone."""
    mae, seg, out = tmp_path / "mae.safetensors", tmp_path / "seg.safetensors", tmp_path / "map.tif"
    assert run(["-q", "pretrain", "spectralgpt", str(potsdam / "images"), "-o", str(mae), *FAST, "--steps", "12",
                "--steps-per-epoch", "6", "--preview-every", "6"]) == 0
    rep = tmp_path / "mae_report"
    assert (rep / "loss_curve.png").exists() and (rep / "previews" / "step_000006.png").exists()
    report = json.loads((rep / "report.json").read_text())
    assert len(report["loss_curve"]) == 12 and report["config"]["mask_ratio"] == 0.9
    assert report["scenes"][0].startswith("enmap_potsdam_tile_") and len(report["scenes"]) == 18

    assert run(["-q", "train", "segmenter", str(potsdam / "train_files.csv"), "--val",
                str(potsdam / "validation_files.csv"), "-o", str(seg), "--init", str(mae), "--steps", "12",
                "--steps-per-epoch", "6", "--batch-size", "4", "--lr", "1e-3",
                "--class-names", "roof,pavement,low vegetation,tree,soil,water"]) == 0
    sreport = json.loads((tmp_path / "seg_report" / "report.json").read_text())
    assert sreport["init"]["tensors_loaded"] > 0 and sreport["normalization"] == "from-init"
    assert all(0 <= h["val_oa"] <= 1 for h in sreport["history"])

    test_tile = potsdam / "images" / "enmap_potsdam_tile_160_96.tif"
    assert run(["-q", "classify", str(test_tile), "--model", str(seg), "-o", str(out)]) == 0
    with rasterio.open(test_tile) as src, rasterio.open(out) as dst:
        cm = dst.read(1)
        assert (dst.width, dst.height, dst.crs, dst.transform) == (src.width, src.height, src.crs, src.transform)
        assert dst.dtypes[0] == "uint8" and dst.nodata == 0
        assert cm.min() >= 1 and cm.max() <= 6  # every pixel of the tile is valid and gets a class
        assert dst.colormap(1)[1][:3] != (0, 0, 0)
        tags = dst.tags()
        assert tags["HSIKIT_MODEL"] == "spectralgpt-segmenter" and "resample" in tags["HSIKIT_NORMALIZATION"]
    assert out.with_suffix(".qml").exists()


@pytest.mark.shared
def test_an_interrupted_pretraining_resumes_exactly(potsdam, tmp_path, monkeypatch):
    """Stopped (Ctrl+C) during its second epoch, a run resumed with --resume ends with the loss curve, history and
    weights of an uninterrupted run (batches and masks are keyed by the global step)."""
    from safetensors.torch import load_file

    from hsikit.training import pretrain as P

    args = ["-q", "pretrain", "spectralgpt", str(potsdam / "images"), *FAST, "--steps", "6", "--steps-per-epoch",
            "3", "--preview-every", "0"]
    assert run([*args, "-o", str(tmp_path / "a.safetensors")]) == 0

    original = P.PretrainModule.epoch_end

    def stop_at_second(self):
        original(self)
        if len(self.history) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(P.PretrainModule, "epoch_end", stop_at_second)
    with pytest.raises(SystemExit):  # Lightning's graceful Ctrl+C shutdown exits 1
        run([*args, "-o", str(tmp_path / "b.safetensors")])
    assert (tmp_path / "b_report" / "checkpoints" / "last.ckpt").exists() and not (tmp_path / "b.safetensors").exists()
    monkeypatch.setattr(P.PretrainModule, "epoch_end", original)
    assert run([*args, "-o", str(tmp_path / "b.safetensors"), "--resume"]) == 0

    a = json.loads((tmp_path / "a_report" / "report.json").read_text())
    b = json.loads((tmp_path / "b_report" / "report.json").read_text())
    assert b["metrics"]["steps_this_run"] == 3
    assert b["loss_curve"] == a["loss_curve"] and b["history"] == a["history"]
    wa, wb = load_file(str(tmp_path / "a.safetensors")), load_file(str(tmp_path / "b.safetensors"))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


@pytest.mark.shared
def test_band_and_label_mistakes_are_one_line_errors(shared_data, potsdam, tmp_path, capsys):
    demmin = shared_data / "demmin_sentinel2" / "sentinel2_fields.tif"
    code = run(["pretrain", "spectralgpt", str(demmin), "-o", str(tmp_path / "m.safetensors"), *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and "B01" in err and len(err.splitlines()) == 1
    code = run(["train", "segmenter", str(potsdam / "images" / "enmap_potsdam_tile_64_0.tif"), "-o",
                str(tmp_path / "s.safetensors"), *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "one --labels per scene" in err


def _write_chip(path, spectrum, rng, size=16):
    from rasterio.transform import from_origin

    names = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    data = (spectrum[:, None, None] * (1 + 0.05 * rng.standard_normal((12, size, size)))).astype("float32")
    prof = dict(driver="GTiff", width=size, height=size, count=12, dtype="float32",
                transform=from_origin(0, 0, 10, 10), crs="EPSG:32633")
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        for i, n in enumerate(names):
            dst.set_band_description(i + 1, n)


def test_scene_classifier_trains_on_class_folders_and_a_csv(tmp_path):
    """EuroSAT-like layout root/<class>/*.tif (generated chips), validation from a CSV path,label."""
    from hsikit.pipelines.finetune import classify_chips

    rng = np.random.default_rng(0)
    spectra = {"forest": np.linspace(0.05, 0.4, 12), "water": np.linspace(0.3, 0.02, 12)}
    rows = []
    for cls, sp in spectra.items():
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(6):
            _write_chip(tmp_path / "train" / cls / f"{i}.tif", sp, rng)
        for i in range(3):
            p = tmp_path / f"val_{cls}_{i}.tif"
            _write_chip(p, sp, rng)
            rows.append(f"{p.name},{cls}")
    (tmp_path / "val.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "cls.safetensors"
    assert run(["-q", "train", "scene-classifier", str(tmp_path / "train"), "--val", str(tmp_path / "val.csv"),
                "-o", str(out), "--variant", "tiny", "--img-size", "16", "--steps", "16", "--steps-per-epoch", "8",
                "--batch-size", "4", "--lr", "2e-3", "--set", "patch_size=4"]) == 0
    report = json.loads((tmp_path / "cls_report" / "report.json").read_text())
    assert report["class_names"] == ["forest", "water"] and report["chips"] == 12 and report["val_chips"] == 6
    assert all(0 <= h["val_accuracy"] <= 1 for h in report["history"])
    assert report["recipe"]["layer_decay"] == 0.75 and report["recipe"]["mixup"] == 0.8
    preds = classify_chips(out, [tmp_path / "train" / "water"])
    assert len(preds) == 6 and {c for _, c in preds} <= {"forest", "water"}


def test_segmenter_maps_a_scene_larger_than_its_tiles(tmp_path):
    """A generated 12-band scene larger than both the model window and the engine tile: every valid pixel gets
    a class, nodata stays 0, and the map barely depends on the tile size (overlapping windows are blended)."""
    from rasterio.transform import from_origin

    from fakedata import fake_cube

    names = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    h, w = 100, 136
    data = (fake_cube(12, h, w, seed=4) * 10000).astype("uint16")
    data[:, :, :5] = 0  # a nodata border
    prof = dict(driver="GTiff", width=w, height=h, count=12, dtype="uint16", nodata=0, crs="EPSG:32633",
                transform=from_origin(500000, 5800000, 10, 10))
    scene = tmp_path / "s2.tif"
    with rasterio.open(scene, "w", **prof) as dst:
        dst.write(data)
        for i, n in enumerate(names):
            dst.set_band_description(i + 1, n)
    yy, xx = np.mgrid[0:h, 0:w]
    lab = (((yy // 10) + (xx // 13)) % 4 + 1).astype("uint8")
    lab[(yy + xx) % 4 != 0] = 0
    with rasterio.open(tmp_path / "lab.tif", "w", **{**prof, "count": 1, "dtype": "uint8"}) as dst:
        dst.write(lab, 1)
    ck = tmp_path / "seg.safetensors"
    assert run(["-q", "train", "segmenter", str(scene), "--labels", str(tmp_path / "lab.tif"), "-o", str(ck),
                "--variant", "tiny", "--img-size", "32", "--steps", "8", "--steps-per-epoch", "4",
                "--batch-size", "4", "--lr", "2e-3"]) == 0
    maps = []
    for tile in (64, 512):
        out = tmp_path / f"map_{tile}.tif"
        assert run(["-q", "classify", str(scene), "--model", str(ck), "-o", str(out), "--tile", str(tile)]) == 0
        with rasterio.open(out) as src:
            maps.append(src.read(1))
    for m in maps:
        assert (m[:, :5] == 0).all() and m[:, 5:].min() >= 1 and m.max() <= 4
    assert (maps[0] == maps[1]).mean() > 0.9


# -- two processes (DDP, gloo on CPU) --------------------------------------------------------------------------------
#: |last validation loss (2 processes) - (1 process)| / (1 process) allowed, see the test's docstring
VAL_LOSS_TOLERANCE = 0.15


def _s2_scene(path, h=64, w=64):
    from rasterio.transform import from_origin

    from fakedata import fake_cube

    names = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
    prof = dict(driver="GTiff", width=w, height=h, count=12, dtype="uint16", crs="EPSG:32633",
                transform=from_origin(500000, 5800000, 10, 10))
    with rasterio.open(path, "w", **prof) as dst:
        dst.write((fake_cube(12, h, w, seed=7) * 10000).astype("uint16"))
        for i, n in enumerate(names):
            dst.set_band_description(i + 1, n)
    return path


def test_two_process_pretraining_matches_one_process(tmp_path):
    """`pretrain spectralgpt --devices 2` (gloo): one writer and one report line, every rank draws its own
    windows (checksums of the ranks' latest batches differ at every epoch), both ranks run the same number of
    steps, and the final validation loss (same fixed windows and masks) is close to the one-process run's.
    The runs cannot agree exactly: rank 0 draws the one-process run's windows (same seed and rank), but each
    two-process step averages them with rank 1's, a twice larger batch at the same lr. Measured on this machine
    (one vs two processes, final validation loss): seed 0 1.609 vs 1.620 (0.7 %), seed 1 1.182 vs 1.100 (7 %);
    30 steps stop on the steep part of the curve, where a larger batch can help by some per cent. 15 % allows
    for that and for other thread counts, while a run that does not learn stays near the first epoch's loss
    (3.8 here, more than twice the final one)."""
    import subprocess
    import sys
    from pathlib import Path

    scene = _s2_scene(tmp_path / "s2.tif")
    hsikit = Path(sys.executable).parent / "hsikit"
    reports = {}
    for n in (1, 2):
        out = tmp_path / f"mae{n}.safetensors"
        args = [str(hsikit), "-q", "pretrain", "spectralgpt", str(scene), "-o", str(out), "--variant", "tiny",
                "--img-size", "16", "--set", "patch_size=4", "--batch-size", "4", "--lr", "2e-3", "--steps", "30",
                "--steps-per-epoch", "10", "--seed", "0", "--device", "cpu", "--preview-every", "0",
                "--devices", str(n)]
        p = subprocess.run(args, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert p.returncode == 0, p.stderr[-2000:]
        assert p.stdout.count("wrote ") == 1  # only rank 0 reports and writes
        reports[n] = json.loads((tmp_path / f"mae{n}_report" / "report.json").read_text())
        assert out.exists()
    one, two = reports[1], reports[2]
    assert one["distributed"]["processes"] == 1 and two["distributed"]["processes"] == 2
    assert two["distributed"]["global_batch"] == 8 and two["metrics"]["patches_seen"] == 30 * 8
    assert [h["step"] for h in two["history"]] == [10, 20, 30] == [h["step"] for h in one["history"]]
    for h in two["history"]:
        a, b = h["rank_batch_sums"]
        assert np.isfinite(a) and np.isfinite(b) and a != b
    assert len(one["history"][0]["rank_batch_sums"]) == 1
    ckpts = [q.name for q in (tmp_path / "mae2_report" / "checkpoints").iterdir()]
    assert "last.ckpt" in ckpts and not any(c.endswith(".tmp") for c in ckpts)  # rank 0 renamed its own file
    v1, v2 = one["metrics"]["last_val_loss"], two["metrics"]["last_val_loss"]
    assert v1 < 0.8 * one["metrics"]["first_val_loss"]  # the budget learns something: the comparison means something
    assert abs(v2 - v1) <= VAL_LOSS_TOLERANCE * v1, (v1, v2)
