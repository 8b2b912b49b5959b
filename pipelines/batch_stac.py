"""A STAC catalogue of a batch output folder, rebuilt from the manifest and the outputs' own headers.

``OUTDIR/catalog.json`` (the root) links one collection per task (``OUTDIR/stac/<task>/collection.json``) holding
one item per done scene (``OUTDIR/stac/<task>/items/<name>.json``, id = the scene's output name, stable across
runs). A scene's outputs are its item's assets: the class map or restored cube first, then probabilities,
confidence, quicklook and QGIS style. Items use the projection (``proj:code`` or ``proj:wkt2``, bbox, shape,
transform), raster (per band data type, nodata, scale/offset, resolution, unit), eo (band names, centre
wavelengths and FWHM in micrometres, where the output has wavelengths) and classification (values, names, colours)
extensions, link their source scene (``derived_from``) and their model: the model's STAC MLM item
``OUTDIR/model.json`` (``derived_from``, as the MLM extension asks, with ``mlm:name``), built by
``hsikit.export.mlm`` when that module is installed; without it the checkpoint is an asset of each item.

Nothing comes from a run's memory: the manifest's done rows say which scenes and outputs exist, the files' headers
what they hold (CRS, transform, data types, nodata, band descriptions and wavelengths, class names and colours),
and the checkpoints a folder used are remembered by checksum in ``OUTDIR/.hsikit-batch/models.json``. So every
re-run writes the same catalogue for the same outputs; files whose text did not change are not rewritten. Hrefs
inside OUTDIR are relative (the folder can be moved); every file is written under a temporary name and renamed
with the others, ``catalog.json`` last.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hsikit.errors import HsikitError, InputError
from hsikit.pipelines.manifest import WORK_NAME, Manifest, SceneRow

STAC_VERSION = "1.1.0"
PROJECTION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
EO = "https://stac-extensions.github.io/eo/v1.1.0/schema.json"
CLASSIFICATION = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
#: the extension schemas the catalogue's items may declare (tests validate against local copies of them)
EXTENSIONS = (PROJECTION, RASTER, EO, CLASSIFICATION)
CATALOG_NAME = "catalog.json"
MODEL_ITEM_NAME = "model.json"
STAC_FOLDER = "stac"
#: checkpoints used in the folder, SHA-256 -> path (in the batch's work folder)
MODELS_NAME = "models.json"
#: the function of :mod:`hsikit.export.mlm` that describes a checkpoint file as a STAC MLM item:
#: ``checkpoint_mlm_item(path) -> dict`` (or a pystac.Item)
MLM_FUNCTION = "checkpoint_mlm_item"

_JSON = "application/json"
_GEOJSON = "application/geo+json"
_GTIFF = "image/tiff; application=geotiff"
_COG = _GTIFF + "; profile=cloud-optimized"
_MEDIA = {".tif": _GTIFF, ".tiff": _GTIFF, ".png": "image/png", ".qml": "text/xml", ".json": _JSON,
          ".safetensors": "application/octet-stream", ".onnx": "application/octet-stream"}
_DTYPES = {"complex_int16": "cint16", "complex64": "cfloat32", "complex128": "cfloat64"}
_STAC_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32",
                "float64"}
#: titles and STAC roles of the outputs the batch tasks write, by their role in the task's output table
_ROLES = {"class_map": ("class map", ["data"]), "output": ("output", ["data"]),
          "probabilities": ("class probabilities", ["data"]), "confidence": ("confidence", ["data"]),
          "quicklook": ("quicklook", ["overview", "visual"]), "qml": ("QGIS style", ["metadata"])}
_EDGE_POINTS = 16  # per edge of the footprint, so a reprojected edge follows its curve


@dataclass
class CatalogResult:
    """What :func:`write_batch_catalog` wrote: ``skipped`` lists done scenes without an item, with the reason
    (an output deleted or damaged since); ``notes`` why a model item could not be built."""

    path: Path
    items: int = 0
    collections: list[str] = field(default_factory=list)
    model_items: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    written: int = 0
    removed: int = 0


@dataclass
class _Model:
    sha256: str
    checkpoint: Path
    item_file: Path | None = None  # the model's STAC item in OUTDIR, or None: the checkpoint is an asset instead
    name: str | None = None  # mlm:name


def write_batch_catalog(outdir: str | Path, *, models: dict[str, str] | None = None,
                        manifest: Manifest | None = None) -> CatalogResult:
    """Write (or bring up to date) the STAC catalogue of the batch folder ``outdir`` from its manifest.

    ``models`` ({SHA-256: checkpoint path}) adds the checkpoints of the current run to the folder's record of
    models; ``manifest`` is an open manifest of ``outdir`` (else it is opened read-only). Scenes whose outputs
    cannot be read are left out and listed in the result, not raised: the outputs stay the truth.
    """
    from rasterio.errors import RasterioError

    out = Path(outdir)
    if manifest is None:
        with Manifest(out, writable=False) as man:
            rows = man.scenes("done")
    else:
        rows = manifest.scenes("done")
    if models:
        remember_models(out, models)
    res = CatalogResult(out / CATALOG_NAME)
    files: dict[Path, dict] = {}
    known = _model_items(out, files, res)
    by_task: dict[str, dict[str, dict]] = {}
    for row in sorted(rows, key=lambda r: (r.finished or 0.0, r.key)):  # the latest row of a name wins
        try:
            item = _scene_item(out, row, known.get(row.options.get("model_sha256") or ""))
        except _Superseded:
            continue
        except (HsikitError, OSError, ValueError, RasterioError) as e:  # an output damaged or replaced since
            res.skipped.append((row.name, str(e).splitlines()[0] if str(e) else type(e).__name__))
            continue
        by_task.setdefault(row.task, {})[item["id"]] = item
    for task in sorted(by_task):
        items = [by_task[task][k] for k in sorted(by_task[task])]
        coll_file = out / STAC_FOLDER / task / "collection.json"
        files[coll_file] = _collection(out, task, items)
        for item in items:
            files[_item_file(out, task, item["id"])] = item
        res.collections.append(task)
        res.items += len(items)
    files[res.path] = _catalog(out, res.collections, [m for m in known.values() if m.item_file is not None])
    res.written = _write_files(files, res.path)
    res.removed = _remove_stale(out, set(files))
    return res


# -- models ----------------------------------------------------------------------------------------------------------
def remember_models(outdir: str | Path, models: dict[str, str]) -> None:
    """Add checkpoints ({SHA-256: path}) to the folder's record of the models its scenes were computed with."""
    out = Path(outdir)
    known = read_models(out)
    new = {**known, **{sha: str(Path(p).resolve()) for sha, p in models.items()}}
    if new != known:
        path = out / WORK_NAME / MODELS_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_files({path: new}, path)


