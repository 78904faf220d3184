"""Confidence bounds, certified radii and certified accuracy for randomized smoothing (pure numpy/scipy).

The names follow the papers: ``k`` votes out of ``n`` for the top class, ``p_a_lower`` its lower confidence bound,
``sigma`` the smoothing noise level, ``alpha`` the error probability (ART calls these ``scale`` and ``alpha``).
A certificate is ``R = sigma / 2 * (Phi^-1(pA_lower) - Phi^-1(pB_upper))`` with ``pB_upper = 1 - pA_lower``
(Cohen et al., binary and multi-class alike), which reduces to ``sigma * Phi^-1(pA_lower)``; the prediction
abstains when ``pA_lower <= 1/2``.

The confidence bounds are the entries of :data:`BOUND_TABLE` (names :data:`BOUNDS`): ``"clopper-pearson"``,
``"hoeffding"`` and ``"anytime"``, each with what it assumes; to change or add a bound, change the table.

| Paper link: https://arxiv.org/abs/2504.21730 (Cert-SSBD), https://arxiv.org/abs/2003.08904 (RAB)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
from scipy.special import ndtri
from scipy.stats import beta

from art_certssbd import confseq
from art_certssbd._validation import (
    check_alpha,
    check_choice,
    check_k,
    check_n,
    check_positive_array,
    check_unit_interval,
    first_bad,
)

logger = logging.getLogger(__name__)

ABSTAIN = -1

# Largest double below 1 and its complement: the clamp that keeps Phi^-1 finite (|Phi^-1| <= 8.21).
_P_MAX = float(np.nextafter(1.0, 0.0))
_P_MIN = 1.0 - _P_MAX


def clopper_pearson_lower(k, n, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower bound on a binomial proportion, vectorised over ``k`` and ``n``.

    :param k: Number of successes (integer-valued, ``0 <= k <= n``).
    :param n: Number of trials (integer >= 1).
    :param alpha: Error probability in (0, 1).
    :return: ``beta.ppf(alpha, k, n - k + 1)``, and 0 where ``k == 0``.
    """
    alpha = check_alpha(alpha)
    n = check_n(n)
    k = check_k(k, n, integer=True)
    # Beta quantile; the k == 0 case (undefined Beta(0, .)) is 0 by definition.
    safe_k = np.where(k > 0, k, 1.0)
    return np.where(k > 0, beta.ppf(alpha, safe_k, n - safe_k + 1), 0.0)[()]


