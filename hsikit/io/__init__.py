"""Geo-raster input and output: lazily read scenes, labels, and QGIS-ready writers."""

from hsikit.io.bandinfo import BandInfo
from hsikit.io.legend import Legend
from hsikit.io.open import open_scene
from hsikit.io.scene import ArrayScene, Scene


def __getattr__(name: str):
    if name in ("read_labels", "LabelMap"):
        from hsikit.io import labels

        return getattr(labels, name)
    raise AttributeError(name)


__all__ = ["ArrayScene", "BandInfo", "LabelMap", "Legend", "Scene", "open_scene", "read_labels"]
