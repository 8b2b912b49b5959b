"""What every importer of published weights is made of: the :class:`Importer` record, the registration table,
and the completeness check of a conversion."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from hsikit.errors import InputError

Tensors = dict[str, Any]


@dataclass(frozen=True)
class Importer:
    """How to import one architecture's published weights."""

    arch: str  #: the name ``hsikit import-weights`` takes
    official: str  #: the official repository
    paper: str
    task: str
    infer: Callable[[Tensors], tuple[dict[str, Any], list[str]]]
    convert: Callable[[Tensors, dict[str, Any]], tuple[Tensors, list[str]]]
    #: band grid the published weights were trained on when the paper's data fix it: a name in ``BAND_GRIDS``,
    #: or a function of the inferred configuration giving one (None: unknown, ``--wavelengths`` says)
    band_grid: str | Callable[[dict[str, Any]], str | None] | None = None
    #: what values the network expects, recorded in the checkpoint and applied by the restoration pipelines
    value_scaling: str = "scene-minmax"
    notes: tuple[str, ...] = field(default_factory=tuple)
    #: extra files ``convert`` takes as keywords (e.g. "text_embeddings"); the CLI refuses them for the others
    extra_inputs: tuple[str, ...] = ()
    #: hsikit registry name of the architecture built, when it differs from ``arch``
    model: str | None = None
    #: classifiers: the class names of the inferred configuration (default ``class_1..K``)
    class_names: Callable[[dict[str, Any]], list[str]] | None = None
    #: a preprocessing chain (``Chain.to_dict``) replayed before the network; left unfitted, it is fitted on each
    #: scene it runs on (e.g. per-scene band statistics, as the official code computes them)
    preprocessing: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None


#: arch -> importer; filled by the importer modules of this package when imported
IMPORTERS: dict[str, Importer] = {}


def register_importer(imp: Importer) -> Importer:
    IMPORTERS[imp.arch] = imp
    return imp


class ReadTracker(dict):
    """The official tensors, remembering which ones a converter read (so none is silently left out)."""

    def __init__(self, tensors: Tensors) -> None:
        super().__init__(tensors)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def items(self):  # a converter that walks every item reads every item
        self.read.update(self.keys())
        return super().items()


def check_complete(converted: Tensors, expected: Tensors, source: Tensors, used: set[str], name: str) -> None:
    """Refuse a partial import: an official tensor no hsikit tensor came from, an hsikit tensor left empty, or a
    shape that differs, each named."""
    unused = [k for k in source if k not in used] + [k for k in converted if k not in expected]
    if unused:
        shape = tuple((source[unused[0]] if unused[0] in source else converted[unused[0]]).shape)
        raise InputError(f"{name}: tensor {unused[0]} {shape} maps to nothing in hsikit's "
                         f"architecture ({len(unused)} unmapped); is it another configuration? (--set overrides "
                         "the inferred one)")
    missing = [k for k in expected if k not in converted]
    if missing:
        raise InputError(f"{name}: nothing in the file fills {missing[0]} {tuple(expected[missing[0]].shape)} "
                         f"({len(missing)} missing)")
    for k, t in expected.items():
        if tuple(converted[k].shape) != tuple(t.shape):
            raise InputError(f"{name}: {k} is {tuple(converted[k].shape)} in the file, {tuple(t.shape)} in the "
                             "architecture; is it another configuration? (--set overrides the inferred one)")
