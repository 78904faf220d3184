"""Adaptive certification: decide "certified at radius r" or "abstain" per input with as few votes as possible.

The members vote in batches ("looks"). After look ``t`` (the first ``n_t`` votes, in the fixed member-major order
of :func:`~art_certssbd.ensemble.vote`) each undecided input is tested with a one-sided Clopper-Pearson bound at
level ``alpha_t`` on its top class, where the levels are spent in advance over a fixed schedule of looks:
``alpha_1 + ... + alpha_L = alpha / 2`` (alpha spending with a Bonferroni split; half of ``alpha`` because the top
class is chosen on the same votes, as in the fixed-n certificate). The input is

* **certified** as soon as ``p_lower_t > 1/2`` and ``sigma * Phi^-1(p_lower_t) >= r`` (the fixed-n rule of
  :func:`~art_certssbd.stats.certify_counts`, at level ``alpha_t``);
* **abstained** as soon as certification has become implausible (the top class's Clopper-Pearson *upper* bound at
  level ``futility_alpha`` is below ``p_r = Phi(r / sigma)``) or impossible (even if every remaining vote went to the
  top class, no later look could certify), and at the last look if it is still undecided.

Guarantee (the same statement as the fixed-n certificate, with ``n`` replaced by a stopping time). Fix an input, its
sigma and the radius ``r``. The probability, over the members' random noise, that the procedure returns "certified,
class ``c``" for some class ``c`` whose true vote probability is ``p_c < p_r = Phi(r / sigma)`` (a class the smoothed
ensemble does not certify at ``r``) is at most ``alpha``. Proof: that outcome needs ``CP_lower(k_c(n_t), n_t,
alpha_t) >= p_r > p_c`` at some look ``t``. For the (at most one) class with ``p_c > 1/2``, each look has
probability at most ``alpha_t`` (Clopper-Pearson is exact) and a union bound over the ``L`` looks gives
``alpha / 2``. For a class with ``p_c <= 1/2`` the bound must exceed 1/2, which at each look has probability at most
``2 p_c alpha_t`` (that probability is convex in ``p_c`` on ``[0, 1/2]``, the argument of
:meth:`~art_certssbd.CertSSBDEstimator.certify`), so at most ``p_c alpha`` over the looks. Summed over the classes:
at most ``alpha / 2 + (1 - p_top) alpha <= alpha`` when one class has ``p_top > 1/2``, and at most ``alpha`` (the
``p_c`` add up to 1) when none has. Without the halving, two classes near a tie at ``r = 0`` would each be certified
wrongly with probability close to ``alpha``. The schedule and levels are fixed before any
vote is seen, which is what makes the union bound valid; the abstention rules only ever stop *without* certifying,
so they cost power, never validity. For the same reason the radius reported at the stopping look,
``sigma * Phi^-1(p_lower_tau)``, is a valid ``(1 - alpha)`` certificate for the returned class. As in the fixed-n
certificate, the top class is selected from the same votes it is bounded with. Nothing else changes: the
smoothing-over-training-data guarantee of RAB, and the caveats of sample-specific sigma (``docs``), apply as for
:meth:`certify`.

The price of adaptivity is that the final look tests at ``alpha_L < alpha / 2`` (the fixed-n certificate's level), so
an input that the fixed-n certificate certifies just barely can abstain here; ``spending="final-half"`` keeps half
of the budget for the last look.
``benchmarks/speed.py`` measures the votes saved and the certified accuracy lost.

| Paper link: https://arxiv.org/abs/2504.21730 (Cert-SSBD); Clopper-Pearson and the RAB/Cohen radius as in
  :mod:`art_certssbd.stats`
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

from art_certssbd import stats
from art_certssbd._validation import check_inputs, check_int
from art_certssbd.ensemble import vote
from art_certssbd.noise import derive_seed

logger = logging.getLogger(__name__)

SPENDING = ("uniform", "final-half")
#: ``draw(idx, start, stop)`` returns the vote counts ``(len(idx), C)`` of inputs ``idx`` for votes ``start:stop``.
DrawFn = Callable[[np.ndarray, int, int], np.ndarray]


@dataclass(frozen=True)
class AdaptiveResult:
    """Per-input outcome of :func:`run_sequential` (all arrays of length N).

    :param certified: Whether the input is certified at ``radius``.
    :param pred: The certified class, ``-1`` where abstaining.
    :param radius_bound: ``sigma * Phi^-1(p_a_lower)`` at the deciding look (valid at level ``alpha``; 0 on abstain).
    :param p_a_lower: Clopper-Pearson lower bound of the top class at the deciding look, at that look's level.
    :param votes_used: Votes evaluated for the input (the forward passes it cost).
    :param decided_at: Index of the deciding look.
    :param counts: Vote counts ``(N, C)`` at the deciding look.
    :param looks: The look schedule (cumulative vote counts).
    :param levels: The error level spent at each look (they sum to ``alpha / 2``).
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


