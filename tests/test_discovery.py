"""One input discovery and one SAFE detector: every command taking folders of scenes finds the same scenes."""

from __future__ import annotations

from pathlib import Path

import pytest

from hsikit.errors import InputError
from hsikit.io.inputs import RASTER_EXTENSIONS, find_rasters, resolve_inputs
from hsikit.io.safe import is_safe
from hsikit.pipelines.pretrain import RASTER_SUFFIXES, list_scenes

#: one file (or ENVI pair) of every supported kind: what a folder search must return, relative to the folder
EXPECTED = [
    "S2A_MSIL2A_20240101.SAFE",  # a SAFE folder, not searched (its inner .jp2 are not scenes)
    "a.tif", "b.tiff", "c.vrt", "d.img", "e.lan", "f.jp2", "g.nc", "h.h5", "i.he5", "j.mat",
    "k.hdr",  # ENVI: header + k.img, one input (the header)
    "l.hdr",  # ENVI: header + l.dat
    "m.bsq.hdr",  # ENVI: header named after its data file m.bsq
    "n.hdr",  # ENVI: header + n.bil
    "o.hdr",  # ENVI: header + o.bip
    "p.hdr",  # ENVI: header + data file without extension
    "q.dat", "r.bsq", "s.bil", "t.bip",  # raw rasters without a header (GDAL may know them by a sidecar)
    "sub/L1C_product",  # a folder holding MTD_MSIL1C.xml is a SAFE product whatever its name
    "sub/u.TIF",  # extensions are case-insensitive
]


def _archive(root: Path) -> Path:
    files = [
        "a.tif", "b.tiff", "c.vrt", "d.img", "e.lan", "f.jp2", "g.nc", "h.h5", "i.he5", "j.mat",
        "k.hdr", "k.img", "l.hdr", "l.dat", "m.bsq.hdr", "m.bsq", "n.hdr", "n.bil", "o.hdr", "o.bip", "p.hdr", "p",
        "q.dat", "r.bsq", "s.bil", "t.bip", "sub/u.TIF",
        # distractors: sidecars beside their data file, a text file, hidden temporaries and folders
        "a.tif.aux.xml", "a.tif.ovr", "a.qml", "a.tif.msk", "a.hdr",  # a.hdr: the header ENVI writes for a GeoTIFF
        "b.tiff.hdr", "k.img.aux.xml", "notes.txt", "readme.md", "list.json",
        ".a.tif.1234-abcdef.0badf00d.tmp.tif", ".hidden.tif", ".cache/x.tif",
        "S2A_MSIL2A_20240101.SAFE/MTD_MSIL2A.xml", "S2A_MSIL2A_20240101.SAFE/GRANULE/G/IMG_DATA/T_B02.jp2",
        "sub/L1C_product/MTD_MSIL1C.xml", "sub/L1C_product/GRANULE/B02.jp2",
    ]
    for name in files:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"{}" if name.endswith(".json") else b"")
    return root


def _rel(paths, root: Path) -> list[str]:
    return [Path(p).relative_to(root).as_posix() for p in paths]


def test_every_command_taking_folders_finds_the_same_scenes(tmp_path):
    root = _archive(tmp_path / "archive")
    searched = _rel(find_rasters(root), root)
    assert sorted(searched) == sorted(EXPECTED)
    batch = _rel([it.href for it in resolve_inputs([root])], root)  # `hsikit batch` (hsikit.pipelines.batch)
    pretrain = _rel(list_scenes([root]), root)  # `hsikit pretrain spectralgpt`
    assert batch == pretrain == searched  # the same scenes, in the same order
    # a glob pairs what it matches as the folder search does, and keeps the rasters only (sidecars, text files and
    # JSON files that are no STAC catalogue are left out)
    assert sorted(_rel([it.href for it in resolve_inputs([str(root / "*")])], root)) == sorted(searched)
    assert {Path(it.href).name for it in resolve_inputs([str(root / "a.*")])} == {"a.tif"}
    assert {Path(it.href).name for it in resolve_inputs([str(root / "k.*")])} == {"k.hdr"}
    assert {Path(it.href).name for it in resolve_inputs([str(root / "k.img")])} == {"k.img"}  # named: kept
    # the output folder of a batch inside the archive is never searched
    (root / "out").mkdir()
    (root / "out" / "old_output.tif").write_bytes(b"")
    assert _rel(find_rasters(root, exclude=[root / "out"]), root) == searched
    assert _rel([it.href for it in resolve_inputs([root], exclude=[root / "out"])], root) == searched
    assert "out/old_output.tif" in _rel(list_scenes([root]), root)


def test_one_list_of_raster_extensions():
    assert RASTER_SUFFIXES == set(RASTER_EXTENSIONS)
    for ext in (".tif", ".tiff", ".vrt", ".img", ".hdr", ".dat", ".bsq", ".bil", ".bip", ".lan", ".jp2", ".nc",
                ".h5", ".he5", ".mat"):
        assert ext in RASTER_EXTENSIONS


def test_a_safe_folder_given_itself_is_one_scene(tmp_path):
    root = _archive(tmp_path / "archive")
    safe = root / "S2A_MSIL2A_20240101.SAFE"
    assert find_rasters(safe) == [safe]
    assert [it.href for it in resolve_inputs([safe])] == list_scenes([safe]) == [str(safe)]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert find_rasters(empty) == []
    with pytest.raises(InputError, match="no scene"):
        list_scenes([empty])
    with pytest.raises(InputError, match="no input found"):
        resolve_inputs([empty])


def test_one_safe_detector(tmp_path):
    named = tmp_path / "S2B_MSIL1C_X.safe"  # named *.SAFE (any case), metadata missing: still a product
    named.mkdir()
    by_metadata = tmp_path / "product"
    by_metadata.mkdir()
    (by_metadata / "MTD_MSIL2A.xml").write_text("<x/>")
    old_layout = tmp_path / "old"
    old_layout.mkdir()
    (old_layout / "S2A_OPER_MTD_SAFL1C_PDMC_20160101.xml").write_text("<x/>")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "MTD_TL.xml").write_text("<x/>")  # a granule's metadata does not make a product
    (plain / "MTD_MSIL2A.xml").mkdir()  # nor does a folder of that name
    for p in (named, by_metadata, old_layout, by_metadata / "MTD_MSIL2A.xml",
              old_layout / "S2A_OPER_MTD_SAFL1C_PDMC_20160101.xml"):
        assert is_safe(p), p
    for p in (plain, plain / "MTD_TL.xml", tmp_path / "missing.SAFE", tmp_path):
        assert not is_safe(p), p
    # the readers and the folder search use it: a product is one input, never searched
    assert find_rasters(tmp_path) == sorted([by_metadata, old_layout, named])
    from hsikit.io.open import open_scene

    with pytest.raises(InputError, match="not a Sentinel-2 SAFE"):
        open_scene(named)  # read as a product: says what it lacks
    with pytest.raises(InputError, match="directory"):
        open_scene(plain)
