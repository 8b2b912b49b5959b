"""U-Net from segmentation-models-pytorch with any encoder and N input bands (never downloads weights)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from hsikit.models.registry import register_model


@dataclass
class UNetConfig:
    in_bands: int
    num_classes: int
    encoder: str = "resnet18"
    encoder_depth: int = 4
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16)


def _receptive_field(cfg: UNetConfig) -> int:
    # Context radius the tiled engine keeps: the deepest stage sees ~2**depth px per feature, and two 3x3 convs
    # there plus the decoder add a few more; beyond ~2**(depth+2) px the influence on a pixel is negligible.
    return 2 ** (cfg.encoder_depth + 2)


@register_model(
    "unet",
    task="classification",
    description="segmentation-models-pytorch U-Net (any encoder, random init, N input bands)",
    inputs="image tiles",
    config_cls=UNetConfig,
    receptive_field=_receptive_field,
    size_multiple=32,
)
def build_unet(cfg: UNetConfig) -> nn.Module:
    import segmentation_models_pytorch as smp

    depth = int(cfg.encoder_depth)
    net = smp.Unet(
        encoder_name=cfg.encoder,
        encoder_depth=depth,
        encoder_weights=None,  # no pretrained download: hyperspectral inputs have their own band count anyway
        decoder_channels=tuple(cfg.decoder_channels)[:depth],
        in_channels=int(cfg.in_bands),
        classes=int(cfg.num_classes),
    )
    # ResNet encoders keep their deeper stages even when encoder_depth leaves them unused: drop them so every
    # parameter trains and checkpoints carry no dead weights.
    for k in range(depth, 5):
        if hasattr(net.encoder, f"layer{k}"):
            setattr(net.encoder, f"layer{k}", nn.Identity())
    return net
