"""Small building blocks shared by several architectures (no parameters of their own, no I/O)."""

from __future__ import annotations

import torch
import torch.nn as nn


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: while ``training``, zero the residual branch of whole samples (dim 0) with probability
    ``p`` and scale the kept ones by ``1 / (1 - p)``; the identity otherwise."""
    if p <= 0.0 or not training:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask / keep


class DropPath(nn.Module):
    """:func:`drop_path` as a module (rate ``p``; active in training mode only). It holds no tensors, so the state
    dict of a model using it is unchanged by where it lives."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"
