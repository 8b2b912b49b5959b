"""`hsikit import-weights mp-hsir`: both official MP-HSIR layouts (Lightning checkpoints, ``net.`` prefix) import
completely with a text table, give the outputs of an independent mapping, refuse what does not fit (and a
missing or wrong text table) in one line, and the result restores a scene through the CLI."""

from __future__ import annotations

import re

import numpy as np
import pytest
import rasterio

from clirun import cli
from test_import_weights import official_layout

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

NATURAL = "mp-hsir-natural-31b-dim64-6tasks"
REMOTE = "mp-hsir-remote-100b-dim96-7tasks"
NATURAL_TASKS = ["gaussian", "complex", "blur", "sr", "inpaint", "band-missing"]
REMOTE_TASKS = ["gaussian", "complex", "blur", "sr", "inpaint", "haze", "band-missing"]

#: the test's own renaming, written from the official module tree (regexes, applied in order)
_RENAMES = [
    (r"^patch_embed\.proj\.", "embed."), (r"^down1_2\.body\.0\.", "down1.0."), (r"^down2_3\.body\.0\.", "down2.0."),
    (r"^up3_2\.body\.0\.", "up2.0."), (r"^up2_1\.body\.0\.", "up1.0."), (r"^reduce_chan_level2\.", "reduce2."),
    (r"^output\.", "out."), (r"^encoder_level1\.", "enc1."), (r"^encoder_level2\.", "enc2."),
    (r"^decoder_level1\.", "dec1."), (r"^decoder_level2\.", "dec2."), (r"^refinement\.", "refine."),
    (r"\.gobal_spectral_attn\.qkv_dwconv\.", ".globl.qkv_dw."), (r"\.gobal_spectral_attn\.", ".globl."),
    (r"\.local_spectral_attn\.linear_prompt\.", ".local.prompt_weights."),
    (r"\.local_spectral_attn\.linear_down\.", ".local.reduce."),
    (r"\.local_spectral_attn\.linear_up\.", ".local.expand."),
    (r"\.local_spectral_attn\.q\.", ".local.query."), (r"\.local_spectral_attn\.", ".local."),
    (r"\.cross_transformer\.norm11\.body\.", ".norm_text."), (r"\.cross_transformer\.norm12\.body\.", ".norm_visual."),
    (r"\.cross_transformer\.norm2\.body\.", ".norm_ffn."), (r"\.cross_transformer\.attn\.q_dwconv\.", ".attn.q_dw."),
    (r"\.cross_transformer\.attn\.kv_dwconv\.", ".attn.kv_dw."), (r"\.cross_transformer\.", "."),
    (r"\.conv_last\.", ".conv."), (r"^(fusion\d)\.conv\.", r"\1.proj."),
    (r"\.transformer\.attn\.qkv_dwconv\.", ".attn.qkv_dw."),
    (r"\.transformer\.norm(\d)\.body\.", r".norm\1."), (r"\.transformer\.", "."),
]


