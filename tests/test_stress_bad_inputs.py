"""`hsikit stress` on a simulated season in which ONE date file is broken (same file name): exit 2 with one line
naming the file, or exit 0 with one warning line naming it and saying what was done, and a valid map; never a
traceback (also not from the lazy dask reads), never an output or a temporary left by a failed run. Also: output
names are refused before any work."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import rasterio
from affine import Affine

from clirun import cli
from hsikit.cli.main import run
from hsikit.errors import InputError

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def season(tmp_path_factory):
    """A simulated season (41 per-date GeoTIFFs with SCL siblings) and a small model trained on it."""
    d = tmp_path_factory.mktemp("stress_bad")
    assert run(["-q", "simulate-stress", str(d / "sim"), "--fields-per-class", "4", "--field-size", "8",
                "--seed", "5"]) == 0
    sim = d / "sim"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert run(["-q", "train", "stress", str(sim / "series"), "--labels", str(sim / "labels.tif"),
                    "--fields", str(sim / "fields.tif"), "-o", str(d / "m.safetensors"), "--epochs", "3",
                    "--soil-slope", "auto", "--soil-mask", str(sim / "soil.tif"), "--set", "width=32"]) == 0
    return d


@pytest.fixture(scope="module")
def clean(season):
    """The clean series' run through the CLI: (stderr warning lines, class map, output file names)."""
    out = season / "clean"
    out.mkdir()
    buf = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(buf):
        code = run(["-q", "stress", str(season / "sim" / "series"), "-o", str(out / "map.tif"), "-m",
                    str(season / "m.safetensors")])
    err = buf.getvalue()
    assert code == 0, err
    with rasterio.open(out / "map.tif") as src:
        cls = src.read(1)
    return _warning_lines(err), cls, sorted(p.name for p in out.iterdir())


def _warning_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if ln.startswith("warning:")]


def _dates(series: Path) -> list[Path]:
    return sorted(series.glob("S2_SIM_????????.tif"))


def _rewrite(path: Path, edit: Callable) -> None:
    """Rewrite the GeoTIFF at ``path`` with ``edit(data, profile, descriptions, tags, band_tags)`` applied."""
    with rasterio.open(path) as src:
        prof, data = src.profile.copy(), src.read()
        desc, tags = list(src.descriptions), src.tags()
        band_tags = [src.tags(i + 1) for i in range(src.count)]
    data, prof, desc, tags, band_tags = edit(data, prof, desc, tags, band_tags)
    prof["count"] = data.shape[0]
    path.unlink()
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(data)
        dst.update_tags(**tags)
        for i, name in enumerate(desc):
            dst.set_band_description(i + 1, name)
            if band_tags[i]:
                dst.update_tags(i + 1, **band_tags[i])


def _float(data, prof):
    return data.astype(np.float32), {**prof, "dtype": "float32", "nodata": float("nan")}


def _all_nan(p: Path) -> None:
    _rewrite(p, lambda d, pr, de, t, b: (np.full(d.shape, np.nan, np.float32), _float(d, pr)[1], de, t, b))


def _nan_band(p: Path) -> None:
    def edit(d, pr, de, t, b):
        a, pr = _float(d, pr)
        a[de.index("B04")] = np.nan  # red: every feature of the model needs it
        return a, pr, de, t, b
    _rewrite(p, edit)


def _no_crs(p: Path) -> None:
    _rewrite(p, lambda d, pr, de, t, b: (d, {**pr, "crs": None}, de, t, b))


def _one_pixel(p: Path) -> None:
    _rewrite(p, lambda d, pr, de, t, b: (d[:, :1, :1], {**pr, "width": 1, "height": 1, "tiled": False}, de, t, b))


def _no_wavelengths(p: Path) -> None:
    _rewrite(p, lambda d, pr, de, t, b: (d, pr, de, t, [{} for _ in b]))


def _without(band: str) -> Callable[[Path], None]:
    def make(p: Path) -> None:
        def edit(d, pr, de, t, b):
            i = de.index(band)
            return np.delete(d, i, axis=0), pr, de[:i] + de[i + 1:], t, b[:i] + b[i + 1:]
        _rewrite(p, edit)
    return make


def _shifted(p: Path) -> None:
    _rewrite(p, lambda d, pr, de, t, b: (d, {**pr, "transform": pr["transform"] * Affine.translation(0.5, 0.5)},
                                         de, t, b))


def _truncated(p: Path) -> None:
    size = p.stat().st_size
    with open(p, "r+b") as f:
        f.truncate(int(size * 0.6))


@dataclass
class Case:
    make: Callable[[Path], None]
    expect: str  # "error", "warning" or "none" (exit 0 without a warning)
    match: str  # regex the error / warning line must hold (besides the file name)
    decision: str
    victim: int = 20  # index of the broken date (20: mid-season, 2021-05-06)


