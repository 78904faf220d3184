"""The ART estimator contract, run on every estimator the package builds (issue 11).

Each row of ``ESTIMATORS`` is an unfitted estimator factory; every test runs on every row, so a new estimator is one
row and a new public method one test. Each ART call either works or raises the documented error (``class_gradient``:
``NotImplementedError``, as ART's ``PyTorchRandomizedSmoothing``). Tiny digits estimators (8x8 inputs, 8 members,
2 epochs on 300 samples) keep the module well under a minute on 2 CPU cores.
"""

from __future__ import annotations

import copy
import importlib.util
import pickle

import numpy as np
import pytest
import sklearn.base
import torch
from art.attacks.evasion import (
    AutoAttack,
    AutoConjugateGradient,
    AutoProjectedGradientDescent,
    FastGradientMethod,
    HopSkipJump,
    ProjectedGradientDescent,
    RescalingAutoConjugateGradient,
)
from art.attacks.poisoning import PoisoningAttackBackdoor, PoisoningAttackCleanLabelBackdoor
from art.attacks.poisoning.perturbations import add_pattern_bd, add_single_bd, insert_image
from art.data_generators import NumpyDataGenerator, PyTorchDataGenerator
from art.estimators.certification.randomized_smoothing.randomized_smoothing import RandomizedSmoothingMixin
from art.estimators.classification import ClassifierMixin, PyTorchClassifier
from art.utils import compute_accuracy
from helpers import digits_classifier, digits_estimator

from art_certssbd import CertSSBDEstimator, CertSSBDTrainer, RABEstimator
from art_certssbd._art import KEEPS_FIT
from art_certssbd._validation import NotFittedError
from art_certssbd.attacks import blending, four_pixel, one_pixel
from art_certssbd.datasets import load_digits
from art_certssbd.models import DigitsCNN
from art_certssbd.ray_backend import RayExecutor
from art_certssbd.smoothed_module import SmoothedEnsembleModule

SMALL = dict(nb_models=8, scale=0.25, alpha=0.1, random_state=0, sigma_steps=2, sigma_samples=2, warmup_epochs=1)
FIT = dict(nb_epochs=2, batch_size=64)


def _trainer_estimator():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = DigitsCNN(10)
    classifier = digits_classifier(net)
    # device_type overrides the classifier's (issue 11, point 8: "got multiple values" before)
    return CertSSBDTrainer(classifier, method="cert-ssbd", device_type="cpu", **SMALL).estimator


#: One row per estimator: name -> factory of an unfitted estimator.
ESTIMATORS = {
    "cert-ssbd": lambda: digits_estimator(CertSSBDEstimator, **SMALL),
    "rab": lambda: digits_estimator(RABEstimator, **SMALL),
    "trainer": _trainer_estimator,
}

#: For every estimator parameter, another valid value (as ``set_params`` kwargs; some need a companion).
CHANGES = {
    "model": lambda: {"model": DigitsCNN(10)},
    "clip_values": lambda: {"clip_values": (0.0, 2.0)},
    "channels_first": lambda: {"channels_first": False},
    "loss": lambda: {"loss": torch.nn.CrossEntropyLoss(label_smoothing=0.1)},
    "optimizer": lambda: {"optimizer": torch.optim.SGD(DigitsCNN(10).parameters(), lr=0.1)},
    "nb_models": lambda: {"nb_models": 5},
    "scale": lambda: {"scale": 0.3},
    "alpha": lambda: {"alpha": 0.01},
    "bound": lambda: {"bound": "hoeffding"},
    "draws_per_model": lambda: {"draws_per_model": 2, "bound": "hoeffding"},
    "noise": lambda: {"noise": "fresh"},
    "warmup_epochs": lambda: {"warmup_epochs": 3},
    "vectorize": lambda: {"vectorize": False},
    "memory_budget": lambda: {"memory_budget": 2**20},
    "compile": lambda: {"compile": True},
    "executor": lambda: {"executor": RayExecutor(num_cpus=1)},
    "random_state": lambda: {"random_state": 7},
    "verbose": lambda: {"verbose": True},
    "sigma_steps": lambda: {"sigma_steps": 3},
    "sigma_lr": lambda: {"sigma_lr": 0.01},
    "sigma_samples": lambda: {"sigma_samples": 3},
    "sigma_bounds": lambda: {"sigma_bounds": (0.25, 0.5)},
    "sigma_update": lambda: {"sigma_update": "reference"},
    "sigma_tol": lambda: {"sigma_tol": 0.01},
    "sigma_patience": lambda: {"sigma_patience": 2, "sigma_tol": 0.01},
    "use_memory": lambda: {"use_memory": False},
}
#: Parameters with a single valid value here (round trip of that value only), and why.
SAME_ONLY = {
    "preprocessing": "only the identity is supported",
    "preprocessing_defences": "not supported (None)",
    "postprocessing_defences": "not supported (None)",
    "nb_classes": "fixed by the model's output size",
    "input_shape": "fixed by the model",
    "device_type": "the tests run on the CPU",
    "amp": "CUDA only",
    "use_amp": "ART's apex option, unused",
    "opt_level": "ART's apex option, unused",
    "loss_scale": "ART's apex option, unused",
}


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a is b or a == b


