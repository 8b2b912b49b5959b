"""Tile sizes from a memory budget: the largest tiles whose model activations and engine buffers fit.

A model's activation memory is measured, not guessed: :func:`activation_probe` runs the network on two small
inputs while a function mode adds up the bytes of every tensor alive, and extrapolates per pixel.
:func:`plan_tile` then picks the largest tile (halos counted) whose activations, plus the engine's raw tiles,
features, outputs and accumulators, stay inside the budget; tiles are shrunk to split each axis evenly.
"""

from __future__ import annotations

import math
import os
import re
import weakref
from typing import Callable

from hsikit.errors import OptionError

#: kernels' own workspaces (im2col, oneDNN scratch) come on top of the tensors the tracker sees
WORKSPACE_FACTOR = 1.3
#: what the budget leaves to torch, GDAL's block cache and the interpreter when no figure is given
DEFAULT_SHARE_OF_RAM = 1 / 3

_UNITS = {"": None, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int | float, option: str = "--max-memory") -> int:
    """Bytes of a size such as ``8G``, ``1.5GiB``, ``512M`` or ``512MB`` (binary units); a bare number is refused
    because its unit would be a guess."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(text)
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", str(text), flags=re.IGNORECASE)
    if not m or (m.group(2) == "" and m.group(3) is None):
        raise OptionError(f"{option} {text!r}: give a size with a unit, e.g. 8G, 1.5GiB or 512M")
    unit = _UNITS[m.group(2).lower()] or 1
    n = int(float(m.group(1)) * unit)
    if n < 64 << 20:
        raise OptionError(f"{option} {text!r} is below 64 MiB; no model runs in that")
    return n


def total_ram() -> int:
    """Physical memory of this machine in bytes (or of the cgroup the process is confined to, when lower)."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            ram = min(ram, int(text))
    return ram


def default_budget() -> int:
    """The budget when ``--max-memory`` is not given: a third of the RAM."""
    return int(total_ram() * DEFAULT_SHARE_OF_RAM)


def format_size(n: float) -> str:
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n / 1024:.0f} KiB"


ModelBytes = Callable[[int, int], float]


def activation_probe(net, in_bands: int, size_multiple: int = 1) -> ModelBytes:
    """``bytes(h, w)``: the peak live tensor bytes of one inference call of ``net`` on a (1, in_bands, h, w) input,
    times :data:`WORKSPACE_FACTOR`, extrapolated from two real calls on small inputs along the line through them
    (convolutional networks' activations grow linearly with the pixels). The weights' values do not matter: an
    uninitialised copy will do."""
    m = max(1, int(size_multiple))
    sizes = [m * math.ceil(s / m) for s in (32, 64)]
    p0, p1 = (_peak(net, in_bands, s, s) for s in sizes)
    a0, a1 = sizes[0] ** 2, sizes[1] ** 2
    slope = max((p1 - p0) / (a1 - a0), 0.0)

    def estimate(h: int, w: int) -> float:
        a = (m * math.ceil(h / m)) * (m * math.ceil(w / m))  # the predictor pads to the multiple
        return (p1 + slope * (a - a1) if a > a1 else p1) * WORKSPACE_FACTOR

    return estimate


def _peak(net, in_bands: int, h: int, w: int) -> int:
    import torch

    was_training = net.training
    net.eval()
    try:
        with torch.inference_mode(), _LiveBytes() as live:
            net(torch.zeros(1, in_bands, h, w))
        return live.peak
    finally:
        net.train(was_training)


