"""A batch killed mid-run (SIGKILL to the client, the scheduler inside it and the worker processes) and run again
finishes with every output present and valid, no scene computed twice and no temporary file left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from fakedata import write_fake_geotiff
from hsikit.cli.main import run
from test_batch import assert_valid_class_map, temp_leftovers, train_small_classifier

pytest.importorskip("distributed")

HSIKIT = Path(sys.executable).parent / "hsikit"
N_SCENES = 10


def _counts(out: Path) -> dict[str, int]:
    from hsikit.pipelines.manifest import Manifest

    try:
        with Manifest(out, writable=False) as m:
            return m.counts()
    except Exception:  # noqa: BLE001 - not created yet, or being created
        return {}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return train_small_classifier(tmp_path_factory.mktemp("resume_model"))


def test_killed_batch_resumes_without_losing_or_redoing_scenes(tmp_path, model):
    from hsikit.pipelines.batch import scenes_table
    from hsikit.pipelines.manifest import Manifest

    src = tmp_path / "scenes"
    src.mkdir()
    for i in range(N_SCENES):
        write_fake_geotiff(src / f"s{i:02d}.tif", bands=12, height=160, width=150, seed=i)
    out = tmp_path / "out"
    args = [str(HSIKIT), "-q", "batch", "classify", str(src), "-o", str(out), "-m", str(model), "--workers", "2",
            "--tile", "32", "--block-mpx", "0.006", "--no-dashboard"]

    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 180:
            c = _counts(out)
            if c.get("done", 0) >= 1 and c.get("pending", 0) + c.get("running", 0) >= 1:
                break
            assert proc.poll() is None, f"the batch ended before it could be killed: {proc.stderr.read()[-2000:]}"
            time.sleep(0.02)
        else:
            pytest.fail("no scene finished within 180 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # client (with the scheduler) and the worker processes
        proc.wait()

    with Manifest(out, writable=False) as m:
        before = {r.name: r.status for r in m.scenes()}
    done_before = sorted(n for n, s in before.items() if s == "done")
    assert done_before and len(done_before) < N_SCENES
    # whatever exists under a final name is complete: outputs appear only by atomic rename
    for p in out.glob("s*.tif"):
        with rasterio.open(p) as dst:
            assert dst.read(1).shape == (160, 150)

    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]

    rows = {r["name"]: r for r in scenes_table(out)}
    assert len(rows) == N_SCENES and all(r["status"] == "done" for r in rows.values())
    assert all(r["done_events"] == 1 for r in rows.values())  # each scene finished exactly once
    with Manifest(out, writable=False) as m:
        for name in done_before:  # done before the kill: not submitted again
            submitted = [e for e in m.events(rows[name]["key"]) if e["event"] == "submitted"]
            assert len(submitted) == 1 and rows[name]["attempts"] == 1, name
    for i in range(N_SCENES):
        assert_valid_class_map(out / f"s{i:02d}.tif", src / f"s{i:02d}.tif")
    assert temp_leftovers(out) == []

    # a scene interrupted mid-way equals the single-scene command's map
    retried = sorted(n for n, r in rows.items() if r["attempts"] > 1) or sorted(rows)
    name = retried[0]
    single = tmp_path / "single.tif"
    assert run(["-q", "classify", str(src / f"{name}.tif"), "-o", str(single), "-m", str(model), "--tile", "32"]) == 0
    with rasterio.open(out / f"{name}.tif") as a, rasterio.open(single) as b:
        assert np.array_equal(a.read(), b.read())


def test_outputs_renamed_before_the_client_recorded_them_are_not_recomputed(tmp_path, model):
    """The window between an output's atomic rename (on a worker) and the manifest update (in the client): the
    output's tags carry the scene key and input fingerprint, so the next run records it as done, unrecomputed."""
    import sqlite3

    from hsikit.pipelines.batch import run_batch, scenes_table
    from hsikit.pipelines.manifest import MANIFEST_NAME

    src = tmp_path / "scenes"
    src.mkdir()
    for i in range(2):
        write_fake_geotiff(src / f"r{i}.tif", bands=12, seed=i)
    out = tmp_path / "out"
    kw = dict(outdir=out, model=model, options={"tile": 32}, workers=1, progress=False)
    assert run_batch("classify", [src], **kw).done == 2
    mtimes = [p.stat().st_mtime_ns for p in sorted(out.glob("r*.tif"))]
    with sqlite3.connect(out / MANIFEST_NAME) as db:  # as if the client died before recording them
        db.execute("UPDATE scenes SET status='running'")
    res = run_batch("classify", [src], **kw)
    assert (res.done, res.recovered, res.cluster) == (2, 2, "")  # no cluster was even started
    assert [p.stat().st_mtime_ns for p in sorted(out.glob("r*.tif"))] == mtimes
    assert all(r["status"] == "done" and r["attempts"] == 1 and r["done_events"] == 2 for r in scenes_table(out))
    # a changed input is not "recovered" from its old output: it is computed again
    with sqlite3.connect(out / MANIFEST_NAME) as db:
        db.execute("UPDATE scenes SET status='running'")
    write_fake_geotiff(src / "r0.tif", bands=12, seed=7, height=33)
    res = run_batch("classify", [src], **kw)
    assert (res.done, res.recovered) == (2, 1)
    with rasterio.open(out / "r0.tif") as dst:
        assert dst.height == 33
