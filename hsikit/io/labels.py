"""Training labels on a scene's grid: label rasters on that grid (resampled only on request) or rasterised vector
polygons."""

from __future__ import annotations

import json
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def read_labels(path: str | Path, scene: Scene, *, attribute: str | None = None,
                allow_resample: bool = False) -> LabelMap:
    """Labels for ``scene`` from a raster on the scene grid or from vector polygons (reprojected as needed).

    A label raster must lie on the scene's pixel grid (same CRS, pixel size and pixel edges; a larger or smaller
    raster is cropped/padded); one on another grid is refused unless ``allow_resample``, which resamples it by
    nearest neighbour with a warning. Labels that do not overlap the scene are refused.
    Vector classes come from ``attribute`` (or the first column named class/class_id/label/...): integer codes are
    used as they are; strings become codes 1..K in sorted order.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"label file not found: {p}")
    if p.suffix.lower() in _VECTOR_EXT:
        return _read_vector(p, scene, attribute)
    return _read_raster(p, scene, allow_resample)


# -- rasters -------------------------------------------------------------------------------------------------------
#: transforms closer than this fraction of a scene pixel count as the same grid
_GRID_TOL = 1e-6


def _read_raster(p: Path, scene: Scene, allow_resample: bool) -> LabelMap:
    from hsikit.io.open import open_scene

    lab = open_scene(p)
    try:
        if lab.count != 1:
            raise InputError(f"label raster {p.name} has {lab.count} bands; expected 1")
        if lab.crs is None or scene.crs is None:
            if (lab.width, lab.height) != (scene.width, scene.height):
                raise InputError(
                    f"label raster {p.name} ({lab.width}x{lab.height}) is not on the scene grid of {scene.name} "
                    f"({scene.width}x{scene.height}) and one of them has no CRS to align them"
                )
            arr = lab.read()[0]
        else:
            _check_overlap(p.name, _raster_bounds(lab), lab.crs, scene)
            why = _grid_difference(p.name, lab, scene)
            if why is None:
                arr = _read_on_lattice(lab, scene)
            elif allow_resample:
                warnings.warn(f"{p.name} is resampled by nearest neighbour from its grid ({_describe_grid(lab)}) "
                              f"onto that of {scene.name} ({_describe_grid(scene)})", stacklevel=3)
                arr = _reproject_nearest(lab, scene)
            else:
                raise InputError(f"{why}; pass --allow-resample to resample it by nearest neighbour")
        values = _to_int_labels(arr, lab.nodata, p.name)
        names, colors = _raster_legend(p, lab)
        return LabelMap(values, names, colors)
    finally:
        lab.close()


def _pixel_offset(lab: Scene, scene: Scene) -> tuple[float, float]:
    """Position of the label raster's origin in scene pixels (columns, rows)."""
    return ~scene.transform @ (lab.transform.c, lab.transform.f)


def _grid_difference(name: str, lab: Scene, scene: Scene) -> str | None:
    """None when every label pixel is a scene pixel (same CRS, pixel size and pixel edges), else what differs."""
    if lab.crs != scene.crs:
        return f"{name} is in {_crs_name(lab.crs)}, {scene.name} in {_crs_name(scene.crs)}"
    lt, st = lab.transform, scene.transform
    px = max(abs(st.a), abs(st.e), abs(st.b), abs(st.d))
    if any(abs(u - v) > _GRID_TOL * px for u, v in ((lt.a, st.a), (lt.e, st.e), (lt.b, st.b), (lt.d, st.d))):
        if lt.b or lt.d or st.b or st.d:
            return (f"{name} is not on the grid of {scene.name}: their pixel axes differ "
                    f"({_affine_text(lt)} vs {_affine_text(st)})")
        u = _unit(scene.crs)
        return (f"{name} is not on the grid of {scene.name}: its pixels are {_num(abs(lt.a))} x {_num(abs(lt.e))}"
                f"{u}, the scene's {_num(abs(st.a))} x {_num(abs(st.e))}{u}")
    col, row = _pixel_offset(lab, scene)
    fx, fy = col - round(col), row - round(row)
    if abs(fx) > _GRID_TOL or abs(fy) > _GRID_TOL:
        return (f"{name} is not on the grid of {scene.name}: its origin is shifted by "
                f"({_signed(fx)}, {_signed(fy)}) px ({_shift_text(fx, fy, st, scene.crs)})")
    return None


def _read_on_lattice(lab: Scene, scene: Scene) -> np.ndarray:
    """The scene's window of a label raster on the same pixel grid; scene pixels beyond it come out NaN."""
    from rasterio.windows import Window

    col, row = _pixel_offset(lab, scene)
    c0, r0 = int(round(col)), int(round(row))  # scene pixel of the label raster's first pixel
    if (c0, r0, lab.width, lab.height) == (0, 0, scene.width, scene.height):
        return lab.read()[0]
    out = np.full((scene.height, scene.width), np.nan, dtype=np.float64)
    x0, y0 = max(c0, 0), max(r0, 0)
    x1, y1 = min(c0 + lab.width, scene.width), min(r0 + lab.height, scene.height)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = lab.read(Window(x0 - c0, y0 - r0, x1 - x0, y1 - y0))[0]
    return out


