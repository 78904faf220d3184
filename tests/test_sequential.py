"""The sequential test (art_certssbd.sequential): the schedule, the error guarantee in simulation (independent votes,
and members whose draws vote alike), agreement with the fixed-n certificate, refused options. Numpy only: fast."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, norm
from simulation import bernoulli_draw, member_draw

from art_certssbd import certification, stats
from art_certssbd.sequential import (
    AdaptiveResult,
    look_schedule,
    run_sequential,
    spending_levels,
    threshold_probability,
)

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


@pytest.mark.parametrize("weights", [[0, 1, 1], [1, 0, 1], [0, 0, 0], [1, -1, 1], [1, float("nan"), 1]])
def test_spending_weights_with_zeros_are_refused_naming_spending(weights):
    # issue 10, item 4: a zero weight used to be accepted and then crash in Clopper-Pearson with alpha = 0
    with pytest.raises(ValueError, match=r"spending weights must be 3 finite positive numbers.*spending="):
        spending_levels(0.1, 3, weights)
    with pytest.raises(ValueError, match=r"spending weights must be 3 finite positive numbers"):
        run_sequential(bernoulli_draw([0.9]), 1, 1.0, 0.1, 0.1, [10, 20, 30], spending=weights)


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


# ------------------------------------------------------------- several draws per member (issue 10, item 1)
P, MEMBERS, DRAWS, SIGMA = 0.6, 50, 10, 0.5
R_JUST_ABOVE = SIGMA * norm.ppf(P) + 1e-3  # the true radius is sigma * Phi^-1(p): certifying r is always wrong


@pytest.mark.parametrize("futility_alpha", [None, 0.01])
def test_draws_of_one_member_are_bounded_per_member_at_each_look(futility_alpha):
    # The setting: p = 0.6, 50 members, 10 draws each that vote alike, alpha = 0.05, r just above the true
    # radius. Clopper-Pearson over the 500 draws, as if independent (the rule before), certified in 111 of 200.
    alpha, size = 0.05, 4000
    looks = DRAWS * look_schedule(MEMBERS, 5)
    res = run_sequential(
        member_draw(np.full(size, P), MEMBERS, DRAWS, seed=1),
        size,
        SIGMA,
        R_JUST_ABOVE,
        alpha,
        looks,
        futility_alpha=futility_alpha,
        bound="hoeffding",
        draws_per_model=DRAWS,
    )
    assert np.mean(res.certified) <= _max_rate(alpha, size)
    assert np.all(res.votes_used % DRAWS == 0)


def test_the_rule_before_certified_dependent_draws_wrongly():
    # what the per-member bound prevents: the same votes treated as 500 independent ones, Clopper-Pearson at looks
    # of 32, 64, ... 500 votes (certify_adaptive's default schedule before): about half certified
    alpha, size = 0.05, 2000
    draw = member_draw(np.full(size, P), MEMBERS, DRAWS, seed=1)
    res = run_sequential(draw, size, SIGMA, R_JUST_ABOVE, alpha, look_schedule(MEMBERS * DRAWS))
    assert np.mean(res.certified) > 0.3


def test_several_draws_per_member_need_hoeffding_and_member_boundaries():
    draw = member_draw([0.9], 10, 2)
    with pytest.raises(ValueError, match="draws_per_model=2 needs bound='hoeffding'"):
        run_sequential(draw, 1, 1.0, 0.1, 0.1, [10, 20], draws_per_model=2)
    with pytest.raises(ValueError, match="looks must be multiples of draws_per_model=2"):
        run_sequential(draw, 1, 1.0, 0.1, 0.1, [5, 20], bound="hoeffding", draws_per_model=2)


def test_levels_with_several_draws_and_classes():
    # with D > 1 the levels add up to alpha / max(2, C) (certification.selection_level)
    def draw(idx, start, stop):
        out = np.zeros((len(idx), 5), dtype=np.int64)
        out[:, 2] = stop - start
        return out

    res = run_sequential(draw, 3, 1.0, 0.0, 0.1, [4, 8], bound="hoeffding", draws_per_model=2, futility_alpha=None)
    assert res.levels.sum() == pytest.approx(0.1 / 5)
    res = run_sequential(draw, 3, 1.0, 0.0, 0.1, [4, 8], bound="hoeffding", futility_alpha=None)
    assert res.levels.sum() == pytest.approx(0.1 / 2)


# ------------------------------------------------------------------ the radius tested: conservative, fresh noise
def _unanimous(idx, start, stop):
    out = np.zeros((len(idx), 2), dtype=np.int64)
    out[:, 1] = stop - start
    return out


def test_conservative_tests_the_radius_with_the_smaller_training_sigma():
    # All 100 votes for class 1; sigma_x = 0.5 but the training sigma min is 0.1: the conservative radius is a fifth
    # of the paper's, so an r between the two is certified by the paper's radius only.
    lower = float(stats.clopper_pearson_lower(100, 100, 0.05))
    paper, conservative = 0.5 * norm.ppf(lower), 0.1 * norm.ppf(lower)
    r = (paper + conservative) / 2
    common = dict(futility_alpha=None, train_sigma_min=0.1)
    res = run_sequential(_unanimous, 1, 0.5, r, 0.1, [100], **common)
    assert res.certified[0] and res.radius_bound[0] == pytest.approx(paper)
    res = run_sequential(_unanimous, 1, 0.5, r, 0.1, [100], conservative=True, **common)
    assert not res.certified[0]
    res = run_sequential(_unanimous, 1, 0.5, conservative * 0.99, 0.1, [100], conservative=True, **common)
    assert res.certified[0] and res.radius_bound[0] == pytest.approx(conservative)


def test_fresh_noise_divides_the_radius_by_the_root_of_the_copies():
    lower = float(stats.clopper_pearson_lower(100, 100, 0.05))
    full = 0.5 * norm.ppf(lower)
    res = run_sequential(_unanimous, 1, 0.5, full / 2 * 1.01, 0.1, [100], futility_alpha=None, noise_copies=4)
    assert not res.certified[0]
    res = run_sequential(_unanimous, 1, 0.5, full / 2 * 0.99, 0.1, [100], futility_alpha=None, noise_copies=4)
    assert res.certified[0] and res.radius_bound[0] == pytest.approx(full / 2)


# ------------------------------------------------------------------------------ agreement with the fixed-n rule
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


@pytest.mark.slow
def test_dependent_draws_large_simulation():
    alpha, size = 0.01, 200000
    res = run_sequential(
        member_draw(np.full(size, P), MEMBERS, DRAWS, seed=3),
        size,
        SIGMA,
        R_JUST_ABOVE,
        alpha,
        DRAWS * look_schedule(MEMBERS, 5),
        bound="hoeffding",
        draws_per_model=DRAWS,
    )
    assert np.mean(res.certified) <= _max_rate(alpha, size)


def _fixed_certified(p, radius, sigma, alpha, n=1000, seed=0):
    k = np.random.default_rng(seed).binomial(n, p)
    result = certification.certify_votes(np.stack([n - k, k], axis=1), sigma, alpha=alpha)
    return (result.pred != stats.ABSTAIN) & (result.radius >= radius), result.pred


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


@pytest.mark.parametrize("bound", certification.BOUNDS)
def test_single_look_is_the_fixed_certificate(bound):
    p = np.random.default_rng(0).uniform(0.3, 1.0, 300)
    res = run_sequential(bernoulli_draw(p, seed=2), 300, 0.4, 0.2, 0.01, [1000], bound=bound, train_sigma_min=0.3)
    fixed = certification.certify_votes(res.counts, 0.4, alpha=0.01, bound=bound, train_sigma_min=0.3)
    np.testing.assert_array_equal(res.certified, (fixed.pred != stats.ABSTAIN) & (fixed.radius >= 0.2))
    np.testing.assert_allclose(res.p_a_lower, fixed.p_a_lower)
    assert res.total_votes == 300 * 1000
    assert isinstance(res, AdaptiveResult) and len(res) == 300
