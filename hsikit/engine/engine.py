"""Tiled inference over a whole scene with blending and bounded memory.

Tiles of ``tile`` px overlap by ``overlap`` px; the last row/column is shifted inward to end at the scene edge.
Each tile is weighted by a separable window: ``margin`` px discarded and a raised-cosine ramp over the rest of
the overlap on sides with a neighbour, flat at the scene edge. Rule: with ``margin >= context`` (the model's
receptive-field radius) and ``overlap >= 2 * margin``, every output pixel comes from tile positions that saw its
full context, so the result does not depend on the tile size.

Memory: tiles are processed row by row inside a super-column of at most ``max_strip_width`` px; accumulators hold
one tile row of that super-column and finished rows are handed to ``sink`` at once. Where a super-column's last
tile overlaps the next one's first tile, the weighted sums of those columns are carried over in a temporary file
(a strip of overlap width down the scene, never in memory) and added by the next super-column: each emitted
pixel has all its contributions, no tile is computed twice, and the result equals a single pass over the full
width. Nothing of full-scene size is allocated.
"""

from __future__ import annotations

import os
import queue
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import rasterio
from rasterio.windows import Window

from hsikit.engine.tiling import AxisPlan, axis_weights, column_groups, plan_axis
from hsikit.errors import InputError, OptionError
from hsikit.io.scene import Scene
from hsikit.progress import Progress

Predict = Callable[[np.ndarray], np.ndarray]
Sink = Callable[[Window, np.ndarray, np.ndarray], None]
TransformInput = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class TileSpec:
    """Tiling options. ``tile``: side in px, or (rows, cols). ``overlap``/``margin`` None choose defaults from the
    model (see :func:`resolve`)."""

    tile: int | tuple[int, int] = 512
    overlap: int | None = None
    margin: int | None = None
    batch_size: int = 2
    max_strip_width: int = 4096


@dataclass
class EngineStats:
    tiles: int = 0
    skipped_tiles: int = 0
    predict_calls: int = 0
    pixels: int = 0
    seconds: float = 0.0
    predict_seconds: float = 0.0
    read_seconds: float = 0.0  # the reader thread's
    max_accumulator_pixels: int = 0
    tile: int | tuple[int, int] = 0
    overlap: int = 0
    margin: int = 0


def check_spec(spec: TileSpec) -> None:
    """Refuse tiling options no run can use, naming the option as the CLI spells it."""
    tiles = spec.tile if isinstance(spec.tile, tuple) else (spec.tile,)
    for name, value, least in (*(("--tile", t, 1) for t in tiles), ("--overlap", spec.overlap, 0),
                               ("--margin", spec.margin, 0), ("--batch-size", spec.batch_size, 1),
                               ("max_strip_width", spec.max_strip_width, 1)):
        if value is None:
            continue
        if isinstance(value, bool) or not float(value).is_integer():
            raise OptionError(f"{name} must be a whole number, not {value!r}")
        if int(value) < least:
            raise OptionError(f"{name} must be at least {least}, not {int(value)}")


def tile_extent(spec: TileSpec) -> tuple[int, int]:
    """The tile's (rows, cols) in px."""
    t = spec.tile
    return (int(t[0]), int(t[1])) if isinstance(t, tuple) else (int(t), int(t))


