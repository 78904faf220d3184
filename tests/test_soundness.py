"""Statistical soundness, checked against problems whose answer is known exactly.

* The bounds: the exact probability that a Clopper-Pearson or Hoeffding bound misses ``p`` is computed by summing
  the binomial distribution (no simulation), for many ``(n, p, alpha)``: it never exceeds ``alpha``.
* The whole certify path: members that are the linear classifier ``f(x) = [w.x + b > 0]`` (|w| = 1). Under Gaussian
  noise of level ``sigma``, ``p_A = Phi(|w.x + b| / sigma)`` exactly, so the smoothed classifier's true radius is
  ``sigma * Phi^-1(p_A) = |w.x + b|``, the distance to the hyperplane, whatever sigma is. Over independent test-noise
  seeds, the estimator's certificate (wrong label, or radius above the distance) may fail at rate ``alpha`` at most.
  The number of failures allowed is the ``1 - 1e-4`` quantile of Binomial(trials, alpha): if the true rate is at most
  ``alpha`` the test fails with probability below 1e-4 (and the seeds are fixed, so it is reproducible).
* Radius and bounds are monotone (hypothesis); abstention happens exactly when the bound is at most 1/2, in
  ``certify`` and ``predict``.
* The storage-update memory keeps its geometric promises on random streams (hypothesis), directly and through the
  estimator.
* The soundness matrix (issue 10): every certify path (``certify``, ``certify_adaptive``, ``predict``'s abstain
  rule) x ``bound`` x ``draws_per_model`` (1, 3) x ``use_memory`` x radius kind (paper, conservative) x ``noise``
  (fixed, fresh), on members whose training noise enters their votes, at an exact tie and just above the true
  radius; refused combinations raise their error; a guard test fails when a parameter is added without a place in
  the matrix. Small in the default suite (200 trials per row, 40 members), 2000 trials and 100 members under
  ``slow``. And the regressions of issue 10 through the shell (several draws per member in ``certify_adaptive``,
  the conservative radius's ``min(sigma_x, min_j sigma_j)`` in ``certify`` and ``certify_adaptive``, fresh noise).

Already in tests/test_stats.py: Clopper-Pearson against scipy's exact interval, a simulated coverage check at three
settings, closed forms, the radius on a grid, abstention in ``certify_counts``. In tests/test_certification.py: the
certificate's closed forms and error rates for every option (numpy only). In tests/test_memory.py: the memory
against a plain-Python reference on random streams, and its invariant. In tests/test_sequential.py: the adaptive
certification on simulated votes; here it runs on real votes through the estimator, at the worst case.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom, norm

from art_certssbd import CertificationMemory, CertificationResult, CertSSBDEstimator, RABEstimator
from art_certssbd.counts import certify_counts
from art_certssbd.ensemble import StackedEnsemble
from art_certssbd.fitted import FittedEnsemble
from art_certssbd.stats import (
    ABSTAIN,
    BOUNDS,
    lower_confidence_bound,
    radius,
    upper_confidence_bound,
)

FALSE_ALARM = 1e-4  # probability that a correct implementation fails one of the simulation tests


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here on one torch thread (the shared ``one_thread`` fixture)."""


def allowed_failures(trials: int, alpha: float, false_alarm: float = FALSE_ALARM) -> int:
    """Largest failure count consistent with a failure rate <= alpha (one-sided exact binomial test)."""
    return int(binom.isf(false_alarm, trials, alpha))


# ------------------------------------------------------------------------------------ exact coverage of bounds
@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize("alpha", [0.2, 0.05, 1e-3])
def test_exact_miss_probability_of_the_bounds_is_at_most_alpha(bound, alpha):
    p = np.linspace(0.0005, 0.9995, 401)
    for n in (1, 2, 3, 5, 8, 13, 21, 34, 55, 100, 250, 1000):
        k = np.arange(n + 1)
        pmf = binom.pmf(k[:, None], n, p[None, :])  # (n + 1, len(p))
        lower = np.asarray(lower_confidence_bound(k, n, alpha, bound))[:, None]
        upper = np.asarray(upper_confidence_bound(k, n, alpha, bound))[:, None]
        miss_low = (pmf * (lower > p[None, :])).sum(axis=0)
        miss_up = (pmf * (upper < p[None, :])).sum(axis=0)
        assert miss_low.max() <= alpha + 1e-9, (n, p[miss_low.argmax()], miss_low.max())
        assert miss_up.max() <= alpha + 1e-9, (n, p[miss_up.argmax()], miss_up.max())
        if bound == "clopper-pearson" and n >= 21:
            assert miss_low.max() > alpha / 2  # exact, not needlessly loose: the worst case is close to alpha


# ------------------------------------------------------------------------- the certify path, known smoothed p_A
DIM = 16
_RNG = np.random.default_rng(0)
W = _RNG.normal(size=DIM)
W /= np.linalg.norm(W)
B = 0.3


def linear_member() -> torch.nn.Module:
    """Logits ``(-(w.x + b) / 2, (w.x + b) / 2)``: class 1 exactly where ``w.x + b > 0``."""
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(DIM, 2))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor(np.stack([-W / 2, W / 2]), dtype=torch.float32))
        net[1].bias.copy_(torch.tensor([-B / 2, B / 2], dtype=torch.float32))
    return net


def linear_estimator(cls, nb_models: int, sigma: float, alpha: float, bound: str, **kwargs):
    """An estimator whose members are all the linear classifier (the fitted state that ``load_ensemble`` sets)."""
    extra = dict(sigma_steps=20, sigma_samples=8, sigma_lr=0.05, use_memory=False) if cls is CertSSBDEstimator else {}
    est = cls(
        linear_member(),
        torch.nn.CrossEntropyLoss(),
        (1, 4, 4),
        2,
        device_type="cpu",
        nb_models=nb_models,
        scale=sigma,
        alpha=alpha,
        bound=bound,
        random_state=0,
        **{**extra, **kwargs},
    )
    est.fitted_ = FittedEnsemble(
        StackedEnsemble.from_modules([linear_member() for _ in range(nb_models)]),
        np.full(8, sigma, dtype=np.float32),
        random_state=0,
        train_noise_copies=1,
        test_noise_seeds=list(range(nb_models)),
        memory=CertificationMemory() if getattr(est, "use_memory", False) else None,
    )
    return est


def probe_inputs(sigma: float, p_a=(0.6, 0.8, 0.95, 0.99)) -> tuple[np.ndarray, np.ndarray]:
    """Inputs at signed distances from the hyperplane giving the smoothed top-class probabilities ``p_a`` on either
    side; returns the inputs and their exact margins ``w.x + b``."""
    offsets = norm.ppf(p_a) * sigma
    rng = np.random.default_rng(1)
    along = np.concatenate([offsets, -offsets])
    ortho = rng.normal(size=(len(along), DIM))
    ortho -= (ortho @ W)[:, None] * W[None, :]  # a component parallel to the hyperplane changes nothing
    x = (along - B)[:, None] * W[None, :] + ortho
    return x.reshape(-1, 1, 4, 4).astype(np.float32), x @ W + B


