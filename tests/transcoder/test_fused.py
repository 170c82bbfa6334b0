"""The hand-written backward passes match plain autograd on the straightforward formulas."""

from __future__ import annotations

import pytest
import torch

from llmbio.transcoder import fused

torch.set_num_threads(1)
L, B, F, D, C, BW = 3, 40, 24, 8, 2.0, 0.2


class JumpReLU(torch.autograd.Function):
    """Reference straight-through JumpReLU: exact gradient in h, rectangle kernel in theta."""

    @staticmethod
    def forward(ctx, h, theta):
        ctx.save_for_backward(h, theta)
        return h * (h > theta)

    @staticmethod
    def backward(ctx, grad):
        h, theta = ctx.saved_tensors
        kernel = ((h - theta).abs() < BW / 2).to(h.dtype)
        return grad * (h > theta), (-(theta / BW) * kernel * grad).sum_to_size(theta.shape)


def reference(h, log_theta, weights, y):
    """Loss from plain autograd: JumpReLU STE, tanh sparsity, pre-act penalty, CLT decoders."""
    theta = log_theta.exp()
    norm = torch.stack([w.flatten(1).norm(dim=1) for w in weights])  # (L, F)
    acts = JumpReLU.apply(h, theta.unsqueeze(1))
    sparsity = torch.tanh(C * norm.unsqueeze(1) * acts).sum() / B
    pre = (torch.relu(theta.unsqueeze(1) - h) * norm.unsqueeze(1)).sum() / B
    recon = [sum(acts[s] @ weights[s][:, t - s] for s in range(t + 1)) for t in range(L)]
    mse = (torch.stack(recon) - y).pow(2).sum()
    return mse + 0.3 * sparsity + 0.7 * pre


def fast(h, log_theta, weights, y):
    norm = torch.stack([w.flatten(1).norm(dim=1) for w in weights])
    acts, sparsity, pre, need = fused.sparse_code(h, log_theta, norm, C, BW)
    mse = (fused.decode(acts, need, list(weights)) - y).pow(2).sum()
    return mse + 0.3 * sparsity + 0.7 * pre


@pytest.mark.parametrize("sparse", [False, True])
def test_fused_loss_and_gradients_match_autograd(sparse, monkeypatch):
    monkeypatch.setattr(fused, "SPARSE_DENSITY", 1.01 if sparse else 0.0)
    gen = torch.Generator().manual_seed(0)
    h0 = torch.randn(L, B, F, generator=gen, dtype=torch.float64)
    log_theta0 = torch.log(torch.rand(L, F, generator=gen, dtype=torch.float64) + 0.1)
    w0 = [torch.randn(F, L - s, D, generator=gen, dtype=torch.float64) for s in range(L)]
    y = torch.randn(L, B, D, generator=gen, dtype=torch.float64)
    results = []
    for loss_fn in (reference, fast):
        h, log_theta = h0.clone().requires_grad_(), log_theta0.clone().requires_grad_()
        weights = [w.clone().requires_grad_() for w in w0]
        loss = loss_fn(h, log_theta, weights, y)
        loss.backward()
        results.append([loss, h.grad, log_theta.grad, *(w.grad for w in weights)])
    for ref, got in zip(*results, strict=True):
        torch.testing.assert_close(got, ref)
    assert results[0][2].abs().sum() > 0  # the thresholds do get a gradient


def test_per_layer_decoders_write_only_to_their_own_layer():
    acts = torch.rand(L, B, F)
    weights = [torch.randn(F, 1, D) for _ in range(L)]
    out = fused.decode(acts, acts > 0, weights)
    for t in range(L):
        torch.testing.assert_close(out[t], acts[t] @ weights[t][:, 0])
