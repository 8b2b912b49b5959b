"""Per-band metadata of a scene: names, wavelengths, FWHM, bad-band flags and value scaling."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Sequence

_MICRO_UNITS = {"micrometers", "micrometer", "microns", "micron", "um", "µm", "μm"}
_NANO_UNITS = {"nanometers", "nanometer", "nm"}


def to_nanometres(values: Sequence[float], units: str | None) -> tuple[float, ...]:
    """Convert wavelengths to nm. Missing or unrecognised units (ENVI's "Unknown") are guessed from the values:
    micrometres when every value is below 30."""
    vals = [float(v) for v in values]
    u = (units or "").strip().lower()
    if u in _NANO_UNITS:
        return tuple(vals)
    if u in _MICRO_UNITS or (vals and max(vals) < 30.0):
        return tuple(v * 1000.0 for v in vals)
    return tuple(vals)


@dataclass(frozen=True)
class BandInfo:
    """Metadata of the bands of a raster, in band order (0-based).

    Wavelengths and FWHM are always in nanometres; ``wavelength_units`` records what the input used so writers
    can say so. ``bad`` is True for a band flagged bad (ENVI ``bbl`` = 0). ``scale``/``offset`` give
    physical = stored * scale + offset (e.g. reflectance = DN * 1e-4), or are None when unknown.
    """

    names: tuple[str, ...]
    wavelengths: tuple[float, ...] | None = None
    fwhm: tuple[float, ...] | None = None
    bad: tuple[bool, ...] = ()
    scale: tuple[float, ...] | None = None
    offset: tuple[float, ...] | None = None
    wavelength_units: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        n = len(self.names)
        if not self.bad:
            object.__setattr__(self, "bad", (False,) * n)
        for attr in ("wavelengths", "fwhm", "bad", "scale", "offset"):
            v = getattr(self, attr)
            if v is not None and len(v) != n:
                raise ValueError(f"BandInfo.{attr} has {len(v)} entries for {n} bands")

    @property
    def count(self) -> int:
        return len(self.names)

    @classmethod
    def default(cls, count: int) -> "BandInfo":
        """Bands named ``band_1`` .. ``band_N`` with no spectral metadata."""
        return cls(names=tuple(f"band_{i + 1}" for i in range(count)))

    def subset(self, indices: Sequence[int]) -> "BandInfo":
        """Band metadata for ``indices`` (0-based), in that order."""
        idx = [int(i) for i in indices]

        def pick(seq):
            return None if seq is None else tuple(seq[i] for i in idx)

        return replace(
            self,
            names=tuple(self.names[i] for i in idx),
            wavelengths=pick(self.wavelengths),
            fwhm=pick(self.fwhm),
            bad=tuple(self.bad[i] for i in idx),
            scale=pick(self.scale),
            offset=pick(self.offset),
        )

    def good_indices(self) -> list[int]:
        return [i for i, b in enumerate(self.bad) if not b]

    def describe(self, i: int) -> str:
        """Band description for writers: ``<name> (<wavelength> nm)`` when the wavelength is known."""
        if self.wavelengths is None:
            return self.names[i]
        wl = self.wavelengths[i]
        wl_txt = f"{wl:.0f}" if abs(wl - round(wl)) < 0.05 else f"{wl:.1f}"
        return f"{self.names[i]} ({wl_txt} nm)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "names": list(self.names),
            "wavelengths": None if self.wavelengths is None else list(self.wavelengths),
            "fwhm": None if self.fwhm is None else list(self.fwhm),
            "bad": [bool(b) for b in self.bad],
            "scale": None if self.scale is None else list(self.scale),
            "offset": None if self.offset is None else list(self.offset),
            "wavelength_units": self.wavelength_units,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BandInfo":
        def tup(key):
            v = d.get(key)
            return None if v is None else tuple(v)

        return cls(
            names=tuple(d["names"]),
            wavelengths=tup("wavelengths"),
            fwhm=tup("fwhm"),
            bad=tuple(bool(b) for b in d.get("bad") or ()),
            scale=tup("scale"),
            offset=tup("offset"),
            wavelength_units=d.get("wavelength_units"),
        )
