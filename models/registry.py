"""Model registry: every architecture registers a builder under a name; ``create_model(name, **cfg)`` builds it.

Architectures live one per file in this package and register themselves with :func:`register_model` at import.
Each has a config dataclass; ``create_model`` validates keyword arguments against it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture.

    ``task``: "classification" (per-pixel class logits ``(N, K, H, W)`` from ``(N, B, H, W)``), "denoising",
    "super-resolution", ... ``inputs`` says what the model consumes ("pixel spectra", "image tiles").
    ``receptive_field(config)`` gives the spatial context radius in pixels that tiled inference must provide as
    overlap; ``size_multiple`` the multiple input height/width must have (the engine pads to it).
    """

    name: str
    task: str
    description: str
    inputs: str
    config_cls: type
    builder: Callable[[Any], nn.Module]
    receptive_field: Callable[[Any], int]
    size_multiple: int = 1


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    task: str,
    description: str,
    inputs: str,
    config_cls: type,
    receptive_field: Callable[[Any], int],
    size_multiple: int = 1,
) -> Callable[[Callable[[Any], nn.Module]], Callable[[Any], nn.Module]]:
    """Decorator registering ``builder(config) -> nn.Module`` under ``name``."""

    def deco(builder: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = ModelEntry(name, task, description, inputs, config_cls, builder, receptive_field, size_multiple)
        return builder

    return deco


def get_entry(name: str) -> ModelEntry:
    from hsikit.errors import OptionError

    _load_all()
    if name not in _REGISTRY:
        raise OptionError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def make_config(name: str, **config: Any) -> Any:
    """The config dataclass of ``name`` filled with ``config`` (unknown keys are an error)."""
    from hsikit.errors import OptionError

    entry = get_entry(name)
    fields = {f.name for f in dataclasses.fields(entry.config_cls)}
    unknown = sorted(set(config) - fields)
    if unknown:
        raise OptionError(f"model {name!r} has no option(s) {unknown}; it takes {sorted(fields)}")
    return entry.config_cls(**config)


def create_model(name: str, **config: Any) -> nn.Module:
    """Build architecture ``name`` with config keywords (see its config dataclass)."""
    entry = get_entry(name)
    return entry.builder(make_config(name, **config))


def list_models(task: str | None = None) -> list[ModelEntry]:
    """Registered architectures, sorted by name, optionally only those of ``task``."""
    _load_all()
    return [e for _, e in sorted(_REGISTRY.items()) if task is None or e.task == task]


def _load_all() -> None:
    # Importing the package imports every architecture module, which registers it.
    import hsikit.models  # noqa: F401
