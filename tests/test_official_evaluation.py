"""The official models as a fitted estimator (``from_official``) and the official evaluation preset
(``certify_reference``), checked against ``../shared/reference`` and an independent re-implementation of
the official ``eval.py`` in numpy / scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from art_certssbd import CertificationMemory, CertificationResult, CertSSBDEstimator
from art_certssbd._validation import NotFittedError
from art_certssbd.models import MnistCNN
from art_certssbd.official import (
    certify_reference,
    load_official_checkpoint,
    load_sigma_file,
    official_certified_accuracy,
    official_model_seed,
    official_noise_fn,
)
from art_certssbd.smoothed_module import SmoothedEnsembleModule

NAMES = [f"smoothed_{k}.model" for k in range(4)]
from_official = CertSSBDEstimator.from_official


@pytest.fixture
def probes(probe_inputs):
    return probe_inputs


@pytest.fixture
def sigma5(reference_dir):
    return load_sigma_file(reference_dir / "mnist_onepixel_sigma0.12.pth")[:5]


@pytest.fixture
def estimator(reference_dir):
    return from_official(reference_dir, device_type="cpu", alpha=0.1)


def official_eval(reference_dir, x, sigma_stored, sigma0=0.12, alpha=0.001, n=1000, names=NAMES):
    """eval.py's certificate_over_dataset + main, line by line, with the hash-seeded numpy noise of fix_pert."""
    model = MnistCNN(nb_classes=1).eval()
    model_preds = []
    for name in names:
        path = reference_dir / name
        model.load_state_dict(load_official_checkpoint(path))
        state = np.random.get_state()
        np.random.seed(official_model_seed(path))
        fixed_pert = torch.FloatTensor(np.random.randn(1, 1, 28, 28)) * sigma0
        np.random.set_state(state)
        with torch.no_grad():
            pred = torch.sigmoid(model(torch.from_numpy(x) + fixed_pert).squeeze(1)).numpy()
        model_preds.append(np.stack((1 - pred, pred), axis=1))
    # float64 as numpy >= 2 computes it (float32 scores + the np.float64 Hoeffding term); numpy 1.x's value-based
    # casting keeps float32, where 1 - 1e-8 rounds to 1 and the clipped radii become -inf
    gx = np.array(model_preds, dtype=np.float64).mean(0)
    pa, pred_c = gx.max(1), gx.argmax(1)
    gx[np.arange(len(pred_c)), pred_c] = -1
    pb = gx.max(1)
    heof_factor = np.sqrt(np.log(1 / alpha) / 2 / n)
    pa_l = np.maximum(1e-8, pa - heof_factor)
    pb_u = np.minimum(1 - 1e-8, pb + heof_factor)
    return pred_c, 0.5 * sigma_stored * (norm.ppf(pa_l) - norm.ppf(pb_u)), pa_l, pb_u


def test_from_official_is_fitted_with_the_official_members(reference_dir, expected, probes):
    est = from_official(reference_dir, device_type="cpu")
    assert isinstance(est, CertSSBDEstimator)
    assert est.nb_classes == 2 and tuple(est.input_shape) == (1, 28, 28) and tuple(est.clip_values) == (0.0, 1.0)
    assert est.nb_models == est.ensemble_.nb_models == 4 and est.scale == 0.12 and est.sigma_steps == 0
    assert est.test_noise_seeds_ == [expected[name]["sha256_mod_2_32"] for name in NAMES]
    np.testing.assert_array_equal(est.train_sigma_, [np.float32(0.12)])
    assert est.random_state_ == 0 and isinstance(est.memory_, CertificationMemory) and len(est.memory_) == 0
    assert isinstance(est.model, SmoothedEnsembleModule) and est.model.nb_models == 4  # what ART's attacks read
    # the expected logits through the estimator's ensemble (class-1 logit; class 0 is the adapter's 0)
    x = torch.from_numpy(probes)
    with torch.no_grad():
        logits = est.ensemble_.logits(x.unsqueeze(0).expand(4, *x.shape))
        base = est.base_model(x)
    want = np.array([expected[name]["logits"] for name in NAMES])
    np.testing.assert_allclose(logits[..., 1].numpy(), want, atol=1e-5)
    assert torch.all(logits[..., 0] == 0)
    np.testing.assert_allclose(base[:, 1].numpy(), want[0], atol=1e-5)
    assert from_official(reference_dir, nb_models=2, device_type="cpu").ensemble_.nb_models == 2


