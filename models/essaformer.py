"""ESSAformer (Zhang et al., "ESSAformer: Efficient Transformer for Hyperspectral Image Super-resolution",
ICCV 2023): single-image hyperspectral super-resolution with a linear-complexity, SCC-kernel attention.

A 3x3 conv lifts the LR cube to ``dim`` features; an iterative refining trunk alternates one high-resolution
and one low-resolution ESSA unit through one Upsample and one Downsample, all four reused across the
iterations (back-projection-like; U and the HR unit run three times, Downsample and the LR unit twice); a 3x3
conv at HR maps back to the bands. Layer layout and tensor names follow the official ``ESSA.py``
(``Rexzhan/ESSAformer``, Unlicense), which has no training, data or metric code; the training data protocol is
SSPSR's (see :mod:`hsikit.restoration.degradations`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from hsikit.models.registry import register_model

_SCALES = (1, 2, 3, 4, 8)
# LR height/width multiple the network needs. Every up stage multiplies the LR size exactly and every
# pixel-unshuffle then divides an HR map that is an exact multiple of the scale, so any size works as it is;
# reflect-padding the LR input to a multiple of 4 (and cropping the output) is not needed. Kept as a constant
# so the pad path stays in one place.
_LR_MULTIPLE = 1
_EPS = 1e-7


@dataclass
class ESSAformerConfig:
    in_bands: int = 31
    dim: int = 64
    scale: int = 4
    dropout: float = 0.2
    #: not in the reference, whose output comes from the last conv alone: adds a bicubic upsampling of the input
    bicubic_skip: bool = False

    def __post_init__(self) -> None:
        from hsikit.errors import OptionError

        if self.scale not in _SCALES:
            raise OptionError(f"essaformer: scale must be one of {list(_SCALES)}, got {self.scale!r}")
        if int(self.in_bands) < 1 or int(self.dim) < 1:
            raise OptionError(f"essaformer: in_bands and dim must be >= 1, got {self.in_bands!r} and {self.dim!r}")
        f = _stage_factor(int(self.scale))
        if f > 1 and self.dim % (f * f):
            raise OptionError(f"essaformer: dim ({self.dim}) must be divisible by {f * f} for scale {self.scale}")
        if not 0.0 <= self.dropout < 1.0:
            raise OptionError(f"essaformer: dropout must be in [0, 1), got {self.dropout!r}")


def _stage_factor(scale: int) -> int:
    """Resampling factor of one up/down stage: 3 for x3, 2 for powers of two, 1 (no stage) for x1."""
    return 3 if scale == 3 else (2 if scale > 1 else 1)


def _num_stages(scale: int) -> int:
    return 1 if scale == 3 else int(round(math.log2(scale)))


# ---------------------------------------------------------------------------------------------- attention


def _scc_features(x: torch.Tensor) -> torch.Tensor:
    """Per-token normalised energy profile: centre over channels, square, divide by the sum (+1e-7)."""
    x = x - x.mean(dim=-1, keepdim=True)
    e = x * x
    return e / (e.sum(dim=-1, keepdim=True) + _EPS)


def _qk_features(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # Q features are unit vectors per token; K features are unit vectors per channel over all N tokens, which
    # makes the output depend on N, hence on the tile size (as in the reference).
    return F.normalize(_scc_features(q), dim=-1), F.normalize(_scc_features(k), dim=-2)


def essa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Kernelised ESSA attention, linear in the number of tokens N: ``V + Q~ (K~^T V) / sqrt(N)``.

    ``q``, ``k``, ``v``: ``(..., N, D)``. Returns ``(..., N, D)``, before the output projection.

    Relation to the SCC kernel: the spectral correlation coefficient of a query and a key,
    ``SCC(q, k) = sum_c (q_c - mean q)(k_c - mean k) / (||q - mean q|| ||k - mean k||)``, is Pearson's correlation
    over channels and hence invariant to a shift and a positive scaling of either vector. The paper builds the
    attention kernel from the SCC and expands it as a Taylor series. The zeroth-order term is kept as the
    identity branch ``V``. The first-order term is made factorisable: each token maps to
    ``phi(x)_c = (x_c - mean x)^2 / ||x - mean x||^2``, the squared components of its centred unit vector (the
    same shift/scale invariance, non-negative, summing to 1), so the kernel is
    ``phi(q) . phi(k) = sum_c (q^_c k^_c)^2`` with ``q^``, ``k^`` the centred unit vectors (the squared terms
    of the SCC sum). After the L2 normalisations (Q~ per token, K~ per channel along tokens) and the 1/sqrt(N)
    scaling, which replace softmax's row normalisation, associativity computes ``Q~ (K~^T V)`` in O(N D^2)
    without forming the N x N matrix. Higher orders are not implemented in the reference (a README TODO).
    """
    n = q.shape[-2]
    qf, kf = _qk_features(q, k)
    # n ** 0.5 rather than math.sqrt(n): traced for ONNX, the token count then stays a graph value, so an exported
    # model scales correctly on tiles of other sizes
    return v + qf @ (kf.transpose(-2, -1) @ v) / n ** 0.5


