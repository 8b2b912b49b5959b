"""Small fake Sentinel-2 products for tests: SAFE folders (L1C / L2A, any processing baseline, any UTM tile) and
GeoTIFF band stacks with dates.

Band files are real JPEG 2000 written losslessly through rasterio's bundled GDAL (JP2OpenJPEG driver, reversible
wavelet), with the product layout of the ESA specification: L2A ``GRANULE/<id>/IMG_DATA/R10m/<tile>_<time>_B02_10m.jp2``,
``R20m/..._SCL_20m.jp2``, ``QI_DATA/MSK_CLDPRB_20m.jp2``; L1C ``GRANULE/<id>/IMG_DATA/<tile>_<time>_B01.jp2``,
``QI_DATA/MSK_CLASSI_B00.jp2``. Metadata XML uses the real tag names and nesting (PSD 14.x).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
NATIVE = {"B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20, "B08": 10, "B8A": 20,
          "B09": 60, "B10": 60, "B11": 20, "B12": 20}
CENTRAL = {"B01": 442.7, "B02": 492.4, "B03": 559.8, "B04": 664.6, "B05": 704.1, "B06": 740.5, "B07": 782.8,
           "B08": 832.8, "B8A": 864.7, "B09": 945.1, "B10": 1373.5, "B11": 1613.7, "B12": 2202.4}
# L2A files per resolution folder (baseline >= 04.00 adds B01 at 20 m)
L2A_R20 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12")
L2A_R60 = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B09", "B11", "B12")


def default_dn(band: str, shape: tuple[int, int]) -> np.ndarray:
    """A band-specific constant DN (1000 + 100 x band position) everywhere."""
    return np.full(shape, 1000 + 100 * S2_BANDS.index(band), dtype=np.uint16)


def write_raster(path: Path, data: np.ndarray, *, crs, transform, driver: str = "JP2OpenJPEG",
                 nodata: float | None = None, descriptions=None, tags=None, band_tags=None) -> Path:
    """Write (bands, h, w) or (h, w) data; JP2 losslessly."""
    if data.ndim == 2:
        data = data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(driver=driver, width=data.shape[2], height=data.shape[1], count=data.shape[0],
                   dtype=data.dtype.name, crs=CRS.from_user_input(crs), transform=transform)
    if nodata is not None:
        profile["nodata"] = nodata
    if driver == "JP2OpenJPEG":
        profile.update(QUALITY=100, REVERSIBLE="YES")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, d in enumerate(descriptions or []):
            dst.set_band_description(i + 1, d)
        if tags:
            dst.update_tags(**tags)
        for i, t in enumerate(band_tags or []):
            dst.update_tags(i + 1, **t)
    return path


def block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = a.shape
    return np.round(a.reshape(h // f, f, w // f, f).astype(np.float64).mean(axis=(1, 3))).astype(a.dtype)


def _resample(a: np.ndarray, src: int, dst: int) -> np.ndarray:
    if dst > src:
        return block_mean(a, dst // src)
    if dst < src:
        return np.repeat(np.repeat(a, src // dst, axis=0), src // dst, axis=1)
    return a


def _fmt_time(when: str) -> str:
    return when[:19].replace("-", "").replace(":", "")


def write_safe(
    parent: Path,
    *,
    level: str = "L2A",
    baseline: str = "05.10",
    tile: str = "T33UUU",
    epsg: int = 32633,
    ulx: float = 300000.0,
    uly: float = 5900040.0,
    size: int = 60,
    when: str = "2023-06-03T10:15:59.024Z",
    bands: dict[str, np.ndarray] | None = None,
    include: tuple[str, ...] | None = None,
    scl: np.ndarray | None = None,
    cldprb: np.ndarray | None = None,
    classi: np.ndarray | None = None,
    offsets: bool | None = None,
    quantification: int = 10000,
    extra_resolutions: bool = True,
    spacecraft: str = "Sentinel-2A",
) -> Path:
    """Write a fake SAFE product and return its folder.

    ``size``: the tile side in 10 m pixels (multiple of 6). ``bands``: DN arrays at each band's native resolution
    (others get :func:`default_dn`); ``include`` limits the bands written (default: all of the level; L2A has no
    B10). ``scl``/``cldprb``: 20 m arrays (L2A); ``classi``: (3, h60, w60) L1C MSK_CLASSI. ``offsets``: write
    BOA/RADIO_ADD_OFFSET -1000 (default: when baseline >= 04.00). ``extra_resolutions``: L2A also gets the R20m /
    R60m copies of bands, as real products do.
    """
    assert size % 6 == 0
    level = level.upper()
    stamp = _fmt_time(when)
    nbase = "N" + baseline.replace(".", "")
    sat = "S2" + spacecraft[-1].upper()
    root = parent / f"{sat}_MSI{level}_{stamp}_{nbase}_R065_{tile}_{stamp}.SAFE"
    gran_id = f"{level}_{tile}_A041000_{stamp}"
    gran = root / "GRANULE" / gran_id
    img = gran / "IMG_DATA"
    crs = CRS.from_epsg(epsg)
    include = include or tuple(b for b in S2_BANDS if not (level == "L2A" and b == "B10"))
    bands = dict(bands or {})
    native = {}
    for b in include:
        shape = (size * 10 // NATIVE[b],) * 2
        a = bands.get(b)
        a = default_dn(b, shape) if a is None else np.asarray(a, dtype=np.uint16)
        assert a.shape == shape, f"{b} must be {shape} at {NATIVE[b]} m, got {a.shape}"
        native[b] = a
    files = []

    def put(rel: Path, data: np.ndarray, res: int) -> None:
        write_raster(rel, data, crs=crs, transform=from_origin(ulx, uly, res, res))
        files.append(rel)

    prefix = f"{tile}_{stamp}"
    if level == "L1C":
        for b, a in native.items():
            put(img / f"{prefix}_{b}.jp2", a, NATIVE[b])
    else:
        for b in ("B02", "B03", "B04", "B08"):
            if b in native:
                put(img / "R10m" / f"{prefix}_{b}_10m.jp2", native[b], 10)
        for res, names in ((20, L2A_R20), (60, L2A_R60)):
            for b in names:
                if b not in native:
                    continue
                if NATIVE[b] == res or (extra_resolutions and not (b == "B01" and res == 20 and baseline < "04.00")):
                    put(img / f"R{res}m" / f"{prefix}_{b}_{res}m.jp2", _resample(native[b], NATIVE[b], res), res)
        if scl is not None:
            scl = np.asarray(scl, dtype=np.uint8)
            put(img / "R20m" / f"{prefix}_SCL_20m.jp2", scl, 20)
            if extra_resolutions:
                put(img / "R60m" / f"{prefix}_SCL_60m.jp2", scl[1::3, 1::3].copy(), 60)
        if cldprb is not None:
            put(gran / "QI_DATA" / "MSK_CLDPRB_20m.jp2", np.asarray(cldprb, dtype=np.uint8), 20)
    if classi is not None:
        put(gran / "QI_DATA" / "MSK_CLASSI_B00.jp2", np.asarray(classi, dtype=np.uint8), 60)
    # a QI file whose name ends like a band file: readers must not take it for band B01
    put(gran / "QI_DATA" / "MSK_QUALIT_B01.jp2", np.ones((size // 6, size // 6), np.uint8), 60)

    with_offsets = (baseline >= "04.00") if offsets is None else offsets
    (root / f"MTD_MSI{level}.xml").write_text(
        _product_xml(level, baseline, when, spacecraft, root, files, include, with_offsets, quantification))
    (gran / "MTD_TL.xml").write_text(_tile_xml(level, tile, baseline, when, epsg, ulx, uly, size))
    return root


def _product_xml(level, baseline, when, spacecraft, root, files, bands, with_offsets, quant) -> str:
    l2a = level == "L2A"
    kind = "Level-2A" if l2a else "Level-1C"
    images = "\n".join(f"            <IMAGE_FILE>{f.relative_to(root).with_suffix('').as_posix()}</IMAGE_FILE>"
                       for f in files if "IMG_DATA" in f.parts)
    if l2a:
        quant_xml = (f'<QUANTIFICATION_VALUES_LIST>\n        <BOA_QUANTIFICATION_VALUE unit="none">{quant}'
                     '</BOA_QUANTIFICATION_VALUE>\n        <AOT_QUANTIFICATION_VALUE unit="none">1000.0'
                     '</AOT_QUANTIFICATION_VALUE>\n      </QUANTIFICATION_VALUES_LIST>')
        offs = "".join(f'\n        <BOA_ADD_OFFSET band_id="{i}">-1000</BOA_ADD_OFFSET>' for i in range(13))
        off_xml = f"<BOA_ADD_OFFSET_VALUES_LIST>{offs}\n      </BOA_ADD_OFFSET_VALUES_LIST>" if with_offsets else ""
    else:
        quant_xml = f'<QUANTIFICATION_VALUE unit="none">{quant}</QUANTIFICATION_VALUE>'
        offs = "".join(f'\n        <RADIO_ADD_OFFSET band_id="{i}">-1000</RADIO_ADD_OFFSET>' for i in range(13))
        off_xml = f"<Radiometric_Offset_List>{offs}\n      </Radiometric_Offset_List>" if with_offsets else ""
    spectral = "".join(
        f'\n        <Spectral_Information bandId="{i}" physicalBand="{b.replace("B0", "B")}">'
        f"<RESOLUTION>{NATIVE[b]}</RESOLUTION><Wavelength><CENTRAL unit=\"nm\">{CENTRAL[b]}</CENTRAL></Wavelength>"
        "</Spectral_Information>" for i, b in enumerate(S2_BANDS))
    ptype = "S2MSI2A" if l2a else "S2MSI1C"
    return f"""<?xml version="1.0" encoding="UTF-8" standalone="no"?>
