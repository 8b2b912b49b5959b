"""Band selection, spectral resampling, streaming statistics and PCA against in-memory computations."""

from __future__ import annotations

import numpy as np
import pytest

from hsikit.errors import BandMismatchError, OptionError
from hsikit.io.bandinfo import BandInfo
from hsikit.io.scene import ArrayScene
from hsikit.preprocess import (
    SENTINEL2, band_statistics, bad_band_indices, good_band_indices, resampling_matrix, select_by_wavelength,
    streaming_pca,
)
from hsikit.preprocess.resample import target_coverage


def bands(wl, bad=None):
    return BandInfo(names=tuple(f"b{i}" for i in range(len(wl))), wavelengths=tuple(wl),
                    bad=tuple(bad) if bad is not None else ())


def test_bad_bands_from_flags_and_water_vapour():
    wl = np.arange(400, 2501, 20.0)
    b = bands(wl, bad=[i == 0 for i in range(len(wl))])
    bad = bad_band_indices(b)
    assert 0 in bad
    assert all((1340 <= wl[i] <= 1460) or (1790 <= wl[i] <= 1960) or i == 0 for i in bad)
    assert sum(1340 <= w <= 1460 for w in wl) + sum(1790 <= w <= 1960 for w in wl) + 1 == len(bad)
    assert set(good_band_indices(b)).isdisjoint(bad)
    assert bad_band_indices(b, windows=None) == [0]


def test_select_by_wavelength():
    b = bands([450.0, 550.0, 650.0, 750.0])
    assert select_by_wavelength(b, 500, 700) == [1, 2]
    with pytest.raises(BandMismatchError, match="no band"):
        select_by_wavelength(b, 1000, 1100)
    with pytest.raises(OptionError):
        select_by_wavelength(b, 700, 500)
    with pytest.raises(BandMismatchError, match="wavelengths"):
        select_by_wavelength(BandInfo.default(3), 400, 500)


def test_resampling_linear_and_flat_spectra():
    wl = np.arange(400.0, 2501.0, 5.0)
    fw = np.full(wl.size, 6.0)
    w = resampling_matrix(wl, fw, SENTINEL2.centers, SENTINEL2.fwhm)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-9)
    assert (w >= 0).all()
    line = 0.05 + 1e-4 * wl
    np.testing.assert_allclose(w @ line, 0.05 + 1e-4 * np.asarray(SENTINEL2.centers), atol=2e-4)
    np.testing.assert_allclose(w @ np.full(wl.size, 0.3), 0.3, atol=1e-9)


def test_resampling_vegetation_and_gaps():
    from hsikit.synthetic import material_spectra

    wl = np.arange(400.0, 2501.0, 10.0)
    veg = material_spectra(wl)[1]
    s2 = resampling_matrix(wl, None, SENTINEL2.centers, SENTINEL2.fwhm) @ veg
    b04, b08 = s2[SENTINEL2.bands.index("B04")], s2[SENTINEL2.bands.index("B08")]
    assert b08 > 3 * b04  # red edge survives resampling
    keep = (wl < 1340) | (wl > 1460)
    cov = target_coverage(wl[keep], None, SENTINEL2.centers, SENTINEL2.fwhm)
    assert cov[SENTINEL2.bands.index("B10")] < 0.9 and cov[SENTINEL2.bands.index("B04")] > 0.99
    with pytest.raises(BandMismatchError, match="not covered"):
        resampling_matrix(wl[keep], None, SENTINEL2.centers, SENTINEL2.fwhm)


def scene_with_gaps(seed=0, nodata=-1.0):
    rng = np.random.default_rng(seed)
    data = (rng.normal(size=(6, 70, 90)) * np.arange(1, 7)[:, None, None] + 3).astype(np.float32)
    data[:, 10:20, 5:15] = nodata
    data[2, 40, 40] = np.nan
    return ArrayScene(data, nodata=nodata), data


def test_streaming_statistics_equal_in_memory():
    sc, data = scene_with_gaps()
    valid = sc.read_valid()
    st = band_statistics(sc, block=16)
    px = data[:, valid].astype(np.float64)
    np.testing.assert_allclose(st.mean, px.mean(axis=1), rtol=1e-9)
    np.testing.assert_allclose(st.std, px.std(axis=1), rtol=1e-9)
    np.testing.assert_allclose(st.min, px.min(axis=1))
    np.testing.assert_allclose(st.max, px.max(axis=1))
    assert st.count == valid.sum()
    np.testing.assert_allclose(st.p2, np.percentile(px, 2, axis=1), rtol=1e-6)  # sample = all pixels here


def test_streaming_statistics_real_enmap(shared_data):
    from hsikit.io import open_scene

    with open_scene(shared_data / "enmap_potsdam/images/enmap_potsdam_tile_96_96.tif") as sc:
        st = band_statistics(sc, block=8)
        full = sc.read().astype(np.float64)
        valid = sc.read_valid(None, full)
        np.testing.assert_allclose(st.mean, full[:, valid].mean(axis=1), rtol=1e-9)
        np.testing.assert_allclose(st.std, full[:, valid].std(axis=1), rtol=1e-7)


def test_streaming_pca_matches_sklearn():
    from sklearn.decomposition import PCA

    sc, data = scene_with_gaps(seed=3)
    valid = sc.read_valid()
    px = data[:, valid].T.astype(np.float64)
    ref = PCA(n_components=3).fit(px)
    m = streaming_pca(sc, 3, block=20)
    np.testing.assert_allclose(m.explained_variance, ref.explained_variance_, rtol=1e-6)
    for a, b in zip(m.components, ref.components_):
        assert abs(abs(np.dot(a, b)) - 1) < 1e-6  # equal up to sign
    proj = m.transform(data[:, 30:40, 50:60])
    assert proj.shape == (3, 10, 10)
    with pytest.raises(OptionError):
        streaming_pca(sc, 9)


@pytest.mark.parametrize(
    "name, expected",
    [("B2", "B02"), ("B02", "B02"), ("b8a", "B8A"), ("B8A", "B8A"), ("band_B04", "B04"),
     ("T33UUU_20230603T101559_B04_10m", "B04"), ("B8", "B08"), ("B13", None), ("NIR", None), ("SCL", None)],
)
def test_sentinel2_band_names_in_any_spelling(name, expected):
    from hsikit.preprocess.sensors import canonical_band_name

    assert canonical_band_name(name) == expected


def test_find_bands_orders_by_request_and_names_missing():
    from hsikit.preprocess.sensors import find_bands

    # the real Demmin GeoTIFF stores B4, B3, B2, B8 in that order
    assert find_bands(["B4", "B3", "B2", "B8"], ["B02", "B03", "B04", "B08"]) == [2, 1, 0, 3]
    with pytest.raises(OptionError, match="missing band.*B05.*B8A"):
        find_bands(["B4", "B3", "B2", "B8"], ["B02", "B05", "B8A"])