def _shadowed_methods(est) -> list[str]:
    """Instance attributes that hide a method or other class attribute (ART's set_params wrote ``_bound``)."""
    return [name for name in vars(est) if callable(getattr(type(est), name, None))]


@pytest.fixture(scope="module")
def digits():
    x_train, y_train, x_test, y_test = load_digits(random_state=0)
    return x_train[:300], y_train[:300], x_test[:12], y_test[:12]


@pytest.fixture(scope="module", params=list(ESTIMATORS))
def factory(request):
    return ESTIMATORS[request.param]


@pytest.fixture(scope="module")
def fitted(factory, digits):
    est = factory()
    est.fit(digits[0], digits[1], **FIT)
    return est


@pytest.fixture(scope="module")
def reference(fitted, digits):
    """The fitted estimator's certificate on the test inputs (memory untouched)."""
    return fitted.certify(digits[2], return_details=True, update_memory=False)


def _votes(est, x):
    return est.certify(x, return_details=True, update_memory=False).votes


# ------------------------------------------------------------------------------------------------- parameters
def test_is_an_art_randomized_smoothing_classifier(factory):
    est = factory()
    assert isinstance(est, RandomizedSmoothingMixin) and isinstance(est, ClassifierMixin)
    assert isinstance(est, PyTorchClassifier)


def test_every_parameter_has_a_row(factory):
    missing = set(factory().get_params()) - set(CHANGES) - set(SAME_ONLY)
    assert not missing, f"add a CHANGES or SAME_ONLY row for {sorted(missing)}"


def test_set_params_round_trip_of_every_parameter(factory):
    for key, value in factory().get_params().items():
        est = factory()
        change = CHANGES[key]() if key in CHANGES else {key: value}
        est.set_params(**change)
        params = est.get_params()
        for name, new in change.items():
            assert _same(params[name], new), name
            assert _same(getattr(est, name), new), name
        assert not _shadowed_methods(est), key
        est.set_params(**params)  # the round trip ART's clone_for_refitting relies on
        assert not _shadowed_methods(est), key


def test_set_params_round_trip_keeps_a_fitted_estimator(fitted, digits, reference):
    est = copy.deepcopy(fitted)
    est.set_params(**est.get_params())
    np.testing.assert_array_equal(_votes(est, digits[2]), reference.votes)


def test_set_params_bound_reaches_certify(fitted, digits, reference):
    est = copy.deepcopy(fitted)
    est.set_params(bound="hoeffding")
    assert est.bound == "hoeffding" and not _shadowed_methods(est)
    result = est.certify(digits[2], return_details=True, update_memory=False)
    np.testing.assert_array_equal(result.votes, reference.votes)
    decided = reference.pred != -1
    assert decided.any()
    assert np.all(result.p_a_lower[decided] < reference.p_a_lower[decided])  # Hoeffding is looser at n = 8


def test_set_params_after_fit_keeps_or_resets_the_fitted_state(fitted, digits):
    for key in fitted.get_params():
        if key not in CHANGES:
            continue
        est = copy.deepcopy(fitted)
        change = CHANGES[key]()
        est.set_params(**change)
        if set(change) <= KEEPS_FIT:
            assert hasattr(est, "ensemble_"), key
            if key not in ("compile", "use_memory"):  # compile=True would compile (seconds) on the first call
                est.predict(digits[2][:2])
        else:
            assert not hasattr(est, "ensemble_"), key
            with pytest.raises(NotFittedError, match=rf"not fitted yet.*set_params of .*{key}"):
                est.certify(digits[2][:2])


