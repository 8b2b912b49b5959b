"""Writing a Sentinel-2 scene as a float32 reflectance COG (``hsikit s2 stack``), with an optional cloud mask."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from hsikit.errors import OptionError
from hsikit.io.scene import Scene
from hsikit.io.sentinel2 import Sentinel2Scene, reflectance
# ----------------------------------------------------------------------------------------------------------------
# writing a reflectance stack
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class StackResult:
    out: Path
    cloud_mask: Path | None
    bands: list[str]
    width: int
    height: int
    cloud_fraction: float | None
    valid_fraction: float


def write_reflectance(
    scene: Sentinel2Scene,
    out: str | Path,
    *,
    cloud_out: str | Path | None = None,
    fmt: str = "cog",
    overwrite: bool = False,
    block: int = 512,
    tags: dict[str, str] | None = None,
    on_window: Callable[[], None] | None = None,
) -> StackResult:
    """Write the scene's reflectance as float32 (NaN nodata, band names + wavelengths) and, with ``cloud_out``,
    a class map 1 clear / 2 cloud (cloud, shadow, cirrus) / 0 no data. ``on_window`` is called per window."""
    from hsikit.io.atomic import check_output
    from hsikit.io.legend import Legend
    from hsikit.io.writer import RasterWriter
    from hsikit.windows import iter_windows

    out = check_output(out, overwrite)
    if cloud_out is not None:
        cloud_out = check_output(cloud_out, overwrite)
        if Path(cloud_out).resolve() == Path(out).resolve():
            raise OptionError("the cloud mask must go to another file than the reflectance")
        if scene.cloud_source == "none":
            raise OptionError(f"{scene.name} has no SCL band or cloud mask to write")
    b = scene.bands
    all_tags = dict(tags or {})
    for key in ("ACQUISITION_DATE", "TILE_ID", "S2_LEVEL", "PROCESSING_BASELINE", "SPACECRAFT_NAME"):
        if scene.tags.get(key):
            all_tags.setdefault(key, scene.tags[key])
    band_tags = [{"wavelength": f"{b.wavelengths[i]:g}", "fwhm": f"{b.fwhm[i]:g}", "wavelength_units": "nm",
                  "band_name": b.names[i]} for i in range(b.count)]
    common = dict(width=scene.width, height=scene.height, crs=scene.crs, transform=scene.transform,
                  overwrite=overwrite, fmt=fmt)
    writer = RasterWriter(out, count=b.count, dtype="float32", nodata=float("nan"), kind="continuous",
                          band_descriptions=[b.describe(i) for i in range(b.count)], band_tags=band_tags,
                          tags=all_tags, **common)
    mask_writer = None
    if cloud_out is not None:
        mask_writer = RasterWriter(cloud_out, count=1, dtype="uint8", nodata=0, kind="categorical",
                                   legend=Legend.from_names(["clear", "cloud"], ["#8fd18f", "#f2f2f2"]),
                                   band_descriptions=["cloud mask"], tags=all_tags, **common)
    n_valid = n_cloud = 0
    from contextlib import ExitStack

    with ExitStack() as stack:
        stack.enter_context(writer)
        if mask_writer is not None:
            stack.enter_context(mask_writer)
        for w in iter_windows(scene.width, scene.height, block):
            refl = reflectance(scene, w)
            valid = ~np.isnan(refl).any(axis=0)
            writer.write(refl, w)
            n_valid += int(valid.sum())
            if mask_writer is not None:
                cloud = scene.cloud_mask(w) & valid
                n_cloud += int(cloud.sum())
                mask_writer.write(np.where(valid, np.where(cloud, 2, 1), 0).astype(np.uint8)[None], w)
            if on_window is not None:
                on_window()
    total = scene.width * scene.height
    return StackResult(Path(out), Path(cloud_out) if cloud_out else None, list(b.names), scene.width, scene.height,
                       (n_cloud / n_valid if n_valid else 0.0) if mask_writer is not None else None,
                       n_valid / total if total else 0.0)


def window_count(scene: Scene, block: int = 512) -> int:
    """How many windows :func:`write_reflectance` writes."""
    return math.ceil(scene.width / block) * math.ceil(scene.height / block)
