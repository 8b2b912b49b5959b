"""Classify a whole scene with a trained model, in tiles, into a QGIS-ready class map."""

from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from hsikit.engine.engine import EngineStats
from hsikit.errors import BandMismatchError, InputError
from hsikit.io.scene import Scene
from hsikit.pipelines.options import CLASSIFY

ProbMode = Literal["float32", "uint8"]


@dataclass
class ClassifyResult:
    """What :func:`classify` wrote and how long it took."""

    class_map: Path
    probabilities: Path | None
    confidence: Path | None
    quicklook: Path | None
    qml: Path
    seconds: float
    pixels: int
    tiles: int
    skipped_tiles: int
    class_counts: dict[str, int] = field(default_factory=dict)
    engine: EngineStats | None = None


def output_paths(out: Path, probabilities: ProbMode | None, quicklook: bool,
                 confidence: bool = False) -> dict[str, Path]:
    """Every file a classification writes, keyed by role."""
    paths = {"class_map": out, "qml": out.with_suffix(".qml")}
    if probabilities:
        paths["probabilities"] = out.with_name(out.stem + "_probabilities.tif")
    if confidence:
        paths["confidence"] = out.with_name(out.stem + "_confidence.tif")
    if quicklook:
        paths["quicklook"] = out.with_suffix(".png")
    return paths


def named_roles(paths: dict[str, Path]) -> dict[str, Path]:
    """``output_paths`` keyed by readable role names ("class map", "quicklook"…) for messages."""
    return {role.replace("_", " "): p for role, p in paths.items()}


@dataclass
class ClassifySetup:
    """What classifying one scene with one checkpoint needs, derived from the scene's header and the checkpoint's
    metadata only (no pixels, no weights): shared by :func:`classify` and the batch's block tasks."""

    model_path: Path
    arch: str
    class_names: list[str]
    legend: object
    chain: object
    context: int
    size_multiple: int
    spec: object
    tile_tag: dict
    tags: dict[str, str]
    #: the model is an exported ONNX file, run with onnxruntime (no torch)
    exported: bool = False

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def pixel_local(self) -> bool:
        return self.context == 0

    @property
    def class_dtype(self) -> str:
        return "uint8" if self.n_classes <= 254 else "uint16"


