"""Hand-written forward and backward passes for transcoder training on CPU.

Once a transcoder is sparse, only a few percent of its (layer, token, feature) entries are
active or near their threshold, yet plain autograd spends most of a step on elementwise passes
and matmuls over the dense ``(L, B, F)`` pre-activations. :func:`encode` keeps only the entries
within half a bandwidth of firing (the only ones where the JumpReLU straight-through estimator
uses an activation gradient) and writes the dense parts of the gradients in closed form: every
inactive entry has the same pre-activation gradient, that of the pre-activation penalty.
:func:`decode` reconstructs from the kept entries. Values and gradients equal plain autograd's
on the straightforward formulas (checked in the tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

# above this fraction of kept entries, dense matmuls beat gathers and sparse products
SPARSE_DENSITY = 0.3


@dataclass(frozen=True)
class Code:
    """A batch's kept entries, sorted by (layer, token, feature), and the dense shape.

    ``values`` are the activations (0 for kept entries just below their threshold).
    """

    layer: torch.Tensor
    token: torch.Tensor
    feature: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, int, int]

    def dense(self) -> torch.Tensor:
        """Activations ``(L, B, F)`` (differentiable in ``values``)."""
        zeros = self.values.new_zeros(self.shape)
        return zeros.index_put((self.layer, self.token, self.feature), self.values)

    def l0(self) -> float:
        """Mean number of active features per layer and token."""
        return (self.values > 0).sum().item() / (self.shape[0] * self.shape[1])

    def fired(self) -> torch.Tensor:
        """``(L, F)``: which features were active on some token of the batch."""
        out = torch.zeros(self.shape[0], self.shape[2], dtype=torch.bool, device=self.values.device)
        on = self.values > 0
        out[self.layer[on], self.feature[on]] = True
        return out


def _per_feature(flat: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Sum ``values`` into an ``(L, F)`` table at flat indices ``flat`` (= layer * F + feature)."""
    return values.new_zeros(shape[0] * shape[1]).index_add_(0, flat, values).view(shape)


class _Encode(torch.autograd.Function):
    """``(x (L, B, D), W_enc (L, F, D), b_enc, log_theta, dec_norm (L, F))`` -> kept entries'
    indices and activations, sparsity and pre-activation penalties.

    h = x W_enc^T + b_enc;  acts = h [h > theta];  sparsity = sum tanh(c * dec_norm * acts) / B;
    pre-act = sum ReLU(theta - h) * dec_norm / B; the threshold gradient is the JumpReLU
    straight-through estimate with a rectangle kernel of width ``bandwidth``.
    """

    @staticmethod
    def forward(ctx: Any, x, w_enc, b_enc, log_theta, dec_norm, c: float, bandwidth: float):
        n_layers, n_tokens, _ = x.shape
        h = torch.baddbmm(b_enc.unsqueeze(1), x, w_enc.transpose(1, 2))  # (L, B, F)
        theta = log_theta.exp()
        layer, token, feat = (h > (theta - bandwidth / 2).unsqueeze(1)).nonzero(as_tuple=True)
        h_kept = h[layer, token, feat]
        active = h_kept > theta[layer, feat]
        acts = h_kept * active
        t = torch.tanh(acts * (c * dec_norm[layer, feat]))
        flat = layer * theta.shape[1] + feat
        n_active = _per_feature(flat, active.to(h.dtype), theta.shape)
        # sum of (theta - h) over inactive tokens = theta * #inactive - (sum h - sum active h),
        # in float64: the difference of two large sums would otherwise lose the small remainder
        wide = torch.float64
        inactive_h = h.sum(1, dtype=wide) - _per_feature(flat, acts.to(wide), theta.shape)
        below_sum = (theta * (n_tokens - n_active) - inactive_h).clamp_min(0).to(h.dtype)
        saved = (x, w_enc, theta, dec_norm, layer, token, feat, flat, active, acts, t, h_kept)
        ctx.save_for_backward(*saved)
        ctx.extra = (c, bandwidth, n_active, below_sum)
        ctx.mark_non_differentiable(layer, token, feat)
        sparsity = t.sum() / n_tokens
        pre_act = (below_sum * dec_norm).sum() / n_tokens
        return layer, token, feat, acts, sparsity, pre_act

    @staticmethod
    def backward(ctx: Any, _gl, _gt, _gf, g_acts, g_sparsity, g_pre):
        x, w_enc, theta, dec_norm, layer, token, feat, flat, active, acts, t, h_kept = (
            ctx.saved_tensors
        )
        c, bw, n_active, below_sum = ctx.extra
        n_layers, n_tokens, _ = x.shape
        shape = theta.shape
        k_sp = (0.0 if g_sparsity is None else g_sparsity) * c / n_tokens
        k_pre = (0.0 if g_pre is None else g_pre) / n_tokens
        g_acts = torch.zeros_like(acts) if g_acts is None else g_acts
        dtanh = 1 - t * t  # d tanh(c n a) / d a = c n (1 - t^2); t = 0 where inactive
        g_a = g_acts + k_sp * dec_norm.flatten()[flat] * dtanh
        below = -k_pre * dec_norm  # (L, F): the pre-activation gradient of every inactive entry
        # active entries' pre-activation gradient, minus the `below` that the closed form adds
        excess = torch.where(active, g_a - below.flatten()[flat], 0)
        grads = [None] * 7
        if ctx.needs_input_grad[0]:
            g_h = below.unsqueeze(1).expand(n_layers, n_tokens, shape[1]).clone()
            g_h[layer, token, feat] += excess
            grads[0] = torch.bmm(g_h, w_enc)
        g_w = below.unsqueeze(-1) * x.sum(1).unsqueeze(1)  # (L, F, D)
        entries = (layer, token, feat)
        grads[1] = g_w + _excess_times_inputs(excess, active, entries, x, shape[1])
        grads[2] = n_tokens * below + _per_feature(flat, excess, shape)
        window = (h_kept - theta.flatten()[flat]).abs() < bw / 2
        g_theta = -(theta / bw) * _per_feature(flat, g_a * window, shape)
        g_theta = g_theta + k_pre * dec_norm * (n_tokens - n_active)
        grads[3] = g_theta * theta  # d / d log(theta)
        grads[4] = k_sp * _per_feature(flat, acts * dtanh, shape) + k_pre * below_sum
        return tuple(grads)


