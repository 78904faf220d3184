"""The certificate (art_certssbd.certification): closed forms for every option, the refused combinations, and exact or
simulated error rates (numpy only: fast, for mutation testing). Through the estimator: tests/test_soundness.py."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
from scipy.stats import beta, binom, norm

from art_certssbd import confseq, stats
from art_certssbd.certification import (
    ABSTAIN,
    BOUNDS,
    certify_at_level,
    certify_votes,
    check_options,
    max_certifiable_radius,
    min_ensemble_size,
    noise_sigma,
    selection_level,
    vote_bound,
)
from art_certssbd.result import CertificationResult

COUNTS = np.array([[3, 97], [60, 40], [50, 50], [0, 100], [100, 0]])


def _allowed(trials: int, alpha: float, false_alarm: float = 1e-4) -> int:
    return int(binom.isf(false_alarm, trials, alpha))


# ------------------------------------------------------------------------------------------------ closed forms
@pytest.mark.parametrize("bound", BOUNDS)
def test_the_steps_in_closed_form(bound):
    sigma = np.array([0.5, 0.4, 0.3, 0.2, 0.1])
    result = certify_votes(COUNTS, sigma, alpha=0.02, bound=bound, train_sigma_min=0.25)
    assert isinstance(result, CertificationResult)
    top = COUNTS.argmax(axis=1)  # lowest index on the tie of row 2
    lower = stats.lower_confidence_bound(COUNTS.max(axis=1), 100, 0.01, bound)  # alpha / 2
    np.testing.assert_array_equal(result.p_a_lower, lower)
    np.testing.assert_array_equal(result.pred, np.where(lower > 0.5, top, ABSTAIN))
    decided = lower > 0.5
    np.testing.assert_allclose(result.radius, np.where(decided, sigma * norm.ppf(lower), 0.0), rtol=1e-12)
    conservative = np.minimum(sigma, 0.25) * norm.ppf(lower)
    np.testing.assert_allclose(result.radius_conservative, np.where(decided, conservative, 0.0), rtol=1e-12)
    np.testing.assert_array_equal(result.pred_before_memory, result.pred)
    np.testing.assert_array_equal(result.votes, COUNTS)
    np.testing.assert_array_equal(result.sigma, sigma)


def test_the_conservative_radius_uses_the_smaller_training_sigma():
    # the mutant that drops min(sigma_x, min_j sigma_j) gives radius_conservative == radius: a training sigma min
    # below sigma_x must show (the tests before issue 10 set it equal to sigma_x, where it never binds)
    result = certify_votes([[0, 100]], 0.5, alpha=0.05, train_sigma_min=0.1)
    assert result.radius[0] > 0
    assert result.radius_conservative[0] == pytest.approx(result.radius[0] * 0.1 / 0.5, rel=1e-12)
    # a training sigma min above sigma_x does not raise the conservative radius above the paper's
    result = certify_votes([[0, 100]], 0.5, alpha=0.05, train_sigma_min=0.9)
    assert result.radius_conservative[0] == result.radius[0]
    # no training sigmas given: the conservative radius is the paper's
    result = certify_votes([[0, 100]], 0.5, alpha=0.05)
    assert result.radius_conservative[0] == result.radius[0]
    np.testing.assert_allclose(noise_sigma([0.5, 0.05], train_sigma_min=0.1, conservative=True), [0.1, 0.05])
    np.testing.assert_allclose(noise_sigma([0.5, 0.05], train_sigma_min=0.1), [0.5, 0.05])


def test_fresh_training_noise_divides_both_radii_by_the_root_of_the_copies():
    one = certify_votes(COUNTS, 0.5, alpha=0.02, train_sigma_min=0.2)
    four = certify_votes(COUNTS, 0.5, alpha=0.02, train_sigma_min=0.2, noise_copies=4)
    np.testing.assert_array_equal(four.pred, one.pred)
    np.testing.assert_allclose(four.radius, one.radius / 2, rtol=1e-12)
    np.testing.assert_allclose(four.radius_conservative, one.radius_conservative / 2, rtol=1e-12)
    np.testing.assert_allclose(noise_sigma(0.5, noise_copies=9), 0.5 / 3)


@pytest.mark.parametrize("nb_classes", [2, 3, 10])
def test_several_draws_per_member_bound_the_member_fractions_with_hoeffding(nb_classes):
    # 20 members, 5 draws each: Hoeffding over the 20 per-member fractions (sum k / 5), not over 100 draws
    counts = np.zeros((1, nb_classes), dtype=np.int64)
    counts[0, 1], counts[0, 0] = 90, 10
    result = certify_votes(counts, 1.0, alpha=0.1, bound="hoeffding", draws_per_model=5)
    level = 0.1 / max(2, nb_classes)
    assert selection_level(0.1, nb_classes, 5) == level
    assert result.p_a_lower[0] == pytest.approx(0.9 - math.sqrt(math.log(1 / level) / (2 * 20)), rel=1e-12)
    assert result.pred[0] == 1
    np.testing.assert_allclose(vote_bound(90, 100, level, "hoeffding", 5), result.p_a_lower[0])
    # one draw per member: binomial votes, alpha / 2 for any number of classes
    assert selection_level(0.1, nb_classes) == 0.05


def test_explicit_n_counts_votes_that_went_nowhere():
    result = certify_votes([[0, 90]], 1.0, alpha=0.1, n=100)
    assert result.p_a_lower[0] == stats.clopper_pearson_lower(90, 100, 0.05)
    same = certify_at_level([[0, 90]], 1.0, level=0.05, options=check_options("clopper-pearson"), n=100)
    np.testing.assert_array_equal(same.p_a_lower, result.p_a_lower)


# ----------------------------------------------------------------------------------------------- refused options
@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(bound="clopper-pearson", draws_per_model=3), r"draws_per_model=3 needs bound='hoeffding'"),
        (dict(bound="wilson"), r"bound must be one of"),
        (dict(bound="hoeffding", draws_per_model=0), r"draws_per_model must be an integer >= 1, got 0"),
        (dict(noise_copies=0), r"noise_copies must be an integer >= 1, got 0"),
        (dict(noise_copies=2.5), r"noise_copies must be an integer >= 1, got 2.5"),
        (dict(noise_copies=True), r"noise_copies must be an integer >= 1, got True"),
        (dict(train_sigma_min=0.0), r"train_sigma_min must be finite and > 0, got 0.0"),
        (dict(train_sigma_min=float("inf")), r"train_sigma_min must be finite and > 0"),
        (dict(alpha=1.0), r"alpha must be in \(0, 1\)"),
        (dict(bound="hoeffding", draws_per_model=3, n=100), r"n must be a multiple of draws_per_model=3"),
        (dict(n=50), r"n must be a scalar or \(N,\) array >= the row sums"),
    ],
)
def test_refused_options_raise_a_clear_error(kwargs, pattern):
    kwargs = {"alpha": 0.1, **kwargs}
    with pytest.raises(ValueError, match=pattern):
        certify_votes([[30, 69]], 0.5, **kwargs)


def test_bad_votes_raise_a_clear_error():
    for counts, pattern in [
        ([[3, -1]], r"counts must be non-negative integers, got -1"),
        ([[3, 1.5]], r"counts must be non-negative integers, got 1.5"),
        ([3, 1], r"counts must be a 2-D array"),
        ([[0, 0]], r"counts must have at least one vote per row, row 0"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            certify_votes(counts, 1.0, alpha=0.1)
    with pytest.raises(ValueError, match=r"sigma must be a scalar or have shape \(1,\)"):
        certify_votes([[3, 1]], [1.0, 2.0], alpha=0.1)
    assert check_options("hoeffding", 2, 3, 0.5) == ("hoeffding", 2, 3, 0.5)


@pytest.mark.parametrize("bound", BOUNDS)
def test_the_table_of_bounds_drives_the_options_and_the_level(bound):
    """check_options, selection_level and vote_bound read stats.BOUND_TABLE's properties, not a list of names."""
    spec = stats.BOUND_TABLE[bound]
    if spec.allows_draws_per_model:
        assert check_options(bound, 2) == (bound, 2, 1, None)
        # D > 1: the bound itself over the n / D per-member fractions
        assert vote_bound(60, 100, 0.05, bound, 2) == stats.lower_confidence_bound(30, 50, 0.05, bound)
    else:
        message = (
            "draws_per_model=2 needs bound='hoeffding' (the draws of one member are not independent, so a binomial "
            f"bound over them is invalid), got bound={bound!r}"
        )
        with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
            check_options(bound, 2)
    assert selection_level(0.06, 3, bound=bound) == (0.02 if spec.anytime else 0.03)
    counts = np.array([[90, 10, 0], [40, 35, 25]])
    result = certify_votes(counts, 0.5, alpha=0.06, bound=bound)
    level = 0.02 if spec.anytime else 0.03
    np.testing.assert_array_equal(result.p_a_lower, stats.lower_confidence_bound([90, 40], 100, level, bound))


