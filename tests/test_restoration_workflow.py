"""Restoration workflow end to end on generated and real georeferenced scenes: train, restore in tiles, evaluate."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import rasterio

from hsikit.cli.main import run
from hsikit.errors import InputError, OptionError

pytest.importorskip("torch")

TINY = {
    "hsdt": ["--set", "width=4"],
    "essaformer": ["--set", "dim=8"],
    "mp-hsir": ["--set", "dim=8", "--set", "blocks=[1,1,1]", "--set", "refinement=1", "--set", "heads=[1,2,4]"],
}


def _train(kind: str, model: str, scenes, out, *extra: str) -> None:
    args = ["-q", "train", kind, *map(str, scenes), "-o", str(out), "-m", model, "--iterations", "4",
            "--steps-per-epoch", "2", "--batch-size", "2", "--crop", "32", *TINY[model], *extra]
    assert run(args) == 0


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    from fakedata import write_fake_geotiff

    d = tmp_path_factory.mktemp("restore")
    train = write_fake_geotiff(d / "train.tif", bands=10, height=48, width=48, seed=1)
    val = write_fake_geotiff(d / "val.tif", bands=10, height=40, width=40, seed=2)
    test = write_fake_geotiff(d / "test.tif", bands=10, height=45, width=37, seed=3, nodata_border=3)
    return d, train, val, test


@pytest.fixture(scope="module")
def models(scenes):
    d, train, val, _ = scenes
    out = {}
    for kind, model in (("denoiser", "hsdt"), ("super-resolver", "essaformer"), ("restorer", "mp-hsir")):
        ck = d / f"{model}.safetensors"
        extra = ["--scale", "2"] if kind == "super-resolver" else []
        _train(kind, model, [train], ck, "--val", str(val), *extra)
        out[model] = ck
    return out


def test_training_reports_loss_and_validation_psnr(models):
    for model, ck in models.items():
        report = json.loads((ck.parent / f"{model}_report" / "report.json").read_text())
        assert len(report["loss_curve"]) == 4
        assert all(np.isfinite(h["val_psnr"]) for h in report["history"])
        assert report["scenes"] == ["train.tif"] and report["val_scenes"] == ["val.tif"]
        from hsikit.checkpoint import read_checkpoint_meta

        meta = read_checkpoint_meta(ck)
        assert meta.restoration["scaling"] == "scene-minmax" and meta.task in ("denoising", "super-resolution", "restoration")


@pytest.mark.parametrize("model,extra", [("essaformer", []), ("mp-hsir", ["--scale", "2"])])
def test_super_resolved_output_grid_and_metadata(scenes, models, tmp_path, model, extra):
    """A super-resolver, and an all-in-one model's "sr" prompt on the nearest-upsampled scene, write the 2x grid."""
    _, _, _, test = scenes
    out = tmp_path / "sr.tif"
    assert run(["-q", "super-resolve", str(test), "-o", str(out), "-m", str(models[model]), *extra]) == 0
    with rasterio.open(test) as src, rasterio.open(out) as dst:
        assert dst.width == 2 * src.width and dst.height == 2 * src.height
        assert dst.crs == src.crs
        t, u = src.transform, dst.transform
        assert (u.c, u.f) == (t.c, t.f) and u.a == t.a / 2 and u.e == t.e / 2
        assert dst.dtypes[0] == "float32" and dst.nodata == src.nodata
        assert dst.tags().get("LAYOUT", dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT")) in (None, "COG")
        wl = [float(dst.tags(i + 1)["wavelength"]) for i in range(dst.count)]
        assert wl == sorted(wl) and 400 < wl[0] < 2500
        data = dst.read()
        # the 3-px nodata border of the input is nodata on the 2x grid (6 px), the rest is finite
        assert (data[:, :6, :] == src.nodata).all() and (data[:, :, :6] == src.nodata).all()
        assert np.isfinite(data[:, 6:, 6:]).all() and (data[:, 6:, 6:] != src.nodata).all()
        assert dst.tags()["HSIKIT_SCALE"] == "2"


def test_denoise_and_restore_keep_grid_bands_and_nodata(scenes, models, tmp_path):
    _, _, _, test = scenes
    for cmd, model, extra in (("denoise", "hsdt", []), ("restore", "mp-hsir", ["--task", "inpaint"]),
                              ("denoise", "mp-hsir", [])):
        out = tmp_path / f"{cmd}_{model}.tif"
        assert run(["-q", cmd, str(test), "-o", str(out), "-m", str(models[model]), *extra]) == 0
        with rasterio.open(test) as src, rasterio.open(out) as dst:
            assert (dst.width, dst.height, dst.transform, dst.crs) == (src.width, src.height, src.transform, src.crs)
            assert dst.descriptions[0] == src.descriptions[0]
            d = dst.read()
            assert (d[:, :3, :] == src.nodata).all() and np.isfinite(d[:, 3:, 3:]).all()


def test_wrong_model_or_task_is_a_clear_error(scenes, models, tmp_path, capsys):
    _, _, _, test = scenes
    cases = [
        (["denoise", str(test), "-o", str(tmp_path / "a.tif"), "-m", str(models["essaformer"])], "super-resolve"),
        (["restore", str(test), "-o", str(tmp_path / "b.tif"), "-m", str(models["mp-hsir"])], "--task is required"),
        (["restore", str(test), "-o", str(tmp_path / "c.tif"), "-m", str(models["mp-hsir"]), "--task", "x"], "not one of"),
        (["super-resolve", str(test), "-o", str(tmp_path / "d.tif"), "-m", str(models["essaformer"]), "-s", "4"], "x2"),
        (["super-resolve", str(test), "-o", str(tmp_path / "e.tif"), "-m", str(models["hsdt"])], "does not super-resolve"),
    ]
    for args, msg in cases:
        capsys.readouterr()
        assert run(args) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1
        assert not (tmp_path / args[3]).exists()


def test_existing_output_needs_overwrite(scenes, models, tmp_path, capsys):
    _, _, _, test = scenes
    out = tmp_path / "x.tif"
    out.write_bytes(b"keep me")
    assert run(["-q", "denoise", str(test), "-o", str(out), "-m", str(models["hsdt"])]) == 2
    assert out.read_bytes() == b"keep me"
    assert run(["-q", "denoise", str(test), "-o", str(out), "-m", str(models["hsdt"]), "--overwrite"]) == 0
    with rasterio.open(out) as dst:
        assert dst.count > 0


def test_evaluate_restoration_scores_model_input_and_baselines(scenes, models, tmp_path):
    from hsikit.pipelines.evaluate_restoration import evaluate_restoration

    _, _, val, test = scenes
    ev = evaluate_restoration(models["hsdt"], [val, test], degradation="gaussian:sigma=30", out=tmp_path / "ev")
    assert set(ev.methods) == {"degraded input", "hsdt", "wavelet", "tv", "pca", "subspace"}
    assert ev.methods["wavelet"]["psnr"] > ev.methods["degraded input"]["psnr"]
    # the training-free default of `hsikit denoise` is among the baselines a trained denoiser is held against
    assert ev.methods["subspace"]["psnr"] > ev.methods["degraded input"]["psnr"] + 3
    assert len(ev.scenes) == 2 and (tmp_path / "ev" / "report.json").exists()
    from hsikit.pipelines.info import format_model_card, model_card

    card = format_model_card(model_card(models["hsdt"]))
    line = next(x for x in card.splitlines() if "gaussian:sigma=30 (seed 0)" in x)
    for name in ("hsdt", "pca", "degraded input"):
        assert f"{name} {ev.methods[name]['psnr']:.2f} dB" in line, card
    sr = evaluate_restoration(models["essaformer"], [val])
    assert set(sr.methods) == {"essaformer", "bicubic"} and sr.degradation == "downsample:scale=2"
    mp = evaluate_restoration(models["mp-hsir"], [val], task="band-missing")
    assert "degraded input" in mp.methods and mp.degradation.startswith("band-missing")
    with pytest.raises(OptionError):
        evaluate_restoration(models["essaformer"], [val], degradation="downsample:scale=4")
    with pytest.raises(InputError):
        evaluate_restoration(models["hsdt"], [])


def test_restoration_is_reproducible_with_a_seed(scenes, tmp_path):
    d, train, val, _ = scenes
    outs = []
    for k in range(2):
        ck = tmp_path / f"r{k}.safetensors"
        _train("denoiser", "hsdt", [train], ck, "--seed", "7")
        outs.append(json.loads((tmp_path / f"r{k}_report" / "report.json").read_text())["loss_curve"])
    assert outs[0] == outs[1]


@pytest.mark.shared
@pytest.mark.skipif(shutil.which("gdalinfo") is None, reason="gdalinfo (Debian gdal-bin) not installed")
def test_real_enmap_scene_through_all_three_commands(shared_data, tmp_path):
    """Train tiny models on real EnMAP L2A training tiles; each command restores a held-apart test tile into a COG
    that gdalinfo reads with the right grid, CRS and band metadata."""
    imgs = shared_data / "enmap_potsdam" / "images"
    train = [imgs / "enmap_potsdam_tile_128_0.tif", imgs / "enmap_potsdam_tile_64_0.tif"]
    test = imgs / "enmap_potsdam_tile_160_96.tif"
    jobs = [("denoiser", "hsdt", ["denoise"]), ("super-resolver", "essaformer", ["super-resolve"]),
            ("restorer", "mp-hsir", ["restore", "--task", "gaussian"])]
    for kind, model, cmd in jobs:
        ck = tmp_path / f"{model}.safetensors"
        _train(kind, model, train, ck)
        out = tmp_path / f"{model}.tif"
        assert run(["-q", cmd[0], str(test), "-o", str(out), "-m", str(ck), *cmd[1:]]) == 0
        info = json.loads(subprocess.run(["gdalinfo", "-json", str(out)], capture_output=True, text=True,
                                         check=True).stdout)
        assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
        assert "32633" in json.dumps(info["coordinateSystem"])
        s = 4 if model == "essaformer" else 1
        assert info["size"] == [32 * s, 32 * s]
        assert info["geoTransform"][1] == pytest.approx(30.0 / s) and info["geoTransform"][0] == pytest.approx(366975.0)
        assert len(info["bands"]) == 215 and info["bands"][0]["metadata"][""]["wavelength"] == "418.24"


def test_interrupted_training_resumes(scenes, tmp_path):
    """A resumed run continues from last.ckpt: the per-step loss curve of the first run is kept and extended."""
    _, train, val, _ = scenes
    ck = tmp_path / "res.safetensors"
    _train("super-resolver", "essaformer", [train], ck, "--scale", "2")
    first = json.loads((tmp_path / "res_report" / "report.json").read_text())
    assert (tmp_path / "res_report" / "checkpoints" / "last.ckpt").exists()
    args = ["-q", "train", "super-resolver", str(train), "-o", str(ck), "-m", "essaformer", "--iterations", "6",
            "--steps-per-epoch", "2", "--batch-size", "2", "--crop", "32", "--scale", "2", *TINY["essaformer"],
            "--resume"]
    assert run(args) == 0
    second = json.loads((tmp_path / "res_report" / "report.json").read_text())
    assert len(second["loss_curve"]) == 6 and second["loss_curve"][:4] == first["loss_curve"]
    assert second["history"][:2] == first["history"]
    epochs = [h["epoch"] for h in second["history"]]
    assert epochs == list(range(1, len(epochs) + 1)) and second["history"][-1]["step"] == 6


def test_models_trained_on_clamped_output_are_clamped(models):
    """MP-HSIR's loss sees clamp(output, 0, 1): its checkpoints say so and the pipelines clamp likewise."""
    import torch

    from hsikit.checkpoint import load_checkpoint
    from hsikit.pipelines.restore import restorer_module

    net, meta = load_checkpoint(models["mp-hsir"])
    assert meta.restoration["clamp_output"] is True
    x = torch.rand(1, net.cfg.in_bands, 32, 32) * 3 - 1
    y = restorer_module(net, meta, "gaussian", 1, False)(x)
    assert y.min() >= 0 and y.max() <= 1
    _, hmeta = load_checkpoint(models["hsdt"])
    assert hmeta.restoration["clamp_output"] is False
