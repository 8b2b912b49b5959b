"""A batch over broken scenes among good ones: each broken scene fails with the one line a single-scene run
prints, no worker dumps a traceback for it, the lock is released however the run ends (and a killed client's lock
is taken over), a log shows progress unless --quiet, and no output of a run can overwrite another."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil

from clirun import cli
from fakedata import write_fake_geotiff
from hsikit.errors import InputError, OutputError
from hsikit.pipelines.manifest import Manifest
from test_batch import temp_leftovers, train_small_classifier

distributed = pytest.importorskip("distributed")

LOCK = Path(".hsikit-batch") / "lock"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return train_small_classifier(tmp_path_factory.mktemp("bad_batch_model"))


class FailOnName(distributed.WorkerPlugin):
    """On every worker: the classify block of a scene named "odd…" raises an InputError with an unusual message,
    of one named "buggy…" a RuntimeError (a bug)."""

    name = "fail-on-name"

    def setup(self, worker) -> None:
        from hsikit.pipelines import batch_tasks

        task = batch_tasks.TASKS["classify"]
        original = task.block

        def block(sc, *a, **kw):
            if sc.name.startswith("odd"):
                raise InputError(f"{sc.name}: an unusual message, kept verbatim (x = 1.5; 'quoted')")
            if sc.name.startswith("buggy"):
                raise RuntimeError("boom in a block")
            return original(sc, *a, **kw)

        task.block = block


@pytest.fixture(scope="module")
def cluster():
    """One worker process with :class:`FailOnName` installed, shared by the API tests of this module."""
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as c, distributed.Client(c) as cl:
        cl.register_plugin(FailOnName())
        yield c


def truncated_in_the_data(path: Path, src: Path) -> Path:
    """``src`` copied with its directory first (the header reads fine), then cut to 60 %: the pixels fail."""
    rasterio.shutil.copy(src, path, driver="GTiff", tiled=True, blockxsize=16, blockysize=16)
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * 0.6))
    return path


def broken_scenes(d: Path) -> dict[str, Path]:
    d.mkdir()
    good = write_fake_geotiff(d / "good.tif", bands=12, height=64, width=64, seed=1)
    cut = write_fake_geotiff(d / "truncated.tif", bands=12, height=64, width=64, seed=2)
    with open(cut, "r+b") as f:  # fakedata's GeoTIFFs keep their directory at the end: the header is cut
        f.truncate(int(cut.stat().st_size * 0.6))
    out = {"good": good, "truncated": cut, "truncated_data": truncated_in_the_data(d / "truncated_data.tif", good)}
    out["empty"] = d / "empty.tif"
    out["empty"].write_bytes(b"")
    out["text"] = d / "text.tif"
    out["text"].write_text("name,value\nthis is a CSV file renamed .tif\n")
    out["allnan"] = write_fake_geotiff(d / "allnan.tif", bands=12, height=40, width=50, seed=3)
    with rasterio.open(out["allnan"], "r+") as dst:
        dst.write(np.full((12, 40, 50), np.nan, np.float32))
    out["ninebands"] = write_fake_geotiff(d / "ninebands.tif", bands=9, seed=4)
    return out


def test_broken_scenes_fail_with_the_single_scene_reason_and_no_traceback(model, tmp_path, capfd):
    """capfd also captures the worker processes' stderr, where Dask logs failed tasks."""
    from hsikit.pipelines.batch import scenes_table

    scenes = broken_scenes(tmp_path / "scenes")
    out = tmp_path / "out"
    code, stdout, err = cli(capfd, "batch", "classify", tmp_path / "scenes", "-o", out, "-m", model, "--workers", "1",
                            "--tile", "32", "--no-dashboard")
    assert code == 1, err  # some scenes failed (documented in --help)
    assert "Traceback" not in err + stdout and " - ERROR - " not in err, err
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        f"error: 6 of 7 scene(s) failed and 0 did not finish (`hsikit batch status {out}` lists them)"], err
    rows = {r["name"]: r for r in scenes_table(out)}
    assert rows.pop("good")["status"] == "done" and (out / "good.tif").exists()
    assert set(rows) == set(scenes) - {"good"}
    for name, row in rows.items():
        why = row["error"]
        assert row["status"] == "failed" and why and "\n" not in why, row
        assert not why.startswith(("Exception", "SceneError")), why
        assert f"failed {name}: {why}" in stdout  # the same line in the run's output as in the manifest
        single = tmp_path / "single" / name
        single.mkdir(parents=True)
        one_code, _, one = cli(capfd, "classify", scenes[name], "-o", single / "c.tif", "-m", model, "--tile", "32")
        assert one_code == 2 and one.strip().splitlines()[-1] == f"error: {why}", (name, one, why)
    assert "no valid pixel" in rows["allnan"]["error"] and "truncated_data.tif" in rows["truncated_data"]["error"]
    assert not (out / LOCK).exists()
    assert temp_leftovers(out) == []


