"""Sentinel-2 SAFE product metadata: the product and granule XML, band files, scaling and dates.

Tag names and nesting follow the ESA Sentinel-2 Products Specification Document (PSD 14.x/15.x,
S2-PDGS-TAS-DI-PSD) as found in real ``MTD_MSIL2A.xml`` / ``MTD_MSIL1C.xml`` / ``MTD_TL.xml`` files; see
:mod:`hsikit.io.sentinel2` for the tags read and how they become reflectance.
"""

from __future__ import annotations

import fnmatch
import os
import re
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable

from hsikit.errors import InputError, OptionError
from hsikit.preprocess.sensors import SENTINEL2, canonical_band_name

#: native pixel size (m) of each band
NATIVE_RESOLUTION = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10,
                     "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20}
#: sen2cor scene classification classes
SCL_CLASSES = {0: "no data", 1: "saturated or defective", 2: "dark area / cast shadow", 3: "cloud shadow",
               4: "vegetation", 5: "not vegetated", 6: "water", 7: "unclassified", 8: "cloud medium probability",
               9: "cloud high probability", 10: "thin cirrus", 11: "snow / ice"}
#: SCL classes counted as cloud: cloud shadow, cloud medium/high probability, thin cirrus
CLOUD_CLASSES = (3, 8, 9, 10)
#: the offset products of processing baseline 04.00 and later add to every band (DN units)
BASELINE_04_OFFSET = -1000.0
#: assumed when a GeoTIFF stack of integers says nothing (Sentinel-2 L1C/L2A store reflectance x 10000)
DEFAULT_QUANTIFICATION = 10000.0

_RASTER_SUFFIXES = (".jp2", ".tif", ".tiff")
#: the product metadata file of a SAFE folder, in the order looked for (newer layout first, then L2A before L1C)
_PRODUCT_METADATA = ("MTD_MSIL2A.xml", "MTD_MSIL1C.xml", "*MTD_SAFL2A*.xml", "*MTD_SAFL1C*.xml")
_BAND_FILE = re.compile(r"_(B\d{2}|B8A)(?:_(\d{2})m)?\.(?:jp2|tiff?)$", re.IGNORECASE)
_SCL_FILE = re.compile(r"(?:^|_)SCL(?:_(\d{2})m)?(?:_|\.)", re.IGNORECASE)
_CLDPRB_FILE = re.compile(r"MSK_CLDPRB_(\d{2})m\.(?:jp2|tiff?)$", re.IGNORECASE)
_CLASSI_FILE = re.compile(r"MSK_CLASSI_B00\.(?:jp2|tiff?)$", re.IGNORECASE)
_RES_DIR = re.compile(r"^R(\d{2})m$")
#: an MGRS tile id in a name ("T32UQD"), captured without its "T"
TILE_PATTERN = re.compile(r"(?<![A-Za-z0-9])T(\d{2}[C-X][A-Z]{2})(?![A-Za-z0-9])")
_DATE_IN_NAME = re.compile(r"(?<!\d)(\d{4})(-?)(\d{2})\2(\d{2})(?:T(\d{2})(\d{2})(\d{2}))?(?!\d)")


# ----------------------------------------------------------------------------------------------------------------
# SAFE metadata
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class SafeInfo:
    """What a SAFE product holds: level, radiometry, date, tile and the files of one granule."""

    path: Path
    metadata_file: Path
    level: str
    baseline: str | None
    quantification: float
    add_offsets: dict[str, float]
    sensing_time: datetime
    tile: str
    epsg: int | None
    spacecraft: str | None
    cloud_cover: float | None
    granule: Path
    band_files: dict[str, dict[int, Path]] = field(default_factory=dict)
    scl_files: dict[int, Path] = field(default_factory=dict)
    cloud_prob_files: dict[int, Path] = field(default_factory=dict)
    classi_file: Path | None = None


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _iter_named(root: ET.Element, name: str) -> Iterable[ET.Element]:
    return (el for el in root.iter() if _local(el.tag) == name)


def _text(root: ET.Element | None, name: str) -> str | None:
    if root is None:
        return None
    for el in _iter_named(root, name):
        if el.text and el.text.strip():
            return el.text.strip()
    return None


