"""Tests that kill mutants of the certification core, the sequential test, the memory and the bounds (issue 10's
mutation testing, ``tox -e mutation``): each checks behaviour against an independent reference (scipy, a closed
form, brute force), not against the code itself."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from scipy.special import ndtri
from scipy.stats import beta, norm

from art_certssbd import certification, confseq, sequential, stats
from art_certssbd.counts import certify_counts, certify_scores
from art_certssbd.stats import ABSTAIN


def _cp_lower(k, n, level):
    """Clopper-Pearson lower bound straight from scipy's beta quantile."""
    return 0.0 if k == 0 else beta.ppf(level, k, n - k + 1)


def _hoeffding(mean, m, level, upper=False):
    """Hoeffding bound on a mean of ``m`` [0, 1] variables, clipped to [0, 1]."""
    margin = np.sqrt(np.log(1 / level) / (2 * m))
    return float(np.clip(mean + margin if upper else mean - margin, 0, 1))


# --- certification.py: option checks ---------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -3, 1.5, True, "2", None])
@pytest.mark.parametrize("name", ["draws_per_model", "noise_copies"])
def test_counts_of_draws_and_copies_must_be_positive_integers_named_in_the_error(name, value):
    kwargs = {"bound": "hoeffding", name: value}
    with pytest.raises(ValueError, match=rf"^{name} must be an integer >= 1, got {value!r}$".replace("(", r"\(")):
        certification.check_options(**kwargs)


def test_check_options_normalises_its_values():
    out = certification.check_options("hoeffding", np.int64(3), np.int32(2), np.float32(0.25))
    assert out == ("hoeffding", 3, 2, 0.25)
    assert [type(v) for v in out] == [str, int, int, float]
    assert certification.check_options("clopper-pearson") == ("clopper-pearson", 1, 1, None)
    assert certification.check_options("clopper-pearson", 1) == ("clopper-pearson", 1, 1, None)
    with pytest.raises(ValueError, match=r"^draws_per_model=2 needs bound='hoeffding' .*got bound='clopper-pearson'$"):
        certification.check_options("clopper-pearson", 2)
    for bad in (0, -1.0, np.inf, np.nan):
        with pytest.raises(ValueError, match=rf"^train_sigma_min must be finite and > 0, got {bad}"):
            certification.check_options("hoeffding", 1, 1, bad)


def test_selection_level_closed_form():
    sl = certification.selection_level
    assert sl(0.1, 5) == pytest.approx(0.05)
    assert sl(0.1, 5, 1, soft=False) == pytest.approx(0.05)
    assert sl(0.1, 1, 2) == pytest.approx(0.05)  # max(2, C) with C = 1
    assert sl(0.1, 2, 2) == pytest.approx(0.05)
    assert sl(0.1, 5, 2) == pytest.approx(0.02)
    assert sl(0.1, 5, soft=True) == pytest.approx(0.02)
    assert sl(0.1, 1, soft=True) == pytest.approx(0.05)
    with pytest.raises(ValueError, match=r"^nb_classes must be an integer >= 1, got 0$"):
        sl(0.1, 0)
    with pytest.raises(ValueError, match=r"^draws_per_model must be an integer >= 1, got 0$"):
        sl(0.1, 3, 0)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 1.5"):
        sl(1.5, 3)


def test_vote_bound_against_scipy_and_hoeffding_over_members():
    level = 0.05
    # one draw per member: Clopper-Pearson (default) and Hoeffding on the votes
    assert certification.vote_bound(7, 10, level) == pytest.approx(_cp_lower(7, 10, level))
    assert certification.vote_bound(7, 10, level, "hoeffding") == pytest.approx(_hoeffding(0.7, 10, level))
    assert certification.vote_bound(7, 10, level, upper=True) == pytest.approx(beta.ppf(1 - level, 8, 3))
    # D = 2: Hoeffding over the 5 member fractions (mean 0.7)
    assert certification.vote_bound(7, 10, level, "hoeffding", 2) == pytest.approx(_hoeffding(0.7, 5, level))
    up = certification.vote_bound(7, 10, level, "hoeffding", 2, upper=True)
    assert up == pytest.approx(_hoeffding(0.7, 5, level, upper=True))
    got = certification.vote_bound(np.array([3, 8]), np.array([4, 8]), level, "hoeffding", 4)
    np.testing.assert_allclose(got, [_hoeffding(0.75, 1, level), _hoeffding(1.0, 2, level)])
    with pytest.raises(ValueError, match=r"^n must be a multiple of draws_per_model=2, got 7$"):
        certification.vote_bound(3, 7, level, "hoeffding", 2)
    with pytest.raises(ValueError, match="draws_per_model=3 needs bound='hoeffding'"):
        certification.vote_bound(3, 9, level, "clopper-pearson", 3)


