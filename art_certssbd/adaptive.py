"""Adaptive certification (compatibility module): the estimator method
:meth:`~art_certssbd.CertSSBDEstimator.certify_adaptive` lets the members vote in looks, and the sequential test of
:mod:`art_certssbd.sequential` decides per input "certified at radius r" or "abstain" with as few votes as it can (the
guarantee, the schedule and the spending rules are documented there; the certificate at each look is
:func:`art_certssbd.certification.certify_at_level`).

The pure pieces are re-exported here for code written against this module: :class:`AdaptiveResult`,
:func:`look_schedule`, :func:`spending_levels`, :func:`run_sequential`, :func:`threshold_probability`.

| Paper link: https://arxiv.org/abs/2504.21730 (Cert-SSBD)
"""

from __future__ import annotations

import numpy as np

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
