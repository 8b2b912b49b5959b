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


# ------------------------------------------------------------------------------------------------------------------
# scenes without wavelengths
# ------------------------------------------------------------------------------------------------------------------
ENMAP_LIKE = tuple(np.linspace(418.24, 2445.53, 224))


def _chain_on_224_bands(wavelengths=ENMAP_LIKE) -> Chain:
    rng = np.random.default_rng(0)
    bands = BandInfo(names=tuple(f"b{i}" for i in range(224)), wavelengths=wavelengths)
    return Chain.from_options(normalize=True).fit(ArrayScene(rng.random((224, 6, 7)).astype(np.float32), bands=bands))


def test_scene_without_wavelengths_warns_once():
    import warnings

    chain = _chain_on_224_bands()
    with pytest.warns(UserWarning) as rec:
        chain.check_input(BandInfo.default(224), source="scene.mat")
    assert [str(w.message) for w in rec] == [
        "scene.mat has no wavelengths: hsikit cannot check that its 224 bands are the model's (418-2446 nm); "
        "the results are wrong if they are not"]
    with pytest.warns(UserWarning, match=r"^the scene has no wavelengths: hsikit cannot check that its 224 bands"):
        chain.check_input(BandInfo.default(224))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chain.check_input(BandInfo(tuple(f"b{i}" for i in range(224)), ENMAP_LIKE), source="scene.tif")
        # a chain fitted without wavelengths has nothing to compare
        _chain_on_224_bands(None).check_input(BandInfo.default(224), source="scene.mat")
    with pytest.raises(BandMismatchError, match="expects 224 bands"):  # a band count mismatch stays an error
        chain.check_input(BandInfo.default(200), source="scene.mat")


def test_real_mat_cube_against_enmap_chain(shared_data):
    """The simulated Indian Pines cube (224 bands, no wavelengths) against a chain fitted on a real EnMAP tile."""
    with open_scene(shared_data / "enmap_potsdam/images/enmap_potsdam_tile_128_0.tif") as tile:
        chain = Chain.from_options(normalize=True).fit(tile)
    with open_scene(shared_data / "simulated_indian_pines/simu_indian.mat") as sc:
        assert sc.count == 224 and sc.bands.wavelengths is None
        with pytest.warns(UserWarning, match=r"^simu_indian\.mat has no wavelengths: hsikit cannot check that its "
                                             r"224 bands are the model's \(418-2446 nm\); the results are wrong"):
            chain.check_input(sc.bands, source=sc.name)


# ------------------------------------------------------------------------------------------------------------------
# compact serialisation: the resampling matrix is rebuilt, floats keep float32 precision
# ------------------------------------------------------------------------------------------------------------------
def _scene_224(seed=0) -> ArrayScene:
    rng = np.random.default_rng(seed)
    data = (rng.random((224, 9, 11)) * 5000).astype(np.int16)
    n = 224
    bands = BandInfo(names=tuple(f"band {i + 1}" for i in range(n)), wavelengths=ENMAP_LIKE,
                     fwhm=tuple(np.linspace(6.5, 11.3, n)), scale=(1e-4,) * n, offset=(0.0,) * n)
    return ArrayScene(data, bands=bands, nodata=-32768)


def test_resample_step_stores_inputs_not_matrix():
    from hsikit.preprocess.resample import resampling_matrix

    sc = _scene_224()
    chain = Chain.from_options(resample_to="sentinel2", normalize=True).fit(sc)
    step = next(s for s in chain.steps if s.op == "resample")
    assert "matrix" not in step.params
    assert len(step.params["input_wavelengths"]) == len(step.params["input_fwhm"]) == 224
    assert step.params["sensor"] == "sentinel2" and "B04" in step.params["names"]
    d = chain.to_dict()
    assert "matrix" not in json.dumps(d)
    m = step.resample_matrix()
    assert m.dtype == np.float32 and m.shape == (len(step.params["names"]), 224)
    assert step.resample_matrix() is m, "rebuilt once, then cached on the step"
    want = resampling_matrix(sc.bands.wavelengths, sc.bands.fwhm, step.params["centers"], step.params["fwhm"])
    np.testing.assert_allclose(m, want, rtol=1e-5, atol=1e-7)
    # the replayed chain (from JSON) gives the same result as the fitted one
    replay = Chain.from_dict(json.loads(chain.to_json()))
    raw = sc.read()
    np.testing.assert_array_equal(replay.apply(raw, sc.read_valid()), chain.apply(raw, sc.read_valid()))
    assert replay.output_bands(sc.bands).names == chain.output_bands(sc.bands).names


