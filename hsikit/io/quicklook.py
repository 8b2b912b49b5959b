"""PNG quicklooks of class maps and spectral cubes (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from hsikit.io.legend import Legend, hex_to_rgb


def _decimate(a: np.ndarray, max_size: int) -> np.ndarray:
    f = max(1, int(np.ceil(max(a.shape[-2:]) / max_size)))
    return a[..., ::f, ::f]


def _save(fig, png_path: Path) -> None:
    from hsikit.report import save_png

    save_png(fig, png_path, bbox_inches="tight")


def read_decimated(path: str | Path, max_size: int = 1024) -> np.ndarray:
    """Band 1 of a raster at most ``max_size`` px on a side, from its overviews (nearest), for quicklooks."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(path) as src:
        f = max(1, int(np.ceil(max(src.width, src.height) / max_size)))
        shape = (max(1, src.height // f), max(1, src.width // f))
        return src.read(1, out_shape=shape, resampling=Resampling.nearest)


def save_class_quicklook(class_map: np.ndarray, legend: Legend, png_path: str | Path, max_size: int = 1024) -> Path:
    """Class map (values 0..K, 0 = nodata, transparent) in the legend's colours, with a legend of class names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cm = _decimate(np.asarray(class_map), max_size)
    lut = np.zeros((max(legend.count + 1, int(cm.max()) + 1), 4), dtype=np.uint8)
    for i, c in enumerate(legend.colors):
        lut[i + 1] = (*hex_to_rgb(c), 255)
    rgba = lut[cm]
    h, w = cm.shape
    zoom = max(1.0, 400 / max(h, w))  # draw small maps at least 400 px across
    img_w, img_h, leg_w = w * zoom / 100, h * zoom / 100, 1.9
    fig = plt.figure(figsize=(img_w + leg_w, max(img_h, 0.22 * legend.count + 0.4)))
    split = img_w / (img_w + leg_w)
    ax = fig.add_axes([0, 0, split, 1])
    ax.imshow(rgba, interpolation="nearest")
    ax.set_axis_off()
    handles = [Patch(color=c, label=n) for n, c in zip(legend.names, legend.colors)]
    fig.legend(handles=handles, loc="center left", bbox_to_anchor=(split, 0.5), frameon=False, fontsize=8)
    _save(fig, Path(png_path))
    return Path(png_path)


def save_rgb_quicklook(cube: np.ndarray, rgb: Sequence[int], png_path: str | Path, max_size: int = 1024,
                       valid: np.ndarray | None = None) -> Path:
    """True/false-colour composite of bands ``rgb`` with a 2-98 % stretch; invalid pixels transparent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = _decimate(np.asarray(cube, dtype=np.float64)[list(rgb)], max_size)
    ok = np.isfinite(img).all(axis=0)
    if valid is not None:
        ok &= _decimate(valid, max_size)
    out = np.zeros((*img.shape[1:], 4))
    for c in range(3):
        band = img[c]
        lo, hi = np.percentile(band[ok], (2, 98)) if ok.any() else (0.0, 1.0)
        out[..., c] = np.clip((band - lo) / max(hi - lo, 1e-12), 0, 1)
    out[..., 3] = ok
    h, w = ok.shape
    fig = plt.figure(figsize=(max(2.0, w / 100), max(2.0, h / 100)))
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(out, interpolation="nearest")
    ax.set_axis_off()
    _save(fig, Path(png_path))
    return Path(png_path)
