"""The wheel: `python -m build` makes one that installs into a fresh virtualenv and works without the source tree.

The build runs on a copy of the build inputs (pyproject.toml, the README and the folders pyproject's package-dir
maps), without build isolation so that it needs no network (the environment's setuptools is the backend). The
fresh venv gets the wheel with `pip install --no-deps`; its dependencies (torch, rasterio, ...) come from this
environment's site-packages through a plain path line in a .pth file, which does not run this environment's own
.pth files, so the editable install of the checkout stays invisible there. Commands run from an empty folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11+ (tomllib)")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
#: source folder -> its path inside the wheel (hsikit -> hsikit, models -> hsikit/models, ...)
FOLDERS = {folder: package.replace(".", "/") for package, folder in SETUPTOOLS["package-dir"].items()}
SAMPLE_SCENE = ROOT / "sample_data" / "sample_scene.tif"
SAMPLE_LABELS = ROOT / "sample_data" / "sample_labels.tif"
SAMPLE_MODEL = ROOT / "sample_data" / "sample_model.safetensors"
#: the sample's data files stay in the source tree except the default model (keeps the wheel small)
SHIPPED_SAMPLE_DATA = {"sample_model.safetensors"}
MAX_WHEEL_MB = 8.0
BUILD_TIMEOUT_S, RUN_TIMEOUT_S = 300, 180


def _run(cmd: list[str], *, cwd: Path, env: dict[str, str] | None = None,
         timeout: int = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _tail(proc: subprocess.CompletedProcess, lines: int = 25) -> str:
    return "\n".join((proc.stdout + proc.stderr).splitlines()[-lines:])


def _skip_unless_build_backend() -> None:
    """Skip (with the reason) where `python -m build --no-isolation` cannot run: no `build`, or a setuptools that
    does not meet pyproject's build-system requirement."""
    if importlib.util.find_spec("build") is None:
        pytest.skip("building the wheel needs the `build` package (pip install build, or the test extra)")
    from packaging.requirements import Requirement

    for line in PYPROJECT["build-system"]["requires"]:
        req = Requirement(line)
        try:
            have = version(req.name)
        except PackageNotFoundError:
            pytest.skip(f"the offline build needs {req} installed in this environment (pip install '{req}')")
        if not req.specifier.contains(have, prereleases=True):
            pytest.skip(f"the offline build needs {req}, this environment has {req.name} {have}")