def look_schedule(n_max: int, first: int = 32, growth: float = 2.0) -> np.ndarray:
    """Cumulative vote counts of the looks: ``first``, then ``growth`` times more each time, ending at ``n_max``.

    :param n_max: Votes available (``nb_models * draws_per_model``).
    :param first: Votes of the first look.
    :param growth: Ratio between consecutive looks (> 1).
    """
    if isinstance(n_max, bool) or not isinstance(n_max, int | np.integer) or n_max < 1:
        raise ValueError(f"n_max must be an integer >= 1, got {n_max!r}")
    if isinstance(first, bool) or not isinstance(first, int | np.integer) or first < 1:
        raise ValueError(f"first must be an integer >= 1, got {first!r}")
    if not growth > 1:
        raise ValueError(f"growth must be > 1, got {growth!r}")
    looks, n = [], float(first)
    while round(n) < n_max:
        looks.append(int(round(n)))
        n = max(n * growth, n + 1)
    return np.array(looks + [int(n_max)], dtype=np.int64)


def spending_levels(alpha: float, nb_looks: int, spending="uniform") -> np.ndarray:
    """Error levels ``alpha_t`` of the looks, summing to ``alpha``.

    :param alpha: Overall error probability in (0, 1).
    :param nb_looks: Number of looks L.
    :param spending: ``"uniform"`` (``alpha / L`` each), ``"final-half"`` (``alpha / 2`` at the last look, the rest
           split evenly over the others) or non-negative weights, one per look, normalised to sum to ``alpha``.
    """
    alpha = stats._check_alpha(alpha)
    if isinstance(spending, str):
        if spending not in SPENDING:
            raise ValueError(f"spending must be one of {SPENDING} or an array of weights, got {spending!r}")
        weights = np.ones(nb_looks)
        if spending == "final-half" and nb_looks > 1:
            weights = np.append(np.full(nb_looks - 1, 1.0 / (nb_looks - 1)), 1.0)
    else:
        weights = np.asarray(spending, dtype=float)
        if weights.shape != (nb_looks,) or not np.all(np.isfinite(weights) & (weights >= 0)) or weights[-1] <= 0:
            raise ValueError(
                f"spending weights must be {nb_looks} finite non-negative numbers with a positive last one, "
                f"got {spending!r}"
            )
    return alpha * weights / weights.sum()


def _check_looks(looks, n_max: int) -> np.ndarray:
    looks = np.asarray(looks)
    if looks.ndim != 1 or looks.size == 0 or not np.issubdtype(looks.dtype, np.integer):
        raise ValueError(f"looks must be a non-empty 1-D array of integers, got {looks!r}")
    if looks[0] < 1 or looks[-1] > n_max or np.any(np.diff(looks) <= 0):
        raise ValueError(f"looks must increase strictly within [1, {n_max}], got {looks.tolist()}")
    return looks.astype(np.int64)


def _check_radius(radius) -> float:
    if isinstance(radius, bool) or not isinstance(radius, int | float | np.number) or not np.isfinite(radius):
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    if radius < 0:
        raise ValueError(f"radius must be a finite number >= 0, got {radius!r}")
    return float(radius)


