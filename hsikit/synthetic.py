"""Physically plausible synthetic hyperspectral scenes (for the embedded sample, tests and benchmarks).

Reflectance spectra of seven materials are built from smooth analytic shapes with their diagnostic features
(chlorophyll absorption and red edge of vegetation, leaf-water bands, clay and iron features of soil, iron-oxide
edge of red tiles, hydrocarbon features of asphalt, dark water). A procedural landscape (river, forest, fields,
roads, a built-up block) gives abundance maps that are slightly blurred so boundary pixels are mixtures.
Sensor noise falls with SNR (lower in the SWIR); the atmospheric water-vapour bands are nearly dark and noisy and
flagged bad. Values are stored as int16 reflectance x 10000 with a swath-edge nodata border.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin

from hsikit.preprocess.bands import WATER_VAPOUR_WINDOWS

CLASS_NAMES = ["water", "trees", "grassland", "bare soil", "red-tile roof", "concrete roof", "asphalt"]
CLASS_COLORS = ["#1f5fbf", "#1b7a2f", "#8fd14f", "#a8743a", "#c8442d", "#b5b5b5", "#3c3c3c"]
NODATA = -9999
SCALE = 1e-4


def wavelength_grid() -> tuple[np.ndarray, np.ndarray]:
    """103 bands: 400-1000 nm every 15 nm (FWHM 12), 1020-2484 nm every 24 nm (FWHM 18)."""
    vnir = np.arange(400.0, 1000.0 + 1, 15.0)
    swir = np.arange(1020.0, 2500.0, 24.0)
    wl = np.concatenate([vnir, swir])
    return wl, np.where(wl <= 1000, 12.0, 18.0)


def _g(wl, c, w):
    return np.exp(-0.5 * ((wl - c) / w) ** 2)


def _dips(wl, dips):
    out = np.ones_like(wl)
    for c, w, d in dips:
        out *= 1 - d * _g(wl, c, w)
    return out


_LEAF_WATER = [(970, 25, 0.06), (1200, 40, 0.12), (1450, 60, 0.45), (1940, 70, 0.55), (2500, 200, 0.3)]


def _vegetation(wl, nir, red, green, swir_level):
    edge = 1 / (1 + np.exp(-(wl - 715) / 13))
    vis = 0.035 + green * _g(wl, 550, 30) - red * _g(wl, 675, 25)
    swir = 1 - (1 - swir_level) * np.clip((wl - 1300) / 1200, 0, 1)
    return (vis * (1 - edge) + nir * edge * swir) * _dips(wl, _LEAF_WATER)


def _soil(wl, level, clay):
    base = 0.08 + level * (1 - np.exp(-(wl - 380) / 650))
    return base * _dips(wl, [(900, 60, 0.06), (1420, 40, 0.1), (1920, 50, 0.12), (2205, 25, clay)])


def material_spectra(wl: np.ndarray, variant: int = 0) -> np.ndarray:
    """Reflectance (7, bands) of the classes for variant 0 or 1 (e.g. denser vs sparser canopy, drier soil)."""
    v = variant
    water = 0.015 + 0.05 * np.exp(-((wl - 430) / 160) ** 2) + 0.012 * _g(wl, 560, 40) * (1 + v)
    water = water * (1 / (1 + np.exp((wl - 760) / 40))) + 0.004
    trees = _vegetation(wl, nir=0.42 - 0.06 * v, red=0.02, green=0.045, swir_level=0.35)
    grass = _vegetation(wl, nir=0.36 + 0.05 * v, red=0.015 - 0.005 * v, green=0.06, swir_level=0.55)
    soil = _soil(wl, level=0.30 + 0.07 * v, clay=0.12 + 0.04 * v)
    tile_roof = (0.06 + 0.30 / (1 + np.exp(-(wl - 585) / 25)) + 0.08 * np.clip((wl - 700) / 1800, 0, 1)) * _dips(
        wl, [(880, 70, 0.08 + 0.03 * v)])
    concrete = (0.24 + 0.05 * v + 0.09 * np.clip((wl - 400) / 2100, 0, 1) - 0.05 * _g(wl, 420, 40)) * _dips(
        wl, [(2340, 30, 0.08)])
    asphalt = (0.05 + 0.02 * v + 0.08 * np.clip((wl - 400) / 2100, 0, 1)) * _dips(wl, [(1730, 25, 0.08), (2310, 30, 0.1)])
    return np.stack([water, trees, grass, soil, tile_roof, concrete, asphalt])


def _smooth_field(shape, rng, sigma):
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
    return (f - f.min()) / max(np.ptp(f), 1e-12)


def _layout(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Class index map (0..6) of a small landscape."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    # fields: Voronoi cells of grassland / bare soil / trees
    n_seeds = max(6, h * w // 2500)
    seeds = rng.uniform(0, 1, (n_seeds, 2)) * (h, w)
    owner = np.argmin((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2, axis=-1)
    cell_class = rng.choice([1, 2, 2, 3, 3], size=n_seeds)
    cls = cell_class[owner]
    # built-up block in the upper left: roofs on a street grid
    bh, bw = int(h * 0.4), int(w * 0.4)
    block = (yy < bh) & (xx < bw)
    cls[block] = 6
    for r0 in range(4, bh - 6, 14):
        for c0 in range(4, bw - 6, 12):
            rh, rw = rng.integers(6, 11), rng.integers(5, 9)
            cls[r0 : min(r0 + rh, bh), c0 : min(c0 + rw, bw)] = rng.choice([4, 5])
    # roads
    road_y = int(h * 0.62)
    cls[road_y : road_y + 3, :] = 6
    road_x = int(w * 0.7)
    cls[:, road_x : road_x + 3] = 6
    # river
    centre = w * 0.5 + 0.12 * w * np.sin(yy / (h / 5.0))
    cls[np.abs(xx - centre) < max(3, w * 0.03)] = 0
    return cls


@dataclass
class SyntheticScene:
    cube: np.ndarray  # int16 (bands, H, W), reflectance x 10000, NODATA outside the swath
    labels: np.ndarray  # uint8 (H, W), 1..7, 0 on nodata
    wavelengths: np.ndarray
    fwhm: np.ndarray
    bad: np.ndarray  # bool per band
    transform: Affine
    crs: CRS
    class_names: list[str]
    class_colors: list[str]
    nodata: int = NODATA


def bad_bands(wl: np.ndarray) -> np.ndarray:
    return np.array([any(lo <= w <= hi for lo, hi in WATER_VAPOUR_WINDOWS) for w in wl])


def _atmosphere(wl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(transmission-like factor, SNR) per band: water-vapour bands are nearly dark with very low SNR."""
    bad = bad_bands(wl)
    factor = np.where(bad, 0.05, 1.0)
    snr = np.where(wl <= 1000, 350.0, 150.0) * np.where(bad, 0.1, 1.0)
    return factor, snr