def read_models(outdir: str | Path) -> dict[str, str]:
    """The folder's record of checkpoints, {SHA-256: path} in the order they were first used ({} when none)."""
    path = Path(outdir) / WORK_NAME / MODELS_NAME
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read the batch's model record ({e})") from None
    return {str(k): str(v) for k, v in d.items()} if isinstance(d, dict) else {}


def _mlm_builder() -> Callable[[Path], Any] | None:
    try:
        from hsikit.export import mlm  # optional: the STAC MLM export of checkpoints
    except ImportError:
        return None
    return getattr(mlm, MLM_FUNCTION, None)


def _model_items(out: Path, files: dict[Path, dict], res: CatalogResult) -> dict[str, _Model]:
    """One :class:`_Model` per recorded checkpoint; the first one's STAC item is ``model.json``, later ones'
    ``model-<sha256[:12]>.json``. An item that cannot be built now (the MLM export is not installed, the checkpoint
    is gone) keeps the file written by an earlier run, if any; with neither, items link the checkpoint."""
    recorded = read_models(out)
    build = _mlm_builder() if recorded else None
    known: dict[str, _Model] = {}
    for i, (sha, path) in enumerate(recorded.items()):
        m = _Model(sha, Path(path))
        target = out / (MODEL_ITEM_NAME if i == 0 else f"model-{sha[:12]}.json")
        item = None
        if build is not None and m.checkpoint.exists():
            try:
                item = _as_dict(build(m.checkpoint))
            except Exception as e:  # noqa: BLE001 - the scene items are still written, the model as an asset
                why = str(e).splitlines()[0] if str(e) else type(e).__name__
                res.notes.append(f"no model item for {m.checkpoint.name}: {why}")
        if item is not None:
            files[target] = _placed_model_item(out, target, item, m.checkpoint)
        elif target.exists():
            item = json.loads(target.read_text(encoding="utf-8"))
            files[target] = item
        if item is not None:
            m.item_file, m.name = target, (item.get("properties") or {}).get("mlm:name")
            res.model_items.append(target)
        known[sha] = m
    return known


