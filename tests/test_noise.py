"""Seeded noise (``art_certssbd.noise``): derived seeds, Gaussian draws, per-sample sigma."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from art_certssbd.noise import PURPOSES, add_noise, derive_seed, gaussian, make_generator


def test_derived_seeds_are_reproducible_and_distinct():
    assert derive_seed(0, "init", 3) == derive_seed(0, "init", 3)
    seeds = {derive_seed(s, p, k) for s in range(3) for p in PURPOSES for k in range(5)}
    assert len(seeds) == 3 * len(PURPOSES) * 5  # seed 0 / member 1 differs from seed 1 / member 0, etc.
    with pytest.raises(ValueError, match="purpose must be one of .* got 'bogus'"):
        derive_seed(0, "bogus")


def test_noise_is_reproducible_and_standard_normal():
    a = gaussian((20000,), make_generator(derive_seed(7, "test_noise", 2)))
    b = gaussian((20000,), make_generator(derive_seed(7, "test_noise", 2)))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # mean and variance within 5 standard errors of N(0, 1)
    assert abs(a.mean().item()) < 5 / np.sqrt(20000)
    assert abs(a.var().item() - 1) < 5 * np.sqrt(2 / 20000)


def test_noise_does_not_touch_global_generators():
    state = torch.random.get_rng_state().clone()
    gaussian((100,), make_generator(1))
    assert torch.equal(state, torch.random.get_rng_state())


def test_add_noise_per_sample_sigma():
    x = torch.zeros(3, 1, 2, 2)
    eps = torch.ones(3, 1, 2, 2)
    out = add_noise(x, torch.tensor([0.1, 0.2, 0.3]), eps)
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(add_noise(x, 0.5, eps), torch.full_like(x, 0.5))
