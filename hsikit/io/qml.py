"""Minimal QGIS layer styles (``.qml``) loaded by QGIS as the default style of the raster beside them."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from hsikit.io.legend import Legend


def paletted_qml(legend: Legend) -> str:
    """A paletted renderer on band 1: one entry per class value 1..K (nodata 0 is left out, so transparent)."""
    root = ET.Element("qgis", {"styleCategories": "Symbology"})
    pipe = ET.SubElement(root, "pipe")
    rr = ET.SubElement(pipe, "rasterrenderer", {"type": "paletted", "band": "1", "opacity": "1",
                                                "alphaBand": "-1", "nodataColor": ""})
    pal = ET.SubElement(rr, "colorPalette")
    for i, (name, color) in enumerate(zip(legend.names, legend.colors)):
        ET.SubElement(pal, "paletteEntry", {"value": str(i + 1), "color": color, "alpha": "255", "label": name})
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, encoding="unicode") + "\n"


def pseudocolor_qml(vmin: float = 0.0, vmax: float = 1.0) -> str:
    """A single-band grey-to-colour ramp for probability or confidence rasters."""
    root = ET.Element("qgis", {"styleCategories": "Symbology"})
    pipe = ET.SubElement(root, "pipe")
    rr = ET.SubElement(pipe, "rasterrenderer", {"type": "singlebandpseudocolor", "band": "1", "opacity": "1",
                                                "classificationMin": str(vmin), "classificationMax": str(vmax)})
    shader = ET.SubElement(ET.SubElement(rr, "rastershader"), "colorrampshader",
                           {"colorRampType": "INTERPOLATED", "classificationMode": "1", "clip": "0",
                            "minimumValue": str(vmin), "maximumValue": str(vmax)})
    for v, c in ((vmin, "#440154"), ((vmin + vmax) / 2, "#21918c"), (vmax, "#fde725")):
        ET.SubElement(shader, "item", {"value": f"{v:g}", "color": c, "alpha": "255", "label": f"{v:g}"})
    ET.indent(root)
    return "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n" + ET.tostring(root, encoding="unicode") + "\n"


def write_qml_paletted(path: str | Path, legend: Legend) -> None:
    Path(path).write_text(paletted_qml(legend), encoding="utf-8")


def write_qml_pseudocolor(path: str | Path, vmin: float = 0.0, vmax: float = 1.0) -> None:
    Path(path).write_text(pseudocolor_qml(vmin, vmax), encoding="utf-8")


def read_qml_palette(path: str | Path) -> list[tuple[int, str, str]]:
    """(value, #rrggbb, label) of every ``paletteEntry`` in a QGIS paletted-style ``.qml``."""
    root = ET.parse(path).getroot()
    out = []
    for e in root.iter("paletteEntry"):
        out.append((int(float(e.get("value"))), e.get("color", "#808080")[:7], e.get("label", "")))
    return out
