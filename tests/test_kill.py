"""`hsikit classify` killed at a random moment (SIGKILL, SIGTERM, SIGINT), then run again: the rerun writes one
valid set of outputs and no temporary file is left in the output folder."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from fakedata import write_fake_geotiff, write_labels_for
from hsikit.cli.main import run

pytestmark = pytest.mark.slow
HSIKIT = Path(sys.executable).parent / "hsikit"
TEMP = re.compile(r"^\..*\.tmp")


@pytest.fixture(scope="module")
def scene_and_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("kill")
    train = write_fake_geotiff(d / "train.tif", bands=12, height=60, width=70, seed=1)
    labels = write_labels_for(train, d / "labels.tif")
    model = d / "model.safetensors"
    assert run(["-q", "train", "classifier", str(train), "--labels", str(labels), "-o", str(model), "--epochs", "2",
                "--seed", "0"]) == 0
    # big enough that classifying it takes several seconds on one thread
    scene = write_fake_geotiff(d / "big.tif", bands=12, height=1500, width=1500, seed=2)
    return scene, model


def _classify(scene: Path, model: Path, out: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    # one thread (hsikit takes every core unless told): the run must outlast the test's random wait of up to 1.5 s
    return subprocess.Popen([str(HSIKIT), "classify", str(scene), "-m", str(model), "-o", str(out / "classes.tif"),
                             "--probabilities", "--tile", "256", "--threads", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_work(proc: subprocess.Popen, out: Path, timeout: float = 120.0) -> None:
    """Until the run has created its first temporary in the output folder (it is writing)."""
    t0 = time.monotonic()
    while not any(out.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "classify never started writing"
        time.sleep(0.02)


def _outputs(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["SIGKILL", "SIGTERM", "SIGINT"])
def test_killed_run_leaves_nothing_a_rerun_cannot_clean(scene_and_model, tmp_path, sig):
    scene, model = scene_and_model
    out = tmp_path / "out"
    out.mkdir()
    rng = random.Random(int(sig))
    proc = _classify(scene, model, out)
    _wait_for_work(proc, out)
    time.sleep(rng.uniform(0.0, 1.5))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, "the run finished before it was killed: make the scene bigger"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        assert not [n for n in _outputs(out) if not TEMP.match(n)], _outputs(out)  # nothing under a final name
    else:
        assert proc.returncode == 128 + int(sig), err
        assert "Traceback" not in err
        assert err.strip().splitlines()[-1].startswith("interrupted"), err
        assert _outputs(out) == []  # a caught signal cleans up at once

    rerun = _classify(scene, model, out)
    stdout, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert _outputs(out) == ["classes.qml", "classes.tif", "classes.tif.aux.xml", "classes_probabilities.tif"]
    with rasterio.open(out / "classes.tif") as src, rasterio.open(out / "classes_probabilities.tif") as p:
        cls = src.read(1)
        assert cls.shape == (1500, 1500) and cls.min() >= 1
        assert np.allclose(p.read().sum(axis=0), 1.0, atol=1e-3)