def test_clone_for_refitting_then_fit_then_certify(fitted, digits, reference):
    clone = fitted.clone_for_refitting()
    assert type(clone) is type(fitted) and not hasattr(clone, "ensemble_")
    for key, value in fitted.get_params().items():
        if key not in ("model", "optimizer", "preprocessing"):
            assert _same(clone.get_params()[key], value), key
    clone.fit(digits[0], digits[1], **FIT)
    np.testing.assert_array_equal(_votes(clone, digits[2]), reference.votes)  # same data and random_state


def test_clone_for_refitting_copies_the_base_network(fitted):
    clone = fitted.clone_for_refitting()
    assert type(clone.base_model) is type(fitted.base_model) and clone.base_model is not fitted.base_model
    assert not isinstance(clone.base_model, SmoothedEnsembleModule)


def test_get_params_takes_deep_and_sklearn_clone_works(factory, fitted, digits, reference):
    est = factory()
    assert est.get_params(deep=False).keys() == est.get_params(deep=True).keys() == est.get_params().keys()
    assert est.get_params(deep=False)["model"] is est.base_model
    for original in (est, fitted):
        clone = sklearn.base.clone(original)
        assert type(clone) is type(original) and clone is not original and not hasattr(clone, "ensemble_")
        for key, value in original.get_params(deep=False).items():
            if key not in ("model", "optimizer", "preprocessing"):
                assert _same(clone.get_params(deep=False)[key], value), key
    clone = sklearn.base.clone(fitted)
    clone.fit(digits[0], digits[1], **FIT)
    np.testing.assert_array_equal(_votes(clone, digits[2]), reference.votes)  # same data and random_state


def test_sample_size_is_refused_with_a_pointer_to_nb_models(factory):
    est = factory()
    assert est.sample_size == SMALL["nb_models"]
    cls = type(est)
    with pytest.raises(ValueError, match=r"sample_size=50 cannot be set.*nb_models"):
        cls(DigitsCNN(10), torch.nn.CrossEntropyLoss(), (1, 8, 8), 10, device_type="cpu", sample_size=50)


# ---------------------------------------------------------------------------------------------------- fitting
def test_fit_generator_numpy_fits_once_on_all_the_data(factory, digits, reference):
    est = factory()
    generator = NumpyDataGenerator(digits[0], np.eye(10)[digits[1]], batch_size=64, shuffle=True)
    est.fit_generator(generator, nb_epochs=FIT["nb_epochs"])
    np.testing.assert_array_equal(_votes(est, digits[2]), reference.votes)


