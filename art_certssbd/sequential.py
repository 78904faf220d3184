"""A sequential test over votes: decide "certified at radius r" or "abstain" with as few votes as possible (pure
numpy/scipy; the estimator glue is :meth:`art_certssbd.CertSSBDEstimator.certify_adaptive`).

The members vote in batches ("looks"). After look ``t`` (the first ``n_t`` votes, in the fixed member-major order
of :func:`~art_certssbd.ensemble.vote`) each undecided input is certified by
:func:`~art_certssbd.certification.certify_at_level` (the package's one certificate) at level ``alpha_t``, where the
levels are spent in advance over a fixed schedule of looks: ``alpha_1 + ... + alpha_L`` is the fixed-n
certificate's selection level (:func:`~art_certssbd.certification.selection_level`: ``alpha / 2`` with one draw per
member, since the top class is chosen on the same votes). The input is

* **certified** as soon as that look's certificate does not abstain and its radius (the paper's, or with
  ``conservative`` the conservative one) reaches ``r``;
* **abstained** as soon as certification has become implausible (the top class's *upper* bound at level
  ``futility_alpha`` is below ``p_r = Phi(r / sigma_r)``, ``sigma_r`` the radius's sigma) or impossible (even if
  every remaining vote went to the top class, no later look could certify), and at the last look if still undecided.

Guarantee (the fixed-n certificate's, with ``n`` replaced by a stopping time). Fix an input, its sigma and ``r``.
The probability, over the members' noise, that the procedure returns "certified, class ``c``" for some class ``c``
whose true vote probability is ``p_c < p_r`` (a class the smoothed ensemble does not certify at ``r``) is at most
``alpha``. That outcome needs, at some look ``t``, a bound at level ``alpha_t`` above ``max(p_c, 1/2)``; the
argument of :mod:`art_certssbd.certification` bounds this by ``2 alpha_t`` (or ``C alpha_t``), and a union bound over
the looks, whose schedule and levels are fixed before any vote is seen, by ``alpha``. The abstention rules only ever
stop *without* certifying, so they cost power, never validity; for the same reason the radius reported at the
stopping look is a valid ``(1 - alpha)`` certificate for the returned class.

With ``bound="anytime"`` the bound is a confidence sequence (:mod:`art_certssbd.confseq`) that holds at every number
of votes simultaneously, so nothing is split: every look, however many and wherever they fall (the estimator looks
after every vote), tests at the whole selection level, ``alpha / max(2, C)`` for each class's sequence, and the union
over the classes bounds the error by ``alpha`` whatever the stopping rule.

With ``draws_per_model = D > 1`` the looks fall on member boundaries (multiples of ``D``) and each look bounds the
per-member vote fractions with Hoeffding (the draws of one member are not independent): a binomial bound over all
draws, as if they were independent, certified wrongly in 111 of 200 trials at ``alpha = 0.05`` (issue 10).

The price of adaptivity is that the final look tests at ``alpha_L`` below the fixed-n level, so an input that the
fixed-n certificate certifies just barely can abstain here; ``spending="final-half"`` keeps half of the budget for
the last look. ``benchmarks/speed.py`` measures the votes saved and the certified accuracy lost.

With ``use_memory=True`` the answers go through the storage-update step (:func:`apply_memory_adaptive`): a
"certified at r" answer that the stored regions trim below ``r`` becomes an abstention, one inside a stored region of
another label takes that label, and every answer that stays certified stores its ball.

| Paper link: https://arxiv.org/abs/2504.21730 (Cert-SSBD); the bounds and the RAB/Cohen radius as in
  :mod:`art_certssbd.certification`
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from art_certssbd import certification, stats
from art_certssbd._validation import check_alpha, check_sigma_rows
from art_certssbd.stats import ABSTAIN

logger = logging.getLogger(__name__)

SPENDING = ("uniform", "final-half")
#: ``draw(idx, start, stop)`` returns the vote counts ``(len(idx), C)`` of inputs ``idx`` for votes ``start:stop``.
DrawFn = Callable[[np.ndarray, int, int], np.ndarray]


@dataclass(frozen=True)
class AdaptiveResult:
    """Per-input outcome of :func:`run_sequential` (all arrays of length N).

    :param certified: Whether the input is certified at ``radius``.
    :param pred: The certified class, ``-1`` where abstaining.
    :param radius_bound: The radius tested (paper's or conservative) at the deciding look, valid at level
           ``alpha``; 0 on abstain.
    :param p_a_lower: Lower confidence bound of the top class at the deciding look, at that look's level.
    :param votes_used: Votes evaluated for the input (the forward passes it cost).
    :param decided_at: Index of the deciding look.
    :param counts: Vote counts ``(N, C)`` at the deciding look.
    :param looks: The look schedule (cumulative vote counts).
    :param levels: The error level spent at each look (they sum to the selection level of ``alpha``).
    :param radius: The radius tested.
    """

    certified: np.ndarray
    pred: np.ndarray
    radius_bound: np.ndarray
    p_a_lower: np.ndarray
    votes_used: np.ndarray
    decided_at: np.ndarray
    counts: np.ndarray
    looks: np.ndarray
    levels: np.ndarray
    radius: float

    def __len__(self) -> int:
        return len(self.pred)

    @property
    def total_votes(self) -> int:
        """Forward passes spent on all inputs."""
        return int(self.votes_used.sum())


def _check_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def look_schedule(n_max: int, first: int = 32, growth: float = 2.0) -> np.ndarray:
    """Cumulative vote counts of the looks: ``first``, then ``growth`` times more each time, ending at ``n_max``.

    :param n_max: Votes available (``nb_models * draws_per_model``; with ``draws_per_model > 1`` build the schedule
           in members and multiply it by ``draws_per_model``).
    :param first: Votes of the first look.
    :param growth: Ratio between consecutive looks (> 1).
    """
    n_max, first = _check_int(n_max, "n_max"), _check_int(first, "first")
    if not growth > 1:
        raise ValueError(f"growth must be > 1, got {growth!r}")
    looks, n = [], float(first)
    while round(n) < n_max:
        looks.append(int(round(n)))
        n = max(n * growth, n + 1)
    return np.array(looks + [int(n_max)], dtype=np.int64)


def spending_levels(alpha: float, nb_looks: int, spending="uniform") -> np.ndarray:
    """Error levels ``alpha_t`` of the looks, summing to ``alpha``.

    :param alpha: Error probability to spend, in (0, 1).
    :param nb_looks: Number of looks L.
    :param spending: ``"uniform"`` (``alpha / L`` each), ``"final-half"`` (``alpha / 2`` at the last look, the rest
           split evenly over the others) or positive weights, one per look, normalised to sum to ``alpha``. A zero
           weight is refused (a look at level 0 can never certify: leave that look out of the schedule instead).
    """
    alpha = check_alpha(alpha)
    nb_looks = _check_int(nb_looks, "nb_looks")
    if isinstance(spending, str):
        if spending not in SPENDING:
            raise ValueError(f"spending must be one of {SPENDING} or an array of weights, got {spending!r}")
        weights = np.ones(nb_looks)
        if spending == "final-half" and nb_looks > 1:
            weights = np.append(np.full(nb_looks - 1, 1.0 / (nb_looks - 1)), 1.0)
    else:
        weights = np.asarray(spending, dtype=float)
        if weights.shape != (nb_looks,) or not np.all(np.isfinite(weights) & (weights > 0)):
            raise ValueError(
                f"spending weights must be {nb_looks} finite positive numbers, one per look (a zero weight would "
                f"test that look at level 0: leave the look out of the schedule instead), got spending={spending!r}"
            )
    return alpha * weights / weights.sum()


def check_looks(looks, n_max: int | None = None, draws_per_model: int = 1) -> np.ndarray:
    """``looks`` as a strictly increasing int64 array within ``[1, n_max]`` (``None``: no upper limit), of multiples
    of ``draws_per_model``."""
    looks = np.asarray(looks)
    if looks.ndim != 1 or looks.size == 0 or not np.issubdtype(looks.dtype, np.integer):
        raise ValueError(f"looks must be a non-empty 1-D array of integers, got {looks!r}")
    if looks[0] < 1 or (n_max is not None and looks[-1] > n_max) or np.any(np.diff(looks) <= 0):
        within = f"within [1, {n_max}]" if n_max is not None else "from 1"
        raise ValueError(f"looks must increase strictly {within}, got {looks.tolist()}")
    if np.any(looks % draws_per_model):
        raise ValueError(
            f"looks must be multiples of draws_per_model={draws_per_model} (the votes are bounded per member), "
            f"got {looks.tolist()}"
        )
    return looks.astype(np.int64)


def check_radius(radius) -> float:
    """``radius`` as a finite float >= 0."""
    if isinstance(radius, bool) or not isinstance(radius, int | float | np.number) or not np.isfinite(radius):
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    if radius < 0:
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    return float(radius)


def threshold_probability(radius: float, sigma) -> np.ndarray:
    """``p_r = Phi(r / sigma)``: the top-class probability that certifies radius ``r`` (at least 1/2)."""
    return norm.cdf(radius / np.asarray(sigma, dtype=float))


def _levels(alpha: float, nb_classes: int, draws: int, bound: str, nb_looks: int, spending) -> np.ndarray:
    """The looks' levels: the selection level split over the looks, or, with a time-uniform bound
    (:attr:`~art_certssbd.stats.Bound.anytime`, e.g. ``"anytime"``), the whole selection level at every look (its
    guarantee already covers every number of votes)."""
    level = certification.selection_level(alpha, nb_classes, draws, bound=bound)
    if stats.BOUND_TABLE[bound].anytime:
        return np.full(nb_looks, level)
    return spending_levels(level, nb_looks, spending)


def run_sequential(
    draw: DrawFn,
    nb_inputs: int,
    sigma,
    radius: float,
    alpha: float,
    looks,
    *,
    spending="uniform",
    futility_alpha: float | None = 0.01,
    bound: str = "clopper-pearson",
    draws_per_model: int = 1,
    train_sigma_min=None,
    noise_copies: int = 1,
    conservative: bool = False,
    nb_classes: int = 2,
) -> AdaptiveResult:
    """The sequential test of the module docstring, on any source of votes (the estimator or a simulation).

    :param draw: ``draw(idx, start, stop)``: vote counts ``(len(idx), C)`` of inputs ``idx`` for votes
           ``start:stop`` (only undecided inputs are asked for more votes).
    :param nb_inputs: Number of inputs N.
    :param sigma: Test noise ``sigma_x`` per input (scalar or ``(N,)``).
    :param radius: The radius ``r >= 0`` to certify.
    :param alpha: Overall error probability in (0, 1).
    :param looks: Cumulative vote counts of the looks (see :func:`look_schedule`); multiples of ``draws_per_model``.
    :param spending: How the selection level of ``alpha`` is split over the looks (see :func:`spending_levels`).
    :param futility_alpha: Level of the upper bound that stops hopeless inputs early (``None``: only stop when
           certification is impossible). It affects power only, never the guarantee.
    :param bound: ``"clopper-pearson"``, ``"hoeffding"`` or ``"anytime"`` (as in
           :func:`~art_certssbd.certification.certify_votes`; ``"anytime"`` tests every look at the whole level).
    :param draws_per_model: Votes per member D (> 1 needs ``bound="hoeffding"``).
    :param train_sigma_min: ``min_j sigma_j`` of the training samples (the conservative radius).
    :param noise_copies: Noisy copies of each training sample per member (radii divided by its square root).
    :param conservative: Test the conservative radius instead of the paper's.
    :param nb_classes: Columns of ``counts`` when no votes are drawn (``nb_inputs = 0``); otherwise ``draw``'s.
    :return: An :class:`AdaptiveResult`.
    """
    radius = check_radius(radius)
    alpha = check_alpha(alpha)
    if futility_alpha is not None:
        futility_alpha = check_alpha(futility_alpha)
    options = certification.check_options(bound, draws_per_model, noise_copies, train_sigma_min)
    bound, draws, copies, sigma_min = options
    nb_inputs = _check_int(nb_inputs, "nb_inputs", minimum=0)
    looks = check_looks(looks, None, draws)
    sigma = check_sigma_rows(sigma, nb_inputs).astype(float)
    # the sigma of the radius tested, and the top-class probability that reaches r with it
    sigma_r = certification.noise_sigma(
        sigma, train_sigma_min=sigma_min, noise_copies=copies, conservative=conservative
    ).reshape(-1)
    p_r = threshold_probability(radius, sigma_r)
    pred = np.full(nb_inputs, ABSTAIN, dtype=np.int64)
    p_low, rad_bound = np.zeros(nb_inputs), np.zeros(nb_inputs)
    used, decided_at = np.zeros(nb_inputs, dtype=np.int64), np.full(nb_inputs, len(looks) - 1, dtype=np.int64)
    counts, levels, active = None, None, np.arange(nb_inputs)
    for t, n_t in enumerate(looks):
        if active.size == 0:
            break
        # Step 1: the next batch of votes for the undecided inputs only.
        new = np.asarray(draw(active, int(looks[t - 1]) if t else 0, int(n_t)), dtype=np.int64)
        if counts is None:  # the levels depend on the number of classes (draws_per_model > 1), not on the votes
            counts = np.zeros((nb_inputs, new.shape[1]), dtype=np.int64)
            levels = _levels(alpha, new.shape[1], draws, bound, len(looks), spending)
        counts[active] += new
        used[active] = n_t
        # Step 2: the certificate at this look's level; certify where its radius reaches r.
        result = certification.certify_at_level(
            counts[active], sigma[active], level=levels[t], options=options, n=int(n_t)
        )
        rad = result.radius_conservative if conservative else result.radius
        certify = (result.pred != ABSTAIN) & (rad >= radius)
        # Step 3: abstain where certification is implausible (futility) or impossible at any later look.
        stop = certify.copy()
        if t < len(looks) - 1:
            k = counts[active].max(axis=1)
            best = np.zeros(active.size)
            later = zip(looks[t + 1 :], levels[t + 1 :])
            if stats.BOUND_TABLE[bound].anytime:  # (power only) the last look's bound, every remaining vote to the top
                later = [(looks[-1], levels[-1])]
            for n_s, alpha_s in later:
                best = np.maximum(best, certification.vote_bound(k + (n_s - n_t), n_s, alpha_s, bound, draws))
            hopeless = (best <= 0.5) | (stats.radius(best, sigma_r[active]) < radius)
            if futility_alpha is not None:
                upper = certification.vote_bound(k, n_t, futility_alpha, bound, draws, upper=True)
                hopeless |= upper < p_r[active]
            stop |= hopeless
        else:
            stop[:] = True
        pred[active[certify]] = result.pred[certify]
        p_low[active] = result.p_a_lower
        rad_bound[active[certify]] = rad[certify]
        decided_at[active[stop]] = t
        active = active[~stop]
    if counts is None:  # no input: nothing was drawn
        nb_classes = _check_int(nb_classes, "nb_classes")
        counts = np.zeros((nb_inputs, nb_classes), dtype=np.int64)
        levels = _levels(alpha, nb_classes, draws, bound, len(looks), spending)
    logger.debug("sequential: %d of %d certified, %d votes", int((pred != ABSTAIN).sum()), nb_inputs, used.sum())
    return AdaptiveResult(
        certified=pred != ABSTAIN,
        pred=pred,
        radius_bound=rad_bound,
        p_a_lower=p_low,
        votes_used=used,
        decided_at=decided_at,
        counts=counts,
        looks=looks,
        levels=levels,
        radius=float(radius),
    )


def apply_memory_adaptive(
    memory,
    x: np.ndarray,
    result: AdaptiveResult,
    sigma,
    *,
    train_sigma_min=None,
    noise_copies: int = 1,
    conservative: bool = False,
    update: bool = True,
) -> AdaptiveResult:
    """The storage-update step on the answers of :func:`run_sequential` (``certify_adaptive`` with
    ``use_memory=True``): each "certified at ``r``" answer is trimmed against the stored regions as
    :func:`~art_certssbd.memory.apply_memory` trims a certificate, and stays certified only if its trimmed radius
    still reaches ``r``; abstentions pass through.

    A certified answer is the certificate of its deciding look: class ``pred``, bound ``p_a_lower``, paper radius
    ``noise_sigma(sigma_x) * Phi^-1(p_a_lower)`` and conservative radius ``noise_sigma(min(sigma_x, min_j sigma_j))
    * Phi^-1(p_a_lower)`` (one of them is ``radius_bound``), valid at level ``alpha``. Item by item, in order, it is
    trimmed against everything stored so far (earlier items of this batch included): inside a stored region of
    another label it takes that label and radius; overlapping one, its radius shrinks to the gap. It then stays
    certified if the trimmed radius of the kind tested reaches ``r`` (``pred``, ``radius_bound`` are the trimmed
    ones), and with ``update`` its trimmed ball is stored, as :meth:`certify` stores its own; otherwise it becomes an
    abstention (``pred = -1``, ``radius_bound = 0``) and nothing is stored. So no answer contradicts a stored
    region, and every stored region is a reported certificate.

    :param memory: A :class:`~art_certssbd.memory.CertificationMemory`, or ``None`` (``result`` returned as is).
    :param x: The inputs ``(N, ...)``, in the order of ``result``.
    :param result: The answers of :func:`run_sequential`.
    :param sigma: Test noise ``sigma_x`` per input (as given to :func:`run_sequential`).
    :param train_sigma_min: ``min_j sigma_j`` (as given to :func:`run_sequential`).
    :param noise_copies: Training noise copies E (as given to :func:`run_sequential`).
    :param conservative: Whether ``result`` tested the conservative radius.
    :param update: Store the regions of the answers that stay certified (``False``: only trim).
    :return: A copy of ``result`` with the trimmed ``certified``, ``pred`` and ``radius_bound``.
    """
    if memory is None or len(result.pred) == 0:  # nothing to trim (an empty batch has no rows to reshape)
        return result
    certified = np.asarray(result.certified, dtype=bool)
    pred, radius_bound = result.pred.copy(), result.radius_bound.astype(np.float64)
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), pred.shape)
    # both radii of each certified answer at its deciding look (the one tested is radius_bound itself)
    kinds = {}
    for kind in (False, True):
        s = certification.noise_sigma(
            sigma, train_sigma_min=train_sigma_min, noise_copies=noise_copies, conservative=kind
        ).reshape(-1)
        kinds[kind] = np.where(certified, stats.radius(result.p_a_lower, s), 0.0)
    kinds[conservative] = np.where(certified, radius_bound, 0.0)
    paper, low = kinds[False], np.minimum(kinds[True], kinds[False])
    flat = np.asarray(x).reshape(len(pred), -1)
    for i in np.flatnonzero(certified):  # in order: each against everything stored before it
        row, c = flat[i : i + 1], pred[i : i + 1]
        args = (row, c, paper[i : i + 1])
        c_out, r_out, rc_out = memory.query(*args, radius_conservative=low[i : i + 1])
        tested = float((rc_out if conservative else r_out)[0])
        if c_out[0] != stats.ABSTAIN and tested >= result.radius:
            if update:  # the same trim again (nothing was stored in between), now storing the ball
                memory.update(*args, sigma[i : i + 1], radius_conservative=low[i : i + 1])
            pred[i], radius_bound[i] = c_out[0], tested
        else:
            pred[i], radius_bound[i] = stats.ABSTAIN, 0.0  # (certified is the caller's array: not written)
    return dataclasses.replace(result, certified=pred != stats.ABSTAIN, pred=pred, radius_bound=radius_bound)