def run_trials(est, x: np.ndarray, trials: int, seed: int):
    """Certify ``x`` under ``trials`` independent sets of per-member test-noise seeds."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(trials):
        est.fitted_ = est.fitted_.replace(test_noise_seeds=[int(s) for s in rng.integers(0, 2**63 - 1, est.nb_models)])
        out.append(est.certify(x, return_details=True, update_memory=False))
    return out


def check_certificates(results, margin: np.ndarray, alpha: float, bound: str, nb_votes: int) -> None:
    """Per input: failures (wrong label or radius above the distance) within the binomial allowance; abstention and
    radius exactly as the bound says."""
    distance, label = np.abs(margin.astype(np.float64)), (margin > 0).astype(int)
    failures = np.zeros(len(margin), dtype=int)
    for r in results:
        failures += (r.pred != ABSTAIN) & ((r.pred != label) | (r.radius > distance))
        expected = lower_confidence_bound(
            r.votes.max(axis=1), nb_votes, alpha / 2, bound
        )  # class chosen on the same votes: alpha / 2
        np.testing.assert_array_equal(r.p_a_lower, expected)
        np.testing.assert_array_equal(r.pred == ABSTAIN, r.p_a_lower <= 0.5)
        np.testing.assert_allclose(r.radius, np.where(r.pred == ABSTAIN, 0.0, r.sigma * norm.ppf(r.p_a_lower)))
        assert np.all(r.radius_conservative <= r.radius + 1e-12)
    allowed = allowed_failures(len(results), alpha, FALSE_ALARM / len(margin))
    assert failures.max() <= allowed, (failures, allowed)
    return failures


@pytest.mark.parametrize("bound", BOUNDS)
def test_rab_certificates_fail_at_most_at_rate_alpha(bound):
    sigma, alpha = 0.5, 0.05
    est = linear_estimator(RABEstimator, 100, sigma, alpha, bound)
    x, margin = probe_inputs(sigma)
    results = run_trials(est, x, 200, seed=2)
    failures = check_certificates(results, margin, alpha, bound, 100)
    # the simulation has power: the exact p_A of the probes makes failures happen, at a rate below alpha
    assert failures.sum() > 0
    # and the votes follow Binomial(M, p_A): the mean vote fraction matches p_A to 4 standard errors
    votes = np.stack([r.votes[:, 1] for r in results]) / 100
    p_one = norm.cdf(margin / sigma)
    assert np.all(np.abs(votes.mean(axis=0) - p_one) <= 4 * np.sqrt(p_one * (1 - p_one) / (100 * len(results))))


def test_cert_ssbd_certificates_with_sample_specific_sigma_fail_at_most_at_rate_alpha():
    # sigma_x comes from the sigma optimiser (a function of x and the seed, fixed across trials); the test noise must
    # be drawn at that sigma_x for its radius to hold (the official code draws it at sigma0 instead).
    sigma, alpha = 0.5, 0.05
    est = linear_estimator(CertSSBDEstimator, 100, sigma, alpha, "clopper-pearson")
    x, margin = probe_inputs(sigma)
    results = run_trials(est, x, 120, seed=3)
    assert np.ptp(results[0].sigma) > 0.1  # sample-specific sigmas, not one value
    check_certificates(results, margin, alpha, "clopper-pearson", 100)


@pytest.mark.slow
@pytest.mark.parametrize("bound", BOUNDS)
@pytest.mark.parametrize("cls, alpha", [(RABEstimator, 0.01), (RABEstimator, 0.1), (CertSSBDEstimator, 0.05)])
def test_certificates_fail_at_most_at_rate_alpha_large(cls, alpha, bound):
    sigma = 0.25
    est = linear_estimator(cls, 200, sigma, alpha, bound)
    x, margin = probe_inputs(sigma)
    check_certificates(run_trials(est, x, 10_000 if cls is RABEstimator else 3000, seed=4), margin, alpha, bound, 200)


def test_predict_abstains_exactly_where_certify_does():
    est = linear_estimator(RABEstimator, 40, 0.5, 0.05, "clopper-pearson")
    x, _ = probe_inputs(0.5, (0.5, 0.6, 0.8, 0.95))
    for trial in range(20):
        result = run_trials(est, x, 1, seed=trial)[0]  # certify, then predict, under the same test-noise seeds
        proba = est.predict(x)
        np.testing.assert_array_equal(proba.sum(axis=1) == 0, result.pred == ABSTAIN)
        decided = result.pred != ABSTAIN
        np.testing.assert_array_equal(proba[decided].argmax(axis=1), result.pred[decided])
        np.testing.assert_array_equal(est.predict(x, is_abstain=False).argmax(axis=1), result.votes.argmax(axis=1))


# ------------------------------------------------------------------------------------------------- monotonicity
probabilities = st.floats(0.0, 1.0, allow_nan=False)
sigmas = st.floats(1e-3, 1e3, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(probabilities, probabilities, sigmas, sigmas)
def test_radius_is_monotone_in_p_a_lower_and_sigma(p1, p2, s1, s2):
    (p1, p2), (s1, s2) = sorted((p1, p2)), sorted((s1, s2))
    assert radius(p1, s1) <= radius(p2, s1) <= radius(p2, s2)
    assert radius(p2, s1, p_b_upper=p2) == 0.0
    assert radius(p2, s1, p_b_upper=1 - p2) == radius(p2, s1)
    q = 1 - p2  # a larger runner-up bound never increases the radius
    assert radius(p2, s1, p_b_upper=min(1.0, q + 0.1)) <= radius(p2, s1, p_b_upper=q)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 2000), st.data(), st.sampled_from(BOUNDS), st.sampled_from([0.1, 0.01, 1e-4]))
def test_bounds_are_monotone_and_bracket_the_estimate(n, data, bound, alpha):
    k = data.draw(st.integers(0, n))
    lo, up = lower_confidence_bound(k, n, alpha, bound), upper_confidence_bound(k, n, alpha, bound)
    assert 0.0 <= lo <= k / n <= up <= 1.0
    if k < n:  # one more vote for the class never lowers its bound
        assert lower_confidence_bound(k + 1, n, alpha, bound) >= lo
        assert lower_confidence_bound(k, n + 1, alpha, bound) <= lo  # one more vote for the others never raises it
    assert lower_confidence_bound(k, n, alpha / 10, bound) <= lo  # more confidence, lower bound


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=2, max_size=5), st.sampled_from(BOUNDS), st.floats(0.01, 2.0))
def test_certify_counts_monotone_in_the_top_votes(counts, bound, sigma):
    counts = np.array([counts])
    if counts.sum() == 0:
        counts[0, 0] = 1
    pred, rad, p_a = certify_counts(counts, sigma, 0.05, bound)
    more = counts.copy()
    more[0, counts[0].argmax()] += 1
    pred2, rad2, p_a2 = certify_counts(more, sigma, 0.05, bound)
    assert rad2[0] >= rad[0] and p_a2[0] >= p_a[0]
    assert pred[0] == ABSTAIN or pred2[0] == pred[0]  # a decision is never withdrawn by a vote for it
    assert (pred[0] == ABSTAIN) == (p_a[0] <= 0.5)


# -------------------------------------------------------------------------------------------------- memory
points = st.lists(st.integers(-8, 8).map(lambda v: v / 4), min_size=2, max_size=2)
items = st.tuples(points, st.sampled_from([-1, 0, 1, 2]), st.integers(0, 12).map(lambda v: v / 4))
calls = st.lists(st.tuples(st.booleans(), st.lists(items, min_size=1, max_size=6)), min_size=1, max_size=8)


@settings(max_examples=80, deadline=None)
@given(calls)
def test_memory_answers_agree_with_the_stored_regions_geometrically(stream):
    """Checked against geometry, not against a reference implementation: every answer is consistent with every
    region stored before it, a trimmed answer never grows, and a relabelled answer lies inside a stored region."""
    tol = 1e-9
    memory = CertificationMemory()
    for store, batch in stream:
        x = np.array([item[0] for item in batch], dtype=float)
        pred_in, rad_in = np.array([item[1] for item in batch]), np.array([item[2] for item in batch])
        centers, labels, radii = memory.centers, memory.labels, memory.radii
        pred, rad = (memory.update if store else memory.query)(x, pred_in, rad_in)
        for i in range(len(batch)):
            if pred_in[i] == ABSTAIN:
                assert pred[i] == ABSTAIN and rad[i] == rad_in[i]
                continue
            if store:  # earlier answers of the same batch were stored before item i
                prior = [(x[j], pred[j], rad[j]) for j in range(i) if pred[j] != ABSTAIN and rad[j] > 0]
                stored = list(zip(centers, labels, radii)) + prior
            else:
                stored = list(zip(centers, labels, radii))
            for center, label, r in stored:
                if label != pred[i]:
                    assert np.linalg.norm(x[i] - center) >= rad[i] + r - tol
            if pred[i] == pred_in[i]:
                assert rad[i] <= rad_in[i] + tol
            else:
                assert any(
                    label == pred[i] and np.linalg.norm(x[i] - center) + rad[i] <= r + tol
                    for center, label, r in stored
                )
        assert memory.check_invariant()


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.integers(0, 2**31 - 1))
def test_estimator_memory_stays_consistent_on_random_query_streams(batch_sizes, seed):
    """Inputs near the decision boundary, where sample-specific sigmas make conflicting certificates likely."""
    est = linear_estimator(CertSSBDEstimator, 30, 0.5, 0.1, "clopper-pearson", use_memory=True)
    rng = np.random.default_rng(seed)
    answers = []
    for size in batch_sizes:
        along = rng.uniform(-1.0, 1.0, size=size)
        x = ((along - B)[:, None] * W[None, :] + 0.3 * rng.normal(size=(size, DIM))).reshape(-1, 1, 4, 4)
        result = est.certify(x.astype(np.float32), return_details=True)
        answers += [(xi.reshape(-1), c, r) for xi, c, r in zip(x, result.pred, result.radius) if c != ABSTAIN and r > 0]
        assert est.memory_.check_invariant()
    for i, (xi, ci, ri) in enumerate(answers):  # all certificates handed out are mutually consistent
        for xj, cj, rj in answers[:i]:
            if ci != cj:
                assert np.linalg.norm(xi.astype(np.float64) - xj) >= ri + rj - 1e-6


# ------------------------------------- once known issues: a near tie, and several draws per member (issue 6)
@pytest.mark.slow  # in the default suite: the tie probe of every row of the soundness matrix
def test_certificates_at_an_exact_tie_fail_at_most_at_rate_alpha():
    sigma, alpha = 0.5, 0.1
    est = linear_estimator(RABEstimator, 100, sigma, alpha, "clopper-pearson")
    x, margin = probe_inputs(sigma, (0.5,))
    check_certificates(run_trials(est, x[:1], 1000, seed=7), margin[:1], alpha, "clopper-pearson", 100)


def test_votes_of_one_member_are_not_independent_draws():
    # Members whose output does not depend on the test noise: member k says class 1 with probability p over the
    # training randomness (its bias sign), so p_A = p exactly and all draws of one member vote alike.
    p, nb_models, draws, alpha, trials = 0.6, 50, 10, 0.05, 200
    rng = np.random.default_rng(6)
    est = linear_estimator(RABEstimator, nb_models, 0.5, alpha, "hoeffding", draws_per_model=draws)
    failures = 0
    for _ in range(trials):
        bias = torch.zeros(nb_models, 2)
        bias[:, 1] = torch.from_numpy(np.where(rng.random(nb_models) < p, 1.0, -1.0))
        params = {"1.weight": torch.zeros(nb_models, 2, DIM), "1.bias": bias}
        est.fitted_ = est.fitted_.replace(members=StackedEnsemble(linear_member(), params, {}))
        result = est.certify(np.zeros((1, 1, 4, 4), dtype=np.float32), return_details=True)
        failures += int(result.pred[0] != ABSTAIN and (result.pred[0] != 1 or result.p_a_lower[0] > p))
    assert failures <= allowed_failures(trials, alpha)


# ------------------------------------------------------------------------------------ adaptive certification
@pytest.mark.slow  # in the default suite: the certify_adaptive rows of the soundness matrix
def test_adaptive_certification_through_the_estimator_keeps_its_error_rate():
    """The sequential test on real votes (seeded test noise through the members), at the worst case: inputs whose
    true radius is just below the radius tested, so that every certification is an error."""
    sigma, alpha, r, trials = 0.5, 0.1, 0.4, 300
    est = linear_estimator(RABEstimator, 200, sigma, alpha, "clopper-pearson")
    p_true = norm.cdf(r / sigma) - 1e-3  # p_A just below p_r = Phi(r / sigma): the true radius is just below r
    x, margin = probe_inputs(sigma, (p_true,))
    rng = np.random.default_rng(8)
    errors = np.zeros(len(x), dtype=int)
    for _ in range(trials):
        est.fitted_ = est.fitted_.replace(test_noise_seeds=[int(s) for s in rng.integers(0, 2**63 - 1, est.nb_models)])
        result = est.certify_adaptive(x, r, looks=np.array([25, 50, 100, 200]), futility_alpha=None)
        errors += result.certified  # any certificate at r is wrong: the true radius is below r
        assert np.all(result.votes_used <= 200)
    assert errors.max() <= allowed_failures(trials, alpha, FALSE_ALARM / len(x)), errors


# ==================================================================================== the soundness matrix (issue 10)
# Every certify path x every option that changes a certificate, on members whose smoothed p_A and true radius are
# known exactly, at the worst case (a radius just above the true one, and an exact tie). A member is the learner of a
# one-dimensional problem: trained on E noisy copies x_t + sigma_t * b_e of a training point, it learns their mean,
# and votes [m + sigma_x * z + a * sigma_t * mean_e(b_e) > 0] on the test input (margin m, test noise z): so
# p_A = Phi(m / sqrt(sigma_x^2 + a^2 sigma_t^2 / E)). A test trigger moves the margin by ||delta_x||, a training
# trigger by a ||delta_t||, so the prediction provably stays within
#   * total L2 norm ||(delta_x, delta_t)|| < |m| / sqrt(1 + a^2)               (what radius_conservative promises)
#   * anisotropic norm sigma_x * sqrt(||delta_x||^2 / sigma_x^2 + ||delta_t||^2 / sigma_t^2)
#                                        < sigma_x |m| / sqrt(sigma_x^2 + a^2 sigma_t^2)   (what radius promises)
# and no further: with E = 1 (noise="fixed") and sigma_t = sigma_x both radii are exact, so the simulation has power.
# Each input of one estimator call lives in its own block of the input (BlockMember): it reads its own coordinates of
# every member's test noise and its own training biases, so the inputs of one call are independent trials.
# A row fails when, for some probe, the wrong certificates (wrong label, or radius above the true radius; for
# predict, a wrong non-abstained label) exceed the (1 - FALSE_ALARM / probes) quantile of Binomial(trials, alpha).
MATRIX = {
    "path": ("certify", "certify_adaptive", "predict"),
    "bound": BOUNDS,
    "draws_per_model": (1, 3),
    "use_memory": (False, True),
    "radius": ("paper", "conservative", "budget"),  # predict has no radius: its rows are "label"
    "noise": ("fixed", "fresh"),
}
#: Parameters of the estimators, certify, certify_adaptive and predict that are not a matrix axis, and why.
NOT_IN_MATRIX = {
    "self": "",
    "model": "the members (the matrix's are known exactly)",
    "loss": "training only",
    "input_shape": "shape",
    "nb_classes": "two classes: the worst case of the top-class selection (a tie); C > 2 in test_certification",
    "optimizer": "training only",
    "channels_first": "layout",
    "clip_values": "input validation",
    "preprocessing_defences": "refused (must be None)",
    "postprocessing_defences": "refused (must be None)",
    "preprocessing": "refused unless the identity",
    "device_type": "where, not what",
    "nb_models": "the number of votes: any; the matrix uses 40 members",
    "scale": "sigma0: the matrix fixes sigma_x, sigma_t",
    "alpha": "the level the matrix checks against (one value)",
    "sample_size": "refused (it is nb_models * draws_per_model)",
    "warmup_epochs": "the base model: only the sigmas depend on it, and the certificate conditions on them",
    "vectorize": "speed only (same votes)",
    "memory_budget": "speed only",
    "amp": "speed only (votes in lower precision, CUDA only)",
    "compile": "speed only",
    "executor": "speed only (tests/test_ray_backend.py: the same votes and certificates on Ray)",
    "random_state": "seeds",
    "verbose": "progress bars",
    "sigma_steps": "the sigmas: the certificate conditions on them (sample-specific sigma_x: "
    "test_cert_ssbd_certificates_with_sample_specific_sigma_fail_at_most_at_rate_alpha)",
    "sigma_lr": "as sigma_steps",
    "sigma_samples": "as sigma_steps",
    "sigma_bounds": "as sigma_steps",
    "sigma_update": "as sigma_steps",
    "sigma_tol": "as sigma_steps (when each sample's ascent stops; the sigmas are fixed before any vote)",
    "sigma_patience": "as sigma_steps",
    "x": "the inputs",
    "n": "fewer votes of the same kind",
    "batch_size": "speed only",
    "return_details": "output format",
    "update_memory": "False only trims against the stored regions (a subset of what the matrix's True does)",
    "looks": "the schedule is fixed before any vote: any schedule is covered by the union bound (test_sequential)",
    "first_look": "as looks",
    "growth": "as looks",
    "spending": "the split of the level over the looks (test_sequential)",
    "futility_alpha": "stops without certifying: power only",
    "kwargs": "predict's is_abstain=False (the plain majority vote, no certificate) and certify_adaptive's options",
}
#: Parameters that are matrix axes, by axis.
MATRIX_PARAMS = {
    "bound": "bound",
    "draws_per_model": "draws_per_model",
    "use_memory": "use_memory",
    "noise": "noise",
    "conservative": "radius",
    "budgets": "radius",  # the budget certificate (k = 1 sample, ratio BUDGET_RATIO): the radius kind "budget"
    "radius": "path",  # certify_adaptive's radius: the radius just above the true one
}
SX, ST, A_TRAIN, FRESH_EPOCHS, ALPHA_M, MEMBERS_M, FEATURES = 0.5, 0.4, 2.0, 3, 0.1, 40, 3
PROBES = (0.5, 0.75, 0.95, -0.9)  # smoothed probability of class 1 (-p: of class 0); 0.5 is an exact tie
ADAPTIVE_PROBE = 0.7  # certify_adaptive's probe (40 members can certify p_r = 0.7 at the looks' levels)
W_BLOCK = np.array([0.6, 0.0, 0.8])  # |w| = 1
# The budget kind: k = 1 poisoned sample (the probes' own training point has the smallest sigma, ST) with a trigger of
# norm delta, and a test trigger of norm BUDGET_RATIO * delta. They move the margin by (A_TRAIN + ratio) * delta, so
# the true delta_max is |m| / (A_TRAIN + ratio); with this ratio the budget's direction is the ellipsoid's steepest
# one for the probes' member (ratio = sigma_x^2 / (a sigma_t^2)), and with E = 1 the certificate is exact there.
BUDGET_RATIO = SX**2 / (A_TRAIN * ST**2)


def matrix_rows() -> list[dict]:
    rows = []
    for path, bound, draws, memory, kind, noise in itertools.product(*MATRIX.values()):
        if (path == "predict" and kind != "paper") or (path == "certify_adaptive" and kind == "budget"):
            continue  # predict has no radius; certify_adaptive decides one radius, not a budget
        rows.append(
            dict(
                path=path,
                bound=bound,
                draws_per_model=draws,
                use_memory=memory,
                radius="label" if path == "predict" else kind,
                noise=noise,
            )
        )
    return rows


def row_id(row: dict) -> str:
    return "-".join(str(v) for v in row.values())


class BlockMember(torch.nn.Module):
    """``blocks`` copies of the one-dimensional problem in one input of shape ``(1, blocks, features + 1)``: row ``t``
    holds block ``t``'s features and, last, its marker (100 in the block the input lives in, 0 elsewhere). Logits
    ``(-z / 2, z / 2)``, ``z = slope * w.x_t + bias_t`` for the marked block ``t``."""

    def __init__(self, blocks: int, features: int = FEATURES):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(features))
        self.slope = torch.nn.Parameter(torch.ones(1))
        self.bias = torch.nn.Parameter(torch.zeros(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], self.bias.shape[0], -1)
        active = (x[..., -1] > 50).to(x.dtype)  # the test noise (sigma <= 1) never moves a marker across 50
        z = ((self.slope * (x[..., :-1] @ self.w) + self.bias) * active).sum(dim=1)
        return torch.stack([-z / 2, z / 2], dim=1)


def noise_copies(noise: str) -> int:
    return FRESH_EPOCHS if noise == "fresh" else 1


def probe_margin(p: float, noise: str) -> float:
    """The margin m whose smoothed probability of class 1 is ``p`` (of class 0 for negative ``p``)."""
    scale = np.sqrt(SX**2 + A_TRAIN**2 * ST**2 / noise_copies(noise))
    return float(np.sign(p) * norm.ppf(abs(p)) * scale)


def true_radius(m, kind: str):
    if kind == "budget":  # the largest delta of the budget (1, delta, BUDGET_RATIO * delta) that keeps the prediction
        return np.abs(m) / (A_TRAIN + BUDGET_RATIO)
    if kind == "paper":
        return SX * np.abs(m) / np.sqrt(SX**2 + A_TRAIN**2 * ST**2)
    return np.abs(m) / np.sqrt(1 + A_TRAIN**2)


def matrix_estimator(row: dict, blocks: int, members: int = MEMBERS_M, **overrides) -> CertSSBDEstimator:
    params = dict(bound=row["bound"], draws_per_model=row["draws_per_model"], noise=row["noise"])
    params.update(nb_models=members, scale=SX, alpha=ALPHA_M, use_memory=row["use_memory"])
    params.update(sigma_steps=0, warmup_epochs=0, random_state=0, device_type="cpu")
    blocks_shape = (1, blocks, FEATURES + 1)
    return CertSSBDEstimator(
        BlockMember(blocks), torch.nn.CrossEntropyLoss(), blocks_shape, 2, **{**params, **overrides}
    )


def refit(est: CertSSBDEstimator, seed: int, slope: float = 1.0, bias=None) -> None:
    """New training and test noise: the fitted state ``fit`` would leave, drawn as the model above says."""
    rng = np.random.default_rng(seed)
    members, blocks, copies = est.nb_models, est.input_shape[1], noise_copies(est.noise)
    if bias is None:  # what member k learned from block t's training point: a * sigma_t * mean of E noise copies
        bias = A_TRAIN * ST * rng.standard_normal((members, blocks)) / np.sqrt(copies)
    params = {
        "w": torch.tensor(np.tile(W_BLOCK, (members, 1)), dtype=torch.float32),
        "slope": torch.full((members, 1), float(slope)),
        "bias": torch.as_tensor(bias, dtype=torch.float32),
    }
    est.fitted_ = FittedEnsemble(
        StackedEnsemble(est.base_model, params, {}),
        np.array([0.9, ST, 0.6], dtype=np.float32),  # min_j sigma_j = sigma_t of the probes' point
        random_state=0,
        train_noise_copies=copies,
        test_noise_seeds=[int(s) for s in rng.integers(0, 2**63 - 1, members)],
        memory=CertificationMemory() if est.use_memory else None,
    )


def block_inputs(margins, blocks: int) -> np.ndarray:
    """For each block, one input per margin (block-major): shape ``(blocks * len(margins), 1, blocks, F + 1)``."""
    margins = np.asarray(margins, dtype=float)
    x = np.zeros((blocks, len(margins), blocks, FEATURES + 1))
    for t in range(blocks):
        x[t, :, t, :FEATURES] = margins[:, None] * W_BLOCK
        x[t, :, t, FEATURES] = 100.0
    return x.reshape(-1, 1, blocks, FEATURES + 1).astype(np.float32)


def run_matrix_row(row: dict, blocks: int, calls: int, seed: int = 0, members: int = MEMBERS_M) -> np.ndarray:
    """Wrong-certificate counts per probe of one row over ``blocks * calls`` independent trials."""
    est = matrix_estimator(row, blocks, members)
    kind, path = row["radius"], row["path"]
    if path == "certify_adaptive":  # one probe, p_A = 0.7, certified at a radius just above its true radius
        margins = np.array([probe_margin(ADAPTIVE_PROBE, row["noise"])])
        r = float(true_radius(margins[0], kind)) + 1e-3
    else:
        margins = np.array([probe_margin(p, row["noise"]) for p in PROBES])
    labels = np.where(margins > 0, 1, np.where(margins < 0, 0, -2))  # -2: at a tie every decision is wrong
    x = block_inputs(margins, blocks)
    wrong = np.zeros(len(margins), dtype=int)
    for call in range(calls):
        refit(est, seed * 1000 + call)
        if path == "certify":
            result = est.certify(x, return_details=True)
            radius = result.radius if kind == "paper" else result.radius_conservative
            if kind == "budget":  # the certified delta of one poisoned sample (the budget certificate's delta_max)
                radius = result.delta_max(1, ratio=BUDGET_RATIO)
            pred = result.pred.reshape(blocks, -1)
            bad = (pred != labels) | (radius.reshape(blocks, -1) > true_radius(margins, kind))
            bad &= pred != ABSTAIN
        elif path == "predict":
            proba = est.predict(x).reshape(blocks, len(margins), 2)
            bad = (proba.sum(axis=2) > 0) & (proba.argmax(axis=2) != labels)
        else:
            result = est.certify_adaptive(x, r, conservative=kind == "conservative", first_look=members // 5)
            bad = result.certified.reshape(blocks, -1)  # r is above the true radius: any certificate is wrong
        wrong += bad.sum(axis=0)
    return wrong


def _refused(row: dict) -> bool:
    """Several draws per member need Hoeffding over the members: the binomial and the anytime bounds are refused."""
    return row["bound"] != "hoeffding" and row["draws_per_model"] > 1


@pytest.mark.parametrize("row", matrix_rows(), ids=row_id)
def test_soundness_matrix(row):
    if _refused(row):  # refused, with the reason
        with pytest.raises(ValueError, match=r"draws_per_model=3 needs bound='hoeffding' \(the draws of one member"):
            matrix_estimator(row, 4)
        return
    blocks = 200
    wrong = run_matrix_row(row, blocks, calls=1)
    allowed = allowed_failures(blocks, ALPHA_M, FALSE_ALARM / len(wrong))
    assert wrong.max() <= allowed, (wrong, allowed)


@pytest.mark.slow
@pytest.mark.parametrize("row", matrix_rows(), ids=row_id)
def test_soundness_matrix_large(row):
    if _refused(row):
        pytest.skip("refused (test_soundness_matrix)")
    blocks, calls = 250, 8  # 2000 trials per row, 100 members
    wrong = run_matrix_row(row, blocks, calls=calls, seed=1, members=100)
    assert wrong.max() <= allowed_failures(blocks * calls, ALPHA_M, FALSE_ALARM / len(wrong)), wrong


def _unfiltered(fn):
    """The method under ART's ``InputFilter`` wrapper (``predict`` is replaced by ``f(self, *args, **kwargs)``)."""
    cells = [cell.cell_contents for cell in fn.__closure__ or ()]
    names = [c for c in cells if isinstance(c, str)]
    tables = [c for c in cells if isinstance(c, dict)]
    return tables[0][names[0]] if names and tables else fn


