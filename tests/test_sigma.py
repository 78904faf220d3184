"""The SGA sigma optimiser and its surrogate radius (``art_certssbd.sigma``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import Linear2
from scipy.stats import norm

from art_certssbd.noise import gaussian, make_generator
from art_certssbd.sigma import optimize_sigma, radius_surrogate


def test_radius_surrogate_matches_closed_form():
    probs = torch.tensor([[0.9, 0.1], [0.7, 0.3]])
    radius, gap = radius_surrogate(probs, torch.tensor([0.5, 1.0]))
    expected_gap = norm.ppf([0.9, 0.7]) - norm.ppf([0.1, 0.3])
    np.testing.assert_allclose(gap.numpy(), expected_gap, rtol=1e-5)
    np.testing.assert_allclose(radius.numpy(), np.array([0.5, 1.0]) / 2 * expected_gap, rtol=1e-5)


def _true_surrogate(model, x, sigma, n=20000, seed=123):
    """Monte-Carlo surrogate radius with fresh, independent noise (not the optimiser's draws)."""
    g = make_generator(seed)
    out = []
    for xi, si in zip(x, sigma):
        eps = gaussian((n,) + tuple(xi.shape), g)
        with torch.no_grad():
            p = torch.softmax(model(xi + si * eps), dim=1).mean(0, keepdim=True)
        out.append(radius_surrogate(p, si.reshape(1))[0].item())
    return np.array(out)


def test_sga_raises_the_surrogate_radius_and_respects_bounds():
    model = Linear2()
    x = torch.rand(12, 4) * 0.6
    sigma = optimize_sigma(model, x, 0.2, steps=40, lr=0.02, n_samples=64, sigma_min=0.1, sigma_max=0.6, seed=0)
    assert torch.all(sigma >= 0.1) and torch.all(sigma <= 0.6)
    before = _true_surrogate(model, x, torch.full((12,), 0.2))
    after = _true_surrogate(model, x, sigma)
    assert np.mean(after) > np.mean(before)
    assert np.mean(after >= before - 1e-3) >= 0.75


def test_sga_reference_update_never_decreases_sigma():
    model = Linear2()
    x = torch.rand(10, 4)
    sigma = optimize_sigma(model, x, 0.2, steps=10, lr=0.01, n_samples=8, update="reference", seed=1)
    assert torch.all(sigma >= 0.2)
    assert torch.all(sigma > 0.2)  # gap > 0 whenever p1 > p2, so every sample grows


def test_sga_leaves_the_model_untouched_and_is_batch_independent():
    model = Linear2().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(9, 4)
    full = optimize_sigma(model, x, 0.2, steps=5, n_samples=8, seed=3, batch_size=4)
    part = optimize_sigma(model, x[5:], 0.2, steps=5, n_samples=8, seed=3, batch_size=2)
    torch.testing.assert_close(full[5:], part)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k], rtol=0, atol=0)


def test_sga_zero_steps_and_bad_arguments():
    model = Linear2()
    x = torch.rand(3, 4)
    torch.testing.assert_close(optimize_sigma(model, x, 0.3, steps=0), torch.full((3,), 0.3))
    with pytest.raises(ValueError, match="sigma0 must be > 0, got -0.1"):
        optimize_sigma(model, x, -0.1)
    with pytest.raises(ValueError, match="update must be one of .* got 'detach'"):
        optimize_sigma(model, x, 0.1, update="detach")
    with pytest.raises(ValueError, match="sigma_min <= sigma0 <= sigma_max"):
        optimize_sigma(model, x, 0.1, sigma_min=0.2)
