"""HSDT (Lai, Yan, Fu, "Hybrid Spectral Denoising Transformer with Guided Attention", ICCV 2023): a 3-D U-Net
denoiser for hyperspectral cubes, following the official MIT-licensed code (``Zeqiang-Lai/HSDT``).

The band stack is treated as a volume ``(N, 1, D, H, W)``: every layer is a convolution (S3Conv = parallel
spatial 3x3 and spectral 3-tap branches, or a full 3x3x3 conv when striding / after upsampling) + BatchNorm3d +
a transformer block. The block's guided spectral self-attention (GSSA) pools each band over H x W and mixes bands
with one D x D attention shared by all pixels; a self-modulated FFN follows (no LayerNorm, no FFN residual).
Encoder outputs are added back in the decoder, and the network output is a correction added to the noisy input.

hsikit interface: ``HSDT(cfg)(x)`` maps ``(N, D, H, W) -> (N, D, H, W)`` for any D, H, W. H and W are padded by
reflection to the multiple of the down-sampling stages and cropped back; the output is not clamped.

The attention's guided branch is tied to the trained band count ``in_bands`` (Dq). At inference a cube with more
bands is denoised in overlapping runs of Dq bands, blended (``spectral_overlap``; hsikit's choice: a network
trained on 31-band runs lost 0.7 dB at sigma 30 on 215-band EnMAP tiles when run on all bands at once). Fewer
bands, or ``spectral_overlap=0``, run GSSA in its self-attention ("flex") branch over all bands. Attribute names
follow the reference implementation (``head.attn.attn.attn_proj`` etc.), so its state dicts load unchanged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from hsikit.models.registry import register_model

HSDT_VARIANTS: dict[str, dict[str, Any]] = {
    "s": {"width": 8, "depth": 5, "downsample_at": (1, 3)},  # hsdt_8, 134,350 params at 31 bands
    "m": {"width": 16, "depth": 5, "downsample_at": (1, 3)},  # hsdt, 521,158 params
    "l": {"width": 16, "depth": 7, "downsample_at": (1, 3, 5)},  # hsdt_deep, 2,094,786 params
}

GSSA_MODES = ("auto", "random", "guided", "self")
_INITS = ("kn", "ku", "xn", "xu", "xavier")


@dataclass
class HSDTConfig:
    """HSDT options.

    ``in_bands`` is Dq, the band count the guided attention is trained for (31 in every published model).
    ``variant`` ("s", "m", "l", see :data:`HSDT_VARIANTS`) supplies ``width``, ``depth`` and ``downsample_at``
    for those left ``None``; after construction the three hold the resolved values. ``downsample_at`` accepts a
    list (as read back from JSON). ``init``: "kn" Kaiming-normal (reference default), "ku", "xn"/"xavier",
    "xu". ``flex``: use the self-attention branch at inference even when D == in_bands. ``seed_branch`` seeds
    the training-time branch coin flips; ``None`` draws the seed from torch's RNG when the model is built.
    """

    in_bands: int = 31
    variant: str = "s"
    width: int | None = None
    depth: int | None = None
    downsample_at: tuple[int, ...] | list[int] | None = None
    init: str = "kn"
    flex: bool = False
    seed_branch: int | None = None
    #: at inference, a cube of more than ``in_bands`` bands is denoised in overlapping runs of ``in_bands``
    #: bands (the band count the network trained on), blended over ``spectral_overlap`` bands (at most half a
    #: run); 0 turns it off
    spectral_overlap: int = 8

    def __post_init__(self) -> None:
        from hsikit.errors import OptionError

        self.variant = str(self.variant).lower()
        if self.variant not in HSDT_VARIANTS:
            raise OptionError(f"hsdt: variant must be one of {sorted(HSDT_VARIANTS)}, got {self.variant!r}")
        base = HSDT_VARIANTS[self.variant]
        if self.width is None:
            self.width = base["width"]
        if self.depth is None:
            self.depth = base["depth"]
        if self.downsample_at is None:
            self.downsample_at = base["downsample_at"]
        self.downsample_at = tuple(sorted({int(i) for i in self.downsample_at}))
        for name in ("in_bands", "width", "depth"):
            if int(getattr(self, name)) < 1:
                raise OptionError(f"hsdt: {name} must be >= 1, got {getattr(self, name)!r}")
        if any(not 0 <= i < int(self.depth) for i in self.downsample_at):
            raise OptionError(f"hsdt: downsample_at {list(self.downsample_at)} must index layers 0..{self.depth - 1}")
        if self.init not in _INITS:
            raise OptionError(f"hsdt: init must be one of {list(_INITS)}, got {self.init!r}")
        if int(self.spectral_overlap) < 0:
            raise OptionError(f"hsdt: spectral_overlap must be >= 0, got {self.spectral_overlap!r}")


class S3Conv(nn.Module):
    """Spatial-spectral separable conv: [(1,3,3) conv, LeakyReLU, (1,3,3) conv, LeakyReLU] + (3,1,1) conv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        # "dw_conv"/"pw_conv" are the reference's names; both are dense convolutions.
        self.dw_conv = nn.Sequential(
            nn.Conv3d(in_ch, out_ch, (1, 3, 3), padding=(0, 1, 1), bias=False),
            nn.LeakyReLU(0.01),
            nn.Conv3d(out_ch, out_ch, (1, 3, 3), padding=(0, 1, 1), bias=False),
            nn.LeakyReLU(0.01),
        )
        self.pw_conv = nn.Conv3d(in_ch, out_ch, (3, 1, 1), padding=(1, 0, 0), bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw_conv(x) + self.pw_conv(x)


class GSSA(nn.Module):
    """Guided spectral self-attention on ``(B, C, D, H, W)``, with its residual.

    ``mode``: "auto" (training: a coin flip per call between the self and guided branch; inference: guided,
    or self when ``flex`` or D != ``num_bands``), "random" (coin flip also at inference), "guided", "self".
    ``rng`` draws the coin flips; the network shares one seeded generator among all its GSSA modules.
    """

    def __init__(self, channels: int, num_bands: int, flex: bool = False, rng: random.Random | None = None) -> None:
        super().__init__()
        self.channels, self.num_bands, self.flex = channels, num_bands, flex
        self.attn_proj = nn.Linear(channels, num_bands)  # the Dq learnable spectral queries (+ bias)
        self.value_proj = nn.Linear(channels, channels, bias=False)
        self.fc = nn.Linear(channels, channels, bias=False)
        self.mode = "auto"
        self.rng = rng if rng is not None else random.Random(0)
        self.last_branch: str | None = None

    def band_descriptor(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W) -> (B, D, C)``: each band's features averaged over the pixels (pooled band-major,
        the layout the blocks leave in memory: a strided mean over H, W was 8 % of the forward)."""
        return x.permute(0, 2, 3, 4, 1).flatten(2, 3).mean(2)

    def _branch(self, d: int) -> str:
        if self.mode not in GSSA_MODES:
            raise ValueError(f"GSSA mode must be one of {GSSA_MODES}, got {self.mode!r}")
        if self.mode in ("guided", "self"):
            return self.mode
        if self.mode == "random" or self.training:
            # Always consume the flip so the sequence does not depend on D.
            flip_self = self.rng.random() > 0.5
            if self.mode == "auto" and d != self.num_bands:
                return "self"
            return "self" if flip_self else "guided"
        return "self" if self.flex or d != self.num_bands else "guided"

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, D, D)`` band-mixing matrix (softmax over the last axis) for this call's branch."""
        t = self.band_descriptor(x)
        branch = self._branch(x.shape[2])
        self.last_branch = branch
        if branch == "self":
            logits = t @ t.transpose(1, 2)
        else:
            if x.shape[2] != self.num_bands:
                raise ValueError(f"GSSA guided branch needs {self.num_bands} bands, got {x.shape[2]}; use mode "
                                 "'self' (flex) for other band counts")
            logits = self.attn_proj(t)
        return logits.softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Band-major (B, D, H, W, C): the layout the previous block's FFN leaves in memory (no copy), and the one
        # D x D mixing shared by all pixels becomes a single (D x D) @ (D x H·W·C) product per image instead of
        # H·W tiny ones; see forward_reference for the formulation as written in the paper's code.
        attn = self.attention(x)
        v = self.value_proj(x.permute(0, 2, 3, 4, 1))  # (B, D, H, W, C)
        y = torch.bmm(attn, v.reshape(v.shape[0], v.shape[1], -1)).view_as(v)
        return self.fc(y).permute(0, 4, 1, 2, 3) + x

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The per-pixel formulation (the reference of the tests): (B, H, W, D, C) values, one D x D matmul per
        pixel."""
        attn = self.attention(x)
        v = self.value_proj(x.permute(0, 3, 4, 2, 1))  # (B, H, W, D, C)
        y = torch.matmul(attn[:, None, None], v)
        return self.fc(y).permute(0, 4, 3, 1, 2) + x


class SMFFN(nn.Module):
    """Self-modulated FFN on the last axis: W2 GELU(W1 x) + a * sigmoid(g), with (a, g) = W3 x."""

    def __init__(self, channels: int, hidden: int, bias: bool = True) -> None:
        super().__init__()
        if hidden % 2:
            raise ValueError("SMFFN hidden width must be even (it is split into value and gate halves)")
        self.w_1 = nn.Linear(channels, hidden, bias=bias)
        self.w_2 = nn.Linear(hidden, channels, bias=bias)
        self.w_3 = nn.Linear(channels, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.w_3(x).chunk(2, dim=-1)
        # addcmul: the gate's product and the sum in one pass (see forward_reference)
        return torch.addcmul(self.w_2(F.gelu(self.w_1(x))), a, torch.sigmoid(g))

    def forward_reference(self, x: torch.Tensor) -> torch.Tensor:
        """The formula as written (the reference of the tests)."""
        a, g = self.w_3(x).chunk(2, dim=-1)
        return self.w_2(F.gelu(self.w_1(x))) + a * torch.sigmoid(g)


class TransformerBlock(nn.Module):
    """GSSA (with its residual) then SM-FFN (hidden 2C); no LayerNorm and no residual around the FFN."""

    def __init__(self, channels: int, num_bands: int, flex: bool = False, rng: random.Random | None = None,
                 bias: bool = True) -> None:
        super().__init__()
        self.attn = GSSA(channels, num_bands, flex=flex, rng=rng)
        self.ffn = SMFFN(channels, 2 * channels, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.attn(x).permute(0, 2, 3, 4, 1)
        return self.ffn(r).permute(0, 4, 1, 2, 3)


class PlainConv(nn.Module):
    """S3Conv -> BatchNorm3d -> transformer block, full resolution."""

    def __init__(self, in_ch: int, out_ch: int, num_bands: int, flex: bool = False,
                 rng: random.Random | None = None) -> None:
        super().__init__()
        self.conv = S3Conv(in_ch, out_ch)
        self.bn = nn.BatchNorm3d(out_ch)
        self.attn = TransformerBlock(out_ch, num_bands, flex=flex, rng=rng)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.bn(self.conv(x)))


class DownConv(nn.Module):
    """3x3x3 conv with stride (1, 2, 2) -> BatchNorm3d -> transformer block: halves H and W, never D."""

    def __init__(self, in_ch: int, out_ch: int, num_bands: int, flex: bool = False,
                 rng: random.Random | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_ch, out_ch, 3, stride=(1, 2, 2), padding=1, bias=False)
        self.bn = nn.BatchNorm3d(out_ch)
        self.attn = TransformerBlock(out_ch, num_bands, flex=flex, rng=rng)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.bn(self.conv(x)))


class UpConv(nn.Module):
    """Trilinear x(1, 2, 2) upsampling (align_corners=True) -> 3x3x3 conv -> BatchNorm3d -> transformer block."""

    def __init__(self, in_ch: int, out_ch: int, num_bands: int, flex: bool = False,
                 rng: random.Random | None = None) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=(1, 2, 2), mode="trilinear", align_corners=True)
        self.conv = nn.Conv3d(in_ch, out_ch, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(out_ch)
        self.attn = TransformerBlock(out_ch, num_bands, flex=flex, rng=rng)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.bn(self.conv(self.up(x))))


class _Encoder(nn.Module):
    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for layer in self.layers[:-1]:
            x = layer(x)
            skips.append(x)
        return self.layers[-1](x), skips  # the deepest output is not kept as a skip


class _Decoder(nn.Module):
    def __init__(self, layers: Sequence[nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        x = self.layers[0](x)
        for layer, skip in zip(self.layers[1:], reversed(skips)):
            x = layer(x + skip)
        return x


class HSDT(nn.Module):
    """HSDT denoiser: ``(N, D, H, W) -> (N, D, H, W)`` (see the module docstring)."""

    def __init__(self, cfg: HSDTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c, dq, flex = int(cfg.width), int(cfg.in_bands), bool(cfg.flex)
        down = set(cfg.downsample_at)
        self.num_bands = dq
        self.size_multiple = 2 ** len(down)
        rng = random.Random()  # shared by every GSSA; seeded below, after the weights are drawn

        self.head = PlainConv(1, c, dq, flex, rng)
        enc: list[nn.Module] = []
        ch = c
        for i in range(int(cfg.depth)):
            if i in down:
                enc.append(DownConv(ch, 2 * ch, dq, flex, rng))
                ch *= 2
            else:
                enc.append(PlainConv(ch, ch, dq, flex, rng))
        dec: list[nn.Module] = []
        for i in reversed(range(int(cfg.depth))):
            if i in down:
                dec.append(UpConv(ch, ch // 2, dq, flex, rng))
                ch //= 2
            else:
                dec.append(PlainConv(ch, ch, dq, flex, rng))
        self.encoder = _Encoder(enc)
        self.decoder = _Decoder(dec)
        self.tail = nn.Conv3d(c, 1, 3, padding=1, bias=True)

        init_hsdt(self, cfg.init)
        seed = cfg.seed_branch
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)).item())
        self.seed_branches(seed)

    @property
    def gssa_modules(self) -> list[GSSA]:
        return [m for m in self.modules() if isinstance(m, GSSA)]

    def seed_branches(self, seed: int) -> None:
        """Reseed the generator of the training-time branch coin flips (shared by all GSSA modules)."""
        self.gssa_modules[0].rng.seed(int(seed))

    def set_branch(self, mode: str) -> None:
        """Set every GSSA's ``mode``: "auto" (default), "random", "guided" or "self"."""
        if mode not in GSSA_MODES:
            raise ValueError(f"GSSA mode must be one of {GSSA_MODES}, got {mode!r}")
        for m in self.gssa_modules:
            m.mode = mode

    def forward_volume(self, x: torch.Tensor) -> torch.Tensor:
        """The reference network on ``(N, 1, D, H, W)``; H and W must be multiples of ``size_multiple``."""
        head = self.head(x)
        out, skips = self.encoder(head)
        out = self.decoder(out, skips) + head
        return self.tail(out) + x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"HSDT expects (N, D, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        # Pad each axis on its own: reflect needs pad < size, so tiny tiles fall back to replicate.
        if ph:
            x = F.pad(x, (0, 0, 0, ph), mode="reflect" if ph < h else "replicate")
        if pw:
            x = F.pad(x, (0, pw, 0, 0), mode="reflect" if pw < w else "replicate")
        d, run = x.shape[1], int(self.cfg.in_bands)
        if self.training or not self.cfg.spectral_overlap or d <= run:
            y = self.forward_volume(x.unsqueeze(1)).squeeze(1)
        else:
            y = self._spectral_runs(x, run, min(int(self.cfg.spectral_overlap), run // 2))
        return y[..., :h, :w]

    def _spectral_runs(self, x: torch.Tensor, run: int, overlap: int) -> torch.Tensor:
        # Trained on runs of `run` bands, the network sees the same at inference: runs every `run - overlap`
        # bands (the last one flush with the end), each weighted by a ramp over its overlaps, weights summing to 1.
        d = x.shape[1]
        step = run - overlap
        starts = list(range(0, d - run, step)) + [d - run]
        acc = torch.zeros_like(x)
        total = torch.zeros(d, dtype=x.dtype, device=x.device)
        ramp = torch.arange(1, run + 1, dtype=x.dtype, device=x.device)
        for k, b0 in enumerate(starts):
            wt = torch.minimum(ramp, ramp.flip(0)).clamp(max=overlap + 1) / (overlap + 1)
            if k == 0:
                wt[: run // 2] = 1
            if k == len(starts) - 1:
                wt[run // 2 :] = 1
            out = self.forward_volume(x[:, b0 : b0 + run].unsqueeze(1)).squeeze(1)
            acc[:, b0 : b0 + run] += wt[None, :, None, None] * out
            total[b0 : b0 + run] += wt
        return acc / total[None, :, None, None]


def init_hsdt(net: nn.Module, scheme: str = "kn") -> None:
    """Reference initialisation: convs by ``scheme`` (Kaiming fan_out or Xavier, normal or uniform) with zero
    bias, BatchNorm weight 1 / bias 0, every Linear N(0, 1e-3^2) with zero bias (near-uniform attention)."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            if scheme == "kn":
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif scheme == "ku":
                nn.init.kaiming_uniform_(m.weight, mode="fan_out")
            elif scheme in ("xn", "xavier"):
                nn.init.xavier_normal_(m.weight)
            elif scheme == "xu":
                nn.init.xavier_uniform_(m.weight)
            else:
                raise ValueError(f"unknown init scheme {scheme!r}")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1e-3)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _receptive_field(cfg: HSDTConfig) -> int:
    # Spatial radius of the conv stack along its deepest path, in input pixels: a 3x3 conv running at 1/r
    # resolution adds r (S3Conv: two of them; the (3,1,1) spectral conv adds none), a stride-2 conv adds the r of
    # its input, and each x2 trilinear upsampling reads coarse neighbours up to 1 coarse pixel (= r px) away.
    # S/M: 43 px, L: 91 px. GSSA pools every band over the whole tile, which no finite halo reproduces: tiled
    # inference approximates those global band descriptors with per-tile ones (close, not bit for bit).
    down = set(cfg.downsample_at)
    r, rf = 1, 2  # head S3Conv
    for i in range(int(cfg.depth)):
        if i in down:
            rf += r
            r *= 2
        else:
            rf += 2 * r
    for i in reversed(range(int(cfg.depth))):
        if i in down:
            rf += r  # upsampling at the coarse resolution
            r //= 2
            rf += r  # the plain 3x3x3 conv after it
        else:
            rf += 2 * r
    return rf + 1  # tail 3x3x3 conv


@register_model(
    "hsdt",
    task="denoising",
    description="HSDT (Lai et al., ICCV 2023): S3Conv + guided spectral self-attention denoiser",
    inputs="image tiles",
    config_cls=HSDTConfig,
    receptive_field=_receptive_field,
    size_multiple=4,
)
def build_hsdt(cfg: HSDTConfig) -> HSDT:
    return HSDT(cfg)
