"""Tests for art_certssbd.stats against scipy's exact binomial test, closed forms and simulation."""

from __future__ import annotations

import ast
import dataclasses
import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest, norm

from art_certssbd import stats
from art_certssbd.counts import certify_counts, certify_scores
from art_certssbd.stats import (
    ABSTAIN,
    BOUNDS,
    certified_accuracy,
    clopper_pearson_lower,
    clopper_pearson_upper,
    hoeffding_lower,
    hoeffding_upper,
    lower_confidence_bound,
    max_radius,
    radius,
    upper_confidence_bound,
)


@pytest.mark.parametrize("n", [1, 7, 50, 1000])
@pytest.mark.parametrize("alpha", [0.05, 1e-3])
def test_clopper_pearson_matches_scipy_exact_interval(n, alpha):
    ks = np.unique(np.linspace(0, n, min(n + 1, 12)).astype(int))
    lower = clopper_pearson_lower(ks, n, alpha)
    upper = clopper_pearson_upper(ks, n, alpha)
    for k, lo, up in zip(ks, lower, upper):
        # A two-sided exact interval at level 1 - 2 alpha has one-sided tails of alpha.
        ci = binomtest(int(k), n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact")
        assert lo == pytest.approx(ci.low, abs=1e-10)
        assert up == pytest.approx(ci.high, abs=1e-10)


@pytest.mark.parametrize("n", [1, 10, 1000])
@pytest.mark.parametrize("alpha", [0.05, 1e-3])
def test_clopper_pearson_closed_forms_at_the_ends(n, alpha):
    assert clopper_pearson_lower(n, n, alpha) == pytest.approx(alpha ** (1 / n), rel=1e-12)
    assert clopper_pearson_upper(0, n, alpha) == pytest.approx(1 - alpha ** (1 / n), rel=1e-12)
    assert clopper_pearson_lower(0, n, alpha) == 0.0
    assert clopper_pearson_upper(n, n, alpha) == 1.0


def test_clopper_pearson_vectorised_over_k_and_n():
    k = np.array([0, 3, 10])
    n = np.array([5, 10, 10])
    expected = [clopper_pearson_lower(int(a), int(b), 0.01) for a, b in zip(k, n)]
    np.testing.assert_allclose(clopper_pearson_lower(k, n, 0.01), expected, rtol=0, atol=0)


def test_hoeffding_closed_form_and_clipping():
    n, alpha = 200, 0.01
    margin = math.sqrt(math.log(1 / alpha) / (2 * n))
    assert hoeffding_lower(150, n, alpha) == pytest.approx(0.75 - margin, rel=1e-14)
    assert hoeffding_upper(150, n, alpha) == pytest.approx(0.75 + margin, rel=1e-14)
    assert hoeffding_lower(123.4, n, alpha) == pytest.approx(123.4 / n - margin, rel=1e-14)
    assert hoeffding_lower(0, n, alpha) == 0.0
    assert hoeffding_upper(n, n, alpha) == 1.0


def test_dispatch_matches_the_named_bound():
    k = np.array([3, 40, 99])
    np.testing.assert_array_equal(lower_confidence_bound(k, 100, 0.01), clopper_pearson_lower(k, 100, 0.01))
    np.testing.assert_array_equal(lower_confidence_bound(k, 100, 0.01, "hoeffding"), hoeffding_lower(k, 100, 0.01))
    np.testing.assert_array_equal(upper_confidence_bound(k, 100, 0.01), clopper_pearson_upper(k, 100, 0.01))
    np.testing.assert_array_equal(upper_confidence_bound(k, 100, 0.01, "hoeffding"), hoeffding_upper(k, 100, 0.01))


@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize(("p", "n", "alpha"), [(0.9, 100, 0.05), (0.6, 37, 0.01), (0.97, 1000, 0.05)])
def test_coverage_by_simulation(bound, p, n, alpha):
    trials = 20_000
    k = np.random.default_rng(12345).binomial(n, p, size=trials)
    # Each one-sided bound may miss the true p with probability at most alpha; the tolerance is 3 binomial
    # standard deviations of the empirical miss rate over `trials` draws.
    tolerance = 3 * math.sqrt(alpha * (1 - alpha) / trials)
    assert np.mean(lower_confidence_bound(k, n, alpha, bound) > p) <= alpha + tolerance
    assert np.mean(upper_confidence_bound(k, n, alpha, bound) < p) <= alpha + tolerance


def test_max_radius_closed_forms():
    # Hoeffding: Phi^-1(1 - sqrt(ln(1000) / 2000)); Clopper-Pearson: Phi^-1(0.001 ** (1 / 1000)).
    assert round(float(max_radius(1000, 1e-3, bound="hoeffding")), 3) == 1.565
    assert round(float(max_radius(1000, 1e-3, bound="clopper-pearson")), 3) == 2.463
    assert max_radius(1000, 1e-3, sigma=0.12) == pytest.approx(0.12 * norm.ppf(1e-3 ** (1 / 1000)), rel=1e-12)
    hoeff = norm.ppf(1 - math.sqrt(math.log(1000) / 2000))
    assert max_radius(1000, 1e-3, sigma=0.5, bound="hoeffding") == pytest.approx(0.5 * hoeff, rel=1e-12)


def test_radius_formula_and_default_runner_up():
    p = np.array([0.6, 0.8, 0.99])
    np.testing.assert_allclose(radius(p, 0.25), 0.25 * norm.ppf(p), rtol=1e-12)
    np.testing.assert_allclose(radius(p, 0.25, p_b_upper=1 - p), 0.25 * norm.ppf(p), rtol=1e-12)
    expected = 0.5 / 2 * (norm.ppf(0.7) - norm.ppf(0.2))
    assert radius(0.7, 0.5, p_b_upper=0.2) == pytest.approx(expected, rel=1e-12)


def test_radius_is_monotone_and_never_negative_nan_or_infinite():
    p = np.linspace(0, 1, 2001)
    r = radius(p, 1.0)
    assert np.all(np.isfinite(r)) and np.all(r >= 0)
    assert np.all(np.diff(r) >= 0)
    assert np.all(r[p <= 0.5] == 0) and np.all(r[p > 0.5] > 0)
    sigmas = np.linspace(0.01, 2, 50)
    assert np.all(np.diff(radius(0.8, sigmas)) > 0)
    # pA = 1 and pB = 0 are clamped: finite radius (about 8.21 sigma).
    assert radius(1.0, 1.0, p_b_upper=0.0) == pytest.approx(norm.isf(2.0**-53), rel=1e-9)
    assert radius(0.3, 1.0, p_b_upper=0.6) == 0.0


@pytest.mark.parametrize("bound", BOUNDS)
def test_certify_counts_abstains_exactly_when_lower_bound_is_at_most_half(bound):
    n = 50
    counts = np.stack([np.arange(n + 1), n - np.arange(n + 1)], axis=1)
    pred, rad, p_a = certify_counts(counts, 0.3, 0.01, bound=bound)
    top = np.maximum(counts[:, 0], counts[:, 1])
    # alpha is the overall error: the class chosen on the same votes is bounded at alpha / 2
    np.testing.assert_allclose(p_a, lower_confidence_bound(top, n, 0.005, bound), rtol=0, atol=0)
    np.testing.assert_array_equal(pred == ABSTAIN, p_a <= 0.5)
    np.testing.assert_array_equal(rad == 0, p_a <= 0.5)
    np.testing.assert_allclose(rad[p_a > 0.5], 0.3 * norm.ppf(p_a[p_a > 0.5]), rtol=1e-12)
    np.testing.assert_array_equal(pred[p_a > 0.5], np.argmax(counts, axis=1)[p_a > 0.5])


def test_certify_counts_multiclass_ties_sigma_per_row_and_explicit_n():
    counts = np.array([[0, 90, 90, 0], [2, 3, 95, 0], [0, 0, 0, 100]])
    pred, rad, p_a = certify_counts(counts, np.array([0.1, 0.2, 0.3]), 1e-3, n=200)
    # Row 0 ties between classes 1 and 2 -> class 1, but 90/200 abstains anyway.
    assert pred[0] == ABSTAIN and rad[0] == 0
    np.testing.assert_allclose(p_a, clopper_pearson_lower(np.array([90, 95, 100]), 200, 5e-4))
    assert np.all(pred[1:] == ABSTAIN)
    pred, rad, p_a = certify_counts(counts, np.array([0.1, 0.2, 0.3]), 1e-3)
    assert list(pred) == [ABSTAIN, 2, 3]
    np.testing.assert_allclose(rad[1:], np.array([0.2, 0.3]) * norm.ppf(p_a[1:]), rtol=1e-12)
    _, _, p_tie = certify_counts(np.array([[60, 60, 0]]), 1.0, 0.01)
    assert p_tie[0] == pytest.approx(clopper_pearson_lower(60, 120, 0.005))


def test_certify_scores_hoeffding_and_clopper_pearson():
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.55, 0.45]])
    n, alpha, sigma = 1000, 1e-3, 0.12
    pred, rad, p_a = certify_scores(scores, sigma, alpha, n)
    margin = math.sqrt(math.log(2 / alpha) / (2 * n))  # alpha / 2: the class is chosen on the same scores
    np.testing.assert_allclose(p_a, np.array([0.9, 0.8, 0.55]) - margin, rtol=1e-12)
    assert list(pred) == [0, 1, ABSTAIN]
    np.testing.assert_allclose(rad[:2], sigma * norm.ppf(p_a[:2]), rtol=1e-12)
    # Clopper-Pearson uses floor(n * score): 0.7 * 1000 (= 699.999...) counts as 700 votes.
    _, _, p_cp = certify_scores(np.array([[0.7, 0.3], [0.7005, 0.2995]]), sigma, alpha, n, bound="clopper-pearson")
    np.testing.assert_allclose(p_cp, clopper_pearson_lower(np.array([700, 700]), n, alpha / 2), rtol=1e-12)


