"""Model registry: every architecture registers a builder under a name; ``create_model(name, **cfg)`` builds it.

Architectures live one per file in this package and register themselves with :func:`register_model` at import;
the package's ``__init__`` imports every one of them, and Python runs it before this module, so the registry is
complete whenever it can be imported.
Each has a config dataclass; ``create_model`` validates keyword arguments against it.

Registry names are kebab-case (``mp-hsir``, ``spectralgpt-segmenter``). A name an architecture had before (e.g.
``spectralgpt_segmenter``) stays valid as an *alias*: :func:`get_entry`, :func:`make_config`,
:func:`create_model` and therefore checkpoint loading accept it, while :func:`list_models` shows each architecture
once, under its registry name.
"""

from __future__ import annotations

import dataclasses
import re
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
#: former names (still accepted) -> registry name
_ALIASES: dict[str, str] = {}

#: lower-case words of letters and digits joined by single hyphens
KEBAB_CASE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def register_model(
    name: str,
    *,
    task: str,
    description: str,
    inputs: str,
    config_cls: type,
    receptive_field: Callable[[Any], int],
    size_multiple: int = 1,
    aliases: tuple[str, ...] = (),
) -> Callable[[Callable[[Any], nn.Module]], Callable[[Any], nn.Module]]:
    """Decorator registering ``builder(config) -> nn.Module`` under the kebab-case ``name``.

    ``aliases``: former names of the architecture, still accepted by :func:`get_entry` and :func:`create_model`
    (so checkpoints whose metadata holds them keep loading) but not listed."""
    if not KEBAB_CASE.fullmatch(name):
        raise ValueError(f"model name {name!r} is not kebab-case (lower-case words joined by '-')")

    def deco(builder: Callable[[Any], nn.Module]) -> Callable[[Any], nn.Module]:
        if name in _REGISTRY or name in _ALIASES:
            raise ValueError(f"model {name!r} registered twice")
        for alias in aliases:
            if alias in _REGISTRY or alias in _ALIASES:
                raise ValueError(f"alias {alias!r} of model {name!r} is already taken")
        _REGISTRY[name] = ModelEntry(name, task, description, inputs, config_cls, builder, receptive_field, size_multiple)
        _ALIASES.update({alias: name for alias in aliases})
        return builder

    return deco


def resolve_name(name: str) -> str:
    """The registry name of ``name`` (itself, or the architecture it is an alias of); unknown names unchanged."""
    return _ALIASES.get(name, name)


def get_entry(name: str) -> ModelEntry:
    """The architecture registered under ``name`` or under a former name (alias) of it."""
    from hsikit.errors import OptionError

    key = resolve_name(name)
    if key not in _REGISTRY:
        raise OptionError(f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


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
    """Registered architectures (each once, under its registry name, aliases left out), sorted by name, optionally
    only those of ``task``."""
    return [e for _, e in sorted(_REGISTRY.items()) if task is None or e.task == task]
