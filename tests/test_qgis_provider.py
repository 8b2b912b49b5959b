"""The QGIS Processing provider (qgis/hsikit_qgis): the plugin zip and the runner with hsikit's Python, then the
plugin in the real QGIS: Debian's qgis_process and python3-qgis (installed by .ci/run; these tests skip with the
reason when they are absent). qgis_process runs headless with a throw-away profile."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import typing
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "qgis"))

import build_plugin  # noqa: E402
from hsikit_qgis import runner  # noqa: E402

HSIKIT = Path(sys.executable).parent / "hsikit"
QGIS_PROCESS = Path("/usr/bin/qgis_process.bin")  # /usr/bin/qgis_process adds --noversioncheck, which 3.22 rejects
SYSTEM_PYTHON = Path("/usr/bin/python3")
SAMPLE_SCENE = ROOT / "sample_data" / "sample_scene.tif"
SCENE = SAMPLE_SCENE  # a copy while the tests run: QGIS writes .aux.xml statistics beside the rasters it opens
MODEL = ROOT / "sample_data" / "sample_model.safetensors"
CHECK = Path(__file__).resolve().parent / "qgis_check.py"
ALGORITHMS = {"hsikit:classify": ("classify", False), "hsikit:denoise": ("denoise", False),
              "hsikit:superresolve": ("super-resolve", False), "hsikit:restore": ("restore", False),
              "hsikit:preprocess": ("preprocess", False), "hsikit:sceneinfo": None,
              "hsikit:stress": ("stress", False), "hsikit:batchclassify": ("classify", True)}

needs_qgis = pytest.mark.skipif(not QGIS_PROCESS.exists() or not SYSTEM_PYTHON.exists(),
                                reason="QGIS not installed (/usr/bin/qgis_process.bin: Debian's qgis and python3-qgis, "
                                       "which .ci/run installs as root)")


@pytest.fixture(scope="module", autouse=True)
def _scene_copy(tmp_path_factory):
    """The sample scene copied out of sample_data/, which the tests must leave as it is."""
    global SCENE
    SCENE = tmp_path_factory.mktemp("scene") / SAMPLE_SCENE.name
    shutil.copy(SAMPLE_SCENE, SCENE)
    yield
    SCENE = SAMPLE_SCENE


def class_names() -> list[str]:
    from hsikit.checkpoint import read_checkpoint_meta

    return list(read_checkpoint_meta(MODEL).class_names)


# -- the runner, with any Python --------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, kind, label, percent", [
    ("sample_scene.tif: 40 % (8/20 tiles), 1.2 Mpx/s, 0:00:03 left", "progress", "sample_scene.tif", 40.0),
    ("training: 5 % (1/20 epochs), 0:01:00 left", "progress", "training", 5.0),
    ("batch classify: s1: 100 % (4/4 tiles)", "progress", "batch classify: s1", 100.0),
    ("C:\\data\\scene.tif: 10 % (1/10 tiles)", "progress", "C:\\data\\scene.tif", 10.0),
    ("batch: done, 2 scenes in 17.3 s, 0.00 Mpx/s", "progress", "batch", 100.0),
    ("wrote /a/b.tif (+ b.qml) in 5.2 s, 0.01 Mpx/s", "info", "", None),
    ("pixels per class: nodata 2492, water 2480", "info", "", None),
])
def test_parse_line_progress(text, kind, label, percent):
    line = runner.parse_line("stderr", text + "\n")
    assert (line.kind, line.label, line.percent, line.text) == (kind, label, percent, text)


def test_parse_line_error_and_warning():
    assert runner.parse_line("stderr", "error: --model: file not found: m.safetensors\n").text == \
        "--model: file not found: m.safetensors"
    assert runner.parse_line("stderr", "error: x\n").kind == "error"
    assert runner.parse_line("stderr", "warning: 3 bands are NaN\n").kind == "warning"


def test_find_executable(tmp_path, monkeypatch):
    exe = tmp_path / "bin" / "hsikit"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.delenv(runner.EXECUTABLE_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(runner.HsikitNotFound, match="not found on PATH.*HSIKIT_EXECUTABLE"):
        runner.find_executable("")
    monkeypatch.setenv("PATH", str(exe.parent))
    assert runner.find_executable("") == str(exe)
    other = tmp_path / "other-hsikit"
    shutil.copy(exe, other)
    monkeypatch.setenv(runner.EXECUTABLE_ENV, str(other))
    assert runner.find_executable("") == str(other)  # the variable before PATH
    assert runner.find_executable(str(exe)) == str(exe)  # the setting before both
    with pytest.raises(runner.HsikitNotFound, match="nope.*provider setting"):
        runner.find_executable(str(tmp_path / "nope"))


def test_child_environment_drops_qgis_python():
    env = runner.child_environment({"PYTHONPATH": "/usr/share/qgis/python", "PYTHONHOME": "/usr", "HOME": "/h"})
    assert env == {"HOME": "/h", "PYTHONUNBUFFERED": "1"}


def test_run_turns_hsikit_error_into_one_line(tmp_path):
    out = tmp_path / "c.tif"
    seen = []
    result = runner.run(str(HSIKIT), ["classify", str(SCENE), "-o", str(out), "-m", str(tmp_path / "no.safetensors")],
                        on_line=seen.append)
    assert result.returncode == 2 and not result.cancelled
    assert result.error.startswith("--model") and str(tmp_path / "no.safetensors") in result.error
    assert result.message("classify") == result.error
    assert [ln.text for ln in seen if ln.kind == "error"] == [result.error]
    assert not any(ln.kind == "progress" for ln in seen)
    assert list(tmp_path.iterdir()) == []


def test_run_cancel_interrupts_and_leaves_nothing(tmp_path):
    """Cancel at the first progress line: hsikit gets SIGINT, exits 130 and removes its unfinished files."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    seen = []
    result = runner.run(str(HSIKIT), ["classify", str(SCENE), "-o", str(out_dir / "c.tif"), "-m", str(MODEL),
                                      "--tile", "152"], on_line=seen.append,
                        is_cancelled=lambda: any(ln.kind == "progress" for ln in seen))
    assert result.cancelled and result.interrupted and result.returncode == 130
    first = next(ln for ln in seen if ln.kind == "progress")
    assert first.label == "sample_scene.tif" and 0 < first.percent < 100
    assert list(out_dir.iterdir()) == []