# {name}: the broken file's name in the message
CASES = {
    "zero-bytes": Case(lambda p: p.write_bytes(b""), "error", r"{name} is empty \(0 bytes\)",
                       "cannot be read at all: an error naming it; a silent gap would hide a failed download"),
    "truncated": Case(_truncated, "error",
                      r"cannot read {name}: band B\d\w, rows \d+-\d+, cols \d+-\d+ .*TIFF\w+ failed, got \d+ of \d+ "
                      r"bytes.*truncated",
                      "its header opens but its pixels fail inside the lazy (dask) read: an error naming the file, "
                      "the band and the window, from inside compute, not a dask traceback"),
    "not-a-raster": Case(lambda p: p.write_text("date,ndvi\n2021-05-06,0.4\n"), "error",
                         r"{name} is not a raster GDAL can read", "cannot be read at all: an error naming it"),
    "all-nan": Case(_all_nan, "warning", r"{name} \(2021-05-06\) has no valid pixel: the date is treated as missing",
                    "an empty date is normal in a season (like a fully cloudy one): the run goes on without it "
                    "and says so"),
    "nan-band": Case(_nan_band, "warning",
                     r"{name} \(2021-05-06\): band B04 has no valid pixel: the date is treated as missing",
                     "the model needs B04 on each date it uses: without it the date is treated as missing, and the "
                     "warning names the empty band"),
    "no-crs": Case(_no_crs, "error", r"{name} has no CRS",
                   "a date that cannot be placed is refused: assuming the others' grid could misplace it silently"),
    "1x1": Case(_one_pixel, "warning",
                r"{name} is on another grid \(1x1 px at 10 m\) .*resampled onto the series grid, of which it covers "
                r"0\.07\d? %$",
                "a date on another grid is resampled onto the series grid (bilinear / average); a 1x1 px file "
                "covers one pixel of it (the rest of that date has no data): said in one line, with the share"),
    "1x1-earliest": Case(_one_pixel, "warning", r"{name} is on another grid \(1x1 px at 10 m\)",
                         "the series grid is the one most dates share, so an odd earliest date does not shrink the "
                         "map to 1x1 px", victim=0),
    "shifted-grid": Case(_shifted, "warning",
                         r"{name} is on another grid \(37x37 px at 10 m, origin shifted by 5, -5 m\) .*it is "
                         r"resampled onto the series grid, of which it covers 97 %",
                         "today's behaviour, kept: a date on another grid is reprojected onto the series grid; "
                         "now it is also said"),
    "no-wavelengths": Case(_no_wavelengths, "none", "",
                           "Sentinel-2 bands are identified by name: no wavelength metadata is needed, no warning"),
    "band-missing-unused": Case(_without("B12"), "warning",
                                r"band B12 is on 40 of 41 inputs, not on {name}: left out of the series",
                                "the series keeps the bands every date has; the model does not use B12, so the run "
                                "goes on and says which file lacks it"),
    "band-missing-needed": Case(_without("B05"), "error",
                                r"{name} lacks band B05, which the model needs and the other inputs have",
                                "a date exported without a band the model needs is a data-preparation error, not "
                                "a normal gap: refused, naming the file and the band"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_stress_with_one_broken_date(season, clean, capsys, tmp_path, case):
    c = CASES[case]
    series = tmp_path / "series"
    shutil.copytree(season / "sim" / "series", series)
    victim = _dates(series)[c.victim]
    c.make(victim)
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = cli(capsys, "-q", "stress", series, "-o", out / "map.tif", "-m", season / "m.safetensors")
    assert "Traceback" not in err + stdout, err
    pattern = c.match.format(name=re.escape(victim.name))
    lines = err.strip().splitlines()
    if c.expect == "error":
        assert code == 2, (code, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert victim.name in lines[0] and re.search(pattern, lines[0]), lines[0]
        assert sorted(p.name for p in out.iterdir()) == [], "a failed run left files (outputs or temporaries)"
        return
    assert code == 0, err
    base_warnings, base_map, base_files = clean
    assert not [ln for ln in lines if not ln.startswith("warning: ")], err
    new = [ln for ln in _warning_lines(err) if ln not in base_warnings]
    if c.expect == "none":
        assert new == [], err
    else:
        assert len(new) == 1, err
        assert victim.name in new[0] and re.search(pattern, new[0]), new[0]
    assert sorted(p.name for p in out.iterdir()) == base_files  # the same outputs, no temporaries
    with rasterio.open(out / "map.tif") as src, rasterio.open(series / _dates(series)[1].name) as ref:
        assert (src.crs, src.transform, src.shape) == (ref.crs, ref.transform, ref.shape)
        cls = src.read(1)
    assert set(np.unique(cls)) <= {0, 1, 2, 3}
    # one date fewer changes a few pixels, not the map
    assert (cls > 0).sum() >= 0.9 * (base_map > 0).sum()
    assert (cls == base_map).mean() >= 0.8, (cls == base_map).mean()
    if case == "no-wavelengths":
        np.testing.assert_array_equal(cls, base_map)


def test_truncated_date_fails_inside_dask_as_an_input_error(season, tmp_path):
    """The series is read lazily: the failure surfaces in dask's compute, as an InputError naming file, band and
    window (a chunk of 16 px: the window is the chunk's, not the whole grid)."""
    from hsikit.io.timeseries import open_series

    series = tmp_path / "series"
    shutil.copytree(season / "sim" / "series", series)
    victim = _dates(series)[20]
    _truncated(victim)
    ds = open_series(series, chunks=16)
    with pytest.raises(InputError, match=rf"cannot read {re.escape(victim.name)}: band B02, rows 0-15, cols 16-31 "):
        ds.reflectance.sel(band="B02").isel(time=20, y=slice(0, 16), x=slice(16, 32)).compute()


@pytest.mark.parametrize("name", ["map", "map.png"])
def test_stress_refuses_an_output_name_before_loading_anything(capsys, tmp_path, name):
    # neither the model nor the series exists: the output name must be refused first
    code, stdout, err = cli(capsys, "-q", "stress", tmp_path / "no_series", "-o", tmp_path / name, "-m",
                            tmp_path / "no_model.safetensors")
    assert code == 2, err
    lines = err.strip().splitlines()
    why = "has no extension" if name == "map" else "ends in '.png'"
    assert len(lines) == 1 and re.match(rf"error: \S*--out {re.escape(name)} {re.escape(why)}", lines[0]), err
    assert "no_model" not in err and "no_series" not in err
    assert list(tmp_path.iterdir()) == []
