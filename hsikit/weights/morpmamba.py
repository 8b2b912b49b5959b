"""MorpMamba, official Keras notebook (mahmad000/MorpMamba, "Spatial-Spectral MorpMamba.ipynb"), ``save_weights``.

The notebook's ``SSMambaModel`` is hsikit's MorpMamba with ``ssm="recurrence"``, ``attention="cross"``,
``center_mode="row"`` and ``morph="conv"``. Its weights file (Keras 3 HDF5 layout) holds one group per attribute
path, datasets ``vars/0`` (kernel) and ``vars/1`` (bias). Morphology is one 1-channel ``DepthwiseConv2D`` per input
channel (kernel ``(k, k, 1, 1)``), numbered in creation (= channel) order; hsikit keeps them as one grouped conv.

The configuration comes from the shapes: ``in_bands`` (PCA components) from the 1x1 conv's input (2C), ``dim`` from
its output, ``patch`` from the number of spectral-morphology kernels (one per patch column), ``kernel`` from the
depthwise kernels, ``state_dim`` from the state transition and ``num_classes`` from the classifier. The head count
is not in the weights: the notebook's 4 is assumed.
"""

from __future__ import annotations

import re
from typing import Any

from hsikit.errors import InputError
from hsikit.weights.base import Importer, Tensors, register_importer

NOTEBOOK_HEADS = 4  # SSMambaModel(out_channels=64, num_heads=4, ...) in the notebook; no tensor records it

_MORPH = {  # official morphology layer -> hsikit grouped conv
    "erosion_layer_spatial": "tokens.spatial.erode.weight",
    "dilation_layer_spatial": "tokens.spatial.dilate.weight",
    "erosion_layer_spectral": "tokens.spectral.erode.weight",
    "dilation_layer_spectral": "tokens.spectral.dilate.weight",
}
_DENSE = {  # official Dense layer -> hsikit Linear
    "multi_head_attention/query": "attention.q",
    "multi_head_attention/key": "attention.k",
    "multi_head_attention/value": "attention.v",
    "layers/spectral_spatial_feature_enhancement/spatial_gate/layers/dense": "gate.gate_spatial",
    "layers/spectral_spatial_feature_enhancement/spectral_gate/layers/dense": "gate.gate_spectral",
    "state_space_model/state_transition": "ssm.A",
    "state_space_model/state_update": "ssm.B",
    "layers/dense": "hidden",
    "layers/dense_1": "classifier",
}
_CONV = "token_generation/conv"
_DEPTHWISE = re.compile(r"token_generation/(\w+)/depthwise_conv/depthwise_conv2d(?:_(\d+))?/vars/0$")
#: optimizer state some Keras versions write beside the weights; inference does not need it
_OPTIMIZER_PREFIX = "optimizer/"


def _need(t: Tensors, key: str) -> Any:
    if key not in t:
        raise InputError(f"not a MorpMamba notebook weights file: no dataset {key}")
    return t[key]


def _morph_kernels(t: Tensors) -> dict[str, list[str]]:
    """The depthwise kernels of each morphology layer, in channel order (by their Keras numbering)."""
    found: dict[str, list[tuple[int, str]]] = {name: [] for name in _MORPH}
    for key in t.keys():
        m = _DEPTHWISE.match(key)
        if m and m.group(1) in found:
            found[m.group(1)].append((int(m.group(2) or 0), key))
    return {name: [k for _, k in sorted(v)] for name, v in found.items()}


def infer(t: Tensors) -> tuple[dict[str, Any], list[str]]:
    from hsikit.models.morpmamba import HEAD_UNITS

    conv = _need(t, f"{_CONV}/vars/0")
    transition = _need(t, "state_space_model/state_transition/vars/0")
    classifier = _need(t, "layers/dense_1/vars/0")
    hidden = _need(t, "layers/dense/vars/0")
    kernels = _morph_kernels(t)
    if not kernels["erosion_layer_spectral"] or not kernels["erosion_layer_spatial"]:
        raise InputError("not a MorpMamba notebook weights file: no token_generation/erosion_layer_* depthwise "
                         "kernels")
    if conv.dim() != 4 or conv.shape[2] % 2:
        raise InputError(f"{_CONV}/vars/0 is {tuple(conv.shape)}; the notebook's 1x1 conv is (1, 1, 2C, D)")
    if tuple(hidden.shape)[1:] != (HEAD_UNITS,):
        raise InputError(f"layers/dense/vars/0 is {tuple(hidden.shape)}; the notebook's head has {HEAD_UNITS} units")
    first_key = kernels["erosion_layer_spectral"][0]
    first = t[first_key]
    if first.dim() != 4 or first.shape[0] != first.shape[1]:
        raise InputError(f"{first_key} is {tuple(first.shape)}; the notebook's depthwise kernels are (k, k, 1, 1)")
    in_bands, dim = int(conv.shape[2]) // 2, int(conv.shape[3])
    cfg: dict[str, Any] = {
        "in_bands": in_bands,
        "num_classes": int(classifier.shape[1]),
        "patch": len(kernels["erosion_layer_spectral"]),
        "dim": dim,
        "heads": NOTEBOOK_HEADS,
        "state_dim": int(transition.shape[0]),
        "kernel": int(first.shape[0]),
        "ssm": "recurrence",
        "attention": "cross",
        "center_mode": "row",
        "morph": "conv",
        "ssm_norm": False,
    }
    notes = [
        f"MorpMamba, official notebook variant (linear-recurrence SSM, cross attention, centre-row gates): "
        f"{in_bands} PCA components, {cfg['patch']}x{cfg['patch']} windows, {cfg['kernel']}x{cfg['kernel']} "
        f"morphology, dim {dim}, state {cfg['state_dim']}, {cfg['num_classes']} classes",
        f"heads {NOTEBOOK_HEADS} assumed (the notebook's; not recorded in the weights; --set heads=N to change)",
        "the notebook fits a whitened PCA on the scene it classifies; the weights do not include it",
    ]
    return cfg, notes