def test_reference_preset_equals_an_independent_reimplementation(reference_dir, estimator, probes, sigma5):
    result = certify_reference(estimator, probes, sigma5)
    pred, radius, pa_l, _ = official_eval(reference_dir, probes, sigma5)
    assert isinstance(result, CertificationResult)
    np.testing.assert_array_equal(result.pred, pred)
    np.testing.assert_allclose(result.radius, radius, atol=1e-6)
    np.testing.assert_allclose(result.p_a_lower, pa_l, atol=1e-7)
    _, radius_sigma0, _, _ = official_eval(reference_dir, probes, 0.12)
    np.testing.assert_allclose(result.radius_conservative, radius_sigma0, atol=1e-6)
    np.testing.assert_allclose(result.votes.sum(axis=1), 4.0)
    np.testing.assert_array_equal(result.sigma, 0.12)
    # the true n (4 votes) widens the margin: every radius is negative, nothing is certified
    true_n = certify_reference(estimator, probes, sigma5, n_assumed=None)
    np.testing.assert_allclose(true_n.radius, official_eval(reference_dir, probes, sigma5, n=4)[1], atol=1e-6)
    assert np.all(true_n.radius < 0) and np.all(result.radius > 0)
    # another alpha and a scalar stored sigma
    other = certify_reference(estimator, probes, 0.25, alpha=0.01)
    np.testing.assert_allclose(other.radius, official_eval(reference_dir, probes, 0.25, alpha=0.01)[1], atol=1e-6)


def test_official_counting_is_strict_and_never_abstains(reference_dir, estimator, probes, sigma5):
    result = certify_reference(estimator, probes, sigma5)
    y = result.pred.copy()
    y[0] = 1 - y[0]
    radii = [0.0, float(result.radius[2]), 0.25]
    got = official_certified_accuracy(result.pred, result.radius, y, radii)
    want = [np.mean((result.radius > r) & (result.pred == y)) for r in radii]
    np.testing.assert_allclose(got, want)
    assert got[1] < np.mean((result.radius >= radii[1]) & (result.pred == y))  # radius == r does not count
    assert official_certified_accuracy([0, 1], [-0.1, 0.2], [0, 1], [0.0]).tolist() == [0.5]
    with pytest.raises(ValueError, match="one length"):
        official_certified_accuracy([0, 1], [0.1], [0, 1], [0.0])


def test_estimator_noise_source_uses_the_estimators_test_noise(reference_dir, estimator, probes, sigma5):
    result = certify_reference(estimator, probes, sigma5, noise="estimator")
    eps = estimator.fitted_.test_noise(estimator._device)(range(4), 1, (1, 28, 28))[:, 0]
    with torch.no_grad():
        logits = estimator.ensemble_.logits(torch.from_numpy(probes).unsqueeze(0) + 0.12 * eps.unsqueeze(1))
    scores = torch.softmax(logits.double(), -1).sum(0).numpy()
    np.testing.assert_allclose(result.votes, scores, atol=1e-6)
    assert not np.allclose(result.votes, certify_reference(estimator, probes, sigma5).votes)


def test_official_noise_fn_matches_numpy_seeding():
    noise = official_noise_fn([7, 2**32 - 1])([1, 0], 1, (1, 3, 3))
    assert noise.shape == (2, 1, 1, 3, 3) and noise.dtype == torch.float32
    assert torch.equal(noise[1, 0], torch.from_numpy(np.random.RandomState(7).randn(1, 1, 3, 3)).float()[0])
    with pytest.raises(ValueError, match="seeds"):
        official_noise_fn([2**32])
    with pytest.raises(ValueError, match="draws_per_model=2"):
        official_noise_fn([1])([0], 2, (1, 3, 3))


def test_from_official_estimator_certifies_predicts_and_round_trips(reference_dir, estimator, probes, tmp_path):
    pred, radius = estimator.certify(probes)
    assert pred.shape == radius.shape == (5,) and np.all(radius >= 0)
    details = estimator.certify(probes, return_details=True, update_memory=False)
    assert np.all(details.radius_conservative <= details.radius + 1e-12)
    np.testing.assert_allclose(details.sigma, 0.12)  # sigma_steps=0: sigma_x = sigma0
    assert details.votes.sum(axis=1).tolist() == [4] * 5
    proba = estimator.predict(probes, is_abstain=False)
    assert proba.shape == (5, 2) and np.all(proba.sum(axis=1) == 1)
    estimator.save_ensemble(tmp_path / "saved")
    again = CertSSBDEstimator(
        estimator.base_model, torch.nn.CrossEntropyLoss(), (1, 28, 28), 2, nb_models=4, scale=0.12, device_type="cpu"
    )
    again.load_ensemble(tmp_path / "saved")
    assert again.test_noise_seeds_ == estimator.test_noise_seeds_


def test_bad_input_is_refused_naming_the_parameter(reference_dir, estimator, probes, sigma5, tmp_path):
    with pytest.raises(ValueError, match=r"sigma_stored must be a scalar or have shape \(5,\)"):
        certify_reference(estimator, probes, sigma5[:3])
    with pytest.raises(ValueError, match="sigma_stored must be finite and > 0"):
        certify_reference(estimator, probes, -sigma5)
    with pytest.raises(ValueError, match="n_assumed must be a positive integer or None, got 0"):
        certify_reference(estimator, probes, sigma5, n_assumed=0)
    with pytest.raises(ValueError, match="alpha must be in"):
        certify_reference(estimator, probes, sigma5, alpha=1.5)
    with pytest.raises(ValueError, match="noise must be one of"):
        certify_reference(estimator, probes, sigma5, noise="fresh")
    with pytest.raises(ValueError, match="clip_values"):
        certify_reference(estimator, probes + 2.0, sigma5)
    unfitted = CertSSBDEstimator(MnistCNN(2), torch.nn.CrossEntropyLoss(), (1, 28, 28), 2, device_type="cpu")
    with pytest.raises(NotFittedError):
        certify_reference(unfitted, probes, sigma5)
    with pytest.raises(ValueError, match="unknown keyword arguments for from_official: \\['nb_epochs'\\]"):
        from_official(reference_dir, nb_epochs=3)
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        from_official(tmp_path / "no_such_dir")
    with pytest.raises(ValueError, match="scale"):
        from_official(reference_dir, scale=-1.0)


