"""Atomic outputs: nothing appears under a final name until the output is complete -- on exceptions, when the
writing process is killed, and for PNG quicklooks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from hsikit.errors import OutputError
from hsikit.io import atomic
from hsikit.io.atomic import atomic_outputs, temp_path
from hsikit.io.legend import Legend, hex_to_rgb
from hsikit.io.quicklook import save_class_quicklook, save_rgb_quicklook
from hsikit.io.writer import RasterWriter

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"
UTM = CRS.from_epsg(32633)
GRID = from_origin(366000.0, 5810000.0, 30.0, 30.0)


def names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def _class_writer(path, **kw):
    return RasterWriter(path, width=64, height=64, count=1, dtype="uint8", crs=UTM, transform=GRID, nodata=0,
                        kind="categorical", legend=Legend.from_names(["a", "b"]), **kw)


# ------------------------------------------------------------------------------------------------------------------
# exceptions inside the writer
# ------------------------------------------------------------------------------------------------------------------
def test_exception_in_class_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="model crashed"):
        with _class_writer(tmp_path / "c.tif") as wr:
            wr.write(np.ones((1, 32, 64), np.uint8), Window(0, 0, 64, 32))
            assert names(tmp_path), "work files exist while writing"
            assert not (tmp_path / "c.tif").exists()
            raise RuntimeError("model crashed")
    assert names(tmp_path) == [], "no final file, no sidecars, no temp/work files"


def test_exception_in_continuous_writer_leaves_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with RasterWriter(tmp_path / "p.tif", width=40, height=30, count=3, dtype="float32", crs=UTM, transform=GRID,
                          nodata=float("nan"), kind="continuous") as wr:
            wr.write(np.zeros((3, 10, 40), np.float32), Window(0, 0, 40, 10))
            raise KeyboardInterrupt
    assert names(tmp_path) == []


def test_exception_during_overwrite_keeps_old_output(tmp_path):
    p = tmp_path / "c.tif"
    with _class_writer(p) as wr:
        wr.write(np.full((1, 64, 64), 2, np.uint8), Window(0, 0, 64, 64))
    before = {n: (tmp_path / n).read_bytes() for n in names(tmp_path)}
    assert sorted(before) == ["c.qml", "c.tif", "c.tif.aux.xml"]
    with pytest.raises(ValueError, match="boom"):
        with _class_writer(p, overwrite=True) as wr:
            wr.write(np.ones((1, 64, 64), np.uint8), Window(0, 0, 64, 64))
            raise ValueError("boom")
    assert {n: (tmp_path / n).read_bytes() for n in names(tmp_path)} == before
    with rasterio.open(p) as src:
        assert (src.read(1) == 2).all()


# ------------------------------------------------------------------------------------------------------------------
# killed mid-write
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
    for i, r in enumerate(range(0, 256, 16)):
        wr.write(np.ones((1, 16, 256), np.uint8), Window(0, r, 256, 16))
        if i == 0:
            print("started", flush=True)
        time.sleep(0.5)
print("finished", flush=True)
"""


def test_sigkill_mid_write_leaves_no_final_file(tmp_path):
    out = tmp_path / "classes.tif"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(KILL_SCRIPT), str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        line = proc.stdout.readline().strip()
        if line != "started":
            proc.kill()
            pytest.fail(f"writer subprocess did not start: {line!r} {proc.stderr.read()}")
        assert names(tmp_path), "the writer has temporary files open"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    # temp files may remain after SIGKILL (nothing can clean up), but nothing under the final names
    assert not out.exists()
    assert not (tmp_path / "classes.qml").exists()
    assert not (tmp_path / "classes.tif.aux.xml").exists()
    assert all(n.startswith(".") for n in names(tmp_path)), names(tmp_path)


# ------------------------------------------------------------------------------------------------------------------
# atomic_outputs
# ------------------------------------------------------------------------------------------------------------------
def test_temp_path_is_hidden_sibling():
    final = Path("/some/dir/map.tif")
    t1, t2 = temp_path(final), temp_path(final)
    assert t1.parent == final.parent and t1.name.startswith(".map.tif.") and t1.suffix == ".tif"
    assert t1 != t2


def test_atomic_outputs_renames_all_on_success(tmp_path, monkeypatch):
    finals = [tmp_path / "a.tif", tmp_path / "a.tif.aux.xml", tmp_path / "a.qml"]
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda s, d: (renamed.append(Path(d).name), real_replace(s, d)))
    with atomic_outputs(finals, overwrite=False) as temps:
        assert set(temps) == set(finals)
        for f, t in temps.items():
            assert t.parent == f.parent and t.name.startswith(".") and t != f
            t.write_text(f"content of {f.name}")
        assert not any(f.exists() for f in finals), "nothing under the final names before the block ends"
    assert [f.read_text() for f in finals] == [f"content of {f.name}" for f in finals]
    assert names(tmp_path) == ["a.qml", "a.tif", "a.tif.aux.xml"], "no temp files left"
    assert renamed[-1] == "a.tif", "the main file is renamed last"
    assert sorted(renamed) == sorted(f.name for f in finals)


