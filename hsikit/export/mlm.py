"""STAC items of exported models with the Machine Learning Model extension (MLM v1.3.0).

The item describes the ONNX file as its ``mlm:model`` asset: the input bands by name (STAC 1.1 ``bands`` with
their wavelengths, through the eo extension), the value scaling the network expects (the per-band ``offset``
left outside when the preprocessing folded in, see :mod:`hsikit.export.fold`), the output classes with names and
colours (classification extension), the framework, and under ``hsikit:`` fields what hsikit needs beyond MLM
(tile size and overlap, the preprocessing, the checkpoint's provenance). :func:`checkpoint_mlm_item` describes a
checkpoint (.safetensors) the same way, for catalogues of outputs. Plain data; no torch, no pystac.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hsikit._version import __version__
from hsikit.checkpoint import CheckpointMeta
from hsikit.export.onnx import ExportInfo
from hsikit.preprocess.chain import Chain

STAC_VERSION = "1.1.0"
MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.3.0/schema.json"
CLASSIFICATION_SCHEMA = "https://stac-extensions.github.io/classification/v1.1.0/schema.json"
EO_SCHEMA = "https://stac-extensions.github.io/eo/v2.0.0/schema.json"
PROCESSING_SCHEMA = "https://stac-extensions.github.io/processing/v1.1.0/schema.json"
#: media type of the model asset (MLM's advice: octet-stream with the framework as parameter)
ONNX_MEDIA_TYPE = "application/octet-stream; framework=onnx"

#: MLM tasks of hsikit's registry tasks (a per-pixel classifier is a semantic segmentation in MLM's terms)
_TASKS = {"classification": ["semantic-segmentation", "classification"], "super-resolution": ["super-resolution"],
          "denoising": ["regression"], "restoration": ["regression"]}


def mlm_name(text: str) -> str:
    """``text`` as an ``mlm:name``: letters, digits, ``_.-`` and spaces, starting with a letter."""
    name = re.sub(r"[^A-Za-z0-9_.\- ]+", "-", text).strip(" _.-")
    name = name if name[:1].isalpha() else f"model-{name}"
    return name if len(name) >= 3 and name[-1].isalnum() else f"{name}-model"


def model_bands(meta: CheckpointMeta, info: ExportInfo) -> list[dict[str, Any]]:
    """The scene bands the exported network reads, in its input order: name, and centre wavelength and FWHM in
    micrometres where known (STAC 1.1 band objects with eo fields)."""
    chain = Chain.from_dict(info.input_chain)
    source = chain.input_bands or meta.bands or {}
    names = list(source.get("names") or [])
    idx = chain.used_input_bands(int(source.get("count") or len(names)))
    if len(idx) != info.in_features:  # the checkpoint does not say which bands: generic names
        return [{"name": f"band {i + 1}"} for i in range(info.in_features)]
    wl, fw = source.get("wavelengths"), source.get("fwhm")
    out = []
    for i in idx:
        band: dict[str, Any] = {"name": names[i] if i < len(names) else f"band {i + 1}"}
        if wl and wl[i] is not None:
            band["eo:center_wavelength"] = round(float(wl[i]) / 1000, 6)
        if fw and fw[i] is not None:
            band["eo:full_width_half_max"] = round(float(fw[i]) / 1000, 6)
        out.append(band)
    return out


def _input(bands: list[dict[str, Any]], info: ExportInfo) -> dict[str, Any]:
    folded = ", ".join(info.folded)
    if info.offset is not None:
        scaling: list[dict[str, Any]] | None = [{"type": "offset", "value": v} for v in info.offset]
        how = (f"The scene's values of these bands (as stored) minus the offsets; {folded} are inside the model. "
               "Missing pixels must be 0 after the offset.")
        chain = None
    else:
        scaling = None
        how = "The bands after hsikit's preprocessing chain (format hsikit-chain); missing pixels 0."
        chain = {"format": "hsikit-chain", "expression": info.input_chain} if info.input_chain else None
    return {
        "name": "spectra" if info.pixel_local else "image",
        "bands": [b["name"] for b in bands],
        "input": {"shape": [-1, info.in_features, -1, -1], "dim_order": ["batch", "channel", "height", "width"],
                  "data_type": "float32"},
        "description": how,
        "value_scaling": scaling,
        "resize_type": None,
        "pre_processing_function": chain,
    }


def _output(meta: CheckpointMeta, info: ExportInfo, tasks: list[str]) -> dict[str, Any]:
    if info.outputs != "probabilities":
        return {"name": "restored", "tasks": tasks,
                "result": {"shape": [-1, info.out_channels, -1, -1], "dim_order": ["batch", "channel", "height",
                                                                                   "width"], "data_type": "float32"},
                "description": f"The restored cube ({meta.task}), {info.out_scale}x the input's height and width.",
                "classification:classes": [], "post_processing_function": None}
    return {"name": "class probabilities", "tasks": tasks,
            "result": {"shape": [-1, info.out_channels, -1, -1], "dim_order": ["batch", "class", "height", "width"],
                       "data_type": "float32"},
            "description": "Softmax probability of each class per pixel; hsikit writes argmax + 1 as the class map "
                           "(0 = nodata).",
            "classification:classes": _classes(meta), "post_processing_function": None}


def _classes(meta: CheckpointMeta) -> list[dict[str, Any]]:
    """The model's classes (0-based network outputs) with names and colour hints."""
    colors = meta.class_colors or [None] * len(meta.class_names or [])
    classes = []
    for i, (name, color) in enumerate(zip(meta.class_names or [], colors)):
        c: dict[str, Any] = {"value": i, "name": name}
        if color:
            c["color_hint"] = color.lstrip("#").upper()[:6]
        classes.append(c)
    return classes


