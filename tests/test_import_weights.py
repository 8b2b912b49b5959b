"""`hsikit import-weights`: official-layout state dicts (the official names and shapes, random values) import
completely and give the same outputs as the same tensors loaded by an independent mapping; foreign files are
read without running code; partial or mis-shaped imports fail naming the tensor."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import rasterio

from clirun import cli

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def official_layout(shared_data, name: str, seed: int = 0) -> dict:
    """A state dict with the official keys, order and shapes of ``name`` (random values, integer counters 0)."""
    spec = json.loads((shared_data.parent / "specs" / "official-checkpoints" / f"{name}.json").read_text())
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape, dtype in spec["tensors"]:
        if dtype.startswith("int"):
            sd[key] = torch.zeros(shape, dtype=getattr(torch, dtype))
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=g) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=g) * 0.1
    return sd


def _independent_hsdt(sd: dict, variant: str):
    """The test's own mapping: hsikit's HSDT uses the official module names, so the tensors load as they are."""
    from hsikit.models.registry import create_model

    net = create_model("hsdt", variant=variant)
    net.load_state_dict(sd, strict=True)
    return net.eval()


@pytest.mark.parametrize("variant,official", [("s", "hsdt-s"), ("m", "hsdt-m"), ("l", "hsdt-l")])
def test_official_hsdt_imports_completely_and_equals_an_independent_load(shared_data, tmp_path, capsys, variant,
                                                                         official):
    from hsikit.checkpoint import load_checkpoint

    sd = official_layout(shared_data, official)
    src = tmp_path / "model_best.pth"
    torch.save({"net": sd, "optimizer": {"lr": 1e-3}, "epoch": 80, "iteration": 12345}, src)
    out = tmp_path / "hsdt.safetensors"
    code, stdout, err = cli(capsys, "import-weights", "hsdt", src, "-o", out)
    assert code == 0, err
    assert f"HSDT-{variant.upper()}" in stdout and "ICVL" in stdout
    net, meta = load_checkpoint(out)
    assert meta.arch == "hsdt" and meta.task == "denoising" and meta.config["variant"] == variant
    assert meta.provenance["source_file"] == "model_best.pth" and meta.provenance["container"] == "net"
    assert len(meta.provenance["source_sha256"]) == 64 and "Hybrid Spectral Denoising" in meta.provenance["paper"]
    assert meta.bands["wavelengths"][0] == 400 and len(meta.bands["wavelengths"]) == 31
    x = torch.rand(1, 31, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), _independent_hsdt(sd, variant)(x).numpy(), rtol=1e-5,
                                   atol=1e-6)


def test_wrappers_are_unwrapped_and_what_does_not_fit_is_named(shared_data, tmp_path, capsys):
    sd = official_layout(shared_data, "hsdt-s")
    # DataParallel prefix inside a Lightning-style container
    src = tmp_path / "dp.ckpt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, src)
    code, _, err = cli(capsys, "import-weights", "hsdt", src, "-o", tmp_path / "a.safetensors")
    assert code == 0, err
    # an extra tensor no hsikit tensor takes: refused, naming it; nothing written
    extra = dict(sd, **{"tail.extra.weight": torch.zeros(3)})
    torch.save(extra, tmp_path / "extra.pth")
    code, _, err = cli(capsys, "import-weights", "hsdt", tmp_path / "extra.pth", "-o", tmp_path / "b.safetensors")
    assert code == 2 and "tail.extra.weight" in err and len(err.strip().splitlines()) == 1
    # a configuration override that does not fit the tensors: the first mis-shaped tensor is named
    code, _, err = cli(capsys, "import-weights", "hsdt", tmp_path / "dp.ckpt", "-o", tmp_path / "c.safetensors",
                       "--set", "in_bands=30")
    assert code == 2 and "attn_proj" in err and "(31, 8)" in err and "(30, 8)" in err
    # a missing tensor
    missing = {k: v for k, v in sd.items() if k != "tail.bias"}
    torch.save({"net": missing}, tmp_path / "missing.pth")
    code, _, err = cli(capsys, "import-weights", "hsdt", tmp_path / "missing.pth", "-o", tmp_path / "d.safetensors")
    assert code == 2 and "tail.bias" in err
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == ["a.safetensors"]


class NeedsCode:
    """An object a checkpoint can only restore by running this module's code."""

    def __init__(self) -> None:
        self.lr = 0.1