def essa_attention_explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The same result as :func:`essa_attention` through the explicit ``(..., N, N)`` matrix
    ``Q~ K~^T / sqrt(N)``: quadratic in N, for tests only."""
    n = q.shape[-2]
    qf, kf = _qk_features(q, k)
    return v + (qf @ kf.transpose(-2, -1) / math.sqrt(n)) @ v


class ESSA(nn.Module):
    """Single-head ESSA on tokens ``(B, N, dim)``: Linear dim->3dim, :func:`essa_attention`, Linear dim->dim."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(essa_attention(q, k, v))


# --------------------------------------------------------------------------------------------- blocks


class ESSAUnit(nn.Module):
    """ESSA transformer unit on ``(B, dim, H, W)`` (the reference's ``Convup`` and ``Convdown``: same structure,
    separate weights): LayerNorm -> ESSA -> Dropout2d, concatenated with the input, then 1x1 -> LeakyReLU ->
    Dropout2d -> 3x3 -> LeakyReLU -> Dropout2d -> 1x1 back to dim, plus the input. The attention has no residual
    of its own; the conv branch is the feed-forward part."""

    def __init__(self, dim: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = ESSA(dim)
        self.drop = nn.Dropout2d(dropout)
        d2 = 2 * dim
        self.ffn = nn.Sequential(
            nn.Conv2d(d2, d2, 1),
            nn.LeakyReLU(0.2),
            nn.Dropout2d(dropout),
            nn.Conv2d(d2, d2, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Dropout2d(dropout),
            nn.Conv2d(d2, dim, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        a = self.attn(self.norm(tokens)).transpose(1, 2).reshape(b, c, h, w)
        return x + self.ffn(torch.cat((self.drop(a), x), dim=1))


class Upsample(nn.Sequential):
    """x2 stages of conv 3x3 dim->4dim + PixelShuffle(2) (x3: 9dim + shuffle 3; x1: identity)."""

    def __init__(self, dim: int, scale: int) -> None:
        f = _stage_factor(scale)
        layers: list[nn.Module] = []
        for _ in range(_num_stages(scale)):
            layers += [nn.Conv2d(dim, f * f * dim, 3, padding=1), nn.PixelShuffle(f)]
        super().__init__(*layers)


class Downsample(nn.Sequential):
    """x2 stages of conv 3x3 dim->dim/4 + PixelUnshuffle(2) (x3: dim/9 + unshuffle 3; x1: identity)."""

    def __init__(self, dim: int, scale: int) -> None:
        f = _stage_factor(scale)
        layers: list[nn.Module] = []
        for _ in range(_num_stages(scale)):
            layers += [nn.Conv2d(dim, dim // (f * f), 3, padding=1), nn.PixelUnshuffle(f)]
        super().__init__(*layers)


def _pad_lr(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad bottom/right to a multiple of ``multiple``: reflect, or replicate where the map is too small to reflect."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class ESSAformer(nn.Module):
    """LR cube ``(N, C, h, w)`` -> SR cube ``(N, C, scale*h, scale*w)`` for any h, w >= 1.

    ``scale`` attribute: the upscaling factor. Call ``eval()`` at inference: the units hold Dropout2d.
    """

    def __init__(self, cfg: ESSAformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.scale = int(cfg.scale)
        c, d = int(cfg.in_bands), int(cfg.dim)
        self.conv_first = nn.Conv2d(c, d, 3, padding=1)
        # One instance each, reused by every refinement iteration, as in the reference: U and the HR unit run
        # three times, Downsample and the LR unit twice.
        self.upsample = Upsample(d, self.scale)
        self.downsample = Downsample(d, self.scale)
        self.unit_hr = ESSAUnit(d, cfg.dropout)
        self.unit_lo = ESSAUnit(d, cfg.dropout)
        self.conv_last = nn.Conv2d(d, c, 3, padding=1)

    def trunk(self, x0: torch.Tensor) -> torch.Tensor:
        """Iterative up/down refinement from LR features x0 to HR features, with U/Dn the up/down-sampler and
        Up/Lo the HR/LR units: a1 = Up(U(x0)), b1 = Lo(Dn(a1) + x0), a2 = Up(U(b1) + a1), b2 = Lo(Dn(a2) + b1),
        a3 = Up(U(b2) + a2) (returned)."""
        up, down, hr, lo = self.upsample, self.downsample, self.unit_hr, self.unit_lo
        a1 = hr(up(x0))
        b1 = lo(down(a1) + x0)
        a2 = hr(up(b1) + a1)
        b2 = lo(down(a2) + b1)
        return hr(up(b2) + a2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.cfg.in_bands:
            raise ValueError(f"ESSAformer expects (N, {self.cfg.in_bands}, h, w) input, got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        s = self.scale
        y = self.conv_last(self.trunk(self.conv_first(_pad_lr(x, _LR_MULTIPLE))))[..., : s * h, : s * w]
        if self.cfg.bicubic_skip:
            y = y + F.interpolate(x, size=(s * h, s * w), mode="bicubic", align_corners=False)
        return y


# --------------------------------------------------------------------------------------- registration


def _conv_halo(scale: int) -> int:
    """Exact LR-pixel radius of the conv stack along the longest trunk path, ignoring the attention.

    Works in HR pixel units (an LR pixel is ``scale`` units): walking backwards from one HR output pixel, each
    3x3 conv widens the dependency interval by one pixel of its own resolution, and each pixel-shuffle snaps it
    outwards to the coarser grid it came from (an HR pixel depends on its whole LR pixel); pixel-unshuffle adds
    nothing. The worst output position within an LR pixel is taken.
    """
    s = scale
    f = _stage_factor(s)
    n = _num_stages(s) if s > 1 else 0
    up: list[tuple[str, int]] = []  # forward ops of Upsample: conv at pixel size p, then shuffle from p
    p = s
    for _ in range(n):
        up += [("conv", p), ("snap", p)]
        p //= f
    down: list[tuple[str, int]] = []  # forward ops of Downsample: conv at size p, unshuffle (no widening)
    p = 1
    for _ in range(n):
        down.append(("conv", p))
        p *= f
    hr_unit, lo_unit = [("conv", 1)], [("conv", s)]
    ops = [("conv", s)] + (up + hr_unit + down + lo_unit) * 2 + up + hr_unit + [("conv", 1)]
    worst = 0
    for j in range(s):
        a, b = j, j + 1
        for op, size in reversed(ops):
            if op == "conv":
                a, b = a - size, b + size
            else:
                a, b = (a // size) * size, -((-b) // size) * size
        worst = max(worst, -(a // s), -((-b) // s) - 1)
    return worst


def _receptive_field(cfg: ESSAformerConfig) -> int:
    # The convs alone need _conv_halo LR px (x1: 7, x2: 9, x3: 9, x4: 11, x8: 11). The ESSA attention is global:
    # K~ is normalised over all tokens and scaled by 1/sqrt(N) (as in the reference), so no finite halo reproduces
    # whole-image inference exactly and tiles only approximate it; at least 8 px of context is kept so that
    # tiles (preferably >= 64 LR px, where the tile-size dependence is small) overlap generously.
    return max(_conv_halo(int(cfg.scale)), 8)


@register_model(
    "essaformer",
    task="super-resolution",
    description="ESSAformer (Zhang et al., ICCV 2023): SCC-kernel efficient spectral-spatial attention, "
    "iterative up/down refinement",
    inputs="image tiles",
    config_cls=ESSAformerConfig,
    receptive_field=_receptive_field,
    size_multiple=1,
)
def build_essaformer(cfg: ESSAformerConfig) -> nn.Module:
    return ESSAformer(cfg)
