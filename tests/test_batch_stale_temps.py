"""A batch removes the temporaries that killed runs left in OUTDIR, and only those: a live process's (e.g. a
single-scene command writing into OUTDIR now) stay."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hsikit.io.atomic import temp_path

pytest.importorskip("distributed")


def _dead_temps(out: Path, final: str) -> list[Path]:
    """A temporary of ``final`` (and a GDAL sidecar of it) named by a process that has ended."""
    code = ("from pathlib import Path; from hsikit.io.atomic import temp_path; "
            f"print(temp_path(Path({str(out)!r}) / {final!r}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    name = Path(done.stdout.strip())
    paths = [name, name.with_name(name.name + ".aux.xml")]
    for p in paths:
        p.write_bytes(b"left by a killed run")
    return paths


def test_a_batch_removes_only_stale_temporaries_in_outdir(tmp_path):
    from hsikit.pipelines.batch import run_batch

    out = tmp_path / "out"
    out.mkdir()
    stale = _dead_temps(out, "a.tif") + _dead_temps(out, "other_run.tif")
    live = temp_path(out / "b.tif")  # this process's: a write in progress
    live.write_bytes(b"being written")
    keep = out / "notes.txt"
    keep.write_text("not a temporary")
    bad = tmp_path / "a.tif"
    bad.write_bytes(b"II*\x00" + bytes(range(256)) * 8)  # fails on the client: no cluster starts
    res = run_batch("preprocess", [bad], outdir=out, progress=False)
    assert res.failed == 1
    assert [p for p in stale if p.exists()] == []
    assert live.exists() and keep.exists()
    assert not (out / ".hsikit-batch" / "tmp").exists()