def _source_files() -> dict[str, Path]:
    """Every file the installed package needs, by its path in the wheel: all modules of the mapped folders and
    their data files (the sample's data: only the default model)."""
    files = {}
    for folder, prefix in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*")):
            rel = path.relative_to(ROOT / folder)
            if not path.is_file() or "__pycache__" in rel.parts or path.suffix == ".pyc" or path.name.startswith("."):
                continue
            if folder == "sample_data" and path.suffix != ".py" and rel.as_posix() not in SHIPPED_SAMPLE_DATA:
                continue
            files[f"{prefix}/{rel.as_posix()}"] = path
    return files


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """`python -m build` (sdist, then the wheel from the sdist) on a clean copy of the build inputs."""
    _skip_unless_build_backend()
    base = tmp_path_factory.mktemp("wheel")
    src, dist = base / "src", base / "dist"
    src.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", src)
    shutil.copy2(ROOT / PYPROJECT["project"]["readme"], src)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "_report")
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, src / folder, ignore=skip)
    proc = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, src], cwd=base,
                timeout=BUILD_TIMEOUT_S)
    assert proc.returncode == 0, f"python -m build failed:\n{_tail(proc)}"
    wheels, sdists = sorted(dist.glob("*.whl")), sorted(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, f"expected one wheel and one sdist in {dist}: {os.listdir(dist)}"
    return {"wheel": wheels[0], "sdist": sdists[0]}


@pytest.fixture(scope="module")
def installed(built, tmp_path_factory) -> dict:
    """A fresh venv with the wheel installed (--no-deps) and this environment's packages visible behind it."""
    base = tmp_path_factory.mktemp("venv")
    venv = base / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base)
    if made.returncode != 0:
        pytest.skip(f"cannot make a virtualenv with {sys.executable} -m venv: {_tail(made, 3)}")
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    pip = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q",
                built["wheel"]], cwd=base)
    if "no such option: --python" in pip.stderr:
        pytest.skip("installing into the fresh venv needs pip >= 22.3 (pip --python)")
    assert pip.returncode == 0, f"pip install {built['wheel'].name} failed:\n{_tail(pip)}"
    # after the install, so that pip never sees the checkout's editable hsikit as already installed
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base)
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site.stdout.strip()) / "_hsikit_test_deps.pth").write_text("".join(f"{p}\n" for p in deps))
    env = {k: v for k, v in os.environ.items()
           if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "HSIKIT_DEFAULT_MODEL"}}
    env.update(VIRTUAL_ENV=str(venv), PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", PYTHONNOUSERSITE="1")
    work = base / "work"
    work.mkdir()
    return {"venv": venv, "site": Path(site.stdout.strip()), "python": python, "hsikit": bindir / "hsikit", "env": env,
            "cwd": work}


def _hsikit(installed: dict, *args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return _run([installed["hsikit"], *args], cwd=cwd or installed["cwd"], env=installed["env"])


def test_wheel_holds_every_module_and_data_file(built):
    with zipfile.ZipFile(built["wheel"]) as zf:
        names = set(zf.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()
    missing = sorted(set(_source_files()) - names)
    assert not missing, f"pyproject.toml's packages/package-data leave these out of the wheel: {missing}"
    assert {n.split("/")[0] for n in names} == {"hsikit", dist_info}
    assert dist_info == f"hsikit-{PYPROJECT['project']['version']}.dist-info"
    assert "hsikit/sample_data/sample_model.safetensors" in names
    assert not [n for n in names if n.endswith((".tif", ".gpkg"))], "sample rasters must not ship"
    assert "hsikit = hsikit.cli.main:run" in entry_points
    size_mb = built["wheel"].stat().st_size / 1e6
    assert size_mb < MAX_WHEEL_MB, f"wheel is {size_mb:.1f} MB"


def test_installed_package_is_the_wheel_not_the_checkout(installed):
    probe = ("import json, sys, hsikit, hsikit.models, hsikit.pipelines, hsikit.cli\n"
             "from importlib.metadata import distribution\n"
             "from hsikit.pipelines.common import SAMPLE_MODEL\n"
             "print(json.dumps({'files': [m.__file__ for m in (hsikit, hsikit.models, hsikit.pipelines, hsikit.cli)],"
             " 'sample': str(SAMPLE_MODEL), 'exists': SAMPLE_MODEL.is_file(),"
             " 'finders': [type(f).__module__ for f in sys.meta_path],"
             " 'dist': str(distribution('hsikit').locate_file(''))}))")
    proc = _run([installed["python"], "-c", probe], cwd=installed["cwd"], env=installed["env"])
    assert proc.returncode == 0, _tail(proc)
    got = json.loads(proc.stdout)
    venv = str(installed["venv"].resolve())
    for f in got["files"]:
        assert Path(f).resolve().is_relative_to(venv), f"{f} imported from outside the fresh venv"
    assert Path(got["sample"]).is_relative_to(venv) and got["exists"], got["sample"]
    assert not [f for f in got["finders"] if "editable" in f], got["finders"]
    assert Path(got["dist"]).resolve().is_relative_to(venv)


def test_installed_cli_info_and_models(installed):
    proc = _hsikit(installed, "--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"hsikit {PYPROJECT['project']['version']}", _tail(proc)
    if not SAMPLE_SCENE.exists():
        pytest.skip(f"{SAMPLE_SCENE} is missing (regenerate it with `make sample`)")
    proc = _hsikit(installed, "info", "--json", SAMPLE_SCENE)
    assert proc.returncode == 0, _tail(proc)
    info = json.loads(proc.stdout)
    assert (info["width"], info["height"], info["bands"], info["epsg"]) == (200, 200, 103, 32633)

    proc = _hsikit(installed, "models", "--json")
    assert proc.returncode == 0, _tail(proc)
    from hsikit.models.registry import list_models

    assert [m["name"] for m in json.loads(proc.stdout)] == [e.name for e in list_models()]

    proc = _hsikit(installed, "info", installed["site"] / "hsikit" / "sample_data" / "sample_model.safetensors")
    assert proc.returncode == 0 and "freenet (classification)" in proc.stdout, _tail(proc)


def test_installed_classify_uses_the_shipped_sample_model(installed):
    if not (SAMPLE_SCENE.exists() and SAMPLE_LABELS.exists()):
        pytest.skip(f"the sample scene or labels in {SAMPLE_SCENE.parent} are missing (`make sample`)")
    import numpy as np
    import rasterio

    out = installed["cwd"] / "classify"
    out.mkdir()
    proc = _hsikit(installed, "classify", SAMPLE_SCENE, "-o", "classes.tif", cwd=out)
    assert proc.returncode == 0, _tail(proc)
    assert "using the sample model" in proc.stderr
    assert {"classes.tif", "classes.qml", "classes.tif.aux.xml"} <= set(os.listdir(out))
    with rasterio.open(out / "classes.tif") as ds, rasterio.open(SAMPLE_LABELS) as lab, \
            rasterio.open(SAMPLE_SCENE) as scene:
        assert (ds.count, ds.dtypes[0], ds.shape) == (1, "uint8", scene.shape)
        assert ds.crs == scene.crs and ds.transform == scene.transform
        assert ds.tags()["HSIKIT_CHECKPOINT_SHA256"] == hashlib.sha256(SAMPLE_MODEL.read_bytes()).hexdigest()
        classes, labels = ds.read(1), lab.read(1)
        assert np.array_equal(classes == 0, scene.read_masks(1) == 0)  # nodata exactly where the swath ends
    assert set(np.unique(classes)) <= set(range(8))
    known = labels > 0
    agreement = float((classes[known] == labels[known]).mean())
    assert agreement > 0.95, f"the shipped sample model agrees with the sample labels on {agreement:.3f}"
