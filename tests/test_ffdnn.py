"""FFDNN architecture: FFC length and global receptive field, capsules, routing, gradients."""

from __future__ import annotations

import pytest
import torch

from hsikit.models import create_model, get_entry
from hsikit.models.ffdnn import FFC1d, SpectralTransform1d, margin_loss, squash


@pytest.mark.parametrize("t", [16, 31, 32])
def test_ffc_keeps_the_series_length(t):
    torch.manual_seed(0)
    m = create_model("ffdnn", length=t).eval()
    x = torch.randn(3, 2, t)
    with torch.no_grad():
        feats, branches = m.features(x, return_branches=True)
        assert feats.shape == (3, 64, t)
        assert all(xl.shape[-1] == t and xg.shape[-1] == t for xl, xg in branches)
        assert m(x).shape == (3, 3)
        # the FFC part is length-agnostic: one model runs on other lengths too
        assert m.features(torch.randn(2, 2, 23)).shape == (2, 64, 23)
    with pytest.raises(ValueError, match="T = "):
        m(torch.randn(2, 2, t + 1))


def test_global_branch_sees_the_whole_season_in_one_layer():
    torch.manual_seed(1)
    m = create_model("ffdnn", length=32).eval()
    x = torch.randn(4, 2, 32)
    y = x.clone()
    y[:, :, 1] += 3.0  # perturb one early date
    with torch.no_grad():
        (_, ba), (_, bb) = m.features(x, True), m.features(y, True)
        dg = (bb[0][1] - ba[0][1]).abs().sum(dim=(0, 1))  # first block, global branch, per date
        dl = (bb[0][0] - ba[0][0]).abs().sum(dim=(0, 1))  # first block, local branch
        assert (dg > 1e-6).all(), "global branch must change at every date"
        assert (dl[8:] == 0).all() and (dl[:3] > 0).all(), "local branch stays local (stem + k=3 conv)"
        st = m.blocks[0].g2g
        xin = torch.randn(2, st.reduce[0].in_channels, 32)
        xp = xin.clone()
        xp[:, :, 0] += 2.0
        assert ((st(xp) - st(xin)).abs().sum(dim=(0, 1)) > 1e-6).all()


def test_spectral_transform_float32_under_autocast_and_gate():
    torch.manual_seed(2)
    st = SpectralTransform1d(8, 16, 32, gate=True).eval()
    x = torch.randn(2, 8, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = st(x)
    assert y.shape == (2, 16, 32) and torch.isfinite(y).all()
    g = st.gate_weights(17)
    assert g.shape == (17,) and g[8] > g[0] and g[8] > g[-1]  # favours mid frequencies
    assert st.gate_weights(12).shape == (12,)  # other lengths: resampled
    with pytest.raises(ValueError):
        FFC1d(4, 8, 0.0, 16)


def test_capsule_lengths_and_routing_coefficients():
    torch.manual_seed(3)
    m = create_model("ffdnn", num_classes=4).eval()
    for scale in (1.0, 100.0):
        with torch.no_grad():
            lengths, vectors, coupling = m.capsules(scale * torch.randn(16, 2, 32))
        assert lengths.shape == (16, 4) and vectors.shape == (16, 4, 16)
        assert (lengths >= 0).all() and (lengths < 1).all()
        torch.testing.assert_close(vectors.norm(dim=-1), lengths)
        assert coupling.shape == (16, 16 * 8, 4)
        torch.testing.assert_close(coupling.sum(dim=-1), torch.ones(16, 128))
    s = torch.tensor([[3.0, 4.0]])
    torch.testing.assert_close(squash(s), s / 5 * (25 / 26))


def test_margin_loss_hand_value_and_gradient_to_every_parameter():
    lengths = torch.tensor([[0.95, 0.05, 0.2], [0.3, 0.8, 0.1]])
    target = torch.tensor([0, 1])
    # sample 1: 0.5 * (0.2 - 0.1)^2 = 0.005; sample 2: (0.9 - 0.8)^2 + 0.5 * (0.3 - 0.1)^2 = 0.03
    assert float(margin_loss(lengths, target)) == pytest.approx((0.005 + 0.03) / 2)
    torch.manual_seed(4)
    m = create_model("ffdnn", frequency_gate=True).train()
    loss = margin_loss(m(torch.randn(8, 2, 32)), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_registry_entry_and_size():
    e = get_entry("ffdnn")
    assert e.task == "stress" and e.inputs == "pixel time series" and e.receptive_field(e.config_cls()) == 0
    n = sum(p.numel() for p in create_model("ffdnn").parameters())
    assert 20_000 < n < 150_000  # small on purpose: tens of thousands (the paper stresses few parameters)
    torch.manual_seed(5)
    a, b = create_model("ffdnn").eval(), create_model("ffdnn").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 2, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
