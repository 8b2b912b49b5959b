"""ESSAformer (hyperspectral SR): parameter counts of the official module (Chikusei x4 with 128 bands and width
256: 11,640,832; 31 bands, width 64, x4: 727,935), the SCC-kernel attention (centred, energy-normalised Q/K,
linear in the token count), the weight-shared up/down refinement trunk, inputs of any size, and a tiny training
sanity run."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import hsikit.models.essaformer as E
from hsikit.errors import OptionError
from hsikit.models import create_model
from hsikit.models.registry import get_entry


def _nparams(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize(
    "bands,dim,scale,expected",
    [(31, 64, 4, 727_935), (102, 64, 4, 809_798), (31, 64, 1, 414_047), (128, 256, 4, 11_640_832)],
)
def test_parameter_count_matches_the_official_module(bands, dim, scale, expected):
    assert _nparams(create_model("essaformer", in_bands=bands, dim=dim, scale=scale)) == expected


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_kernelised_attention_equals_the_explicit_quadratic_form(dtype, tol):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 50, 16, generator=g, dtype=dtype) for _ in range(3))
    fast, slow = E.essa_attention(q, k, v), E.essa_attention_explicit(q, k, v)
    assert fast.shape == (2, 50, 16)
    assert torch.allclose(fast, slow, atol=tol, rtol=0)
    # extra leading dims are carried
    assert torch.allclose(E.essa_attention(q[None], k[None], v[None])[0], fast, atol=tol, rtol=0)


def test_attention_features_follow_the_scc_kernel():
    """Q/K are centred and energy-normalised (so shift/positive-scale invariant, like the SCC); K~ columns are
    unit vectors over the tokens; the identity term V is added to the global term."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 40, 8, generator=g, dtype=torch.float64) for _ in range(3))
    ref = E.essa_attention(q, k, v)
    moved = E.essa_attention(3.0 * q + 5.0, 0.5 * k - 2.0, v)
    assert torch.allclose(ref, moved, atol=1e-6)
    qf, kf = E._qk_features(q, k)
    assert torch.allclose(kf.norm(dim=-2), torch.ones(1, 8, dtype=torch.float64))
    assert torch.allclose(qf.norm(dim=-1), torch.ones(1, 40, dtype=torch.float64))
    glob = qf @ kf.transpose(-2, -1) @ v / 40**0.5
    assert torch.allclose(ref, v + glob)


def test_essa_module_equals_the_explicit_form():
    torch.manual_seed(0)
    m = E.ESSA(16)
    x = torch.randn(2, 50, 16)
    q, k, v = m.qkv(x).chunk(3, dim=-1)
    with torch.no_grad():
        assert torch.allclose(m(x), m.proj(E.essa_attention_explicit(q, k, v)), atol=1e-5, rtol=0)
    assert m.qkv.bias is not None and m.proj.bias is not None


@pytest.mark.parametrize(
    "shape,scale,dim",
    [((1, 31, 7, 9), 4, 16), ((2, 5, 5, 6), 2, 8), ((2, 5, 5, 6), 3, 9), ((2, 5, 5, 6), 8, 8),
     ((1, 5, 5, 6), 1, 8), ((1, 4, 1, 1), 4, 8), ((1, 4, 1, 3), 3, 9)],
)
def test_output_shape_for_odd_sizes(shape, scale, dim):
    net = create_model("essaformer", in_bands=shape[1], dim=dim, scale=scale).eval()
    assert net.scale == scale
    n, c, h, w = shape
    with torch.no_grad():
        assert net(torch.randn(*shape)).shape == (n, c, scale * h, scale * w)


def test_band_mismatch_and_bad_rank_raise():
    net = create_model("essaformer", in_bands=6, dim=8, scale=2).eval()
    with pytest.raises(ValueError, match="6"):
        net(torch.randn(1, 7, 4, 4))
    with pytest.raises(ValueError):
        net(torch.randn(6, 4, 4))


@pytest.mark.parametrize(
    "options",
    [dict(scale=5), dict(scale=16), dict(scale=4, dim=30), dict(scale=3, dim=16), dict(dropout=1.0),
     dict(in_bands=0)],
)
def test_invalid_config_is_an_option_error(options):
    with pytest.raises(OptionError) as err:
        create_model("essaformer", **options)
    assert "\n" not in str(err.value)


