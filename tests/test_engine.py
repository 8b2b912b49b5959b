"""Tiled engine correctness: identity, constants, tile-size invariance, nodata, coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from hsikit.engine import TileSpec, run_tiled
from hsikit.engine.engine import resolve
from hsikit.engine.tiling import axis_weights, column_groups, plan_axis
from hsikit.errors import OptionError
from hsikit.io.scene import ArrayScene


def collect(scene, predict, channels, spec, **kw):
    """Run the engine into full-size arrays, counting how often each pixel is emitted."""
    h, w = scene.height, scene.width
    out = np.full((channels, h, w), np.nan, dtype=np.float32)
    valid = np.zeros((h, w), dtype=bool)
    cover = np.zeros((h, w), dtype=int)

    def sink(win, values, ok):
        r, c = int(win.row_off), int(win.col_off)
        assert values.shape == (channels, int(win.height), int(win.width))
        out[:, r : r + values.shape[1], c : c + values.shape[2]] = values
        valid[r : r + ok.shape[0], c : c + ok.shape[1]] = ok
        cover[r : r + ok.shape[0], c : c + ok.shape[1]] += 1

    stats = run_tiled(scene, predict, out_channels=channels, sink=sink, spec=spec, progress=False, **kw)
    return out, valid, cover, stats


CASES = [
    # height, width, tile, overlap, margin, max_strip_width
    (37, 53, 16, 4, 1, 4096),
    (64, 64, 32, 8, 2, 4096),
    (100, 130, 32, 8, 3, 60),  # super-columns
    (200, 301, 64, 16, 4, 100),  # super-columns, width not a multiple
    (5, 7, 16, None, None, 4096),  # smaller than a tile
    (1, 40, 8, 2, 1, 4096),  # one row
    (40, 1, 8, 2, 1, 4096),  # one column
    (129, 33, 32, 16, 8, 4096),  # maximum overlap (half the tile)
]


@pytest.mark.parametrize("h,w,tile,overlap,margin,msw", CASES)
def test_identity_reproduces_input(h, w, tile, overlap, margin, msw):
    data = np.random.default_rng(h * w).normal(size=(3, h, w)).astype(np.float32)
    out, valid, cover, stats = collect(ArrayScene(data), lambda x: x, 3,
                                       TileSpec(tile=tile, overlap=overlap, margin=margin, max_strip_width=msw))
    assert (cover == 1).all(), "every pixel emitted exactly once"
    assert valid.all()
    np.testing.assert_allclose(out, data, rtol=0, atol=1e-5)


def test_constant_model_has_no_seams():
    data = np.zeros((2, 90, 110), np.float32)
    const = lambda x: np.full((x.shape[0], 4, *x.shape[2:]), 0.25, np.float32)  # noqa: E731
    out, valid, _, stats = collect(ArrayScene(data), const, 4, TileSpec(tile=32, overlap=8, margin=2))
    assert stats.tiles > 9
    np.testing.assert_allclose(out, 0.25, atol=1e-6)


def box_model(radius: int):
    """A model with a (2r+1)^2 box filter, zero padding at the input edge (like a 'same' convolution)."""

    def predict(x):
        out = np.empty_like(x)
        for n in range(x.shape[0]):
            for c in range(x.shape[1]):
                out[n, c] = uniform_filter(x[n, c], size=2 * radius + 1, mode="constant")
        return out

    return predict


@pytest.mark.parametrize("radius", [1, 2])
def test_tile_size_invariance(radius):
    data = np.random.default_rng(1).normal(size=(2, 150, 170)).astype(np.float32)
    sc = ArrayScene(data)
    outs = []
    for tile, msw in ((32, 4096), (64, 4096), (48, 80)):
        out, _, _, _ = collect(sc, box_model(radius), 2, TileSpec(tile=tile), context=radius)
        outs.append(out)
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5)
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-5)
    # and equal to the filter applied to the whole scene at once
    np.testing.assert_allclose(outs[0], box_model(radius)(data[None])[0], atol=1e-5)


def test_torch_conv_model_invariance():
    torch = pytest.importorskip("torch")
    from hsikit.engine.torch_predict import TorchPredictor

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3, padding=1))
    data = np.random.default_rng(2).normal(size=(4, 90, 75)).astype(np.float32)
    pred = TorchPredictor(net, "cpu", softmax=True)
    a, *_ = collect(ArrayScene(data), pred, 3, TileSpec(tile=32), context=2)
    b, *_ = collect(ArrayScene(data), pred, 3, TileSpec(tile=64, max_strip_width=70), context=2)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(a.sum(axis=0), 1.0, atol=1e-5)


def test_nodata_and_skipped_tiles():
    data = np.random.default_rng(3).normal(size=(2, 64, 96)).astype(np.float32)
    data[:, :, :40] = -9999.0  # fully invalid left part: whole tiles to skip
    data[0, 50, 60] = np.nan
    sc = ArrayScene(data, nodata=-9999.0)
    seen = []

    def predict(x):
        seen.append(x.copy())
        return x

    out, valid, cover, stats = collect(sc, predict, 2, TileSpec(tile=16, overlap=4, margin=1, batch_size=3))
    assert (cover == 1).all()
    expected_valid = ~((data == -9999.0).any(axis=0) | np.isnan(data).any(axis=0))
    np.testing.assert_array_equal(valid, expected_valid)
    assert stats.skipped_tiles >= 6
    planned = len(plan_axis(64, 16, 4).starts) * len(plan_axis(96, 16, 4).starts)
    assert stats.tiles + stats.skipped_tiles == planned
    n_predicted = sum(len(s) for s in seen)
    assert n_predicted == stats.tiles
    # invalid pixels never reach the model as nodata or NaN: they are filled with 0
    assert all(np.isfinite(s).all() and (s != -9999.0).all() for s in seen)
    np.testing.assert_allclose(out[:, expected_valid], data[:, expected_valid], atol=1e-5)


def test_accumulator_does_not_grow_with_height():
    sizes = []
    for h in (100, 400):
        data = np.zeros((1, h, 300), np.float32)
        *_, stats = collect(ArrayScene(data), lambda x: x, 1, TileSpec(tile=32, overlap=8, margin=2, max_strip_width=120))
        sizes.append(stats.max_accumulator_pixels)
    assert sizes[0] == sizes[1] and sizes[0] <= 32 * 120


def test_size_multiple_padding():
    data = np.random.default_rng(4).normal(size=(1, 45, 50)).astype(np.float32)

    def needs_multiple_of_8(x):
        assert x.shape[2] % 8 == 0 and x.shape[3] % 8 == 0
        return x

    out, *_ = collect(ArrayScene(data), needs_multiple_of_8, 1, TileSpec(tile=20, overlap=4, margin=1), size_multiple=8)
    np.testing.assert_allclose(out, data, atol=1e-5)


def test_weights_and_plans():
    p = plan_axis(100, 32, 8)
    assert p.starts[0] == 0 and p.starts[-1] + p.size == 100
    assert all(b - a <= 24 for a, b in zip(p.starts, p.starts[1:]))
    w = axis_weights(32, 8, 8, 2)
    assert (w[:2] == 0).all() and (w[-2:] == 0).all() and (w[2:-2] > 0).all() and w[16] == 1
    flat = axis_weights(32, 0, 0, 2)
    assert (flat == 1).all(), "no taper at the scene edge"
    groups = column_groups(plan_axis(1000, 64, 16), 200)
    owned = [(a, b) for _, _, a, b in groups]
    assert owned[0][0] == 0 and owned[-1][1] == 1000
    assert all(x[1] == y[0] for x, y in zip(owned, owned[1:]))


def test_resolve_rules():
    assert resolve(TileSpec(tile=512), 0, True) == (0, 0)
    ov, m = resolve(TileSpec(tile=512), 20, False)
    assert m >= 20 and ov >= 2 * m
    with pytest.raises(OptionError, match="receptive field"):
        resolve(TileSpec(tile=64, overlap=8), 16, False)
    with pytest.raises(OptionError, match="half the tile"):
        resolve(TileSpec(tile=64, overlap=40, margin=4), 0, False)
    assert resolve(TileSpec(tile=512, overlap=100), 50, False, shape=(100, 200)) == (0, 0)  # one tile: no overlap
    # an overlap no tile can have is refused even where one tile covers the scene (it was recorded as given)
    with pytest.raises(OptionError, match="--overlap 999 px exceeds half the tile"):
        resolve(TileSpec(tile=512, overlap=999), 50, False, shape=(100, 200))
    for bad, option in ((TileSpec(tile=0), "--tile"), (TileSpec(overlap=-3), "--overlap"),
                        (TileSpec(batch_size=0), "--batch-size")):
        with pytest.raises(OptionError, match=f"^{option} must be at least"):
            resolve(bad, 0, True)


def test_device_errors():
    pytest.importorskip("torch")
    import torch

    from hsikit.engine.torch_predict import resolve_device

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in ("cpu", "cuda")
    if not torch.cuda.is_available():
        with pytest.raises(OptionError, match="no CUDA"):
            resolve_device("cuda")
    with pytest.raises(OptionError, match="unknown device"):
        resolve_device("tpu")


def _nearest_sr(s: int):
    return lambda x: np.repeat(np.repeat(x, s, axis=2), s, axis=3)


@pytest.mark.parametrize("h,w,tile,overlap,margin,msw", CASES[:5])
@pytest.mark.parametrize("s", [2, 3])
def test_super_resolution_grid(h, w, tile, overlap, margin, msw, s):
    """With scale s the sink receives windows on the s-times finer grid, each output pixel exactly once."""
    data = np.random.default_rng(h + w).normal(size=(2, h, w)).astype(np.float32)
    out = np.full((2, h * s, w * s), np.nan, np.float32)
    cover = np.zeros((h * s, w * s), int)

    def sink(win, values, ok):
        r, c = int(win.row_off), int(win.col_off)
        assert values.shape == (2, int(win.height), int(win.width))
        out[:, r : r + values.shape[1], c : c + values.shape[2]] = values
        cover[r : r + ok.shape[0], c : c + ok.shape[1]] += 1

    run_tiled(ArrayScene(data), _nearest_sr(s), out_channels=2, sink=sink, progress=False, scale=s,
              spec=TileSpec(tile=tile, overlap=overlap, margin=margin, max_strip_width=msw))
    assert (cover == 1).all()
    np.testing.assert_allclose(out, _nearest_sr(s)(data[None])[0], atol=1e-5)


def test_super_resolution_tile_invariance_and_nodata():
    """A context-using SR model (box filter then 2x replication) gives the same result whatever the tile size;
    nodata input pixels stay invalid on the fine grid."""
    data = np.random.default_rng(5).normal(size=(2, 70, 90)).astype(np.float32)
    data[:, 10:14, 20:25] = -9999
    sc = ArrayScene(data, nodata=-9999)
    sr = lambda x: _nearest_sr(2)(box_model(1)(x))  # noqa: E731
    res = []
    for tile, msw in ((24, 4096), (40, 4096), (32, 50)):
        out = np.zeros((2, 140, 180), np.float32)
        valid = np.zeros((140, 180), bool)

        def sink(win, values, ok):
            r, c = int(win.row_off), int(win.col_off)
            out[:, r : r + values.shape[1], c : c + values.shape[2]] = values
            valid[r : r + ok.shape[0], c : c + ok.shape[1]] = ok

        run_tiled(sc, sr, out_channels=2, sink=sink, progress=False, scale=2, context=1,
                  spec=TileSpec(tile=tile, max_strip_width=msw))
        res.append((out.copy(), valid.copy()))
    for out, valid in res[1:]:
        np.testing.assert_allclose(out, res[0][0], atol=1e-5)
        assert (valid == res[0][1]).all()
    assert not res[0][1][20:28, 40:50].any() and res[0][1][:20].all()


@pytest.mark.parametrize("scale", [1, 2])
def test_strips_carry_their_shared_columns_instead_of_recomputing_them(scale):
    """Narrow super-columns give the single-pass result (to float32 rounding: the carried sums are added in another
    order), with every tile computed once: the sums of the columns two strips share are carried over."""
    from scipy.ndimage import uniform_filter

    data = np.random.default_rng(7).normal(size=(3, 90, 230)).astype(np.float32)

    def blur(x):
        y = uniform_filter(x, size=(1, 1, 5, 5), mode="reflect")
        return np.repeat(np.repeat(y, scale, axis=2), scale, axis=3) if scale > 1 else y

    runs = {}
    for msw in (10_000, 70):
        out = np.zeros((3, 90 * scale, 230 * scale), np.float32)
        seen = np.zeros(out.shape[1:], np.int32)

        def sink(win, values, valid):
            sl = (slice(win.row_off, win.row_off + win.height), slice(win.col_off, win.col_off + win.width))
            out[(slice(None), *sl)] = values
            seen[sl] += 1

        stats = run_tiled(ArrayScene(data), blur, out_channels=3, sink=sink, context=2, scale=scale, progress=False,
                          spec=TileSpec(tile=32, overlap=12, margin=3, max_strip_width=msw))
        assert (seen == 1).all()
        runs[msw] = (out, stats)
    (a, sa), (b, sb) = runs[10_000], runs[70]
    assert sb.max_accumulator_pixels < sa.max_accumulator_pixels  # narrower strips really were used
    assert sb.tiles == sa.tiles  # no tile computed twice
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
