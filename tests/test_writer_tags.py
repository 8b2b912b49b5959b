"""RasterWriter metadata beyond the constructor's tags: ``add_tags`` during the run (statistics known only at the
end) and ``tag_domains`` (named metadata domains) that must survive the COG and the GTiff copy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window

import hsikit.io.writer as writer_module
from hsikit.io.legend import Legend
from hsikit.io.writer import RasterWriter

UTM = CRS.from_epsg(32633)
GRID = from_origin(366000.0, 5810000.0, 30.0, 30.0)
BIG = json.dumps({"steps": [{"op": "standardize", "params": {"mean": list(np.linspace(0, 1, 4000))}}]})


def _continuous(path: Path, **kw) -> RasterWriter:
    return RasterWriter(path, width=300, height=260, count=2, dtype="float32", crs=UTM, transform=GRID,
                        nodata=float("nan"), kind="continuous", **kw)


def _categorical(path: Path, **kw) -> RasterWriter:
    return RasterWriter(path, width=300, height=260, count=1, dtype="uint8", crs=UTM, transform=GRID, nodata=0,
                        kind="categorical", legend=Legend.from_names(["a", "b"]), **kw)


def _fill(wr: RasterWriter) -> None:
    wr.write(np.ones((wr.count, 260, 300), wr.dtype), Window(0, 0, 300, 260))


@pytest.mark.parametrize("fmt", ["cog", "gtiff"])
@pytest.mark.parametrize("make", [_continuous, _categorical])
def test_add_tags_inside_the_block(tmp_path, fmt, make):
    p = tmp_path / "out.tif"
    with make(p, fmt=fmt, tags={"HSIKIT_INPUT": "scene.tif"}) as wr:
        _fill(wr)
        wr.add_tags(HSIKIT_VALID_PIXELS="78000", HSIKIT_MEAN="0.5")
        wr.add_tags(HSIKIT_MEAN="0.25")  # a later value replaces an earlier one
    with rasterio.open(p) as src:
        tags = src.tags()
    assert tags["HSIKIT_INPUT"] == "scene.tif"
    assert tags["HSIKIT_VALID_PIXELS"] == "78000" and tags["HSIKIT_MEAN"] == "0.25"
    with pytest.raises(RuntimeError, match="finalised"):
        wr.add_tags(TOO_LATE="1")


def test_add_tags_before_entering(tmp_path):
    wr = _continuous(tmp_path / "o.tif")
    wr.add_tags(EARLY="yes")
    with wr:
        _fill(wr)
    with rasterio.open(tmp_path / "o.tif") as src:
        assert src.tags()["EARLY"] == "yes"


@pytest.mark.parametrize("fmt", ["cog", "gtiff"])
@pytest.mark.parametrize("make", [_continuous, _categorical])
def test_tag_domains_survive_the_copy(tmp_path, fmt, make):
    p = tmp_path / "out.tif"
    domains = {"HSIKIT": {"HSIKIT_PREPROCESSING": BIG, "SMALL": "1"}, "OTHER": {"K": "v"}}
    band_tags = [{"wavelength": f"{500 + 10 * i}", "fwhm": "10"} for i in range(2 if make is _continuous else 1)]
    with make(p, fmt=fmt, tags={"HSIKIT_INPUT": "scene.tif"}, tag_domains=domains, band_tags=band_tags) as wr:
        _fill(wr)
    with rasterio.open(p) as src:
        assert src.tags(ns="HSIKIT") == domains["HSIKIT"]
        assert src.tags(ns="OTHER") == domains["OTHER"]
        assert src.tags()["HSIKIT_INPUT"] == "scene.tif"
        assert "HSIKIT_PREPROCESSING" not in src.tags(), "named-domain items stay out of the default domain"
        assert [src.tags(i + 1) for i in range(src.count)] == band_tags, "the bands' own items survive too"
        if fmt == "cog":
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG", "still a valid COG"
        assert src.overviews(1), "still has overviews"
        assert (src.read(1) == 1).all()
    assert [x.name for x in tmp_path.iterdir() if x.name.startswith(".")] == [], "no temporaries"


def test_tag_domains_in_sidecar_when_gdal_cannot_copy_them(tmp_path, monkeypatch):
    # GDAL < 3.8 copies no domain; 3.8-3.10 with COPY_SRC_MDD=YES lose the bands' items: the COG keeps its
    # layout and band items, the domains go to the .aux.xml written and renamed with it
    monkeypatch.setattr(writer_module, "_cog_copy_keeps_domains", lambda: False)
    p = tmp_path / "sidecar.tif"
    with _continuous(p, tag_domains={"HSIKIT": {"HSIKIT_PREPROCESSING": BIG}},
                     band_tags=[{"wavelength": "500"}, {"wavelength": "510"}]) as wr:
        _fill(wr)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["sidecar.tif", "sidecar.tif.aux.xml"]
    assert 'domain="HSIKIT"' in (tmp_path / "sidecar.tif.aux.xml").read_text()
    with rasterio.open(p) as src:
        assert src.tags(ns="HSIKIT") == {"HSIKIT_PREPROCESSING": BIG}
        assert src.tags(1) == {"wavelength": "500"} and src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


def test_tag_domains_inside_the_cog_when_gdal_copies_them(tmp_path, monkeypatch):
    if not writer_module._gdal_at_least(3, 8):
        pytest.skip("COPY_SRC_MDD needs GDAL 3.8")
    monkeypatch.setattr(writer_module, "_cog_copy_keeps_domains", lambda: True)
    p = tmp_path / "inside.tif"
    with _continuous(p, tag_domains={"HSIKIT": {"HSIKIT_PREPROCESSING": BIG}}) as wr:
        _fill(wr)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["inside.tif"], "no sidecar"
    with rasterio.open(p) as src:
        assert src.tags(ns="HSIKIT") == {"HSIKIT_PREPROCESSING": BIG}
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"


def test_tag_domains_refuse_default_and_reserved(tmp_path):
    for bad in ("", "IMAGE_STRUCTURE"):
        with pytest.raises(ValueError, match="domain"):
            _continuous(tmp_path / "x.tif", tag_domains={bad: {"a": "b"}})
