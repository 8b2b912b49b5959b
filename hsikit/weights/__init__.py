"""Importers of published weights: each maps one official repository's state dict onto hsikit's architecture.

An :class:`Importer` is plain data plus two functions: ``infer`` reads the configuration from tensor shapes (and
says in words what it inferred), ``convert`` renames and reshapes the official tensors into hsikit's state dict
(and says which official buffers it dropped because hsikit recomputes them). Every official tensor must be used
and every hsikit tensor filled: :func:`check_complete` fails on the first one that is not.
"""

from __future__ import annotations

from hsikit.errors import OptionError
from hsikit.weights.base import IMPORTERS, Importer, ReadTracker, Tensors, check_complete, register_importer

__all__ = ["Importer", "ReadTracker", "Tensors", "check_complete", "get_importer", "importers", "register_importer"]


def get_importer(arch: str) -> Importer:
    """The importer of ``arch`` (an :class:`OptionError` naming the known ones otherwise)."""
    _load_all()
    if arch not in IMPORTERS:
        raise OptionError(f"no importer for {arch!r}; hsikit imports {', '.join(sorted(IMPORTERS))}")
    return IMPORTERS[arch]


def importers() -> list[Importer]:
    """Every importer, by architecture name."""
    _load_all()
    return [v for _, v in sorted(IMPORTERS.items())]


def _load_all() -> None:
    from hsikit.weights import essaformer, freenet, hsdt, morpmamba, mp_hsir, spectralgpt  # noqa: F401  (registers)
