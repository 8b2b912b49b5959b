"""Vegetation indices on Sentinel-2 surface reflectance, with a registry keyed by index name.

Every index takes reflectances in [0, 1] (L2A digital numbers / 10000, minus the +1000 offset of processing
baseline >= 04.00) and works on numpy arrays, dask arrays and xarray DataArrays alike: only element-wise
ufuncs are used, so dask/xarray inputs stay lazy. Denominators are kept at least ``EPS`` = 1e-4 away from zero
with their sign kept (:func:`safe_divide`), so water, shadow or nodata never produce inf; NaN propagates.

Sentinel-2 bands used (MSI centre wavelengths): B02 490 nm (blue), B03 560 (green), B04 665 (red),
B05 705 / B06 740 / B07 783 (red edge), B08 842 (NIR, 10 m), B8A 865 (narrow NIR, 20 m). Indices that need
"NIR" take B08 and fall back to B8A (or use B8A when asked, to stay at 20 m with B05).

>>> import numpy as np
>>> float(compute_index("ndvi", {"B04": np.float32(0.05), "B08": np.float32(0.45)}))  # doctest: +ELLIPSIS
0.8...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from hsikit.errors import BandMismatchError, OptionError

#: denominator floor: ratios such as TCARI/OSAVI are undefined where red reflectance nears 0 (water, shadow)
EPS = 1e-4

#: Sentinel-2 band names per spectral role; the first present is used ("nir": B08, else B8A)
ROLES: dict[str, tuple[str, ...]] = {
    "blue": ("B02",),
    "green": ("B03",),
    "red": ("B04",),
    "re1": ("B05",),
    "re2": ("B06",),
    "re3": ("B07",),
    "nir": ("B08", "B8A"),
}


def safe_divide(num: Any, den: Any, eps: float = EPS) -> Any:
    """``num / den`` with ``|den|`` floored at ``eps`` (sign kept; an exact 0 counts as positive)."""
    return num / np.copysign(np.maximum(np.abs(den), eps), den)


# -- the indices -----------------------------------------------------------------------------------------------------
def ndvi(nir: Any, red: Any) -> Any:
    """NDVI = (NIR − Red) / (NIR + Red) (Rouse et al. 1974)."""
    return safe_divide(nir - red, nir + red)


def ndre(nir: Any, re1: Any) -> Any:
    """NDRE = (NIR − RE1) / (NIR + RE1), RE1 = B05 705 nm (Barnes et al. 2000)."""
    return safe_divide(nir - re1, nir + re1)


def gndvi(nir: Any, green: Any) -> Any:
    """GNDVI = (NIR − Green) / (NIR + Green) (Gitelson, Kaufman & Merzlyak 1996)."""
    return safe_divide(nir - green, nir + green)


def evi(nir: Any, red: Any, blue: Any) -> Any:
    """EVI = 2.5 (NIR − Red) / (NIR + 6 Red − 7.5 Blue + 1) (Huete et al. 2002)."""
    return 2.5 * safe_divide(nir - red, nir + 6.0 * red - 7.5 * blue + 1.0)


def savi(nir: Any, red: Any, L: float = 0.5) -> Any:
    """SAVI = (1 + L)(NIR − Red) / (NIR + Red + L), L = 0.5 (Huete 1988)."""
    return (1.0 + L) * safe_divide(nir - red, nir + red + L)


def osavi(nir: Any, red: Any) -> Any:
    """OSAVI = 1.16 (NIR − Red) / (NIR + Red + 0.16) (Rondeaux, Steven & Baret 1996)."""
    return 1.16 * safe_divide(nir - red, nir + red + 0.16)


def mcari(re1: Any, red: Any, green: Any) -> Any:
    """MCARI = [(R705 − R665) − 0.2 (R705 − R560)] · (R705 / R665) (Daughtry et al. 2000)."""
    return ((re1 - red) - 0.2 * (re1 - green)) * safe_divide(re1, red)


def tcari(re1: Any, red: Any, green: Any) -> Any:
    """TCARI = 3 [(R705 − R665) − 0.2 (R705 − R560)(R705 / R665)] (Haboudane et al. 2002)."""
    return 3.0 * ((re1 - red) - 0.2 * (re1 - green) * safe_divide(re1, red))


def mcari_osavi(re1: Any, red: Any, green: Any, nir: Any) -> Any:
    """MCARI / OSAVI, chlorophyll with less soil sensitivity (Daughtry et al. 2000)."""
    return safe_divide(mcari(re1, red, green), osavi(nir, red))


def tcari_osavi(re1: Any, red: Any, green: Any, nir: Any) -> Any:
    """TCARI / OSAVI, leaf chlorophyll proxy nearly insensitive to LAI and soil (Haboudane et al. 2002)."""
    return safe_divide(tcari(re1, red, green), osavi(nir, red))


def psri(red: Any, blue: Any, re2: Any) -> Any:
    """PSRI = (R665 − R490) / R740, plant senescence (carotenoid/chlorophyll) index (Merzlyak et al. 1999;
    Sentinel-2 form with B06 for R750)."""
    return safe_divide(red - blue, re2)


def cire(re3: Any, re1: Any) -> Any:
    """CIre = R783 / R705 − 1, red-edge chlorophyll index (Gitelson et al. 2003; S-2 form B07/B05)."""
    return safe_divide(re3, re1) - 1.0


def wdvi(nir: Any, red: Any, slope: float = 1.0) -> Any:
    """WDVI = NIR − c · Red, c = soil-line slope NIR_soil / Red_soil (Clevers 1988, 1989)."""
    return nir - slope * red


def clair_lai(nir: Any, red: Any, slope: float = 1.0, alpha: float = 0.4, wdvi_inf: float = 0.6,
              max_ratio: float = 0.99) -> Any:
    """LAI from WDVI by the CLAIR model: LAI = −(1/α) ln(1 − WDVI / WDVI∞) (Clevers 1989).

    The ratio WDVI / WDVI∞ is clipped to [0, ``max_ratio``] (negative WDVI is soil: LAI 0; ratios near 1
    saturate). α = 0.4 and WDVI∞ = 0.6 are generic defaults (the FFDNN paper's constants are
    unknown; crop-specific calibrations differ).
    """
    ratio = np.minimum(np.maximum(wdvi(nir, red, slope) / wdvi_inf, 0.0), max_ratio)
    return -np.log1p(-ratio) / alpha


def lcc_feature(re1: Any, red: Any, green: Any, nir: Any, floor: float = 1e-3) -> Any:
    """−ln(TCARI/OSAVI): a leaf-chlorophyll feature, increasing with chlorophyll content (FFDNN's LCC input).

    TCARI/OSAVI falls with chlorophyll (Haboudane et al. 2002 calibrate Cab ≈ a·ln(TCARI/OSAVI) + b with a < 0);
    the negative logarithm keeps that monotone relation without inventing calibration constants (the affine
    part is absorbed by the per-feature standardisation). Ratios below ``floor`` (dense green canopies,
    shadows) are clipped there before the logarithm.
    """
    return -np.log(np.maximum(tcari_osavi(re1, red, green, nir), floor))


# -- registry --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexSpec:
    """A registered index: its function, the spectral roles it needs (see :data:`ROLES`), its formula and
    reference, and the keyword parameters it accepts (with defaults)."""

    name: str
    func: Callable[..., Any]
    roles: tuple[str, ...]
    formula: str
    reference: str
    params: dict[str, float] = field(default_factory=dict)

    def bands(self, nir: str | None = None) -> tuple[str, ...]:
        """Default Sentinel-2 band names this index reads (NIR: ``nir`` or B08)."""
        return tuple((nir or ROLES[r][0]) if r == "nir" else ROLES[r][0] for r in self.roles)


INDICES: dict[str, IndexSpec] = {}


def _register(name: str, func: Callable[..., Any], roles: tuple[str, ...], formula: str, reference: str,
              **params: float) -> None:
    INDICES[name] = IndexSpec(name, func, roles, formula, reference, dict(params))


_register("ndvi", ndvi, ("nir", "red"), "(B08 − B04) / (B08 + B04)", "Rouse et al. 1974")
_register("ndre", ndre, ("nir", "re1"), "(B08 − B05) / (B08 + B05)", "Barnes et al. 2000")
_register("gndvi", gndvi, ("nir", "green"), "(B08 − B03) / (B08 + B03)", "Gitelson et al. 1996")
_register("evi", evi, ("nir", "red", "blue"), "2.5 (B08 − B04) / (B08 + 6 B04 − 7.5 B02 + 1)", "Huete et al. 2002")
_register("savi", savi, ("nir", "red"), "1.5 (B08 − B04) / (B08 + B04 + 0.5)", "Huete 1988", L=0.5)
_register("osavi", osavi, ("nir", "red"), "1.16 (B08 − B04) / (B08 + B04 + 0.16)", "Rondeaux et al. 1996")
_register("mcari", mcari, ("re1", "red", "green"), "[(B05 − B04) − 0.2 (B05 − B03)] B05 / B04", "Daughtry et al. 2000")
_register("tcari", tcari, ("re1", "red", "green"), "3 [(B05 − B04) − 0.2 (B05 − B03) B05 / B04]", "Haboudane et al. 2002")
_register("mcari_osavi", mcari_osavi, ("re1", "red", "green", "nir"), "MCARI / OSAVI", "Daughtry et al. 2000")
_register("tcari_osavi", tcari_osavi, ("re1", "red", "green", "nir"), "TCARI / OSAVI", "Haboudane et al. 2002")
_register("psri", psri, ("red", "blue", "re2"), "(B04 − B02) / B06", "Merzlyak et al. 1999")
_register("cire", cire, ("re3", "re1"), "B07 / B05 − 1", "Gitelson et al. 2003")
_register("wdvi", wdvi, ("nir", "red"), "B08 − c B04 (c = soil-line slope)", "Clevers 1989", slope=1.0)
_register("lai", clair_lai, ("nir", "red"), "−ln(1 − WDVI / WDVI∞) / α (CLAIR)", "Clevers 1989",
          slope=1.0, alpha=0.4, wdvi_inf=0.6, max_ratio=0.99)
_register("lcc", lcc_feature, ("re1", "red", "green", "nir"), "−ln(max(TCARI / OSAVI, 1e-3))",
          "Haboudane et al. 2002 (hsikit feature)", floor=1e-3)

#: alternative spellings accepted by :func:`compute_index`
ALIASES = {"mcari/osavi": "mcari_osavi", "tcari/osavi": "tcari_osavi", "clair": "lai", "clair_lai": "lai",
           "ci_re": "cire", "ci-re": "cire"}


def canonical_index(name: str) -> str:
    """Registry key of ``name`` (case-insensitive, "/" and "-" spellings accepted)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key).replace("/", "_").replace("-", "_")
    if key not in INDICES:
        raise OptionError(f"unknown index {name!r}; available: {', '.join(sorted(INDICES))}")
    return key


