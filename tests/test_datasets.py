"""Benchmark dataset catalogue, offline lookup and verified download, against a local HTTP server of fake .mat files."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import json
import os
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from typer.testing import CliRunner

from hsikit.cli.datasets import app
from hsikit.datasets import (DATASETS, DownloadError, RemoteFile, catalog, download, get, load, locate,
                             resolve_data_dir, status)
from hsikit.errors import InputError, OptionError
from hsikit.io.matcubes import CLASS_NAMES

ROWS, COLS, BANDS = 6, 5, 4


def write_fake(directory: Path, key: str, gt_variable: str | None = None) -> dict[str, Path]:
    """A tiny cube and ground truth with the catalogue's file and variable names (classes 1..K all present)."""
    ds = DATASETS[key]
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    cube = rng.integers(0, 4000, size=(ROWS, COLS, BANDS)).astype(np.uint16)
    gt = (np.arange(ROWS * COLS) % (ds.num_classes + 1)).reshape(ROWS, COLS).astype(np.uint8)
    cube_path, gt_path = directory / ds.cube_file, directory / ds.gt_file
    scipy.io.savemat(cube_path, {ds.cube_variable or "cube": cube})
    scipy.io.savemat(gt_path, {gt_variable or ds.gt_variable or "gt": gt})
    return {ds.cube_file: cube_path, ds.gt_file: gt_path}


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        _Handler.requests.append(self.path)
        if self.path.startswith("/truncated/"):
            body = b"MATLAB 5.0 MAT-file, truncated"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body)
            return
        super().do_GET()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(base URL, served dir) of a thread-run HTTP server on 127.0.0.1 holding fake Indian Pines and Houston files."""
    root = tmp_path_factory.mktemp("mirror")
    write_fake(root, "indian_pines")
    write_fake(root, "houston2013")
    handler = lambda *a, **kw: _Handler(*a, directory=str(root), **kw)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No test sees the user's data dir or mirror; the default cache points into tmp."""
    monkeypatch.delenv("HSIKIT_DATA", raising=False)
    monkeypatch.delenv("HSIKIT_DATASETS_MIRROR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    _Handler.requests.clear()


def with_checksums(monkeypatch, key: str, served: Path, *, wrong: bool = False) -> None:
    """Give ``key``'s catalogue entry checksums of the served fake files (md5 for the cube, sha256 for the gt)."""
    ds = DATASETS[key]
    files = []
    for i, f in enumerate(ds.files):
        data = (served / f.filename).read_bytes()
        algo = "md5" if i == 0 else "sha256"
        digest = hashlib.new(algo, data).hexdigest()
        if wrong:
            digest = ("0" if digest[0] != "0" else "1") + digest[1:]
        files.append(dataclasses.replace(f, checksum=f"{algo}:{digest}", size=len(data)))
    monkeypatch.setitem(catalog.DATASETS, key, dataclasses.replace(ds, files=tuple(files)))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


# -- catalogue -----------------------------------------------------------------------------------------------------
def test_catalogue_matches_benchmark_class_names_and_uses_https():
    assert set(DATASETS) == set(CLASS_NAMES)
    for key, ds in DATASETS.items():
        assert ds.key == key
        assert list(ds.class_names) == CLASS_NAMES[key]
        assert 1 <= ds.num_classes == len(ds.class_colors)
        assert all(re.fullmatch(r"#[0-9a-f]{6}", c) for c in ds.class_colors)
        assert len(set(ds.class_colors)) == ds.num_classes
        assert ds.legend().names == ds.class_names and ds.legend().count == ds.num_classes
        assert ds.landing_page.startswith("https://")
        assert ds.rows > 0 and ds.cols > 0 and ds.bands > 1
        assert {ds.cube_file, ds.gt_file} == {f.filename for f in ds.files}
        for f in ds.files:
            assert f.url is None or f.url.startswith("https://"), f.url
            assert f.url is None or f.url.endswith("/" + f.filename)
            assert (f.checksum is None) == (f.checksum_source is None)
        if any(f.url is None for f in ds.files):
            assert ds.manual and ds.landing_page in ds.manual
    assert DATASETS["houston2013"].manual is not None
    assert all(f.verified for k in ("indian_pines", "pavia_university", "salinas") for f in DATASETS[k].files)


def test_get_aliases_and_unknown_key():
    assert get("IP").key == "indian_pines"
    assert get("Pavia-University").key == "pavia_university"
    with pytest.raises(OptionError, match="unknown dataset"):
        get("mnist")
    with pytest.raises(ValueError):
        RemoteFile("x.mat", None, checksum="md5:123")


def test_data_dir_resolution(monkeypatch, tmp_path):
    assert resolve_data_dir() == tmp_path / "xdg-cache" / "hsikit" / "datasets"
    monkeypatch.setenv("HSIKIT_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "explicit") == tmp_path / "explicit"


# -- download ------------------------------------------------------------------------------------------------------
def test_download_via_mirror_verifies_checksums(monkeypatch, server, tmp_path):
    base, served = server
    with_checksums(monkeypatch, "indian_pines", served)
    lines: list[str] = []
    res = download("indian_pines", tmp_path, mirror=base, echo=lines.append)
    target = tmp_path / "indian_pines"
    assert res.directory == target and res.complete and res.manual is None
    assert [f.status for f in res.files] == ["downloaded", "downloaded"]
    assert all(f.verified for f in res.files)
    for f in res.files:
        assert f.path.read_bytes() == (served / f.filename).read_bytes()
        assert f.sha256 == hashlib.sha256(f.path.read_bytes()).hexdigest()
    assert leftovers(target) == []
    assert any("md5 verified" in line for line in lines) and any("sha256 verified" in line for line in lines)
    assert status("indian_pines", tmp_path) == "present"


def test_mirror_from_environment_and_data_dir_from_environment(monkeypatch, server, tmp_path):
    base, served = server
    with_checksums(monkeypatch, "indian_pines", served)
    monkeypatch.setenv("HSIKIT_DATASETS_MIRROR", base + "/")
    monkeypatch.setenv("HSIKIT_DATA", str(tmp_path / "data"))
    res = download("indian_pines")
    assert all(f.status == "downloaded" for f in res.files)
    assert (tmp_path / "data" / "indian_pines" / "Indian_pines_gt.mat").is_file()
    assert all(p.startswith("/Indian_pines") for p in _Handler.requests)


def test_checksum_mismatch_raises_and_leaves_no_file(monkeypatch, server, tmp_path):
    base, served = server
    with_checksums(monkeypatch, "indian_pines", served, wrong=True)
    with pytest.raises(DownloadError, match="checksum mismatch for Indian_pines_corrected.mat") as exc:
        download("indian_pines", tmp_path, mirror=base)
    assert "\n" not in str(exc.value)
    target = tmp_path / "indian_pines"
    assert list(target.iterdir()) == []


def test_http_404_is_one_clear_line(server, tmp_path):
    base, _ = server
    with pytest.raises(DownloadError, match=r"HTTP 404 .*/missing/Indian_pines_corrected\.mat") as exc:
        download("indian_pines", tmp_path, mirror=base + "/missing")
    assert "\n" not in str(exc.value)
    assert list((tmp_path / "indian_pines").iterdir()) == []


def test_unreachable_server_is_a_download_error(tmp_path):
    with pytest.raises(DownloadError, match="cannot download"):
        download("indian_pines", tmp_path, mirror="http://127.0.0.1:9")


def test_truncated_transfer_never_reaches_the_final_name(server, tmp_path):
    base, _ = server
    with pytest.raises(DownloadError, match="incomplete download"):
        download("indian_pines", tmp_path, mirror=base + "/truncated")
    assert list((tmp_path / "indian_pines").iterdir()) == []


def test_present_and_verified_is_skipped_force_downloads_again(monkeypatch, server, tmp_path):
    base, served = server
    with_checksums(monkeypatch, "indian_pines", served)
    download("indian_pines", tmp_path, mirror=base)
    assert len(_Handler.requests) == 2
    res = download("indian_pines", tmp_path, mirror=base)
    assert [(f.status, f.verified) for f in res.files] == [("present", True), ("present", True)]
    assert len(_Handler.requests) == 2
    res = download("indian_pines", tmp_path, mirror=base, force=True)
    assert [f.status for f in res.files] == ["replaced", "replaced"]
    assert len(_Handler.requests) == 4


def test_corrupt_copy_is_replaced(monkeypatch, server, tmp_path):
    base, served = server
    with_checksums(monkeypatch, "indian_pines", served)
    target = tmp_path / "indian_pines"
    target.mkdir()
    (target / "Indian_pines_gt.mat").write_bytes(b"not the file")
    res = download("indian_pines", tmp_path, mirror=base)
    assert [f.status for f in res.files] == ["downloaded", "replaced"]
    assert (target / "Indian_pines_gt.mat").read_bytes() == (served / "Indian_pines_gt.mat").read_bytes()


def test_unverified_files_are_kept_when_present(server, tmp_path):
    base, served = server
    res = download("houston2013", tmp_path, mirror=base)  # no published checksums: stored unverified
    assert [(f.status, f.verified) for f in res.files] == [("downloaded", False), ("downloaded", False)]
    assert all(f.sha256 for f in res.files)
    res = download("houston2013", tmp_path, mirror=base)
    assert [f.status for f in res.files] == ["present", "present"]


def test_manual_dataset_without_mirror_explains_how_to_get_it(tmp_path):
    res = download("houston2013", tmp_path)
    assert not res.complete and [f.status for f in res.files] == ["manual", "manual"]
    assert "https://hyperspectral.ee.uh.edu/?page_id=459" in res.manual
    assert str(tmp_path / "houston2013") in res.manual
    # copies placed by hand are kept, even with --force, and then load offline
    write_fake(tmp_path / "houston2013", "houston2013")
    res = download("houston2013", tmp_path, force=True)
    assert res.complete and res.manual is None and [f.status for f in res.files] == ["present", "present"]
    scene, labels = load("houston2013", tmp_path)
    assert scene.class_names == CLASS_NAMES["houston2013"] and labels.max() == 15


def test_stale_temp_files_are_cleaned(monkeypatch, server, tmp_path):
    base, served = server
    with_checksums(monkeypatch, "indian_pines", served)
    target = tmp_path / "indian_pines"
    target.mkdir()
    stale = target / ".Indian_pines_gt.mat.deadbeef.tmp.mat"
    stale.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    download("indian_pines", tmp_path, mirror=base)
    assert leftovers(target) == []


# -- offline -------------------------------------------------------------------------------------------------------
def test_locate_and_load_offline(tmp_path):
    write_fake(tmp_path / "indian_pines", "indian_pines")
    paths = locate("indian_pines", tmp_path)
    assert set(paths) == {"Indian_pines_corrected.mat", "Indian_pines_gt.mat"}
    scene, labels = load("indian_pines", tmp_path)
    assert scene.shape == (BANDS, ROWS, COLS)
    assert scene.class_names == CLASS_NAMES["indian_pines"]
    assert scene.tags["dataset"] == "indian_pines"
    assert labels.dtype == np.int32 and labels.shape == (ROWS, COLS)
    assert labels.max() == 16 and labels.min() == 0
    lm = load("indian_pines", tmp_path).label_map()
    assert lm.class_names == CLASS_NAMES["indian_pines"]
    assert lm.class_colors == list(DATASETS["indian_pines"].class_colors)
    assert lm.num_classes == 16


def test_load_finds_flat_layout_and_renamed_variables(tmp_path):
    # files straight in the data dir, ground truth re-saved under another variable name (as some copies are)
    write_fake(tmp_path, "pavia_university", gt_variable="y")
    scene, labels = load("pavia_university", tmp_path)
    assert scene.class_names == CLASS_NAMES["pavia_university"]
    assert labels.max() == 9


def test_locate_missing_names_files_and_command(tmp_path):
    with pytest.raises(InputError, match=r"Salinas_corrected\.mat, Salinas_gt\.mat not found .*hsikit datasets "
                                         r"download salinas"):
        locate("salinas", tmp_path)
    assert status("salinas", tmp_path) == "missing"
    write_fake(tmp_path / "salinas", "salinas")
    (tmp_path / "salinas" / "Salinas_gt.mat").unlink()
    assert status("salinas", tmp_path) == "partial"


def test_load_rejects_mismatched_ground_truth(tmp_path):
    write_fake(tmp_path / "ksc", "ksc")
    scipy.io.savemat(tmp_path / "ksc" / "KSC_gt.mat", {"KSC_gt": np.zeros((3, 3), np.uint8)})
    with pytest.raises(InputError, match="KSC_gt.mat is 3x3 but KSC.mat is 6x5"):
        load("ksc", tmp_path)


# -- CLI -----------------------------------------------------------------------------------------------------------
def test_cli_list_download_info(monkeypatch, server, tmp_path):
    base, served = server
    with_checksums(monkeypatch, "indian_pines", served)
    runner = CliRunner()
    data = str(tmp_path / "data")

    res = runner.invoke(app, ["list", "--data-dir", data, "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["key"]: r for r in json.loads(res.output)}
    assert set(rows) == set(DATASETS) and rows["indian_pines"]["status"] == "missing"

    res = runner.invoke(app, ["download", "indian_pines", "--data-dir", data, "--mirror", base])
    assert res.exit_code == 0, res.output
    assert "Indian_pines_gt.mat: downloaded, sha256 verified" in res.output

    res = runner.invoke(app, ["download", "IP", "--data-dir", data, "--mirror", base])
    assert res.exit_code == 0 and "present, md5 verified" in res.output

    res = runner.invoke(app, ["list", "--data-dir", data])
    assert res.exit_code == 0, res.output
    table = {line.split()[1]: line for line in res.output.splitlines() if line.startswith("│ ")}
    assert "present" in table["indian_pines"] and "missing" in table["salinas"]
    assert "missing (manual)" in table["houston2013"]

    res = runner.invoke(app, ["info", "indian_pines", "--data-dir", data])
    assert res.exit_code == 0, res.output
    assert "1 #ff0000  Alfalfa" in res.output
    assert "https://www.ehu.eus/ccwintco/uploads/6/67/Indian_pines_corrected.mat" in res.output
    assert str(Path(data) / "indian_pines" / "Indian_pines_gt.mat") in res.output


def test_cli_info_manual_download_and_errors(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["info", "salinas", "--json"])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["files"][0]["checksum"] == "md5:485d8802f4a6b4ebc0767d48dd0da06b"
    assert info["files"][0]["checksum_source"] and info["files"][0]["local"] is None
    assert len(info["classes"]) == 16 and info["cube"]["variable"] == "salinas_corrected"

    res = runner.invoke(app, ["info", "ksc"])
    assert res.exit_code == 0 and "none (unverified)" in res.output

    res = runner.invoke(app, ["download", "houston2013", "--data-dir", str(tmp_path)])
    assert res.exit_code == 1
    assert "Houston.mat: no direct download URL" in res.output and "page_id=459" in res.output

    res = runner.invoke(app, ["download", "nope", "--data-dir", str(tmp_path)])
    assert isinstance(res.exception, OptionError)