def classify_setup(sc: Scene, model_path: str | Path, *, tile: int | None = 512, overlap: int | None = None,
                   batch_size: int | None = 2, legend: str | Path | None = None, command: str | None = None,
                   chain: dict | None = None, max_memory: int | str | None = None, net=None) -> ClassifySetup:
    """Check ``sc`` against the checkpoint (georeferencing, task, bands, legend) and plan the tiling.

    ``model_path``: a checkpoint (.safetensors) or a model exported by ``hsikit export`` (.onnx, read without
    torch: its metadata says what the registry says of a checkpoint's architecture).
    ``tile`` None: the largest tiles that fit ``max_memory`` bytes (or a size such as "8G"; default a third of the
    RAM), from the model's measured activation memory (:mod:`hsikit.engine.budget`; an exported model's was
    measured when it was exported).
    ``chain``: the preprocessing already fitted on ``sc`` (a batch fits a per-scene chain once, not per block).
    ``net``: the loaded network, probed for the tile plan instead of building another one."""
    from hsikit.checkpoint import checkpoint_sha256
    from hsikit.engine.budget import default_budget, parse_size
    from hsikit.engine.engine import TileSpec, check_spec, planned_overlap
    from hsikit.io.gaps import fill_tags
    from hsikit.io.legend import Legend
    from hsikit.pipelines.common import check_georeferencing, provenance_tags

    model_path = Path(model_path)
    check_spec(TileSpec(tile=1 if tile is None else tile, overlap=overlap, batch_size=batch_size or 1))
    budget = None if max_memory is None else parse_size(max_memory)
    check_georeferencing(sc)
    facts = _model_facts(model_path)
    meta, context = facts.meta, facts.context
    chain = _replayed_chain(sc, model_path, facts, chain)
    n_cls = len(meta.class_names)
    lg = Legend.read(legend, n_cls) if legend else Legend.from_names(meta.class_names, meta.class_colors)
    if lg.count != n_cls:
        raise BandMismatchError(f"legend has {lg.count} classes, the model {n_cls}")
    # pixel-local models are fed in pixel chunks by the predictor: batching whole tiles only costs memory
    # batch_size None: one tile per call when the tiles are planned (the budget goes to one large tile, fewer
    # halos), else two
    batch_size = (batch_size or (1 if tile is None else 2)) if context > 0 else 1
    if tile is None:
        tile = _planned_tile(sc, facts, n_cls, overlap, batch_size,
                             budget if budget is not None else default_budget(), net)
    spec = TileSpec(tile=tile, overlap=overlap, batch_size=batch_size)
    used_overlap, margin = planned_overlap(spec, context, context == 0, (sc.height, sc.width))
    tile_tag = {"tile": list(tile) if isinstance(tile, tuple) else tile, "overlap": used_overlap, "margin": margin,
                "context": context, "blend": "raised-cosine"}
    tags = provenance_tags(
        scene=sc,
        command=command,
        model=meta.arch,
        checkpoint_sha256=checkpoint_sha256(model_path),
        bands_used=[sc.bands.names[i] for i in chain.used_input_bands(sc.count)],
        normalization="checkpoint statistics: " + " > ".join(facts.chain_ops or [s.op for s in chain.steps])
        + (f" ({', '.join(facts.exported.folded)} folded into {model_path.name})"
           if facts.exported is not None and facts.exported.folded else ""),
        tile=tile_tag,
        extra={"HSIKIT_CLASS_OFFSET": "1", **fill_tags(sc)},
    )
    return ClassifySetup(model_path, meta.arch, list(meta.class_names), lg, chain, context, facts.size_multiple,
                         spec, tile_tag, tags, exported=facts.exported is not None)


@dataclass
class _ModelFacts:
    """What classifying with a model file takes from it: its metadata, the preprocessing replayed before the
    network, its receptive field and size multiple; for an exported model also its export record."""

    meta: object
    chain: dict | None
    context: int
    size_multiple: int
    features: int | None = None
    chain_ops: list[str] | None = None
    exported: object | None = None


def _model_facts(model_path: Path) -> _ModelFacts:
    """The facts of a checkpoint (metadata and registry entry) or of an exported .onnx model (its metadata alone:
    no torch, no registry); refuses a model that is not a classifier."""
    from hsikit.export.onnx import is_exported, read_exported

    if is_exported(model_path):
        meta, info = read_exported(model_path)
        facts = _ModelFacts(meta, info.input_chain, int(info.context), int(info.size_multiple), int(info.in_features),
                            list(info.chain_ops), info)
    else:
        from hsikit.checkpoint import read_checkpoint_meta

        meta = read_checkpoint_meta(model_path)
        facts = _ModelFacts(meta, meta.preprocessing, 0, 1)
    if meta.task != "classification":
        raise InputError(f"{model_path.name} is a {meta.task} model, not a classifier")
    if facts.exported is None:
        from hsikit.models.registry import get_entry

        entry = get_entry(meta.arch)
        cfg = entry.config_cls(**meta.config)
        facts.context, facts.size_multiple = int(entry.receptive_field(cfg)), entry.size_multiple
        facts.features = int(getattr(cfg, "in_bands", 0) or len(getattr(cfg, "bands", ())) or 0) or None
    return facts


def _replayed_chain(sc: Scene, model_path: Path, facts: _ModelFacts, chain: dict | None):
    """The preprocessing replayed on ``sc`` before the network (fitted on it when it came unfitted), checked
    against its bands; for an exported model with folded preprocessing, followed by the per-band offsets."""
    from hsikit.export.fold import OffsetChain
    from hsikit.preprocess.chain import Chain

    ch = Chain.from_dict(chain or facts.chain)
    if not ch.fitted:  # imported weights whose official code normalises each scene with its own statistics
        ch = ch.fit(sc)
    try:
        ch.check_input(sc.bands, source=sc.name)
    except BandMismatchError as e:
        raise BandMismatchError(f"{model_path.name}: {e}; train a classifier on this sensor's bands with `hsikit "
                                "train classifier SCENE --labels LABELS -o MODEL.safetensors`") from None
    offset = facts.exported.offset if facts.exported is not None else None
    return OffsetChain(ch, offset) if offset is not None else ch