def test_the_matrix_covers_every_certificate_option():
    """Adding a parameter to the estimators, certify, certify_adaptive, predict or the certificate itself fails here
    until it is a matrix axis (with its values) or listed in NOT_IN_MATRIX with the reason."""
    from art_certssbd import certification
    from art_certssbd.training import NOISE_MODES

    signatures = [
        CertSSBDEstimator.__init__,
        RABEstimator.__init__,
        CertSSBDEstimator.certify,
        CertSSBDEstimator.predict,
        CertSSBDEstimator.certify_adaptive,
    ]
    names = {name for fn in map(_unfiltered, signatures) for name in inspect.signature(fn).parameters}
    assert names - set(NOT_IN_MATRIX) == set(MATRIX_PARAMS), "classify the new parameter: matrix axis or NOT_IN_MATRIX"
    assert set(NOT_IN_MATRIX) & set(MATRIX_PARAMS) == set()
    # the certificate's own options: each one an axis (train_sigma_min: the conservative radius; noise_copies: noise)
    certificate = set(inspect.signature(certification.certify_votes).parameters)
    assert certificate == {
        "counts",
        "sigma",
        "alpha",
        "bound",
        "draws_per_model",
        "train_sigma_min",
        "noise_copies",
        "n",
    }
    est = matrix_estimator(matrix_rows()[0], 2)
    refit(est, 0)
    assert set(est.certificate_options()) == {"alpha", "bound", "draws_per_model", "train_sigma_min", "noise_copies"}
    # every value of every axis
    assert set(MATRIX["bound"]) == set(BOUNDS) and set(MATRIX["noise"]) == set(NOISE_MODES)
    assert set(MATRIX["use_memory"]) == {False, True} and min(MATRIX["draws_per_model"]) == 1
    assert max(MATRIX["draws_per_model"]) > 1
    radii = {f.name for f in dataclasses.fields(CertificationResult) if f.name.startswith("radius")}
    assert radii == {"radius", "radius_conservative"}
    assert set(MATRIX["radius"]) == {"paper", "conservative", "budget"}


