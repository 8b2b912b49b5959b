"""Training labels on a scene's grid: label rasters (reprojected if needed) or rasterised vector polygons."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hsikit.errors import InputError
from hsikit.io.qml import read_qml_palette
from hsikit.io.scene import Scene

_VECTOR_EXT = {".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite"}
_CLASS_COLUMNS = ("class", "class_id", "classid", "label", "classname", "class_name", "name", "id")


@dataclass
class LabelMap:
    """Labels on a scene grid: ``values`` int32 (H, W) with 0 = unlabelled; names/colours of classes 1..K."""

    values: np.ndarray
    class_names: list[str] | None = None
    class_colors: list[str] | None = None

    @property
    def num_classes(self) -> int:
        return int(self.values.max()) if self.values.size else 0

    def counts(self) -> dict[int, int]:
        v, c = np.unique(self.values[self.values > 0], return_counts=True)
        return {int(a): int(b) for a, b in zip(v, c)}


def read_labels(path: str | Path, scene: Scene, *, attribute: str | None = None) -> LabelMap:
    """Labels for ``scene`` from a raster (on or reprojected to the scene grid) or from vector polygons.

    Vector classes come from ``attribute`` (or the first column named class/class_id/label/...): integer codes are
    used as they are; strings become codes 1..K in sorted order.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"label file not found: {p}")
    if p.suffix.lower() in _VECTOR_EXT:
        return _read_vector(p, scene, attribute)
    return _read_raster(p, scene)


# -- rasters -------------------------------------------------------------------------------------------------------
def _read_raster(p: Path, scene: Scene) -> LabelMap:
    from hsikit.io.open import open_scene

    lab = open_scene(p)
    try:
        if lab.count != 1:
            raise InputError(f"label raster {p.name} has {lab.count} bands; expected 1")
        same_grid = (lab.width, lab.height) == (scene.width, scene.height) and (
            lab.crs is None or scene.crs is None or (lab.crs == scene.crs and lab.transform.almost_equals(scene.transform))
        )
        if same_grid:
            arr = lab.read()[0]
        elif lab.crs is not None and scene.crs is not None:
            arr = _reproject_nearest(lab, scene)
        else:
            raise InputError(
                f"label raster {p.name} ({lab.width}x{lab.height}) is not on the scene grid "
                f"({scene.width}x{scene.height}) and one of them has no CRS to align them"
            )
        values = _to_int_labels(arr, lab.nodata, p.name)
        names, colors = _raster_legend(p, lab)
        return LabelMap(values, names, colors)
    finally:
        lab.close()


def _reproject_nearest(lab: Scene, scene: Scene) -> np.ndarray:
    from rasterio.warp import Resampling, reproject

    src = lab.read()[0].astype(np.float64)
    # scene pixels outside the label raster (or on its nodata) come out NaN, which _to_int_labels makes 0
    dst = np.full((scene.height, scene.width), np.nan, dtype=np.float64)
    reproject(src, dst, src_transform=lab.transform, src_crs=lab.crs, dst_transform=scene.transform,
              dst_crs=scene.crs, resampling=Resampling.nearest, src_nodata=lab.nodata, dst_nodata=np.nan)
    return dst


def _to_int_labels(arr: np.ndarray, nodata: float | None, name: str) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float64)
    bad = ~np.isfinite(a)
    if nodata is not None and np.isfinite(nodata):
        bad |= a == nodata
    a = np.where(bad, 0, a)
    if np.any(a < 0) or np.any(a != np.round(a)):
        raise InputError(f"label raster {name} holds negative or fractional values; expected class codes 0..K")
    return a.astype(np.int32)