#: the largest planned tile of a pixel-local model (measured best for the spectral 1-D CNN on 100 bands)
PIXEL_LOCAL_TILE = 512


def _planned_tile(sc: Scene, facts: _ModelFacts, n_cls: int, overlap: int | None, batch_size: int,
                  budget: int, net=None) -> tuple[int, int]:
    """The largest tile (rows, cols) of ``sc`` whose memory fits ``budget``, for this model's network (``net``,
    or one built without weights: building some encoders takes a second, so pass it when loaded). An exported
    model's activation memory is the one measured with torch when it was exported (no torch here)."""
    from hsikit.engine.budget import plan_tile
    from hsikit.engine.engine import TileSpec, planned_overlap

    context = facts.context
    features = facts.features or sc.count
    probe = None
    if context > 0:  # pixel-local models are fed in fixed chunks: their activations do not grow with the tile
        exported = facts.exported
        probe = exported.activation_bytes() if exported is not None else _torch_probe(facts, features, net)

    def overlap_for(side: int) -> int:
        return planned_overlap(TileSpec(tile=side, overlap=overlap), context, context == 0)[0]

    least = max(64, 4 * context, 2 * (overlap or 0))  # the smallest tile the engine accepts for this model
    # no halo to save with a pixel-local model: moderate tiles let the reader prepare the next one while the
    # model runs (one huge tile runs them one after the other, and streams through more memory)
    largest = PIXEL_LOCAL_TILE if context == 0 else None
    return plan_tile(sc.height, sc.width, budget=budget, model=probe, in_bands=sc.count,
                     raw_itemsize=np.dtype(sc.dtype).itemsize, features=features, out_channels=n_cls,
                     overlap=overlap_for, batch_size=batch_size, size_multiple=facts.size_multiple, least=least,
                     largest=largest)


def _torch_probe(facts: _ModelFacts, features: int, net=None):
    """The activation memory of a checkpoint's network, measured (:func:`activation_probe`)."""
    import torch

    from hsikit.engine.budget import activation_probe
    from hsikit.models.registry import create_model

    meta = facts.meta
    if net is None:
        with torch.device("meta"):  # shapes only: no weights initialised, none loaded
            net = create_model(meta.arch, **meta.config).to_empty(device="cpu")
    return activation_probe(net, features, facts.size_multiple)


def load_classifier(model_path: str | Path):
    """The network of ``model_path`` for :func:`classify_predictor`: an exported .onnx model for onnxruntime
    (torch is not imported), else the checkpoint's torch network on the CPU."""
    from hsikit.export.onnx import is_exported

    if is_exported(model_path):
        from hsikit.engine.onnx_predict import OnnxModel

        return OnnxModel(model_path)
    from hsikit.checkpoint import load_checkpoint

    return load_checkpoint(model_path, device="cpu")[0]


def classify_predictor(net, setup: ClassifySetup, device: str = "auto"):
    """The engine's ``predict`` for a loaded classifier (softmax unless the model outputs probabilities; an
    exported model has it inside)."""
    if setup.exported:
        from hsikit.engine.onnx_predict import OnnxPredictor

        return OnnxPredictor(net, device=device, size_multiple=setup.size_multiple, pixel_local=setup.pixel_local)
    from hsikit.engine.torch_predict import TorchPredictor

    # models whose outputs are already probabilities (random forest) must not be softmaxed again
    return TorchPredictor(net, device=device, softmax=not getattr(net, "outputs_probabilities", False),
                          size_multiple=setup.size_multiple, pixel_local=setup.pixel_local)


