"""Cert-SSBD: certified backdoor defence with sample-specific smoothing noises, as ART estimators.

| Paper link: https://arxiv.org/abs/2504.21730
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

from art_certssbd.defence import CertSSBDTrainer  # noqa: E402
from art_certssbd.estimator import CertSSBDEstimator, RABEstimator  # noqa: E402
from art_certssbd.memory import CertificationMemory  # noqa: E402
from art_certssbd.result import CertificationResult  # noqa: E402

__all__ = [
    "CertSSBDEstimator",
    "RABEstimator",
    "CertSSBDTrainer",
    "CertificationMemory",
    "CertificationResult",
    "__version__",
]
