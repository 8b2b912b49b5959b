"""MorpMamba (spatial-spectral morphological Mamba): a patch classifier for PCA-reduced hyperspectral cubes.

Ahmad et al., "Spatial-spectral morphological mamba for hyperspectral image classification", Neurocomputing 636
(2025) 129995; arXiv 2408.01372. Implemented from the paper and from a reading (facts only: it has no licence) of
the official code, the TensorFlow/Keras notebook ``Spatial-Spectral MorpMamba.ipynb`` of ``mahmad000/MorpMamba``.

The PCA (15 whitened components in the reference) is applied by the training pipeline's preprocessing chain; the
model consumes PCA bands and never does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from hsikit.models.registry import register_model
from hsikit.models.ssm import LinearRecurrence, SelectiveScan

HEAD_UNITS = 128  # width of the dense ReLU layer before the classifier (fixed in the reference)

_CHOICES = {
    "ssm": ("selective", "recurrence"),
    "attention": ("self", "cross"),
    "center_mode": ("pixel", "row"),
    "morph": ("conv", "minmax"),
}


@dataclass(kw_only=True)
class MorpMambaConfig:
    """Options of :class:`MorpMamba` (keywords only).

    ``in_bands``: PCA components C; ``patch``: window side P (the labelled pixel sits at index P//2 on both axes);
    ``dim``: token width D; ``heads``: attention heads; ``state_dim``: SSM summary width S; ``kernel``: morphology
    kernel k; ``dropout``: on the attention output. ``ssm``/``attention``/``center_mode``/``morph``: see
    :class:`MorpMamba`. ``ssm_norm``: LayerNorm on the SSM input (and spectral norm on A for the recurrence);
    None (default) = on for the selective scan, off for the recurrence (see :class:`MorpMamba`).
    ``head_l2``: coefficient of :meth:`MorpMamba.l2_penalty`. ``scan_state`` / ``scan_chunk``: state size and chunk
    length of the selective scan.
    """

    in_bands: int = 15
    num_classes: int
    patch: int = 4
    dim: int = 64
    heads: int = 4
    state_dim: int = 128
    kernel: int = 5
    dropout: float = 0.1
    ssm: str = "selective"
    attention: str = "self"
    center_mode: str = "pixel"
    morph: str = "conv"
    ssm_norm: bool | None = None
    head_l2: float = 0.01
    scan_state: int = 16
    scan_chunk: int = 4

    def __post_init__(self) -> None:
        from hsikit.errors import OptionError

        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise OptionError(f"morpmamba: {name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        for name in ("in_bands", "num_classes", "patch", "dim", "heads", "state_dim", "kernel", "scan_state",
                     "scan_chunk"):
            if int(getattr(self, name)) < 1:
                raise OptionError(f"morpmamba: {name} must be >= 1, got {getattr(self, name)!r}")
        if self.dim % self.heads:
            raise OptionError(f"morpmamba: dim ({self.dim}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise OptionError(f"morpmamba: dropout must be in [0, 1), got {self.dropout!r}")


def _same_pad(k: int) -> tuple[int, int]:
    """(before, after) padding that keeps the size for a k-wide window (TF "same": extra on the after side)."""
    before = (k - 1) // 2
    return before, k - 1 - before


class _MorphPair(nn.Module):
    """Erosion and dilation of ``x (N, ch, H, W)`` over (H, W), per channel, as ``[eroded, dilated]``.

    ``conv``: two learnable depthwise k x k box filters without bias, initialised to ones; the erosion output is
    negated (as in the reference code). ``minmax``: flat square structuring element, min / max filters.
    """

    def __init__(self, channels: int, kernel: int, mode: str) -> None:
        super().__init__()
        self.kernel = kernel
        self.mode = mode
        if mode == "conv":
            self.erode = nn.Conv2d(channels, channels, kernel, padding="same", groups=channels, bias=False)
            self.dilate = nn.Conv2d(channels, channels, kernel, padding="same", groups=channels, bias=False)
            nn.init.ones_(self.erode.weight)
            nn.init.ones_(self.dilate.weight)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mode == "conv":
            return -self.erode(x), self.dilate(x)
        lo, hi = _same_pad(self.kernel)
        pad = (lo, hi, lo, hi)
        dilated = F.max_pool2d(F.pad(x, pad, value=float("-inf")), self.kernel, stride=1)
        eroded = -F.max_pool2d(F.pad(-x, pad, value=float("-inf")), self.kernel, stride=1)
        return eroded, dilated


class MorphTokens(nn.Module):
    """Spatial and spectral token maps ``(N, P, P, D)`` from a patch ``(N, C, P, P)`` (the notebook's
    morphological token generation).

    Spatial morphology runs over (row, col) per band; spectral morphology runs over (band, row) with the patch
    columns as channels, so its kernel count equals the patch side. Each stream concatenates [eroded, dilated]
    (2C channels) and goes through one shared 1x1 conv to D.
    """

    def __init__(self, bands: int, patch: int, dim: int, kernel: int, mode: str) -> None:
        super().__init__()
        self.spatial = _MorphPair(bands, kernel, mode)
        self.spectral = _MorphPair(patch, kernel, mode)
        self.proj = nn.Conv2d(2 * bands, dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        spatial = self.proj(torch.cat(self.spatial(x), dim=1))
        cols_first = x.permute(0, 3, 1, 2)  # (N, col, band, row): conv plane (band, row), columns as channels
        spec = [t.permute(0, 2, 3, 1) for t in self.spectral(cols_first)]
        spectral = self.proj(torch.cat(spec, dim=1))
        return spatial.permute(0, 2, 3, 1), spectral.permute(0, 2, 3, 1)


class CenterGate(nn.Module):
    """Centre-based feature enhancement: two gates, each Linear(D, D) + sigmoid, computed from the centre token(s)
    of the spatial stream; gate 1 scales the spatial tokens, gate 2 the spectral ones.

    ``pixel``: the token at (P//2, P//2) gives one gate vector per sample for all tokens. ``row`` (reference
    notebook): the centre row's P tokens give P gate vectors; row i of the patch is scaled by the gate from the
    centre-row token in column i.
    """

    def __init__(self, dim: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.gate_spatial = nn.Linear(dim, dim)
        self.gate_spectral = nn.Linear(dim, dim)

    def forward(self, spatial: torch.Tensor, spectral: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mid = spatial.shape[1] // 2
        if self.mode == "pixel":
            centre = spatial[:, mid, mid][:, None, None, :]  # (N, 1, 1, D)
        else:
            centre = spatial[:, mid][:, :, None, :]  # (N, P, 1, D): index i = column i of the centre row
        return spatial * torch.sigmoid(self.gate_spatial(centre)), spectral * torch.sigmoid(self.gate_spectral(centre))


class TokenAttention(nn.Module):
    """Multi-head scaled dot-product attention with Q, K, V projections (bias), heads concatenated, dropout.

    As in the reference there is no output projection, residual, LayerNorm or feed-forward.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, queries: torch.Tensor, keys_values: torch.Tensor) -> torch.Tensor:
        n, l_q, d = queries.shape
        h = self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(n, t.shape[1], h, d // h).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q(queries)), split(self.k(keys_values)),
                                             split(self.v(keys_values)))
        return self.drop(out.transpose(1, 2).reshape(n, l_q, d))