@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize(("n", "alpha"), [(100, 0.1), (1000, 1e-3), (37, 0.05)])
def test_public_certify_functions_err_at_most_alpha_at_an_exact_tie(n, alpha, bound):
    # Closed form, no simulation: at a two-class tie (p = 1/2 each) every certificate is wrong, so the error is
    # P(certified) = sum of the Binomial(n, 1/2) pmf over the counts that certify. alpha is the overall error
    # probability: bounded at the full alpha (the rule before issue 10) this was 1.93 alpha at n = 100, alpha = 0.1.
    k = np.arange(n + 1)
    pmf = binom.pmf(k, n, 0.5)
    counts = np.stack([n - k, k], axis=1)
    pred, _, _ = certify_counts(counts, 1.0, alpha, bound)
    assert pmf[pred != ABSTAIN].sum() <= alpha
    scores_pred, _, _ = certify_scores(counts / n, 1.0, alpha, n, bound)
    assert pmf[scores_pred != ABSTAIN].sum() <= alpha
    if bound == "clopper-pearson" and n == 100:  # the old rule, for the record: about 2 alpha
        old = clopper_pearson_lower(counts.max(axis=1), n, alpha) > 0.5
        assert pmf[old].sum() > 1.9 * alpha


def test_certified_accuracy_hand_example():
    pred = np.array([0, 1, ABSTAIN, 1, 0])
    rad = np.array([0.5, 0.2, 0.0, 1.0, 0.0])
    y = np.array([0, 1, 1, 0, 0])
    # Correct and not abstained: items 0 (r=0.5), 1 (r=0.2), 4 (r=0.0); item 3 is wrong, item 2 abstained.
    acc = certified_accuracy(pred, rad, y, [0.0, 0.1, 0.2, 0.5, 0.75])
    np.testing.assert_allclose(acc, [3 / 5, 2 / 5, 2 / 5, 1 / 5, 0.0])
    assert certified_accuracy(pred, rad, y, 0.0).shape == (1,)


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, float("nan")])
def test_alpha_out_of_range(alpha):
    for call in (
        lambda: clopper_pearson_lower(1, 2, alpha),
        lambda: hoeffding_upper(1, 2, alpha),
        lambda: certify_counts([[1, 2]], 1.0, alpha),
        lambda: certify_scores([[0.5, 0.5]], 1.0, alpha, 10),
        lambda: max_radius(10, alpha),
    ):
        with pytest.raises(ValueError, match=rf"alpha must be in \(0, 1\), got {alpha}"):
            call()