def _as_dict(item: Any) -> dict:
    d = item.to_dict(include_self_link=False) if hasattr(item, "to_dict") else dict(item)
    if d.get("type") != "Feature" or not d.get("id"):
        raise ValueError("not a STAC item")
    return d


def _placed_model_item(out: Path, target: Path, item: dict, checkpoint: Path) -> dict:
    """The model item as a member of this catalogue: its own hierarchy links replaced by ours, and the checkpoint
    as an asset when the item does not list it already."""
    item = json.loads(json.dumps(item))
    item.pop("collection", None)  # not in one of our collections
    keep = [ln for ln in item.get("links", []) if ln.get("rel") not in ("self", "root", "parent", "collection")]
    item["links"] = [*_up_links(out, target), *keep]
    assets = item.setdefault("assets", {})
    hrefs = {_resolve_href(a.get("href", ""), target) for a in assets.values()}
    if checkpoint.resolve() not in hrefs:
        assets["checkpoint"] = _checkpoint_asset(out, target, checkpoint)
    return item


def _checkpoint_asset(out: Path, owner: Path, checkpoint: Path) -> dict:
    return {"href": _href(checkpoint, owner, out), "type": _MEDIA.get(checkpoint.suffix.lower(), "application/"
            "octet-stream"), "title": f"model checkpoint {checkpoint.name}", "roles": ["model"]}


def _resolve_href(href: str, owner: Path) -> Path | None:
    if not href or "://" in href:
        return None
    p = Path(href)
    return (p if p.is_absolute() else owner.parent / p).resolve()


# -- scene items -----------------------------------------------------------------------------------------------------
class _Superseded(Exception):
    """The scene's outputs were since rewritten by another row of the manifest (other options, same names)."""


def _scene_item(out: Path, row: SceneRow, model: _Model | None) -> dict:
    """The STAC item of one done scene, from its outputs' headers."""
    from hsikit.pipelines.batch_tasks import TAG_KEY

    outputs = _outputs(out, row)
    if not outputs:
        raise InputError(f"{row.name}: the manifest lists no outputs")
    main = next(iter(outputs.values()))
    for p in outputs.values():
        if not p.exists():
            raise InputError(f"output {p.name} is missing")
    item_file = _item_file(out, row.task, row.name)
    assets: dict[str, dict] = {}
    grid: dict[str, Any] | None = None
    exts = set()
    for role, path in outputs.items():
        asset, head = _asset(out, item_file, role, path)
        assets[role] = asset
        exts |= {ext for key, ext in (("raster:bands", RASTER), ("eo:bands", EO), ("classification:classes",
                 CLASSIFICATION), ("proj:shape", PROJECTION)) if key in asset}
        if grid is None and head is not None and path == main:
            grid = head
    if grid is None:
        raise InputError(f"output {main.name} is not a raster")
    tag = grid["tags"].get(TAG_KEY)
    if tag is not None and tag != row.key:
        raise _Superseded(row.name)
    if model is not None and model.item_file is None:
        assets["model"] = _checkpoint_asset(out, item_file, model.checkpoint)
    geometry, bbox = _footprint(grid)
    props = _properties(row, grid)
    item = {"type": "Feature", "stac_version": STAC_VERSION, "stac_extensions": sorted(exts | {PROJECTION}),
            "id": row.name, "geometry": geometry, **({"bbox": bbox} if bbox else {}), "properties": props,
            "links": _item_links(out, item_file, row, model), "assets": assets, "collection": row.task}
    return item


