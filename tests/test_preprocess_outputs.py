"""What ``hsikit preprocess`` writes besides pixels: a readable HSIKIT_PREPROCESSING tag (the full chain in the
"HSIKIT" metadata domain when it is long), a chain that replays from the output, and bad-band flags that read
back as they were written."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import rasterio

from clirun import cli
from fakedata import write_fake_geotiff
from hsikit.io import open_scene
from hsikit.pipelines.preprocess import preprocess_scene, read_chain_tag

TAG = "HSIKIT_PREPROCESSING"


@pytest.fixture
def scene224(tmp_path):
    return write_fake_geotiff(tmp_path / "scene224.tif", bands=224, height=24, width=20)


def test_resampled_224_band_scene_keeps_default_domain_readable(scene224, tmp_path, capsys):
    out = tmp_path / "s2.tif"
    code, _, err = cli(capsys, "-q", "preprocess", scene224, "-o", out, "--resample-to", "sentinel2", "--normalize")
    assert code == 0, err
    with rasterio.open(out) as dst:
        default = dst.tags()[TAG]
        full = dst.tags(ns="HSIKIT").get(TAG) or default
        assert len(default) < 8192, len(default)
        assert "matrix" not in full and "e-3" not in full
        chain = json.loads(default)
        assert [s["op"] for s in chain["steps"]][:3] == ["scale", "resample", "normalize"]
        assert dst.count == 13 and dst.descriptions[3] == "B04 (664.6 nm)"
        assert float(dst.tags(4)["wavelength"]) == pytest.approx(664.6)
    # the chain read back from the output replays to the same pixels on the same scene
    again = tmp_path / "again.tif"
    preprocess_scene(scene224, out=again, chain=out, progress=False)
    with rasterio.open(out) as a, rasterio.open(again) as b:
        np.testing.assert_array_equal(a.read(), b.read())
    assert read_chain_tag(out)["steps"][1]["params"]["sensor"] == "sentinel2"


def test_pca_chain_goes_to_its_own_domain(scene224, tmp_path):
    """224 x 30 PCA components cannot be short: the default domain gets a summary, "HSIKIT" the full chain."""
    out = tmp_path / "pca.tif"
    preprocess_scene(scene224, out=out, normalize=True, pca=30, progress=False)
    with rasterio.open(out) as dst:
        summary = json.loads(dst.tags()[TAG])
        full = json.loads(dst.tags(ns="HSIKIT")[TAG])
    assert summary["summary"] is True and "HSIKIT" in summary["full_chain"]
    assert len(json.dumps(summary)) < 2000
    pca = next(s for s in summary["steps"] if s["op"] == "pca")
    assert pca["params"] == {"n_components": 30, "whiten": False}
    assert len(full["steps"][-2]["params"]["components"]) == 30
    assert read_chain_tag(out) == full
    again = tmp_path / "again.tif"
    preprocess_scene(scene224, out=again, chain=out, progress=False)
    with rasterio.open(out) as a, rasterio.open(again) as b:
        np.testing.assert_array_equal(a.read(), b.read())


def test_short_chain_stays_whole_in_default_domain(tmp_path):
    scene = write_fake_geotiff(tmp_path / "scene.tif", bands=6)
    out = tmp_path / "n.tif"
    res = preprocess_scene(scene, out=out, normalize=True, progress=False)
    with rasterio.open(out) as dst:
        assert dst.tags(ns="HSIKIT") == {}
        assert json.loads(dst.tags()[TAG]) == res.chain == read_chain_tag(out)


def test_gdalinfo_output_of_resampled_scene_is_short(scene224, tmp_path, capsys):
    gdalinfo = shutil.which("gdalinfo")
    if gdalinfo is None:
        pytest.skip("gdalinfo is not installed (Debian: apt-get install gdal-bin)")
    out = tmp_path / "s2.tif"
    code, _, err = cli(capsys, "-q", "preprocess", scene224, "-o", out, "--resample-to", "sentinel2", "--normalize")
    assert code == 0, err
    text = subprocess.run([gdalinfo, str(out)], capture_output=True, text=True, check=True).stdout
    assert len(text) < 20_000, len(text)  # it was over 60 KB with the matrix
    assert max(len(line) for line in text.splitlines()) < 8192


# ------------------------------------------------------------------------------------------------------------------
# bad-band flags: written as bad_band = 1 good / 0 bad (like ENVI bbl) and read back as the same flags
# ------------------------------------------------------------------------------------------------------------------
def _flag_bad(path, bands_0based):
    with rasterio.open(path, "r+") as dst:
        for i in range(dst.count):
            dst.update_tags(i + 1, bbl="0" if i in bands_0based else "1")
    return path


def test_bad_band_flags_round_trip_through_preprocess(tmp_path, capsys):
    scene = _flag_bad(write_fake_geotiff(tmp_path / "scene.tif", bands=8), {2})
    with open_scene(scene) as sc:
        assert sc.bands.bad == (False, False, True, False, False, False, False, False)
    kept = tmp_path / "kept.tif"
    code, _, err = cli(capsys, "-q", "preprocess", scene, "-o", kept, "--normalize")
    assert code == 0, err
    with rasterio.open(kept) as dst:
        assert [dst.tags(i + 1)["bad_band"] for i in range(dst.count)] == ["1", "1", "0", "1", "1", "1", "1", "1"]
    with open_scene(kept) as out:
        assert out.bands.bad == (False, False, True, False, False, False, False, False)
        assert out.bands.wavelengths == pytest.approx(open_scene(scene).bands.wavelengths)
    dropped = tmp_path / "dropped.tif"
    code, _, err = cli(capsys, "-q", "preprocess", scene, "-o", dropped, "--drop-bad-bands")
    assert code == 0, err
    with rasterio.open(dropped) as dst:
        # band 3 is flagged bad and band 6 (1834 nm) lies in a water-vapour window
        assert dst.count == 6 and {dst.tags(i + 1)["bad_band"] for i in range(dst.count)} == {"1"}
    with open_scene(dropped) as out:
        assert not any(out.bands.bad)


def test_real_enmap_bad_bands_round_trip(shared_data, tmp_path, capsys):
    """EnMAP's six bbl=0 bands stay flagged bad after preprocessing that keeps them."""
    src = shared_data / "enmap_potsdam/images/enmap_potsdam_tile_96_32.tif"
    out = tmp_path / "enmap_scaled.tif"
    code, _, err = cli(capsys, "-q", "preprocess", src, "-o", out)
    assert code == 0, err
    with open_scene(src) as a, open_scene(out) as b:
        assert sum(a.bands.bad) == 6
        assert b.bands.bad == a.bands.bad


def test_summary_without_full_chain_is_a_clear_error(scene224, tmp_path):
    """Replaying from a copy that lost the "HSIKIT" domain says so instead of replaying a summary."""
    from hsikit.errors import InputError

    out = tmp_path / "pca.tif"
    preprocess_scene(scene224, out=out, normalize=True, pca=30, progress=False)
    stripped = tmp_path / "stripped.tif"
    with rasterio.open(out) as src:
        profile, data, tags = src.profile, src.read(), src.tags()
    with rasterio.open(stripped, "w", **{**profile, "driver": "GTiff"}) as dst:
        dst.write(data)
        dst.update_tags(**tags)
    with pytest.raises(InputError, match=r"^stripped\.tif holds only a summary of its preprocessing chain"):
        preprocess_scene(scene224, out=tmp_path / "again.tif", chain=stripped, progress=False)
