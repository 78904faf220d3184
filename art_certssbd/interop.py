"""Deprecated: the official artefacts moved to :mod:`art_certssbd.official` (loaders and evaluation preset) and
:meth:`art_certssbd.CertSSBDEstimator.from_official` (the official ensemble as a fitted estimator). This alias keeps
code written against ``art_certssbd.interop`` working, with a ``DeprecationWarning``; it will be removed in 0.3.
"""

from __future__ import annotations

import warnings

from art_certssbd.estimator import CertSSBDEstimator
from art_certssbd.official import *  # noqa: F403
from art_certssbd.official import __all__ as _official

warnings.warn(
    "art_certssbd.interop is deprecated: import the loaders and the evaluation preset from art_certssbd.official, "
    "and use CertSSBDEstimator.from_official",
    DeprecationWarning,
    stacklevel=2,
)

from_official = CertSSBDEstimator.from_official

__all__ = [*_official, "from_official"]