class MorpMamba(nn.Module):
    """MorpMamba patch classifier: morphological tokens -> centre gating -> attention -> SSM -> MLP head.

    Variants (``MorpMambaConfig``):

    * Default = what the paper describes: ``ssm="selective"`` (Mamba-style selective scan, input-dependent step
      size and B, C; summary = last token's output projected to S), ``attention="self"`` (multi-head
      self-attention: Q, K and V all come from the fused tokens, gated spatial + gated spectral, P*P tokens),
      ``center_mode="pixel"`` (gates from the true centre-pixel token). Its SSM input is LayerNorm-ed
      (``ssm_norm=None`` resolves to True here), as every Mamba layer is pre-normed: without it B_t, C_t and the
      input all scale with the token magnitude (box-filter sums of 25 values), the scan output grows with its
      cube, and training starts from cross-entropy in the thousands.
    * Official notebook (the published numbers): ``ssm="recurrence"`` (plain linear recurrence
      ``s_t = A s_{t-1} + B x_t``, final state), ``attention="cross"`` (queries from the spatial tokens, keys and
      values from the spectral tokens), ``center_mode="row"`` (gates from the centre row). With C=15, P=4, K=15 it
      has exactly 67,013 parameters (``ssm_norm=None`` resolves to False here, as in the notebook).
    * ``morph="minmax"`` swaps the learnable box filters for true flat min/max morphology (both variants use the
      box filters by default, as the reference code does).

    Entry points: :meth:`forward_patches` ``(N, C, P, P) -> (N, K)`` logits, and :meth:`forward`
    ``(N, C, H, W) -> (N, K, H, W)``, which classifies every pixel from its zero-padded P x P window.
    Softmax is left to the loss; add :meth:`l2_penalty` to it as the reference does.
    """

    def __init__(self, cfg: MorpMambaConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # windows per chunk in forward() (bounds memory on whole tiles); None: by device, see window_chunk
        self.window_batch: int | None = None
        self.tokens = MorphTokens(cfg.in_bands, cfg.patch, cfg.dim, cfg.kernel, cfg.morph)
        self.gate = CenterGate(cfg.dim, cfg.center_mode)
        self.attention = TokenAttention(cfg.dim, cfg.heads, cfg.dropout)
        self.ssm: nn.Module
        norm = cfg.ssm == "selective" if cfg.ssm_norm is None else bool(cfg.ssm_norm)
        if cfg.ssm == "recurrence":
            self.ssm = LinearRecurrence(cfg.dim, cfg.state_dim, norm=norm)
        else:
            self.ssm = SelectiveScan(cfg.dim, cfg.state_dim, d_state=cfg.scan_state, chunk=cfg.scan_chunk, norm=norm)
        self.hidden = nn.Linear(cfg.state_dim, HEAD_UNITS)
        self.classifier = nn.Linear(HEAD_UNITS, cfg.num_classes)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        # Keras defaults of the reference: glorot-uniform kernels and zero biases for dense layers and the 1x1 conv.
        # The depthwise morphology kernels keep the ones that _MorphPair gave them.
        for m in self.modules():
            if isinstance(m, nn.Linear) or m is self.tokens.proj:
                if parametrize.is_parametrized(m, "weight"):
                    continue  # spectral-normed A: its owner initialised it before the parametrisation
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if isinstance(self.ssm, SelectiveScan):
            self.ssm.reset_ssm_parameters()

    def forward_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, K)`` of patches ``(N, C, P, P)`` (label pixel at index P//2 on both axes)."""
        p = self.cfg.patch
        if x.dim() != 4 or x.shape[1] != self.cfg.in_bands or x.shape[2] != p or x.shape[3] != p:
            raise ValueError(f"expected patches (N, {self.cfg.in_bands}, {p}, {p}), got {tuple(x.shape)}")
        spatial, spectral = self.gate(*self.tokens(x))
        n, d = x.shape[0], self.cfg.dim
        spatial = spatial.reshape(n, p * p, d)  # row-major token order
        spectral = spectral.reshape(n, p * p, d)
        if self.cfg.attention == "cross":
            attended = self.attention(spatial, spectral)
        else:
            fused = spatial + spectral
            attended = self.attention(fused, fused)
        return self.classifier(F.relu(self.hidden(self.ssm(attended))))

    def forward(self, x: torch.Tensor, window_batch: int | None = None) -> torch.Tensor:
        """Per-pixel logits ``(N, K, H, W)`` of an image tile ``(N, C, H, W)``.

        Each pixel is classified from its P x P window (zero padding outside the tile, the pixel at index P//2),
        gathered ``window_batch`` windows at a time so all windows are never held at once.
        """
        n, c, h, w = x.shape
        p = self.cfg.patch
        chunk = int(window_batch or self.chunk_for(x.device))
        before, after = p // 2, p - 1 - p // 2
        padded = F.pad(x, (before, after, before, after))
        # Strided view (N, H, W, C, P, P) of all windows; indexing it copies only the selected ones.
        windows = padded.unfold(2, p, 1).unfold(3, p, 1).permute(0, 2, 3, 1, 4, 5)
        total = n * h * w
        logits = []
        for start in range(0, total, chunk):
            idx = torch.arange(start, min(start + chunk, total), device=x.device)
            ni, rest = idx // (h * w), idx % (h * w)
            logits.append(self.forward_patches(windows[ni, rest // w, rest % w]))
        if not logits:
            return x.new_zeros(n, self.cfg.num_classes, h, w)
        return torch.cat(logits).reshape(n, h, w, -1).permute(0, 3, 1, 2)

    def chunk_for(self, device: torch.device) -> int:
        """Windows per forward chunk: ``window_batch`` when set, else :func:`window_chunk` of ``device``."""
        return int(self.window_batch or window_chunk(device))

    def l2_penalty(self) -> torch.Tensor:
        """``head_l2 * sum(w**2)`` of the 128-unit dense kernel (the reference's Keras L2 regulariser)."""
        return self.cfg.head_l2 * self.hidden.weight.pow(2).sum()


def window_chunk(device: torch.device) -> int:
    """Windows per forward chunk on ``device``. On CPU, 256: the scan's (windows, D, L, S) decay tensor then stays
    in cache (17 MB at D = 64, L = 16, S = 16); 4096 windows made it 270 MB and classification 1.6-1.8x slower
    (bench/bench_efficiency.py, BENCHMARKS.md). GPUs want large launches: 4096."""
    return 256 if device.type == "cpu" else 4096


@register_model(
    "morpmamba",
    task="classification",
    description="MorpMamba: morphological tokens, centre gating, attention and a state-space block on PCA patches",
    inputs="pca patches",
    config_cls=MorpMambaConfig,
    receptive_field=lambda cfg: cfg.patch // 2,
)
def build_morpmamba(cfg: MorpMambaConfig) -> nn.Module:
    return MorpMamba(cfg)
