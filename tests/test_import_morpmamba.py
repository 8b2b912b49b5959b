"""`hsikit import-weights morpmamba`: a Keras ``save_weights`` HDF5 file in the official notebook's layout (its
recorded dataset paths and shapes, random values) imports completely, and the imported network computes what the
notebook's own forward pass computes on the same arrays (a NumPy transcription of the notebook, written here);
mis-shaped, extra, missing and truncated files fail in one line naming the problem."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clirun import cli

torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

SPEC = "morpmamba-notebook-15b-15c"


def notebook_arrays(shared_data, seed: int = 0) -> dict[str, np.ndarray]:
    """The official notebook checkpoint's HDF5 datasets (recorded paths, shapes, dtypes), random
    values (kernels around 0.1 so the 16-step recurrence stays tame)."""
    spec = json.loads((shared_data.parent / "specs" / "official-checkpoints" / f"{SPEC}.json").read_text())
    rng = np.random.default_rng(seed)
    return {path: (rng.standard_normal(shape) * 0.1).astype(dtype) for path, shape, dtype in spec["h5_datasets"]}


def write_h5(path, arrays: dict[str, np.ndarray]):
    """What Keras' ``save_weights`` writes: nested groups, ``vars/i`` datasets, and empty groups for layers
    without weights."""
    with h5py.File(path, "w") as f:
        f.attrs["date_saved"] = "2024-09-28@22:30:00"
        f.create_group("vars")
        f.create_group("layers/dropout/vars")
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


# --- the notebook's forward pass, transcribed to NumPy (NHWC, one 1-channel depthwise conv per channel) --------

def _conv_same(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """TF ``padding='same'`` stride-1 cross-correlation of ``img (N, H, W)`` with ``kernel (k, k)``."""
    k = kernel.shape[0]
    lo = (k - 1) // 2
    pad = np.pad(img, ((0, 0), (lo, k - 1 - lo), (lo, k - 1 - lo)))
    h, w = img.shape[1:]
    return sum(kernel[a, b] * pad[:, a:a + h, b:b + w] for a in range(k) for b in range(k))


def _layer_kernels(a: dict, layer: str) -> list[np.ndarray]:
    prefix = f"token_generation/{layer}/depthwise_conv/depthwise_conv2d"
    keys = [k for k in a if k.startswith(prefix)]
    index = {k: int(k[len(prefix):].split("/")[0].lstrip("_") or 0) for k in keys}
    return [a[k][:, :, 0, 0] for k in sorted(keys, key=index.get)]


def _morph(x: np.ndarray, ero: list, dil: list) -> tuple[np.ndarray, np.ndarray]:
    eroded = np.stack([-_conv_same(x[..., i], ero[i]) for i in range(x.shape[-1])], axis=-1)
    return eroded, np.stack([_conv_same(x[..., i], dil[i]) for i in range(x.shape[-1])], axis=-1)


def _dense(a: dict, layer: str, x: np.ndarray) -> np.ndarray:
    return x @ a[f"{layer}/vars/0"] + a[f"{layer}/vars/1"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def notebook_logits(a: dict, x_nhwc: np.ndarray, heads: int = 4) -> np.ndarray:
    """SSMambaModel.call of the notebook, before the classifier's softmax, in float64."""
    a = {k: v.astype(np.float64) for k, v in a.items()}
    n, p = x_nhwc.shape[:2]
    spatial_in = np.concatenate(_morph(x_nhwc, _layer_kernels(a, "erosion_layer_spatial"),
                                       _layer_kernels(a, "dilation_layer_spatial")), axis=-1)
    spec = _morph(x_nhwc.transpose(0, 3, 1, 2), _layer_kernels(a, "erosion_layer_spectral"),
                  _layer_kernels(a, "dilation_layer_spectral"))
    spec_in = np.concatenate([t.transpose(0, 2, 3, 1) for t in spec], axis=-1)
    conv_w, conv_b = a["token_generation/conv/vars/0"][0, 0], a["token_generation/conv/vars/1"]
    spatial, spectral = spatial_in @ conv_w + conv_b, spec_in @ conv_w + conv_b
    centre = spatial[:, p // 2, :]
    gate = "layers/spectral_spatial_feature_enhancement/{}_gate/layers/dense"
    spatial = spatial * _sigmoid(_dense(a, gate.format("spatial"), centre))[:, :, None]
    spectral = spectral * _sigmoid(_dense(a, gate.format("spectral"), centre))[:, :, None, :]
    d = spatial.shape[-1]

    def heads_of(t):
        return t.reshape(n, -1, heads, d // heads).transpose(0, 2, 1, 3)

    q = heads_of(_dense(a, "multi_head_attention/query", spatial))
    k = heads_of(_dense(a, "multi_head_attention/key", spectral))
    v = heads_of(_dense(a, "multi_head_attention/value", spectral))
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d // heads)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    tokens = (weights @ v).transpose(0, 2, 1, 3).reshape(n, -1, d)
    state = np.zeros((n, a["state_space_model/state_transition/vars/0"].shape[0]))
    for t in range(tokens.shape[1]):
        state = (_dense(a, "state_space_model/state_transition", state)
                 + _dense(a, "state_space_model/state_update", tokens[:, t]))
    return _dense(a, "layers/dense_1", np.maximum(_dense(a, "layers/dense", state), 0.0))


# --- tests ------------------------------------------------------------------------------------------------------

def test_notebook_weights_import_completely_and_equal_the_notebook_forward(shared_data, tmp_path, capsys):
    import hsikit.weights.morpmamba  # noqa: F401  (registers the importer)
    from hsikit.checkpoint import load_checkpoint

    arrays = notebook_arrays(shared_data)
    src = write_h5(tmp_path / "morpmamba_uh.h5", arrays)
    out = tmp_path / "morpmamba.safetensors"
    code, stdout, err = cli(capsys, "import-weights", "morpmamba", src, "-o", out)
    assert code == 0, err
    assert "official notebook variant" in stdout and "heads 4 assumed" in stdout
    net, meta = load_checkpoint(out)
    assert meta.arch == "morpmamba" and meta.task == "classification"
    cfg = meta.config
    assert (cfg["in_bands"], cfg["num_classes"], cfg["patch"], cfg["dim"], cfg["heads"], cfg["state_dim"],
            cfg["kernel"]) == (15, 15, 4, 64, 4, 128, 5)
    assert (cfg["ssm"], cfg["attention"], cfg["center_mode"], cfg["morph"]) == ("recurrence", "cross", "row", "conv")
    assert sum(p.numel() for p in net.parameters()) == 67013 == sum(v.size for v in arrays.values())
    assert meta.provenance["source_file"] == "morpmamba_uh.h5" and "MorpMamba" in meta.provenance["official"]

    x = np.random.default_rng(1).standard_normal((6, 15, 4, 4))
    net = net.double().eval()
    with torch.no_grad():
        got = net.forward_patches(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, notebook_logits(arrays, x.transpose(0, 2, 3, 1)), rtol=1e-5, atol=1e-8)
    # the whole-tile entry point cuts the notebook's windows: pixel (r, c) at index 2 of rows r-2 .. r+1
    tile = np.random.default_rng(2).standard_normal((1, 15, 5, 6))
    padded = np.pad(tile[0].transpose(1, 2, 0), ((2, 2), (2, 2), (0, 0)))
    windows = np.stack([padded[r:r + 4, c:c + 4] for r in range(5) for c in range(6)])
    with torch.no_grad():
        per_pixel = net(torch.from_numpy(tile))[0].numpy().transpose(1, 2, 0).reshape(30, -1)
    np.testing.assert_allclose(per_pixel, notebook_logits(arrays, windows), rtol=1e-5, atol=1e-8)


def test_inferred_configuration_follows_the_shapes(shared_data):
    from hsikit.weights.morpmamba import convert, infer

    arrays = notebook_arrays(shared_data)
    # 10 PCA components, 9 classes, 5x5 windows: drop/reshape what those change
    small = {k: v for k, v in arrays.items()
             if not any(f"spatial/depthwise_conv/depthwise_conv2d_{i}/" in k for i in range(10, 15))}
    small["token_generation/conv/vars/0"] = np.zeros((1, 1, 20, 64), np.float32)
    small["layers/dense_1/vars/0"] = np.zeros((128, 9), np.float32)
    small["layers/dense_1/vars/1"] = np.zeros(9, np.float32)
    for layer in ("erosion", "dilation"):
        small[f"token_generation/{layer}_layer_spectral/depthwise_conv/depthwise_conv2d_4/vars/0"] = (
            np.zeros((5, 5, 1, 1), np.float32))
    t = {k: torch.from_numpy(v) for k, v in small.items()}
    cfg, notes = infer(t)
    assert (cfg["in_bands"], cfg["num_classes"], cfg["patch"]) == (10, 9, 5) and "10 PCA components" in notes[0]
    converted, dropped = convert(t, cfg)
    assert converted["tokens.spatial.erode.weight"].shape == (10, 1, 5, 5) and not dropped
    assert converted["tokens.spectral.dilate.weight"].shape == (5, 1, 5, 5)
    # the channel order follows Keras' numbering (depthwise_conv2d, _1, ..., _10), not the file's sorted order
    key = "token_generation/erosion_layer_spatial/depthwise_conv/depthwise_conv2d_{}/vars/0"
    np.testing.assert_array_equal(converted["tokens.spatial.erode.weight"][2, 0].numpy(),
                                  small[key.format(2)][..., 0, 0])


def test_what_does_not_fit_is_named_in_one_line(shared_data, tmp_path, capsys):
    import hsikit.weights.morpmamba  # noqa: F401

    arrays = notebook_arrays(shared_data)

    def run(name, data):
        src = write_h5(tmp_path / f"{name}.h5", data)
        code, _, err = cli(capsys, "import-weights", "morpmamba", src, "-o", tmp_path / f"{name}.safetensors")
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        return err

    err = run("wrong", dict(arrays, **{"multi_head_attention/query/vars/0": np.zeros((64, 32), np.float32)}))
    assert "multi_head_attention/query/vars/0" in err and "(64, 32)" in err and "(64, 64)" in err
    err = run("extra", dict(arrays, **{"layers/extra/vars/0": np.zeros(3, np.float32)}))
    assert "layers/extra/vars/0" in err and "maps to nothing" in err
    surplus = "token_generation/dilation_layer_spatial/depthwise_conv/depthwise_conv2d_15/vars/0"
    err = run("surplus", dict(arrays, **{surplus: np.zeros((5, 5, 1, 1), np.float32)}))
    assert surplus in err
    err = run("missing", {k: v for k, v in arrays.items() if k != "state_space_model/state_update/vars/1"})
    assert "state_space_model/state_update/vars/1" in err
    err = run("not_morpmamba", {"weights/vars/0": np.zeros(3, np.float32)})
    assert "not a MorpMamba notebook weights file" in err
    good = write_h5(tmp_path / "good.h5", arrays)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    code, _, err = cli(capsys, "import-weights", "morpmamba", cut, "-o", tmp_path / "cut.safetensors")
    assert code == 2 and "cut.h5 is truncated or not an HDF5 file" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.safetensors"))


def test_imported_checkpoint_classifies_a_scene_with_the_notebook_pca_fitted_on_it(shared_data, tmp_path, capsys,
                                                                                   fake_geotiff):
    """The weights hold no PCA: the checkpoint carries the notebook's whitened PCA unfitted, and `hsikit classify`
    fits it on the scene it classifies, as the notebook does; the classes are Houston 2013's."""
    import rasterio

    import hsikit.weights.morpmamba  # noqa: F401
    from hsikit.checkpoint import load_checkpoint
    from hsikit.io.open import open_scene
    from hsikit.preprocess.chain import Chain
    from hsikit.weights.morpmamba import HOUSTON_2013

    arrays = notebook_arrays(shared_data)
    # zero biases: with random ones the 16-step recurrence accumulates a constant that picks one class everywhere
    arrays.update({k: np.zeros_like(v) for k, v in arrays.items() if k.endswith("/vars/1")})
    src = write_h5(tmp_path / "morpmamba_uh.h5", arrays)
    imported = tmp_path / "imported.safetensors"
    assert cli(capsys, "-q", "import-weights", "morpmamba", src, "-o", imported)[0] == 0
    scene_path = fake_geotiff(bands=24, height=18, width=21)

    net, meta = load_checkpoint(imported)
    assert meta.class_names == list(HOUSTON_2013) and meta.bands is None
    # the notebook: PCA(n_components=15, whiten=True) fitted on the scene it classifies, no scaling before it
    chain = Chain.from_options(scale=False, pca=15, pca_whiten=True).fit(open_scene(scene_path))
    out = tmp_path / "classes.tif"
    code, _, err = cli(capsys, "-q", "classify", scene_path, "-m", imported, "-o", out, "--tile", "16")
    assert code == 0, err
    with rasterio.open(out) as dst:
        classes = dst.read(1)
        assert classes.shape == (18, 21) and classes.max() <= 15
        assert dst.tags()["HSIKIT_MODEL"] == "morpmamba"
    # tiled and blended, still every pixel's class from its own 4x4 window of the whole scene's whitened PCA
    with rasterio.open(scene_path) as ds:
        pca = chain.apply(ds.read().astype(np.float32))
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(pca)[None])[0].argmax(0).numpy() + 1
    assert len(np.unique(expected)) > 2 and (classes == expected).mean() > 0.99


def test_optimizer_state_is_dropped_and_heads_can_be_set(shared_data, tmp_path, capsys):
    """Weights taken out of a ``.keras`` archive carry the optimizer's slots beside the layers; the head count,
    which no tensor records, follows ``--set``."""
    import hsikit.weights.morpmamba  # noqa: F401
    from hsikit.checkpoint import load_checkpoint

    arrays = notebook_arrays(shared_data)
    arrays.update({"optimizer/vars/0": np.zeros((), np.int64), "optimizer/vars/1": np.zeros((64, 64), np.float32)})
    src = write_h5(tmp_path / "model.weights.h5", arrays)
    out = tmp_path / "m.safetensors"
    code, stdout, err = cli(capsys, "import-weights", "morpmamba", src, "-o", out, "--set", "heads=8")
    assert code == 0, err
    assert "dropped 2" in stdout and "optimizer/vars/0" in stdout and "--set heads=8" in stdout
    assert load_checkpoint(out)[1].config["heads"] == 8