def test_a_scene_error_is_carried_verbatim_and_a_bug_keeps_its_type(model, tmp_path, cluster, capfd):
    from hsikit.pipelines.batch import run_batch, scenes_table

    src = tmp_path / "in"
    src.mkdir()
    for name in ("fine", "odd", "buggy"):
        write_fake_geotiff(src / f"{name}.tif", bands=12, seed=len(name))
    capfd.readouterr()
    res = run_batch("classify", [src / "fine.tif", src / "odd.tif"], outdir=tmp_path / "out", model=model,
                    options={"tile": 32}, scheduler=cluster.scheduler_address, progress=False)
    time.sleep(0.5)  # the worker's log lines, if any, arrive through its own stderr
    err = capfd.readouterr().err
    assert (res.done, res.failed) == (1, 1)
    rows = {r["name"]: r for r in scenes_table(tmp_path / "out")}
    assert rows["odd"]["error"] == "odd.tif: an unusual message, kept verbatim (x = 1.5; 'quoted')"
    assert dict(res.failures)["odd"] == rows["odd"]["error"]
    assert "Traceback" not in err and "Compute Failed" not in err, err
    # a bug is no user error: it keeps its type in the reason (its traceback may be logged by the worker)
    res = run_batch("classify", [src / "buggy.tif"], outdir=tmp_path / "out2", model=model, options={"tile": 32},
                    scheduler=cluster.scheduler_address, progress=False)
    assert res.failures == [("buggy", "RuntimeError: boom in a block")]
    assert not (tmp_path / "out" / LOCK).exists() and not (tmp_path / "out2" / LOCK).exists()


# -- the lock ------------------------------------------------------------------------------------------------------
def test_the_lock_is_released_after_success_failure_and_interrupt(model, tmp_path, cluster, monkeypatch):
    from hsikit.pipelines.batch import run_batch

    src = tmp_path / "in"
    src.mkdir()
    write_fake_geotiff(src / "a.tif", bands=12, seed=1)
    write_fake_geotiff(src / "b.tif", bands=12, seed=2)
    kw = dict(model=model, options={"tile": 32}, scheduler=cluster.scheduler_address, progress=False)
    assert run_batch("classify", [src], outdir=tmp_path / "ok", **kw).exit_code == 0
    assert not (tmp_path / "ok" / LOCK).exists()
    write_fake_geotiff(src / "nine.tif", bands=9)
    assert run_batch("classify", [src], outdir=tmp_path / "some_failed", **kw).exit_code == 1
    assert not (tmp_path / "some_failed" / LOCK).exists()

    def interrupt(self, *a, **k):  # Ctrl-C (or SIGTERM, which the CLI turns into it) while scenes run
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Manifest, "running", interrupt)
        with pytest.raises(KeyboardInterrupt):
            run_batch("classify", [src], outdir=tmp_path / "stopped", **kw)
    assert not (tmp_path / "stopped" / LOCK).exists()
    with Manifest(tmp_path / "stopped", writable=False) as man:
        assert man.runs()[-1]["status"] == "interrupted"
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*batch lock")  # nothing to take over: the next run just starts
        res = run_batch("classify", [src], outdir=tmp_path / "stopped", **kw)
    assert (res.done, res.failed) == (2, 1) and not (tmp_path / "stopped" / LOCK).exists()