# -- the plugin zip ------------------------------------------------------------------------------------------------
def test_build_plugin_zip(tmp_path):
    from hsikit import __version__
    from hsikit.pipelines.options import SPECS

    zip_path = build_plugin.build(tmp_path / "hsikit_qgis.zip")
    with zipfile.ZipFile(zip_path) as zf:
        names = set(zf.namelist())
        metadata = zf.read("hsikit_qgis/metadata.txt").decode()
        options = json.loads(zf.read("hsikit_qgis/options.json"))
    assert names == {f"hsikit_qgis/{n}" for n in ("__init__.py", "provider.py", "algorithms.py", "runner.py",
                                                  "metadata.txt", "icon.svg", "options.json")}
    assert f"version={__version__}\n" in metadata and "hasProcessingProvider=yes\n" in metadata
    assert options["hsikit_version"] == __version__
    assert set(options["commands"]) == set(SPECS)
    for name, spec in SPECS.items():
        assert [o["name"] for o in options["commands"][name]["single"]] == [o.name for o in spec.single() if o.flags]
    batch_tile = next(o for o in options["commands"]["classify"]["batch"] if o["name"] == "tile")
    assert batch_tile["default"] == SPECS["classify"].batch_defaults()["tile"]
    # the same sources give the same bytes, and a rebuild replaces the zip
    again = build_plugin.build(tmp_path / "again.zip")
    assert again.read_bytes() == zip_path.read_bytes()
    assert build_plugin.build(zip_path) == zip_path and zip_path.read_bytes() == again.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_make_target_builds_the_zip():
    dry = subprocess.run(["make", "-n", "qgis-plugin"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "qgis/build_plugin.py --out dist/hsikit_qgis.zip" in dry


# -- the real QGIS -------------------------------------------------------------------------------------------------
def _qgis_env(config: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV",
                                                              runner.EXECUTABLE_ENV)}
    # hsikit is not on PATH: the provider must take it from its setting
    env.update(QT_QPA_PLATFORM="offscreen", QGIS_CUSTOM_CONFIG_PATH=str(config), PATH="/usr/bin:/bin",
               XDG_RUNTIME_DIR=str(config / "runtime"))
    (config / "runtime").mkdir(mode=0o700, exist_ok=True)
    return env


def _profile(root: Path, zip_path: Path, executable: Path | None) -> dict:
    """A throw-away QGIS profile in ``root`` with the plugin unzipped, enabled and (given) the executable set."""
    plugins = root / "profiles" / "default" / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(plugins)
    env = _qgis_env(root)
    done = subprocess.run([str(QGIS_PROCESS), "plugins", "enable", "hsikit_qgis"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "* hsikit_qgis" in done.stdout
    if executable is not None:  # the provider's setting, as Processing > Options > Providers > hsikit saves it
        with open(root / "profiles" / "default" / "QGIS" / "QGIS3.ini", "a", encoding="utf-8") as ini:
            ini.write(f"\n[Processing]\nConfiguration\\HSIKIT_EXECUTABLE={executable}\n")
    return env


def _qgis_process(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(QGIS_PROCESS), *args], env=env, capture_output=True, text=True, timeout=600)


def _qgis_python(env: dict, *args: str) -> dict:
    done = subprocess.run([str(SYSTEM_PYTHON), str(CHECK), *args], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def qgis(tmp_path_factory):
    """(environment, plugin zip, work folder) for running the plugin in QGIS with hsikit set in its settings."""
    root = tmp_path_factory.mktemp("qgis")
    zip_path = build_plugin.build(root / "dist" / "hsikit_qgis.zip")
    env = _profile(root / "config", zip_path, HSIKIT)
    return env, zip_path, root


@needs_qgis
@pytest.mark.slow
def test_qgis_process_lists_the_algorithms(qgis):
    env, _, _ = qgis
    listed = _qgis_process(env, "list")
    assert listed.returncode == 0, listed.stderr
    assert all(f"\t{alg}\t" in listed.stdout for alg in ALGORITHMS), listed.stdout[-2000:]


@needs_qgis
@pytest.mark.slow
def test_qgis_process_classify(qgis, tmp_path):
    """hsikit:classify headless: the class map is the CLI's, georeferenced, paletted with the class names in QGIS."""
    env, _, _ = qgis
    out = tmp_path / "classes.tif"
    done = _qgis_process(env, "run", "hsikit:classify", "--", f"INPUT={SCENE}", f"MODEL={MODEL}", "TILE=152",
                         f"OUTPUT={out}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{HSIKIT} classify {SCENE} --out {out} --model={MODEL} --tile=152" in done.stdout  # from the setting
    assert "sample_scene.tif: 25 % (1/4 tiles)" in done.stdout  # hsikit's progress in the Processing log
    assert f"OUTPUT:\t{out}" in done.stdout and f"OUTPUT_STYLE:\t{tmp_path / 'classes.qml'}" in done.stdout

    names = class_names()
    if shutil.which("gdalinfo"):
        info = json.loads(subprocess.run(["gdalinfo", "-json", str(out)], capture_output=True, text=True,
                                         check=True).stdout)
        band = info["bands"][0]
        assert info["size"] == [200, 200] and band["type"] == "Byte" and band["colorInterpretation"] == "Palette"
        assert band["categories"][1:len(names) + 1] == names
        assert info["stac"]["proj:epsg"] == 32633

    layer = _qgis_python(env, "layer", str(out))
    with rasterio.open(SCENE) as src:
        crs = f"EPSG:{src.crs.to_epsg()}"
    assert layer["valid"] and layer["style_loaded"], layer
    assert layer["renderer"] == "paletted"
    assert layer["labels"] == names and layer["values"] == list(range(1, len(names) + 1))
    assert layer["crs"] == crs == "EPSG:32633"
    assert (layer["width"], layer["height"], layer["bands"]) == (200, 200, 1)

    # the same class map as hsikit's own command line with the same options
    direct = tmp_path / "direct.tif"
    subprocess.run([str(HSIKIT), "-q", "classify", str(SCENE), "-m", str(MODEL), "--tile", "152", "-o", str(direct)],
                   check=True, capture_output=True)
    with rasterio.open(out) as a, rasterio.open(direct) as b:
        assert np.array_equal(a.read(), b.read()) and a.transform == b.transform


@needs_qgis
@pytest.mark.slow
def test_qgis_process_missing_model_is_a_processing_error(qgis, tmp_path):
    env, _, _ = qgis
    missing, out = tmp_path / "missing.safetensors", tmp_path / "classes.tif"
    done = _qgis_process(env, "run", "hsikit:classify", "--", f"INPUT={SCENE}", f"MODEL={missing}",
                         f"OUTPUT={out}")
    text = done.stdout + done.stderr
    assert done.returncode != 0
    error = next(ln for ln in text.splitlines() if ln.startswith("ERROR:"))
    assert "file not found" in error and str(missing) in error and "MODEL" in error
    assert "Traceback" not in text
    assert not out.exists()


@needs_qgis
@pytest.mark.slow
def test_qgis_process_without_hsikit_says_where_to_set_it(qgis, tmp_path):
    _, zip_path, _ = qgis
    env = _profile(tmp_path / "config", zip_path, None)
    done = _qgis_process(env, "run", "hsikit:classify", "--", f"INPUT={SCENE}", f"OUTPUT={tmp_path / 'c.tif'}")
    assert done.returncode != 0
    assert "hsikit executable not found on PATH" in done.stdout + done.stderr


@needs_qgis
@pytest.mark.slow
def test_processing_loads_styled_output_and_cancels(qgis, tmp_path):
    """In QGIS's Python, as the desktop runs it: the result is added to the project styled by its .qml; a cancel
    at the first progress report stops hsikit and leaves no file."""
    from hsikit.pipelines.options import SPECS

    env, zip_path, root = qgis
    plugins = root / "config" / "profiles" / "default" / "python" / "plugins"
    report = _qgis_python(env, "process", str(plugins), str(SCENE), str(MODEL), str(tmp_path))

    assert report["algorithms"] == sorted(ALGORITHMS)
    for alg, spec in ALGORITHMS.items():  # every option hsikit declares is a parameter, under its Processing name
        if spec is None:
            continue
        command, batch = spec
        opts = [o for o in ([SPECS[command].batch_model()] + SPECS[command].batch() if batch
                            else SPECS[command].single()) if o is not None and o.flags]
        expected = []
        for o in opts:
            name = {"fmt": "FORMAT"}.get(o.name, o.name.upper())
            expected += [f"{name}_MIN", f"{name}_MAX"] if typing.get_origin(o.type) is tuple else [name]
        assert set(expected) <= set(report["parameters"][alg]), alg
        assert {"INPUT", "OUTPUT"} <= set(report["parameters"][alg])

    loaded = report["loaded"]
    assert len(loaded["layers"]) == 1
    layer = loaded["layers"][0]
    assert layer["valid"] and layer["renderer"] == "paletted" and layer["labels"] == class_names()
    assert loaded["progress"] == sorted(loaded["progress"]) and loaded["progress"][-1] == 100
    assert any("% (" in line for line in loaded["log"])

    cancelled = report["cancelled"]
    assert "cancelled" in cancelled["exception"]
    assert cancelled["progress"] and cancelled["progress"][0] < 100
    assert cancelled["files"] == []  # neither the class map nor a temporary


@needs_qgis
@pytest.mark.slow
def test_qgis_process_scene_info(qgis, tmp_path):
    env, _, _ = qgis
    report = tmp_path / "info.html"
    done = _qgis_process(env, "--json", "run", "hsikit:sceneinfo", "--", f"INPUT={SCENE}", f"OUTPUT={report}")
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(done.stdout[done.stdout.index("{"):])["results"]
    info = json.loads(results["JSON"])
    assert (info["width"], info["height"], info["bands"], info["epsg"]) == (200, 200, 103, 32633)
    assert results["OUTPUT"] == str(report)
    page = report.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<th>crs</th><td>EPSG:32633</td>" in page


@needs_qgis
@pytest.mark.slow
def test_qgis_process_batch_classify(qgis, tmp_path):
    """hsikit:batchclassify: the class maps listed from the batch's manifest, as the CLI writes them."""
    env, _, _ = qgis
    outdir = tmp_path / "maps"
    done = _qgis_process(env, "--json", "run", "hsikit:batchclassify", "--", f"INPUT={SCENE}", f"MODEL={MODEL}",
                         "TILE=152", "WORKERS=1", f"OUTPUT={outdir}")
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(done.stdout[done.stdout.index("{"):])["results"]
    class_map = outdir / "sample_scene.tif"
    assert results["OUTPUT_LAYERS"] == [str(class_map)]
    assert (results["DONE"], results["FAILED"]) == (1, 0)
    assert results["MANIFEST"] == str(outdir / "hsikit-batch.sqlite")
    layer = _qgis_python(env, "layer", str(class_map))
    assert layer["renderer"] == "paletted" and layer["labels"] == class_names() and layer["crs"] == "EPSG:32633"
