"""The files one run will write, checked together before any work starts.

A run that writes several files (a class map, its probabilities, a quicklook, a ``.qml`` style …) derives their
names from one ``-o`` path. Two roles that resolve to the same file would silently replace each other, and a
name without a known extension would be written in a format the user did not choose. Both are refused here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from hsikit.errors import OptionError
from hsikit.io.atomic import check_output

#: extensions of the GeoTIFF/COG rasters hsikit writes
RASTER_SUFFIXES = (".tif", ".tiff")


def check_suffix(path: str | Path, suffixes: tuple[str, ...] = RASTER_SUFFIXES, *, option: str = "-o/--out",
                 what: str = "a GeoTIFF") -> Path:
    """Refuse an output name whose extension is not one of ``suffixes`` (case-insensitive)."""
    p = Path(path)
    if p.suffix.lower() not in suffixes:
        got = f"ends in {p.suffix!r}" if p.suffix else "has no extension"
        raise OptionError(f"{option} {p.name} {got}: hsikit writes {what} there; "
                          f"use a name ending in {' or '.join(suffixes)}")
    return p


def check_distinct(paths: Mapping[str, str | Path]) -> None:
    """Refuse two roles (e.g. "class map" and "quicklook") that would write the same file."""
    seen: dict[str, str] = {}
    for role, p in paths.items():
        key = os.path.normcase(os.path.abspath(str(p)))
        if key in seen:
            raise OptionError(f"the {seen[key]} and the {role} would both be written to {Path(p).name}; "
                              "choose another output name")
        seen[key] = role
    # GDAL's sidecar of a raster is an output too
    for role, p in paths.items():
        if Path(p).suffix.lower() in RASTER_SUFFIXES:
            aux = os.path.normcase(os.path.abspath(str(p) + ".aux.xml"))
            if aux in seen:
                raise OptionError(f"the {seen[aux]} would overwrite the {role}'s GDAL sidecar {Path(p).name}.aux.xml")


def check_outputs(paths: Mapping[str, str | Path], overwrite: bool) -> None:
    """Every output of one run: distinct, and each one new (or ``overwrite``) in a writable folder."""
    check_distinct(paths)
    for p in paths.values():
        check_output(p, overwrite)
