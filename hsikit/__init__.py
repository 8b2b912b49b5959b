"""hsikit — hyperspectral and multispectral remote sensing in one toolkit.

The public functions are importable from here; heavy modules (torch, models) load on first use::

    import hsikit
    scene = hsikit.open_scene("scene.tif")
    hsikit.classify("scene.tif", model="model.safetensors", out="classes.tif")
"""

from __future__ import annotations

import importlib
from typing import Any

from hsikit._version import __version__

# public name -> "module:attribute"
_LAZY = {
    "open_scene": "hsikit.io.open:open_scene",
    "read_labels": "hsikit.io.labels:read_labels",
    "open_safe": "hsikit.io.sentinel2:open_safe",
    "open_sentinel2": "hsikit.io.sentinel2:open_sentinel2",
    "open_series": "hsikit.io.timeseries:open_series",
    "open_eopatch": "hsikit.io.eopatch:open_eopatch",
    "Scene": "hsikit.io.scene:Scene",
    "ArrayScene": "hsikit.io.scene:ArrayScene",
    "BandInfo": "hsikit.io.bandinfo:BandInfo",
    "Legend": "hsikit.io.legend:Legend",
    "Chain": "hsikit.preprocess.chain:Chain",
    "run_tiled": "hsikit.engine.engine:run_tiled",
    "TileSpec": "hsikit.engine.engine:TileSpec",
    "create_model": "hsikit.models.registry:create_model",
    "list_models": "hsikit.models.registry:list_models",
    "load_checkpoint": "hsikit.checkpoint:load_checkpoint",
    "save_checkpoint": "hsikit.checkpoint:save_checkpoint",
    "scene_info": "hsikit.pipelines.info:scene_info",
    "preprocess_scene": "hsikit.pipelines.preprocess:preprocess_scene",
    "classify": "hsikit.pipelines.classify:classify",
    "train_classifier": "hsikit.pipelines.train_classifier:train_classifier",
    "evaluate": "hsikit.pipelines.evaluate:evaluate",
    "benchmark_classify": "hsikit.pipelines.benchmark:benchmark_classify",
    "train_restorer": "hsikit.pipelines.train_restorer:train_restorer",
    "RunOptions": "hsikit.training.run:RunOptions",
    "denoise": "hsikit.pipelines.restore:denoise",
    "super_resolve": "hsikit.pipelines.restore:super_resolve",
    "restore": "hsikit.pipelines.restore:restore",
    "evaluate_restoration": "hsikit.pipelines.evaluate_restoration:evaluate_restoration",
    "load_dataset": "hsikit.datasets.catalog:load",
    "download_dataset": "hsikit.datasets.download:download",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'hsikit' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