def test_atomic_outputs_error_removes_temps(tmp_path):
    finals = [tmp_path / "b.tif", tmp_path / "b.qml"]
    with pytest.raises(RuntimeError):
        with atomic_outputs(finals, overwrite=False) as temps:
            for t in temps.values():
                t.write_text("partial")
                t.with_name(t.name + ".aux.xml").write_text("gdal sidecar")
            raise RuntimeError("fail")
    assert names(tmp_path) == []


def test_atomic_outputs_refuses_existing(tmp_path):
    (tmp_path / "c.tif").write_text("old")
    with pytest.raises(OutputError, match="exists"):
        with atomic_outputs([tmp_path / "c.tif"], overwrite=False):
            pytest.fail("must not enter the block")
    assert (tmp_path / "c.tif").read_text() == "old"
    with atomic_outputs([tmp_path / "c.tif"], overwrite=True) as temps:
        temps[tmp_path / "c.tif"].write_text("new")
        assert (tmp_path / "c.tif").read_text() == "old"
    assert (tmp_path / "c.tif").read_text() == "new"
    assert names(tmp_path) == ["c.tif"]


# ------------------------------------------------------------------------------------------------------------------
# quicklooks
# ------------------------------------------------------------------------------------------------------------------
def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGBA"))


def test_class_quicklook_png(tmp_path):
    cm = np.zeros((60, 80), np.uint8)
    cm[10:50, 10:70] = 1
    cm[20:40, 30:50] = 2
    legend = Legend.from_names(["field", "house"], ["#ff0000", "#0000ff"])
    p = save_class_quicklook(cm, legend, tmp_path / "q.png")
    assert p == tmp_path / "q.png"
    assert p.read_bytes()[:8] == PNG
    img = _read_png(p)
    assert img.shape[0] > 10 and img.shape[1] > 10
    rgb = img[..., :3].reshape(-1, 3)
    for color in legend.colors:
        assert (rgb == hex_to_rgb(color)).all(axis=1).sum() > 50, f"class colour {color} drawn"
    assert len(np.unique(rgb, axis=0)) > 2, "not a blank image"
    assert names(tmp_path) == ["q.png"], "written atomically, no temp left"


def test_rgb_quicklook_png(tmp_path):
    rng = np.random.default_rng(0)
    cube = rng.random((5, 40, 50)).astype(np.float32)
    cube[:, 0, 0] = np.nan
    valid = np.ones((40, 50), bool)
    valid[30:, 40:] = False
    q = save_rgb_quicklook(cube, [3, 2, 1], tmp_path / "rgb.png", valid=valid)
    assert q.read_bytes()[:8] == PNG
    img = _read_png(q)
    assert img.shape[0] >= 40 and img.shape[1] >= 50
    assert img[..., :3].std() > 10, "a stretched random cube is not uniform"
    assert names(tmp_path) == ["rgb.png"]


def test_quicklook_decimates_large_maps(tmp_path):
    # large enough that neither rendering is zoomed up (small maps are drawn at least 400 px across)
    cm = (np.arange(1200 * 1800).reshape(1200, 1800) // 1800 % 3).astype(np.uint8)
    legend = Legend.from_names(["a", "b", "c"])
    small = _read_png(save_class_quicklook(cm, legend, tmp_path / "small.png", max_size=600))
    full = _read_png(save_class_quicklook(cm, legend, tmp_path / "full.png", max_size=2048))
    assert small.shape[0] < full.shape[0] / 2, (small.shape, full.shape)
    assert small.shape[1] < full.shape[1]


def test_output_group_renames_all_outputs_together_or_none(tmp_path):
    from hsikit.io.atomic import output_group

    a, b = tmp_path / "a.tif", tmp_path / "b.png"
    with pytest.raises(RuntimeError):
        with output_group():
            with atomic_outputs([a], overwrite=False) as t:
                t[a].write_bytes(b"finished first")
            assert names(tmp_path) != [] and not a.exists()  # finished, but held back
            raise RuntimeError("the second output failed")
    assert names(tmp_path) == []
    with output_group() as group:
        with atomic_outputs([a], overwrite=False) as t:
            t[a].write_bytes(b"A")
        assert group.staged(a).read_bytes() == b"A" and not a.exists()
        with atomic_outputs([b], overwrite=False) as t:
            t[b].write_bytes(b"B")
    assert names(tmp_path) == ["a.tif", "b.png"] and a.read_bytes() == b"A"


def test_classify_failing_on_its_last_output_leaves_none_of_the_others(tmp_path, monkeypatch, capsys):
    """The class map is finalised after the probabilities: its failure must take them back too."""
    from clirun import cli
    from fakedata import write_fake_geotiff, write_labels_for
    from hsikit.cli.main import run

    scene = write_fake_geotiff(tmp_path / "s.tif", bands=6, height=30, width=30)
    labels = write_labels_for(scene, tmp_path / "l.tif")
    model = tmp_path / "m.safetensors"
    assert run(["-q", "train", "classifier", str(scene), "--labels", str(labels), "-o", str(model), "--model",
                "random-forest"]) == 0
    out = tmp_path / "out"
    out.mkdir()

    def broken(self, root):
        raise OSError("disk full")

    monkeypatch.setattr(RasterWriter, "_add_categories", broken)  # only the class map has categories
    code, _, err = cli(capsys, "classify", scene, "-m", model, "-o", out / "c.tif", "--probabilities",
                       "--confidence", "--quicklook")
    assert code != 0 and "disk full" in err
    assert names(out) == []