def _excess_times_inputs(excess, active, entries, x, n_features: int) -> torch.Tensor:
    """``(L, F, D)``: sum over active entries of ``excess * x[layer, token]`` into their feature
    (``entries``: the kept entries' layer, token and feature indices)."""
    layer, token, feat = entries
    n_layers, n_tokens, d = x.shape
    if active.numel() > SPARSE_DENSITY * n_layers * n_tokens * n_features:
        dense = excess.new_zeros(n_layers, n_tokens, n_features)
        dense[layer, token, feat] = excess
        return torch.bmm(dense.transpose(1, 2), x)
    on = active.nonzero().squeeze(1)
    index = torch.stack([layer[on] * n_features + feat[on], layer[on] * n_tokens + token[on]])
    size = (n_layers * n_features, n_layers * n_tokens)
    product = torch.sparse_coo_tensor(index, excess[on], size, check_invariants=False)
    return torch.sparse.mm(product, x.reshape(-1, d)).view(n_layers, n_features, d)


def encode(
    x: torch.Tensor,
    w_enc: torch.Tensor,
    b_enc: torch.Tensor,
    log_theta: torch.Tensor,
    dec_norm: torch.Tensor,
    c: float,
    bandwidth: float,
) -> tuple[Code, torch.Tensor, torch.Tensor]:
    """JumpReLU codes of ``x`` ``(L, B, D)`` as kept entries, and both penalties (scalars)."""
    layer, token, feat, acts, sparsity, pre_act = _Encode.apply(
        x, w_enc, b_enc, log_theta, dec_norm, c, bandwidth
    )
    shape = (x.shape[0], x.shape[1], w_enc.shape[1])
    return Code(layer, token, feat, acts, shape), sparsity, pre_act


def decode(code: Code, weights: list[torch.Tensor]) -> torch.Tensor:
    """Reconstructions ``(L, B, D)`` (without ``b_dec``) from ``code``.

    ``weights`` are the per-source decoders ``W_dec[s]`` ``(F, n_targets, D)`` whose first target
    is layer ``s``. A sparse source is decoded as a weighted ``embedding_bag`` over its kept
    entries (their activation gradient is exact; the caller uses no other).
    """
    n_layers, n_tokens, n_features = code.shape
    counts = torch.bincount(code.layer, minlength=n_layers).tolist()
    parts = zip(
        code.token.split(counts), code.feature.split(counts), code.values.split(counts), strict=True
    )
    recon = 0
    for s, (w, (token, feat, values)) in enumerate(zip(weights, parts, strict=True)):
        w_flat = w.flatten(1)  # (F, n_targets * D)
        if len(values) > SPARSE_DENSITY * n_tokens * n_features:
            acts = values.new_zeros(n_tokens, n_features).index_put((token, feat), values)
            out = acts @ w_flat
        else:
            offsets = torch.zeros(n_tokens, dtype=torch.long, device=token.device)
            offsets[1:] = torch.bincount(token, minlength=n_tokens).cumsum(0)[:-1]
            out = F.embedding_bag(feat, w_flat, offsets, mode="sum", per_sample_weights=values)
        out = out.view(n_tokens, w.shape[1], w.shape[2])
        # place the targets s.. of this source along the layer axis: (B, L, D)
        recon = recon + F.pad(out, (0, 0, s, n_layers - s - w.shape[1]))
    return recon.transpose(0, 1)