<n1:{kind}_User_Product xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_{kind}.xsd" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <n1:General_Info>
    <Product_Info>
      <PRODUCT_START_TIME>{when}</PRODUCT_START_TIME>
      <PRODUCT_STOP_TIME>{when}</PRODUCT_STOP_TIME>
      <PRODUCT_URI>{root.name}</PRODUCT_URI>
      <PROCESSING_LEVEL>{kind}</PROCESSING_LEVEL>
      <PRODUCT_TYPE>{ptype}</PRODUCT_TYPE>
      <PROCESSING_BASELINE>{baseline}</PROCESSING_BASELINE>
      <Datatake datatakeIdentifier="G{spacecraft[-2:]}_{_fmt_time(when)}_041000_N{baseline}">
        <SPACECRAFT_NAME>{spacecraft}</SPACECRAFT_NAME>
        <DATATAKE_TYPE>INS-NOBS</DATATAKE_TYPE>
        <DATATAKE_SENSING_START>{when}</DATATAKE_SENSING_START>
      </Datatake>
      <Product_Organisation>
        <Granule_List>
          <Granule granuleIdentifier="fake" imageFormat="JPEG2000">
{images}
          </Granule>
        </Granule_List>
      </Product_Organisation>
    </Product_Info>
    <Product_Image_Characteristics>
      <Special_Values><SPECIAL_VALUE_TEXT>NODATA</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>0</SPECIAL_VALUE_INDEX></Special_Values>
      <Special_Values><SPECIAL_VALUE_TEXT>SATURATED</SPECIAL_VALUE_TEXT><SPECIAL_VALUE_INDEX>65535</SPECIAL_VALUE_INDEX></Special_Values>
      {quant_xml}
      {off_xml}
      <Spectral_Information_List>{spectral}
      </Spectral_Information_List>
    </Product_Image_Characteristics>
  </n1:General_Info>
  <n1:Quality_Indicators_Info>
    <Cloud_Coverage_Assessment>12.5</Cloud_Coverage_Assessment>
  </n1:Quality_Indicators_Info>