HSIKIT = Path(sys.executable).parent / "hsikit"


def test_sigterm_releases_the_lock_and_the_next_run_finishes(model, tmp_path):
    from hsikit.pipelines.batch import scenes_table

    src = tmp_path / "scenes"
    src.mkdir()
    for i in range(6):
        write_fake_geotiff(src / f"s{i}.tif", bands=12, height=160, width=150, seed=i)
    out = tmp_path / "out"
    args = ["-q", "batch", "classify", str(src), "-o", str(out), "-m", str(model), "--workers", "1", "--tile", "32",
            "--block-mpx", "0.006", "--no-dashboard"]
    proc = subprocess.Popen([str(HSIKIT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 120:
            if (out / "hsikit-batch.sqlite").exists():
                try:
                    with Manifest(out, writable=False) as m:
                        if m.counts()["running"] + m.counts()["done"]:
                            break
                except Exception:  # noqa: BLE001 - being created
                    pass
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        else:
            pytest.fail("no scene started within 120 s")
        assert (out / LOCK).exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert "interrupted: the scenes finished so far are kept in" in err
    assert not (out / LOCK).exists()
    with Manifest(out, writable=False) as m:
        assert m.runs()[-1]["status"] == "interrupted" and m.active_pid() is None
    code = subprocess.run([str(HSIKIT), *args], capture_output=True, text=True, timeout=300)
    assert code.returncode == 0 and "batch lock" not in code.stderr, code.stderr
    assert all(r["status"] == "done" for r in scenes_table(out)) and not (out / LOCK).exists()


HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from hsikit.pipelines.manifest import Manifest
    m = Manifest(sys.argv[1])
    print("locked", flush=True)
    time.sleep(120)
""")


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_lock_left_by_a_killed_client_is_taken_over_with_a_warning(tmp_path):
    import fcntl

    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(OutputError, match=rf"another hsikit batch \(pid {proc.pid}\) is running on"):
        Manifest(out)
    proc.kill()  # kill -9: no clean-up runs
    proc.wait()
    assert (out / LOCK).exists()
    with Manifest(out, writable=False) as r:
        assert r.active_pid() is None  # `batch status` says no batch runs
    with pytest.warns(UserWarning, match=rf"took over the batch lock of .* left by pid {proc.pid}\b"):
        m = Manifest(out)
    assert (out / LOCK).read_text().split() == [str(os.getpid()), socket.gethostname()]
    m.close()
    assert not (out / LOCK).exists()

    # locked, but by a process that is not its recorded owner (a descriptor inherited by a child that lives on):
    # the owner is dead, so the lock is taken over; an owner on another host cannot be checked and is respected
    for owner, taken in ((f"{_dead_pid()} {socket.gethostname()}", True), ("4242 some-other-host", False)):
        (out / LOCK).write_text(owner)
        fd = os.open(out / LOCK, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if taken:
                with pytest.warns(UserWarning, match=r"is held, but its owner \(pid \d+\) is not running"):
                    Manifest(out).close()
            else:
                with pytest.raises(OutputError, match=r"pid 4242 on some-other-host\) is running .* delete "):
                    Manifest(out)
        finally:
            os.close(fd)
    (out / LOCK).unlink()


# -- feedback in logs ----------------------------------------------------------------------------------------------
def test_progress_lines_in_a_log_and_quiet_removes_them(model, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        write_fake_geotiff(src / f"p{i}.tif", bands=12, seed=i)
    write_fake_geotiff(src / "nine.tif", bands=9)
    base = ["batch", "classify", src, "-m", model, "--workers", "1", "--tile", "32", "--no-dashboard"]
    busy = socket.socket()  # Dask's default HTTP port taken (by another cluster): no multi-line Dask warning
    try:
        busy.bind(("", 8787))
        busy.listen()
    except OSError:
        pass  # taken already
    with busy:
        code, out, err = cli(capsys, *base, "-o", tmp_path / "loud")  # capsys: not a terminal, as in a log
    assert err.startswith("error: 1 of 4 scene(s) failed") and len(err.strip().splitlines()) == 1, err
    assert code == 1
    lines = out.splitlines()
    assert "batch: starting a local Dask cluster of 1 worker process" in lines
    assert "batch classify: 4 scenes, 3 to do, 1 worker" in lines
    assert any(re.fullmatch(r"batch: \d+ % \(\d/3 scenes\).*left", ln) for ln in lines), out
    assert any(ln.startswith("batch: done, 3 scenes in ") for ln in lines) and "done p0 (" in out
    assert lines.index("batch: starting a local Dask cluster of 1 worker process") < lines.index(
        "batch classify: 4 scenes, 3 to do, 1 worker") < min(i for i, ln in enumerate(lines) if ln.startswith("done "))

    code, out, err = cli(capsys, "-q", *base, "-o", tmp_path / "quiet")
    assert code == 1
    assert not [ln for ln in out.splitlines() if ln.startswith(("batch:", "batch classify: 4 scenes", "done "))], out
    assert "failed nine: " in out and "4 scene(s)" in out  # failures and the summary stay
    assert err.startswith("error: 1 of 4 scene(s) failed")


# -- output names --------------------------------------------------------------------------------------------------
def test_inputs_sharing_a_file_name_get_distinct_outputs_with_a_note(model, tmp_path, cluster):
    from hsikit.pipelines.batch import run_batch, scenes_table

    for d, seed in (("2023", 1), ("2024", 2)):
        (tmp_path / "archive" / d).mkdir(parents=True)
        write_fake_geotiff(tmp_path / "archive" / d / "scene.tif", bands=12, seed=seed)
    said: list[str] = []
    kw = dict(outdir=tmp_path / "out", model=model, options={"tile": 32}, scheduler=cluster.scheduler_address,
              progress=False, echo=said.append)
    res = run_batch("classify", [tmp_path / "archive"], **kw)
    assert res.done == 2
    rows = scenes_table(tmp_path / "out")
    names = sorted(r["name"] for r in rows)
    assert len(set(names)) == 2 and all(re.fullmatch(r"scene_[0-9a-f]{6}", n) for n in names)
    notes = [s for s in said if s.startswith("note: ")]
    assert len(notes) == 1 and "2 inputs share their file name" in notes[0] and names[0] in notes[0], said
    for r in rows:
        with rasterio.open(tmp_path / "out" / f"{r['name']}.tif") as dst, rasterio.open(r["input"]) as src:
            assert dst.shape == src.shape
    assert run_batch("classify", [tmp_path / "archive"], **kw).skipped == 2  # the same names again


def test_outputs_that_would_collide_are_refused_before_any_work(model, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_fake_geotiff(src / "x.tif", bands=12, seed=1)
    write_fake_geotiff(src / "x_probabilities.tif", bands=12, seed=2)
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "batch", "classify", src, "-o", out, "-m", model, "--probabilities", "--workers",
                            "1", "--no-dashboard")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "x_probabilities.tif would be written twice" in err
    assert f"probabilities of {src / 'x.tif'}" in err and f"class map of {src / 'x_probabilities.tif'}" in err
    assert not (out / "hsikit-batch.sqlite").exists() and not (out / LOCK).exists() and "starting" not in stdout
    # without --probabilities the names do not collide: not refused
    code, _, err = cli(capsys, "-q", "batch", "classify", src, "-o", out, "-m", model, "--workers", "1",
                       "--no-dashboard", "--tile", "32")
    assert code == 0, err

    # an output that would replace one of the inputs (an input inside the output folder)
    write_fake_geotiff(out / "y.tif", bands=12, seed=3)
    code, _, err = cli(capsys, "batch", "classify", out / "y.tif", "-o", out, "-m", model, "--overwrite",
                       "--no-dashboard")
    assert code == 2 and "the class map of" in err and f"would replace the input {out / 'y.tif'}" in err, err
    with rasterio.open(out / "y.tif") as dst:
        assert dst.count == 12
