"""Hand-written backward passes for transcoder training on CPU.

Plain autograd spends most of a training step on elementwise passes over the ``(L, B, F)``
pre-activations and on dense decoder matmuls although few features are active. These two
functions compute the same values and gradients (checked against plain autograd in the tests)
with fewer passes, and with sparse decoding once activations are sparse.

``sparse_code``: JumpReLU activations and both penalties from pre-activations ``h``;
``decode``: per-target reconstructions from activations, through each source's decoders.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

# below this fraction of needed (active or near-threshold) features, sparse decoding is faster
SPARSE_DENSITY = 0.3


class _SparseCode(torch.autograd.Function):
    """``(h (L, B, F), log_theta (L, F), dec_norm (L, F))`` -> acts ``(L, B, F)``, sparsity,
    pre-act, and the mask ``need`` ``(L, B, F)`` of features within half a bandwidth of firing.

    sparsity = sum tanh(c * dec_norm * acts) / B;  pre-act = sum ReLU(theta - h) * dec_norm / B.
    The threshold gradient uses the JumpReLU straight-through estimator with a rectangle kernel,
    so the activation gradient matters only where ``need`` is set.
    """

    @staticmethod
    def forward(ctx: Any, h, log_theta, dec_norm, c: float, bandwidth: float):
        theta = log_theta.exp().unsqueeze(1)  # (L, 1, F)
        norm = dec_norm.unsqueeze(1)
        active = h > theta
        need = h > theta - bandwidth / 2
        acts = h * active
        t = torch.tanh(acts * (c * norm))
        below_sum = torch.relu(theta - h).sum(1)  # (L, F)
        n_tokens = h.shape[1]
        ctx.save_for_backward(h, theta, norm, active, acts, t, below_sum)
        ctx.c, ctx.bandwidth = c, bandwidth
        sparsity = t.sum() / n_tokens
        pre_act = (below_sum * dec_norm).sum() / n_tokens
        ctx.mark_non_differentiable(need)
        return acts, sparsity, pre_act, need

    @staticmethod
    def backward(ctx: Any, g_acts, g_sparsity, g_pre, _g_need):
        h, theta, norm, active, acts, t, below_sum = ctx.saved_tensors
        n_tokens, c, bw = h.shape[1], ctx.c, ctx.bandwidth
        g_acts = torch.zeros_like(h) if g_acts is None else g_acts
        g_sparsity = 0.0 if g_sparsity is None else g_sparsity
        g_pre = 0.0 if g_pre is None else g_pre
        # d tanh(c n a) / d a = c n (1 - t^2); at inactive features t = 0
        dtanh = 1 - t * t
        g_a = g_acts + (g_sparsity * c / n_tokens) * norm * dtanh
        # dReLU(theta - h)/dh = -1 exactly where the feature is inactive
        g_h = torch.where(active, g_a, -(g_pre / n_tokens) * norm)
        window = (h - theta).abs_() < bw / 2
        g_theta = -(theta.squeeze(1) / bw) * (g_a * window).sum(1)
        g_theta += (g_pre / n_tokens) * norm.squeeze(1) * (~active).sum(1)
        g_log_theta = g_theta * theta.squeeze(1)
        g_norm = (g_sparsity * c / n_tokens) * (acts * dtanh).sum(1)
        g_norm += (g_pre / n_tokens) * below_sum
        return g_h, g_log_theta, g_norm, None, None


def sparse_code(
    h: torch.Tensor, log_theta: torch.Tensor, dec_norm: torch.Tensor, c: float, bandwidth: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Activations ``(L, B, F)``, sparsity and pre-activation penalties (scalars), ``need``."""
    return _SparseCode.apply(h, log_theta, dec_norm, c, bandwidth)


def decode(acts: torch.Tensor, need: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """Reconstructions ``(L, B, D)`` (without ``b_dec``) from ``acts`` ``(L, B, F)``.

    ``weights`` are the per-source decoders ``W_dec[s]`` ``(F, n_targets, D)`` whose first target
    is layer ``s``. Where ``need`` ``(L, B, F)`` is sparse, each source is decoded as a weighted
    ``embedding_bag`` over the ``need`` entries only (their activation gradient is exact; it is
    zero elsewhere, where the caller does not use it).
    """
    n_layers, n_tokens, _ = acts.shape
    recon = 0
    for s, w in enumerate(weights):
        w_flat = w.flatten(1)  # (F, n_targets * D)
        mask = need[s]
        if mask.count_nonzero().item() < SPARSE_DENSITY * mask.numel():
            rows, cols = mask.nonzero(as_tuple=True)
            offsets = torch.zeros(n_tokens, dtype=torch.long)
            offsets[1:] = torch.bincount(rows, minlength=n_tokens).cumsum(0)[:-1]
            out = F.embedding_bag(
                cols, w_flat, offsets, mode="sum", per_sample_weights=acts[s][rows, cols]
            )
        else:
            out = acts[s] @ w_flat
        out = out.view(n_tokens, w.shape[1], w.shape[2])
        # place the targets s.. of this source along the layer axis: (B, L, D)
        recon = recon + F.pad(out, (0, 0, s, n_layers - s - w.shape[1]))
    return recon.transpose(0, 1)
