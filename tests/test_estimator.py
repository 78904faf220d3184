"""The ART contract of CertSSBDEstimator / RABEstimator / CertSSBDTrainer on a small digits problem."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from art.attacks.evasion import ProjectedGradientDescent
from art.estimators.certification.randomized_smoothing.randomized_smoothing import RandomizedSmoothingMixin
from art.estimators.classification import ClassifierMixin, PyTorchClassifier
from art.utils import compute_accuracy
from helpers import digits_classifier, digits_estimator

from art_certssbd import CertificationResult, CertSSBDEstimator, RABEstimator
from art_certssbd._validation import NotFittedError, check_labels
from art_certssbd.datasets import load_digits
from art_certssbd.models import DigitsCNN

SMALL = dict(nb_models=6, scale=0.25, alpha=0.05, random_state=3, sigma_steps=5, sigma_samples=4, warmup_epochs=1)


@pytest.fixture(scope="module")
def digits():
    x_train, y_train, x_test, y_test = load_digits(random_state=0)
    return x_train[:600], y_train[:600], x_test[:60], y_test[:60]


def make(cls=CertSSBDEstimator, seed=0, **kwargs):
    return digits_estimator(cls, seed=seed, **{**SMALL, **kwargs})


@pytest.fixture(scope="module")
def fitted(digits):
    est = make()
    est.fit(digits[0], digits[1], nb_epochs=3, batch_size=64)
    return est


def test_is_an_art_randomized_smoothing_classifier(fitted):
    assert isinstance(fitted, RandomizedSmoothingMixin)
    assert isinstance(fitted, ClassifierMixin)
    assert isinstance(fitted, PyTorchClassifier)
    assert fitted.sample_size == SMALL["nb_models"]


def test_certify_shapes_and_abstain_convention(fitted, digits):
    pred, radius = fitted.certify(digits[2])
    assert pred.shape == radius.shape == (60,)
    assert set(np.unique(pred)) <= set(range(-1, 10))
    assert np.all(radius >= 0)
    assert np.all(radius[pred == -1] == 0)
    decided = pred != -1
    assert decided.sum() >= 10
    assert np.mean(pred[decided] == digits[3][decided]) > 0.7


def test_certify_details(fitted, digits):
    result = fitted.certify(digits[2], return_details=True, update_memory=False)
    assert isinstance(result, CertificationResult)
    assert result.votes.shape == (60, 10)
    assert np.all(result.votes.sum(axis=1) == SMALL["nb_models"])
    assert np.all(result.sigma >= SMALL["scale"]) and np.all(result.sigma <= 4 * SMALL["scale"] + 1e-9)
    assert np.all(result.radius_conservative <= result.radius + 1e-12)
    assert np.all((result.p_a_lower > 0.5) == (result.pred != -1))


def test_predict_is_art_shaped_and_readable_by_compute_accuracy(fitted, digits):
    proba = fitted.predict(digits[2])
    assert proba.shape == (60, 10)
    assert set(np.unique(proba.sum(axis=1))) <= {0.0, 1.0}
    accuracy, coverage = compute_accuracy(proba, np.eye(10)[digits[3]])
    assert 0 <= accuracy <= 1 and 0 < coverage <= 1
    forced = fitted.predict(digits[2], is_abstain=False)
    assert np.all(forced.sum(axis=1) == 1)


def test_params_roundtrip_and_clone_for_refitting(fitted):
    params = fitted.get_params()
    for key in ("nb_models", "scale", "alpha", "bound", "sigma_steps", "random_state", "use_memory"):
        assert key in params
    clone = fitted.clone_for_refitting()
    assert type(clone) is CertSSBDEstimator
    assert clone.nb_models == fitted.nb_models and clone.scale == fitted.scale
    assert not hasattr(clone, "ensemble_")
    with pytest.raises(NotFittedError, match="not fitted yet"):
        clone.certify(np.zeros((1, 1, 8, 8), dtype=np.float32))


def test_set_params_failure_leaves_estimator_unchanged(fitted):
    before = fitted.get_params()
    with pytest.raises(ValueError, match="alpha must be in \\(0, 1\\), got 1.5"):
        fitted.set_params(alpha=1.5, nb_models=3)
    assert fitted.get_params()["alpha"] == before["alpha"]
    assert fitted.nb_models == before["nb_models"]


def test_art_evasion_attack_runs_against_the_estimator(fitted, digits):
    attack = ProjectedGradientDescent(fitted, eps=0.2, eps_step=0.05, max_iter=3, verbose=False)
    x_adv = attack.generate(digits[2][:8], y=np.eye(10)[digits[3][:8]])
    assert x_adv.shape == (8, 1, 8, 8)
    assert np.all(np.abs(x_adv - digits[2][:8]) <= 0.2 + 1e-6)
    assert not np.allclose(x_adv, digits[2][:8])


def test_same_random_state_same_everything_and_other_seed_differs(digits, fitted):
    again = make(seed=1)  # another initial network: members are re-initialised from random_state anyway
    again.fit(digits[0], digits[1], nb_epochs=3, batch_size=64)
    np.testing.assert_array_equal(again.train_sigma_, fitted.train_sigma_)
    for k in (0, SMALL["nb_models"] - 1):
        for name, tensor in fitted.ensemble_.state_dict(k).items():
            torch.testing.assert_close(again.ensemble_.state_dict(k)[name], tensor, rtol=0, atol=1e-6)
    a = fitted.certify(digits[2], return_details=True, update_memory=False)
    b = again.certify(digits[2], return_details=True, update_memory=False)
    np.testing.assert_array_equal(a.votes, b.votes)
    np.testing.assert_allclose(a.radius, b.radius, atol=1e-6)
    other = make(random_state=4)
    other.fit(digits[0], digits[1], nb_epochs=3, batch_size=64)
    assert not np.array_equal(other.train_sigma_, fitted.train_sigma_)


def test_rab_has_fixed_sigma_and_equal_radii(digits):
    rab = make(RABEstimator)
    assert "sigma_steps" not in rab.get_params()
    rab.fit(digits[0], digits[1], nb_epochs=2, batch_size=64)
    result = rab.certify(digits[2], return_details=True)
    assert np.all(result.sigma == SMALL["scale"])
    np.testing.assert_allclose(result.radius_conservative, result.radius)
    assert rab.memory_ is None


def test_sigma_tol_stops_each_samples_ascent_early_for_training_and_test_sigmas(digits):
    """With every step counted as settled (a huge ``sigma_tol``) each sample stops after ``sigma_patience`` steps:
    the sigmas of a 6-step run equal those of a full 2-step run, in fit and in certify; the default (``None``) runs
    all steps, and a tolerance of 0 keeps only the bound rule (here: the full run's sigmas wherever no bound held)."""
    x, y, xt = digits[0][:200], digits[1][:200], digits[2][:20]
    kwargs = dict(nb_models=1, sigma_lr=0.05, sigma_bounds=(0.25, 0.262))

    def sigmas(**params):
        est = make(**kwargs, **params)
        est.fit(x, y, nb_epochs=1, batch_size=50)
        return est.train_sigma_, est.certify(xt, return_details=True, update_memory=False).sigma

    stopped = sigmas(sigma_steps=6, sigma_tol=1e9, sigma_patience=2)
    two, six = sigmas(sigma_steps=2), sigmas(sigma_steps=6)
    for got, want in zip(stopped, two):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    assert not np.allclose(six[0], two[0])  # the test could fail: six steps move the sigmas further
    held = np.isclose(six[0], 0.25) | np.isclose(six[0], 0.262)
    assert held.any() and not held.all()  # some samples sit at a bound
    bound_rule = sigmas(sigma_steps=6, sigma_tol=0.0)
    np.testing.assert_allclose(bound_rule[0][~held], six[0][~held], rtol=1e-5)


def test_vectorised_and_loop_paths_agree(digits):
    fast, slow = make(sigma_steps=0), make(sigma_steps=0, vectorize=False)
    for est in (fast, slow):
        est.fit(digits[0][:200], digits[1][:200], nb_epochs=2, batch_size=50)
    for name, tensor in fast.ensemble_.state_dict(2).items():
        torch.testing.assert_close(slow.ensemble_.state_dict(2)[name], tensor, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(
        fast.certify(digits[2], return_details=True).votes, slow.certify(digits[2], return_details=True).votes
    )


def test_memory_persists_across_calls_and_query_does_not_store(fitted, digits):
    fitted.fitted_ = fitted.fitted_.replace(memory=type(fitted.memory_)())
    fitted.certify(digits[2][:10], update_memory=False)
    assert len(fitted.memory_) == 0
    pred, _ = fitted.certify(digits[2][:10])
    assert len(fitted.memory_) == int(np.sum(pred != -1) - 0) or len(fitted.memory_) <= 10
    assert fitted.memory_.check_invariant()


def test_save_and_load_ensemble_roundtrip(fitted, digits, tmp_path):
    fitted.save_ensemble(tmp_path / "ens")
    loaded = make(seed=5)
    loaded.load_ensemble(tmp_path / "ens")
    a = fitted.certify(digits[2], return_details=True, update_memory=False)
    b = loaded.certify(digits[2], return_details=True, update_memory=False)
    np.testing.assert_array_equal(a.votes, b.votes)
    np.testing.assert_allclose(a.sigma, b.sigma)


def test_checkpoint_resume_gives_the_same_ensemble(digits, tmp_path):
    x, y = digits[0][:200], digits[1][:200]
    full = make(sigma_steps=2)
    full.fit(x, y, nb_epochs=1, batch_size=50, checkpoint_dir=tmp_path / "ck")
    # drop two members from the manifest, as if training had stopped after member 3
    import json

    manifest_path = tmp_path / "ck" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    for k in (4, 5):
        del manifest["entries"][f"member_{k:05d}"]
    manifest_path.write_text(json.dumps(manifest))
    resumed = make(sigma_steps=2)
    resumed.fit(x, y, nb_epochs=1, batch_size=50, checkpoint_dir=tmp_path / "ck")
    for k in range(SMALL["nb_models"]):
        for name, tensor in full.ensemble_.state_dict(k).items():
            torch.testing.assert_close(resumed.ensemble_.state_dict(k)[name], tensor, rtol=0, atol=1e-6)
    changed = make(sigma_steps=2, scale=0.3)
    with pytest.raises(ValueError, match="scale=0.25"):
        changed.fit(x, y, nb_epochs=1, batch_size=50, checkpoint_dir=tmp_path / "ck")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"nb_models": 0}, "nb_models must be an integer >= 1, got 0"),
        ({"scale": 0.0}, "scale must be a finite number > 0, got 0.0"),
        ({"scale": -1.0}, "scale must be a finite number > 0, got -1.0"),
        ({"alpha": 1.5}, "alpha must be in \\(0, 1\\), got 1.5"),
        ({"alpha": 0.0}, "alpha must be in \\(0, 1\\), got 0.0"),
        ({"bound": "wilson"}, "bound must be one of .*got 'wilson'"),
        ({"sigma_update": "magic"}, "sigma_update must be one of .*got 'magic'"),
        ({"noise": "pink"}, "noise must be one of .*got 'pink'"),
        ({"sigma_bounds": (0.5, 1.0)}, "sigma_bounds must satisfy low <= scale <= high"),
        ({"preprocessing": (0.5, 0.5)}, "preprocessing=.* is not supported"),
    ],
)
def test_bad_hyper_parameters_are_refused_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(**kwargs)


