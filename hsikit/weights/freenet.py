"""FreeNet (Zheng et al., FPGA, TGRS 2020), official repository Z-Zheng/FreeNet trained with Z-Zheng/SimpleCV.

The official network keeps its layers in one ``feature_ops`` list (stem, then per stage: the repeated SE + conv
blocks, an ``Identity`` that taps the level, and the stride-2 convolution to the next stage), ``reduce_1x1convs``
(the laterals), ``fuse_3x3convs`` and ``cls_pred_conv``. hsikit's FreeNet names the same layers ``stem``,
``stages``, ``downs``, ``laterals``, ``fuse`` and ``classifier``.

The official decoder reverses the laterals (deepest first), fuses the deepest with ``fuse_3x3convs[0]`` and then
the level above with ``fuse_3x3convs[i]`` for i = 0, 1, 2: the first fuse conv runs twice (at the two deepest
levels) and ``fuse_3x3convs[3]`` never runs. hsikit's decoder has one fuse conv per level, so ``fuse_3x3convs.0``
is copied into both ``fuse.3`` and ``fuse.2``, ``.1`` goes to ``fuse.1``, ``.2`` to ``fuse.0``, and ``.3`` is
dropped (it has no effect on the output).

Inputs: the official data loaders z-score every band with the mean and (population) standard deviation of all
pixels of the scene being classified, then zero-pad bottom/right to a multiple of 16.
"""

from __future__ import annotations

import re
from typing import Any

from hsikit.errors import InputError
from hsikit.weights.base import Importer, Tensors, register_importer

#: the official configurations (``configs/freenet/*.py``): (in_channels, num_classes) -> config name, scene
_OFFICIAL = {
    (103, 9): ("freenet_1_0_pavia", "Pavia University"),
    (204, 16): ("freenet_1_0_salinas", "Salinas"),
    (144, 15): ("freenet_1_0_grss2013", "GRSS 2013 Houston"),
}
#: the Pavia University ground truth's classes, labels 1..9 (the network's outputs 0..8)
PAVIA_UNIVERSITY_CLASSES = ("Asphalt", "Meadows", "Gravel", "Trees", "Painted metal sheets", "Bare Soil",
                            "Bitumen", "Self-Blocking Bricks", "Shadows")
_STAGE_OPS = (1, 4, 7, 10)  # feature_ops index of each stage's repeated blocks
_DOWN_OPS = (3, 6, 9)  # feature_ops index of the stride-2 convolution after stages 1..3
_UNUSED = ("fuse_3x3convs.3.weight", "fuse_3x3convs.3.bias")


def _shape(t: Tensors, key: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in t[key].shape)
    except KeyError:
        raise InputError(f"not a FreeNet state dict: no {key}") from None


