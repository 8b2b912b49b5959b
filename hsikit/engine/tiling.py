"""Tile layout along one axis, blend weights, and the super-column partition of wide scenes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIGHT_FLOOR = 1e-6


@dataclass(frozen=True)
class AxisPlan:
    """Tile starts along one axis; every tile has extent ``size`` (``min(tile, length)``)."""

    length: int
    size: int
    starts: tuple[int, ...]

    def overlap_before(self, i: int) -> int:
        return self.starts[i - 1] + self.size - self.starts[i] if i > 0 else 0

    def overlap_after(self, i: int) -> int:
        return self.starts[i] + self.size - self.starts[i + 1] if i + 1 < len(self.starts) else 0


def plan_axis(length: int, tile: int, overlap: int) -> AxisPlan:
    """Starts 0, stride, 2*stride, ... with the last tile shifted inward to end exactly at the edge."""
    size = min(tile, length)
    if size == length:
        return AxisPlan(length, size, (0,))
    stride = tile - overlap
    starts = list(range(0, length - size, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return AxisPlan(length, size, tuple(starts))


def axis_weights(size: int, before: int, after: int, margin: int) -> np.ndarray:
    """1-D weights of a tile: ``margin`` discarded and a raised-cosine ramp over the rest of the overlap on each
    side that has a neighbour (``before``/``after`` = overlap in px, 0 at the scene edge); flat elsewhere."""
    r = np.ones(size, dtype=np.float64)
    for ov, side in ((before, 0), (after, 1)):
        if ov <= 0:
            continue
        ramp = max(ov - 2 * margin, 0)
        k = np.arange(ramp)
        rise = np.sin(0.5 * np.pi * (k + 0.5) / ramp) ** 2 if ramp else np.empty(0)
        seg = np.concatenate([np.zeros(margin), rise])
        seg = np.maximum(seg, 0) + np.where(np.arange(seg.size) >= margin, WEIGHT_FLOOR, 0.0)
        n = min(seg.size, size)
        if side == 0:
            r[:n] = np.minimum(r[:n], seg[:n])
        else:
            r[size - n:] = np.minimum(r[size - n:], seg[:n][::-1])
    return r


def column_groups(plan: AxisPlan, max_width: int) -> list[tuple[int, int, int, int]]:
    """Split tile columns into super-columns of at most ``max_width`` px, each computing its own tiles.

    Returns (first_tile, last_tile, own_start, own_end) per group: the group computes tiles first..last and emits
    the pixel columns [own_start, own_end). The columns where a group's last tile overlaps the next group's first
    tile are emitted by the next group, which adds the sums the previous group carried over for them (the engine's
    ``_Carry``), so no tile is computed twice. Needs overlap <= stride.
    """
    n = len(plan.starts)
    if n <= 2 or plan.starts[-1] + plan.size <= max_width:
        return [(0, n - 1, 0, plan.length)]
    stride = plan.starts[1] - plan.starts[0]
    per = max(2, (max_width - plan.size) // stride + 1)
    groups, a = [], 0
    while True:
        b = min(a + per - 1, n - 1)
        if n - 1 - b < 2:  # never leave the inward-shifted last tile alone in a group
            b = n - 1
        own_start = 0 if a == 0 else plan.starts[a]
        own_end = plan.length if b == n - 1 else plan.starts[b + 1]
        groups.append((a, b, own_start, own_end))
        if b == n - 1:
            return groups
        a = b + 1