def _raster_legend(p: Path, lab: Scene) -> tuple[list[str] | None, list[str] | None]:
    """Class names/colours from a .qml beside the raster, HSIKIT tags, GDAL categories or a benchmark table."""
    qml = p.with_suffix(".qml")
    if qml.exists():
        entries = read_qml_palette(qml)
        if entries:
            k = max(v for v, _, _ in entries)
            names = [f"class_{i}" for i in range(1, k + 1)]
            colors = ["#808080"] * k
            for v, c, label in entries:
                if v >= 1:
                    names[v - 1], colors[v - 1] = label, c
            return names, colors
    if "HSIKIT_CLASS_NAMES" in lab.tags:
        names = json.loads(lab.tags["HSIKIT_CLASS_NAMES"])
        colors = json.loads(lab.tags.get("HSIKIT_CLASS_COLORS", "null"))
        return names, colors
    ds = getattr(lab, "_ds", None)
    if ds is not None:
        try:
            cmap = ds.colormap(1)
        except ValueError:
            cmap = None
        cats = _gdal_categories(p)
        if cats and len(cats) > 1:
            names = cats[1:]
            colors = [f"#{cmap[i][0]:02x}{cmap[i][1]:02x}{cmap[i][2]:02x}" for i in range(1, len(cats))] if cmap else None
            return names, colors
    return lab.class_names, None


def _gdal_categories(p: Path) -> list[str] | None:
    aux = p.with_name(p.name + ".aux.xml")
    if not aux.exists():
        return None
    root = ET.parse(aux).getroot()
    cats = root.find("./PAMRasterBand/CategoryNames")
    return [c.text or "" for c in cats.findall("Category")] if cats is not None else None


# -- vectors -------------------------------------------------------------------------------------------------------
def _read_vector(p: Path, scene: Scene, attribute: str | None) -> LabelMap:
    import pyogrio
    from rasterio.crs import CRS
    from rasterio.features import rasterize
    from rasterio.warp import transform_geom
    from shapely import wkb
    from shapely.geometry import mapping

    if scene.crs is None:
        raise InputError(f"vector labels {p.name} need a georeferenced scene; {scene.name} has no CRS")
    try:
        meta, _, geoms, field_data = pyogrio.raw.read(p)
        columns = list(meta["fields"])
    except Exception as e:  # pyogrio raises DataSourceError and friends
        raise InputError(f"cannot read vector labels {p.name}: {str(e).splitlines()[0]}") from None
    col = attribute or next((c for c in columns if c.lower() in _CLASS_COLUMNS), None)
    if col is None or col not in columns:
        raise InputError(f"{p.name} has no class attribute {attribute or ''!r}; its attributes are {columns}")
    values = field_data[columns.index(col)]
    if np.asarray(values).dtype.kind in "iuf":
        codes = np.asarray(values, dtype=np.float64)
        if np.any(codes < 1) or np.any(codes != np.round(codes)):
            raise InputError(f"{p.name}: attribute {col!r} must hold class codes 1..K (or class names)")
        codes = codes.astype(np.int32)
        names = None
        name_col = next((c for c in columns if c.lower() in ("class_name", "classname", "name") and c != col), None)
        if name_col is not None:
            k = int(codes.max())
            names = [f"class_{i}" for i in range(1, k + 1)]
            for c, n in zip(codes, field_data[columns.index(name_col)]):
                names[c - 1] = str(n)
    else:
        uniq = sorted({str(v) for v in values})
        lookup = {n: i + 1 for i, n in enumerate(uniq)}
        codes = np.array([lookup[str(v)] for v in values], dtype=np.int32)
        names = uniq
    vec_crs = meta.get("crs")
    shapes = []
    for g, c in zip(geoms, codes):
        if g is None:
            continue
        geom = mapping(wkb.loads(g))
        if vec_crs and CRS.from_user_input(vec_crs) != scene.crs:
            geom = transform_geom(vec_crs, scene.crs, geom)
        shapes.append((geom, int(c)))
    out = rasterize(shapes, out_shape=(scene.height, scene.width), transform=scene.transform, fill=0,
                    dtype="int32", all_touched=False)
    if not out.any():
        raise InputError(f"vector labels {p.name} do not overlap scene {scene.name}")
    return LabelMap(out, names, None)

