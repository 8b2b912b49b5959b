"""ESSAformer (Zhang et al., ICCV 2023), official repository Rexzhan/ESSAformer: ``ESSA(inch, dim, upscale)``.

The official network keeps its trunk under ``blockup``: ``convup`` is the high-resolution ESSA unit and
``convdown`` the low-resolution one (hsikit's ``unit_hr`` and ``unit_lo``), ``convupsample``/``convdownsample``
the shared resamplers. Inside a unit, ``convu``/``convd`` is the conv branch (hsikit's ``ffn``, same Sequential
indices), ``attn.lnqkv`` the fused Q/K/V projection (``attn.qkv``, Q, K, V in that order in both) and ``attn.ln``
the output projection (``attn.proj``). Every tensor maps one to one; nothing is split, fused or recomputed.

The configuration comes from the shapes: ``in_bands`` and ``dim`` from ``conv_first``, ``scale`` from the
up-sampler (one conv per x2 stage with 4·dim outputs, or a single conv with 9·dim outputs for x3, none for x1).
"""

from __future__ import annotations

import re
from typing import Any

from hsikit.errors import InputError
from hsikit.weights.base import Importer, Tensors, register_importer

#: official unit name -> hsikit unit name
_UNITS = {"convup": "unit_hr", "convdown": "unit_lo"}
#: official conv-branch Sequential of each unit
_BRANCH = {"convup": "convu", "convdown": "convd"}
#: official sub-module inside a unit -> hsikit sub-module (the conv branch is handled by index)
_UNIT_PARTS = {"norm": "norm", "attn.lnqkv": "attn.qkv", "attn.ln": "attn.proj"}
_RESAMPLERS = {"convupsample": "upsample", "convdownsample": "downsample"}

#: the grid of the dataset the paper trained each band count on (the one released model is Chikusei x4)
_GRID_BY_BANDS = {31: "cave", 128: "chikusei"}


def hsikit_name(key: str) -> str | None:
    """hsikit's name for the official tensor ``key``, or None when hsikit's ESSAformer has no such tensor."""
    m = re.fullmatch(r"(conv_first|conv_last)\.(weight|bias)", key)
    if m:
        return key
    m = re.fullmatch(r"blockup\.(convupsample|convdownsample)\.(\d+)\.(weight|bias)", key)
    if m:
        return f"{_RESAMPLERS[m.group(1)]}.{m.group(2)}.{m.group(3)}"
    m = re.fullmatch(r"blockup\.(convup|convdown)\.(.+)\.(weight|bias)", key)
    if not m:
        return None
    unit, part, kind = m.groups()
    branch = re.fullmatch(rf"{_BRANCH[unit]}\.(0|3|6)", part)
    if branch:
        return f"{_UNITS[unit]}.ffn.{branch.group(1)}.{kind}"
    if part in _UNIT_PARTS:
        return f"{_UNITS[unit]}.{_UNIT_PARTS[part]}.{kind}"
    return None


def default_band_grid(cfg: dict[str, Any]) -> str | None:
    """The band grid the paper's data give ``cfg``'s band count (CAVE for 31, Chikusei for 128), else None."""
    return _GRID_BY_BANDS.get(int(cfg.get("in_bands", 0)))


def infer(t: Tensors) -> tuple[dict[str, Any], list[str]]:
    try:
        first = t["conv_first.weight"]
    except KeyError:
        raise InputError("not an ESSAformer state dict: no conv_first.weight") from None
    if len(first.shape) != 4 or not any(k.startswith("blockup.") for k in t):
        raise InputError(f"not an ESSAformer state dict: conv_first.weight is {tuple(first.shape)} and there is "
                         "no blockup trunk")
    dim, in_bands = int(first.shape[0]), int(first.shape[1])
    stages = sorted(int(m.group(1)) for k in t if (m := re.fullmatch(r"blockup\.convupsample\.(\d+)\.weight", k)))
    if not stages:
        scale = 1
    else:
        ratio = int(t[f"blockup.convupsample.{stages[0]}.weight"].shape[0]) // max(dim, 1)
        if ratio == 9 and len(stages) == 1:
            scale = 3
        elif ratio == 4:
            scale = 2 ** len(stages)
        else:
            raise InputError(f"blockup.convupsample.{stages[0]}.weight has {ratio}x dim outputs and there are "
                             f"{len(stages)} up-sampling stage(s); ESSAformer uses 4x per x2 stage or one 9x for x3")
    cfg: dict[str, Any] = {"in_bands": in_bands, "dim": dim, "scale": scale}
    grid = default_band_grid(cfg)
    notes = [f"ESSAformer x{scale} for {in_bands} bands, width {dim} (official ESSA(inch={in_bands}, dim={dim}, "
             f"upscale={scale}))" + (" — the published Chikusei x4 model" if (in_bands, dim, scale) == (128, 256, 4)
                                     else "")]
    if grid is None:
        notes.append(f"{in_bands} bands match no dataset of the paper; pass --wavelengths with the training data's "
                     "bands")
    return cfg, notes


def convert(t: Tensors, cfg: dict[str, Any]) -> tuple[Tensors, list[str]]:
    out: Tensors = {}
    expected = _expected_shapes(cfg)
    for key in list(t.keys()):
        name = hsikit_name(key)
        if name is None or name not in expected:
            continue  # left unread: the import fails naming the official tensor
        value = t[key]
        want = expected[name]
        if tuple(value.shape) != want:
            raise InputError(f"{key} (hsikit {name}) is {tuple(value.shape)} in the file, {want} in the "
                             "architecture; is it another configuration? (--set overrides the inferred one)")
        out[name] = value
    return out, []


def _expected_shapes(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """hsikit's tensor shapes for ``cfg``, from a model built on the meta device (no memory, no values)."""
    import torch

    from hsikit.models.registry import create_model

    with torch.device("meta"):
        net = create_model("essaformer", **cfg)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


IMPORTER = register_importer(Importer(
    arch="essaformer",
    official="https://github.com/Rexzhan/ESSAformer",
    paper="Zhang, Zhang, Zhang, Guo, Gao, Zhang: ESSAformer: Efficient Transformer for Hyperspectral Image "
          "Super-resolution, ICCV 2023",
    task="super-resolution",
    infer=infer,
    convert=convert,
    band_grid=default_band_grid,
    notes=("the one released model is Chikusei x4 (128 bands, dim 256); the paper's data are divided by their "
           "maximum (SSPSR protocol), hsikit maps each scene's min-max onto [0, 1]",
           "the attention normalises K over all tokens: tiled inference differs slightly from whole-image "
           "inference"),
))
