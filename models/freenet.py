"""FreeNet (Zheng et al., "FPGA: Fast Patch-Free Global Learning Framework for Fully End-to-End Hyperspectral
Image Classification", IEEE TGRS 2020): a patch-free encoder-decoder FCN over the whole scene.

The encoder alternates spectral attention (squeeze-and-excitation over feature channels) with 3x3 conv +
GroupNorm + ReLU blocks and strided 3x3 downsampling convs (no norm); a lightweight decoder merges the four
encoder levels through 1x1 lateral convs, nearest-neighbour upsampling and 3x3 convs without norm or
activation, and a 1x1 classifier works at full resolution. Training uses GS² sampling
(:func:`hsikit.sampling.gs2_minibatches`), not random patches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from hsikit.models.registry import register_model


@dataclass
class FreeNetConfig:
    in_bands: int
    num_classes: int
    widths: tuple[int, ...] = (96, 128, 192, 256)
    decoder_width: int = 128
    num_blocks: tuple[int, ...] = (1, 1, 1, 1)
    reduction_ratio: float = 1.0  # scales r = 16 * ratio: GroupNorm groups, SE reduction and the width rounding
    pad_multiple: int = 16  # the reference pads to 16 although three stride-2 stages only need 8


def _groups(cfg: FreeNetConfig) -> int:
    return max(1, int(16 * cfg.reduction_ratio))


def _widths(cfg: FreeNetConfig) -> list[int]:
    r = _groups(cfg)
    out = [int(w * cfg.reduction_ratio) // r * r for w in cfg.widths]
    if any(w < r for w in out):
        raise ValueError(f"FreeNet widths {cfg.widths} with reduction_ratio {cfg.reduction_ratio} leave a stage empty")
    return out


class SpectralAttention(nn.Module):
    """Squeeze-and-excitation: global average pool -> C/r -> ReLU -> C -> sigmoid, rescaling each channel."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * s[:, :, None, None]


def _cgr(c_in: int, c_out: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(groups, c_out), nn.ReLU(inplace=True))


def _down(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU(inplace=True))


class FreeNet(nn.Module):
    """Input ``(N, B, H, W)`` -> logits ``(N, K, H, W)`` for any H, W: the input is zero-padded at the bottom and
    right to a multiple of ``pad_multiple`` and the output cropped back, as the reference does."""

    def __init__(self, cfg: FreeNetConfig) -> None:
        super().__init__()
        if len(cfg.widths) != 4 or len(cfg.num_blocks) != 4:
            raise ValueError("FreeNet has four encoder stages: give four widths and four block counts")
        self.cfg = cfg
        g = _groups(cfg)
        w = _widths(cfg)
        self.stem = _cgr(cfg.in_bands, w[0], g)
        self.stages = nn.ModuleList()
        self.downs = nn.ModuleList()
        for i, (c, n) in enumerate(zip(w, cfg.num_blocks)):
            blocks: list[nn.Module] = []
            for _ in range(int(n)):
                blocks += [SpectralAttention(c, g), _cgr(c, c, g)]
            self.stages.append(nn.Sequential(*blocks))
            if i < 3:
                self.downs.append(_down(c, w[i + 1]))
        d = cfg.decoder_width
        self.laterals = nn.ModuleList(nn.Conv2d(c, d, 1) for c in w)
        self.fuse = nn.ModuleList(nn.Conv2d(d, d, 3, padding=1) for _ in w)
        self.classifier = nn.Conv2d(d, cfg.num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = int(self.cfg.pad_multiple)
        if h % m or w % m:  # F.pad copies even when there is nothing to add
            x = F.pad(x, (0, (-w) % m, 0, (-h) % m))
        feats = []
        f = self.stem(x)
        for i, stage in enumerate(self.stages):
            f = stage(f)
            feats.append(f)
            if i < 3:
                f = self.downs[i](f)
        p = self.fuse[3](self.laterals[3](feats[3]))
        for lvl in (2, 1, 0):
            p = self.fuse[lvl](self.laterals[lvl](feats[lvl]) + F.interpolate(p, scale_factor=2.0, mode="nearest"))
        return self.classifier(p)[..., :h, :w]


def _receptive_field(cfg: FreeNetConfig) -> int:
    # Conv receptive radius of the layer list (stem, 4 stages, 3 downs, decoder 3x3s) is 38 px per block count of
    # one; deeper stages add 2, 4, 8, 16 px each per extra block. Spectral attention and GroupNorm pool over the
    # whole input, which no finite halo reproduces exactly: tiled and whole-image inference agree closely, not
    # bit for bit (measured in BENCHMARKS.md).
    extra = sum((n - 1) * 2 ** i for i, n in enumerate(cfg.num_blocks))
    return 38 + 2 * extra


@register_model(
    "freenet",
    task="classification",
    description="FreeNet (FPGA, TGRS 2020): patch-free FCN with spectral attention, trained with GS² sampling",
    inputs="whole image",
    config_cls=FreeNetConfig,
    receptive_field=_receptive_field,
    size_multiple=16,
)
def build_freenet(cfg: FreeNetConfig) -> nn.Module:
    return FreeNet(cfg)