def test_unknown_bound():
    for call in (
        lambda: lower_confidence_bound(1, 2, 0.1, bound="wilson"),
        lambda: upper_confidence_bound(1, 2, 0.1, bound="wilson"),
        lambda: certify_counts([[1, 2]], 1.0, 0.1, bound="wilson"),
        lambda: max_radius(10, 0.1, bound="wilson"),
    ):
        with pytest.raises(ValueError, match=r"bound must be one of .*clopper-pearson.*hoeffding.*got 'wilson'"):
            call()


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda: certify_counts([[3, -1]], 1.0, 0.1), r"counts must be non-negative integers, got -1"),
        (lambda: certify_counts([[3, 1.5]], 1.0, 0.1), r"counts must be non-negative integers, got 1.5"),
        (lambda: certify_counts([3, 1], 1.0, 0.1), r"counts must be a 2-D array.*\(2,\)"),
        (lambda: certify_counts([[0, 0]], 1.0, 0.1), r"counts must have at least one vote per row, row 0"),
        (lambda: certify_counts([[3, 1]], 0.0, 0.1), r"sigma must be finite and > 0, got 0.0"),
        (lambda: certify_counts([[3, 1]], -0.5, 0.1), r"sigma must be finite and > 0, got -0.5"),
        (lambda: certify_counts([[3, 1]], [1.0, 2.0], 0.1), r"sigma must be a scalar or have shape \(1,\)"),
        (lambda: certify_counts([[3, 1]], 1.0, 0.1, n=3), r"n must be .*got 3"),
        (lambda: radius(0.8, 0.0), r"sigma must be finite and > 0, got 0.0"),
        (lambda: radius(1.2, 1.0), r"p_a_lower must be in \[0, 1\], got 1.2"),
        (lambda: radius(0.8, 1.0, p_b_upper=-0.1), r"p_b_upper must be in \[0, 1\], got -0.1"),
        (lambda: clopper_pearson_lower(5, 4, 0.1), r"k must be integers in \[0, n\], got 5.0"),
        (lambda: clopper_pearson_lower(2.5, 4, 0.1), r"k must be integers in \[0, n\], got 2.5"),
        (lambda: hoeffding_lower(-1, 4, 0.1), r"k must be numbers in \[0, n\], got -1.0"),
        (lambda: hoeffding_lower(1, 0, 0.1), r"n must be an integer >= 1, got 0"),
        (lambda: certify_scores([[1.5, 0.0]], 1.0, 0.1, 10), r"mean_scores must be in \[0, 1\], got 1.5"),
        (lambda: certified_accuracy([0], [0.1], [0], [-1.0]), r"radii must be finite and >= 0, got -1.0"),
        (lambda: certified_accuracy([0, 1], [0.1], [0, 1], [0.0]), r"pred, radius and y must be"),
    ],
)
def test_bad_input_raises_value_error_naming_parameter_and_value(call, pattern):
    with pytest.raises(ValueError, match=pattern):
        call()


