"""``hsikit export``: a checkpoint as an ONNX model that runs without torch, checked against torch with
onnxruntime, and optionally the STAC item (Machine Learning Model extension) that describes it.

``hsikit classify --model model.onnx`` runs the exported file through the same tiled engine with onnxruntime.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hsikit.errors import OptionError
from hsikit.export.onnx import OPSET, TOLERANCE

#: the tile an item suggests (the batch's fixed classification tile)
SUGGESTED_TILE = 512


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and how the export compares with torch."""

    onnx: Path
    mlm: Path | None
    arch: str
    task: str
    folded: list[str]
    not_folded: str
    max_difference: float
    opset: int
    parameters: int
    seconds: float
    outputs: str = "probabilities"
    shapes: list[tuple[int, ...]] = field(default_factory=list)


def export_model(model: str | Path, *, out: str | Path, mlm: str | Path | None = None, opset: int = OPSET,
                 overwrite: bool = False) -> ExportResult:
    """Export the checkpoint ``model`` to the ONNX file ``out`` (and the STAC MLM item ``mlm``, JSON).

    The fitted preprocessing folds into the network where it is linear (scaling, normalisation, resampling, PCA;
    a per-band offset stays outside so that missing pixels stay 0) and the rest is kept in the file's metadata;
    classifiers end in a softmax. Batch, height and width are dynamic; ``opset`` 17 by default. The export is
    run with onnxruntime on random inputs of two shapes and refused if it differs from torch by more than
    :data:`~hsikit.export.onnx.TOLERANCE`. An architecture that cannot export raises :class:`OptionError` saying
    why in one line; nothing is written then."""
    from hsikit.checkpoint import load_checkpoint, read_checkpoint_meta
    from hsikit.export.onnx import task_refusal
    from hsikit.models.registry import get_entry

    t0 = time.perf_counter()
    model_path, out = Path(model), Path(out)
    mlm = Path(mlm) if mlm is not None else None
    _check_outputs(out, mlm, overwrite)
    meta = read_checkpoint_meta(model_path)
    entry = get_entry(meta.arch)
    refusal = task_refusal(entry.name, entry.task)
    if refusal:
        raise OptionError(refusal)
    net, meta = load_checkpoint(model_path, device="cpu")
    plan = _plan(net, meta, entry, model_path, opset)
    _write(plan, out, mlm, overwrite)
    return ExportResult(out, mlm, meta.arch, meta.task, plan.folding.folded, plan.folding.reason,
                        float(plan.info.max_difference), opset, plan.parameters, time.perf_counter() - t0,
                        plan.info.outputs, [x.shape for x in plan.inputs])


@dataclass
class _Plan:
    """Everything one export writes, prepared before any file is opened."""

    meta: object
    entry: object
    folding: object
    info: object
    wrapped: object
    inputs: list[np.ndarray]
    parameters: int
    opset: int


def _check_outputs(out: Path, mlm: Path | None, overwrite: bool) -> None:
    from hsikit.io.outputs import check_outputs, check_suffix

    check_suffix(out, (".onnx",), what="an ONNX model")
    paths = {"ONNX model": out}
    if mlm is not None:
        paths["MLM item"] = check_suffix(mlm, (".json",), option="--mlm", what="a STAC item (JSON)")
    check_outputs(paths, overwrite)


