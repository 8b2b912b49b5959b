"""Training-free subspace denoising: noise and subspace estimation, quality against PCA, the CLI and tiling."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from clirun import cli
from hsikit.restoration.subspace import (CovarianceAccumulator, band_noise_sigma, fit_subspace, repair_dead_columns,
                                         subspace_denoise)


def low_rank_cube(bands: int = 40, size: int = 64, rank: int = 4, seed: int = 0) -> np.ndarray:
    """Spatially smooth abundances (blurred random fields) times random smooth spectra: a clean rank-``rank`` cube."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    wl = np.linspace(0, 1, bands)
    spectra = np.stack([0.3 + 0.2 * np.sin(2 * np.pi * (f * wl + p))
                        for f, p in zip(rng.uniform(0.5, 2, rank), rng.uniform(0, 1, rank))])
    ab = np.stack([ndimage.gaussian_filter(rng.standard_normal((size, size)), 3, mode="wrap") for _ in range(rank)])
    ab = (ab - ab.min(axis=(1, 2), keepdims=True)) / np.ptp(ab, axis=(1, 2), keepdims=True)
    return np.einsum("rb,rhw->bhw", spectra, ab).astype(np.float64)


def _acc(x: np.ndarray) -> CovarianceAccumulator:
    acc = CovarianceAccumulator(x.shape[0])
    acc.update(x.reshape(x.shape[0], -1).T)
    return acc


def test_noise_estimate_recovers_per_band_sigma():
    # a band far quieter than its neighbours reads high (their noise enters its regression), hence 0.02-0.05
    clean = low_rank_cube(bands=40, size=96)
    rng = np.random.default_rng(1)
    sig = rng.uniform(0.02, 0.05, 40)
    noisy = clean + sig[:, None, None] * rng.standard_normal(clean.shape)
    acc = _acc(noisy)
    est = band_noise_sigma(acc.covariance, acc.n)
    np.testing.assert_allclose(est, sig, rtol=0.2)
    assert abs(float(np.median(est / sig)) - 1) < 0.06


