"""Temporaries of killed runs: every temporary name records its owner (pid and host), and a run that targets an
output first removes the leftovers of earlier runs for that output whose owner is gone; a live owner's are kept."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from hsikit.io import atomic
from hsikit.io.atomic import atomic_outputs, remove_stale_temps, temp_path
from hsikit.io.legend import Legend
from hsikit.io.writer import RasterWriter

ROOT = Path(__file__).resolve().parents[1]
UTM = CRS.from_epsg(32633)
GRID = from_origin(366000.0, 5810000.0, 30.0, 30.0)
HOST = atomic._host_tag()


def names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


@pytest.fixture(scope="module")
def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def live_pid():
    """The pid of a running process started before the test writes its files (a concurrent run)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    time.sleep(0.05)
    yield proc.pid
    proc.kill()
    proc.wait()


def leftover(folder: Path, final: str, pid: int, host: str = HOST, sidecars: tuple[str, ...] = ()) -> list[Path]:
    """A temporary of ``final`` as the owner ``pid`` would have named it, plus GDAL sidecars of it."""
    suffix = Path(final).suffix
    t = folder / f".{final}.{pid}-{host}.{os.urandom(4).hex()}.tmp{suffix}"
    paths = [t, *(t.with_name(t.name + s) for s in sidecars)]
    for p in paths:
        p.write_bytes(b"partial")
    return paths


def _class_writer(path, **kw):
    return RasterWriter(path, width=64, height=64, count=1, dtype="uint8", crs=UTM, transform=GRID, nodata=0,
                        kind="categorical", legend=Legend.from_names(["a", "b"]), **kw)


def _write_classes(path, **kw) -> None:
    with _class_writer(path, **kw) as wr:
        wr.write(np.ones((1, 64, 64), np.uint8), Window(0, 0, 64, 64))


# ------------------------------------------------------------------------------------------------------------------
# names
# ------------------------------------------------------------------------------------------------------------------
def test_temp_names_record_the_owner(tmp_path):
    t = temp_path(tmp_path / "classes.tif")
    assert re.fullmatch(rf"\.classes\.tif\.{os.getpid()}-[0-9a-f]{{6}}\.[0-9a-f]{{8}}\.tmp\.tif", t.name), t.name
    assert t.parent == tmp_path
    assert temp_path(tmp_path / "classes.tif", tmp_path / "work").parent == tmp_path / "work"
    # the batch runner's and the dataset downloader's patterns for hsikit temporaries still match
    assert re.match(r"^\..+\.[0-9a-f]{8}\.tmp(\.[A-Za-z0-9]+)?(\.aux\.xml|\.ovr|\.msk)?$", t.name)
    assert t.match(".classes.tif.*.tmp.tif")


# ------------------------------------------------------------------------------------------------------------------
# which leftovers are removed
# ------------------------------------------------------------------------------------------------------------------
def test_dead_owners_leftovers_removed_live_ones_kept(tmp_path, dead_pid, live_pid):
    dead = leftover(tmp_path, "classes.tif", dead_pid, sidecars=(".aux.xml", ".ovr", ".msk", ".ovr.tmp"))
    dead += leftover(tmp_path, "classes.work.tif", dead_pid, sidecars=(".aux.xml",))
    dead += leftover(tmp_path, "classes.tif.aux.xml", dead_pid) + leftover(tmp_path, "classes.qml", dead_pid)
    live = leftover(tmp_path, "classes.tif", live_pid, sidecars=(".aux.xml",))
    live += leftover(tmp_path, "classes.work.tif", live_pid)
    mine = leftover(tmp_path, "classes.tif", os.getpid())
    other_host = leftover(tmp_path, "classes.tif", dead_pid, host="000000" if HOST != "000000" else "ffffff")
    other_output = leftover(tmp_path, "other.tif", dead_pid) + leftover(tmp_path, "classes2.tif", dead_pid)
    kept = live + mine + other_host + other_output
    (tmp_path / "notes.txt").write_text("not a temporary")

    _write_classes(tmp_path / "classes.tif")

    assert not any(p.exists() for p in dead), [p.name for p in dead if p.exists()]
    assert all(p.exists() for p in kept), [p.name for p in kept if not p.exists()]
    assert names(tmp_path) == sorted(["classes.qml", "classes.tif", "classes.tif.aux.xml", "notes.txt",
                                      *(p.name for p in kept)])


