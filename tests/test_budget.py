"""The budget certificate (``art_certssbd.budget``): ``k`` poisoned training samples with triggers of norm at most
``delta``, a test trigger of norm at most ``delta_x``.

* Reduction: with equal sigmas it is RAB's ``delta < R / sqrt(k + 1)``, to float precision.
* The theorem on an exact case: a half-space base classifier ``f(z) = 1[w.z + b > 0]`` under anisotropic Gaussian
  noise ``N(0, diag(s^2))`` has the smoothed probability ``Phi((w.z + b) / ||s * w||)`` in closed form, and the
  worst perturbation within a budget (or an ellipsoid) is analytic. With ``p_lower`` equal to the true probability
  (the largest value the bound may take), no certified budget and no point of the certified ellipsoid changes the
  smoothed prediction, and the half-space aligned with a budget's worst case flips just above ``delta_max``: the
  certificate is exact there, so one that claimed more would fail.
* The worst ``k`` samples against brute force over all subsets; monotonicity, ``k_max`` against ``delta_max`` and
  ``certified``, abstention, the memory's relabelled inputs, bad input.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from art_certssbd.budget import NO_BUDGET, Budget, BudgetCertificate, attach_budgets, check_budgets
from art_certssbd.result import CertificationResult


def certificate_from(p_lower, train_sigma, sigma_x, copies=1):
    """The certificate of one input from its bound, as ``certify`` computes the radii (no memory)."""
    phi = norm.ppf(p_lower) / np.sqrt(copies)
    radius = sigma_x * phi
    conservative = min(sigma_x, float(np.min(train_sigma))) * phi
    return BudgetCertificate(train_sigma, [sigma_x], [radius], [conservative]), radius


# ------------------------------------------------------------------------------------------------- reduction
@settings(max_examples=200, deadline=None)
@given(
    p=st.floats(0.5001, 0.999999),
    sigma=st.floats(0.01, 5.0),
    nb_train=st.integers(1, 500),
    data=st.data(),
)
def test_equal_sigmas_reduce_to_radius_over_sqrt_k_plus_one(p, sigma, nb_train, data):
    k = data.draw(st.integers(0, nb_train))
    cert, radius = certificate_from(p, np.full(nb_train, sigma), sigma)
    np.testing.assert_allclose(cert.delta_max(k), radius / np.sqrt(k + 1), rtol=1e-12)
    # a test trigger of a fixed norm: delta^2 k + delta_x^2 < R^2
    dx = radius * data.draw(st.floats(0.0, 0.99))
    expected = np.inf if k == 0 else np.sqrt((radius**2 - dx**2) / k)
    np.testing.assert_allclose(cert.delta_max(k, delta_x=dx), expected, rtol=1e-10)


# ------------------------------------------------------------------------------ the theorem on half-spaces
def half_space_case(rng, nb_train, dim):
    """Training sigmas, sigma_x, a half-space (w, b) and a point z of the stacked space (N training blocks and the
    test block, ``dim`` features each)."""
    train_sigma = rng.uniform(0.05, 1.0, nb_train)
    sigma_x = rng.uniform(0.05, 1.0)
    s = np.concatenate([np.repeat(train_sigma, dim), np.full(dim, sigma_x)])
    w = rng.normal(size=s.shape) * rng.uniform(0.1, 3.0, size=s.shape)
    z = rng.normal(size=s.shape)
    b = rng.normal()
    return train_sigma, sigma_x, s, w, b, z


def smoothed_one(w, b, s, z):
    """The exact smoothed probability of class 1 (``w.z + b > 0``) under N(0, diag(s^2))."""
    return norm.cdf((w @ z + b) / np.linalg.norm(s * w))


@pytest.mark.parametrize("seed", range(40))
def test_no_certified_budget_or_ellipsoid_point_flips_a_smoothed_half_space(seed):
    rng = np.random.default_rng(seed)
    nb_train, dim = int(rng.integers(1, 12)), int(rng.integers(1, 4))
    train_sigma, sigma_x, s, w, b, z = half_space_case(rng, nb_train, dim)
    margin = w @ z + b
    p = smoothed_one(w, b, s, z)
    p_top, label = max(p, 1 - p), int(p > 0.5)
    cert, _ = certificate_from(p_top, train_sigma, sigma_x)
    blocks = np.linalg.norm(w[: nb_train * dim].reshape(nb_train, dim), axis=1)
    w_x = np.linalg.norm(w[nb_train * dim :])
    # every budget: the worst attack on a half-space puts each trigger along -sign(margin) w on the k blocks with the
    # largest ||w_i||; it moves the margin by delta * (sum of those) + delta_x * ||w_x||
    certified_some = 0
    for k in range(nb_train + 1):
        top = np.sort(blocks)[::-1][:k].sum()
        dm = cert.delta_max(k)[0]
        for delta in np.concatenate([rng.uniform(0, 2 * max(dm, 1e-3), 8), [dm * (1 - 1e-9)]]):
            delta_x = delta * rng.choice([0.0, 0.5, 1.0, 2.0])
            if cert.certified(k, delta, delta_x)[0]:
                certified_some += 1
                shift = delta * top + delta_x * w_x
                assert shift < abs(margin) * (1 + 1e-9), (k, delta, delta_x, shift, margin)
    # the ellipsoid sum_j ||d_j||^2 / s_j^2 < phi^2 itself: its worst point (analytic) and random points inside
    phi = norm.ppf(p_top)
    direction = -np.sign(margin) * s**2 * w / np.linalg.norm(s * w)  # whitened norm 1, the steepest for w
    for scale in (1 - 1e-9, 0.5, 0.0):
        zz = z + scale * phi * direction
        assert (smoothed_one(w, b, s, zz) > 0.5) == label
    assert (smoothed_one(w, b, s, z + (1 + 1e-6) * phi * direction) > 0.5) != label  # just outside: it flips
    u = rng.normal(size=(200, s.size))
    u *= (rng.uniform(0, 1, (200, 1)) ** (1 / s.size) * phi * (1 - 1e-9)) / np.linalg.norm(u, axis=1, keepdims=True)
    probs = np.array([smoothed_one(w, b, s, z + s * row) for row in u])  # s * row: inside the ellipsoid
    assert np.all((probs > 0.5) == label)
    assert certified_some > 0 or phi < 1e-3


@pytest.mark.parametrize("seed", range(20))
def test_the_budget_is_exact_for_the_half_space_aligned_with_its_worst_case(seed):
    # w_i = u_i / sigma_i^2 on the k smallest-sigma blocks, w_x = r u_x / sigma_x^2: the budget's worst attack is along
    # the ellipsoid's steepest direction, so the prediction flips exactly at delta_max. A certificate claiming more
    # (e.g. the k largest sigmas, or k in place of k + 1) is caught by the first assertion.
    rng = np.random.default_rng(100 + seed)
    nb_train, dim = int(rng.integers(2, 10)), 3
    train_sigma = rng.uniform(0.05, 1.0, nb_train)
    sigma_x = rng.uniform(0.05, 1.0)
    k = int(rng.integers(0, nb_train + 1))
    ratio = float(rng.choice([0.0, 0.3, 1.0, 2.5])) if k else 1.0
    s = np.concatenate([np.repeat(train_sigma, dim), np.full(dim, sigma_x)])
    u = rng.normal(size=(nb_train + 1, dim))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    attack = np.zeros((nb_train + 1, dim))  # the attack per unit delta
    attack[np.argsort(train_sigma)[:k]] = u[np.argsort(train_sigma)[:k]]
    attack[-1] = ratio * u[-1]
    attack = attack.reshape(-1)
    w = attack / s**2
    z = rng.normal(size=s.size)
    b = -(w @ z) - rng.uniform(0.2, 2.0)  # class 0, margin in (-2, -0.2)
    p0 = 1 - smoothed_one(w, b, s, z)
    assert p0 > 0.5
    cert, _ = certificate_from(p0, train_sigma, sigma_x)
    dm = cert.delta_max(k, ratio=ratio)[0]
    assert smoothed_one(w, b, s, z + dm * (1 - 1e-9) * attack) < 0.5  # certified: unchanged
    assert smoothed_one(w, b, s, z + dm * (1 + 1e-6) * attack) > 0.5  # just beyond: flipped, so the bound is tight
    assert cert.certified(k, dm * (1 - 1e-9), ratio * dm * (1 - 1e-9))[0]
    assert not cert.certified(k, dm * (1 + 1e-6), ratio * dm * (1 + 1e-6))[0]


@pytest.mark.parametrize("seed", range(10))
def test_fresh_noise_copies_shrink_the_budget_as_the_radius(seed):
    # E noisy copies per training sample: the radius is divided by sqrt(E), and so is delta_max
    rng = np.random.default_rng(seed)
    train_sigma, sigma_x, p = rng.uniform(0.1, 1.0, 7), rng.uniform(0.1, 1.0), rng.uniform(0.6, 0.999)
    one, _ = certificate_from(p, train_sigma, sigma_x)
    four, _ = certificate_from(p, train_sigma, sigma_x, copies=4)
    for k in range(8):
        np.testing.assert_allclose(four.delta_max(k), one.delta_max(k) / 2, rtol=1e-12)


# ----------------------------------------------------------------------------- the worst k, monotone, k_max
def test_the_worst_k_samples_match_brute_force_over_all_subsets():
    rng = np.random.default_rng(7)
    train_sigma = rng.uniform(0.1, 1.0, 7)
    sigma_x, q = 0.4, 2.0
    cert = BudgetCertificate(train_sigma, [sigma_x], [q * sigma_x], [0.0])
    for k in range(8):
        worst = max((np.sum(1 / train_sigma[list(c)] ** 2) for c in itertools.combinations(range(7), k)), default=0.0)
        np.testing.assert_allclose(cert.delta_max(k), q / np.sqrt(worst + 1 / sigma_x**2), rtol=1e-12)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), nb_train=st.integers(1, 60))
def test_delta_max_decreases_in_k_and_k_max_agrees_with_it(seed, nb_train):
    rng = np.random.default_rng(seed)
    n = 6
    train_sigma = rng.uniform(0.05, 1.5, nb_train)
    sigma = rng.uniform(0.05, 1.5, n)
    radius = rng.uniform(0, 3, n) * (rng.random(n) > 0.2)  # some abstentions (radius 0)
    conservative = radius * rng.uniform(0, 1, n)
    relabelled = rng.random(n) < 0.2
    cert = BudgetCertificate(train_sigma, sigma, radius, conservative, relabelled)
    dms = np.stack([cert.delta_max(k) for k in range(nb_train + 1)])
    assert np.all(np.diff(dms, axis=0) <= 1e-12)
    for delta in rng.uniform(0, 1.5, 4):
        for delta_x in (None, 0.0, float(rng.uniform(0, 1))):
            km = cert.k_max(delta, delta_x)
            assert km.min() >= NO_BUDGET and km.max() <= nb_train
            for i in range(n):
                ks = range(nb_train + 1)
                decided = np.array([cert.certified(k, delta, delta_x)[i] for k in ks])
                assert km[i] == (np.flatnonzero(decided).max() if decided.any() else NO_BUDGET)
                assert np.all(decided[: km[i] + 1])  # monotone: every smaller k is certified too
                sup = np.array(
                    [cert.delta_max(k, delta_x=delta_x)[i] if delta_x is not None else dms[k, i] for k in ks]
                )
                near = np.isclose(sup, delta, rtol=1e-9)
                np.testing.assert_array_equal(decided[~near], (delta < sup)[~near])


def test_abstain_certifies_no_budget():
    cert = BudgetCertificate(np.full(5, 0.5), [0.5, 0.5], [0.0, 1.0], [0.0, 1.0])
    np.testing.assert_array_equal(cert.k_max(0.0, 0.0), [NO_BUDGET, 5])
    np.testing.assert_array_equal(cert.certified(0, 0.0), [False, True])
    assert cert.delta_max(0)[0] == 0 and cert.delta_max(3)[0] == 0
    np.testing.assert_array_equal(cert.k_max(0.1), [NO_BUDGET, 5])  # at most the training set
    # q = R / sigma_x = 2, S_k = 4 k: 0.01 * 4 * (k + 1) < 4 iff k <= 98
    wide = BudgetCertificate(np.full(200, 0.5), [0.5, 0.5], [0.0, 1.0], [0.0, 1.0])
    np.testing.assert_array_equal(wide.k_max(0.1), [NO_BUDGET, 98])


def test_edges_of_delta_max_with_a_fixed_test_trigger():
    cert = BudgetCertificate(np.full(4, 1.0), [1.0], [1.0], [1.0])
    assert cert.delta_max(0, delta_x=0.5)[0] == np.inf  # no training trigger: any delta
    assert cert.delta_max(2, delta_x=1.0)[0] == 0  # the test trigger alone uses the radius up
    assert cert.delta_max(0, ratio=0.0)[0] == np.inf
    assert cert.k_max(0.0, 1.0)[0] == NO_BUDGET and cert.k_max(0.0, 0.99)[0] == 4


def test_relabelled_inputs_get_only_the_conservative_ball():
    # the memory gave the input another ball's label: its own ellipsoid certifies another class, so only the
    # conservative ball's k * delta^2 + delta_x^2 < Rc^2 applies
    sigmas = np.full(9, 2.0)
    kept = BudgetCertificate(sigmas, [2.0], [1.0], [0.5])
    moved = BudgetCertificate(sigmas, [2.0], [1.0], [0.5], relabelled=[True])
    np.testing.assert_allclose(kept.delta_max(3), 1.0 / 2)  # R / sqrt(k + 1)
    np.testing.assert_allclose(moved.delta_max(3), 0.5 / 2)  # Rc / sqrt(k + 1)
    assert moved.k_max(0.2)[0] == 5  # (k + 1) * 0.04 < 0.25
    assert kept.k_max(0.2)[0] == 9  # (k + 1) * 0.04 / 4 < 0.25 / 4 up to k = 23: the whole training set


def test_from_result_reads_the_memory_and_the_radii():
    result = CertificationResult(
        pred=np.array([1, 0, -1]),
        radius=np.array([0.8, 0.3, 0.0]),
        radius_conservative=np.array([0.4, 0.3, 0.0]),
        sigma=np.array([0.8, 0.5, 0.5]),
        p_a_lower=np.array([0.9, 0.9, 0.4]),
        votes=np.zeros((3, 2)),
        pred_before_memory=np.array([1, 1, -1]),
    )
    cert = BudgetCertificate.from_result(result, np.full(3, 0.8))
    np.testing.assert_allclose(cert.delta_max(0), [0.8, 0.3, 0.0])
    np.testing.assert_allclose(cert.delta_max(1), [0.8 / np.sqrt(2), 0.3 / np.sqrt(2), 0.0])


# --------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda c: c.delta_max(6), r"k=6 is larger than the training set \(5 samples\)"),
        (lambda c: c.delta_max(1.0), r"k must be an integer >= 0.*1\.0"),
        (lambda c: c.delta_max(True), r"k must be an integer"),
        (lambda c: c.delta_max(-1), r"k must be an integer >= 0.*-1"),
        (lambda c: c.certified(1, -0.5), r"delta must be a finite number >= 0, got -0\.5"),
        (lambda c: c.certified(1, float("nan")), r"delta must be a finite number >= 0, got nan"),
        (lambda c: c.certified(1, 0.5, float("inf")), r"delta_x must be a finite number >= 0"),
        (lambda c: c.k_max(float("nan")), r"delta must be"),
        (lambda c: c.delta_max(1, ratio=1.0, delta_x=0.1), r"ratio or delta_x, not both"),
        (lambda c: c.delta_max(1, ratio=-1.0), r"ratio must be"),
    ],
)
def test_bad_queries_are_refused_by_name(call, match):
    cert = BudgetCertificate(np.full(5, 0.5), [0.5], [1.0], [1.0])
    with pytest.raises(ValueError, match=match):
        call(cert)


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.array([0.5, 0.0]), [0.5], [1.0], [1.0]), r"train_sigma must be finite and > 0, got 0\.0"),
        ((np.array([0.5, np.nan]), [0.5], [1.0], [1.0]), r"train_sigma must be finite and > 0"),
        (([0.5], [-0.5], [1.0], [1.0]), r"sigma must be finite and > 0"),
        (([0.5], [0.5], [1.0, 2.0], [1.0]), r"radius must have one entry per input \(1\), got 2"),
        (([0.5], [0.5], [1.0], [2.0]), r"radius_conservative must not exceed radius"),
        (([0.5], [0.5], [-1.0], [-1.0]), r"radius must be finite and >= 0"),
    ],
)
def test_bad_certificates_are_refused_by_name(args, match):
    with pytest.raises(ValueError, match=match):
        BudgetCertificate(*args)


def test_check_budgets_accepts_its_forms_and_names_a_bad_one():
    assert check_budgets(None) == ()
    got = check_budgets([(1, 1.0), (10, 0.25, 0.5), {"k": 3, "delta": 2}, Budget(0, 0.1)], nb_train=10)
    assert got == (Budget(1, 1.0), Budget(10, 0.25, 0.5), Budget(3, 2.0), Budget(0, 0.1))
    assert check_budgets(Budget(2, 0.5)) == (Budget(2, 0.5),) and check_budgets((2, 0.5)) == (Budget(2, 0.5),)
    assert Budget(253, 1.0).label == "k=253,delta=1,delta_x=1"
    for bad, match in [
        ([(1.5, 1.0)], r"bad budget \(1\.5, 1\.0\).*k must be an integer"),
        ([(1, -1.0)], r"bad budget \(1, -1\.0\).*delta must be"),
        ([(1,)], r"bad budget \(1,\)"),
        ([{"k": 1, "eps": 1}], r"bad budget"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_budgets(bad)
    with pytest.raises(ValueError, match=r"k=11 is larger than the training set \(10 samples\)"):
        check_budgets([(11, 0.1)], nb_train=10)


def test_attach_budgets_and_the_result_methods():
    result = CertificationResult(
        pred=np.array([0, 1, -1, 1]),
        radius=np.array([1.0, 0.5, 0.0, 2.0]),
        radius_conservative=np.array([1.0, 0.5, 0.0, 2.0]),
        sigma=np.full(4, 1.0),
        p_a_lower=np.array([0.9, 0.8, 0.4, 0.99]),
        votes=np.zeros((4, 2)),
        pred_before_memory=np.array([0, 1, -1, 1]),
    )
    with pytest.raises(ValueError, match="does not hold the training sigmas"):
        result.k_max(0.1)
    out = attach_budgets(result, np.full(20, 1.0), [(1, 0.5), (3, 0.5, 0.0)])
    # delta_max(1) = R / sqrt(2): 0.707, 0.354, 0, 1.414; k = 3 with no test trigger: R / sqrt(3)
    np.testing.assert_array_equal(out.budget_certified, [[True, True], [False, False], [False, False], [True, True]])
    np.testing.assert_array_equal(out.budgets, [[1, 0.5, 0.5], [3, 0.5, 0.0]])
    y = np.array([0, 1, 1, 0])  # the last input is wrong
    assert out.certified_accuracy_at_budget(y, 1, 0.5) == 0.25
    np.testing.assert_array_equal(out.k_max(0.5), [2, NO_BUDGET, NO_BUDGET, 14])  # (k + 1) * 0.25 < R^2
    with pytest.raises(ValueError, match=r"k=21 is larger"):
        attach_budgets(result, np.full(20, 1.0), [(21, 0.5)])


# ------------------------------------------------------------------------------------ through the estimators
@pytest.fixture(scope="module")
def fitted():
    """A small RAB and Cert-SSBD ensemble on 96 digits (fitted once, on one torch thread)."""
    from helpers import digits_estimator

    from art_certssbd import CertSSBDEstimator, RABEstimator
    from art_certssbd.datasets import load_digits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x_train, y_train, x_test, y_test = load_digits(random_state=0)
        out = {}
        for cls in (RABEstimator, CertSSBDEstimator):
            est = digits_estimator(cls, nb_models=16, scale=0.25, alpha=0.1, random_state=0, sigma_steps=3,
                                   sigma_samples=2, sigma_lr=0.05, warmup_epochs=1)  # fmt: skip
            est.fit(x_train[:96], y_train[:96], nb_epochs=2, batch_size=32)
            out[cls.__name__] = est
    finally:
        torch.set_num_threads(threads)
    return out, x_test[:30], y_test[:30]


@pytest.mark.parametrize("name", ["RABEstimator", "CertSSBDEstimator"])
def test_certify_decides_the_budgets_from_the_fitted_training_sigmas(fitted, name):
    estimators, x, y = fitted
    est = estimators[name]
    budgets = [(0, 0.1), (1, 0.1), (5, 0.05, 0.0), Budget(96, 0.01)]
    result = est.certify(x, return_details=True, budgets=budgets, update_memory=False)
    np.testing.assert_array_equal(result.train_sigma, est.train_sigma_.astype(float))
    assert result.budget_certified.shape == (30, 4)
    assert result.budget_certified[:, 0].any() and not result.budget_certified.all()  # the decisions have content
    if name == "RABEstimator":  # every training sigma is scale = sigma_x: delta < R / sqrt(k + 1) (delta_x = delta)
        np.testing.assert_allclose(est.train_sigma_, 0.25)
        np.testing.assert_allclose(result.sigma, 0.25)
        for j, (k, delta, dx) in enumerate([(0, 0.1, 0.1), (1, 0.1, 0.1), (5, 0.05, 0.0), (96, 0.01, 0.01)]):
            expected = k * delta**2 + dx**2 < result.radius**2
            np.testing.assert_array_equal(result.budget_certified[:, j], expected)
    else:  # the fitted sample-specific sigmas, the k smallest of them
        assert np.ptp(est.train_sigma_) > 0
        s_k = np.cumsum(np.sort(1 / est.train_sigma_.astype(float) ** 2)[::-1])
        q = result.radius / result.sigma
        expected = 0.05**2 * s_k[4] < q**2
        np.testing.assert_array_equal(
            result.budget_certified[:, 2], expected | (5 * 0.05**2 < result.radius_conservative**2)
        )
    assert result.budget_certified[:, 0].sum() >= result.budget_certified[:, 1].sum()
    acc = result.certified_accuracy_at_budget(y, 1, 0.1)
    assert acc == np.mean(result.budget_certified[:, 1] & (result.pred == y))


def test_certify_refuses_bad_budgets_before_any_work(fitted):
    estimators, x, _ = fitted
    est = estimators["CertSSBDEstimator"]
    stored = len(est.memory_)
    with pytest.raises(ValueError, match=r"k=97 is larger than the training set \(96 samples\)"):
        est.certify(x, return_details=True, budgets=[(97, 0.1)])
    with pytest.raises(ValueError, match=r"bad budget \(1, -0\.1\)"):
        est.certify(x, return_details=True, budgets=[(1, -0.1)])
    with pytest.raises(ValueError, match=r"budgets needs return_details=True"):
        est.certify(x, budgets=[(1, 0.1)])
    assert len(est.memory_) == stored  # the refused calls stored nothing


def test_parse_budgets_reads_the_cli_syntax_and_its_own_spec():
    from art_certssbd.budget import k_grid, parse_budgets

    assert parse_budgets("k=253,delta=1.0") == (Budget(253, 1.0),)
    assert parse_budgets("k=1, delta=0.5, delta_x=0;k=0,delta=2") == (Budget(1, 0.5, 0.0), Budget(0, 2.0))
    odd = Budget(7, 0.1 + 0.2, 1 / 3)
    assert parse_budgets(odd.spec) == (Budget(7, 0.1 + 0.2, 1 / 3),)  # every digit survives
    for text, match in [
        ("k=1,dlta=1", r"bad token 'dlta=1' in 'k=1,dlta=1'"),
        ("k=1,delta=1,delta=2", r"bad token 'delta=2'"),
        ("k=1,delta=1;", r"bad token ''"),
        ("delta=1", r"'delta=1' has no k="),
        ("k=1.5,delta=1", r"bad token 'k=1.5'"),
        ("k=1,delta=abc", r"delta must be a finite number >= 0, got 'abc'"),
        ("k=1,delta=inf", r"delta must be a finite number >= 0, got inf"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_budgets(text)
    np.testing.assert_array_equal(k_grid(253), [0, 1, 2, 5, 10, 20, 50, 100, 200, 253])
    np.testing.assert_array_equal(k_grid(1), [0, 1])