def test_accumulator_merges_windows_like_one_pass():
    x = low_rank_cube(bands=10, size=32) + 0.01 * np.random.default_rng(0).standard_normal((10, 32, 32))
    whole = _acc(x)
    parts = CovarianceAccumulator(10)
    for r in range(0, 32, 8):
        parts.update(x[:, r : r + 8].reshape(10, -1).T)
    np.testing.assert_allclose(parts.covariance, whole.covariance, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(parts.mean, whole.mean)


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_subspace_size_matches_rank(rank):
    clean = low_rank_cube(bands=50, size=96, rank=rank, seed=rank)
    noisy = clean + 0.005 * np.random.default_rng(2).standard_normal(clean.shape)
    assert fit_subspace(_acc(noisy)).rank == rank


def test_beats_oracle_rank_pca_on_synthetic_cube():
    from hsikit.restoration.classical import pca_denoise
    from hsikit.restoration.quality import psnr

    clean = low_rank_cube(bands=40, size=64, rank=5, seed=3)
    noisy = (clean + 30 / 255 * np.random.default_rng(4).standard_normal(clean.shape)).astype(np.float32)
    ours = psnr(clean, subspace_denoise(noisy))
    oracle = max(psnr(clean, pca_denoise(noisy, rank=k)) for k in range(1, 9))
    assert ours > oracle + 0.5, (ours, oracle)


def test_dead_columns_are_interpolated():
    x = np.tile(np.arange(10, dtype=np.float32), (2, 6, 1)) + np.arange(6, dtype=np.float32)[None, :, None]
    x[0, :, 4] = 0.0
    x[0, :, 0] = 0.0  # an edge column takes its live neighbour
    y = repair_dead_columns(x)
    rows = np.arange(6)
    assert np.allclose(y[0, :, 4], 4.0 + rows) and np.allclose(y[0, :, 0], 1.0 + rows)
    np.testing.assert_array_equal(y[1], x[1])
    flat = np.ones((1, 5, 5), np.float32)  # a constant band has no live column: left alone
    np.testing.assert_array_equal(repair_dead_columns(flat), flat)


def test_denoise_without_model_writes_tagged_output(tmp_path, capsys, fake_geotiff):
    scene = fake_geotiff(bands=24, height=48, width=56, nodata_border=2)
    out = tmp_path / "out.tif"
    code, stdout, err = cli(capsys, "--quiet", "denoise", scene, "-o", out)
    assert code == 0, err
    assert "method subspace" in stdout
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert dst.count == src.count and dst.dtypes[0] == "float32" and dst.crs == src.crs
        assert dst.transform == src.transform
        tags = dst.tags()
        data = dst.read()
        assert np.isnan(dst.nodata) or dst.nodata == src.nodata
        assert np.all(data[:, 5:-5, 5:-5] != dst.nodata) and np.isfinite(data[:, 5:-5, 5:-5]).all()
        assert float(dst.tags(1)["wavelength"]) == pytest.approx(float(src.tags(1)["wavelength"]))
    assert tags["HSIKIT_METHOD"] == "subspace"
    params = json.loads(tags["HSIKIT_METHOD_PARAMS"])
    assert params["rank"] >= 1 and params["spatial"] == "nlm" and params["nlm_h"] > 0
    assert params["noise_sigma_median"] > 0


@pytest.mark.parametrize("method", ["subspace", "pca", "wavelet", "tv"])
def test_method_choices(tmp_path, capsys, fake_geotiff, method):
    scene = fake_geotiff(bands=16, height=40, width=40)
    out = tmp_path / f"{method}.tif"
    code, _, err = cli(capsys, "--quiet", "denoise", scene, "-o", out, "--method", method)
    assert code == 0, err
    with rasterio.open(out) as dst:
        assert dst.tags()["HSIKIT_METHOD"] == method
        assert json.loads(dst.tags()["HSIKIT_METHOD_PARAMS"])["noise_sigma_median"] > 0


@pytest.mark.parametrize("args, message", [
    (["--method", "model"], "needs a checkpoint"),
    (["--method", "bm3d"], "choose one of subspace, pca, wavelet, tv, model"),
    (["--task", "gaussian"], "--task is for all-in-one models"),
])
def test_method_errors_are_one_line(tmp_path, capsys, fake_geotiff, args, message):
    scene = fake_geotiff(bands=8, height=20, width=20)
    code, _, err = cli(capsys, "denoise", scene, "-o", tmp_path / "o.tif", *args)
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (tmp_path / "o.tif").exists()


def test_model_with_classical_method_is_refused(tmp_path):
    from hsikit.errors import HsikitError
    from hsikit.pipelines.restore import denoise

    with pytest.raises(HsikitError, match="--method model only"):
        denoise("scene.tif", out=tmp_path / "o.tif", model="m.safetensors", method="subspace")


@pytest.mark.filterwarnings("ignore:.*has no CRS")
def test_large_scene_is_processed_tile_by_tile(tmp_path, monkeypatch):
    """Tiles, never the whole scene: every read is a window of at most one statistics block or one tile, the
    engine's accumulators hold one tile row, and the tiled result equals denoising the whole cube at once."""
    from hsikit.io.scene import ArrayScene
    from hsikit.pipelines.restore import denoise_classical
    from hsikit.restoration.subspace import fit_subspace_scene

    clean = low_rank_cube(bands=12, size=300, rank=3, seed=5)
    noisy = (clean + 0.03 * np.random.default_rng(6).standard_normal(clean.shape)).astype(np.float32)
    sc = ArrayScene(noisy)
    reads = []
    original = ArrayScene._read

    def spy(self, window, bands):
        reads.append(int(window.width) * int(window.height))
        return original(self, window, bands)

    monkeypatch.setattr(ArrayScene, "_read", spy)
    res = denoise_classical(sc, out=tmp_path / "big.tif", tile=64, block=64, progress=False)
    assert res.tiles > 4
    assert max(reads) <= 64 * 64
    assert res.engine.max_accumulator_pixels <= 64 * 300
    model, _ = fit_subspace_scene(ArrayScene(noisy), block=64)
    whole = model.denoise(noisy)
    with rasterio.open(tmp_path / "big.tif") as dst:
        tiled = dst.read()
    np.testing.assert_allclose(tiled, whole, atol=2e-4 * float(np.ptp(noisy)))


@pytest.mark.shared
def test_real_enmap_tile_beats_oracle_pca(shared_data):
    """On a real EnMAP test tile with sigma = 30: better than PCA at the rank that is best against the clean tile."""
    import csv

    from hsikit.io.open import open_scene
    from hsikit.restoration.classical import pca_denoise
    from hsikit.restoration.degradations import degrade, parse_degradations
    from hsikit.restoration.quality import psnr

    d = shared_data / "enmap_potsdam"
    first = next(csv.DictReader((d / "test_files.csv").open()))["image"]
    with open_scene(d / first) as sc:
        x = sc.read().astype(np.float32)
    clean = (x - x.min()) / np.ptp(x)
    noisy = degrade(clean, parse_degradations("gaussian:sigma=30"), np.random.default_rng(0)).x
    oracle = max(psnr(clean, pca_denoise(noisy, rank=k)) for k in range(1, 9))
    assert psnr(clean, subspace_denoise(noisy)) > oracle + 1.0


def test_too_few_pixels_for_the_bands_is_one_line_error(tmp_path, capsys, fake_geotiff):
    scene = fake_geotiff(bands=30, height=4, width=5)
    code, _, err = cli(capsys, "denoise", scene, "-o", tmp_path / "o.tif")
    assert code == 2 and err.strip().startswith("error: ") and "more valid pixels than bands" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o.tif").exists()