@pytest.mark.parametrize(
    "x_fn, y_fn, match",
    [
        (lambda x: x[:, 0], lambda y: y, "x must have shape \\(N, 1, 8, 8\\), got array of shape \\(600, 8, 8\\)"),
        (lambda x: np.where(x > 0.9, np.nan, x), lambda y: y, "x contains .* NaN or infinite"),
        (lambda x: x * 2.0, lambda y: y, "x has values outside clip_values=\\(0.0, 1.0\\)"),
        (lambda x: x, lambda y: y + 10, "y has labels outside \\[0, 9\\]"),
        (lambda x: x, lambda y: y[:-1], "y has 599 labels but x has 600 samples"),
        (lambda x: x, lambda y: y + 0.25, "y must hold integer class indices, got the values \\[\\d\\.25"),
        (lambda x: x, lambda y: np.zeros_like(y), "y must hold at least two classes, got only class 0"),
        (lambda x: x[:0], lambda y: y[:0], "x is empty"),
    ],
)
def test_bad_training_data_is_refused_before_any_work(digits, x_fn, y_fn, match):
    est = make()
    weights = {k: v.clone() for k, v in est.base_model.state_dict().items()}
    with pytest.raises(ValueError, match=match):
        est.fit(x_fn(digits[0]), y_fn(digits[1]), nb_epochs=1)
    assert not hasattr(est, "ensemble_")
    for k, v in est.base_model.state_dict().items():
        torch.testing.assert_close(v, weights[k])


