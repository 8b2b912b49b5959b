"""SpectralGPT MAE (Hong et al., TPAMI 2024), official repository danfenghong/IEEE_TPAMI_SpectralGPT:
``models_mae_spectral.mae_vit_base_patch8_96`` (SpectralGPT.pth) and ``mae_vit_base_patch8_128`` (SpectralGPT+.pth).

hsikit's MAE holds the official encoder under ``encoder.``: ``patch_embed.proj`` is ``encoder.patch_embed``, the
separable tables ``pos_embed_spatial``/``pos_embed_temporal`` are ``encoder.pos_embed_spatial``/
``encoder.pos_embed_spectral`` (the official "temporal" axis is the spectral groups), ``blocks.i`` and ``norm`` move
under ``encoder.``; timm's ``mlp.fc1``/``mlp.fc2`` are ``mlp.0``/``mlp.2``. The decoder keeps its names except the
tables ``decoder_pos_embed_spatial``/``_temporal`` -> ``decoder_pos_spatial``/``decoder_pos_spectral``. Token order
(group-major, then row-major) and the per-token value order (band in group, row, col) are the official ones, so
no tensor is reshaped.

The configuration comes from the shapes: width, group size u and patch size p from the 3-D patch projection
``(D, 1, u, p, p)``; the number of spectral groups from the spectral table (bands = groups x u); the image size
from the spatial table (cells = (img/p)^2); depths from the block indices; decoder width from ``decoder_embed``;
MLP ratio from ``fc1``. Head counts are not in the shapes: they are the official factories' (12 encoder heads for
width 768, 16 for 1024 and 1280; decoder 16), else width / 64.
"""

from __future__ import annotations

import math
import re
from typing import Any

from hsikit.errors import InputError
from hsikit.weights.base import Importer, Tensors, register_importer

#: (encoder width, depth) -> (official factory size, encoder heads); the decoder uses the constructor's 16 heads
_OFFICIAL_SIZES = {(768, 12): ("base", 12), (1024, 24): ("large", 16), (1280, 32): ("huge", 16)}
_OFFICIAL_DECODER_HEADS = 16
#: what each image size's layout is in the released files
_RELEASES = {96: "SpectralGPT.pth layout (stage 1, fMoW-Sentinel)",
             128: "SpectralGPT+.pth layout (stage 2, BigEarthNet)"}

#: inside a block: official name -> hsikit name (timm's Mlp is an nn.Sequential in hsikit)
_BLOCK_PARTS = {"norm1": "norm1", "norm2": "norm2", "attn.q": "attn.q", "attn.k": "attn.k", "attn.v": "attn.v",
                "attn.proj": "attn.proj", "mlp.fc1": "mlp.0", "mlp.fc2": "mlp.2"}
_SINGLE = {
    "pos_embed_spatial": "encoder.pos_embed_spatial",
    "pos_embed_temporal": "encoder.pos_embed_spectral",
    "decoder_pos_embed_spatial": "decoder_pos_spatial",
    "decoder_pos_embed_temporal": "decoder_pos_spectral",
    "mask_token": "mask_token",
}
_LAYERS = {"patch_embed.proj": "encoder.patch_embed", "norm": "encoder.norm", "decoder_embed": "decoder_embed",
           "decoder_norm": "decoder_norm", "decoder_pred": "decoder_pred"}
_BLOCK_KEY = re.compile(r"(blocks|decoder_blocks)\.(\d+)\.(.+)\.(weight|bias)")


def hsikit_name(key: str) -> str | None:
    """The hsikit MAE tensor an official key fills, or None if it has no place in hsikit's architecture."""
    if key in _SINGLE:
        return _SINGLE[key]
    layer, _, param = key.rpartition(".")
    if param in ("weight", "bias") and layer in _LAYERS:
        return f"{_LAYERS[layer]}.{param}"
    m = _BLOCK_KEY.fullmatch(key)
    if m and m.group(3) in _BLOCK_PARTS:
        where = "encoder.blocks" if m.group(1) == "blocks" else "decoder_blocks"
        return f"{where}.{m.group(2)}.{_BLOCK_PARTS[m.group(3)]}.{m.group(4)}"
    return None


def _count(t: Tensors, prefix: str) -> int:
    return len({int(m.group(1)) for k in t if (m := re.match(rf"{prefix}\.(\d+)\.", k))})


