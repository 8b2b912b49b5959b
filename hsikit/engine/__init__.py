"""Tiled inference over whole scenes with bounded memory (torch is only imported by ``torch_predict``)."""

from hsikit.engine.engine import EngineStats, TileSpec, run_tiled

__all__ = ["EngineStats", "TileSpec", "run_tiled"]