def _outputs(out: Path, row: SceneRow) -> dict[str, Path]:
    """The scene's recorded outputs in OUTDIR (where the folder is now: every task writes into OUTDIR), keyed by
    their role in the task's output table (or by their name's suffix), main output first."""
    from hsikit.pipelines.batch_tasks import TASKS

    named: dict[Path, str] = {}
    tk = TASKS.get(row.task)
    if tk is not None:
        try:
            named = {out / p.name: role for role, p in tk.outputs(out, row.name, row.options).items()}
        except (KeyError, TypeError, HsikitError):  # options recorded by another hsikit version
            named = {}
    found: dict[str, Path] = {}
    for rec in row.outputs:
        here = out / Path(rec).name
        if here in named:
            role = named[here]
        elif here.stem.startswith(row.name + "_"):
            role = here.stem[len(row.name) + 1:]
        else:
            role = "output"
        if role in found:  # e.g. a task's PNG beside its GeoTIFF of the same name
            role = f"{role}_{here.suffix.lower().lstrip('.') or 'file'}"
        while role in found:
            role += "_"
        found[role] = here
    return found


def _asset(out: Path, item_file: Path, role: str, path: Path) -> tuple[dict, dict | None]:
    """(asset, header) of one output: a GeoTIFF's header facts come back for the item's geometry and properties."""
    title, roles = _ROLES.get(role, (role.replace("_", " "), ["data"] if path.suffix.lower() in (".tif", ".tiff")
                                     else ["metadata"]))
    asset = {"href": _href(path, item_file, out), "title": title, "roles": roles}
    media = _MEDIA.get(path.suffix.lower())
    if media:
        asset["type"] = media
    if path.suffix.lower() not in (".tif", ".tiff"):
        return asset, None
    head = _raster_header(path)
    if head["cog"]:
        asset["type"] = _COG
    asset["proj:shape"] = [head["height"], head["width"]]
    asset["proj:transform"] = [_num(v) for v in list(head["transform"])[:6]]
    asset["raster:bands"] = head["bands"]
    if head["eo"]:
        asset["eo:bands"] = head["eo"]
    elif len(head["descriptions"]) > 1 and all(head["descriptions"]):
        asset["description"] = "Bands: " + ", ".join(head["descriptions"])
    if head["classes"]:
        asset["classification:classes"] = head["classes"]
    return asset, head


def _raster_header(path: Path) -> dict[str, Any]:
    """What the catalogue says of a GeoTIFF, from its header only (no pixels are read)."""
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NotGeoreferencedWarning for outputs written with --allow-no-crs
            with rasterio.open(path) as ds:
                head = {"crs": ds.crs, "transform": ds.transform, "width": ds.width, "height": ds.height,
                        "tags": dict(ds.tags()), "descriptions": [d or "" for d in ds.descriptions],
                        "cog": ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT", "").upper() == "COG",
                        "bands": [_raster_band(ds, i) for i in range(ds.count)], "classes": _classes(ds, path)}
                # hsikit's reader knows every way a file can give wavelengths; asked only when there is a hint
                spectral = any("wavelength" in k.lower() for k in (*ds.tags(1), *ds.tags()))
    except RasterioError as e:
        raise InputError(f"output {path.name} cannot be read ({str(e).splitlines()[0]})") from None
    head["eo"] = _eo_bands(path, head["descriptions"]) if spectral else None
    return head


def _raster_band(ds, i: int) -> dict[str, Any]:
    dtype = ds.dtypes[i]
    band: dict[str, Any] = {"data_type": dtype if dtype in _STAC_DTYPES else _DTYPES.get(dtype, "other")}
    nodata = ds.nodatavals[i]
    if nodata is not None:
        band["nodata"] = _nodata(nodata, dtype)
    scale, offset = ds.scales[i], ds.offsets[i]
    if scale != 1.0 or offset != 0.0:
        band["scale"], band["offset"] = float(scale), float(offset)
    if ds.units and ds.units[i]:
        band["unit"] = ds.units[i]
    t = ds.transform
    if ds.crs is not None and ds.crs.is_projected and ds.crs.linear_units in ("metre", "meter") and t.b == t.d == 0:
        band["spatial_resolution"] = _num((abs(t.a) + abs(t.e)) / 2)
    return band


def _nodata(value: float, dtype: str) -> float | int | str:
    if value != value:
        return "nan"
    if value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    return int(value) if "int" in dtype else float(value)


