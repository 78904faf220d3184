"""Confidence bounds, certified radii and certified accuracy for randomized smoothing (pure numpy/scipy).

The names follow the papers: ``k`` votes out of ``n`` for the top class, ``p_a_lower`` its lower confidence bound,
``sigma`` the smoothing noise level, ``alpha`` the error probability (ART calls these ``scale`` and ``alpha``).
A certificate is ``R = sigma / 2 * (Phi^-1(pA_lower) - Phi^-1(pB_upper))`` with ``pB_upper = 1 - pA_lower``
(Cohen et al., binary and multi-class alike), which reduces to ``sigma * Phi^-1(pA_lower)``; the prediction
abstains when ``pA_lower <= 1/2``.

| Paper link: https://arxiv.org/abs/2504.21730 (Cert-SSBD), https://arxiv.org/abs/2003.08904 (RAB)
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.special import ndtri
from scipy.stats import beta

from art_certssbd import confseq
from art_certssbd._validation import check_choice, check_probability

logger = logging.getLogger(__name__)

ABSTAIN = -1
BOUNDS = ("clopper-pearson", "hoeffding", "anytime")

# Largest double below 1 and its complement: the clamp that keeps Phi^-1 finite (|Phi^-1| <= 8.21).
_P_MAX = float(np.nextafter(1.0, 0.0))
_P_MIN = 1.0 - _P_MAX
# Slack when turning soft-vote totals ``n * score`` into counts, so that 0.7 * 1000 = 699.99999999 counts as 700.
_COUNT_SLACK = 1e-9


def _first(values: np.ndarray, bad: np.ndarray):
    """The first offending entry of ``values`` (for error messages)."""
    return np.broadcast_to(values, bad.shape)[bad].flat[0]


def _check_alpha(alpha) -> float:
    """``alpha`` as a float in the open interval (0, 1)."""
    return check_probability(alpha, "alpha")


def _check_bound(bound) -> str:
    """``bound`` as one of :data:`BOUNDS`."""
    return check_choice(bound, "bound", BOUNDS)


def _check_positive(name: str, value) -> np.ndarray:
    """``value`` as a float array of finite, strictly positive entries."""
    arr = np.asarray(value, dtype=float)
    bad = ~(np.isfinite(arr) & (arr > 0))
    if bad.any():
        raise ValueError(f"{name} must be finite and > 0, got {_first(arr, bad)}")
    return arr


def _check_n(n) -> np.ndarray:
    """``n`` as an integer array of entries >= 1."""
    arr = np.asarray(n, dtype=float)
    bad = ~(np.isfinite(arr) & (arr >= 1) & (arr == np.floor(arr)))
    if bad.any():
        raise ValueError(f"n must be an integer >= 1, got {_first(arr, bad)}")
    return arr.astype(np.int64)


def _check_k(k, n: np.ndarray, integer: bool) -> np.ndarray:
    """``k`` as a float array with ``0 <= k <= n`` (integer-valued when ``integer``)."""
    arr = np.asarray(k, dtype=float)
    bad = ~(np.isfinite(arr) & (arr >= 0) & (arr <= n))
    if integer:
        bad |= arr != np.floor(arr)
    if bad.any():
        kind = "integers" if integer else "numbers"
        raise ValueError(f"k must be {kind} in [0, n], got {_first(arr, bad)}")
    return arr


def _check_probability(name: str, value) -> np.ndarray:
    """``value`` as a float array in [0, 1]."""
    arr = np.asarray(value, dtype=float)
    bad = ~((arr >= 0) & (arr <= 1))
    if bad.any():
        raise ValueError(f"{name} must be in [0, 1], got {_first(arr, bad)}")
    return arr


def clopper_pearson_lower(k, n, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower bound on a binomial proportion, vectorised over ``k`` and ``n``.

    :param k: Number of successes (integer-valued, ``0 <= k <= n``).
    :param n: Number of trials (integer >= 1).
    :param alpha: Error probability in (0, 1).
    :return: ``beta.ppf(alpha, k, n - k + 1)``, and 0 where ``k == 0``.
    """
    alpha = _check_alpha(alpha)
    n = _check_n(n)
    k = _check_k(k, n, integer=True)
    # Beta quantile; the k == 0 case (undefined Beta(0, .)) is 0 by definition.
    safe_k = np.where(k > 0, k, 1.0)
    return np.where(k > 0, beta.ppf(alpha, safe_k, n - safe_k + 1), 0.0)[()]


