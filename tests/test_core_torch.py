"""The pure torch core: seeded noise, the SGA sigma optimiser, vote counting, member training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from art_certssbd.ensemble import StackedEnsemble, count_votes, vote
from art_certssbd.noise import PURPOSES, add_noise, derive_seed, gaussian, make_generator
from art_certssbd.sigma import optimize_sigma, radius_surrogate
from art_certssbd.training import init_member, optimizer_factory_from, train_members


# ----------------------------------------------------------------------------------------------------------- noise
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


# ----------------------------------------------------------------------------------------------------------- sigma
class Linear2(torch.nn.Module):
    """Two-class logits [0, w.x + b]: its smoothed probability is known in closed form."""

    def __init__(self, dim: int = 4):
        super().__init__()
        self.lin = torch.nn.Linear(dim, 1)
        with torch.no_grad():
            self.lin.weight.copy_(torch.linspace(-1.0, 2.0, dim).unsqueeze(0))
            self.lin.bias.fill_(0.1)

    def forward(self, x):
        z = self.lin(x.reshape(len(x), -1)) * 8.0  # sharp, nearly a hard linear classifier
        return torch.cat([torch.zeros_like(z), z], dim=1)


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


# ---------------------------------------------------------------------------------------------------------- votes
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


# ------------------------------------------------------------------------------------------------------- training
def test_init_member_is_seeded_and_isolated():
    template = Linear2()
    state = torch.random.get_rng_state().clone()
    a, b = init_member(template, 5), init_member(template, 5)
    c = init_member(template, 6)
    assert torch.equal(state, torch.random.get_rng_state())
    torch.testing.assert_close(a.lin.weight, b.lin.weight, rtol=0, atol=0)
    assert not torch.equal(a.lin.weight, c.lin.weight)


@pytest.mark.parametrize("noise", ["fixed", "fresh"])
def test_members_trained_alone_or_together_are_the_same(noise):
    x, y = torch.rand(64, 4), torch.randint(0, 2, (64,))
    sigma = torch.full((64,), 0.2)
    opt = torch.optim.SGD(Linear2().parameters(), lr=0.05, momentum=0.9)
    kw = dict(loss_fn=torch.nn.CrossEntropyLoss(), optimizer_factory=optimizer_factory_from(opt), random_state=1,
              nb_epochs=2, batch_size=16, noise=noise)  # fmt: skip
    together = train_members(Linear2(), x, y, sigma, [0, 1, 2], vectorize=True, **kw)
    alone = train_members(Linear2(), x, y, sigma, [2], vectorize=False, **kw)
    for name, tensor in alone[0].items():
        torch.testing.assert_close(together[2][name], tensor, rtol=1e-5, atol=1e-6)
    assert not torch.equal(together[0]["lin.weight"], together[1]["lin.weight"])


def test_train_members_refuses_unknown_noise():
    with pytest.raises(ValueError, match="noise must be one of .* got 'pink'"):
        train_members(Linear2(), torch.rand(4, 4), torch.zeros(4, dtype=torch.long), torch.ones(4), [0],
                      loss_fn=torch.nn.CrossEntropyLoss(), optimizer_factory=optimizer_factory_from(
                          torch.optim.SGD(Linear2().parameters(), lr=0.1)), random_state=0, nb_epochs=1,
                      batch_size=2, noise="pink")  # fmt: skip
