"""SpectralGPT fine-tuning heads: scene classifier and semantic segmenter, the two downstream heads of the
official code (EuroSAT/BigEarthNet scene classification, SegMunich segmentation).

Both reuse :class:`~hsikit.models.spectralgpt.SpectralEncoder` with its separable position tables (decision D2 of
:mod:`hsikit.models.spectralgpt`), so an MAE checkpoint initialises them through
:func:`~hsikit.models.spectralgpt.load_encoder_state`.

- ``spectralgpt-scene-classifier``: ``(N, B, H, W) -> (N, K)``. Mean over *all* tokens (the official code skips
  the first token although there is no class token; not copied) -> LayerNorm -> dropout -> linear; the head
  weight starts truncated-normal with std 2e-5. The encoder's final LayerNorm is not used (MAE fine-tuning
  convention: the new ``fc_norm`` replaces it).
- ``spectralgpt-segmenter`` (task "classification", so ``hsikit classify`` runs it over whole scenes in tiles):
  ``(N, B, H, W) -> (N, K, H, W)``. The encoder output ``(N, G, h, w, D)`` (after its final LayerNorm) is fused
  over the G spectral groups by a linear layer G -> 1, then a pseudo-pyramid of four branches (1x1 conv + GroupNorm
  + GELU, transposed conv up or max-pool down, dropout) gives maps at p, p/2, p/4 and p/8 times the token grid
  (full resolution down to 1/8) with ``w, 2w, 4w, 8w`` channels (``head_width`` w = 256 for base: 256/512/1024/2048
  as published). ``head="upernet"`` decodes them as the official segmenter does (pyramid pooling 1/2/3/6 on the
  coarsest map, top-down fusion, the four levels concatenated at full resolution, 1x1 conv, 3x3 conv to K
  classes);
  ``head="smp-upernet"`` uses segmentation-models-pytorch's UPerNet decoder on the same pyramid instead.

  hsikit decisions: inputs larger than ``img_size`` are processed as overlapping ``img_size`` windows (stride
  ``slide_stride``, default half a window) whose logits are blended with a raised-cosine weight, so the encoder
  always sees the token grid it was trained on, whatever tile size the engine uses; smaller inputs use the
  bicubically resized spatial table. Inputs that are not multiples of the patch size are padded by reflection
  and cropped back. The registered receptive field is ``img_size // 4`` (a compromise: attention is global within
  a window) so tiled inference overlaps tiles by at least half a window quarter on each side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from hsikit.models.registry import register_model
from hsikit.models.spectralgpt import SpectralEncoder, SpectralGPTConfig, scale_input

#: pyramid base width per variant (base: the published 256)
HEAD_WIDTH = {"base": 256, "small": 64, "tiny": 16}
SEG_HEADS = ("upernet", "smp-upernet")


@dataclass
class SegmenterConfig(SpectralGPTConfig):
    """SpectralGPT encoder options plus the segmentation head: ``num_classes`` K, ``head`` ("upernet" or
    "smp-upernet"), ``head_width`` (pyramid base width; default by variant), ``head_dropout`` (0.5 published),
    ``slide_stride`` (px between windows for inputs larger than ``img_size``; default ``img_size // 2``).
    The MAE decoder fields of the base config are unused here."""

    variant: str = "small"
    num_classes: int = 2
    head: str = "upernet"
    head_width: int | None = None
    head_dropout: float = 0.5
    slide_stride: int | None = None

    def __post_init__(self) -> None:
        from hsikit.errors import OptionError

        super().__post_init__()
        if int(self.num_classes) < 1:
            raise OptionError(f"spectralgpt segmenter: num_classes must be >= 1, not {self.num_classes}")
        if self.head not in SEG_HEADS:
            raise OptionError(f"spectralgpt segmenter: head must be one of {SEG_HEADS}, not {self.head!r}")
        p = int(self.patch_size)
        if p & (p - 1):
            raise OptionError(f"spectralgpt segmenter: patch_size must be a power of two, not {p}")
        if self.head_width is None:
            self.head_width = HEAD_WIDTH[self.variant]
        if self.slide_stride is None:
            self.slide_stride = max(p, (self.img_size // 2) // p * p)
        if not 0 < int(self.slide_stride) <= self.img_size:
            raise OptionError(f"spectralgpt segmenter: slide_stride must be in 1..img_size, not {self.slide_stride}")


@dataclass
class SceneClassifierConfig(SpectralGPTConfig):
    """SpectralGPT encoder options plus a linear scene head over ``num_classes`` classes."""

    variant: str = "small"
    num_classes: int = 2
    head_dropout: float = 0.0

    def __post_init__(self) -> None:
        from hsikit.errors import OptionError

        super().__post_init__()
        if int(self.num_classes) < 1:
            raise OptionError(f"spectralgpt scene classifier: num_classes must be >= 1, not {self.num_classes}")


def _gn(channels: int, groups: int = 32) -> nn.GroupNorm:
    g = max(1, min(groups, channels // 2 or 1))
    while channels % g:
        g -= 1
    return nn.GroupNorm(g, channels)


def _conv_gn(cin: int, cout: int, k: int, groups: int = 16) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), _gn(cout, groups), nn.GELU())


def _branch(dim: int, channels: int, scale: float, dropout: float) -> nn.Sequential:
    """One pseudo-pyramid level: 1x1 conv + GroupNorm(32) + GELU, resampled by ``scale``, dropout."""
    layers: list[nn.Module] = [nn.Conv2d(dim, channels, 1), _gn(channels, 32), nn.GELU()]
    if scale > 1:
        s = int(round(scale))
        layers.append(nn.ConvTranspose2d(channels, channels, kernel_size=s, stride=s))
    elif scale < 1:
        layers.append(nn.MaxPool2d(int(round(1 / scale)), ceil_mode=True))
    layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class UPerHead(nn.Module):
    """UPerNet-style decoder of the official segmenter on a 4-level pyramid (finest first)."""

    def __init__(self, channels: list[int], width: int, classes: int, dropout: float,
                 pool_sizes: tuple[int, ...] = (1, 2, 3, 6)) -> None:
        super().__init__()
        top = channels[-1]
        self.ppm = nn.ModuleList(nn.Sequential(nn.AdaptiveMaxPool2d(s), nn.Conv2d(top, width, 1), _gn(width, 16),
                                               nn.GELU()) for s in pool_sizes)
        self.bottleneck = _conv_gn(top + len(pool_sizes) * width, width, 3)
        self.lateral = nn.ModuleList(nn.Sequential(nn.Conv2d(c, width, 1), _gn(width, 16), nn.GELU(),
                                                   nn.Dropout(dropout)) for c in channels[:-1])
        self.smooth = nn.ModuleList(_conv_gn(width, width, 3) for _ in channels[:-1])
        self.fuse = nn.Sequential(nn.Conv2d(len(channels) * width, width, 1), _gn(width, 16), nn.GELU())
        self.classify = nn.Conv2d(width, classes, 3, padding=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        top = feats[-1]
        pooled = [top] + [_resize(m(top), top.shape[-2:]) for m in self.ppm]
        f = self.bottleneck(torch.cat(pooled, 1))
        levels = [f]
        for i in reversed(range(len(feats) - 1)):
            lat = self.lateral[i](feats[i])
            f = lat + _resize(f, lat.shape[-2:])
            levels.insert(0, self.smooth[i](f))
        size = levels[0].shape[-2:]
        return self.classify(self.fuse(torch.cat([levels[0]] + [_resize(t, size) for t in levels[1:]], 1)))


class SMPUPerHead(nn.Module):
    """segmentation-models-pytorch's UPerNet decoder (BatchNorm + ReLU) on the same pyramid; training batches
    need at least two samples (its 1x1 pyramid-pooling branch normalises over the batch)."""

    def __init__(self, channels: list[int], width: int, classes: int) -> None:
        super().__init__()
        from segmentation_models_pytorch.decoders.upernet.decoder import UPerNetDecoder

        # smp skips the first two (1/1, 1/2) entries of an encoder's feature list; ours start at full resolution
        self.decoder = UPerNetDecoder(encoder_channels=[channels[0], channels[0], *channels], encoder_depth=5,
                                      decoder_channels=width, use_norm="batchnorm")
        self.classify = nn.Conv2d(width, classes, 3, padding=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        y = self.decoder([feats[0], feats[0], *feats])
        return self.classify(_resize(y, feats[0].shape[-2:]))


def _starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


def _ramp(n: int, device, dtype) -> torch.Tensor:
    i = torch.arange(n, device=device, dtype=dtype)
    return torch.sin(torch.pi * (i + 0.5) / n) ** 2 + 1e-3


class SpectralGPTSegmenter(nn.Module):
    """Per-pixel class logits ``(N, K, H, W)`` from ``(N, B, H, W)`` (see the module docstring)."""

    def __init__(self, cfg: SegmenterConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d, w, p = int(cfg.embed_dim), int(cfg.head_width), int(cfg.patch_size)
        self.encoder = SpectralEncoder(cfg, final_norm=True)
        self.fuse_groups = nn.Linear(cfg.num_groups, 1)
        channels = [w, 2 * w, 4 * w, 8 * w]
        self.pyramid = nn.ModuleList(_branch(d, c, p / 2**k, cfg.head_dropout) for k, c in enumerate(channels))
        if cfg.head == "upernet":
            self.decode = UPerHead(channels, w, int(cfg.num_classes), cfg.head_dropout)
        else:
            self.decode = SMPUPerHead(channels, w, int(cfg.num_classes))

    def forward_window(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of one window (H, W multiples of the patch size), at the input resolution."""
        f = self.encoder(scale_input(x, self.cfg.input_scaling))  # (N, G, h, w, D)
        f = self.fuse_groups(f.permute(0, 2, 3, 4, 1))[..., 0].permute(0, 3, 1, 2)  # (N, D, h, w)
        out = self.decode([b(f) for b in self.pyramid])
        return _resize(out, x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.cfg.patch_size
        h, w = x.shape[-2:]
        ph, pw = (-h) % p, (-w) % p
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
        out = self._slide(x)
        return out[..., :h, :w]

    def _slide(self, x: torch.Tensor) -> torch.Tensor:
        win, stride = int(self.cfg.img_size), int(self.cfg.slide_stride)
        n, _, hh, ww = x.shape
        if hh <= win and ww <= win:
            return self.forward_window(x)
        rows, cols = _starts(hh, win, stride), _starts(ww, win, stride)
        sh, sw = min(win, hh), min(win, ww)
        weight = _ramp(sh, x.device, x.dtype)[:, None] * _ramp(sw, x.device, x.dtype)[None, :]
        out = x.new_zeros(n, int(self.cfg.num_classes), hh, ww)
        norm = x.new_zeros(hh, ww)
        for r in rows:
            tiles = torch.cat([x[..., r : r + sh, c : c + sw] for c in cols], 0)  # one window row per forward
            logits = self.forward_window(tiles).reshape(len(cols), n, -1, sh, sw)
            for j, c in enumerate(cols):
                out[..., r : r + sh, c : c + sw] += logits[j] * weight
                norm[r : r + sh, c : c + sw] += weight
        return out / norm


class SpectralGPTSceneClassifier(nn.Module):
    """Scene logits ``(N, K)`` from chips ``(N, B, H, W)``: mean over all tokens, LayerNorm, dropout, linear."""

    def __init__(self, cfg: SceneClassifierConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = int(cfg.embed_dim)
        self.encoder = SpectralEncoder(cfg, final_norm=False)
        self.fc_norm = nn.LayerNorm(d, eps=1e-6)
        self.head_drop = nn.Dropout(cfg.head_dropout)
        self.head = nn.Linear(d, int(cfg.num_classes))
        nn.init.trunc_normal_(self.head.weight, std=2e-5)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encoder(scale_input(x, self.cfg.input_scaling))
        return self.head(self.head_drop(self.fc_norm(f.flatten(1, 3).mean(1))))


@register_model("spectralgpt-segmenter", task="classification", aliases=("spectralgpt_segmenter",),
                description="SpectralGPT encoder + UPerNet segmentation head (per-pixel classes)",
                inputs="image tiles", config_cls=SegmenterConfig,
                receptive_field=lambda cfg: int(cfg.img_size) // 4, size_multiple=8)
def build_segmenter(cfg: SegmenterConfig) -> nn.Module:
    return SpectralGPTSegmenter(cfg)


@register_model("spectralgpt-scene-classifier", task="scene-classification",
                aliases=("spectralgpt_scene_classifier",),
                description="SpectralGPT encoder + mean-pool linear head (one class per chip)",
                inputs="image chips", config_cls=SceneClassifierConfig,
                receptive_field=lambda cfg: int(cfg.img_size), size_multiple=8)
def build_scene_classifier(cfg: SceneClassifierConfig) -> nn.Module:
    return SpectralGPTSceneClassifier(cfg)