@pytest.mark.parametrize("row", [r for r in matrix_rows() if r["path"] == "predict"], ids=row_id)
def test_predict_abstains_exactly_where_certify_does_for_every_option(row):
    if _refused(row):
        pytest.skip("refused (test_soundness_matrix)")
    est = matrix_estimator(row, 40)
    x = block_inputs([probe_margin(p, row["noise"]) for p in (0.5, 0.6, -0.7)], 40)
    refit(est, 5)
    result = est.certify(x, return_details=True)
    proba = est.predict(x)
    np.testing.assert_array_equal(proba.sum(axis=1) == 0, result.pred == ABSTAIN)  # the memory never abstains
    decided = result.pred != ABSTAIN  # with the memory: certify's class after the storage-update step
    np.testing.assert_array_equal(proba[decided].argmax(axis=1), result.pred[decided])


# -------------------------------------------- the memory on every answer (issue 22): certify, certify_adaptive, predict
# A test sigma chosen from the input makes overlapping certificates of different labels possible (docs/guarantees.md):
# members that vote 1 exactly inside the slab |x_0| < SLAB give, smoothed at a small sigma, class 1 near x_0 = 0 and,
# at a large sigma, class 0 there (most of the noise falls outside the slab), each with a radius of the size of its
# sigma. The sigma is set from the input (SIGMA_SMALL or SIGMA_LARGE by x_0, as a sigma optimiser could), so two
# inputs one pixel apart are certified with different labels by overlapping balls unless the memory intervenes.
SLAB, SIGMA_SMALL, SIGMA_LARGE, GAP = 2.0, 0.4, 6.0, 0.35


