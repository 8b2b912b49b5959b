"""FFDNN: fast Fourier convolutional network with a capsule encoder for crop-stress classes from per-pixel
time series of photochemical features (Shi et al., Frontiers in Plant Science 14:1250844, 2023).

No official code exists and the paper's layer sizes could not be obtained, so the layout is hsikit's reading of
the paper's description, with standard components where it gives no details: a Conv1d stem, fast Fourier
convolution (FFC) blocks over the time axis after Chi et al. (NeurIPS 2020) in 1-D — a local branch of
ordinary convolutions and a global branch whose kernel acts on the real FFT of the whole series, so one layer
sees every date — then primary capsules (squash) and class capsules with dynamic routing by agreement
(Sabour et al. 2017). The class score is the length of each class capsule, in [0, 1). Defaults: a 32-channel
stem, two FFC blocks of width 64 with half of the channels in the global branch, 8 primary capsule types of
dimension 8, class capsules of dimension 16, 3 routing iterations.

Input ``(N, F, T)`` (F features per date on T regular dates), output ``(N, K)`` capsule lengths;
:meth:`FFDNN.capsules` also returns the class-capsule vectors and routing coefficients for explanation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from hsikit.models.registry import register_model


@dataclass
class FFDNNConfig:
    """``in_features`` F, ``num_classes`` K, ``length`` T (the class capsules hold one transformation matrix
    per primary capsule, so a model is tied to its T; the FFC blocks work for any T). ``global_ratio`` g is
    the share of channels in the global (Fourier) branch. ``frequency_gate`` adds a learnable sigmoid weight
    per frequency bin in every spectral transform, initialised to favour mid frequencies."""

    in_features: int = 2
    num_classes: int = 3
    length: int = 32
    stem_width: int = 32
    width: int = 64
    blocks: int = 2
    global_ratio: float = 0.5
    primary_types: int = 8
    primary_dim: int = 8
    class_dim: int = 16
    routing_iterations: int = 3
    frequency_gate: bool = False


def squash(s: torch.Tensor, dim: int = -1, eps: float = 1e-8) -> torch.Tensor:
    """v = (‖s‖² / (1 + ‖s‖²)) · s / ‖s‖: keeps the direction, maps the length into [0, 1)."""
    n2 = (s * s).sum(dim=dim, keepdim=True)
    return s * (n2 / (1.0 + n2)) / torch.sqrt(n2 + eps)


def _conv_bn_relu(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


class SpectralTransform1d(nn.Module):
    """The global→global path: 1×1 conv to half width, real FFT over time (orthonormal), real and imaginary
    parts stacked as channels, a 1×1 conv + BN + ReLU in the frequency domain (the "Fourier kernel"), inverse
    FFT back to the input length, residual with the half-width input, 1×1 conv to the output width."""

    def __init__(self, cin: int, cout: int, length: int, gate: bool = False) -> None:
        super().__init__()
        half = max(1, cout // 2)
        self.reduce = _conv_bn_relu(cin, half)
        self.fourier = _conv_bn_relu(2 * half, 2 * half)
        self.expand = nn.Conv1d(half, cout, 1, bias=False)
        self.gate = None
        if gate:
            bins = length // 2 + 1
            f = torch.linspace(0, 1, bins)
            # logits peaking in the middle of the band: sigmoid ≈ 0.73 there, ≈ 0.38 at DC / Nyquist
            self.gate = nn.Parameter(1.0 - 6.0 * (f - 0.5) ** 2)

    def gate_weights(self, bins: int) -> torch.Tensor | None:
        """Per-bin gate for a spectrum of ``bins`` bins (resampled over normalised frequency if needed)."""
        if self.gate is None:
            return None
        g = self.gate
        if g.numel() != bins:
            g = F.interpolate(g[None, None], size=bins, mode="linear", align_corners=True)[0, 0]
        return torch.sigmoid(g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[-1]
        x = self.reduce(x)
        # the FFT and the frequency-domain conv run in float32 whatever autocast says (half FFTs need
        # power-of-two lengths on CUDA and lose precision)
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = x.float()
            spec = torch.fft.rfft(z, dim=-1, norm="ortho")
            f = self.fourier(torch.cat([spec.real, spec.imag], dim=1))
            g = self.gate_weights(f.shape[-1])
            if g is not None:
                f = f * g
            re, im = f.chunk(2, dim=1)
            y = torch.fft.irfft(torch.complex(re, im), n=t, dim=-1, norm="ortho")
        return self.expand(z + y)


class FFC1d(nn.Module):
    """A 1-D fast Fourier convolution block: (local, global) → (local, global), each output BN + ReLU.

    local ← conv3(local) + conv3(global); global ← conv3(local) + spectral transform(global).
    """

    def __init__(self, cin: int, cout: int, ratio: float, length: int, gate: bool = False) -> None:
        super().__init__()
        self.in_g = int(round(cin * ratio))
        self.in_l = cin - self.in_g
        self.out_g = int(round(cout * ratio))
        self.out_l = cout - self.out_g
        if min(self.in_g, self.in_l, self.out_g, self.out_l) < 1:
            raise ValueError("global_ratio must leave at least one local and one global channel")
        self.l2l = nn.Conv1d(self.in_l, self.out_l, 3, padding=1, bias=False)
        self.g2l = nn.Conv1d(self.in_g, self.out_l, 3, padding=1, bias=False)
        self.l2g = nn.Conv1d(self.in_l, self.out_g, 3, padding=1, bias=False)
        self.g2g = SpectralTransform1d(self.in_g, self.out_g, length, gate)
        self.bn_l, self.bn_g = nn.BatchNorm1d(self.out_l), nn.BatchNorm1d(self.out_g)

    def forward(self, xl: torch.Tensor, xg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        yl = F.relu(self.bn_l(self.l2l(xl) + self.g2l(xg)))
        yg = F.relu(self.bn_g(self.l2g(xl) + self.g2g(xg)))
        return yl, yg


class ClassCapsules(nn.Module):
    """Class capsules from ``n_in`` primary capsules: u_hat = W_ij u_i (one 8→16 matrix per pair), then
    dynamic routing by agreement (coupling logits start at 0; softmax over the class capsules)."""

    def __init__(self, n_in: int, in_dim: int, n_out: int, out_dim: int, iterations: int) -> None:
        super().__init__()
        self.n_in, self.n_out, self.iterations = n_in, n_out, max(1, int(iterations))
        # scaled so the summed predictions start at moderate capsule lengths (~0.3), away from squash saturation
        self.weight = nn.Parameter(torch.randn(n_in, n_out, out_dim, in_dim) * 3.0 / (in_dim * n_in) ** 0.5)

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``u`` (N, n_in, in_dim) → class capsules (N, n_out, out_dim) and coupling coefficients (N, n_in, n_out)."""
        u_hat = torch.einsum("ijdk,nik->nijd", self.weight, u)
        b = u_hat.new_zeros(u.shape[0], self.n_in, self.n_out)
        for it in range(self.iterations):
            c = torch.softmax(b, dim=2)
            v = squash(torch.einsum("nij,nijd->njd", c, u_hat))
            if it < self.iterations - 1:
                b = b + torch.einsum("nijd,njd->nij", u_hat, v)
        return v, c