def test_pickles_that_need_code_and_truncated_files_are_refused_in_one_line(shared_data, tmp_path, capsys):
    sd = official_layout(shared_data, "hsdt-s")
    evil = tmp_path / "needs_code.pth"
    torch.save({"net": sd, "scheduler": NeedsCode()}, evil)
    code, _, err = cli(capsys, "import-weights", "hsdt", evil, "-o", tmp_path / "a.safetensors")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "needs code to unpickle" in err and "NeedsCode" in err and "weights-only" in err
    good = tmp_path / "good.pth"
    torch.save({"net": sd}, good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    code, _, err = cli(capsys, "import-weights", "hsdt", cut, "-o", tmp_path / "b.safetensors")
    assert code == 2 and "cut.pth is truncated or not a torch checkpoint" in err and len(err.strip().splitlines()) == 1
    code, _, err = cli(capsys, "import-weights", "freenet-xl", good, "-o", tmp_path / "c.safetensors")
    assert code == 2 and "no importer for 'freenet-xl'" in err
    assert not list(tmp_path.glob("*.safetensors"))


def test_band_grids_and_wavelength_options():
    from hsikit.errors import OptionError
    from hsikit.weights.grids import band_grid

    bands, what = band_grid("icvl")
    assert bands.count == 31 and bands.wavelengths[-1] == 700 and "ICVL" in what
    bands, _ = band_grid("400:700:10")
    assert bands.count == 31 and bands.fwhm[0] == 10
    bands, _ = band_grid("450, 550, 650")
    assert bands.wavelengths == (450.0, 550.0, 650.0)
    for bad in ("700:400:10", "400,300", "mars"):
        with pytest.raises(OptionError, match="--wavelengths"):
            band_grid(bad)


def test_imported_hsdt_denoises_a_real_enmap_tile_into_a_valid_cog(shared_data, tmp_path, capsys):
    tile = sorted((shared_data / "enmap_potsdam" / "images").glob("*.tif"))[0]
    src = tmp_path / "hsdt_8.pth"
    torch.save({"net": official_layout(shared_data, "hsdt-s")}, src)
    model = tmp_path / "hsdt.safetensors"
    assert cli(capsys, "-q", "import-weights", "hsdt", src, "-o", model)[0] == 0
    out = tmp_path / "clean.tif"
    code, _, err = cli(capsys, "-q", "denoise", tile, "-m", model, "-o", out)
    assert code == 0, err
    with rasterio.open(out) as dst, rasterio.open(tile) as ref:
        assert dst.count == ref.count and dst.crs == ref.crs and dst.transform == ref.transform
        assert dst.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert dst.tags()["HSIKIT_MODEL"] == "hsdt"
        assert np.isfinite(dst.read(20)).any()
    if shutil.which("gdalinfo"):
        info = json.loads(subprocess.run(["gdalinfo", "-json", str(out)], capture_output=True, text=True,
                                         check=True).stdout)
        assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG" and len(info["bands"]) == 224


def test_info_prints_the_model_card_of_an_imported_checkpoint(shared_data, tmp_path, capsys):
    src = tmp_path / "hsdt_8.pth"
    torch.save({"net": official_layout(shared_data, "hsdt-s")}, src)
    model = tmp_path / "hsdt.safetensors"
    assert cli(capsys, "-q", "import-weights", "hsdt", src, "-o", model)[0] == 0
    code, out, err = cli(capsys, "info", model)
    assert code == 0, err
    assert "architecture:  hsdt (denoising)" in out and "variant=s" in out
    assert "bands:         31, 400-700 nm" in out and "imported from: hsdt_8.pth" in out
    assert "Zeqiang-Lai/HSDT" in out and "Hybrid Spectral Denoising Transformer" in out
    code, out, _ = cli(capsys, "info", model, "--json")
    card = json.loads(out)
    assert card["arch"] == "hsdt" and card["provenance"]["container"] == "net" and card["bands"] == 31
