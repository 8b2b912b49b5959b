"""``hsikit.io.open_scene`` and friends on every real file type in ../shared/data and on generated
ENVI (BSQ/BIL/BIP), GeoTIFF and VRT files; validity masks, windowed reads, xarray view and input errors."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import rasterio
import scipy.io
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

from fakedata import fake_wavelengths, write_fake_geotiff
from hsikit.errors import InputError
from hsikit.io import open_scene
from hsikit.io.bandinfo import BandInfo, to_nanometres
from hsikit.io.matcubes import read_spc
from hsikit.io.envi import read_envi_metadata

ENMAP_TILE = "enmap_potsdam/images/enmap_potsdam_tile_128_0.tif"
GAMSBERG = "envi_gamsberg_subset/cubus_gamsberg_subset"
BERLIN_HDR = "enmap_berlin_labels/enmap_berlin.hdr"

INDIAN_PINES_NAMES = [
    "Alfalfa", "Corn-notill", "Corn-mintill", "Corn", "Grass-pasture", "Grass-trees", "Grass-pasture-mowed",
    "Hay-windrowed", "Oats", "Soybean-notill", "Soybean-mintill", "Soybean-clean", "Wheat", "Woods",
    "Buildings-Grass-Trees-Drives", "Stone-Steel-Towers",
]
PAVIA_U_NAMES = ["Asphalt", "Meadows", "Gravel", "Trees", "Painted metal sheets", "Bare Soil", "Bitumen",
                 "Self-Blocking Bricks", "Shadows"]


def _counts(a: np.ndarray) -> dict[int, int]:
    v, c = np.unique(a, return_counts=True)
    return {int(x): int(n) for x, n in zip(v, c)}


# ------------------------------------------------------------------------------------------------------------------
# real files
# ------------------------------------------------------------------------------------------------------------------
def test_enmap_l2a_tile(shared_data):
    with open_scene(shared_data / ENMAP_TILE) as sc:
        assert sc.shape == (224, 32, 32)
        assert (sc.count, sc.height, sc.width) == (224, 32, 32)
        assert sc.dtype == "float32"
        assert sc.crs is not None and sc.crs.to_epsg() == 32633
        assert sc.is_georeferenced
        assert sc.res == (30.0, 30.0)
        # tile 128_0 lies 128 px right of the full scene's left edge 362175
        assert sc.transform.c == pytest.approx(362175.0 + 128 * 30.0)
        assert sc.transform.b == 0 and sc.transform.d == 0
        wl = sc.bands.wavelengths
        assert wl is not None and len(wl) == 224
        assert wl[0] == pytest.approx(418.24) and wl[-1] == pytest.approx(2445.53)
        assert min(wl) == pytest.approx(418.24) and max(wl) == pytest.approx(2445.53)
        assert sc.bands.wavelength_units == "nm"
        assert sc.bands.fwhm is not None and len(sc.bands.fwhm) == 224 and all(f > 0 for f in sc.bands.fwhm)
        assert [i for i, b in enumerate(sc.bands.bad) if b] == [129, 130, 131, 132, 133, 134]
        assert len(sc.bands.good_indices()) == 218
        assert sc.nodata == -32768
        assert sc.bands.scale is not None and all(s == pytest.approx(1e-4) for s in sc.bands.scale)
        assert sc.bands.offset is not None and all(o == 0 for o in sc.bands.offset)
        assert sc.tags.get("start_time", "").startswith("2022-07-24")

        data = sc.read()
        assert data.shape == (224, 32, 32) and data.dtype == np.float32
        is_nod = data == -32768
        # only the bad bands hold nodata (all of them, everywhere) ...
        assert is_nod[129:135].all()
        assert not is_nod[:129].any() and not is_nod[135:].any()
        # ... so every pixel is valid: the bad bands are ignored by read_valid
        valid = sc.read_valid()
        assert valid.shape == (32, 32) and valid.dtype == bool and valid.all()
        np.testing.assert_array_equal(sc.read_valid(data=data), valid)

        np.testing.assert_array_equal(sc.read(Window(5, 7, 9, 4), bands=[0, 100, 223]),
                                      data[[0, 100, 223], 7:11, 5:14])


@pytest.mark.parametrize("name", [GAMSBERG, GAMSBERG + ".hdr"], ids=["data-file", "header"])
def test_envi_gamsberg(shared_data, name):
    raw = np.fromfile(shared_data / GAMSBERG, dtype="<f4").reshape(189, 25, 10)  # BSQ, byte order 0
    with open_scene(shared_data / name) as sc:
        assert sc.shape == (189, 25, 10)
        assert (sc.height, sc.width) == (25, 10)
        assert sc.dtype == "float32"
        assert sc.crs is None and not sc.is_georeferenced
        wl = sc.bands.wavelengths
        assert wl is not None and len(wl) == 189
        assert wl[0] == pytest.approx(426.82, abs=1e-3)
        assert wl[-1] == pytest.approx(2324.91, abs=1e-2)
        assert np.all(np.diff(wl) > 0)
        assert sc.bands.wavelength_units == "nm", "'Unknown' units with values > 30 are nanometres"
        assert sc.bands.fwhm[0] == pytest.approx(11.3871)
        assert sc.bands.names[0].startswith("Resize (Band 1:")
        data = sc.read()
        np.testing.assert_array_equal(data, raw)
        assert 0 <= data.min() and data.max() == pytest.approx(5837, abs=1)
        np.testing.assert_array_equal(sc.read(Window(2, 20, 8, 5), bands=[188, 0]), raw[[188, 0], 20:25, 2:10])


def test_envi_metadata_berlin_header(shared_data):
    meta = read_envi_metadata(shared_data / BERLIN_HDR)
    assert (meta["bands"], meta["lines"], meta["samples"]) == (177, 400, 220)
    assert meta["wavelength_units"] == "Micrometers"
    wl = meta["wavelength"]
    assert len(wl) == 177 and wl[0] == pytest.approx(0.46) and wl[-1] == pytest.approx(2.409)
    assert max(wl) < 3, "wavelengths are stored in micrometres"
    assert len(meta["fwhm"]) == 177 and meta["fwhm"][0] == pytest.approx(0.0058)
    assert meta["data_ignore_value"] == -99
    assert meta["reflectance_scale_factor"] == 10000
    assert meta["band_names"][:2] == ["band 8", "band 9"] and meta["band_names"][-1] == "band 239"
    assert len(meta["band_names"]) == 177
    # the Berlin header has no bbl field (its bad bands were cut out of the cube, see the gaps in band names)
    assert "bbl" not in meta

    nm = to_nanometres(wl, meta["wavelength_units"])
    assert len(nm) == 177
    assert nm[0] == pytest.approx(460.0) and nm[-1] == pytest.approx(2409.0)
    np.testing.assert_allclose(nm, np.asarray(wl) * 1000.0)
    # missing units are guessed from the values (all < 30 -> micrometres)
    assert to_nanometres(wl, None) == pytest.approx(nm)
    assert to_nanometres(wl, "Unknown") == pytest.approx(nm)
    # nanometre values are left alone
    assert to_nanometres([450.0, 550.0], "Nanometers") == (450.0, 550.0)
    assert to_nanometres([450.0, 550.0], None) == (450.0, 550.0)


def test_berlin_header_with_placeholder_data(shared_data, tmp_path):
    """The real Berlin header over a sparse all-zero data file: GDAL georeferencing + header spectral metadata."""
    hdr = tmp_path / "enmap_berlin.hdr"
    shutil.copy(shared_data / BERLIN_HDR, hdr)
    with open(tmp_path / "enmap_berlin.bsq", "wb") as f:  # int16 BSQ, sparse (no disk used)
        f.truncate(220 * 400 * 177 * 2)
    with open_scene(hdr) as sc:
        assert sc.shape == (177, 400, 220) and sc.dtype == "int16"
        assert sc.crs is not None and sc.crs.to_epsg() == 32633
        assert sc.transform.c == pytest.approx(380952.37) and sc.transform.f == pytest.approx(5820372.35)
        assert sc.res == (30.0, 30.0)
        assert sc.bands.wavelength_units == "micrometers"
        assert sc.bands.wavelengths[0] == pytest.approx(460.0) and sc.bands.wavelengths[-1] == pytest.approx(2409.0)
        assert sc.bands.fwhm[0] == pytest.approx(5.8)
        assert sc.bands.names[0] == "band 8"
        assert sc.nodata == -99
        assert sc.bands.scale == pytest.approx((1e-4,) * 177)
        assert not any(sc.bands.bad)
        assert sc.read(Window(0, 0, 3, 2), bands=[0]).shape == (1, 2, 3)


def test_indian_pines_gt_mat(shared_data):
    with open_scene(shared_data / "indian_pines_gt/Indian_pines_gt.mat") as sc:
        assert sc.shape == (1, 145, 145) and sc.crs is None
        assert sc.tags["variable"] == "y"
        a = sc.read()[0]
        assert a.dtype == np.uint8
        assert _counts(a) == {0: 10776, 1: 46, 2: 1428, 3: 830, 4: 237, 5: 483, 6: 730, 7: 28, 8: 478, 9: 20,
                              10: 972, 11: 2455, 12: 593, 13: 205, 14: 1265, 15: 386, 16: 93}
        assert (a > 0).sum() == 10249
        assert sc.class_names == INDIAN_PINES_NAMES
        np.testing.assert_array_equal(a, scipy.io.loadmat(shared_data / "indian_pines_gt/Indian_pines_gt.mat")["y"])


def test_pavia_university_gt_mat(shared_data):
    with open_scene(shared_data / "pavia_university_gt/PaviaU_gt.mat") as sc:
        assert sc.shape == (1, 610, 340) and sc.crs is None
        assert sc.tags["variable"] == "hyperimg_gt"
        assert sc.class_names == PAVIA_U_NAMES
        a = sc.read()[0]
        assert _counts(a) == {0: 164624, 1: 6631, 2: 18649, 3: 2099, 4: 3064, 5: 1345, 6: 5029, 7: 1330,
                              8: 3682, 9: 947}


def test_simulated_indian_pines_cube(shared_data):
    path = shared_data / "simulated_indian_pines/simu_indian.mat"
    ref = scipy.io.loadmat(path)["simu_indian"]  # (rows, cols, bands)
    with open_scene(path) as sc:
        assert sc.shape == (224, 145, 145)
        assert sc.dtype == "float64" and sc.crs is None
        assert sc.class_names is None, "a 3-D cube is not a ground truth"
        full = sc.read()
        np.testing.assert_array_equal(full, ref.transpose(2, 0, 1))
        np.testing.assert_array_equal(sc.read(Window(3, 4, 5, 6), bands=[7, 200]), ref[4:10, 3:8][:, :, [7, 200]]
                                      .transpose(2, 0, 1))
        assert 0.04 < full.min() and full.max() < 0.92
        assert sc.read_valid().all()


def test_lan_ground_truth(shared_data):
    with open_scene(shared_data / "indian_pines_gt/92AV3GT.GIS") as sc:
        assert sc.driver == "LAN"
        assert sc.shape == (1, 145, 145)
        assert sc.crs is None, "LAN's placeholder 1-degree georeferencing is not a CRS"
        assert sc.class_names == INDIAN_PINES_NAMES
        assert _counts(sc.read()[0]) == {0: 10659, 1: 54, 2: 1434, 3: 834, 4: 234, 5: 497, 6: 747, 7: 26, 8: 489,
                                         9: 20, 10: 968, 11: 2468, 12: 614, 13: 212, 14: 1294, 15: 380, 16: 95}


def test_read_spc(shared_data):
    wl, fwhm = read_spc(shared_data / "indian_pines_gt/92AV3C.spc")
    assert wl.shape == (220,) and fwhm.shape == (220,)
    assert wl[0] == pytest.approx(400.019989) and fwhm[0] == pytest.approx(9.78)
    assert wl[-1] == pytest.approx(2498.959961) and fwhm[-1] == pytest.approx(14.58)
    assert 400 <= wl.min() and wl.max() <= 2500
    assert (fwhm > 0).all()


def test_read_spc_errors(tmp_path):
    p = tmp_path / "empty.spc"
    p.write_text("header only\n-----\n")
    with pytest.raises(InputError, match="no band calibration"):
        read_spc(p)


def test_sentinel2_demmin(shared_data):
    with open_scene(shared_data / "demmin_sentinel2/sentinel2_fields.tif") as sc:
        assert sc.bands.names == ("B4", "B3", "B2", "B8")
        assert sc.shape == (4, 242, 620)
        assert sc.crs.to_epsg() == 4326
        assert sc.dtype == "uint16"
        assert sc.res == pytest.approx((8.983152841195215e-05, 8.983152841195215e-05))
        assert sc.bands.wavelengths is None
        data = sc.read()
        assert data.dtype == np.uint16 and data.min() == 151 and data.max() == 6556
        assert sc.read_valid().all()
        np.testing.assert_array_equal(sc.read(Window(600, 200, 20, 42), bands=[3]), data[3:4, 200:242, 600:620])


# ------------------------------------------------------------------------------------------------------------------
# generated ENVI files
# ------------------------------------------------------------------------------------------------------------------
ENVI_WL_UM = [0.45, 0.55, 0.65, 0.85, 1.65]
ENVI_BBL = [1, 1, 0, 1, 1]  # band index 2 bad


def write_envi(path, data, interleave, *, ignore=-99, name_header_as="stem"):
    """Raw ENVI data file + a header written by hand. ``data`` is (bands, rows, cols)."""
    b, h, w = data.shape
    dtype_code = {np.dtype("int16"): 2, np.dtype("float32"): 4, np.dtype("uint16"): 12}[data.dtype]
    order = {"bsq": (0, 1, 2), "bil": (1, 0, 2), "bip": (1, 2, 0)}[interleave]
    np.ascontiguousarray(data.transpose(order)).astype(data.dtype.newbyteorder("<")).tofile(path)
    hdr = path.with_suffix(".hdr") if name_header_as == "stem" else path.with_name(path.name + ".hdr")
    hdr.write_text(
        "ENVI\n"
        "description = {hand-written test file}\n"
        f"samples = {w}\nlines = {h}\nbands = {b}\nheader offset = 0\nfile type = ENVI Standard\n"
        f"data type = {dtype_code}\ninterleave = {interleave}\nbyte order = 0\n"
        "map info = {UTM, 1.000, 1.000, 366000.0, 5810000.0, 30.0, 30.0, 33, North, WGS-84, units=Meters}\n"
        "wavelength units = Micrometers\n"
        "band names = {" + ", ".join(f"B{i + 1}" for i in range(b)) + "}\n"
        "wavelength = {" + ", ".join(f"{v:.3f}" for v in ENVI_WL_UM[:b]) + "}\n"
        "fwhm = {" + ", ".join("0.010" for _ in range(b)) + "}\n"
        "bbl = {" + ", ".join(str(v) for v in ENVI_BBL[:b]) + "}\n"
        f"data ignore value = {ignore}\n"
        "reflectance scale factor = 10000\n"
    )
    return path, hdr


@pytest.mark.parametrize("dtype", ["int16", "float32"])
@pytest.mark.parametrize("interleave", ["bsq", "bil", "bip"])
def test_generated_envi(tmp_path, interleave, dtype):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 10000, size=(5, 12, 9)).astype(dtype)
    data[:, 2, 3] = -99  # nodata in every band -> invalid
    data[0, 7, 1] = -99  # nodata in one good band -> invalid
    data[2, 4, 4] = -99  # nodata only in the bad band -> still valid
    if dtype == "float32":
        data[3, 10, 8] = np.nan  # NaN in a good band -> invalid
        data[2, 0, 0] = np.nan  # NaN only in the bad band -> valid
    path, hdr = write_envi(tmp_path / f"cube.{interleave}", data, interleave)
    for opened in (path, hdr):
        with open_scene(opened) as sc:
            assert sc.driver == "ENVI"
            assert sc.shape == (5, 12, 9) and sc.dtype == dtype
            np.testing.assert_array_equal(sc.read(), data)
            for win in (Window(2, 3, 4, 5), Window(0, 0, 9, 1), Window(8, 11, 1, 1), Window(0, 6, 9, 6)):
                r0, c0, hh, ww = win.row_off, win.col_off, win.height, win.width
                np.testing.assert_array_equal(sc.read(win), data[:, r0:r0 + hh, c0:c0 + ww])
            np.testing.assert_array_equal(sc.read(Window(1, 2, 5, 3), bands=[4, 0]), data[[4, 0], 2:5, 1:6])

            assert sc.bands.names == ("B1", "B2", "B3", "B4", "B5")
            assert sc.bands.wavelengths == pytest.approx((450.0, 550.0, 650.0, 850.0, 1650.0))
            assert sc.bands.fwhm == pytest.approx((10.0,) * 5)
            assert sc.bands.wavelength_units == "micrometers"
            assert sc.bands.bad == (False, False, True, False, False)
            assert sc.nodata == -99
            assert sc.bands.scale == pytest.approx((1e-4,) * 5)
            assert sc.bands.offset == pytest.approx((0.0,) * 5)
            assert sc.crs is not None and sc.crs.to_epsg() == 32633
            assert sc.transform.c == pytest.approx(366000.0) and sc.transform.f == pytest.approx(5810000.0)
            assert sc.transform.a == pytest.approx(30.0) and sc.transform.e == pytest.approx(-30.0)

            valid = sc.read_valid()
            expected = np.ones((12, 9), bool)
            expected[2, 3] = expected[7, 1] = False
            if dtype == "float32":
                expected[10, 8] = False
            np.testing.assert_array_equal(valid, expected)
            np.testing.assert_array_equal(sc.read_valid(Window(1, 6, 3, 3)), expected[6:9, 1:4])


def test_envi_big_endian_with_header_offset(tmp_path):
    data = (np.arange(3 * 5 * 4, dtype=np.int16).reshape(3, 5, 4) * 37 - 500).astype(np.int16)
    p = tmp_path / "be.bil"
    with open(p, "wb") as f:
        f.write(b"\0" * 16)  # 16-byte header block before the pixels
        f.write(np.ascontiguousarray(data.transpose(1, 0, 2)).astype(">i2").tobytes())
    p.with_suffix(".hdr").write_text(
        "ENVI\nsamples = 4\nlines = 5\nbands = 3\nheader offset = 16\nfile type = ENVI Standard\n"
        "data type = 2\ninterleave = bil\nbyte order = 1\nwavelength units = Nanometers\n"
        "wavelength = {500, 600, 700}\n"
    )
    with open_scene(p) as sc:
        np.testing.assert_array_equal(sc.read(), data)
        assert sc.crs is None and sc.nodata is None and sc.bands.scale is None
        assert sc.bands.wavelengths == (500.0, 600.0, 700.0) and sc.bands.wavelength_units == "nm"
        assert sc.read_valid().all()


def test_nodata_outside_integer_dtype_range(tmp_path):
    """A nodata value no pixel can hold (-99 for uint16) marks nothing invalid instead of crashing."""
    data = np.full((5, 4, 3), 7, np.uint16)
    data[:, 1, 1] = 0
    path, _ = write_envi(tmp_path / "u16.bsq", data, "bsq", ignore=-99)
    with open_scene(path) as sc:
        assert sc.dtype == "uint16" and sc.nodata == -99
        np.testing.assert_array_equal(sc.read(), data)
        assert sc.read_valid().all()


def test_envi_header_named_after_full_data_name(tmp_path):
    """``cube.bsq`` + ``cube.bsq.hdr`` (the other common ENVI naming)."""
    data = np.arange(3 * 4 * 6, dtype=np.int16).reshape(3, 4, 6)
    path, hdr = write_envi(tmp_path / "cube.bsq", data, "bsq", name_header_as="full")
    assert hdr.name == "cube.bsq.hdr"
    for opened in (path, hdr):
        with open_scene(opened) as sc:
            np.testing.assert_array_equal(sc.read(), data)
            assert sc.bands.wavelengths == pytest.approx((450.0, 550.0, 650.0))


def test_envi_header_without_data_file(tmp_path):
    data = np.zeros((2, 3, 4), np.int16)
    path, hdr = write_envi(tmp_path / "lonely.bsq", data, "bsq")
    path.unlink()
    with pytest.raises(InputError, match="no data file"):
        open_scene(hdr)


# ------------------------------------------------------------------------------------------------------------------
# generated GeoTIFF / VRT
# ------------------------------------------------------------------------------------------------------------------
def test_generated_geotiff_metadata_and_windows(fake_geotiff):
    p = fake_geotiff(bands=6, height=40, width=50)
    with rasterio.open(p) as src:
        ref = src.read()
    with open_scene(p) as sc:
        assert sc.shape == (6, 40, 50) and sc.dtype == "float32" and sc.driver == "GTiff"
        assert sc.crs == CRS.from_epsg(32633) and sc.transform == from_origin(366000.0, 5810000.0, 30.0, 30.0)
        assert sc.nodata == -9999.0
        assert sc.bands.names == tuple(f"band {i + 1}" for i in range(6))
        assert sc.bands.wavelengths == pytest.approx(tuple(np.round(fake_wavelengths(6), 2)))
        assert sc.bands.fwhm == pytest.approx((10.0,) * 6)
        assert sc.bands.bad == (False,) * 6 and sc.bands.scale is None
        full = sc.read()
        np.testing.assert_array_equal(full, ref)
        for win in (Window(0, 0, 50, 40), Window(10, 5, 10, 4), Window(49, 39, 1, 1), Window(13, 0, 17, 40)):
            r0, c0 = win.row_off, win.col_off
            np.testing.assert_array_equal(sc.read(win), full[:, r0:r0 + win.height, c0:c0 + win.width])
        np.testing.assert_array_equal(sc.read(Window(3, 4, 7, 8), bands=[5, 1]), full[[5, 1], 4:12, 3:10])
        with pytest.raises(ValueError, match="outside"):
            sc.read(Window(45, 0, 10, 10))
        with pytest.raises(IndexError):
            sc.read(bands=[6])


def test_nan_and_nodata_pixels_invalid(tmp_path):
    p = write_fake_geotiff(tmp_path / "s.tif", bands=4, height=20, width=30, nodata=-9999.0, nodata_border=2)
    with rasterio.open(p, "r+") as dst:
        d = dst.read()
        d[1, 10, 15] = np.nan  # NaN in one band
        d[3, 12, 20] = -9999.0  # nodata in one band only
        dst.write(d)
    with open_scene(p) as sc:
        v = sc.read_valid()
        expected = np.ones((20, 30), bool)
        expected[:2, :] = False
        expected[:, :2] = False
        expected[10, 15] = expected[12, 20] = False
        np.testing.assert_array_equal(v, expected)
        win = Window(14, 9, 8, 5)
        np.testing.assert_array_equal(sc.read_valid(win), expected[9:14, 14:22])
        np.testing.assert_array_equal(sc.read_valid(win, data=sc.read(win)), expected[9:14, 14:22])


def test_nan_invalid_without_nodata_value(tmp_path):
    p = write_fake_geotiff(tmp_path / "nan.tif", bands=3, height=10, width=12, nodata=None)
    with rasterio.open(p, "r+") as dst:
        d = dst.read()
        d[2, 4, 6] = np.nan
        dst.write(d)
    with open_scene(p) as sc:
        assert sc.nodata is None
        v = sc.read_valid()
        assert not v[4, 6] and v.sum() == v.size - 1


def test_internal_mask_band_invalid(tmp_path):
    p = write_fake_geotiff(tmp_path / "m.tif", bands=2, height=16, width=16, nodata=None)
    mask = np.full((16, 16), 255, np.uint8)
    mask[3:5, 6:9] = 0
    with rasterio.open(p, "r+") as dst:
        dst.write_mask(mask)
    with open_scene(p) as sc:
        np.testing.assert_array_equal(sc.read_valid(), mask > 0)


@pytest.mark.skipif(shutil.which("gdalbuildvrt") is None, reason="gdalbuildvrt (Debian gdal-bin) not installed")
def test_vrt_over_geotiff(tmp_path):
    a = write_fake_geotiff(tmp_path / "a.tif", bands=3, height=20, width=25, seed=1)
    vrt = tmp_path / "one.vrt"
    subprocess.run(["gdalbuildvrt", "-q", str(vrt), str(a)], check=True, capture_output=True)
    with open_scene(vrt) as v, open_scene(a) as t:
        assert v.driver == "VRT"
        assert v.shape == t.shape and v.dtype == t.dtype
        assert v.crs == t.crs and v.transform == t.transform and v.nodata == t.nodata
        np.testing.assert_array_equal(v.read(), t.read())
        np.testing.assert_array_equal(v.read(Window(4, 3, 10, 9), bands=[2]), t.read(Window(4, 3, 10, 9), bands=[2]))
        np.testing.assert_array_equal(v.read_valid(), t.read_valid())


@pytest.mark.skipif(shutil.which("gdalbuildvrt") is None, reason="gdalbuildvrt (Debian gdal-bin) not installed")
def test_vrt_mosaic_of_two_tiles(tmp_path):
    left = write_fake_geotiff(tmp_path / "left.tif", bands=2, height=20, width=25, seed=1,
                              transform=from_origin(366000.0, 5810000.0, 30.0, 30.0))
    right = write_fake_geotiff(tmp_path / "right.tif", bands=2, height=20, width=15, seed=2,
                               transform=from_origin(366000.0 + 25 * 30.0, 5810000.0, 30.0, 30.0))
    vrt = tmp_path / "mosaic.vrt"
    subprocess.run(["gdalbuildvrt", "-q", str(vrt), str(left), str(right)], check=True, capture_output=True)
    with rasterio.open(left) as l_src, rasterio.open(right) as r_src:
        expected = np.concatenate([l_src.read(), r_src.read()], axis=2)
    with open_scene(vrt) as sc:
        assert sc.shape == (2, 20, 40)
        assert sc.crs.to_epsg() == 32633 and sc.transform == from_origin(366000.0, 5810000.0, 30.0, 30.0)
        np.testing.assert_array_equal(sc.read(), expected)
        np.testing.assert_array_equal(sc.read(Window(20, 5, 10, 6)), expected[:, 5:11, 20:30])


def test_to_xarray(tmp_path):
    from hsikit.io.scene import Scene

    if not hasattr(Scene, "to_xarray"):
        pytest.skip("Scene has no to_xarray method")
    p = write_fake_geotiff(tmp_path / "x.tif", bands=4, height=40, width=50)
    with open_scene(p) as sc:
        xa = sc.to_xarray(chunks=16)
        assert xa.dims == ("band", "y", "x") and xa.shape == (4, 40, 50)
        assert xa.chunks is not None and xa.chunks[1] == (16, 16, 8) and xa.chunks[2] == (16, 16, 16, 2)
        np.testing.assert_array_equal(xa.values, sc.read())
        np.testing.assert_array_equal(xa.isel(y=slice(17, 23), x=slice(30, 41)).values,
                                      sc.read(Window(30, 17, 11, 6)))
        assert list(xa["band"].values) == list(sc.bands.names)
        np.testing.assert_allclose(xa["wavelength"].values, sc.bands.wavelengths)
        # pixel-centre coordinates
        assert xa["x"].values[0] == pytest.approx(366000.0 + 15.0)
        assert xa["y"].values[0] == pytest.approx(5810000.0 - 15.0)
        assert xa["x"].values[-1] == pytest.approx(366000.0 + 49 * 30.0 + 15.0)
        assert xa.rio.crs.to_epsg() == 32633
        assert tuple(xa.rio.transform()) == tuple(sc.transform)
        assert xa.rio.nodata == -9999.0


# ------------------------------------------------------------------------------------------------------------------
# errors and .mat variable choice
# ------------------------------------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        open_scene(tmp_path / "missing.tif")


def test_text_file_named_tif(tmp_path):
    bad = tmp_path / "text.tif"
    bad.write_text("this is not a GeoTIFF\n")
    with pytest.raises(InputError, match="not a raster"):
        open_scene(bad)


def test_directory_is_not_a_raster(tmp_path):
    with pytest.raises(InputError, match="directory"):
        open_scene(tmp_path)


def test_mat_with_two_image_arrays(tmp_path):
    two = tmp_path / "two.mat"
    x = np.random.default_rng(0).random((6, 7, 3))
    scipy.io.savemat(two, {"x": x, "gt": np.arange(42, dtype=np.uint8).reshape(6, 7)})
    with pytest.raises(InputError, match="variable") as ei:
        open_scene(two)
    assert "gt" in str(ei.value) and "x" in str(ei.value)
    with open_scene(two, variable="x") as sc:
        assert sc.shape == (3, 6, 7)
        assert sc.tags["variable"] == "x"
        np.testing.assert_array_equal(sc.read(), x.transpose(2, 0, 1))
    with open_scene(two, variable="gt") as sc:
        assert sc.shape == (1, 6, 7)
        np.testing.assert_array_equal(sc.read()[0], np.arange(42).reshape(6, 7))
    with pytest.raises(InputError, match="no numeric variable"):
        open_scene(two, variable="nope")


def test_mat_single_array_chosen_automatically(tmp_path):
    p = tmp_path / "one.mat"
    cube = np.arange(4 * 5 * 2, dtype=np.float32).reshape(4, 5, 2)
    scipy.io.savemat(p, {"cube": cube, "wavelengths": np.array([[500.0, 600.0]])})  # 1x2 is not an image
    with open_scene(p) as sc:
        assert sc.tags["variable"] == "cube"
        np.testing.assert_array_equal(sc.read(), cube.transpose(2, 0, 1))


def test_garbage_mat(tmp_path):
    p = tmp_path / "garbage.mat"
    p.write_bytes(b"\x00\x01 definitely not matlab" * 20)
    with pytest.raises(InputError):
        open_scene(p)


def test_bandinfo_mismatch_and_subset():
    bi = BandInfo(names=("a", "b", "c"), wavelengths=(400.0, 500.0, 600.0), bad=(False, True, False))
    sub = bi.subset([2, 0])
    assert sub.names == ("c", "a") and sub.wavelengths == (600.0, 400.0) and sub.bad == (False, False)
    assert bi.good_indices() == [0, 2]
    assert bi.describe(1) == "b (500 nm)"
    assert BandInfo.from_dict(bi.to_dict()) == bi
    with pytest.raises(ValueError):
        BandInfo(names=("a", "b"), wavelengths=(1.0,))
