"""PCA from a covariance accumulated over windows (the scene is never held in memory)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hsikit.errors import InputError, OptionError
from hsikit.io.scene import Scene
from hsikit.preprocess.stats import Transform, valid_pixels
from hsikit.windows import iter_windows


@dataclass
class PCAModel:
    mean: np.ndarray  # (B,)
    components: np.ndarray  # (k, B), rows are unit eigenvectors, largest variance first
    explained_variance: np.ndarray  # (k,)
    explained_variance_ratio: np.ndarray  # (k,)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(B, h, w) -> (k, h, w)"""
        b, h, w = x.shape
        flat = x.reshape(b, -1).astype(np.float64) - self.mean[:, None]
        return (self.components @ flat).reshape(-1, h, w).astype(np.float32)


def streaming_pca(scene: Scene, n_components: int, *, block: int = 512, transform: Transform | None = None) -> PCAModel:
    """Principal components of the valid pixels from sums and cross-products accumulated per window (float64).

    Component signs are fixed so the largest-magnitude loading is positive (deterministic across runs).
    """
    n, s, xtx = 0, None, None
    for w in iter_windows(scene.width, scene.height, block):
        x = valid_pixels(scene, w, transform).astype(np.float64)
        if s is None:
            s, xtx = np.zeros(x.shape[1]), np.zeros((x.shape[1], x.shape[1]))
        n += x.shape[0]
        s += x.sum(axis=0)
        xtx += x.T @ x
    if not n or s is None:
        raise InputError(f"{scene.name} has no valid pixel for PCA")
    if not 1 <= n_components <= s.size:
        raise OptionError(f"PCA needs 1..{s.size} components, not {n_components}")
    mean = s / n
    cov = (xtx - n * np.outer(mean, mean)) / max(n - 1, 1)
    vals, vecs = np.linalg.eigh(cov)
    order = np.argsort(vals)[::-1]
    vals, vecs = np.clip(vals[order], 0, None), vecs[:, order]
    comps = vecs[:, :n_components].T
    signs = np.sign(comps[np.arange(n_components), np.abs(comps).argmax(axis=1)])
    comps = comps * signs[:, None]
    return PCAModel(mean, comps, vals[:n_components], vals[:n_components] / max(vals.sum(), 1e-300))
