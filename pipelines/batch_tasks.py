"""The batch task table: how each single-scene command runs on one scene as a graph of block tasks.

Every task of :data:`TASKS` says which options it takes, which files it writes, and how a scene splits into
blocks. A scene runs as ``prepare`` (one node: opens the scene on a worker, checks it, computes scene-level
statistics such as the restoration min-max range or a fitted preprocessing chain) -> ``block`` tasks (rows of
the scene's tile plan, each with the halo of tile rows that overlap it; arrays saved under the scene's work
folder) -> ``assemble`` (one node: streams the blocks into the usual RasterWriter, whose temporaries live in
the work folder and whose outputs appear by atomic rename, main file last). Block outputs equal what the
single-scene command computes for those rows, so a batch output equals the command's output.

The functions :func:`run_prepare`, :func:`run_block` and :func:`run_assemble` run on Dask workers; models are
loaded once per worker process (:func:`cached_model`) and never travel through the scheduler. A scene at fault
(an :class:`~hsikit.errors.HsikitError` such as a band mismatch or a scene with no valid pixel, or a raster GDAL
cannot read) does not raise on the worker: the task returns a failure record (``{"failed": reason}``) that the
later tasks of the scene pass on, so the worker does not log it as a crash and the client records the same one
line a single-scene run prints. Anything else is a bug: raised, and logged by the worker with its traceback.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from hsikit.errors import HsikitError, InputError, OptionError
from hsikit.pipelines.options import CLASSIFY, DENOISE, PREPROCESS, RESTORE, STRESS, SUPER_RESOLVE, CommandSpec

#: tags a batch adds to its raster outputs: the manifest key and input fingerprint (exactly-once recovery)
TAG_KEY = "HSIKIT_BATCH_KEY"
TAG_INPUT = "HSIKIT_BATCH_INPUT"
#: rows of a written block array copied to the output at a time
_WRITE_ROWS = 512


class SceneError(Exception):
    """A scene failed on a bug (not on its data); the message is the one-line reason recorded in the manifest."""


@dataclass(frozen=True)
class ModelRef:
    """A checkpoint by path and SHA-256: what travels to workers instead of the weights."""

    path: str
    sha256: str


@dataclass(frozen=True)
class Block:
    """Block ``index`` of a scene: plan rows ``[i0, i1)`` (tile rows, or window rows for preprocessing) owning the
    input pixel rows ``[row0, row1)``."""

    index: int
    i0: int
    i1: int
    row0: int
    row1: int


@dataclass
class Task:
    """One batch TASK: ``spec`` declares the options it takes (those of its single-scene command, as the batch
    takes them), with their defaults and checks."""

    name: str
    help: str
    spec: CommandSpec
    needs_model: bool = True
    series: bool = False
    tagged: bool = True  # outputs carry the batch tags (else a receipt file records completion)
    gaps: bool = False  # check band gaps first, as the single-scene command does (hsikit.io.gaps)
    outputs: Callable[[Path, str, dict], dict[str, Path]] = field(default=None, repr=False)
    validate: Callable[[ModelRef | None, dict], None] = field(default=None, repr=False)
    plan: Callable[..., list[Block]] = field(default=None, repr=False)
    prepare: Callable[..., Any] = field(default=None, repr=False)
    block: Callable[..., dict] = field(default=None, repr=False)
    assemble: Callable[..., dict] = field(default=None, repr=False)

    @property
    def command(self) -> str:
        """The single-scene command the task runs per scene."""
        return self.spec.command

    @property
    def options(self) -> dict[str, Any]:
        """The options the task takes, with their defaults."""
        return self.spec.batch_defaults()

    def normalise(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """The task's options with ``given`` applied; unknown keys and values an option does not accept (a
        format other than cog or gtiff, ...) are an :class:`OptionError`."""
        given = dict(given or {})
        defaults = self.options
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise OptionError(f"batch {self.name} does not take option(s) {', '.join(unknown)}")
        opts = {**defaults, **{k: v for k, v in given.items() if v is not None}}
        self.spec.check(opts)
        return opts


# -- worker state ----------------------------------------------------------------------------------------------------
_MODELS: dict[tuple[str, str], Any] = {}
_LOADS: dict[tuple[str, str], int] = {}
_LOCK = threading.Lock()


def cached_model(ref: ModelRef):
    """(network, metadata) of ``ref``, loaded once per worker process and kept for later blocks and scenes.
    The worker checks the file's SHA-256 against the client's once, so every worker runs the same weights.
    An exported .onnx model loads as an onnxruntime model (no torch)."""
    from hsikit.checkpoint import checkpoint_sha256, load_checkpoint
    from hsikit.export.onnx import is_exported

    key = (ref.path, ref.sha256)
    with _LOCK:
        if key not in _MODELS:
            if checkpoint_sha256(ref.path) != ref.sha256:
                raise InputError(f"{Path(ref.path).name} on worker {socket.gethostname()} differs from the "
                                 "client's copy")
            if is_exported(ref.path):
                from hsikit.engine.onnx_predict import OnnxModel

                onnx_model = OnnxModel(ref.path)
                _MODELS[key] = (onnx_model, onnx_model.meta)
            else:
                _MODELS[key] = load_checkpoint(ref.path, device="cpu")
            _LOADS[key] = _LOADS.get(key, 0) + 1
        return _MODELS[key]


def model_loads() -> dict[str, int]:
    """How many times each checkpoint was loaded in this process (1 per worker when caching works)."""
    return {f"{Path(p).name}:{h[:8]}": n for (p, h), n in _LOADS.items()}


def _set_threads(threads: int | None) -> None:
    if threads:
        from hsikit.threads import current_threads, set_threads

        if current_threads() != int(threads):
            set_threads(int(threads))


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


def reason(exc: BaseException) -> str:
    """A one-line reason for a failed scene: an hsikit error's message, else the exception type and message."""
    from rasterio.errors import RasterioError

    from hsikit.io.rasterio_scene import gdal_reason

    if isinstance(exc, (SceneError, HsikitError)):
        text = str(exc)
    elif isinstance(exc, RasterioError):
        text = f"cannot read the raster ({gdal_reason(exc)})"
    else:
        msg = str(exc).strip()
        text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return " ".join(text.split()) or type(exc).__name__


