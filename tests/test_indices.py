"""Vegetation indices (WDVI, CLAIR LAI, TCARI/OSAVI, ...): hand-computed values on three pixels,
safe denominators, lazy inputs, registry."""

from __future__ import annotations

import numpy as np
import pytest

from hsikit.errors import BandMismatchError, OptionError
from hsikit.timeseries.indices import (EPS, INDICES, clair_lai, compute_index, list_indices, normalise_band_name,
                                       required_bands, safe_divide)

# three pixels: dense green canopy, bright soil with sparse cover, very dense dark-red canopy
BANDS = {
    "B02": np.array([0.04, 0.09, 0.03]),
    "B03": np.array([0.08, 0.12, 0.06]),
    "B04": np.array([0.05, 0.18, 0.02]),
    "B05": np.array([0.12, 0.21, 0.07]),
    "B06": np.array([0.30, 0.23, 0.35]),
    "B07": np.array([0.38, 0.24, 0.42]),
    "B08": np.array([0.45, 0.25, 0.50]),
}
# worked by hand from the published formulas (rounded to 6 decimals)
EXPECTED = {
    "ndvi": [0.8, 0.162791, 0.923077],            # (.45-.05)/(.45+.05) = .4/.5
    "ndre": [0.578947, 0.086957, 0.754386],       # (.45-.12)/.57
    "gndvi": [0.698113, 0.351351, 0.785714],      # .37/.53
    "evi": [0.689655, 0.105740, 0.860215],        # 2.5*.4/(.45+.3-.3+1) = 1/1.45
    "savi": [0.6, 0.112903, 0.705882],            # 1.5*.4/(.5+.5)
    "osavi": [0.703030, 0.137627, 0.818824],      # 1.16*.4/.66
    "mcari": [0.1488, 0.014, 0.168],              # (.07 - .2*.04) * .12/.05 = .062*2.4
    "tcari": [0.1524, 0.027, 0.129],              # 3*(.07 - .2*.04*2.4) = 3*.0508
    "mcari_osavi": [0.211655, 0.101724, 0.205172],
    "tcari_osavi": [0.216776, 0.196182, 0.157543],
    "psri": [0.033333, 0.391304, -0.028571],      # (.05-.04)/.30
    "cire": [2.166667, 0.142857, 5.0],            # .38/.12 - 1
    "wdvi": [0.4, 0.07, 0.48],                    # c = 1
    "lai": [2.746531, 0.310132, 4.023595],        # -ln(1 - .4/.6)/.4 = ln 3 / .4
    "lcc": [1.528891, 1.628711, 1.848056],        # -ln(TCARI/OSAVI)
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hand_computed_values(name):
    got = compute_index(name, BANDS)
    np.testing.assert_allclose(got, EXPECTED[name], rtol=1e-5, atol=1e-6)


def test_every_registered_index_has_a_hand_value_and_documents_itself():
    assert set(INDICES) == set(EXPECTED)
    for spec in list_indices():
        assert spec.formula and spec.reference and spec.func.__doc__
        assert all(b.startswith("B") for b in spec.bands())


def test_parameters_soil_slope_and_clair_constants():
    np.testing.assert_allclose(compute_index("wdvi", BANDS, slope=1.5), [0.375, -0.02, 0.47], atol=1e-9)
    # a negative WDVI is soil: LAI 0; ratios near WDVI∞ saturate at -ln(0.01)/α
    np.testing.assert_allclose(compute_index("lai", BANDS, slope=1.5), [2.452073, 0.0, 3.823488], rtol=1e-5, atol=1e-9)
    assert float(clair_lai(np.float64(0.9), np.float64(0.0))) == pytest.approx(-np.log(0.01) / 0.4)
    np.testing.assert_allclose(compute_index("savi", BANDS, L=0.0), EXPECTED["ndvi"], rtol=1e-5)
    with pytest.raises(OptionError, match="no parameter"):
        compute_index("ndvi", BANDS, slope=2.0)


def test_safe_denominators_keep_sign_and_nan():
    assert safe_divide(1.0, 0.0) == pytest.approx(1 / EPS)
    assert safe_divide(1.0, -1e-9) == pytest.approx(-1 / EPS)
    assert safe_divide(2.0, 4.0) == 0.5
    zero = {k: np.zeros(2) for k in BANDS}
    with np.errstate(all="raise"):  # no division by zero anywhere, on black pixels (shadow, nodata as 0)
        for name in INDICES:
            assert np.isfinite(compute_index(name, zero)).all(), name
    nan = {k: np.array([np.nan]) for k in BANDS}
    assert np.isnan(compute_index("tcari_osavi", nan)).all()


def test_band_names_fallback_and_errors():
    assert normalise_band_name("b8") == "B08" and normalise_band_name("B8a") == "B8A" and normalise_band_name("B2") == "B02"
    loose = {"B4": BANDS["B04"], "b8A": BANDS["B08"]}  # 20 m set: only B8A as NIR
    np.testing.assert_allclose(compute_index("NDVI", loose), EXPECTED["ndvi"], rtol=1e-5)
    both = {**BANDS, "B8A": BANDS["B08"] + 0.1}
    assert not np.allclose(compute_index("ndvi", both, nir="B8A"), compute_index("ndvi", both))
    assert compute_index("MCARI/OSAVI", BANDS) == pytest.approx(compute_index("mcari_osavi", BANDS))
    assert required_bands("tcari/osavi") == ("B05", "B04", "B03", "B08")
    assert required_bands("lai", nir="B8A") == ("B8A", "B04")
    with pytest.raises(BandMismatchError, match="B05"):
        compute_index("ndre", {"B08": BANDS["B08"]})
    with pytest.raises(OptionError, match="unknown index"):
        compute_index("nope", BANDS)


def test_lazy_on_xarray_and_dask():
    da = pytest.importorskip("dask.array")
    xr = pytest.importorskip("xarray")
    arrays = {k: xr.DataArray(da.from_array(v, chunks=2), dims="pixel") for k, v in BANDS.items()}
    for name in ("ndvi", "tcari_osavi", "lai", "lcc", "evi"):
        out = compute_index(name, arrays)
        assert isinstance(out, xr.DataArray) and isinstance(out.data, da.Array), name  # still lazy
        np.testing.assert_allclose(out.compute().values, EXPECTED[name], rtol=1e-5, atol=1e-6)
    raw = compute_index("psri", {k: da.from_array(v, chunks=1) for k, v in BANDS.items()})
    assert isinstance(raw, da.Array)
    np.testing.assert_allclose(raw.compute(), EXPECTED["psri"], rtol=1e-5, atol=1e-6)
