"""HSDT (Lai et al., ICCV 2023), official repository Zeqiang-Lai/HSDT: ``hsdt_8``, ``hsdt`` and ``hsdt_deep``.

hsikit's HSDT keeps the official module names, so tensors map one to one. The configuration is read from the
shapes: ``width`` from the head's depth-wise convolution, ``depth`` from the encoder's layers, the down-sampling
layers from the strided 3-D convolutions, and Dq (``in_bands``) from the guided attention's projection.
"""

from __future__ import annotations

import re
from typing import Any

from hsikit.errors import InputError
from hsikit.weights.base import Importer, Tensors, register_importer

_OFFICIAL_NAMES = {"s": "hsdt_8", "m": "hsdt", "l": "hsdt_deep"}


def infer(t: Tensors) -> tuple[dict[str, Any], list[str]]:
    from hsikit.models.hsdt import HSDT_VARIANTS

    try:
        width = int(t["head.conv.dw_conv.0.weight"].shape[0])
        in_bands = int(t["head.attn.attn.attn_proj.weight"].shape[0])
    except KeyError as e:
        raise InputError(f"not an HSDT state dict: no {e.args[0]}") from None
    layers = sorted({int(m.group(1)) for k in t if (m := re.match(r"encoder\.layers\.(\d+)\.", k))})
    down = [i for i in layers if f"encoder.layers.{i}.conv.weight" in t]
    cfg: dict[str, Any] = {"in_bands": in_bands}
    variant = next((v for v, p in HSDT_VARIANTS.items()
                    if (p["width"], p["depth"], tuple(p["downsample_at"])) == (width, len(layers), tuple(down))), None)
    if variant is not None:
        cfg["variant"] = variant
        what = f"HSDT-{variant.upper()} (official {_OFFICIAL_NAMES[variant]})"
    else:
        cfg.update(width=width, depth=len(layers), downsample_at=down)
        what = "HSDT of a configuration the paper does not publish"
    return cfg, [f"{what}: width {width}, depth {len(layers)}, down-sampling at layers {down}, guided attention "
                 f"for {in_bands} bands"]


def convert(t: Tensors, cfg: dict[str, Any]) -> tuple[Tensors, list[str]]:
    return {k: v for k, v in t.items()}, []


IMPORTER = register_importer(Importer(
    arch="hsdt",
    official="https://github.com/Zeqiang-Lai/HSDT",
    paper="Lai, Yan, Fu: Hybrid Spectral Denoising Transformer with Guided Attention, ICCV 2023",
    task="denoising",
    infer=infer,
    convert=convert,
    band_grid="icvl",
    notes=("the published models are trained on ICVL (31 bands, 400-700 nm) with values scaled to [0, 1]",),
))
