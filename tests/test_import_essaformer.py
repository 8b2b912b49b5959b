"""`hsikit import-weights essaformer`: the official Rexzhan/ESSAformer layouts (official names and shapes, random
values) import completely from a bare state dict and the usual containers, give the outputs of an independent
mapping and of the official forward pass written against the official names, refuse what does not fit in one
line, and the imported checkpoint super-resolves a scene."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio

from clirun import cli
from test_import_weights import official_layout

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

import hsikit.weights.essaformer  # noqa: E402,F401  (registers the importer)

LAYOUTS = {"essaformer-31b-dim64-x4": (31, 64, 4), "essaformer-128b-dim256-x4": (128, 256, 4)}


def _independent_mapping(sd: dict) -> dict:
    """The test's own renaming of the official keys onto hsikit's ESSAformer (a literal table of prefixes)."""
    table = [
        ("blockup.convup.convu.", "unit_hr.ffn."), ("blockup.convdown.convd.", "unit_lo.ffn."),
        ("blockup.convup.attn.lnqkv.", "unit_hr.attn.qkv."), ("blockup.convdown.attn.lnqkv.", "unit_lo.attn.qkv."),
        ("blockup.convup.attn.ln.", "unit_hr.attn.proj."), ("blockup.convdown.attn.ln.", "unit_lo.attn.proj."),
        ("blockup.convup.norm.", "unit_hr.norm."), ("blockup.convdown.norm.", "unit_lo.norm."),
        ("blockup.convupsample.", "upsample."), ("blockup.convdownsample.", "downsample."),
        ("conv_first.", "conv_first."), ("conv_last.", "conv_last."),
    ]
    out = {}
    for key, value in sd.items():
        old, new = next((o, n) for o, n in table if key.startswith(o))
        out[new + key[len(old):]] = value
    return out


def _independent_net(sd: dict, in_bands: int, dim: int, scale: int):
    from hsikit.models.registry import create_model

    net = create_model("essaformer", in_bands=in_bands, dim=dim, scale=scale)
    net.load_state_dict(_independent_mapping(sd), strict=True)
    return net.eval()


def _official_forward(sd: dict, x, scale: int):
    """The official ``ESSA`` forward in eval mode, computed from the official tensor names with torch.nn.functional
    (what the official modules do, written out: no hsikit module is involved)."""
    F = torch.nn.functional
    stages = int(math.log2(scale))

    def conv(h, name, pad):
        return F.conv2d(h, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=pad)

    def attention(tokens, name):
        n, c = tokens.shape[1], tokens.shape[2]
        q, k, v = F.linear(tokens, sd[f"{name}.lnqkv.weight"], sd[f"{name}.lnqkv.bias"]).split(c, dim=2)
        q2 = (q - q.mean(2, keepdim=True)) ** 2
        k2 = (k - k.mean(2, keepdim=True)) ** 2
        q2 = F.normalize(q2 / (q2.sum(2, keepdim=True) + 1e-7), dim=-1)
        k2 = F.normalize(k2 / (k2.sum(2, keepdim=True) + 1e-7), dim=-2)
        return F.linear(v + q2 @ (k2.transpose(-2, -1) @ v) / math.sqrt(n), sd[f"{name}.ln.weight"],
                        sd[f"{name}.ln.bias"])

    def unit(h, name, branch):
        b, c, hh, ww = h.shape
        tokens = F.layer_norm(h.flatten(2).transpose(1, 2), (c,), sd[f"{name}.norm.weight"], sd[f"{name}.norm.bias"])
        a = attention(tokens, f"{name}.attn").transpose(1, 2).reshape(b, c, hh, ww)
        y = F.leaky_relu(conv(torch.cat((a, h), 1), f"{name}.{branch}.0", 0), 0.2)
        y = F.leaky_relu(conv(y, f"{name}.{branch}.3", 1), 0.2)
        return conv(y, f"{name}.{branch}.6", 0) + h

    def up(h):
        for i in range(stages):
            h = F.pixel_shuffle(conv(h, f"blockup.convupsample.{2 * i}", 1), 2)
        return h

    def down(h):
        for i in range(stages):
            h = F.pixel_unshuffle(conv(h, f"blockup.convdownsample.{2 * i}", 1), 2)
        return h

    hr = lambda h: unit(h, "blockup.convup", "convu")  # noqa: E731
    lo = lambda h: unit(h, "blockup.convdown", "convd")  # noqa: E731
    x0 = conv(x, "conv_first", 1)
    x1 = hr(up(x0))
    x2 = lo(down(x1) + x0)
    x3 = hr(up(x2) + x1)
    x4 = lo(down(x3) + x2)
    return conv(hr(up(x4) + x3), "conv_last", 1)


def _save(sd: dict, path, container: str) -> None:
    if container == "bare":
        torch.save(sd, path)
    elif container == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    elif container == "dataparallel-state_dict":
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 200}, path)
    else:
        torch.save({container: sd, "epoch": 200}, path)


@pytest.mark.parametrize("official,container,suffix", [
    ("essaformer-31b-dim64-x4", "bare", ".pth"),
    ("essaformer-31b-dim64-x4", "safetensors", ".safetensors"),
    ("essaformer-31b-dim64-x4", "model", ".pth"),
    ("essaformer-128b-dim256-x4", "bare", ".pth"),
    ("essaformer-128b-dim256-x4", "dataparallel-state_dict", ".ckpt"),
])
def test_official_essaformer_imports_completely_and_equals_independent_loads(shared_data, tmp_path, capsys, official,
                                                                            container, suffix):
    from hsikit.checkpoint import load_checkpoint

    in_bands, dim, scale = LAYOUTS[official]
    sd = official_layout(shared_data, official)
    src = tmp_path / f"ESSA{suffix}"
    _save(sd, src, container)
    out = tmp_path / "essa.safetensors"
    code, stdout, err = cli(capsys, "import-weights", "essaformer", src, "-o", out)
    assert code == 0, err
    assert f"ESSAformer x{scale} for {in_bands} bands, width {dim}" in stdout
    net, meta = load_checkpoint(out)
    assert meta.arch == "essaformer" and meta.task == "super-resolution"
    assert (meta.config["in_bands"], meta.config["dim"], meta.config["scale"]) == (in_bands, dim, scale)
    assert meta.config["bicubic_skip"] is False
    assert meta.provenance["source_file"] == src.name and "ESSAformer" in meta.provenance["paper"]
    assert meta.provenance["container"] == {"bare": None, "safetensors": None, "model": "model",
                                            "dataparallel-state_dict": "state_dict"}[container]
    net.eval()
    x = torch.rand(1, in_bands, 6, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = net(x).numpy()
        assert got.shape == (1, in_bands, 6 * scale, 5 * scale)
        np.testing.assert_allclose(got, _independent_net(sd, in_bands, dim, scale)(x).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got, _official_forward(sd, x, scale).numpy(), rtol=1e-5, atol=1e-5)


def test_band_grids_follow_the_papers_datasets(shared_data, tmp_path, capsys):
    from hsikit.checkpoint import read_checkpoint_meta
    from hsikit.weights.essaformer import default_band_grid

    assert default_band_grid({"in_bands": 31}) == "cave" and default_band_grid({"in_bands": 128}) == "chikusei"
    assert default_band_grid({"in_bands": 102}) is None
    # the released model (Chikusei x4): the default grid
    torch.save(official_layout(shared_data, "essaformer-128b-dim256-x4"), tmp_path / "chikusei.pth")
    code, stdout, err = cli(capsys, "import-weights", "essaformer", tmp_path / "chikusei.pth", "-o",
                            tmp_path / "c.safetensors")
    assert code == 0, err
    assert "published Chikusei x4 model" in stdout
    bands = read_checkpoint_meta(tmp_path / "c.safetensors").bands
    assert len(bands["wavelengths"]) == 128 and bands["wavelengths"][0] == 363
    # 31 bands: the grid follows the inferred band count (CAVE), and --wavelengths must fit the weights
    torch.save(official_layout(shared_data, "essaformer-31b-dim64-x4"), tmp_path / "cave.pth")
    code, stdout, err = cli(capsys, "import-weights", "essaformer", tmp_path / "cave.pth", "-o",
                            tmp_path / "a.safetensors")
    assert code == 0, err
    assert "CAVE" in stdout
    bands = read_checkpoint_meta(tmp_path / "a.safetensors").bands
    assert len(bands["wavelengths"]) == 31 and bands["wavelengths"][0] == 400 and bands["wavelengths"][-1] == 700
    code, _, err = cli(capsys, "import-weights", "essaformer", tmp_path / "cave.pth", "-o",
                       tmp_path / "b.safetensors", "--wavelengths", "chikusei")
    assert code == 2 and "128 bands, the weights take 31" in err and not (tmp_path / "b.safetensors").exists()


def test_what_does_not_fit_is_named_in_one_line(shared_data, tmp_path, capsys):
    sd = official_layout(shared_data, "essaformer-31b-dim64-x4")

    def run(name: str, tensors: dict, *extra):
        torch.save(tensors, tmp_path / name)
        return cli(capsys, "import-weights", "essaformer", tmp_path / name, "-o", tmp_path / f"{name}.safetensors",
                   *extra)

    # an extra tensor no hsikit tensor takes, inside a unit
    code, _, err = run("extra.pth", dict(sd, **{"blockup.convup.attn.extra.weight": torch.zeros(3)}))
    assert code == 2 and "blockup.convup.attn.extra.weight" in err and len(err.strip().splitlines()) == 1
    # a tensor of the wrong shape: named by its official name
    bad = dict(sd, **{"blockup.convdown.attn.ln.weight": torch.zeros(64, 32)})
    code, _, err = run("shape.pth", bad)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "blockup.convdown.attn.ln.weight" in err and "(64, 32)" in err and "(64, 64)" in err
    # a missing tensor
    code, _, err = run("missing.pth", {k: v for k, v in sd.items() if k != "blockup.convdown.norm.bias"})
    assert code == 2 and "unit_lo.norm.bias" in err and len(err.strip().splitlines()) == 1
    # a configuration override the tensors do not fit: the first official tensor left over is named
    code, _, err = run("x2.pth", sd, "--set", "scale=2")
    assert code == 2 and "blockup.convupsample.2.weight" in err and len(err.strip().splitlines()) == 1
    code, _, err = run("dim.pth", sd, "--set", "dim=32")
    assert code == 2 and "conv_first.weight" in err and "(64, 31, 3, 3)" in err and "(32, 31, 3, 3)" in err
    # another architecture's state dict
    code, _, err = run("hsdt.pth", official_layout(shared_data, "hsdt-s"))
    assert code == 2 and "not an ESSAformer state dict" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.safetensors"))


def test_imported_essaformer_super_resolves_a_scene(shared_data, tmp_path, capsys, fake_geotiff):
    scene = fake_geotiff("scene.tif", bands=31, height=12, width=10)
    src = tmp_path / "ESSA_x4.pth"
    torch.save(official_layout(shared_data, "essaformer-31b-dim64-x4"), src)
    model = tmp_path / "model.safetensors"
    assert cli(capsys, "-q", "import-weights", "essaformer", src, "-o", model, "--wavelengths", "cave")[0] == 0
    out = tmp_path / "out.tif"
    code, _, err = cli(capsys, "-q", "super-resolve", scene, "-m", model, "-o", out)
    assert code == 0, err
    with rasterio.open(out) as dst, rasterio.open(scene) as ref:
        assert (dst.count, dst.height, dst.width) == (31, 48, 40)
        assert dst.crs == ref.crs and dst.transform.a == ref.transform.a / 4 and dst.transform.c == ref.transform.c
        assert dst.tags()["HSIKIT_MODEL"] == "essaformer" and dst.tags()["HSIKIT_SCALE"] == "4"
        assert np.isfinite(dst.read()).all()
