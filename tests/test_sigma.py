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
    sigma = optimize_sigma(model, x, 0.2, steps=40, lr=0.02, n_samples=64, sigma_min=0.1, sigma_max=0.6, random_state=0)
    assert torch.all(sigma >= 0.1) and torch.all(sigma <= 0.6)
    before = _true_surrogate(model, x, torch.full((12,), 0.2))
    after = _true_surrogate(model, x, sigma)
    assert np.mean(after) > np.mean(before)
    assert np.mean(after >= before - 1e-3) >= 0.75


def test_sga_reference_update_never_decreases_sigma():
    model = Linear2()
    x = torch.rand(10, 4)
    sigma = optimize_sigma(model, x, 0.2, steps=10, lr=0.01, n_samples=8, update="reference", random_state=1)
    assert torch.all(sigma >= 0.2)
    assert torch.all(sigma > 0.2)  # gap > 0 whenever p1 > p2, so every sample grows


def test_sga_leaves_the_model_untouched_and_is_batch_independent():
    model = Linear2().train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(9, 4)
    full = optimize_sigma(model, x, 0.2, steps=5, n_samples=8, random_state=3, batch_size=4)
    part = optimize_sigma(model, x[5:], 0.2, steps=5, n_samples=8, random_state=3, batch_size=2)
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


# ------------------------------------------------------------------------------------------- early stopping (#16)
class _Tally:
    """Counts shared with the channels-last copy ``optimize_sigma`` makes of a module (deepcopy returns it)."""

    def __init__(self):
        self.calls, self.rows = 0, 0

    def __deepcopy__(self, memo):
        return self


class _Counting(torch.nn.Module):
    """Wraps a model and counts the noisy images (rows) it is given."""

    def __init__(self, net):
        super().__init__()
        self.net, self.tally = net, _Tally()

    def forward(self, x):
        self.tally.calls += 1
        self.tally.rows += x.shape[0]
        return self.net(x)


def _sga_reference(model, x, sigma0, steps, lr, n_samples, sigma_min, sigma_max, random_state):
    """Today's full-length SGA written out (one batch, every sample runs every step): the bitwise reference."""
    from art_certssbd.noise import add_noise, sigma_noise

    eps = sigma_noise(random_state, steps, n_samples, x.shape[1:], x.device, x.dtype)
    s = torch.full((x.shape[0],), float(sigma0))
    for eps_t in eps:
        s = s.detach().requires_grad_(True)
        noisy = add_noise(x.unsqueeze(1), s, eps_t.unsqueeze(0))
        logits = model(noisy.reshape((x.shape[0] * n_samples,) + tuple(x.shape[1:])))
        probs = torch.softmax(logits, dim=-1).reshape(x.shape[0], n_samples, -1).mean(dim=1)
        (grad,) = torch.autograd.grad(radius_surrogate(probs, s)[0].sum(), s)
        s = (s.detach() + lr * grad).clamp(sigma_min, sigma_max)
    return s.detach()


def test_early_stop_off_is_bitwise_todays_run():
    model, x = Linear2(), torch.rand(11, 4)
    kw = dict(steps=12, lr=0.02, n_samples=8, sigma_min=0.1, sigma_max=0.5, random_state=4)
    ref = _sga_reference(model, x, 0.2, **kw)
    assert torch.equal(optimize_sigma(model, x, 0.2, batch_size=11, **kw), ref)
    off = optimize_sigma(model, x, 0.2, batch_size=11, early_stop=False, tol=0.5, patience=1, **kw)
    assert torch.equal(off, ref)  # tol and patience are ignored when early stopping is off


