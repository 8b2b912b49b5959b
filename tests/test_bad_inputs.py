"""Every command that reads a scene, over the same broken inputs: exit 2 with one line naming the file, or exit 0
with the warning that says what was done; never a traceback, never a partial, stale or temporary output."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio

from clirun import cli
from fakedata import write_fake_geotiff, write_labels_for
from hsikit.cli.main import run

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

BANDS, H, W = 12, 48, 40
TINY_RESTORERS = {
    "denoise": ("denoiser", "hsdt", ["--set", "width=4"]),
    "super-resolve": ("super-resolver", "essaformer", ["--set", "dim=8", "--scale", "2"]),
    "restore": ("restorer", "mp-hsir", ["--set", "dim=8", "--set", "blocks=[1,1,1]", "--set", "refinement=1",
                                        "--set", "heads=[1,2,4]"]),
}


def _write(path: Path, data: np.ndarray, **kw) -> Path:
    """A fake scene with ``data`` replacing its pixels (keeps wavelengths, CRS and transform)."""
    write_fake_geotiff(path, bands=data.shape[0], height=data.shape[1], width=data.shape[2], **kw)
    with rasterio.open(path, "r+") as dst:
        dst.write(data.astype(dst.dtypes[0]))
    return path


def _broken_inputs(d: Path) -> dict[str, Path]:
    d.mkdir()
    good = write_fake_geotiff(d / "good.tif", bands=BANDS, height=H, width=W, seed=3)
    with rasterio.open(good) as src:
        cube = src.read()
    out = {"zero-bytes": d / "zero.tif", "not-a-raster": d / "notes.tif"}
    out["zero-bytes"].write_bytes(b"")
    out["not-a-raster"].write_text("band 1, band 2\nthis is a CSV, not a raster\n")
    trunc = write_fake_geotiff(d / "truncated.tif", bands=BANDS, height=H, width=W, seed=3)
    size = trunc.stat().st_size
    with open(trunc, "r+b") as f:
        f.truncate(int(size * 0.6))
    out["truncated"] = trunc
    out["all-nan"] = _write(d / "allnan.tif", np.full_like(cube, np.nan))
    nanband = cube.copy()
    nanband[4] = np.nan
    out["nan-band"] = _write(d / "nanband.tif", nanband)
    out["no-crs"] = write_fake_geotiff(d / "nocrs.tif", bands=BANDS, height=H, width=W, seed=3, crs=None)
    out["1x1"] = _write(d / "onepixel.tif", cube[:, :1, :1])
    out["no-wavelengths"] = write_fake_geotiff(d / "nowl.tif", bands=BANDS, height=H, width=W, seed=3,
                                              wavelengths=False)
    out["wrong-band-count"] = write_fake_geotiff(d / "ninebands.tif", bands=9, height=H, width=W, seed=3)
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    train = write_fake_geotiff(d / "train.tif", bands=BANDS, height=60, width=70, seed=1)
    labels = write_labels_for(train, d / "train_labels.tif")
    models = {"classify": d / "classifier.safetensors"}
    assert run(["-q", "train", "classifier", str(train), "--labels", str(labels), "-o", str(models["classify"]),
                "--epochs", "3", "--seed", "0"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for command, (kind, arch, extra) in TINY_RESTORERS.items():
            models[command] = d / f"{arch}.safetensors"
            assert run(["-q", "train", kind, str(train), "-o", str(models[command]), "-m", arch, "--iterations", "2",
                        "--steps-per-epoch", "1", "--batch-size", "2", "--crop", "32", *extra]) == 0
    inputs = _broken_inputs(d / "inputs")
    eval_labels = write_labels_for(inputs["no-crs"], d / "eval_labels.tif")
    return d, models, inputs, eval_labels


# what each command must do with each input: "error" (exit 2, one line naming the file) or the warning text
# that an exit-0 run must print (None: exit 0, no warning needed)
EXPECT = {
    "zero-bytes": "error",
    "not-a-raster": "error",
    "truncated": "error",
    "all-nan": "error",
    "nan-band": r"band 5 \(.*\) is missing in 100 % of pixels: filled",
    "no-crs": "has no CRS",
    "no-wavelengths": "has no wavelengths",
    "wrong-band-count": "error",
}
# per command: inputs whose expectation differs from EXPECT (commands that need no model accept what no model checks)
OVERRIDES = {
    "info": {"all-nan": None, "nan-band": None, "no-crs": None, "no-wavelengths": None, "wrong-band-count": None},
    "preprocess": {"no-wavelengths": None, "wrong-band-count": None},
}
COMMANDS = ["info", "preprocess", "classify", "evaluate", "denoise", "super-resolve", "restore"]
CASES = ["zero-bytes", "truncated", "not-a-raster", "all-nan", "nan-band", "no-crs", "1x1", "no-wavelengths",
         "wrong-band-count"]
TEMP = re.compile(r"^\..*\.tmp")


def _args(command: str, scene: Path, out: Path, models: dict, eval_labels: Path) -> list:
    if command == "info":
        return ["info", scene]
    if command == "preprocess":
        return ["preprocess", scene, "-o", out / "pre.tif", "--normalize"]
    if command == "classify":
        return ["classify", scene, "-o", out / "classes.tif", "-m", models["classify"], "--probabilities",
                "--quicklook"]
    if command == "evaluate":
        return ["evaluate", models["classify"], scene, "--labels", eval_labels, "-o", out / "run"]
    return [command, scene, "-o", out / "restored.tif", "-m", models[command], *(
        ["--task", "gaussian"] if command == "restore" else [])]


def _expected(command: str, case: str):
    if case == "1x1":
        return "either"  # a single pixel may run (pixel models) or be refused in one line (spatial models)
    return OVERRIDES.get(command, {}).get(case, EXPECT[case])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_handles_every_broken_input(setup, capsys, tmp_path, command, case):
    d, models, inputs, eval_labels = setup
    scene = inputs[case]
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = cli(capsys, *_args(command, scene, out, models, eval_labels))
    assert "Traceback" not in err and "Traceback" not in stdout
    expected = _expected(command, case)
    left = sorted(p.name for p in out.rglob("*"))
    assert not [n for n in left if TEMP.match(n)], left
    if expected == "either":
        expected = "error" if code == 2 else None
    if expected == "error":
        lines = err.strip().splitlines()
        errors = [ln for ln in lines if ln.startswith("error:")]
        assert code == 2, (code, err)
        assert len(errors) == 1 and lines[-1] == errors[0], err
        if case != "wrong-band-count":  # a band mismatch names the counts, the one file is implied
            assert scene.name in errors[0], errors[0]
        files = [p for p in out.rglob("*") if p.is_file()]
        assert files == [], f"{command} left {files} after failing"
        return
    assert code == 0, err
    if expected is not None:
        assert re.search(expected, err), (expected, err)
        assert len(re.findall(expected, err)) == 1, f"the warning should be given once: {err}"
    assert not [ln for ln in err.splitlines() if ln.startswith("error")]
    if command == "classify" and case == "nan-band":
        with rasterio.open(out / "classes.tif") as src:
            filled = json.loads(src.tags()["HSIKIT_FILLED_BANDS"])
            assert [f["band"] for f in filled] == [5] and filled[0]["interpolated_from"] == [4, 6]
            assert (src.read(1) > 0).mean() > 0.95  # the map is not nodata because of one band


def test_batch_records_each_broken_input_in_one_line(setup, capsys, tmp_path):
    """One batch over all broken inputs and one good scene: the good one is done, each broken one failed with the
    same one-line reason a single-scene run prints (or done with its warning), no traceback, no lock left."""
    from hsikit.pipelines.batch import scenes_table

    d, models, inputs, _ = setup
    src = tmp_path / "scenes"
    src.mkdir()
    for case, p in inputs.items():
        shutil.copy(p, src / p.name)
    shutil.copy(d / "inputs" / "good.tif", src / "good.tif")
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "batch", "classify", src, "-o", out, "-m", models["classify"], "--workers", "1",
                            "--no-dashboard")
    assert "Traceback" not in err and "Traceback" not in stdout
    rows = {r["name"]: r for r in scenes_table(out)}
    assert rows["good"]["status"] == "done" and code == 1
    for case, p in inputs.items():
        row = rows[p.stem]
        expected = _expected("classify", case)
        if expected == "either":
            continue
        if expected == "error":
            assert row["status"] == "failed", (case, row)
            assert "\n" not in row["error"] and not row["error"].startswith(("Exception", "SceneError")), row
            single = tmp_path / f"single_{p.stem}"
            single.mkdir()
            _, _, one = cli(capsys, "classify", src / p.name, "-o", single / "c.tif", "-m", models["classify"])
            assert one.strip().splitlines()[-1] == f"error: {row['error']}", (one, row["error"])
        elif case != "no-crs":  # batch refuses scenes without CRS unless --allow-no-crs
            assert row["status"] == "done", (case, row)
    assert not (out / ".hsikit-batch" / "lock").exists()
    assert not [p for p in out.rglob("*") if TEMP.match(p.name)]


def test_tiling_options_are_checked_and_the_overlap_used_is_recorded(setup, capsys, tmp_path):
    d, models, inputs, _ = setup
    scene = d / "inputs" / "good.tif"
    for args, needle in ((["--overlap", "99999"], "--overlap 99999 px exceeds half the tile"),
                         (["--overlap", "-3"], "--overlap"), (["--batch-size", "0"], "--batch-size"),
                         (["--tile", "0"], "--tile")):
        code, _, err = cli(capsys, "classify", scene, "-m", models["classify"], "-o", tmp_path / "c.tif", *args)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert not list(tmp_path.iterdir())
    code, _, err = cli(capsys, "denoise", scene, "-m", models["denoise"], "-o", tmp_path / "d.tif", "--tile", "32")
    assert code == 2 and "--tile 32 px is too small for this model" in err and "--overlap" not in err
    # a spatial model with the default overlap: the tag holds the overlap and margin the engine used, not null
    big = write_fake_geotiff(tmp_path / "big.tif", bands=BANDS, height=200, width=190, seed=4)
    code, _, err = cli(capsys, "-q", "denoise", big, "-m", models["denoise"], "-o", tmp_path / "d.tif")
    assert code == 0, err
    with rasterio.open(tmp_path / "d.tif") as src:
        tile = json.loads(src.tags()["HSIKIT_TILE"])
    from hsikit.engine.engine import TileSpec, planned_overlap

    assert tile["overlap"] == planned_overlap(TileSpec(tile=tile["tile"]), tile["context"], False, (200, 190))[0]
    assert tile["overlap"] > 0 and tile["margin"] >= tile["context"] and tile["tile"] < 200


def test_outputs_of_one_run_never_replace_each_other(setup, capsys, tmp_path):
    """`-o classes.png --quicklook` used to write the class map and then the quicklook over it; `-o classes` wrote a
    GeoTIFF named `classes` plus `classes.aux.xml`. Both are refused before any work, nothing is written."""
    from hsikit.io.outputs import check_distinct

    d, models, _, _ = setup
    scene = d / "inputs" / "good.tif"
    for out, needle in (("classes.png", "ends in '.png'"), ("classes", "has no extension")):
        code, stdout, err = cli(capsys, "classify", scene, "-m", models["classify"], "-o", tmp_path / out,
                                "--quicklook", "--probabilities")
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
        assert "wrote" not in stdout and not list(tmp_path.iterdir())
    with pytest.raises(Exception, match="the class map and the quicklook would both be written to c.png"):
        check_distinct({"class map": tmp_path / "c.png", "quicklook": tmp_path / "c.png"})
    with pytest.raises(Exception, match="GDAL sidecar"):
        check_distinct({"class map": tmp_path / "c.tif", "report": tmp_path / "c.tif.aux.xml"})


def test_a_band_mismatch_says_what_to_do(setup, capsys, tmp_path):
    d, models, inputs, _ = setup
    code, _, err = cli(capsys, "classify", inputs["wrong-band-count"], "-m", models["classify"], "-o",
                       tmp_path / "c.tif")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "classifier.safetensors" in err and "12 bands" in err and "9 bands" in err
    assert "hsikit train classifier" in err
    code, _, err = cli(capsys, "denoise", inputs["wrong-band-count"], "-m", models["denoise"], "-o",
                       tmp_path / "d.tif")
    assert code == 2 and "hsikit train denoiser" in err
