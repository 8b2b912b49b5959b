"""Band grids of the datasets published weights were trained on, and ``--wavelengths`` parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hsikit.errors import OptionError
from hsikit.io.bandinfo import BandInfo


def _even(first: float, last: float, n: int, fwhm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    wl = np.linspace(first, last, n)
    return wl, np.full(n, fwhm if fwhm is not None else (last - first) / (n - 1))


#: name -> (centre wavelengths nm, FWHM nm, what it is)
BAND_GRIDS: dict[str, tuple[np.ndarray, np.ndarray, str]] = {
    "icvl": (*_even(400, 700, 31), "ICVL natural scenes (Specim PS Kappa DX4), 31 bands 400-700 nm"),
    "cave": (*_even(400, 700, 31), "CAVE multispectral images, 31 bands 400-700 nm"),
    "harvard": (*_even(420, 720, 31), "Harvard real-world hyperspectral images, 31 bands 420-720 nm"),
    "chikusei": (*_even(363, 1018, 128), "Chikusei airborne scene (Headwall Hyperspec-VNIR-C), 128 bands 363-1018 nm"),
    "pavia-university": (*_even(430, 860, 103), "Pavia University (ROSIS-03), 103 bands 430-860 nm"),
    "sentinel2-12": (np.array([443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1610, 2190], float),
                     np.array([20, 65, 35, 30, 15, 15, 20, 115, 20, 20, 90, 180], float),
                     "Sentinel-2 MSI, the 12 bands B01-B12 with B8A and without B10 (SpectralGPT's)"),
}
#: band names of grids whose bands have names of their own
_GRID_NAMES = {"sentinel2-12": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")}


def band_grid(spec: str | None) -> tuple[BandInfo, str] | None:
    """(bands, description) from a known grid name, ``FIRST:LAST:STEP`` or a comma list in nm, or a file whose
    band wavelengths hsikit reads (ENVI header, GeoTIFF…); None for None."""
    if spec is None:
        return None
    key = spec.strip().lower()
    if key in BAND_GRIDS:
        wl, fwhm, what = BAND_GRIDS[key]
        return _bands(wl, fwhm, _GRID_NAMES.get(key)), what
    if ":" in key and not Path(spec).exists():
        try:
            first, last, step = (float(v) for v in key.split(":"))
        except ValueError:
            raise OptionError(f"--wavelengths {spec!r}: expected FIRST:LAST:STEP in nm") from None
        if step <= 0 or last < first:
            raise OptionError(f"--wavelengths {spec!r}: STEP must be positive and LAST at least FIRST")
        wl = np.arange(first, last + step / 2, step)
        return _bands(wl, np.full(wl.size, step)), f"{wl.size} bands {first:g}-{wl[-1]:g} nm"
    if "," in key and not Path(spec).exists():
        try:
            wl = np.array([float(v) for v in key.split(",") if v.strip()])
        except ValueError:
            raise OptionError(f"--wavelengths {spec!r}: expected numbers in nm separated by commas") from None
        if wl.size < 1 or np.any(np.diff(wl) <= 0):
            raise OptionError(f"--wavelengths {spec!r}: wavelengths must increase")
        fwhm = np.gradient(wl) if wl.size > 1 else np.full(1, 10.0)
        return _bands(wl, fwhm), f"{wl.size} bands {wl[0]:g}-{wl[-1]:g} nm"
    p = Path(spec)
    if p.exists():
        from hsikit.io.open import open_scene

        with open_scene(p) as sc:
            if sc.bands.wavelengths is None:
                raise OptionError(f"--wavelengths {p.name}: the file has no band wavelengths")
            return sc.bands, f"the {sc.count} bands of {p.name}"
    raise OptionError(f"--wavelengths {spec!r}: not a known grid ({', '.join(BAND_GRIDS)}), FIRST:LAST:STEP, "
                      "a comma list or a file")


def _bands(wl: np.ndarray, fwhm: np.ndarray, names: tuple[str, ...] | None = None) -> BandInfo:
    return BandInfo(names=names or tuple(f"{w:g} nm" for w in wl), wavelengths=tuple(float(w) for w in wl),
                    fwhm=tuple(float(f) for f in fwhm))