def threshold_probability(radius: float, sigma) -> np.ndarray:
    """``p_r = Phi(r / sigma)``: the top-class probability that certifies radius ``r`` (at least 1/2)."""
    return norm.cdf(radius / np.asarray(sigma, dtype=float))


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
) -> AdaptiveResult:
    """The sequential test of the module docstring, on any source of votes (the estimator or a simulation).

    :param draw: ``draw(idx, start, stop)``: vote counts ``(len(idx), C)`` of inputs ``idx`` for votes
           ``start:stop`` (only undecided inputs are asked for more votes).
    :param nb_inputs: Number of inputs N.
    :param sigma: Noise level per input (scalar or ``(N,)``), as in the radius.
    :param radius: The radius ``r >= 0`` to certify.
    :param alpha: Overall error probability in (0, 1).
    :param looks: Cumulative vote counts of the looks (see :func:`look_schedule`).
    :param spending: How ``alpha / 2`` is split over the looks (see :func:`spending_levels`).
    :param futility_alpha: Level of the upper bound that stops hopeless inputs early (``None``: only stop when
           certification is impossible). It affects power only, never the guarantee.
    :return: An :class:`AdaptiveResult`.
    """
    radius = _check_radius(radius)
    if futility_alpha is not None:
        futility_alpha = stats._check_alpha(futility_alpha)
    looks = np.asarray(looks, dtype=np.int64)
    levels = spending_levels(stats._check_alpha(alpha) / 2, len(looks), spending)  # top class chosen on the votes
    sigma = stats._check_sigma_rows(sigma, nb_inputs).astype(float)
    p_r = threshold_probability(radius, sigma)
    pred = np.full(nb_inputs, stats.ABSTAIN, dtype=np.int64)
    p_low, bound = np.zeros(nb_inputs), np.zeros(nb_inputs)
    used, decided_at = np.zeros(nb_inputs, dtype=np.int64), np.full(nb_inputs, len(looks) - 1, dtype=np.int64)
    counts, active = None, np.arange(nb_inputs)
    for t, (n_t, alpha_t) in enumerate(zip(looks, levels)):
        if active.size == 0:
            break
        # Step 1: the next batch of votes for the undecided inputs only.
        new = np.asarray(draw(active, int(looks[t - 1]) if t else 0, int(n_t)), dtype=np.int64)
        counts = np.zeros((nb_inputs, new.shape[1]), dtype=np.int64) if counts is None else counts
        counts[active] += new
        used[active] = n_t
        top = counts[active].argmax(axis=1)
        k = counts[active, top]
        # Step 2: certify where the bound at this look's level reaches the radius (the fixed-n rule at alpha_t).
        lower = stats.clopper_pearson_lower(k, n_t, alpha_t)
        rad = np.where(lower > 0.5, stats.radius(lower, sigma[active]), 0.0)
        certify = (lower > 0.5) & (rad >= radius)
        # Step 3: abstain where certification is implausible (futility) or impossible at any later look.
        stop = certify.copy()
        if t < len(looks) - 1:
            best = np.zeros(active.size)
            for n_s, alpha_s in zip(looks[t + 1 :], levels[t + 1 :]):
                best = np.maximum(best, stats.clopper_pearson_lower(k + (n_s - n_t), n_s, alpha_s))
            hopeless = stats.radius(best, sigma[active]) < radius
            if futility_alpha is not None:
                hopeless |= stats.clopper_pearson_upper(k, n_t, futility_alpha) < p_r[active]
            stop |= hopeless
        else:
            stop[:] = True
        done = active[stop]
        pred[active[certify]] = top[certify]
        p_low[active] = lower
        bound[active[certify]] = rad[certify]
        decided_at[done] = t
        active = active[~stop]
    logger.debug("adaptive: %d of %d certified, %d votes", int((pred != stats.ABSTAIN).sum()), nb_inputs, used.sum())
    return AdaptiveResult(
        certified=pred != stats.ABSTAIN,
        pred=pred,
        radius_bound=bound,
        p_a_lower=p_low,
        votes_used=used,
        decided_at=decided_at,
        counts=counts,
        looks=looks,
        levels=levels,
        radius=float(radius),
    )


