"""SpectralGPT: tokenisation, masking, the two-term loss, position tables, band handling, heads (spec D8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hsikit.errors import BandMismatchError, OptionError
from hsikit.io.bandinfo import BandInfo
from hsikit.io.scene import ArrayScene
from hsikit.models import create_model, get_entry
from hsikit.models.spectralgpt import (SPECTRALGPT_BANDS, kept_count, load_encoder_state, mae_parameter_counts,
                                       patchify, reconstruction_loss, resize_spatial_table, unpatchify, value_mask)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny(**kw):
    torch.manual_seed(0)
    return create_model("spectralgpt-tiny", **kw)


@pytest.mark.parametrize("size,tokens,kept", [(96, 576, 57), (128, 1024, 102)])
def test_token_and_kept_counts(size, tokens, kept):
    """12 bands in groups of 3 x (size/8)^2 cells; the encoder sees int(L * 0.1) of them."""
    m = _tiny(img_size=size)
    x = torch.rand(2, 12, size, size)
    assert m.encoder.tokens(x).shape == (2, tokens, 64)
    out = m(x, generator=torch.Generator().manual_seed(1))
    assert out.mask.shape == (2, tokens)
    assert ((1 - out.mask).sum(1) == kept).all()
    assert kept_count(tokens, 0.9) == kept


def test_masking_is_uniform_over_all_3d_tokens():
    """Spectral groups of one location are masked independently (no tube masking)."""
    m = _tiny(img_size=32)
    out = m(torch.rand(64, 12, 32, 32), generator=torch.Generator().manual_seed(0))
    per_cell = out.mask.reshape(64, 4, 16).sum(1)  # masked groups per spatial cell
    assert set(per_cell.unique().tolist()) >= {2.0, 3.0, 4.0}
    visible_by_group = (1 - out.mask).reshape(64, 4, 16).sum((0, 2))
    assert visible_by_group.min() > 0.5 * visible_by_group.mean()  # every group gets its share of visible tokens


def test_patchify_round_trip_and_token_order():
    x = torch.rand(2, 12, 16, 24)
    t = patchify(x, 3, 8)
    assert t.shape == (2, 4 * 2 * 3, 192)
    assert torch.equal(unpatchify(t, 3, 8, (4, 2, 3)), x)
    # token (g, r, c) sits at g*h*w + r*w + c and holds bands g*3..g*3+2 of that 8x8 cell, band-major
    g, r, c = 2, 1, 2
    tok = t[1, g * 6 + r * 3 + c]
    assert torch.equal(tok, x[1, 6:9, 8:16, 16:24].reshape(-1))


def test_patch_embedding_is_a_linear_map_of_the_token_values():
    m = _tiny(img_size=32)
    x = torch.rand(1, 12, 32, 32)
    w = m.encoder.patch_embed.weight
    expected = patchify(x, 3, 8) @ w.reshape(w.shape[0], -1).T + m.encoder.patch_embed.bias
    got = m.encoder.tokens(x) - m.encoder.positions((4, 4))
    assert torch.allclose(got, expected, atol=1e-5)


def test_band_padding_round_trip_and_excluded_from_the_loss():
    """4 bands with u = 3: two groups, the last holding two zero bands that never count in the loss."""
    m = _tiny(img_size=16, bands=("B02", "B03", "B04", "B08"))
    assert m.cfg.num_groups == 2 and m.cfg.padded_bands == 6
    x = torch.rand(2, 4, 16, 16)
    out = m(x, generator=torch.Generator().manual_seed(0))
    assert out.pred.shape == (2, 2 * 4, 192)
    assert torch.equal(m.unpatchify(m.patchify(x), out.grid), x)
    valid = value_mask(4, 3, 8, 2, 4)
    assert valid[:4].all() and valid[4:, :64].all() and not valid[4:, 64:].any()
    noisy = out.pred.clone()
    noisy[:, 4:, 64:] += 100.0  # predictions of the padding bands only
    base = reconstruction_loss(out.pred, out.target, out.mask, 2, valid=valid)
    again = reconstruction_loss(noisy, out.target, out.mask, 2, valid=valid)
    assert torch.allclose(base[0], again[0])


def _loss_case():
    torch.manual_seed(3)
    pred, target = torch.rand(2, 8, 5), torch.rand(2, 8, 5)  # 2 groups x 4 cells, 5 values
    mask = torch.tensor([[1, 0, 1, 0, 0, 1, 1, 0], [0, 0, 1, 1, 1, 0, 0, 1]], dtype=torch.float32)
    return pred, target, mask


def test_term1_uses_masked_tokens_only():
    pred, target, mask = _loss_case()
    _, t1, t2 = reconstruction_loss(pred, target, mask, 2)
    manual = ((pred - target) ** 2).mean(-1)[mask.bool()].mean()
    assert torch.allclose(t1, manual)
    vis = pred.clone()
    vis[~mask.bool()] += 1.0  # change only visible tokens: term 1 unchanged, term 2 changes
    _, t1v, t2v = reconstruction_loss(vis, target, mask, 2)
    assert torch.allclose(t1v, t1) and not torch.allclose(t2v, t2)
    hid = pred.clone()
    hid[mask.bool()] += 1.0
    assert not torch.allclose(reconstruction_loss(hid, target, mask, 2)[1], t1)


def test_term2_is_the_group_sum_over_all_cells():
    pred, target, mask = _loss_case()
    total, t1, t2 = reconstruction_loss(pred, target, mask, 2, token_weight=0.5, spectral_weight=2.0)
    ps = pred.reshape(2, 2, 4, 5).sum(1)
    ts = target.reshape(2, 2, 4, 5).sum(1)
    assert torch.allclose(t2, ((ps - ts) ** 2).mean())
    assert torch.allclose(total, 0.5 * t1 + 2.0 * t2)
    # errors that cancel across the groups of a cell leave term 2 at zero, whatever the mask
    delta = torch.zeros_like(pred)
    delta[:, 0:4] = 0.3
    delta[:, 4:8] = -0.3
    _, t1d, t2d = reconstruction_loss(target + delta, target, torch.zeros_like(mask), 2)
    assert float(t2d) == pytest.approx(0.0, abs=1e-10) and float(t1d) == 0.0


def test_position_table_resize():
    t = torch.randn(1, 16, 8)
    assert resize_spatial_table(t, (4, 4), (4, 4)) is t  # identity at the same size
    const = torch.full((1, 16, 8), 0.7)
    assert torch.allclose(resize_spatial_table(const, (4, 4), (6, 3)), torch.full((1, 18, 8), 0.7), atol=1e-6)
    m = _tiny(img_size=32)
    x = torch.rand(1, 12, 48, 40)  # another input size works through the resized table
    assert m.encoder(x).shape == (1, 4, 6, 5, 64)


def test_encoder_transfer_copies_and_resizes():
    mae = _tiny(img_size=32)
    seg = create_model("spectralgpt-segmenter", variant="tiny", img_size=32, num_classes=3)
    rep = load_encoder_state(seg, mae.state_dict())
    assert not rep["resized"] and not rep["missing"]
    for k, v in mae.encoder.state_dict().items():
        assert torch.equal(seg.encoder.state_dict()[k], v)
    big = create_model("spectralgpt-scene-classifier", variant="tiny", img_size=64, num_classes=3)
    rep = load_encoder_state(big, mae.state_dict(), src_grid=(4, 4))
    assert rep["resized"] == ["pos_embed_spatial"] and "norm.weight" in rep["ignored"]
    assert big.encoder.pos_embed_spatial.shape == (1, 64, 64)
    assert torch.equal(big.encoder.pos_embed_spectral, mae.encoder.pos_embed_spectral)
    deeper = create_model("spectralgpt-segmenter", variant="tiny", depth=3, img_size=32, num_classes=3)
    with pytest.raises(ValueError, match="lacks encoder tensors"):
        load_encoder_state(deeper, mae.state_dict())
    other_patch = create_model("spectralgpt-segmenter", variant="tiny", patch_size=4, img_size=32, num_classes=3)
    with pytest.raises(ValueError):
        load_encoder_state(other_patch, mae.state_dict())


def test_base_parameter_counts_match_the_published_shapes():
    """Encoder ~85.4 M, MAE decoder ~13.2 M at 128 px (the official base model's shapes),
    counted on the meta device (no allocation)."""
    with torch.device("meta"):
        m = create_model("spectralgpt-base")
    enc, dec = mae_parameter_counts(m)
    assert enc == pytest.approx(85.4e6, rel=2e-3)
    assert dec == pytest.approx(13.2e6, rel=4e-3)
    assert m.cfg.bands == SPECTRALGPT_BANDS and (m.cfg.embed_dim, m.cfg.depth, m.cfg.num_heads) == (768, 12, 12)
    assert (m.cfg.decoder_embed_dim, m.cfg.decoder_depth, m.cfg.decoder_num_heads) == (512, 4, 16)


def test_config_validation():
    with pytest.raises(OptionError, match="variant"):
        create_model("spectralgpt-tiny", variant="huge")
    with pytest.raises(OptionError, match="multiple"):
        create_model("spectralgpt-tiny", img_size=30)
    with pytest.raises(OptionError, match="mask_ratio"):
        create_model("spectralgpt-tiny", mask_ratio=1.0)
    with pytest.raises(OptionError, match="power of two"):
        create_model("spectralgpt-segmenter", variant="tiny", patch_size=6, img_size=36)


@pytest.mark.parametrize("head", ["upernet", "smp-upernet"])
@pytest.mark.parametrize("hw", [(32, 32), (16, 24), (64, 80), (30, 45)])
def test_segmenter_returns_full_resolution_logits(head, hw):
    seg = create_model("spectralgpt-segmenter", variant="tiny", img_size=32, num_classes=5, head=head).eval()
    with torch.no_grad():
        assert seg(torch.rand(2, 12, *hw)).shape == (2, 5, *hw)


def test_segmenter_slides_training_sized_windows():
    """Inputs larger than img_size are overlapping img_size windows: where only the first window covers a pixel
    the blend equals that window's own logits."""
    seg = create_model("spectralgpt-segmenter", variant="tiny", img_size=32, num_classes=4).eval()
    x = torch.rand(1, 12, 64, 64)
    with torch.no_grad():
        full = seg(x)
        first = seg.forward_window(x[..., :32, :32])
    assert torch.allclose(full[..., :16, :16], first[..., :16, :16], atol=1e-3)  # batched vs single windows


def test_registry_entries_fit_hsikit_classify():
    e = get_entry("spectralgpt-segmenter")
    cfg = e.config_cls(variant="tiny", num_classes=3, img_size=64)
    assert e.task == "classification" and e.size_multiple == 8 and e.receptive_field(cfg) == 16
    assert get_entry("spectralgpt-base").task == "masked-autoencoding"
    c = create_model("spectralgpt-scene-classifier", variant="tiny", img_size=32, num_classes=7).eval()
    assert c(torch.rand(3, 12, 32, 32)).shape == (3, 7)
    assert c(torch.rand(2, 12, 64, 48)).shape == (2, 7)


@pytest.mark.parametrize("name,kw", [("spectralgpt-tiny", {}),
                                     ("spectralgpt-segmenter", {"variant": "tiny", "num_classes": 3}),
                                     ("spectralgpt-scene-classifier", {"variant": "tiny", "num_classes": 3})])
def test_every_parameter_gets_a_gradient(name, kw):
    """No dead parameters: DDP without find_unused_parameters must work."""
    torch.manual_seed(0)
    m = create_model(name, img_size=32, **kw).train()
    x = torch.rand(2, 12, 32, 32)
    if name == "spectralgpt-tiny":
        loss = m(x).loss
    else:
        out = m(x)
        loss = out.square().mean() + out.mean()
    loss.backward()
    dead = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead


def test_input_scaling_minmax_is_per_image_and_band():
    from hsikit.models.spectralgpt import scale_input

    x = torch.rand(2, 3, 8, 8) * 100 + 5
    y = scale_input(x, "minmax")
    assert torch.allclose(y.amin((-2, -1)), torch.zeros(2, 3)) and torch.allclose(y.amax((-2, -1)), torch.ones(2, 3),
                                                                                  atol=1e-6)
    assert torch.isfinite(scale_input(torch.ones(1, 2, 4, 4), "minmax")).all()  # constant image: no NaN


# -- band handling (D3) ----------------------------------------------------------------------------------------------
def _scene(names, wavelengths=None, fwhm=None):
    n = len(names)
    data = (np.arange(n, dtype=np.float32)[:, None, None] + 1) * np.ones((n, 8, 8), np.float32)
    return ArrayScene(data, bands=BandInfo(tuple(names), wavelengths=wavelengths, fwhm=fwhm))


def test_bands_are_selected_by_name_in_model_order():
    from hsikit.pipelines.pretrain import band_chain

    names = ["T33UUU_B8A_20m", "B2", "B03", "band_B04", "B5", "B06", "B7", "B08", "B01", "B09", "B10", "B11", "B12"]
    sc = _scene(names)
    chain = band_chain(sc, SPECTRALGPT_BANDS)
    out = chain.apply(sc.read(), sc.read_valid())
    # value = 1 + position in the file; model order B01..B8A..B12 picks positions 8,1,2,3,4,5,6,7,0,9,11,12
    assert out[:, 0, 0].tolist() == [9, 2, 3, 4, 5, 6, 7, 8, 1, 10, 12, 13]


def test_missing_bands_are_a_clear_error():
    from hsikit.pipelines.pretrain import band_chain

    sc = _scene(["B4", "B3", "B2", "B8"])  # the Demmin layout: 4 bands, no wavelengths
    with pytest.raises(BandMismatchError, match=r"missing band\(s\) B01, B05.*no wavelengths"):
        band_chain(sc, SPECTRALGPT_BANDS)
    assert len(band_chain(sc, ("B02", "B03", "B04", "B08")).steps[0].params["indices"]) == 4
    hyper = _scene([f"b{i}" for i in range(60)], tuple(np.linspace(400, 2500, 60)), (35.0,) * 60)
    with pytest.raises(BandMismatchError, match="missing band"):
        band_chain(hyper, SPECTRALGPT_BANDS, spectral="select")
    with pytest.raises(OptionError):
        band_chain(hyper, SPECTRALGPT_BANDS, spectral="nope")


def test_hyperspectral_scenes_are_resampled_onto_the_model_bands():
    from hsikit.pipelines.pretrain import band_chain

    wl = tuple(float(w) for w in np.linspace(400, 2500, 211))
    hyper = _scene([f"b{i}" for i in range(211)], wl, (10.0,) * 211)
    chain = band_chain(hyper, SPECTRALGPT_BANDS)
    assert chain.output_bands(hyper.bands).names == SPECTRALGPT_BANDS
    assert [s.op for s in chain.steps] == ["drop_bad_bands", "scale", "resample"]
    out = chain.apply(hyper.read(), hyper.read_valid())
    assert out.shape == (12, 8, 8)
    # a spectrum rising with band index resamples to values rising with the model bands' wavelength
    assert (np.diff(out[:, 0, 0]) > 0).all()
    vnir = _scene([f"b{i}" for i in range(60)], tuple(float(w) for w in np.linspace(400, 1000, 60)), (10.0,) * 60)
    with pytest.raises(BandMismatchError, match="does not cover model band"):
        band_chain(vnir, SPECTRALGPT_BANDS)


def test_dataset_normalization_step_maps_percentiles_to_unit_range():
    from hsikit.pipelines.pretrain import band_chain, normalization_step, sample_statistics, with_normalization

    rng = np.random.default_rng(0)
    data = rng.normal(1000, 200, (4, 64, 64)).astype(np.float32)
    sc = ArrayScene(data, bands=BandInfo(("B02", "B03", "B04", "B08")))
    ch = band_chain(sc, ("B02", "B03", "B04", "B08"))
    stats = sample_statistics([sc], [ch], 32, seed=0)
    full = with_normalization(ch, normalization_step("dataset", stats))
    out = full.apply(sc.read(), sc.read_valid())
    lo, hi = np.percentile(out, [2, 98], axis=(1, 2))
    assert np.allclose(lo, 0, atol=0.08) and np.allclose(hi, 1, atol=0.08)
    assert [s.op for s in full.steps][-2:] == ["normalize", "fill_invalid"]


# -- fine-tuning helpers -----------------------------------------------------------------------------------------------
def test_layer_wise_lr_decay_groups():
    from hsikit.training.finetune import param_groups

    c = create_model("spectralgpt-scene-classifier", variant="tiny", img_size=32, num_classes=3)
    groups = param_groups(c, 1.0, 0.05, 0.5, depth=2)
    by_name = {}
    for g in groups:
        for p in g["params"]:
            by_name[id(p)] = g
    named = dict(c.named_parameters())
    assert by_name[id(named["head.weight"])]["lr"] == 1.0
    assert by_name[id(named["encoder.blocks.1.attn.q.weight"])]["lr"] == 0.5
    assert by_name[id(named["encoder.blocks.0.attn.q.weight"])]["lr"] == 0.25
    assert by_name[id(named["encoder.patch_embed.weight"])]["lr"] == 0.125
    assert by_name[id(named["encoder.pos_embed_spatial"])]["weight_decay"] == 0.0
    assert by_name[id(named["encoder.blocks.0.attn.q.bias"])]["weight_decay"] == 0.0
    assert by_name[id(named["encoder.blocks.0.attn.q.weight"])]["weight_decay"] == 0.05
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_mixup_and_cutmix_keep_soft_targets_normalised():
    from hsikit.training.finetune import mix, soft_targets

    rng = np.random.default_rng(0)
    y = soft_targets(np.array([0, 1, 2, 1]), 3, 0.1)
    assert np.allclose(y.sum(1), 1) and y.max() == pytest.approx(0.9 + 0.1 / 3)
    x = rng.random((4, 2, 8, 8)).astype(np.float32)
    for mixup, cutmix in ((0.8, 0.0), (0.0, 1.0), (0.8, 1.0)):
        xm, ym = mix(x, y, mixup, cutmix, np.random.default_rng(1))
        assert xm.shape == x.shape and np.allclose(ym.sum(1), 1)
    assert mix(x, y, 0.0, 0.0, rng)[0] is x


def test_pretraining_learning_rate_rule():
    from hsikit.training.pretrain import PretrainRecipe

    assert PretrainRecipe().peak_lr == 1.5e-3
    assert PretrainRecipe(lr=None, batch_size=4096).peak_lr == pytest.approx(3.2e-3)  # the paper's stage 1
    assert PretrainRecipe(lr=None, batch_size=1024, world=4).peak_lr == pytest.approx(3.2e-3)  # global batch


# -- scene discovery and label lists ---------------------------------------------------------------------------------
def test_archives_are_listed_from_folders_lists_and_stac(tmp_path):
    import json

    from hsikit.pipelines.pretrain import list_scenes

    (tmp_path / "arch" / "sub").mkdir(parents=True)
    (tmp_path / "arch" / "S2A_MSIL2A_X.SAFE" / "GRANULE").mkdir(parents=True)
    (tmp_path / "arch" / "S2A_MSIL2A_X.SAFE" / "GRANULE" / "inner.jp2").write_bytes(b"")
    for name in ("a.tif", "sub/b.TIF", "c.hdr", "c", "a.tif.aux.xml", "notes.md", ".hidden.tif"):
        (tmp_path / "arch" / name).write_bytes(b"")
    found = [p.replace(str(tmp_path / "arch") + "/", "") for p in list_scenes([tmp_path / "arch"])]
    assert sorted(found) == ["S2A_MSIL2A_X.SAFE", "a.tif", "c.hdr", "sub/b.TIF"]
    (tmp_path / "list.csv").write_text("image,mask\narch/a.tif,lab/a.tif\n")
    assert list_scenes([tmp_path / "list.csv"]) == [str((tmp_path / "arch" / "a.tif").resolve())]
    item = {"type": "Feature", "stac_version": "1.0.0", "id": "x", "geometry": None, "properties":
            {"datetime": "2024-01-01T00:00:00Z"}, "links": [],
            "assets": {"B04": {"href": "arch/a.tif", "type": "image/tiff; application=geotiff"},
                       "meta": {"href": "meta.xml", "type": "application/xml"}}}
    (tmp_path / "item.json").write_text(json.dumps(item))
    assert list_scenes([tmp_path / "item.json"]) == [str(tmp_path / "arch" / "a.tif")]
    from hsikit.errors import InputError

    with pytest.raises(InputError, match="not found"):
        list_scenes([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no scene"):
        list_scenes([tmp_path / "empty"])


def test_label_pairs_and_chip_lists(tmp_path):
    from hsikit.errors import InputError
    from hsikit.pipelines.finetune import read_chips, read_pairs

    (tmp_path / "pairs.csv").write_text("image,mask\nimg/1.tif,lab/1.tif\n")
    assert read_pairs([tmp_path / "pairs.csv"], None) == [(str(tmp_path / "img/1.tif"), str(tmp_path / "lab/1.tif"))]
    assert read_pairs(["s1.tif", "s2.tif"], ["l1.tif", "l2.tif"]) == [("s1.tif", "l1.tif"), ("s2.tif", "l2.tif")]
    with pytest.raises(OptionError, match="one --labels per scene"):
        read_pairs(["s1.tif", "s2.tif"], ["l1.tif"])
    for cls in ("10", "2", "forest"):
        (tmp_path / "chips" / cls).mkdir(parents=True)
        (tmp_path / "chips" / cls / "a.tif").write_bytes(b"")
    (tmp_path / "more.csv").write_text("x.tif,2\n")
    items, names = read_chips([tmp_path / "chips", tmp_path / "more.csv"])
    assert names == ["2", "10", "forest"] and len(items) == 4 and items[-1] == (str(tmp_path / "x.tif"), "2")
    with pytest.raises(InputError, match="not training classes"):
        read_chips([tmp_path / "chips"], ["2", "10"])


def test_frozen_encoder_probe_trains_the_head_only(tmp_path):
    """`train segmenter --freeze-encoder`: the encoder keeps its (e.g. pretrained) weights, the head learns."""
    from hsikit.training.finetune import LabelledScene, SegmentationData, fit_head, segmenter_recipe
    from hsikit.training.run import Run, RunOptions

    rng = np.random.default_rng(0)
    sc = ArrayScene(rng.random((12, 16, 16), dtype=np.float32), bands=BandInfo(tuple(SPECTRALGPT_BANDS)))
    lab = (np.arange(256).reshape(16, 16) % 3 + 1).astype(np.int64)
    recipe = segmenter_recipe().replace(steps=3, steps_per_epoch=3, batch_size=2, lr=1e-2, freeze_encoder=True)
    data = SegmentationData([LabelledScene(sc, lambda raw, valid: raw.astype(np.float32), lab)], [], 16, 3, recipe)
    torch.manual_seed(0)
    net = create_model("spectralgpt-segmenter", variant="tiny", img_size=16, patch_size=4, num_classes=3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fit = fit_head(net, data, recipe, run=Run.at(tmp_path, RunOptions(device="cpu", progress=False)))
    after = fit.net.state_dict()
    enc = [k for k in after if k.startswith("encoder.")]
    rest = [k for k in after if not k.startswith("encoder.") and after[k].is_floating_point()]
    assert enc and rest and fit.steps_run == 3
    assert all(torch.equal(before[k], after[k]) for k in enc)
    assert any(not torch.equal(before[k], after[k]) for k in rest)