def resolve(spec: TileSpec, context: int, pixel_local: bool, shape: tuple[int, int] | None = None) -> tuple[int, int]:
    """(overlap, margin) in px. Defaults: pixel-local models need none; others discard
    ``max(min(tile/32, 16), 4, context)`` px per side and overlap by ``max(min(tile/4, 128), 2 * margin)`` (a
    128-px blend ramp is enough whatever the tile; more would recompute pixels for nothing).
    A scene (rows, cols) that fits in one tile needs no overlap at all."""
    check_spec(spec)
    th, tw = tile_extent(spec)
    split = [th, tw] if shape is None else [t for t, n in zip((th, tw), shape) if n > t]
    tile = min(split or (th, tw))  # an axis the scene fits in one tile along takes no overlap
    if spec.overlap is not None and int(spec.overlap) > tile // 2:  # refused even where one tile covers the scene
        raise OptionError(f"--overlap {int(spec.overlap)} px exceeds half the tile ({tile} px); use --tile "
                          f"{max(4 * max(context, 1), 2 * int(spec.overlap))} or more")
    if shape is not None and shape[0] <= th and shape[1] <= tw:
        return 0, 0
    if spec.margin is not None:
        margin = int(spec.margin)
    else:
        margin = 0 if pixel_local else max(min(tile // 32, 16), 4, int(context))
    if margin < context:
        raise OptionError(f"--margin {margin} px is smaller than the model's receptive field ({context} px)")
    if spec.overlap is not None:
        overlap = int(spec.overlap)
    else:
        overlap = 0 if pixel_local else max(min(tile // 4, 128), 2 * margin)
    if overlap < 2 * margin:
        if spec.overlap is not None and spec.margin is None and not pixel_local and overlap >= 2 * context:
            margin = overlap // 2  # the user asked for less overlap: shrink the default margin to fit
        else:
            raise OptionError(
                f"--overlap {overlap} px is too small for this model: it needs at least {2 * max(margin, context)} px "
                f"(twice its receptive field of {context} px); raise --overlap or the tile size"
            )
    if overlap > tile // 2:
        need = max(4 * max(context, 1), 2 * overlap)
        if spec.overlap is None:  # the default overlap: the tile is too small for the model's context
            raise OptionError(f"--tile {tile} px is too small for this model: its receptive field of {context} px "
                              f"needs tiles of at least {need} px; use --tile {need} or more")
        raise OptionError(f"--overlap {overlap} px exceeds half the tile ({tile} px); use --tile {need} or more")
    if overlap == 0 and not pixel_local:
        warnings.warn("overlap 0 with a model that uses spatial context: expect seams at tile borders", stacklevel=3)
    return overlap, margin


def run_tiled(
    scene: Scene,
    predict: Predict,
    *,
    out_channels: int,
    sink: Sink,
    spec: TileSpec | None = None,
    context: int = 0,
    size_multiple: int = 1,
    transform_input: TransformInput | None = None,
    progress: bool = True,
    pixel_local: bool = False,
    gdal_cache_mb: int = 256,
    scale: int = 1,
    tile_rows: tuple[int, int] | None = None,
) -> EngineStats:
    """Run ``predict`` over ``scene`` in blended tiles and hand finished blocks to ``sink``.

    ``predict``: (N, F, h, w) float32 -> (N, out_channels, h, w) float32 (probabilities or values; blended
    linearly). ``transform_input(raw, valid)`` maps raw tiles to model features (e.g. ``Chain.apply``); invalid
    pixels are then set to 0, the neutral value after standardisation. Tiles with no valid pixel are skipped.
    ``sink(window, values (C, h, w), valid (h, w))`` gets every pixel of the scene exactly once, strip by strip.
    GDAL's block cache is held to ``gdal_cache_mb`` meanwhile (its default, 5 % of RAM, would grow with the
    scene until full).

    ``scale`` > 1 is for super-resolution: ``predict`` returns (N, C, scale*h, scale*w) and the sink receives
    windows on the output grid (``scale`` times finer); tiling, halos and blend ramps are planned on the input
    grid and scaled, so each output pixel still sees the model's full context.
    """
    scale = int(scale)
    if scale < 1:
        raise OptionError(f"scale must be a positive integer, not {scale}")
    spec = spec or TileSpec()
    overlap, margin = resolve(spec, context, pixel_local, (scene.height, scene.width))
    th, tw = tile_extent(spec)
    rows = plan_axis(scene.height, th, overlap)
    cols = plan_axis(scene.width, tw, overlap)
    groups = column_groups(cols, spec.max_strip_width)
    i0, i1 = (0, len(rows.starts)) if tile_rows is None else (int(tile_rows[0]), int(tile_rows[1]))
    if not 0 <= i0 < i1 <= len(rows.starts):
        raise ValueError(f"tile rows {tile_rows} outside the scene's 0..{len(rows.starts)}")
    j0 = first_overlapping_row(rows, i0)
    stats = EngineStats(tile=spec.tile, overlap=overlap, margin=margin)
    total = (i1 - j0) * sum(b - a + 1 for a, b, _, _ in groups)
    t0 = time.perf_counter()
    with rasterio.Env(GDAL_CACHEMAX=gdal_cache_mb), Progress(progress, total, scene.name) as bar:
        carry = None
        for a, b, own0, own1 in groups:
            # the columns this group's last tile shares with the next group's first tile, on the output grid
            width = cols.starts[b] + cols.size - own1 if b + 1 < len(cols.starts) else 0
            out = _Carry(out_channels, width * scale) if width > 0 else None
            try:
                _run_group(scene, predict, rows, cols, a, b, own0, own1, out_channels, margin, size_multiple,
                           transform_input, int(spec.batch_size), sink, stats, bar, scale, (j0, i0, i1),
                           carry, out)
            finally:
                if carry is not None:
                    carry.close()
            carry = out
    stats.seconds = time.perf_counter() - t0
    if tile_rows is None and stats.tiles == 0:  # raised inside the caller's writers: no output is left behind
        raise InputError(f"{scene.name} has no valid pixel: every pixel misses a value in some band "
                         "(NaN or nodata), so nothing can be computed")
    r0, r1 = _owned_rows(rows, i0, i1)
    stats.pixels = scene.width * (r1 - r0)
    return stats


@dataclass(frozen=True)
class RowBlock:
    """Tile rows ``[i0, i1)`` of a scene's plan and the input pixel rows ``[row0, row1)`` they own."""

    i0: int
    i1: int
    row0: int
    row1: int


def planned_overlap(spec: TileSpec, context: int, pixel_local: bool,
                    shape: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (overlap, margin) :func:`run_tiled` will use on a scene of ``shape`` (rows, cols), for plans and tags."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the seam warning is given once, by the run itself
        return resolve(spec, context, pixel_local, shape)


def tile_row_plan(height: int, width: int, spec: TileSpec, context: int = 0, pixel_local: bool = False) -> AxisPlan:
    """The tile rows :func:`run_tiled` uses for a ``height`` x ``width`` scene (same defaults and checks)."""
    overlap, _ = planned_overlap(spec, context, pixel_local, (height, width))
    return plan_axis(height, tile_extent(spec)[0], overlap)


def row_blocks(plan: AxisPlan, rows_per_block: int) -> list[RowBlock]:
    """Split the tile rows of ``plan`` into blocks of ``rows_per_block`` tile rows; together the blocks own every
    pixel row once. Each block recomputes the earlier tile rows that overlap it (its halo)."""
    n, k = len(plan.starts), max(1, int(rows_per_block))
    return [RowBlock(a, min(a + k, n), *_owned_rows(plan, a, min(a + k, n))) for a in range(0, n, k)]


def first_overlapping_row(plan: AxisPlan, i0: int) -> int:
    """The first tile row that contributes to pixel rows owned by tile row ``i0`` (``i0`` itself or earlier)."""
    if i0 <= 0:
        return 0
    start = plan.starts[i0]
    return next(j for j in range(i0 + 1) if plan.starts[j] + plan.size > start)


def _owned_rows(plan: AxisPlan, i0: int, i1: int) -> tuple[int, int]:
    """Pixel rows emitted after tile rows ``i0..i1-1``: from the start of ``i0`` to the start of ``i1``."""
    r0 = plan.starts[i0] if i0 > 0 else 0
    r1 = plan.starts[i1] if i1 < len(plan.starts) else plan.length
    return r0, r1


class _Carry:
    """Weighted sums (C planes), weight sum and validity of a strip of ``width`` columns, kept by pixel row in an
    unlinked temporary file: one super-column writes each row once, the next reads it once."""

    def __init__(self, channels: int, width: int) -> None:
        import tempfile

        self.planes, self.width = channels + 2, width
        self._row_bytes = self.planes * width * 4
        self._f = tempfile.TemporaryFile(prefix="hsikit-carry-")

    def put(self, row0: int, acc: np.ndarray, wsum: np.ndarray, valid: np.ndarray) -> None:
        block = np.concatenate([acc, wsum[None], valid[None].astype(np.float32)]).transpose(1, 0, 2)
        os.pwrite(self._f.fileno(), np.ascontiguousarray(block, dtype=np.float32).tobytes(), row0 * self._row_bytes)

    def take(self, row0: int, row1: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = row1 - row0
        buf = os.pread(self._f.fileno(), n * self._row_bytes, row0 * self._row_bytes)
        if len(buf) != n * self._row_bytes:
            raise RuntimeError("tile carry-over file is shorter than written")  # a bug, not a user error
        block = np.frombuffer(buf, dtype=np.float32).reshape(n, self.planes, self.width).transpose(1, 0, 2)
        return block[:-2], block[-2], block[-1] > 0.5

    def close(self) -> None:
        self._f.close()


def _run_group(scene, predict, rows: AxisPlan, cols: AxisPlan, a, b, own0, own1, C, margin, size_multiple,
               transform_input, batch_size, sink, stats: EngineStats, bar, s: int = 1,
               span: tuple[int, int, int] | None = None, carry_in: _Carry | None = None,
               carry_out: _Carry | None = None) -> None:
    # span (j0, i0, i1): compute tile rows j0..i1-1, emit the pixel rows owned by i0..i1-1 (j0 < i0: the halo)
    j0, i0, i1 = span if span is not None else (0, 0, len(rows.starts))
    # planning is in input px; accumulators, weights and emitted windows live on the output grid (s x finer)
    th, tw = rows.size, cols.size
    gx0 = cols.starts[a]
    gw = cols.starts[b] + tw - gx0
    acc = np.zeros((C, th * s, gw * s), dtype=np.float32)
    wsum = np.zeros((th * s, gw * s), dtype=np.float32)
    valid_acc = np.zeros((th * s, gw * s), dtype=bool)
    stats.max_accumulator_pixels = max(stats.max_accumulator_pixels, th * gw * s * s)
    wx = {j: axis_weights(tw * s, cols.overlap_before(j) * s, cols.overlap_after(j) * s, margin * s)
          for j in range(a, b + 1)}
    disjoint = rows.overlap_after(0) <= 0 and all(cols.overlap_after(j) <= 0 for j in range(a, b))
    top = rows.starts[j0]
    emitted = _owned_rows(rows, i0, i1)[0]  # rows above belong to an earlier block
    tiles = [(i, j) for i in range(j0, i1) for j in range(a, b + 1)]
    # reads overlap the model's work; preprocessing stays in this thread: on few cores a third busy thread beside
    # torch's pool slows the model more than the preprocessing costs (measured on 2 vCPUs: +45 % instead of +20 %)
    reader = _prefetch(scene, rows, cols, tiles, stats, queue_size=batch_size)  # budget.plan_tile counts on it
    try:
        for i in range(j0, i1):
            wy = axis_weights(th * s, rows.overlap_before(i) * s, rows.overlap_after(i) * s, margin * s)
            y0 = rows.starts[i]
            if y0 != top:  # shift the accumulators down to this tile row
                shift = (y0 - top) * s
                for arr in (acc, wsum, valid_acc):
                    arr[..., : th * s - shift, :] = arr[..., shift:, :]
                    arr[..., th * s - shift:, :] = 0
                top = y0
            batch: list[tuple[int, np.ndarray, np.ndarray]] = []
            for _ in range(a, b + 1):
                j, raw, valid = next(reader)
                x0 = (cols.starts[j] - gx0) * s
                valid_acc[:, x0 : x0 + tw * s] |= _upscale(valid, s)
                if not valid.any():
                    stats.skipped_tiles += 1
                    bar.advance(skipped=True)
                    continue
                feats = transform_input(raw, valid) if transform_input is not None else raw.astype(np.float32)
                feats = np.where(valid[None], feats, np.float32(0.0)) if not valid.all() else feats
                del raw
                batch.append((x0, feats, None if disjoint else np.outer(wy, wx[j]).astype(np.float32)))
                if len(batch) == batch_size:
                    _predict_batch(predict, batch, acc, wsum, size_multiple, C, stats, bar, s)
                    batch = []
            if batch:
                _predict_batch(predict, batch, acc, wsum, size_multiple, C, stats, bar, s)
            # rows above the next tile row receive no more contributions: emit them
            end = rows.starts[i + 1] if i + 1 < len(rows.starts) else rows.length
            if end > emitted:
                r0, r1 = (emitted - top) * s, (end - top) * s
                if carry_in is not None:  # the previous group's sums for its overlap with this group's first tile
                    cacc, cw, cvalid = carry_in.take(emitted * s, end * s)
                    acc[:, r0:r1, : carry_in.width] += cacc
                    wsum[r0:r1, : carry_in.width] += cw
                    valid_acc[r0:r1, : carry_in.width] |= cvalid
                if carry_out is not None:  # ours for the next group
                    x = (own1 - gx0) * s
                    carry_out.put(emitted * s, acc[:, r0:r1, x : x + carry_out.width], wsum[r0:r1, x : x + carry_out.width],
                                  valid_acc[r0:r1, x : x + carry_out.width])
                c0, c1 = (own0 - gx0) * s, (own1 - gx0) * s
                w = wsum[r0:r1, c0:c1]
                ok = valid_acc[r0:r1, c0:c1] & (w > 0)
                vals = np.divide(acc[:, r0:r1, c0:c1], w[None], out=np.zeros((C, r1 - r0, c1 - c0), np.float32),
                                 where=ok[None])
                sink(Window(own0 * s, emitted * s, (own1 - own0) * s, (end - emitted) * s), vals, ok)
                emitted = end
    finally:
        # stop the reader thread before the caller may close the scene it reads (an error, an interrupt)
        reader.close()


def _upscale(mask: np.ndarray, s: int) -> np.ndarray:
    return mask if s == 1 else np.repeat(np.repeat(mask, s, axis=0), s, axis=1)


def _predict_batch(predict, batch, acc, wsum, size_multiple, C, stats: EngineStats, bar, s: int = 1) -> None:
    x = batch[0][1][None] if len(batch) == 1 else np.stack([f for _, f, _ in batch])  # one tile: a view, no copy
    n, _, h, w = x.shape
    ph, pw = (-h) % size_multiple, (-w) % size_multiple
    if ph or pw:
        x = _pad_reflect(x, ph, pw)
    t = time.perf_counter()
    y = np.asarray(predict(x), dtype=np.float32)
    stats.predict_seconds += time.perf_counter() - t
    stats.predict_calls += 1
    if y.shape[:2] != (n, C) or y.shape[2] < h * s or y.shape[3] < w * s:
        raise ValueError(f"model returned shape {y.shape}, expected ({n}, {C}, {h * s}, {w * s})")
    y = y[:, :, : h * s, : w * s]
    for k, (x0, _, wt) in enumerate(batch):
        if wt is None:  # no overlap: tiles are disjoint, plain assignment (the accumulators held zeros)
            acc[:, :, x0 : x0 + w * s] = y[k]
            wsum[:, x0 : x0 + w * s] = 1.0
        else:
            acc[:, :, x0 : x0 + w * s] += y[k] * wt[None]
            wsum[:, x0 : x0 + w * s] += wt
        stats.tiles += 1
        bar.advance(pixels=h * w)


def _pad_reflect(x: np.ndarray, ph: int, pw: int) -> np.ndarray:
    h, w = x.shape[-2:]
    mode = "reflect" if ph < h and pw < w and min(h, w) > 1 else "symmetric"
    if mode == "symmetric" and (ph > h or pw > w):
        mode = "edge"
    return np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)


def _prefetch(scene: Scene, rows: AxisPlan, cols: AxisPlan, tiles, stats: EngineStats,
              queue_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Read tiles and their validity masks in a background thread (GDAL releases the GIL) while the model runs
    on earlier ones."""
    q: queue.Queue = queue.Queue(maxsize=queue_size)
    stop = threading.Event()

    def work() -> None:
        try:
            for i, j in tiles:
                if stop.is_set():
                    return
                t = time.perf_counter()
                win = Window(cols.starts[j], rows.starts[i], cols.size, rows.size)
                raw = scene.read(win)
                valid = scene.read_valid(win, raw)
                stats.read_seconds += time.perf_counter() - t
                q.put((j, raw, valid))
        except BaseException as e:  # hand the error to the consumer
            q.put(e)

    th = threading.Thread(target=work, daemon=True, name="hsikit-reader")
    th.start()
    try:
        for _ in tiles:
            item = q.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while th.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                th.join(0.05)
