"""Cert-SSBD: certified backdoor defence with sample-specific smoothing noises, as ART estimators.

| Paper link: https://arxiv.org/abs/2504.21730
"""

import logging

from art_certssbd._version import __version__
from art_certssbd.defence import CertSSBDTrainer
from art_certssbd.estimator import CertSSBDEstimator, RABEstimator
from art_certssbd.memory import CertificationMemory
from art_certssbd.result import CertificationResult

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "CertSSBDEstimator",
    "RABEstimator",
    "CertSSBDTrainer",
    "CertificationMemory",
    "CertificationResult",
    "__version__",
]