class _LiveBytes:
    """Peak bytes of the tensor storages that torch functions return inside the block and that are still
    referenced (views and in-place results share their base's storage). A function mode, not a dispatch mode:
    the latter costs a second of imports."""

    def __init__(self) -> None:
        from torch.overrides import TorchFunctionMode

        tracker = self

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker._track(out)
                return out

        self._mode = Mode()
        self._refs: dict[int, int] = {}  # storage identity -> tensors alive that use it
        self._size: dict[int, int] = {}
        self.live = self.peak = 0

    def __enter__(self) -> "_LiveBytes":
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)

    def _track(self, out) -> None:
        import torch

        items = out if isinstance(out, (tuple, list)) else (out,)
        for t in items:
            if not isinstance(t, torch.Tensor) or isinstance(t, torch.nn.Parameter):
                continue
            st = t.untyped_storage()
            addr, n = st._cdata, st.nbytes()  # the storage's identity, also for meta tensors (no data pointer)
            if n == 0:
                continue
            if addr not in self._refs:
                self._refs[addr], self._size[addr] = 0, n
                self.live += n
                self.peak = max(self.peak, self.live)
            self._refs[addr] += 1
            weakref.finalize(t, self._release, addr)

    def _release(self, addr: int) -> None:
        self._refs[addr] -= 1
        if self._refs[addr] == 0:
            self.live -= self._size.pop(addr)
            del self._refs[addr]


def plan_tile(height: int, width: int, *, budget: int, model: ModelBytes | None, in_bands: int, raw_itemsize: int,
              features: int, out_channels: int, overlap: Callable[[int], int], batch_size: int = 1,
              strip_width: int = 4096, size_multiple: int = 1, least: int = 64,
              largest: int | None = None) -> tuple[int, int]:
    """The largest tile (rows, cols) whose memory fits ``budget``: ``model`` activations for ``batch_size`` tiles
    (None: a pixel-local model fed in fixed chunks), the raw tiles in flight, the features and outputs of one
    batch, and the accumulators of one tile row across a strip of ``strip_width`` px. The whole scene when it
    fits; otherwise tiles shrunk so that each axis is split into equal parts, ``overlap(side)`` px apart.
    Tiles are at most ``largest`` px on a side when given. Refuses a budget that cannot hold a ``least``-px
    tile."""

    def need(th: int, tw: int) -> float:
        px = th * tw
        # raw tiles: queued (batch_size), being read, and the one being preprocessed; their masks
        raw = (batch_size + 2) * px * (in_bands * raw_itemsize + 1)
        # features: the batch in hand, the one in the making, and the stacked copy of a batch
        feats = (batch_size + 1 + (batch_size > 1) * batch_size) * px * features * 4
        outs = 2 * batch_size * px * out_channels * 4  # model output and the blend weights
        acc = th * min(width, strip_width) * (out_channels * 4 + 5)
        act = 0.0 if model is None else batch_size * model(th, tw)
        return raw + feats + outs + acc + act

    cap = largest or max(height, width)
    if height <= cap and width <= cap and need(height, width) <= budget:
        return height, width
    lo, hi = 1, min(max(height, width), cap)
    while lo < hi:  # largest square side t that fits
        t = (lo + hi + 1) // 2
        if need(min(t, height), min(t, width)) <= budget:
            lo = t
        else:
            hi = t - 1
    t = lo
    if t < least:
        raise OptionError(f"--max-memory {format_size(budget)} cannot hold even a {least}-px tile of this model "
                          f"({format_size(need(least, least))} needed); raise --max-memory or pass --tile")
    ov = overlap(t)
    return _even(height, t, ov, size_multiple, least), _even(width, t, ov, size_multiple, least)


def _even(length: int, t: int, overlap: int, multiple: int, least: int) -> int:
    """Shrink tile extent ``t`` (not below ``least``) so that as many tiles still cover ``length`` with
    ``overlap``, split evenly instead of a last tile that mostly repeats its neighbour."""
    if t >= length:
        return length
    n = math.ceil((length - overlap) / max(t - overlap, 1))
    size = math.ceil((length + (n - 1) * overlap) / n)
    if multiple > 1:
        size = min(t, multiple * math.ceil(size / multiple)) if size % multiple else size
    return max(min(size, t), min(least, t))
