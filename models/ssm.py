"""State-space blocks for token sequences: the notebook's plain linear recurrence and a Mamba-style selective scan.

Both blocks map tokens ``(N, L, D)`` to one summary vector ``(N, S)`` per sequence, so they plug into the same
classification head. Neither runs a Python loop over tokens: the linear recurrence is reduced in closed form with
a log-depth tree over affine maps; the selective scan is a chunked parallel scan (:func:`selective_scan`), and its
final state alone, which is all the classifier needs, has a closed form (:func:`selective_scan_last`). The naive
loops are kept as ``*_reference`` functions for tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

__all__ = [
    "LinearRecurrence",
    "SelectiveScan",
    "linear_recurrence",
    "linear_recurrence_reference",
    "selective_scan",
    "selective_scan_last",
    "selective_scan_reference",
]


# --------------------------------------------------------------------------------------------------------------
# Linear recurrence  s_t = W_A s_{t-1} + b_A + W_B x_t + b_B,  s_0 = 0
# --------------------------------------------------------------------------------------------------------------


def linear_recurrence(u: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Final state of ``s_t = weight @ s_{t-1} + u_t`` with ``s_0 = 0``; ``u`` is ``(N, L, S)``, result ``(N, S)``.

    Log-depth tree reduction: adjacent steps compose into one affine map ``s -> M s + v``. Every block at level k
    spans 2**k steps and so shares ``M = weight**(2**k)``; pairing blocks gives ``v = M v_left + v_right`` and
    ``M <- M @ M``. A block of zero inputs in front is exact because the state before it is zero.
    """
    if u.dim() != 3:
        raise ValueError(f"u must be (N, L, S), got {tuple(u.shape)}")
    n, length, s = u.shape
    if length == 0:
        return u.new_zeros(n, s)
    v = u
    m = weight
    while v.shape[1] > 1:
        if v.shape[1] % 2:
            v = F.pad(v, (0, 0, 1, 0))
        v = v[:, 0::2] @ m.transpose(0, 1) + v[:, 1::2]
        m = m @ m
    return v[:, 0]


def linear_recurrence_reference(
    x: torch.Tensor, a_weight: torch.Tensor, a_bias: torch.Tensor, b_weight: torch.Tensor, b_bias: torch.Tensor
) -> torch.Tensor:
    """Sequential loop ``s_t = A(s_{t-1}) + B(x_t)`` over ``x (N, L, D)`` from ``s_0 = 0``; returns ``s_L (N, S)``."""
    s = x.new_zeros(x.shape[0], a_weight.shape[0])
    for t in range(x.shape[1]):
        s = F.linear(s, a_weight, a_bias) + F.linear(x[:, t], b_weight, b_bias)
    return s


class LinearRecurrence(nn.Module):
    """The official notebook's "state space" block: ``s_t = A(s_{t-1}) + B(x_t)``, ``s_0 = 0``, final state out.

    ``A = Linear(S, S)`` and ``B = Linear(D, S)``, both with bias; no nonlinearity, discretisation, selectivity or
    output matrix. Tokens ``(N, L, D)`` -> final state ``(N, S)``. ``norm=True`` adds a LayerNorm on the input and
    spectral normalisation of A (spectral radius <= 1) against state blow-up on long sequences.
    """

    def __init__(self, dim: int, state_dim: int, norm: bool = False) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()
        self.A = nn.Linear(state_dim, state_dim)
        self.B = nn.Linear(dim, state_dim)
        for lin in (self.A, self.B):  # Keras defaults (glorot-uniform, zero bias), set before any parametrisation
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        if norm:
            spectral_norm(self.A)

    def forward(self, x: torch.Tensor, parallel: bool = True) -> torch.Tensor:
        """``x (N, L, D)`` -> final state ``(N, S)``; ``parallel=False`` runs the step-by-step loop."""
        x = self.norm(x)
        a_weight = self.A.weight  # read once: spectral norm's power iteration runs on each access in training
        if not parallel:
            return linear_recurrence_reference(x, a_weight, self.A.bias, self.B.weight, self.B.bias)
        # A's bias is added at every step, exactly like an input term.
        u = F.linear(x, self.B.weight, self.B.bias + self.A.bias)
        return linear_recurrence(u, a_weight)


# --------------------------------------------------------------------------------------------------------------
# Selective scan (Mamba S6):  h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t,  y_t = C_t . h_t + D u_t
# --------------------------------------------------------------------------------------------------------------