class SlabMember(torch.nn.Module):
    """Logits ``(-z, z)``, ``z = width - |x_0|`` (``x_0`` the first pixel): class 1 exactly inside the slab."""

    def __init__(self):
        super().__init__()
        self.width = torch.nn.Parameter(torch.tensor([SLAB]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.width - x.reshape(x.shape[0], -1)[:, 0].abs()
        return torch.stack([-z, z], dim=1)


def grid_sigma(x_t: torch.Tensor, verbose: bool = False, search=None) -> torch.Tensor:
    """The test sigma from the input: small where ``round(20 x_0)`` is even, large where it is odd."""
    odd = torch.remainder(torch.round(x_t.reshape(len(x_t), -1)[:, 0] * 20), 2) == 1
    return torch.where(odd, SIGMA_LARGE, SIGMA_SMALL).to(torch.float32)


def slab_estimator(use_memory: bool, bound: str = "clopper-pearson", members: int = 100, alpha: float = 0.01):
    """A fitted Cert-SSBD estimator of identical slab members with the input-chosen test sigma of ``grid_sigma``."""
    est = CertSSBDEstimator(
        SlabMember(), torch.nn.CrossEntropyLoss(), (1, 2, 2), 2, device_type="cpu", nb_models=members, scale=0.4,
        alpha=alpha, bound=bound, sigma_steps=0, use_memory=use_memory, random_state=0,
    )  # fmt: skip
    est.fitted_ = FittedEnsemble(
        StackedEnsemble.from_modules([SlabMember() for _ in range(members)]),
        np.array([0.5, 0.3], dtype=np.float32),  # min_j sigma_j = 0.3: conservative radii differ
        random_state=0,
        train_noise_copies=1,
        test_noise_seeds=[int(s) for s in np.random.default_rng(11).integers(0, 2**63 - 1, members)],
        memory=CertificationMemory() if use_memory else None,
    )
    est._test_sigma = grid_sigma  # sigma_x chosen from the input (the SGA's role), fixed per input
    return est


def one_pixel_inputs() -> tuple[np.ndarray, np.ndarray]:
    """The issue's pair: x1 (x_0 = 0.35, large sigma, class 0) and x2 (x_0 = 0, small sigma, class 1), one pixel
    and 0.35 apart."""
    x1, x2 = np.zeros((1, 1, 2, 2), dtype=np.float32), np.zeros((1, 1, 2, 2), dtype=np.float32)
    x1[0, 0, 0, 0] = GAP
    return x1, x2


def test_every_answer_agrees_with_a_stored_region_one_pixel_away():
    # The reproduction of issue 22: certify(x1) stores a class-0 ball that contains x2; before the fix,
    # certify_adaptive(x2) certified class 1 at 0.5 and predict(x2) said class 1 while certify(x2) said class 0.
    est = slab_estimator(use_memory=True)
    x1, x2 = one_pixel_inputs()
    first = est.certify(x1, return_details=True)
    assert first.pred[0] == 0 and first.radius[0] > GAP + 0.5  # x2 lies deep inside the stored class-0 region
    without = slab_estimator(use_memory=False)  # the same votes without the memory: the contradiction exists
    assert without.certify_adaptive(x2, 0.5).pred[0] == 1 and without.predict(x2)[0].argmax() == 1
    adaptive = est.certify_adaptive(x2, 0.5)
    proba = est.predict(x2)
    again = est.certify(x2, return_details=True)
    assert again.pred_before_memory[0] == 1 and again.pred[0] == 0  # the memory relabels certify's answer
    assert adaptive.certified[0] and adaptive.pred[0] == 0  # inside the class-0 region: radius R1 - GAP >= 0.5
    np.testing.assert_allclose(adaptive.radius_bound[0], first.radius[0] - GAP, rtol=1e-5)
    np.testing.assert_array_equal(proba, [[1.0, 0.0]])
    assert est.predict(x2, is_abstain=False)[0].argmax() == 0
    assert est.memory_.check_invariant()


def test_a_certified_adaptive_answer_stores_its_ball_and_later_answers_follow_it():
    est = slab_estimator(use_memory=True)
    x1, x2 = one_pixel_inputs()
    adaptive = est.certify_adaptive(x2, 0.5)
    assert adaptive.certified[0] and adaptive.pred[0] == 1 and adaptive.radius_bound[0] > GAP
    assert len(est.memory_) == 1 and est.memory_.labels[0] == 1
    np.testing.assert_allclose(est.memory_.radii, adaptive.radius_bound)  # the ball it certified, at its look
    assert est.predict(x1)[0].argmax() == 1  # x1 lies inside it: class 1, though its own votes say 0
    later = est.certify(x1, return_details=True)
    assert later.pred_before_memory[0] == 0 and later.pred[0] == 1
    np.testing.assert_allclose(later.radius[0], adaptive.radius_bound[0] - GAP, rtol=1e-5)
    # update_memory=False only trims; a trimmed-below-r answer abstains and stores nothing
    est2 = slab_estimator(use_memory=True)
    est2.certify(x1)
    out = est2.certify_adaptive(x2, float(est2.memory_.radii[0]), update_memory=False)  # r above R1 - GAP
    assert not out.certified[0] and out.pred[0] == ABSTAIN and out.radius_bound[0] == 0.0 and len(est2.memory_) == 1
    with pytest.raises(ValueError, match="update_memory must be True or False, got 'no'"):
        est2.certify_adaptive(x2, 0.5, update_memory="no")


def test_without_the_memory_the_answers_are_unchanged():
    # use_memory=False: an earlier certify(x1) changes nothing; the answers about x2 are those of an estimator that
    # never saw x1, and its own votes decide (class 1), bitwise
    est, twin = slab_estimator(use_memory=False), slab_estimator(use_memory=False)
    x1, x2 = one_pixel_inputs()
    assert est.certify(x1)[0][0] == 0
    result, plain = est.certify_adaptive(x2, 0.5), twin.certify_adaptive(x2, 0.5)
    for field in ("certified", "pred", "radius_bound", "p_a_lower", "votes_used", "counts"):
        np.testing.assert_array_equal(getattr(result, field), getattr(plain, field))
    assert result.pred[0] == 1
    np.testing.assert_array_equal(est.predict(x2), [[0.0, 1.0]])
    counts = twin.certify(x2, return_details=True).votes
    np.testing.assert_array_equal(est.predict(x2, is_abstain=False).argmax(axis=1), counts.argmax(axis=1))


def _regions(memory: CertificationMemory) -> list[tuple]:
    return list(zip(memory.centers, memory.labels, memory.radii, memory.radii_conservative))


def _contradictions(path: str, x: np.ndarray, answer, regions: list, stored_from: int | None = None) -> int:
    """Answers of one call that contradict a stored region: a certified ball (certify: paper and conservative;
    certify_adaptive: ``radius_bound >= r``) overlapping a region of another label, or a predicted class other than
    that of a region the input lies inside. With ``stored_from`` (certify, certify_adaptive with the memory), the
    regions from that index on were stored by this call, one per stored answer in order, and item ``i`` is checked
    only against those of earlier items."""
    tol, flat = 1e-6, x.reshape(len(x), -1).astype(np.float64)
    if path == "predict":
        pred = np.where(answer.sum(axis=1) > 0, answer.argmax(axis=1), ABSTAIN)
        balls = np.zeros((len(x), 2))
    elif path == "certify":
        pred, balls = answer.pred, np.stack([answer.radius, answer.radius_conservative], axis=1)
        assert np.all(answer.radius_conservative <= answer.radius)
    else:
        pred = answer.pred
        assert np.all(answer.radius_bound[answer.certified] >= answer.radius)
        balls = np.stack([answer.radius_bound, answer.radius_bound], axis=1)  # radius_bound <= the paper radius
    stored = (pred != ABSTAIN) & (balls[:, 0] > 0) if path == "certify" else pred != ABSTAIN
    order = np.cumsum(stored) - stored  # regions this call stored before item i
    bad = 0
    for i in np.flatnonzero(pred != ABSTAIN):
        limit = len(regions) if stored_from is None else stored_from + int(order[i])
        for center, label, r_j, rc_j in regions[:limit]:
            if label != pred[i]:
                d = np.linalg.norm(flat[i] - center)
                bad += d < r_j + balls[i, 0] - tol or d < rc_j + balls[i, 1] - tol
    return bad


def _answer(est, path: str, x: np.ndarray, r: float, conservative: bool):
    if path == "certify":
        return est.certify(x, return_details=True)
    if path == "certify_adaptive":
        return est.certify_adaptive(x, r, conservative=conservative)
    return est.predict(x)


def memory_rows() -> list[dict]:
    kinds = {"certify": ("paper", "conservative"), "certify_adaptive": ("paper", "conservative"), "predict": ("label",)}
    return [dict(path=p, bound=b, radius=k) for p in MATRIX["path"] for b in BOUNDS for k in kinds[p]]


@pytest.mark.parametrize("row", memory_rows(), ids=row_id)
def test_soundness_matrix_memory_answers_never_contradict_a_stored_region(row):
    """The ``use_memory=True`` rows of the matrix at the memory's worst case: streams of inputs on a grid of x_0
    where neighbours get different test sigmas (so different labels and overlapping balls), each call of the row's
    path after a call of another path that stored regions. No answer of the row's path contradicts a region stored
    before it; the same votes without the memory do (the rows construct the overlaps)."""
    path, conservative = row["path"], row["radius"] == "conservative"
    est, twin = slab_estimator(True, row["bound"]), slab_estimator(False, row["bound"])
    rng = np.random.default_rng(22)
    contradictions = twin_contradictions = 0
    for step in range(10):
        size = int(rng.integers(1, 4))
        grid = np.stack([2 * rng.integers(0, 8, size) + 1, rng.integers(0, 17, size)])  # odd: large sigma, class 0
        filler, checked = (np.pad((g / 20)[:, None], ((0, 0), (0, 3))).reshape(-1, 1, 2, 2) for g in grid)
        filler, checked = filler.astype(np.float32), checked.astype(np.float32)
        if step % 2:  # regions of class 0 stored by another path first
            est.certify(filler)
        else:
            est.certify_adaptive(filler, 0.1)
        regions, r = _regions(est.memory_), float(rng.choice([0.1, 0.3, 0.6]))
        answer, plain = (_answer(e, path, checked, r, conservative) for e in (est, twin))
        after = _regions(est.memory_)
        stored_from = None if path == "predict" else len(regions)
        if path == "predict":
            assert len(after) == len(regions)  # predict stores nothing
        contradictions += _contradictions(path, checked, answer, after, stored_from)
        twin_contradictions += _contradictions(path, checked, plain, regions)
        assert est.memory_.check_invariant()
    assert contradictions == 0
    assert twin_contradictions > 0  # power: without the memory step the same answers contradict the regions


# ------------------------------------------------------------------------ regressions of issue 10, through the shell
def test_adaptive_certification_bounds_the_draws_of_one_member_together():
    # The issue's setting: p = 0.6 over the members' training noise, 50 members, 10 draws each that vote alike (the
    # members ignore the test noise), alpha = 0.05, r just above the true radius sigma * Phi^-1(p). Before, the
    # adaptive path ran Clopper-Pearson over the 500 draws as if independent: 111 of 200 wrong.
    p, members, draws, alpha, blocks = 0.6, 50, 10, 0.05, 200
    row = dict(bound="hoeffding", draws_per_model=draws, noise="fixed", use_memory=False)
    est = matrix_estimator(row, blocks, members, alpha=alpha)
    bias = np.where(np.random.default_rng(9).random((members, blocks)) < p, 1.0, -1.0)
    refit(est, 9, slope=0.0, bias=bias)
    x = block_inputs([0.0], blocks)
    r = SX * norm.ppf(p) + 1e-3
    result = est.certify_adaptive(x, r)
    assert result.certified.sum() <= allowed_failures(blocks, alpha), result.certified.sum()
    assert np.all(result.votes_used % draws == 0)
    fixed = est.certify(x, return_details=True)  # and fixed-n certify, as before
    assert np.sum((fixed.pred != ABSTAIN) & (fixed.radius >= r)) <= allowed_failures(blocks, alpha)


def _far_probes(est, nb: int = 4) -> np.ndarray:
    x, _ = probe_inputs(est.scale, (0.99999,) * nb)
    return x


def test_certify_conservative_radius_uses_the_smaller_training_sigma():
    # Dropping min(sigma_x, min_j sigma_j) must fail: a training sigma min (0.1) below sigma_x (0.5)
    est = linear_estimator(RABEstimator, 50, 0.5, 0.05, "clopper-pearson")
    est.fitted_ = est.fitted_.replace(train_sigma=np.array([0.3, 0.1, 0.7], dtype=np.float32))
    result = est.certify(_far_probes(est), return_details=True)
    assert np.all(result.pred != ABSTAIN) and np.all(result.radius > 0)
    np.testing.assert_allclose(result.radius_conservative, result.radius * 0.1 / 0.5, rtol=1e-6)
    est.fitted_ = est.fitted_.replace(
        train_sigma=np.array([0.9, 0.7], dtype=np.float32)
    )  # all above sigma_x: the paper's radius
    np.testing.assert_array_equal(est.certify(_far_probes(est), return_details=True).radius_conservative, result.radius)


def test_certify_adaptive_conservative_uses_the_smaller_training_sigma():
    est = linear_estimator(RABEstimator, 50, 0.5, 0.05, "clopper-pearson")
    est.fitted_ = est.fitted_.replace(train_sigma=np.array([0.3, 0.1, 0.7], dtype=np.float32))
    x = _far_probes(est)
    fixed = est.certify(x, return_details=True)  # unanimous votes: the largest radii 50 votes can give
    r = float((fixed.radius.min() + fixed.radius_conservative.max()) / 2)  # between the conservative and the paper's
    paper = est.certify_adaptive(x, r, looks=[50])
    assert paper.certified.all()
    conservative = est.certify_adaptive(x, r, looks=[50], conservative=True)
    assert not conservative.certified.any()
    below = est.certify_adaptive(x, 0.9 * float(fixed.radius_conservative.min()), looks=[50], conservative=True)
    assert below.certified.all()
    np.testing.assert_allclose(below.radius_bound, fixed.radius_conservative, rtol=1e-6)


def test_fresh_training_noise_is_recorded_at_fit_saved_and_certified_divided(tmp_path):
    from helpers import digits_estimator

    from art_certssbd.certification import certify_votes
    from art_certssbd.datasets import load_digits

    x_train, y_train, x_test, _ = load_digits(random_state=0)
    est = digits_estimator(RABEstimator, nb_models=3, noise="fresh", scale=0.25, alpha=0.1, random_state=0)
    est.fit(x_train[:64], y_train[:64], nb_epochs=4, batch_size=32)
    assert est.train_noise_copies_ == 4  # each member saw each training sample 4 times, with new noise each time
    result = est.certify(x_test[:20], return_details=True)
    expected = certify_votes(result.votes, result.sigma, alpha=0.1, train_sigma_min=0.25, noise_copies=4)
    np.testing.assert_allclose(result.radius, expected.radius)
    one = certify_votes(result.votes, result.sigma, alpha=0.1)
    np.testing.assert_allclose(result.radius, one.radius / 2)
    est.save_ensemble(tmp_path / "ens")
    again = digits_estimator(RABEstimator, nb_models=3, noise="fresh", scale=0.25, alpha=0.1, random_state=0)
    again.load_ensemble(tmp_path / "ens")
    assert again.train_noise_copies_ == 4
    # an older save, without the count: a fresh-noise ensemble is refused at load, with the reason, and a fitted
    # record cannot be built without it (the estimator is left unchanged)
    import json

    manifest = json.loads((tmp_path / "ens" / "manifest.json").read_text())
    del manifest["config"]["train_noise_copies"]
    (tmp_path / "ens" / "manifest.json").write_text(json.dumps(manifest))
    older = digits_estimator(RABEstimator, nb_models=3, noise="fresh", scale=0.25, alpha=0.1, random_state=0)
    with pytest.raises(ValueError, match=r"trained with noise='fresh'.*shrinks by sqrt\(nb_epochs\)"):
        older.load_ensemble(tmp_path / "ens")
    assert not hasattr(older, "ensemble_")
    with pytest.raises(ValueError, match="train_noise_copies is required"):
        again.fitted_.replace(train_noise_copies=None)