def _take(t: Tensors, key: str, shape: tuple[int, ...]) -> Any:
    """``t[key]``, refused in one line naming the dataset when it is missing or its shape is not ``shape``."""
    if key not in t:
        raise InputError(f"no dataset {key} {shape} in the file; is it another configuration or not the MorpMamba "
                         "notebook's weights?")
    v = t[key]
    if tuple(v.shape) != shape:
        raise InputError(f"{key} is {tuple(v.shape)} in the file, {shape} for this configuration; is it another "
                         "configuration? (--set overrides the inferred one)")
    return v


def convert(t: Tensors, cfg: dict[str, Any]) -> tuple[Tensors, list[str]]:
    import torch

    from hsikit.models.morpmamba import HEAD_UNITS

    c, p, d, k = int(cfg["in_bands"]), int(cfg.get("patch", 4)), int(cfg.get("dim", 64)), int(cfg.get("kernel", 5))
    s, n_cls = int(cfg.get("state_dim", 128)), int(cfg["num_classes"])
    out: Tensors = {}
    kernels = _morph_kernels(t)
    channels = {"erosion_layer_spatial": c, "dilation_layer_spatial": c,
                "erosion_layer_spectral": p, "dilation_layer_spectral": p}
    for layer, target in _MORPH.items():
        keys = kernels[layer][: channels[layer]]  # surplus kernels stay unread and are named by the import
        if len(keys) < channels[layer]:
            raise InputError(f"token_generation/{layer} has {len(keys)} depthwise kernels, {channels[layer]} for "
                             "this configuration; is it another configuration? (--set overrides the inferred one)")
        # Keras depthwise kernel (kh, kw, in=1, multiplier=1) -> torch grouped conv (out, in/groups=1, kh, kw)
        out[target] = torch.stack([_take(t, key, (k, k, 1, 1))[:, :, 0, 0] for key in keys])[:, None]
    # Keras Conv2D kernel (kh, kw, in, out) -> torch (out, in, kh, kw)
    out["tokens.proj.weight"] = _take(t, f"{_CONV}/vars/0", (1, 1, 2 * c, d)).permute(3, 2, 0, 1)
    out["tokens.proj.bias"] = _take(t, f"{_CONV}/vars/1", (d,))
    widths = {"attention.q": (d, d), "attention.k": (d, d), "attention.v": (d, d), "gate.gate_spatial": (d, d),
              "gate.gate_spectral": (d, d), "ssm.A": (s, s), "ssm.B": (d, s), "hidden": (s, HEAD_UNITS),
              "classifier": (HEAD_UNITS, n_cls)}
    for layer, target in _DENSE.items():
        n_in, n_out = widths[target]
        # Keras Dense kernel (in, out) -> torch Linear weight (out, in)
        out[f"{target}.weight"] = _take(t, f"{layer}/vars/0", (n_in, n_out)).T
        out[f"{target}.bias"] = _take(t, f"{layer}/vars/1", (n_out,))
    dropped = [key for key in t.keys() if key.startswith(_OPTIMIZER_PREFIX)]
    return {key: v.contiguous() for key, v in out.items()}, dropped


#: the classes of the notebook's published run (Houston 2013, IEEE GRSS data fusion contest)
HOUSTON_2013 = ("Healthy grass", "Stressed grass", "Synthetic grass", "Trees", "Soil", "Water", "Residential",
                "Commercial", "Road", "Highway", "Railway", "Parking Lot 1", "Parking Lot 2", "Tennis Court",
                "Running Track")


def class_names(cfg: dict[str, Any]) -> list[str]:
    """Houston 2013's names for a 15-class model, else class_1..K."""
    k = int(cfg["num_classes"])
    return list(HOUSTON_2013) if k == len(HOUSTON_2013) else [f"class_{i}" for i in range(1, k + 1)]


def preprocessing(cfg: dict[str, Any]) -> dict[str, Any]:
    """The notebook's input: a whitened PCA with as many components as the network's bands, fitted on the scene
    it classifies (no scaling before it); left unfitted so each scene gets its own."""
    from hsikit.preprocess.chain import Chain

    return Chain.from_options(scale=False, pca=int(cfg["in_bands"]), pca_whiten=True).to_dict()


IMPORTER = register_importer(Importer(
    arch="morpmamba",
    official="https://github.com/mahmad000/MorpMamba",
    paper="Ahmad et al.: Spatial-spectral morphological mamba for hyperspectral image classification, "
          "Neurocomputing 636 (2025) 129995",
    task="classification",
    infer=infer,
    convert=convert,
    notes=("the notebook's published run is Houston 2013 (15 classes) on 15 whitened PCA components of the scene, "
           "4x4 windows; the PCA is fitted on each scene at run time and not part of the weights",),
    class_names=class_names,
    preprocessing=preprocessing,
))
