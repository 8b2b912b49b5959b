"""MorpMamba and its state-space blocks: parameter count, init, scans vs loops, dense vs patch inference, training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from hsikit.errors import OptionError
from hsikit.models.morpmamba import MorpMamba, MorpMambaConfig, window_chunk
from hsikit.models.registry import create_model, get_entry
from hsikit.models.ssm import (
    LinearRecurrence,
    SelectiveScan,
    linear_recurrence_reference,
    selective_scan,
    selective_scan_last,
    selective_scan_reference,
)

NOTEBOOK = dict(ssm="recurrence", attention="cross", center_mode="row")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def test_notebook_parameter_count_is_exact():
    assert n_params(MorpMamba(MorpMambaConfig(in_bands=15, num_classes=15, patch=4, **NOTEBOOK))) == 67_013
    assert n_params(MorpMamba(MorpMambaConfig(in_bands=15, num_classes=16, patch=4, **NOTEBOOK))) == 67_142


def test_registry_entry_and_config_validation():
    e = get_entry("morpmamba")
    assert (e.task, e.inputs, e.size_multiple) == ("classification", "pca patches", 1)
    assert e.receptive_field(MorpMambaConfig(num_classes=3)) == 2
    assert e.receptive_field(MorpMambaConfig(num_classes=3, patch=7)) == 3
    assert isinstance(create_model("morpmamba", num_classes=3, patch=5), MorpMamba)
    with pytest.raises(OptionError, match="ssm"):
        MorpMambaConfig(num_classes=3, ssm="mamba2")
    with pytest.raises(OptionError, match="divisible"):
        MorpMambaConfig(num_classes=3, dim=30, heads=4)


def test_morphology_starts_as_ones_and_erosion_is_negated_dilation():
    torch.manual_seed(0)
    m = MorpMamba(MorpMambaConfig(num_classes=3, **NOTEBOOK))
    for pair in (m.tokens.spatial, m.tokens.spectral):
        assert torch.equal(pair.erode.weight, torch.ones_like(pair.erode.weight))
        assert torch.equal(pair.dilate.weight, torch.ones_like(pair.dilate.weight))
    x = torch.randn(2, 15, 4, 4)
    eroded, dilated = m.tokens.spatial(x)
    assert torch.allclose(eroded, -dilated)
    eroded, dilated = m.tokens.spectral(x.permute(0, 3, 1, 2))
    assert torch.allclose(eroded, -dilated)
    # minmax: true flat morphology brackets the input
    mm = MorpMamba(MorpMambaConfig(num_classes=3, morph="minmax"))
    eroded, dilated = mm.tokens.spatial(x)
    assert (eroded <= x).all() and (x <= dilated).all() and (eroded < dilated).any()


@pytest.mark.parametrize("mode", ["pixel", "row"])
def test_centre_gating_semantics(mode):
    torch.manual_seed(0)
    gate = MorpMamba(MorpMambaConfig(num_classes=3, dim=8, heads=2, center_mode=mode)).gate
    spatial, spectral = torch.randn(2, 4, 4, 8), torch.randn(2, 4, 4, 8)
    out_sa, out_se = gate(spatial, spectral)
    for i in range(4):
        for j in range(4):
            # pixel: the centre token (2, 2); row (notebook): row i uses the centre-row token of column i
            centre = spatial[:, 2, 2] if mode == "pixel" else spatial[:, 2, i]
            assert torch.allclose(out_sa[:, i, j], spatial[:, i, j] * torch.sigmoid(gate.gate_spatial(centre)))
            assert torch.allclose(out_se[:, i, j], spectral[:, i, j] * torch.sigmoid(gate.gate_spectral(centre)))


def _scan_inputs(b: int, d: int, n: int, length: int, gen: torch.Generator, big_steps: bool = False):
    f64 = dict(dtype=torch.float64, generator=gen)
    u = torch.randn(b, d, length, **f64)
    delta = F.softplus(torch.randn(b, d, length, **f64)) * (40.0 if big_steps else 1.0)
    A = -torch.rand(d, n, **f64) * 16
    B = torch.randn(b, n, length, **f64)
    C = torch.randn(b, n, length, **f64)
    D = torch.randn(d, **f64)
    return u, delta, A, B, C, D


@pytest.mark.parametrize("length", [1, 3, 4, 5, 16, 17, 33, 121])
@pytest.mark.parametrize("chunk", [1, 4, 7, 32])
def test_selective_scan_matches_sequential_reference(length, chunk):
    gen = torch.Generator().manual_seed(length * 100 + chunk)
    args = _scan_inputs(2, 3, 5, length, gen)
    y = selective_scan(*args, chunk=chunk)
    ref = selective_scan_reference(*args)
    assert y.shape == (2, 3, length)
    assert torch.allclose(y, ref, atol=1e-5, rtol=0)
    y_last, h_last = selective_scan_last(*args)
    assert h_last.shape == (2, 3, 5)
    assert torch.allclose(y_last, ref[:, :, -1], atol=1e-5, rtol=0)


def test_selective_scan_is_stable_and_differentiable():
    gen = torch.Generator().manual_seed(1)
    u, delta, A, B, C, D = _scan_inputs(2, 3, 4, 37, gen, big_steps=True)  # decays far below float range
    y = selective_scan(u, delta, A, B, C, D, chunk=16)
    ref = selective_scan_reference(u, delta, A, B, C, D)
    assert torch.isfinite(y).all()
    assert torch.allclose(y, ref, atol=1e-5, rtol=0)
    assert torch.allclose(selective_scan_last(u, delta, A, B, C, D)[0], ref[:, :, -1], atol=1e-5, rtol=0)
    # gradients of the chunked scan equal those of the loop
    gen = torch.Generator().manual_seed(2)
    leaves = [t.requires_grad_() for t in _scan_inputs(2, 3, 4, 11, gen)]
    w = torch.randn(2, 3, 11, dtype=torch.float64, generator=gen)
    g_par = torch.autograd.grad((selective_scan(*leaves, chunk=4) * w).sum(), leaves)
    g_ref = torch.autograd.grad((selective_scan_reference(*leaves) * w).sum(), leaves)
    for a, b in zip(g_par, g_ref):
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-8)
    g_last = torch.autograd.grad((selective_scan_last(*leaves)[0] * w[:, :, -1]).sum(), leaves)
    g_ref = torch.autograd.grad((selective_scan_reference(*leaves)[:, :, -1] * w[:, :, -1]).sum(), leaves)
    for a, b in zip(g_last, g_ref):
        assert torch.allclose(a, b, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("length", [1, 2, 3, 7, 16, 25, 121])
@pytest.mark.parametrize("norm", [False, True])
def test_linear_recurrence_parallel_matches_loop(length, norm):
    torch.manual_seed(length)
    block = LinearRecurrence(8, 12, norm=norm).double().eval()
    if not norm:
        with torch.no_grad():  # keep the spectral radius below 1 so 121 steps stay well scaled
            block.A.weight.mul_(0.9 / torch.linalg.eigvals(block.A.weight).abs().max())
    x = torch.randn(3, length, 8, dtype=torch.float64)
    fast, slow = block(x), block(x, parallel=False)
    assert fast.shape == (3, 12)
    assert torch.allclose(fast, slow, atol=1e-10, rtol=1e-10)
    a = block.A.weight
    assert torch.allclose(fast, linear_recurrence_reference(block.norm(x), a, block.A.bias, block.B.weight,
                                                            block.B.bias), atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("norm", [False, True])
def test_selective_block_parallel_matches_loop(norm):
    torch.manual_seed(0)
    block = SelectiveScan(8, 12, d_state=6, chunk=4, norm=norm).double()
    x = torch.randn(3, 19, 8, dtype=torch.float64)
    assert torch.allclose(block(x), block(x, parallel=False), atol=1e-10, rtol=1e-10)
    seq = block.sequence(x)
    assert seq.shape == (3, 19, 8)
    assert torch.allclose(block.out(seq[:, -1]), block(x), atol=1e-10, rtol=1e-10)


def test_ssm_norm_default_depends_on_ssm():
    assert isinstance(MorpMamba(MorpMambaConfig(num_classes=3)).ssm.norm, torch.nn.LayerNorm)
    assert isinstance(MorpMamba(MorpMambaConfig(num_classes=3, **NOTEBOOK)).ssm.norm, torch.nn.Identity)
    assert isinstance(MorpMamba(MorpMambaConfig(num_classes=3, ssm_norm=False)).ssm.norm, torch.nn.Identity)
    assert isinstance(MorpMamba(MorpMambaConfig(num_classes=3, ssm_norm=True, **NOTEBOOK)).ssm.norm,
                      torch.nn.LayerNorm)


@pytest.mark.parametrize("block", [LinearRecurrence(16, 24), SelectiveScan(16, 24)], ids=["recurrence", "selective"])
def test_reversing_token_order_changes_ssm_output(block):
    torch.manual_seed(0)
    x = torch.randn(2, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(block(x), block(x.flip(1)), atol=1e-4)


VARIANTS = {"default": {}, "notebook": NOTEBOOK}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("patch", [4, 5, 7])
def test_shapes_and_dense_equals_patch_forward(variant, patch):
    torch.manual_seed(patch)
    m = MorpMamba(MorpMambaConfig(in_bands=6, num_classes=4, patch=patch, dim=16, state_dim=24,
                                  **VARIANTS[variant])).eval()
    img = torch.randn(2, 6, 7, 9)
    with torch.no_grad():
        dense = m(img)
        assert dense.shape == (2, 4, 7, 9)
        assert m.forward_patches(torch.randn(5, 6, patch, patch)).shape == (5, 4)
        # logits reach ~1e3 at init (box filters sum 25 values), so compare relatively
        torch.testing.assert_close(m(img, window_batch=5), dense, rtol=1e-4, atol=1e-4)
        # windows built pixel by pixel: the labelled pixel at index patch//2, zeros outside the tile
        half = patch // 2
        wins = torch.zeros(2, 7, 9, 6, patch, patch)
        for r in range(7):
            for c in range(9):
                for i in range(patch):
                    for j in range(patch):
                        rr, cc = r - half + i, c - half + j
                        if 0 <= rr < 7 and 0 <= cc < 9:
                            wins[:, r, c, :, i, j] = img[:, :, rr, cc]
        by_patch = m.forward_patches(wins.reshape(-1, 6, patch, patch)).reshape(2, 7, 9, 4).permute(0, 3, 1, 2)
    torch.testing.assert_close(dense, by_patch, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("opts", [{}, NOTEBOOK, dict(morph="minmax", ssm_norm=False, center_mode="row"),
                                  dict(NOTEBOOK, morph="minmax", ssm_norm=True, attention="self")],
                         ids=["default", "notebook", "default-minmax-nonorm-row", "notebook-minmax-norm-self"])
def test_gradient_reaches_every_parameter(opts):
    torch.manual_seed(0)
    m = MorpMamba(MorpMambaConfig(num_classes=3, **opts)).train()
    x = torch.randn(6, 15, 4, 4)
    loss = F.cross_entropy(m.forward_patches(x), torch.tensor([0, 1, 2, 0, 1, 2])) + m.l2_penalty()
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reaches {missing}"


def test_l2_penalty_is_on_the_dense_kernel_only():
    m = MorpMamba(MorpMambaConfig(num_classes=3, head_l2=0.5))
    assert torch.allclose(m.l2_penalty(), 0.5 * (m.hidden.weight ** 2).sum())
    assert m.hidden.weight.shape == (128, 128)


@pytest.mark.parametrize("variant", VARIANTS)
def test_determinism_with_seed(variant):
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        m = MorpMamba(MorpMambaConfig(num_classes=3, **VARIANTS[variant])).train()
        outs.append((m.state_dict(), m.forward_patches(torch.randn(4, 15, 4, 4))))
    for k in outs[0][0]:
        assert torch.equal(outs[0][0][k], outs[1][0][k]), k
    assert torch.equal(outs[0][1], outs[1][1])


def _synthetic(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """3 classes with distinct spectra (15 PCA-like bands) plus noise, as 4x4 patches."""
    spectra = torch.tensor([[1.0, 0.5, -0.5] * 5, [-0.5, 1.0, 0.5] * 5, [0.5, -0.5, 1.0] * 5])
    y = torch.arange(n) % 3
    x = spectra[y][:, :, None, None] + 1.5 * torch.randn(n, 15, 4, 4, generator=gen)
    return x, y


@pytest.mark.parametrize("variant", VARIANTS)
def test_training_on_separable_problem(variant):
    gen = torch.Generator().manual_seed(7)
    x_train, y_train = _synthetic(180, gen)
    x_test, y_test = _synthetic(150, gen)
    torch.manual_seed(0)
    m = MorpMamba(MorpMambaConfig(num_classes=3, **VARIANTS[variant]))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    epoch_losses = []
    for _ in range(6):
        m.train()
        perm = torch.randperm(len(y_train), generator=gen)
        total = 0.0
        for i in range(0, len(perm), 30):
            b = perm[i:i + 30]
            loss = F.cross_entropy(m.forward_patches(x_train[b]), y_train[b]) + m.l2_penalty()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        epoch_losses.append(total / len(perm))
    assert epoch_losses[-1] < epoch_losses[0]
    m.eval()
    with torch.no_grad():
        acc = (m.forward_patches(x_test).argmax(1) == y_test).float().mean().item()
    assert acc > 0.9, (acc, epoch_losses)


def test_tile_forward_chunks_windows_by_device_without_changing_logits():
    """CPU chunks of 256 windows keep the scan's decay tensor in cache; GPUs get 4096. Chunking is per window,
    so the logits are the same for any chunk size."""
    assert window_chunk(torch.device("cpu")) == 256 and window_chunk(torch.device("cuda")) == 4096
    torch.manual_seed(0)
    m = MorpMamba(MorpMambaConfig(in_bands=6, num_classes=4, dim=16, state_dim=24)).eval()
    img = torch.randn(2, 6, 13, 17)  # 442 windows: two CPU chunks
    with torch.no_grad():
        assert m.window_batch is None
        big = m(img, window_batch=4096)
        torch.testing.assert_close(m(img), big, rtol=1e-5, atol=1e-6 * big.abs().max().item())