def test_model_with_wrong_output_size_is_refused(digits):
    net = DigitsCNN(3)
    est = CertSSBDEstimator(
        net,
        torch.nn.CrossEntropyLoss(),
        (1, 8, 8),
        10,
        optimizer=torch.optim.Adam(net.parameters()),
        clip_values=(0.0, 1.0),
        **SMALL,
    )
    with pytest.raises(ValueError, match="model returns outputs of shape \\(1, 3\\), expected \\(N, nb_classes=10\\)"):
        est.fit(digits[0], digits[1], nb_epochs=1)


def test_certify_input_errors(fitted, digits):
    with pytest.raises(ValueError, match="n must be in \\[1, 6\\]"):
        fitted.certify(digits[2], n=7)
    with pytest.raises(ValueError, match="x must have shape"):
        fitted.certify(digits[2].reshape(60, -1))
    with pytest.raises(ValueError, match="outside clip_values"):
        fitted.predict(digits[2] - 1.0)


@pytest.mark.parametrize(
    "make_labels",
    [
        lambda y: y.astype(np.float64),
        lambda y: y[:, None],
        lambda y: y[:, None].astype(np.float32),
        lambda y: np.eye(10)[y],
        lambda y: 0.7 * np.eye(10)[y] + 0.03,  # soft labels
        lambda y: np.eye(10, dtype=bool)[y],
    ],
    ids=["float", "(N,1)", "(N,1) float", "one-hot", "soft", "bool one-hot"],
)
def test_labels_in_art_formats_read_as_class_indices(make_labels):
    y = np.arange(20) % 10
    np.testing.assert_array_equal(check_labels(make_labels(y), 20, 10), y)
    abstain = np.zeros((20, 10))  # predict's abstain rows (and get_labels_np_array's all-one rows): argmax, class 0
    np.testing.assert_array_equal(check_labels(abstain, 20, 10), np.zeros(20))
    np.testing.assert_array_equal(check_labels(abstain + 1, 20, 10), np.zeros(20))


