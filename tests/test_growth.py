"""The wave-grown ensemble (art_certssbd.growth and fit(..., growth=...)): the rule, the members it keeps, the bound
it needs, resume, save/load, and its soundness under the stopping rule by simulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import digits_estimator
from scipy.stats import norm

from art_certssbd import RABEstimator
from art_certssbd.certification import certify_votes
from art_certssbd.datasets import load_digits
from art_certssbd.growth import Growth
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
