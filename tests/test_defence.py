"""CertSSBDTrainer: ART's Trainer-style defence around the estimators (art_certssbd.defence)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import digits_classifier

from art_certssbd import CertSSBDTrainer, RABEstimator
from art_certssbd.datasets import load_digits
from art_certssbd.models import DigitsCNN


@pytest.fixture(scope="module")
def digits():
    x_train, y_train, x_test, y_test = load_digits(random_state=0)
    return x_train[:600], y_train[:600], x_test[:60], y_test[:60]


def test_trainer_defence_yields_fitted_estimator(digits):
    net = DigitsCNN(10)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    clf = digits_classifier(net)
    trainer = CertSSBDTrainer(clf, method="rab", nb_models=4, scale=0.25, random_state=0)
    trainer.fit(digits[0][:300], digits[1][:300], nb_epochs=2, batch_size=64)
    est = trainer.get_classifier()
    assert isinstance(est, RABEstimator) and hasattr(est, "ensemble_")
    pred, radius = est.certify(digits[2][:10])
    assert pred.shape == (10,)
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])
    with pytest.raises(ValueError, match="method must be one of"):
        CertSSBDTrainer(clf, method="nope")


def test_trainer_keyword_arguments_override_the_classifier_settings():
    net = DigitsCNN(10)
    clf = digits_classifier(net, lr=1e-3)  # Adam's default rate
    trainer = CertSSBDTrainer(clf, method="rab", device_type="cpu", clip_values=(0.0, 2.0), nb_models=3)
    est = trainer.estimator
    assert est.device_type == "cpu" and est.device.type == "cpu"
    np.testing.assert_array_equal(est.clip_values, [0.0, 2.0])
    assert clf.device_type == "gpu"  # the classifier is left alone