def class_outputs(values: np.ndarray, valid: np.ndarray, setup: ClassifySetup, probabilities: ProbMode | None,
                  confidence: bool) -> dict[str, np.ndarray]:
    """The arrays written for one block of blended class probabilities, keyed by output role."""
    labels = (np.argmax(values, axis=0) + 1).astype(setup.class_dtype)
    labels[~valid] = 0
    out = {"class_map": labels[None]}
    if probabilities == "uint8":
        p = np.round(np.clip(values, 0, 1) * 254).astype(np.uint8)
        p[:, ~valid] = 255
        out["probabilities"] = p
    elif probabilities:
        p = values.astype(np.float32, copy=True)
        p[:, ~valid] = np.nan
        out["probabilities"] = p
    if confidence:
        c = values.max(axis=0).astype(np.float32)
        c[~valid] = np.nan
        out["confidence"] = c[None]
    return out


def class_writers(paths: dict[str, Path], setup: ClassifySetup, sc: Scene, *, probabilities: ProbMode | None,
                  fmt: str, overwrite: bool, tags: dict[str, str] | None = None,
                  temp_dir: str | Path | None = None) -> dict:
    """RasterWriters of the class map and, if asked, the probabilities and confidence rasters, keyed by role."""
    from hsikit.io.writer import RasterWriter

    lg, n_cls = setup.legend, setup.n_classes
    common = dict(width=sc.width, height=sc.height, crs=sc.crs, transform=sc.transform, overwrite=overwrite,
                  tags=tags if tags is not None else setup.tags, fmt=fmt, temp_dir=temp_dir)
    writers = {"class_map": RasterWriter(paths["class_map"], count=1, dtype=setup.class_dtype, nodata=0,
                                         kind="categorical", legend=lg, band_descriptions=["class"], **common)}
    if probabilities:
        is_u8 = probabilities == "uint8"
        writers["probabilities"] = RasterWriter(
            paths["probabilities"], count=n_cls, dtype="uint8" if is_u8 else "float32",
            nodata=255 if is_u8 else float("nan"), kind="continuous",
            band_descriptions=[f"p({n})" for n in lg.names],
            scales=[1 / 254] * n_cls if is_u8 else None, offsets=[0.0] * n_cls if is_u8 else None, **common)
    if "confidence" in paths:
        writers["confidence"] = RasterWriter(paths["confidence"], count=1, dtype="float32", nodata=float("nan"),
                                             kind="continuous", band_descriptions=["confidence"], **common)
    return writers


def classify(
    scene: str | Path | Scene,
    *,
    out: str | Path,
    model: str | Path | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch_size: int | None = None,
    max_memory: int | str | None = None,
    device: str = "auto",
    probabilities: ProbMode | None = None,
    confidence: bool = False,
    quicklook: bool = False,
    legend: str | Path | None = None,
    fmt: Literal["cog", "gtiff"] = "cog",
    overwrite: bool = False,
    progress: bool = True,
    command: str | None = None,
) -> ClassifyResult:
    """Classify ``scene`` with the checkpoint ``model`` and write ``out`` (uint8 class map, 0 = nodata).

    ``model`` may also be an ONNX file written by ``hsikit export``: it runs with onnxruntime, without torch.

    Class i of the model is written as value i + 1 with the model's colours and names (GDAL colour table,
    category names, ``.qml`` style). ``probabilities`` adds ``<out>_probabilities.tif`` with one band per class
    (float32 with NaN nodata, or uint8 with value = round(p * 254) and nodata 255); ``confidence`` adds
    ``<out>_confidence.tif``, the winning class's probability (float32). ``quicklook`` writes a PNG.
    The model's preprocessing chain is replayed exactly; tiles overlap by at least the model's receptive field.
    ``tile`` None plans the largest tiles that fit ``max_memory`` (default: a third of the RAM).
    The options' defaults and accepted values are those of :data:`hsikit.pipelines.options.CLASSIFY`.
    """
    from hsikit.io.gaps import check_band_gaps
    from hsikit.io.open import open_scene
    from hsikit.io.outputs import check_outputs, check_suffix
    from hsikit.pipelines.common import default_model

    CLASSIFY.check({"fmt": fmt, "probabilities": probabilities})
    wanted = _Outputs(output_paths(Path(out), probabilities, quicklook, confidence), probabilities, confidence,
                      quicklook, fmt, overwrite)
    check_suffix(Path(out))
    check_outputs(named_roles(wanted.paths), overwrite)
    t0 = time.perf_counter()
    own = not isinstance(scene, Scene)
    sc = open_scene(scene) if own else scene
    try:
        model_path = Path(model) if model is not None else default_model(sc)
        check_band_gaps(sc)
        net = load_classifier(model_path)
        setup = classify_setup(sc, model_path, tile=tile, overlap=overlap, batch_size=batch_size, legend=legend,
                               command=command, max_memory=max_memory, net=net)
        done = _write_class_maps(sc, setup, classify_predictor(net, setup, device), wanted, progress)
    finally:
        if own:
            sc.close()
    return _result(wanted, setup, done, time.perf_counter() - t0)