def _floats(v):
    if isinstance(v, dict):
        return [f for x in v.values() for f in _floats(x)]
    if isinstance(v, list):
        return [f for x in v for f in _floats(x)]
    return [v] if isinstance(v, float) else []


def test_compact_json_is_small_and_float32_precise():
    sc = _scene_224()
    chain = Chain.from_options(resample_to="sentinel2", normalize=True).fit(sc)
    text = chain.to_json()
    assert len(text) < 16_000, len(text)  # the matrix alone was over 40 KB
    floats = _floats(json.loads(text))
    assert len(floats) > 900
    # every number is the shortest decimal of a float32 (7-9 significant digits at most)
    assert all(f == float(str(np.float32(f))) for f in floats)
    assert chain.to_dict() == json.loads(text), "the fitted chain itself holds these values: replay is exact"


def test_old_chain_with_matrix_still_applies_identically():
    """A chain written before the matrix was rebuilt (params carry "matrix", with full-precision floats such as
    6.5e-320) loads and applies exactly as then: float32 matrix times the scaled float32 bands."""
    from hsikit.preprocess.resample import resampling_matrix
    from hsikit.preprocess.sensors import SENTINEL2

    sc = _scene_224()
    n = sc.count
    m = resampling_matrix(sc.bands.wavelengths, sc.bands.fwhm, SENTINEL2.centers[:9], SENTINEL2.fwhm[:9])
    m[0, -1] = 6.5e-320
    old = {"steps": [{"op": "scale", "params": {"scale": [1e-4] * n, "offset": [0.0] * n}},
                     {"op": "resample", "params": {"sensor": "sentinel2", "matrix": m.tolist(),
                                                   "names": list(SENTINEL2.bands[:9]),
                                                   "centers": list(SENTINEL2.centers[:9]),
                                                   "fwhm": list(SENTINEL2.fwhm[:9])}}],
           "input_bands": {"count": n, "names": list(sc.bands.names), "wavelengths": list(ENMAP_LIKE),
                           "fwhm": list(sc.bands.fwhm)}}
    chain = Chain.from_dict(json.loads(json.dumps(old)))
    assert chain.fitted
    raw = sc.read()
    x = raw.astype(np.float32)
    x *= np.full(n, 1e-4, np.float32)[:, None, None]
    x += np.zeros(n, np.float32)[:, None, None]
    want = np.tensordot(np.asarray(m, np.float32), x, axes=1)
    np.testing.assert_array_equal(chain.apply(raw), want)
    assert chain.output_bands(sc.bands).names == SENTINEL2.bands[:9]
    assert chain.to_dict()["steps"][1]["params"]["matrix"] == m.tolist(), "kept as it was, not rebuilt"
    # the compact JSON of an old chain still replays it (the matrix at float32 precision, which is what is applied)
    again = Chain.from_dict(json.loads(chain.to_json()))
    np.testing.assert_array_equal(again.apply(raw), want)
    assert "e-320" not in chain.to_json()


def test_summary_lists_steps_without_statistics():
    sc = _scene_224()
    chain = Chain.from_options(drop_bad_bands=True, normalize=True, pca=30).fit(sc)
    s = chain.summary()
    assert s["summary"] is True and [x["op"] for x in s["steps"]] == [x.op for x in chain.steps]
    pca = next(x for x in s["steps"] if x["op"] == "pca")
    assert pca["params"] == {"n_components": 30, "whiten": False}
    assert s["input_bands"] == {"count": 224, "wavelength_range": [418.24, 2445.53]}
    assert len(json.dumps(s)) < 1000
