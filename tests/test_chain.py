"""Preprocessing chains: plain-data round trip, exact replay on tiles, band checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rasterio.windows import Window

from hsikit.errors import BandMismatchError, OptionError
from hsikit.io import open_scene
from hsikit.io.bandinfo import BandInfo
from hsikit.io.scene import ArrayScene
from hsikit.preprocess import Chain, Step
from hsikit.windows import iter_windows


@pytest.fixture
def spectral_scene():
    from hsikit.synthetic import make_scene

    s = make_scene(48, 56, seed=5)
    info = BandInfo(names=tuple(f"b{i}" for i in range(len(s.wavelengths))), wavelengths=tuple(s.wavelengths),
                    fwhm=tuple(s.fwhm), bad=tuple(s.bad), scale=(1e-4,) * len(s.wavelengths),
                    offset=(0.0,) * len(s.wavelengths))
    return ArrayScene(s.cube, nodata=s.nodata, bands=info)


def test_fit_replay_json_and_tiles(spectral_scene):
    sc = spectral_scene
    chain = Chain.from_options(drop_bad_bands=True, resample_to="sentinel2", normalize=True, pca=4).fit(sc, block=16)
    assert chain.fitted
    text = json.dumps(chain.to_dict())
    replay = Chain.from_dict(json.loads(text))
    full = chain.apply(sc.read(), sc.read_valid())
    assert full.shape == (4, sc.height, sc.width) and full.dtype == np.float32
    tiled = np.zeros_like(full)
    for w in iter_windows(sc.width, sc.height, 13):
        r, c, h, wd = int(w.row_off), int(w.col_off), int(w.height), int(w.width)
        raw = sc.read(w)
        tiled[:, r : r + h, c : c + wd] = replay.apply(raw, sc.read_valid(w, raw))
    np.testing.assert_allclose(tiled, full, atol=1e-4)
    out_bands = chain.output_bands(sc.bands)
    assert out_bands.names == ("PC1", "PC2", "PC3", "PC4")


def test_normalisation_statistics_after_earlier_steps(spectral_scene):
    sc = spectral_scene
    chain = Chain.from_options(drop_bad_bands=True, normalize=True).fit(sc)
    x = chain.apply(sc.read(), sc.read_valid())
    v = sc.read_valid()
    np.testing.assert_allclose(x[:, v].mean(axis=1), 0, atol=1e-3)
    np.testing.assert_allclose(x[:, v].std(axis=1), 1, atol=1e-3)
    assert (x[:, ~v] == 0).all(), "invalid pixels get the neutral value"
    kept = chain.output_bands(sc.bands)
    used = chain.used_input_bands(sc.count)
    assert [sc.bands.names[i] for i in used] == list(kept.names)
    assert not any(1340 <= w <= 1460 or 1790 <= w <= 1960 for w in kept.wavelengths)
    assert kept.scale is None, "scaled values are physical reflectance"


def test_fitted_chain_ignores_new_scene_flags(spectral_scene):
    sc = spectral_scene
    chain = Chain.from_options(drop_bad_bands=True).fit(sc)
    n = chain.output_bands(sc.bands).count
    other = ArrayScene(sc.data, nodata=sc.nodata, bands=BandInfo(sc.bands.names, sc.bands.wavelengths, sc.bands.fwhm))
    assert chain.fit(other).output_bands(other.bands).count == n, "replay keeps the fitted band indices"


def test_check_input_errors(spectral_scene):
    sc = spectral_scene
    chain = Chain.from_options(normalize=True).fit(sc)
    chain.check_input(sc.bands)
    with pytest.raises(BandMismatchError, match=rf"expects {sc.count} bands .* scene has 10 bands"):
        chain.check_input(BandInfo.default(10))
    shifted = BandInfo(sc.bands.names, tuple(w + 30 for w in sc.bands.wavelengths))
    with pytest.raises(BandMismatchError, match="nm"):
        chain.check_input(shifted)


def test_unfitted_and_unknown_steps():
    with pytest.raises(OptionError, match="unknown preprocessing step"):
        Step("sharpen")
    with pytest.raises(OptionError, match="not fitted"):
        Chain([Step("normalize")]).apply(np.zeros((2, 3, 3)))


def test_real_enmap_chain(shared_data):
    with open_scene(shared_data / "enmap_potsdam/images/enmap_potsdam_tile_160_96.tif") as sc:
        chain = Chain.from_options(drop_bad_bands=True, normalize=True).fit(sc)
        x = chain.apply(sc.read(Window(0, 0, 8, 8)))
        assert x.shape[0] < 224 - 6 and np.isfinite(x).all()
        assert chain.steps[1].op == "scale" and chain.steps[1].params["scale"][0] == pytest.approx(1e-4)