def bernoulli_draw(p, nb_classes: int = 2, seed: int = 0) -> DrawFn:
    """A vote source for simulations: input ``i`` votes for class 1 with probability ``p[i]``, else class 0.

    :param p: Probability of class 1 per input.
    :param nb_classes: Columns of the returned counts (only classes 0 and 1 receive votes).
    :param seed: Seed of the numpy generator.
    """
    p = np.asarray(p, dtype=float)
    rng = np.random.default_rng(seed)

    def draw(idx: np.ndarray, start: int, stop: int) -> np.ndarray:
        ones = rng.binomial(stop - start, p[idx])
        out = np.zeros((len(idx), nb_classes), dtype=np.int64)
        out[:, 0], out[:, 1] = (stop - start) - ones, ones
        return out

    return draw


def certify_adaptive(
    estimator,
    x: np.ndarray,
    radius: float,
    *,
    alpha: float | None = None,
    looks=None,
    first_look: int = 32,
    growth: float = 2.0,
    spending="uniform",
    futility_alpha: float | None = 0.01,
    conservative: bool = False,
    batch_size: int = 128,
    verbose: bool | None = None,
) -> AdaptiveResult:
    """Adaptive certification with a fitted :class:`~art_certssbd.CertSSBDEstimator` / ``RABEstimator``.

    ``sigma_x`` is optimised as in :meth:`certify`; the members then vote in looks, each look only on the inputs
    still undecided. The storage-update memory is not consulted (it trims radii, and this answers a yes/no question
    at one radius).

    :param estimator: A fitted estimator.
    :param x: Inputs, shape ``(N, *input_shape)``.
    :param radius: The radius ``r`` to certify.
    :param alpha: Overall error probability (default: the estimator's ``alpha``).
    :param looks: Cumulative vote counts of the looks (default :func:`look_schedule` from ``first_look``, ``growth``).
    :param first_look: Votes of the first look.
    :param growth: Ratio between consecutive looks.
    :param spending: Split of ``alpha`` over the looks (:func:`spending_levels`).
    :param futility_alpha: Level of the early-abstention bound (``None``: only when certification is impossible).
    :param conservative: Test the conservative radius (``min(sigma_x, min_j sigma_j)`` in place of ``sigma_x``).
    :param batch_size: Inputs per pass.
    :param verbose: Progress bars (default: the estimator's ``verbose``).
    :return: An :class:`AdaptiveResult`.
    """
    estimator._check_fitted()
    radius = _check_radius(radius)
    verbose = estimator.verbose if verbose is None else verbose
    alpha = estimator.alpha if alpha is None else alpha
    x = check_inputs(x, estimator.input_shape, estimator.clip_values)
    batch_size = check_int(batch_size, "batch_size")
    n_max = estimator.ensemble_.nb_models * estimator.draws_per_model
    looks = look_schedule(n_max, first_look, growth) if looks is None else _check_looks(looks, n_max)
    x_t = torch.from_numpy(x).to(estimator._device)
    sigma_t = estimator._sigma(estimator.model, x_t, derive_seed(estimator.random_state_, "sigma_test"), verbose)
    sigma = sigma_t.cpu().numpy().astype(np.float64)
    if conservative:
        sigma = np.minimum(sigma, float(estimator.train_sigma_.min()))

    def draw(idx: np.ndarray, start: int, stop: int) -> np.ndarray:
        rows = torch.from_numpy(idx).to(x_t.device)
        counts = vote(
            estimator.ensemble_,
            x_t[rows],
            sigma_t[rows],
            estimator._test_noise,
            estimator.nb_classes,
            draws_per_model=estimator.draws_per_model,
            start_vote=start,
            nb_votes=stop,
            batch_size=batch_size,
            vectorize=estimator.vectorize,
            amp=estimator.amp,
            compile=estimator.compile,
        )
        return counts.cpu().numpy()

    return run_sequential(draw, len(x), sigma, radius, alpha, looks, spending=spending, futility_alpha=futility_alpha)