def test_noise_sigma_closed_form():
    ns = certification.noise_sigma
    np.testing.assert_allclose(ns(np.array([0.5, 0.2])), [0.5, 0.2])
    np.testing.assert_allclose(ns(np.array([0.5, 0.2]), train_sigma_min=0.3), [0.5, 0.2])  # not conservative
    np.testing.assert_allclose(ns(np.array([0.5, 0.2]), train_sigma_min=0.3, conservative=True), [0.3, 0.2])
    np.testing.assert_allclose(ns(np.array([0.5, 0.2]), conservative=True), [0.5, 0.2])
    np.testing.assert_allclose(ns(0.6, train_sigma_min=0.3, noise_copies=4, conservative=True), 0.15)
    np.testing.assert_allclose(ns(0.6, noise_copies=9), 0.2)
    with pytest.raises(ValueError, match=r"^sigma must be finite and > 0, got 0.0$"):
        ns(0.0)
    with pytest.raises(ValueError, match=r"^noise_copies must be an integer >= 1, got 0$"):
        ns(1.0, noise_copies=0)


@pytest.mark.parametrize(
    "counts, n, pattern",
    [
        ([1, 2], None, r"^counts must be a 2-D array \(N, C\) with C >= 1, got shape \(2,\)$"),
        (np.zeros((2, 0)), None, r"^counts must be a 2-D array \(N, C\) with C >= 1, got shape \(2, 0\)$"),
        ([[1, -1]], None, r"^counts must be non-negative integers, got -1$"),
        ([[1, 0.5]], None, r"^counts must be non-negative integers, got 0.5$"),
        ([[1, np.nan]], None, r"^counts must be non-negative integers, got nan$"),
        ([[1, np.inf]], None, r"^counts must be non-negative integers, got inf$"),
        ([[1, 1], [0, 0]], None, r"^counts must have at least one vote per row, row 1 has none$"),
        ([[1, 1], [2, 3]], 4, r"^n must be a scalar or \(N,\) array >= the row sums of counts, got 4$"),
        ([[1, 1], [2, 3]], [5, 5, 5], r"^n must be a scalar or \(N,\) array >= the row sums of counts, got \[5 5 5\]$"),
        ([[1, 1], [2, 3]], [[5, 5]], r"^n must be a scalar or \(N,\) array >= the row sums of counts"),
        ([[1, 1], [2, 3]], 0, r"^n must be an integer >= 1, got 0"),
    ],
)
def test_bad_counts_and_n_are_named_with_their_value(counts, n, pattern):
    with pytest.raises(ValueError, match=pattern):
        certification.certify_votes(counts, 0.5, alpha=0.1, n=n)


def test_explicit_n_equal_to_the_row_sums_and_a_zero_row_with_n():
    res = certification.certify_votes([[9, 1], [0, 0]], 1.0, alpha=0.1, n=10)
    assert res.p_a_lower[0] == pytest.approx(_cp_lower(9, 10, 0.05))
    assert res.p_a_lower[1] == 0.0 and res.pred[1] == ABSTAIN
    np.testing.assert_array_equal(res.pred, res.pred_before_memory)
    res = certification.certify_votes([[9, 1], [3, 5]], 1.0, alpha=0.1, n=np.array([10, 8]))
    assert res.p_a_lower[1] == pytest.approx(_cp_lower(5, 8, 0.05))


