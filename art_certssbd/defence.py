"""CertSSBDTrainer: Cert-SSBD (or RAB) as an ART training defence.

| Paper link: https://arxiv.org/abs/2504.21730
"""

from __future__ import annotations

import copy
import logging

import numpy as np
from art.defences.trainer.trainer import Trainer
from art.estimators.classification.pytorch import PyTorchClassifier

from art_certssbd.estimator import CertSSBDEstimator, RABEstimator

logger = logging.getLogger(__name__)

METHODS = {"cert-ssbd": CertSSBDEstimator, "rab": RABEstimator}


class CertSSBDTrainer(Trainer):
    """Train a certified smoothed ensemble from an ART :class:`PyTorchClassifier`.

    The classifier supplies the architecture, loss, optimiser type, input shape, classes, ``clip_values`` and device;
    its own weights and its network are left untouched (members are re-initialised copies). After :meth:`fit`,
    :attr:`classifier` and :meth:`get_classifier` return the fitted :class:`CertSSBDEstimator` (or
    :class:`RABEstimator` with ``method="rab"``), which predicts, certifies and can be attacked like any ART
    classifier.

    :param classifier: The ART PyTorch classifier to defend.
    :param method: ``"cert-ssbd"`` (default) or ``"rab"``.
    :param kwargs: Parameters of the estimator (``nb_models``, ``scale``, ``alpha``, ``random_state``, ...); they
           override the settings taken from the classifier (``optimizer``, ``channels_first``, ``clip_values``,
           ``device_type``).
    """

    def __init__(self, classifier: PyTorchClassifier, method: str = "cert-ssbd", **kwargs) -> None:
        if not isinstance(classifier, PyTorchClassifier):
            raise ValueError(f"classifier must be an art PyTorchClassifier, got {type(classifier).__name__}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}")
        if classifier.optimizer is None:
            raise ValueError("classifier has no optimizer: one is needed to train the ensemble")
        super().__init__(classifier)
        self.method = method
        model = copy.deepcopy(getattr(classifier, "base_model", classifier.model))  # a fitted estimator: its base
        optimizer = type(classifier.optimizer)(model.parameters(), **classifier.optimizer.defaults)
        # the classifier's settings are defaults that kwargs override (e.g. device_type="cpu")
        derived = dict(
            optimizer=optimizer,
            channels_first=classifier.channels_first,
            clip_values=classifier.clip_values,
            device_type=classifier._device_type,
        )
        # building the estimator validates every parameter now, before any training
        self._estimator = METHODS[method](
            model, classifier._loss, classifier.input_shape, classifier.nb_classes, **{**derived, **kwargs}
        )

    @property
    def estimator(self) -> CertSSBDEstimator | RABEstimator:
        """The smoothed estimator (fitted once :meth:`fit` has run)."""
        return self._estimator

    def fit(self, x: np.ndarray, y: np.ndarray, **kwargs) -> None:
        """Run the defence: train the smoothed ensemble on the (possibly poisoned) training set.

        :param x: Training inputs.
        :param y: Labels (indices or one-hot).
        :param kwargs: ``nb_epochs``, ``batch_size``, ``checkpoint_dir``, ``verbose`` of the estimator's ``fit``.
        """
        self._estimator.fit(x, y, **kwargs)
        self._classifier = self._estimator
