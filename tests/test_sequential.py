"""The sequential test (art_certssbd.sequential): the schedule, the error guarantee in simulation (independent votes,
and members whose draws vote alike), agreement with the fixed-n certificate, refused options, the anytime bound's
looks against the confidence sequence itself, and the storage-update memory on the answers (apply_memory_adaptive)
against the geometry worked out by hand. Numpy (and a small CPU memory) only: fast."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom, norm
from simulation import bernoulli_draw, member_draw

from art_certssbd import certification, confseq, stats
from art_certssbd.memory import CertificationMemory
from art_certssbd.sequential import (
    AdaptiveResult,
    apply_memory_adaptive,
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


# ------------------------------------------------------------------ the anytime bound over several looks (issue 22)
def _periodic_draw(patterns, nb_classes):
    """Votes with known counts: vote ``j`` of input ``i`` goes to class ``patterns[i][j % len(patterns[i])]``."""

    def draw(idx, start, stop):
        out = np.zeros((len(idx), nb_classes), dtype=np.int64)
        for row, i in enumerate(idx):
            pattern = patterns[i]
            for j in range(start, stop):
                out[row, pattern[j % len(pattern)]] += 1
        return out

    return draw


ANYTIME_LOOKS = [10, 40, 160, 640]
# input 0 votes class 2 every time; input 1 class 0 three times in four (else 1); input 2 classes 0 and 1 in turn
ANYTIME_PATTERNS = [[2], [0, 0, 0, 1], [0, 1]]


def _top_votes(pattern, n):
    return max(sum(1 for j in range(n) if pattern[j % len(pattern)] == c) for c in set(pattern))


@pytest.mark.parametrize(
    "radius, futility_alpha, decided",
    [
        # r = 2: input 0 reaches r only with all 640 votes (radius 2.35 there, 1.83 at 160), so a look that stopped
        # it early as "impossible" from a look before the last would lose it; inputs 1 and 2 cannot reach r
        (2.0, 0.01, [3, 1, 0]),
        # r = 1: input 0 is certified at the second look (1.19 >= 1 > 0.33); input 2 stops on futility at look 1
        (1.0, 0.01, [1, 3, 1]),
        # ... and without futility only once even all remaining votes could not reach r (look 2)
        (1.0, None, [1, 3, 2]),
    ],
)
def test_anytime_looks_against_the_confidence_sequence(radius, futility_alpha, decided):
    """bound="anytime" with three classes: every look tests at the whole level alpha / 3 (no spending), an input is
    certified at the first look where confseq.lower of its top class reaches r, and it stops early when even all
    remaining votes to the top class could not reach r at the *last* look, or (futility) when confseq.upper is below
    Phi(r / sigma). The expected decisions come from confseq directly, look by look."""
    alpha, sigma, looks = 0.06, 1.0, ANYTIME_LOOKS
    level = alpha / 3  # alpha / max(2, C) for each class's sequence (the union over the three classes is alpha)
    res = run_sequential(
        _periodic_draw(ANYTIME_PATTERNS, 3),
        3,
        sigma,
        radius,
        alpha,
        looks,
        bound="anytime",
        futility_alpha=futility_alpha,
    )
    np.testing.assert_array_equal(res.levels, np.full(len(looks), level))
    for i, pattern in enumerate(ANYTIME_PATTERNS):
        # the rule of the module docstring, from the confidence sequence itself
        for t, n in enumerate(looks):
            k = _top_votes(pattern, n)
            lower = float(confseq.lower(k, n, level))
            if lower > 0.5 and sigma * norm.ppf(lower) >= radius:
                certified = True
                break
            best = float(confseq.lower(k + looks[-1] - n, looks[-1], level))
            futile = futility_alpha is not None and confseq.upper(k, n, futility_alpha) < norm.cdf(radius / sigma)
            if t == len(looks) - 1 or best <= 0.5 or sigma * norm.ppf(best) < radius or futile:
                certified = False
                break
        assert res.decided_at[i] == t == decided[i], i
        assert res.votes_used[i] == n
        assert res.certified[i] == certified
        assert res.p_a_lower[i] == pytest.approx(lower, abs=1e-12)
        assert res.counts[i].sum() == n and res.counts[i].max() == k
        if certified:
            assert res.pred[i] == pattern[0]
            assert res.radius_bound[i] == pytest.approx(sigma * norm.ppf(lower), abs=1e-9)
        else:
            assert res.pred[i] == stats.ABSTAIN and res.radius_bound[i] == 0.0


def test_anytime_with_two_classes_tests_every_look_at_half_alpha():
    res = run_sequential(_unanimous, 2, 0.5, 0.1, 0.05, [10, 20, 40], bound="anytime", futility_alpha=None)
    np.testing.assert_array_equal(res.levels, [0.025, 0.025, 0.025])
    t = res.decided_at[0]
    assert t == int(np.argmax(0.5 * norm.ppf(confseq.lower(np.array([10, 20, 40]), [10, 20, 40], 0.025)) >= 0.1))


def test_the_anytime_lower_bound_never_falls_as_votes_for_the_class_are_added():
    """What makes looking only at the last look (instead of every later look) the same stop for the anytime bound:
    ``confseq.lower(k + m, n + m)`` is non-decreasing in ``m`` (every added vote is for the class), so the best of the
    later looks is the last one. Checked on a grid of small counts, where the sequence moves most."""
    m = np.arange(0, 120)
    for level in (0.05 / 2, 0.05 / 3, 1e-3):
        for n in range(1, 41):
            k = np.arange(0, n + 1)[:, None]
            lower = confseq.lower(k + m, n + m, level)
            assert np.all(np.diff(lower, axis=1) >= 0), (level, n)


def test_impossible_counts_every_later_look_under_clopper_pearson():
    """Under a split bound a later look that is not the last can be the one that certifies: here the spending gives
    the last look almost nothing (level 1.25e-14), so with 21 votes it cannot certify even if unanimous, while the
    second look (level 0.0125, 20 votes) can. The input must not be stopped as hopeless at the first look. With all
    votes for class 1 the Clopper-Pearson bound is the closed form level^(1/n)."""
    alpha, sigma, radius, looks, weights = 0.05, 1.0, 0.5, [10, 20, 21], [1.0, 1.0, 1e-12]
    levels = alpha / 2 * np.array(weights) / sum(weights)
    lower = levels ** (1.0 / np.array(looks))  # [0.645, 0.803, 0.218]
    assert sigma * norm.ppf(lower[0]) < radius <= sigma * norm.ppf(lower[1]) and lower[2] < 0.5
    res = run_sequential(_unanimous, 1, sigma, radius, alpha, looks, spending=weights, futility_alpha=None)
    np.testing.assert_allclose(res.levels, levels, rtol=1e-12)
    assert res.certified[0] and res.pred[0] == 1 and res.decided_at[0] == 1 and res.votes_used[0] == 20
    assert res.p_a_lower[0] == pytest.approx(lower[1], rel=1e-9)
    assert res.radius_bound[0] == pytest.approx(sigma * norm.ppf(lower[1]), rel=1e-9)


def _never(idx, start, stop):
    raise AssertionError("no votes may be drawn for an empty batch")


@pytest.mark.parametrize(
    "bound, nb_classes, level",
    [("anytime", 3, 0.06 / 3), ("anytime", None, 0.06 / 2), ("clopper-pearson", 3, 0.06 / 2 / 2)],
)
def test_an_empty_batch_draws_nothing_and_reports_the_levels_of_its_classes(bound, nb_classes, level):
    extra = {} if nb_classes is None else {"nb_classes": nb_classes}
    res = run_sequential(_never, 0, 1.0, 0.1, 0.06, [10, 20], bound=bound, **extra)
    assert res.counts.shape == (0, nb_classes or 2) and res.counts.dtype == np.int64
    np.testing.assert_allclose(res.levels, [level, level], rtol=1e-12)
    assert len(res) == 0 and res.total_votes == 0 and res.pred.dtype == np.int64
    with pytest.raises(ValueError, match="nb_classes must be an integer >= 1, got 0"):
        run_sequential(_never, 0, 1.0, 0.1, 0.06, [10, 20], bound=bound, nb_classes=0)


# --------------------------------------------------- the storage-update memory on the answers (apply_memory_adaptive)
def _answers(points, radius, *, sigma=1.0, conservative_sigma=None, copies=1, abstain=()):
    """Answers of run_sequential "certified at ``radius``" for ``points`` = [(x, pred, paper radius R)], as the
    sequential test reports them: ``p_a_lower = Phi(R / s)`` with ``s = sigma / sqrt(E)``, ``radius_bound`` the radius
    of the kind tested (the paper's R, or with ``conservative_sigma`` that sigma's); rows in ``abstain`` abstain."""
    n = len(points)
    x = np.array([p[0] for p in points], dtype=float).reshape(n, 1, 2)  # image-shaped rows: flattened to 2 features
    pred = np.array([p[1] for p in points], dtype=np.int64)
    paper = np.array([p[2] for p in points], dtype=float)
    p_a_lower = norm.cdf(paper / (sigma / np.sqrt(copies)))
    bound = paper if conservative_sigma is None else conservative_sigma / np.sqrt(copies) * norm.ppf(p_a_lower)
    mask = np.isin(np.arange(n), abstain)
    pred[mask], bound = stats.ABSTAIN, np.where(mask, 0.0, bound)
    result = AdaptiveResult(
        certified=pred != stats.ABSTAIN,
        pred=pred,
        radius_bound=bound,
        p_a_lower=p_a_lower,
        votes_used=np.full(n, 100),
        decided_at=np.arange(n),
        counts=np.tile([10, 90], (n, 1)),
        looks=np.array([50, 100]),
        levels=np.array([0.01, 0.01]),
        radius=float(radius),
    )
    return x, result


def _memory_with_unit_ball(conservative=1.0):
    """A memory holding one region: centre (0, 0), label 0, radius 1 (conservative radius as given), sigma 1."""
    memory = CertificationMemory()
    memory.update(np.zeros((1, 2)), [0], [1.0], 1.0, radius_conservative=[conservative])
    return memory


def _same_other_fields(out, result):
    for name in ("p_a_lower", "votes_used", "decided_at", "counts", "looks", "levels"):
        np.testing.assert_array_equal(getattr(out, name), getattr(result, name))
    assert out.radius == result.radius


def test_apply_memory_adaptive_keeps_trims_relabels_and_stores_by_the_geometry():
    """One stored unit ball of class 0 at the origin; r = 0.3. Worked out by hand (g = distance - 1):
    (5, 0) class 1, R 1.5: g = 4 >= R, kept.  (0.5, 0) class 1, R 1.5: inside the ball, relabelled to 0 with radius
    1 - 0.5 = 0.5 >= r.  (1.6, 0) class 1, R 1.5: g = 0.6 < R, trimmed to 0.6 >= r (the relabelled ball at (0.5, 0) of
    radius 0.5 gives the same gap 1.1 - 0.5).  (1.1, 0) class 1, R 1.5: trimmed to 0.1 < r: an abstention, not stored.
    (9, 9): an abstention, passed through. The kept answers are stored in order, with their own sigmas."""
    memory = _memory_with_unit_ball()
    points = [((5, 0), 1, 1.5), ((0.5, 0), 1, 1.5), ((1.6, 0), 1, 1.5), ((1.1, 0), 1, 1.5), ((9, 9), 1, 1.5)]
    x, result = _answers(points, 0.3, abstain=[4])
    sigma = np.array([1.0, 1.0, 1.0, 1.0, 1.0])
    before = (result.certified.copy(), result.pred.copy(), result.radius_bound.copy())
    out = apply_memory_adaptive(memory, x, result, sigma)
    np.testing.assert_array_equal(out.pred, [1, 0, 1, -1, -1])
    np.testing.assert_array_equal(out.certified, [True, True, True, False, False])
    np.testing.assert_allclose(out.radius_bound, [1.5, 0.5, 0.6, 0.0, 0.0], atol=1e-9)
    _same_other_fields(out, result)
    # the input answers are not modified (the abstention at (1.1, 0) used to be written into result.certified)
    np.testing.assert_array_equal(result.certified, before[0])
    np.testing.assert_array_equal(result.pred, before[1])
    np.testing.assert_array_equal(result.radius_bound, before[2])
    assert len(memory) == 4
    np.testing.assert_allclose(memory.centers, [[0, 0], [5, 0], [0.5, 0], [1.6, 0]])
    np.testing.assert_array_equal(memory.labels, [0, 1, 0, 1])
    np.testing.assert_allclose(memory.radii, [1.0, 1.5, 0.5, 0.6], atol=1e-9)
    # relabelled into the unit ball (conservative radius 1) at distance 0.5: 1 - 0.5 = 0.5; the others as the paper's
    np.testing.assert_allclose(memory.radii_conservative, [1.0, 1.5, 0.5, 0.6], atol=1e-9)
    np.testing.assert_array_equal(memory.sigmas, [1.0, 1.0, 1.0, 1.0])
    assert memory.check_invariant()


def test_apply_memory_adaptive_without_update_trims_against_the_stored_regions_only():
    memory = _memory_with_unit_ball()
    points = [((5, 0), 1, 1.5), ((0.5, 0), 1, 1.5), ((1.6, 0), 1, 1.5), ((1.1, 0), 1, 1.5)]
    x, result = _answers(points, 0.3)
    out = apply_memory_adaptive(memory, x, result, 1.0, update=False)
    np.testing.assert_array_equal(out.pred, [1, 0, 1, -1])
    np.testing.assert_allclose(out.radius_bound, [1.5, 0.5, 0.6, 0.0], atol=1e-9)
    assert len(memory) == 1  # nothing stored


def test_apply_memory_adaptive_stays_certified_when_the_trimmed_radius_is_exactly_r():
    # (3, 0) at distance exactly 3 from the unit ball's centre: trimmed to exactly 3 - 1 = 2 = r (>= r: certified)
    for radius, certified in ((2.0, True), (np.nextafter(2.0, 3.0), False)):
        memory = _memory_with_unit_ball()
        x, result = _answers([((3, 0), 1, 2.5)], radius)
        out = apply_memory_adaptive(memory, x, result, 1.0)
        assert out.certified[0] == certified and out.radius_bound[0] == (2.0 if certified else 0.0)
        assert out.pred[0] == (1 if certified else -1) and len(memory) == (2 if certified else 1)


@pytest.mark.parametrize("update", [True, False])
def test_apply_memory_adaptive_trims_each_answer_against_the_earlier_ones_of_its_batch(update):
    """(10, 0) class 1 and (13, 0) class 0, both R = 2, r = 0.9, an empty memory. Stored in order, the second meets
    the first's ball: gap 3 - 2 = 1, trimmed to 1 >= r. In the other order the first is trimmed instead. Without
    update nothing is stored, so neither is trimmed."""
    for order in ([0, 1], [1, 0]):
        memory = CertificationMemory()
        points = [((10, 0), 1, 2.0), ((13, 0), 0, 2.0)]
        x, result = _answers([points[i] for i in order], 0.9)
        out = apply_memory_adaptive(memory, x, result, 1.0, update=update)
        np.testing.assert_array_equal(out.pred, [points[i][1] for i in order])
        np.testing.assert_allclose(out.radius_bound, [2.0, 1.0] if update else [2.0, 2.0], atol=1e-9)
        assert len(memory) == (2 if update else 0)


def test_apply_memory_adaptive_conservative_kind_tests_the_conservative_radius():
    """Stored: the unit ball of class 0 with conservative radius 0.5. sigma_x = 1, min_j sigma_j = 0.5: an answer of
    paper radius R has the conservative radius R / 2. (0.2, 0) class 1, R = 1.6 (conservative 0.8): inside the ball,
    relabelled to 0 with paper radius 1 - 0.2 = 0.8 and conservative radius 0.5 - 0.2 = 0.3. (3, 0) class 1, R = 2.5
    (conservative 1.25): gap 2, paper radius trimmed to 2, conservative radius 1.25 kept (< 2)."""
    points = [((0.2, 0), 1, 1.6), ((3, 0), 1, 2.5)]
    common = dict(train_sigma_min=0.5)
    # testing the conservative radius at r = 0.25: 0.3 and 1.25 reach it
    memory = _memory_with_unit_ball(0.5)
    x, result = _answers(points, 0.25, conservative_sigma=0.5)
    out = apply_memory_adaptive(memory, x, result, 1.0, conservative=True, **common)
    np.testing.assert_array_equal(out.pred, [0, 1])
    np.testing.assert_allclose(out.radius_bound, [0.3, 1.25], atol=1e-9)
    np.testing.assert_allclose(memory.radii, [1.0, 0.8, 2.0], atol=1e-9)
    np.testing.assert_allclose(memory.radii_conservative, [0.5, 0.3, 1.25], atol=1e-9)
    # at r = 0.35 the relabelled answer's conservative radius 0.3 falls short: an abstention, not stored
    memory = _memory_with_unit_ball(0.5)
    x, result = _answers(points, 0.35, conservative_sigma=0.5)
    out = apply_memory_adaptive(memory, x, result, 1.0, conservative=True, **common)
    np.testing.assert_array_equal(out.pred, [-1, 1])
    np.testing.assert_allclose(out.radius_bound, [0.0, 1.25], atol=1e-9)
    np.testing.assert_allclose(memory.radii, [1.0, 2.0], atol=1e-9)
    # testing the paper radius at r = 0.35: 0.8 reaches it; the stored conservative radii are still the conservative
    memory = _memory_with_unit_ball(0.5)
    x, result = _answers(points, 0.35)
    out = apply_memory_adaptive(memory, x, result, 1.0, conservative=False, **common)
    np.testing.assert_array_equal(out.pred, [0, 1])
    np.testing.assert_allclose(out.radius_bound, [0.8, 2.0], atol=1e-9)
    np.testing.assert_allclose(memory.radii_conservative, [0.5, 0.3, 1.25], atol=1e-9)


def test_apply_memory_adaptive_divides_the_radii_by_the_root_of_the_noise_copies():
    """E = 4 noise copies, sigma_x = 2 per input, min_j sigma_j = 1: the paper radius is 2 / 2 * Phi^-1(p) = R and the
    conservative one 1 / 2 * Phi^-1(p) = R / 2; both are stored, with sigma 2."""
    memory = CertificationMemory()
    x, result = _answers([((0, 0), 1, 1.0), ((30, 0), 0, 3.0)], 0.5, sigma=2.0, copies=4)
    out = apply_memory_adaptive(memory, x, result, np.array([2.0, 2.0]), train_sigma_min=1.0, noise_copies=4)
    np.testing.assert_allclose(out.radius_bound, [1.0, 3.0], atol=1e-9)
    np.testing.assert_allclose(memory.radii, [1.0, 3.0], atol=1e-9)
    np.testing.assert_allclose(memory.radii_conservative, [0.5, 1.5], atol=1e-9)
    np.testing.assert_array_equal(memory.sigmas, [2.0, 2.0])


def test_apply_memory_adaptive_without_memory_or_answers_returns_them_as_they_are():
    x, result = _answers([((0.5, 0), 1, 1.5)], 0.3)
    assert apply_memory_adaptive(None, x, result, 1.0) is result
    memory = _memory_with_unit_ball()
    empty = run_sequential(_never, 0, 1.0, 0.3, 0.05, [10])
    assert apply_memory_adaptive(memory, np.zeros((0, 2)), empty, 1.0) is empty
    assert len(memory) == 1
