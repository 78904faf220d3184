"""The official Cert-SSB / RAB artefacts: safe loaders of the released checkpoints and sigma files
(:mod:`~art_certssbd.official.files`), and the official evaluation as a preset beside the package's certificate
(:mod:`~art_certssbd.official.evaluation`). Neither imports the estimator; the official ensemble as a fitted
estimator is :meth:`art_certssbd.CertSSBDEstimator.from_official`.
"""

from art_certssbd.official.evaluation import (
    NOISE_SOURCES,
    certify_reference,
    official_certified_accuracy,
    official_noise_fn,
    reference_certificate,
)
from art_certssbd.official.files import (
    CHECKPOINT_PATTERN,
    load_official_checkpoint,
    load_official_ensemble,
    load_sigma_file,
    official_model_seed,
    official_test_noise,
)

__all__ = [
    "CHECKPOINT_PATTERN",
    "NOISE_SOURCES",
    "certify_reference",
    "load_official_checkpoint",
    "load_official_ensemble",
    "load_sigma_file",
    "official_certified_accuracy",
    "official_model_seed",
    "official_noise_fn",
    "official_test_noise",
    "reference_certificate",
]