def test_certificate_fields_against_closed_forms():
    counts = np.array([[95, 5, 0], [40, 45, 15], [0, 0, 100]], dtype=np.int32)
    sigma = np.array([0.5, 0.25, 1.0], dtype=np.float32)
    res = certification.certify_votes(counts, sigma, alpha=0.002, train_sigma_min=0.3)
    level = 0.001
    p = [_cp_lower(95, 100, level), _cp_lower(45, 100, level), _cp_lower(100, 100, level)]
    np.testing.assert_allclose(res.p_a_lower, p)
    assert res.p_a_lower.dtype == np.float64
    np.testing.assert_array_equal(res.pred, [0, ABSTAIN, 2])
    assert res.pred.dtype == np.int64
    want = [0.5 * norm.ppf(p[0]), 0.0, 1.0 * norm.ppf(p[2])]
    np.testing.assert_allclose(res.radius, want, rtol=1e-6)
    np.testing.assert_allclose(res.radius_conservative, [0.3 * norm.ppf(p[0]), 0.0, 0.3 * norm.ppf(p[2])], rtol=1e-6)
    assert res.radius.dtype == np.float64 and res.radius_conservative.dtype == np.float64
    np.testing.assert_array_equal(res.votes, counts)
    assert res.votes.dtype == np.int64
    np.testing.assert_allclose(res.sigma, sigma)
    assert res.sigma.dtype == np.float64
    assert res.pred_before_memory is not res.pred
    np.testing.assert_array_equal(res.pred_before_memory, res.pred)


def test_a_tie_abstains_and_the_tie_level_is_half_alpha():
    res = certification.certify_votes([[0, 60, 60]], 1.0, alpha=0.2, bound="hoeffding")
    assert res.pred[0] == ABSTAIN and res.radius[0] == 0
    assert res.p_a_lower[0] == pytest.approx(_hoeffding(0.5, 120, 0.1))
    res = certification.certify_votes([[0, 9, 90]], 1.0, alpha=0.2, n=100)
    assert res.pred[0] == 2
    assert res.p_a_lower[0] == pytest.approx(_cp_lower(90, 100, 0.1))


def test_certify_at_level_uses_the_level_as_given():
    res = certification.certify_at_level([[80, 20]], 1.0, level=0.05, options=certification.CertificateOptions())
    assert res.p_a_lower[0] == pytest.approx(_cp_lower(80, 100, 0.05))
    assert res.radius[0] == pytest.approx(norm.ppf(_cp_lower(80, 100, 0.05)))  # one noise copy by default
    res = certification.certify_at_level(
        [[80, 20, 0]], 1.0, level=0.05, options=certification.check_options("hoeffding", 4)
    )
    assert res.p_a_lower[0] == pytest.approx(_hoeffding(0.8, 25, 0.05))
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 0"):
        certification.certify_at_level([[80, 20]], 1.0, level=0, options=certification.CertificateOptions())
    with pytest.raises(ValueError, match=r"sigma must be a scalar or have shape \(1,\), got shape \(2,\)"):
        certification.certify_at_level([[80, 20]], [1.0, 2.0], level=0.05, options=certification.CertificateOptions())


def test_several_draws_and_classes_bound_at_alpha_over_c():
    res = certification.certify_votes([[30, 60, 10]], 1.0, alpha=0.3, bound="hoeffding", draws_per_model=2)
    assert res.p_a_lower[0] == pytest.approx(_hoeffding(0.6, 50, 0.1))
    res = certification.certify_votes([[30, 60, 10]], 1.0, alpha=0.3, bound="hoeffding", noise_copies=4)
    assert res.p_a_lower[0] == pytest.approx(_hoeffding(0.6, 100, 0.15))
    assert res.radius[0] == pytest.approx(norm.ppf(res.p_a_lower[0]) / 2)


# --- sequential.py: schedule, levels, checks ----------------------------------------------------------------------


def test_look_schedule_closed_forms():
    np.testing.assert_array_equal(sequential.look_schedule(1000), [32, 64, 128, 256, 512, 1000])
    np.testing.assert_array_equal(sequential.look_schedule(64), [32, 64])
    np.testing.assert_array_equal(sequential.look_schedule(32), [32])
    np.testing.assert_array_equal(sequential.look_schedule(20), [20])  # first beyond n_max: one look
    np.testing.assert_array_equal(sequential.look_schedule(100, first=10, growth=3.0), [10, 30, 90, 100])
    np.testing.assert_array_equal(sequential.look_schedule(6, first=2, growth=1.1), [2, 3, 4, 5, 6])  # at least +1
    np.testing.assert_array_equal(sequential.look_schedule(12, first=4, growth=1.5), [4, 6, 9, 12])
    assert sequential.look_schedule(1000).dtype == np.int64
    with pytest.raises(ValueError, match=r"^n_max must be an integer >= 1, got 0$"):
        sequential.look_schedule(0)
    with pytest.raises(ValueError, match=r"^first must be an integer >= 1, got 2.0$"):
        sequential.look_schedule(10, first=2.0)
    with pytest.raises(ValueError, match=r"^n_max must be an integer >= 1, got True$"):
        sequential.look_schedule(True)
    with pytest.raises(ValueError, match=r"^growth must be > 1, got 1.0$"):
        sequential.look_schedule(10, growth=1.0)
    np.testing.assert_array_equal(sequential.look_schedule(np.int64(8), first=np.int32(4)), [4, 8])


