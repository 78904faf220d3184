"""A time-uniform confidence sequence for a Bernoulli mean (pure numpy/scipy): bounds on a class's vote probability
that hold at every number of votes at once, so a procedure may look after every vote and stop when it likes.

For ``k`` successes in ``n`` Bernoulli(``p``) trials and a prior ``pi`` on ``[0, 1]``, the mixture likelihood ratio

    M_n(p0) = integral q^k (1 - q)^(n - k) dpi(q) / (p0^k (1 - p0)^(n - k))

is a non-negative martingale with mean 1 under ``p = p0`` (Robbins 1970), whatever the stopping rule. By Ville's
inequality ``P(exists n: M_n(p) >= 1 / level) <= level``, so

    C_n = {p0 : M_n(p0) < 1 / level}

contains ``p`` at every ``n`` simultaneously with probability at least ``1 - level``: a ``(1 - level)`` confidence
sequence. ``log M_n(p0) = log A(k, n) - k log p0 - (n - k) log(1 - p0)`` is convex in ``p0``, so ``C_n`` is an
interval, found by bisection. The prior here is an equal-weight mixture of beta distributions whose means span
``[0.5, 0.999]`` (a mixture of test martingales is one): it pays ``log`` of the number of components for being
tight both for near-unanimous votes (large radii) and for votes near one half. With ``k = n`` the lower bound
needs ``log(1 / level) + log A`` in place of a fixed-``n`` test's ``log(1 / level)``; see ``docs/guarantees.md``.

The same sequence holds for observations in ``[0, 1]`` with mean ``p`` (soft votes, ``k`` a sum of scores): each
factor of the likelihood ratio is convex in the observation, so its mean is at most its Bernoulli mean, 1, and
``M_n(p)`` is a non-negative supermartingale, to which Ville's inequality applies as well.

| Reference: H. Robbins, "Statistical methods related to the law of the iterated logarithm", Ann. Math. Statist.
  41 (1970); I. Waudby-Smith and A. Ramdas, "Estimating means of bounded random variables by betting", JRSS-B
  (2024), for confidence sequences in general.
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln, logsumexp

#: ``(a, b)`` of the beta components of the mixing prior (equal weights): means 0.5, 0.75, 0.9, 0.97, 0.99, 0.999.
PRIOR = ((1.0, 1.0), (3.0, 1.0), (9.0, 1.0), (32.0, 1.0), (99.0, 1.0), (999.0, 1.0))
_BISECTIONS = 60


def log_mixture_normaliser(k, n) -> np.ndarray:
    """``log A(k, n) = log mean_j B(a_j + k, b_j + n - k) / B(a_j, b_j)``: the mixture's marginal likelihood."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    terms = [betaln(a + k, b + n - k) - betaln(a, b) for a, b in PRIOR]
    return logsumexp(np.stack(terms), axis=0) - np.log(len(PRIOR))


def log_evidence(k, n, p0) -> np.ndarray:
    """``log M_n(p0)``, the log mixture likelihood ratio against ``p = p0``."""
    k, n, p0 = np.asarray(k, dtype=float), np.asarray(n, dtype=float), np.asarray(p0, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_lik = np.where(k > 0, k * np.log(p0), 0.0) + np.where(n > k, (n - k) * np.log1p(-p0), 0.0)
    return log_mixture_normaliser(k, n) - log_lik


def lower(k, n, level: float) -> np.ndarray:
    """The confidence sequence's lower end at ``(k, n)``: ``inf C_n``, from below (bisection to 2^-60).

    :param k: Successes, ``0 <= k <= n`` (integers).
    :param n: Trials (``n >= 1``).
    :param level: The sequence's error probability over all ``n`` at once, in (0, 1).
    """
    k, n = np.broadcast_arrays(np.asarray(k, dtype=float), np.asarray(n, dtype=float))
    # p0 is in C_n iff log M_n(p0) = log A(k, n) - (k log p0 + (n - k) log(1 - p0)) < log(1 / level); the
    # likelihood increases on [0, k / n] (the MLE, always in C_n since A <= the largest likelihood), so inf C_n is
    # found by bisection there. The test is written exactly as log_evidence computes it, so the returned end is
    # outside C_n to the last bit: log_evidence(k, n, lower(k, n, level)) >= log(1 / level) (for k >= 1).
    log_a, threshold = log_mixture_normaliser(k, n), np.log(1.0 / level)
    lo, hi = np.zeros(k.shape), k / n
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        with np.errstate(divide="ignore", invalid="ignore"):
            log_lik = np.where(k > 0, k * np.log(mid), 0.0) + np.where(n > k, (n - k) * np.log1p(-mid), 0.0)
        in_set = log_a - log_lik < threshold
        hi, lo = np.where(in_set, mid, hi), np.where(in_set, lo, mid)
    return lo


def upper(k, n, level: float) -> np.ndarray:
    """The confidence sequence's upper end: ``1 - lower(n - k, n)`` (the same sequence for the complement)."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    return 1.0 - lower(n - k, n, level)