</n1:{kind}_User_Product>
"""


def _tile_xml(level, tile, baseline, when, epsg, ulx, uly, size) -> str:
    kind = "Level-2A" if level == "L2A" else "Level-1C"
    zone = epsg % 100
    geo = "".join(f'<Size resolution="{r}"><NROWS>{size * 10 // r}</NROWS><NCOLS>{size * 10 // r}</NCOLS></Size>'
                  for r in (10, 20, 60))
    geo += "".join(f'<Geoposition resolution="{r}"><ULX>{ulx:g}</ULX><ULY>{uly:g}</ULY><XDIM>{r}</XDIM>'
                   f"<YDIM>-{r}</YDIM></Geoposition>" for r in (10, 20, 60))
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<n1:{kind}_Tile_ID xmlns:n1="https://psd-14.sentinel2.eo.esa.int/PSD/S2_PDI_{kind}_Tile_Metadata.xsd">
  <n1:General_Info>
    <TILE_ID>S2A_OPER_MSI_{level}_TL_FAKE_{_fmt_time(when)}_A041000_{tile}_N{baseline}</TILE_ID>
    <SENSING_TIME>{when}</SENSING_TIME>
  </n1:General_Info>
  <n1:Geometric_Info>
    <Tile_Geocoding metadataLevel="Brief">
      <HORIZONTAL_CS_NAME>WGS84 / UTM zone {zone}N</HORIZONTAL_CS_NAME>
      <HORIZONTAL_CS_CODE>EPSG:{epsg}</HORIZONTAL_CS_CODE>
      {geo}
    </Tile_Geocoding>
  </n1:Geometric_Info>
</n1:{kind}_Tile_ID>
"""