def test_spending_levels_closed_forms():
    sl = sequential.spending_levels
    np.testing.assert_allclose(sl(0.1, 4), [0.025] * 4)
    np.testing.assert_allclose(sl(0.1, 4, "uniform"), [0.025] * 4)
    np.testing.assert_allclose(sl(0.1, 3, "final-half"), [0.025, 0.025, 0.05])
    np.testing.assert_allclose(sl(0.1, 2, "final-half"), [0.05, 0.05])
    np.testing.assert_allclose(sl(0.1, 1, "final-half"), [0.1])
    np.testing.assert_allclose(sl(0.1, 3, [1, 2, 7]), [0.01, 0.02, 0.07])
    np.testing.assert_allclose(sl(0.1, 1, [3.0]), [0.1])
    np.testing.assert_allclose(sl(0.1, 3, [Fraction(1), Fraction(2), Fraction(7)]), [0.01, 0.02, 0.07])
    with pytest.raises(
        ValueError,
        match=r"^spending must be one of \('uniform', 'final-half'\) or an array of "
        r"weights, got 'half'$",
    ):
        sl(0.1, 3, "half")
    with pytest.raises(ValueError, match=r"spending weights must be 3 finite positive numbers.*got spending=\[1, 2\]$"):
        sl(0.1, 3, [1, 2])
    with pytest.raises(ValueError, match=r"got spending=\[1, inf, 1\]$"):
        sl(0.1, 3, [1, np.inf, 1])
    with pytest.raises(ValueError, match=r"got spending=\[1, -1, 1\]$"):
        sl(0.1, 3, [1, -1, 1])
    with pytest.raises(ValueError, match=r"^nb_looks must be an integer >= 1, got 0$"):
        sl(0.1, 0)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 0"):
        sl(0, 3)


def test_check_looks():
    out = sequential.check_looks(np.array([2, 4, 8], dtype=np.int32), 8, 2)
    np.testing.assert_array_equal(out, [2, 4, 8])
    assert out.dtype == np.int64
    np.testing.assert_array_equal(sequential.check_looks([1], 1), [1])
    np.testing.assert_array_equal(sequential.check_looks([5, 7]), [5, 7])
    np.testing.assert_array_equal(sequential.check_looks([1, 2, 3], 3), [1, 2, 3])
    for bad in ([], np.array([], dtype=np.int64), [[1, 2]], [1.0, 2.0]):
        with pytest.raises(ValueError, match=r"^looks must be a non-empty 1-D array of integers, got "):
            sequential.check_looks(bad)
    with pytest.raises(ValueError, match=r"^looks must increase strictly within \[1, 8\], got \[0, 4\]$"):
        sequential.check_looks([0, 4], 8)
    with pytest.raises(ValueError, match=r"^looks must increase strictly within \[1, 8\], got \[4, 9\]$"):
        sequential.check_looks([4, 9], 8)
    with pytest.raises(ValueError, match=r"^looks must increase strictly from 1, got \[4, 4\]$"):
        sequential.check_looks([4, 4])
    with pytest.raises(ValueError, match=r"^looks must increase strictly from 1, got \[4, 3\]$"):
        sequential.check_looks([4, 3])
    with pytest.raises(ValueError, match=r"^looks must be multiples of draws_per_model=3 \(.*\), got \[3, 5\]$"):
        sequential.check_looks([3, 5], None, 3)


