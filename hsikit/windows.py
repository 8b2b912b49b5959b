"""Block windows over a raster (row-major), shared by streaming passes."""

from __future__ import annotations

from typing import Iterator

from rasterio.windows import Window


def iter_windows(width: int, height: int, block: int = 512) -> Iterator[Window]:
    """Row-major ``block`` x ``block`` windows covering the raster; edge windows are smaller."""
    for r in range(0, height, block):
        for c in range(0, width, block):
            yield Window(c, r, min(block, width - c), min(block, height - r))
