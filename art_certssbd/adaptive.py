"""Adaptive certification (compatibility module): the estimator method
:meth:`~art_certssbd.CertSSBDEstimator.certify_adaptive` lets the members vote in looks, and the sequential test of
:mod:`art_certssbd.sequential` decides per input "certified at radius r" or "abstain" with as few votes as it can (the
guarantee, the schedule and the spending rules are documented there; the certificate at each look is
:func:`art_certssbd.certification.certify_at_level`).

With ``use_memory=True`` its answers go through the storage-update step (:func:`apply_memory_adaptive`): a
"certified at r" answer that the stored regions trim below ``r`` becomes an abstention, one inside a stored region of
another label takes that label, and every answer that stays certified stores its ball.

The pure pieces are re-exported here for code written against this module: :class:`AdaptiveResult`,
:func:`look_schedule`, :func:`spending_levels`, :func:`run_sequential`, :func:`threshold_probability`.

| Paper link: https://arxiv.org/abs/2504.21730 (Cert-SSBD)
"""

from __future__ import annotations

import dataclasses

import numpy as np

from art_certssbd import certification, stats
from art_certssbd.sequential import (
    SPENDING,
    AdaptiveResult,
    DrawFn,
    look_schedule,
    run_sequential,
    spending_levels,
    threshold_probability,
)

__all__ = [
    "SPENDING",
    "AdaptiveResult",
    "DrawFn",
    "apply_memory_adaptive",
    "certify_adaptive",
    "look_schedule",
    "run_sequential",
    "spending_levels",
    "threshold_probability",
]


def certify_adaptive(estimator, x: np.ndarray, radius: float, **kwargs) -> AdaptiveResult:
    """``estimator.certify_adaptive(x, radius, **kwargs)`` (kept for code written against this module; the
    options are documented on :meth:`art_certssbd.CertSSBDEstimator.certify_adaptive`)."""
    return estimator.certify_adaptive(x, radius, **kwargs)


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
    if memory is None:
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
            pred[i], radius_bound[i], certified[i] = stats.ABSTAIN, 0.0, False
    return dataclasses.replace(result, certified=pred != stats.ABSTAIN, pred=pred, radius_bound=radius_bound)