def test_a_changed_table_entry_changes_every_rule_that_reads_it(monkeypatch):
    table = dict(stats.BOUND_TABLE)
    table["hoeffding"] = dataclasses.replace(table["hoeffding"], allows_draws_per_model=False, anytime=True)
    table["anytime"] = dataclasses.replace(table["anytime"], allows_draws_per_model=True, anytime=False)
    monkeypatch.setattr(stats, "BOUND_TABLE", table)
    with pytest.raises(ValueError, match=r"^draws_per_model=2 needs "):
        check_options("hoeffding", 2)
    assert check_options("anytime", 2) == ("anytime", 2, 1, None)
    assert selection_level(0.06, 3, bound="hoeffding") == 0.02
    assert selection_level(0.06, 3, bound="anytime") == 0.03


# ------------------------------------------------------------------------------------------- error probabilities
@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize(("n", "alpha"), [(100, 0.1), (1000, 1e-3), (25, 0.2)])
def test_exact_error_at_a_two_class_tie_is_at_most_alpha(n, alpha, bound):
    k = np.arange(n + 1)
    result = certify_votes(np.stack([n - k, k], axis=1), 1.0, alpha=alpha, bound=bound)
    assert binom.pmf(k, n, 0.5)[result.pred != ABSTAIN].sum() <= alpha