def test_early_stop_pinned_samples_stop_and_save_passes():
    # The reference update never decreases sigma: with a big step every sample reaches sigma_max within two steps,
    # and staying there is exact, so the early-stopped sigmas equal the full run's.
    x, steps, n_samples = torch.rand(10, 4), 30, 8
    kw = dict(steps=steps, lr=0.2, n_samples=n_samples, sigma_max=0.3, update="reference", random_state=5, batch_size=4)
    full_model, es_model = _Counting(Linear2()), _Counting(Linear2())
    full = optimize_sigma(full_model, x, 0.2, **kw)
    es = optimize_sigma(es_model, x, 0.2, early_stop=True, tol=0.0, patience=2, **kw)
    assert torch.equal(es, full) and torch.all(full == 0.3)
    assert full_model.tally.rows == 10 * steps * n_samples
    # each sample: at most 2 steps to reach the bound, then 2 held steps (patience) -> at most 4 steps of 30
    assert es_model.tally.rows <= 10 * 4 * n_samples
    assert es_model.tally.calls < full_model.tally.calls


def test_early_stop_result_does_not_depend_on_the_batch():
    model, x = Linear2(), torch.rand(9, 4)
    kw = dict(steps=15, lr=0.03, n_samples=8, sigma_min=0.1, sigma_max=0.4, random_state=6, early_stop=True, tol=0.05)
    alone = torch.stack([optimize_sigma(model, x[i : i + 1], 0.2, batch_size=1, **kw)[0] for i in range(9)])
    pooled = optimize_sigma(model, x, 0.2, batch_size=5, **kw)  # refills mix samples at different steps
    part = optimize_sigma(model, x[3:], 0.2, batch_size=3, **kw)
    torch.testing.assert_close(pooled, alone)
    torch.testing.assert_close(part, alone[3:])
    assert torch.all(pooled >= 0.1) and torch.all(pooled <= 0.4)
    # with a patience no sample reaches, the pool runs every step: today's result up to float rounding
    torch.testing.assert_close(
        optimize_sigma(model, x, 0.2, batch_size=5, **{**kw, "patience": 100}),
        optimize_sigma(model, x, 0.2, batch_size=5, **{**kw, "early_stop": False}),
    )


def test_early_stop_is_within_tolerance_of_the_full_run_on_digits(one_thread):
    from art_certssbd.datasets import load_digits
    from art_certssbd.models import DigitsCNN
    from art_certssbd.training import fit_model

    x_train, y_train, _, _ = load_digits()
    x, y = torch.from_numpy(x_train[:160]), torch.from_numpy(y_train[:160])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = DigitsCNN(10)
    fit_model(
        net, x, y, 0.25, loss_fn=torch.nn.CrossEntropyLoss(), optimizer=torch.optim.Adam(net.parameters(), lr=3e-3),
        random_state=1, nb_epochs=2, batch_size=32,
    )  # fmt: skip
    full_model, es_model = _Counting(net), _Counting(net)
    x = x[:64]
    full = optimize_sigma(full_model, x, 0.25, steps=20, random_state=2)
    es = optimize_sigma(es_model, x, 0.25, steps=20, random_state=2, early_stop=True)
    assert torch.all(es >= 0.25) and torch.all(es <= 1.0)
    diff = (es - full).abs()
    # the stated tolerance (docs/method.md): mean |d sigma| <= 0.01 sigma0, max |d sigma| <= 0.15 sigma0
    assert float(diff.mean()) <= 0.01 * 0.25 and float(diff.max()) <= 0.15 * 0.25, (diff.mean(), diff.max())
    assert es_model.tally.rows < full_model.tally.rows


def test_early_stop_bad_arguments():
    model, x = Linear2(), torch.rand(3, 4)
    with pytest.raises(ValueError, match="early_stop must be True or False, got 'yes'"):
        optimize_sigma(model, x, 0.1, early_stop="yes")
    with pytest.raises(ValueError, match="tol must be >= 0, got -0.1"):
        optimize_sigma(model, x, 0.1, early_stop=True, tol=-0.1)
    with pytest.raises(ValueError, match="patience must be an int >= 1, got 0"):
        optimize_sigma(model, x, 0.1, early_stop=True, patience=0)