def _eo_bands(path: Path, descriptions: list[str]) -> list[dict] | None:
    """eo:bands (names, wavelength and FWHM in micrometres) when the output's bands carry wavelengths."""
    from hsikit.io.open import open_scene

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with open_scene(path) as sc:
            info = sc.bands
    if info.wavelengths is None:
        return None
    out = []
    for i, name in enumerate(info.names):
        b: dict[str, Any] = {"name": name, "center_wavelength": _num(info.wavelengths[i] / 1000.0)}
        if info.fwhm is not None and info.fwhm[i] > 0:
            b["full_width_half_max"] = _num(info.fwhm[i] / 1000.0)
        if descriptions[i] and descriptions[i] != name:
            b["description"] = descriptions[i]
        out.append(b)
    return out


def _classes(ds, path: Path) -> list[dict] | None:
    """classification:classes of a class map: names from hsikit's tags (or GDAL's category names), colours from
    the tags (or the colour table), the nodata value as a class marked ``nodata``."""
    tags = ds.tags()
    titles: dict[int, str] = {}
    colours: dict[int, str] = {}
    names = _json_list(tags.get("HSIKIT_CLASS_NAMES"))
    if names:
        offset = int(tags.get("HSIKIT_CLASS_OFFSET", "1"))
        titles = {i + offset: str(n) for i, n in enumerate(names)}
        colours = {i + offset: str(c) for i, c in enumerate(_json_list(tags.get("HSIKIT_CLASS_COLORS")) or [])}
    else:
        titles = {v: n for v, n in enumerate(_category_names(path)) if n}
    if not titles:
        return None
    try:
        table = ds.colormap(1)
    except ValueError:  # no colour table
        table = {}
    nodata = ds.nodatavals[0]
    nd = int(nodata) if nodata is not None and nodata == nodata and float(nodata).is_integer() else None
    if nd is not None and nd not in titles:
        titles[nd] = "no data"
    classes = []
    for value in sorted(titles):
        c: dict[str, Any] = {"value": value, "name": _class_name(titles[value], value), "title": titles[value]}
        hint = _colour_hint(colours.get(value)) or (_colour_hint(table.get(value)) if value != nd else None)
        if hint:
            c["color_hint"] = hint
        if value == nd:
            c["nodata"] = True
        classes.append(c)
    return classes


def _category_names(path: Path) -> list[str]:
    """Band 1's GDAL category names from the PAM sidecar (``.aux.xml``), index = pixel value."""
    import xml.etree.ElementTree as ET

    aux = path.with_name(path.name + ".aux.xml")
    if not aux.exists():
        return []
    try:
        root = ET.parse(aux).getroot()
    except ET.ParseError:
        return []
    for band in root.iter("PAMRasterBand"):
        if band.get("band", "1") == "1":
            return [(c.text or "").strip() for c in band.iter("Category")]
    return []


def _class_name(title: str, value: int) -> str:
    # the extension's names are identifiers (letters, digits, - and _); the title keeps the name as written
    name = re.sub(r"[^0-9A-Za-z_-]+", "_", title).strip("_")
    return name or f"class_{value}"


def _colour_hint(colour: Any) -> str | None:
    if isinstance(colour, str) and re.fullmatch(r"#?[0-9A-Fa-f]{6}", colour.strip()):
        return colour.strip().lstrip("#").upper()
    if isinstance(colour, (tuple, list)) and len(colour) >= 3:
        return "".join(f"{int(v):02X}" for v in colour[:3])
    return None


def _json_list(text: str | None) -> list | None:
    if not text:
        return None
    try:
        v = json.loads(text)
    except ValueError:
        return None
    return v if isinstance(v, list) else None


