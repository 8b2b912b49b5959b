"""hsikit.progress.Progress, the one progress reporter: plain lines when not on a terminal, bytes for downloads."""

from __future__ import annotations

import hashlib
import io
import re

from hsikit.progress import BYTES, Progress


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_plain_lines_every_tenth_and_a_closing_line():
    s = io.StringIO()
    with Progress(True, 20, "scene.tif", stream=s) as bar:
        for _ in range(20):
            bar.advance(1, pixels=100)
    lines = _lines(s)
    assert len(lines) == 10  # 10 %, 20 %, ..., 90 %, then the closing line
    assert re.fullmatch(r"scene\.tif: 10 % \(2/20 tiles\), [\d.]+ Mpx/s, \d:\d\d:\d\d left", lines[0]), lines
    assert re.fullmatch(r"scene\.tif: done, 20 tiles in [\d.]+ s, [\d.]+ Mpx/s", lines[-1]), lines


def test_disabled_prints_nothing():
    s = io.StringIO()
    with Progress(False, 5, "x", stream=s) as bar:
        for _ in range(5):
            bar.advance()
    assert s.getvalue() == "" and bar.done == 5


def test_bytes_show_sizes_and_a_transfer_speed():
    s = io.StringIO()
    with Progress(True, 4_000_000, "cube.mat", unit=BYTES, stream=s) as bar:
        for _ in range(4):
            bar.advance(1_000_000)
    lines = _lines(s)
    assert re.fullmatch(r"cube\.mat: 25 % \(1\.0 MB of 4\.0 MB\), [\d.]+ [kMG]?B/s, \d:\d\d:\d\d left", lines[0]), lines
    assert re.fullmatch(r"cube\.mat: done, 4\.0 MB in [\d.]+ s, [\d.]+ [kMG]?B/s", lines[-1]), lines


def test_unknown_total_prints_a_line_every_interval():
    s = io.StringIO()
    with Progress(True, None, "stream.bin", unit=BYTES, stream=s, seconds=0.0) as bar:
        bar.advance(1500)
        bar.advance(1500)
    lines = _lines(s)
    assert lines[0].startswith("stream.bin: 1.5 kB, ") and lines[1].startswith("stream.bin: 3.0 kB, "), lines
    assert lines[-1].startswith("stream.bin: done, 3.0 kB in "), lines


def test_live_bar_for_bytes_and_unknown_totals():
    s = io.StringIO()
    for total in (10_000, None):
        with Progress(True, total, "f.mat", unit=BYTES, stream=s, live=True, transient=True) as bar:
            bar.advance(10_000)
    with Progress(True, 3, "scenes", unit="scenes", stream=s, live=True) as bar:
        bar.advance(3, skipped=True)
    assert "3/3" in s.getvalue()


def test_downloads_report_progress_in_a_log(tmp_path, capsys):
    from hsikit.datasets.catalog import RemoteFile
    from hsikit.datasets.download import fetch

    src = tmp_path / "src.mat"
    data = bytes(range(256)) * 20_000  # 5.1 MB: several chunks
    src.write_bytes(data)
    f = RemoteFile("cube.mat", src.as_uri(), f"sha256:{hashlib.sha256(data).hexdigest()}", len(data))
    fetch(src.as_uri(), tmp_path / "cube.mat", f, progress=True)
    err = capsys.readouterr().err  # not a terminal: plain lines
    assert re.search(r"^cube\.mat: \d+ % \([\d.]+ MB of 5\.1 MB\)", err, re.M), err
    assert re.search(r"^cube\.mat: done, 5\.1 MB in ", err, re.M), err
    assert (tmp_path / "cube.mat").read_bytes() == data
    fetch(src.as_uri(), tmp_path / "again.mat", f, progress=False)
    assert capsys.readouterr().err == ""


def test_training_reports_steps_with_the_loss_in_a_log(tmp_path, capsys):
    from fakedata import write_fake_geotiff, write_labels_for

    from hsikit.pipelines.train_classifier import train_classifier
    from hsikit.training.run import RunOptions

    scene = write_fake_geotiff(tmp_path / "scene.tif", bands=6, height=24, width=24)
    labels = write_labels_for(scene, tmp_path / "labels.tif")
    train_classifier(scene, labels, out=tmp_path / "m.safetensors", model="spectral-cnn", epochs=3,
                     run=RunOptions(device="cpu", seed=0))
    err = capsys.readouterr().err  # not a terminal: plain lines from hsikit's reporter, not a redrawn bar
    assert re.search(r"^training: \d+ % \(\d+/\d+ steps, loss [\d.e+-]+(, val OA [\d.]+)?\)", err, re.M), err
    assert re.search(r"^training: done, \d+ steps in [\d.]+ s", err, re.M), err
    assert "\r" not in err and "━" not in err
    train_classifier(scene, labels, out=tmp_path / "q.safetensors", model="spectral-cnn", epochs=1,
                     run=RunOptions(device="cpu", seed=0, progress=False))
    assert "training:" not in capsys.readouterr().err
