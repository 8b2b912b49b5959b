"""Reading foreign weight files without running their code.

``.pth``/``.pt``/``.ckpt`` go only through torch's weights-only loader: a file that needs a class or function to
unpickle is refused, never executed. ``.safetensors`` and Keras ``.h5`` hold plain arrays. The usual containers
(``{"state_dict": …}``, ``{"net": …}``, ``{"model": …}``, Lightning's ``net.``/``model.`` prefixes, DataParallel's
``module.``) are unwrapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hsikit.errors import InputError

TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".tar", ".bin")
H5_SUFFIXES = (".h5", ".hdf5", ".keras")
#: keys under which training scripts keep the network's state dict, most specific first
CONTAINER_KEYS = ("state_dict", "model_state_dict", "net", "model", "network", "params", "params_ema")
#: prefixes wrappers add to every key (DataParallel, Lightning modules holding the network as an attribute)
WRAPPER_PREFIXES = ("module.", "net.", "model.", "network.")


@dataclass
class ForeignWeights:
    """Tensors of a foreign file by name, and how they were found (container key, prefixes removed)."""

    tensors: dict[str, Any]
    container: str | None = None
    prefixes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def read_weights(path: str | Path) -> ForeignWeights:
    """The tensors of ``path`` (torch tensors; HDF5 datasets as tensors under their full path)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"weights file not found: {p}")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        return ForeignWeights(_read_safetensors(p))
    if suffix in H5_SUFFIXES:
        return ForeignWeights(_read_h5(p))
    if suffix in TORCH_SUFFIXES:
        return unwrap(_read_torch(p), p.name)
    raise InputError(f"{p.name}: unknown weights format {suffix or '(no extension)'}; hsikit reads "
                     f"{', '.join(TORCH_SUFFIXES)} (weights only), .safetensors and {', '.join(H5_SUFFIXES)}")


def unwrap(obj: Any, name: str) -> ForeignWeights:
    """Find the state dict inside a loaded checkpoint object and strip wrapper prefixes shared by every key."""
    import torch

    container = None
    extra: dict[str, Any] = {}
    if isinstance(obj, dict) and not _is_state_dict(obj):
        for key in CONTAINER_KEYS:
            if isinstance(obj.get(key), dict) and _is_state_dict(obj[key]):
                container = key
                extra = {k: (vars(v) if hasattr(v, "__dict__") else v) for k, v in obj.items()
                         if k != key and not isinstance(v, (dict, torch.Tensor))}
                obj = obj[key]
                break
        else:
            keys = ", ".join(map(str, list(obj)[:6]))
            raise InputError(f"{name} holds no state dict (its top-level keys are {keys}); hsikit looks under "
                             f"{', '.join(CONTAINER_KEYS)}")
    if not isinstance(obj, dict) or not obj:
        raise InputError(f"{name} holds no state dict of tensors")
    tensors = {str(k): v for k, v in obj.items()}
    prefixes = []
    while True:
        shared = next((pre for pre in WRAPPER_PREFIXES if all(k.startswith(pre) for k in tensors)), None)
        if shared is None:
            break
        prefixes.append(shared)
        tensors = {k[len(shared):]: v for k, v in tensors.items()}
    return ForeignWeights(tensors, container, prefixes, extra)


def _is_state_dict(d: dict) -> bool:
    import torch

    return bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())


def _read_torch(p: Path) -> Any:
    import argparse
    import pickle
    import zipfile

    import torch

    try:
        # training scripts (SpectralGPT's among them) store their argparse options beside the weights; a Namespace
        # holds plain values, so allowing it runs no code from the file
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise InputError(f"{p.name} needs code to unpickle ({_first_global(str(e))}); hsikit loads foreign "
                         "checkpoints only with torch's weights-only loader and never runs code from them (save "
                         "the network's state_dict alone)") from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError) as e:
        msg = " ".join(str(e).split())[:120] or type(e).__name__
        raise InputError(f"{p.name} is truncated or not a torch checkpoint ({msg})") from None


def _first_global(text: str) -> str:
    import re

    m = re.search(r"GLOBAL ([\w.]+)", text)
    return m.group(1) if m else "a Python object"


def _read_safetensors(p: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    try:
        return load_file(str(p))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for damaged headers
        raise InputError(f"{p.name} is not a readable safetensors file ({' '.join(str(e).split())[:120]})") from None


def _read_h5(p: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    try:
        import h5py
    except ImportError:
        raise InputError(f"reading {p.name} needs h5py (pip install h5py)") from None
    out: dict[str, Any] = {}
    try:
        with h5py.File(p, "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(name, torch.from_numpy(np.array(obj)))
                         if isinstance(obj, h5py.Dataset) else None)
    except OSError as e:
        raise InputError(f"{p.name} is truncated or not an HDF5 file ({' '.join(str(e).split())[:120]})") from None
    if not out:
        raise InputError(f"{p.name} holds no weight arrays")
    return out
