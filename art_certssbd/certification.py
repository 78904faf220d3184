"""The certificate, once: vote counts -> top class -> confidence bound -> abstain rule -> radii (pure numpy/scipy).

Every path that hands out a certificate calls this module: :meth:`~art_certssbd.CertSSBDEstimator.certify`,
``predict``'s abstain rule, the sequential test of :mod:`art_certssbd.sequential` (adaptive certification, at each
look's level), the benchmark harnesses. An option that changes a certificate is handled here and nowhere else.

The certificate for one input with test noise ``sigma`` (``sigma_x``), ``n`` votes of which ``k`` for the top class:

1. **Top class** ``c_A = argmax counts`` (lowest index on ties), chosen on the same votes that bound it.
2. **Bound** ``p_a_lower``: a one-sided lower confidence bound on ``p_A`` at the *selection level* (below), with
   ``bound`` one of :data:`~art_certssbd.stats.BOUNDS` (what each assumes: :data:`~art_certssbd.stats.BOUND_TABLE`):
   ``"clopper-pearson"`` (exact, binomial votes), ``"hoeffding"`` or ``"anytime"`` (a confidence sequence, valid at
   every number of votes). With ``draws_per_model = D > 1`` the ``D`` draws of one member share its training noise
   and are not independent; the per-member vote fractions are, so the bound is Hoeffding over the ``n / D`` members
   (the other bounds are refused).
3. **Abstain** (:data:`ABSTAIN`, radius 0) unless ``p_a_lower > 1/2`` (Cohen's ``pB_upper = 1 - pA_lower``).
4. **Radius** ``sigma / sqrt(E) * Phi^-1(p_a_lower)`` (the paper's, with ``sigma_x``) and the **conservative radius**
   with ``min(sigma_x, min_j sigma_j)`` in place of ``sigma_x``; ``E`` (``noise_copies``) is the number of noisy
   copies of each training sample one member was trained on: 1 for ``noise="fixed"``, ``nb_epochs`` for
   ``noise="fresh"`` (a training-set trigger is then seen ``E`` times: stacked, its noise-scaled norm grows by
   ``sqrt(E)``, so the certified radius shrinks by ``sqrt(E)``).

Selection level (why ``alpha / 2``). The class is chosen on the votes that bound it, so the error event is "the
bound of *some* class ``c`` exceeds ``max(p_c, 1/2)``". With ``D = 1`` (binomial votes) each class is bounded at
``alpha / 2``: for the (at most one) class with ``p_c > 1/2`` the miss probability is at most ``alpha / 2``; for a
class with ``p_c <= 1/2`` the event is a binomial upper tail beyond ``n / 2``, a convex function of ``p_c`` on
``[0, 1/2]`` that is at most ``alpha / 2`` at ``1/2``, so at most ``p_c * alpha``; summed over the classes, at most
``alpha``. With ``D > 1`` the per-member fractions are not binomial and the convexity argument is not available:
if a class has ``p > 1/2``, certifying another class needs that class's fraction to fall below ``1/2 - eps``
(one Hoeffding tail), so ``alpha / 2`` per class is enough; if none has, a union bound over the ``C`` classes is
used. The level is therefore ``alpha / max(2, C)`` with ``D > 1`` (``alpha / 2`` for two classes, as before).

What the radii cover, and what they condition on, is stated in ``docs/guarantees.md``.

| Paper link: https://arxiv.org/abs/2504.21730 (Cert-SSBD), https://arxiv.org/abs/2003.08904 (RAB)
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np

from art_certssbd import stats
from art_certssbd._validation import (
    check_alpha,
    check_int,
    check_n,
    check_positive_array,
    check_sigma_rows,
    first_bad,
)
from art_certssbd.result import CertificationResult
from art_certssbd.stats import ABSTAIN, BOUNDS  # noqa: F401 (BOUNDS re-exported: the certificate's bounds)

logger = logging.getLogger(__name__)

__all__ = [  # ABSTAIN and BOUNDS are importable from here too (defined in stats, documented there)
    "certify_at_level",
    "certify_top_class",
    "certify_votes",
    "CertificateOptions",
    "check_options",
    "max_certifiable_radius",
    "min_ensemble_size",
    "noise_sigma",
    "selection_level",
    "vote_bound",
]


#: ``bound='hoeffding'``: the bounds of the table valid over per-member vote fractions (``draws_per_model > 1``).
_DRAWS_BOUNDS = " or ".join(f"bound={name!r}" for name, b in stats.BOUND_TABLE.items() if b.allows_draws_per_model)


class CertificateOptions(NamedTuple):
    """The options of a certificate other than its level, validated (:func:`check_options` builds it)."""

    #: One of :data:`BOUNDS`.
    bound: str = "clopper-pearson"
    #: Test noise draws per member D.
    draws_per_model: int = 1
    #: E, the noisy copies of each training sample one member saw (radii divided by ``sqrt(E)``).
    noise_copies: int = 1
    #: ``min_j sigma_j`` of the training samples (the conservative radius), or ``None``.
    train_sigma_min: float | None = None


def check_options(bound: str, draws_per_model: int = 1, noise_copies: int = 1, train_sigma_min=None):
    """Validate the certificate's options; return them normalised as a :class:`CertificateOptions`
    ``(bound, draws_per_model, noise_copies, train_sigma_min)``.

    :raises ValueError: An unknown ``bound``; ``draws_per_model > 1`` with a bound whose
        :attr:`~art_certssbd.stats.Bound.allows_draws_per_model` is false (only ``"hoeffding"``'s is true: the draws
        of one member are not independent, so a binomial bound over them is invalid); a ``noise_copies`` or
        ``draws_per_model`` that is not a positive integer; a ``train_sigma_min`` that is not finite and > 0.
    """
    bound = stats.check_bound(bound)
    draws_per_model = check_int(draws_per_model, "draws_per_model")
    noise_copies = check_int(noise_copies, "noise_copies")
    if draws_per_model > 1 and not stats.BOUND_TABLE[bound].allows_draws_per_model:
        raise ValueError(
            f"draws_per_model={draws_per_model} needs {_DRAWS_BOUNDS} (the draws of one member are not "
            f"independent, so a binomial bound over them is invalid), got bound={bound!r}"
        )
    if train_sigma_min is not None:
        train_sigma_min = float(check_positive_array(train_sigma_min, "train_sigma_min"))
    return CertificateOptions(bound, draws_per_model, noise_copies, train_sigma_min)


def selection_level(
    alpha: float, nb_classes: int, draws_per_model: int = 1, *, soft: bool = False, bound: str = "clopper-pearson"
) -> float:
    """The level at which the top class is bounded so that the certificate errs with probability at most ``alpha``
    (module docstring): ``alpha / 2`` for binomial votes (one draw per member, hard votes), ``alpha / max(2, C)``
    otherwise (several draws per member, or soft votes: [0, 1]-valued scores), and ``alpha / max(2, C)`` for an
    :attr:`~art_certssbd.stats.Bound.anytime` bound such as ``"anytime"`` (a union over the classes' confidence
    sequences, valid at every number of votes at once).

    :param alpha: Overall error probability in (0, 1).
    :param nb_classes: Number of classes C (columns of the counts).
    :param draws_per_model: Test noise draws per member D.
    :param soft: The votes are scores in [0, 1] rather than hard votes.
    :param bound: The bound of the certificate (one of :data:`BOUNDS`).
    """
    alpha = check_alpha(alpha)
    nb_classes = check_int(nb_classes, "nb_classes")
    draws_per_model = check_int(draws_per_model, "draws_per_model")
    binomial_votes = draws_per_model == 1 and not soft and not stats.BOUND_TABLE[stats.check_bound(bound)].anytime
    return alpha / 2 if binomial_votes else alpha / max(2, nb_classes)


def vote_bound(k, n, level: float, bound: str = "clopper-pearson", draws_per_model: int = 1, *, upper=False):
    """One-sided ``(1 - level)`` bound on a class's vote probability from ``k`` of its ``n`` votes.

    With ``draws_per_model = D > 1`` the votes come in groups of ``D`` per member: the bound (one that
    :attr:`~art_certssbd.stats.Bound.allows_draws_per_model`, i.e. Hoeffding, :func:`check_options`) is taken over
    the ``n / D`` per-member fractions (their sum is ``k / D``).

    :param k: Votes for the class (``0 <= k <= n``).
    :param n: Votes in all (a multiple of ``D``).
    :param level: Error probability of this one bound, in (0, 1).
    :param bound: One of :data:`BOUNDS`.
    :param draws_per_model: D.
    :param upper: The upper bound instead of the lower one.
    """
    bound, draws, _, _ = check_options(bound, draws_per_model)
    fn = stats.upper_confidence_bound if upper else stats.lower_confidence_bound
    if draws == 1:
        return fn(k, n, level, bound)
    n = np.asarray(n)
    if np.any(n % draws):
        raise ValueError(f"n must be a multiple of draws_per_model={draws}, got {n}")
    return fn(np.asarray(k, dtype=float) / draws, n // draws, level, bound)


def noise_sigma(sigma, *, train_sigma_min=None, noise_copies: int = 1, conservative: bool = False) -> np.ndarray:
    """The sigma of the radius ``sigma * Phi^-1(p_a_lower)``: ``sigma_x / sqrt(E)``, or with ``conservative``
    ``min(sigma_x, train_sigma_min) / sqrt(E)`` (``sigma_x / sqrt(E)`` when ``train_sigma_min`` is ``None``).

    :param sigma: Test noise ``sigma_x`` per input (> 0).
    :param train_sigma_min: ``min_j sigma_j`` over the training samples, or ``None``.
    :param noise_copies: E, the noisy copies of each training sample one member was trained on.
    :param conservative: The conservative radius's sigma.
    """
    _, _, noise_copies, train_sigma_min = check_options("hoeffding", 1, noise_copies, train_sigma_min)
    sigma = check_positive_array(sigma, "sigma")
    if conservative and train_sigma_min is not None:
        sigma = np.minimum(sigma, train_sigma_min)
    return sigma / np.sqrt(noise_copies)


def _check_counts(counts, n):
    """``counts`` as an int64 ``(N, C)`` array and ``n`` as an int64 ``(N,)`` array (default: the row sums)."""
    counts = np.asarray(counts)
    if counts.ndim != 2 or counts.shape[1] < 1:
        raise ValueError(f"counts must be a 2-D array (N, C) with C >= 1, got shape {counts.shape}")
    values = counts.astype(float)
    bad = ~(np.isfinite(values) & (values >= 0) & (values == np.floor(values)))
    if bad.any():
        raise ValueError(f"counts must be non-negative integers, got {first_bad(counts, bad)}")
    counts = counts.astype(np.int64)
    totals = counts.sum(axis=1)
    if n is None:
        if (totals == 0).any():
            raise ValueError(f"counts must have at least one vote per row, row {int(np.argmin(totals))} has none")
        n = totals
    else:
        n = check_n(n)
        if n.ndim > 1 or (n.ndim == 1 and n.shape[0] != counts.shape[0]) or (n < totals).any():
            raise ValueError(f"n must be a scalar or (N,) array >= the row sums of counts, got {n}")
    return counts, np.broadcast_to(n, totals.shape).astype(np.int64)


def certify_at_level(counts, sigma, *, level: float, options: CertificateOptions, n=None) -> CertificationResult:
    """Steps 1-4 of the module docstring with the top class bounded at ``level`` as given (no split).

    :func:`certify_votes` calls it at :func:`selection_level`; the sequential test calls it at each look's level
    (levels that add up to the selection level). ``options`` from :func:`check_options`; the other arguments as in
    :func:`certify_votes`.
    """
    level = check_alpha(level)
    if not isinstance(options, CertificateOptions):
        raise TypeError(f"options must be a CertificateOptions (from check_options), got {options!r}")
    counts, n = _check_counts(counts, n)
    sigma = check_sigma_rows(sigma, counts.shape[0]).astype(float)
    # Step 1: the top class, lowest index on ties.
    top = counts.argmax(axis=1)
    k = counts[np.arange(len(top)), top]
    return certify_top_class(top, k, n, sigma, counts, level, options)


def certify_top_class(top, k, n, sigma, votes, level, options: CertificateOptions) -> CertificationResult:
    """Steps 2-4 for a top class already chosen: ``k`` of ``n`` votes (``k`` may be fractional with a bound that is
    not :attr:`~art_certssbd.stats.Bound.binomial`, for soft votes); arguments validated by the caller
    (:func:`certify_at_level`, :func:`art_certssbd.counts.certify_scores`)."""
    bound, draws_per_model, noise_copies, train_sigma_min = options
    # Step 2: the top class's lower confidence bound (Hoeffding over the members when a member votes several times).
    p_a_lower = np.asarray(vote_bound(k, n, level, bound, draws_per_model), dtype=float).reshape(-1)
    # Step 3: abstain unless p_a_lower > 1/2.
    abstain = p_a_lower <= 0.5
    pred = np.where(abstain, ABSTAIN, top).astype(np.int64)
    # Step 4: the paper's radius with sigma_x, the conservative one with min(sigma_x, min_j sigma_j); / sqrt(E).
    paper = noise_sigma(sigma, noise_copies=noise_copies)
    low = noise_sigma(sigma, train_sigma_min=train_sigma_min, noise_copies=noise_copies, conservative=True)
    radius = np.where(abstain, 0.0, stats.radius(p_a_lower, paper)).astype(float).reshape(-1)
    radius_conservative = np.where(abstain, 0.0, stats.radius(p_a_lower, low)).astype(float).reshape(-1)
    logger.debug("certified %d of %d inputs (%s, level %g)", int((~abstain).sum()), len(pred), bound, level)
    return CertificationResult(
        pred=pred,
        radius=radius,
        radius_conservative=radius_conservative,
        sigma=np.array(sigma, dtype=float),
        p_a_lower=p_a_lower,
        votes=votes,
        pred_before_memory=pred.copy(),
    )


def certify_votes(
    counts,
    sigma,
    *,
    alpha: float,
    bound: str = "clopper-pearson",
    draws_per_model: int = 1,
    train_sigma_min=None,
    noise_copies: int = 1,
    n=None,
) -> CertificationResult:
    """THE certificate of this package, from hard vote counts (module docstring, steps 1-4).

    For each input, with probability at least ``1 - alpha`` over the members' noise (training and test), the
    returned class, if not :data:`ABSTAIN`, is the smoothed ensemble's and its true top-class probability is at
    least ``p_a_lower``; ``docs/guarantees.md`` says what each radius then covers.

    :param counts: Votes ``(N, C)`` per input and class (non-negative integers).
    :param sigma: Test noise ``sigma_x``: scalar or ``(N,)``, finite and > 0.
    :param alpha: Overall error probability of each certificate, in (0, 1) (split internally: see
        :func:`selection_level`).
    :param bound: ``"clopper-pearson"`` (default), ``"hoeffding"``, or ``"anytime"`` (a confidence sequence: the
        certificate holds whatever rule chose the number of votes, e.g. an ensemble grown until it was good enough).
    :param draws_per_model: Test noise draws per member D (> 1 needs ``bound="hoeffding"``).
    :param train_sigma_min: ``min_j sigma_j`` of the training samples, for the conservative radius (``None``: the
        conservative radius equals the paper's).
    :param noise_copies: Noisy copies of each training sample one member saw: 1 (``noise="fixed"``) or
        ``nb_epochs`` (``noise="fresh"``); both radii are divided by ``sqrt(noise_copies)``.
    :param n: Votes per input (scalar or ``(N,)``, at least the row sums; default the row sums).
    :return: A :class:`~art_certssbd.result.CertificationResult` (``pred_before_memory`` equals ``pred``).
    """
    options = check_options(bound, draws_per_model, noise_copies, train_sigma_min)
    counts = np.asarray(counts)
    nb_classes = counts.shape[1] if counts.ndim == 2 and counts.shape[1] >= 1 else 1
    level = selection_level(alpha, nb_classes, options.draws_per_model, bound=options.bound)
    return certify_at_level(counts, sigma, level=level, options=options, n=n)


def max_certifiable_radius(
    nb_votes: int,
    sigma=1.0,
    *,
    alpha: float,
    bound: str = "clopper-pearson",
    draws_per_model: int = 1,
    nb_classes: int = 2,
    noise_copies: int = 1,
):
    """The largest radius the certificate can hand out with ``nb_votes`` votes: the radius of unanimous votes.

    Unanimous votes give the largest ``p_a_lower`` (at the selection level, :func:`selection_level`), hence the
    largest radius ``sigma / sqrt(noise_copies) * Phi^-1(p_a_lower)``; it is 0 when even they give
    ``p_a_lower <= 1/2``: then every input abstains, whatever the members learned. With Clopper-Pearson (one draw per
    member) ``p_a_lower = (alpha / 2) ** (1 / nb_votes)``, so 4 votes at ``alpha = 0.05`` give 0.40 (never
    certified) and 8 votes at ``alpha = 0.01`` give 0.516 (``0.04 sigma``). Computed by :func:`certify_votes`
    itself on a unanimous row, so it is the certificate's own ceiling for every option.

    :param nb_votes: Votes per input, ``nb_models * draws_per_model`` (a multiple of ``draws_per_model``).
    :param sigma: Test noise ``sigma_x``: scalar or array, finite and > 0.
    :param alpha: Overall error probability of each certificate, in (0, 1).
    :param bound: One of :data:`BOUNDS`.
    :param draws_per_model: Test noise draws per member D (> 1 needs ``bound="hoeffding"``).
    :param nb_classes: Number of classes C (the selection level depends on it for ``D > 1`` and ``"anytime"``).
    :param noise_copies: Noisy copies of each training sample one member saw (``nb_epochs`` for ``noise="fresh"``).
    :return: The radius, of ``sigma``'s shape (a float for a scalar ``sigma``).
    """
    nb_votes = check_int(nb_votes, "nb_votes")
    nb_classes = check_int(nb_classes, "nb_classes")
    sigma = check_positive_array(sigma, "sigma")
    counts = np.zeros((sigma.size, nb_classes), dtype=np.int64)
    counts[:, 0] = nb_votes
    result = certify_votes(counts, sigma.reshape(-1), alpha=alpha, bound=bound, draws_per_model=draws_per_model,
                           noise_copies=noise_copies)  # fmt: skip
    radius = result.radius.reshape(sigma.shape)
    return float(radius) if radius.ndim == 0 else radius


def min_ensemble_size(
    alpha: float, *, bound: str = "clopper-pearson", draws_per_model: int = 1, nb_classes: int = 2, limit: int = 2**24
) -> int:
    """The smallest number of members whose unanimous votes certify a radius > 0 (:func:`max_certifiable_radius`);
    fewer members abstain on every input. Clopper-Pearson: the smallest ``M`` with ``(alpha / 2) ** (1 / M) > 1/2``,
    i.e. ``M > log2(2 / alpha)`` (6 at ``alpha = 0.05``, 11 at ``alpha = 0.001``).

    :param alpha: Overall error probability, in (0, 1).
    :param bound: One of :data:`BOUNDS`.
    :param draws_per_model: Test noise draws per member D.
    :param nb_classes: Number of classes C.
    :param limit: Largest size searched.
    :raises ValueError: No size up to ``limit`` certifies.
    """
    limit = check_int(limit, "limit")

    def certifies(size: int) -> bool:
        radius = max_certifiable_radius(size * draws_per_model, alpha=alpha, bound=bound,
                                        draws_per_model=draws_per_model, nb_classes=nb_classes)  # fmt: skip
        return radius > 0

    high = 1
    while not certifies(high):  # the ceiling grows with the number of votes: double, then bisect
        if high >= limit:
            raise ValueError(f"no ensemble of up to limit={limit} members certifies at alpha={alpha!r}, {bound=}")
        high = min(2 * high, limit)
    low = high // 2  # certifies(low) is False (or low == 0)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if certifies(mid) else (mid, high)
    return high
