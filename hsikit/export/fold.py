"""Splitting a fitted preprocessing chain for export: what runs outside the exported network, what folds into it.

A fitted chain is an affine map of the selected bands: ``features = A x + b``. Band selections that come first
stay outside (they decide which bands are read). The linear steps after them (``scale``, ``normalize``,
``resample``, ``pca``, and later selections) fold into the network as the matrix ``A``. The bias ``b`` is moved
out as a per-band offset ``c`` with ``A c + b = 0``: the exported network takes ``x - c``, so a pixel the engine
zeroes (missing) is still the neutral value 0 of the features, as in the checkpoint's own pipeline. In MLM terms
``c`` is an ``offset`` value scaling (``data - value``) of each input band.

A chain fitted on each scene (imported weights that normalise with the scene's own statistics) cannot fold: it
is replayed whole before the network, as ``hsikit classify`` does for the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hsikit.io.bandinfo import BandInfo
from hsikit.preprocess.chain import Chain, Step

#: steps that pick bands (a gather: linear, but it decides what is read)
SELECTIONS = ("select_bands", "drop_bad_bands", "wavelength_range")
#: steps that are linear maps of the bands and fold into the network
LINEAR = ("scale", "normalize", "resample", "pca")


@dataclass
class Folding:
    """How a chain splits. ``outside``: the chain dict replayed before the network; ``offset``: subtracted from
    each band ``outside`` gives (None: nothing folded); ``matrix``: the folded linear map (features out, bands in);
    ``folded``: the ops inside the network; ``reason``: why nothing folded ("" when something did)."""

    outside: dict[str, Any] | None
    offset: list[float] | None = None
    matrix: np.ndarray | None = None
    folded: list[str] = field(default_factory=list)
    reason: str = ""

    @property
    def diagonal(self) -> bool:
        """Whether the folded map scales each band on its own (no mixing of bands)."""
        m = self.matrix
        return m is not None and m.shape[0] == m.shape[1] and not np.any(m - np.diag(np.diag(m)))


def fold_chain(chain: dict[str, Any] | None) -> Folding:
    """Split the fitted ``chain`` (a :class:`Chain` dict) into the part replayed outside and the folded matrix."""
    ch = Chain.from_dict(chain)
    whole = ch.to_dict()
    if not ch.steps:
        return Folding(whole, reason="the checkpoint has no preprocessing")
    if not ch.fitted:
        return Folding(whole, reason="its preprocessing is fitted on each scene (per-scene statistics)")
    lead = 0
    while lead < len(ch.steps) and ch.steps[lead].op in SELECTIONS:
        lead += 1
    rest = ch.steps[lead:]
    ops = [s.op for s in rest if s.op in LINEAR]
    if not ops:
        return Folding(whole, reason="its preprocessing has no linear step to fold")
    n = len(Chain(ch.steps[:lead]).used_input_bands(int(ch.input_bands["count"])))
    a, b = _affine(rest, n)
    offset, *_ = np.linalg.lstsq(a, -b, rcond=None)
    if np.abs(a @ offset + b).max() > 1e-6 * max(1.0, float(np.abs(b).max())):
        return Folding(whole, reason="no input value maps to the neutral feature 0")
    outside = Chain(list(ch.steps[:lead]), ch.input_bands).to_dict()
    return Folding(outside, [float(v) for v in offset], a, ops)


def _affine(steps: list[Step], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) in float64 of the fitted ``steps`` applied to ``n`` bands, as :meth:`Chain.apply` computes them."""
    a, b = np.eye(n), np.zeros(n)
    for s in steps:
        p = s.params
        if s.op in SELECTIONS:
            a, b = a[p["indices"]], b[p["indices"]]
        elif s.op == "scale":
            g, o = np.asarray(p["scale"], np.float64), np.asarray(p["offset"], np.float64)
            a, b = g[:, None] * a, g * b + o
        elif s.op == "normalize":
            sd, mu = np.asarray(p["std"], np.float64), np.asarray(p["mean"], np.float64)
            a, b = a / sd[:, None], (b - mu) / sd
        elif s.op == "resample":
            m = s.resample_matrix().astype(np.float64)
            a, b = m @ a, m @ b
        elif s.op == "pca":
            comp = np.asarray(p["components"], np.float64)
            if p.get("whiten"):
                comp = comp / np.sqrt(np.maximum(np.asarray(p["explained_variance"], np.float64), 1e-12))[:, None]
            a, b = comp @ a, comp @ (b - np.asarray(p["mean"], np.float64))
    return a, b


class OffsetChain:
    """The outside part of a folded chain, as the engine replays it before an exported network: the band
    selections, then each band minus its offset; values that are not finite become 0 (a missing value).

    Behaves as the :class:`Chain` it wraps where the classify pipeline looks (fitted, bands, dict)."""

    def __init__(self, chain: Chain, offset: list[float]) -> None:
        self.chain = chain
        self.offset = np.asarray(offset, np.float32)

    @property
    def steps(self) -> list[Step]:
        return self.chain.steps

    @property
    def fitted(self) -> bool:
        return self.chain.fitted

    @property
    def input_bands(self) -> dict[str, Any] | None:
        return self.chain.input_bands

    def apply(self, raw: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """``raw`` (B, h, w) -> float32 (F, h, w): the selected bands minus their offsets."""
        x = self.chain.apply(raw)
        if x is raw or x.dtype != np.float32:
            x = x.astype(np.float32)
        x -= self.offset[:, None, None]
        if not np.isfinite(x).all():
            x[~np.isfinite(x)] = 0.0
        return x

    def used_input_bands(self, count: int) -> list[int]:
        return self.chain.used_input_bands(count)

    def output_bands(self, bands: BandInfo) -> BandInfo:
        return self.chain.output_bands(bands)

    def check_input(self, bands: BandInfo, *, source: str | None = None) -> None:
        self.chain.check_input(bands, source=source)

    def to_dict(self) -> dict[str, Any]:
        return self.chain.to_dict()
