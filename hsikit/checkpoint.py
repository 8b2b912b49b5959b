"""Checkpoints: a ``.safetensors`` file (weights) whose header metadata holds hsikit's JSON description.

Loading never unpickles: weights come from safetensors, the architecture is rebuilt from the registry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsikit._version import __version__
from hsikit.errors import InputError
from hsikit.io.atomic import check_output, temp_path

_KEY = "hsikit"


@dataclass
class CheckpointMeta:
    """Everything needed to use a model on a new scene.

    ``arch``: the model registry name, as written when saved (a former name, e.g. ``spectralgpt_base``, is a
    registry alias and still builds the model). ``bands``: BandInfo dict of the scene bands the model consumes
    *before* preprocessing; ``preprocessing``: the fitted Chain dict replayed at inference;
    ``class_names``/``class_colors`` for outputs 0..K-1 (written as 1..K).
    """

    arch: str
    config: dict[str, Any]
    task: str
    bands: dict[str, Any] | None = None
    preprocessing: dict[str, Any] | None = None
    class_names: list[str] | None = None
    class_colors: list[str] | None = None
    restoration: dict[str, Any] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    hsikit_version: str = __version__
    #: scores of ``evaluate`` / ``evaluate-restoration`` runs (see :func:`record_evaluation`), newest last
    evaluations: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "CheckpointMeta":
        d = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def save_checkpoint(path: str | Path, model, meta: CheckpointMeta, *, overwrite: bool = False) -> Path:
    """Write weights + metadata atomically (temp file in the target directory, then rename)."""
    from safetensors.torch import save_file

    p = check_output(Path(path), overwrite)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = temp_path(p)
    try:
        save_file(state, str(tmp), metadata={_KEY: meta.to_json()})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # the writer creates it private; outputs get the usual permissions
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def _read_header(p: Path) -> tuple[dict[str, Any], int]:
    """The safetensors header of ``p`` and the offset where its tensor data starts."""
    if not p.exists():
        raise InputError(f"model file not found: {p}")
    try:
        with p.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if not 2 <= n <= 100_000_000:
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (struct.error, ValueError, UnicodeDecodeError):
        raise InputError(f"{p.name} is not a safetensors checkpoint (hsikit never unpickles model files)") from None
    return header, 8 + n


def read_checkpoint_meta(path: str | Path) -> CheckpointMeta:
    """Metadata only, from the safetensors header (8-byte length + JSON); imports no torch."""
    p = Path(path)
    header, _ = _read_header(p)
    meta = (header.get("__metadata__") or {}).get(_KEY)
    if not meta:
        raise InputError(f"{p.name} is a safetensors file without hsikit metadata")
    try:
        return CheckpointMeta.from_json(meta)
    except (ValueError, TypeError) as e:
        raise InputError(f"{p.name}: malformed hsikit metadata ({e})") from None


def _state_mismatch(expected: dict, found: dict) -> str:
    """The first difference between two state dicts, in words ("" when none is found)."""
    for name, t in expected.items():
        if name not in found:
            return f"{name} missing"
        if tuple(found[name].shape) != tuple(t.shape):
            return f"{name} is {tuple(found[name].shape)} in the file, {tuple(t.shape)} in the architecture"
    extra = [n for n in found if n not in expected]
    return f"unexpected {extra[0]}" if extra else ""


def load_checkpoint(path: str | Path, device: str = "cpu"):
    """(model in eval mode, CheckpointMeta); the model is rebuilt from the registry, weights from safetensors.

    A checkpoint written under a former architecture name (e.g. ``spectralgpt_segmenter`` before the registry
    went kebab-case) loads through the registry alias; the returned ``meta.arch`` is the current registry name (the
    file itself is left as it is)."""
    from safetensors.torch import load_file

    from hsikit.models.registry import create_model, resolve_name

    meta = read_checkpoint_meta(path)
    meta.arch = resolve_name(meta.arch)
    model = create_model(meta.arch, **meta.config)
    state = load_file(str(path), device=str(device))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InputError(f"{Path(path).name}: weights do not match architecture {meta.arch!r} "
                         f"({_state_mismatch(model.state_dict(), state) or str(e).splitlines()[0]}); was it saved by "
                         "another hsikit version?") from None
    return model.eval(), meta


def checkpoint_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: evaluations kept in a checkpoint; the oldest go first
MAX_EVALUATIONS = 20


def record_evaluation(path: str | Path, entry: dict[str, Any]) -> None:
    """Add the scores of one evaluation run to the checkpoint's metadata (shown by ``hsikit info``).

    An earlier entry with the same ``key`` (what was evaluated: scene, labels, split or degradation) is replaced.
    Only the header is rewritten; the tensor bytes are copied unchanged into a temporary file that replaces the
    checkpoint when complete. Raises ``OSError`` when the file or its folder is not writable."""
    import shutil

    p = Path(path)
    header, start = _read_header(p)
    meta = read_checkpoint_meta(p)
    meta.evaluations = [e for e in meta.evaluations if e.get("key") != entry.get("key")] + [entry]
    meta.evaluations = meta.evaluations[-MAX_EVALUATIONS:]
    header.setdefault("__metadata__", {})[_KEY] = meta.to_json()
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors aligns the tensor data to 8 bytes
    tmp = temp_path(p)
    try:
        with p.open("rb") as src, tmp.open("wb") as dst:
            dst.write(struct.pack("<Q", len(raw)) + raw)
            src.seek(start)
            shutil.copyfileobj(src, dst, 1 << 22)
        shutil.copymode(p, tmp)
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