def test_fit_with_soft_labels_equals_fit_with_their_argmax(digits):
    x, y = digits[0][:120], digits[1][:120]
    soft = 0.6 * np.eye(10)[y] + 0.04
    a, b = make(RABEstimator, nb_models=2), make(RABEstimator, nb_models=2)
    a.fit(x, y, nb_epochs=1, batch_size=60)
    b.fit(x, soft, nb_epochs=1, batch_size=60)
    for name, tensor in a.ensemble_.state_dict(1).items():
        torch.testing.assert_close(b.ensemble_.state_dict(1)[name], tensor, rtol=0, atol=0)


def test_n_and_sample_size_name_the_ensemble_size(fitted, digits):
    with pytest.raises(ValueError, match=r"n counts votes and the ensemble has 6 \(nb_models=6 x draws_per_model=1\)"):
        fitted.certify(digits[2], n=100)
    with pytest.raises(ValueError, match=r"sample_size=100 cannot be set.*set nb_models"):
        make(sample_size=100)
    with pytest.raises(ValueError, match=r"sample_size=100 cannot be set"):
        make(RABEstimator, sample_size=100)


def test_activation_defence_on_a_rab_estimator_catches_poisons(digits):
    """ART's ActivationDefence reads get_activations: for RAB these come from a trained member, not from the untrained
    base network. (On these digits the four-pixel poisons are other digits relabelled 0, so even random features
    separate them from real zeros; which of the two similar-sized clusters is flagged decides the count, and the
    clustering is seeded for that reason.)"""
    from art.defences.detector.poison import ActivationDefence

    from art_certssbd.attacks import four_pixel, poison_dataset

    x_train, y_train, _, _ = load_digits(random_state=0)
    x_p, y_p, is_poison = poison_dataset(x_train, y_train, four_pixel(delta=1.0), rate=0.1, random_state=0)

    def caught(classifier) -> int:
        np.random.seed(1)  # KMeans / FastICA in ART draw from numpy's global generator
        _, clean = ActivationDefence(classifier, x_p, np.eye(10)[y_p]).detect_poison()
        return int(np.sum((np.asarray(clean) == 0) & is_poison))

    rab = make(RABEstimator, nb_models=2, random_state=0)
    rab.fit(x_p, y_p, nb_epochs=5, batch_size=64)
    net = DigitsCNN(10)
    plain = digits_classifier(net, clip_values=None)
    plain.fit(x_p, y_p, nb_epochs=5, batch_size=64)
    rab_caught, plain_caught = caught(rab), caught(plain)
    assert is_poison.sum() == 135
    assert rab_caught >= 40 and rab_caught >= 0.5 * plain_caught, (rab_caught, plain_caught)


def test_art_apex_amp_is_refused_not_ignored():
    est = make(RABEstimator)
    with pytest.raises(ValueError, match=r"use_amp=True \(ART's apex mixed precision\) is not supported"):
        est.set_params(use_amp=True)
    assert est.use_amp is False