def infer(t: Tensors) -> tuple[dict[str, Any], list[str]]:
    in_bands = _shape(t, "feature_ops.0.0.weight")[1]
    num_classes = _shape(t, "cls_pred_conv.weight")[0]
    decoder_width = _shape(t, "reduce_1x1convs.0.weight")[0]
    channels = [_shape(t, f"reduce_1x1convs.{s}.weight")[1] for s in range(4)]
    blocks = []
    for op in _STAGE_OPS:
        pat = re.compile(rf"feature_ops\.{op}\.(\d+)\.0\.seq\.0\.weight")
        blocks.append(len({m.group(1) for k in t if (m := pat.fullmatch(k))}))
    # r (GroupNorm groups = SE reduction = width rounding) is not stored: the SE hidden width C // r gives it,
    # and every official stage width is a multiple of r
    hidden = [(c, _shape(t, f"feature_ops.{op}.0.0.seq.0.weight")[0]) for c, op, n in zip(channels, _STAGE_OPS, blocks)
              if n]
    r = hidden[0][0] // hidden[0][1] if hidden else 16
    if r < 1 or any(c % r or c // r != h for c, h in hidden):
        raise InputError("FreeNet: the spectral attention widths "
                         f"{', '.join(f'{c}->{h}' for c, h in hidden)} share no reduction factor r")
    # hsikit rounds int(width * r / 16) down to a multiple of r; 16 * C / r gives back C exactly
    cfg: dict[str, Any] = {"in_bands": in_bands, "num_classes": num_classes,
                           "widths": [16 * c // r for c in channels], "decoder_width": decoder_width,
                           "num_blocks": blocks, "reduction_ratio": r / 16}
    official = _OFFICIAL.get((in_bands, num_classes))
    if official and (channels, decoder_width, blocks, r) == ([96, 128, 192, 256], 128, [1, 1, 1, 1], 16):
        what = f"FreeNet of the official {official[0]} ({official[1]})"
    else:
        what = "FreeNet of a configuration the official repository does not publish"
    return cfg, [
        f"{what}: {in_bands} bands, {num_classes} classes, widths {'/'.join(map(str, channels))}, decoder "
        f"{decoder_width}, blocks {'/'.join(map(str, blocks))}, r {r}",
        "the official decoder runs fuse_3x3convs.0 at the two deepest levels and never runs fuse_3x3convs.3: "
        "fuse_3x3convs.0 fills fuse.3 and fuse.2, fuse_3x3convs.3 is dropped",
        "inputs: each band z-scored with the mean and std of all pixels of the scene (official data loaders)",
    ]


def _names(cfg: dict[str, Any]) -> dict[str, str]:
    """hsikit tensor name -> official tensor name."""
    m: dict[str, str] = {}

    def layer(dst: str, src: str) -> None:
        m[f"{dst}.weight"], m[f"{dst}.bias"] = f"{src}.weight", f"{src}.bias"

    layer("stem.0", "feature_ops.0.0")
    layer("stem.1", "feature_ops.0.1")
    for s, op in enumerate(_STAGE_OPS):
        for j in range(int(cfg["num_blocks"][s])):
            layer(f"stages.{s}.{2 * j}.fc1", f"feature_ops.{op}.{j}.0.seq.0")
            layer(f"stages.{s}.{2 * j}.fc2", f"feature_ops.{op}.{j}.0.seq.2")
            layer(f"stages.{s}.{2 * j + 1}.0", f"feature_ops.{op}.{j}.1.0")
            layer(f"stages.{s}.{2 * j + 1}.1", f"feature_ops.{op}.{j}.1.1")
    for s, op in enumerate(_DOWN_OPS):
        layer(f"downs.{s}.0", f"feature_ops.{op}.0")
    for s in range(4):
        layer(f"laterals.{s}", f"reduce_1x1convs.{s}")
    for level, official in ((3, 0), (2, 0), (1, 1), (0, 2)):
        layer(f"fuse.{level}", f"fuse_3x3convs.{official}")
    layer("classifier", "cls_pred_conv")
    return m


def convert(t: Tensors, cfg: dict[str, Any]) -> tuple[Tensors, list[str]]:
    from hsikit.models.registry import create_model

    expected = create_model("freenet", **cfg).state_dict()
    out: Tensors = {}
    for dst, src in _names(cfg).items():
        if src not in t:
            continue  # check_complete names what stays empty
        v = t[src]
        want = tuple(expected[dst].shape) if dst in expected else None
        if want is not None and tuple(v.shape) != want:
            raise InputError(f"FreeNet: {src} is {tuple(v.shape)} in the file, hsikit's {dst} needs {want}; is it "
                             "another configuration? (--set overrides the inferred one)")
        out[dst] = v.clone()
    return out, [k for k in _UNUSED if k in t]


def class_names(cfg: dict[str, Any]) -> list[str]:
    """Names of the outputs 0..K-1: Pavia University's for the 103-band 9-class model, else class_1..K."""
    k = int(cfg["num_classes"])
    if (int(cfg["in_bands"]), k) == (103, 9):
        return list(PAVIA_UNIVERSITY_CLASSES)
    return [f"class_{i}" for i in range(1, k + 1)]


def band_grid_for(cfg: dict[str, Any]) -> str | None:
    """The band grid the weights were trained on, where the configuration fixes it."""
    return "pavia-university" if (int(cfg["in_bands"]), int(cfg["num_classes"])) == (103, 9) else None


def preprocessing() -> dict[str, Any]:
    """The official input values as an (unfitted) hsikit chain: per-band z-score with the statistics of the scene
    being classified, then invalid pixels set to 0 (the value the official zero padding gives)."""
    return {"steps": [{"op": "normalize", "params": {}}, {"op": "fill_invalid", "params": {"value": 0.0}}],
            "input_bands": None}


IMPORTER = register_importer(Importer(
    arch="freenet",
    official="https://github.com/Z-Zheng/FreeNet",
    paper="Zheng, Zhong, Ma, Zhang: FPGA: Fast Patch-Free Global Learning Framework for Fully End-to-End "
          "Hyperspectral Image Classification, IEEE TGRS 2020",
    task="classification",
    infer=infer,
    convert=convert,
    band_grid=band_grid_for,
    class_names=class_names,
    preprocessing=lambda cfg: preprocessing(),
    notes=("published configurations: Pavia University (103 bands, 9 classes), Salinas (204, 16), GRSS 2013 "
           "(144, 15); trained and applied on one scene, z-scored with that scene's own band statistics",),
))
