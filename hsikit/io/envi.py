"""ENVI header fields that GDAL drops or reinterprets, parsed with ``spectral``'s header reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hsikit.errors import InputError


def find_header(path: str | Path) -> Path | None:
    """The ``.hdr`` of an ENVI data file (``x.hdr`` or ``x.bsq.hdr``), or the path itself if it is one."""
    p = Path(path)
    if p.suffix.lower() == ".hdr":
        return p if p.exists() else None
    for cand in (p.with_suffix(".hdr"), p.with_name(p.name + ".hdr"), p.with_suffix(".HDR")):
        if cand.exists():
            return cand
    return None


def data_file_for(header: Path) -> Path | None:
    """The data file beside an ENVI header (same stem, any or no extension)."""
    for ext in ("", ".bsq", ".bil", ".bip", ".img", ".dat", ".raw", ".BSQ", ".IMG", ".DAT"):
        cand = header.with_suffix(ext) if ext else header.with_suffix("")
        if cand.exists() and cand != header:
            return cand
    return None


def _floats(value: Any) -> list[float] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    return [float(v) for v in value]


def read_envi_metadata(header: str | Path) -> dict[str, Any]:
    """Spectral metadata of an ENVI header: wavelengths (as written), units, fwhm, bbl, band names,
    data ignore value and reflectance scale factor. Keys are absent when the header lacks them."""
    from spectral.io.envi import read_envi_header

    try:
        h = read_envi_header(str(header))
    except Exception as e:  # spectral raises its own error types for malformed headers
        raise InputError(f"cannot parse ENVI header {Path(header).name}: {e}") from None
    out: dict[str, Any] = {"bands": int(h["bands"]), "samples": int(h["samples"]), "lines": int(h["lines"])}
    if "wavelength" in h:
        out["wavelength"] = _floats(h["wavelength"])
    if "wavelength units" in h:
        out["wavelength_units"] = str(h["wavelength units"]).strip()
    if "fwhm" in h:
        out["fwhm"] = _floats(h["fwhm"])
    if "bbl" in h:
        out["bbl"] = [int(float(v)) for v in _floats(h["bbl"])]
    if "band names" in h:
        names = h["band names"]
        out["band_names"] = [names] if isinstance(names, str) else [str(n).strip() for n in names]
    if "data ignore value" in h:
        out["data_ignore_value"] = float(h["data ignore value"])
    if "reflectance scale factor" in h:
        out["reflectance_scale_factor"] = float(h["reflectance scale factor"])
    return out
