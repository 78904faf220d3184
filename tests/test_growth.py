"""The wave-grown ensemble (art_certssbd.growth and fit(..., growth=...)): the rule, the members it keeps, the bound
it needs, resume, save/load, and its soundness under the stopping rule by simulation."""

from __future__ import annotations

import functools
import inspect
import re

import numpy as np
import pytest
import torch
from helpers import digits_estimator
from scipy.stats import norm

from art_certssbd import RABEstimator
from art_certssbd.certification import certify_votes
from art_certssbd.datasets import load_digits
from art_certssbd.ensemble import StackedEnsemble, resolve_backend, vote
from art_certssbd.growth import Growth, check_growth, growth_rule
from art_certssbd.noise import derive_seed, fixed_test_noise
from art_certssbd.stats import ABSTAIN

SMALL = dict(scale=0.25, alpha=0.05, random_state=2, bound="anytime")


@pytest.fixture(scope="module")
def digits():
    x_train, y_train, x_test, y_test = load_digits(random_state=0)
    return x_train[:300], y_train[:300], x_test[:40], y_test[:40]


def test_the_rule_by_hand():
    def h(now, projected):
        return {"certified_accuracy": now, "projected_accuracy": projected}

    g = Growth(np.zeros((1, 1)), np.zeros(1), radius=0.1, tol=0.01, patience=2, target=0.95)
    assert not g.settled([]) and not g.settled([h(0.5, 0.505)])  # one settled wave: patience 2 not reached
    assert g.settled([h(0.2, 0.9), h(0.5, 0.505), h(0.8, 0.81)])  # two waves within 0.01 of the projection
    assert not g.settled([h(0.5, 0.505), h(0.8, 0.82)])
    assert g.settled([h(0.96, 0.99)])  # the target reached
    assert g.settled([h(0.95, 0.99)])  # reached exactly counts
    exact = Growth(np.zeros((1, 1)), np.zeros(1), radius=0.1, tol=0.25, patience=2)
    assert exact.settled([h(0.5, 0.75), h(0.5, 0.75)])  # a gap of exactly tol is settled (binary-exact values)
    assert not exact.settled([h(0.5, 0.75), h(0.25, 0.75)])
    assert Growth(np.zeros((1, 1)), np.zeros(1), radius=0.1, target=1.0).target == 1.0  # target 1 is allowed
    assert Growth(np.zeros((1, 1)), np.zeros(1), 0.0, wave_size=16).waves(40) == [16, 32, 40]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"wave_size": 0}, "wave_size must be an integer >= 1"),
        ({"tol": -1}, "tol must be a number >= 0"),
        ({"radius": -0.1}, "radius must be a number >= 0"),
        ({"target": 1.5}, r"target must be a certified accuracy in \(0, 1\]"),
        ({"patience": 0}, "patience must be an integer >= 1"),
        ({"radius": True}, "radius must be a number >= 0, got radius=True"),
        ({"tol": True}, "tol must be a number >= 0, got tol=True"),
        ({"target": 0.0}, "target must be a finite number > 0"),
        ({"x_val": np.zeros((3, 1))}, "x_val and y_val must hold the same positive number of samples, got 3 and 2"),
        ({"x_val": np.zeros((0, 1)), "y_val": np.zeros(0)}, "same positive number of samples, got 0 and 0"),
    ],
)
def test_bad_growth_settings_are_refused_naming_them(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Growth(**{"x_val": np.zeros((2, 1)), "y_val": np.zeros(2), "radius": 0.1, **kwargs})


def test_growth_stops_at_a_wave_and_keeps_the_members_of_a_fixed_fit(digits):
    """tol = 1 with patience 2 settles after two waves: 8 of 12 members, bitwise the members 0..7 of a fit with
    nb_models = 8."""
    x, y, xv, yv = digits
    grown = digits_estimator(nb_models=12, sigma_steps=0, **SMALL)
    grown.fit(x, y, nb_epochs=1, batch_size=50, growth=Growth(xv, yv, radius=0.1, wave_size=4, tol=1.0, patience=2))
    assert grown.ensemble_.nb_models == grown.nb_models_ == 8 and len(grown.test_noise_seeds_) == 8
    assert [h["nb_models"] for h in grown.growth_history_] == [4, 8]
    assert grown.sample_size == 8
    fixed = digits_estimator(nb_models=8, sigma_steps=0, **SMALL)
    fixed.fit(x, y, nb_epochs=1, batch_size=50)
    for k in range(8):
        for name, tensor in fixed.ensemble_.state_dict(k).items():
            assert torch.equal(grown.ensemble_.state_dict(k)[name], tensor)
    # the history's accuracy is the anytime certificate of the validation inputs with the members so far
    np.testing.assert_allclose(
        grown.growth_history_[-1]["certified_accuracy"],
        grown.certify(xv, return_details=True, update_memory=False).certified_accuracy(yv, [0.1])[0],
    )
    pred, _ = grown.certify(xv[:5])
    assert pred.shape == (5,)


def test_growth_runs_to_nb_models_when_never_settled(digits):
    x, y, xv, yv = digits
    est = digits_estimator(RABEstimator, nb_models=6, **SMALL)
    est.fit(x, y, nb_epochs=1, batch_size=50, growth=Growth(xv, yv, radius=0.1, wave_size=4, tol=-0.0, patience=5))
    assert est.nb_models_ == 6 and [h["nb_models"] for h in est.growth_history_] == [4]


def test_growth_needs_the_anytime_bound_and_keeps_it(digits, tmp_path):
    x, y, xv, yv = digits
    growth = Growth(xv, yv, radius=0.1, wave_size=2, tol=1.0, patience=2)
    est = digits_estimator(nb_models=6, sigma_steps=0, **{**SMALL, "bound": "clopper-pearson"})
    with pytest.raises(ValueError, match="growth needs bound='anytime', got bound='clopper-pearson'"):
        est.fit(x, y, nb_epochs=1, batch_size=50, growth=growth)
    assert not hasattr(est, "ensemble_")
    with pytest.raises(ValueError, match="growth.x_val"):
        digits_estimator(nb_models=6, **SMALL).fit(x, y, growth=Growth(xv[:, :, :4], yv, radius=0.1))
    grown = digits_estimator(nb_models=6, sigma_steps=0, **SMALL)
    grown.fit(x, y, nb_epochs=1, batch_size=50, growth=growth, checkpoint_dir=tmp_path / "ck")
    assert grown.nb_models_ == 4
    grown.set_params(bound="clopper-pearson")
    with pytest.raises(ValueError, match="only bound='anytime' certifies it"):
        grown.certify(xv)
    grown.set_params(bound="anytime")
    grown.save_ensemble(tmp_path / "saved")
    loader = digits_estimator(nb_models=6, sigma_steps=0, **{**SMALL, "bound": "hoeffding"})
    with pytest.raises(ValueError, match="holds 4 of nb_models=6 members"):
        loader.load_ensemble(tmp_path / "saved")
    loader.set_params(bound="anytime")
    loader.load_ensemble(tmp_path / "saved")
    assert loader.nb_models_ == 4
    np.testing.assert_array_equal(loader.certify(xv)[1], grown.certify(xv, update_memory=False)[1])
    # a resume from the checkpoint replays the rule and trains nothing new: the same members
    again = digits_estimator(nb_models=6, sigma_steps=0, **SMALL)
    again.fit(x, y, nb_epochs=1, batch_size=50, growth=growth, checkpoint_dir=tmp_path / "ck")
    assert again.nb_models_ == 4 and again.growth_history_ == grown.growth_history_


def test_an_interrupted_grown_fit_resumes_its_waves(digits, tmp_path, monkeypatch):
    """Ctrl-C in the second wave, after one of its members was saved: the restart trains only the missing members
    of that wave, replays the rule, stops where the uninterrupted fit stopped, with the same members and history."""
    from art_certssbd import pipeline

    x, y, xv, yv = digits
    growth = Growth(xv, yv, radius=0.1, wave_size=2, tol=1.0, patience=2)
    reference = digits_estimator(nb_models=8, sigma_steps=0, **SMALL)
    reference.fit(x, y, nb_epochs=1, batch_size=50, growth=growth)
    assert reference.nb_models_ == 4
    trained, original = [], pipeline._train_here

    def interrupted(template, x, y, sigma, members, **kwargs):
        for k, state in original(template, x, y, sigma, members, **kwargs):
            if len(trained) == 3:
                raise KeyboardInterrupt
            trained.append(k)
            yield k, state

    monkeypatch.setattr(pipeline, "_train_here", interrupted)
    est = digits_estimator(nb_models=8, sigma_steps=0, **SMALL)
    with pytest.raises(KeyboardInterrupt):
        est.fit(x, y, nb_epochs=1, batch_size=50, growth=growth, checkpoint_dir=tmp_path / "ck")
    assert trained == [0, 1, 2] and not hasattr(est, "ensemble_")
    resumed_members = []

    def recorded(template, x, y, sigma, members, **kwargs):
        resumed_members.append(list(members))
        return original(template, x, y, sigma, members, **kwargs)

    monkeypatch.setattr(pipeline, "_train_here", recorded)
    est.fit(x, y, nb_epochs=1, batch_size=50, growth=growth, checkpoint_dir=tmp_path / "ck")
    assert resumed_members == [[3]]  # only the missing member of the second wave
    assert est.nb_models_ == 4 and est.growth_history_ == reference.growth_history_
    for k in range(4):
        for name, tensor in reference.ensemble_.state_dict(k).items():
            assert torch.equal(est.ensemble_.state_dict(k)[name], tensor), (k, name)


def test_certificates_after_a_vote_driven_stop_err_at_most_alpha():
    """Simulation with known p_A: members vote on one input with probability p_A = Phi(r / sigma) - 0.01 (its true
    radius is just below r, so certifying r is wrong); the ensemble grows in waves of 2 up to 400 members and stops as
    soon as that input looks certified (the worst rule: the validation input is the test input). With the anytime
    bound the wrong-certificate rate stays below alpha; with Clopper-Pearson at the stopped size it does not."""
    rng = np.random.default_rng(0)
    alpha, sigma, r, trials, max_members, wave = 0.1, 1.0, 0.5, 3000, 400, 2
    p = norm.cdf(r / sigma) - 0.01
    k = np.cumsum(rng.random((trials, max_members)) < p, axis=1)
    rate = {}
    for bound in ("anytime", "clopper-pearson"):
        stopped_wrong = np.zeros(trials, dtype=bool)
        for size in range(wave, max_members + 1, wave):
            counts = np.stack([k[:, size - 1], size - k[:, size - 1]], axis=1)
            result = certify_votes(counts, sigma, alpha=alpha, bound=bound)
            stopped_wrong |= (result.pred != ABSTAIN) & (result.radius >= r)
        rate[bound] = stopped_wrong.mean()
    slack = 3 * np.sqrt(alpha * (1 - alpha) / trials)
    assert rate["anytime"] <= alpha + slack, rate
    assert rate["clopper-pearson"] > 1.5 * alpha, rate  # a fixed-n bound at a vote-driven size: the test can fail


# --- check_growth and growth_rule on small hand-made inputs (mutation testing: the wiring of the rule) -------------


def test_check_growth_converts_the_validation_set_and_keeps_the_rule():
    x = np.array([[[0.0, 0.5]], [[1.0, 0.25]]], dtype=np.float64)  # input_shape (1, 2)
    growth = Growth(x, np.array([[0, 1, 0], [1, 0, 0]]), radius=0.3, wave_size=3, tol=0.02, patience=4, target=0.9,
                    conservative=True)  # fmt: skip
    checked = check_growth(growth, "anytime", (1, 2), (0.0, 1.0), 3)
    assert checked.x_val.dtype == np.float32 and np.array_equal(checked.x_val, x)  # check_inputs' float32 copy
    assert checked.y_val.dtype == np.int64 and checked.y_val.tolist() == [1, 0]  # one-hot rows as class indices
    assert (checked.radius, checked.wave_size, checked.tol, checked.patience, checked.target, checked.conservative) == (
        0.3, 3, 0.02, 4, 0.9, True)  # fmt: skip
    assert growth.x_val.dtype == np.float64 and growth.y_val.ndim == 2  # the user's Growth is left as it was
    assert check_growth(None, "hoeffding", (1, 2), None, 3) is None


def test_check_growth_refuses_naming_the_parameter():
    x, y = np.array([[0.0, 0.5], [1.0, 0.25]]), np.array([0, 2])
    with pytest.raises(ValueError, match=r"^growth must be a Growth or None, got int$"):
        check_growth(5, "anytime", (2,), None, 3)
    message = (
        "growth needs bound='anytime', got bound='hoeffding': the ensemble's size then depends on its votes, and only "
        "a confidence sequence certifies at such a stopping time"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        check_growth(Growth(x, y, radius=0.1), "hoeffding", (2,), None, 3)
    with pytest.raises(ValueError, match=r"^growth\.x_val has values outside clip_values=\(0\.0, 1\.0\): min 0\.0, "):
        check_growth(Growth(x * 2, y, radius=0.1), "anytime", (2,), (0.0, 1.0), 3)
    with pytest.raises(ValueError, match=r"^growth\.x_val must have shape \(N, 3\)"):
        check_growth(Growth(x, y, radius=0.1), "anytime", (3,), None, 3)
    with pytest.raises(ValueError, match=r"^growth\.y_val has labels outside \[0, 1\] \(nb_classes=2\): \[2\]$"):
        check_growth(Growth(x, y, radius=0.1), "anytime", (2,), (0.0, 1.0), 2)


def _linear_members(nb_models):
    """A 2-input, 3-class linear template and ``nb_models`` member states around one separating weight."""
    generator = torch.Generator().manual_seed(1)
    weight = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, -2.0]])
    states = [
        {"weight": weight + 0.5 * torch.randn(3, 2, generator=generator),
         "bias": 0.2 * torch.randn(3, generator=generator)}
        for _ in range(nb_models)
    ]  # fmt: skip
    return torch.nn.Linear(2, 3), states