def clopper_pearson_upper(k, n, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Clopper-Pearson upper bound: ``beta.ppf(1 - alpha, k + 1, n - k)``, 1 where ``k == n``.

    :param k: Number of successes (integer-valued, ``0 <= k <= n``).
    :param n: Number of trials (integer >= 1).
    :param alpha: Error probability in (0, 1).
    """
    alpha = _check_alpha(alpha)
    n = _check_n(n)
    k = _check_k(k, n, integer=True)
    # Beta quantile; the k == n case (undefined Beta(., 0)) is 1 by definition.
    safe_k = np.where(k < n, k, n - 1.0)
    return np.where(k < n, beta.ppf(1.0 - alpha, safe_k + 1, n - safe_k), 1.0)[()]


def _hoeffding_margin(n: np.ndarray, alpha: float) -> np.ndarray:
    """``sqrt(ln(1 / alpha) / (2 n))``."""
    return np.sqrt(np.log(1.0 / alpha) / (2.0 * n))


def hoeffding_lower(k, n, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Hoeffding lower bound ``k / n - sqrt(ln(1 / alpha) / (2 n))``, clipped to [0, 1].

    :param k: Sum of the votes; may be fractional (soft votes: ``k = n * mean score``), ``0 <= k <= n``.
    :param n: Number of votes (integer >= 1); the true one, not a hard-coded 1000 as in the official code.
    :param alpha: Error probability in (0, 1).
    """
    alpha = _check_alpha(alpha)
    n = _check_n(n)
    k = _check_k(k, n, integer=False)
    return np.clip(k / n - _hoeffding_margin(n, alpha), 0.0, 1.0)[()]


def hoeffding_upper(k, n, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Hoeffding upper bound ``k / n + sqrt(ln(1 / alpha) / (2 n))``, clipped to [0, 1].

    :param k: Sum of the votes; may be fractional, ``0 <= k <= n``.
    :param n: Number of votes (integer >= 1).
    :param alpha: Error probability in (0, 1).
    """
    alpha = _check_alpha(alpha)
    n = _check_n(n)
    k = _check_k(k, n, integer=False)
    return np.clip(k / n + _hoeffding_margin(n, alpha), 0.0, 1.0)[()]


def lower_confidence_bound(k, n, alpha: float, bound: str = "clopper-pearson") -> np.ndarray:
    """One-sided ``(1 - alpha)`` lower confidence bound with the named method (one of :data:`BOUNDS`).

    :param k: Number (or, for Hoeffding, sum) of votes for the class.
    :param n: Number of votes.
    :param alpha: Error probability in (0, 1).
    :param bound: ``"clopper-pearson"`` (exact, integer ``k``), ``"hoeffding"``, or ``"anytime"`` (the
           time-uniform confidence sequence of :mod:`art_certssbd.confseq`: valid at every ``n`` at once).
    """
    bound = _check_bound(bound)
    if bound == "anytime":
        return confseq.lower(_check_k(k, _check_n(n), False), _check_n(n), _check_alpha(alpha))
    return clopper_pearson_lower(k, n, alpha) if bound == "clopper-pearson" else hoeffding_lower(k, n, alpha)


def upper_confidence_bound(k, n, alpha: float, bound: str = "clopper-pearson") -> np.ndarray:
    """One-sided ``(1 - alpha)`` upper confidence bound with the named method (one of :data:`BOUNDS`).

    :param k: Number (or, for Hoeffding, sum) of votes for the class.
    :param n: Number of votes.
    :param alpha: Error probability in (0, 1).
    :param bound: ``"clopper-pearson"``, ``"hoeffding"`` or ``"anytime"``.
    """
    bound = _check_bound(bound)
    if bound == "anytime":
        return confseq.upper(_check_k(k, _check_n(n), False), _check_n(n), _check_alpha(alpha))
    return clopper_pearson_upper(k, n, alpha) if bound == "clopper-pearson" else hoeffding_upper(k, n, alpha)


def radius(p_a_lower, sigma, p_b_upper=None) -> np.ndarray:
    """Certified L2 radius ``sigma / 2 * (Phi^-1(pA_lower) - Phi^-1(pB_upper))``, 0 where ``pA_lower <= pB_upper``.

    With the default ``pB_upper = 1 - pA_lower`` this is ``sigma * Phi^-1(pA_lower)``. The result is never
    negative, NaN or infinite: ``pA_lower = 1`` (or ``pB_upper = 0``) cannot come out of either bound with
    ``alpha > 0`` and finite ``n`` (Clopper-Pearson gives at most ``alpha ** (1 / n)``, Hoeffding subtracts a
    positive margin), so a caller-supplied 1 (0) is clamped to the largest double below 1 (its complement,
    ``2 ** -53``), which caps ``Phi^-1`` at about 8.21.

    :param p_a_lower: Lower bound on the top-class probability, in [0, 1]; scalar or array.
    :param sigma: Noise level (> 0, finite); scalar or array broadcasting with ``p_a_lower``.
    :param p_b_upper: Upper bound on the runner-up probability, in [0, 1]; default ``1 - p_a_lower``.
    """
    p_a = _check_probability("p_a_lower", p_a_lower)
    p_b = 1.0 - p_a if p_b_upper is None else _check_probability("p_b_upper", p_b_upper)
    sigma = _check_positive("sigma", sigma)
    # Certify only where the top class provably beats the runner-up.
    certified = p_a > p_b
    # Clamp away from 0 and 1 so that Phi^-1 stays finite.
    gap = ndtri(np.clip(p_a, _P_MIN, _P_MAX)) - ndtri(np.clip(p_b, _P_MIN, _P_MAX))
    return np.where(certified, np.maximum(sigma / 2.0 * gap, 0.0), 0.0)[()]


def _check_sigma_rows(sigma, nb_rows: int) -> np.ndarray:
    """``sigma`` as a positive array of shape ``(nb_rows,)`` (a scalar is broadcast)."""
    sigma = _check_positive("sigma", sigma)
    if sigma.ndim > 1 or (sigma.ndim == 1 and sigma.shape[0] != nb_rows):
        raise ValueError(f"sigma must be a scalar or have shape ({nb_rows},), got shape {sigma.shape}")
    return np.broadcast_to(sigma, (nb_rows,))


def certify_counts(counts, sigma, alpha: float, bound: str = "clopper-pearson", n=None):
    """Certify from hard vote counts (the CERTIFY step of Cohen et al., with the RAB/Cert-SSBD radius): a thin
    wrapper of :func:`art_certssbd.certification.certify_votes`, the package's one certificate.

    ``alpha`` is the overall error probability of each certificate: the top class is chosen on the same votes that
    bound it, so it is bounded at ``alpha / 2`` internally (a bound at the full ``alpha`` errs at up to ``2 alpha``
    near a two-class tie).

    :param counts: Integer array ``(N, C)``: votes per input and class.
    :param sigma: Noise level per input: scalar or ``(N,)``, finite and > 0.
    :param alpha: Overall error probability in (0, 1).
    :param bound: One of :data:`BOUNDS`.
    :param n: Number of votes per input (scalar or ``(N,)``); default ``counts.sum(1)``. Must be at least the
        row sum (votes that went nowhere still count against the top class).
    :return: ``(pred, radius, p_a_lower)``: top class (lowest index on ties, :data:`ABSTAIN` where
        ``p_a_lower <= 1/2``), certified radius (0 where abstaining), and the lower bound of the top class (at
        level ``alpha / 2``).
    """
    from art_certssbd.certification import certify_votes  # the certificate lives there; it builds on this module

    result = certify_votes(counts, sigma, alpha=_check_alpha(alpha), bound=_check_bound(bound), n=n)
    return result.pred, result.radius, result.p_a_lower


def certify_scores(mean_scores, sigma, alpha: float, n, bound: str = "hoeffding"):
    """Certify from soft votes (mean scores over ``n`` noisy passes), as the official Cert-SSB code does.

    The top class gets ``k = n * mean_scores[top]``. Hoeffding uses this fractional ``k`` as is; Clopper-Pearson
    needs whole counts and uses ``floor(k + 1e-9)`` (rounded down, with a slack for float error in the mean). Scores
    within 1e-9 outside [0, 1] are clipped. ``alpha`` is the overall error probability: soft scores are not binomial
    votes, so the top class is bounded at ``alpha / max(2, C)``
    (:func:`art_certssbd.certification.selection_level`).

    :param mean_scores: Array ``(N, C)`` of scores averaged over ``n`` votes, each in [0, 1].
    :param sigma: Noise level per input: scalar or ``(N,)``, finite and > 0.
    :param alpha: Overall error probability in (0, 1).
    :param n: Number of votes (integer >= 1), the true one.
    :param bound: One of :data:`BOUNDS` (default ``"hoeffding"``, as in the official code).
    :return: ``(pred, radius, p_a_lower)`` as in :func:`certify_counts`.
    """
    from art_certssbd.certification import certify_top_class, selection_level

    # Validate every input before any work.
    alpha = _check_alpha(alpha)
    bound = _check_bound(bound)
    n = _check_n(n)
    if n.ndim != 0:
        raise ValueError(f"n must be a scalar integer >= 1, got {n}")
    scores = np.asarray(mean_scores, dtype=float)
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise ValueError(f"mean_scores must be a 2-D array (N, C) with C >= 1, got shape {scores.shape}")
    bad = ~((scores >= -_COUNT_SLACK) & (scores <= 1.0 + _COUNT_SLACK))
    if bad.any():
        raise ValueError(f"mean_scores must be in [0, 1], got {_first(scores, bad)}")
    sigma = _check_sigma_rows(sigma, scores.shape[0])
    # Top class per input and its (possibly fractional) vote total.
    top = np.argmax(scores, axis=1)
    k = np.clip(n * scores[np.arange(scores.shape[0]), top], 0.0, float(n))
    if bound == "clopper-pearson":
        k = np.minimum(np.floor(k + _COUNT_SLACK), float(n))
    level = selection_level(alpha, scores.shape[1], soft=True)
    result = certify_top_class(top, k, n, sigma, scores * n, level, bound, 1, None, 1)
    return result.pred, result.radius, result.p_a_lower


def certified_accuracy(pred, radius, y, radii) -> np.ndarray:
    """Fraction of inputs predicted correctly (not abstained) with a certified radius of at least ``r``, per ``r``.

    :param pred: Predictions ``(N,)``, :data:`ABSTAIN` for abstentions.
    :param radius: Certified radii ``(N,)``.
    :param y: True labels ``(N,)``.
    :param radii: Radii to report at (scalar or 1-D, each >= 0); ``r = 0`` counts every correct prediction.
    :return: Array of ``len(radii)`` fractions.
    """
    pred, rad, y = np.asarray(pred), np.asarray(radius, dtype=float), np.asarray(y)
    if pred.ndim != 1 or pred.shape[0] == 0 or rad.shape != pred.shape or y.shape != pred.shape:
        raise ValueError(
            f"pred, radius and y must be non-empty 1-D arrays of one length, got shapes {pred.shape}, "
            f"{rad.shape}, {y.shape}"
        )
    radii = np.asarray(radii, dtype=float).reshape(-1)
    bad = ~(np.isfinite(radii) & (radii >= 0))
    if bad.any():
        raise ValueError(f"radii must be finite and >= 0, got {_first(radii, bad)}")
    # Correct and not abstained, then certified at each radius.
    correct = (pred == y) & (pred != ABSTAIN)
    return (correct[None, :] & (rad[None, :] >= radii[:, None])).mean(axis=1)


def max_radius(n, alpha: float, sigma=1.0, bound: str = "clopper-pearson") -> np.ndarray:
    """Largest radius ``n`` votes can certify (all of them for one class).

    At ``n = 1000``, ``alpha = 1e-3``: ``1.565 sigma`` with Hoeffding, ``2.463 sigma`` with Clopper-Pearson.

    :param n: Number of votes (integer >= 1).
    :param alpha: Error probability in (0, 1).
    :param sigma: Noise level (> 0).
    :param bound: One of :data:`BOUNDS`.
    """
    return radius(lower_confidence_bound(n, n, alpha, bound), sigma)
