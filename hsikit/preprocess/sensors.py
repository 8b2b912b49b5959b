"""Spectral band definitions of common multispectral sensors (centre wavelength and FWHM, nm)."""

from __future__ import annotations

from dataclasses import dataclass

from hsikit.errors import OptionError


@dataclass(frozen=True)
class Sensor:
    name: str
    bands: tuple[str, ...]
    centers: tuple[float, ...]
    fwhm: tuple[float, ...]


# Sentinel-2A MSI (ESA spectral response summary; centre / bandwidth)
SENTINEL2 = Sensor(
    "sentinel2",
    ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"),
    (442.7, 492.4, 559.8, 664.6, 704.1, 740.5, 782.8, 832.8, 864.7, 945.1, 1373.5, 1613.7, 2202.4),
    (21.0, 66.0, 36.0, 31.0, 15.0, 15.0, 20.0, 106.0, 21.0, 20.0, 31.0, 91.0, 175.0),
)
# Landsat 8/9 OLI reflective bands (coastal .. SWIR2)
LANDSAT8 = Sensor(
    "landsat8",
    ("B1", "B2", "B3", "B4", "B5", "B6", "B7"),
    (443.0, 482.0, 561.5, 654.5, 865.0, 1608.5, 2200.5),
    (16.0, 60.0, 57.0, 37.0, 28.0, 85.0, 187.0),
)

SENSORS = {s.name: s for s in (SENTINEL2, LANDSAT8)}
_ALIASES = {"s2": "sentinel2", "sentinel-2": "sentinel2", "msi": "sentinel2", "landsat": "landsat8",
            "landsat9": "landsat8", "oli": "landsat8", "landsat-8": "landsat8"}


def get_sensor(name: str) -> Sensor:
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in SENSORS:
        raise OptionError(f"unknown sensor {name!r}; known: {', '.join(SENSORS)}")
    return SENSORS[key]


def canonical_band_name(name: str, sensor: Sensor = SENTINEL2) -> str | None:
    """The sensor's own spelling of a band name, or None when it is not one of its bands.

    Accepts the spellings found in real files: ``B2``, ``B02``, ``b02``, ``B8A``, ``B8a``, ``band_B04`` and the
    SAFE file suffixes (``T33UUU_20230603T101559_B04_10m`` gives ``B04``).
    """
    import re

    known = {b.upper(): b for b in sensor.bands}
    for m in re.finditer(r"(?<![A-Za-z0-9])B(\d{1,2})(A?)(?![0-9])", name.upper()):
        num, a = int(m.group(1)), m.group(2)
        cand = f"B{num}A" if a else f"B{num:02d}"
        if cand in known:
            return known[cand]
    return None


def find_bands(names: "tuple[str, ...] | list[str]", wanted: "tuple[str, ...] | list[str]",
               sensor: Sensor = SENTINEL2) -> list[int]:
    """0-based indices of ``wanted`` bands (sensor names) among ``names`` (any spelling), in ``wanted`` order.

    Raises :class:`OptionError` naming every missing band.
    """
    canon = [canonical_band_name(n, sensor) for n in names]
    idx, missing = [], []
    for w in wanted:
        key = canonical_band_name(w, sensor) or w
        if key in canon:
            idx.append(canon.index(key))
        else:
            missing.append(w)
    if missing:
        have = ", ".join(n for n in names) or "none"
        raise OptionError(f"missing band(s) {', '.join(missing)}; the input has {have}")
    return idx
