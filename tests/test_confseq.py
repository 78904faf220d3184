"""The confidence sequence of art_certssbd.confseq, checked against independent references: numerical integration
of the mixture (scipy.integrate), simulation of optional stopping at every vote, and the fixed-n Clopper-Pearson
floor it must stay close to."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.stats import norm

from art_certssbd import confseq
from art_certssbd.certification import certify_votes
from art_certssbd.stats import ABSTAIN, clopper_pearson_lower


@pytest.mark.parametrize(("k", "n", "p0"), [(7, 10, 0.4), (95, 100, 0.8), (0, 5, 0.3), (30, 30, 0.9)])
def test_log_evidence_equals_the_integral_of_the_mixture(k, n, p0):
    """The closed form against scipy's quadrature of sum_j w_j int q^k (1-q)^(n-k) Beta(q; a_j, b_j) dq."""

    def component(a, b):
        value, _ = integrate.quad(lambda q: q**k * (1 - q) ** (n - k) * stats.beta.pdf(q, a, b), 0, 1, limit=200)
        return value

    mixture = np.mean([component(a, b) for a, b in confseq.PRIOR])
    expected = np.log(mixture) - (k * np.log(p0) + (n - k) * np.log1p(-p0))
    np.testing.assert_allclose(confseq.log_evidence(k, n, p0), expected, rtol=1e-4)  # quad on the narrow Beta(999, 1)


def test_the_lower_end_is_the_boundary_of_the_set():
    level = 1e-3
    for k, n in [(9, 10), (90, 100), (600, 1000), (1000, 1000)]:
        low = float(confseq.lower(k, n, level))
        assert confseq.log_evidence(k, n, low + 1e-9) < np.log(1 / level) <= confseq.log_evidence(k, n, low - 1e-9)
        assert float(confseq.upper(n - k, n, level)) == pytest.approx(1 - low)
    assert float(confseq.lower(0, 10, 0.01)) == 0.0 and float(confseq.upper(10, 10, 0.01)) == 1.0


@pytest.mark.parametrize("level", [0.1, 1e-3, 0.05 / 3])
def test_the_returned_ends_lie_outside_the_set_to_the_last_bit(level):
    """A valid end of the confidence sequence is outside ``C_n = {p0: M_n(p0) < 1 / level}``: ``lower`` returns the
    bisection's outside end, not its inside one (one ulp higher, the kind of slip the +-1e-9 test above misses).
    ``upper(k, n) = 1 - lower(n - k, n)``: where that lower end is >= 1/2 the subtraction is exact, so the
    complement's evidence at ``1 - upper`` is checked the same way."""
    threshold = np.log(1 / level)
    n = np.array([1, 2, 10, 10, 100, 100, 1000, 1000, 1000, 20000])
    k = np.array([1, 2, 9, 10, 60, 97, 500, 990, 1000, 19000])
    low = confseq.lower(k, n, level)
    assert np.all(confseq.log_evidence(k, n, low) >= threshold)
    up = confseq.upper(n - k, n, level)
    exact = 1 - up >= 0.5
    assert exact.sum() >= 3
    assert np.all(confseq.log_evidence(k, n, 1 - up)[exact] >= threshold)


def _first_crossing(p: float, level: float, horizon: int, trials: int, seed: int, bound) -> float:
    """Fraction of Bernoulli(p) sequences whose lower bound ever exceeds p within ``horizon`` votes (optional
    stopping at every vote: the adversary stops at the first wrong certificate)."""
    rng = np.random.default_rng(seed)
    wins = rng.random((trials, horizon)) < p
    k = np.cumsum(wins, axis=1)
    n = np.arange(1, horizon + 1)
    return float(np.mean((bound(k, n, level) > p).any(axis=1)))


@pytest.mark.parametrize("p", [0.5, 0.8, 0.95])
def test_optional_stopping_at_every_vote_errs_at_most_level(p):
    """Looking after every one of 300 votes: the sequence errs in at most ``level`` of the runs (plus simulation
    slack), while Clopper-Pearson at the same level, looked at every vote, errs far more often: the test can fail."""
    level, trials = 0.05, 2000
    slack = 3 * np.sqrt(level * (1 - level) / trials)
    anytime = _first_crossing(p, level, 300, trials, seed=1, bound=confseq.lower)
    assert anytime <= level + slack, anytime
    fixed_n = _first_crossing(p, level, 300, trials, seed=1, bound=clopper_pearson_lower)
    assert fixed_n > 2 * level, fixed_n  # the fixed-n bound under optional stopping: invalid


