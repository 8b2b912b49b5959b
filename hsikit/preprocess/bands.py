"""Band selection: bad bands (file flags, water-vapour windows) and wavelength subsetting."""

from __future__ import annotations

from typing import Sequence

from hsikit.errors import BandMismatchError, OptionError
from hsikit.io.bandinfo import BandInfo

#: atmospheric water-vapour absorption windows (nm) where spaceborne/airborne reflectance is unusable
WATER_VAPOUR_WINDOWS: tuple[tuple[float, float], ...] = ((1340.0, 1460.0), (1790.0, 1960.0))


def _need_wavelengths(bands: BandInfo, what: str) -> tuple[float, ...]:
    if bands.wavelengths is None:
        raise BandMismatchError(f"{what} needs band wavelengths, and the scene has none")
    return bands.wavelengths


def bands_in_windows(bands: BandInfo, windows: Sequence[Sequence[float]]) -> list[int]:
    """0-based indices of bands whose centre lies inside any of the (lo, hi) nm windows."""
    wl = _need_wavelengths(bands, "dropping bands by wavelength")
    return [i for i, w in enumerate(wl) if any(lo <= w <= hi for lo, hi in windows)]


def bad_band_indices(bands: BandInfo, windows: Sequence[Sequence[float]] | None = WATER_VAPOUR_WINDOWS) -> list[int]:
    """Bands flagged bad in the file, plus (when wavelengths are known) those in ``windows``."""
    bad = {i for i, b in enumerate(bands.bad) if b}
    if windows and bands.wavelengths is not None:
        bad |= set(bands_in_windows(bands, windows))
    return sorted(bad)


def good_band_indices(bands: BandInfo, windows: Sequence[Sequence[float]] | None = WATER_VAPOUR_WINDOWS) -> list[int]:
    bad = set(bad_band_indices(bands, windows))
    keep = [i for i in range(bands.count) if i not in bad]
    if not keep:
        raise BandMismatchError("every band of the scene is flagged bad")
    return keep


def select_by_wavelength(bands: BandInfo, min_nm: float, max_nm: float) -> list[int]:
    """0-based indices of bands with min_nm <= centre <= max_nm."""
    if min_nm >= max_nm:
        raise OptionError(f"wavelength range {min_nm}-{max_nm} nm is empty")
    wl = _need_wavelengths(bands, "selecting bands by wavelength")
    idx = [i for i, w in enumerate(wl) if min_nm <= w <= max_nm]
    if not idx:
        raise BandMismatchError(f"no band lies in {min_nm:g}-{max_nm:g} nm (scene covers {min(wl):.0f}-{max(wl):.0f} nm)")
    return idx
