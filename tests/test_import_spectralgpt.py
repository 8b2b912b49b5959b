"""`hsikit import-weights spectralgpt`: the official SpectralGPT / SpectralGPT+ MAE layouts (official keys and
shapes, random values, in the official `{'model', 'optimizer', 'epoch', 'scaler', 'args'}` container) import
completely; the imported MAE's encoder features and reconstruction equal a plain-functional forward written here
from the official code's semantics; mis-shaped or extra tensors fail naming them; the result initialises
`train segmenter --init`."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import rasterio

from clirun import cli
from test_import_weights import official_layout

torch = pytest.importorskip("torch")
F = torch.nn.functional
pytestmark = pytest.mark.usefixtures("one_torch_thread")

import hsikit.weights.spectralgpt  # noqa: E402,F401  (registers the importer)

ARCH = "spectralgpt"
LAYOUTS = {96: "spectralgpt-mae-base-patch8-96", 128: "spectralgpt-mae-base-patch8-128"}
#: visible tokens at mask ratio 0.9: int(L * 0.1) of 576 / 1024 tokens (96 / 128 px, as the official code)
KEPT = {96: 57, 128: 102}
S2 = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


def _save_official(sd: dict, path, img: int) -> None:
    """The container of the official util/misc.py save_model, `args` an argparse.Namespace."""
    args = argparse.Namespace(model=f"mae_vit_base_patch8_{img}", input_size=img, patch_size=8, mask_ratio=0.9,
                              batch_size=16, accum_iter=32, blr=2e-4, epochs=200, dropped_bands=[10])
    torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 3.2e-3, "params": [0, 1]}]},
                "epoch": 199, "scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
                "args": args}, path)


# -- the official forward, written from models_mae_spectral's semantics with plain functions ----------------------
def _ln(sd: dict, name: str, x):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)


def _fc(sd: dict, name: str, x):
    return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def _block(sd: dict, pre: str, x, heads: int):
    n, length, d = x.shape
    h = _ln(sd, pre + "norm1", x)
    q, k, v = (_fc(sd, f"{pre}attn.{c}", h).reshape(n, length, heads, d // heads).permute(0, 2, 1, 3) for c in "qkv")
    att = torch.softmax((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5, dim=-1)
    x = x + _fc(sd, pre + "attn.proj", (att @ v).permute(0, 2, 1, 3).reshape(n, length, d))
    return x + _fc(sd, pre + "mlp.fc2", F.gelu(_fc(sd, pre + "mlp.fc1", _ln(sd, pre + "norm2", x))))


def _take(x, ids):
    return torch.gather(x, 1, ids[..., None].expand(-1, -1, x.shape[-1]))


def _official_mae(sd: dict, x, noise, keep: int):
    """(latent of the kept tokens, prediction of every token): forward_encoder + forward_decoder of the official
    base MAE (12 encoder heads, 16 decoder heads, LayerNorm eps 1e-6, separable position tables)."""
    w = sd["patch_embed.proj.weight"]
    u, p = w.shape[2], w.shape[3]
    tok = F.conv3d(x[:, None], w, sd["patch_embed.proj.bias"], stride=(u, p, p))  # (N, D, T, h, w)
    n, d, t, h, wc = tok.shape
    tok = tok.flatten(3).permute(0, 2, 3, 1).reshape(n, t * h * wc, d)  # "ncts->ntsc", then T*L tokens
    shuffle = noise.argsort(1)
    restore = shuffle.argsort(1)
    keep_ids = shuffle[:, :keep]
    pos = sd["pos_embed_spatial"].repeat(1, t, 1) + sd["pos_embed_temporal"].repeat_interleave(h * wc, 1)
    z = _take(tok, keep_ids) + _take(pos.expand(n, -1, -1), keep_ids)
    for i in range(12):
        z = _block(sd, f"blocks.{i}.", z, 12)
    latent = _ln(sd, "norm", z)
    y = _fc(sd, "decoder_embed", latent)
    y = _take(torch.cat([y, sd["mask_token"].repeat(n, t * h * wc - keep, 1)], 1), restore)
    y = y + sd["decoder_pos_embed_spatial"].repeat(1, t, 1) + sd["decoder_pos_embed_temporal"].repeat_interleave(
        h * wc, 1)
    for i in range(4):
        y = _block(sd, f"decoder_blocks.{i}.", y, 16)
    return latent, _fc(sd, "decoder_pred", _ln(sd, "decoder_norm", y))


def _official_unpatchify(pred, grid, u: int = 3, p: int = 8):
    """Tokens (N, t*h*w, u*p*p) -> (N, t*u, h*p, w*p), the official "nthwupqc->nctuhpwq"."""
    t, h, w = grid
    x = pred.reshape(pred.shape[0], t, h, w, u, p, p).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(pred.shape[0], t * u, h * p, w * p)


@pytest.mark.parametrize("img", [96, 128])
def test_official_spectralgpt_imports_completely_and_equals_the_official_forward(shared_data, tmp_path, capsys, img):
    from hsikit.checkpoint import load_checkpoint
    from hsikit.models.spectralgpt import scale_input

    sd = official_layout(shared_data, LAYOUTS[img])
    src = tmp_path / ("SpectralGPT.pth" if img == 96 else "SpectralGPT+.pth")
    _save_official(sd, src, img)
    out = tmp_path / "mae.safetensors"
    code, stdout, err = cli(capsys, "import-weights", ARCH, src, "-o", out)
    assert code == 0, err
    assert "12 x 768" in stdout and "4 x 512" in stdout and f"{img} px" in stdout and "B8A" in stdout
    net, meta = load_checkpoint(out)
    assert meta.arch == "spectralgpt-base" and meta.task == "masked-autoencoding"  # the registry name
    assert meta.bands["names"][8] == "B8A" and meta.bands["wavelengths"][-1] == 2190
    c = meta.config
    assert (c["variant"], c["img_size"], c["patch_size"], c["group_size"], c["embed_dim"], c["depth"],
            c["num_heads"], c["decoder_embed_dim"], c["decoder_depth"], c["decoder_num_heads"]) == \
           ("base", img, 8, 3, 768, 12, 12, 512, 4, 16)
    assert c["bands"] == S2 and c["input_scaling"] == "minmax"
    assert meta.provenance["container"] == "model" and meta.provenance["source_file"] == src.name
    assert sum(v.numel() for v in net.state_dict().values()) == sum(v.numel() for v in sd.values())

    net.eval()
    x = torch.rand(2, 12, img, img, generator=torch.Generator().manual_seed(1)) * 3000
    cells = (img // 8) ** 2
    noise = torch.rand(2, 4 * cells, generator=torch.Generator().manual_seed(7))  # the fixed mask
    seen = {}
    hook = net.encoder.norm.register_forward_hook(lambda m, i, o: seen.__setitem__("latent", o))
    with torch.no_grad():
        res = net(x, mask_ratio=0.9, generator=torch.Generator().manual_seed(7))
        recon, _ = net.reconstruct(res, paste_visible=False)
        # the official min-max scaling lives in its data loaders, outside the network
        latent, pred = _official_mae(sd, scale_input(x, "minmax"), noise, KEPT[img])
    hook.remove()
    assert seen["latent"].shape == (2, KEPT[img], 768) and int(res.mask.sum()) == 2 * (4 * cells - KEPT[img])
    np.testing.assert_allclose(seen["latent"].numpy(), latent.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.pred.numpy(), pred.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(recon.numpy(), _official_unpatchify(pred, (4, img // 8, img // 8)).numpy(),
                               rtol=1e-5, atol=1e-6)


def test_misshaped_and_extra_tensors_are_named_in_one_line(shared_data, tmp_path, capsys):
    sd = official_layout(shared_data, LAYOUTS[96])
    # the cls-token position of models_mae_spectral's cls_embed option has no place in hsikit's MAE
    extra = dict(sd, pos_embed_class=torch.zeros(1, 1, 768))
    _save_official(extra, tmp_path / "extra.pth", 96)
    code, _, err = cli(capsys, "import-weights", ARCH, tmp_path / "extra.pth", "-o", tmp_path / "a.safetensors")
    assert code == 2 and "pos_embed_class" in err and "(1, 1, 768)" in err and len(err.strip().splitlines()) == 1
    # a fused qkv projection (another video_vit attention) is not SpectralGPT's: named, nothing guessed
    fused = {k: v for k, v in sd.items() if not k.startswith("blocks.5.attn.")}
    fused["blocks.5.attn.to_qkv.weight"] = torch.zeros(2304, 768)
    _save_official(fused, tmp_path / "fused.pth", 96)
    code, _, err = cli(capsys, "import-weights", ARCH, tmp_path / "fused.pth", "-o", tmp_path / "b.safetensors")
    assert code == 2 and "blocks.5.attn.to_qkv.weight" in err and len(err.strip().splitlines()) == 1
    # one tensor of the wrong shape
    bad = dict(sd, **{"blocks.3.attn.k.weight": torch.zeros(768, 512)})
    _save_official(bad, tmp_path / "bad.pth", 96)
    code, _, err = cli(capsys, "import-weights", ARCH, tmp_path / "bad.pth", "-o", tmp_path / "c.safetensors")
    assert code == 2 and "blocks.3.attn.k.weight" in err and "(768, 512)" in err and "(768, 768)" in err
    assert len(err.strip().splitlines()) == 1
    # the spatial table of a non-square grid
    odd = dict(sd, pos_embed_spatial=torch.zeros(1, 150, 768))
    _save_official(odd, tmp_path / "odd.pth", 96)
    code, _, err = cli(capsys, "import-weights", ARCH, tmp_path / "odd.pth", "-o", tmp_path / "d.safetensors")
    assert code == 2 and "pos_embed_spatial" in err and "150" in err and len(err.strip().splitlines()) == 1
    # not a SpectralGPT file at all
    torch.save({"model": {"conv.weight": torch.zeros(3, 3)}}, tmp_path / "other.pth")
    code, _, err = cli(capsys, "import-weights", ARCH, tmp_path / "other.pth", "-o", tmp_path / "e.safetensors")
    assert code == 2 and "not a SpectralGPT MAE state dict" in err and "patch_embed.proj.weight" in err
    assert not list(tmp_path.glob("*.safetensors"))


def test_imported_encoder_initialises_the_segmenter(shared_data, tmp_path, capsys):
    """`train segmenter --init` on a generated 12-band Sentinel-2 scene takes the imported encoder (frozen, so its
    block weights must still be the official tensors afterwards) and the official per-image min-max scaling."""
    from rasterio.transform import from_origin
    from safetensors.torch import load_file

    from fakedata import fake_cube

    sd = official_layout(shared_data, LAYOUTS[96])
    _save_official(sd, tmp_path / "SpectralGPT.pth", 96)
    mae = tmp_path / "mae.safetensors"
    assert cli(capsys, "-q", "import-weights", ARCH, tmp_path / "SpectralGPT.pth", "-o", mae)[0] == 0

    h = w = 48
    prof = dict(driver="GTiff", width=w, height=h, count=12, dtype="uint16", crs="EPSG:32633",
                transform=from_origin(500000, 5800000, 10, 10))
    scene = tmp_path / "s2.tif"
    with rasterio.open(scene, "w", **prof) as dst:
        dst.write((fake_cube(12, h, w, seed=3) * 10000).astype("uint16"))
        for i, n in enumerate(S2):
            dst.set_band_description(i + 1, n)
    yy, xx = np.mgrid[0:h, 0:w]
    with rasterio.open(tmp_path / "lab.tif", "w", **{**prof, "count": 1, "dtype": "uint8"}) as dst:
        dst.write((((yy // 12) + (xx // 12)) % 2 + 1).astype("uint8"), 1)
    seg = tmp_path / "seg.safetensors"
    code, _, err = cli(capsys, "-q", "train", "segmenter", scene, "--labels", tmp_path / "lab.tif", "-o", seg,
                       "--init", mae, "--img-size", "32", "--steps", "2", "--steps-per-epoch", "2", "--batch-size",
                       "2", "--freeze-encoder")
    assert code == 0, err
    report = json.loads((tmp_path / "seg_report" / "report.json").read_text())
    assert report["init"]["tensors_loaded"] == 2 + 2 + 12 * 16 + 2  # patch embed, tables, blocks, final norm
    assert report["init"]["resized"] == ["pos_embed_spatial"] and report["normalization"] == "per-image"
    state = load_file(str(seg))
    for official, ours in (("blocks.11.mlp.fc2.weight", "encoder.blocks.11.mlp.2.weight"),
                           ("blocks.0.attn.q.bias", "encoder.blocks.0.attn.q.bias"),
                           ("pos_embed_temporal", "encoder.pos_embed_spectral"),
                           ("patch_embed.proj.weight", "encoder.patch_embed.weight")):
        assert torch.equal(state[ours], sd[official]), ours
