"""HSDT denoiser: official parameter counts, shapes for any size and band count, branch
switching and its reproducibility, gradient flow, global residual, pixel-shared attention, receptive field and a
short training run."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

import hsikit.models.hsdt  # noqa: F401  (registers "hsdt")
from hsikit.errors import OptionError
from hsikit.models.hsdt import GSSA, HSDT, HSDT_VARIANTS, S3Conv, HSDTConfig
from hsikit.models.registry import create_model, get_entry


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("variant,expected", [("s", 134_350), ("m", 521_158), ("l", 2_094_786)])
def test_official_parameter_counts(variant, expected):
    assert n_params(HSDT(HSDTConfig(in_bands=31, variant=variant))) == expected


def test_registry_default_is_s_and_config_round_trips_through_json():
    net = create_model("hsdt")
    assert isinstance(net, HSDT) and n_params(net) == 134_350
    cfg = HSDTConfig(variant="l", width=4)
    back = HSDTConfig(**json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert back == cfg and back.downsample_at == (1, 3, 5) and back.width == 4 and back.depth == 7
    assert HSDTConfig(downsample_at=[3, 1]).downsample_at == (1, 3)
    entry = get_entry("hsdt")
    assert entry.task == "denoising" and entry.size_multiple == 4
    with pytest.raises(OptionError):
        HSDTConfig(variant="xl")
    with pytest.raises(OptionError):
        HSDTConfig(depth=3, downsample_at=(1, 3))


def test_state_dict_uses_reference_names():
    keys = set(HSDT(HSDTConfig()).state_dict())
    for k in ("head.conv.dw_conv.0.weight", "head.conv.dw_conv.2.weight", "head.conv.pw_conv.weight",
              "head.bn.running_var", "head.attn.attn.attn_proj.bias", "head.attn.attn.value_proj.weight",
              "head.attn.attn.fc.weight", "head.attn.ffn.w_3.bias", "encoder.layers.1.conv.weight",
              "decoder.layers.1.conv.weight", "tail.bias"):
        assert k in keys, k


def test_s3conv_is_two_parallel_bias_free_branches():
    conv = S3Conv(2, 3)
    assert n_params(conv) == 9 * 2 * 3 + 9 * 3 * 3 + 3 * 2 * 3
    assert all(m.bias is None for m in conv.modules() if isinstance(m, torch.nn.Conv3d))
    x = torch.randn(1, 2, 5, 6, 7)
    assert torch.allclose(conv(x), conv.dw_conv(x) + conv.pw_conv(x))


@pytest.mark.parametrize("shape,in_bands,flex", [
    ((1, 31, 17, 23), 31, False),
    ((2, 7, 9, 13), 7, False),
    ((2, 7, 9, 13), 31, False),  # D != Dq: self branch automatically
    ((1, 5, 1, 3), 5, True),  # too small for reflect padding
    ((1, 224, 8, 8), 31, True),
])
def test_output_shape_equals_input_shape(shape, in_bands, flex):
    net = HSDT(HSDTConfig(in_bands=in_bands, width=4, flex=flex)).eval()
    with torch.no_grad():
        y = net(torch.rand(shape))
    assert y.shape == shape and torch.isfinite(y).all()
    expected = "self" if flex or shape[1] != in_bands else "guided"
    assert {m.last_branch for m in net.gssa_modules} == {expected}


def test_more_bands_than_trained_run_in_blended_spectral_runs():
    net = HSDT(HSDTConfig(in_bands=12, width=4, spectral_overlap=4)).eval()
    x = torch.rand(1, 40, 8, 8)
    with torch.no_grad():
        y = net(x)
        assert {m.last_branch for m in net.gssa_modules} == {"guided"}  # every run has the trained band count
        # runs start at 0, 8, 16, 24 and 28 (flush with the end); bands only one run covers are that run's output
        assert torch.allclose(y[:, :8], net.forward_volume(x[:, None, :12]).squeeze(1)[:, :8], atol=1e-6)
        mid = net.forward_volume(x[:, None, 8:20]).squeeze(1)
        assert torch.allclose(y[:, 12:16], mid[:, 4:8], atol=1e-6)
        net.cfg.spectral_overlap = 0
        assert {m.last_branch for m in net.gssa_modules} == {"guided"}
        whole = net(x)
        assert {m.last_branch for m in net.gssa_modules} == {"self"} and not torch.allclose(whole, y, atol=1e-4)
        torch.nn.init.zeros_(net.tail.weight)
        torch.nn.init.zeros_(net.tail.bias)
        net.cfg.spectral_overlap = 4
        assert torch.allclose(net(x), x, atol=1e-6)  # the blend weights sum to one on every band
    net.train()
    net._spectral_runs = None  # training passes the whole stack at once (the runs would fail here)
    assert net(x).shape == x.shape


def test_large_variant_pads_to_eight():
    net = HSDT(HSDTConfig(in_bands=6, variant="l", width=2)).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 6, 11, 5)).shape == (1, 6, 11, 5)


def test_guided_branch_refuses_another_band_count():
    net = HSDT(HSDTConfig(in_bands=8, width=2)).eval()
    net.set_branch("guided")
    with pytest.raises(ValueError, match="guided branch needs 8 bands"):
        net(torch.rand(1, 5, 8, 8))


def test_every_parameter_gets_a_gradient_from_the_two_branches():
    torch.manual_seed(0)
    net = HSDT(HSDTConfig(in_bands=6, width=4)).train()
    x = torch.rand(2, 6, 12, 12)
    touched: set[str] = set()
    for mode in ("guided", "self"):
        net.zero_grad(set_to_none=True)
        net.set_branch(mode)
        net(x).square().mean().backward()
        touched |= {n for n, p in net.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        if mode == "self":  # the learnable queries only train in the guided branch
            assert all(p.grad is None or not p.grad.any()
                       for n, p in net.named_parameters() if "attn_proj" in n)
    assert touched == {n for n, _ in net.named_parameters()}


def _train_outputs(seed_branch: int | None, calls: int = 4) -> tuple[list[torch.Tensor], list[list[str]]]:
    torch.manual_seed(3)
    net = HSDT(HSDTConfig(in_bands=4, width=2, seed_branch=seed_branch)).train()
    x = torch.rand(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    outs, branches = [], []
    with torch.no_grad():
        for _ in range(calls):
            outs.append(net(x))
            branches.append([m.last_branch for m in net.gssa_modules])
    return outs, branches


def test_training_coin_flips_are_reproducible():
    a, ba = _train_outputs(11)
    b, bb = _train_outputs(11)
    assert ba == bb and all(torch.equal(p, q) for p, q in zip(a, b))
    flat = [br for call in ba for br in call]
    assert {"self", "guided"} <= set(flat)  # both branches are drawn
    _, bc = _train_outputs(12)
    assert bc != ba
    # seed_branch=None draws the seed from torch's RNG, so torch.manual_seed alone reproduces training too
    _, bn1 = _train_outputs(None)
    _, bn2 = _train_outputs(None)
    assert bn1 == bn2


def test_eval_outputs_equal_across_builds_with_the_same_torch_seed():
    x = torch.rand(1, 9, 10, 14)
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        net = HSDT(HSDTConfig(in_bands=9, width=4)).eval()
        with torch.no_grad():
            outs.append(net(x))
    assert torch.equal(outs[0], outs[1])


def test_global_residual_returns_the_input_when_the_tail_is_zero():
    net = HSDT(HSDTConfig(in_bands=5, width=4)).eval()
    torch.nn.init.zeros_(net.tail.weight)
    torch.nn.init.zeros_(net.tail.bias)
    x = torch.rand(2, 5, 7, 9)
    with torch.no_grad():
        assert torch.equal(net(x), x)


@pytest.mark.parametrize("mode", ["guided", "self"])
def test_gssa_attention_is_shared_by_all_pixels(mode):
    torch.manual_seed(0)
    gssa = GSSA(channels=3, num_bands=6).eval()
    for p in gssa.parameters():
        torch.nn.init.normal_(p, std=0.5)
    gssa.mode = mode
    x = torch.randn(2, 3, 6, 5, 7)
    perm = torch.randperm(5 * 7)

    def shuffle(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(3)[..., perm].reshape(t.shape)

    with torch.no_grad():
        assert torch.allclose(gssa(shuffle(x)), shuffle(gssa(x)), atol=1e-5)


def test_receptive_field_bounds_the_conv_stack():
    # With the band descriptors detached (GSSA pooling is non-local by design) and eval BatchNorm, the gradient
    # of one output pixel reaches exactly the input pixels within the conv stack's radius.
    rf = {v: get_entry("hsdt").receptive_field(HSDTConfig(variant=v)) for v in HSDT_VARIANTS}
    assert rf == {"s": 43, "m": 43, "l": 91}
    torch.manual_seed(0)
    net = HSDT(HSDTConfig(in_bands=2, width=2)).eval().double()
    for m in net.modules():
        if isinstance(m, torch.nn.Linear):  # the 1e-3 init would underflow the deep paths' gradient
            torch.nn.init.normal_(m.weight, std=0.5)
    for m in net.gssa_modules:
        m.band_descriptor = (lambda f: lambda x: f(x).detach())(m.band_descriptor)
    size, c = 112, 56
    x = torch.randn(1, 2, size, size, dtype=torch.float64, requires_grad=True)
    net(x)[0, :, c, c].sum().backward()
    rows, cols = torch.nonzero(x.grad.abs().sum((0, 1)) > 0).unbind(1)
    reach = max(c - rows.min().item(), rows.max().item() - c, c - cols.min().item(), cols.max().item() - c)
    assert reach == rf["s"]


def _smooth_cube(bands: int, size: int, k: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    wl = torch.linspace(0, 1, bands)
    cube = torch.zeros(bands, size, size)
    for i in range(k):
        a = torch.rand(4, generator=g)
        abundance = 0.5 + 0.5 * torch.sin(2 * math.pi * (2 * a[0] * xx + 2 * a[1] * yy + a[2]))
        spectrum = 0.5 + 0.4 * torch.cos(2 * math.pi * ((1 + a[3]) * wl + i / k))
        cube += abundance[None] * spectrum[:, None, None] / k
    return cube[None]


def test_short_training_reduces_the_loss():
    torch.manual_seed(0)
    clean = _smooth_cube(16, 24)
    net = HSDT(HSDTConfig(in_bands=16, variant="s", seed_branch=0)).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(30):
        noisy = clean + 50 / 255 * torch.randn(clean.shape, generator=g)
        loss = F.mse_loss(net(noisy), clean)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)


@pytest.mark.parametrize("variant", ["s", "m", "l"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_fast_blocks_equal_their_reference_formulation(variant, mode, monkeypatch):
    """GSSA's band-major single-product mixing and SM-FFN's fused gate against the formulations as written:
    outputs and every parameter gradient within 1e-5 relative, in train mode (both attention branches, batch
    statistics) and eval mode; the state dict is the same module tree, so checkpoints load unchanged."""
    from hsikit.models.hsdt import SMFFN

    torch.manual_seed(0)
    net = HSDT(HSDTConfig(in_bands=12, variant=variant, seed_branch=3))
    for m in net.gssa_modules:  # the initial queries give near-uniform (symmetric) mixing: make it asymmetric
        torch.nn.init.normal_(m.attn_proj.weight, std=0.5)
    getattr(net, mode)()
    x = torch.rand(2, 12, 16, 16)
    runs = []
    for reference in (True, False):
        with monkeypatch.context() as mp:
            if reference:
                mp.setattr(GSSA, "forward", GSSA.forward_reference)
                mp.setattr(SMFFN, "forward", SMFFN.forward_reference)
            net.seed_branches(5)
            net.zero_grad()
            y = net(x)
            y.square().mean().backward()
            branches = [m.last_branch for m in net.gssa_modules]
            runs.append((y.detach(), [None if p.grad is None else p.grad.clone() for p in net.parameters()],
                         branches))
    (y0, g0, b0), (y1, g1, b1) = runs
    assert b0 == b1 and (mode == "eval" or len(set(b0)) == 2), b0
    assert (y1 - y0).abs().max().item() <= 1e-5 * y0.abs().max().item()
    assert [a is None for a in g0] == [b is None for b in g1]
    for a, b in zip(g0, g1):
        if a is not None:
            assert (b - a).abs().max().item() <= 1e-5 * max(a.abs().max().item(), 1e-12) + 1e-9