def infer(t: Tensors) -> tuple[dict[str, Any], list[str]]:
    from hsikit.models.spectralgpt import SPECTRALGPT_BANDS, SPECTRALGPT_VARIANTS

    need = ("patch_embed.proj.weight", "pos_embed_spatial", "pos_embed_temporal", "decoder_embed.weight",
            "blocks.0.mlp.fc1.weight")
    missing = next((k for k in need if k not in t), None)
    if missing is not None:
        raise InputError(f"not a SpectralGPT MAE state dict (models_mae_spectral): no {missing}")
    proj = tuple(t["patch_embed.proj.weight"].shape)
    if len(proj) != 5 or proj[1] != 1 or proj[3] != proj[4]:
        raise InputError(f"patch_embed.proj.weight is {proj}; SpectralGPT's 3-D patch projection is "
                         "(width, 1, bands per group, patch, patch)")
    width, _, u, p, _ = proj
    groups = int(t["pos_embed_temporal"].shape[1])
    cells = int(t["pos_embed_spatial"].shape[1])
    side = math.isqrt(cells)
    if side * side != cells:
        raise InputError(f"pos_embed_spatial holds {cells} cells, not a square grid")
    img = side * p
    depth, dec_depth = _count(t, "blocks"), _count(t, "decoder_blocks")
    dec_width = int(t["decoder_embed.weight"].shape[0])
    mlp_ratio = t["blocks.0.mlp.fc1.weight"].shape[0] / width
    n_bands = groups * u

    shape = {"embed_dim": width, "depth": depth, "decoder_embed_dim": dec_width, "decoder_depth": dec_depth}
    variant = next((v for v, s in SPECTRALGPT_VARIANTS.items() if all(s[k] == shape[k] for k in shape)), None)
    cfg: dict[str, Any] = {"variant": variant or "base", "group_size": u, "patch_size": p, "img_size": img,
                           # the official data loaders scale every image and band to [0, 1] (min-max)
                           "input_scaling": "minmax"}
    if n_bands != len(SPECTRALGPT_BANDS):
        cfg["bands"] = [f"band{i + 1}" for i in range(n_bands)]
    if mlp_ratio != 4.0:
        cfg["mlp_ratio"] = mlp_ratio
    official = _OFFICIAL_SIZES.get((width, depth))
    if variant is not None:
        heads = SPECTRALGPT_VARIANTS[variant]
        enc_heads, dec_heads = heads["num_heads"], heads["decoder_num_heads"]
        how = f"the official {official[0]} factory's" if official else f"hsikit's {variant} variant's"
    else:
        enc_heads = official[1] if official else max(1, width // 64)
        dec_heads = _OFFICIAL_DECODER_HEADS if dec_width % _OFFICIAL_DECODER_HEADS == 0 else max(1, dec_width // 64)
        how = f"the official {official[0]} factory's" if official else "assumed width/64, not in the shapes"
        cfg.update(shape, num_heads=enc_heads, decoder_num_heads=dec_heads)

    if official:
        what = f"SpectralGPT MAE {official[0]}" + (f", {_RELEASES[img]}" if official[0] == "base" and p == 8
                                                  and img in _RELEASES else "")
    else:
        what = f"SpectralGPT MAE of hsikit's {variant} size (not published)" if variant else \
            "SpectralGPT MAE of a size the paper does not publish"
    bands = (f"SpectralGPT's 12 Sentinel-2 bands {', '.join(SPECTRALGPT_BANDS)}" if n_bands == len(SPECTRALGPT_BANDS)
             else f"{n_bands} bands named band1..band{n_bands} (--set bands=[...] names them)")
    return cfg, [
        f"{what}: encoder {depth} x {width} ({enc_heads} heads, {how}), decoder {dec_depth} x {dec_width} "
        f"({dec_heads} heads), MLP ratio {mlp_ratio:g}",
        f"3-D tokens of {u} bands x {p} x {p} px: {groups} spectral groups = {bands}; position tables for "
        f"{img} px ({side} x {side} cells)",
        "inputs scaled per image and band to [0, 1] (input_scaling=minmax), as the official data loaders do",
    ]


def convert(t: Tensors, cfg: dict[str, Any]) -> tuple[Tensors, list[str]]:
    out: Tensors = {}
    for key in list(t.keys()):
        name = hsikit_name(key)
        if name is not None:  # an unnamed key stays unread: the import then fails naming it
            out[name] = t[key]
    # the official MAE stores no buffer hsikit recomputes (no sine-cosine tables, no masks)
    return out, []


IMPORTER = register_importer(Importer(
    arch="spectralgpt",
    model="spectralgpt-base",
    band_grid=lambda cfg: "sentinel2-12" if "bands" not in cfg else None,  # the default: the official 12 bands
    official="https://github.com/danfenghong/IEEE_TPAMI_SpectralGPT",
    paper="Hong et al.: SpectralGPT: Spectral Remote Sensing Foundation Model, IEEE TPAMI 46(8), 2024",
    task="masked-autoencoding",
    infer=infer,
    convert=convert,
    value_scaling="image-band-minmax",
    notes=("the released weights are trained on Sentinel-2 L1C (fMoW-Sentinel, then BigEarthNet) with B10 dropped, "
           "each image and band min-max scaled to [0, 1]; `train segmenter|scene-classifier --init` uses the "
           "encoder",),
))