def _pretrained(meta: CheckpointMeta) -> dict[str, Any]:
    """``mlm:pretrained``: imported published weights name their source; weights trained by hsikit started from
    scratch (source null, as the schema asks)."""
    p = meta.provenance or {}
    if "official" in p or "source_file" in p:
        return {"mlm:pretrained": True, "mlm:pretrained_source": str(p.get("paper") or p.get("source_file"))}
    return {"mlm:pretrained": False, "mlm:pretrained_source": None}


def mlm_item(meta: CheckpointMeta, info: ExportInfo, *, item_id: str, model_href: str, architecture: str,
             parameters: int, file_size: int, tiling: dict[str, Any]) -> dict[str, Any]:
    """The STAC item (a dict) describing the exported model at ``model_href`` (relative to the item)."""
    tasks = _TASKS.get(meta.task, ["regression"])
    bands = model_bands(meta, info)
    created = (meta.provenance or {}).get("created") or datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    props: dict[str, Any] = {
        "datetime": created.replace("+00:00", "Z"),
        "description": f"{architecture} exported to ONNX by hsikit {__version__} from {info.source.get('checkpoint')}",
        "mlm:name": mlm_name(item_id),
        "mlm:architecture": architecture,
        "mlm:tasks": tasks,
        "mlm:framework": "ONNX",
        "mlm:memory_size": int(file_size),
        "mlm:total_parameters": int(parameters),
        **_pretrained(meta),
        "mlm:batch_size_suggestion": 1,
        "mlm:accelerator": None,
        "mlm:accelerator_constrained": False,
        "mlm:accelerator_summary": "any onnxruntime execution provider (CPU by default)",
        "mlm:input": [_input(bands, info)],
        "mlm:output": [_output(meta, info, tasks)],
        "mlm:hyperparameters": {k: v for k, v in meta.config.items()} or {"arch": meta.arch},
        "bands": bands,
        "processing:software": {k: v for k, v in info.versions.items() if v},
        "hsikit:arch": meta.arch,
        "hsikit:tiling": tiling,
        "hsikit:preprocessing": {"chain_ops": info.chain_ops, "folded": info.folded, "input_chain": info.input_chain,
                                 "offset": info.offset},
        "hsikit:checkpoint": info.source,
        "hsikit:provenance": meta.provenance,
    }
    onnx_version = info.versions.get("onnx", "")
    if re.fullmatch(r"\d+\.\d+\.\d+", onnx_version):
        props["mlm:framework_version"] = onnx_version
    return {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [MLM_SCHEMA, CLASSIFICATION_SCHEMA, EO_SCHEMA, PROCESSING_SCHEMA],
        "id": item_id,
        "geometry": None,
        "properties": props,
        "links": [],
        # the bands also on the asset: STAC 1.1's item schema accepts item-level bands only beside asset bands
        "assets": {"model": {"href": model_href, "type": ONNX_MEDIA_TYPE, "title": f"{architecture} (ONNX)",
                             "roles": ["mlm:model", "model"], "bands": bands}},
    }


