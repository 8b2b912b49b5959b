"""Bands with missing values: the survey, the per-pixel fill of bands missing almost everywhere, the warnings,
and what classify and denoise do with them."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from hsikit.errors import InputError
from hsikit.io.bandinfo import BandInfo
from hsikit.io.gaps import check_band_gaps, fill_tags, survey
from hsikit.io.scene import ArrayScene


def _scene(cube: np.ndarray, nodata=None, wavelengths=True, bad=()) -> ArrayScene:
    n = cube.shape[0]
    bands = BandInfo(names=tuple(f"b{i + 1}" for i in range(n)),
                     wavelengths=tuple(400.0 + 10 * i for i in range(n)) if wavelengths else None,
                     bad=tuple(i in bad for i in range(n)) if bad else ())
    return ArrayScene(cube, nodata=nodata, bands=bands, path="scene.tif")


def _ramp(n=8, h=20, w=30, dtype="float32") -> np.ndarray:
    """Spectra linear in wavelength, different per pixel: interpolation must restore a missing band exactly."""
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 0.5, (h, w)), rng.uniform(-0.01, 0.01, (h, w))
    cube = a[None] + b[None] * np.arange(n)[:, None, None]
    return (cube * 10000).astype(dtype) if np.dtype(dtype).kind in "iu" else cube.astype(dtype)


def test_a_dead_band_is_filled_from_its_neighbours_and_no_longer_voids_pixels():
    clean = _ramp()
    cube = clean.copy()
    cube[3] = np.nan
    sc = _scene(cube)
    assert not sc.read_valid().any()  # before: one NaN band makes every pixel invalid
    with pytest.warns(UserWarning, match=r"band 4 \(430 nm\) is missing in 100 % of pixels: filled by "
                                         r"interpolating band 3 \(420 nm\) and band 5 \(440 nm\)"):
        notes = check_band_gaps(sc)
    assert len(notes) == 1
    assert sc.read_valid().all()
    np.testing.assert_allclose(sc.read(), clean, rtol=1e-5)
    np.testing.assert_allclose(sc.read(bands=[3]), clean[[3]], rtol=1e-5)  # alone: its neighbours are read too
    tags = json.loads(fill_tags(sc)["HSIKIT_FILLED_BANDS"])
    assert tags == [{"band": 4, "name": "b4", "missing_share": 1.0, "interpolated_from": [3, 5]}]
    assert check_band_gaps(sc) == []  # once per scene


def test_integer_scene_with_nodata_edge_band_and_bad_bands():
    clean = _ramp(dtype="int16")
    cube = clean.copy()
    cube[0] = -9999  # the first band: extrapolated from its nearest neighbour
    cube[6] = -9999  # flagged bad: ignored by the survey, as by validity
    sc = _scene(cube, nodata=-9999, bad=(6,))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        check_band_gaps(sc)
    assert [str(w.message) for w in rec if "band 1 (400 nm)" in str(w.message)]
    assert not [w for w in rec if "band 7" in str(w.message)]
    out = sc.read()
    assert out.dtype == np.int16 and (out[0] == clean[1]).all() and (out[6] == -9999).all()


def test_a_partly_missing_band_makes_those_pixels_nodata_and_says_so():
    cube = _ramp()
    cube[2, :, :6] = np.nan  # 20 % of the pixels
    sc = _scene(cube)
    with pytest.warns(UserWarning, match=r"band 3 \(420 nm\) is missing in 20 % of pixels: those pixels are "
                                         "written as nodata"):
        check_band_gaps(sc)
    assert sc.band_fill is None
    valid = sc.read_valid()
    assert not valid[:, :6].any() and valid[:, 6:].all()


def test_no_wavelengths_interpolates_by_band_order_and_empty_scenes_are_refused():
    clean = _ramp()
    cube = clean.copy()
    cube[5] = np.nan
    sc = _scene(cube, wavelengths=False)
    with pytest.warns(UserWarning, match="band 6 is missing"):
        check_band_gaps(sc)
    np.testing.assert_allclose(sc.read(), clean, rtol=1e-5)
    with pytest.raises(InputError, match="scene.tif has no valid pixel: every band is NaN everywhere"):
        check_band_gaps(_scene(np.full_like(clean, np.nan)))
    nodata = _scene(np.full((4, 10, 10), 7, np.uint16), nodata=7)
    with pytest.raises(InputError, match=r"or nodata \(7\) everywhere"):
        check_band_gaps(nodata)


def test_survey_of_a_large_scene_reads_only_a_sample_and_finds_a_small_valid_area():
    cube = np.full((3, 2000, 1500), np.nan, np.float32)
    cube[:, 1000:1003, 700:703] = 1.0  # a few valid pixels the 4 x 4 sample windows miss
    sc = _scene(cube)
    reads = []
    original = sc._read
    sc._read = lambda w, b: (reads.append(int(w.width) * int(w.height)), original(w, b))[1]
    g = survey(sc)
    assert g.nonempty == 0 and sum(reads) == 16 * 64 * 64
    check_band_gaps(sc)  # not refused: the full scan finds the valid pixels
    assert sc.read_valid(Window(700, 1000, 3, 3)).all()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A classifier on the synthetic scene, whose spectra are smooth in wavelength like real ones."""
    from hsikit.cli.main import run
    from hsikit.synthetic import make_scene, write_scene_geotiff

    d = tmp_path_factory.mktemp("gaps")
    s = make_scene(60, 60, seed=1)
    scene = write_scene_geotiff(s, d / "scene.tif")
    labels = d / "labels.tif"
    with rasterio.open(scene) as src:
        profile = src.profile
    profile.update(count=1, dtype="uint8", nodata=0)
    with rasterio.open(labels, "w", **profile) as dst:
        dst.write(s.labels, 1)
    model = d / "m.safetensors"
    assert run(["-q", "train", "classifier", str(scene), "--labels", str(labels), "-o", str(model), "--epochs", "8",
                "--seed", "0"]) == 0
    return d, scene, s, model


def test_classify_with_a_dead_band_maps_the_scene_like_the_intact_one(trained, capsys, tmp_path):
    from clirun import cli
    from hsikit.synthetic import write_scene_geotiff

    d, scene, s, model = trained
    band = int(np.flatnonzero(~s.bad)[30])  # a good band in the visible/NIR
    s.cube[band] = s.nodata
    broken = write_scene_geotiff(s, tmp_path / "broken.tif")
    assert cli(capsys, "-q", "classify", scene, "-m", model, "-o", tmp_path / "a.tif")[0] == 0
    code, _, err = cli(capsys, "-q", "classify", broken, "-m", model, "-o", tmp_path / "b.tif")
    assert code == 0 and err.count("warning:") == 1 and f"band {band + 1} (" in err and "filled" in err
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        ma, mb = a.read(1), b.read(1)
        assert ((mb > 0) == (ma > 0)).all() and (mb > 0).mean() > 0.5  # only the swath's own nodata
        assert (ma == mb)[ma > 0].mean() > 0.98
        assert json.loads(b.tags()["HSIKIT_FILLED_BANDS"])[0]["band"] == band + 1
        assert "HSIKIT_FILLED_BANDS" not in a.tags()
