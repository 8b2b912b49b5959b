"""The CLI at 80 columns, its fast one-line usage errors, interruptions, progress in logs and --allow-resample."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import typer
from rasterio.transform import Affine

from clirun import cli
from fakedata import write_fake_geotiff, write_labels_for
from hsikit.cli.main import app, run

HSIKIT = Path(sys.executable).parent / "hsikit"
SAMPLE_MODEL = Path(__file__).resolve().parents[1] / "sample_data" / "sample_model.safetensors"


def _commands(cmd, path=()):
    """(path, click command) of the root group, every group and every command below it."""
    yield list(path), cmd
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


@pytest.fixture
def columns_80(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.delenv("LINES", raising=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("usability")
    scene = write_fake_geotiff(d / "train.tif", bands=12, height=60, width=70, seed=1)
    labels = write_labels_for(scene, d / "labels.tif")
    out = d / "model.safetensors"
    assert run(["-q", "train", "classifier", str(scene), "--labels", str(labels), "-o", str(out), "--epochs", "2",
                "--seed", "0"]) == 0
    return d, scene, labels, out


# -- help and listings at 80 columns -------------------------------------------------------------------------------
@pytest.mark.parametrize("path, cmd", COMMANDS, ids=[" ".join(p) or "hsikit" for p, _ in COMMANDS])
def test_help_fits_80_columns_whole(capsys, columns_80, path, cmd):
    code, out, err = cli(capsys, *path, "--help")
    assert code == 0, err
    too_long = [line for line in out.splitlines() if len(line) > 80]
    assert not too_long, too_long
    assert "…" not in out and "<bool>" not in out
    names = [o for p in cmd.params if getattr(p, "param_type_name", "") == "option"
             for o in (*p.opts, *p.secondary_opts)]
    names += list(getattr(cmd, "commands", None) or {})
    for name in names:
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", out), f"{name} is not whole in:\n{out}"


def test_models_listing_names_whole_at_80_columns(capsys, columns_80):
    from hsikit.models.registry import list_models

    code, out, err = cli(capsys, "models")
    assert code == 0, err
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines) and "…" not in out
    for e in list_models():
        head = [line for line in lines if line.split()[:1] == [e.name]]
        assert len(head) == 1 and e.task in head[0] and e.inputs in head[0], (e.name, out)
    words = " ".join(line.strip() for line in lines if line.startswith(" "))
    assert "ESSAformer (Zhang et al., ICCV 2023)" in words  # descriptions are wrapped, not cut


def test_degradations_listing_separates_names(capsys, columns_80):
    from hsikit.restoration.degradations import list_degradations

    code, out, err = cli(capsys, "degradations")
    assert code == 0, err
    assert all(len(line) <= 80 for line in out.splitlines())
    for name, _ in list_degradations():
        assert re.search(rf"^{re.escape(name)}  +\S", out, re.M), f"{name} glued to its description:\n{out}"


# -- usage errors: one line, exit 2, before torch loads ------------------------------------------------------------
def _error_cases(d: Path) -> list[tuple[list[str], str]]:
    scene = write_fake_geotiff(d / "scene.tif", bands=6, height=20, width=20)
    labels = write_labels_for(scene, d / "labels.tif")
    (d / "taken.tif").write_bytes(b"keep")
    (d / "taken.safetensors").write_bytes(b"keep")
    (d / "evaluated").mkdir()
    (d / "evaluated" / "report.json").write_text("{}")
    m, new_tif, new_ckpt = SAMPLE_MODEL, d / "new.tif", d / "new.safetensors"
    return [
        (["classify", d / "missing.tif", "-o", new_tif], "missing.tif"),
        (["classify", scene, "-m", d / "missing.safetensors", "-o", new_tif], "--model"),
        (["classify", scene, "-m", m, "-o", new_tif, "--tile", "0"], "--tile"),
        (["classify", scene, "-m", m, "-o", new_tif, "--overlap", "-3"], "--overlap"),
        (["classify", scene, "-m", m, "-o", new_tif, "--batch-size", "0"], "--batch-size"),
        (["classify", scene, "-m", m, "-o", d / "taken.tif"], "--overwrite"),
        (["classify", scene, "-m", m, "-o", d / "map.png"], "--out"),
        (["evaluate", m, scene, "-l", labels, "-o", d / "run", "--tile", "0"], "--tile"),
        (["denoise", scene, "-m", m, "-o", new_tif, "--overlap=-3"], "--overlap"),
        (["super-resolve", scene, "-m", m, "-o", d / "x.jpg"], "--out"),
        (["stress", scene, "-m", m, "-o", d / "taken.tif"], "--overwrite"),
        (["evaluate-restoration", m, scene, "-o", d / "evaluated"], "--overwrite"),
        (["train", "classifier", scene, "-l", labels, "-o", new_ckpt, "--epochs", "0"], "--epochs"),
        (["train", "classifier", scene, "-l", labels, "-o", d / "model.pt"], "--out"),
        (["train", "classifier", scene, "-l", labels, "-o", d / "taken.safetensors"], "--overwrite"),
        (["train", "classifier", scene, "-l", d / "nolabels.tif", "-o", new_ckpt], "--labels"),
        (["train", "denoiser", scene, "-o", new_ckpt, "--lr", "0"], "--lr"),
        (["train", "restorer", scene, "-o", d / "taken.safetensors"], "--overwrite"),
        (["train", "stress", scene, "-l", labels, "-o", new_ckpt, "--batch-size", "0"], "--batch-size"),
        (["train", "segmenter", scene, "-l", labels, "-o", new_ckpt, "--steps", "0"], "--steps"),
        (["train", "scene-classifier", d / "nochips", "-o", new_ckpt], "nochips"),
        (["pretrain", "spectralgpt", scene, "-o", new_ckpt, "--mask-ratio", "1.5"], "--mask-ratio"),
        (["benchmark", "classify", "-d", "indian_pines", "-m", "svm", "-o", d / "bench", "--seeds", "0"], "--seeds"),
        (["simulate-stress", d / "sim", "--field-size", "0"], "--field-size"),
        (["preprocess", scene, "-o", new_tif, "--pca", "0"], "--pca"),
        (["s2", "stack", d / "missing.SAFE", "-o", new_tif], "missing.SAFE"),
    ]


_PROBE = """
import contextlib, io, json, sys
from hsikit.cli.main import run
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = run(args)
    results.append({"code": code, "err": err.getvalue(), "torch": "torch" in sys.modules})