def make_scene(height: int = 200, width: int = 200, seed: int = 0) -> SyntheticScene:
    """A synthetic hyperspectral scene with mixed boundary pixels, noise, bad bands and a nodata swath edge."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    wl, fwhm = wavelength_grid()
    cls = _layout(height, width, rng)
    k = len(CLASS_NAMES)
    abund = np.stack([gaussian_filter((cls == i).astype(np.float64), 0.8) for i in range(k)])
    abund /= abund.sum(axis=0, keepdims=True)
    spec_a, spec_b = material_spectra(wl, 0), material_spectra(wl, 1)
    t = _smooth_field((height, width), rng, 6.0)
    bright = 1 + 0.08 * (_smooth_field((height, width), rng, 3.0) - 0.5)
    refl = np.einsum("khw,kb->bhw", abund * (1 - t), spec_a) + np.einsum("khw,kb->bhw", abund * t, spec_b)
    refl *= bright
    factor, snr = _atmosphere(wl)
    refl = refl * factor[:, None, None]
    refl += rng.normal(size=refl.shape) * (0.3 / snr)[:, None, None] * np.sqrt(np.clip(refl, 1e-3, None) / 0.3)
    cube = np.clip(np.round(refl / SCALE), -1000, 15000).astype(np.int16)
    yy, xx = np.mgrid[0:height, 0:width]
    outside = xx < 6 + 0.06 * yy  # slanted swath edge
    cube[:, outside] = NODATA
    labels = (cls + 1).astype(np.uint8)
    labels[outside] = 0
    return SyntheticScene(cube, labels, wl, fwhm, bad_bands(wl), from_origin(368010.0, 5812020.0, 30.0, 30.0),
                          CRS.from_epsg(32633), list(CLASS_NAMES), list(CLASS_COLORS))


def _band_meta(dst, wl, fwhm, bad) -> None:
    for i in range(len(wl)):
        dst.set_band_description(i + 1, f"band {i + 1} ({wl[i]:.0f} nm)")
        dst.update_tags(i + 1, wavelength=f"{wl[i]:g}", fwhm=f"{fwhm[i]:g}", wavelength_units="Nanometers",
                        bbl="0" if bad[i] else "1")


def write_scene_geotiff(s: SyntheticScene, path: str | Path) -> Path:
    """Tiled DEFLATE GeoTIFF with wavelengths, FWHM, bad-band flags and the 1e-4 reflectance scale."""
    import rasterio

    b, h, w = s.cube.shape
    with rasterio.open(path, "w", driver="GTiff", width=w, height=h, count=b, dtype="int16", crs=s.crs,
                       transform=s.transform, nodata=s.nodata, tiled=True, blockxsize=128, blockysize=128,
                       compress="deflate", predictor=2, zlevel=9, interleave="pixel") as dst:
        dst.write(s.cube)
        _band_meta(dst, s.wavelengths, s.fwhm, s.bad)
        dst.scales = (SCALE,) * b
        dst.offsets = (0.0,) * b
        dst.update_tags(SENSOR="hsikit synthetic (EnMAP-like sampling)", DESCRIPTION="synthetic sample scene")
    return Path(path)


def write_labels(s: SyntheticScene, raster_path: str | Path, gpkg_path: str | Path) -> None:
    """Label raster (uint8, colour table, class names in tags) and the same labels as GeoPackage polygons."""
    import json

    import pyogrio.raw
    import rasterio
    from rasterio.features import shapes
    from shapely.geometry import shape as to_shape

    from hsikit.io.legend import Legend

    h, w = s.labels.shape
    with rasterio.open(raster_path, "w", driver="GTiff", width=w, height=h, count=1, dtype="uint8", crs=s.crs,
                       transform=s.transform, nodata=0, tiled=True, blockxsize=128, blockysize=128,
                       compress="deflate", predictor=2) as dst:
        dst.write(s.labels, 1)
        dst.write_colormap(1, Legend.from_names(s.class_names, s.class_colors).colormap())
        dst.set_band_description(1, "class")
        dst.update_tags(HSIKIT_CLASS_NAMES=json.dumps(s.class_names), HSIKIT_CLASS_COLORS=json.dumps(s.class_colors))
    geoms, ids, names = [], [], []
    for geom, value in shapes(s.labels, mask=s.labels > 0, transform=s.transform):
        geoms.append(to_shape(geom).wkb)
        ids.append(int(value))
        names.append(s.class_names[int(value) - 1])
    pyogrio.raw.write(str(gpkg_path), np.array(geoms, dtype=object),
                      [np.array(ids, dtype=np.int32), np.array(names, dtype=object)], ["class_id", "class_name"],
                      driver="GPKG", geometry_type="Polygon", crs=s.crs.to_string(), layer="labels")


def make_large_scene_file(path: str | Path, height: int, width: int, bands: int = 100, seed: int = 0,
                          block: int = 512) -> Path:
    """A big scene written block by block in bounded memory (uncompressed tiled int16, for benchmarks).

    The layout is a cheap procedural pattern of the seven materials (blocks of varying size), resampled to
    ``bands`` bands over 400-2500 nm, with noise; no blurring across blocks.
    """
    import rasterio
    from rasterio.windows import Window

    wl = np.linspace(400.0, 2500.0, bands)
    fwhm = np.full(bands, float(np.diff(wl).mean()) if bands > 1 else 10.0)
    spec = material_spectra(wl, 0)
    factor, snr = _atmosphere(wl)
    spec = (spec * factor).astype(np.float32)
    sigma = (0.3 / snr).astype(np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=bands, dtype="int16",
                       crs=CRS.from_epsg(32633), transform=from_origin(400000.0, 5800000.0, 30.0, 30.0),
                       nodata=NODATA, tiled=True, blockxsize=block, blockysize=block, interleave="band",
                       bigtiff="IF_SAFER") as dst:
        for r in range(0, height, block):
            for c in range(0, width, block):
                h, w = min(block, height - r), min(block, width - c)
                rng = np.random.default_rng([seed, r, c])
                yy, xx = np.mgrid[r : r + h, c : c + w]
                cls = ((yy // 23) * 7 + (xx // 31) * 3 + (yy // 97) + (xx // 61)) % len(CLASS_NAMES)
                refl = spec[cls].transpose(2, 0, 1)
                refl = refl + rng.standard_normal(refl.shape, dtype=np.float32) * sigma[:, None, None]
                dst.write(np.clip(np.round(refl / SCALE), -1000, 15000).astype(np.int16), window=Window(c, r, w, h))
        _band_meta(dst, wl, fwhm, bad_bands(wl))
        dst.scales = (SCALE,) * bands
        dst.offsets = (0.0,) * bands
    return Path(path)