def clopper_pearson_upper(k, n, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Clopper-Pearson upper bound: ``beta.ppf(1 - alpha, k + 1, n - k)``, 1 where ``k == n``.

    :param k: Number of successes (integer-valued, ``0 <= k <= n``).
    :param n: Number of trials (integer >= 1).
    :param alpha: Error probability in (0, 1).
    """
    alpha = check_alpha(alpha)
    n = check_n(n)
    k = check_k(k, n, integer=True)
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
    alpha = check_alpha(alpha)
    n = check_n(n)
    k = check_k(k, n, integer=False)
    return np.clip(k / n - _hoeffding_margin(n, alpha), 0.0, 1.0)[()]


def hoeffding_upper(k, n, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` Hoeffding upper bound ``k / n + sqrt(ln(1 / alpha) / (2 n))``, clipped to [0, 1].

    :param k: Sum of the votes; may be fractional, ``0 <= k <= n``.
    :param n: Number of votes (integer >= 1).
    :param alpha: Error probability in (0, 1).
    """
    alpha = check_alpha(alpha)
    n = check_n(n)
    k = check_k(k, n, integer=False)
    return np.clip(k / n + _hoeffding_margin(n, alpha), 0.0, 1.0)[()]


def anytime_lower(k, n, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` lower end of the time-uniform confidence sequence of :mod:`art_certssbd.confseq`:
    valid at every ``n`` at once, so at any stopping time.

    :param k: Sum of the votes; may be fractional (soft votes), ``0 <= k <= n``.
    :param n: Number of votes (integer >= 1).
    :param alpha: Error probability in (0, 1), over all ``n`` at once.
    """
    n = check_n(n)
    k = check_k(k, n, integer=False)
    return confseq.lower(k, n, check_alpha(alpha))


def anytime_upper(k, n, alpha: float) -> np.ndarray:
    """One-sided ``(1 - alpha)`` upper end of the confidence sequence of :mod:`art_certssbd.confseq`.

    :param k: Sum of the votes; may be fractional, ``0 <= k <= n``.
    :param n: Number of votes (integer >= 1).
    :param alpha: Error probability in (0, 1), over all ``n`` at once.
    """
    n = check_n(n)
    k = check_k(k, n, integer=False)
    return confseq.upper(k, n, check_alpha(alpha))


@dataclass(frozen=True)
class Bound:
    """One confidence bound on a class's vote probability: its two one-sided ends and what it assumes.

    :param lower: ``lower(k, n, alpha)``: the one-sided ``(1 - alpha)`` lower bound from ``k`` of ``n`` votes.
    :param upper: ``upper(k, n, alpha)``: the upper bound.
    :param binomial: An exact binomial bound: needs integer vote counts of independent votes (one vote per member);
        soft votes are rounded down to whole counts for it.
    :param anytime: Valid at every number of votes at once (a confidence sequence), hence at any stopping time: the
        bound for an ensemble whose size depended on its votes, tested at the whole level at every look.
    :param allows_draws_per_model: Valid over the per-member vote fractions when each member votes several times
        (``draws_per_model > 1``: the draws of one member are not independent).
    :param description: One line for help texts.
    """

    lower: Callable[..., np.ndarray]
    upper: Callable[..., np.ndarray]
    binomial: bool
    anytime: bool
    allows_draws_per_model: bool
    description: str


#: The confidence bounds, by name: the one place that says what each bound is and assumes. Every path (the
#: certificate, the sequential test, the estimators, the CLI) reads it.
BOUND_TABLE: Mapping[str, Bound] = MappingProxyType(
    {
        "clopper-pearson": Bound(
            clopper_pearson_lower,
            clopper_pearson_upper,
            binomial=True,
            anytime=False,
            allows_draws_per_model=False,
            description="exact binomial bound (integer votes, one per member)",
        ),
        "hoeffding": Bound(
            hoeffding_lower,
            hoeffding_upper,
            binomial=False,
            anytime=False,
            allows_draws_per_model=True,
            description="Hoeffding's inequality (soft votes, several draws per member; the official code's)",
        ),
        "anytime": Bound(
            anytime_lower,
            anytime_upper,
            binomial=False,
            anytime=True,
            allows_draws_per_model=False,
            description="confidence sequence, valid at every number of votes (grown ensembles, early stopping)",
        ),
    }
)
#: The names of the bounds of :data:`BOUND_TABLE`.
BOUNDS = tuple(BOUND_TABLE)


def check_bound(bound) -> str:
    """``bound`` as one of :data:`BOUNDS`."""
    return check_choice(bound, "bound", BOUNDS)


def lower_confidence_bound(k, n, alpha: float, bound: str = "clopper-pearson") -> np.ndarray:
    """One-sided ``(1 - alpha)`` lower confidence bound with the named method (a key of :data:`BOUND_TABLE`).

    :param k: Number (or, for a bound that is not ``binomial``, sum) of votes for the class.
    :param n: Number of votes.
    :param alpha: Error probability in (0, 1).
    :param bound: One of :data:`BOUNDS`: ``"clopper-pearson"`` (exact, integer ``k``), ``"hoeffding"``, or
           ``"anytime"`` (the time-uniform confidence sequence of :mod:`art_certssbd.confseq`: valid at every ``n``
           at once).
    """
    return BOUND_TABLE[check_bound(bound)].lower(k, n, alpha)


def upper_confidence_bound(k, n, alpha: float, bound: str = "clopper-pearson") -> np.ndarray:
    """One-sided ``(1 - alpha)`` upper confidence bound with the named method (a key of :data:`BOUND_TABLE`).

    :param k: Number (or, for a bound that is not ``binomial``, sum) of votes for the class.
    :param n: Number of votes.
    :param alpha: Error probability in (0, 1).
    :param bound: One of :data:`BOUNDS`: ``"clopper-pearson"``, ``"hoeffding"`` or ``"anytime"``.
    """
    return BOUND_TABLE[check_bound(bound)].upper(k, n, alpha)


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
    p_a = check_unit_interval(p_a_lower, "p_a_lower")
    p_b = 1.0 - p_a if p_b_upper is None else check_unit_interval(p_b_upper, "p_b_upper")
    sigma = check_positive_array(sigma, "sigma")
    # Certify only where the top class provably beats the runner-up.
    certified = p_a > p_b
    # Clamp away from 0 and 1 so that Phi^-1 stays finite.
    gap = ndtri(np.clip(p_a, _P_MIN, _P_MAX)) - ndtri(np.clip(p_b, _P_MIN, _P_MAX))
    return np.where(certified, np.maximum(sigma / 2.0 * gap, 0.0), 0.0)[()]


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
        raise ValueError(f"radii must be finite and >= 0, got {first_bad(radii, bad)}")
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