def _properties(row: SceneRow, grid: dict[str, Any]) -> dict[str, Any]:
    """Item properties: the output's creation time (its HSIKIT_CREATED tag, else when the manifest recorded the
    scene done) as ``datetime``, the projection of the main output, hsikit's provenance of the scene."""
    from rasterio.transform import array_bounds

    created = _created(grid["tags"].get("HSIKIT_CREATED"), row.finished)
    props: dict[str, Any] = {"datetime": created, "created": created}
    crs = grid["crs"]
    code = _crs_code(crs)
    props["proj:code"] = code
    if crs is not None and code is None:
        props["proj:wkt2"] = crs.to_wkt(version="WKT2_2019")
    if crs is not None:
        west, south, east, north = array_bounds(grid["height"], grid["width"], grid["transform"])
        props["proj:bbox"] = [_num(v) for v in (west, south, east, north)]
    props["hsikit:task"] = row.task
    props["hsikit:batch_key"] = row.key
    for tag, key in (("HSIKIT_MODEL", "hsikit:model"), ("HSIKIT_CHECKPOINT_SHA256", "hsikit:checkpoint_sha256"),
                     ("HSIKIT_VERSION", "hsikit:version")):
        if grid["tags"].get(tag):
            props[key] = grid["tags"][tag]
    return props


def _created(tag: str | None, finished: float | None) -> str:
    if tag:
        try:
            t = dt.datetime.fromisoformat(tag.replace("Z", "+00:00"))
            t = t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)
            return t.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            pass
    when = dt.datetime.fromtimestamp(finished or 0.0, dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _crs_code(crs) -> str | None:
    if crs is None:
        return None
    auth = crs.to_authority()
    return f"{auth[0]}:{auth[1]}" if auth else None


def _footprint(grid: dict[str, Any]) -> tuple[dict | None, list[float] | None]:
    """The output's outline in WGS 84 (GeoJSON polygon, counter-clockwise) and its bbox; (None, None) without a
    CRS. Edges are densified before reprojection, then points within ~1 cm of a straight line are dropped."""
    from rasterio.warp import transform as warp
    from shapely.geometry import Polygon, mapping
    from shapely.geometry.polygon import orient

    if grid["crs"] is None:
        return None, None
    w, h, n = grid["width"], grid["height"], _EDGE_POINTS
    steps = [k / n for k in range(n)]
    pixels = ([(w * s, 0) for s in steps] + [(w, h * s) for s in steps] + [(w * (1 - s), h) for s in steps]
              + [(0, h * (1 - s)) for s in steps])
    xy = [grid["transform"] * p for p in pixels]
    lon, lat = warp(grid["crs"], "EPSG:4326", [p[0] for p in xy], [p[1] for p in xy])
    poly = orient(Polygon(zip(lon, lat)).simplify(1e-7, preserve_topology=True), sign=1.0)
    ring = [[_num(x, 8), _num(y, 8)] for x, y in mapping(poly)["coordinates"][0]]
    bbox = [_num(v, 8) for v in poly.bounds]
    return {"type": "Polygon", "coordinates": [ring]}, bbox


def _item_links(out: Path, item_file: Path, row: SceneRow, model: _Model | None) -> list[dict]:
    coll = out / STAC_FOLDER / row.task / "collection.json"
    links = [*_up_links(out, item_file, coll),
             {"rel": "collection", "href": _rel(coll, item_file), "type": _JSON, "title": row.task}]
    source = {"rel": "derived_from", "href": _source_href(row.input), "title": "source scene"}
    media = _MEDIA.get(Path(row.input).suffix.lower())
    if media and media != _JSON:
        source["type"] = media
    links.append(source)
    if model is not None and model.item_file is not None:
        link = {"rel": "derived_from", "href": _rel(model.item_file, item_file), "type": _GEOJSON,
                "title": "model"}
        if model.name:
            link["mlm:name"] = model.name
        links.append(link)
    return links


def _source_href(href: str) -> str:
    """The input as a link target: a GDAL /vsi path back to its URL, a local path absolute (the source usually
    lies outside OUTDIR, which may be moved without it)."""
    for prefix, scheme in (("/vsicurl/", ""), ("/vsis3/", "s3://"), ("/vsigs/", "gs://")):
        if href.startswith(prefix):
            return scheme + href[len(prefix):]
    return href if href.startswith("/vsi") else str(Path(href).resolve())


# -- collections, the catalogue, files -------------------------------------------------------------------------------
def _collection(out: Path, task: str, items: list[dict]) -> dict:
    path = out / STAC_FOLDER / task / "collection.json"
    boxes = [it["bbox"] for it in items if it.get("bbox")]
    bbox = ([min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes),
             max(b[3] for b in boxes)] if boxes else [-180.0, -90.0, 180.0, 90.0])
    times = sorted(it["properties"]["datetime"] for it in items)
    links = [*_up_links(out, path)]
    links += [{"rel": "item", "href": _rel(_item_file(out, task, it["id"]), path), "type": _GEOJSON,
               "title": it["id"]} for it in items]
    return {"type": "Collection", "stac_version": STAC_VERSION, "stac_extensions": [], "id": task,
            "title": f"hsikit batch {task}", "description": f"Outputs of `hsikit batch {task}`, one item per scene.",
            "license": "other", "extent": {"spatial": {"bbox": [bbox]},
                                           "temporal": {"interval": [[times[0], times[-1]]]}},
            "links": links}


