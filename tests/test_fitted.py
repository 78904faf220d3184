"""The fitted record (:mod:`art_certssbd.fitted`): one constructor behind fit, from_official and load_ensemble, the
estimator's fitted attributes as read-only views of it, and estimators pickled before it."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch
from helpers import digits_estimator

from art_certssbd import CertificationMemory, CertSSBDEstimator, RABEstimator
from art_certssbd._validation import NotFittedError
from art_certssbd.datasets import load_digits
from art_certssbd.ensemble import StackedEnsemble
from art_certssbd.fitted import FittedEnsemble, record_from_attributes
from art_certssbd.models import MnistCNN
from art_certssbd.noise import derive_seed

FIELDS = {field.name for field in dataclasses.fields(FittedEnsemble)}
VIEWS = {
    "ensemble_": "members",
    "train_sigma_": "train_sigma",
    "random_state_": "random_state",
    "test_noise_seeds_": "test_noise_seeds",
    "growth_history_": "growth_history",
    "train_noise_copies_": "train_noise_copies",
    "memory_": "memory",
}


@pytest.fixture(scope="module")
def digits():
    x_train, y_train, x_test, _ = load_digits(random_state=0)
    return x_train[:64], y_train[:64], x_test[:6]


@pytest.fixture(scope="module")
def fitted(digits):
    est = digits_estimator(RABEstimator, nb_models=3, noise="fresh", scale=0.25, alpha=0.1, random_state=5)
    est.fit(digits[0], digits[1], nb_epochs=2, batch_size=32)
    return est


def _members(nb: int) -> StackedEnsemble:
    return StackedEnsemble.from_modules([torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))] * nb)


def _assert_views(est) -> None:
    record = est.fitted_
    assert isinstance(record, FittedEnsemble)
    for view, field in VIEWS.items():
        assert getattr(est, view) is getattr(record, field), view
    assert est.nb_models_ == record.nb_models == record.members.nb_models


def test_fit_from_official_and_load_build_the_same_record(fitted, tmp_path):
    _assert_views(fitted)
    assert fitted.train_noise_copies_ == 2  # noise="fresh": one copy per epoch
    assert fitted.test_noise_seeds_ == [derive_seed(5, "test_noise", k) for k in range(3)]
    fitted.save_ensemble(tmp_path / "saved")
    loaded = digits_estimator(RABEstimator, nb_models=3, noise="fresh", scale=0.25, alpha=0.1, random_state=5)
    loaded.load_ensemble(tmp_path / "saved")
    _assert_views(loaded)
    for field in FIELDS - {"members", "memory"}:
        np.testing.assert_array_equal(getattr(loaded.fitted_, field), getattr(fitted.fitted_, field), err_msg=field)
    for k in range(3):
        for name, value in fitted.ensemble_.state_dict(k).items():
            assert torch.equal(loaded.ensemble_.state_dict(k)[name], value)
    official = tmp_path / "official"
    official.mkdir()
    for k in range(2):
        torch.manual_seed(k)
        torch.save(MnistCNN(nb_classes=1).state_dict(), official / f"smoothed_{k}.model")
    est = CertSSBDEstimator.from_official(official, device_type="cpu", train_noise_copies=3)
    _assert_views(est)
    assert est.train_noise_copies_ == 3 and est.train_sigma_.tolist() == [np.float32(0.12)]
    assert isinstance(est.memory_, CertificationMemory) and est.growth_history_ is None


def test_a_record_without_train_noise_copies_cannot_be_built():
    with pytest.raises(ValueError, match="train_noise_copies is required"):
        FittedEnsemble(_members(2), np.ones(3), 0, train_noise_copies=None)
    with pytest.raises(TypeError):
        FittedEnsemble(_members(2), np.ones(3), 0)  # the count has no default
    for bad, match in [
        (dict(train_noise_copies=0), "train_noise_copies must be an integer >= 1"),
        (dict(train_sigma=np.array([0.5, 0.0])), "train_sigma must be a 1-D array of positive sigmas"),
        (dict(test_noise_seeds=[1]), "one seed per member"),
        (dict(random_state=1.5), "random_state must be an integer"),
    ]:
        kwargs = {**dict(train_sigma=np.ones(3), random_state=0, train_noise_copies=1), **bad}
        with pytest.raises(ValueError, match=match):
            FittedEnsemble(_members(2), **kwargs)


def test_record_derives_seeds_and_gives_the_certificate_options():
    record = FittedEnsemble(_members(2), np.array([0.4, 0.2], dtype=np.float32), 7, train_noise_copies=4)
    assert record.test_noise_seeds == [derive_seed(7, "test_noise", k) for k in range(2)]
    assert record.certificate_options(0.1, "hoeffding", 2) == {
        "alpha": 0.1,
        "bound": "hoeffding",
        "draws_per_model": 2,
        "train_sigma_min": pytest.approx(0.2),
        "noise_copies": 4,
    }
    grown = record.replace(growth_history=[])
    with pytest.raises(ValueError, match="only bound='anytime'"):
        grown.certificate_options(0.1, "clopper-pearson", 1)
    assert grown.certificate_options(0.1, "anytime", 1)["bound"] == "anytime"
    noise = record.test_noise("cpu")([1, 0], 2, (1, 2, 2))
    assert noise.shape == (2, 2, 1, 2, 2)


def test_fitted_attributes_are_read_only_views_and_set_params_resets_the_record(digits):
    est = digits_estimator(RABEstimator, nb_models=3, scale=0.25, alpha=0.1, random_state=1)
    assert not hasattr(est, "ensemble_") and not hasattr(est, "fitted_")
    with pytest.raises(NotFittedError):
        est.certificate_options()
    est.fit(digits[0], digits[1], nb_epochs=1, batch_size=32)
    for view in VIEWS:
        with pytest.raises(AttributeError):
            setattr(est, view, None)
    est.set_params(scale=0.3)
    assert not hasattr(est, "fitted_") and not hasattr(est, "train_sigma_")
    with pytest.raises(NotFittedError, match="set_params of scale reset"):
        est.certify(digits[2])


def test_an_estimator_pickled_before_the_record_loads_into_one(fitted, digits):
    state = fitted.__getstate__()
    record = state.pop("fitted_")
    old = {view: getattr(record, field) for view, field in VIEWS.items()}
    restored = pickle.loads(pickle.dumps(fitted))
    restored.__setstate__({**state, **old, "nb_models_": record.nb_models})
    _assert_views(restored)
    np.testing.assert_array_equal(restored.predict(digits[2]), fitted.predict(digits[2]))
    # a fresh-noise estimator pickled before the copies were recorded is refused, with the reason
    with pytest.raises(ValueError, match=r"noise='fresh'.*shrinks by sqrt\(nb_epochs\)"):
        record_from_attributes({**state, **old, "train_noise_copies_": None})
    fixed = record_from_attributes({**state, **old, "noise": "fixed", "train_noise_copies_": None})
    assert fixed["fitted_"].train_noise_copies == 1