def _independent(sd: dict, table: np.ndarray, tasks: list[str], *, mixing: bool = False):
    """The same official tensors in hsikit's MP-HSIR through the renaming above, built by hand."""
    from hsikit.models.registry import create_model

    dim, bands = sd["patch_embed.proj.weight"].shape[:2]
    rank = sd["encoder_level1.blocks.0.local_spectral_attn.linear_down.weight"].shape[0]
    net = create_model("mp-hsir", in_bands=bands, band_grid=bands, dim=dim, tasks=tasks, text_dim=512,
                       compress=[dim // rank, 2 * dim // rank, 4 * dim // rank], reference_text_projection=True,
                       reference_batch_mixing=mixing)
    mine = {"text_embeddings": torch.as_tensor(table)}
    for key, v in sd.items():
        if key.endswith(("attn_mask", "relative_position_index")):
            continue
        if key.endswith("prompt_param"):
            mine[_rename(key).replace("prompt_param", "spectral_prompts")] = v[0, 0]
        elif key.endswith("text_prompt_learnable"):
            mine[key.replace("text_prompt_learnable", "text_prompts")] = v[0, :, :, 0, 0]
        elif ".text_linear." in key or ".clip_linear." in key:
            continue
        else:
            mine[_rename(key)] = v
    for lvl in (1, 2):
        for p in ("weight", "bias"):
            mine[f"prompt{lvl}.text_projection.{p}"] = torch.cat(
                [sd[f"prompt{lvl}.text_linear.{p}"], sd[f"prompt{lvl}.clip_linear.{p}"]])
    net.load_state_dict(mine, strict=True)
    return net.eval()


def _rename(key: str) -> str:
    for pat, rep in _RENAMES:
        key = re.sub(pat, rep, key)
    return key


def _lightning(sd: dict, path) -> None:
    """Save ``sd`` the way the official train.py's Lightning module does (``net.`` prefix under state_dict)."""
    torch.save({"epoch": 99, "global_step": 12345, "pytorch-lightning_version": "2.1.0",
                "state_dict": {f"net.{k}": v for k, v in sd.items()}, "hyper_parameters": {"lr": 2e-4}}, path)


def _table(path, rows: int, seed: int = 0, names: list[str] | None = None) -> np.ndarray:
    emb = np.random.default_rng(seed).standard_normal((rows, 512)).astype(np.float32) * 0.3
    extra = {"names": np.array(names)} if names is not None else {}
    np.savez(path, embeddings=emb, **extra)
    return emb


def _import(capsys, monkeypatch, src, out, table=None, *args):
    """``hsikit import-weights mp-hsir SRC -o OUT [--text-embeddings TABLE]``."""
    argv = ["import-weights", "mp-hsir", src, "-o", out, *args]
    if table is not None:
        argv += ["--text-embeddings", table]
    return cli(capsys, *argv)


@pytest.mark.parametrize("official,tasks,task", [(NATURAL, NATURAL_TASKS, "sr"), (REMOTE, REMOTE_TASKS, "haze")])
def test_official_mp_hsir_imports_completely_and_equals_an_independent_load(shared_data, tmp_path, capsys, monkeypatch,
                                                                            official, tasks, task):
    from hsikit.checkpoint import load_checkpoint

    sd = official_layout(shared_data, official)
    src = tmp_path / "epoch=99-step=12345.ckpt"
    _lightning(sd, src)
    if official == NATURAL:  # a 7-row table with names: the natural model takes its 6 rows by name
        full = _table(tmp_path / "clip.npz", 7, names=REMOTE_TASKS[::-1])[::-1]
        table = full[[REMOTE_TASKS.index(t) for t in tasks]]
    else:
        table = _table(tmp_path / "clip.npz", len(tasks))
    out = tmp_path / "mp.safetensors"
    code, stdout, err = _import(capsys, monkeypatch, src, out, tmp_path / "clip.npz")
    assert code == 0, err
    assert "(mp-hsir, 658 tensors" in stdout and "dropped 33 tensor(s)" in stdout
    assert "tasks " + ", ".join(tasks) in stdout
    net, meta = load_checkpoint(out)
    assert meta.arch == "mp-hsir" and meta.task == "restoration" and meta.config["tasks"] == tasks
    assert meta.config["text_dim"] == 512 and meta.config["band_grid"] == meta.config["in_bands"]
    wl = meta.bands["wavelengths"]
    assert (len(wl), wl[0], round(wl[-1])) == ((31, 400, 700) if official == NATURAL else (100, 400, 1000))
    assert meta.provenance["container"] == "state_dict" and meta.provenance["prefixes_removed"] == ["net."]
    assert meta.provenance["text_embeddings_file"].endswith(".npz")
    assert len(meta.provenance["text_embeddings_sha256"]) == 64
    assert net.text_embedding_source == "checkpoint"
    np.testing.assert_array_equal(net.text_embeddings.numpy(), table)
    bands = sd["patch_embed.proj.weight"].shape[1]
    x = torch.rand(2, bands, 32, 32, generator=torch.Generator().manual_seed(1))
    ids = [tasks.index(task), 0]
    ref = _independent(sd, table, tasks)
    with torch.no_grad():
        np.testing.assert_allclose(net.eval()(x, ids).numpy(), ref(x, ids).numpy(), rtol=1e-5, atol=1e-6)


def test_reference_batch_mixing_is_an_option(shared_data, tmp_path, capsys, monkeypatch):
    from hsikit.checkpoint import load_checkpoint

    sd = official_layout(shared_data, NATURAL, seed=3)
    _lightning(sd, tmp_path / "last.ckpt")
    table = _table(tmp_path / "clip.npz", 6, seed=4)
    out = tmp_path / "mixing.safetensors"
    code, stdout, err = _import(capsys, monkeypatch, tmp_path / "last.ckpt", out, tmp_path / "clip.npz",
                                "--set", "reference_batch_mixing=true")
    assert code == 0, err
    assert "--set reference_batch_mixing=true" in stdout
    net, meta = load_checkpoint(out)
    assert meta.config["reference_batch_mixing"] is True
    x = torch.rand(2, 31, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = net.eval()(x, [1, 4])
        np.testing.assert_allclose(y.numpy(), _independent(sd, table, NATURAL_TASKS, mixing=True)(x, [1, 4]).numpy(),
                                   rtol=1e-5, atol=1e-6)
        # the per-sample default differs once a batch mixes tasks, and equals it for one sample
        per_sample = _independent(sd, table, NATURAL_TASKS)
        assert not np.allclose(y.numpy(), per_sample(x, [1, 4]).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(net(x[:1], [1]).numpy(), per_sample(x[:1], [1]).numpy(), rtol=1e-5, atol=1e-6)


def test_what_does_not_fit_and_missing_or_wrong_text_tables_are_refused_in_one_line(shared_data, tmp_path, capsys,
                                                                                     monkeypatch):
    sd = official_layout(shared_data, NATURAL)
    good = tmp_path / "good.ckpt"
    _lightning(sd, good)
    _table(tmp_path / "clip.npz", 6)

    def refused(src, table, *args) -> str:
        code, _, err = _import(capsys, monkeypatch, src, tmp_path / "x.safetensors", table, *args)
        monkeypatch.undo()
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        return err

    # no text table: the weights never run with hsikit's own (MiniLM or synthetic) rows
    err = refused(good, None)
    assert "--text-embeddings" in err and "6 x 512" in err
    # hsikit's 384-d MiniLM table, a table with a row short, a table without a task's row
    np.savez(tmp_path / "minilm.npz", embeddings=np.zeros((6, 384), np.float32))
    err = refused(good, tmp_path / "minilm.npz")
    assert "384-d" in err and "512-d" in err
    _table(tmp_path / "five.npz", 5)
    assert "5 rows for 6 task prompts" in refused(good, tmp_path / "five.npz")
    _table(tmp_path / "named.npz", 6, names=REMOTE_TASKS[:6])
    assert "no row for task 'band-missing'" in refused(good, tmp_path / "named.npz")
    # an extra tensor no hsikit tensor takes
    extra = dict(sd, **{"prompt1.extra_linear.weight": torch.zeros(3)})
    _lightning(extra, tmp_path / "extra.ckpt")
    assert "prompt1.extra_linear.weight" in refused(tmp_path / "extra.ckpt", tmp_path / "clip.npz")
    # a mis-shaped tensor
    bad = dict(sd)
    bad["encoder_level2.blocks.1.mlp.fc2.bias"] = torch.zeros(129)
    _lightning(bad, tmp_path / "bad.ckpt")
    err = refused(tmp_path / "bad.ckpt", tmp_path / "clip.npz")
    assert "enc2.blocks.1.mlp.fc2.bias" in err and "(129,)" in err and "(128,)" in err
    # a missing tensor
    _lightning({k: v for k, v in sd.items() if k != "prompt2.conv_last.weight"}, tmp_path / "missing.ckpt")
    assert "prompt2.conv.weight" in refused(tmp_path / "missing.ckpt", tmp_path / "clip.npz")
    assert not list(tmp_path.glob("*.safetensors"))


def test_read_text_table_checks_its_sha256(tmp_path):
    from hsikit.errors import InputError
    from hsikit.weights.mp_hsir import read_text_table

    emb = np.ones((2, 512), np.float32)
    np.savez(tmp_path / "t.npz", embeddings=emb, sha256=np.array("0" * 64))
    with pytest.raises(InputError, match="sha256"):
        read_text_table(tmp_path / "t.npz", ["gaussian", "sr"], 512)
    assert read_text_table(emb, ["gaussian", "sr"], 512).shape == (2, 512)


def test_imported_mp_hsir_restores_a_generated_scene(shared_data, tmp_path, capsys, monkeypatch, fake_geotiff):
    sd = official_layout(shared_data, NATURAL)
    _lightning(sd, tmp_path / "natural.ckpt")
    _table(tmp_path / "clip.npz", 6)
    model = tmp_path / "mp.safetensors"
    code, _, err = _import(capsys, monkeypatch, tmp_path / "natural.ckpt", model, tmp_path / "clip.npz")
    assert code == 0, err
    scene = fake_geotiff(bands=31, height=36, width=40)
    out = tmp_path / "restored.tif"
    code, _, err = cli(capsys, "-q", "restore", scene, "-m", model, "--task", "band-missing", "-o", out)
    assert code == 0, err
    with rasterio.open(out) as dst, rasterio.open(scene) as ref:
        assert dst.count == 31 and (dst.width, dst.height) == (40, 36) and dst.transform == ref.transform
        assert dst.tags()["HSIKIT_TASK"] == "band-missing"
        assert np.isfinite(dst.read(5)).all()
    # another sensor's band count: the network resamples it onto its 31-band grid (the reference's linear way)
    model40 = tmp_path / "mp40.safetensors"
    scene40 = fake_geotiff("scene40.tif", bands=40, height=36, width=40)
    code, stdout, err = _import(capsys, monkeypatch, tmp_path / "natural.ckpt", model40, tmp_path / "clip.npz",
                                "--set", "in_bands=40", "--wavelengths", scene40)
    assert code == 0, err
    assert "--set in_bands=40" in stdout
    out40 = tmp_path / "restored40.tif"
    code, _, err = cli(capsys, "-q", "restore", scene40, "-m", model40, "--task", "gaussian", "-o", out40)
    assert code == 0, err
    with rasterio.open(out40) as dst:
        assert dst.count == 40 and np.isfinite(dst.read(40)).all()


def test_text_embeddings_are_refused_for_other_architectures(shared_data, tmp_path, capsys):
    src = tmp_path / "hsdt.pth"
    torch.save({"net": official_layout(shared_data, "hsdt-s")}, src)
    table = tmp_path / "t.npz"
    np.savez(table, embeddings=np.zeros((6, 512), np.float32))
    code, _, err = cli(capsys, "import-weights", "hsdt", src, "-o", tmp_path / "m.safetensors", "--text-embeddings",
                       table)
    assert code == 2 and "--text-embeddings is for mp-hsir weights, not hsdt" in err
