"""`hsikit import-weights freenet`: official FreeNet state dicts (Z-Zheng/FreeNet names and shapes, random values,
saved the way SimpleCV's CheckPoint saves them) import completely and give the outputs of the official forward,
written here as plain functional code over the official tensors."""

from __future__ import annotations


import numpy as np
import pytest
import rasterio

from clirun import cli
from fakedata import write_fake_geotiff, write_labels_for
from test_import_weights import official_layout

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

import hsikit.weights.freenet  # noqa: E402,F401  (registers the importer)

F = torch.nn.functional
PAVIA = "freenet-paviau-103b-9c"


def simplecv_checkpoint(sd: dict, path, *, data_parallel: bool = True):
    """Save ``sd`` as SimpleCV's CheckPoint.save does: model state of the DataParallel-wrapped net, SGD state,
    step."""
    model = {(f"module.{k}" if data_parallel else k): v for k, v in sd.items()}
    opt = {"state": {0: {"momentum_buffer": torch.zeros(3)}},
           "param_groups": [{"lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-3, "params": [0]}]}
    torch.save({"model": model, "opt": opt, "global_step": 1000}, path)
    return path


def official_state(in_ch: int, n_cls: int, block_channels=(96, 128, 192, 256), num_blocks=(1, 1, 1, 1),
                   inner_dim: int = 128, reduction_ratio: float = 1.0, seed: int = 0) -> dict:
    """Official tensor names and shapes of FreeNet(config) for any configuration, random values."""
    g = torch.Generator().manual_seed(seed)
    r = int(16 * reduction_ratio)
    ch = [int(c * reduction_ratio / r) * r for c in block_channels]
    inner = int(inner_dim * reduction_ratio)
    shapes: list[tuple[str, tuple]] = []

    def conv(name, cout, cin, k):
        shapes.extend([(f"{name}.weight", (cout, cin, k, k)), (f"{name}.bias", (cout,))])

    def vec(name, c):
        shapes.extend([(f"{name}.weight", (c,)), (f"{name}.bias", (c,))])

    conv("feature_ops.0.0", ch[0], in_ch, 3)
    vec("feature_ops.0.1", ch[0])
    for s in range(4):
        op = 1 + 3 * s
        for j in range(num_blocks[s]):
            shapes.extend([(f"feature_ops.{op}.{j}.0.seq.0.weight", (ch[s] // r, ch[s])),
                           (f"feature_ops.{op}.{j}.0.seq.0.bias", (ch[s] // r,)),
                           (f"feature_ops.{op}.{j}.0.seq.2.weight", (ch[s], ch[s] // r)),
                           (f"feature_ops.{op}.{j}.0.seq.2.bias", (ch[s],))])
            conv(f"feature_ops.{op}.{j}.1.0", ch[s], ch[s], 3)
            vec(f"feature_ops.{op}.{j}.1.1", ch[s])
        if s < 3:
            conv(f"feature_ops.{op + 2}.0", ch[s + 1], ch[s], 3)
    for s in range(4):
        conv(f"reduce_1x1convs.{s}", inner, ch[s], 1)
    for s in range(4):
        conv(f"fuse_3x3convs.{s}", inner, inner, 3)
    conv("cls_pred_conv", n_cls, inner, 1)
    return {k: torch.randn(shape, generator=g) * 0.1 for k, shape in shapes}


def official_forward(sd: dict, x: torch.Tensor, r: int) -> torch.Tensor:
    """The official FreeNet.forward (logits, before the eval-mode softmax) as functions of the official tensors,
    with the data loader's zero padding to a multiple of 16 (bottom/right) and the crop back."""
    h, w = x.shape[-2:]
    x = F.pad(x, (0, (-w) % 16, 0, (-h) % 16))

    def cgr(x, p, stride=1, gn=True):
        x = F.conv2d(x, sd[f"{p}.0.weight"], sd[f"{p}.0.bias"], stride=stride, padding=1)
        if gn:
            x = F.group_norm(x, r, sd[f"{p}.1.weight"], sd[f"{p}.1.bias"], eps=1e-5)
        return F.relu(x)

    def se(x, p):
        v = x.mean(dim=(2, 3))
        v = torch.sigmoid(F.linear(F.relu(F.linear(v, sd[f"{p}.seq.0.weight"], sd[f"{p}.seq.0.bias"])),
                                   sd[f"{p}.seq.2.weight"], sd[f"{p}.seq.2.bias"]))
        return x * v[:, :, None, None]

    feats = []
    x = cgr(x, "feature_ops.0")
    for s in range(4):
        op = 1 + 3 * s
        j = 0
        while f"feature_ops.{op}.{j}.0.seq.0.weight" in sd:
            x = cgr(se(x, f"feature_ops.{op}.{j}.0"), f"feature_ops.{op}.{j}.1")
            j += 1
        feats.append(x)
        if s < 3:
            x = cgr(x, f"feature_ops.{op + 2}", stride=2, gn=False)
    inner = [F.conv2d(f, sd[f"reduce_1x1convs.{i}.weight"], sd[f"reduce_1x1convs.{i}.bias"])
             for i, f in enumerate(feats)][::-1]

    def fuse(i, t):
        return F.conv2d(t, sd[f"fuse_3x3convs.{i}.weight"], sd[f"fuse_3x3convs.{i}.bias"], padding=1)

    out = [fuse(0, inner[0])]
    for i in range(3):  # the official loop indexes the fuse convs with i, not i + 1
        out.append(fuse(i, inner[i + 1] + F.interpolate(out[i], scale_factor=2.0, mode="nearest")))
    logit = F.conv2d(out[-1], sd["cls_pred_conv.weight"], sd["cls_pred_conv.bias"])
    return logit[..., :h, :w]


def _check_equal(net, sd, bands: int, r: int, size=(40, 50)) -> None:
    x = torch.randn(1, bands, *size, generator=torch.Generator().manual_seed(3))
    net.eval()
    with torch.no_grad():
        ours, ref = net(x), official_forward(sd, x, r)
    assert ours.shape == ref.shape == (1, ref.shape[1], *size)
    np.testing.assert_allclose(ours.numpy(), ref.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(torch.softmax(ours, 1).numpy(), torch.softmax(ref, 1).numpy(), rtol=1e-5, atol=1e-7)


def test_official_pavia_layout_imports_completely_and_equals_the_official_forward(shared_data, tmp_path, capsys):
    from hsikit.checkpoint import load_checkpoint

    sd = official_layout(shared_data, PAVIA)
    src = simplecv_checkpoint(sd, tmp_path / "model-1000.pth")
    out = tmp_path / "freenet.safetensors"
    code, stdout, err = cli(capsys, "import-weights", "freenet", src, "-o", out)
    assert code == 0, err
    assert "freenet_1_0_pavia" in stdout and "fuse_3x3convs.3" in stdout
    net, meta = load_checkpoint(out)
    assert meta.arch == "freenet" and meta.task == "classification"
    assert meta.config["in_bands"] == 103 and meta.config["num_classes"] == 9
    assert list(meta.config["widths"]) == [96, 128, 192, 256] and meta.config["reduction_ratio"] == 1.0
    assert meta.provenance["container"] == "model" and meta.provenance["prefixes_removed"] == ["module."]
    assert "FPGA" in meta.provenance["paper"] and meta.provenance["source_file"] == "model-1000.pth"
    _check_equal(net, sd, 103, 16)
    # the two deepest hsikit fuse convs both hold the official fuse_3x3convs.0
    state = net.state_dict()
    assert torch.equal(state["fuse.3.weight"], sd["fuse_3x3convs.0.weight"])
    assert torch.equal(state["fuse.2.weight"], sd["fuse_3x3convs.0.weight"])
    assert torch.equal(state["fuse.0.bias"], sd["fuse_3x3convs.2.bias"])


def test_the_test_generator_matches_the_official_layout_file(shared_data):
    # the generator below writes other configurations; it must agree with the official file where they overlap
    spec = official_layout(shared_data, PAVIA)
    mine = official_state(103, 9)
    assert list(mine) == list(spec) and all(mine[k].shape == spec[k].shape for k in spec)


@pytest.mark.parametrize("in_ch,n_cls,blocks,ratio,inner", [
    (204, 16, (1, 1, 1, 1), 1.0, 128),  # Salinas
    (144, 15, (1, 1, 1, 1), 1.0, 128),  # GRSS 2013
    (20, 5, (2, 1, 1, 2), 0.5, 128),  # r = 8: widths 48/64/96/128, decoder 64
    (12, 4, (1, 0, 1, 1), 0.75, 96),  # r = 12, an empty stage
])
def test_other_configurations_are_inferred_from_the_shapes(tmp_path, capsys, in_ch, n_cls, blocks, ratio, inner):
    from hsikit.checkpoint import load_checkpoint

    sd = official_state(in_ch, n_cls, num_blocks=blocks, inner_dim=inner, reduction_ratio=ratio, seed=5)
    src = simplecv_checkpoint(sd, tmp_path / "model-10.pth", data_parallel=False)
    out = tmp_path / "f.safetensors"
    code, stdout, err = cli(capsys, "import-weights", "freenet", src, "-o", out)
    assert code == 0, err
    net, meta = load_checkpoint(out)
    assert meta.config["num_blocks"] == list(blocks) and meta.config["reduction_ratio"] == ratio
    assert ("official freenet_1_0" in stdout) == (blocks == (1, 1, 1, 1))
    _check_equal(net, sd, in_ch, int(16 * ratio), size=(33, 47))


def test_mis_shaped_extra_and_missing_tensors_are_named_in_one_line(shared_data, tmp_path, capsys):
    sd = official_layout(shared_data, PAVIA)
    bad = dict(sd, **{"feature_ops.4.0.1.0.weight": torch.zeros(128, 96, 3, 3)})
    simplecv_checkpoint(bad, tmp_path / "bad.pth")
    code, _, err = cli(capsys, "import-weights", "freenet", tmp_path / "bad.pth", "-o", tmp_path / "a.safetensors")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "feature_ops.4.0.1.0.weight" in err and "(128, 96, 3, 3)" in err and "(128, 128, 3, 3)" in err
    extra = dict(sd, **{"aux_head.weight": torch.zeros(9, 128, 1, 1)})
    simplecv_checkpoint(extra, tmp_path / "extra.pth")
    code, _, err = cli(capsys, "import-weights", "freenet", tmp_path / "extra.pth", "-o", tmp_path / "b.safetensors")
    assert code == 2 and "aux_head.weight" in err and len(err.strip().splitlines()) == 1
    missing = {k: v for k, v in sd.items() if k != "fuse_3x3convs.1.bias"}
    simplecv_checkpoint(missing, tmp_path / "missing.pth")
    code, _, err = cli(capsys, "import-weights", "freenet", tmp_path / "missing.pth", "-o", tmp_path / "c.safetensors")
    assert code == 2 and "fuse.1.bias" in err and len(err.strip().splitlines()) == 1
    # an override that does not fit: the official tensor is named with both shapes
    simplecv_checkpoint(sd, tmp_path / "good.pth")
    code, _, err = cli(capsys, "import-weights", "freenet", tmp_path / "good.pth", "-o", tmp_path / "d.safetensors",
                       "--set", "in_bands=100")
    assert code == 2 and "feature_ops.0.0.weight" in err and "(96, 103, 3, 3)" in err and "(96, 100, 3, 3)" in err
    # not a FreeNet at all
    simplecv_checkpoint({"head.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    code, _, err = cli(capsys, "import-weights", "freenet", tmp_path / "other.pth", "-o", tmp_path / "e.safetensors")
    assert code == 2 and "not a FreeNet state dict" in err
    assert not list(tmp_path.glob("*.safetensors"))


def test_class_names_band_grid_and_the_official_normalisation(tmp_path):
    from hsikit.io import open_scene
    from hsikit.preprocess.chain import Chain
    from hsikit.weights.freenet import band_grid_for, class_names, preprocessing

    pavia = {"in_bands": 103, "num_classes": 9}
    assert class_names(pavia)[0] == "Asphalt" and class_names(pavia)[-1] == "Shadows" and len(class_names(pavia)) == 9
    assert class_names({"in_bands": 204, "num_classes": 16}) == [f"class_{i}" for i in range(1, 17)]
    assert band_grid_for(pavia) == "pavia-university" and band_grid_for({"in_bands": 204, "num_classes": 16}) is None
    # the chain the checkpoint should carry, fitted on a scene, gives the official values: per band
    # (x - mean) / std with numpy's population std over all pixels of that scene
    path = write_fake_geotiff(tmp_path / "s.tif", bands=6, height=30, width=20)
    with rasterio.open(path) as src:
        raw = src.read().astype(np.float64)
    flat = raw.reshape(6, -1)
    official = (raw - flat.mean(1)[:, None, None]) / flat.std(1)[:, None, None]
    sc = open_scene(path)
    chain = Chain.from_dict(preprocessing()).fit(sc)
    np.testing.assert_allclose(chain.apply(raw.astype(np.float32)), official, rtol=1e-4, atol=1e-4)


def test_imported_pavia_model_classifies_a_scene_as_the_official_code_would(shared_data, tmp_path, capsys):
    from hsikit.checkpoint import read_checkpoint_meta

    sd = official_layout(shared_data, PAVIA)
    model = tmp_path / "freenet.safetensors"
    assert cli(capsys, "-q", "import-weights", "freenet", simplecv_checkpoint(sd, tmp_path / "m.pth"), "-o",
               model)[0] == 0
    meta = read_checkpoint_meta(model)
    assert meta.class_names[0] == "Asphalt" and len(meta.bands["wavelengths"]) == 103
    # 48 x 64: a multiple of 16, so neither the engine nor the data loader pads, and one tile holds the scene
    scene = write_fake_geotiff(tmp_path / "scene.tif", bands=103, height=48, width=64, nodata=None)
    out = tmp_path / "classes.tif"
    code, _, err = cli(capsys, "-q", "classify", scene, "-m", model, "-o", out)
    assert code == 0, err
    with rasterio.open(scene) as src:
        raw = src.read().astype(np.float64)
    flat = raw.reshape(103, -1)
    x = (raw - flat.mean(1)[:, None, None]) / flat.std(1)[:, None, None]
    with torch.no_grad():
        ref = official_forward(sd, torch.from_numpy(x).float()[None], 16)
    with rasterio.open(out) as dst:
        classes = dst.read(1)
    np.testing.assert_array_equal(classes, ref.argmax(1)[0].numpy() + 1)


def test_imported_freenet_works_unchanged_in_evaluate_and_batch(shared_data, tmp_path, capsys):
    from hsikit.pipelines.batch import scenes_table

    model = tmp_path / "freenet.safetensors"
    src = simplecv_checkpoint(official_layout(shared_data, PAVIA), tmp_path / "m.pth")
    assert cli(capsys, "-q", "import-weights", "freenet", src, "-o", model)[0] == 0
    scene = write_fake_geotiff(tmp_path / "scene.tif", bands=103, height=48, width=64, nodata=None)
    labels = write_labels_for(scene, tmp_path / "labels.tif")
    code, out, err = cli(capsys, "-q", "evaluate", model, scene, "--labels", labels, "-o", tmp_path / "ev")
    assert code == 0 and "OA" in out, err
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "scene.tif").write_bytes(scene.read_bytes())
    code, _, err = cli(capsys, "-q", "batch", "classify", folder, "-o", tmp_path / "maps", "-m", model,
                       "--workers", "1", "--no-dashboard")
    assert code == 0, err
    assert [r["status"] for r in scenes_table(tmp_path / "maps")] == ["done"]
    with rasterio.open(tmp_path / "maps" / "scene.tif") as a, rasterio.open(tmp_path / "ev" / "class_map.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))  # the per-scene statistics are the same in both