def test_members_that_vote_alike_keep_the_error_at_alpha():
    # p = 0.6 over the members' training noise, all 10 draws of a member vote alike: the per-member bound holds
    p, members, draws, alpha, trials = 0.6, 50, 10, 0.05, 20000
    ones = np.random.default_rng(0).binomial(members, p, trials) * draws
    counts = np.stack([members * draws - ones, ones], axis=1)
    result = certify_votes(counts, 1.0, alpha=alpha, bound="hoeffding", draws_per_model=draws)
    wrong = (result.pred != ABSTAIN) & ((result.pred != 1) | (result.p_a_lower > p))
    assert wrong.sum() <= _allowed(trials, alpha)
    # the same votes as 500 independent ones (Clopper-Pearson): wrong far more often than alpha
    naive = certify_votes(counts, 1.0, alpha=alpha)
    assert ((naive.pred == 1) & (naive.p_a_lower > p)).mean() > 4 * alpha


def test_several_draws_and_three_classes_without_a_majority_keep_the_error_at_alpha():
    # p = (0.45, 0.45, 0.1) per member (members vote alike over their draws): any certificate is wrong, since no
    # class has p > 1/2; the union bound over the classes (alpha / 3) keeps it below alpha
    members, draws, alpha, trials = 30, 4, 0.2, 20000
    rng = np.random.default_rng(1)
    labels = rng.choice(3, size=(trials, members), p=[0.45, 0.45, 0.1])
    counts = np.stack([(labels == c).sum(axis=1) * draws for c in range(3)], axis=1)
    result = certify_votes(counts, 1.0, alpha=alpha, bound="hoeffding", draws_per_model=draws)
    assert (result.pred != ABSTAIN).sum() <= _allowed(trials, alpha)


