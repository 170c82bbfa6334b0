"""JumpReLU straight-through estimator, as implemented by ``fused.encode``.

With identity encoders the pre-activations are the inputs, and with zero decoder norms both
penalties vanish, so ``encode`` is a plain JumpReLU whose threshold gradient is the
rectangle-kernel estimate (Rajamanoharan et al., 2024).
"""

from __future__ import annotations

import math

import pytest
import torch

from llmbio.transcoder.fused import encode

torch.set_num_threads(1)


def sparse_code(h, log_theta, dec_norm, c: float, bandwidth: float) -> tuple[torch.Tensor]:
    """JumpReLU activations ``(L, B, F)`` of pre-activations ``h`` (identity encoders)."""
    n_layers, _, n_features = h.shape
    eye = torch.eye(n_features, dtype=h.dtype).expand(n_layers, n_features, n_features)
    zero = torch.zeros(n_layers, n_features, dtype=h.dtype)
    return (encode(h, eye, zero, log_theta, dec_norm, c, bandwidth)[0].dense(),)


def jumprelu(h: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """JumpReLU of ``h`` ``(L, B, F)`` with thresholds ``theta`` ``(L, F)``."""
    zero = torch.zeros_like(theta)
    return sparse_code(h, theta.log(), zero, 1.0, bandwidth)[0]


def test_forward_is_jumprelu():
    h = torch.tensor([-1.0, 0.05, 0.09, 0.11, 0.5]).view(1, 5, 1)
    out = jumprelu(h, torch.tensor([[0.1]]), 0.01)
    torch.testing.assert_close(out.flatten(), torch.tensor([0.0, 0.0, 0.0, 0.11, 0.5]))


def test_input_gradient_matches_finite_differences_away_from_the_jump():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(2, 64, 16, generator=gen, dtype=torch.float64)
    theta = torch.full((2, 16), 0.3, dtype=torch.float64)
    h = torch.where((h - 0.3).abs() < 1e-3, h + 0.01, h)  # stay clear of the jump
    h.requires_grad_(True)
    w = torch.randn(2, 64, 16, generator=gen, dtype=torch.float64)
    (jumprelu(h, theta, 0.01) * w).sum().backward()
    eps = 1e-6
    plus, minus = (jumprelu(h.detach() + d, theta, 0.01) for d in (eps, -eps))
    torch.testing.assert_close(h.grad, (plus - minus) * w / (2 * eps))


def test_threshold_gradient_estimates_the_expected_loss_derivative():
    """For h ~ U(0, 1), E[JumpReLU(h)] = (1 - theta^2) / 2, whose derivative is -theta: the
    straight-through estimate, averaged over many samples, must recover it."""
    gen = torch.Generator().manual_seed(0)
    h = torch.rand(1, 200_000, 1, generator=gen, dtype=torch.float64)
    log_theta = torch.full((1, 1), math.log(0.4), dtype=torch.float64, requires_grad=True)
    acts = sparse_code(h, log_theta, torch.zeros(1, 1, dtype=torch.float64), 1.0, 0.05)[0]
    acts.mean().backward()
    d_theta = log_theta.grad.item() / 0.4  # d/d log(theta) = theta * d/d theta
    assert d_theta == pytest.approx(-0.4, rel=0.05)


def test_threshold_gradient_counts_only_the_kernel_window():
    h = torch.tensor([[0.29, 0.9], [0.31, 0.1]]).unsqueeze(0)  # (L=1, B=2, F=2)
    log_theta = torch.log(torch.tensor([[0.3, 0.3]])).requires_grad_(True)
    acts = sparse_code(h, log_theta, torch.zeros(1, 2), 1.0, 0.1)[0]
    acts.sum().backward()
    # both samples of feature 0 are within half a bandwidth of theta, none of feature 1:
    # d/d theta = -(theta / bandwidth) * 2, times d theta / d log(theta) = theta
    torch.testing.assert_close(log_theta.grad, torch.tensor([[-3.0 * 2 * 0.3, 0.0]]))