def write_stack(
    path: Path,
    data: np.ndarray,
    names: list[str],
    *,
    epsg: int = 32633,
    transform=None,
    tags: dict[str, str] | None = None,
    band_tags: list[dict[str, str]] | None = None,
    nodata: float | None = None,
) -> Path:
    """A GeoTIFF band stack with band descriptions ``names`` (e.g. B4, B3, B2, B8 or SCL)."""
    transform = transform if transform is not None else from_origin(300000.0, 5900040.0, 10.0, 10.0)
    return write_raster(path, data, crs=CRS.from_epsg(epsg), transform=transform, driver="GTiff", nodata=nodata,
                        descriptions=names, tags=tags, band_tags=band_tags)


def write_eopatch(root: Path, *, times: list[str], height: int = 6, width: int = 5, epsg: int = 32633,
                  bbox=(465180.0, 5079240.0, 465230.0, 5079300.0), seed: int = 0) -> Path:
    """An eo-learn EOPatch folder: data/NDVI.npy, mask/CLM.npy, mask/IS_DATA.npy, mask_timeless/LULC.npy,
    timestamps.json and bbox.geojson."""
    import json

    rng = np.random.default_rng(seed)
    t = len(times)
    for sub in ("data", "mask", "mask_timeless"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ndvi = rng.uniform(-0.1, 0.9, size=(t, height, width, 1)).astype(np.float32)
    clm = (rng.uniform(size=(t, height, width, 1)) < 0.3).astype(np.uint8)
    is_data = np.ones((t, height, width, 1), np.uint8)
    is_data[0, 0, 0, 0] = 0
    lulc = rng.integers(0, 4, size=(height, width, 1)).astype(np.uint16)
    np.save(root / "data" / "NDVI.npy", ndvi)
    np.save(root / "mask" / "CLM.npy", clm)
    np.save(root / "mask" / "IS_DATA.npy", is_data)
    np.save(root / "mask_timeless" / "LULC.npy", lulc)
    (root / "timestamps.json").write_text(json.dumps(times))
    x0, y0, x1, y1 = bbox
    (root / "bbox.geojson").write_text(json.dumps({
        "crs": {"type": "name", "properties": {"name": f"urn:ogc:def:crs:EPSG::{epsg}"}},
        "type": "Polygon", "coordinates": [[[x0, y0], [x0, y1], [x1, y1], [x1, y0], [x0, y0]]]}))
    return root