class FFDNN(nn.Module):
    """Stem → FFC blocks → primary capsules → class capsules; ``forward`` returns capsule lengths (N, K)."""

    def __init__(self, cfg: FFDNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.length < 4:
            raise ValueError("FFDNN needs at least 4 time steps")
        self.stem = _conv_bn_relu(cfg.in_features, cfg.stem_width, 3)
        self.split_g = int(round(cfg.stem_width * cfg.global_ratio))
        blocks, cin = [], cfg.stem_width
        for _ in range(max(1, cfg.blocks)):
            blocks.append(FFC1d(cin, cfg.width, cfg.global_ratio, cfg.length, cfg.frequency_gate))
            cin = cfg.width
        self.blocks = nn.ModuleList(blocks)
        self.primary = nn.Conv1d(cfg.width, cfg.primary_types * cfg.primary_dim, 3, stride=2, padding=1)
        self.positions = (cfg.length + 1) // 2
        self.classes = ClassCapsules(self.positions * cfg.primary_types, cfg.primary_dim, cfg.num_classes,
                                     cfg.class_dim, cfg.routing_iterations)

    def features(self, x: torch.Tensor, return_branches: bool = False):
        """FFC features (N, width, T) for any T; with ``return_branches`` the (local, global) outputs of every
        block as well."""
        h = self.stem(x)
        xl, xg = h[:, : h.shape[1] - self.split_g], h[:, h.shape[1] - self.split_g :]
        branches = []
        for blk in self.blocks:
            xl, xg = blk(xl, xg)
            branches.append((xl, xg))
        out = torch.cat([xl, xg], dim=1)
        return (out, branches) if return_branches else out

    def primary_capsules(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T'·types, primary_dim) squashed primary capsules, T' = ceil(T / 2)."""
        p = self.primary(self.features(x))  # (N, types*dim, T')
        n, _, tp = p.shape
        p = p.view(n, self.cfg.primary_types, self.cfg.primary_dim, tp).permute(0, 3, 1, 2)
        return squash(p.reshape(n, tp * self.cfg.primary_types, self.cfg.primary_dim))

    def capsules(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lengths (N, K), class-capsule vectors (N, K, class_dim), coupling coefficients (N, n_in, K))."""
        if x.ndim != 3 or x.shape[1] != self.cfg.in_features:
            raise ValueError(f"FFDNN expects (N, {self.cfg.in_features}, T) input, got {tuple(x.shape)}")
        if x.shape[-1] != self.cfg.length:
            raise ValueError(f"this FFDNN was built for T = {self.cfg.length} dates, got {x.shape[-1]}")
        v, c = self.classes(self.primary_capsules(x))
        return v.norm(dim=-1), v, c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.capsules(x)[0]


def margin_loss(lengths: torch.Tensor, target: torch.Tensor, m_pos: float = 0.9, m_neg: float = 0.1,
                lam: float = 0.5) -> torch.Tensor:
    """CapsNet margin loss: Σ_k T_k max(0, m⁺ − ‖v_k‖)² + λ (1 − T_k) max(0, ‖v_k‖ − m⁻)², mean over samples."""
    t = F.one_hot(target, lengths.shape[1]).to(lengths.dtype)
    pos = t * F.relu(m_pos - lengths) ** 2
    neg = lam * (1 - t) * F.relu(lengths - m_neg) ** 2
    return (pos + neg).sum(dim=1).mean()


@register_model(
    "ffdnn",
    task="stress",
    description="FFDNN: fast Fourier conv + capsules on photochemical time series (crop stress, Shi et al. 2023)",
    inputs="pixel time series",
    config_cls=FFDNNConfig,
    receptive_field=lambda cfg: 0,
)
def build_ffdnn(cfg: FFDNNConfig) -> nn.Module:
    return FFDNN(cfg)