def normalise_band_name(name: str) -> str:
    """Sentinel-2 band name in the ``B02``/``B8A`` form: "b2", "B2", "B02" and "B8a" are all accepted."""
    n = str(name).strip().upper()
    if n.startswith("B") and n[1:].isdigit():
        return f"B{int(n[1:]):02d}"
    if n in ("B8A", "B08A"):
        return "B8A"
    return n


def required_bands(name: str, nir: str | None = None) -> tuple[str, ...]:
    """Sentinel-2 band names index ``name`` reads (NIR as B08 unless ``nir`` says B8A)."""
    return INDICES[canonical_index(name)].bands(nir)


def _pick(role: str, bands: Mapping[str, Any], nir: str | None) -> str | None:
    candidates = (normalise_band_name(nir),) if (role == "nir" and nir) else ROLES[role]
    return next((c for c in candidates if c in bands), None)


def compute_index(name: str, bands: Mapping[str, Any], *, nir: str | None = None, **params: float) -> Any:
    """Index ``name`` from ``bands`` (Sentinel-2 band name → reflectance array of any shape).

    ``nir``: "B08" or "B8A" to force the NIR band (default B08, else B8A). ``params`` override the index's
    parameters (e.g. ``slope`` for WDVI/LAI, ``alpha``/``wdvi_inf`` for CLAIR, ``L`` for SAVI).
    Missing bands raise :class:`~hsikit.errors.BandMismatchError` naming them.
    """
    spec = INDICES[canonical_index(name)]
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise OptionError(f"index {spec.name} has no parameter(s) {unknown}; it takes {sorted(spec.params) or 'none'}")
    by_name = {normalise_band_name(k): v for k, v in bands.items()}
    args, missing = [], []
    for role in spec.roles:
        b = _pick(role, by_name, nir)
        if b is None:
            missing.append("/".join((normalise_band_name(nir),) if role == "nir" and nir else ROLES[role]))
        else:
            args.append(by_name[b])
    if missing:
        raise BandMismatchError(f"index {spec.name} needs band(s) {', '.join(missing)}; "
                                f"the input has {', '.join(sorted(by_name)) or 'none'}")
    return spec.func(*args, **{**spec.params, **params})


def list_indices() -> list[IndexSpec]:
    """Registered indices, sorted by name."""
    return [INDICES[k] for k in sorted(INDICES)]