def _plan(net, meta, entry, model_path: Path, opset: int) -> _Plan:
    """The folded preprocessing, the network to export, its check inputs and the metadata it will carry."""
    import torch

    from hsikit.checkpoint import checkpoint_sha256
    from hsikit.export.fold import Folding, fold_chain
    from hsikit.export.onnx import ExportInfo, check_shapes, exportable_network, folding_input
    from hsikit.preprocess.chain import Chain

    cfg = entry.config_cls(**meta.config)
    classifier = meta.task == "classification"
    chain = Chain.from_dict(meta.preprocessing)
    folding = (fold_chain(meta.preprocessing) if classifier else
               Folding(chain.to_dict() if chain.steps else None,
                       reason=f"a {meta.task} model's input range is set per scene"))
    in_features = (folding.matrix.shape[1] if folding.matrix is not None
                   else int(getattr(cfg, "in_bands", 0) or len(getattr(cfg, "bands", ()) or ())))
    if in_features < 1:
        raise OptionError(f"{meta.arch}: the checkpoint does not say how many bands the network takes")
    softmax = classifier and not getattr(net, "outputs_probabilities", False)
    wrapped = exportable_network(net, folding.matrix, folding.diagonal, softmax)
    context = int(entry.receptive_field(cfg))
    inputs = [folding_input(folding, s, np.random.default_rng(i))
              for i, s in enumerate(check_shapes(in_features, entry.size_multiple, context == 0))]
    try:
        with torch.no_grad():
            y = wrapped(torch.from_numpy(inputs[0]))
    except Exception as e:  # noqa: BLE001 - e.g. a network that needs a second input (MP-HSIR's task)
        why = " ".join(str(e).split())[:200] or type(e).__name__
        raise OptionError(f"{meta.arch} cannot be exported to ONNX: it does not run on an image tensor alone "
                          f"({why})") from None
    info = ExportInfo(
        input_chain=folding.outside, offset=folding.offset, folded=folding.folded,
        chain_ops=[s.op for s in chain.steps], in_features=in_features, out_channels=int(y.shape[1]),
        context=context, size_multiple=int(entry.size_multiple),
        outputs="probabilities" if classifier else "values",
        out_scale=max(1, int(y.shape[-1]) // inputs[0].shape[-1]), opset=opset,
        source={"checkpoint": model_path.name, "sha256": checkpoint_sha256(model_path)}, versions=_versions(opset))
    parameters = int(sum(p.numel() for p in net.parameters()))
    return _Plan(meta, entry, folding, info, wrapped, inputs, parameters, opset)


def _versions(opset: int) -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch

    from hsikit._version import __version__

    return {"hsikit": __version__, "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "onnx-opset": str(opset)}


def _write(plan: _Plan, out: Path, mlm: Path | None, overwrite: bool) -> None:
    """Export, compare with torch, record the metadata (and the item); every file appears together, or none."""
    from hsikit.export.onnx import compare_with_torch, export_network, measured_activation, write_metadata
    from hsikit.io.atomic import atomic_outputs

    info, meta = plan.info, plan.meta
    with atomic_outputs([out] + ([mlm] if mlm is not None else []), overwrite) as temps:
        export_network(plan.wrapped, temps[out], plan.inputs[0], arch=meta.arch, opset=plan.opset,
                       output="probabilities" if info.outputs == "probabilities" else "output")
        info.max_difference = compare_with_torch(plan.wrapped, temps[out], plan.inputs)
        if not info.max_difference <= TOLERANCE:
            raise OptionError(f"{meta.arch}: onnxruntime's outputs differ from torch's by {info.max_difference:.2g} "
                              f"(more than {TOLERANCE:g}); the export was not written")
        if info.context > 0:
            info.activation = measured_activation(plan.wrapped, info.in_features, info.size_multiple)
        write_metadata(temps[out], meta, info)
        if mlm is not None:
            item = _item(plan, out, mlm, temps[out].stat().st_size)
            temps[mlm].write_text(json.dumps(item, indent=2) + "\n")


def _item(plan: _Plan, out: Path, mlm: Path, size: int) -> dict:
    import os

    from hsikit.engine.engine import TileSpec, planned_overlap
    from hsikit.export.mlm import mlm_item

    info = plan.info
    overlap, margin = planned_overlap(TileSpec(tile=SUGGESTED_TILE), info.context, info.pixel_local)
    tiling = {"tile": SUGGESTED_TILE, "overlap": overlap, "margin": margin, "context": info.context,
              "size_multiple": info.size_multiple, "blend": "raised-cosine"}
    href = os.path.relpath(out.resolve(), mlm.resolve().parent)
    name = plan.entry.description.split(":")[0].strip() or plan.meta.arch
    return mlm_item(plan.meta, info, item_id=out.stem, model_href=href, architecture=name,
                    parameters=plan.parameters, file_size=size, tiling=tiling)
