"""ONNX files of hsikit networks: the export (torch), its check with onnxruntime, and the metadata that lets
hsikit run an exported file without torch.

An exported file holds the network with the linear part of its preprocessing folded in (:mod:`hsikit.export.fold`)
and, for classifiers, the softmax: its output is class probabilities. Height, width and batch are dynamic axes.
Its ``metadata_props`` carry the checkpoint's metadata as JSON under ``hsikit`` (:class:`CheckpointMeta`: arch,
config, bands, classes, colours, provenance) and what running it takes under ``hsikit:export``
(:class:`ExportInfo`: the preprocessing replayed before it, receptive field, size multiple, memory per pixel).
:func:`read_exported` reads both with the standard library alone (the protobuf fields are scanned, the weights
skipped), as :func:`hsikit.checkpoint.read_checkpoint_meta` reads a safetensors header.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from hsikit.checkpoint import CheckpointMeta
from hsikit.errors import InputError, OptionError
from hsikit.export import OPSET
from hsikit.export.fold import Folding

ONNX_SUFFIX = ".onnx"
#: metadata_props keys: the checkpoint's metadata, and how to run the exported network
META_KEY = "hsikit"
EXPORT_KEY = "hsikit:export"
#: largest difference allowed between onnxruntime's and torch's outputs (absolute; relative to outputs above 1)
TOLERANCE = 1e-4
#: registry tasks that export: per-pixel classifiers and image-to-image restoration networks
EXPORTABLE_TASKS = ("classification", "denoising", "super-resolution", "restoration")
INPUT_NAME = "x"


def is_exported(path: str | Path) -> bool:
    """Whether ``path`` names an exported ONNX model (by its extension)."""
    return Path(path).suffix.lower() == ONNX_SUFFIX


@dataclass
class ExportInfo:
    """What running an exported network takes, besides the checkpoint's metadata.

    ``input_chain``: the preprocessing :class:`~hsikit.preprocess.chain.Chain` dict replayed before the network;
    ``offset``: then subtracted from each of its bands (None: nothing folded); ``folded``: the ops inside the
    network; ``chain_ops``: every op of the checkpoint's chain. ``outputs``: "probabilities" (softmax inside) or
    "values". ``activation``: the network's activation memory measured with torch at export (``bytes`` at
    ``pixels``, plus ``per_pixel`` beyond), for tile planning without torch."""

    input_chain: dict[str, Any] | None
    offset: list[float] | None
    folded: list[str]
    chain_ops: list[str]
    in_features: int
    out_channels: int
    context: int
    size_multiple: int
    outputs: str
    out_scale: int = 1
    opset: int = OPSET
    activation: dict[str, float] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    max_difference: float | None = None

    @property
    def pixel_local(self) -> bool:
        return self.context == 0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ExportInfo":
        d = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def activation_bytes(self) -> Callable[[int, int], float] | None:
        """``bytes(h, w)`` of one call on an ``h`` x ``w`` tile, from the torch measurement recorded at export (the
        shape of :func:`hsikit.engine.budget.activation_probe`'s estimate). It bounds onnxruntime's use: its peak
        resident growth was 0.35-0.9 of it (FreeNet, U-Net and HSDT on 256-1024 px tiles)."""
        a = self.activation
        if not a:
            return None
        m = max(1, int(self.size_multiple))

        def estimate(h: int, w: int) -> float:
            px = (m * math.ceil(h / m)) * (m * math.ceil(w / m))
            extra = max(px - a["pixels"], 0) * a["per_pixel"]
            return a["bytes"] + extra

        return estimate


# -- reading, without torch or onnx ----------------------------------------------------------------------------------
def _varint(f) -> int | None:
    """The next base-128 varint of ``f``, or None at the end of the file."""
    shift = value = 0
    while True:
        b = f.read(1)
        if not b:
            if shift:
                raise ValueError("truncated varint")
            return None
        value |= (b[0] & 0x7F) << shift
        if b[0] < 0x80:
            return value
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(field number, bytes) of the length-delimited fields of a small protobuf message."""
    import io

    f = io.BytesIO(data)
    while (key := _varint(f)) is not None:
        number, wire = key >> 3, key & 7
        if wire != 2:
            raise ValueError("unexpected field type in a metadata entry")
        n = _varint(f)
        chunk = f.read(n or 0)
        if len(chunk) != (n or 0):
            raise ValueError("truncated field")
        yield number, chunk


def metadata_props(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX model file ``path`` (ModelProto field 14), reading past the graph
    without loading it. Raises :class:`InputError` for a file that is not an ONNX model."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"model file not found: {p}")
    size, props, graph = p.stat().st_size, {}, False
    try:
        with p.open("rb") as f:
            while (key := _varint(f)) is not None:
                number, wire = key >> 3, key & 7
                if wire == 0:
                    _varint(f)
                elif wire in (1, 5):
                    f.seek(8 if wire == 1 else 4, os.SEEK_CUR)
                elif wire == 2:
                    n = _varint(f)
                    if n is None or f.tell() + n > size:
                        raise ValueError("field runs past the end of the file")
                    if number == 14:
                        entry = dict(_fields(f.read(n)))
                        props[entry.get(1, b"").decode()] = entry.get(2, b"").decode()
                    else:
                        graph |= number == 7
                        f.seek(n, os.SEEK_CUR)
                else:
                    raise ValueError(f"wire type {wire}")
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"{p.name} is not an ONNX model") from None
    if not graph:
        raise InputError(f"{p.name} is not an ONNX model (no graph)")
    return props


def read_exported(path: str | Path) -> tuple[CheckpointMeta, ExportInfo]:
    """The checkpoint metadata and :class:`ExportInfo` stored in an ONNX file by :func:`hsikit export`."""
    p = Path(path)
    props = metadata_props(p)
    if META_KEY not in props or EXPORT_KEY not in props:
        raise InputError(f"{p.name} is an ONNX model without hsikit metadata; export it from a checkpoint with "
                         "`hsikit export MODEL.safetensors -o MODEL.onnx`")
    try:
        return CheckpointMeta.from_json(props[META_KEY]), ExportInfo.from_json(props[EXPORT_KEY])
    except (ValueError, TypeError) as e:
        raise InputError(f"{p.name}: malformed hsikit metadata ({e})") from None


# -- export (torch) --------------------------------------------------------------------------------------------------
def task_refusal(arch: str, task: str) -> str | None:
    """Why an architecture of ``task`` is not exported (one line), or None."""
    if task in EXPORTABLE_TASKS:
        return None
    return (f"{arch} cannot be exported: it is a {task} model, and hsikit exports per-pixel classifiers and image "
            "restoration networks")


def exportable_network(net, matrix: np.ndarray | None, diagonal: bool, softmax: bool):
    """``net`` behind the folded linear map ``matrix`` (bands in -> features) and, for classifiers, a softmax."""
    import torch
    import torch.nn.functional as F

    class Exported(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net
            m = None if matrix is None else torch.tensor(matrix, dtype=torch.float32)
            self.register_buffer("scale", m.diagonal().view(1, -1, 1, 1).clone() if m is not None and diagonal
                                 else None)
            self.register_buffer("mix", m[:, :, None, None] if m is not None and not diagonal else None)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if self.scale is not None:
                x = x * self.scale
            elif self.mix is not None:
                x = F.conv2d(x, self.mix)
            y = self.net(x)
            return torch.softmax(y, dim=1) if softmax else y

    return Exported().eval()


def export_network(wrapped, path: Path, example: np.ndarray, *, arch: str, opset: int = OPSET,
                   output: str = "y") -> None:
    """Write ``wrapped`` (from :func:`exportable_network`) to ``path`` with the TorchScript exporter, batch,
    height and width dynamic. An architecture whose operators do not export raises :class:`OptionError` naming
    the operator, in one line."""
    import torch

    axes = {0: "batch", 2: "height", 3: "width"}
    try:
        with torch.no_grad(), _quiet():
            torch.onnx.export(wrapped, (torch.from_numpy(example),), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[output],
                              dynamic_axes={INPUT_NAME: axes, output: {0: "batch", 2: "out_height", 3: "out_width"}})
    except Exception as e:  # noqa: BLE001 - the exporter's errors say which operator failed; one line of it
        raise OptionError(f"{arch} cannot be exported to ONNX: {exporter_reason(e, opset)}") from None


def exporter_reason(e: BaseException, opset: int = OPSET) -> str:
    """One line saying why the exporter failed: the operator without an ONNX mapping where it says so."""
    text = " ".join(str(e).split())
    patterns = (
        (r"Exporting the operator '?([\w:.]+)'? to ONNX opset version (\d+) is not supported",
         lambda m: f"operator {m[1]} has no ONNX mapping at opset {m[2]}"),
        (r"ONNX export of operator (\w+), input size not accessible",
         lambda m: f"operator {m[1]} needs a fixed input size, and exported models take any height and width"),
        (r"We don't have an op for ([\w:.]+)", lambda m: f"operator {m[1]} has no ONNX mapping at opset {opset}"),
        (r"ONNX export of operator ([\w:.]+)", lambda m: f"operator {m[1]} does not export"),
    )
    for pattern, say in patterns:
        m = re.search(pattern, text)
        if m:
            return say(m)
    first = text.split(" Please ")[0] or type(e).__name__
    return first if len(first) <= 200 else first[:197] + "..."


@contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter: its warnings, and the graph dumps its C++ side prints to the process's stdout and
    stderr when an operator fails."""
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = (os.dup(1), os.dup(2))
    try:
        with tempfile.TemporaryFile() as sink, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


def check_shapes(in_features: int, size_multiple: int, pixel_local: bool) -> list[tuple[int, int, int, int]]:
    """Two input shapes of different batch, height and width on which an export is compared with torch (the
    second also checks that no size was frozen into the graph)."""
    if pixel_local:
        return [(1, in_features, 1, 500), (2, in_features, 1, 333)]
    m = max(1, int(size_multiple))
    up = lambda v: m * math.ceil(v / m)  # noqa: E731
    first = (up(40), up(56))
    second = (up(first[0] + 1), up(first[1] + 2 * m + 1)) if m > 1 else (47, 61)
    return [(1, in_features, *first), (2, in_features, *second)]


def compare_with_torch(wrapped, path: Path, inputs: list[np.ndarray]) -> float:
    """Largest difference between onnxruntime's and torch's outputs of the exported network on ``inputs``
    (absolute, divided by the output's magnitude where that exceeds 1)."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # its graph optimiser's notes are not the user's concern
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    worst = 0.0
    for x in inputs:
        with torch.no_grad():
            ref = wrapped(torch.from_numpy(x)).numpy()
        got = sess.run(None, {INPUT_NAME: x})[0]
        if got.shape != ref.shape:
            raise OptionError(f"the exported network returns {got.shape} for {x.shape}, torch {ref.shape}")
        scale = max(1.0, float(np.abs(ref).max()))
        worst = max(worst, float(np.abs(got - ref).max()) / scale)
    return worst


def measured_activation(wrapped, in_features: int, size_multiple: int) -> dict[str, float]:
    """The network's activation memory measured with torch (:func:`hsikit.engine.budget.activation_probe`) as
    numbers :class:`ExportInfo` keeps: bytes at 64 x 64 px, and per further pixel."""
    from hsikit.engine.budget import activation_probe

    estimate = activation_probe(wrapped, in_features, size_multiple)
    m = max(1, int(size_multiple))
    small, large = (m * math.ceil(s / m) for s in (64, 128))
    base, bigger = estimate(small, small), estimate(large, large)
    return {"pixels": small * small, "bytes": base, "per_pixel": max(bigger - base, 0.0) / (large ** 2 - small ** 2)}


def write_metadata(path: Path, meta: CheckpointMeta, info: ExportInfo) -> None:
    """Store ``meta`` and ``info`` in the ONNX file's ``metadata_props`` (rewriting ``path`` in place)."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {META_KEY: meta.to_json(), EXPORT_KEY: info.to_json()})
    model.producer_name, model.doc_string = "hsikit", f"{meta.arch} exported by hsikit {info.versions.get('hsikit')}"
    onnx.save(model, str(path))


def folding_input(folding: Folding, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A random input of ``shape`` for the exported network whose features are standard normal (so check inputs
    are realistic whatever the folded scaling): the pseudo-inverse of the folded map applied to N(0, 1)."""
    n, f, h, w = shape
    if folding.matrix is None:
        return rng.standard_normal(shape).astype(np.float32)
    z = rng.standard_normal((n, folding.matrix.shape[0], h, w))
    return np.einsum("ij,njhw->nihw", np.linalg.pinv(folding.matrix), z).astype(np.float32)
