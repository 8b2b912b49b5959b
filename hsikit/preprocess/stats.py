"""Per-band statistics in one streaming pass over a scene's windows (memory independent of scene size)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from hsikit.errors import InputError
from hsikit.io.scene import Scene
from hsikit.windows import iter_windows

#: maps raw window data (B, h, w) and its validity (h, w) to features (F, h, w)
Transform = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class BandStats:
    """Statistics of valid pixels per band (feature): mean, std (population), min, max, count, p2/p98."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    count: int
    p2: np.ndarray
    p98: np.ndarray


class RunningMoments:
    """Mean and M2 per feature, merged window by window with Chan et al.'s parallel update (float64)."""

    def __init__(self, n_features: int) -> None:
        self.n = 0
        self.mean = np.zeros(n_features)
        self.m2 = np.zeros(n_features)
        self.min = np.full(n_features, np.inf)
        self.max = np.full(n_features, -np.inf)

    def update(self, x: np.ndarray) -> None:
        """``x``: (n_pixels, n_features)."""
        nb = x.shape[0]
        if nb == 0:
            return
        x = x.astype(np.float64, copy=False)
        mb = x.mean(axis=0)
        m2b = ((x - mb) ** 2).sum(axis=0)
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta**2 * (self.n * nb / n)
        self.n = n
        self.min = np.minimum(self.min, x.min(axis=0))
        self.max = np.maximum(self.max, x.max(axis=0))

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.n, 1))


def valid_pixels(scene: Scene, window, transform: Transform | None) -> np.ndarray:
    """Valid pixels of a window as (n, F) rows, after ``transform``."""
    raw = scene.read(window)
    valid = scene.read_valid(window, raw)
    feats = transform(raw, valid) if transform is not None else raw
    return feats[:, valid].T


def band_statistics(
    scene: Scene,
    *,
    block: int = 512,
    transform: Transform | None = None,
    sample_size: int = 200_000,
    seed: int = 0,
) -> BandStats:
    """Mean/std/min/max over every valid pixel in one pass; 2/98 % percentiles from a uniform random subsample
    of about ``sample_size`` pixels (each window contributes in proportion to its size)."""
    rng = np.random.default_rng(seed)
    total = scene.width * scene.height
    keep_p = min(1.0, sample_size / max(total, 1))
    moments: RunningMoments | None = None
    samples = []
    for w in iter_windows(scene.width, scene.height, block):
        x = valid_pixels(scene, w, transform)
        if moments is None:
            moments = RunningMoments(x.shape[1])
        moments.update(x)
        if x.shape[0]:
            samples.append(x[rng.random(x.shape[0]) < keep_p])
    if moments is None or moments.n == 0:
        raise InputError(f"{scene.name} has no valid pixel to compute statistics from")
    sample = np.concatenate(samples) if samples else np.empty((0, moments.mean.size))
    if sample.shape[0] == 0:
        sample = np.stack([moments.mean])
    p2, p98 = np.percentile(sample, [2, 98], axis=0)
    return BandStats(moments.mean, moments.std, moments.min, moments.max, moments.n, p2, p98)
