"""Deprecated: the official evaluation preset moved to :mod:`art_certssbd.official.evaluation`. This alias keeps
code written against ``art_certssbd.official_eval`` working, with a ``DeprecationWarning``; it will be removed in 0.3.
"""

from __future__ import annotations

import warnings

from art_certssbd.official.evaluation import *  # noqa: F403
from art_certssbd.official.evaluation import __all__  # noqa: F401

warnings.warn(
    "art_certssbd.official_eval is deprecated: import from art_certssbd.official", DeprecationWarning, stacklevel=2
)
