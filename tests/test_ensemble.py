"""Vote counting and the stacked ensemble (``art_certssbd.ensemble``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import Linear2

from art_certssbd.ensemble import StackedEnsemble, count_votes, vote
from art_certssbd.noise import derive_seed, gaussian, make_generator
from art_certssbd.training import init_member


def test_count_votes_matches_a_python_count():
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 4, size=(37, 11))
    counts = count_votes(torch.from_numpy(pred), 4).numpy()
    expected = np.array([[np.sum(pred[:, i] == c) for c in range(4)] for i in range(11)])
    np.testing.assert_array_equal(counts, expected)


def _ensemble(m=5):
    modules = []
    for k in range(m):
        modules.append(init_member(Linear2(), derive_seed(0, "init", k)))
    return StackedEnsemble.from_modules(modules)


def _noise(members, draws, shape):
    return torch.stack([gaussian((draws, *shape), make_generator(derive_seed(0, "test_noise", k))) for k in members])


def test_vote_vectorised_equals_loop_and_respects_nb_votes():
    ens = _ensemble(5)
    x = torch.rand(7, 4)
    sigma = torch.full((7,), 0.3)
    a = vote(ens, x, sigma, _noise, 2, draws_per_model=3)
    b = vote(ens, x, sigma, _noise, 2, draws_per_model=3, vectorize=False, batch_size=2, max_images_per_pass=7)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert torch.all(a.sum(1) == 15)
    c = vote(ens, x, sigma, _noise, 2, draws_per_model=3, nb_votes=7)
    assert torch.all(c.sum(1) == 7)
    soft = vote(ens, x, sigma, _noise, 2, draws_per_model=3, soft=True)
    torch.testing.assert_close(soft.sum(1), torch.full((7,), 15.0, dtype=torch.float64))
    with pytest.raises(ValueError, match="nb_votes must be in \\[1, 15\\]"):
        vote(ens, x, sigma, _noise, 2, draws_per_model=3, nb_votes=16)


def test_vote_equals_members_applied_one_by_one():
    ens = _ensemble(4)
    x = torch.rand(6, 4)
    sigma = torch.linspace(0.1, 0.6, 6)
    counts = vote(ens, x, sigma, _noise, 2).numpy()
    expected = np.zeros((6, 2), dtype=np.int64)
    for k in range(4):
        e = _noise([k], 1, (4,))[0, 0]
        with torch.no_grad():
            pred = ens.member(k)(x + sigma[:, None] * e).argmax(1).numpy()
        expected[np.arange(6), pred] += 1
    np.testing.assert_array_equal(counts, expected)


def test_vote_refuses_wrong_number_of_classes():
    with pytest.raises(ValueError, match="expected nb_classes=3"):
        vote(_ensemble(2), torch.rand(2, 4), torch.full((2,), 0.2), _noise, 3)
