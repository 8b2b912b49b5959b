"""Train/validation/test splits of labelled pixels, stratified per class and reproducible by seed."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from hsikit.errors import InputError, OptionError


@dataclass
class Split:
    """Boolean (H, W) masks; disjoint; each only on labelled pixels."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def counts(self, labels: np.ndarray) -> dict[str, dict[int, int]]:
        out = {}
        for name in ("train", "val", "test"):
            v, c = np.unique(labels[getattr(self, name)], return_counts=True)
            out[name] = {int(a): int(b) for a, b in zip(v, c)}
        return out


def _take(n_avail: int, want: float) -> int:
    """A count (>= 1) or a fraction (< 1) of ``n_avail``."""
    if want < 0:
        raise OptionError(f"sample size must be positive, not {want}")
    return int(round(want * n_avail)) if want < 1 else int(want)


def stratified_split(labels: np.ndarray, *, train: float, val: float = 0, seed: int = 0,
                     max_train_fraction: float | None = None) -> Split:
    """Per class, draw ``train`` then ``val`` pixels (counts >= 1 or fractions < 1); the rest is test.

    ``max_train_fraction`` caps a fixed count at that share of the class (FreeNet's 200 px/class would
    otherwise take every pixel of Indian Pines' smallest classes). At least one pixel of each class is kept for
    testing when the class has two or more; classes with fewer pixels than asked for are warned about and
    split as far as they go.
    """
    lab = np.asarray(labels)
    if not (lab > 0).any():
        raise InputError("the labels hold no labelled pixel (all 0)")
    rng = np.random.default_rng(seed)
    flat = lab.ravel()
    tr = np.zeros(flat.size, dtype=bool)
    va = np.zeros(flat.size, dtype=bool)
    short = []
    for c in np.unique(flat[flat > 0]):
        idx = np.flatnonzero(flat == c)
        rng.shuffle(idx)
        n = idx.size
        n_tr, n_va = _take(n, train), _take(n, val)
        if max_train_fraction is not None:
            n_tr = min(n_tr, max(1, int(np.floor(max_train_fraction * n))))
        cap = n - 1 if n > 1 else n
        if n_tr + n_va > cap:
            short.append(f"{int(c)} ({n} px)")
            n_tr = min(n_tr, cap)
            n_va = min(n_va, cap - n_tr)
        tr[idx[:n_tr]] = True
        va[idx[n_tr : n_tr + n_va]] = True
    if short:
        warnings.warn(f"classes with too few pixels for the requested samples: {', '.join(short)}", stacklevel=2)
    te = (flat > 0) & ~tr & ~va
    shape = lab.shape
    return Split(tr.reshape(shape), va.reshape(shape), te.reshape(shape))


def split_from_raster(split: np.ndarray, labels: np.ndarray) -> Split:
    """A given split raster: 1 = train, 2 = validation, 3 = test (0 = unused), restricted to labelled pixels."""
    s = np.asarray(split)
    if s.shape != labels.shape:
        raise InputError(f"split raster {s.shape} and labels {labels.shape} differ in shape")
    lab = labels > 0
    return Split((s == 1) & lab, (s == 2) & lab, (s == 3) & lab)


def gs2_minibatches(
    train: np.ndarray,
    labels: np.ndarray,
    *,
    sub_minibatch: int = 20,
    rng: np.random.Generator,
    recycle: bool = False,
) -> list[np.ndarray]:
    """One epoch of global stochastic stratified (GS²) sampling (FreeNet/FPGA, Zheng et al. 2020).

    Every class's training pixels are shuffled and cut into chunks of ``sub_minibatch``; minibatch k is the union
    of the k-th chunk of every class, and the minibatches come in a random order. Classes that run out of chunks
    drop out of later minibatches, as in the reference; ``recycle`` instead refills a short class from a fresh
    shuffle of its pixels so every minibatch holds every class. Returns flat pixel indices per minibatch
    (disjoint within the epoch unless ``recycle``; their union is the training set).
    """
    if sub_minibatch < 1:
        raise OptionError(f"sub_minibatch must be >= 1, not {sub_minibatch}")
    flat_train = np.asarray(train, dtype=bool).ravel()
    flat_lab = np.asarray(labels).ravel()
    per_class = []
    for c in np.unique(flat_lab[flat_train]):
        idx = np.flatnonzero(flat_train & (flat_lab == c))
        per_class.append(rng.permutation(idx))
    if not per_class:
        raise InputError("GS² sampling needs training pixels; the split has none")
    n_batches = int(np.ceil(max(p.size for p in per_class) / sub_minibatch))
    batches = []
    for k in range(n_batches):
        parts = []
        for idx in per_class:
            chunk = idx[k * sub_minibatch : (k + 1) * sub_minibatch]
            if recycle and chunk.size < sub_minibatch:
                chunk = np.concatenate([chunk, rng.choice(idx, sub_minibatch - chunk.size, replace=idx.size < sub_minibatch)])
            parts.append(chunk)
        batches.append(np.concatenate(parts))
    order = rng.permutation(n_batches)
    return [batches[i] for i in order]
