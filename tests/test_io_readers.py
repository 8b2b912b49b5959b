"""Readers on the real files of ../shared/data and on generated ENVI / GeoTIFF / VRT / HDF5 files."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import scipy.io
from rasterio.windows import Window

from hsikit.errors import InputError
from hsikit.io import open_scene
from hsikit.io.benchmark import CLASS_NAMES, read_spc
from hsikit.io.envi import read_envi_metadata

ENMAP_TILE = "enmap_potsdam/images/enmap_potsdam_tile_128_0.tif"


def test_enmap_l2a_tile(shared_data):
    with open_scene(shared_data / ENMAP_TILE) as sc:
        assert sc.shape == (224, 32, 32) and sc.dtype == "float32"
        assert sc.crs.to_epsg() == 32633 and sc.res == (30.0, 30.0)
        assert sc.bands.wavelengths[0] == pytest.approx(418.24) and sc.bands.wavelengths[-1] == pytest.approx(2445.53)
        assert [i for i, b in enumerate(sc.bands.bad) if b] == [129, 130, 131, 132, 133, 134]
        assert sc.nodata == -32768 and sc.bands.scale[0] == pytest.approx(1e-4)
        assert sc.bands.fwhm[0] == pytest.approx(6.99561)
        assert sc.read_valid().all(), "only the bad bands hold nodata"
        full = sc.read()
        np.testing.assert_array_equal(sc.read(Window(5, 7, 9, 4), bands=[0, 100]), full[[0, 100], 7:11, 5:14])
        assert sc.tags["start_time"].startswith("2022-07-24")


@pytest.mark.parametrize("name", ["cubus_gamsberg_subset", "cubus_gamsberg_subset.hdr"])
def test_envi_gamsberg(shared_data, name):
    with open_scene(shared_data / "envi_gamsberg_subset" / name) as sc:
        assert sc.shape == (189, 25, 10) and sc.crs is None
        assert sc.bands.wavelengths[0] == pytest.approx(426.82, abs=1e-3)
        assert sc.bands.wavelength_units == "nm"
        assert np.all(np.diff(sc.bands.wavelengths) > 0)


def test_envi_header_of_berlin_scene(shared_data):
    from hsikit.io.bandinfo import to_nanometres

    meta = read_envi_metadata(shared_data / "enmap_berlin_labels/enmap_berlin.hdr")
    assert meta["bands"] == 177 and meta["data_ignore_value"] == -99
    assert meta["wavelength_units"].lower().startswith("micro") and max(meta["wavelength"]) < 3
    nm = to_nanometres(meta["wavelength"], meta["wavelength_units"])
    assert 400 < nm[0] < 500 and 2300 < nm[-1] < 2500
    assert "bbl" not in meta and meta["reflectance_scale_factor"] > 0 and len(meta["band_names"]) == 177


def test_mat_ground_truths(shared_data):
    with open_scene(shared_data / "indian_pines_gt/Indian_pines_gt.mat") as sc:
        assert sc.shape == (1, 145, 145) and sc.crs is None
        counts = np.bincount(sc.read()[0].ravel())
        assert counts.tolist() == [10776, 46, 1428, 830, 237, 483, 730, 28, 478, 20, 972, 2455, 593, 205, 1265, 386, 93]
        assert sc.class_names == CLASS_NAMES["indian_pines"] and len(sc.class_names) == 16
    with open_scene(shared_data / "pavia_university_gt/PaviaU_gt.mat") as sc:
        assert sc.shape == (1, 610, 340) and sc.class_names[0] == "Asphalt" and len(sc.class_names) == 9


def test_mat_cube(shared_data):
    path = shared_data / "simulated_indian_pines/simu_indian.mat"
    with open_scene(path) as sc:
        assert sc.shape == (224, 145, 145) and sc.dtype == "float64"
        ref = scipy.io.loadmat(path)["simu_indian"]
        np.testing.assert_array_equal(sc.read(Window(3, 4, 5, 6)), ref[4:10, 3:8].transpose(2, 0, 1))


def test_lan_and_spc(shared_data):
    with open_scene(shared_data / "indian_pines_gt/92AV3GT.GIS") as sc:
        assert sc.shape == (1, 145, 145) and sc.crs is None, "LAN's identity georeferencing is not a CRS"
        assert sc.class_names[1] == "Corn-notill"
        assert np.bincount(sc.read()[0].ravel())[1] == 54
    wl, fwhm = read_spc(shared_data / "indian_pines_gt/92AV3C.spc")
    assert wl.size == 220 and 399 < wl[0] < 401 and 2490 < wl[-1] < 2510 and (fwhm > 0).all()


def test_sentinel2_geotiff(shared_data):
    with open_scene(shared_data / "demmin_sentinel2/sentinel2_fields.tif") as sc:
        assert sc.bands.names == ("B4", "B3", "B2", "B8") and sc.crs.to_epsg() == 4326 and sc.dtype == "uint16"
        assert sc.shape == (4, 242, 620)


def write_envi(path, data, interleave, header_extra=""):
    """Raw ENVI file + header written by hand, (bands, rows, cols) float32 little-endian."""
    b, h, w = data.shape
    order = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (1, 2, 0)}[interleave]
    data.transpose(order).astype("<f4").tofile(path)
    path.with_suffix(".hdr").write_text(
        "ENVI\n"
        f"samples = {w}\nlines = {h}\nbands = {b}\nheader offset = 0\nfile type = ENVI Standard\n"
        f"data type = 4\ninterleave = {interleave}\nbyte order = 0\n"
        "map info = {UTM, 1, 1, 366000.0, 5810000.0, 30.0, 30.0, 33, North, WGS-84}\n"
        "wavelength units = Micrometers\n"
        "wavelength = {" + ", ".join(f"{0.4 + 0.1 * i:.3f}" for i in range(b)) + "}\n"
        "fwhm = {" + ", ".join("0.010" for _ in range(b)) + "}\n"
        "bbl = {" + ", ".join("0" if i == 1 else "1" for i in range(b)) + "}\n"
        "data ignore value = -99\nreflectance scale factor = 10000\n" + header_extra
    )
    return path


@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
def test_generated_envi(tmp_path, interleave):
    data = np.random.default_rng(0).uniform(0, 5000, (5, 12, 9)).astype(np.float32)
    data[:, 2, 3] = -99
    p = write_envi(tmp_path / f"cube.{interleave}", data, interleave)
    with open_scene(p) as sc:
        assert sc.shape == (5, 12, 9)
        np.testing.assert_array_equal(sc.read(), data)
        np.testing.assert_array_equal(sc.read(Window(2, 3, 4, 5)), data[:, 3:8, 2:6])
        assert sc.bands.wavelengths == pytest.approx((400.0, 500.0, 600.0, 700.0, 800.0))
        assert sc.bands.fwhm == pytest.approx((10.0,) * 5) and sc.bands.wavelength_units == "micrometers"
        assert sc.bands.bad == (False, True, False, False, False)
        assert sc.nodata == -99 and sc.bands.scale == pytest.approx((1e-4,) * 5)
        assert sc.crs.to_epsg() == 32633 and sc.transform.c == 366000.0
        valid = sc.read_valid()
        assert not valid[2, 3] and valid.sum() == 12 * 9 - 1


def test_generated_geotiff_masks(fake_geotiff):
    p = fake_geotiff(bands=4, height=20, width=30, nodata=-9999.0, nodata_border=2)
    with open_scene(p) as sc:
        v = sc.read_valid()
        assert not v[:2].any() and not v[:, :2].any() and v[2:, 2:].all()
        assert sc.bands.wavelengths[0] == pytest.approx(420.0)
        np.testing.assert_array_equal(sc.read()[:, 5:9, 10:20], sc.read(Window(10, 5, 10, 4)))
    q = fake_geotiff("nan.tif", bands=3, nodata=None)
    import rasterio

    with rasterio.open(q, "r+") as dst:
        d = dst.read()
        d[1, 4, 6] = np.nan
        dst.write(d)
    with open_scene(q) as sc:
        v = sc.read_valid()
        assert not v[4, 6] and v.sum() == v.size - 1


@pytest.mark.skipif(shutil.which("gdalbuildvrt") is None, reason="gdalbuildvrt (Debian gdal-bin) not installed")
def test_vrt(fake_geotiff, tmp_path):
    p = fake_geotiff(bands=3)
    vrt = tmp_path / "s.vrt"
    subprocess.run(["gdalbuildvrt", "-q", str(vrt), str(p)], check=True)
    with open_scene(vrt) as a, open_scene(p) as b:
        assert a.shape == b.shape and a.crs == b.crs and a.transform == b.transform
        np.testing.assert_array_equal(a.read(), b.read())


def test_hdf5_subdataset(tmp_path):
    h5py = pytest.importorskip("h5py", reason="h5py not installed")
    import rasterio

    if "HDF5" not in rasterio.drivers.raster_driver_extensions().values():
        pytest.skip("this GDAL build has no HDF5 driver")
    p = tmp_path / "cube.h5"
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    with h5py.File(p, "w") as f:
        f["reflectance"] = data
    with open_scene(f'HDF5:"{p}"://reflectance') as sc:
        np.testing.assert_array_equal(sc.read(), data)


def test_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        open_scene(tmp_path / "missing.tif")
    bad = tmp_path / "text.tif"
    bad.write_text("hello")
    with pytest.raises(InputError, match="not a raster"):
        open_scene(bad)
    with pytest.raises(InputError, match="directory"):
        open_scene(tmp_path)
    two = tmp_path / "two.mat"
    scipy.io.savemat(two, {"a": np.zeros((4, 5)), "b": np.ones((4, 5, 3))})
    with pytest.raises(InputError, match="--variable"):
        open_scene(two)
    with open_scene(two, variable="b") as sc:
        assert sc.shape == (3, 4, 5) and sc.read().min() == 1
    with pytest.raises(InputError, match="no numeric variable"):
        open_scene(two, variable="c")


def test_netcdf_subdataset(tmp_path):
    import rasterio
    from scipy.io import netcdf_file

    if "netCDF" not in rasterio.drivers.raster_driver_extensions().values():
        pytest.skip("this GDAL build has no netCDF driver")
    p = tmp_path / "t.nc"
    f = netcdf_file(p, "w")
    f.createDimension("y", 3)
    f.createDimension("x", 4)
    v = f.createVariable("refl", "f4", ("y", "x"))
    v[:] = np.arange(12, dtype=np.float32).reshape(3, 4)
    f.close()
    with open_scene(f'NETCDF:"{p}":refl') as sc:
        assert sc.shape == (1, 3, 4)
        # GDAL presents netCDF north-up: rows come bottom-first from a y-ascending file
        assert sorted(sc.read().ravel().tolist()) == list(range(12))
