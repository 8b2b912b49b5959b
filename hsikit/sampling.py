"""Train/validation/test splits of labelled pixels, stratified per class and reproducible by seed."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

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


@dataclass(frozen=True)
class Amount:
    """How many pixels of each class to take: a ``fraction`` of the class or a number of ``pixels``."""

    fraction: float | None = None
    pixels: int | None = None

    def __post_init__(self) -> None:
        if (self.fraction is None) == (self.pixels is None):
            raise OptionError("an amount is a fraction or a number of pixels, exactly one of them")
        if self.fraction is not None and not 0 <= self.fraction <= 1:
            raise OptionError(f"a fraction of the pixels lies in [0, 1], not {self.fraction:g}")
        if self.pixels is not None and (isinstance(self.pixels, bool) or int(self.pixels) != self.pixels
                                        or self.pixels < 0):
            raise OptionError(f"a number of pixels is a whole number >= 0, not {self.pixels}")

    def of(self, n: int) -> int:
        """The number of pixels out of ``n`` (unbounded for a count: the caller caps it)."""
        return int(round(self.fraction * n)) if self.fraction is not None else int(self.pixels)

    def __str__(self) -> str:
        return f"{100 * self.fraction:g} %" if self.fraction is not None else f"{self.pixels} px"


def as_amount(value: "Amount | int | float") -> Amount:
    """An :class:`Amount` from an int (pixels) or a float (a fraction in [0, 1]); a float above 1 is refused
    rather than read as a count (1.0 is all pixels, not one)."""
    if isinstance(value, Amount):
        return value
    if isinstance(value, (bool, np.bool_)):
        raise OptionError(f"not a sample size: {value!r}")
    if isinstance(value, (int, np.integer)):
        return Amount(pixels=int(value))
    v = float(value)
    if not 0 <= v <= 1:
        raise OptionError(f"sample size {v:g}: a fraction lies in [0, 1]; give a number of pixels as an int")
    return Amount(fraction=v)


def parse_fraction(value: float | str, option: str, *, allow_zero: bool = False, allow_one: bool = True) -> float:
    """A fraction from a number (0.8) or a percentage ("80%"), refused in one line naming ``option`` when it is
    outside (0, 1] (``allow_zero``: [0, ...; not ``allow_one``: ..., 1))."""
    text = str(value).strip()
    pct = text.endswith("%")
    try:
        v = float(text[:-1].strip() if pct else text) / (100 if pct else 1)
    except ValueError:
        raise OptionError(f"{option} {text}: not a fraction (0.8) or a percentage (80%)") from None
    lo_ok = v >= 0 if allow_zero else v > 0
    hi_ok = v <= 1 if allow_one else v < 1
    if not (lo_ok and hi_ok and np.isfinite(v)):
        span = ("[0" if allow_zero else "(0") + (", 1]" if allow_one else ", 1)")
        hint = (f"; for {v:g} pixels per class use {option}-pixels {v:g}"
                if not pct and v > 1 and float(v).is_integer() else "")
        example = "0.1 or 10%" if allow_zero else "0.8 or 80%"
        raise OptionError(f"{option} {text}: not a fraction of each class in {span} (e.g. {example}){hint}")
    return v


def amount_option(fraction: float | str | None, pixels: int | None, option: str, *,
                  allow_zero: bool = False) -> Amount | None:
    """The amount of ``option`` ("--train", "--val") given as a fraction/percentage or as ``option``-pixels;
    ``None`` when neither is given. Both at once, or values that mean nothing, are refused in one line."""
    if fraction is not None and pixels is not None:
        raise OptionError(f"give {option} (a fraction) or {option}-pixels (a count), not both")
    if pixels is not None:
        least = 0 if allow_zero else 1
        if isinstance(pixels, bool) or int(pixels) != pixels or pixels < least:
            raise OptionError(f"{option}-pixels {pixels}: a whole number of pixels per class >= {least}")
        return Amount(pixels=int(pixels))
    if fraction is not None:
        # training may take all (1); validation may take none (0) but not all, which would leave nothing to train
        return Amount(fraction=parse_fraction(fraction, option, allow_zero=allow_zero, allow_one=not allow_zero))
    return None


def stratified_split(labels: np.ndarray, *, train: Amount | int | float, val: Amount | int | float = 0,
                     seed: int = 0, max_train_fraction: float | None = None) -> Split:
    """The papers' protocol: per class, draw ``train`` then ``val`` pixels; the rest is test.

    Amounts are :class:`Amount` s, ints (pixels) or floats (fractions in [0, 1]). ``max_train_fraction`` caps a
    fixed count at that share of the class (FreeNet's 200 px/class would otherwise take every pixel of Indian
    Pines' smallest classes). At least one pixel of each class is kept for testing when the class has two or
    more; classes with fewer pixels than asked for are warned about and split as far as they go.
    """
    train, val = as_amount(train), as_amount(val)

    def counts(n: int) -> tuple[int, int, bool]:
        n_tr, n_va = train.of(n), val.of(n)
        if max_train_fraction is not None:
            n_tr = min(n_tr, max(1, int(np.floor(max_train_fraction * n))))
        cap = n - 1 if n > 1 else n
        if n_tr + n_va <= cap:
            return n_tr, n_va, False
        n_tr = min(n_tr, cap)
        return n_tr, min(n_va, cap - n_tr), True

    return _per_class(labels, seed, counts, train_first=True, test_rest=True)


def holdout_split(labels: np.ndarray, *, val: Amount = Amount(fraction=0.1), train: Amount | None = None,
                  seed: int = 0) -> Split:
    """The user's protocol: per class, hold ``val`` pixels out for validation (a fraction keeps at least one of a
    class with two or more pixels) and train on ``train`` of the class, at most what validation leaves (default:
    all of that, as a fraction of 1 does). No test set: every labelled pixel trains or validates unless ``train``
    asks for fewer. Each class keeps at least one training pixel; counts larger than what a class has left are
    warned about and taken as far as they go.
    """
    def counts(n: int) -> tuple[int, int, bool]:
        short = False
        n_va = val.of(n)
        if val.fraction is not None and val.fraction > 0 and n >= 2:
            n_va = max(n_va, 1)
        if n_va > n - 1:
            short = val.pixels is not None
            n_va = max(n - 1, 0)
        rest = n - n_va
        n_tr = rest if train is None else train.of(n)
        if train is not None and train.fraction is not None:
            n_tr = min(max(n_tr, 1), rest)  # a share of the class, at most what validation leaves: 1.0 = all that
        if n_tr > rest:
            short, n_tr = True, rest
        return n_tr, n_va, short

    return _per_class(labels, seed, counts, train_first=False, test_rest=False)


def _per_class(labels: np.ndarray, seed: int, counts: Callable[[int], tuple[int, int, bool]], *,
               train_first: bool, test_rest: bool) -> Split:
    """Shuffle each class's pixels (one seeded generator, classes in ascending order) and take ``counts(n)`` =
    (train, validation, too small) of them: training first, then validation, or the other way round. The rest
    is the test set when ``test_rest``, else unused. Classes too small for what was asked are warned about."""
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
        n_tr, n_va, small = counts(idx.size)
        if small:
            short.append(f"{int(c)} ({idx.size} px)")
        first, second = (tr, va) if train_first else (va, tr)
        k = n_tr if train_first else n_va
        first[idx[:k]] = True
        second[idx[k : n_tr + n_va]] = True
    if short:
        warnings.warn(f"classes with too few pixels for the requested samples: {', '.join(short)}", stacklevel=3)
    te = ((flat > 0) & ~tr & ~va) if test_rest else np.zeros(flat.size, dtype=bool)
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