def _affine_scan(a: torch.Tensor, b: torch.Tensor, dim: int) -> torch.Tensor:
    """Inclusive Hillis-Steele scan of ``h_i = a_i * h_{i-1} + b_i`` (elementwise, ``h_{-1} = 0``) along ``dim``."""
    n = a.shape[dim]
    step = 1
    while step < n:
        a_prev, b_prev = a.narrow(dim, 0, n - step), b.narrow(dim, 0, n - step)
        a_cur, b_cur = a.narrow(dim, step, n - step), b.narrow(dim, step, n - step)
        b = torch.cat([b.narrow(dim, 0, step), a_cur * b_prev + b_cur], dim)
        a = torch.cat([a.narrow(dim, 0, step), a_cur * a_prev], dim)
        step *= 2
    return b


def selective_scan(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    chunk: int = 4,
) -> torch.Tensor:
    """Selective scan as a chunked parallel scan, in ``mamba_ssm.selective_scan_fn``'s layout.

    ``u, delta``: ``(b, d, l)`` (delta already positive); ``A``: ``(d, n)`` (negative real); ``B, C``: ``(b, n, l)``;
    ``D``: ``(d,)`` or None. Returns ``y (b, d, l)`` with ``h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t``
    (``h_0 = 0``) and ``y_t = sum_n C_t h_t + D u_t``.

    Within a chunk of ``chunk`` steps the decay from step s to t is ``exp(cum_t - cum_s)`` with ``cum`` the running
    sum of ``delta A``; only pairs s <= t are exponentiated, so every factor is <= 1 and nothing overflows. Chunk
    end states are then carried across chunks by a log-depth scan. Memory and work grow as ``b*l*chunk*d*n``;
    on CPU (fwd+bwd, l = 16 and 121) chunk 4 was fastest, 1.7x faster than 8 and 3-4x faster than 16.
    """
    bsz, d, length = u.shape
    n = A.shape[1]
    if length == 0:
        return u.new_zeros(bsz, d, 0)
    t_len = max(1, min(int(chunk), length))
    n_chunks = -(-length // t_len)
    pad = n_chunks * t_len - length

    # (b, l, .) layout; padded steps at the end have delta = 0: no decay and no input, so earlier outputs are exact.
    uu = F.pad(u.transpose(1, 2), (0, 0, 0, pad)).reshape(bsz, n_chunks, t_len, d)
    dt = F.pad(delta.transpose(1, 2), (0, 0, 0, pad)).reshape(bsz, n_chunks, t_len, d)
    bb = F.pad(B.transpose(1, 2), (0, 0, 0, pad)).reshape(bsz, n_chunks, t_len, n)
    cc = F.pad(C.transpose(1, 2), (0, 0, 0, pad)).reshape(bsz, n_chunks, t_len, n)

    cum = (dt.unsqueeze(-1) * A).cumsum(dim=2)  # (b, c, T, d, n), log of the decay since the chunk start
    dx = dt * uu  # (b, c, T, d)

    # Intra-chunk: y_t += sum_{s<=t} sum_n C_t[n] exp(cum_t - cum_s)[d, n] B_s[n] dx_s[d]
    causal = torch.ones(t_len, t_len, dtype=torch.bool, device=u.device).tril()
    seg = (cum.unsqueeze(3) - cum.unsqueeze(2)).masked_fill_(~causal[:, :, None, None], float("-inf"))
    decay = seg.exp()  # (b, c, T_t, T_s, d, n)
    cb = cc.unsqueeze(3) * bb.unsqueeze(2)  # (b, c, T_t, T_s, n)
    # Contract n as a batched mat-vec so the 6-D decay tensor is read once and no 6-D product is formed.
    kernel = (decay.reshape(-1, d, n) @ cb.reshape(-1, n, 1)).reshape(bsz, n_chunks, t_len, t_len, d)
    y = torch.einsum("bctsd,bcsd->bctd", kernel, dx)

    if n_chunks > 1:
        # State at each chunk end from a zero start, then carried across chunks: H_c = g_c * H_{c-1} + S_c.
        to_end = (cum[:, :, -1:] - cum).exp()  # (b, c, T, d, n)
        states = torch.einsum("bctdn,bctn,bctd->bcdn", to_end, bb, dx)
        carried = _affine_scan(cum[:, :, -1].exp(), states, dim=1)  # state at the end of each chunk
        h_in = F.pad(carried[:, :-1], (0, 0, 0, 0, 1, 0))  # state entering each chunk
        y = y + torch.einsum("bctn,bctdn,bcdn->bctd", cc, cum.exp(), h_in)

    y = y.reshape(bsz, n_chunks * t_len, d)[:, :length].transpose(1, 2)
    if D is not None:
        y = y + D.unsqueeze(-1) * u
    return y


def selective_scan_last(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Last output ``y_L (b, d)`` and final state ``h_L (b, d, n)`` of :func:`selective_scan` (same arguments).

    Closed form without a scan: ``h_L = sum_s exp(A * sum_{j>s} delta_j) delta_s B_s u_s``. Every exponent is
    <= 0, so it is stable, and it costs ``b*l*d*n`` instead of the chunked scan's ``b*l*chunk*d*n``.
    """
    bsz, d, length = u.shape
    if length == 0:
        raise ValueError("selective_scan_last needs at least one step")
    after = delta.sum(-1, keepdim=True) - delta.cumsum(-1)  # sum of delta over the steps after s: (b, d, l)
    decay = (after.unsqueeze(-1) * A[:, None, :]).exp_()  # (b, d, l, n); in place: one buffer, not two
    b_t = B.transpose(1, 2).unsqueeze(1)
    # Without autograd, reuse the decay buffer: on a 4096-window inference chunk it is ~270 MB.
    weighted = decay * b_t if torch.is_grad_enabled() else decay.mul_(b_t)  # (b, d, l, n)
    h = ((delta * u).unsqueeze(-2) @ weighted).squeeze(-2)  # (b, d, 1, l) @ (b, d, l, n) -> (b, d, n)
    y = (h @ C[:, :, -1].unsqueeze(-1)).squeeze(-1)
    if D is not None:
        y = y + D * u[:, :, -1]
    return y, h


def selective_scan_reference(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
) -> torch.Tensor:
    """Naive step-by-step loop of :func:`selective_scan` (same arguments and layout), for tests."""
    bsz, d, length = u.shape
    h = u.new_zeros(bsz, d, A.shape[1])
    ys = []
    for t in range(length):
        a_bar = torch.exp(delta[:, :, t, None] * A)
        h = a_bar * h + (delta[:, :, t] * u[:, :, t]).unsqueeze(-1) * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(bsz, d, 0)
    if D is not None:
        y = y + D.unsqueeze(-1) * u
    return y


class SelectiveScan(nn.Module):
    """Mamba-style selective SSM over tokens ``(N, L, D)`` -> summary ``(N, S)``.

    Per token: ``delta = softplus(Linear(x))`` (one step size per channel), ``B, C = Linear(x)`` (state size
    ``d_state``), ``A = -exp(A_log)`` diagonal per channel, skip ``D``. The summary is the last token's output
    ``y_L`` (which has seen the whole sequence through the scan) projected by ``Linear(D, S)``: like the notebook's
    final state, it is order dependent and has width S. ``norm=True`` puts a LayerNorm on the input.

    Only ``y_L`` is needed, so ``forward`` takes the closed-form final state (:func:`selective_scan_last`), which is
    exact and ``chunk`` times cheaper than running the chunked scan; :meth:`sequence` runs the chunked scan
    (:func:`selective_scan`) for all outputs.
    """

    def __init__(self, dim: int, state_dim: int, d_state: int = 16, chunk: int = 4, norm: bool = False) -> None:
        super().__init__()
        self.chunk = int(chunk)
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()
        self.delta_proj = nn.Linear(dim, dim)
        self.B_proj = nn.Linear(dim, d_state, bias=False)
        self.C_proj = nn.Linear(dim, d_state, bias=False)
        self.A_log = nn.Parameter(torch.empty(dim, d_state))
        self.D = nn.Parameter(torch.empty(dim))
        self.out = nn.Linear(dim, state_dim)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self) -> None:
        """Mamba's initialisation of the SSM-specific parameters (call again after any generic re-init).

        ``A = -(1..d_state)`` per channel (S4D-real), ``D = 1`` and a step-size bias whose softplus is log-uniform
        in [1e-3, 0.1].
        """
        d_state = self.A_log.shape[1]
        self.A_log.copy_(torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).expand_as(self.A_log))
        self.D.fill_(1.0)
        dt = torch.exp(torch.rand(self.delta_proj.out_features) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
        self.delta_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus

    def forward(self, x: torch.Tensor, parallel: bool = True) -> torch.Tensor:
        """``x (N, L, D)`` -> ``(N, S)``; ``parallel=False`` uses the sequential reference scan."""
        x = self.norm(x)
        delta = F.softplus(self.delta_proj(x)).transpose(1, 2)
        bmat = self.B_proj(x).transpose(1, 2)
        cmat = self.C_proj(x).transpose(1, 2)
        a = -torch.exp(self.A_log)
        u = x.transpose(1, 2)
        if parallel:
            y_last = selective_scan_last(u, delta, a, bmat, cmat, self.D)[0]
        else:
            y_last = selective_scan_reference(u, delta, a, bmat, cmat, self.D)[:, :, -1]
        return self.out(y_last)

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """All outputs ``y (N, L, D)`` of the scan (chunked parallel scan), before the summary projection."""
        x = self.norm(x)
        delta = F.softplus(self.delta_proj(x)).transpose(1, 2)
        u = x.transpose(1, 2)
        y = selective_scan(u, delta, -torch.exp(self.A_log), self.B_proj(x).transpose(1, 2),
                           self.C_proj(x).transpose(1, 2), self.D, chunk=self.chunk)
        return y.transpose(1, 2)