def _catalog(out: Path, tasks: list[str], models: list[_Model]) -> dict:
    path = out / CATALOG_NAME
    links = [{"rel": "root", "href": "./" + CATALOG_NAME, "type": _JSON, "title": "hsikit batch"}]
    links += [{"rel": "child", "href": _rel(out / STAC_FOLDER / t / "collection.json", path), "type": _JSON,
               "title": f"hsikit batch {t}"} for t in tasks]
    links += [{"rel": "item", "href": _rel(m.item_file, path), "type": _GEOJSON, "title": "model"}
              for m in models]
    return {"type": "Catalog", "stac_version": STAC_VERSION, "stac_extensions": [], "id": "hsikit-batch",
            "title": "hsikit batch outputs",
            "description": "Outputs of hsikit batch runs, rebuilt from the folder's manifest (hsikit-batch.sqlite) "
                           "after every run.", "links": links}


def _up_links(out: Path, owner: Path, parent: Path | None = None) -> list[dict]:
    root = out / CATALOG_NAME
    return [{"rel": "root", "href": _rel(root, owner), "type": _JSON},
            {"rel": "parent", "href": _rel(parent or root, owner), "type": _JSON}]


def _item_file(out: Path, task: str, item_id: str) -> Path:
    return out / STAC_FOLDER / task / "items" / f"{item_id}.json"


def _rel(target: Path, owner: Path) -> str:
    r = os.path.relpath(target, owner.parent).replace(os.sep, "/")
    return r if r.startswith("../") else "./" + r


def _href(path: Path, owner: Path, out: Path) -> str:
    """Relative inside OUTDIR (which may be moved), absolute outside it."""
    try:
        path.resolve().relative_to(out.resolve())
    except ValueError:
        return str(path.resolve())
    return _rel(path, owner)


def _num(v: float, digits: int = 10) -> float | int:
    """A float for JSON without binary noise (stable text across runs); integral values as int."""
    r = round(float(v), digits)
    return int(r) if r.is_integer() and abs(r) < 2**53 else r


def _write_files(files: dict[Path, dict], main: Path) -> int:
    """Write the JSON files whose text changed, each under a temporary name, then rename them together (``main``
    last, so a reader that finds it finds the rest). Returns how many were written."""
    from hsikit.io.atomic import atomic_outputs

    texts = {p: json.dumps(d, indent=2, ensure_ascii=False) + "\n" for p, d in files.items()}
    changed = [p for p, t in texts.items() if not _same_text(p, t)]
    if not changed:
        return 0
    changed.sort(key=lambda p: (p != main, str(p)))
    for folder in {p.parent for p in changed}:
        folder.mkdir(parents=True, exist_ok=True)
    with atomic_outputs(changed, overwrite=True) as temps:
        for p in changed:
            temps[p].write_text(texts[p], encoding="utf-8")
    return len(changed)


def _same_text(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        return False


def _remove_stale(out: Path, keep: set[Path]) -> int:
    """Remove the catalogue's JSON files under ``OUTDIR/stac`` that the new catalogue no longer has (a scene no
    longer done, a task with no scene left) and the folders they leave empty."""
    root = out / STAC_FOLDER
    if not root.is_dir():
        return 0
    n = 0
    for p in sorted(root.rglob("*.json")):
        if p not in keep and p.is_file():
            p.unlink()
            n += 1
    for d in sorted((d for d in root.rglob("*") if d.is_dir()), key=lambda d: len(d.parts), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    if not any(root.iterdir()):
        root.rmdir()
    return n