@dataclass(frozen=True)
class _Outputs:
    """What one classification writes: the files by role and how."""

    paths: dict[str, Path]
    probabilities: ProbMode | None
    confidence: bool
    quicklook: bool
    fmt: str
    overwrite: bool


@dataclass
class _Written:
    """What the tiled run left: its statistics, the pixels per class (nodata first) and the quicklook written."""

    stats: EngineStats
    counts: np.ndarray
    quicklook: Path | None


def _write_class_maps(sc: Scene, setup: ClassifySetup, predictor, wanted: _Outputs, progress: bool) -> _Written:
    """Run the model over ``sc`` in tiles into the rasters of ``wanted``; every output appears together, or none."""
    from hsikit.engine.engine import run_tiled
    from hsikit.io.atomic import output_group

    n_cls = setup.n_classes
    counts = np.zeros(n_cls + 1, dtype=np.int64)
    writers = class_writers(wanted.paths, setup, sc, probabilities=wanted.probabilities, fmt=wanted.fmt,
                            overwrite=wanted.overwrite)

    def sink(window, values: np.ndarray, valid: np.ndarray) -> None:
        arrays = class_outputs(values, valid, setup, wanted.probabilities, wanted.confidence)
        counts[:] += np.bincount(arrays["class_map"].ravel(), minlength=n_cls + 1)[: n_cls + 1]
        for role, a in arrays.items():
            writers[role].write(a, window)

    with output_group() as group:
        with ExitStack() as stack:
            for w in writers.values():
                stack.enter_context(w)
            stats = run_tiled(sc, predictor, out_channels=n_cls, sink=sink, spec=setup.spec, context=setup.context,
                              size_multiple=setup.size_multiple, transform_input=setup.chain.apply, progress=progress,
                              pixel_local=setup.pixel_local)
        ql = None
        if wanted.quicklook:
            from hsikit.io.quicklook import read_decimated, save_class_quicklook

            ql = wanted.paths["quicklook"]
            save_class_quicklook(read_decimated(group.staged(wanted.paths["class_map"])), setup.legend, ql)
    return _Written(stats, counts, ql)


def _result(wanted: _Outputs, setup: ClassifySetup, done: _Written, seconds: float) -> ClassifyResult:
    names = setup.legend.names
    return ClassifyResult(
        class_map=wanted.paths["class_map"],
        probabilities=wanted.paths.get("probabilities"),
        confidence=wanted.paths.get("confidence"),
        quicklook=done.quicklook,
        qml=wanted.paths["qml"],
        seconds=seconds,
        pixels=int(done.stats.pixels),
        tiles=int(done.stats.tiles),
        skipped_tiles=int(done.stats.skipped_tiles),
        class_counts={"nodata": int(done.counts[0]), **{names[i]: int(done.counts[i + 1])
                                                         for i in range(setup.n_classes)}},
        engine=done.stats,
    )