def scene_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is the scene's (or the options') fault rather than a bug: an hsikit error, or a raster GDAL
    cannot read or write."""
    from rasterio.errors import RasterioError

    return isinstance(exc, (HsikitError, RasterioError))


def _guard(fn: Callable, *args, **kw) -> tuple[Any, str | None]:
    """``(fn(...), None)``, or ``(None, reason)`` when the scene is at fault (:func:`scene_fault`): returned, not
    raised, so the worker does not log a traceback for it. Any other error is raised as a :class:`SceneError`
    with the reason as message and the original traceback (for the worker's log), but without the chain of
    exceptions, which may not survive pickling to the client (rasterio's do not) and would turn the reason into
    ``Exception: SceneError(...)``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn(*args, **kw), None
    except SceneError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of one scene is recorded, the batch goes on
        if scene_fault(e):
            return None, reason(e)
        why, tb = reason(e), e.__traceback__
    raise SceneError(why).with_traceback(tb)


def failure(*records: dict | None) -> str | None:
    """The reason of the first failure record among ``records`` (task results), or None."""
    for r in records:
        if isinstance(r, dict) and r.get("failed"):
            return r["failed"]
    return None


def check_scene(sc, allow_no_crs: bool) -> None:
    """Batch inputs must be map-georeferenced unless ``allow_no_crs``."""
    from hsikit.pipelines.common import check_georeferencing

    check_georeferencing(sc)
    if sc.crs is None and not allow_no_crs:
        raise InputError(f"{sc.name} has no CRS: outputs would not be georeferenced "
                         "(use --allow-no-crs to process it on its pixel grid)")


def _open(href: str, allow_no_crs: bool, prep: dict | None = None):
    """The scene, checked, with the band filling its prepare task decided (so every block reads the same)."""
    from hsikit.io.open import open_scene

    sc = open_scene(href)
    try:
        check_scene(sc, allow_no_crs)
        if prep and prep.get("band_fill") is not None:
            sc.band_fill = prep["band_fill"]
    except BaseException:
        sc.close()
        raise
    return sc


# -- Dask task bodies ------------------------------------------------------------------------------------------------
def run_prepare(task: str, href: str, model: ModelRef | None, opts: dict, ctx: dict) -> dict:
    """Worker: open and check the scene, compute its scene-level statistics (one graph node per scene)."""
    t0 = time.time()

    def body():
        _set_threads(ctx.get("threads"))
        tk = TASKS[task]
        if tk.prepare is None and not tk.gaps:
            return {"stats": None}
        sc = _open(href, ctx["allow_no_crs"])
        with sc:
            notes = []
            if tk.gaps:
                from hsikit.io.gaps import check_band_gaps

                notes = check_band_gaps(sc)  # refuses a scene with no valid pixel, fills bands missing everywhere
            stats = tk.prepare(sc, model, opts) if tk.prepare is not None else None
            return {"stats": stats, "band_fill": getattr(sc, "band_fill", None), "notes": notes}

    out, why = _guard(body)
    return {**(out or {"failed": why}), "t0": t0, "t1": time.time(), "worker": _worker_name()}


def run_block(task: str, href: str, model: ModelRef | None, opts: dict, prep: dict, block: Block, workdir: str,
              ctx: dict) -> dict:
    """Worker: compute one block of a scene and save its arrays under ``workdir`` (atomically)."""
    t0 = time.time()
    failed = failure(prep)
    if failed:  # the scene failed already: nothing to compute
        return {"failed": failed, "block": block, "t0": t0, "t1": t0, "worker": _worker_name()}

    def body():
        _set_threads(ctx.get("threads"))
        sc = _open(href, ctx["allow_no_crs"], prep)
        with sc:
            arrays, info = TASKS[task].block(sc, model, opts, prep["stats"], block)
        files = {}
        for role, a in arrays.items():
            files[role] = _save_array(Path(workdir), f"block_{block.index:05d}.{role}", a)
        return {"files": files, **info}

    out, why = _guard(body)
    return {**(out or {"failed": why}), "block": block, "t0": t0, "t1": time.time(), "worker": _worker_name()}


def run_assemble(task: str, href: str, model: ModelRef | None, opts: dict, prep: dict, blocks: list[dict],
                 outputs: dict[str, str], workdir: str, ctx: dict) -> dict:
    """Worker: write the scene's final outputs from its blocks (temporaries in ``workdir``, atomic renames).
    A failure of the scene's prepare or blocks is passed on as the scene's failure record."""
    t0 = time.time()
    failed = failure(prep, *blocks)
    if failed:
        return {"failed": failed, "outputs": [], "t0": t0, "t1": t0, "worker": _worker_name()}

    def body():
        _set_threads(ctx.get("threads"))
        tk = TASKS[task]
        paths = {k: Path(v) for k, v in outputs.items()}
        tags = {TAG_KEY: ctx["key"], TAG_INPUT: json.dumps(ctx["fingerprint"], sort_keys=True)}
        # Dask recomputes a finished assemble whose result was lost with its worker; its outputs are then already
        # there, complete and tagged with this key, and must be kept rather than refused as "output exists"
        if finished_outputs(tk, ctx["key"], ctx["fingerprint"], paths, Path(ctx["receipt"])):
            return {"outputs": [str(p) for p in paths.values()]}
        if tk.block is None:  # a whole-input task
            info = tk.assemble(href, model, opts, None, [], paths, Path(workdir), ctx)
        else:
            sc = _open(href, ctx["allow_no_crs"], prep)
            with sc:
                info = tk.assemble(sc, model, opts, prep["stats"], blocks, paths, Path(workdir),
                                   {**ctx, "tags": tags})
        for b in blocks:
            for f in b["files"].values():
                Path(f).unlink(missing_ok=True)
        return info or {}

    info, why = _guard(body)
    if why is not None:
        return {"failed": why, "outputs": [], "t0": t0, "t1": time.time(), "worker": _worker_name()}
    if not TASKS[task].tagged:
        _write_receipt(Path(ctx["receipt"]), ctx["key"], ctx["fingerprint"])
    starts = [prep["t0"]] if prep else [t0]
    starts += [b["t0"] for b in blocks]
    block_seconds = sum(b["t1"] - b["t0"] for b in blocks)
    timings = {"prepare": (prep["t1"] - prep["t0"]) if prep else 0.0, "blocks": block_seconds,
               "assemble": time.time() - t0, "wall": time.time() - min(starts), "n_blocks": len(blocks)}
    return {"outputs": [str(p) for p in info.get("outputs", outputs.values())], "pixels": info.get("pixels"),
            "timings": timings, "worker": _worker_name(), "t0": min(starts), "t1": time.time()}


def _write_receipt(path: Path, key: str, fp: dict | None) -> None:
    from hsikit.io.atomic import temp_path

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    tmp.write_text(json.dumps({"key": key, "fingerprint": fp, "time": time.time()}))
    os.replace(tmp, path)


def _save_array(workdir: Path, stem: str, a: np.ndarray) -> str:
    from hsikit.io.atomic import temp_path

    final = workdir / f"{stem}.npy"
    tmp = temp_path(final)
    try:
        np.save(tmp, np.ascontiguousarray(a), allow_pickle=False)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return str(final)


def _stream_blocks(blocks: list[dict], role: str, write: Callable[[np.ndarray, Any], None], width: int,
                   scale: int = 1) -> None:
    """Copy one role's block arrays into a writer, ``_WRITE_ROWS`` rows at a time (memory-mapped reads)."""
    from rasterio.windows import Window

    for b in sorted(blocks, key=lambda b: b["block"].index):
        a = np.load(b["files"][role], mmap_mode="r")
        r0 = b["block"].row0 * scale
        for r in range(0, a.shape[1], _WRITE_ROWS):
            part = np.asarray(a[:, r : r + _WRITE_ROWS])
            write(part, Window(0, r0 + r, width * scale, part.shape[1]))


def _blocks_per_mpx(height: int, width: int, starts: list[int], block_mpx: float) -> int:
    """How many plan rows make a block of about ``block_mpx`` megapixels (0 or less: the whole scene)."""
    n = len(starts)
    if block_mpx <= 0 or n <= 1:
        return max(1, n)
    rows_each = height / n
    return max(1, min(n, int(round(block_mpx * 1e6 / max(1.0, width * rows_each)))))


def _engine_blocks(height: int, width: int, spec, context: int, pixel_local: bool, block_mpx: float) -> list[Block]:
    from hsikit.engine.engine import row_blocks, tile_row_plan

    plan = tile_row_plan(height, width, spec, context, pixel_local)
    k = _blocks_per_mpx(height, width, list(plan.starts), block_mpx)
    return [Block(i, b.i0, b.i1, b.row0, b.row1) for i, b in enumerate(row_blocks(plan, k))]


# -- classify --------------------------------------------------------------------------------------------------------
def _classify_outputs(outdir: Path, name: str, opts: dict) -> dict[str, Path]:
    from hsikit.pipelines.classify import output_paths

    return output_paths(outdir / f"{name}.tif", opts["probabilities"], opts["quicklook"], opts["confidence"])


def _classify_setup(sc, model: ModelRef, opts: dict, command: str | None = None, stats: dict | None = None):
    from hsikit.pipelines.classify import classify_setup

    return classify_setup(sc, model.path, tile=opts["tile"], overlap=opts["overlap"], batch_size=opts["batch_size"],
                          legend=opts["legend"], command=command, chain=(stats or {}).get("chain"))


def _classify_validate(model: ModelRef | None, opts: dict) -> None:
    from hsikit.checkpoint import read_checkpoint_meta
    from hsikit.export.onnx import is_exported, read_exported

    meta = read_exported(model.path)[0] if is_exported(model.path) else read_checkpoint_meta(model.path)
    if meta.task != "classification":
        raise OptionError(f"{Path(model.path).name} is a {meta.task} model, not a classifier")


def _classify_plan(sc, model: ModelRef, opts: dict, block_mpx: float) -> list[Block]:
    setup = _classify_setup(sc, model, opts)
    return _engine_blocks(sc.height, sc.width, setup.spec, setup.context, setup.pixel_local, block_mpx)


def _classify_prepare(sc, model: ModelRef, opts: dict) -> dict:
    """The checks again, on the worker, and the preprocessing chain fitted once for the whole scene (imported
    weights normalise each scene with its own statistics; a trained model's chain comes back as stored)."""
    return {"chain": _classify_setup(sc, model, opts).chain.to_dict()}


def _classify_block(sc, model: ModelRef, opts: dict, stats, block: Block):
    from hsikit.engine.engine import run_tiled
    from hsikit.pipelines.classify import class_outputs, classify_predictor

    setup = _classify_setup(sc, model, opts, stats=stats)
    net, _ = cached_model(model)
    predictor = classify_predictor(net, setup, opts["device"])
    h, w, k = block.row1 - block.row0, sc.width, setup.n_classes
    arrays = {"class_map": np.zeros((1, h, w), setup.class_dtype)}
    if opts["probabilities"]:
        arrays["probabilities"] = np.zeros((k, h, w), "uint8" if opts["probabilities"] == "uint8" else "float32")
    if opts["confidence"]:
        arrays["confidence"] = np.zeros((1, h, w), "float32")
    counts = np.zeros(k + 1, np.int64)

    def sink(win, values, valid):
        r, c = int(win.row_off) - block.row0, int(win.col_off)
        for role, a in class_outputs(values, valid, setup, opts["probabilities"], opts["confidence"]).items():
            arrays[role][:, r : r + a.shape[1], c : c + a.shape[2]] = a
            if role == "class_map":
                counts[:] += np.bincount(a.ravel(), minlength=k + 1)[: k + 1]

    st = run_tiled(sc, predictor, out_channels=k, sink=sink, spec=setup.spec, context=setup.context,
                   size_multiple=setup.size_multiple, transform_input=setup.chain.apply, progress=False,
                   pixel_local=setup.pixel_local, tile_rows=(block.i0, block.i1))
    return arrays, {"counts": counts.tolist(), "tiles": st.tiles, "skipped": st.skipped_tiles, "pixels": st.pixels}


def _classify_assemble(sc, model: ModelRef, opts: dict, stats, blocks: list[dict], paths: dict[str, Path],
                       workdir: Path, ctx: dict) -> dict:
    from hsikit.pipelines.classify import class_writers

    setup = _classify_setup(sc, model, opts, command=ctx.get("command"), stats=stats)
    writers = class_writers(paths, setup, sc, probabilities=opts["probabilities"], fmt=opts["fmt"],
                            overwrite=ctx["overwrite"], tags={**setup.tags, **ctx["tags"]}, temp_dir=workdir)
    with ExitStack() as stack:
        # entered main first, so the class map is finalised (renamed) last
        for w in writers.values():
            stack.enter_context(w)
        for role, wr in writers.items():
            _stream_blocks(blocks, role, wr.write, sc.width)
        if opts["quicklook"]:
            _class_quicklook(blocks, sc, setup.legend, paths["quicklook"], workdir)
    counts = np.sum([b["counts"] for b in blocks], axis=0)
    names = ["nodata", *setup.legend.names]
    return {"outputs": [str(p) for p in paths.values()], "pixels": sc.width * sc.height,
            "class_counts": {n: int(c) for n, c in zip(names, counts)}}


def _class_quicklook(blocks: list[dict], sc, legend, final: Path, workdir: Path, max_size: int = 1024) -> None:
    from hsikit.io.quicklook import save_class_quicklook

    f = max(1, int(np.ceil(max(sc.width, sc.height) / max_size)))
    rows = []
    for b in sorted(blocks, key=lambda b: b["block"].index):
        a = np.load(b["files"]["class_map"], mmap_mode="r")[0]
        first = (-b["block"].row0) % f  # keep global rows 0, f, 2f, ...
        rows.append(np.asarray(a[first::f, ::f]))
    tmp = workdir / final.name
    save_class_quicklook(np.concatenate(rows, axis=0), legend, tmp, max_size=max_size)
    os.replace(tmp, final)


# -- restoration -----------------------------------------------------------------------------------------------------
def _restore_outputs(outdir: Path, name: str, opts: dict) -> dict[str, Path]:
    return {"output": outdir / f"{name}.tif"}


def _restore_setup(sc, model: ModelRef, opts: dict, command: str):
    from hsikit.pipelines.restore import restore_setup

    return restore_setup(sc, model.path, command=command, task=opts.get("task"), scale=opts.get("scale"),
                         tile=opts["tile"], overlap=opts["overlap"])


def _restoration(command: str):
    def validate(model: ModelRef | None, opts: dict) -> None:
        from hsikit.checkpoint import read_checkpoint_meta
        from hsikit.pipelines.restore import resolve_task

        resolve_task(read_checkpoint_meta(model.path), command, opts.get("task"), opts.get("scale"))

    def plan(sc, model: ModelRef, opts: dict, block_mpx: float) -> list[Block]:
        setup = _restore_setup(sc, model, opts, command)
        return _engine_blocks(sc.height, sc.width, setup.spec, setup.context, False, block_mpx / setup.scale**2)

    def prepare(sc, model: ModelRef, opts: dict) -> dict:
        from hsikit.pipelines.restore import scene_value_range

        setup = _restore_setup(sc, model, opts, command)
        return {"value_range": scene_value_range(sc, setup.chain.apply)}

    def block(sc, model: ModelRef, opts: dict, stats: dict, blk: Block):
        from hsikit.engine.engine import run_tiled
        from hsikit.pipelines.restore import restore_predictor, unit_transforms

        setup = _restore_setup(sc, model, opts, command)
        net, _ = cached_model(model)
        to_unit, from_unit = unit_transforms(setup, stats["value_range"])
        s = setup.scale
        out = np.zeros((setup.out_bands.count, (blk.row1 - blk.row0) * s, sc.width * s), np.float32)

        def sink(win, values, valid):
            r, c = int(win.row_off) - blk.row0 * s, int(win.col_off)
            out[:, r : r + values.shape[1], c : c + values.shape[2]] = from_unit(values, valid)

        st = run_tiled(sc, restore_predictor(net, setup, opts["device"]), out_channels=setup.out_bands.count,
                       sink=sink, spec=setup.spec, context=setup.context, transform_input=to_unit, progress=False,
                       scale=s, tile_rows=(blk.i0, blk.i1))
        return {"output": out}, {"tiles": st.tiles, "pixels": st.pixels}

    def assemble(sc, model: ModelRef, opts: dict, stats: dict, blocks: list[dict], paths: dict[str, Path],
                 workdir: Path, ctx: dict) -> dict:
        from hsikit.pipelines.restore import restore_writer

        setup = _restore_setup(sc, model, opts, command)
        writer = restore_writer(paths["output"], setup, sc, stats["value_range"], command_line=ctx.get("command"),
                                fmt=opts["fmt"], overwrite=ctx["overwrite"], extra_tags=ctx["tags"],
                                temp_dir=workdir)
        with writer:
            _stream_blocks(blocks, "output", writer.write, sc.width, setup.scale)
        return {"outputs": [str(paths["output"])], "pixels": sc.width * sc.height}

    return dict(validate=validate, plan=plan, prepare=prepare, block=block, assemble=assemble)


# -- preprocess ------------------------------------------------------------------------------------------------------
_PRE_KEYS = ("drop_bad_bands", "wavelength_range", "resample_to", "scale", "normalize", "pca")


def _pre_chain(opts: dict):
    from hsikit.pipelines.preprocess import build_chain

    kw = {k: opts[k] for k in _PRE_KEYS}
    if kw["wavelength_range"] is not None:
        kw["wavelength_range"] = tuple(kw["wavelength_range"])
    return build_chain(opts["chain"], **kw)


def _pre_validate(model, opts: dict) -> None:
    _pre_chain(opts)  # a bad chain file or option fails the whole batch at once


def _pre_plan(sc, model, opts: dict, block_mpx: float) -> list[Block]:
    _pre_chain(opts)
    w = int(opts["block"])
    starts = list(range(0, sc.height, w))
    k = _blocks_per_mpx(sc.height, sc.width, starts, block_mpx)
    out = []
    for i, a in enumerate(range(0, len(starts), k)):
        b = min(a + k, len(starts))
        out.append(Block(i, a, b, starts[a], starts[b] if b < len(starts) else sc.height))
    return out


def _pre_prepare(sc, model, opts: dict) -> dict:
    return _pre_chain(opts).fit(sc).to_dict()


def _pre_block(sc, model, opts: dict, fitted: dict, blk: Block):
    from rasterio.windows import Window

    from hsikit.pipelines.preprocess import apply_window
    from hsikit.preprocess.chain import Chain

    ch = Chain.from_dict(fitted)
    n = ch.output_bands(sc.bands).count
    out = np.zeros((n, blk.row1 - blk.row0, sc.width), np.float32)
    size = int(opts["block"])
    for r in range(blk.row0, blk.row1, size):
        for c in range(0, sc.width, size):
            w = Window(c, r, min(size, sc.width - c), min(size, blk.row1 - r))
            out[:, r - blk.row0 : r - blk.row0 + int(w.height), c : c + int(w.width)] = apply_window(sc, ch, w)
    return {"output": out}, {"pixels": out.shape[1] * out.shape[2]}


def _pre_assemble(sc, model, opts: dict, fitted: dict, blocks: list[dict], paths: dict[str, Path], workdir: Path,
                  ctx: dict) -> dict:
    from hsikit.pipelines.preprocess import preprocess_writer
    from hsikit.preprocess.chain import Chain

    writer = preprocess_writer(paths["output"], sc, Chain.from_dict(fitted), command=ctx.get("command"),
                               fmt=opts["fmt"], overwrite=ctx["overwrite"], extra_tags=ctx["tags"], temp_dir=workdir)
    with writer:
        _stream_blocks(blocks, "output", writer.write, sc.width)
    return {"outputs": [str(paths["output"])], "pixels": sc.width * sc.height}


# -- stress (time series: one input is a folder of dates or SAFE products) --------------------------------------------
def _stress_fn():
    try:
        from hsikit.pipelines.stress import stress
    except ImportError as e:
        raise OptionError(f"the stress task is not available in this installation ({e})") from None
    return stress


def _stress_validate(model, opts: dict) -> None:
    _stress_fn()


def _stress_outputs(outdir: Path, name: str, opts: dict) -> dict[str, Path]:
    return {"output": outdir / f"{name}.tif"}


def _stress_assemble(href: str, model: ModelRef, opts: dict, stats, blocks, paths: dict[str, Path], workdir: Path,
                     ctx: dict) -> dict:
    res = _stress_fn()(href, out=paths["output"], model=model.path, overwrite=ctx["overwrite"], progress=False,
                       command=ctx.get("command"), png=opts["png"], explain=opts["explain"], device=opts["device"],
                       fmt=opts["fmt"])
    outs = [str(paths["output"])]
    for v in (vars(res).values() if hasattr(res, "__dict__") else ()):
        for p in (v if isinstance(v, (list, tuple)) else [v]):
            if isinstance(p, Path) and str(p) not in outs:
                outs.append(str(p))
    return {"outputs": outs, "pixels": getattr(res, "pixels", None)}


# -- the table -------------------------------------------------------------------------------------------------------
TASKS: dict[str, Task] = {
    "classify": Task(
        "classify", "Classify scenes into QGIS-ready class maps.", CLASSIFY, gaps=True, outputs=_classify_outputs,
        validate=_classify_validate, plan=_classify_plan, prepare=_classify_prepare, block=_classify_block,
        assemble=_classify_assemble),
    "denoise": Task("denoise", "Denoise scenes.", DENOISE, gaps=True, outputs=_restore_outputs,
                    **_restoration("denoise")),
    "super-resolve": Task("super-resolve", "Super-resolve scenes.", SUPER_RESOLVE, gaps=True,
                          outputs=_restore_outputs, **_restoration("super-resolve")),
    "restore": Task("restore", "Restore scenes with any restoration model.", RESTORE, gaps=True,
                    outputs=_restore_outputs, **_restoration("restore")),
    "preprocess": Task(
        "preprocess", "Apply a band-preprocessing chain to scenes.", PREPROCESS, needs_model=False,
        outputs=lambda d, n, o: {"output": d / f"{n}.tif"}, validate=_pre_validate, plan=_pre_plan,
        prepare=_pre_prepare, block=_pre_block, assemble=_pre_assemble),
    "stress": Task(
        "stress", "Crop-stress maps of time series (one INPUT = one folder of dates or SAFE products).", STRESS,
        series=True, tagged=False, outputs=_stress_outputs, validate=_stress_validate, plan=None, prepare=None,
        block=None, assemble=_stress_assemble),
}


def output_tags(path: Path) -> dict[str, str]:
    """The dataset tags of a raster output (empty when it cannot be read)."""
    import rasterio

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with rasterio.open(path) as src:
                return dict(src.tags())
    except Exception:  # noqa: BLE001 - an unreadable output is simply not a finished one
        return {}


def finished_outputs(task: Task, key: str, fp: dict | None, outputs: dict[str, Path], receipt: Path) -> bool:
    """Whether every output of a scene is complete from a run with this key and input (even if the client that
    ran it was killed before recording it): raster outputs carry the key and fingerprint in their tags, other
    tasks leave a receipt."""
    if not all(p.exists() for p in outputs.values()):
        return False
    want = json.dumps(fp, sort_keys=True)
    if task.tagged:
        main = next(iter(outputs.values()))
        tags = output_tags(main)
        return tags.get(TAG_KEY) == key and tags.get(TAG_INPUT) == want
    if not receipt.exists():
        return False
    try:
        d = json.loads(receipt.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return d.get("key") == key and json.dumps(d.get("fingerprint"), sort_keys=True) == want