@pytest.mark.parametrize("kind", ["paper", "conservative"])
def test_fresh_training_noise_against_a_simulation(kind):
    # A member trained on E noisy copies x_t + sigma_t * b_e of a training point learns their mean: its vote on the
    # test input is [m + sigma_x * z + a * sigma_t * mean_e(b_e) > 0], so p_A = Phi(m / sqrt(sigma_x^2 + a^2
    # sigma_t^2 / E)). A training trigger delta_t moves the margin by a * delta_t, a test trigger by delta_x. True
    # radius for the total L2 norm (conservative): m / sqrt(1 + a^2); for the anisotropic norm ||delta_x||^2 /
    # sigma_x^2 + ||delta_t||^2 / sigma_t^2 (paper's radius / sigma_x): m / sqrt(sigma_x^2 + a^2 sigma_t^2). With
    # E = 1 both radii are exact; with E copies the smoothing sees the trigger E times (stacked norm sqrt(E) larger),
    # and only the radius divided by sqrt(E) holds.
    sigma_x, sigma_t, a, copies, alpha, members, trials = 0.5, 0.5, 2.0, 4, 0.1, 200, 4000
    p_a = np.array([0.7, 0.9, 0.99])
    m = norm.ppf(p_a) * math.sqrt(sigma_x**2 + a**2 * sigma_t**2 / copies)
    if kind == "paper":
        true_radius = sigma_x * m / math.sqrt(sigma_x**2 + a**2 * sigma_t**2)
    else:
        true_radius = m / math.sqrt(1 + a**2)
    ones = np.random.default_rng(2).binomial(members, p_a, size=(trials, len(p_a))).reshape(-1)
    counts = np.stack([members - ones, ones], axis=1)
    for noise_copies in (copies, 1):
        result = certify_votes(counts, sigma_x, alpha=alpha, train_sigma_min=sigma_t, noise_copies=noise_copies)
        radius = (result.radius if kind == "paper" else result.radius_conservative).reshape(trials, len(p_a))
        wrong = (result.pred.reshape(trials, -1) != 1) | (radius > true_radius)
        wrong &= result.pred.reshape(trials, -1) != ABSTAIN
        if noise_copies == copies:
            assert np.all(wrong.sum(axis=0) <= _allowed(trials, alpha, 1e-4 / len(p_a)))
        else:  # the full radius (what certify reported before issue 10) is wrong almost always
            assert np.all(wrong.mean(axis=0) > 0.5)


# ------------------------------------------------------------------------------ the ceiling of unanimous votes
@pytest.mark.parametrize("alpha", [0.1, 0.05, 0.01, 0.001])
@pytest.mark.parametrize("n", [1, 4, 5, 6, 8, 11, 100, 1000])
def test_max_certifiable_radius_clopper_pearson_in_closed_form(n, alpha):
    p_lower = (alpha / 2) ** (1 / n)  # unanimous votes: beta.ppf(alpha / 2, n, 1), in closed form
    assert math.isclose(beta.ppf(alpha / 2, n, 1), p_lower, rel_tol=1e-9)
    expected = [s * norm.ppf(p_lower) if p_lower > 0.5 else 0.0 for s in (0.25, 1.0)]
    got = max_certifiable_radius(n, [0.25, 1.0], alpha=alpha, nb_classes=10)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)
    assert max_certifiable_radius(n, 0.25, alpha=alpha) == pytest.approx(expected[0], rel=1e-9, abs=0)


def test_max_certifiable_radius_of_the_issue_settings():
    # nb_models=4, alpha=0.05: p_lower = 0.025 ** (1 / 4) = 0.398 < 1/2, never certified
    assert max_certifiable_radius(4, 1.0, alpha=0.05) == 0.0
    # 8 members at alpha 0.01: p_lower = 0.005 ** (1 / 8) = 0.516, radius 0.039 sigma (0.01-0.02 at sigma 0.25-0.5)
    np.testing.assert_allclose(max_certifiable_radius(8, [0.25, 0.5], alpha=0.01), [0.00982, 0.01964], rtol=1e-3)


