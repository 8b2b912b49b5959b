"""Run an exported ONNX model as the engine's ``predict`` callable with onnxruntime (no torch import).

onnxruntime is an optional dependency (``pip install hsikit[onnx]``): a deployment without torch classifies
scenes with a model exported by ``hsikit export``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hsikit.errors import InputError, OptionError
from hsikit.export.onnx import INPUT_NAME, read_exported


def _runtime():
    try:
        import onnxruntime
    except ImportError:
        raise OptionError("running an .onnx model needs onnxruntime: pip install onnxruntime "
                          "(or pip install 'hsikit[onnx]')") from None
    return onnxruntime


def providers(device: str = "auto") -> list[str]:
    """onnxruntime execution providers for ``device``: "auto" takes CUDA when this onnxruntime has it, else the
    CPU; "cuda"/"cuda:N" without it is an error."""
    ort = _runtime()
    d = (device or "auto").lower()
    have = ort.get_available_providers()
    cuda = "CUDAExecutionProvider" in have
    if d == "cpu" or (d == "auto" and not cuda):
        return ["CPUExecutionProvider"]
    if d == "auto" or d.startswith("cuda"):
        if not cuda:
            raise OptionError(f"--device {device}: this onnxruntime has no CUDA provider (install onnxruntime-gpu, "
                              "or use --device cpu)")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    raise OptionError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")


class OnnxModel:
    """An exported model file: its hsikit metadata (``meta``, ``info``) and onnxruntime sessions, one per device,
    made on first use (the engine's counterpart of a loaded torch network)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.meta, self.info = read_exported(self.path)
        self._sessions: dict[tuple[str, ...], object] = {}

    def session(self, device: str = "auto"):
        """The onnxruntime session for ``device`` (threads: hsikit's ``--threads``)."""
        from hsikit.threads import current_threads

        ort = _runtime()
        key = tuple(providers(device))
        if key not in self._sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = current_threads()
            opts.inter_op_num_threads = 1
            opts.log_severity_level = 3  # errors only: the graph optimiser's notes are not the user's concern
            try:
                self._sessions[key] = ort.InferenceSession(str(self.path), opts, providers=list(key))
            except Exception as e:  # noqa: BLE001 - onnxruntime's load errors (a damaged file) in one line
                msg = " ".join(str(e).split())[:200]
                raise InputError(f"{self.path.name}: onnxruntime cannot load it ({msg})") from None
        return self._sessions[key]


class OnnxPredictor:
    """``predict(x: (N, F, h, w) float32) -> (N, C, h, w) float32`` with an exported network in onnxruntime.

    Inputs are padded by reflection to ``size_multiple`` and cropped back (``out_scale`` times the input size for
    super-resolution), as :class:`~hsikit.engine.torch_predict.TorchPredictor` does; ``pixel_local`` networks are
    fed the batch's pixels as one long row in chunks of ``chunk_pixels``. The exported file includes the softmax
    of classifiers: its outputs are returned as they are."""

    def __init__(self, model: OnnxModel, device: str = "auto", *, size_multiple: int = 1, pixel_local: bool = False,
                 chunk_pixels: int = 65536, out_scale: int = 1) -> None:
        self.model = model
        self.session = model.session(device)
        self.size_multiple = max(1, int(size_multiple))
        self.pixel_local, self.chunk_pixels, self.out_scale = pixel_local, int(chunk_pixels), max(1, int(out_scale))

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        n, f, h, w = x.shape
        if self.pixel_local:
            flat = x.transpose(1, 0, 2, 3).reshape(f, n * h * w)
            parts = [self._run(flat[None, :, None, s : s + self.chunk_pixels])[0, :, 0, :]
                     for s in range(0, n * h * w, self.chunk_pixels)]
            y = np.concatenate(parts, axis=1)
            return np.ascontiguousarray(y.reshape(-1, n, h, w).transpose(1, 0, 2, 3))
        m = self.size_multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "edge"
            x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode=mode)
        s = self.out_scale
        return np.ascontiguousarray(self._run(x)[:, :, : h * s, : w * s])
