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


def reference(x, w_enc, b_enc, log_theta, weights, y):
    """Loss from plain autograd: JumpReLU STE, tanh sparsity, pre-act penalty, CLT decoders."""
    h = x @ w_enc.transpose(1, 2) + b_enc.unsqueeze(1)
    theta = log_theta.exp()
    norm = torch.stack([w.flatten(1).norm(dim=1) for w in weights])  # (L, F)
    acts = JumpReLU.apply(h, theta.unsqueeze(1))
    sparsity = torch.tanh(C * norm.unsqueeze(1) * acts).sum() / B
    pre = (torch.relu(theta.unsqueeze(1) - h) * norm.unsqueeze(1)).sum() / B
    recon = [sum(acts[s] @ weights[s][:, t - s] for s in range(t + 1)) for t in range(L)]
    mse = (torch.stack(recon) - y).pow(2).sum()
    return mse + 0.3 * sparsity + 0.7 * pre


def fast(x, w_enc, b_enc, log_theta, weights, y):
    norm = torch.stack([w.flatten(1).norm(dim=1) for w in weights])
    code, sparsity, pre = fused.encode(x, w_enc, b_enc, log_theta, norm, C, BW)
    mse = (fused.decode(code, list(weights)) - y).pow(2).sum()
    return mse + 0.3 * sparsity + 0.7 * pre


@pytest.mark.parametrize("sparse", [False, True])
def test_fused_loss_and_gradients_match_autograd(sparse, monkeypatch):
    """Every gradient, inputs included, in both the dense and the sparse regime."""
    monkeypatch.setattr(fused, "SPARSE_DENSITY", 1.01 if sparse else 0.0)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(L, B, D, generator=gen, dtype=torch.float64)
    enc0 = torch.randn(L, F, D, generator=gen, dtype=torch.float64) / D**0.5
    b0 = torch.randn(L, F, generator=gen, dtype=torch.float64) * 0.1
    log_theta0 = torch.log(torch.rand(L, F, generator=gen, dtype=torch.float64) + 0.1)
    w0 = [torch.randn(F, L - s, D, generator=gen, dtype=torch.float64) for s in range(L)]
    y = torch.randn(L, B, D, generator=gen, dtype=torch.float64)
    results = []
    for loss_fn in (reference, fast):
        leaves = [t.clone().requires_grad_() for t in (x0, enc0, b0, log_theta0, *w0)]
        loss = loss_fn(*leaves[:4], leaves[4:], y)
        loss.backward()
        results.append([loss, *(t.grad for t in leaves)])
    for ref, got in zip(*results, strict=True):
        torch.testing.assert_close(got, ref)
    assert results[0][4].abs().sum() > 0  # the thresholds do get a gradient


def test_without_input_gradient_the_weights_get_the_same_gradients():
    """Training never asks for the input's gradient; the closed-form path must not need it."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(L, B, D, generator=gen, dtype=torch.float64)
    enc = torch.randn(L, F, D, generator=gen, dtype=torch.float64).requires_grad_()
    b, log_theta = torch.zeros(L, F, dtype=torch.float64), torch.full((L, F), -1.0)
    weights = [torch.randn(F, L - s, D, dtype=torch.float64) for s in range(L)]
    y = torch.randn(L, B, D, dtype=torch.float64)
    fast(x, enc, b, log_theta.double(), weights, y).backward()
    got = enc.grad.clone()
    enc.grad = None
    reference(x, enc, b, log_theta.double(), weights, y).backward()
    torch.testing.assert_close(got, enc.grad)


def test_code_reports_l0_and_fired_features():
    x = torch.eye(4).view(1, 4, 4)  # token i has pre-activation 1 on feature i only
    code, *_ = fused.encode(x, torch.eye(4).view(1, 4, 4), torch.zeros(1, 4),
                            torch.full((1, 4), -1.0), torch.ones(1, 4), 1.0, 0.1)  # fmt: skip
    torch.testing.assert_close(code.dense(), x)
    assert code.l0() == 1.0 and code.fired().all()


def test_per_layer_decoders_write_only_to_their_own_layer():
    acts = torch.rand(L, B, F)
    layer, token, feat = (acts > 0.5).nonzero(as_tuple=True)
    code = fused.Code(layer, token, feat, acts[layer, token, feat], (L, B, F))
    weights = [torch.randn(F, 1, D) for _ in range(L)]
    out = fused.decode(code, weights)
    for t in range(L):
        torch.testing.assert_close(out[t], code.dense()[t] @ weights[t][:, 0])


def test_pre_activation_penalty_vanishes_when_every_feature_fires():
    """It is computed as a difference of sums over all tokens; it must not come out negative
    or non-zero by rounding when no feature is below its threshold."""
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(L, 512, D, generator=gen) + 1.0  # float32, all pre-activations >= 1
    enc = torch.rand(L, F, D, generator=gen)
    norm = torch.ones(L, F, requires_grad=True)
    _, _, pre = fused.encode(x, enc, torch.zeros(L, F), torch.full((L, F), -3.0), norm, C, BW)
    pre.backward()
    assert pre.item() == 0.0 and (norm.grad == 0).all()
