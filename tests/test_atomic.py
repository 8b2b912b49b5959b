"""Atomic outputs: nothing under the final name until complete, on errors and when killed mid-write."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from hsikit.io.atomic import atomic_outputs
from hsikit.io.legend import Legend
from hsikit.io.quicklook import save_class_quicklook, save_rgb_quicklook
from hsikit.io.writer import RasterWriter

PNG = b"\x89PNG\r\n\x1a\n"


def test_exception_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with RasterWriter(tmp_path / "c.tif", width=64, height=64, count=1, dtype="uint8", crs=CRS.from_epsg(32633),
                          transform=from_origin(0, 0, 1, 1), nodata=0, kind="categorical",
                          legend=Legend.from_names(["a"])) as wr:
            wr.write(np.ones((1, 32, 64), np.uint8), Window(0, 0, 64, 32))
            raise RuntimeError("model crashed")
    assert list(tmp_path.iterdir()) == []


def test_killed_mid_write_leaves_no_final_file(tmp_path):
    out = tmp_path / "classes.tif"
    script = textwrap.dedent(f"""
        import time, numpy as np
        from rasterio.crs import CRS
        from rasterio.transform import from_origin
        from rasterio.windows import Window
        from hsikit.io.writer import RasterWriter
        from hsikit.io.legend import Legend
        with RasterWriter({str(out)!r}, width=256, height=256, count=1, dtype="uint8", crs=CRS.from_epsg(32633),
                          transform=from_origin(0, 0, 1, 1), nodata=0, kind="categorical",
                          legend=Legend.from_names(["a", "b"])) as wr:
            for r in range(0, 256, 16):
                wr.write(np.ones((1, 16, 256), np.uint8), Window(0, r, 256, 16))
                print("started", flush=True)
                time.sleep(0.5)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "started"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists() and not out.with_suffix(".qml").exists()
    assert not (tmp_path / "classes.tif.aux.xml").exists()
    assert all(p.name.startswith(".") for p in tmp_path.iterdir()), "only hidden temporary files may remain"


def test_atomic_outputs_rename_all(tmp_path):
    finals = [tmp_path / "a.tif", tmp_path / "a.qml"]
    with atomic_outputs(finals, overwrite=False) as temps:
        for f, t in temps.items():
            assert t.parent == f.parent and t.name.startswith(".")
            t.write_text(f.name)
        assert not any(f.exists() for f in finals)
    assert [f.read_text() for f in finals] == ["a.tif", "a.qml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.qml", "a.tif"]


def test_quicklooks(tmp_path):
    cm = np.zeros((60, 80), np.uint8)
    cm[10:50, 10:70] = 1
    cm[20:40, 30:50] = 2
    p = save_class_quicklook(cm, Legend.from_names(["field", "house"]), tmp_path / "q.png")
    assert p.read_bytes()[:8] == PNG and p.stat().st_size > 500
    cube = np.random.default_rng(0).random((5, 40, 50)).astype(np.float32)
    cube[:, 0, 0] = np.nan
    q = save_rgb_quicklook(cube, [3, 2, 1], tmp_path / "rgb.png")
    assert q.read_bytes()[:8] == PNG
    assert sorted(x.name for x in tmp_path.iterdir()) == ["q.png", "rgb.png"]