def test_reused_pid_counts_as_dead(tmp_path, live_pid):
    # the process now holding the pid started after the file was last written: it is not the owner
    old = leftover(tmp_path, "c.tif", live_pid)
    os.utime(old[0], (time.time() - 3600, time.time() - 3600))
    fresh = leftover(tmp_path, "c.tif", live_pid)
    assert remove_stale_temps(tmp_path / "c.tif") == [old[0]]
    assert fresh[0].exists()


def test_unowned_leftovers_removed_only_when_old(tmp_path):
    # temporaries named before owners were recorded: ".{name}.{hex}.tmp{suffix}"
    old, recent = tmp_path / ".c.tif.0123abcd.tmp.tif", tmp_path / ".c.tif.89abcdef.tmp.tif"
    for p in (old, recent):
        p.write_bytes(b"x")
    os.utime(old, (time.time() - 2 * 86400, time.time() - 2 * 86400))
    assert remove_stale_temps(tmp_path / "c.tif") == [old]
    assert recent.exists()


def test_temp_dir_leftovers_removed(tmp_path, dead_pid, live_pid):
    work = tmp_path / "work"
    work.mkdir()
    dead = leftover(work, "m.tif", dead_pid, sidecars=(".aux.xml",)) + leftover(work, "m.work.tif", dead_pid)
    dead += leftover(tmp_path, "m.tif", dead_pid)  # a run without temp_dir left this beside the output
    live = leftover(work, "m.work.tif", live_pid)
    _write_classes(tmp_path / "m.tif", temp_dir=work)
    assert not any(p.exists() for p in dead)
    assert all(p.exists() for p in live)
    assert names(work) == sorted(p.name for p in live)


def test_atomic_outputs_cleans_before_creating(tmp_path, dead_pid, live_pid):
    dead = leftover(tmp_path, "r.json", dead_pid)
    live = leftover(tmp_path, "r.json", live_pid)
    with atomic_outputs([tmp_path / "r.json"], overwrite=False) as temps:
        assert not dead[0].exists() and live[0].exists()
        temps[tmp_path / "r.json"].write_text("{}")
    assert names(tmp_path) == sorted(["r.json", live[0].name])


# ------------------------------------------------------------------------------------------------------------------
# errors and interrupts still remove this run's temporaries
# ------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_interrupted_run_removes_its_own_temps_and_dead_ones(tmp_path, dead_pid, live_pid, exc):
    live = leftover(tmp_path, "classes.tif", live_pid)
    leftover(tmp_path, "classes.work.tif", dead_pid)
    with pytest.raises(exc):
        with _class_writer(tmp_path / "classes.tif") as wr:
            wr.write(np.ones((1, 64, 64), np.uint8), Window(0, 0, 64, 64))
            raise exc()
    assert names(tmp_path) == [live[0].name]


def test_failed_enter_removes_temps(tmp_path, monkeypatch):
    import hsikit.io.writer as writer

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(writer.RasterWriter, "_describe", fail)
    with pytest.raises(OSError, match="disk full"):
        with _class_writer(tmp_path / "classes.tif"):
            pytest.fail("must not enter the block")
    assert names(tmp_path) == []


# ------------------------------------------------------------------------------------------------------------------
# a real kill
# ------------------------------------------------------------------------------------------------------------------
KILL_SCRIPT = """
import sys, time
import numpy as np
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window
from hsikit.io.legend import Legend
from hsikit.io.writer import RasterWriter

with RasterWriter(sys.argv[1], width=256, height=256, count=1, dtype="uint8", crs=CRS.from_epsg(32633),
                  transform=from_origin(366000, 5810000, 30, 30), nodata=0, kind="categorical",
                  legend=Legend.from_names(["a", "b"])) as wr:
    wr.write(np.ones((1, 256, 256), np.uint8), Window(0, 0, 256, 256))
    print("started", flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_next_run_removes_what_a_killed_run_left(tmp_path, sig):
    out = tmp_path / "classes.tif"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILL_SCRIPT), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        line = proc.stdout.readline().strip()
        assert line == "started", proc.stderr.read()
        left = names(tmp_path)
        assert left and all(n.startswith(f".classes.work.tif.{proc.pid}-") for n in left), left
        proc.send_signal(sig)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert names(tmp_path) == left, "a killed process cannot clean up (Python's default SIGTERM neither)"
    _write_classes(out)
    assert names(tmp_path) == ["classes.qml", "classes.tif", "classes.tif.aux.xml"]
    with rasterio.open(out) as src:
        assert (src.read(1) == 1).all()