def test_another_bound_on_the_same_votes_follows_the_estimators_rule(estimator, probes):
    from certssbd_bench.mnist import certify_with_bound

    details = estimator.certify(probes, return_details=True, update_memory=False)
    same = certify_with_bound(estimator, details.votes, details.sigma, "clopper-pearson")
    np.testing.assert_array_equal(same.pred, details.pred)
    np.testing.assert_allclose(same.radius, details.radius)
    np.testing.assert_allclose(same.radius_conservative, details.radius_conservative)
    np.testing.assert_allclose(same.p_a_lower, details.p_a_lower)
    other = certify_with_bound(estimator, details.votes, details.sigma, "hoeffding")
    assert estimator.bound == "clopper-pearson" and np.all(other.radius <= same.radius + 1e-12)
    with pytest.raises(ValueError, match="bound must be one of"):
        certify_with_bound(estimator, details.votes, details.sigma, "wilson")


@pytest.fixture
def fake_official_dir(tmp_path):
    """Three official-format checkpoints (``smoothed_k.model``: state dicts of the official one-logit MNIST CNN),
    randomly initialised: ``from_official`` without ``../shared/reference``."""
    for k in range(3):
        torch.manual_seed(k)
        torch.save(MnistCNN(nb_classes=1).state_dict(), tmp_path / f"smoothed_{k}.model")
    return tmp_path


def test_from_official_records_the_training_noise_copies(fake_official_dir):
    x = np.random.default_rng(0).random((4, 1, 28, 28)).astype(np.float32)
    default = from_official(fake_official_dir, device_type="cpu", alpha=0.1, use_memory=False)
    # RAB's released training code: one noisy copy per training sample and member, recorded as fitted state
    assert default.train_noise_copies_ == 1 and default.noise == "fixed"
    assert default.certificate_options()["noise_copies"] == 1
    fresh = from_official(fake_official_dir, device_type="cpu", alpha=0.1, use_memory=False, train_noise_copies=4)
    assert fresh.train_noise_copies_ == 4 and fresh.noise == "fresh"
    one, four = (e.certify(x, return_details=True) for e in (default, fresh))
    np.testing.assert_array_equal(one.votes, four.votes)  # the same votes; the radii shrink by sqrt(4)
    np.testing.assert_array_equal(one.pred, four.pred)
    np.testing.assert_allclose(four.radius, one.radius / 2, rtol=1e-12)
    np.testing.assert_allclose(four.radius_conservative, one.radius_conservative / 2, rtol=1e-12)


def test_from_official_saves_and_reloads_the_copies(fake_official_dir, tmp_path):
    est = from_official(fake_official_dir, device_type="cpu", train_noise_copies=3)
    est.save_ensemble(tmp_path / "saved")
    again = from_official(fake_official_dir, device_type="cpu", train_noise_copies=1)
    again.load_ensemble(tmp_path / "saved")
    assert again.train_noise_copies_ == 3


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "20", None])
def test_from_official_refuses_a_bad_copy_count(fake_official_dir, value):
    with pytest.raises(ValueError, match=rf"train_noise_copies must be an integer >= 1, got {value!r}"):
        from_official(fake_official_dir, device_type="cpu", train_noise_copies=value)


def test_from_official_takes_the_speed_parameters(fake_official_dir):
    """Issue 24: the estimator's speed parameters at construction (no set_params after); the votes do not change
    with the chunk size, and amp/compile reach the estimator's checks (bf16 forced absent: refused on this CPU)."""
    x = np.random.default_rng(1).random((5, 1, 28, 28)).astype(np.float32)
    plain = from_official(fake_official_dir, device_type="cpu", alpha=0.1, use_memory=False)
    small = from_official(fake_official_dir, device_type="cpu", alpha=0.1, use_memory=False, memory_budget=2**16)
    assert small.get_params()["memory_budget"] == 2**16 and plain.get_params()["memory_budget"] == 2**30
    assert small.get_params()["compile"] is False and small.get_params()["executor"] == "local"
    np.testing.assert_array_equal(
        plain.certify(x, return_details=True).votes, small.certify(x, return_details=True).votes
    )
    with pytest.raises(ValueError, match="amp"):
        from_official(fake_official_dir, device_type="cpu", amp="bf16")  # the conftest: a CPU without native bf16
    with pytest.raises(ValueError, match="memory_budget"):
        from_official(fake_official_dir, device_type="cpu", memory_budget=0)
