"""Tiny generated scenes for tests (TorchGeo style: tests make their own fake data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

UTM33 = CRS.from_epsg(32633)


def fake_cube(bands: int = 12, height: int = 40, width: int = 50, seed: int = 0, dtype: str = "float32") -> np.ndarray:
    """Smooth random spectra on a blocky class layout, shape (bands, height, width)."""
    rng = np.random.default_rng(seed)
    n_cls = 4
    proto = rng.uniform(0.05, 0.6, size=(n_cls, bands))
    yy, xx = np.mgrid[0:height, 0:width]
    classes = ((yy // 10) + (xx // 13)) % n_cls
    cube = proto[classes].transpose(2, 0, 1) + rng.normal(0, 0.01, size=(bands, height, width))
    if np.issubdtype(np.dtype(dtype), np.integer):
        return np.round(cube * 10000).astype(dtype)
    return cube.astype(dtype)


def fake_wavelengths(bands: int) -> np.ndarray:
    return np.linspace(420.0, 2400.0, bands)


def write_fake_geotiff(
    path: Path,
    *,
    bands: int = 12,
    height: int = 40,
    width: int = 50,
    dtype: str = "float32",
    nodata: float | None = -9999.0,
    crs: CRS | None = UTM33,
    transform=None,
    seed: int = 0,
    nodata_border: int = 0,
    wavelengths: bool = True,
) -> Path:
    """Write a fake scene with per-band ``wavelength``/``fwhm`` metadata (EnMAP-Box/GDAL style)."""
    data = fake_cube(bands, height, width, seed, dtype)
    if nodata_border and nodata is not None:
        b = nodata_border
        data[:, :b, :] = nodata
        data[:, :, :b] = nodata
    transform = transform if transform is not None else from_origin(366000.0, 5810000.0, 30.0, 30.0)
    profile = dict(driver="GTiff", width=width, height=height, count=bands, dtype=dtype, nodata=nodata,
                   transform=transform, tiled=True, blockxsize=16, blockysize=16)
    if crs is not None:
        profile["crs"] = crs
    wl = fake_wavelengths(bands)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i in range(bands):
            dst.set_band_description(i + 1, f"band {i + 1}")
            if wavelengths:
                dst.update_tags(i + 1, wavelength=f"{wl[i]:.2f}", fwhm="10.0", wavelength_units="Nanometers")
    return Path(path)


def write_labels_for(scene_path: Path, out: Path) -> Path:
    """Label raster from the fake cube's block layout (classes 1..4), every 3rd pixel labelled."""
    with rasterio.open(scene_path) as src:
        h, w, profile = src.height, src.width, src.profile
    yy, xx = np.mgrid[0:h, 0:w]
    labels = (((yy // 10) + (xx // 13)) % 4 + 1).astype("uint8")
    labels[(yy + xx) % 3 != 0] = 0
    profile.update(count=1, dtype="uint8", nodata=0)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(labels, 1)
    return out
