"""Adaptive certification with a fitted estimator: the members vote in looks, each look only on the inputs still
undecided, and the sequential test of :mod:`art_certssbd.sequential` decides per input "certified at radius r" or
"abstain" with as few votes as it can (the guarantee, the schedule and the spending rules are documented there; the
certificate at each look is :func:`art_certssbd.certification.certify_at_level`).

The pure pieces are re-exported here for compatibility: :class:`AdaptiveResult`, :func:`look_schedule`,
:func:`spending_levels`, :func:`run_sequential`, :func:`threshold_probability`.

| Paper link: https://arxiv.org/abs/2504.21730 (Cert-SSBD)
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from art_certssbd._validation import check_inputs, check_int
from art_certssbd.ensemble import vote
from art_certssbd.noise import derive_seed
from art_certssbd.sequential import (
    SPENDING,
    AdaptiveResult,
    DrawFn,
    check_looks,
    check_radius,
    look_schedule,
    run_sequential,
    spending_levels,
    threshold_probability,
)

logger = logging.getLogger(__name__)

__all__ = [
    "SPENDING",
    "AdaptiveResult",
    "DrawFn",
    "certify_adaptive",
    "look_schedule",
    "run_sequential",
    "spending_levels",
    "threshold_probability",
]


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
    still undecided, and each look is certified by the estimator's certificate (its ``bound``, ``draws_per_model``,
    training sigmas and training noise copies) at that look's level. With ``draws_per_model > 1`` the looks are
    multiples of ``draws_per_model`` and each bounds the per-member vote fractions (Hoeffding). The storage-update
    memory is not consulted (it trims radii, and this answers a yes/no question at one radius).

    :param estimator: A fitted estimator.
    :param x: Inputs, shape ``(N, *input_shape)``.
    :param radius: The radius ``r`` to certify.
    :param alpha: Overall error probability (default: the estimator's ``alpha``).
    :param looks: Cumulative vote counts of the looks, multiples of ``draws_per_model`` (default
           :func:`look_schedule` from ``first_look``, ``growth``, in members times ``draws_per_model``).
    :param first_look: Votes of the first look (rounded up to whole members).
    :param growth: Ratio between consecutive looks.
    :param spending: Split of ``alpha`` over the looks (:func:`spending_levels`).
    :param futility_alpha: Level of the early-abstention bound (``None``: only when certification is impossible).
    :param conservative: Test the conservative radius (``min(sigma_x, min_j sigma_j)`` in place of ``sigma_x``);
           :attr:`AdaptiveResult.radius_bound` is then the conservative radius.
    :param batch_size: Inputs per pass.
    :param verbose: Progress bars (default: the estimator's ``verbose``).
    :return: An :class:`AdaptiveResult`.
    """
    estimator._check_fitted()
    radius = check_radius(radius)
    verbose = estimator.verbose if verbose is None else verbose
    options = estimator._certificate_options()  # alpha, bound, draws_per_model, train_sigma_min, noise_copies
    default_alpha = options.pop("alpha")
    alpha = default_alpha if alpha is None else alpha
    draws = options["draws_per_model"]
    x = check_inputs(x, estimator.input_shape, estimator.clip_values)
    batch_size = check_int(batch_size, "batch_size")
    nb_models = estimator.ensemble_.nb_models
    if looks is None:  # with several draws per member the looks fall on member boundaries
        first = max(1, -(-check_int(first_look, "first_look") // draws))
        looks = draws * look_schedule(nb_models, first, growth)
    looks = check_looks(looks, nb_models * draws, draws)
    x_t = torch.from_numpy(x).to(estimator._device)
    sigma_t = estimator._sigma(estimator.model, x_t, derive_seed(estimator.random_state_, "sigma_test"), verbose)
    sigma = sigma_t.cpu().numpy().astype(np.float64)

    def draw(idx: np.ndarray, start: int, stop: int) -> np.ndarray:
        rows = torch.from_numpy(idx).to(x_t.device)
        counts = vote(
            estimator.ensemble_,
            x_t[rows],
            sigma_t[rows],
            estimator._test_noise,
            estimator.nb_classes,
            draws_per_model=draws,
            start_vote=start,
            nb_votes=stop,
            batch_size=batch_size,
            vectorize=estimator.vectorize,
            amp=estimator.amp,
            compile=estimator.compile,
        )
        return counts.cpu().numpy()

    return run_sequential(
        draw,
        len(x),
        sigma,
        radius,
        alpha,
        looks,
        spending=spending,
        futility_alpha=futility_alpha,
        conservative=conservative,
        **options,
    )