def test_fit_generator_pytorch_fits_once_on_all_the_data(factory, digits, reference):
    est = factory()
    dataset = torch.utils.data.TensorDataset(torch.from_numpy(digits[0]), torch.from_numpy(digits[1]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True)
    est.fit_generator(PyTorchDataGenerator(loader, size=len(dataset), batch_size=64), nb_epochs=FIT["nb_epochs"])
    np.testing.assert_array_equal(_votes(est, digits[2]), reference.votes)


def test_ignored_art_fit_options_warn(factory, digits):
    est = factory()
    with pytest.warns(UserWarning, match=r"fit ignores the arguments \['drop_last', 'scheduler'\]"):
        est.fit(digits[0][:64], digits[1][:64], nb_epochs=1, drop_last=True, scheduler=None)


# ------------------------------------------------------------------------------------------------- prediction
def test_predict_with_and_without_abstain(fitted, digits):
    proba = fitted.predict(digits[2])
    assert proba.shape == (12, 10) and set(np.unique(proba.sum(axis=1))) <= {0.0, 1.0}
    accuracy, coverage = compute_accuracy(proba, np.eye(10)[digits[3]])
    assert 0 <= accuracy <= 1 and 0 <= coverage <= 1
    forced = fitted.predict(digits[2], is_abstain=False)
    assert np.all(forced.sum(axis=1) == 1)


def test_certify_n_above_the_ensemble_size_names_it(fitted, digits):
    with pytest.raises(ValueError, match=r"n must be in \[1, 8\], got n=100: n counts votes and the ensemble has 8"):
        fitted.certify(digits[2], n=100)


# ----------------------------------------------------------------------------------------- losses, gradients
LABELS = {
    "indices": lambda y: y,
    "(N, 1)": lambda y: y[:, None],
    "float indices": lambda y: y.astype(np.float32),
    "one-hot": lambda y: np.eye(10)[y],
    "soft": lambda y: 0.5 * np.eye(10)[y] + 0.05,
    "tensor": lambda y: torch.from_numpy(y),
}


@pytest.mark.parametrize("label_format", list(LABELS))
def test_loss_gradient_accepts_every_art_label_format(fitted, digits, label_format):
    x, y = digits[2][:4], digits[3][:4]
    expected = fitted.loss_gradient(x, y)
    assert expected.shape == x.shape and np.all(np.isfinite(expected)) and np.any(expected != 0)
    np.testing.assert_allclose(fitted.loss_gradient(x, LABELS[label_format](y)), expected, rtol=1e-6, atol=1e-7)


def test_abstain_rows_as_labels_read_as_their_argmax(fitted, digits):
    x = digits[2][:4]
    class0 = fitted.loss_gradient(x, np.zeros(4, dtype=int))
    np.testing.assert_allclose(fitted.loss_gradient(x, np.zeros((4, 10))), class0, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(fitted.loss_gradient(x, np.ones((4, 10), np.uint8)), class0, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "labels, match",
    [
        (np.array([0, 1, 2, 10]), r"y has labels outside \[0, 9\]"),
        (np.array([0, 1, 2, -1]), r"y has labels outside \[0, 9\]"),
        (np.array([0.0, 1.0, np.nan, 3.0]), r"y must hold integer class indices, got the values \[nan\]"),
        (np.array([0.0, 1.5, 2.0, 3.0]), r"y must hold integer class indices, got the values \[1.5\]"),
        (np.full((4, 10), np.nan), r"y contains NaN or infinite values"),
    ],
)
def test_unknown_labels_are_refused(fitted, digits, labels, match):
    with pytest.raises(ValueError, match=match):
        fitted.loss_gradient(digits[2][:4], labels)
    with pytest.raises(ValueError, match=match):
        fitted.compute_loss(digits[2][:4], labels)


def test_compute_loss_is_what_loss_gradient_differentiates(fitted, digits):
    x, y = digits[2][:4], digits[3][:4]
    per_input = fitted.compute_loss(x, y)
    assert per_input.shape == (4,) and np.all(per_input > 0)
    np.testing.assert_allclose(fitted.compute_loss(x, np.eye(10)[y], reduction="mean"), per_input.mean(), rtol=1e-5)
    np.testing.assert_allclose(fitted.compute_loss(x, y, reduction="sum"), per_input.sum(), rtol=1e-5)
    x_t = torch.from_numpy(x).requires_grad_(True)
    loss = fitted.compute_loss(x_t, y, reduction="mean")
    assert isinstance(loss, torch.Tensor)
    (grad,) = torch.autograd.grad(loss, x_t)
    np.testing.assert_allclose(grad.numpy(), fitted.loss_gradient(x, y), rtol=1e-4, atol=1e-7)


def test_class_gradient_raises_the_documented_error(fitted, digits):
    with pytest.raises(NotImplementedError, match="class_gradient is not available"):
        fitted.class_gradient(digits[2][:2])


def test_get_activations_reads_a_trained_member(fitted, digits):
    x = digits[2]
    names = fitted.layer_names
    logits = fitted.get_activations(x, layer=names.index("output"), batch_size=5)
    with torch.no_grad():
        member0 = fitted.ensemble_.member(0)(torch.from_numpy(x)).numpy()
        base = fitted.base_model.eval()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(logits, member0, rtol=1e-5, atol=1e-6)
    assert not np.allclose(logits, base)  # not the base network of the sigma optimiser
    assert fitted.get_activations(x, layer="fc").shape == (12, 64)
    assert fitted.get_activations(x, layer="relu").shape == (12, 64)  # a module called twice: its last call, as ART
    last = fitted.get_activations(x, layer="output", member=SMALL["nb_models"] - 1)
    assert not np.allclose(last, logits)
    with pytest.raises(ValueError, match=r"member must be in \[0, 7\]"):
        fitted.get_activations(x, layer=0, member=8)


# ----------------------------------------------------------------------------------------- saving, pickling
def test_save_writes_the_whole_ensemble(factory, fitted, digits, reference, tmp_path, monkeypatch):
    fitted.save("ensemble", str(tmp_path))
    loaded = factory()
    loaded.load_ensemble(tmp_path / "ensemble")
    np.testing.assert_array_equal(_votes(loaded, digits[2]), reference.votes)
    import art.config

    monkeypatch.setattr(art.config, "ART_DATA_PATH", str(tmp_path / "art-data"))
    fitted.save("default")  # path=None: ART's data path, as ART
    assert (tmp_path / "art-data" / "default").is_dir()


def test_model_of_a_loaded_and_of_a_streamed_ensemble_is_the_ensemble(factory, fitted, digits, tmp_path):
    fitted.save_ensemble(tmp_path / "ensemble")
    x = torch.from_numpy(digits[2])
    with torch.no_grad():
        expected = fitted.model(x)
        for stream in (False, True):
            loaded = factory()
            loaded.load_ensemble(tmp_path / "ensemble", stream=stream)
            torch.testing.assert_close(loaded.model(x), expected, rtol=1e-5, atol=1e-6)


def test_pickle_and_deepcopy_before_and_after_use(factory, fitted, digits, reference, tmp_path, monkeypatch):
    import art.config

    monkeypatch.setattr(art.config, "ART_DATA_PATH", str(tmp_path))
    unfitted = pickle.loads(pickle.dumps(factory()))
    assert unfitted.get_params().keys() == fitted.get_params().keys()
    copy.deepcopy(factory())
    used = copy.deepcopy(fitted)
    used.predict(digits[2])
    used.certify(digits[2])  # fills the memory (Cert-SSBD)
    used.loss_gradient(digits[2][:2], digits[3][:2])
    used.get_activations(digits[2][:2], layer=0)
    for twin in (pickle.loads(pickle.dumps(used)), copy.deepcopy(used)):
        np.testing.assert_array_equal(_votes(twin, digits[2]), reference.votes)
        a = used.certify(digits[2], return_details=True, update_memory=False)
        b = twin.certify(digits[2], return_details=True, update_memory=False)
        np.testing.assert_array_equal(a.pred, b.pred)
        np.testing.assert_array_equal(a.radius, b.radius)
    assert not list(tmp_path.iterdir())  # ART's pickling writes the model under ART_DATA_PATH; ours writes nothing


# ------------------------------------------------------------------------------------------ ART's attacks
@pytest.mark.parametrize(
    "make_attack",
    [
        lambda est: FastGradientMethod(est, norm=np.inf, eps=0.1),
        lambda est: FastGradientMethod(est, norm=2, eps=0.5),
        lambda est: FastGradientMethod(est, eps=0.3, eps_step=0.1, minimal=True),
        lambda est: ProjectedGradientDescent(est, eps=0.1, eps_step=0.05, max_iter=2, verbose=False),
    ],
    ids=["fgm-inf", "fgm-2", "fgm-minimal", "pgd"],
)
def test_evasion_attacks_with_y_none(fitted, digits, make_attack):
    x = digits[2][:6]
    x_adv = make_attack(fitted).generate(x)  # labels from predict, abstain rows included
    assert x_adv.shape == x.shape and np.all((x_adv >= 0) & (x_adv <= 1))
    assert not np.allclose(x_adv, x)


def test_hop_skip_jump_black_box(fitted, digits):
    attack = HopSkipJump(fitted, max_iter=1, max_eval=4, init_eval=2, init_size=4, verbose=False)
    x_adv = attack.generate(digits[2][:2])
    assert x_adv.shape == (2, 1, 8, 8) and np.all((x_adv >= 0) & (x_adv <= 1))


def _ensemble_log_scores(est, x: np.ndarray) -> np.ndarray:
    """The documented ``model`` of a fitted estimator, computed member by member: ``log mean_{k, j}
    softmax(f_k(x + scale * e_{k, j}))`` with ``e_{k, j}`` drawn from ``torch.Generator().manual_seed(seed_k)``."""
    draws, total = est.draws_per_model, 0.0
    with torch.no_grad():
        for k, seed in enumerate(est.test_noise_seeds_):
            eps = torch.randn((draws, *x.shape[1:]), generator=torch.Generator().manual_seed(int(seed)))
            member = est.ensemble_.member(k)
            for j in range(draws):
                total = total + torch.softmax(member(torch.from_numpy(x) + est.scale * eps[j]), dim=1).double()
    return np.log(total.numpy() / (len(est.test_noise_seeds_) * draws))


def test_model_is_the_smoothed_ensemble_once_fitted(factory, fitted, digits):
    x = digits[2]
    model = fitted.model
    assert isinstance(model, SmoothedEnsembleModule) and model.nb_models == SMALL["nb_models"]
    x_t = torch.from_numpy(x).requires_grad_(True)
    out = model(x_t)
    np.testing.assert_allclose(out.detach().numpy(), _ensemble_log_scores(fitted, x), rtol=1e-4, atol=1e-5)
    (grad,) = torch.autograd.grad(out[:, 0].sum(), x_t)  # differentiable: gradient attacks see the ensemble
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        base = fitted.base_model.eval()(torch.from_numpy(x))
    assert not np.allclose(out.detach().numpy(), torch.log_softmax(base, dim=1).numpy(), atol=1e-3)
    # the soft vote agrees with the hard majority vote on most inputs (RAB: the very same noisy inputs)
    agree = out.argmax(dim=1).numpy() == fitted.predict(x, is_abstain=False).argmax(axis=1)
    assert agree.mean() >= 0.75
    with pytest.warns(UserWarning, match=r"model of an unfitted .* is its base network .*fit the estimator first"):
        unfitted = factory().model
    assert not isinstance(unfitted, SmoothedEnsembleModule)


#: ART 1.20's attacks that wrap ``estimator.model`` in a classifier of their own (their ``.estimator``), for PyTorch.
REBUILDERS = {
    "apgd-ce": lambda est: AutoProjectedGradientDescent(
        est, eps=0.1, eps_step=0.05, max_iter=2, nb_random_init=1, loss_type="cross_entropy", verbose=False
    ),
    "apgd-dlr": lambda est: AutoProjectedGradientDescent(
        est, eps=0.1, eps_step=0.05, max_iter=2, nb_random_init=1, loss_type="difference_logits_ratio", verbose=False
    ),
    "acg": lambda est: AutoConjugateGradient(
        est, eps=0.1, eps_step=0.05, max_iter=2, nb_random_init=1, loss_type="cross_entropy", verbose=False
    ),
    "racg": lambda est: RescalingAutoConjugateGradient(
        est, eps=0.1, eps_step=0.05, max_iter=2, nb_random_init=1, loss_type="cross_entropy", verbose=False
    ),
    "autoattack-apgd-ce": lambda est: AutoAttack(est, eps=0.1).attacks[0],
    "autoattack-apgd-dlr": lambda est: AutoAttack(est, eps=0.1).attacks[1],
}
if importlib.util.find_spec("numba") is not None:  # ART imports BrendelBethgeAttack only with numba installed
    from art.attacks.evasion import BrendelBethgeAttack

    REBUILDERS["brendel-bethge"] = lambda est: BrendelBethgeAttack(est, norm=2, steps=2, init_size=2, batch_size=4)


@pytest.mark.parametrize("name", list(REBUILDERS))
def test_attacks_that_rebuild_a_classifier_from_model_attack_the_ensemble(fitted, digits, name):
    # ART wraps estimator.model in a new PyTorchClassifier: it must predict the smoothed ensemble's scores, not the
    # base network's (untrained for RAB: accuracy ~0.1 on digits)
    attack = REBUILDERS[name](fitted)
    rebuilt = attack.estimator
    assert rebuilt is not fitted and isinstance(rebuilt.model, SmoothedEnsembleModule)
    x = digits[2]
    np.testing.assert_allclose(rebuilt.predict(x), _ensemble_log_scores(fitted, x), rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def trained_rab(digits):
    """A RAB ensemble trained well enough to attack (clean accuracy ~0.9 on digits, where its base network, never
    trained, has ~0.1)."""
    x_train, y_train, _, _ = load_digits(random_state=0)
    est = digits_estimator(RABEstimator, nb_models=8, scale=0.25, alpha=0.1, random_state=0, lr=1e-2)
    est.fit(x_train[:600], y_train[:600], nb_epochs=5, batch_size=64)
    return est


def test_apgd_with_loss_type_attacks_the_ensemble(trained_rab, digits):
    x, y = digits[2], digits[3]
    rows = np.arange(len(y))
    clean = np.exp(_ensemble_log_scores(trained_rab, x))[rows, y]
    assert clean.mean() > 0.5  # the ensemble knows these digits (its untrained base network does not)
    np.random.seed(0)  # ART's random initialisation draws from numpy's global generator
    attack = AutoProjectedGradientDescent(
        trained_rab, eps=0.3, eps_step=0.1, max_iter=10, nb_random_init=1, loss_type="cross_entropy", verbose=False
    )
    x_adv = attack.generate(x, y=np.eye(10)[y])
    assert np.abs(x_adv - x).max() <= 0.3 + 1e-6
    adv = np.exp(_ensemble_log_scores(trained_rab, x_adv))[rows, y]
    assert adv.mean() < clean.mean() / 2, (clean.mean(), adv.mean())  # against the base network: hardly a change
    accuracy = lambda v: np.mean(trained_rab.predict(v, is_abstain=False).argmax(axis=1) == y)  # noqa: E731
    assert accuracy(x_adv) < accuracy(x)


def _single_bd_channels_first(x):
    """ART's add_single_bd reads 4-D input as (N, H, W, C): move the channels last and back."""
    return add_single_bd(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.fixture(scope="module")
def trigger_png(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("trigger") / "square.png"
    Image.new("RGBA", (3, 3), (255, 255, 255, 255)).save(path)
    return str(path)


PERTURBATIONS = {
    "one_pixel": lambda png: one_pixel(delta=1.0),
    "four_pixel": lambda png: four_pixel(delta=1.0),
    "blending": lambda png: blending(delta=0.5),
    "add_single_bd": lambda png: _single_bd_channels_first,
    "add_pattern_bd": lambda png: lambda x: add_pattern_bd(x, channels_first=True),
    "insert_image": lambda png: (
        lambda x: insert_image(x, backdoor_path=png, channels_first=True, random=False, x_shift=4, y_shift=4, mode="L")
    ),
}


@pytest.mark.parametrize("name", list(PERTURBATIONS))
def test_poisoning_attack_backdoor_on_channels_first_data(fitted, digits, trigger_png, name):
    x = digits[2][:6]
    x_p, y_p = PoisoningAttackBackdoor(PERTURBATIONS[name](trigger_png)).poison(x, y=np.eye(10)[np.zeros(6, int)])
    assert x_p.shape == x.shape and np.all(y_p.argmax(axis=1) == 0)
    changed = np.argwhere(np.any(x_p != x, axis=0))  # (C, H, W) positions the trigger touched
    assert len(changed) > 0
    if name == "add_single_bd":
        assert [tuple(p) for p in changed] == [(0, 6, 6)]  # one pixel, 2 from the bottom-right corner
    pred, radius = fitted.certify(np.clip(x_p, 0, 1).astype(np.float32), update_memory=False)
    assert pred.shape == radius.shape == (6,)


def test_a_trigger_on_an_unusual_channel_count_warns():
    with pytest.warns(UserWarning, match=r"one_pixel: 5 channels in x.shape=\(2, 5, 8, 8\); check channels_first"):
        one_pixel()(np.zeros((2, 5, 8, 8), np.float32))


def test_add_single_bd_without_the_recipe_writes_a_whole_row(digits):
    x = digits[2][:2]
    changed = np.argwhere(np.any(add_single_bd(x) != x, axis=0))
    assert len({tuple(p[:2]) for p in changed}) == 1 and len(changed) > 1  # one row of one channel: the pitfall


def test_clean_label_backdoor_with_the_estimator_as_proxy(fitted, digits):
    x, y = digits[0][:40], np.eye(10)[digits[1][:40]]
    attack = PoisoningAttackCleanLabelBackdoor(
        PoisoningAttackBackdoor(four_pixel(delta=1.0)), fitted, target=np.eye(10)[0], pp_poison=0.5, max_iter=2
    )
    x_p, y_p = attack.poison(x, y)
    assert x_p.shape == x.shape and np.array_equal(y_p, y)  # clean label: the labels stay
    assert np.any(x_p[y.argmax(axis=1) == 0] != x[y.argmax(axis=1) == 0])