print(json.dumps(results))
"""


def test_usage_errors_are_one_line_before_torch(tmp_path):
    cases = _error_cases(tmp_path)
    argv = json.dumps([[str(a) for a in args] for args, _ in cases])
    res = subprocess.run([sys.executable, "-c", _PROBE, argv], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    for (args, needle), r in zip(cases, json.loads(res.stdout)):
        lines = r["err"].strip().splitlines()
        assert r["code"] == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, r)
        assert needle in lines[0], (args, lines[0])
        assert not r["torch"], f"{args} imported torch before failing"
    assert not (tmp_path / "new.tif").exists() and not (tmp_path / "new.safetensors").exists()
    assert (tmp_path / "taken.tif").read_bytes() == b"keep"


def test_unreadable_split_raster_is_one_line(capsys, tmp_path):
    scene = write_fake_geotiff(tmp_path / "scene.tif", bands=6, height=20, width=20)
    labels = write_labels_for(scene, tmp_path / "labels.tif")
    split = tmp_path / "split.tif"
    split.write_text("not a raster")
    code, _, err = cli(capsys, "-q", "train", "classifier", scene, "-l", labels, "-o", tmp_path / "m.safetensors",
                       "--split", split, "-m", "svm")
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert "split.tif" in err and "Traceback" not in err


# -- progress in logs ----------------------------------------------------------------------------------------------
def test_progress_lines_when_not_a_terminal(capsys, model, tmp_path):
    d, scene, _, ckpt = model
    code, _, err = cli(capsys, "classify", scene, "-m", ckpt, "-o", tmp_path / "a.tif", "--tile", "16")
    assert code == 0, err
    assert re.search(r"^train\.tif: \d+ % \(\d+/\d+ tiles\)", err, re.M), err
    assert re.search(r"^train\.tif: done, \d+ tiles in", err, re.M), err
    code, _, err = cli(capsys, "--quiet", "classify", scene, "-m", ckpt, "-o", tmp_path / "b.tif", "--tile", "16")
    assert code == 0 and "tiles" not in err and "%" not in err, err


# -- --allow-resample ----------------------------------------------------------------------------------------------
def _labels_at_half_pixel(labels: Path, out: Path) -> Path:
    """The same labels on a grid of half the pixel size (not the scene's grid)."""
    with rasterio.open(labels) as src:
        arr, profile, t = src.read(1), src.profile, src.transform
    fine = np.repeat(np.repeat(arr, 2, axis=0), 2, axis=1)
    profile.update(width=fine.shape[1], height=fine.shape[0], transform=t * Affine.scale(0.5))
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(fine, 1)
    return out


def test_allow_resample_reaches_the_pipelines(capsys, model, tmp_path):
    d, scene, labels, ckpt = model
    fine = _labels_at_half_pixel(labels, tmp_path / "fine.tif")
    args = ["train", "classifier", scene, "-l", fine, "-o", tmp_path / "m.safetensors", "-m", "svm"]
    code, _, err = cli(capsys, "-q", *args)
    assert code == 2 and "--allow-resample" in err, err
    code, _, err = cli(capsys, "-q", *args, "--allow-resample")
    assert code == 0, err
    assert re.search(r"^warning: fine\.tif is resampled by nearest neighbour", err, re.M), err
    code, out, err = cli(capsys, "-q", "evaluate", ckpt, scene, "-l", fine, "-o", tmp_path / "run",
                         "--allow-resample")
    assert code == 0 and "OA" in out and "resampled by nearest neighbour" in err, err


# -- interruptions -------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_prints_one_line_and_cleans_up(model, tmp_path, sig):
    d, _, _, ckpt = model
    big = d / "big.tif"
    if not big.exists():
        write_fake_geotiff(big, bands=12, height=1000, width=1000, seed=2)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen([str(HSIKIT), "classify", str(big), "-m", str(ckpt), "-o", str(out / "c.tif"),
                             "--tile", "256"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    t0 = time.monotonic()
    while not any("%" in line for line in lines):  # the first progress line: tiles are being classified
        assert proc.poll() is None, lines
        assert time.monotonic() - t0 < 120
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    reader.join(10)
    err = "".join(lines)
    assert proc.returncode == 128 + int(sig), err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1] == "interrupted: nothing was written", err
    assert sum(line.startswith(("interrupted", "error")) for line in lines) == 1, err
    assert list(out.iterdir()) == []


def test_sigterm_interrupts_in_process_and_handlers_are_restored(capsys, monkeypatch):
    import hsikit.models.registry as registry

    def terminated():
        signal.raise_signal(signal.SIGTERM)
        return []

    monkeypatch.setattr(registry, "list_models", terminated)
    got: list[int] = []

    def ours(signum, frame):
        got.append(signum)

    previous = signal.signal(signal.SIGTERM, ours)
    try:
        code, out, err = cli(capsys, "models", "--json")
        assert signal.getsignal(signal.SIGTERM) is ours  # run() put the caller's handler back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 143 and err == "interrupted: nothing was written\n" and out == "" and got == []