def test_module_is_torch_free():
    source = open(stats.__file__, encoding="utf-8").read()
    assert "import torch" not in source and "statsmodels" not in source


def test_stats_stands_below_the_certificate():
    """stats is the bounds' module; the certificate (certification, counts) builds on it, never the other way."""
    from art_certssbd import counts

    imported = set()
    for node in ast.walk(ast.parse(open(stats.__file__, encoding="utf-8").read())):  # imports anywhere in stats
        if isinstance(node, ast.ImportFrom):
            imported |= {node.module or ""} | {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
    assert {"art_certssbd.certification", "art_certssbd.counts"}.isdisjoint(imported), imported
    assert "art_certssbd._validation.check_n" in imported  # the walk sees the imports
    assert "import torch" not in open(counts.__file__, encoding="utf-8").read()


# --- the table of bounds ----------------------------------------------------------------------------------------------
def test_bounds_are_the_names_of_the_table_and_the_table_is_read_only():
    assert BOUNDS == tuple(stats.BOUND_TABLE) == ("clopper-pearson", "hoeffding", "anytime")
    with pytest.raises(TypeError):
        stats.BOUND_TABLE["wilson"] = stats.BOUND_TABLE["hoeffding"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.BOUND_TABLE["hoeffding"].anytime = True  # type: ignore[misc]
    for bound in stats.BOUND_TABLE.values():
        assert bound.description and "\n" not in bound.description


def test_the_table_says_what_each_bound_assumes():
    table = stats.BOUND_TABLE
    assert (table["clopper-pearson"].lower, table["clopper-pearson"].upper) == (
        clopper_pearson_lower,
        clopper_pearson_upper,
    )
    assert (table["hoeffding"].lower, table["hoeffding"].upper) == (hoeffding_lower, hoeffding_upper)
    assert (table["anytime"].lower, table["anytime"].upper) == (stats.anytime_lower, stats.anytime_upper)
    assert [name for name, b in table.items() if b.binomial] == ["clopper-pearson"]
    assert [name for name, b in table.items() if b.anytime] == ["anytime"]
    assert [name for name, b in table.items() if b.allows_draws_per_model] == ["hoeffding"]


@pytest.mark.parametrize("bound", BOUNDS)
def test_every_bound_of_the_table_goes_through_the_named_bounds(bound):
    k, n, alpha = np.array([0, 3, 70, 100]), np.array([100, 10, 100, 100]), 0.05
    spec = stats.BOUND_TABLE[bound]
    low, high = lower_confidence_bound(k, n, alpha, bound), upper_confidence_bound(k, n, alpha, bound)
    np.testing.assert_array_equal(low, spec.lower(k, n, alpha))
    np.testing.assert_array_equal(high, spec.upper(k, n, alpha))
    assert np.all((0 <= low) & (low <= k / n) & (k / n <= high) & (high <= 1))
    assert max_radius(100, alpha, 1.0, bound) > 0
    # a fractional vote total is refused exactly by the binomial (integer-count) bounds
    if spec.binomial:
        with pytest.raises(ValueError, match=r"^k must be integers in \[0, n\], got 2\.5$"):
            lower_confidence_bound(2.5, 10, alpha, bound)
    else:
        assert 0 <= lower_confidence_bound(2.5, 10, alpha, bound) < 0.25


def test_the_named_bounds_dispatch_through_the_table(monkeypatch):
    """lower/upper_confidence_bound read BOUND_TABLE (no second list of names): a replaced entry is what they call."""
    fake = stats.Bound(lambda k, n, a: "low", lambda k, n, a: "high", False, False, False, "fake")
    monkeypatch.setattr(stats, "BOUND_TABLE", {**stats.BOUND_TABLE, "hoeffding": fake})
    assert lower_confidence_bound(3, 10, 0.05, "hoeffding") == "low"
    assert upper_confidence_bound(3, 10, 0.05, "hoeffding") == "high"
    with pytest.raises(ValueError, match=r"^bound must be one of \('clopper-pearson', 'hoeffding', 'anytime'\)"):
        lower_confidence_bound(3, 10, 0.05, "wilson")


@pytest.mark.parametrize("bound", BOUNDS)
def test_certify_scores_rounds_down_exactly_for_binomial_bounds(bound):
    # 0.7005 * 1000 = 700.5 votes: a binomial bound sees 700, the others the fractional total
    _, _, p_frac = certify_scores(np.array([[0.7005, 0.2995]]), 1.0, 0.01, 1000, bound=bound)
    _, _, p_whole = certify_scores(np.array([[0.7, 0.3]]), 1.0, 0.01, 1000, bound=bound)
    assert (p_frac[0] == p_whole[0]) == stats.BOUND_TABLE[bound].binomial