def test_check_radius_and_threshold():
    assert sequential.check_radius(2) == 2.0 and type(sequential.check_radius(2)) is float
    assert sequential.check_radius(np.float32(0.5)) == 0.5
    assert sequential.check_radius(0) == 0.0
    for bad in (True, "1", np.nan, np.inf, None):
        with pytest.raises(ValueError, match=rf"^radius must be a finite number >= 0, got {bad!r}$"):
            sequential.check_radius(bad)
    with pytest.raises(ValueError, match=r"^radius must be a finite number >= 0, got -0.5$"):
        sequential.check_radius(-0.5)
    np.testing.assert_allclose(sequential.threshold_probability(0.3, [0.5, 1.0]), norm.cdf([0.6, 0.3]))
    assert sequential.threshold_probability(0.0, 2.0) == 0.5


# --- sequential.py: run_sequential against an independent reference -----------------------------------------------


def _bound(k, n, level, bound, draws, upper=False):
    if draws > 1 or bound == "hoeffding":
        return _hoeffding(k / n, n // draws, level, upper)
    if upper:
        return 1.0 if k == n else beta.ppf(1 - level, k + 1, n - k)
    return _cp_lower(k, n, level)


def _reference(votes, sigma, r, alpha, looks, levels, futility, bound, draws, tsm, copies, conservative):
    """One input, written from the module docstring with scipy: (pred, radius_bound, p_low, used, decided, counts)."""
    nb_classes = votes.max() + 1 if votes.size else 2
    s = min(sigma, tsm) if conservative and tsm is not None else sigma
    s /= np.sqrt(copies)
    p_r = norm.cdf(r / s)
    for t, n_t in enumerate(looks):
        counts = np.bincount(votes[:n_t], minlength=max(nb_classes, 3))
        top = int(np.argmax(counts))
        k = int(counts[top])
        p_low = _bound(k, n_t, levels[t], bound, draws)
        rad = s * norm.ppf(p_low) if p_low > 0.5 else 0.0
        if p_low > 0.5 and rad >= r:
            return top, rad, p_low, n_t, t, counts
        if t == len(looks) - 1:
            return ABSTAIN, 0.0, p_low, n_t, t, counts
        best = max(_bound(k + n_s - n_t, n_s, a_s, bound, draws) for n_s, a_s in zip(looks[t + 1 :], levels[t + 1 :]))
        hopeless = best <= 0.5 or s * norm.ppf(best) < r
        if futility is not None:
            hopeless |= _bound(k, n_t, futility, bound, draws, upper=True) < p_r
        if hopeless:
            return ABSTAIN, 0.0, p_low, n_t, t, counts


CASES = [
    # bound, draws, futility, conservative, tsm, copies, spending, looks
    ("clopper-pearson", 1, 0.01, False, None, 1, "uniform", [20, 40, 80, 160]),
    ("clopper-pearson", 1, None, True, 0.3, 1, "final-half", [20, 40, 80, 160]),
    ("clopper-pearson", 1, 0.2, False, 0.3, 2, [1, 1, 2, 4], [20, 40, 80, 160]),
    ("hoeffding", 1, 0.05, True, 0.3, 1, "uniform", [40, 80, 160]),
    ("hoeffding", 2, 0.05, False, None, 1, "final-half", [20, 40, 80, 160]),
    ("hoeffding", 4, None, True, 0.45, 1, "uniform", [40, 160, 400]),
    ("clopper-pearson", 1, 0.01, False, None, 4, "uniform", [50, 100, 400]),
]


@pytest.mark.parametrize("case, r", [(c, 0.25) for c in range(len(CASES))] + [(0, 0.0), (4, 0.0)])
def test_run_sequential_matches_a_reference_written_with_scipy(case, r):
    bound, draws, futility, conservative, tsm, copies, spending, looks = CASES[case]
    rng = np.random.default_rng(case)
    nb, n_max, nb_classes = 40, looks[-1], 3
    p_top = rng.uniform(0.3, 1.0, nb)
    sigma = rng.uniform(0.3, 0.6, nb)
    probs = np.stack([p_top, (1 - p_top) * 0.6, (1 - p_top) * 0.4], axis=1)
    votes = np.array([rng.choice(nb_classes, n_max, p=p) for p in probs])
    votes[0] = 1  # unanimous for class 1
    votes[1, : n_max // 2], votes[1, n_max // 2 :] = 0, 1  # a tie, first half class 0
    calls = []

    def draw(idx, start, stop):
        calls.append((idx.copy(), start, stop))
        return np.stack([np.bincount(votes[i, start:stop], minlength=nb_classes) for i in idx])

    out = sequential.run_sequential(
        draw,
        nb,
        sigma,
        r,
        0.1,
        np.array(looks),
        spending=spending,
        futility_alpha=futility,
        bound=bound,
        draws_per_model=draws,
        train_sigma_min=tsm,
        noise_copies=copies,
        conservative=conservative,
    )
    if isinstance(spending, str):
        w = np.ones(len(looks)) if spending == "uniform" else np.r_[np.full(len(looks) - 1, 1 / (len(looks) - 1)), 1]
    else:
        w = np.asarray(spending, dtype=float)
    total = 0.1 / 2 if draws == 1 else 0.1 / nb_classes
    levels = total * w / w.sum()
    np.testing.assert_allclose(out.levels, levels)
    np.testing.assert_array_equal(out.looks, looks)
    assert out.radius == r and len(out) == nb
    for i in range(nb):
        pred, rad, p_low, used, decided, counts = _reference(
            votes[i], sigma[i], r, 0.1, looks, levels, futility, bound, draws, tsm, copies, conservative
        )
        assert out.pred[i] == pred, i
        assert out.certified[i] == (pred != ABSTAIN)
        assert out.radius_bound[i] == pytest.approx(rad, rel=1e-9, abs=1e-12), i
        assert out.p_a_lower[i] == pytest.approx(p_low, rel=1e-9, abs=1e-12), i
        assert out.votes_used[i] == used and out.decided_at[i] == decided, i
        np.testing.assert_array_equal(out.counts[i], counts[:nb_classes])
    assert out.total_votes == out.votes_used.sum()
    # each input is asked for consecutive slices, only while undecided
    for i in range(nb):
        slices = [(a, b) for idx, a, b in calls if i in idx]
        assert slices == [(int(looks[t - 1]) if t else 0, int(looks[t])) for t in range(out.decided_at[i] + 1)]
    assert out.certified.dtype == bool
    for field in (out.pred, out.votes_used, out.decided_at, out.counts, out.looks):
        assert field.dtype == np.int64


def test_run_sequential_without_inputs_and_its_errors():
    out = sequential.run_sequential(lambda idx, a, b: None, 0, 1.0, 0.5, 0.1, [10, 20])
    assert len(out) == 0 and out.counts.shape == (0, 2) and out.total_votes == 0
    assert out.counts.dtype == np.int64 and out.pred.dtype == np.int64
    np.testing.assert_allclose(out.levels, [0.025, 0.025])
    out = sequential.run_sequential(
        lambda idx, a, b: None, 0, 1.0, 0.5, 0.3, [4, 8], bound="hoeffding", draws_per_model=2, spending="final-half"
    )
    np.testing.assert_allclose(out.levels, [0.075, 0.075])
    out = sequential.run_sequential(lambda idx, a, b: None, 0, 1.0, 0.5, 0.2, [4, 8, 12], spending="final-half")
    np.testing.assert_allclose(out.levels, [0.025, 0.025, 0.05])
    draw = lambda idx, a, b: np.tile([b - a, 0], (len(idx), 1))  # noqa: E731
    with pytest.raises(ValueError, match=r"^nb_inputs must be an integer >= 0, got -1$"):
        sequential.run_sequential(draw, -1, 1.0, 0.5, 0.1, [10])
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 2"):
        sequential.run_sequential(draw, 1, 1.0, 0.5, 0.1, [10], futility_alpha=2)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 0"):
        sequential.run_sequential(draw, 1, 1.0, 0.5, 0, [10])
    with pytest.raises(ValueError, match=r"radius must be a finite number >= 0, got -1"):
        sequential.run_sequential(draw, 1, 1.0, -1, 0.1, [10])
    # a unanimous input is certified at the first look whose bound reaches r
    out = sequential.run_sequential(draw, 2, 1.0, 0.5, 0.1, [10, 20, 40, 80])
    p = [_cp_lower(n, n, 0.0125) for n in (10, 20, 40, 80)]
    first = next(t for t, q in enumerate(p) if norm.ppf(q) >= 0.5)
    assert (out.decided_at == first).all() and (out.pred == 0).all()
    np.testing.assert_allclose(out.radius_bound, norm.ppf(p[first]))


def test_run_sequential_certifies_a_radius_reached_exactly_and_counts_votes_that_went_nowhere():
    level = 0.1 / 2
    p = beta.ppf(level, 10, 1)  # 10 of 10 votes
    r = 1.0 / 2.0 * (ndtri(p) - ndtri(1 - p))  # the radius exactly as the certificate computes it
    out = sequential.run_sequential(lambda idx, a, b: np.tile([b - a, 0], (len(idx), 1)), 1, 1.0, r, 0.1, [10])
    assert out.certified[0] and out.radius_bound[0] == r
    # float counts from the draw function are accepted; votes that went nowhere count against the top class
    nowhere = sequential.run_sequential(
        lambda idx, a, b: np.tile([b - a - 2.0, 0.0], (len(idx), 1)), 1, 1.0, 0.1, 0.1, [20, 40]
    )
    assert nowhere.p_a_lower[0] == pytest.approx(_cp_lower(nowhere.counts[0, 0], nowhere.votes_used[0], 0.025))
    assert nowhere.counts[0, 0] == nowhere.votes_used[0] - 2 * (nowhere.decided_at[0] + 1)


def _unanimous(idx, start, stop):
    return np.tile([stop - start, 0], (len(idx), 1))


def test_an_input_whose_best_case_reaches_r_exactly_goes_on_to_the_next_look():
    levels = [0.1 / 2 / 2] * 2
    p = beta.ppf(levels[1], 20.0, 1.0)  # all 20 votes at the last look
    r = 1.0 / 2.0 * (ndtri(p) - ndtri(1 - p))
    assert beta.ppf(levels[0], 10.0, 1.0) < p  # not certified at the first look
    out = sequential.run_sequential(_unanimous, 1, 1.0, r, 0.1, [10, 20], futility_alpha=None)
    assert out.certified[0] and out.decided_at[0] == 1 and out.radius_bound[0] == r


def test_futility_stops_only_when_the_upper_bound_is_strictly_below_p_r():
    upper = beta.ppf(1.0 - 0.01, 9.0, 2.0)  # Clopper-Pearson upper bound of 8 of 10 votes at level 0.01
    r = float(norm.ppf(upper))
    assert norm.cdf(r) == upper  # p_r equals the upper bound exactly: not futile

    def draw(idx, start, stop):
        return np.tile([8, 2] if start == 0 else [stop - start, 0], (len(idx), 1))

    out = sequential.run_sequential(draw, 1, 1.0, r, 0.1, [10, 1000], futility_alpha=0.01)
    assert out.decided_at[0] == 1 and out.votes_used[0] == 1000
    # just above: futile at the first look
    out = sequential.run_sequential(draw, 1, 1.0, r * (1 + 1e-9), 0.1, [10, 1000], futility_alpha=0.01)
    assert out.decided_at[0] == 0 and out.votes_used[0] == 10 and not out.certified[0]


def test_a_bound_of_exactly_one_half_abstains():
    # Hoeffding: 6 of 8 votes, margin sqrt(ln(e) / 16) = 1/4, so the bound is 0.75 - 0.25 = 1/2 exactly
    res = certification.certify_at_level(
        [[6, 2]], 1.0, level=float(np.exp(-1)), options=certification.check_options("hoeffding")
    )
    assert res.p_a_lower[0] == 0.5
    assert res.pred[0] == ABSTAIN and res.radius[0] == 0 and res.radius_conservative[0] == 0


def test_debug_logs_say_how_many_were_certified(caplog):
    with caplog.at_level("DEBUG", logger="art_certssbd"):
        certification.certify_votes([[95, 5], [50, 50], [100, 0]], 1.0, alpha=0.1)
        sequential.run_sequential(_unanimous, 3, 1.0, 0.5, 0.1, [10, 20, 40])
    messages = [r.getMessage() for r in caplog.records]
    assert "certified 2 of 3 inputs (clopper-pearson, level 0.05)" in messages
    assert "sequential: 3 of 3 certified, 60 votes" in messages


def test_one_class_and_per_row_n_with_more_classes_than_rows():
    res = certification.certify_votes([[10], [7]], 1.0, alpha=0.1)
    np.testing.assert_array_equal(res.pred, [0, 0])
    np.testing.assert_allclose(res.p_a_lower, [_cp_lower(10, 10, 0.05), _cp_lower(7, 7, 0.05)])
    res = certification.certify_votes([[8, 1, 1], [0, 9, 0]], 1.0, alpha=0.1, n=np.array([12, 9]))
    np.testing.assert_allclose(res.p_a_lower, [_cp_lower(8, 12, 0.05), _cp_lower(9, 9, 0.05)])


# --- stats.py ------------------------------------------------------------------------------------------------------


def test_certify_scores_edges():
    from art_certssbd.stats import certified_accuracy

    with pytest.raises(ValueError, match=r"^n must be a scalar integer >= 1, got \[10 10\]$"):
        certify_scores([[0.5, 0.5]], 1.0, 0.1, [10, 10])
    with pytest.raises(ValueError, match=r"^mean_scores must be a 2-D array \(N, C\) with C >= 1, got shape \(2,\)$"):
        certify_scores([0.5, 0.5], 1.0, 0.1, 10)
    pred, _, p = certify_scores([[1.0]], 1.0, 0.1, 100)  # one class
    assert pred[0] == 0 and p[0] == pytest.approx(_hoeffding(1.0, 100, 0.05))
    # scores within the slack outside [0, 1] are accepted and clipped
    pred, _, p = certify_scores([[1.0 + 1e-9, -1e-9]], 1.0, 0.1, 100)
    assert pred[0] == 0 and p[0] == pytest.approx(_hoeffding(1.0, 100, 0.05))
    pred, _, p = certify_scores([[-1e-9, -1e-9]], 1.0, 0.1, 100)
    assert pred[0] == ABSTAIN and p[0] == 0
    pred, _, p = certify_scores([[0.0, 0.0]], 1.0, 0.1, 1, bound="clopper-pearson")
    assert pred[0] == ABSTAIN and p[0] == 0
    # soft votes: the top class bounded at alpha / max(2, C)
    _, _, p = certify_scores([[0.9, 0.05, 0.05]], 1.0, 0.3, 100)
    assert p[0] == pytest.approx(_hoeffding(0.9, 100, 0.1))
    with pytest.raises(ValueError, match=r"^pred, radius and y must be non-empty 1-D arrays"):
        certified_accuracy([[0]], [[0.1]], [[0]], [0.0])


# --- art_certssbd.stats ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: stats.radius(0.9, -1), r"sigma must be finite and > 0, got -1\.0"),
        (lambda: stats.radius(2, 1.0), r"p_a_lower must be in \[0, 1\], got 2\.0"),
        (lambda: stats.clopper_pearson_upper(2.5, 10, 0.05), r"k must be integers in \[0, n\], got 2\.5"),
        (lambda: stats.clopper_pearson_lower(0, 0, 0.05), r"n must be an integer >= 1, got 0\.0"),
        (
            lambda: certify_counts(np.array([[5, 1]] * 3), np.ones((3, 1)), 0.05),
            r"sigma must be a scalar or have shape \(3,\), got shape \(3, 1\)",
        ),
    ],
)
def test_stats_refusals_name_the_value_as_a_float(call, message):
    with pytest.raises(ValueError, match="^" + message + "$"):
        call()


def test_the_anytime_bounds_through_the_dispatchers_take_soft_votes():
    """``bound="anytime"`` goes to the confidence sequence, for fractional vote sums too (soft votes)."""
    for k in (2.5, 7.0):
        assert stats.upper_confidence_bound(k, 10, 0.05, "anytime") == confseq.upper(k, 10, 0.05)
        assert stats.lower_confidence_bound(k, 10, 0.05, "anytime") == confseq.lower(k, 10, 0.05)
    assert stats.upper_confidence_bound(7, 10, 0.05, "anytime") > stats.upper_confidence_bound(7, 10, 0.05)


def test_certify_at_level_refuses_options_that_were_not_checked():
    with pytest.raises(TypeError, match=r"options must be a CertificateOptions \(from check_options\), got"):
        certification.certify_at_level([[80, 20]], 1.0, level=0.05, options={"bound": "hoeffding"})
    # the NamedTuple's defaults are the certificate's documented defaults
    assert certification.CertificateOptions() == certification.check_options("clopper-pearson")