def _reproject_nearest(lab: Scene, scene: Scene) -> np.ndarray:
    from rasterio.warp import Resampling, reproject

    src = lab.read()[0].astype(np.float64)
    # scene pixels outside the label raster (or on its nodata) come out NaN, which _to_int_labels makes 0
    dst = np.full((scene.height, scene.width), np.nan, dtype=np.float64)
    reproject(src, dst, src_transform=lab.transform, src_crs=lab.crs, dst_transform=scene.transform,
              dst_crs=scene.crs, resampling=Resampling.nearest, src_nodata=lab.nodata, dst_nodata=np.nan)
    return dst


# -- grid descriptions (one line each) ------------------------------------------------------------------------------
def _crs_name(crs: Any) -> str:
    from rasterio.crs import CRS

    crs = CRS.from_user_input(crs)
    epsg = crs.to_epsg()
    if epsg:
        return f"EPSG:{epsg}"
    text = crs.to_string()
    return text if len(text) <= 60 else text[:57] + "..."


def _unit(crs: Any) -> str:
    from rasterio.crs import CRS

    crs = CRS.from_user_input(crs)
    if crs.is_geographic:
        return " deg"
    return " m" if crs.linear_units in ("metre", "meter", "m") else ""


def _num(v: float) -> str:
    return f"{v:.10g}"


def _signed(v: float) -> str:
    return "0" if abs(v) <= _GRID_TOL else f"{v:+.4g}"


def _affine_text(t: Any) -> str:
    return "(" + ", ".join(_num(v) for v in (t.a, t.b, t.d, t.e)) + ")"


def _shift_text(fx: float, fy: float, t: Any, crs: Any) -> str:
    """A sub-pixel shift (scene pixels) in map units and compass directions."""
    dx, dy = fx * t.a + fy * t.b, fx * t.d + fy * t.e
    u = _unit(crs)
    tol = _GRID_TOL * max(abs(t.a), abs(t.e))
    parts = [f"{_num(abs(d))}{u} {pos if d > 0 else neg}"
             for d, pos, neg in ((dx, "east", "west"), (dy, "north", "south")) if abs(d) > tol]
    return ", ".join(parts)


def _describe_grid(sc: Scene) -> str:
    t = sc.transform
    u = _unit(sc.crs)
    return (f"{_crs_name(sc.crs)}, {_num(abs(t.a))} x {_num(abs(t.e))}{u} pixels, origin ({_num(t.c)}, {_num(t.f)}), "
            f"{sc.width}x{sc.height} px")


# -- overlap --------------------------------------------------------------------------------------------------------
def _raster_bounds(sc: Scene) -> tuple[float, float, float, float]:
    t = sc.transform
    xs, ys = zip(*(t @ (c, r) for c in (0, sc.width) for r in (0, sc.height)))
    return min(xs), min(ys), max(xs), max(ys)


def _check_overlap(name: str, bounds: tuple[float, float, float, float], crs: Any, scene: Scene) -> None:
    """Refuse labels whose bounds (in ``crs``) do not meet the scene; both are reported in the scene's CRS."""
    from rasterio.warp import transform_bounds

    if crs != scene.crs:
        try:
            bounds = transform_bounds(crs, scene.crs, *bounds, densify_pts=21)
        except Exception:  # noqa: BLE001  (bounds outside the target projection's area: leave it to resampling)
            return
    sb = _raster_bounds(scene)
    if bounds[0] < sb[2] and bounds[2] > sb[0] and bounds[1] < sb[3] and bounds[3] > sb[1]:
        return
    d = 6 if _unit(scene.crs) == " deg" else 0
    lo_hi = "x {:.{d}f} to {:.{d}f}, y {:.{d}f} to {:.{d}f}"
    raise InputError(
        f"{name} and {scene.name} do not overlap: the labels cover {lo_hi.format(*_xxyy(bounds), d=d)}, "
        f"the scene {lo_hi.format(*_xxyy(sb), d=d)} ({_crs_name(scene.crs)})"
    )


def _xxyy(b: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    return b[0], b[2], b[1], b[3]


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
    from shapely.geometry import mapping, shape

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
    reproject = bool(vec_crs) and CRS.from_user_input(vec_crs) != scene.crs
    shapes, boxes = [], []
    for g, c in zip(geoms, codes):
        if g is None:
            continue
        geom = mapping(wkb.loads(g))
        if reproject:
            geom = transform_geom(vec_crs, scene.crs, geom)
        shapes.append((geom, int(c)))
        boxes.append(shape(geom).bounds)
    if boxes:
        b = np.asarray(boxes, dtype=np.float64)
        _check_overlap(p.name, (b[:, 0].min(), b[:, 1].min(), b[:, 2].max(), b[:, 3].max()), scene.crs, scene)
    out = rasterize(shapes, out_shape=(scene.height, scene.width), transform=scene.transform, fill=0,
                    dtype="int32", all_touched=False) if shapes else np.zeros((scene.height, scene.width), np.int32)
    if not out.any():
        raise InputError(f"vector labels {p.name} do not cover the centre of any pixel of {scene.name}")
    return LabelMap(out, names, None)

