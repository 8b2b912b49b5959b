"""`hsikit s2 stack` and `hsikit s2 series`: outputs, messages, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from clirun import cli
from s2fake import write_safe, write_stack


@pytest.fixture
def l2a(tmp_path):
    scl = np.full((30, 30), 4, np.uint8)
    scl[:15] = 8  # upper half: medium-probability cloud
    b05 = np.full((30, 30), 3000, np.uint16)
    b05[0, 0] = 0  # one nodata pixel
    return write_safe(tmp_path, baseline="04.00", scl=scl, bands={"B05": b05}, when="2023-06-03T10:15:59Z")


def test_help(capsys):
    code, out, _ = cli(capsys, "s2", "--help")
    assert code == 0 and "stack" in out and "series" in out
    code, out, _ = cli(capsys, "s2", "stack", "--help")
    assert code == 0 and "--resolution" in out and "--cloud-mask" in out and "--offset" in out


def test_stack_safe_with_cloud_mask(capsys, tmp_path, l2a):
    out, mask = tmp_path / "refl.tif", tmp_path / "mask.tif"
    code, stdout, err = cli(capsys, "s2", "stack", l2a, "-o", out, "--resolution", "20", "--bands", "B5,B8A,B02",
                            "--cloud-mask", mask)
    assert code == 0, err
    assert "3 bands B05,B8A,B02" in stdout and "30x30 px" in stdout and "2023-06-03" in stdout
    assert "cloud 49.9 %" in stdout  # 449 of 899 valid pixels
    with rasterio.open(out) as ds:
        assert ds.dtypes == ("float32",) * 3 and ds.res == (20.0, 20.0) and ds.crs.to_epsg() == 32633
        assert ds.descriptions == ("B05 (704.1 nm)", "B8A (864.7 nm)", "B02 (492.4 nm)")
        assert ds.tags(1)["wavelength"] == "704.1" and ds.tags()["ACQUISITION_DATE"].startswith("2023-06-03")
        assert "HSIKIT_COMMAND" in ds.tags()
        data = ds.read()
    assert np.isnan(data[:, 0, 0]).all()
    np.testing.assert_allclose(data[0].ravel()[1:], 0.2, atol=1e-6)  # (3000 - 1000) / 10000
    with rasterio.open(mask) as ds:
        m = ds.read(1)
        assert ds.dtypes == ("uint8",)
    assert m[0, 0] == 0 and (m[:15].ravel()[1:] == 2).all() and (m[15:] == 1).all()
    # existing outputs are not replaced without --overwrite
    code, _, err = cli(capsys, "s2", "stack", l2a, "-o", out)
    assert code == 2 and "exists" in err and "--overwrite" in err
    code, _, err = cli(capsys, "s2", "stack", l2a, "-o", out, "--overwrite", "--offset", "-1000")
    assert code == 2 and "GeoTIFF stacks" in err


def test_stack_geotiff_with_offset_and_errors(capsys, tmp_path):
    stack = write_stack(tmp_path / "gee_20230603.tif", np.full((2, 8, 8), 1500, np.uint16), ["B4", "B8"])
    out = tmp_path / "refl.tif"
    code, stdout, err = cli(capsys, "s2", "stack", stack, "-o", out, "--offset", "-1000")
    assert code == 0, err
    with rasterio.open(out) as ds:
        assert ds.descriptions == ("B04 (664.6 nm)", "B08 (832.8 nm)")
        np.testing.assert_allclose(ds.read(), 0.05, atol=1e-6)
    code, _, err = cli(capsys, "s2", "stack", stack, "-o", tmp_path / "m.tif", "--cloud-mask", tmp_path / "c.tif")
    assert code == 2 and "no SCL band or cloud mask" in err
    assert not (tmp_path / "m.tif").exists()
    code, _, err = cli(capsys, "s2", "stack", stack, "-o", tmp_path / "x.tif", "--bands", "B11")
    assert code == 2 and "lacks band(s) B11" in err
    code, _, err = cli(capsys, "s2", "stack", tmp_path / "none.tif", "-o", tmp_path / "y.tif")
    assert code == 2 and "not found" in err


def test_series_table_and_json(capsys, tmp_path, l2a):
    write_safe(tmp_path, level="L1C", when="2023-05-01T10:00:00Z", tile="T33UUU")
    code, stdout, err = cli(capsys, "s2", "series", tmp_path)
    assert code == 0, err
    assert "2 dates" in stdout and "2023-05-01" in stdout and "2023-06-03" in stdout and "T33UUU" in stdout
    code, stdout, _ = cli(capsys, "s2", "series", tmp_path, "--json", "--resolution", "20")
    assert code == 0
    d = json.loads(stdout)
    assert d["dates"] == 2 and d["resolution"] == 20.0 and d["width"] == 30
    first, second = d["acquisitions"]
    assert first["level"] == "L1C" and first["cloud_source"] == "none" and first["cloud_pct"] == 0.0
    assert second["cloud_source"] == "SCL" and second["cloud_pct"] == pytest.approx(100 * 449 / 899, abs=0.01)
    assert second["valid_pct"] == pytest.approx(100 * 899 / 900, abs=0.01)


@pytest.mark.shared
def test_stack_and_series_on_real_data(capsys, tmp_path, shared_data):
    tif = shared_data / "demmin_sentinel2/sentinel2_fields.tif"
    out = tmp_path / "demmin_refl.tif"
    code, stdout, err = cli(capsys, "s2", "stack", tif, "-o", out)
    assert code == 0, err
    with rasterio.open(out) as ds, rasterio.open(tif) as src:
        assert [d.split()[0] for d in ds.descriptions] == ["B04", "B03", "B02", "B08"]
        np.testing.assert_allclose(ds.read(4), src.read(4) / 10000.0, rtol=1e-6)
    code, stdout, err = cli(capsys, "s2", "series", shared_data / "eolearn_s2_timeseries", "--json")
    assert code == 0, err
    d = json.loads(stdout)
    assert d["dates"] == 68 and d["crs"] == "EPSG:32633"