class _Search:
    """Stands in for the sigma optimiser (:class:`~art_certssbd.execution.SigmaSearch`): records its calls and
    returns fixed per-input sigmas."""

    def __init__(self, sigma):
        self.sigma, self.calls = sigma, []

    def run(self, model, x, random_state, verbose=False):
        self.calls.append({"model": model, "x": x, "random_state": random_state, "verbose": verbose})
        return self.sigma.clone()


class _States:
    """Member states by index that records which members are read (a lazy loader's view)."""

    def __init__(self, states):
        self.states, self.read = states, []

    def __getitem__(self, k):
        self.read.append(k)
        return self.states[k]


@pytest.mark.parametrize("vectorize, conservative, noise_copies", [(True, True, 2), (False, False, 1)])
def test_the_growth_rule_certifies_the_votes_of_the_members_so_far(monkeypatch, caplog, vectorize, conservative,
                                                                    noise_copies):  # fmt: skip
    """After each wave the history holds the anytime certificate (alpha, the training sigmas' minimum, the noise copies,
    the watched radius and radius kind) of the validation votes of members 0 .. size-1 with their own test noise
    (derive_seed(random_state, "test_noise", k)), and of those votes scaled to nb_models; checked against vote and
    certify_votes called here on the whole ensemble so far."""
    from art_certssbd import growth as growth_module

    nb_models, rs, alpha, radius, device = 60, 7, 0.1, 0.1, torch.device("cpu")
    template, states = _linear_members(nb_models)
    x_val = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0], [0.6, 0.5], [0.3, 0.1], [0.1, 0.3], [1.5, 0.2],
                      [-0.3, -0.2], [0.2, 1.2], [0.0, 0.0]], dtype=np.float32)  # fmt: skip
    y_val = np.array([0, 1, 2, 0, 0, 1, 0, 2, 1, 0])
    sigma, train_sigma = torch.linspace(0.2, 0.8, 10), torch.tensor([0.5, 0.15, 0.9])
    growth = Growth(x_val, y_val, radius=radius, wave_size=20, tol=0.1, patience=2, conservative=conservative)
    sizes = growth.waves(nb_models)
    assert sizes == [20, 40, 60]

    # the reference: each wave's votes are those of the whole ensemble so far, in one call
    seeds = [derive_seed(rs, "test_noise", k) for k in range(nb_models)]
    sigma64 = sigma.double().numpy()
    sigma_min = float(np.float32(0.15))  # the smallest training sigma, as float32 holds it

    def reference_accuracy(counts):
        result = certify_votes(counts, sigma64, alpha=alpha, bound="anytime", train_sigma_min=sigma_min,
                               noise_copies=noise_copies)  # fmt: skip
        return float(result.certified_accuracy(y_val, [radius], conservative)[0]), result

    expected_counts, expected = [], []
    for size in sizes:
        members = StackedEnsemble.from_state_dicts(template, states[:size])
        own_noise = functools.partial(fixed_test_noise, seeds, device=device)
        counts = vote(members, torch.from_numpy(x_val), sigma, own_noise, 3).numpy()
        scaled = np.round(counts * nb_models / size).astype(np.int64)
        (now, result), (projected, _) = reference_accuracy(counts), reference_accuracy(scaled)
        expected_counts += [counts, scaled]
        expected.append({"nb_models": size, "certified_accuracy": now, "projected_accuracy": projected})
        if size == 20:  # the case tells the settings apart: a wrong radius, radius kind or bound changes the history
            assert now != float(result.certified_accuracy(y_val, [0.0], conservative)[0])
            if conservative:
                assert now != float(result.certified_accuracy(y_val, [radius], False)[0])
    assert expected[0]["certified_accuracy"] != expected[0]["projected_accuracy"]

    # what the rule hands on: recorded on the way, passed through unchanged
    certified, noise_devices, backends, moved = [], [], [], []

    def certify_spy(counts, sigma, **kwargs):
        certified.append((np.array(counts), np.array(sigma), kwargs))
        return certify_votes(counts, sigma, **kwargs)

    def noise_spy(seeds, members, draws, shape, device):
        noise_devices.append((list(seeds), device))
        return fixed_test_noise(seeds, members, draws, shape, device)

    def vote_spy(*args, **kwargs):
        call = inspect.signature(vote).bind(*args, **kwargs)
        call.apply_defaults()
        backends.append((call.arguments["backend"], call.arguments["vectorize"]))
        return vote(*args, **kwargs)

    def to_spy(self, target):
        moved.append(target)
        return original_to(self, target)

    original_to = StackedEnsemble.to
    monkeypatch.setattr(growth_module, "certify_votes", certify_spy)
    monkeypatch.setattr(growth_module, "fixed_test_noise", noise_spy)
    monkeypatch.setattr(growth_module, "vote", vote_spy)
    monkeypatch.setattr(StackedEnsemble, "to", to_spy)

    search, lazy, history, base = _Search(sigma), _States(states), [], torch.nn.Linear(2, 3)
    stop = growth_rule(growth, template=template, device=device, random_state=rs, nb_models=nb_models, search=search,
                       nb_classes=3, draws_per_model=1, vectorize=vectorize, alpha=alpha, noise_copies=noise_copies,
                       history=history)  # fmt: skip
    with caplog.at_level("INFO", logger="art_certssbd.growth"):
        decisions = [stop(base, train_sigma, lazy, size) for size in sizes]

    assert history == expected
    assert decisions == [growth.settled(expected[: i + 1]) for i in range(len(sizes))] == [False, False, True]
    assert caplog.messages == [
        f"Growth: {h['nb_models']} members, certified accuracy {h['certified_accuracy']:.4f} at r = 0.1 (projected at "
        f"60: {h['projected_accuracy']:.4f})."
        for h in expected
    ]
    # each member is read once, in its wave; the validation sigma is searched once, with the base model and its seed
    assert lazy.read == list(range(nb_models))
    assert len(search.calls) == 1 and search.calls[0]["model"] is base and not search.calls[0]["verbose"]
    assert torch.equal(search.calls[0]["x"], torch.from_numpy(x_val))
    assert search.calls[0]["random_state"] == derive_seed(rs, "sigma_test")
    # the votes certified, the sigmas and the certificate's options
    assert len(certified) == 2 * len(sizes)
    for (counts, sigma_seen, kwargs), reference in zip(certified, expected_counts, strict=True):
        np.testing.assert_array_equal(counts, reference)
        assert sigma_seen.dtype == np.float64 and np.array_equal(sigma_seen, sigma64)
        assert kwargs == {"alpha": alpha, "bound": "anytime", "train_sigma_min": sigma_min,
                          "noise_copies": noise_copies}  # fmt: skip
    # the members' own test noise on the rule's device, the blocks on that device, the backend vectorize chooses
    assert noise_devices and all(s == seeds and d == device for s, d in noise_devices)
    assert moved == [device] * len(sizes)
    assert [resolve_backend(b, device, v) for b, v in backends] == ["sequential" if vectorize else "loop"] * len(sizes)


def test_the_growth_rule_sends_the_validation_inputs_to_its_device():
    """The validation inputs reach the sigma search on ``device`` (the meta device: any device other than numpy's)."""

    class Searched(Exception):
        pass

    seen = []

    class Search:
        def run(self, model, x, random_state, verbose=False):
            seen.append(x.device)
            raise Searched

    template, _ = _linear_members(1)
    growth = Growth(np.zeros((2, 2), dtype=np.float32), np.zeros(2, dtype=np.int64), radius=0.1)
    stop = growth_rule(growth, template=template, device=torch.device("meta"), random_state=0, nb_models=2,
                       search=Search(), nb_classes=3, draws_per_model=1, vectorize=True, alpha=0.1, noise_copies=1,
                       history=[])  # fmt: skip
    with pytest.raises(Searched):
        stop(template, torch.ones(2), [], 1)
    assert seen == [torch.device("meta")]