#: media type of an hsikit checkpoint: safetensors weights of a PyTorch network, hsikit's metadata in the header
CHECKPOINT_MEDIA_TYPE = "application/octet-stream; framework=pytorch; application=safetensors"


def checkpoint_mlm_item(path: str | Path) -> dict[str, Any]:
    """The STAC MLM item (a dict) of an hsikit checkpoint, read from its header only (no torch): architecture,
    task, the scene bands it was trained on, its preprocessing chain, classes, parameter count and provenance; the
    checkpoint itself is the ``mlm:model`` asset (an absolute href). Catalogues of outputs link it as their model."""
    from safetensors import safe_open

    from hsikit.checkpoint import read_checkpoint_meta

    path = Path(path).resolve()
    meta = read_checkpoint_meta(path)
    with safe_open(str(path), framework="numpy") as f:
        parameters = sum(int(math.prod(f.get_slice(k).get_shape())) for k in f.keys())
    tasks = _TASKS.get(meta.task, ["regression"])
    source = meta.bands or {}
    names, wl = list(source.get("names") or []), source.get("wavelengths")
    bands = [{"name": n, **({"eo:center_wavelength": round(float(wl[i]) / 1000, 6)} if wl and wl[i] else {})}
             for i, n in enumerate(names)]
    features = int(meta.config.get("in_bands") or len(names) or 0) or -1
    classes = meta.task == "classification"
    created = (meta.provenance or {}).get("created") or datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    props: dict[str, Any] = {
        "datetime": created.replace("+00:00", "Z"),
        "description": f"{meta.arch} {meta.task} checkpoint of hsikit ({path.name}); run it with hsikit, which "
                       "replays its preprocessing chain on each scene",
        "mlm:name": mlm_name(path.stem), "mlm:architecture": meta.arch, "mlm:tasks": tasks,
        "mlm:framework": "PyTorch", "mlm:memory_size": path.stat().st_size, "mlm:total_parameters": parameters,
        **_pretrained(meta),
        "mlm:accelerator": None, "mlm:accelerator_constrained": False,
        "mlm:input": [{
            "name": "image", "bands": names,
            "input": {"shape": [-1, features, -1, -1], "dim_order": ["batch", "channel", "height", "width"],
                      "data_type": "float32"},
            "description": "The scene's bands after hsikit's preprocessing chain (format hsikit-chain); missing "
                           "pixels 0.",
            "value_scaling": None, "resize_type": None,
            "pre_processing_function": ({"format": "hsikit-chain", "expression": meta.preprocessing}
                                        if meta.preprocessing else None)}],
        "mlm:output": [{
            "name": "class logits" if classes else "restored", "tasks": tasks,
            "result": {"shape": [-1, len(meta.class_names or []) if classes else -1, -1, -1],
                       "dim_order": ["batch", "class" if classes else "channel", "height", "width"],
                       "data_type": "float32"},
            "description": ("Class scores per pixel; hsikit writes argmax + 1 as the class map (0 = nodata)."
                            if classes else f"The restored cube ({meta.task})."),
            "classification:classes": _classes(meta) if classes else [], "post_processing_function": None}],
        "mlm:hyperparameters": dict(meta.config) or {"arch": meta.arch},
        "bands": bands,
        "processing:software": {"hsikit": __version__},
        "hsikit:arch": meta.arch,
        "hsikit:provenance": meta.provenance,
    }
    return {
        "type": "Feature", "stac_version": STAC_VERSION,
        "stac_extensions": [MLM_SCHEMA, CLASSIFICATION_SCHEMA, EO_SCHEMA, PROCESSING_SCHEMA],
        "id": path.stem, "geometry": None, "properties": props, "links": [],
        "assets": {"model": {"href": str(path), "type": CHECKPOINT_MEDIA_TYPE, "title": f"{meta.arch} (safetensors)",
                             "roles": ["mlm:model", "model"], **({"bands": bands} if bands else {})}},
    }
