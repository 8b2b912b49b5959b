"""Damaged rasters (truncated GeoTIFF/ENVI files, a damaged mask) are user errors: reads raise InputError naming the
file, the band(s) and the window; `hsikit info` finds the damage cheaply; `hsikit classify` exits 2 with one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.transform import from_origin
from rasterio.windows import Window

from clirun import cli
from fakedata import write_fake_geotiff
from hsikit.errors import InputError
from hsikit.io.open import open_scene
from hsikit.io.rasterio_scene import RasterioScene

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_SCENE = ROOT / "sample_data" / "sample_scene.tif"
SAMPLE_MODEL = ROOT / "sample_data" / "sample_model.safetensors"


def _truncate(path: Path, fraction: float) -> Path:
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(int(size * fraction))
    return path


def _band_interleaved_copy(src: Path, dst: Path) -> Path:
    """A tiled, band-interleaved copy (CreateCopy puts the TIFF directory first, so a truncated copy still opens)."""
    rasterio.shutil.copy(src, dst, driver="GTiff", TILED="YES", BLOCKXSIZE=16, BLOCKYSIZE=16, INTERLEAVE="BAND")
    return dst


def _truncated_geotiff(tmp_path: Path, fraction: float = 0.6, bands: int = 8) -> Path:
    src = write_fake_geotiff(tmp_path / "intact.tif", bands=bands, height=64, width=64)
    return _truncate(_band_interleaved_copy(src, tmp_path / "scene.tif"), fraction)


def _failing_bands(path: Path) -> list[int]:
    """1-based bands that rasterio cannot read in full (computed independently of hsikit)."""
    bad = []
    with rasterio.open(path) as ds:
        for b in range(1, ds.count + 1):
            try:
                ds.read(b)
            except Exception:  # noqa: BLE001 - any read error marks the band
                bad.append(b)
    return bad


def _words(bands: list[int]) -> str:
    if len(bands) == 1:
        return f"band {bands[0]}"
    assert bands == list(range(bands[0], bands[-1] + 1)), "the truncation leaves one run of bad bands"
    return f"bands {bands[0]}-{bands[-1]}"


# ------------------------------------------------------------------------------------------------------------------
# reads
# ------------------------------------------------------------------------------------------------------------------
def test_truncated_geotiff_read_names_file_bands_and_window(tmp_path):
    p = _truncated_geotiff(tmp_path)
    bad = _failing_bands(p)
    assert bad and 1 not in bad, "a 60 % truncation of a band-interleaved file damages the later bands only"
    with open_scene(p) as sc:
        with pytest.raises(InputError) as e:
            sc.read(Window(0, 0, 64, 64))
        msg = str(e.value)
        assert "\n" not in msg
        assert msg.startswith(f"cannot read scene.tif: {_words(bad)}, rows 0-63, cols 0-63 (")
        assert "TIFFReadEncodedTile failed" in msg and "truncated or damaged" in msg
        # one bad band asked alone, and a window that only the intact bands cover
        with pytest.raises(InputError, match=rf"scene.tif: band {bad[-1]}, rows 16-31, cols 32-47 \("):
            sc.read(Window(32, 16, 16, 16), bands=[0, bad[-1] - 1])
        assert sc.read(Window(0, 0, 64, 64), bands=[0]).shape == (1, 64, 64)
        with pytest.raises(InputError, match="cannot read scene.tif"):
            sc.read_valid(Window(0, 0, 16, 16))


def test_engine_reader_thread_raises_the_input_error(tmp_path):
    from hsikit.engine.engine import TileSpec, run_tiled

    p = _truncated_geotiff(tmp_path)
    with open_scene(p) as sc:
        with pytest.raises(InputError, match=r"^cannot read scene.tif: bands? \d"):
            run_tiled(sc, lambda x: x[:, :1], out_channels=1, sink=lambda w, v, ok: None,
                      spec=TileSpec(tile=32, overlap=0), progress=False, pixel_local=True)


def _write_masked(path: Path) -> Path:
    prof = dict(driver="GTiff", width=64, height=64, count=3, dtype="uint16", crs="EPSG:32633",
                transform=from_origin(366000, 5810000, 30, 30), tiled=True, blockxsize=16, blockysize=16)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        work = path.with_name("work_" + path.name)
        with rasterio.open(work, "w", **prof) as dst:
            dst.write(np.arange(3 * 64 * 64, dtype="uint16").reshape(3, 64, 64) % 1000 + 1)
            mask = np.full((64, 64), 255, np.uint8)
            mask[:10] = 0
            dst.write_mask(mask)
        _band_interleaved_copy(work, path)
    work.unlink()
    return path


def test_damaged_mask_read_names_the_mask(tmp_path):
    p = _write_masked(tmp_path / "masked.tif")
    with open(p, "r+b") as f:  # the internal mask's tiles come last: cut into them only
        f.truncate(p.stat().st_size - 100)
    with open_scene(p) as sc:
        assert sc.read().shape == (3, 64, 64), "the bands are intact"
        with pytest.raises(InputError, match=r"^cannot read masked.tif: mask band, rows 0-63, cols 0-63 \(.*\)$"):
            sc.read_valid()


# ------------------------------------------------------------------------------------------------------------------
# hsikit info
# ------------------------------------------------------------------------------------------------------------------
def test_info_reports_truncated_geotiff(tmp_path, capsys):
    p = _truncated_geotiff(tmp_path)
    code, out, err = cli(capsys, "info", p)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot read scene.tif: band"), err
    assert "Traceback" not in err


def test_info_reports_damaged_mask(tmp_path, capsys):
    p = _write_masked(tmp_path / "masked.tif")
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size - 100)
    code, _, err = cli(capsys, "info", p)
    assert code == 2 and err.strip().startswith("error: cannot read masked.tif: mask band"), err


def test_info_of_intact_files_reads_two_blocks_a_band(tmp_path, capsys, monkeypatch):
    from scipy.io import savemat

    tif = _band_interleaved_copy(write_fake_geotiff(tmp_path / "w.tif", bands=6, height=64, width=64),
                                 tmp_path / "scene.tif")
    read_px = []
    real = RasterioScene._read

    def counting(self, window, bands):
        read_px.append(len(bands) * int(window.width) * int(window.height))
        return real(self, window, bands)

    monkeypatch.setattr(RasterioScene, "_read", counting)
    code, out, err = cli(capsys, "info", tif)
    assert code == 0 and "scene.tif" in out, err
    assert 0 < sum(read_px) <= 2 * 16 * 16 * 6, "the first and last block of each band, not the whole file"
    read_px.clear()
    code, out, err = cli(capsys, "info", _write_envi(tmp_path / "cube.bsq"))
    assert code == 0 and "30 x 20 px, 5 bands" in out, err
    assert 0 < sum(read_px) <= 2 * 30 * 5, "ENVI blocks are lines: the first and last line of each band"
    savemat(tmp_path / "cube.mat", {"cube": np.ones((12, 10, 4), np.float32)})  # in memory already
    code, out, err = cli(capsys, "info", tmp_path / "cube.mat")
    assert code == 0 and "10 x 12 px, 4 bands" in out, err


def test_unreadable_file_message_names_the_file_not_its_path(tmp_path, capsys):
    (tmp_path / "zero.tif").write_bytes(b"")
    (tmp_path / "notes.tif").write_text("band 1, band 2\nnot a raster\n")
    for name in ("zero.tif", "notes.tif"):
        code, _, err = cli(capsys, "info", tmp_path / name)
        assert code == 2
        assert err.strip() == f"error: {name} is not a raster GDAL can read (not recognized as being in a supported " \
                              "file format)", err
        assert str(tmp_path) not in err, "the same message wherever the file lies (batch rows compare to it)"


def _write_envi(path: Path, interleave: str = "bsq") -> Path:
    data = np.arange(5 * 20 * 30, dtype="float32").reshape(5, 20, 30)
    with rasterio.open(path, "w", driver="ENVI", width=30, height=20, count=5, dtype="float32",
                       interleave=interleave.upper()) as dst:
        dst.write(data)
    return path


def test_info_reports_truncated_envi(tmp_path, capsys):
    # GDAL reads the missing part of a raw file as zeros without an error: the size is checked instead
    p = _truncate(_write_envi(tmp_path / "cube.bsq"), 0.5)
    code, _, err = cli(capsys, "info", p)
    assert code == 2
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("error: cannot read cube.bsq: bands 3-5 (the file has 6000 bytes, its ENVI header "
                          "describes 12000; the file may be truncated)"), err
    bil = _truncate(_write_envi(tmp_path / "cube.bil", "bil"), 0.5)
    with pytest.raises(InputError, match=r"cube.bil: bands 1-5, rows 10-19 \("):
        open_scene(bil)


@pytest.mark.shared
def test_info_of_real_envi_intact_and_truncated(shared_data, tmp_path, capsys):
    src = shared_data / "envi_gamsberg_subset"
    code, out, err = cli(capsys, "info", src / "cubus_gamsberg_subset")
    assert code == 0 and "189 bands" in out, err
    for f in src.iterdir():
        shutil.copy(f, tmp_path / f.name)
    _truncate(tmp_path / "cubus_gamsberg_subset", 0.6)
    code, _, err = cli(capsys, "info", tmp_path / "cubus_gamsberg_subset")
    assert code == 2 and err.startswith("error: cannot read cubus_gamsberg_subset: bands 114-189 ("), err
    code, out, err = cli(capsys, "info", shared_data / "simulated_indian_pines" / "simu_indian.mat")
    assert code == 0 and "145 x 145 px, 224 bands" in out, err




# ------------------------------------------------------------------------------------------------------------------
# hsikit classify
# ------------------------------------------------------------------------------------------------------------------
def test_classify_truncated_scene_exits_2_naming_file_and_band(tmp_path, capsys):
    if not SAMPLE_MODEL.exists() or not SAMPLE_SCENE.exists():
        pytest.skip("the sample scene/model of a source checkout are needed")
    crop = tmp_path / "crop.tif"
    with rasterio.open(SAMPLE_SCENE) as src:
        w = Window(0, 0, 48, 48)
        prof = dict(src.profile, width=48, height=48, transform=src.window_transform(w), blockxsize=16,
                    blockysize=16)
        with rasterio.open(crop, "w", **prof) as dst:
            dst.write(src.read(window=w))
            for i in range(src.count):
                dst.update_tags(i + 1, **src.tags(i + 1))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    scene = _truncate(_band_interleaved_copy(crop, out_dir / "scene.tif"), 0.6)
    code, out, err = cli(capsys, "-q", "classify", scene, "-o", out_dir / "classes.tif", "--model", SAMPLE_MODEL,
                         "--confidence")
    assert code == 2, (out, err)
    errors = [line for line in err.splitlines() if not line.startswith("warning:")]
    assert len(errors) == 1 and errors[0].startswith("error: cannot read scene.tif: band"), err
    assert "rows " in errors[0] and "cols " in errors[0] and "RasterioIOError" not in err
    assert sorted(p.name for p in out_dir.iterdir()) == ["scene.tif"], "no output, no temporary left"