def _parse_xml(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise InputError(f"cannot read {path.name}: {e}") from None


def baseline_tuple(baseline: str | None) -> tuple[int, int] | None:
    """``"05.10"`` or ``"N0510"`` -> (5, 10); None when unknown."""
    if not baseline:
        return None
    m = re.search(r"(\d{1,2})\.(\d{2})", baseline) or re.search(r"N?(\d{2})(\d{2})$", baseline.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_time(text: str) -> datetime:
    """ISO date/datetime (``Z`` or offset -> UTC), TIFF ``YYYY:MM:DD HH:MM:SS`` or ``YYYYMMDD[THHMMSS]`` as a naive
    UTC datetime. Raises ValueError when the text is none of these."""
    s = text.strip()
    tiff = re.fullmatch(r"(\d{4}):(\d{2}):(\d{2})[ T](\d{2}:\d{2}:\d{2})", s)
    if tiff:
        s = f"{tiff.group(1)}-{tiff.group(2)}-{tiff.group(3)}T{tiff.group(4)}"
    compact = re.fullmatch(r"(\d{4})(\d{2})(\d{2})(?:T(\d{2})(\d{2})(\d{2}))?", s)
    if compact:
        g = [int(x) if x else 0 for x in compact.groups()]
        return datetime(*g)
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    # fromisoformat takes at most 6 fractional digits
    s = re.sub(r"(\.\d{6})\d+", r"\1", s)
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt


def date_in_name(name: str) -> datetime | None:
    """The first valid ``YYYYMMDD[THHMMSS]`` or ``YYYY-MM-DD`` in a file name, or None."""
    for m in _DATE_IN_NAME.finditer(name):
        y, _, mo, d, hh, mm, ss = m.groups()
        try:
            return datetime(int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0))
        except ValueError:
            continue
    return None


def find_safe_metadata(path: str | Path) -> Path:
    """The product metadata file of a SAFE folder (or the file itself when given)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"file not found: {p}")
    if p.is_file():
        if _is_metadata_file_name(p.name):
            return p
        raise InputError(f"{p.name} is not a Sentinel-2 product metadata file (MTD_MSIL1C.xml / MTD_MSIL2A.xml)")
    for pattern in _PRODUCT_METADATA:
        found = sorted(p.glob(pattern))
        if found:
            return found[0]
    raise InputError(f"{p.name} is not a Sentinel-2 SAFE folder (no MTD_MSIL1C.xml or MTD_MSIL2A.xml in it)")


def is_safe(path: str | Path) -> bool:
    """Whether ``path`` is a Sentinel-2 SAFE product: a folder named ``*.SAFE`` or holding the product metadata
    (``MTD_MSIL1C.xml``, ``MTD_MSIL2A.xml``, older ``*MTD_SAFL1C*.xml`` / ``*MTD_SAFL2A*.xml``), or that metadata
    file itself.

    hsikit's one SAFE detector: :func:`hsikit.io.open_scene`, the folder search of :mod:`hsikit.io.inputs` (batch,
    pretrain: a SAFE folder is one input, never searched), the ``s2`` commands and time series all use it. A folder
    named ``*.SAFE`` counts even without its metadata, so that reading it reports what is missing.
    """
    p = Path(path)
    try:
        if p.is_dir():
            if p.suffix.upper() == ".SAFE":
                return True
            with os.scandir(p) as entries:
                return any(e.is_file() and _is_product_metadata_name(e.name) for e in entries)
        return p.is_file() and _is_metadata_file_name(p.name)
    except OSError:
        return False


def _is_product_metadata_name(name: str) -> bool:
    """A file name of :data:`_PRODUCT_METADATA` (case-sensitive, as ``find_safe_metadata``'s glob)."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in _PRODUCT_METADATA)


def _is_metadata_file_name(name: str) -> bool:
    """A product metadata file given by itself (``MTD_MSIL2A.xml``, ``S2A_USER_MTD_SAFL1C_....xml``)."""
    return name.lower().endswith(".xml") and re.search(r"MTD.*(L1C|L2A)", name, re.IGNORECASE) is not None


def read_safe_metadata(path: str | Path, *, granule: str | None = None) -> SafeInfo:
    """Parse a SAFE product's metadata and list its band, SCL and cloud-mask files (one granule).

    ``granule``: tile (``T33UUU``) or granule folder name, needed only for old multi-granule products.
    """
    mtd = find_safe_metadata(path)
    root_dir = mtd.parent
    root = _parse_xml(mtd)
    tag = _local(root.tag)
    if "2A" in tag or "L2A" in mtd.name.upper():
        level = "L2A"
    elif "1C" in tag or "L1C" in mtd.name.upper():
        level = "L1C"
    else:
        raise InputError(f"{mtd.name}: not a Level-1C or Level-2A product ({tag})")

    baseline = _text(root, "PROCESSING_BASELINE")
    q_name = "BOA_QUANTIFICATION_VALUE" if level == "L2A" else "QUANTIFICATION_VALUE"
    q_text = _text(root, q_name) or _text(root, "QUANTIFICATION_VALUE")
    quant = float(q_text) if q_text else DEFAULT_QUANTIFICATION
    if quant <= 0:
        raise InputError(f"{mtd.name}: {q_name} must be positive, not {q_text}")

    # band_id -> band name: Spectral_Information when listed, else the standard order (== SENTINEL2.bands)
    id_to_band = {i: b for i, b in enumerate(SENTINEL2.bands)}
    for el in _iter_named(root, "Spectral_Information"):
        bid, phys = el.get("bandId"), el.get("physicalBand")
        if bid is not None and phys and canonical_band_name(phys):
            id_to_band[int(bid)] = canonical_band_name(phys)
    off_name = "BOA_ADD_OFFSET" if level == "L2A" else "RADIO_ADD_OFFSET"
    offsets: dict[str, float] = {}
    for el in _iter_named(root, off_name):
        bid = el.get("band_id")
        if bid is not None and el.text and int(bid) in id_to_band:
            offsets[id_to_band[int(bid)]] = float(el.text)
    bt = baseline_tuple(baseline) or baseline_tuple(_product_baseline_from_name(root_dir.name))
    if not offsets and bt is not None and bt >= (4, 0):
        warnings.warn(f"{root_dir.name}: processing baseline {baseline} but no {off_name} in {mtd.name}; "
                      f"applying the {BASELINE_04_OFFSET:g} offset of baseline 04.00+ products", stacklevel=2)
        offsets = {b: BASELINE_04_OFFSET for b in SENTINEL2.bands}

    gran = _pick_granule(root_dir, granule)
    tl = next(iter(sorted(gran.glob("MTD_TL.xml"))), None) or next(iter(sorted(gran.glob("*MTD*TL*.xml"))), None)
    tl_root = _parse_xml(tl) if tl is not None else None
    epsg = None
    cs = _text(tl_root, "HORIZONTAL_CS_CODE")
    if cs and re.search(r"(\d+)$", cs):
        epsg = int(re.search(r"(\d+)$", cs).group(1))

    when = None
    for src, name in ((root, "PRODUCT_START_TIME"), (root, "DATATAKE_SENSING_START"), (tl_root, "SENSING_TIME")):
        txt = _text(src, name)
        if txt:
            try:
                when = parse_time(txt)
                break
            except ValueError:
                continue
    if when is None:
        when = date_in_name(root_dir.name)
    if when is None:
        raise InputError(f"{root_dir.name}: no acquisition time in {mtd.name} (PRODUCT_START_TIME) or the folder name")

    tile_m = (TILE_PATTERN.search(gran.name) or TILE_PATTERN.search(root_dir.name)
              or TILE_PATTERN.search(_text(tl_root, "TILE_ID") or ""))
    cc = _text(root, "Cloud_Coverage_Assessment") or _text(root, "CLOUDY_PIXEL_PERCENTAGE")
    info = SafeInfo(path=root_dir, metadata_file=mtd, level=level, baseline=baseline, quantification=quant,
                    add_offsets=offsets, sensing_time=when, tile=f"T{tile_m.group(1)}" if tile_m else "",
                    epsg=epsg, spacecraft=_text(root, "SPACECRAFT_NAME"),
                    cloud_cover=float(cc) if cc else None, granule=gran)
    _list_granule_files(info)
    if not info.band_files:
        raise InputError(f"{root_dir.name}: no band files (*_B02*.jp2 ...) under {gran.relative_to(root_dir)}/IMG_DATA")
    return info


def _product_baseline_from_name(name: str) -> str | None:
    m = re.search(r"_N(\d{4})_", name)
    return m.group(1) if m else None


def _pick_granule(root_dir: Path, granule: str | None) -> Path:
    gdir = root_dir / "GRANULE"
    grans = sorted(p for p in gdir.iterdir() if p.is_dir()) if gdir.is_dir() else []
    if not grans:
        raise InputError(f"{root_dir.name}: no GRANULE folder with a granule in it")
    if granule is not None:
        key = granule.upper().lstrip("T")
        chosen = [g for g in grans if g.name == granule or f"T{key}" in g.name.upper()]
        if not chosen:
            raise OptionError(f"{root_dir.name} has no granule {granule}; it has {', '.join(g.name for g in grans)}")
        return chosen[0]
    if len(grans) > 1:
        raise InputError(f"{root_dir.name} holds {len(grans)} granules ({', '.join(g.name for g in grans)}); "
                         "pick one with granule=")
    return grans[0]


def _file_resolution(path: Path, explicit: str | None, band: str | None) -> int:
    if explicit:
        return int(explicit)
    m = _RES_DIR.match(path.parent.name)
    if m:
        return int(m.group(1))
    return NATIVE_RESOLUTION.get(band or "", 20)


def _list_granule_files(info: SafeInfo) -> None:
    for f in sorted(info.granule.rglob("*")):
        if f.suffix.lower() not in _RASTER_SUFFIXES or not f.is_file():
            continue
        rel = f.relative_to(info.granule).parts
        name = f.name
        if "IMG_DATA" in rel:
            m = _BAND_FILE.search(name)
            if m:
                band = canonical_band_name(m.group(1))
                if band:
                    info.band_files.setdefault(band, {})[_file_resolution(f, m.group(2), band)] = f
                continue
        m = _SCL_FILE.search(name)
        if m and "MSK" not in name.upper():
            info.scl_files[_file_resolution(f, m.group(1), None)] = f
            continue
        m = _CLDPRB_FILE.search(name)
        if m:
            info.cloud_prob_files[int(m.group(1))] = f
            continue
        if _CLASSI_FILE.search(name):
            info.classi_file = f


def pick_file(files: dict[int, Path], target_res: float) -> Path:
    """The file at the target resolution, else the coarsest finer one, else the finest (least resampling)."""
    finer = [r for r in files if r <= target_res + 1e-6]
    return files[max(finer)] if finer else files[min(files)]