@pytest.mark.parametrize("draws, nb_classes", [(1, 2), (1, 10), (4, 2), (4, 10)])
def test_max_certifiable_radius_hoeffding_in_closed_form(draws, nb_classes):
    alpha, members = 0.01, 40
    level = alpha / 2 if draws == 1 else alpha / max(2, nb_classes)  # the selection level
    p_lower = 1 - math.sqrt(math.log(1 / level) / (2 * members))  # Hoeffding over the members' fractions
    got = max_certifiable_radius(members * draws, 0.5, alpha=alpha, bound="hoeffding", draws_per_model=draws,
                                 nb_classes=nb_classes)  # fmt: skip
    assert got == pytest.approx(0.5 * norm.ppf(p_lower), rel=1e-9)


@pytest.mark.parametrize("nb_classes", [2, 10])
@pytest.mark.parametrize("n", [3, 12, 200])
def test_max_certifiable_radius_anytime_through_the_confidence_sequence(n, nb_classes):
    level = 0.05 / max(2, nb_classes)
    p_lower = float(confseq.lower(n, n, level))
    # unanimous votes in closed form: n log p > log A(n, n) - log(1 / level)
    assert p_lower == pytest.approx(math.exp((confseq.log_mixture_normaliser(n, n) + math.log(level)) / n), abs=1e-12)
    expected = 0.3 * norm.ppf(p_lower) if p_lower > 0.5 else 0.0
    got = max_certifiable_radius(n, 0.3, alpha=0.05, bound="anytime", nb_classes=nb_classes)
    assert got == pytest.approx(expected, rel=1e-9, abs=0)


def test_max_certifiable_radius_with_fresh_noise_divides_by_the_root_of_the_copies():
    one = max_certifiable_radius(100, 0.5, alpha=0.001)
    assert max_certifiable_radius(100, 0.5, alpha=0.001, noise_copies=4) == pytest.approx(one / 2, rel=1e-12)


def test_max_certifiable_radius_bounds_every_certificate():
    # no vote count of n votes certifies a larger radius than the unanimous one
    n, sigma = 30, 0.4
    counts = np.stack([np.arange(n + 1), n - np.arange(n + 1)], axis=1)
    for bound in ("clopper-pearson", "hoeffding", "anytime"):
        radii = certify_votes(counts, sigma, alpha=0.05, bound=bound).radius
        assert radii.max() == pytest.approx(max_certifiable_radius(n, sigma, alpha=0.05, bound=bound), rel=1e-12)


@pytest.mark.parametrize("alpha", [0.1, 0.05, 0.01, 0.001, 1e-6])
def test_min_ensemble_size(alpha):
    # Clopper-Pearson: the smallest M with (alpha / 2) ** (1 / M) > 1/2, i.e. M > log2(2 / alpha)
    assert min_ensemble_size(alpha) == math.floor(math.log2(2 / alpha)) + 1
    for bound in BOUNDS:
        size = min_ensemble_size(alpha, bound=bound, nb_classes=10)
        assert max_certifiable_radius(size, alpha=alpha, bound=bound, nb_classes=10) > 0
        assert size == 1 or max_certifiable_radius(size - 1, alpha=alpha, bound=bound, nb_classes=10) == 0
    # Hoeffding: 1 - sqrt(ln(2 / alpha) / (2 M)) > 1/2, i.e. M > 2 ln(2 / alpha)
    assert min_ensemble_size(alpha, bound="hoeffding") == math.floor(2 * math.log(2 / alpha)) + 1


def test_min_ensemble_size_of_the_guide():
    assert [min_ensemble_size(a) for a in (0.1, 0.05, 0.01, 0.001)] == [5, 6, 8, 11]