def test_unanimous_votes_certify_close_to_the_fixed_n_floor():
    """Votes needed to certify at r = 0 ... 2 sigma when every vote goes to the top class, at level 5e-4: the
    sequence pays at most 25 % over Clopper-Pearson's fixed-n floor (11, 15, 21, 44, 110, 331 votes)."""
    level = 5e-4
    floors = []
    for r in (0.0, 0.25, 0.5, 1.0, 1.5, 2.0):
        p_r = max(norm.cdf(r), 0.5)
        n_cp = next(n for n in range(1, 2000) if clopper_pearson_lower(n, n, level) > p_r)
        n_cs = next(n for n in range(1, 2000) if confseq.lower(n, n, level) > p_r)
        floors.append(n_cp)
        assert n_cp <= n_cs <= 1.25 * n_cp, (r, n_cp, n_cs)
    assert floors == [11, 15, 21, 44, 110, 331]


def test_the_anytime_certificate_splits_alpha_over_the_classes():
    """bound='anytime' bounds each class's sequence at alpha / max(2, C): the union over the classes is alpha."""
    counts = np.array([[900, 50, 50]])
    result = certify_votes(counts, 1.0, alpha=0.03, bound="anytime")
    np.testing.assert_allclose(result.p_a_lower, confseq.lower(900, 1000, 0.01))
    binary = certify_votes(np.array([[900, 100]]), 1.0, alpha=0.03, bound="anytime")
    np.testing.assert_allclose(binary.p_a_lower, confseq.lower(900, 1000, 0.015))
    tie = certify_votes(np.array([[5, 5]]), 1.0, alpha=0.1, bound="anytime")
    assert tie.pred[0] == ABSTAIN
    with pytest.raises(ValueError, match="draws_per_model=2 needs bound='hoeffding'"):
        certify_votes(np.array([[10, 0]]), 1.0, alpha=0.1, bound="anytime", draws_per_model=2)


def test_soft_votes_are_covered_too():
    """Scores in [0, 1] with mean p (a supermartingale argument): optional stopping still errs at most ``level``."""
    rng = np.random.default_rng(3)
    level, trials, horizon, p = 0.05, 1000, 200, 0.7
    scores = rng.beta(7, 3, size=(trials, horizon))  # mean 0.7
    k, n = np.cumsum(scores, axis=1), np.arange(1, horizon + 1)
    errs = np.mean((confseq.lower(k, n, level) > p).any(axis=1))
    assert errs <= level + 3 * np.sqrt(level * (1 - level) / trials)


def test_log_evidence_at_the_ends_of_the_interval_is_exact_and_silent():
    """At ``p0 = 0`` (``k = 0``) and ``p0 = 1`` (``k = n``) the likelihood is 1, so ``log M_n = log A(k, n)``, with no
    ``0 * log 0`` turned into nan and no numpy warning; where the data rule ``p0`` out, the evidence is infinite."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        at_zero = confseq.log_evidence(0, 5, 0.0)
        at_one = confseq.log_evidence(5, 5, 1.0)
        ruled_out = confseq.log_evidence([3, 3], [5, 5], [0.0, 1.0])
    assert at_zero == pytest.approx(float(confseq.log_mixture_normaliser(0, 5)), rel=1e-15)
    assert at_one == pytest.approx(float(confseq.log_mixture_normaliser(5, 5)), rel=1e-15)
    assert np.all(np.isposinf(ruled_out))


def test_log_evidence_computes_in_float64_whatever_the_input_dtype():
    p0 = np.float32(0.3)
    assert confseq.log_evidence(7, 10, p0) == confseq.log_evidence(7.0, 10.0, float(p0))
    assert confseq.log_evidence(7, 10, np.array([p0]))[0] == confseq.log_evidence(7.0, 10.0, float(p0))


def test_the_bounds_at_no_and_at_all_votes_are_silent_and_exact():
    """``k = 0`` gives the lower end 0 and ``k = n`` the upper end 1, with no numpy warning from the ``log 0`` the
    bisection meets on the way; a single vote (``k = 1``) still gets its own end (the set's boundary)."""
    level = 1e-3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        low = confseq.lower([0, 50, 1, 1], [50, 50, 1, 10], level)
        up = confseq.upper([0, 50], [50, 50], level)
    assert low[0] == 0.0 and 0 < low[1] < 1 and up[1] == 1.0 and 0 < up[0] < 1
    for k, n, end in ((1, 1, low[2]), (1, 10, low[3])):
        assert confseq.log_evidence(k, n, end + 1e-9) < np.log(1 / level) <= confseq.log_evidence(k, n, end)
