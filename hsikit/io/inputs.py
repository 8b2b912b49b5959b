"""Resolve batch INPUTS into scenes: files, folders, globs and STAC catalogues whose assets are read in place.

A folder is searched recursively (:func:`find_rasters`, hsikit's one folder search: ``hsikit batch``, ``hsikit
pretrain`` and every command taking folders of scenes) for the files of :data:`RASTER_EXTENSIONS` and Sentinel-2
SAFE products (one input each, not descended into, see :func:`hsikit.io.safe.is_safe`); an ENVI header and its data
file are one input (the header), sidecars (``.aux.xml``, ``.ovr``, ``.msk``, ``.qml``, the header ENVI writes
beside a GeoTIFF), hidden entries (temporary files) and the batch's own output folder are skipped. A JSON file
(or URL) holding a STAC Catalog, Collection, ItemCollection or Item yields its items' raster assets: hrefs are
resolved relative to the catalogue, remote ones are read through GDAL's ``/vsicurl/`` (``/vsis3/``,
``/vsigs/``), nothing is downloaded. In *series* mode (time-series tasks) every given folder is one
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
from hsikit.io.safe import is_safe

#: extensions of the rasters a folder search finds: GDAL rasters (GeoTIFF, VRT, ERDAS .img/.lan, JPEG 2000,
#: NetCDF, HDF5/HDF-EOS), ENVI (``.hdr`` stands for its data file: ``.img``/``.dat``/``.bsq``/``.bil``/``.bip`` or no
#: extension) and MATLAB benchmark cubes (``.mat``)
RASTER_EXTENSIONS = (".tif", ".tiff", ".vrt", ".img", ".lan", ".jp2", ".nc", ".h5", ".he5", ".hdr", ".dat", ".bsq",
                     ".bil", ".bip", ".mat")
#: files beside a raster that describe it, never inputs themselves
SIDECAR_ENDINGS = (".aux.xml", ".ovr", ".msk", ".qml")
#: suffixes of the data file of an ENVI header (as in :func:`hsikit.io.envi.data_file_for`)
_ENVI_DATA_SUFFIXES = ("", ".bsq", ".bil", ".bip", ".img", ".dat", ".raw")
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
            matches = [Path(m) for m in sorted(glob.glob(text, recursive=True))]
            kept = _paired(m for m in matches if m.is_file() and _is_raster_name(m))
            for m in matches:
                if m.is_file() and _is_raster_name(m) and m not in kept:
                    continue  # an ENVI data file whose header matched too, a header beside a matched GeoTIFF
                yield from _resolve_path(m, text, series=series, assets=assets, skip=skip, from_glob=True)
            return
        raise InputError(f"input not found: {text}")
    yield from _resolve_path(p, text, series=series, assets=assets, skip=skip, from_glob=False)


def _resolve_path(p: Path, source: str, *, series: bool, assets, skip: list[Path],
                  from_glob: bool) -> Iterable[InputItem]:
    if p.is_dir():
        if series or is_safe(p):
            yield InputItem(str(p), _stem(p.name), source)
        elif not _skipped(p, skip):
            for f in _search(p, skip):
                yield InputItem(str(f), _stem(f.name), source)
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


def find_rasters(root: str | Path, *, exclude: Sequence[str | Path] = ()) -> list[Path]:
    """The scenes in folder ``root``, searched recursively and sorted: rasters of :data:`RASTER_EXTENSIONS` and
    SAFE folders (``root`` itself when it is one). An ENVI header stands for its data file, sidecars and hidden
    entries are skipped, and so are the folders of ``exclude``. The search of ``hsikit batch`` and ``hsikit
    pretrain`` (:func:`resolve_inputs` yields these paths for a folder)."""
    p = Path(root)
    if is_safe(p):
        return [p]
    skip = [Path(e).resolve() for e in exclude]
    return [] if _skipped(p, skip) else list(_search(p, skip))


def _search(root: Path, skip: list[Path]) -> Iterable[Path]:
    """Rasters and SAFE folders under ``root``, depth first; in each folder its SAFE folders, then its rasters,
    then its other sub-folders, each sorted by name."""
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        keep = []
        for name in sorted(dirnames):
            sub = d / name
            if name.startswith(".") or _skipped(sub, skip):
                continue
            if is_safe(sub):
                yield sub
            else:
                keep.append(name)
        dirnames[:] = keep
        yield from (d / f for f in _rasters_in(d, sorted(f for f in filenames if not f.startswith("."))))


def _rasters_in(folder: Path, files: Sequence[str]) -> list[str]:
    """The inputs among the (visible, sorted) file names of one folder. An ENVI header with its data file beside
    it (:func:`hsikit.io.envi.data_file_for`: ``x.img``, ``x.dat``, ``x.bsq``..., ``x``) is the input for both; a
    header beside another raster of the same name (``x.hdr`` or ``x.tif.hdr``, as ENVI writes next to a GeoTIFF it
    opened) is a sidecar of that raster; a header alone is kept, so that opening it says its data file is missing."""
    from hsikit.io.envi import data_file_for

    data_files: set[str] = set()
    sidecar_headers: set[str] = set()
    for f in files:
        if not f.lower().endswith(".hdr"):
            continue
        data = data_file_for(folder / f)
        if data is not None and data.suffix.lower() in _ENVI_DATA_SUFFIXES:
            data_files.add(data.name)
        elif data is not None or any(g != f and Path(g).stem == Path(f).stem and _is_raster_name(Path(g))
                                     for g in files):
            sidecar_headers.add(f)
    return [f for f in files if _is_raster_name(Path(f)) and f not in data_files and f not in sidecar_headers]


def _paired(files: Iterable[Path]) -> set[Path]:
    """The rasters among ``files`` once ENVI headers and their data files are paired as in a folder search."""
    by_folder: dict[Path, list[str]] = {}
    for f in files:
        by_folder.setdefault(f.parent, []).append(f.name)
    return {d / n for d, names in by_folder.items() for n in _rasters_in(d, sorted(names))}


def _is_raster_name(p: Path) -> bool:
    name = p.name.lower()
    return p.suffix.lower() in RASTER_EXTENSIONS and not name.endswith(SIDECAR_ENDINGS)


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