def test_lr_padding_helper_reflects_or_replicates():
    x = torch.arange(30.0).reshape(1, 1, 5, 6)
    p = E._pad_lr(x, 4)
    assert p.shape == (1, 1, 8, 8) and torch.equal(p[..., :5, :6], x)
    assert torch.equal(p[..., 5, :6], x[..., 3, :])  # reflect
    tiny = torch.arange(2.0).reshape(1, 1, 1, 2)
    p = E._pad_lr(tiny, 4)
    assert p.shape == (1, 1, 4, 4) and torch.equal(p[..., 3, :], torch.tensor([[[0.0, 1.0, 1.0, 1.0]]]))
    assert E._pad_lr(x, E._LR_MULTIPLE) is x  # the network never needs padding


@pytest.mark.parametrize("scale,dim", [(4, 8), (3, 9)])
def test_gradient_reaches_every_parameter(scale, dim):
    torch.manual_seed(0)
    net = create_model("essaformer", in_bands=5, dim=dim, scale=scale, dropout=0.0).train()
    net(torch.randn(2, 5, 6, 7)).square().mean().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, dead


def test_determinism_dropout_and_seeded_init():
    torch.manual_seed(3)
    a = create_model("essaformer", in_bands=4, dim=8, scale=2)
    torch.manual_seed(3)
    b = create_model("essaformer", in_bands=4, dim=8, scale=2)
    for (na, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), na
    x = torch.randn(1, 4, 6, 6)
    a.eval()
    with torch.no_grad():
        assert torch.equal(a(x), a(x))
        a.train()
        assert not torch.allclose(a(x), a(x))


def test_trunk_shares_weights_across_iterations():
    net = create_model("essaformer", in_bands=4, dim=8, scale=4).eval()
    kinds = {cls: {id(m) for m in net.modules() if type(m) is cls} for cls in (E.Upsample, E.Downsample, E.ESSAUnit)}
    assert [len(kinds[E.Upsample]), len(kinds[E.Downsample]), len(kinds[E.ESSAUnit])] == [1, 1, 2]  # HR + LR unit
    calls = {"up": 0, "down": 0, "hr": 0, "lo": 0}
    for name, mod in [("up", net.upsample), ("down", net.downsample), ("hr", net.unit_hr), ("lo", net.unit_lo)]:
        mod.register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls[n] + 1))
    with torch.no_grad():
        net(torch.randn(1, 4, 3, 3))
    assert calls == {"up": 3, "down": 2, "hr": 3, "lo": 2}


def test_bicubic_skip_adds_the_bicubic_upsampling():
    torch.manual_seed(0)
    plain = create_model("essaformer", in_bands=3, dim=8, scale=2).eval()
    skip = create_model("essaformer", in_bands=3, dim=8, scale=2, bicubic_skip=True).eval()
    skip.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 5, 7)
    with torch.no_grad():
        diff = skip(x) - plain(x)
    assert torch.allclose(diff, F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False), atol=1e-6)


@pytest.mark.parametrize("scale", [1, 2, 3, 4, 8])
def test_conv_halo_is_exact_and_receptive_field_covers_it(scale, monkeypatch):
    """With the attention reduced to its pointwise V term, the input pixels that reach one LR pixel's block of
    HR outputs span exactly _conv_halo LR px; the registered halo is at least that (and at least 8)."""
    halo = E._conv_halo(scale)
    cfg = E.ESSAformerConfig(in_bands=2, dim=9 if scale == 3 else 4, scale=scale, dropout=0.0)
    assert get_entry("essaformer").receptive_field(cfg) == max(halo, 8)
    monkeypatch.setattr(E, "essa_attention", lambda q, k, v: v)
    torch.manual_seed(0)
    net = E.ESSAformer(cfg).double().eval()
    size, c = 2 * halo + 5, halo + 2
    x = torch.randn(1, 2, size, size, dtype=torch.float64, requires_grad=True)
    net(x)[..., scale * c: scale * (c + 1), scale * c: scale * (c + 1)].sum().backward()
    rows = (x.grad.abs().sum(dim=(0, 1, 3)) > 0).nonzero().flatten()
    assert (c - rows.min().item(), rows.max().item() - c) == (halo, halo)


def test_tiny_training_run_reduces_the_loss():
    torch.manual_seed(0)
    bands, hr = 8, 32
    yy, xx = torch.meshgrid(torch.linspace(0, 1, hr), torch.linspace(0, 1, hr), indexing="ij")
    maps = torch.stack([torch.sin(3 * xx + 1), torch.cos(2 * yy), (xx * yy), torch.sin(2 * (xx + yy))]).abs()
    spectra = torch.rand(4, bands).cumsum(1) / bands  # smooth, monotone spectra
    cube = torch.einsum("khw,kb->bhw", maps, spectra)[None]
    cube = cube / cube.max()
    lr = F.interpolate(cube, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)
    net = create_model("essaformer", in_bands=bands, dim=16, scale=2).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = F.l1_loss(net(lr), cube)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)