def test_max_certifiable_radius_defaults_and_shapes():
    # default sigma 1: the radius is Phi^-1 of the Clopper-Pearson unanimous bound itself
    for n, alpha in [(8, 0.01), (30, 0.05)]:
        assert max_certifiable_radius(n, alpha=alpha) == pytest.approx(norm.ppf((alpha / 2) ** (1 / n)), rel=1e-9)
    # a scalar sigma gives a Python float; an array sigma gives sigma's shape, each entry sigma * Phi^-1(p_lower)
    assert type(max_certifiable_radius(8, 1.0, alpha=0.01)) is float
    # one class: the unanimous row is that class's, with the same Clopper-Pearson ceiling
    assert max_certifiable_radius(8, alpha=0.01, nb_classes=1) == pytest.approx(norm.ppf(0.005 ** (1 / 8)), rel=1e-9)
    sigma = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    got = max_certifiable_radius(20, sigma, alpha=0.05)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, sigma * norm.ppf(0.025 ** (1 / 20)), rtol=1e-9)


def test_min_ensemble_size_of_the_smallest_sizes_and_the_limit():
    # alpha = 0.6: (0.3) ** (1 / 2) = 0.548 > 1/2, so 2 members certify (floor(log2(2 / 0.6)) + 1 = 2), 1 does not
    assert min_ensemble_size(0.6) == math.floor(math.log2(2 / 0.6)) + 1 == 2
    assert min_ensemble_size(0.6, limit=2) == 2
    with pytest.raises(ValueError, match=r"no ensemble of up to limit=1 members certifies"):
        min_ensemble_size(0.6, limit=1)


@pytest.mark.parametrize("alpha", [0.1, 0.01, 0.001])
def test_min_ensemble_size_hoeffding_with_draws_in_closed_form(alpha):
    # D > 1: level alpha / C, Hoeffding over the M members: 1 - sqrt(ln(C / alpha) / (2 M)) > 1/2, M > 2 ln(C / alpha)
    for nb_classes in (2, 10):
        expected = math.floor(2 * math.log(nb_classes / alpha)) + 1
        assert min_ensemble_size(alpha, bound="hoeffding", draws_per_model=4, nb_classes=nb_classes) == expected


def test_min_ensemble_size_anytime_defaults_to_two_classes():
    # anytime: the smallest n whose unanimous confidence-sequence bound at level alpha / C exceeds 1/2
    def smallest(alpha, nb_classes):
        n = 1
        while confseq.lower(n, n, alpha / max(2, nb_classes)) <= 0.5:
            n += 1
        return n

    alphas = [0.1, 0.05, 0.01, 0.001]
    for alpha in alphas:
        assert min_ensemble_size(alpha, bound="anytime") == smallest(alpha, 2)
    assert any(smallest(a, 2) != smallest(a, 3) for a in alphas)  # the default number of classes matters here


@pytest.mark.parametrize(
    "call, pattern",
    [
        (lambda: max_certifiable_radius(0, alpha=0.1), r"nb_votes must be an integer >= 1, got 0"),
        (lambda: max_certifiable_radius(8, -1.0, alpha=0.1), r"sigma must be finite and > 0, got -1.0"),
        (lambda: max_certifiable_radius(8, alpha=1.5), r"alpha must be .*1.5"),
        (lambda: max_certifiable_radius(8, alpha=0.1, bound="wald"), r"bound must be one of .*'wald'"),
        (lambda: max_certifiable_radius(6, alpha=0.1, draws_per_model=4, bound="hoeffding"),
         r"n must be a multiple of draws_per_model=4"),
        (lambda: min_ensemble_size(1e-300, limit=4), r"no ensemble of up to limit=4 members certifies"),
        (lambda: max_certifiable_radius(8, alpha=0.1, nb_classes=0), r"nb_classes must be an integer >= 1, got 0"),
        (lambda: min_ensemble_size(0.1, limit=0), r"limit must be an integer >= 1, got 0"),
    ],
)  # fmt: skip
def test_max_certifiable_radius_refuses_bad_arguments(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()
