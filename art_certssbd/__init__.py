"""Cert-SSBD: certified backdoor defence with sample-specific smoothing noises, as ART estimators.

| Paper link: https://arxiv.org/abs/2504.21730
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
