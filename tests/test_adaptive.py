"""Adaptive certification: the schedule, the error guarantee in simulation, agreement with the fixed-n certificate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import digits_estimator
from scipy.stats import binom

from art_certssbd import RABEstimator, stats
from art_certssbd.adaptive import (
    AdaptiveResult,
    bernoulli_draw,
    look_schedule,
    run_sequential,
    spending_levels,
    threshold_probability,
)
from art_certssbd.datasets import load_digits

LOOKS = look_schedule(1000)


def _max_rate(alpha: float, size: int) -> float:
    """The largest error rate a procedure with true rate ``alpha`` shows in ``size`` runs, except with prob. 1e-6."""
    return binom.ppf(1 - 1e-6, size, alpha) / size


def test_look_schedule_and_levels():
    np.testing.assert_array_equal(LOOKS, [32, 64, 128, 256, 512, 1000])
    np.testing.assert_array_equal(look_schedule(10, first=4, growth=1.5), [4, 6, 9, 10])
    np.testing.assert_array_equal(look_schedule(5, first=8), [5])
    assert spending_levels(0.01, 4).sum() == pytest.approx(0.01)
    half = spending_levels(0.01, 5, "final-half")
    assert half[-1] == pytest.approx(0.005) and half.sum() == pytest.approx(0.01)
    np.testing.assert_allclose(spending_levels(0.1, 2, [1, 3]), [0.025, 0.075])
    with pytest.raises(ValueError, match="growth must be > 1"):
        look_schedule(100, growth=1.0)
    with pytest.raises(ValueError, match="spending must be one of"):
        spending_levels(0.1, 3, "pocock")
    with pytest.raises(ValueError, match="spending weights must be 3"):
        spending_levels(0.1, 3, [1, 1])
    with pytest.raises(ValueError, match="radius must be a finite number >= 0"):
        run_sequential(bernoulli_draw([0.9]), 1, 1.0, -0.5, 0.1, LOOKS)


def test_threshold_is_the_radius_rule():
    sigma = np.array([0.1, 0.5, 2.0])
    p_r = threshold_probability(0.3, sigma)
    np.testing.assert_allclose(stats.radius(p_r, sigma), 0.3)


@pytest.mark.parametrize("radius, sigma", [(0.0, 1.0), (0.5, 1.0), (1.0, 0.5)])
def test_error_rate_at_most_alpha_at_the_worst_case_probability(radius, sigma):
    # class 1 has p just below p_r: certifying it is the error the guarantee bounds.
    alpha, size = 0.05, 20000
    p_r = float(threshold_probability(radius, sigma))
    res = run_sequential(
        bernoulli_draw(np.full(size, p_r - 1e-9), seed=11), size, sigma, radius, alpha, LOOKS, futility_alpha=None
    )
    errors = np.mean(res.certified & (res.pred == 1))
    assert errors <= _max_rate(alpha, size)
    if radius > 0:  # class 0 has p = 1 - p_r < 1/2 < p_r: any certification at all is an error
        assert np.mean(res.certified) <= _max_rate(alpha, size)


@pytest.mark.parametrize("looks", [LOOKS, [1000]])
def test_a_tie_is_certified_for_either_class_at_most_at_rate_alpha(looks):
    # r = 0 and p = 1/2 for both classes: certifying *either* class is an error. Bounding the top class at the full
    # alpha (the rule before the alpha / 2 correction) certifies one of the two with probability close to 2 alpha.
    alpha, size = 0.05, 20000
    res = run_sequential(bernoulli_draw(np.full(size, 0.5), seed=13), size, 1.0, 0.0, alpha, looks, futility_alpha=None)
    assert np.mean(res.certified) <= _max_rate(alpha, size)
    assert np.mean(res.certified) > _max_rate(alpha / 4, size)  # the simulation has power: the tie does get certified
    if len(looks) == 1:  # with one look the union bound is tight, and the uncorrected rule fails: 2 alpha spent
        full = run_sequential(
            bernoulli_draw(np.full(size, 0.5), seed=13), size, 1.0, 0.0, 2 * alpha, looks, futility_alpha=None
        )
        assert np.mean(full.certified) > _max_rate(alpha, size)  # what the correction prevents


def test_peeking_without_spending_breaks_the_bound():
    # the check above can fail: testing every look at the full alpha (no spending) exceeds alpha.
    alpha, size = 0.05, 20000
    p_r = float(threshold_probability(0.5, 1.0))
    draw = bernoulli_draw(np.full(size, p_r - 1e-9), seed=5)
    res = run_sequential(draw, size, 1.0, 0.5, 2 * alpha * len(LOOKS), LOOKS, futility_alpha=None)  # alpha per look
    assert np.mean(res.certified) > _max_rate(alpha, size)


@pytest.mark.slow
@pytest.mark.parametrize("spending", ["uniform", "final-half"])
@pytest.mark.parametrize("radius, sigma", [(0.0, 1.0), (0.25, 0.12), (0.5, 1.0), (1.0, 0.5)])
def test_error_rate_large_simulation(spending, radius, sigma):
    alpha, size = 0.01, 400000
    p_r = float(threshold_probability(radius, sigma))
    for p in (p_r - 1e-9, p_r - 0.01):
        res = run_sequential(
            bernoulli_draw(np.full(size, p), seed=7), size, sigma, radius, alpha, LOOKS, spending=spending
        )
        assert np.mean(res.certified & (res.pred == 1)) <= _max_rate(alpha, size)


def _fixed_certified(p, radius, sigma, alpha, n=1000, seed=0):
    k = np.random.default_rng(seed).binomial(n, p)
    pred, rad, _ = stats.certify_counts(np.stack([n - k, k], axis=1), sigma, alpha / 2)  # as the estimators do
    return (pred != stats.ABSTAIN) & (rad >= radius), pred


def test_clear_cases_same_decision_as_fixed_with_far_fewer_votes():
    size, alpha, sigma = 400, 1e-3, 0.5
    p = np.concatenate([np.full(size // 2, 0.999), np.full(size // 4, 0.75), np.full(size // 4, 0.001)])
    for radius in (0.0, 0.5):
        res = run_sequential(bernoulli_draw(p, seed=1), size, sigma, radius, alpha, LOOKS)
        fixed, fixed_pred = _fixed_certified(p, radius, sigma, alpha)
        np.testing.assert_array_equal(res.certified, fixed)
        np.testing.assert_array_equal(res.pred[res.certified], fixed_pred[fixed])
        assert res.total_votes <= size * 1000 / 3
        assert np.all(res.radius_bound[res.certified] >= radius)
        assert np.all(res.votes_used == LOOKS[res.decided_at])


def test_single_look_is_the_fixed_certificate():
    p = np.random.default_rng(0).uniform(0.3, 1.0, 300)
    draw = bernoulli_draw(p, seed=2)
    res = run_sequential(draw, 300, 0.4, 0.2, 0.01, [1000])
    counts = res.counts
    pred, rad, low = stats.certify_counts(counts, 0.4, 0.005)  # alpha / 2: the class is chosen on the same votes
    np.testing.assert_array_equal(res.certified, (pred != stats.ABSTAIN) & (rad >= 0.2))
    np.testing.assert_allclose(res.p_a_lower, low)
    assert res.total_votes == 300 * 1000


@pytest.fixture(scope="module")
def estimator():
    x_train, y_train, x_test, y_test = load_digits(random_state=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small kernels: one thread is fastest, and robust to a busy machine
    est = digits_estimator(RABEstimator, lr=1e-2, nb_models=48, scale=0.1, alpha=0.01, random_state=1)
    try:
        est.fit(x_train[:500], y_train[:500], nb_epochs=4, batch_size=32)
        yield est, x_test[:80], y_test[:80]
    finally:
        torch.set_num_threads(threads)


def test_estimator_single_look_equals_certify(estimator):
    est, x, _ = estimator
    fixed = est.certify(x, return_details=True)
    res = est.certify_adaptive(x, 0.1, looks=[48])
    assert isinstance(res, AdaptiveResult)
    np.testing.assert_array_equal(res.counts, fixed.votes)
    np.testing.assert_array_equal(res.certified, (fixed.pred != -1) & (fixed.radius >= 0.1))
    np.testing.assert_array_equal(res.pred[res.certified], fixed.pred[res.certified])


def test_estimator_adaptive_saves_votes_and_agrees_on_clear_inputs(estimator):
    est, x, _ = estimator
    fixed = est.certify(x, return_details=True)
    res = est.certify_adaptive(x, 0.0, first_look=6, growth=2.0)
    np.testing.assert_array_equal(res.looks, [6, 12, 24, 48])
    assert res.total_votes < 0.6 * len(x) * 48
    assert np.mean(res.certified == (fixed.pred != -1)) >= 0.9
    # unanimous inputs are certified, for the same class, from the first 12 votes
    clear = fixed.votes.max(axis=1) == 48
    assert clear.sum() >= 20
    assert np.all(res.certified[clear])
    np.testing.assert_array_equal(res.pred[clear], fixed.pred[clear])
    assert np.all(res.votes_used[clear] <= 12)
