"""Resolve batch INPUTS into scenes: files, folders, globs and STAC catalogues whose assets are read in place.

A folder is searched recursively for rasters (GeoTIFF, VRT, ENVI headers, ERDAS, JPEG 2000, NetCDF) and
Sentinel-2 SAFE products (one input each, not descended into); hidden entries and the batch's own output folder
are skipped. A JSON file (or URL) holding a STAC Catalog, Collection, ItemCollection or Item yields its items'
raster assets: hrefs are resolved relative to the catalogue, remote ones are read through GDAL's ``/vsicurl/``
(``/vsis3/``, ``/vsigs/``), nothing is downloaded. In *series* mode (time-series tasks) every given folder is one
input as a whole.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from hsikit.errors import InputError, OptionError

#: extensions found when a folder is searched (``.hdr`` stands for its ENVI data file)
RASTER_EXTENSIONS = (".tif", ".tiff", ".vrt", ".hdr", ".img", ".lan", ".jp2", ".nc")
#: STAC media types of raster assets
_RASTER_MEDIA = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff", "application/x-netcdf", "application/x-hdf")
_SKIP_ROLES = {"thumbnail", "overview", "metadata", "visual"}
_REMOTE = {"http://": "/vsicurl/", "https://": "/vsicurl/", "s3://": "/vsis3/", "gs://": "/vsigs/"}
_GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class InputItem:
    """One scene (or one time series) to process. ``href`` is what the readers open (a local path, a GDAL
    ``/vsi...`` path, a SAFE or series folder); ``name`` is unique within one resolution and names the outputs."""

    href: str
    name: str
    source: str
    item_id: str | None = None
    asset: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def is_remote(self) -> bool:
        return self.href.startswith("/vsi")


def resolve_inputs(inputs: Sequence[str | Path], *, series: bool = False, assets: Sequence[str] | None = None,
                   exclude: Sequence[str | Path] = ()) -> list[InputItem]:
    """Every input of ``inputs`` (in the order given, each folder/glob/catalogue sorted), without duplicates.

    ``assets`` picks STAC asset keys (default: every raster asset with a data role); ``exclude`` lists folders
    never searched (the batch's output folder). Raises :class:`InputError` when an input matches nothing.
    """
    skip = [Path(e).resolve() for e in exclude]
    found: list[InputItem] = []
    for raw in inputs:
        text = str(raw)
        got = list(_resolve_one(text, series=series, assets=assets, skip=skip))
        if not got:
            raise InputError(f"no input found in {text}")
        found.extend(got)
    seen: set[str] = set()
    unique = []
    for it in found:
        if it.href not in seen:
            seen.add(it.href)
            unique.append(it)
    return _unique_names(unique)


def _resolve_one(text: str, *, series: bool, assets, skip: list[Path]) -> Iterable[InputItem]:
    if _is_url(text):
        if not series and text.lower().split("?")[0].endswith((".json", ".geojson")):
            yield from _stac(text, assets, text)
        else:
            yield InputItem(_gdal_href(text), _stem(text), text)
        return
    p = Path(text)
    if not p.exists():
        if _GLOB.search(text):
            for m in sorted(glob.glob(text, recursive=True)):
                yield from _resolve_path(Path(m), text, series=series, assets=assets, skip=skip, from_glob=True)
            return
        raise InputError(f"input not found: {text}")
    yield from _resolve_path(p, text, series=series, assets=assets, skip=skip, from_glob=False)


def _resolve_path(p: Path, source: str, *, series: bool, assets, skip: list[Path],
                  from_glob: bool) -> Iterable[InputItem]:
    if p.is_dir():
        if series or _is_safe_dir(p):
            yield InputItem(str(p), _stem(p.name), source)
        elif not _skipped(p, skip):
            yield from _walk(p, source, skip)
        return
    if p.suffix.lower() in (".json", ".geojson") and not series:
        if _looks_like_stac(p):
            yield from _stac(str(p), assets, source)
            return
        if from_glob:
            return
        raise InputError(f"{p.name} is a JSON file but not a STAC catalog, collection, item collection or item")
    if from_glob and not _is_raster_name(p):
        return
    yield InputItem(str(p), _stem(p.name), source)


def _walk(root: Path, source: str, skip: list[Path]) -> Iterable[InputItem]:
    """Rasters and SAFE folders under ``root``, sorted; ENVI data files are reached through their header."""
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            sub = d / name
            if name.startswith(".") or _skipped(sub, skip):
                continue
            if _is_safe_dir(sub):
                yield InputItem(str(sub), _stem(name), source)
            else:
                keep.append(name)
        dirnames[:] = keep
        files = [f for f in sorted(filenames) if not f.startswith(".")]
        headers = {Path(f).stem for f in files if f.lower().endswith(".hdr")}
        for f in files:
            fp = d / f
            if not _is_raster_name(fp):
                continue
            if fp.suffix.lower() == ".img" and fp.stem in headers:
                continue  # an ENVI data file: its header is the input
            yield InputItem(str(fp), _stem(f), source)


def _is_raster_name(p: Path) -> bool:
    name = p.name.lower()
    return p.suffix.lower() in RASTER_EXTENSIONS and not name.endswith((".aux.xml", ".ovr", ".msk"))


def _is_safe_dir(p: Path) -> bool:
    return p.is_dir() and (p.suffix.upper() == ".SAFE" or any(p.glob("MTD_MSIL*.xml")))


def _skipped(p: Path, skip: list[Path]) -> bool:
    rp = p.resolve()
    return any(rp == s or s in rp.parents for s in skip)


def _stem(name: str) -> str:
    base = name.rstrip("/").split("/")[-1].split("?")[0]
    for ext in (".SAFE", ".safe"):
        if base.endswith(ext):
            return base[: -len(ext)]
    return Path(base).stem or base


def _is_url(text: str) -> bool:
    return text.startswith(tuple(_REMOTE))


def _gdal_href(href: str) -> str:
    for prefix, vsi in _REMOTE.items():
        if href.startswith(prefix):
            return vsi + (href if vsi == "/vsicurl/" else href[len(prefix):])
    return href


def _looks_like_stac(p: Path) -> bool:
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(d, dict) and ("stac_version" in d or d.get("type") == "FeatureCollection" and "features" in d)


# -- STAC ----------------------------------------------------------------------------------------------------------
def _stac(href: str, assets: Sequence[str] | None, source: str) -> Iterable[InputItem]:
    import pystac

    try:
        if _is_url(href):
            obj = pystac.read_file(href)
            items = _items_of(obj, pystac)
            base = None
        else:
            d = json.loads(Path(href).read_text(encoding="utf-8"))
            base = Path(href).resolve().parent
            if d.get("type") == "FeatureCollection":
                items = list(pystac.ItemCollection.from_dict(d, preserve_dict=False).items)
            else:
                items = _items_of(pystac.read_file(str(Path(href).resolve())), pystac)
    except (pystac.STACError, KeyError, ValueError, OSError) as e:
        raise InputError(f"{Path(href).name}: cannot read the STAC catalogue ({str(e).splitlines()[0]})") from None
    picked_any = False
    for item in items:
        chosen = _pick_assets(item, assets)
        picked_any = picked_any or bool(chosen)
        for key, asset in chosen:
            h = asset.get_absolute_href() or asset.href
            if not _is_url(h) and not Path(h).is_absolute() and base is not None:
                h = str((base / h).resolve())
            name = item.id if len(chosen) == 1 else f"{item.id}_{key}"
            yield InputItem(_gdal_href(h), name, source, item_id=item.id, asset=key,
                            extra={"datetime": str(item.datetime) if item.datetime else None})
    if items and not picked_any:
        want = f"assets {', '.join(assets)}" if assets else "raster data assets"
        raise InputError(f"{Path(href).name}: no item has {want} (pick asset keys with --asset)")


def _items_of(obj, pystac) -> list:
    if isinstance(obj, pystac.Item):
        return [obj]
    if isinstance(obj, pystac.ItemCollection):
        return list(obj.items)
    if isinstance(obj, pystac.Catalog):  # Collection is a Catalog
        return sorted(obj.get_items(recursive=True), key=lambda i: i.id)
    raise InputError(f"unsupported STAC object {type(obj).__name__}")


def _pick_assets(item, keys: Sequence[str] | None) -> list[tuple[str, object]]:
    if keys:
        return [(k, item.assets[k]) for k in keys if k in item.assets]
    out = []
    for k, a in sorted(item.assets.items()):
        roles = set(a.roles or [])
        if roles & _SKIP_ROLES and "data" not in roles:
            continue
        media = (a.media_type or "").lower()
        if media.startswith(_RASTER_MEDIA) or (not media and Path(a.href.split("?")[0]).suffix.lower() in RASTER_EXTENSIONS):
            out.append((k, a))
    return out


# -- names and fingerprints ------------------------------------------------------------------------------------------
def _unique_names(items: list[InputItem]) -> list[InputItem]:
    """Give inputs that share a name (same file name in two folders) a short hash of their href."""
    counts: dict[str, int] = {}
    for it in items:
        counts[it.name] = counts.get(it.name, 0) + 1
    out = []
    for it in items:
        name = re.sub(r"[^\w.+-]", "_", it.name) or "scene"
        if counts[it.name] > 1:
            name = f"{name}_{hashlib.sha1(it.href.encode()).hexdigest()[:6]}"
        out.append(InputItem(it.href, name, it.source, it.item_id, it.asset, it.extra))
    return out


def input_files(href: str) -> list[Path]:
    """The local files an input consists of (an ENVI header and its data file; every file of a folder)."""
    p = Path(href)
    if href.startswith("/vsi") or not p.exists():
        return []
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file())
    files = [p]
    if p.suffix.lower() == ".hdr":
        from hsikit.io.envi import data_file_for

        data = data_file_for(p)
        if data is not None:
            files.append(Path(data))
    return files


def fingerprint(href: str, checksum: bool = False) -> dict:
    """Size and modification time of an input's files (and their SHA-256 with ``checksum``): what decides
    whether a scene processed earlier is still up to date. Remote inputs are identified by their href only."""
    files = input_files(href)
    if not files:
        if href.startswith("/vsi"):
            return {"remote": href}
        raise InputError(f"input not found: {href}")
    st = [f.stat() for f in files]
    fp: dict = {"files": len(files), "size": int(sum(s.st_size for s in st)),
                "mtime_ns": int(max(s.st_mtime_ns for s in st))}
    if checksum:
        h = hashlib.sha256()
        for f in files:
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    h.update(chunk)
        fp["sha256"] = h.hexdigest()
    return fp


def check_series_inputs(items: Sequence[InputItem]) -> None:
    """Time-series tasks take local folders or files, not catalogue assets."""
    remote = [it for it in items if it.asset is not None]
    if remote:
        raise OptionError("STAC inputs are not supported for time-series tasks: give one folder per series")
