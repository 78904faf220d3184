"""Certificates from plain vote arrays, as ``(pred, radius, p_a_lower)`` tuples (pure numpy/scipy): hard vote counts
(:func:`certify_counts`) and soft mean scores (:func:`certify_scores`, as the official Cert-SSB code certifies).

Both are front ends of :mod:`art_certssbd.certification`, the package's one certificate; they take the overall
``alpha`` of each certificate and split it there.

| Paper link: https://arxiv.org/abs/2504.21730 (Cert-SSBD), https://arxiv.org/abs/2003.08904 (RAB)
"""

from __future__ import annotations

import numpy as np

from art_certssbd import stats
from art_certssbd._validation import check_alpha, check_n, check_sigma_rows, first_bad
from art_certssbd.certification import CertificateOptions, certify_top_class, certify_votes, selection_level

__all__ = ["certify_counts", "certify_scores"]

# Slack when turning soft-vote totals ``n * score`` into counts, so that 0.7 * 1000 = 699.99999999 counts as 700.
_COUNT_SLACK = 1e-9


def certify_counts(counts, sigma, alpha: float, bound: str = "clopper-pearson", n=None):
    """Certify from hard vote counts (the CERTIFY step of Cohen et al., with the RAB/Cert-SSBD radius): a thin
    wrapper of :func:`art_certssbd.certification.certify_votes`, the package's one certificate.

    ``alpha`` is the overall error probability of each certificate: the top class is chosen on the same votes that
    bound it, so it is bounded at ``alpha / 2`` internally (a bound at the full ``alpha`` errs at up to ``2 alpha``
    near a two-class tie).

    :param counts: Integer array ``(N, C)``: votes per input and class.
    :param sigma: Noise level per input: scalar or ``(N,)``, finite and > 0.
    :param alpha: Overall error probability in (0, 1).
    :param bound: One of :data:`~art_certssbd.stats.BOUNDS`.
    :param n: Number of votes per input (scalar or ``(N,)``); default ``counts.sum(1)``. Must be at least the
        row sum (votes that went nowhere still count against the top class).
    :return: ``(pred, radius, p_a_lower)``: top class (lowest index on ties, :data:`~art_certssbd.stats.ABSTAIN`
        where ``p_a_lower <= 1/2``), certified radius (0 where abstaining), and the lower bound of the top class (at
        the selection level, :func:`~art_certssbd.certification.selection_level`).
    """
    result = certify_votes(counts, sigma, alpha=check_alpha(alpha), bound=stats.check_bound(bound), n=n)
    return result.pred, result.radius, result.p_a_lower


def certify_scores(mean_scores, sigma, alpha: float, n, bound: str = "hoeffding"):
    """Certify from soft votes (mean scores over ``n`` noisy passes), as the official Cert-SSB code does.

    The top class gets ``k = n * mean_scores[top]``. A bound that takes fractional votes uses this ``k`` as is; a
    :attr:`~art_certssbd.stats.Bound.binomial` one (Clopper-Pearson) needs whole counts and uses ``floor(k + 1e-9)``
    (rounded down, with a slack for float error in the mean). Scores within 1e-9 outside [0, 1] are clipped.
    ``alpha`` is the overall error probability: soft scores are not binomial votes, so the top class is bounded at
    ``alpha / max(2, C)`` (:func:`art_certssbd.certification.selection_level`).

    :param mean_scores: Array ``(N, C)`` of scores averaged over ``n`` votes, each in [0, 1].
    :param sigma: Noise level per input: scalar or ``(N,)``, finite and > 0.
    :param alpha: Overall error probability in (0, 1).
    :param n: Number of votes (integer >= 1), the true one.
    :param bound: One of :data:`~art_certssbd.stats.BOUNDS` (default ``"hoeffding"``, as in the official code).
    :return: ``(pred, radius, p_a_lower)`` as in :func:`certify_counts`.
    """
    # Validate every input before any work.
    alpha = check_alpha(alpha)
    bound = stats.check_bound(bound)
    n = check_n(n)
    if n.ndim != 0:
        raise ValueError(f"n must be a scalar integer >= 1, got {n}")
    scores = np.asarray(mean_scores, dtype=float)
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise ValueError(f"mean_scores must be a 2-D array (N, C) with C >= 1, got shape {scores.shape}")
    bad = ~((scores >= -_COUNT_SLACK) & (scores <= 1.0 + _COUNT_SLACK))
    if bad.any():
        raise ValueError(f"mean_scores must be in [0, 1], got {first_bad(scores, bad)}")
    sigma = check_sigma_rows(sigma, scores.shape[0])
    # Top class per input and its (possibly fractional) vote total.
    top = np.argmax(scores, axis=1)
    k = np.clip(n * scores[np.arange(scores.shape[0]), top], 0.0, float(n))
    if stats.BOUND_TABLE[bound].binomial:
        k = np.minimum(np.floor(k + _COUNT_SLACK), float(n))
    level = selection_level(alpha, scores.shape[1], soft=True)
    result = certify_top_class(top, k, n, sigma, scores * n, level, CertificateOptions(bound))
    return result.pred, result.radius, result.p_a_lower
